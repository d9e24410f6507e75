//! Confirming a phase's plan by simulation: each class's fleet at peak demand, then, for
//! each provider, the rest of the fleet at the N-1 share of demand.
//!
//! Fleets larger than `rules.confirm_replicas` replicas are simulated scaled down: every pool
//! keeps its share of replicas (at least one, or one disaggregated unit, the fleet scaled less,
//! up to four times `confirm_replicas`, where that one would swell the pool's share) and demand
//! shrinks with capacity. The requests are drawn to the pools by the plan's split, each in
//! proportion to its capacity as simulated, so each replica sees the load the plan gives it
//! whatever the rounding. Pools of independent replicas behave alike at any size for the
//! same per-replica load, and smaller pools smooth bursts less, so the check errs on the safe
//! side; one that fails runs again at twice the replicas ([`CONFIRM_DOUBLINGS`]), lest the
//! scaling alone fail it. The percentiles weigh each pool's latencies by its share of the
//! plan's capacity. A class is confirmed when those percentiles are within the targets, every
//! pool served requests, and no request failed, those longer than the model's context apart
//! (where every pool holds that much).

use crate::solve::Model;
use crate::{NMinus1, PhasePlan};
use switchyard_router::{Health, Policy, Target};
use switchyard_sim::{
    simulate, Arrivals, Class, Histogram, Lengths, MaxTokens, PrefillPool, Provider, Record,
    RunOptions, Scenario, WorkloadSpec,
};

/// What one confirming simulation found.
#[derive(Debug, Clone)]
struct Found {
    /// TTFT and TPOT at the class's percentile, each pool weighed by its share of the
    /// plan's capacity.
    ttft_s: f64,
    tpot_s: f64,
    /// Share of requests within both targets.
    goodput: f64,
    /// Requests that failed for want of capacity (a provider down or none to take them);
    /// those longer than the model's context are not counted.
    failed: u64,
    /// The provider of a pool that served no request after the warm-up, so that its share
    /// of the plan went unchecked.
    silent: Option<String>,
}

