//! From a scenario to options, and per phase the cheapest mix of options that keeps every
//! rule, by mixed-integer programming; when none exists, what is missing and which rule binds.

use crate::scenario::{line_of_field, ClassSpec, MwIs, PlanFile, Rules, WhatIf};
use crate::{Buy, Candidate, ClassOutcome, PhasePlan, PlanError, ProviderUse};
use microlp::{ComparisonOp, OptimizationDirection, Problem};
use std::collections::BTreeMap;
use switchyard_catalog::{SystemKind, Workload};
use switchyard_perf::{
    best_deployment, disaggregated, Catalog, Deployment, Objective, Params, Query, System,
};
use switchyard_replica::EngineConfig;

/// An option with what the simulator needs to run it. One unit bought is `per_unit`
/// replicas of `deployment` and, for disaggregated serving, the prefill replicas beside them.
#[derive(Debug, Clone)]
pub(crate) struct Opt<'a> {
    pub out: Candidate,
    pub deployment: Deployment<'a>,
    pub engine: EngineConfig,
    pub per_unit: u32,
    /// Output tokens a second one unit carries at its peak whatever the targets: the load
    /// its power follows, so that a target that holds the load down does not make the same
    /// load cost more energy.
    pub peak_tok_s: f64,
    pub prefill: Option<PrefillUnit<'a>>,
    pub provider: usize,
    pub class: usize,
}

/// The prefill pool of one disaggregated unit.
#[derive(Debug, Clone)]
pub(crate) struct PrefillUnit<'a> {
    pub deployment: Deployment<'a>,
    pub replicas: u32,
    pub engine: EngineConfig,
    /// Whether the unit's two pools share one scale-up domain.
    pub same_domain: bool,
}

impl<'a> Opt<'a> {
    /// The unit's pools: (one replica, replicas per unit).
    pub fn pools(&self) -> impl Iterator<Item = (&Deployment<'a>, u32)> {
        std::iter::once((&self.deployment, self.per_unit))
            .chain(self.prefill.iter().map(|p| (&p.deployment, p.replicas)))
    }

    /// Replicas in one unit, both pools counted.
    pub fn replicas_per_unit(&self) -> u32 {
        self.pools().map(|(_, n)| n).sum()
    }

    /// Joules per output token of one unit carrying `tok_s` at utilisation `util`: every
    /// pool's power, since every token passes through each.
    pub fn joules_per_token(&self, params: &Params, tok_s: f64, util: f64) -> f64 {
        self.pools()
            .map(|(d, n)| {
                let mut d = d.clone();
                d.layout.dp = n;
                d.economics_at(params, tok_s, util)
                    .joules_per_token
                    .unwrap_or(0.0)
            })
            .sum()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ProviderM {
    pub name: String,
    /// Megawatts a phase may draw: those on offer, and where what is installed stays
    /// (`keep_installed`), no more than any later phase offers, since systems installed now
    /// would draw them then.
    pub mw: Vec<f64>,
    /// Megawatts on offer in each phase, as the scenario gives them.
    pub offered: Vec<f64>,
    pub committed: Vec<f64>,
    pub max_share: f64,
    pub params: Params,
}

#[derive(Debug, Clone)]
pub(crate) struct ClassM {
    pub name: String,
    pub isl: u32,
    pub osl: u32,
    /// Spread of the output lengths (standard deviation over mean).
    pub osl_cv: f64,
    pub ttft_s: f64,
    pub tpot_s: f64,
    pub percentile: f64,
    pub demand: Vec<f64>,
    /// The share of demand the rest must carry without any one provider: the class's own,
    /// else the rules'.
    pub n_minus_1: f64,
    /// The class's own cap on one provider's share, over the rules' and the providers'.
    pub max_share: Option<f64>,
}

impl ClassM {
    /// The most of this class's demand provider `p` may be needed to carry, as a share.
    pub fn cap(&self, p: &ProviderM) -> f64 {
        self.max_share.unwrap_or(p.max_share).min(1.0)
    }
}

/// Everything the solver and the confirming simulations need.
#[derive(Debug)]
pub(crate) struct Model<'a> {
    pub options: Vec<Opt<'a>>,
    pub providers: Vec<ProviderM>,
    pub classes: Vec<ClassM>,
    pub phases: Vec<String>,
    pub rules: Rules,
    pub rejected: Vec<String>,
}

/// The systems each provider offers, with the provider's price in place of the catalog's.
/// Returned in provider order; `lose` drops a provider.
pub(crate) fn systems_on_offer(
    file: &PlanFile,
    text: &str,
    origin: &str,
    catalog: &Catalog,
    what_if: &WhatIf,
) -> Result<Vec<(usize, System)>, PlanError> {
    let mut out = Vec::new();
    if let Some(l) = &what_if.lose {
        if !file.providers.iter().any(|p| &p.get_ref().name == l) {
            let names: Vec<&str> = file
                .providers
                .iter()
                .map(|p| p.get_ref().name.as_str())
                .collect();
            return Err(PlanError::Scenario {
                origin: origin.to_string(),
                message: format!(
                    "--lose: no provider named `{l}`; known: {}",
                    names.join(", ")
                ),
            });
        }
    }
    for (i, sp) in file.providers.iter().enumerate() {
        let p = sp.get_ref();
        if what_if.lose.as_deref() == Some(p.name.as_str()) {
            continue;
        }
        // Whether a life given alone spread some system's purchase price.
        let mut lived = false;
        for id in &p.systems {
            let mut s = catalog
                .system(id)
                .map_err(|e| PlanError::Scenario {
                    origin: origin.to_string(),
                    message: format!(
                        "line {}, field `systems`: provider `{}`: {e}",
                        line_of_field(text, &sp.span(), "systems"),
                        p.name
                    ),
                })?
                .clone();
            // Two names of one system (an id and its alias) would offer it twice.
            if out
                .iter()
                .any(|(f, o): &(usize, System)| *f == i && o.id == s.id)
            {
                return Err(PlanError::Scenario {
                    origin: origin.to_string(),
                    message: format!(
                        "line {}, field `systems`: provider `{}` lists `{}` twice (the second time as `{id}`)",
                        line_of_field(text, &sp.span(), "systems"),
                        p.name,
                        s.id
                    ),
                });
            }
            if p.capex_usd_per_system.is_some() || p.rent_usd_per_chip_hour.is_some() {
                let mut price = s.price.clone().unwrap_or_default();
                price.capex_usd_per_system = p.capex_usd_per_system;
                price.rent_usd_per_chip_hour = p.rent_usd_per_chip_hour;
                if p.life_years.is_some() {
                    price.life_years = p.life_years;
                }
                price.notes = format!("price set by the planning scenario for provider {}", p.name);
                s.price = Some(price);
            } else if let Some(life) = p.life_years {
                // A life alone spreads the catalog's purchase price, where that is the price
                // charged (rent, where the catalog has one, is charged before it).
                if let Some(price) = s.price.as_mut().filter(|pr| {
                    pr.capex_usd_per_system.is_some() && pr.rent_usd_per_chip_hour.is_none()
                }) {
                    price.life_years = Some(life);
                    lived = true;
                }
            }
            out.push((i, s));
        }
        // One purchase price for systems of different sizes (an 8-GPU server and a 72-GPU
        // rack) would price the rack's chips at a ninth of the server's: a plan that buys
        // only racks, with nothing said.
        if p.capex_usd_per_system.is_some() {
            let mut sizes = out
                .iter()
                .filter(|(f, _)| *f == i)
                .map(|(_, s)| (s.chips_per_system, s.id.as_str()));
            if let Some((first, a)) = sizes.next() {
                if let Some((other, b)) = sizes.find(|&(n, _)| n != first) {
                    return Err(PlanError::Scenario {
                        origin: origin.to_string(),
                        message: format!(
                            "line {}, field `capex_usd_per_system`: provider `{}`: one price for a system of `{a}` ({first} chips) and one of `{b}` ({other} chips); list systems of different sizes under providers of their own, or price them by the chip-hour (rent_usd_per_chip_hour)",
                            line_of_field(text, &sp.span(), "capex_usd_per_system"),
                            p.name
                        ),
                    });
                }
            }
        }
        let alone = p.capex_usd_per_system.is_none() && p.rent_usd_per_chip_hour.is_none();
        if alone && p.life_years.is_some() && !lived {
            return Err(PlanError::Scenario {
                origin: origin.to_string(),
                message: format!(
                    "line {}, field `life_years`: provider `{}`: none of its systems has a purchase price in the catalog that is charged (they are rented by the hour, or unpriced), so a life changes nothing; give capex_usd_per_system to buy them",
                    line_of_field(text, &sp.span(), "life_years"),
                    p.name
                ),
            });
        }
    }
    Ok(out)
}

/// A class's prompt and output lengths and its outputs' spread: its own where given, else
/// its workload's (means rounded to whole tokens; no spread without either). Errors name the
/// field at fault.
fn class_lengths(
    c: &ClassSpec,
    catalog: &Catalog,
) -> Result<(u32, u32, f64), (&'static str, String)> {
    let w = match &c.workload {
        None => None,
        Some(id) => {
            let w = catalog
                .workload(id)
                .map_err(|e| ("workload", e.to_string()))?;
            let model = catalog
                .model(&c.model)
                .map_or(c.model.as_str(), |m| m.id.as_str());
            if w.model != model {
                return Err((
                    "workload",
                    format!("workload `{id}` runs `{}`, not `{model}`", w.model),
                ));
            }
            Some(w)
        }
    };
    let mean = |given: Option<u32>, field: &'static str, of: fn(&Workload) -> Option<f64>| {
        given
            .or_else(|| w.and_then(of).map(|v| v.round().max(1.0) as u32))
            .ok_or_else(|| {
                (
                    field,
                    format!("no `{field}`, and the workload gives no mean"),
                )
            })
    };
    Ok((
        mean(c.isl, "isl", |w| w.isl)?,
        mean(c.osl, "osl", |w| w.osl)?,
        c.osl_cv.or(w.and_then(|w| w.osl_cv)).unwrap_or(0.0),
    ))
}

