//! Scenario files: the fleet, the router, the workload, the traffic classes and the
//! failures of one simulation, in TOML.
//!
//! Parsing is in two passes. Serde checks shapes and types, and the TOML parser names the line
//! and field of any mismatch; [`ScenarioFile::resolve`] then checks meaning (known systems and
//! models, layouts that exist, providers that failures refer to) and names the line of the
//! offending entry from the spans it kept.

use crate::workload::{Arrivals, Lengths, TraceRow, WorkloadSpec};
use crate::SimError;
use serde::Deserialize;
use std::ops::Range;
use switchyard_perf::{
    best_deployment, Catalog, Deployment, Layout, Objective, Params, PerfError, Query,
};
use switchyard_replica::EngineConfig;
use switchyard_router::{Health, Policy, Target};
use toml::Spanned;

/// The most replicas one pool may have: each is simulated on its own, and a million of them
/// already hold about 300 MB; far more would exhaust memory rather than say what is wrong.
pub const MAX_REPLICAS: u32 = 1_000_000;
/// Most requests a synthetic process is expected to bring in one run: fifty million. A
/// request waiting for a replica holds about 150 bytes, so an overloaded run of them all
/// queued takes some 7.5 GB, within an ordinary machine's memory, where a billion would
/// exhaust it.
pub const MAX_REQUESTS: f64 = 5e7;
/// The largest mean (or median) of a drawn length: ten million tokens, past any model's
/// context; larger ones, or infinite ones, would only make every request one that fits
/// nowhere, drawn without end.
pub const MAX_MEAN_TOKENS: f64 = 1e7;
/// The widest lognormal spread of lengths, σ of ln(tokens): at 10 the middle 95% of draws
/// span a factor of 10^17.
pub const MAX_SIGMA: f64 = 10.0;

/// A scenario file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// A short name for reports.
    #[serde(default)]
    pub name: Option<String>,
    /// What the scenario shows.
    #[serde(default)]
    pub description: Option<String>,
    /// Seed of every random draw.
    #[serde(default)]
    pub seed: u64,
    /// The model every provider serves unless it names its own.
    #[serde(default)]
    pub model: Option<Spanned<String>>,
    /// Last arrival time in seconds (default: the end of the trace, or `requests`).
    #[serde(default)]
    pub duration_s: Option<f64>,
    /// Seconds of warm-up: requests arriving later are also reported as a group of their own,
    /// so that percentiles can leave out the start from an empty fleet.
    #[serde(default)]
    pub warmup_s: Option<Spanned<f64>>,
    /// Routing across providers.
    #[serde(default)]
    pub router: RouterSection,
    /// The providers, each a pool of identical replicas.
    #[serde(rename = "provider")]
    pub providers: Vec<Spanned<ProviderSection>>,
    /// Arrivals and lengths; a scenario run with a trace of its own (`--trace`) may leave it
    /// out.
    #[serde(default)]
    pub workload: Option<Spanned<WorkloadSection>>,
    /// Traffic classes with their latency targets.
    #[serde(default, rename = "class")]
    pub classes: Vec<Spanned<ClassSection>>,
    /// Outages, replica failures and slow-downs.
    #[serde(default, rename = "failure")]
    pub failures: Vec<Spanned<FailureSection>>,
}

/// `[router]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterSection {
    /// The routing policy.
    pub policy: Policy,
    /// Tries per request, the first included.
    pub max_attempts: u32,
    /// Consecutive failures that eject a provider.
    pub eject_after: u32,
    /// Seconds an ejected provider is left alone.
    pub cooldown_s: f64,
    /// What each request states as `max_tokens`.
    pub max_tokens: MaxTokens,
}

impl Default for RouterSection {
    fn default() -> Self {
        let h = Health::default();
        RouterSection {
            policy: Policy::Latency,
            max_attempts: 3,
            eject_after: h.eject_after,
            cooldown_s: h.cooldown_s,
            max_tokens: MaxTokens::Output,
        }
    }
}

/// What each simulated request states as `max_tokens`, which the router reads as it reads a
/// gateway request's: the latency policy weighs the tokens to come by it, and a provider
/// whose context cannot hold the prompt and that many is passed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaxTokens {
    /// Its own output length, as benchmark clients send it (`"output"`).
    #[default]
    Output,
    /// None (`"none"`), as most chat clients: the router assumes what it assumes of a
    /// gateway request without one.
    Unstated,
    /// The same for every request (a number of tokens).
    Fixed(u32),
}

impl MaxTokens {
    /// The output tokens a request of `output` tokens gets: no more than it states.
    pub fn cap(self, output: u32) -> u32 {
        match self {
            MaxTokens::Fixed(n) => output.min(n),
            _ => output,
        }
    }

    /// What a request of `output` tokens states.
    pub fn of(self, output: u32) -> Option<u32> {
        match self {
            MaxTokens::Output => Some(output),
            MaxTokens::Unstated => None,
            MaxTokens::Fixed(n) => Some(n),
        }
    }
}

impl<'de> Deserialize<'de> for MaxTokens {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            Tokens(i64),
        }
        match Raw::deserialize(d)? {
            Raw::Word(w) if w == "output" => Ok(MaxTokens::Output),
            Raw::Word(w) if w == "none" => Ok(MaxTokens::Unstated),
            Raw::Tokens(n) if (1..=i64::from(u32::MAX)).contains(&n) => {
                Ok(MaxTokens::Fixed(n as u32))
            }
            _ => Err(serde::de::Error::custom(
                "`max_tokens` is \"output\" (each request's own), \"none\" or a number of tokens of at least 1",
            )),
        }
    }
}

