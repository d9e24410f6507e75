//! The capacity planner: per phase, how many systems of which kind from which provider,
//! and how many replicas per traffic class, so that every class meets its latency targets at
//! peak demand at the lowest cost, within each provider's power, with no provider carrying
//! too much of any class, and with enough left after losing any one provider.
//!
//! Each (provider, system, class) is an option whose per-replica capacity at the class's
//! targets, power and cost come from the performance model. A mixed-integer program (solved
//! with `microlp`) picks replica counts per option. The plan is then confirmed by the
//! simulator: each class's fleet at peak demand, and again without each provider at the N-1
//! share of demand. Pure: no IO.

mod confirm;
pub mod report;
mod scenario;
mod solve;

pub use scenario::{ClassSpec, MwIs, Phase, PlanFile, ProviderSpec, Rules, WhatIf};
pub use solve::{megawatts, percentile_name, served_percent};

use serde::Serialize;

/// Errors of planning.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The scenario is malformed or refers to something unknown.
    #[error("{origin}: {message}")]
    Scenario {
        /// File.
        origin: String,
        /// Where and what.
        message: String,
    },
    /// The solver failed for a reason other than infeasibility.
    #[error("solver: {0}")]
    Solver(String),
}

/// One option the solver may buy: replicas of a class's model on one provider's system, or
/// units of a prefill pool and a decode pool (disaggregated serving).
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    /// Provider.
    pub provider: String,
    /// Catalog system.
    pub system: String,
    /// Class served.
    pub class: String,
    /// Replica layout, such as `tp8` or `pp4`; for a disaggregated unit, its two pools
    /// (`2 x tp4-pp1 prefill + 3 x tp8-pp1 decode`).
    pub layout: String,
    /// Whether one unit is a prefill pool and a decode pool rather than one replica.
    pub disaggregated: bool,
    /// Chips (or wafers) per replica (or unit).
    pub chips: u32,
    /// Systems per replica (chips over chips per system).
    pub systems: f64,
    /// Output tokens per second one replica serves within the class's targets, after headroom.
    pub capacity_tok_s: f64,
    /// Requests in flight per replica (or unit) at that capacity, from arrival to the last
    /// token (Little's law: the request rate times the time a request spends).
    pub concurrency: f64,
    /// Predicted TTFT and TPOT at that load, seconds.
    pub ttft_s: f64,
    /// Predicted time per output token at that load.
    pub tpot_s: f64,
    /// Megawatts per replica as the provider counts them (IT or facility).
    pub mw: f64,
    /// USD per hour per replica at full load: the rent, or the amortised purchase plus
    /// electricity.
    pub usd_per_hour: f64,
    /// Which of the two `usd_per_hour` is: a provider's systems without a published rate
    /// are costed as bought, beside others rented.
    pub cost_basis: Option<switchyard_perf::CostBasis>,
}

/// One bought option in a phase.
#[derive(Debug, Clone, Serialize)]
pub struct Buy {
    /// Index into [`Plan::options`].
    pub option: usize,
    /// Replicas bought, or units for a disaggregated option.
    pub replicas: u32,
    /// Whole systems they would occupy alone; replicas of other buys on the same provider's
    /// systems of the same kind share a rack or a server with them, and the provider's
    /// [`ProviderUse::systems`] counts the systems bought once.
    pub systems: u32,
    /// The systems its replicas fill, in part where they share one with other buys: the
    /// shares of a provider's buys of one kind of system add up to the systems of that kind
    /// in [`ProviderUse::systems`], the last one's partly filled.
    pub system_share: f64,
}

/// A provider's use in one phase.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderUse {
    /// Provider.
    pub provider: String,
    /// Megawatts used, as the provider counts them.
    pub mw_used: f64,
    /// Megawatts available.
    pub mw_available: f64,
    /// Systems by catalog id.
    pub systems: Vec<(String, u32)>,
    /// Of those, the systems no earlier phase installed (all of them in the first phase):
    /// what the phase buys.
    pub new_systems: Vec<(String, u32)>,
}