/// The most output tokens a second a class may ask of a plan: a hundred billion, where a
/// replica carries a few hundred at least, keeps every count of replicas within 32 bits.
const MAX_DEMAND_TOK_S: f64 = 1e11;

impl<'a> Model<'a> {
    pub(crate) fn build(
        file: &PlanFile,
        text: &str,
        origin: &str,
        catalog: &'a Catalog,
        systems: &'a [(usize, System)],
        params: &Params,
        what_if: &WhatIf,
    ) -> Result<Self, PlanError> {
        let rules = file.rules;
        let x = what_if.demand_x.unwrap_or(1.0);
        // A class's field at fault, by its line.
        let class_err =
            |cs: &toml::Spanned<ClassSpec>, field: &str, m: String| PlanError::Scenario {
                origin: origin.to_string(),
                message: format!(
                    "line {}, field `{field}`: class `{}`: {m}",
                    line_of_field(text, &cs.span(), field),
                    cs.get_ref().name
                ),
            };
        let classes: Vec<ClassM> = file
            .classes
            .iter()
            .map(|cs| {
                let c = cs.get_ref();
                let (isl, osl, osl_cv) =
                    class_lengths(c, catalog).map_err(|(field, m)| class_err(cs, field, m))?;
                // Beyond it a plan's replica counts outgrow their integers; the world's
                // whole output is orders of magnitude below it.
                if c.demand_tok_s.iter().any(|d| d * x > MAX_DEMAND_TOK_S) {
                    return Err(class_err(
                        cs,
                        "demand_tok_s",
                        format!(
                            "more than {MAX_DEMAND_TOK_S:e} output tokens a second{}, beyond any fleet's; scale the demand down",
                            if x == 1.0 { String::new() } else { format!(" at --demand-x {x}") }
                        ),
                    ));
                }
                Ok(ClassM {
                    name: c.name.clone(),
                    isl,
                    osl,
                    osl_cv,
                    ttft_s: c.ttft_ms / 1000.0,
                    tpot_s: c.tpot_ms / 1000.0,
                    percentile: c.percentile,
                    demand: c.demand_tok_s.iter().map(|d| d * x).collect(),
                    n_minus_1: c.n_minus_1.unwrap_or(file.rules.n_minus_1),
                    max_share: c.max_share,
                })
            })
            .collect::<Result<_, PlanError>>()?;
        let mut providers = Vec::new();
        let mut index = vec![usize::MAX; file.providers.len()];
        for (i, sp) in file.providers.iter().enumerate() {
            let p = sp.get_ref();
            if what_if.lose.as_deref() == Some(p.name.as_str()) {
                continue;
            }
            let mut pp = params.clone();
            if let Some(pue) = p.pue {
                pp.pue = pue;
            }
            index[i] = providers.len();
            // Looking ahead: a phase installs no more than every later phase keeps powering.
            let mut mw = p.mw.clone();
            if rules.keep_installed {
                for k in (0..mw.len().saturating_sub(1)).rev() {
                    mw[k] = mw[k].min(mw[k + 1]);
                }
            }
            providers.push(ProviderM {
                name: p.name.clone(),
                offered: p.mw.clone(),
                mw,
                committed: p
                    .committed_mw
                    .clone()
                    .unwrap_or_else(|| vec![0.0; p.mw.len()]),
                max_share: p.max_share.unwrap_or(rules.max_share),
                params: pp,
            });
        }
        let mut options = Vec::new();
        let mut rejected = Vec::new();
        for (fi, system) in systems {
            let pi = index[*fi];
            let spec = file.providers[*fi].get_ref();
            let mw_is = what_if.mw_is.or(spec.mw_is).unwrap_or(rules.mw_is);
            let pp = &providers[pi].params;
            for (ci, cs) in file.classes.iter().enumerate() {
                let c = cs.get_ref();
                let class = &classes[ci];
                let model = catalog
                    .model(&c.model)
                    .map_err(|e| class_err(cs, "model", e.to_string()))?;
                // A serving engine refuses a request past the model's context.
                if u64::from(class.isl) + u64::from(class.osl) > model.max_context {
                    return Err(class_err(
                        cs,
                        "isl",
                        format!(
                            "{} + {} tokens exceed the {}-token context of `{}`",
                            class.isl, class.osl, model.max_context, model.id
                        ),
                    ));
                }
                let tag = format!("{} {} for {}", spec.name, system.id, c.name);
                let (isl, osl) = (f64::from(class.isl), f64::from(class.osl));
                let q = Query {
                    tpot_limit: Some(class.tpot_s),
                    osl_cv: class.osl_cv,
                    ..Query::new(model, system, isl, osl)
                };
                let mut d = match best_deployment(&q, pp, Objective::Throughput) {
                    Ok(d) => d,
                    Err(e) => {
                        rejected.push(format!("{tag}: {e}"));
                        continue;
                    }
                };
                d.layout.dp = 1;
                let facility = if mw_is == MwIs::Facility { pp.pue } else { 1.0 };
                let candidate = |layout: String, chips: u32| Candidate {
                    provider: spec.name.clone(),
                    system: system.id.clone(),
                    class: c.name.clone(),
                    disaggregated: false,
                    layout,
                    chips,
                    systems: f64::from(chips) / f64::from(system.chips_per_system.max(1)),
                    capacity_tok_s: 0.0,
                    concurrency: 0.0,
                    ttft_s: 0.0,
                    tpot_s: 0.0,
                    mw: 0.0,
                    usd_per_hour: 0.0,
                    cost_basis: None,
                };
                // Disaggregated prefill and decode, in units of two to sixteen of the
                // aggregated replica's chips.
                let before = options.len();
                options.extend(disaggregated_options(
                    &d,
                    pp,
                    class,
                    (rules.headroom, facility),
                    &candidate,
                    pi,
                    ci,
                ));
                let split_offered = options.len() > before;
                // A wafer or LPU replica of more than the fewest chips that fit leaves room
                // for more sequences' KV caches beside the same weights, and can carry far more
                // per chip (Llama 3.3 70B on 16 CS-3s against 4: about seven times as much a
                // wafer under a 40 ms TPOT): those counts are options too.
                let mut replicas = vec![d.clone()];
                if matches!(system.kind, SystemKind::Wafer | SystemKind::Lpu) {
                    let fewest = d.layout.replica_chips();
                    for k in [2, 4, 8] {
                        let Some(n) = fewest.checked_mul(k) else {
                            break;
                        };
                        let q = Query {
                            chips: Some(n),
                            ..q
                        };
                        if let Ok(mut more) = best_deployment(&q, pp, Objective::Throughput) {
                            more.layout.dp = 1;
                            if replicas
                                .iter()
                                .all(|r| r.layout.replica_chips() != more.layout.replica_chips())
                            {
                                replicas.push(more);
                            }
                        }
                    }
                }
                // The fewest chips' verdict, told only where no larger replica is an option.
                let mut miss: Option<String> = None;
                let mut offered = false;
                let mean = mean_ttft_limit(class, pp);
                for (i, d) in replicas.into_iter().enumerate() {
                    let engine = EngineConfig::for_deployment(&d, pp);
                    let best =
                        d.max_throughput_within(pp, isl, osl, Some(class.tpot_s), Some(mean));
                    let Some(op) = best else {
                        let one = d.at_concurrency(pp, 1.0, isl, osl);
                        // A larger replica that misses is no news: the fewest's verdict stands.
                        if i == 0 {
                            let held = if mean < class.ttft_s {
                                format!(
                                    " (a mean that keeps the tail within {:.0})",
                                    class.ttft_s * 1e3
                                )
                            } else {
                                String::new()
                            };
                            miss = Some(format!(
                                "{tag}: misses the targets even alone: {} on {} chip{} takes a mean TTFT of {:.0} ms against {:.0}{held} and a TPOT of {:.1} ms against {:.1}{}",
                                d.layout,
                                d.layout.replica_chips(),
                                if d.layout.replica_chips() == 1 { "" } else { "s" },
                                one.ttft_s * 1e3,
                                mean * 1e3,
                                one.tpot_s * 1e3,
                                class.tpot_s * 1e3,
                                fastest_on_a_system(&q, pp, &d)
                            ));
                        }
                        continue;
                    };
                    let cap = op.throughput_tok_s * rules.headroom;
                    let Some(watts) = d.full_power_w(pp) else {
                        if i == 0 {
                            miss = Some(format!("{tag}: no power figure for {}", system.id));
                        }
                        continue;
                    };
                    let mw = watts / 1e6 * facility;
                    let economics = d.economics_at(pp, cap, 1.0);
                    let Some(usd) = economics.usd_per_hour else {
                        if i == 0 {
                            miss = Some(format!(
                                "{tag}: no price for {}; give the provider capex_usd_per_system or rent_usd_per_chip_hour",
                                system.id
                            ));
                        }
                        continue;
                    };
                    let chips = d.layout.replica_chips();
                    offered = true;
                    options.push(Opt {
                        out: Candidate {
                            capacity_tok_s: cap,
                            concurrency: op.concurrency * rules.headroom,
                            ttft_s: op.ttft_s,
                            tpot_s: op.tpot_s,
                            mw,
                            usd_per_hour: usd,
                            cost_basis: economics.cost_basis,
                            ..candidate(d.layout.to_string(), chips)
                        },
                        peak_tok_s: d.max_throughput(pp, isl, osl, None).throughput_tok_s,
                        deployment: d,
                        engine,
                        per_unit: 1,
                        prefill: None,
                        provider: pi,
                        class: ci,
                    });
                }
                // A split into prefill and decode pools that serves the class is an option
                // of this system: the aggregated replica's miss is no reason to reject it.
                if !offered && !split_offered {
                    rejected.extend(miss);
                }
            }
        }
        Ok(Model {
            options,
            providers,
            classes,
            phases: file
                .phases
                .iter()
                .map(|p| p.get_ref().name.clone())
                .collect(),
            rules,
            rejected,
        })
    }
}