/// `[[provider]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSection {
    /// Name in reports.
    pub name: String,
    /// System id from the catalog.
    pub system: String,
    /// Model id (default: the scenario's).
    #[serde(default)]
    pub model: Option<String>,
    /// Replicas in the pool.
    #[serde(default = "one")]
    pub replicas: u32,
    /// Chips (or wafers) per replica (default: one model replica of the best layout of a
    /// server's chips, up to 8 GPUs or an RDU rack, or of the fewest wafers or LPUs that
    /// fit). Where the best layout
    /// of them is several model replicas (a small model on an 8-GPU server), each runs as a
    /// replica of the pool: `replicas` then counts servers of `chips` chips.
    #[serde(default)]
    pub chips: Option<u32>,
    /// Layout of one replica, such as `tp8` or `pp4`.
    #[serde(default)]
    pub layout: Option<String>,
    /// Weight precision (default: the model's native one).
    #[serde(default)]
    pub precision: Option<String>,
    /// KV-cache precision (default: the performance model's choice for the weights).
    #[serde(default)]
    pub kv_precision: Option<String>,
    /// Share under the weighted policy.
    #[serde(default = "unit")]
    pub weight: f64,
    /// Preference under the priority policy: lower first.
    #[serde(default)]
    pub priority: u32,
    /// Classes this provider takes (default, left out: all).
    #[serde(default)]
    pub classes: Option<Vec<String>>,
    /// Price for the cost policy and reports, USD per million output tokens (default: the
    /// catalog's price through the performance model).
    #[serde(default)]
    pub usd_per_mtok: Option<f64>,
    /// Engine batch limit (default: the performance model's).
    #[serde(default)]
    pub max_batch: Option<u32>,
    /// Engine tokens per step.
    #[serde(default)]
    pub token_budget: Option<u32>,
    /// Whether replicas keep the KV cache of prompts they have served for prompts that begin
    /// the same way (automatic prefix caching, on by default as in vLLM and SGLang); it
    /// matters where the trace names prompts' prefixes (Mooncake's `hash_ids`).
    #[serde(default = "yes")]
    pub prefix_caching: bool,
    /// Replicas of a separate prefill pool (disaggregated serving): prompts run there, their
    /// KV caches move to the pool above, which then only decodes (default: none, each replica
    /// does both).
    #[serde(default)]
    pub prefill_replicas: Option<u32>,
    /// Chips per prefill replica (default: the fewest that fit).
    #[serde(default)]
    pub prefill_chips: Option<u32>,
    /// Layout of one prefill replica (default: the fastest for one request).
    #[serde(default)]
    pub prefill_layout: Option<String>,
}

impl ProviderSection {
    /// Whether the provider takes requests of `class`: every class where it names none.
    fn takes(&self, class: &str) -> bool {
        self.classes
            .as_ref()
            .is_none_or(|list| list.iter().any(|c| c == class))
    }
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

fn unit() -> f64 {
    1.0
}

/// `[workload]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSection {
    /// A CSV trace to replay, relative to the scenario file.
    #[serde(default)]
    pub trace: Option<String>,
    /// Speed-up of the arrivals: a trace's times are divided by it, a synthetic process's
    /// rate multiplied.
    #[serde(default = "unit")]
    pub rate_x: f64,
    /// Most requests to produce.
    #[serde(default)]
    pub requests: Option<u64>,
    /// Synthetic arrivals (instead of a trace's times).
    #[serde(default)]
    pub arrival: Option<ArrivalSection>,
    /// Prompt lengths (default: the trace's).
    #[serde(default)]
    pub prompt: Option<LengthSection>,
    /// Output lengths (default: the trace's).
    #[serde(default)]
    pub output: Option<LengthSection>,
}

/// No table: nothing of its own, the arrivals at their own speed (a trace given beside the
/// scenario is then the workload).
impl Default for WorkloadSection {
    fn default() -> Self {
        WorkloadSection {
            trace: None,
            rate_x: unit(),
            requests: None,
            arrival: None,
            prompt: None,
            output: None,
        }
    }
}

/// `arrival = { process = "poisson", rate = 5.0 }` and its kin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArrivalSection {
    /// `poisson`, `gamma` or `diurnal`.
    pub process: String,
    /// Mean requests per second.
    pub rate: f64,
    /// Coefficient of variation of the gaps (`gamma`).
    #[serde(default)]
    pub cv: Option<f64>,
    /// Relative swing of the rate (`diurnal`).
    #[serde(default)]
    pub swing: Option<f64>,
    /// Period in seconds (`diurnal`).
    #[serde(default)]
    pub period_s: Option<f64>,
}

/// `prompt = { dist = "lognormal", median = 1000, sigma = 1.0 }` and its kin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LengthSection {
    /// `fixed`, `exponential`, `lognormal` or `trace`.
    pub dist: String,
    /// Tokens (`fixed`).
    #[serde(default)]
    pub tokens: Option<u32>,
    /// Mean tokens (`exponential`).
    #[serde(default)]
    pub mean: Option<f64>,
    /// Median tokens (`lognormal`).
    #[serde(default)]
    pub median: Option<f64>,
    /// σ of ln(tokens) (`lognormal`).
    #[serde(default)]
    pub sigma: Option<f64>,
}

impl LengthSection {
    /// Its optional fields, each with whether it is given.
    fn given(&self) -> [(&'static str, bool); 4] {
        [
            ("tokens", self.tokens.is_some()),
            ("mean", self.mean.is_some()),
            ("median", self.median.is_some()),
            ("sigma", self.sigma.is_some()),
        ]
    }

    /// The fields its distribution reads (an unknown one: any, for its own error).
    fn takes(&self) -> &'static [&'static str] {
        match self.dist.as_str() {
            "fixed" => &["tokens"],
            "exponential" => &["mean"],
            "lognormal" => &["median", "sigma"],
            "trace" => &[],
            _ => &["tokens", "mean", "median", "sigma"],
        }
    }
}

/// The first of the fields `given` that is not among those a kind `takes`.
fn stray(given: &[(&'static str, bool)], takes: &[&str]) -> Option<&'static str> {
    given
        .iter()
        .find(|(f, set)| *set && !takes.contains(f))
        .map(|(f, _)| *f)
}

/// `[[class]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassSection {
    /// Name, as providers' `classes` and requests refer to it.
    pub name: String,
    /// Share of requests.
    #[serde(default = "unit")]
    pub share: f64,
    /// Time-to-first-token target in milliseconds.
    #[serde(default)]
    pub ttft_ms: Option<f64>,
    /// Time-per-output-token target in milliseconds.
    #[serde(default)]
    pub tpot_ms: Option<f64>,
    /// The model its requests ask for, where providers serve more than one (default: the
    /// one every provider serves).
    #[serde(default)]
    pub model: Option<String>,
}

/// `[[failure]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureSection {
    /// `outage` (the whole provider), `replica` (one replica) or `slowdown`.
    pub kind: String,
    /// The provider's name.
    pub provider: String,
    /// Which replica (`replica`).
    #[serde(default)]
    pub replica: Option<u32>,
    /// Start, seconds from the start of the run.
    pub start_s: f64,
    /// End (default for `replica`: never recovers).
    #[serde(default)]
    pub end_s: Option<f64>,
    /// Step-time multiplier (`slowdown`).
    #[serde(default)]
    pub factor: Option<f64>,
}

/// A traffic class with its targets.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Class {
    /// Name.
    pub name: String,
    /// Time-to-first-token target, seconds.
    pub ttft_s: Option<f64>,
    /// Time-per-output-token target, seconds.
    pub tpot_s: Option<f64>,
}

impl Class {
    /// Whether it sets a target, so that its requests count toward goodput.
    pub fn has_target(&self) -> bool {
        self.ttft_s.is_some() || self.tpot_s.is_some()
    }

    /// Whether a completed request's first token (`None`: it had none) and time per output
    /// token (`None`: one token, none to time) meet the class's targets: the goodput rule.
    pub fn meets(&self, ttft_s: Option<f64>, tpot_s: Option<f64>) -> bool {
        self.ttft_s.is_none_or(|l| ttft_s.is_some_and(|t| t <= l))
            && self.tpot_s.is_none_or(|l| tpot_s.is_none_or(|t| t <= l))
    }
}