/// The least share of a simulation's requests a pool draws by weight.
fn least_share(providers: &[Provider<'_>]) -> f64 {
    let total: f64 = providers.iter().map(|p| p.target.weight).sum();
    providers
        .iter()
        .map(|p| p.target.weight / total)
        .fold(1.0, f64::min)
        .max(f64::MIN_POSITIVE)
}

/// Requests a confirming simulation runs long enough for its smallest pool to expect, and
/// the most requests it runs for that: a pool of a thousandth of the traffic takes 20,000.
const MIN_POOL_REQUESTS: f64 = 20.0;
const MAX_REQUESTS: f64 = 1_000_000.0;

/// Simulates `job`'s options (option index, replicas) of its class at its demand in output
/// tokens/s, scaled down to its budget of replicas.
fn run(m: &Model<'_>, job: &Job) -> Option<Found> {
    let (c, chosen, demand, seed) = (job.class, &job.chosen, job.demand, job.seed);
    let class = &m.classes[c];
    if job.replicas(m) == 0 || demand <= 0.0 {
        return None;
    }
    let scale = job.scale(m);
    let mut providers = Vec::new();
    let (mut cap_full, mut cap_sim) = (0.0, 0.0);
    // Each pool's capacity in the plan, for its weight in the percentiles.
    let mut planned = Vec::new();
    for &(i, n) in chosen {
        let o = &m.options[i];
        let r = ((f64::from(n) * scale).round() as u32).max(1);
        planned.push(o.out.capacity_tok_s * f64::from(n));
        cap_full += o.out.capacity_tok_s * f64::from(n);
        cap_sim += o.out.capacity_tok_s * f64::from(r);
        // Named uniquely, as the records are told apart by name: two options of one class
        // may run on one provider's systems of one kind (units and whole replicas).
        let mut t = Target::named(&format!(
            "{}/{}/{}",
            o.out.provider,
            o.out.system,
            providers.len()
        ));
        t.capacity = o.out.concurrency.max(1.0) * f64::from(r);
        // Each pool draws its share of the plan's traffic, in proportion to its capacity as
        // simulated, so that each replica sees the load the plan gives it, whatever the
        // rounding of the scaled fleet (see `policy` below).
        t.weight = o.out.capacity_tok_s * f64::from(r);
        t.ttft_s = o.out.ttft_s;
        t.tpot_s = o.out.tpot_s;
        // A request must fit where its prompt runs and where it decodes, as the simulator's
        // own providers say.
        t.max_context = Some(o.prefill.as_ref().map_or(o.engine.longest_request(), |p| {
            o.engine.longest_request().min(p.engine.longest_request())
        }));
        // A disaggregated unit brings its prefill pool, scaled with it.
        providers.push(Provider {
            name: t.name.clone(),
            deployment: o.deployment.clone(),
            replicas: r * o.per_unit,
            engine: o.engine,
            target: t,
            prefill: o.prefill.as_ref().map(|p| PrefillPool {
                deployment: p.deployment.clone(),
                replicas: r * p.replicas,
                engine: p.engine,
                same_domain: p.same_domain,
            }),
            usd_per_mtok: None,
            // The planned classes' prompts name no prefixes.
            prefix_caching: true,
        });
    }
    let rate = demand * (cap_sim / cap_full) / f64::from(class.osl);
    // The smallest pool's share of the requests, drawn by weight.
    let least = least_share(&providers);
    // A fleet reaches its steady state once its first requests have run their course: until
    // then no replica holds its share of decoding requests, and a router weighing requests
    // in flight heaps prompts on the pools that look empty (a disaggregated unit's prefill
    // queue). The figures are taken from the requests that arrive after one request's
    // lifetime, the longest of the pools' (at most `confirm_s`), and the run lasts that much
    // longer.
    let warm = chosen
        .iter()
        .map(|&(i, _)| {
            let o = &m.options[i].out;
            o.ttft_s + f64::from(class.osl) * o.tpot_s
        })
        .fold(0.0, f64::max)
        .min(m.rules.confirm_s);
    // The plan is what is confirmed, so its split of the traffic is what is simulated: drawn
    // by weight, not left to a balancer, which sent a fast pool kept at one replica 90% of
    // the requests where the plan gave it 41%, and whose first-token target (the class's,
    // as a request asks for it) shut a slower pool out for good once its early prompts had
    // queued; the percentiles then spoke for the fast pool alone.
    let scn = Scenario {
        name: class.name.clone(),
        seed,
        providers,
        policy: Policy::Weighted,
        health: Health::default(),
        max_attempts: 1,
        max_tokens: MaxTokens::Output,
        // The targets are checked below, not asked of the router.
        classes: vec![Class {
            name: class.name.clone(),
            ttft_s: None,
            tpot_s: None,
        }],
        failures: Vec::new(),
        workload: WorkloadSpec {
            arrivals: Arrivals::Poisson { rate },
            prompt: Lengths::Fixed(class.isl),
            output: Lengths::spread(class.osl, class.osl_cv),
            class_shares: vec![1.0],
            max_requests: None,
            // A class of little demand runs long enough for its percentiles to rest on some
            // requests (40 tok/s of 400-token answers is one request in ten seconds), and a
            // pool of a small share long enough to serve some (a backup pool that the rules
            // make carry a quarter of a class beside committed wafers of 800 times the
            // demand drew none in the run's 200 requests), within a bound on the requests.
            horizon_s: Some(
                warm + m
                    .rules
                    .confirm_s
                    .max(MIN_REQUESTS / rate)
                    .max((MIN_POOL_REQUESTS / least).min(MAX_REQUESTS) / rate),
            ),
        },
        trace: Vec::new(),
        warmup_s: None,
    };
    let params = &m.providers[m.options[chosen[0].0].provider].params;
    let targets = Class {
        name: class.name.clone(),
        ttft_s: Some(class.ttft_s),
        tpot_s: Some(class.tpot_s),
    };
    let names: Vec<String> = scn.providers.iter().map(|p| p.name.clone()).collect();
    let n = names.len();
    let (mut ttft, mut tpot) = (vec![Histogram::default(); n], vec![Histogram::default(); n]);
    let (mut settled, mut within) = (0u64, 0u64);
    let (s, _) = simulate(
        &scn,
        params,
        RunOptions { bins: 10 },
        |r: &Record<'_>| {
            if r.arrival_s < warm {
                return;
            }
            // A failed request is one not served well, unless it is longer than the model's
            // context, which no plan could serve.
            if let Some(why) = r.failure {
                if why != switchyard_sim::reason::PAST_CONTEXT {
                    settled += 1;
                }
                return;
            }
            let Some(k) = names.iter().position(|x| x == r.provider) else {
                return;
            };
            settled += 1;
            if let Some(t) = r.ttft_s {
                ttft[k].record(t);
            }
            if let Some(t) = r.tpot_s {
                tpot[k].record(t);
            }
            if targets.meets(r.ttft_s, r.tpot_s) {
                within += 1;
            }
        },
        &mut |_| {},
    );
    let q = class.percentile;
    // A pool the scaling kept at one replica beside hundreds takes more of the simulated
    // traffic than of the plan's: each pool's latencies count at its share of the plan.
    let mix = |per: &[Histogram]| -> Option<f64> {
        let parts: Vec<(&Histogram, f64)> = per.iter().zip(planned.iter().copied()).collect();
        Histogram::mixture_quantile(&parts, q)
    };
    // A pool that served no request after the warm-up says nothing of its latencies, and the
    // mixture would leave it out: the others' would speak for its share of the plan.
    Some(Found {
        silent: ttft
            .iter()
            .zip(&names)
            .find(|(h, _)| h.count() == 0)
            .map(|(_, n)| n.split('/').next().unwrap_or(n).to_string()),
        ttft_s: mix(&ttft)?,
        tpot_s: mix(&tpot).unwrap_or(0.0),
        goodput: if settled > 0 {
            within as f64 / settled as f64
        } else {
            0.0
        },
        // Requests whose drawn output runs past the model's context are refused as an
        // engine refuses them, however much capacity there is: not the plan's failure. One
        // past what a pool's KV cache holds is the plan's.
        failed: s.fleet.failed.saturating_sub(
            s.failures
                .iter()
                .filter(|f| f.reason == switchyard_sim::reason::PAST_CONTEXT)
                .map(|f| f.count)
                .sum::<u64>(),
        ),
    })
}

