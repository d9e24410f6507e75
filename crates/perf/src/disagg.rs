//! Disaggregated serving: prompts and decoding on separate replicas of the same chips.
//!
//! A prefill replica runs batches of whole prompts and hands each prompt's KV cache to a
//! decode replica, which only decodes (Splitwise, Patel et al., ISCA 2024,
//! <https://arxiv.org/abs/2311.18677>; DistServe, Zhong et al., OSDI 2024,
//! <https://arxiv.org/abs/2401.09670>). Decode steps no longer carry other requests' prompt
//! chunks, so the time per output token is the bare decode step, at the price of the chips
//! given to prefill and the KV transfer. The search here splits a chip count between the two
//! pools, each with its own layout, for the most requests per second within the TTFT and
//! TPOT limits: the comparison AIConfigurator draws between aggregated and disaggregated
//! serving. Every time comes from the same step physics as aggregated serving.

use crate::estimate::{fitting_deployments, layouts};
use crate::{Deployment, Layout, Params, PerfError, Query};
use serde::Serialize;

/// The prefill pool.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PrefillPool {
    /// Layout of one replica.
    pub layout: Layout,
    /// Replicas.
    pub replicas: u32,
    /// Prompts per prefill pass.
    pub batch: f64,
    /// Time of one pass, in seconds.
    pub pass_s: f64,
}

/// The decode pool.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DecodePool {
    /// Layout of one replica.
    pub layout: Layout,
    /// Replicas.
    pub replicas: u32,
    /// Requests decoding at once on one replica.
    pub concurrency: f64,
}

/// The best disaggregated split of a query's chips.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Disaggregated {
    /// Chips the query has; the pools use `prefill` and `decode` replicas' worth of them.
    pub chips: u32,
    /// Chips the two pools use.
    pub chips_used: u32,
    /// The prefill pool.
    pub prefill: PrefillPool,
    /// The decode pool.
    pub decode: DecodePool,
    /// Time to move one prompt's KV cache from a prefill replica to a decode replica, s.
    pub kv_transfer_s: f64,
    /// Time to first token, in seconds: half a pass waiting for the running one, its own
    /// pass, and the KV transfer.
    pub ttft_s: f64,
    /// Time per output token, in seconds: one decode step.
    pub tpot_s: f64,
    /// Output tokens per second seen by one user.
    pub user_tok_s: f64,
    /// Requests completed per second, the smaller of the two pools' rates.
    pub requests_per_s: f64,
    /// Output tokens per second of the whole deployment.
    pub throughput_tok_s: f64,
    /// Output tokens per second per chip the query has.
    pub throughput_per_chip: f64,
}

/// One replica layout's best prefill rate within the TTFT limit.
#[derive(Debug, Clone, Copy)]
struct PrefillRate {
    layout: Layout,
    batch: f64,
    pass_s: f64,
    transfer_s: f64,
    rate: f64,
}

/// One replica layout's best decode rate within the TPOT limit.
#[derive(Debug, Clone, Copy)]
struct DecodeRate {
    layout: Layout,
    concurrency: f64,
    tpot_s: f64,
    rate: f64,
}

/// Seconds to send one prompt's KV cache from a prefill replica of `d`: each of its chips
/// sends its share over its own link, the fast fabric when both pools sit in one scale-up
/// domain of `chips`, else the network ([`Params::kv_network_gb_s`]).
fn kv_transfer(d: &Deployment<'_>, p: &Params, isl: f64, chips: u32) -> f64 {
    let per_chip_gb_s = if chips <= d.system.scale_up() {
        d.system.interconnect_gb_s.unwrap_or(p.kv_network_gb_s) * p.fabric_eff
    } else {
        p.kv_network_gb_s
    };
    let senders = f64::from(d.layout.replica_chips());
    d.model.kv_bytes(isl, d.kv) / (senders * per_chip_gb_s * 1e9)
}

fn prefill_rate(d: &Deployment<'_>, p: &Params, q: &Query<'_>, chips: u32) -> Option<PrefillRate> {
    let transfer_s = kv_transfer(d, p, q.isl, chips);
    let cap = d
        .max_sequences(p, q.isl)
        .min(f64::from(p.max_batch))
        .floor();
    let mut within = Vec::new();
    let mut batch = 1.0_f64;
    while batch <= cap {
        // Whole prompts, each at its own positions; with expert parallelism they spread over
        // the groups.
        let prompts = batch as u32;
        let pass_s = d.prefill_prompts(p, batch * q.isl, q.isl / 2.0, prompts);
        let ttft = 1.5 * pass_s + transfer_s;
        if q.ttft_limit.is_none_or(|l| ttft <= l) {
            within.push(PrefillRate {
                layout: d.layout,
                batch,
                pass_s,
                transfer_s,
                rate: batch / pass_s,
            });
        }
        batch *= 2.0;
    }
    // The smallest batch within PREFILL_RATE_SLACK of the best rate: once a pass is bound by
    // arithmetic, doubling the prompts doubles the time to first token for almost no rate.
    let top = within.iter().map(|r| r.rate).fold(0.0, f64::max);
    within
        .into_iter()
        .find(|r| r.rate >= top * (1.0 - PREFILL_RATE_SLACK))
}