/// A failure in the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Failure {
    /// Every replica of a provider is down from `start` to `end`.
    Outage {
        /// Provider index.
        provider: usize,
        /// Seconds.
        start: f64,
        /// Seconds.
        end: f64,
    },
    /// One replica is down from `start`, back at `end` if given.
    Replica {
        /// Provider index.
        provider: usize,
        /// Replica index within the provider.
        replica: usize,
        /// Seconds.
        start: f64,
        /// Seconds.
        end: Option<f64>,
    },
    /// A provider's steps take `factor` times as long from `start` to `end`.
    Slowdown {
        /// Provider index.
        provider: usize,
        /// Step-time multiplier.
        factor: f64,
        /// Seconds.
        start: f64,
        /// Seconds.
        end: f64,
    },
}

/// One provider, resolved: a one-replica deployment and how many replicas.
#[derive(Debug, Clone)]
pub struct Provider<'a> {
    /// Name.
    pub name: String,
    /// One replica.
    pub deployment: Deployment<'a>,
    /// Replicas in the pool.
    pub replicas: u32,
    /// Engine limits of each replica.
    pub engine: EngineConfig,
    /// What the router knows of the pool.
    pub target: Target,
    /// A separate prefill pool, when the provider serves disaggregated; the pool above then
    /// only decodes.
    pub prefill: Option<PrefillPool<'a>>,
    /// The price the scenario states, USD per million output tokens, which the reports give
    /// in place of the one the catalog's price implies.
    pub usd_per_mtok: Option<f64>,
    /// Whether its replicas cache prompts' prefixes ([`ProviderSection::prefix_caching`]).
    pub prefix_caching: bool,
}

/// The prefill pool of a disaggregated provider.
#[derive(Debug, Clone)]
pub struct PrefillPool<'a> {
    /// One prefill replica.
    pub deployment: Deployment<'a>,
    /// Replicas in the pool.
    pub replicas: u32,
    /// Engine limits of each replica.
    pub engine: EngineConfig,
    /// Whether both pools sit in one scale-up domain, so KV caches move over the fast fabric
    /// rather than the network.
    pub same_domain: bool,
}

/// A scenario resolved against the catalog: everything the simulator needs.
#[derive(Debug, Clone)]
pub struct Scenario<'a> {
    /// Name for reports.
    pub name: String,
    /// Seed.
    pub seed: u64,
    /// Providers.
    pub providers: Vec<Provider<'a>>,
    /// Routing policy.
    pub policy: Policy,
    /// Passive health.
    pub health: Health,
    /// Tries per request.
    pub max_attempts: u32,
    /// What each request states as `max_tokens`.
    pub max_tokens: MaxTokens,
    /// Traffic classes (at least one).
    pub classes: Vec<Class>,
    /// Failures.
    pub failures: Vec<Failure>,
    /// The workload.
    pub workload: WorkloadSpec,
    /// Trace rows (empty without a trace).
    pub trace: Vec<TraceRow>,
    /// Requests arriving before this many seconds are left out of the steady-state group.
    pub warmup_s: Option<f64>,
}

/// Overrides from the command line.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Seed.
    pub seed: Option<u64>,
    /// Trace speed-up.
    pub rate_x: Option<f64>,
    /// Most requests.
    pub requests: Option<u64>,
}

impl ScenarioFile {
    /// Parses scenario TOML; `origin` names the file in errors.
    ///
    /// # Errors
    /// [`SimError::Scenario`] naming the line, column and field.
    pub fn parse(text: &str, origin: &str) -> Result<Self, SimError> {
        let fail = |message: String| SimError::Scenario {
            origin: origin.to_string(),
            message,
        };
        toml::from_str(text).map_err(|e| {
            // A table the file lacks has no line; the deserializer would blame the first one.
            // Only a file refused is read again to tell.
            let Ok(top) = text.parse::<toml::Table>() else {
                return fail(switchyard_catalog::toml_error_line(text, &e));
            };
            if !top.contains_key("provider") {
                return fail(
                    "no [[provider]] table: a scenario needs at least one (a pool of replicas on a catalog system)".into(),
                );
            }
            fail(switchyard_catalog::toml_error_line(text, &e))
        })
    }

    /// Checks the numbers that serde only types: shares, weights, prices and targets must be
    /// finite and of the right sign, and names unique, so that a typo is named rather than
    /// turned into a NaN that routes every request to one provider or none.
    fn check_numbers(
        &self,
        fail: &dyn Fn(Range<usize>, &str, String) -> SimError,
    ) -> Result<(), SimError> {
        let finite_at_least_0 = |v: f64| v.is_finite() && v >= 0.0;
        let finite_above_0 = |v: f64| v.is_finite() && v > 0.0;
        for (i, sc) in self.classes.iter().enumerate() {
            let c = sc.get_ref();
            let err =
                |field: &str, m: &str| fail(sc.span(), field, format!("class `{}`: {m}", c.name));
            if self.classes[..i].iter().any(|o| o.get_ref().name == c.name) {
                return Err(err("name", "two classes have this name"));
            }
            if c.name.trim().is_empty() {
                return Err(err("name", "a class needs a name"));
            }
            if !finite_at_least_0(c.share) {
                return Err(err("share", "must be a finite share, 0 or more"));
            }
            for (field, v) in [("ttft_ms", c.ttft_ms), ("tpot_ms", c.tpot_ms)] {
                if v.is_some_and(|v| !finite_above_0(v)) {
                    return Err(err(
                        field,
                        "must be a finite number of milliseconds above 0",
                    ));
                }
            }
        }
        if !self.classes.is_empty() && self.classes.iter().all(|c| c.get_ref().share == 0.0) {
            return Err(fail(
                self.classes[0].span(),
                "share",
                "every class has a share of 0, so no request would arrive".into(),
            ));
        }
        // An empty list reads as a provider that takes nothing, which a provider left in a
        // scenario is not; leaving the field out takes every class.
        for sp in &self.providers {
            if sp.get_ref().classes.as_ref().is_some_and(Vec::is_empty) {
                return Err(fail(
                    sp.span(),
                    "classes",
                    format!(
                        "provider `{}`: an empty list; name the classes it takes, or leave `classes` out for all",
                        sp.get_ref().name
                    ),
                ));
            }
        }
        // A class with traffic that every provider's own list leaves out would fail every
        // request of it, found only when the run ends.
        for sc in &self.classes {
            let c = sc.get_ref();
            let served = self.providers.iter().any(|p| p.get_ref().takes(&c.name));
            if c.share > 0.0 && !served {
                return Err(fail(
                    sc.span(),
                    "name",
                    format!(
                        "class `{}`: no provider serves it (each names the classes it serves, and none names this one); add it to a provider's `classes`",
                        c.name
                    ),
                ));
            }
        }
        for sp in &self.providers {
            let s = sp.get_ref();
            let err = |field: &str, m: &str| {
                fail(sp.span(), field, format!("provider `{}`: {m}", s.name))
            };
            if !finite_at_least_0(s.weight) {
                return Err(err("weight", "must be a finite share, 0 or more"));
            }
            if s.usd_per_mtok.is_some_and(|v| !finite_at_least_0(v)) {
                return Err(err("usd_per_mtok", "must be a finite price, 0 or more"));
            }
        }
        if self.router.policy == Policy::Weighted
            && !self.providers.is_empty()
            && self.providers.iter().all(|p| p.get_ref().weight == 0.0)
        {
            let at = self.providers[0].span();
            return Err(fail(
                at,
                "weight",
                "under the weighted policy every provider has a weight of 0, so none would be sent a request".into(),
            ));
        }
        if !finite_at_least_0(self.router.cooldown_s) {
            return Err(fail(
                0..0,
                "router.cooldown_s",
                "must be a finite number of seconds, 0 or more".into(),
            ));
        }
        Ok(())
    }

