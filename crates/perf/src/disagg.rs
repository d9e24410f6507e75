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

use crate::estimate::{fitting_deployments, replica_layouts};
use crate::serve::{mdc_max_busy, mdc_wait, Economics};
use crate::{unit_name, Deployment, Layout, Params, PerfError, Precision, Prompts, Query};
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
    /// Share of its capacity the pool is busy.
    pub busy: f64,
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
    /// Time to first token, in seconds: the wait for the running pass and the prompts queued
    /// ahead (M/D/1 at the pool's busy share), its own pass, and the KV transfer.
    pub ttft_s: f64,
    /// Time per output token, in seconds: one decode step at the load the rate gives.
    pub tpot_s: f64,
    /// Output tokens per second seen by one user.
    pub user_tok_s: f64,
    /// Requests completed per second, the smaller of the two pools' rates.
    pub requests_per_s: f64,
    /// Whether the prefill pool sets the rate (the decode pool could carry more, and runs
    /// lighter); else the decode pool does, at its best load.
    pub prefill_bound: bool,
    /// Output tokens per second of the whole deployment.
    pub throughput_tok_s: f64,
    /// Output tokens per second per chip the query has.
    pub throughput_per_chip: f64,
    /// Energy and cost of the two pools at this throughput, each pool's chips drawing power
    /// at its share of what it can carry (the prefill pool its busy share, the decode pool
    /// the split's rate over its best within the limits), as [`Deployment::economics_at`]
    /// has it for one pool.
    pub economics: Economics,
}

/// One replica layout's best prefill rate within the TTFT limit.
#[derive(Debug, Clone, Copy)]
struct PrefillRate {
    layout: Layout,
    batch: f64,
    pass_s: f64,
    transfer_s: f64,
    /// Time to first token before any queue: its own pass and the transfer.
    ttft_s: f64,
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

impl Deployment<'_> {
    /// Seconds for a replica of this deployment to send the KV cache of a `tokens`-token
    /// prompt to another replica: each chip that holds it sends its share over its own link,
    /// the fast fabric when both replicas sit in one scale-up domain (`same_domain`), else
    /// the network ([`Params::network_gb_s`]). With expert parallelism a prompt's KV lives in
    /// one group, so only that group's chips send it; on an RDU it lives on one socket of
    /// each stage ([`Deployment::kv_groups`]), which sends it alone.
    pub fn kv_send_s(&self, p: &Params, tokens: f64, same_domain: bool) -> f64 {
        let per_chip_gb_s = match self.system.interconnect_gb_s {
            Some(fabric) if same_domain => fabric * p.fabric_eff,
            _ => p.network_gb_s,
        };
        let holders = match self.system.kind {
            switchyard_catalog::SystemKind::Rdu => self.layout.pp,
            _ => self.layout.tp * self.layout.pp,
        };
        let senders = f64::from(holders);
        self.model.kv_bytes(tokens, self.kv) / (senders * per_chip_gb_s * 1e9)
    }
}