/// The share of the best prefill rate a smaller batch may give up for its shorter passes.
const PREFILL_RATE_SLACK: f64 = 0.02;

fn decode_rate(d: &Deployment<'_>, p: &Params, q: &Query<'_>) -> Option<DecodeRate> {
    let cap = d
        .max_sequences(p, q.isl + q.osl)
        .min(f64::from(p.max_batch))
        .max(1.0);
    let osl = q.osl.max(1.0);
    let mut best: Option<DecodeRate> = None;
    let mut c = 1.0_f64;
    loop {
        let tpot_s = d.decode_step(p, c, q.isl + osl / 2.0).time;
        if q.tpot_limit.is_none_or(|l| tpot_s <= l) {
            let rate = c / (tpot_s * osl);
            if best.is_none_or(|b| rate > b.rate) {
                best = Some(DecodeRate {
                    layout: d.layout,
                    concurrency: c,
                    tpot_s,
                    rate,
                });
            }
        }
        if c >= cap {
            break;
        }
        c = (c * 1.25).ceil().min(cap);
    }
    best
}

/// The split of the query's chips into a prefill pool and a decode pool, each of identical
/// replicas with a layout of its own, that completes the most requests per second while
/// the time to first token and the time per output token stay within the query's limits.
/// `Ok(None)` when no split meets them (or the chips hold fewer than two replicas).
///
/// # Errors
/// As [`crate::best_deployment`]: a layout the system cannot host, or a model that does not
/// fit on the chips.
pub fn disaggregated(q: &Query<'_>, p: &Params) -> Result<Option<Disaggregated>, PerfError> {
    let all = fitting_deployments(q, p)?;
    let Some(first) = all.first() else {
        return Ok(None);
    };
    let chips = first.layout.chips();
    let precision = first.weights;
    // A fixed layout is the replica of both pools; otherwise every replica of up to all the
    // chips that holds the model.
    let replicas: Vec<Layout> = match q.layout {
        Some(l) => vec![Layout { dp: 1, ..l }],
        None => (1..=chips)
            .flat_map(|k| layouts(q.model, q.system, k))
            .filter(|l| l.dp == 1)
            .collect(),
    };
    let mut prefills = Vec::new();
    let mut decodes = Vec::new();
    for l in replicas {
        let Ok(d) = Deployment::new(q.model, q.system, l, precision) else {
            continue;
        };
        let d = d.with_speculative(q.speculative).with_kv(q.kv_precision);
        if !d.fits_main_memory(p, q.isl + q.osl) {
            continue;
        }
        prefills.extend(prefill_rate(&d, p, q, chips));
        decodes.extend(decode_rate(&d, p, q));
    }
    let mut best: Option<(f64, u32, &PrefillRate, u32, &DecodeRate, u32)> = None;
    for pr in &prefills {
        let kp = pr.layout.replica_chips();
        for dr in &decodes {
            let kd = dr.layout.replica_chips();
            let mut x = 1;
            while x * kp + kd <= chips {
                let y = (chips - x * kp) / kd;
                let rate = (f64::from(x) * pr.rate).min(f64::from(y) * dr.rate);
                let used = x * kp + y * kd;
                let better = best.is_none_or(|(r, u, ..)| {
                    rate > r * (1.0 + 1e-9) || (rate > r * (1.0 - 1e-9) && used < u)
                });
                if better {
                    best = Some((rate, used, pr, x, dr, y));
                }
                x += 1;
            }
        }
    }
    Ok(best.map(|(rate, used, pr, x, dr, y)| {
        let throughput = rate * q.osl.max(1.0);
        Disaggregated {
            chips,
            chips_used: used,
            prefill: PrefillPool {
                layout: pr.layout,
                replicas: x,
                batch: pr.batch,
                pass_s: pr.pass_s,
            },
            decode: DecodePool {
                layout: dr.layout,
                replicas: y,
                concurrency: dr.concurrency,
            },
            kv_transfer_s: pr.transfer_s,
            ttft_s: 1.5 * pr.pass_s + pr.transfer_s,
            tpot_s: dr.tpot_s,
            user_tok_s: 1.0 / dr.tpot_s,
            requests_per_s: rate,
            throughput_tok_s: throughput,
            throughput_per_chip: throughput / f64::from(chips),
        }
    }))
}