    /// Resolves the file against the catalog. `trace` holds the rows of the file's trace
    /// (the caller reads it) or of a trace given on the command line; `text` is the file's
    /// text, for line numbers.
    ///
    /// # Errors
    /// [`SimError::Scenario`] naming the line and field of the first entry that makes no
    /// sense.
    pub fn resolve<'a>(
        &self,
        text: &str,
        origin: &str,
        catalog: &'a Catalog,
        params: &Params,
        trace: Option<Vec<TraceRow>>,
        over: &Overrides,
    ) -> Result<Scenario<'a>, SimError> {
        // The line that sets the field within the table at `span` (a top-level table's, where
        // the span is empty), else the table's first line.
        let fail = |span: Range<usize>, field: &str, message: String| SimError::Scenario {
            origin: origin.to_string(),
            message: format!(
                "line {}, field `{field}`: {message}",
                switchyard_catalog::line_at(
                    text,
                    switchyard_catalog::field_offset(text, span, field)
                )
            ),
        };
        if let Some(d) = self.duration_s {
            if !(d > 0.0 && d.is_finite()) {
                return Err(fail(
                    0..0,
                    "duration_s",
                    "must be a finite number of seconds above 0".into(),
                ));
            }
        }
        self.check_numbers(&fail)?;
        // A trace given beside the scenario (`--trace`) is a workload of its own, times and
        // lengths, and needs no table; without one, the table is the workload.
        let none = WorkloadSection::default();
        let (wspan, w) = match (&self.workload, &trace) {
            (Some(w), _) => (w.span(), w.get_ref()),
            (None, Some(_)) => (0..0, &none),
            // A table the file lacks has no line to name.
            (None, None) => {
                return Err(SimError::Scenario {
                    origin: origin.to_string(),
                    message: "no [workload] table: a scenario needs one (a trace, or an arrival process with its lengths), or --trace".into(),
                })
            }
        };
        let trace = trace.unwrap_or_default();
        let classes: Vec<Class> = if self.classes.is_empty() {
            vec![Class {
                name: "default".into(),
                ttft_s: None,
                tpot_s: None,
            }]
        } else {
            self.classes
                .iter()
                .map(Spanned::get_ref)
                .map(|c| Class {
                    name: c.name.clone(),
                    ttft_s: c.ttft_ms.map(|v| v / 1000.0),
                    tpot_s: c.tpot_ms.map(|v| v / 1000.0),
                })
                .collect()
        };
        let workload = self
            .workload_spec(w, &trace, &classes, over)
            .map_err(|(f, m)| match f {
                // A flag's value, not the file's.
                "--requests" => SimError::Override { message: m },
                _ => fail(wspan.clone(), &format!("workload.{f}"), m),
            })?;
        let (isl, osl) = workload.mean_lengths(&trace);
        let osl_cv = workload.output_cv(&trace);
        if self.providers.len() > 64 {
            return Err(fail(
                self.providers[64].span(),
                "provider",
                "at most 64 providers per scenario (use replicas for large pools)".into(),
            ));
        }
        if self.providers.is_empty() {
            return Err(fail(
                0..0,
                "provider",
                "a scenario needs at least one [[provider]]".into(),
            ));
        }
        let mut providers = Vec::new();
        for sp in &self.providers {
            let span = sp.span();
            let s = sp.get_ref();
            let err = |field: &str, m: String| {
                fail(span.clone(), field, format!("provider `{}`: {m}", s.name))
            };
            if providers.iter().any(|p: &Provider<'_>| p.name == s.name) {
                return Err(err("name", "two providers have this name".into()));
            }
            // Reports find a provider by name beside the whole fleet's row, and a request no
            // provider took has an empty one.
            if s.name.trim().is_empty() || s.name == "fleet" {
                return Err(err(
                    "name",
                    "a provider needs a name of its own: not empty, and not `fleet`, the whole fleet's row".into(),
                ));
            }
            // An engine that batches nothing would run nothing: refused, not raised to 1.
            for (field, v) in [("max_batch", s.max_batch), ("token_budget", s.token_budget)] {
                if v == Some(0) {
                    return Err(err(field, "must be at least 1".into()));
                }
            }
            let model_id = s
                .model
                .clone()
                .or_else(|| self.model.as_ref().map(|m| m.get_ref().clone()))
                .ok_or_else(|| err("model", "no model: set `model` here or at the top".into()))?;
            let model = catalog
                .model(&model_id)
                .map_err(|e| err("model", e.to_string()))?;
            let system = catalog
                .system(&s.system)
                .map_err(|e| err("system", e.to_string()))?;
            let precision = s.precision.as_deref().map(str::parse).transpose().map_err(
                |e: switchyard_catalog::UnknownPrecision| err("precision", e.to_string()),
            )?;
            let kv_precision = s
                .kv_precision
                .as_deref()
                .map(switchyard_catalog::Precision::kv_from_str)
                .transpose()
                .map_err(|e| err("kv_precision", e))?;
            // A layout is one replica's split; how many replicas there are is `count`.
            let replica_layout = |cell: Option<&str>, field: &str, count: &str| {
                cell.map(|l| Layout::one_replica(l, count))
                    .transpose()
                    .map_err(|e| err(field, e))
            };
            let layout = replica_layout(s.layout.as_deref(), "layout", "replicas")?;
            if s.replicas == 0 {
                return Err(err("replicas", "must be at least 1".into()));
            }
            if s.replicas > MAX_REPLICAS {
                return Err(err(
                    "replicas",
                    format!(
                        "{} is more than the {MAX_REPLICAS} a provider's pool may have",
                        s.replicas
                    ),
                ));
            }
            for (i, c) in s.classes.iter().flatten().enumerate() {
                if !classes.iter().any(|k| &k.name == c) {
                    return Err(err("classes", format!("no [[class]] named `{c}`")));
                }
                if s.classes.iter().flatten().take(i).any(|x| x == c) {
                    return Err(err("classes", format!("names `{c}` twice")));
                }
            }
            let tpot_limit = classes
                .iter()
                .filter(|c| s.takes(&c.name))
                .filter_map(|c| c.tpot_s)
                .min_by(f64::total_cmp);
            let (isl, osl) = within_context(model, isl, osl);
            let q = Query {
                chips: s.chips,
                precision,
                kv_precision,
                layout: layout.map(|l| Layout { dp: 1, ..l }),
                tpot_limit,
                osl_cv,
                ..Query::new(model, system, isl, osl)
            };
            // A pool whose KV cache holds the weights but not a sequence of the mean lengths
            // still takes the shorter requests (the router sends it none it cannot hold): its
            // layout is chosen at the longest lengths it holds, in the same proportion.
            let d = match best_deployment(&q, params, Objective::Throughput) {
                Err(PerfError::ContextTooLong {
                    tokens, longest, ..
                }) if longest >= 2 => {
                    let scale = longest as f64 / tokens as f64;
                    let isl = (q.isl * scale).floor().max(1.0);
                    let osl = (longest as f64 - isl).max(1.0);
                    best_deployment(&Query { isl, osl, ..q }, params, Objective::Throughput)
                }
                other => other,
            }
            .map_err(|e| {
                let field = if matches!(e, PerfError::BadKvPrecision(_)) {
                    "kv_precision"
                } else if matches!(e, PerfError::NoPrecision { .. }) {
                    "precision"
                } else if s.layout.is_some() {
                    "layout"
                } else if s.chips.is_some() {
                    "chips"
                } else {
                    "system"
                };
                err(field, e.to_string())
            })?;
            // `chips` are one server's: where the layout, best or given, splits them into
            // several model replicas (a small model on an 8-GPU server, `tp4` on eight), each
            // runs as a replica of the pool, as the gateway's emulated providers run them and
            // as `estimate` counts them, so that none sits idle.
            let replicas = if s.chips.is_some() {
                u64::from(s.replicas) * u64::from(d.layout.dp)
            } else {
                u64::from(s.replicas)
            };
            if replicas > u64::from(MAX_REPLICAS) {
                return Err(err(
                    "replicas",
                    format!(
                        "{} replicas of {} chips make {replicas} model replicas of {}, more than the {MAX_REPLICAS} a provider's pool may have",
                        s.replicas,
                        d.layout.chips(),
                        Layout { dp: 1, ..d.layout },
                    ),
                ));
            }
            let replicas = replicas as u32;
            // One replica's engine, with the provider's limits; `field` is blamed when the
            // weights leave no room for a KV cache.
            let engine_of = |d: &mut Deployment<'a>, field: &str| {
                d.layout.dp = 1;
                let mut engine = EngineConfig::for_deployment(d, params);
                if let Some(b) = s.max_batch {
                    engine.max_batch = b;
                }
                if let Some(b) = s.token_budget {
                    engine.token_budget = b;
                }
                // Each group's pool must hold a block: a sequence lives in one group.
                if engine.max_context() == 0 {
                    return Err(err(
                        field,
                        format!(
                            "{} leaves no memory for the KV cache on {} chips",
                            model.id,
                            d.layout.replica_chips()
                        ),
                    ));
                }
                Ok(engine)
            };
            let mut d = d;
            let engine = engine_of(&mut d, "system")?;
            // A decode pool beside a prefill pool is full at its own peak, its steps carrying
            // no prompts.
            let disaggregated = s.prefill_replicas.is_some();
            let priors = d.router_priors(params, isl, osl, tpot_limit, disaggregated);
            let per_replica = priors.concurrency.min(f64::from(engine.max_batch)).max(1.0);
            // An engine that batches fewer than the peak's requests is full at its own batch.
            let tpot_full_s = if per_replica < priors.concurrency && !disaggregated {
                d.at_concurrency(params, per_replica, isl, osl).tpot_s
            } else {
                priors.tpot_full_s
            };
            let prefill = match s.prefill_replicas {
                None => {
                    for (field, set) in [
                        ("prefill_chips", s.prefill_chips.is_some()),
                        ("prefill_layout", s.prefill_layout.is_some()),
                    ] {
                        if set {
                            return Err(err(field, "needs prefill_replicas".into()));
                        }
                    }
                    None
                }
                Some(0) => return Err(err("prefill_replicas", "must be at least 1".into())),
                Some(n) if n > MAX_REPLICAS => {
                    return Err(err(
                        "prefill_replicas",
                        format!("{n} is more than the {MAX_REPLICAS} a provider's pool may have"),
                    ))
                }
                Some(n) => {
                    let layout = replica_layout(
                        s.prefill_layout.as_deref(),
                        "prefill_layout",
                        "prefill_replicas",
                    )?;
                    let mut pd = d
                        .prefill_partner(params, s.prefill_chips, layout, (isl, osl))
                        .map_err(|e| {
                            err(
                                if s.prefill_layout.is_some() {
                                    "prefill_layout"
                                } else {
                                    "prefill_chips"
                                },
                                e.to_string(),
                            )
                        })?;
                    // As above: prefill chips that the layout splits run as several replicas.
                    let n = u64::from(n) * u64::from(pd.layout.dp);
                    if n > u64::from(MAX_REPLICAS) {
                        return Err(err(
                            "prefill_replicas",
                            format!("{n} prefill replicas are more than the {MAX_REPLICAS} a provider's pool may have"),
                        ));
                    }
                    let n = n as u32;
                    let pe = engine_of(&mut pd, "prefill_chips")?;
                    let chips = n
                        .saturating_mul(pd.layout.replica_chips())
                        .saturating_add(replicas.saturating_mul(d.layout.replica_chips()));
                    Some(PrefillPool {
                        same_domain: chips <= system.scale_up(),
                        deployment: pd,
                        replicas: n,
                        engine: pe,
                    })
                }
            };
            let usd = s.usd_per_mtok.or_else(|| {
                d.pool_prices(
                    params,
                    (isl, osl),
                    tpot_limit,
                    replicas,
                    prefill.as_ref().map(|pp| (&pp.deployment, pp.replicas)),
                )
                .map(|x| x.usd_per_mtok)
            });
            // A disaggregated provider's first token comes from its prefill pool, after the
            // KV cache's move, and its prompts queue for that pool (as the gateway has it).
            let (ttft_s, prefill_tok_s) = prefill.as_ref().map_or(
                (priors.ttft_s, priors.prefill_tok_s * f64::from(replicas)),
                |pp| {
                    pp.deployment
                        .prefill_pool_priors(params, isl, pp.replicas, pp.same_domain)
                },
            );
            let target = Target {
                name: s.name.clone(),
                weight: s.weight,
                // A pool with no price ranks last under the cost policy, not first.
                usd_per_mtok: usd.unwrap_or(f64::INFINITY),
                // A pool's price is its output's with its prompts' share in it.
                input_usd_per_mtok: 0.0,
                priority: s.priority,
                classes: s.classes.clone().unwrap_or_default(),
                ttft_s,
                tpot_s: priors.tpot_s,
                tpot_full_s,
                disaggregated: prefill.is_some(),
                capacity: per_replica * f64::from(replicas),
                prefill_tok_s,
                ttft_prompt_tokens: isl,
                // A request must fit where its prompt runs and where it decodes.
                max_context: Some(prefill.as_ref().map_or(engine.longest_request(), |pp| {
                    engine.longest_request().min(pp.engine.longest_request())
                })),
            };
            providers.push(Provider {
                name: s.name.clone(),
                deployment: d,
                replicas,
                engine,
                target,
                prefill,
                usd_per_mtok: s.usd_per_mtok,
                prefix_caching: s.prefix_caching,
            });
        }
        self.route_by_model(catalog, &mut providers, &fail)?;
        let mut failures = Vec::new();
        for sf in &self.failures {
            let span = sf.span();
            let f = sf.get_ref();
            let err = |field: &str, m: String| fail(span.clone(), field, m);
            let provider = providers
                .iter()
                .position(|p| p.name == f.provider)
                .ok_or_else(|| err("provider", format!("no provider named `{}`", f.provider)))?;
            if f.start_s.is_nan() || f.start_s < 0.0 {
                return Err(err("start_s", "must be a time of at least 0".into()));
            }
            // A failure the run never reaches changes nothing it reports.
            if let Some(d) = self.duration_s {
                if f.start_s >= d {
                    return Err(err(
                        "start_s",
                        format!("must come before the run ends at `duration_s` = {d} s"),
                    ));
                }
            }
            let need_end = || -> Result<f64, SimError> {
                match f.end_s {
                    Some(e) if e > f.start_s => Ok(e),
                    Some(_) => Err(err("end_s", "must come after start_s".into())),
                    None => Err(err(
                        "end_s",
                        format!("a failure of kind `{}` needs an end", f.kind),
                    )),
                }
            };
            // A field the kind does not read is a mistake to say, not to drop: a slowdown
            // given a replica slowed the whole provider.
            let takes: &[&str] = match f.kind.as_str() {
                "outage" => &[],
                "replica" => &["replica"],
                "slowdown" => &["factor"],
                _ => &["replica", "factor"],
            };
            if let Some(field) = stray(
                &[
                    ("replica", f.replica.is_some()),
                    ("factor", f.factor.is_some()),
                ],
                takes,
            ) {
                return Err(err(
                    field,
                    format!(
                        "a failure of kind `{}` does not take `{field}` ({})",
                        f.kind,
                        match field {
                            "replica" => "only `replica` failures name one",
                            _ => "only a `slowdown` has one",
                        }
                    ),
                ));
            }
            failures.push(match f.kind.as_str() {
                "outage" => Failure::Outage {
                    provider,
                    start: f.start_s,
                    end: need_end()?,
                },
                "replica" => {
                    let replica = f
                        .replica
                        .ok_or_else(|| err("replica", "which replica fails? (0-based)".into()))?;
                    if replica >= providers[provider].replicas {
                        return Err(err(
                            "replica",
                            format!(
                                "provider `{}` has {} replicas",
                                f.provider, providers[provider].replicas
                            ),
                        ));
                    }
                    if f.end_s.is_some() {
                        need_end()?;
                    }
                    Failure::Replica {
                        provider,
                        replica: replica as usize,
                        start: f.start_s,
                        end: f.end_s,
                    }
                }
                "slowdown" => {
                    let factor = f
                        .factor
                        .ok_or_else(|| err("factor", "a slowdown needs a factor".into()))?;
                    // A step a thousand times slower is an outage in all but name; past
                    // that the run's time bins grow without bound. Below 1 the hardware
                    // would run faster than the physics allows.
                    if !(1.0..=1000.0).contains(&factor) {
                        return Err(err(
                            "factor",
                            "must be from 1 (no slower) to 1000: a slowdown cannot make the hardware faster".into(),
                        ));
                    }
                    Failure::Slowdown {
                        provider,
                        factor,
                        start: f.start_s,
                        end: need_end()?,
                    }
                }
                other => {
                    return Err(err(
                        "kind",
                        format!("unknown failure kind `{other}`; known: outage, replica, slowdown"),
                    ))
                }
            });
        }
        for (field, v) in [
            ("router.max_attempts", self.router.max_attempts),
            ("router.eject_after", self.router.eject_after),
        ] {
            if v == 0 {
                return Err(fail(0..0, field, "must be at least 1".into()));
            }
        }
        let warmup_s = match &self.warmup_s {
            None => None,
            Some(w) => {
                let v = *w.get_ref();
                if !(v >= 0.0 && v.is_finite()) {
                    return Err(fail(
                        w.span(),
                        "warmup_s",
                        "must be a finite number of seconds, at least 0".into(),
                    ));
                }
                if self.duration_s.is_some_and(|d| v >= d) {
                    return Err(fail(
                        w.span(),
                        "warmup_s",
                        "must end before `duration_s`".into(),
                    ));
                }
                // A replay ends with its last arrival (of those it takes), however long the
                // run: a warm-up past it would leave nothing to report after it.
                if let Arrivals::Trace { rate_x } = workload.arrivals {
                    let taken = workload
                        .max_requests
                        .map_or(trace.len(), |n| trace.len().min(n as usize));
                    let last = trace[..taken]
                        .iter()
                        .map(|r| r.arrival_s / rate_x)
                        .filter(|t| t.is_finite())
                        .fold(f64::NEG_INFINITY, f64::max);
                    if last.is_finite() && v >= last {
                        return Err(fail(
                            w.span(),
                            "warmup_s",
                            format!("must end before the trace's last arrival, at {last:.1} s"),
                        ));
                    }
                }
                // A process's requests arrive over about requests / rate seconds, whatever
                // longer `duration_s` the run is given.
                if let (Some(rate), Some(n)) =
                    (workload.arrivals.mean_rate(), workload.max_requests)
                {
                    let end = n as f64 / rate;
                    if v >= end {
                        // The command line may have shortened the run the file describes.
                        let given: Vec<&str> = [
                            (over.requests.is_some(), "--requests"),
                            (over.rate_x.is_some(), "--rate-x"),
                        ]
                        .iter()
                        .filter(|(set, _)| *set)
                        .map(|(_, flag)| *flag)
                        .collect();
                        let by = if given.is_empty() {
                            String::new()
                        } else {
                            format!(", as {} set it", given.join(" and "))
                        };
                        return Err(fail(
                            w.span(),
                            "warmup_s",
                            format!("must end before the last arrival, expected at about {end:.1} s ({n} requests at {rate} a second{by})"),
                        ));
                    }
                }
                Some(v)
            }
        };
        Ok(Scenario {
            name: self.name.clone().unwrap_or_else(|| origin.to_string()),
            seed: over.seed.unwrap_or(self.seed),
            providers,
            policy: self.router.policy,
            health: Health {
                eject_after: self.router.eject_after,
                cooldown_s: self.router.cooldown_s,
            },
            max_attempts: self.router.max_attempts,
            max_tokens: self.router.max_tokens,
            classes,
            failures,
            workload,
            trace,
            warmup_s,
        })
    }

    /// Where providers serve more than one model, each class names the model its requests
    /// ask for, and a provider takes only the classes that ask for its own: requests for one
    /// model are no load for another's replicas. Errors name the class or provider at fault.
    fn route_by_model(
        &self,
        catalog: &Catalog,
        providers: &mut [Provider<'_>],
        fail: &dyn Fn(Range<usize>, &str, String) -> SimError,
    ) -> Result<(), SimError> {
        // Each class's model, by its catalog id (an alias read as the model it names).
        let mut asked = Vec::new();
        for sc in &self.classes {
            let c = sc.get_ref();
            let id =
                match &c.model {
                    None => None,
                    Some(m) => Some(catalog.model(m).map(|x| x.id.clone()).map_err(|e| {
                        fail(sc.span(), "model", format!("class `{}`: {e}", c.name))
                    })?),
                };
            if let Some(id) = &id {
                let serving: Vec<&Provider<'_>> = providers
                    .iter()
                    .filter(|p| &p.deployment.model.id == id)
                    .collect();
                if serving.is_empty() {
                    return Err(fail(
                        sc.span(),
                        "model",
                        format!("class `{}`: no provider serves `{id}`", c.name),
                    ));
                }
                // Served by another model's providers alone, a class with traffic would fail
                // every request of it, found only when the run ends.
                let takes = |p: &&Provider<'_>| {
                    p.target.classes.is_empty() || p.target.classes.contains(&c.name)
                };
                if c.share > 0.0 && !serving.iter().any(takes) {
                    let names: Vec<String> =
                        serving.iter().map(|p| format!("`{}`", p.name)).collect();
                    return Err(fail(
                        sc.span(),
                        "name",
                        format!(
                            "class `{}`: no provider of `{id}` takes it ({} {} the classes {} takes, and none names this one); add it to {} `classes`",
                            c.name,
                            names.join(", "),
                            if names.len() == 1 { "names" } else { "name" },
                            if names.len() == 1 { "it" } else { "each" },
                            if names.len() == 1 { "its" } else { "one's" },
                        ),
                    ));
                }
            }
            asked.push(id);
        }
        let mut served: Vec<(&str, &str)> = Vec::new();
        for p in providers.iter() {
            if !served.iter().any(|(m, _)| *m == p.deployment.model.id) {
                served.push((p.deployment.model.id.as_str(), p.name.as_str()));
            }
        }
        if served.len() < 2 {
            return Ok(());
        }
        let which = served
            .iter()
            .map(|(m, p)| format!("`{p}` {m}"))
            .collect::<Vec<_>>()
            .join(", ");
        if self.classes.is_empty() {
            return Err(fail(
                0..0,
                "class",
                format!("providers serve several models ({which}, ...): give [[class]] entries, each with the `model` its requests ask for"),
            ));
        }
        for (sc, id) in self.classes.iter().zip(&asked) {
            if id.is_none() {
                return Err(fail(
                    sc.span(),
                    "name",
                    format!(
                        "class `{}` names no `model`, and providers serve several ({which}, ...): say which its requests ask for",
                        sc.get_ref().name
                    ),
                ));
            }
        }
        for (p, sp) in providers.iter_mut().zip(&self.providers) {
            let mine: Vec<String> = self
                .classes
                .iter()
                .zip(&asked)
                .filter(|(_, id)| id.as_deref() == Some(p.deployment.model.id.as_str()))
                .map(|(c, _)| c.get_ref().name.clone())
                .filter(|c| p.target.classes.is_empty() || p.target.classes.contains(c))
                .collect();
            if mine.is_empty() {
                return Err(fail(
                    sp.span(),
                    "model",
                    format!(
                        "provider `{}`: no class it takes asks for `{}`, so it would serve nothing",
                        p.name, p.deployment.model.id
                    ),
                ));
            }
            p.target.classes = mine;
        }
        Ok(())
    }

    fn workload_spec(
        &self,
        w: &WorkloadSection,
        trace: &[TraceRow],
        classes: &[Class],
        over: &Overrides,
    ) -> Result<WorkloadSpec, (&'static str, String)> {
        let has_trace = !trace.is_empty();
        // A million times either way, as on the command line: beyond it a trace's times
        // lose their precision, or a run's clock outlives any number it prints.
        if !(1e-6..=1e6).contains(&w.rate_x) {
            return Err((
                "rate_x",
                "must be a factor from 0.000001 to 1,000,000".into(),
            ));
        }
        let arrivals = match &w.arrival {
            None if trace.iter().any(|r| r.arrival_s.is_nan()) => {
                return Err((
                    "arrival",
                    "the trace holds lengths only, no arrival times: give an `arrival` process to draw them".into(),
                ))
            }
            None if has_trace => Arrivals::Trace {
                rate_x: over.rate_x.unwrap_or(w.rate_x),
            },
            None => {
                return Err((
                    "arrival",
                    "the workload needs a `trace` or an `arrival` process".into(),
                ))
            }
            Some(a) => {
                // Synthetic rates scale with the speed-up too, the command line's over the
                // file's.
                let rate = a.rate * over.rate_x.unwrap_or(w.rate_x);
                // One request in eleven days to a billion a second: past either end the
                // run's times lose their precision (1e-300 a second printed a 300-digit
                // duration and zero latencies).
                if !(1e-6..=1e9).contains(&rate) {
                    return Err((
                        "arrival.rate",
                        "must be from 0.000001 to 1,000,000,000 requests a second (after rate_x)"
                            .into(),
                    ));
                }
                let takes: &[&str] = match a.process.as_str() {
                    "poisson" => &[],
                    "gamma" => &["arrival.cv"],
                    "diurnal" => &["arrival.swing", "arrival.period_s"],
                    _ => &["arrival.cv", "arrival.swing", "arrival.period_s"],
                };
                if let Some(field) = stray(
                    &[
                        ("arrival.cv", a.cv.is_some()),
                        ("arrival.swing", a.swing.is_some()),
                        ("arrival.period_s", a.period_s.is_some()),
                    ],
                    takes,
                ) {
                    return Err((
                        field,
                        format!(
                            "a `{}` process does not take `{}` (`gamma` takes `cv`, `diurnal` `swing` and `period_s`)",
                            a.process,
                            field.trim_start_matches("arrival.")
                        ),
                    ));
                }
                match a.process.as_str() {
                    "poisson" => Arrivals::Poisson { rate },
                    "gamma" => {
                        let cv =
                            a.cv.ok_or(("arrival.cv", "a gamma process needs `cv`".to_string()))?;
                        // Beyond 100 a gamma process is a few bursts with nothing between,
                        // and an infinite one never draws a gap.
                        if !(cv > 0.0 && cv <= 100.0) {
                            return Err(("arrival.cv", "must be above 0 and at most 100".into()));
                        }
                        Arrivals::Gamma { rate, cv }
                    }
                    "diurnal" => {
                        let swing = a.swing.unwrap_or(0.5);
                        if !(0.0..=1.0).contains(&swing) {
                            return Err(("arrival.swing", "must be between 0 and 1".into()));
                        }
                        let period_s = a.period_s.unwrap_or(86_400.0);
                        if !(period_s > 0.0 && period_s.is_finite()) {
                            return Err((
                                "arrival.period_s",
                                "must be a finite number of seconds above 0".into(),
                            ));
                        }
                        Arrivals::Diurnal {
                            rate,
                            swing,
                            period_s,
                        }
                    }
                    other => {
                        return Err((
                            "arrival.process",
                            format!("unknown process `{other}`; known: poisson, gamma, diurnal"),
                        ))
                    }
                }
            }
        };
        if let Arrivals::Trace { rate_x } = arrivals {
            if !(rate_x > 0.0 && rate_x.is_finite()) {
                return Err(("rate_x", "must be a positive factor".into()));
            }
        }
        if over.requests.or(w.requests) == Some(0) {
            return Err((
                "requests",
                "must be at least 1: a run of no requests shows nothing".into(),
            ));
        }
        // A process draws arrivals for ever: something must end the run.
        if !matches!(arrivals, Arrivals::Trace { .. })
            && over.requests.or(w.requests).is_none()
            && self.duration_s.is_none()
        {
            return Err((
                "requests",
                "an `arrival` process never ends by itself: give the workload's `requests`, the scenario's `duration_s`, or --requests".into(),
            ));
        }
        // A process's mean rate over a long run ends it after about rate x duration_s
        // requests: past what a run can simulate, it would run for hours holding them all.
        if let Some(rate) = arrivals.mean_rate() {
            let by_time = self.duration_s.map_or(f64::INFINITY, |d| rate * d);
            let by_count = over
                .requests
                .or(w.requests)
                .map_or(f64::INFINITY, |n| n as f64);
            if by_time.min(by_count) > MAX_REQUESTS {
                let (field, what) = if by_time < by_count {
                    (
                        "arrival.rate",
                        format!(
                            "{rate} requests a second for `duration_s` bring about {by_time:.2e}"
                        ),
                    )
                } else if over.requests.is_some() {
                    return Err((
                        "--requests",
                        format!("--requests {by_count:.2e} is past the {MAX_REQUESTS:.0e} requests a run simulates"),
                    ));
                } else {
                    ("requests", format!("{by_count:.2e} requests"))
                };
                return Err((
                    field,
                    format!("{what}, past the {MAX_REQUESTS:.0e} a run simulates: lower the rate, `duration_s` or `requests`"),
                ));
            }
        }
        let lengths = |l: &Option<LengthSection>, field: &'static str| {
            match l {
                // A replay takes each arriving row's lengths; a synthetic process draws
                // whole rows, prompt and output together.
                None if has_trace => Ok(Lengths::FromTrace),
                None => Err((field, "give a length distribution or a trace".to_string())),
                Some(l) => {
                    if let Some(f) = stray(&l.given(), l.takes()) {
                        return Err((
                            field,
                            format!(
                                "`{}` does not take `{f}` (`fixed` takes `tokens`, `exponential` `mean`, `lognormal` `median` and `sigma`)",
                                l.dist
                            ),
                        ));
                    }
                    match l.dist.as_str() {
                    "fixed" => l
                        .tokens
                        .filter(|&t| t > 0)
                        .map(Lengths::Fixed)
                        .ok_or((field, "`fixed` needs `tokens` of at least 1".to_string())),
                    "exponential" => l
                        .mean
                        .filter(|m| (1.0..=MAX_MEAN_TOKENS).contains(m))
                        .map(Lengths::Exponential)
                        .ok_or((field, format!("`exponential` needs a `mean` from 1 to {MAX_MEAN_TOKENS}"))),
                    "lognormal" => match (l.median, l.sigma) {
                        (Some(median), Some(sigma))
                            if (1.0..=MAX_MEAN_TOKENS).contains(&median)
                                && (0.0..=MAX_SIGMA).contains(&sigma) =>
                        {
                            Ok(Lengths::LogNormal { median, sigma })
                        }
                        _ => Err((field, format!("`lognormal` needs a `median` from 1 to {MAX_MEAN_TOKENS} and a `sigma` from 0 to {MAX_SIGMA}"))),
                    },
                    "trace" if has_trace => Ok(Lengths::FromTrace),
                    "trace" => Err((field, "`trace` lengths need a trace".to_string())),
                    other => Err((
                        field,
                        format!("unknown distribution `{other}`; known: fixed, exponential, lognormal, trace"),
                    )),
                    }
                }
            }
        };
        let (prompt, output) = (lengths(&w.prompt, "prompt")?, lengths(&w.output, "output")?);
        // A trace whose times a process replaces and whose lengths two distributions replace
        // would be read and used for nothing.
        if has_trace
            && !matches!(arrivals, Arrivals::Trace { .. })
            && !matches!(prompt, Lengths::FromTrace)
            && !matches!(output, Lengths::FromTrace)
        {
            return Err((
                "trace",
                "an `arrival` process and both length distributions leave nothing of the trace to use: drop the trace, or a distribution (or set its `dist = \"trace\"`)".into(),
            ));
        }
        Ok(WorkloadSpec {
            prompt,
            output,
            arrivals,
            class_shares: classes
                .iter()
                .enumerate()
                .map(|(i, _)| self.classes.get(i).map_or(1.0, |c| c.get_ref().share))
                .collect(),
            max_requests: over.requests.or(w.requests),
            horizon_s: self.duration_s,
        })
    }
}

/// Mean lengths `isl` and `osl` as a layout is chosen for them: a mean past the model's
/// context comes of requests the model refuses one by one, so the longest it takes stands
/// for it, in the same proportions.
pub(crate) fn within_context(model: &switchyard_catalog::Model, isl: f64, osl: f64) -> (f64, f64) {
    let within = (model.max_context as f64 / (isl + osl)).min(1.0);
    ((isl * within).max(1.0), (osl * within).max(1.0))
}