/// Prompts per second that one prefill replica of `d` completes, batching whole prompts as
/// far as its KV room and its engine's step allow ([`Params::token_budget`]), at the batch
/// chosen for it; `None` when even one prompt alone misses the TTFT limit.
/// Batched past the step's tokens, 64 prompts of 4,000 tokens a pass on one MI355X gave
/// the pool 1.6 times the prompts a second the engine it runs on makes, and a planned unit
/// whose headroom was to leave a fifth spare was full at 96% of it.
fn prefill_rate(d: &Deployment<'_>, p: &Params, q: &Query<'_>, chips: u32) -> Option<PrefillRate> {
    let transfer_s = d.kv_send_s(p, q.isl, chips <= d.system.scale_up());
    let step = f64::from(p.token_budget) * f64::from(d.kv_groups());
    let cap = d
        .max_sequences(p, q.isl)
        .min(d.batch_limit(p))
        .min((step / q.isl.max(1.0)).floor().max(1.0))
        .floor();
    let mut within = Vec::new();
    let mut prompts = 1_u32;
    while f64::from(prompts) <= cap {
        let batch = f64::from(prompts);
        // Whole prompts, each at its own positions; with expert parallelism they spread over
        // the groups.
        let pass_s = d.prefill_prompts(p, &Prompts::equal(prompts, q.isl));
        // The wait for a running pass is the queue's (the M/D/1 wait holds the rest of the
        // pass in service), added where the pool's load is known.
        let ttft_s = pass_s + transfer_s;
        if q.ttft_limit.is_none_or(|l| ttft_s <= l) {
            within.push(PrefillRate {
                layout: d.layout,
                batch,
                pass_s,
                transfer_s,
                ttft_s,
                rate: batch / pass_s,
            });
        }
        prompts = prompts.saturating_mul(2);
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

/// Requests per second that one decode replica of `d` completes at its best load within
/// the TPOT limit, its steps carrying no prompt chunks; `None` when one request alone misses it.
fn decode_rate(d: &Deployment<'_>, p: &Params, q: &Query<'_>) -> Option<DecodeRate> {
    let osl = q.osl.max(1.0);
    d.decode_loads(p, q.isl, osl)
        .map(|(c, tpot_s)| DecodeRate {
            layout: d.layout,
            concurrency: c,
            tpot_s,
            rate: c / (tpot_s * osl),
        })
        .filter(|r| q.tpot_limit.is_none_or(|l| r.tpot_s <= l))
        .max_by(|a, b| a.rate.total_cmp(&b.rate))
}

/// Requests decoding on a replica of `d`, and their time per output token, where it
/// completes `rate` requests a second, at most `best`'s: a pool the prefill pool feeds more
/// slowly runs lighter and faster. By Little's law the requests decoding are the rate times
/// a request's output time, found by bisection (a step's time grows with its batch); below
/// one request all the time, one, idle part of it.
fn decode_at_rate(
    d: &Deployment<'_>,
    p: &Params,
    q: &Query<'_>,
    best: &DecodeRate,
    rate: f64,
) -> (f64, f64) {
    let osl = q.osl.max(1.0);
    if rate >= best.rate * (1.0 - 1e-12) {
        return (best.concurrency, best.tpot_s);
    }
    let ctx = d.decode_ctx(q.isl, osl);
    let step = |c: f64| d.decode_step(p, c, ctx).time;
    let lone = step(1.0);
    if rate <= 1.0 / (lone * osl) {
        return (rate * lone * osl, lone);
    }
    let (mut lo, mut hi) = (1.0, best.concurrency);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if mid / (step(mid) * osl) < rate {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (hi, step(hi))
}

/// The split of the query's chips into a prefill pool and a decode pool, each of identical
/// replicas with a layout of its own, that completes the most requests per second while
/// the time to first token and the time per output token stay within the query's limits.
/// `Ok(None)` when no split meets them.
///
/// Without a chip count the query has as many chips as its default, or two of the smallest
/// replicas that hold the model where the default holds fewer.
///
/// # Errors
/// As [`crate::best_deployment`] (a layout the system cannot host, a model that does not fit
/// on the chips), and a chip count too small for two replicas.
pub fn disaggregated(q: &Query<'_>, p: &Params) -> Result<Option<Disaggregated>, PerfError> {
    let all = fitting_deployments(q, p)?;
    let Some(first) = all.first() else {
        return Ok(None);
    };
    let precision = first.weights;
    let mut chips = first.layout.chips();
    let mut pools = pool_rates(q, p, precision, chips);
    if let Some(k) = pools.smallest.filter(|k| k.saturating_mul(2) > chips) {
        if q.chips.is_some() {
            return Err(PerfError::BadInput(format!(
                "disaggregated serving needs a prefill and a decode replica: {} needs {k} {} a replica on {}, so at least {} (--chips {}); {chips} {} given",
                q.model.id,
                unit_name(q.system.kind, k),
                q.system.id,
                2 * k,
                2 * k,
                if chips == 1 { "was" } else { "were" }
            )));
        }
        // Unless the chips are given, there are as many as two of the smallest replicas.
        chips = 2 * k;
        pools = pool_rates(q, p, precision, chips);
    }
    let (prefills, decodes) = (pools.prefills, pools.decodes);
    let mut best: Option<Split<'_>> = None;
    for pr in &prefills {
        let kp = pr.layout.replica_chips();
        // The most of its capacity a pool of `x` prefill replicas may be busy: the share
        // whose queue (M/D/c: a prompt goes to whichever replica is free) still keeps the
        // first token within the limit, or PREFILL_MAX_BUSY without one.
        let slack = match q.ttft_limit {
            None => None,
            Some(l) => {
                let slack = (l - pr.ttft_s) / pr.pass_s;
                if slack <= 0.0 {
                    continue;
                }
                Some(slack)
            }
        };
        // Once for each pool size the chips allow, not again for every decode layout.
        let busy: Vec<f64> = (1..=chips / kp)
            .map(|x| {
                slack.map_or(PREFILL_MAX_BUSY, |s| {
                    mdc_max_busy(s, x).min(PREFILL_MAX_BUSY)
                })
            })
            .collect();
        for dr in &decodes {
            let kd = dr.layout.replica_chips();
            let mut x = 1_u32;
            while let Some(y) = x
                .checked_mul(kp)
                .and_then(|used| chips.checked_sub(used))
                .map(|left| left / kd)
                .filter(|y| *y >= 1)
            {
                let rate =
                    (f64::from(x) * pr.rate * busy[x as usize - 1]).min(f64::from(y) * dr.rate);
                let used = x * kp + y * kd;
                let better = best.as_ref().is_none_or(|b| {
                    rate > b.rate * (1.0 + 1e-9) || (rate > b.rate * (1.0 - 1e-9) && used < b.used)
                });
                if better {
                    best = Some(Split {
                        rate,
                        used,
                        prefill: pr,
                        x,
                        decode: dr,
                        y,
                    });
                }
                x += 1;
            }
        }
    }
    Ok(best.map(|b| {
        let throughput = b.rate * q.osl.max(1.0);
        let rho = b.rate / (f64::from(b.x) * b.prefill.rate);
        // The decode pool at the rate the split carries, which the prefill pool may hold
        // below the decode pool's best.
        let (decoding, tpot_s) = pool_deployment(q, precision, b.decode.layout)
            .map_or((b.decode.concurrency, b.decode.tpot_s), |d| {
                decode_at_rate(&d, p, q, b.decode, b.rate / f64::from(b.y))
            });
        // Each pool as a deployment of its replicas, at the share of its capacity in use.
        let pools = [
            (b.prefill.layout, b.x, rho),
            (
                b.decode.layout,
                b.y,
                b.rate / (f64::from(b.y) * b.decode.rate).max(f64::MIN_POSITIVE),
            ),
        ];
        let parts: Vec<Economics> = pools
            .iter()
            .filter_map(|&(layout, n, used)| {
                let mut d = pool_deployment(q, precision, layout)?;
                d.layout.dp = n;
                Some(d.economics_at(p, throughput, used))
            })
            .collect();
        let sum = |f: fn(&Economics) -> Option<f64>| -> Option<f64> {
            (parts.len() == pools.len())
                .then(|| parts.iter().map(f).sum::<Option<f64>>())
                .flatten()
        };
        let (power_w, usd_per_hour) = (sum(|e| e.power_w), sum(|e| e.usd_per_hour));
        let economics = Economics {
            power_w,
            joules_per_token: power_w.map(|w| w * p.pue / throughput),
            usd_per_hour,
            usd_per_mtok: usd_per_hour.map(|h| h / (throughput * 3600.0) * 1e6),
            cost_basis: parts.first().and_then(|e| e.cost_basis),
        };
        Disaggregated {
            economics,
            chips,
            chips_used: b.used,
            prefill: PrefillPool {
                layout: b.prefill.layout,
                replicas: b.x,
                batch: b.prefill.batch,
                pass_s: b.prefill.pass_s,
                busy: rho,
            },
            decode: DecodePool {
                layout: b.decode.layout,
                replicas: b.y,
                concurrency: decoding,
            },
            kv_transfer_s: b.prefill.transfer_s,
            ttft_s: b.prefill.ttft_s + mdc_wait(b.prefill.pass_s, rho, b.x),
            tpot_s,
            user_tok_s: 1.0 / tpot_s,
            requests_per_s: b.rate,
            prefill_bound: b.rate < f64::from(b.y) * b.decode.rate * (1.0 - 1e-9),
            throughput_tok_s: throughput,
            throughput_per_chip: throughput / f64::from(chips),
        }
    }))
}

/// Every replica layout's best prefill and decode rates on up to `chips` chips, and the
/// fewest chips a replica that holds the model takes.
struct Pools {
    prefills: Vec<PrefillRate>,
    decodes: Vec<DecodeRate>,
    smallest: Option<u32>,
}

fn pool_rates(q: &Query<'_>, p: &Params, precision: Precision, chips: u32) -> Pools {
    // A fixed layout is the replica of both pools; otherwise every replica of up to all the
    // chips that holds the model. An LPU replica takes hundreds of chips, tens of thousands
    // of sizes on a large fleet: every size up to twice the fewest that hold the model,
    // then sizes 2% apart.
    let sizes: Vec<u32> = match (q.system.kind, q.fewest_chips(precision, p)) {
        (switchyard_catalog::SystemKind::Lpu, Some(n)) => {
            let mut sizes: Vec<u32> = (n..=n.saturating_mul(2).min(chips)).collect();
            let mut k = f64::from(n) * 2.0;
            while k * 1.02 <= f64::from(chips) {
                k *= 1.02;
                sizes.push(k.round() as u32);
            }
            sizes.dedup();
            sizes
        }
        _ => (1..=chips).collect(),
    };
    let replicas: Vec<Layout> = match q.layout {
        Some(l) => vec![Layout { dp: 1, ..l }],
        None => sizes
            .into_iter()
            .flat_map(|k| replica_layouts(q.model, q.system, k))
            .collect(),
    };
    let mut pools = Pools {
        prefills: Vec::new(),
        decodes: Vec::new(),
        smallest: None,
    };
    for l in replicas {
        let Some(d) = pool_deployment(q, precision, l) else {
            continue;
        };
        if !d.fits_main_memory(p, q.isl + q.osl) {
            continue;
        }
        let k = l.replica_chips();
        pools.smallest = Some(pools.smallest.map_or(k, |s| s.min(k)));
        pools.prefills.extend(prefill_rate(&d, p, q, chips));
        pools.decodes.extend(decode_rate(&d, p, q));
    }
    pools
}

/// A replica of either pool with `layout`, served as the query asks (speculation, KV
/// format, output spread); `None` where the system cannot host the layout.
fn pool_deployment<'a>(
    q: &Query<'a>,
    precision: Precision,
    layout: Layout,
) -> Option<Deployment<'a>> {
    Some(
        Deployment::new(q.model, q.system, layout, precision)
            .ok()?
            .with_speculative(q.speculative)
            .with_kv(q.kv_precision)
            .with_osl_cv(q.osl_cv),
    )
}

/// A candidate split: `x` prefill replicas and `y` decode replicas and the rate they carry.
struct Split<'r> {
    rate: f64,
    used: u32,
    prefill: &'r PrefillRate,
    x: u32,
    decode: &'r DecodeRate,
    y: u32,
}