/// A list's part of a message: nothing where the list is empty, else `say` of its items
/// joined by `sep`.
fn aside<T: AsRef<str>>(list: &[T], sep: &str, say: impl FnOnce(String) -> String) -> String {
    if list.is_empty() {
        String::new()
    } else {
        say(list
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<&str>>()
            .join(sep))
    }
}

/// The least power provider `p` can put to use: the whole step of its options (for class
/// `c`, or any) that draws least, a whole system, or a whole replica where one spans several.
/// Infinite where it has no option.
fn smallest_step(m: &Model<'_>, p: usize, c: Option<usize>) -> f64 {
    offered(m, p)
        .filter(|(_, o)| c.is_none_or(|c| o.class == c))
        .map(|(_, o)| o.out.mw.max(o.out.mw / o.out.systems))
        .fold(f64::INFINITY, f64::min)
}

/// Where one system holds more chips than the replica `d` that missed a class's targets,
/// what the layout fastest for a lone request on the whole system takes: the miss of the
/// fewest chips does not show how far the system as a whole falls short.
fn fastest_on_a_system(q: &Query<'_>, p: &Params, d: &Deployment<'_>) -> String {
    let per_system = q.system.chips_per_system.max(1);
    if per_system <= d.layout.replica_chips() {
        return String::new();
    }
    let whole = Query {
        chips: Some(per_system),
        concurrency: 1.0,
        tpot_limit: None,
        ttft_limit: None,
        ..*q
    };
    let Ok(f) = best_deployment(&whole, p, Objective::Latency) else {
        return String::new();
    };
    let one = f.at_concurrency(p, 1.0, q.isl, q.osl);
    format!(
        "; the fastest on one whole system, {} on {} chips, takes a TTFT of {:.0} ms and a TPOT of {:.1} ms",
        f.layout,
        f.layout.replica_chips(),
        one.ttft_s * 1e3,
        one.tpot_s * 1e3
    )
}

/// Which rules a solve applies (dropping some tells which one binds).
#[derive(Debug, Clone, Copy)]
struct Apply {
    share: bool,
    n1: bool,
    power: bool,
    commit: bool,
    keep: bool,
}

impl Apply {
    /// Every rule.
    const ALL: Apply = Apply {
        share: true,
        n1: true,
        power: true,
        commit: true,
        keep: true,
    };
}

/// Systems installed before a phase, by (provider index, system id).
pub(crate) type Installed = BTreeMap<(usize, String), u32>;

/// Replica counts per option, or `None` when infeasible.
///
/// Fleets run to thousands of replicas, where branch and bound over integers is slow and
/// buys nothing: the linear relaxation is solved with `microlp` and every count rounded up.
/// Rounding up only adds capacity, so demand and N-1 stay met. Where the whole replicas and
/// whole systems (a rack a replica takes part of) then draw more than a provider offers,
/// its limit is lowered by the excess and the problem solved again (see [`rounded`]).
/// Where rounding a coarse unit up costs much (six tenths of a 20-wafer replica become a
/// whole one, where one 5-wafer replica would do), the problem is solved again with that
/// unit held to what rounding down leaves, and again from the cheaper plan found, keeping
/// the cheapest whole plan. From that plan a branch and bound over whole units and whole
/// systems ([`exact`]) looks for a cheaper one, and for one at all where rounding found none.
fn solve(
    m: &Model<'_>,
    k: usize,
    a: Apply,
    installed: &Installed,
    before: Option<&[u32]>,
) -> Result<Option<Vec<u32>>, PlanError> {
    let cost = |n: &[u32]| -> f64 { plan_usd(m, n, kept(m, a, installed)) };
    // The phase before's plan, where it still keeps every rule: what a phase without a plan
    // of its own falls back to, and what a costlier one gives way to.
    let before = before.filter(|b| holds(m, k, a, installed, b));
    let Some((x, whole)) = rounded(m, k, a, installed, &[])? else {
        // Rounding found no whole plan within the limits it lowered; the search over whole
        // units may still find one, which must then keep every rule.
        let found = exact(m, k, a, installed, None, EXACT_NODES_TO_FIND)?
            .filter(|n| holds(m, k, a, installed, n));
        return Ok(match (found, before) {
            (Some(n), Some(b)) if cost(b) < cost(&n) => Some(b.to_vec()),
            (Some(n), _) => Some(n),
            (None, b) => b.map(<[u32]>::to_vec),
        });
    };
    // Round-ups of a plan worth a hundredth of its cost, the costliest first.
    let round_ups = |whole: &[u32], x: &[f64], total: f64| -> Vec<usize> {
        let mut r: Vec<(usize, f64)> = x
            .iter()
            .zip(whole)
            .enumerate()
            .map(|(i, (&v, &n))| (i, bought_usd(m, i, n) - v * m.options[i].out.usd_per_hour))
            .filter(|&(_, extra)| extra > 0.01 * total)
            .collect();
        r.sort_by(|a, b| b.1.total_cmp(&a.1));
        r.into_iter().map(|(i, _)| i).collect()
    };
    let floor = |v: f64| (v - 1e-7).floor().max(0.0);
    let mut best = Trial {
        cost: cost(&whole),
        whole,
        relaxed: x,
        holds: Vec::new(),
    };
    for _ in 0..REPAIR_ROUNDS {
        let mut found: Option<Trial> = None;
        for i in round_ups(&best.whole, &best.relaxed, best.cost)
            .into_iter()
            .take(4)
        {
            let mut caps: Vec<(usize, f64)> =
                best.holds.iter().copied().filter(|c| c.0 != i).collect();
            caps.push((i, floor(best.relaxed[i])));
            // Held down, the unit may give way to one costlier still (a disaggregated
            // unit for a 20-wafer replica, where a 10-wafer one would do): hold that one
            // down too, a few deep.
            for _ in 0..4 {
                let Some((x, other)) = rounded(m, k, a, installed, &caps)? else {
                    break;
                };
                let c = cost(&other);
                let bar = found.as_ref().map_or(best.cost, |f| f.cost);
                if c < bar * (1.0 - 1e-9) {
                    found = Some(Trial {
                        cost: c,
                        whole: other,
                        relaxed: x,
                        holds: caps,
                    });
                    break;
                }
                let next = round_ups(&other, &x, c)
                    .into_iter()
                    .find(|j| caps.iter().all(|h| h.0 != *j));
                match next {
                    Some(j) => caps.push((j, floor(x[j]))),
                    None => break,
                }
            }
        }
        match found {
            Some(f) => best = f,
            None => break,
        }
    }
    // The search over whole units, from the cheapest rounding found: where it finds a
    // plan that keeps every rule and costs less, or the rounding does not keep them (a
    // demand of a thousandth of a token a second rounds to no replica; a commitment the
    // lowered limits let go), that one. A plan that keeps them all or none.
    let rounded_holds = holds(m, k, a, installed, &best.whole);
    let nodes = if rounded_holds {
        EXACT_NODES
    } else {
        EXACT_NODES_TO_FIND
    };
    let found = exact(m, k, a, installed, Some(&best.whole), nodes)?
        .filter(|n| holds(m, k, a, installed, n));
    match found {
        Some(n) if !rounded_holds || cost(&n) < best.cost * (1.0 - 1e-9) => {
            best.cost = cost(&n);
            best.whole = n;
        }
        None if !rounded_holds => return Ok(before.map(<[u32]>::to_vec)),
        _ => {}
    }
    // The phase before's plan, where it still holds, costs what it cost: a phase that asks
    // no more is planned for no more, whatever rounding this phase's relaxation met.
    if let Some(before) = before {
        if cost(before) < best.cost {
            return Ok(Some(before.to_vec()));
        }
    }
    Ok(Some(best.whole))
}

/// Whether whole `counts` meet phase `k` under the rules `a` applies: each class's demand,
/// its N-1 share and its split within the largest shares, and each provider's power with
/// the systems kept. A commitment is met to within one unit of each kind bought from its
/// provider ([`commit_slack`]).
fn holds(m: &Model<'_>, k: usize, a: Apply, installed: &Installed, counts: &[u32]) -> bool {
    let carried = |c: usize, keep: &dyn Fn(usize) -> bool| -> f64 {
        m.options
            .iter()
            .zip(counts)
            .filter(|(o, _)| o.class == c && keep(o.provider))
            .map(|(o, &n)| o.out.capacity_tok_s * f64::from(n))
            .sum()
    };
    let enough = |have: f64, need: f64| have >= need * (1.0 - 1e-9);
    for (c, class) in m.classes.iter().enumerate() {
        let d = class.demand[k];
        if d <= 0.0 {
            continue;
        }
        if !enough(carried(c, &|_| true), d) {
            return false;
        }
        if a.n1
            && class.n_minus_1 > 0.0
            && (0..m.providers.len()).any(|q| !enough(carried(c, &|p| p != q), class.n_minus_1 * d))
        {
            return false;
        }
        if a.share {
            let most: f64 = m
                .providers
                .iter()
                .enumerate()
                .map(|(p, prov)| carried(c, &|x| x == p).min(class.cap(prov) * d))
                .sum();
            if !enough(most, d) {
                return false;
            }
        }
    }
    let pools = shared(m, counts, kept(m, a, installed));
    m.providers.iter().enumerate().all(|(p, prov)| {
        let drawn = drawn_mw(&pools, p);
        let used = used_mw(m, counts, p);
        let committed = prov.committed[k];
        (!a.power || drawn <= prov.mw[k] * (1.0 + 1e-12))
            && (!a.commit
                || committed <= 0.0
                || used >= commit_target(m, p, k) * (1.0 - 1e-9) - commit_slack(m, counts, p))
    })
}

/// A whole plan [`solve`]'s repair found: its cost an hour, its whole and relaxed counts,
/// and the counts held down to find it.
struct Trial {
    cost: f64,
    whole: Vec<u32>,
    relaxed: Vec<f64>,
    holds: Vec<(usize, f64)>,
}

/// Rounds of [`solve`]'s repair of costly round-ups.
const REPAIR_ROUNDS: usize = 6;