/// A class's outcome in one phase.
#[derive(Debug, Clone, Serialize)]
pub struct ClassOutcome {
    /// Class.
    pub class: String,
    /// Peak demand, output tokens per second.
    pub demand_tok_s: f64,
    /// Planned capacity within targets, output tokens per second.
    pub capacity_tok_s: f64,
    /// Capacity over demand, minus one: the surplus beyond what the rules' headroom already
    /// keeps (capacity counts replicas at that share of their peak).
    /// None where the class asks for nothing in the phase (any capacity is all surplus).
    pub surplus: Option<f64>,
    /// Replicas, those of both pools of disaggregated units counted.
    pub replicas: u32,
    /// The class's percentile: the share of requests that must meet both targets.
    pub percentile: f64,
    /// Simulated percentile (the class's) of time to first token at peak, seconds.
    pub sim_ttft_s: Option<f64>,
    /// Simulated percentile of time per output token at peak, seconds.
    pub sim_tpot_s: Option<f64>,
    /// Share of simulated requests within both targets.
    pub sim_goodput: Option<f64>,
    /// Whether the simulation confirms the targets (within tolerance).
    pub confirmed: bool,
    /// Why it does not, where it does not.
    pub unconfirmed: Option<String>,
    /// USD per million output tokens at peak; none where the class asks for no tokens in
    /// the phase: a token that is not made has no cost.
    pub usd_per_mtok: Option<f64>,
    /// Facility joules per output token at peak; none as the cost.
    pub joules_per_token: Option<f64>,
}

impl ClassOutcome {
    /// Its dollars per million and joules per output token to three decimals, or `-` each
    /// where the class asks for no tokens in the phase.
    pub fn per_token_text(&self) -> (String, String) {
        let text = |x: Option<f64>| x.map_or_else(|| "-".into(), |v| format!("{v:.3}"));
        (text(self.usd_per_mtok), text(self.joules_per_token))
    }
}

/// Losing one provider in one phase.
#[derive(Debug, Clone, Serialize)]
pub struct NMinus1 {
    /// The provider lost.
    pub lost: String,
    /// Per class: share of demand the rest can serve within target (plan), and whether the
    /// simulation of the rest at the N-1 share of demand meets the targets.
    pub classes: Vec<(String, f64, bool)>,
}

/// One phase of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct PhasePlan {
    /// Phase name.
    pub phase: String,
    /// What was bought.
    pub buys: Vec<Buy>,
    /// Providers' power and systems.
    pub providers: Vec<ProviderUse>,
    /// Classes.
    pub classes: Vec<ClassOutcome>,
    /// N-1 checks.
    pub n_minus_1: Vec<NMinus1>,
    /// Systems kept from earlier phases that no replica uses: paid and powered, and charged
    /// to no class.
    pub kept_idle: Vec<KeptIdle>,
    /// Total USD per hour, the idle kept systems' included.
    pub usd_per_hour: f64,
    /// Why the phase could not be planned, if it could not.
    pub infeasible: Option<String>,
}

impl PhasePlan {
    /// USD per million output tokens over every class at peak demand: the phase's whole
    /// cost an hour, idle kept systems included, over the tokens its demand asks for. `None`
    /// where the phase has no demand.
    #[must_use]
    pub fn usd_per_mtok(&self) -> Option<f64> {
        let served: f64 = self.classes.iter().map(|c| c.demand_tok_s).sum();
        (served > 0.0).then(|| self.usd_per_hour / (served * 3600.0) * 1e6)
    }