/// The share of each pool's `units` a confirming simulation runs, for a fleet of `total`
/// replicas and a budget of `confirm` replicas. Every pool keeps at least one unit; where
/// that would swell the smallest pool's share of the fleet (one disaggregated unit beside
/// hundreds of replicas), the fleet is scaled less, so that the smallest keeps its
/// proportion, up to four times the budget.
fn sim_scale(units: &[u32], total: u32, confirm: u32) -> f64 {
    let mut scale = (f64::from(confirm) / f64::from(total.max(1))).min(1.0);
    if let Some(fewest) = units.iter().copied().filter(|&n| n > 0).min() {
        let keep_mix = (1.0 / f64::from(fewest)).min(1.0);
        if keep_mix > scale && f64::from(total) * keep_mix <= 4.0 * f64::from(confirm) {
            scale = keep_mix;
        }
    }
    scale
}

/// Requests a confirming simulation sees after its warm-up at the least, however little the
/// demand: its run lasts `confirm_s` or as long as these take to arrive.
const MIN_REQUESTS: f64 = 200.0;

/// One confirming simulation.
#[derive(Clone)]
struct Job {
    class: usize,
    chosen: Vec<(usize, u32)>,
    demand: f64,
    seed: u64,
    /// Replicas it is scaled down to.
    budget: u32,
}