/// What `n` units of option `i` cost an hour as bought: whole systems, a rack a replica
/// takes part of paid whole.
pub(crate) fn bought_usd(m: &Model<'_>, i: usize, n: u32) -> f64 {
    let o = &m.options[i].out;
    o.usd_per_hour / o.systems * f64::from(whole_systems(o, n))
}

/// The systems of one kind one provider's options occupy together.
pub(crate) struct Shared {
    pub provider: usize,
    pub system: String,
    /// The options' shares of a system, summed.
    pub fraction: f64,
    /// The whole systems those shares take: replicas of different classes or layouts share
    /// a rack or a server, so the shares are summed before rounding up.
    pub whole: u32,
    pub usd_per_system: f64,
    pub mw_per_system: f64,
}

/// The systems `counts` (units per option) occupy, by provider and kind of system, and
/// those `kept` from earlier phases, which stay whether or not a replica uses them.
pub(crate) fn shared(m: &Model<'_>, counts: &[u32], kept: &Installed) -> Vec<Shared> {
    let mut out: Vec<Shared> = Vec::new();
    let mut add = |i: usize, share: f64| {
        let o = &m.options[i];
        match out
            .iter_mut()
            .find(|s| s.provider == o.provider && s.system == o.out.system)
        {
            Some(s) => s.fraction += share,
            None => out.push(Shared {
                provider: o.provider,
                system: o.out.system.clone(),
                fraction: share,
                whole: 0,
                usd_per_system: o.out.usd_per_hour / o.out.systems,
                mw_per_system: o.out.mw / o.out.systems,
            }),
        }
    };
    for (i, &n) in counts.iter().enumerate().filter(|(_, &n)| n > 0) {
        add(i, f64::from(n) * m.options[i].out.systems);
    }
    // A kind kept but now idle is priced and powered as any option on it is.
    for (p, system) in kept.iter().filter(|(_, &n)| n > 0).map(|(g, _)| g) {
        if let Some(i) = m
            .options
            .iter()
            .position(|o| o.provider == *p && &o.out.system == system)
        {
            add(i, 0.0);
        }
    }
    for s in &mut out {
        let floor = kept
            .get(&(s.provider, s.system.clone()))
            .copied()
            .unwrap_or(0);
        s.whole = whole_of(s.fraction).max(floor);
    }
    out
}

/// The systems kept from earlier phases that the rules in force keep: `installed`, or none.
fn kept<'a>(m: &Model<'_>, a: Apply, installed: &'a Installed) -> &'a Installed {
    static NONE: Installed = Installed::new();
    if a.keep && m.rules.keep_installed {
        installed
    } else {
        &NONE
    }
}

/// What systems shared as `pools` cost an hour: each whole one.
fn pools_usd(pools: &[Shared]) -> f64 {
    // 0, not a float sum's -0, where there are none.
    pools
        .iter()
        .map(|s| f64::from(s.whole) * s.usd_per_system)
        .sum::<f64>()
        + 0.0
}

/// The megawatts provider `p`'s whole systems in `pools` draw (0, not a float sum's −0,
/// where there are none).
fn drawn_mw(pools: &[Shared], p: usize) -> f64 {
    pools
        .iter()
        .filter(|s| s.provider == p)
        .fold(0.0, |mw, s| mw + f64::from(s.whole) * s.mw_per_system)
}

/// Provider `p`'s options, with their indices.
fn offered<'m, 'a>(m: &'m Model<'a>, p: usize) -> impl Iterator<Item = (usize, &'m Opt<'a>)> {
    m.options
        .iter()
        .enumerate()
        .filter(move |(_, o)| o.provider == p)
}

/// The commitment a provider's whole units may fall short of: one unit of each kind bought
/// from it, as the README states the rule (whole units need not add up to it, and rounding
/// to them under a power limit may leave a little of it).
fn commit_slack(m: &Model<'_>, counts: &[u32], p: usize) -> f64 {
    offered(m, p)
        .filter(|&(i, _)| counts[i] > 0)
        .map(|(_, o)| o.out.mw)
        .sum()
}

/// The power of provider `p`'s commitment in phase `k` that whole systems can use: the
/// commitment, within its limit, and no more than the whole systems of its smallest kind
/// that fit in that limit (a commitment of all of a provider's power where its servers come
/// in steps of 11 kW cannot be used to the watt).
fn commit_target(m: &Model<'_>, p: usize, k: usize) -> f64 {
    let prov = &m.providers[p];
    let within = prov.committed[k].min(prov.mw[k]);
    let system = offered(m, p)
        .map(|(_, o)| o.out.mw / o.out.systems.max(f64::MIN_POSITIVE))
        .min_by(f64::total_cmp);
    match system.filter(|&s| s > 0.0 && s.is_finite()) {
        Some(system) => within.min((prov.mw[k] * (1.0 + 1e-12) / system).floor() * system),
        None => within,
    }
}

/// The least unit provider `p` offers: the commitment [`exact`] asks to within, which keeps
/// what it finds within [`commit_slack`] of any plan that buys at all.
fn least_unit(m: &Model<'_>, p: usize) -> f64 {
    offered(m, p)
        .map(|(_, o)| o.out.mw)
        .min_by(f64::total_cmp)
        .unwrap_or(0.0)
}

/// The megawatts provider `p`'s options use at `counts` units each (its replicas' own
/// power, not the whole systems they take).
fn used_mw(m: &Model<'_>, counts: &[u32], p: usize) -> f64 {
    offered(m, p)
        .map(|(i, o)| o.out.mw * f64::from(counts[i]))
        .sum()
}

/// The same as terms of a linear programme over one variable per option.
fn power_terms(
    m: &Model<'_>,
    vars: &[microlp::Variable],
    p: usize,
) -> Vec<(microlp::Variable, f64)> {
    offered(m, p).map(|(i, o)| (vars[i], o.out.mw)).collect()
}

/// What `counts` cost an hour as bought: the whole systems they share, and those `kept`.
pub(crate) fn plan_usd(m: &Model<'_>, counts: &[u32], kept: &Installed) -> f64 {
    pools_usd(&shared(m, counts, kept))
}

/// The whole systems `n` units of option `o` occupy.
pub(crate) fn whole_systems(o: &Candidate, n: u32) -> u32 {
    whole_of(f64::from(n) * o.systems)
}

/// The whole systems a share of systems takes (a hair over a whole number is that number).
fn whole_of(systems: f64) -> u32 {
    (systems - 1e-9).ceil().clamp(0.0, f64::from(u32::MAX)) as u32
}

/// Counts per option: as the linear relaxation has them, and rounded up to whole units.
type Counts = (Vec<f64>, Vec<u32>);

/// The linear relaxation with option counts held to `caps` (option, most units), then every
/// count rounded up. Where the whole systems of the rounded counts draw more than a
/// provider's megawatts, its limit in the relaxation is lowered by the excess and the
/// problem solved again, a few times at most.
fn rounded(
    m: &Model<'_>,
    k: usize,
    a: Apply,
    installed: &Installed,
    caps: &[(usize, f64)],
) -> Result<Option<Counts>, PlanError> {
    let mut held = vec![0.0; m.providers.len()];
    // Systems of each kind kept from earlier phases left unoccupied in the relaxation, for
    // its counts' rounding up to take.
    let mut rooms = BTreeMap::new();
    let kept = kept(m, a, installed);
    let mut caps = caps.to_vec();
    for _ in 0..16 {
        let Some(x) = relaxed(m, k, a, installed, &caps, (&held, &rooms))? else {
            return Ok(None);
        };
        // Counts past 32 bits are a demand no fleet of these systems holds (replicas of a
        // fraction of a token a second each): said so, rather than clamped into a plan below
        // its demand.
        if let Some(i) = x.iter().position(|&v| v >= f64::from(u32::MAX)) {
            let o = &m.options[i];
            return Err(PlanError::Scenario {
                origin: "the scenario".into(),
                message: format!(
                    "class `{}` would need more than {} replicas of {} on {} ({:.3} tok/s each): its demand is beyond any fleet of them",
                    m.classes[o.class].name,
                    u32::MAX,
                    o.out.layout,
                    o.out.system,
                    o.out.capacity_tok_s
                ),
            });
        }
        let whole: Vec<u32> = x
            .iter()
            .map(|&v| (v - 1e-7).ceil().clamp(0.0, f64::from(u32::MAX)) as u32)
            .collect();
        if !a.power {
            return Ok(Some((x, whole)));
        }
        let mut over = false;
        let pools = shared(m, &whole, kept);
        for (p, prov) in m.providers.iter().enumerate() {
            // Each option's power were it bought alone, and what rounding added to it; the
            // provider draws its whole systems' power, shared among its options.
            let mine: Vec<(usize, f64, f64)> = m
                .options
                .iter()
                .enumerate()
                .filter(|(i, o)| o.provider == p && whole[*i] > 0)
                .map(|(i, o)| {
                    let alone =
                        o.out.mw / o.out.systems * f64::from(whole_systems(&o.out, whole[i]));
                    (i, alone, alone - x[i] * o.out.mw)
                })
                .collect();
            let excess = drawn_mw(&pools, p) - prov.mw[k];
            if excess <= prov.mw[k] * 1e-12 {
                continue;
            }
            over = true;
            // Kept systems are held whole, and a lower limit would put them out of reach:
            // where rounding up occupied more of them than the relaxation did, it leaves that
            // much room the next time.
            let mut roomed = false;
            for s in pools.iter().filter(|s| s.provider == p) {
                let g = (p, s.system.clone());
                if kept.get(&g).is_none_or(|&n| n == 0) {
                    continue;
                }
                let relaxed_share: f64 = m
                    .options
                    .iter()
                    .enumerate()
                    .filter(|(_, o)| o.provider == p && o.out.system == s.system)
                    .map(|(i, o)| x[i] * o.out.systems)
                    .sum();
                let added = f64::from(whole_of(s.fraction)) - relaxed_share;
                if added > 1e-9 {
                    *rooms.entry(g).or_insert(0.0) += added;
                    roomed = true;
                }
            }
            if roomed {
                continue;
            }
            // Where one option's rounding up is the excess and its unit a large share of the
            // provider's power (a fraction of a coarse replica made whole), that option is
            // held to what rounding down leaves, and others fill in; else the provider's
            // limit is lowered by the excess, by at least a whole system of the largest
            // kind in use, so that the passes are few.
            let worst = mine
                .iter()
                .filter(|t| caps.iter().all(|c| c.0 != t.0))
                .max_by(|a, b| a.2.total_cmp(&b.2));
            let coarse = |i: usize| {
                let o = &m.options[i].out;
                o.mw.max(o.mw / o.systems) >= 0.1 * prov.mw[k]
            };
            match worst {
                Some(&(i, _, added)) if added >= excess && coarse(i) => {
                    caps.push((i, (x[i] - 1e-7).floor().max(0.0)));
                }
                _ => {
                    let system = mine
                        .iter()
                        .map(|t| m.options[t.0].out.mw / m.options[t.0].out.systems)
                        .fold(0.0, f64::max);
                    held[p] += excess.max(system);
                }
            }
        }
        if !over {
            return Ok(Some((x, whole)));
        }
    }
    Ok(None)
}