    /// The phase's cost in words, for reports: `$606,384 an hour (of it, $1,200 for idle kept
    /// systems and $7 for the chips left over in systems the replicas fill in part), $1.296 per
    /// million output tokens over all classes at peak demand`. `options` are the plan's, which
    /// the buys index: what the buys cost is the rest.
    #[must_use]
    pub fn cost_text(&self, options: &[Candidate]) -> String {
        let idle: f64 = self.kept_idle.iter().map(|k| k.usd_per_hour).sum();
        let bought: f64 = self
            .buys
            .iter()
            .map(|b| f64::from(b.replicas) * options[b.option].usd_per_hour)
            .sum();
        // Systems come whole: the chips the replicas leave in them are paid for too.
        let spare = self.usd_per_hour - idle - bought;
        let mut text = format!("${} an hour", whole_dollars(self.usd_per_hour));
        let mut of_it = Vec::new();
        if idle > 0.0 {
            of_it.push(format!("${} for idle kept systems", whole_dollars(idle)));
        }
        if spare >= 0.5 {
            of_it.push(format!(
                "${} for the chips left over in systems the replicas fill in part",
                whole_dollars(spare)
            ));
        }
        if !of_it.is_empty() {
            text += &format!(" (of it, {})", of_it.join(" and "));
        }
        if let Some(u) = self.usd_per_mtok() {
            text += &format!(", ${u:.3} per million output tokens over all classes at peak demand");
        }
        text
    }
}