/// The busiest a prefill pool is planned at, and all it is without a TTFT limit: at nine
/// tenths one replica's prompt waits 4.5 passes on average for the ones ahead of it
/// (M/D/1), a queue that stays finite; at full load it would not. A pool's mean wait is
/// shorter, but a burst of arrivals or a drifting rate swamps a pool run nearer full: a
/// limit never plans it busier.
const PREFILL_MAX_BUSY: f64 = 0.9;

#[cfg(test)]
mod tests {
    use crate::{Catalog, Deployment, Layout, Params, Precision};

    #[test]
    fn a_prompts_kv_leaves_from_the_chips_that_hold_it() {
        let cat = Catalog::builtin().expect("catalog");
        let p = Params::default();
        let m = cat.model("deepseek-r1").expect("model");
        // Seconds to send a 2,000-token prompt between nodes from a replica of `ep` groups of
        // `tp` chips.
        let send = |tp: u32, ep: u32| {
            let layout = Layout {
                ep,
                ..Layout::replica(tp, 1)
            };
            let d = Deployment::new(
                m,
                cat.system("h100-sxm").expect("system"),
                layout,
                Precision::Fp8,
            )
            .expect("deployment");
            d.kv_send_s(&p, 2000.0, false)
        };
        // One group of one chip holds the prompt, however many groups the replica has, and
        // sends it at one NIC's rate; tensor parallelism splits the sending over the group.
        let one_nic = m.kv_bytes(2000.0, Precision::Fp8) / (p.network_gb_s * 1e9);
        assert!(
            (send(1, 64) / one_nic - 1.0).abs() < 1e-9,
            "{}",
            send(1, 64)
        );
        assert!(
            (send(2, 32) * 2.0 / one_nic - 1.0).abs() < 1e-9,
            "{}",
            send(2, 32)
        );
    }
}