impl Job {
    /// Replicas of the fleet it simulates, not units: a disaggregated unit holds several.
    fn replicas(&self, m: &Model<'_>) -> u32 {
        self.chosen
            .iter()
            .map(|&(i, n)| n.saturating_mul(m.options[i].replicas_per_unit()))
            .sum()
    }

    /// The share of each pool it runs (see [`sim_scale`]).
    fn scale(&self, m: &Model<'_>) -> f64 {
        let units: Vec<u32> = self.chosen.iter().map(|&(_, n)| n).collect();
        sim_scale(&units, self.replicas(m), self.budget)
    }
}

/// Times a failed scaled-down confirmation is run again at twice the replicas: a smaller
/// pool smooths bursts less than the plan's, so its tail may miss a target the whole fleet
/// meets (a chat fleet's p99 TTFT at 24 replicas 5.4 s, at 48 0.3 s); the figures
/// reported are the largest run's.
const CONFIRM_DOUBLINGS: u32 = 2;

/// Runs `jobs` on every core; results come back in job order, so the plan does not depend
/// on which thread ran what.
fn run_all(m: &Model<'_>, jobs: &[Job]) -> Vec<Option<Found>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(jobs.len().max(1));
    let mut out = vec![None; jobs.len()];
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t..jobs.len())
                        .step_by(threads)
                        .map(|i| (i, run(m, &jobs[i])))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            if let Ok(results) = h.join() {
                for (i, r) in results {
                    out[i] = r;
                }
            }
        }
    });
    out
}