impl ProviderUse {
    /// Its systems in words, each kind as `68 x h100-sxm`, with how many of them are new
    /// where earlier phases installed some (`68 x h100-sxm (45 new)`); `times` is the sign
    /// between count and kind.
    #[must_use]
    pub fn systems_text(&self, times: &str) -> String {
        self.systems
            .iter()
            .map(|(s, n)| {
                let new = self
                    .new_systems
                    .iter()
                    .find(|(x, _)| x == s)
                    .map_or(0, |x| x.1);
                if new == *n {
                    format!("{n} {times} {s}")
                } else {
                    format!("{n} {times} {s} ({new} new)")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Buy {
    /// The systems this buy's replicas fill, in words: whole (`12`), or to two decimals
    /// where they share a system with other buys on the same provider (`2.5`), whose
    /// provider's count ([`ProviderUse::systems`]) is the whole systems they fill together.
    #[must_use]
    pub fn systems_text(&self) -> String {
        let share = self.system_share;
        if (share - share.round()).abs() < 1e-6 {
            format!("{share:.0}")
        } else {
            format!("{share:.2}")
        }
    }
}

/// Whole dollars with their thousands marked: `1,214,902`.
fn whole_dollars(usd: f64) -> String {
    let digits = format!("{:.0}", usd.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Systems of one kind a provider keeps from an earlier phase with no replica on them.
#[derive(Debug, Clone, Serialize)]
pub struct KeptIdle {
    /// Provider name.
    pub provider: String,
    /// System id.
    pub system: String,
    /// Whole systems idle.
    pub systems: u32,
    /// What they cost an hour.
    pub usd_per_hour: f64,
}

/// The whole plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Scenario name.
    pub scenario: String,
    /// What the command line changed of the scenario, in words (`without cerebras`, `demand
    /// x 2`, `MW as IT power`); empty where nothing.
    pub what_if: Vec<String>,
    /// The rules applied.
    pub rules: RulesOut,
    /// Every option considered.
    pub options: Vec<Candidate>,
    /// Options that could not serve a class, and why.
    pub rejected: Vec<String>,
    /// The phases.
    pub phases: Vec<PhasePlan>,
    /// Simulations run to confirm the plan.
    pub simulations: u32,
}

/// The rules as applied, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct RulesOut {
    /// Largest share per provider.
    pub max_share: f64,
    /// N-1 share.
    pub n_minus_1: f64,
    /// Headroom.
    pub headroom: f64,
    /// Tolerance.
    pub tolerance: f64,
    /// Classes with rules of their own: (class, its N-1 share, its largest share where it
    /// sets one).
    pub by_class: Vec<(String, f64, Option<f64>)>,
    /// Providers with a largest share of their own: (provider, its largest share).
    pub by_provider: Vec<(String, f64)>,
}

impl RulesOut {
    /// The classes' and providers' own rules in words (`class chat: N-1 0%, largest share
    /// 100%; provider a: largest share 50%`), or nothing.
    pub fn own_text(&self) -> String {
        self.by_class
            .iter()
            .map(|(c, n1, share)| {
                let share = share.map_or_else(String::new, |s| {
                    format!(", largest share {:.0}%", s * 100.0)
                });
                format!("class {c}: N-1 {:.0}%{share}", n1 * 100.0)
            })
            .chain(
                self.by_provider
                    .iter()
                    .map(|(p, share)| format!("provider {p}: largest share {:.0}%", share * 100.0)),
            )
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Plans a scenario: solve every phase, then confirm it by simulation.
///
/// # Errors
/// A scenario naming an unknown system or model, or a solver failure. An infeasible phase
/// is not an error: its [`PhasePlan::infeasible`] says what is missing and which rule binds.
pub fn plan(
    file: &PlanFile,
    text: &str,
    origin: &str,
    catalog: &switchyard_perf::Catalog,
    params: &switchyard_perf::Params,
    what_if: &WhatIf,
) -> Result<Plan, PlanError> {
    // One basis of price for the catalog's systems, where the command line asks it.
    let priced;
    let catalog = match what_if.cost {
        None => catalog,
        Some(basis) => {
            let mut c = catalog.clone();
            c.price_on(basis == switchyard_perf::CostBasis::Rent);
            priced = c;
            &priced
        }
    };
    let systems = solve::systems_on_offer(file, text, origin, catalog, what_if)?;
    let model = solve::Model::build(file, text, origin, catalog, &systems, params, what_if)?;
    let mut phases = Vec::new();
    let mut sims = 0;
    let mut installed = solve::Installed::new();
    // Units of each option the phase before ran, where it had a plan.
    let mut before: Option<Vec<u32>> = None;
    for k in 0..model.phases.len() {
        let mut ph = solve::phase(&model, k, &installed, before.as_deref())?;
        // A provider left out on the command line is no fault of the scenario's: said so.
        if let (Some(why), Some(lost)) = (ph.infeasible.as_mut(), what_if.lose.as_deref()) {
            why.push_str(&format!(" (planned without `{lost}`, as --lose asks)"));
        }
        before = ph.infeasible.is_none().then(|| {
            let mut units = vec![0; model.options.len()];
            for b in &ph.buys {
                units[b.option] = b.replicas;
            }
            units
        });
        for (p, u) in ph.providers.iter_mut().enumerate() {
            // What this phase adds to the most of each system an earlier phase installed.
            u.new_systems = u
                .systems
                .iter()
                .map(|(system, n)| {
                    let had = installed.get(&(p, system.clone())).copied().unwrap_or(0);
                    (system.clone(), n.saturating_sub(had))
                })
                .filter(|(_, n)| *n > 0)
                .collect();
            for (system, n) in &u.systems {
                let e = installed.entry((p, system.clone())).or_insert(0);
                *e = (*e).max(*n);
            }
        }
        if ph.infeasible.is_none() {
            sims += confirm::confirm(&model, k, &mut ph);
        }
        phases.push(ph);
    }
    Ok(Plan {
        scenario: file.name.clone().unwrap_or_else(|| origin.to_string()),
        what_if: what_if.words(),
        rules: RulesOut {
            max_share: model.rules.max_share,
            n_minus_1: model.rules.n_minus_1,
            headroom: model.rules.headroom,
            tolerance: model.rules.tolerance,
            by_class: model
                .classes
                .iter()
                .filter(|c| c.n_minus_1 != model.rules.n_minus_1 || c.max_share.is_some())
                .map(|c| (c.name.clone(), c.n_minus_1, c.max_share))
                .collect(),
            by_provider: model
                .providers
                .iter()
                .filter(|p| p.max_share != model.rules.max_share)
                .map(|p| (p.name.clone(), p.max_share))
                .collect(),
        },
        options: model.options.iter().map(|o| o.out.clone()).collect(),
        rejected: model.rejected.clone(),
        phases,
        simulations: sims,
    })
}