/// The systems of one kind a provider keeps, as the relaxation holds them: a variable of at
/// least the count kept and at least what the options occupy of them, less `room` left for
/// rounding up.
struct KeptVar {
    provider: usize,
    systems: microlp::Variable,
    mw_per_system: f64,
    room: f64,
}

/// The linear relaxation, each provider's power limit lowered by `held` and each kind of
/// kept system left `rooms` systems unoccupied.
fn relaxed(
    m: &Model<'_>,
    k: usize,
    a: Apply,
    installed: &Installed,
    caps: &[(usize, f64)],
    (held, rooms): (&[f64], &BTreeMap<(usize, String), f64>),
) -> Result<Option<Vec<f64>>, PlanError> {
    let mut pb = Problem::new(OptimizationDirection::Minimize);
    let kept = kept(m, a, installed);
    // Whether option `i` runs on a kind of system kept from an earlier phase, whose systems
    // are paid and powered whole below (`kept_vars`), used or not.
    let on_kept = |i: usize| {
        let o = &m.options[i];
        kept.get(&(o.provider, o.out.system.clone()))
            .is_some_and(|&n| n > 0)
    };
    let vars: Vec<_> = m
        .options
        .iter()
        // Where options cost the same a system (the systems kept from an earlier phase, say),
        // the smaller unit is the one that rounding up overshoots least: a millionth of the
        // cost per system in a unit tips the balance, and nothing else.
        .enumerate()
        .map(|(i, o)| {
            let most = caps
                .iter()
                .find(|c| c.0 == i)
                .map_or(f64::INFINITY, |c| c.1);
            let usd = if on_kept(i) { 0.0 } else { o.out.usd_per_hour };
            pb.add_var(usd + o.out.usd_per_hour * 1e-6 * o.out.systems, (0.0, most))
        })
        .collect();
    // The systems held of each kind kept: at least those kept, at least those its options
    // occupy; each costs and draws a whole system's.
    let mut kept_vars: Vec<KeptVar> = Vec::new();
    for ((p, system), &n) in kept.iter().filter(|(_, &n)| n > 0) {
        let mine: Vec<usize> = (0..m.options.len())
            .filter(|&i| m.options[i].provider == *p && &m.options[i].out.system == system)
            .collect();
        let Some(&first) = mine.first() else {
            continue;
        };
        let o = &m.options[first].out;
        let h = pb.add_var(o.usd_per_hour / o.systems, (f64::from(n), f64::INFINITY));
        let mut occupied: Vec<(microlp::Variable, f64)> = mine
            .iter()
            .map(|&i| (vars[i], m.options[i].out.systems))
            .collect();
        occupied.push((h, -1.0));
        let room = rooms.get(&(*p, system.clone())).copied().unwrap_or(0.0);
        pb.add_constraint(occupied, ComparisonOp::Le, -room);
        kept_vars.push(KeptVar {
            provider: *p,
            systems: h,
            mw_per_system: o.mw / o.systems,
            room,
        });
    }
    class_rules(&mut pb, m, k, a, &vars);
    for (p, prov) in m.providers.iter().enumerate() {
        // The power the options use, which a commitment asks for, and the power drawn,
        // within the limit: the options on kept systems draw theirs through the systems
        // held, idle ones included.
        let used = power_terms(m, &vars, p);
        if used.is_empty() {
            // Power committed where nothing on offer can use it cannot be met: the plan says
            // so rather than leave it unspent without a word.
            if a.commit && prov.committed[k] > 0.0 {
                return Ok(None);
            }
            continue;
        }
        let drawn: Vec<(microlp::Variable, f64)> = m
            .options
            .iter()
            .enumerate()
            .filter(|(i, o)| o.provider == p && !on_kept(*i))
            .map(|(i, o)| (vars[i], o.out.mw))
            .chain(
                kept_vars
                    .iter()
                    .filter(|v| v.provider == p)
                    .map(|v| (v.systems, v.mw_per_system)),
            )
            .collect();
        // What rounding up to whole replicas and whole systems adds, `rounded` holds back.
        let cap = if a.power {
            (prov.mw[k] - held[p]).max(0.0)
        } else {
            f64::INFINITY
        };
        // Room left on kept systems for rounding up is power the commitment gets back.
        let room_mw: f64 = kept_vars
            .iter()
            .filter(|v| v.provider == p)
            .map(|v| v.room * v.mw_per_system)
            .sum();
        if a.commit && prov.committed[k] > 0.0 {
            pb.add_constraint(used, ComparisonOp::Ge, prov.committed[k].min(cap - room_mw));
        }
        if a.power {
            pb.add_constraint(drawn, ComparisonOp::Le, cap);
        }
    }
    match pb.solve() {
        Ok(outcome) => Ok(outcome
            .solution()
            .map(|s| vars.iter().map(|&v| s.var_value(v)).collect())),
        Err(microlp::Error::Infeasible) => Ok(None),
        // A numerical failure of the simplex on a degenerate problem (a singular basis) is
        // no finding about the fleet: rounding gives way to the search over whole units.
        Err(microlp::Error::InternalError(_)) => Ok(None),
        Err(e) => Err(PlanError::Solver(e.to_string())),
    }
}

/// Branch-and-bound nodes [`exact`] may solve. A node is one linear programme warm-started
/// from its parent's; a count, not a clock, so that a plan is the same on any machine.
const EXACT_NODES: u64 = 2_000;

/// Nodes of the search where rounding found no plan that keeps every rule: it must then find
/// one, not only a cheaper one, and a phase without a plan costs more than the time.
const EXACT_NODES_TO_FIND: u64 = 20_000;

/// The cheapest whole plan of phase `k` under the rules `a` applies, by branch and bound
/// over whole units and the whole systems of each kind each provider's units share (the
/// cost the plan is charged), from `start` (a whole plan found by rounding) where there is
/// one; `None` where none is found within `nodes` ([`EXACT_NODES`], or
/// [`EXACT_NODES_TO_FIND`] where rounding found no plan that keeps every rule).
///
/// The relaxation's rounding (see [`solve`]) cannot see that a unit rounded up leaves
/// another unneeded, or that a second provider's offer makes its repair run out of depth;
/// this search can; its caller keeps the cheaper of the two, and only a plan that keeps
/// every rule. A solver that fails on a degenerate problem finds nothing here rather than
/// failing the plan.
fn exact(
    m: &Model<'_>,
    k: usize,
    a: Apply,
    installed: &Installed,
    start: Option<&[u32]>,
    nodes: u64,
) -> Result<Option<Vec<u32>>, PlanError> {
    let kept = kept(m, a, installed);
    let mut pb = Problem::new(OptimizationDirection::Minimize);
    // As in the relaxation, a millionth of a unit's cost prefers the smaller of two units
    // that cost the same.
    let vars: Vec<_> = m
        .options
        .iter()
        .map(|o| pb.add_integer_var(o.out.usd_per_hour * 1e-6 * o.out.systems, (0, i32::MAX)))
        .collect();
    // Whole systems of each kind each provider's options share, at least those kept.
    let mut pools: Vec<(usize, String, microlp::Variable, f64)> = Vec::new();
    for o in &m.options {
        if pools
            .iter()
            .any(|g| g.0 == o.provider && g.1 == o.out.system)
        {
            continue;
        }
        let floor = kept
            .get(&(o.provider, o.out.system.clone()))
            .copied()
            .unwrap_or(0);
        let s = pb.add_integer_var(
            o.out.usd_per_hour / o.out.systems,
            (i32::try_from(floor).unwrap_or(i32::MAX), i32::MAX),
        );
        let occupied: Vec<(microlp::Variable, f64)> = m
            .options
            .iter()
            .enumerate()
            .filter(|(_, x)| x.provider == o.provider && x.out.system == o.out.system)
            .map(|(i, x)| (vars[i], x.out.systems))
            .chain(std::iter::once((s, -1.0)))
            .collect();
        // A hair over a whole number of systems is that number, as `whole_of` has it.
        pb.add_constraint(occupied, ComparisonOp::Le, 1e-9);
        pools.push((
            o.provider,
            o.out.system.clone(),
            s,
            o.out.mw / o.out.systems,
        ));
    }
    class_rules(&mut pb, m, k, a, &vars);
    for (p, prov) in m.providers.iter().enumerate() {
        let used = power_terms(m, &vars, p);
        let committed = prov.committed[k];
        if a.commit && committed > 0.0 {
            if used.is_empty() {
                return Ok(None);
            }
            // Within its least unit: `holds` asks it within one unit of each kind bought,
            // which a linear programme cannot say, and which this never lets through less
            // than.
            // A hair more than `holds` needs (999 thousandths of the unit, not all of it),
            // so that the solver's tolerance never leaves it short, and never nothing where
            // the commitment is smaller than the unit.
            let target = commit_target(m, p, k);
            pb.add_constraint(
                used,
                ComparisonOp::Ge,
                (target - 0.999 * least_unit(m, p)).max(target * 1e-3),
            );
        }
        if a.power {
            let drawn: Vec<(microlp::Variable, f64)> = pools
                .iter()
                .filter(|g| g.0 == p)
                .map(|g| (g.2, g.3))
                .collect();
            if !drawn.is_empty() {
                pb.add_constraint(drawn, ComparisonOp::Le, prov.mw[k]);
            }
        }
    }
    let warm_start = start
        .filter(|s| s.iter().all(|&n| i32::try_from(n).is_ok()))
        .map(|s| {
            let whole = shared(m, s, kept);
            let mut hint: Vec<(microlp::Variable, f64)> = vars
                .iter()
                .zip(s)
                .map(|(&v, &n)| (v, f64::from(n)))
                .collect();
            for g in &pools {
                let n = whole
                    .iter()
                    .find(|w| w.provider == g.0 && w.system == g.1)
                    .map_or(0, |w| w.whole);
                hint.push((g.2, f64::from(n)));
            }
            hint
        });
    let mut options = microlp::SolveOptions::default();
    options.node_limit = Some(nodes);
    options.mip_gap = 1e-9;
    options.warm_start = warm_start;
    match pb.solve_with(options) {
        Ok(outcome) => Ok(outcome.solution().map(|s| {
            vars.iter()
                .map(|&v| s.var_value(v).round().clamp(0.0, f64::from(u32::MAX)) as u32)
                .collect()
        })),
        Err(_) => Ok(None),
    }
}