/// Fills the simulated figures and the N-1 table of `ph`; returns the simulations run.
pub(crate) fn confirm(m: &Model<'_>, k: usize, ph: &mut PhasePlan) -> u32 {
    let tol = 1.0 + m.rules.tolerance;
    let of_class = |c: usize, skip: Option<usize>| -> Vec<(usize, u32)> {
        ph.buys
            .iter()
            .filter(|b| {
                m.options[b.option].class == c && Some(m.options[b.option].provider) != skip
            })
            .map(|b| (b.option, b.replicas))
            .collect()
    };
    // Within the targets, and no request refused or lost; else why not.
    let why_not = |class: &crate::solve::ClassM, r: &Found| -> Option<String> {
        let pct = class.percentile * 100.0;
        if r.ttft_s > class.ttft_s * tol {
            Some(format!(
                "p{pct} TTFT {:.0} ms over its {:.0} ms target",
                r.ttft_s * 1e3,
                class.ttft_s * 1e3
            ))
        } else if r.tpot_s > class.tpot_s * tol {
            Some(format!(
                "p{pct} TPOT {:.1} ms over its {:.1} ms target",
                r.tpot_s * 1e3,
                class.tpot_s * 1e3
            ))
        } else if r.failed > 0 {
            Some(format!("{} simulated requests failed", r.failed))
        } else {
            r.silent.as_ref().map(|p| {
                format!(
                    "the pool on `{p}` served no simulated request, so its share went unchecked"
                )
            })
        }
    };
    let ok = |class: &crate::solve::ClassM, r: &Found| why_not(class, r).is_none();
    // Peak demand on each class's fleet, then each provider's loss at the N-1 share. A
    // provider that serves nothing of a class leaves that class's fleet as it was, so its loss
    // needs no simulation of its own.
    let mut jobs = Vec::new();
    for (c, class) in m.classes.iter().enumerate() {
        jobs.push(Job {
            class: c,
            chosen: of_class(c, None),
            demand: class.demand[k],
            seed: 1 + k as u64,
            budget: m.rules.confirm_replicas,
        });
    }
    let mut n1_jobs: Vec<Vec<Option<usize>>> = Vec::new();
    for q in 0..m.providers.len() {
        let mut row = Vec::new();
        for (c, class) in m.classes.iter().enumerate() {
            let rest = of_class(c, Some(q));
            let kept = class.n_minus_1 * class.demand[k];
            if kept > 0.0 && rest.len() != of_class(c, None).len() {
                row.push(Some(jobs.len()));
                jobs.push(Job {
                    class: c,
                    chosen: rest,
                    demand: kept,
                    seed: 100 + k as u64,
                    budget: m.rules.confirm_replicas,
                });
            } else {
                row.push(None);
            }
        }
        n1_jobs.push(row);
    }
    let mut results = run_all(m, &jobs);
    let mut sims = results.iter().filter(|r| r.is_some()).count() as u32;
    for _ in 0..CONFIRM_DOUBLINGS {
        // Doubled no further than the most a scenario may ask for.
        let most = crate::scenario::MAX_CONFIRM_REPLICAS;
        let again: Vec<usize> = (0..jobs.len())
            .filter(|&j| {
                results[j]
                    .as_ref()
                    .is_some_and(|r| !ok(&m.classes[jobs[j].class], r))
                    && jobs[j].scale(m) < 1.0
                    && jobs[j].budget < most
            })
            .collect();
        if again.is_empty() {
            break;
        }
        for &j in &again {
            jobs[j].budget = jobs[j].budget.saturating_mul(2).min(most);
        }
        let rerun: Vec<Job> = again.iter().map(|&j| jobs[j].clone()).collect();
        let found = run_all(m, &rerun);
        sims += found.iter().filter(|r| r.is_some()).count() as u32;
        for (&j, r) in again.iter().zip(found) {
            results[j] = r;
        }
    }
    for (c, co) in ph.classes.iter_mut().enumerate() {
        let class = &m.classes[c];
        match &results[c] {
            Some(r) => {
                co.sim_ttft_s = Some(r.ttft_s);
                co.sim_tpot_s = Some(r.tpot_s);
                co.sim_goodput = Some(r.goodput);
                co.unconfirmed = why_not(class, r);
                co.confirmed = co.unconfirmed.is_none();
            }
            None => {
                co.confirmed = class.demand[k] <= 0.0;
                co.unconfirmed =
                    (!co.confirmed).then(|| "no replica serves it to simulate".to_string());
            }
        }
    }
    let mut table = Vec::new();
    for (q, prov) in m.providers.iter().enumerate() {
        let mut rows = Vec::new();
        for (c, class) in m.classes.iter().enumerate() {
            let rest = of_class(c, Some(q));
            let cap: f64 = rest
                .iter()
                .map(|&(i, n)| m.options[i].out.capacity_tok_s * f64::from(n))
                .sum();
            let d = class.demand[k];
            // An empty sum of floats is -0.0; a share is never below zero.
            let share = if d > 0.0 {
                (cap / d).clamp(0.0, 1.0) + 0.0
            } else {
                1.0
            };
            let confirmed = match n1_jobs[q][c] {
                Some(j) => results[j].as_ref().is_some_and(|r| ok(class, r)),
                // Nothing lost: the fleet is the class's whole one, whose own verdict (at
                // more demand than the N-1 share) speaks for it; a loss of a provider that
                // holds none of it is not a failure of the class beside that verdict.
                None => true,
            };
            rows.push((class.name.clone(), share, confirmed));
        }
        table.push(NMinus1 {
            lost: prov.name.clone(),
            classes: rows,
        });
    }
    ph.n_minus_1 = table;
    sims
}

#[cfg(test)]
mod tests {
    use super::sim_scale;

    #[test]
    fn a_scaled_fleet_keeps_its_smallest_pool_in_proportion_where_the_budget_allows() {
        // 22 units of 5 replicas beside 477 replicas, a budget of 24: scaled by 1/22, the
        // unit is one of 23 pools' worth, as in the plan, not one of 24 replicas' worth.
        let s = sim_scale(&[22, 477], 22 * 5 + 477, 24);
        assert!((s - 1.0 / 22.0).abs() < 1e-12, "{s}");
        // Past four times the budget, the budget wins and the unit is kept at one.
        let s = sim_scale(&[2, 5000], 2 * 5 + 5000, 24);
        assert!((s - 24.0 / 5010.0).abs() < 1e-12, "{s}");
        // A fleet within the budget runs whole.
        assert_eq!(sim_scale(&[3, 4], 7, 24), 1.0);
    }
}