/// The rules of phase `k` on the classes, over one variable per option (its units): each
/// class's demand, its share without any one provider, and its split within the largest
/// shares.
fn class_rules(pb: &mut Problem, m: &Model<'_>, k: usize, a: Apply, vars: &[microlp::Variable]) {
    for (c, class) in m.classes.iter().enumerate() {
        let d = class.demand[k];
        if d <= 0.0 {
            continue;
        }
        let of_class = |keep: &dyn Fn(usize) -> bool| -> Vec<(usize, microlp::Variable, f64)> {
            m.options
                .iter()
                .enumerate()
                .filter(|(_, o)| o.class == c && keep(o.provider))
                .map(|(i, o)| (i, vars[i], o.out.capacity_tok_s))
                .collect()
        };
        let expr = |t: &[(usize, microlp::Variable, f64)]| -> Vec<(microlp::Variable, f64)> {
            t.iter().map(|&(_, v, c)| (v, c)).collect()
        };
        pb.add_constraint(expr(&of_class(&|_| true)), ComparisonOp::Ge, d);
        if a.n1 && class.n_minus_1 > 0.0 {
            for q in 0..m.providers.len() {
                pb.add_constraint(
                    expr(&of_class(&|p| p != q)),
                    ComparisonOp::Ge,
                    class.n_minus_1 * d,
                );
            }
        }
        if a.share && m.providers.iter().any(|p| class.cap(p) < 1.0) {
            // The share a provider carries, not the capacity it holds: the class's demand
            // must split among the providers with none carrying more than its cap and each
            // within its capacity. Capacity beyond that may stand (systems kept from an
            // earlier phase when demand falls, power committed and paid for), so long as the
            // others could carry the rest. Rounding up only adds capacity, so the split
            // found still holds after it.
            let mut carried = Vec::new();
            for (p, prov) in m.providers.iter().enumerate() {
                let terms = of_class(&|x| x == p);
                if terms.is_empty() {
                    continue;
                }
                let t = pb.add_var(0.0, (0.0, class.cap(prov) * d));
                let mut within = expr(&terms);
                for term in &mut within {
                    term.1 = -term.1;
                }
                within.push((t, 1.0));
                pb.add_constraint(within, ComparisonOp::Le, 0.0);
                carried.push((t, 1.0));
            }
            pb.add_constraint(carried, ComparisonOp::Ge, d);
        }
    }
}

/// Why phase `k` has no plan: classes nothing can serve, then the rule whose removal makes
/// it feasible, then the power short.
/// Where phase `k` may draw less from a provider than it offers, because a later phase
/// offers less and what is installed stays: said, in words, as an aside (empty where none).
fn looked_ahead(m: &Model<'_>, k: usize) -> String {
    let capped: Vec<String> = m
        .providers
        .iter()
        .filter(|p| p.mw[k] < p.offered[k])
        .map(|p| {
            format!(
                "`{}` offers {} MW here and {} MW in a later phase",
                p.name,
                megawatts(p.offered[k]),
                megawatts(p.mw[k])
            )
        })
        .collect();
    aside(&capped, "; ", |l| {
        format!(" ({l}; systems installed stay, so no more is installed here: keep_installed)")
    })
}

fn explain(m: &Model<'_>, k: usize, installed: &Installed) -> Result<String, PlanError> {
    let phase = &m.phases[k];
    let mut why = Vec::new();
    for (c, class) in m.classes.iter().enumerate() {
        if class.demand[k] > 0.0 && !m.options.iter().any(|o| o.class == c) {
            why.push(format!(
                "class `{}`: no system on offer meets TTFT {:.0} ms and TPOT {:.1} ms (see the rejected options)",
                class.name, class.ttft_s * 1e3, class.tpot_s * 1e3
            ));
        }
    }
    // A class only one provider can serve cannot spread over several, as the N-1 and
    // largest-share rules ask of it.
    for (c, class) in m.classes.iter().enumerate() {
        if class.demand[k] <= 0.0 {
            continue;
        }
        let mut serving: Vec<usize> = m
            .options
            .iter()
            .filter(|o| o.class == c)
            .map(|o| o.provider)
            .collect();
        serving.sort_unstable();
        serving.dedup();
        if serving.is_empty() {
            // Told above: nothing on offer meets its targets.
            continue;
        }
        // Only a provider with power in this phase for a whole step of an option (a system,
        // or a replica spanning several) can carry any of the demand.
        let fits = |p: usize| smallest_step(m, p, Some(c)) <= m.providers[p].mw[k] * (1.0 + 1e-9);
        let idle: Vec<String> = serving
            .iter()
            .filter(|&&p| !fits(p))
            .map(|&p| format!("`{}`", m.providers[p].name))
            .collect();
        serving.retain(|&p| fits(p));
        if serving.is_empty() {
            why.push(format!(
                "class `{}`: the providers with a system that can serve it ({}) offer too little power in this phase for one of them",
                class.name,
                idle.join(", ")
            ));
            continue;
        }
        // The caps on the shares of the providers that can carry it leave some of it to none.
        let caps: f64 = serving.iter().map(|&p| class.cap(&m.providers[p])).sum();
        if serving.len() > 1 && caps < 1.0 - 1e-9 {
            let each: Vec<String> = serving
                .iter()
                .map(|&p| {
                    let prov = &m.providers[p];
                    format!("`{}` {:.0}%", prov.name, class.cap(prov) * 100.0)
                })
                .collect();
            why.push(format!(
                "class `{}`: the largest-share rule lets the providers that can serve it carry at most {} of its demand, {:.0}% together{}",
                class.name,
                each.join(", "),
                caps * 100.0,
                aside(&idle, ", ", |l| format!(
                    " ({l} offer{} too little power in this phase for one of its systems)",
                    if idle.len() == 1 { "s" } else { "" }
                ))
            ));
            continue;
        }
        if let [only] = serving[..] {
            let prov = &m.providers[only];
            let rules: Vec<String> = [
                (class.n_minus_1 > 0.0).then(|| "the N-1 rule".to_string()),
                (class.cap(prov) < 1.0).then(|| {
                    format!(
                        "the largest-share rule (`{}` {:.0}%)",
                        prov.name,
                        class.cap(prov) * 100.0
                    )
                }),
            ]
            .into_iter()
            .flatten()
            .collect();
            if !rules.is_empty() {
                // Why the others' systems cannot serve it, as the rejected options say.
                let tag = format!(" for {}: ", class.name);
                let others: Vec<&str> = m
                    .rejected
                    .iter()
                    .filter(|r| r.contains(&tag) && !r.starts_with(&format!("{} ", prov.name)))
                    .map(String::as_str)
                    .collect();
                why.push(format!(
                    "class `{}`: only `{}` offers a system that can serve it within TTFT {:.0} ms and TPOT {:.1} ms{}{}, and {} ask{} for another (`n_minus_1 = 0` and `max_share = 1` in the class let it rest on one provider)",
                    class.name,
                    prov.name,
                    class.ttft_s * 1e3,
                    class.tpot_s * 1e3,
                    aside(&idle, ", ", |l| format!(
                        " and the power in this phase for one ({l} too little)"
                    )),
                    aside(&others, "; ", |l| format!(" (the others: {l})")),
                    rules.join(" and "),
                    if rules.len() == 1 { "s" } else { "" }
                ));
            }
        }
    }
    for (p, prov) in m.providers.iter().enumerate() {
        if prov.committed[k] > 0.0 && !m.options.iter().any(|o| o.provider == p) {
            why.push(format!(
                "provider `{}` commits {} MW, but none of its systems can serve a class (see the rejected options)",
                prov.name,
                megawatts(prov.committed[k])
            ));
        }
    }
    if !why.is_empty() {
        return Ok(format!("phase {phase}: {}", why.join("; ")));
    }
    // The fewest rules whose removal lets the demand fit: each alone, then two together,
    // and so on; only rules that ask something of this phase are tried.
    const RULES: [&str; 4] = [
        "keeping the systems installed in earlier phases",
        "a power commitment",
        "the N-1 rule",
        "the largest-share rule",
    ];
    let asks = [
        m.rules.keep_installed && installed.values().any(|&n| n > 0),
        m.providers.iter().any(|p| p.committed[k] > 0.0),
        m.classes.iter().any(|c| c.n_minus_1 > 0.0),
        m.classes
            .iter()
            .any(|c| m.providers.iter().any(|p| c.cap(p) < 1.0)),
    ];
    let active: Vec<usize> = (0..RULES.len()).filter(|&r| asks[r]).collect();
    for size in 1..=active.len() {
        for set in 0u32..(1 << active.len()) {
            if set.count_ones() as usize != size {
                continue;
            }
            let mut a = Apply::ALL;
            let mut labels = Vec::new();
            for (bit, &r) in active.iter().enumerate() {
                if set & (1 << bit) != 0 {
                    match r {
                        0 => a.keep = false,
                        1 => a.commit = false,
                        2 => a.n1 = false,
                        _ => a.share = false,
                    }
                    labels.push(RULES[r]);
                }
            }
            if solve(m, k, a, installed, None)?.is_none() {
                continue;
            }
            // Several rules at once take the plural.
            let (label, binds, it) = match labels.as_slice() {
                [one] => ((*one).to_string(), "binds", "it"),
                [rest @ .., last] => (
                    format!("{} and {last} together", rest.join(", ")),
                    "bind",
                    "them",
                ),
                [] => continue,
            };
            // Providers' own caps on their share, where they differ from the rules'.
            let own: Vec<String> = m
                .providers
                .iter()
                .filter(|p| p.max_share != m.rules.max_share)
                .map(|p| format!("`{}` {:.0}%", p.name, p.max_share * 100.0))
                .collect();
            // Systems kept from earlier phases that draw more than their provider now offers:
            // an earlier phase's plan, made without this one's, filled power this one lacks.
            let over: Vec<String> = if a.keep {
                Vec::new()
            } else {
                // The kept systems alone, with no replica on them.
                let kept_pools = shared(m, &vec![0; m.options.len()], installed);
                m.providers
                    .iter()
                    .enumerate()
                    .filter_map(|(p, prov)| {
                        let kept_mw = drawn_mw(&kept_pools, p);
                        (kept_mw > prov.mw[k] * (1.0 + 1e-9)).then(|| {
                            format!(
                                "`{}` keeps {} MW of systems from earlier phases and offers {} MW here",
                                prov.name,
                                megawatts(kept_mw),
                                megawatts(prov.mw[k])
                            )
                        })
                    })
                    .collect()
            };
            return Ok(format!(
                "phase {phase}: {label} {binds}: without {it} the demand fits in the power on offer (N-1 share {:.0}%, largest share {:.0}%{}){}",
                m.rules.n_minus_1 * 100.0,
                m.rules.max_share * 100.0,
                aside(&own, ", ", |l| format!(", and of one provider {l}")),
                aside(&over, "; ", |l| format!("; {l} (systems installed in earlier phases stay: set keep_installed = false to release them)"))
            ));
        }
    }
    // Power: the megawatts each class needs at the most power-efficient option, against
    // what is on offer.
    // Output tokens a second a megawatt carries at class `c`'s most power-efficient option.
    let per_mw = |c: usize| {
        m.options
            .iter()
            .filter(|o| o.class == c)
            .map(|o| o.out.capacity_tok_s / o.out.mw)
            .fold(0.0, f64::max)
    };
    let mut need = 0.0;
    let mut parts = Vec::new();
    for (c, class) in m.classes.iter().enumerate() {
        let mw = class.demand[k] / per_mw(c);
        need += mw;
        parts.push(format!("`{}` {} MW", class.name, megawatts(mw)));
    }
    // Only providers with power for a whole step of some option can lend it; the rest are
    // named, as more power elsewhere would not use theirs.
    let mut have = 0.0;
    let mut unusable = Vec::new();
    for (p, prov) in m.providers.iter().enumerate() {
        let step = smallest_step(m, p, None);
        if !step.is_finite() || prov.mw[k] <= 0.0 {
            continue;
        }
        if step <= prov.mw[k] * (1.0 + 1e-9) {
            have += prov.mw[k];
        } else {
            unusable.push(format!(
                "`{}` offers {} MW, less than the {} MW its smallest whole system or replica draws",
                prov.name,
                megawatts(prov.mw[k]),
                megawatts(step)
            ));
        }
    }
    let unusable = aside(&unusable, "; ", |l| format!(" ({l})"));
    if need <= have {
        // Enough power in all, but each provider's own megawatts may bind: the most a class
        // could get is every provider's power spent on whole systems of its best option
        // for it, as many whole replicas as they hold.
        let whole_carried = |c: usize, p: usize, mw: f64| {
            offered(m, p)
                .filter(|(_, o)| o.class == c && o.out.mw > 0.0)
                .map(|(_, o)| {
                    let per_system = o.out.mw / o.out.systems;
                    let systems = (mw / per_system * (1.0 + 1e-9)).floor();
                    let replicas = (systems / o.out.systems * (1.0 + 1e-9)).floor();
                    replicas * o.out.capacity_tok_s
                })
                .max_by(f64::total_cmp)
        };
        let mut short = Vec::new();
        for (c, class) in m.classes.iter().enumerate() {
            let mut most = 0.0;
            let mut each = Vec::new();
            for (p, prov) in m.providers.iter().enumerate() {
                if let Some(carried) = whole_carried(c, p, prov.mw[k]) {
                    most += carried;
                    each.push(format!("`{}` {carried:.0}", prov.name));
                }
            }
            if most < class.demand[k] {
                short.push(format!(
                    "class `{}` needs {:.0} tok/s, and each provider's megawatts carry at most {} in whole systems of its best option for it ({:.0} in all)",
                    class.name,
                    class.demand[k],
                    each.join(", "),
                    most
                ));
            }
        }
        if !short.is_empty() {
            return Ok(format!(
                "phase {phase}: not enough power where it is needed: {}",
                short.join("; ")
            ));
        }
        // Enough power in all, but replicas come whole, and so do the systems they take
        // part of: the smallest whole step takes more than is on offer where it would go.
        let smallest = m
            .options
            .iter()
            .map(|o| o.out.mw.max(o.out.mw / o.out.systems))
            .fold(f64::INFINITY, f64::min);
        return Ok(format!(
            "phase {phase}: not enough power: the providers with an option offer {} MW{unusable}, and the classes' demand needs {} MW at the most power-efficient options, but replicas and the systems they take come whole, and the smallest step takes {} MW",
            megawatts(have),
            megawatts(need),
            megawatts(smallest)
        ));
    }
    Ok(format!(
        "phase {phase}: not enough power: at the most power-efficient options the classes need at least {} MW ({}), the providers with an option offer {} MW{unusable}; short by {} MW or more",
        megawatts(need),
        parts.join(", "),
        megawatts(have),
        megawatts(need - have)
    ))
}

/// A percentile as a target names it: `p50`, `p99`, `p99.9`.
pub fn percentile_name(percentile: f64) -> String {
    // To nine decimals, trailing zeros dropped: p99.9999999 is not p100.
    let p = format!("{:.9}", percentile * 100.0);
    let p = p.trim_end_matches('0').trim_end_matches('.');
    format!("p{p}")
}

/// A share served as a whole percent, rounded down: 99.5% of a class kept is not all of it
/// (it printed as 100% ok); all of it is 100%.
pub fn served_percent(share: f64) -> String {
    // A share computed as a ratio of sums may fall a hair short of a whole percent.
    format!("{:.0}%", (share * 100.0 + 1e-9).floor())
}

/// Megawatts to three significant figures, so that a small shortfall, or a small plan's
/// power, does not print as 0.0.
pub fn megawatts(mw: f64) -> String {
    let decimals = if mw >= 100.0 {
        0
    } else if mw >= 10.0 {
        1
    } else if mw >= 1.0 {
        2
    } else {
        3
    };
    format!("{mw:.decimals$}")
}

/// Plans phase `k`.
pub(crate) fn phase(
    m: &Model<'_>,
    k: usize,
    installed: &Installed,
    before: Option<&[u32]>,
) -> Result<PhasePlan, PlanError> {
    let all = Apply::ALL;
    let Some(x) = solve(m, k, all, installed, before)? else {
        return Ok(PhasePlan {
            phase: m.phases[k].clone(),
            buys: Vec::new(),
            providers: Vec::new(),
            classes: Vec::new(),
            n_minus_1: Vec::new(),
            kept_idle: Vec::new(),
            usd_per_hour: 0.0,
            infeasible: Some(explain(m, k, installed)? + &looked_ahead(m, k)),
        });
    };
    let buys: Vec<Buy> = x
        .iter()
        .enumerate()
        .filter(|(_, &n)| n > 0)
        .map(|(i, &n)| Buy {
            option: i,
            replicas: n,
            systems: whole_systems(&m.options[i].out, n),
            system_share: f64::from(n) * m.options[i].out.systems,
        })
        .collect();
    // The whole systems bought draw their power, however many replicas of whichever classes
    // share them.
    let pools = shared(m, &x, kept(m, all, installed));
    let providers = m
        .providers
        .iter()
        .enumerate()
        .map(|(p, prov)| {
            let systems: Vec<(String, u32)> = pools
                .iter()
                .filter(|s| s.provider == p)
                .map(|s| (s.system.clone(), s.whole))
                .collect();
            ProviderUse {
                provider: prov.name.clone(),
                mw_used: drawn_mw(&pools, p),
                mw_available: prov.offered[k],
                systems,
                // Filled in once the phases before are known.
                new_systems: Vec::new(),
            }
        })
        .collect();
    let classes = m
        .classes
        .iter()
        .enumerate()
        .map(|(c, class)| {
            let mine: Vec<&Buy> = buys
                .iter()
                .filter(|b| m.options[b.option].class == c)
                .collect();
            // Folded from 0, not summed: an empty sum of floats is −0, printed as such.
            let cap: f64 = mine.iter().fold(0.0, |t, b| {
                t + m.options[b.option].out.capacity_tok_s * f64::from(b.replicas)
            });
            let d = class.demand[k];
            // Each class pays its share of the whole systems it shares with others.
            let usd: f64 = mine
                .iter()
                .map(|b| {
                    let o = &m.options[b.option];
                    let share = f64::from(b.replicas) * o.out.systems;
                    // The whole systems the replicas occupy, not those kept idle.
                    pools
                        .iter()
                        .find(|s| s.provider == o.provider && s.system == o.out.system)
                        .map_or(0.0, |s| {
                            f64::from(whole_of(s.fraction)) * s.usd_per_system * share
                                / s.fraction.max(f64::MIN_POSITIVE)
                        })
                })
                .sum();
            // Energy at the load peak demand puts on each option.
            let load = if cap > 0.0 { d / cap } else { 0.0 };
            let mut joules = 0.0;
            for b in &mine {
                let o = &m.options[b.option];
                let per_replica = o.out.capacity_tok_s * load;
                let util = per_replica / o.peak_tok_s.max(f64::MIN_POSITIVE);
                let j = o.joules_per_token(
                    &m.providers[o.provider].params,
                    per_replica.max(1e-9),
                    util,
                );
                joules += j * per_replica * f64::from(b.replicas);
            }
            ClassOutcome {
                class: class.name.clone(),
                demand_tok_s: d,
                capacity_tok_s: cap,
                surplus: (d > 0.0).then(|| cap / d - 1.0),
                replicas: mine.iter().fold(0u32, |n, b| {
                    n.saturating_add(
                        b.replicas
                            .saturating_mul(m.options[b.option].replicas_per_unit()),
                    )
                }),
                percentile: class.percentile,
                sim_ttft_s: None,
                sim_tpot_s: None,
                sim_goodput: None,
                unconfirmed: None,
                confirmed: false,
                usd_per_mtok: (d > 0.0).then(|| usd / (d * 3600.0) * 1e6),
                joules_per_token: (d > 0.0).then(|| joules / d),
            }
        })
        .collect();
    let kept_idle = pools
        .iter()
        .filter(|s| s.whole > whole_of(s.fraction))
        .map(|s| {
            let idle = s.whole - whole_of(s.fraction);
            crate::KeptIdle {
                provider: m.providers[s.provider].name.clone(),
                system: s.system.clone(),
                systems: idle,
                usd_per_hour: f64::from(idle) * s.usd_per_system,
            }
        })
        .collect();
    Ok(PhasePlan {
        phase: m.phases[k].clone(),
        usd_per_hour: pools_usd(&pools),
        buys,
        providers,
        classes,
        n_minus_1: Vec::new(),
        kept_idle,
        infeasible: None,
    })
}

/// The mean time to first token a replica may run at for `class`: the model predicts means,
/// and a replica loaded until its mean TTFT sits at the target has a tail of prompts queued
/// behind others far past it. A p99 target is held as a mean at the ratio of mean to p99
/// TTFT measured in MLPerf server runs ([`Params::server_mean_ttft_frac`]); another
/// percentile q at that ratio scaled as an exponential tail scales, by ln 100 / ln(1/(1−q))
/// (p95: 0.69 of the target, p99.9: 0.30), and never above the target itself (a median).
fn mean_ttft_limit(class: &ClassM, pp: &Params) -> f64 {
    let q = class.percentile.clamp(0.0, 0.999_999);
    let tail = (1.0 / (1.0 - q)).ln();
    let ratio = if tail > 0.0 {
        (pp.server_mean_ttft_frac * 100f64.ln() / tail).min(1.0)
    } else {
        1.0
    };
    class.ttft_s * ratio
}

/// The disaggregated units for `class` beside the aggregated `replica`, of its chips doubled
/// up to sixteen times them or 128 chips, as options whose candidate `base` gives the names: each the
/// split that carries the most within the targets on its chips, kept where it carries more
/// per chip used than every smaller one (a larger unit that carries no more a chip only
/// buys in coarser steps); none where no split meets the targets or a pool has no power
/// figure or price. Every unit kept is offered, not only the one that carries the most per
/// chip: the cheapest plan may buy a finer one, which rounds less.
fn disaggregated_options<'a>(
    replica: &Deployment<'a>,
    pp: &Params,
    class: &ClassM,
    (headroom, facility): (f64, f64),
    base: &dyn Fn(String, u32) -> Candidate,
    provider: usize,
    class_index: usize,
) -> Vec<Opt<'a>> {
    let ttft = mean_ttft_limit(class, pp);
    // The replica's chips doubled, up to sixteen times them or 128 chips, whichever is more:
    // the units must not shrink as the targets loosen and the replica with them. A
    // one-chip replica's best unit may pair an eight-chip decode group with a prompt chip or
    // a few, which eight chips cannot hold; bounded to eight of the replica's chips, a 7.25 ms
    // TPOT target bought gpt-oss-120b on MI355X at twice the cost of a 7 ms one, whose
    // eight-chip replica reached them.
    let unit = replica.layout.replica_chips();
    let most = unit.saturating_mul(16).max(128);
    let chips: Vec<u32> = std::iter::successors(unit.checked_mul(2), |n| n.checked_mul(2))
        .take_while(|&n| n <= most)
        .collect();
    let mut splits: Vec<switchyard_perf::Disaggregated> = chips
        .into_iter()
        .filter_map(|n| {
            let q = Query {
                chips: Some(n),
                precision: Some(replica.weights),
                kv_precision: Some(replica.kv),
                tpot_limit: Some(class.tpot_s),
                ttft_limit: Some(ttft),
                osl_cv: class.osl_cv,
                ..Query::new(
                    replica.model,
                    replica.system,
                    f64::from(class.isl),
                    f64::from(class.osl),
                )
            };
            disaggregated(&q, pp).ok().flatten()
        })
        .collect();
    splits.sort_by_key(|s| s.chips_used);
    let per =
        |s: &switchyard_perf::Disaggregated| s.throughput_tok_s / f64::from(s.chips_used.max(1));
    let mut best = 0.0;
    splits.retain(|s| {
        let keep = per(s) > best;
        best = f64::max(best, per(s));
        keep
    });
    // A split's option; none where a pool cannot be built or has no power figure or price.
    let option = |split: &switchyard_perf::Disaggregated| -> Option<Opt<'a>> {
        let pool = |layout: switchyard_perf::Layout| {
            Deployment::new(
                replica.model,
                replica.system,
                switchyard_perf::Layout { dp: 1, ..layout },
                replica.weights,
            )
            .ok()
            .map(|d| d.with_kv(Some(replica.kv)))
        };
        let (decode, prefill) = (pool(split.decode.layout)?, pool(split.prefill.layout)?);
        let cap = split.throughput_tok_s * headroom;
        let layout = format!(
            "{} x {} prefill + {} x {} decode",
            split.prefill.replicas,
            split.prefill.layout,
            split.decode.replicas,
            split.decode.layout
        );
        let mut o = Opt {
            out: Candidate {
                disaggregated: true,
                capacity_tok_s: cap,
                // Requests in flight at that rate (Little's law): those waiting for and in a
                // prefill pass as well as those decoding. The decode pool's own load is the wrong
                // figure where the prefill pool sets the rate, and it leaves out the first token's
                // wait, so a balancer weighing providers by it would misjudge this unit.
                concurrency: split.requests_per_s
                    * (split.ttft_s + f64::from(class.osl.saturating_sub(1)) * split.tpot_s)
                    * headroom,
                ttft_s: split.ttft_s,
                tpot_s: split.tpot_s,
                ..base(layout, split.chips_used)
            },
            engine: EngineConfig::for_deployment(&decode, pp),
            per_unit: split.decode.replicas,
            // The most the unit's pools carry together whatever the targets: the prefill pool
            // always busy, the decode pool at its own peak.
            peak_tok_s: {
                let osl = f64::from(class.osl.max(1));
                let prompts = f64::from(split.prefill.replicas) * split.prefill.batch
                    / split.prefill.pass_s.max(f64::MIN_POSITIVE);
                let mut pool = decode.clone();
                pool.layout.dp = split.decode.replicas;
                (prompts * osl)
                    .min(pool.decode_peak(pp, f64::from(class.isl), osl))
                    .max(split.throughput_tok_s)
            },
            prefill: Some(PrefillUnit {
                engine: EngineConfig::for_deployment(&prefill, pp),
                replicas: split.prefill.replicas,
                same_domain: split.chips_used <= replica.system.scale_up(),
                deployment: prefill,
            }),
            deployment: decode,
            provider,
            class: class_index,
        };
        let (mut watts, mut usd, mut basis) = (0.0, 0.0, None);
        for (d, n) in o.pools() {
            let mut d = d.clone();
            d.layout.dp = n;
            watts += d.full_power_w(pp)?;
            let economics = d.economics_at(pp, cap, 1.0);
            usd += economics.usd_per_hour?;
            basis = economics.cost_basis;
        }
        o.out.mw = watts / 1e6 * facility;
        o.out.usd_per_hour = usd;
        o.out.cost_basis = basis;
        Some(o)
    };
    splits.iter().filter_map(option).collect()
}

#[cfg(test)]
mod tests {
    use super::{mean_ttft_limit, percentile_name, ClassM, Params};

    #[test]
    fn a_percentile_is_named_as_written() {
        let names: Vec<String> = [0.5, 0.99, 0.999, 0.9999, 0.999999999, 1e-9]
            .into_iter()
            .map(percentile_name)
            .collect();
        assert_eq!(
            names,
            ["p50", "p99", "p99.9", "p99.99", "p99.9999999", "p0.0000001"]
        );
    }

    #[test]
    fn a_percentile_target_is_held_as_a_mean_that_its_tail_keeps_within() {
        let p = Params::default();
        let at = |percentile: f64| {
            let class = ClassM {
                name: "c".into(),
                isl: 1000,
                osl: 100,
                osl_cv: 0.0,
                ttft_s: 1.0,
                tpot_s: 0.05,
                percentile,
                demand: vec![1.0],
                n_minus_1: 0.0,
                max_share: None,
            };
            mean_ttft_limit(&class, &p)
        };
        // p99 at the measured ratio, a median as it is, and the rest between, the stricter
        // the higher the percentile.
        assert!((at(0.99) - p.server_mean_ttft_frac).abs() < 1e-12);
        assert_eq!(at(0.5), 1.0);
        assert!((at(0.95) - 0.45 * 100f64.ln() / 20f64.ln()).abs() < 1e-9);
        let qs = [0.5, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0];
        for w in qs.windows(2) {
            assert!(at(w[1]) <= at(w[0]), "{w:?}");
        }
        assert!(at(1.0) > 0.0);
    }
}
