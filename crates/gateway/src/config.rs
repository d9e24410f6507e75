//! Gateway configuration: providers, public models mapped to deployments, timeouts,
//! retries and limits, in TOML, with a built-in default that needs nothing from outside.
//!
//! API keys never live in the file: a provider names the environment variable that holds
//! its key. Errors name the file, line and field.

use crate::GatewayError;
use serde::Deserialize;
use std::ops::Range;
use switchyard_router::{Health, Policy};
use toml::Spanned;

/// The built-in configuration: two emulated providers, a CS-3 wafer-scale pool and an H200
/// GPU pool, serving `llama-3.1-8b` and `llama-3.1-70b`.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// A configuration file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listening address and request limits.
    #[serde(default)]
    pub server: Server,
    /// Timeouts towards providers.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Retries and their budget.
    #[serde(default)]
    pub retries: Retries,
    /// Passive health of deployments.
    #[serde(default)]
    pub health: Health,
    /// Providers.
    #[serde(default, rename = "provider")]
    pub providers: Vec<Spanned<ProviderSection>>,
    /// Public models.
    #[serde(rename = "model")]
    pub models: Vec<Spanned<ModelSection>>,
    /// Client keys; none: the gateway is open.
    #[serde(default, rename = "key")]
    pub keys: Vec<Spanned<KeySection>>,
}

/// `[[key]]`: a client key, the models it may call and its request rate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySection {
    /// Name, for errors and metrics.
    pub name: String,
    /// Environment variable holding the secret the client sends as a bearer token.
    pub key_env: String,
    /// Public models the key may call (default: all).
    #[serde(default)]
    pub models: Vec<String>,
    /// Requests per minute (default: no limit).
    #[serde(default)]
    pub requests_per_minute: Option<f64>,
    /// Prompt and output tokens per minute (default: no limit).
    #[serde(default)]
    pub tokens_per_minute: Option<f64>,
    /// Dollars a day it may spend at the deployments' prices (default: no limit).
    #[serde(default)]
    pub usd_per_day: Option<f64>,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Address to listen on.
    pub listen: String,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// A file that keeps what is left of each key's dollars a day across restarts (default:
    /// none, and a restart refills every key). Read at start, written every few seconds
    /// while keys spend and when the gateway stops; a relative path is from the working
    /// directory.
    pub spend_file: Option<String>,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 4 << 20,
            spend_file: None,
        }
    }
}

/// `[timeouts]`, in milliseconds.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Establishing a connection to a provider.
    pub connect_ms: u64,
    /// From sending a request to its first token of output (not a role-only or empty
    /// chunk), or, not streaming, its headers; past it the next deployment is tried. An
    /// emulated deployment's stream has this beyond its prompt's own pass as the physics
    /// times it (a long prompt is no fault of its deployment), and its whole answers
    /// `attempt_ms`, as any provider's.
    pub first_token_ms: u64,
    /// The longest a stream may go without an event once its first token is out: past it the
    /// deployment has stalled (it hangs mid-answer), and the stream ends as its failure,
    /// where the request's own `total_ms` blames no one.
    pub stall_ms: u64,
    /// The whole request, from its arrival, every attempt in it: retries share it.
    pub total_ms: u64,
    /// One attempt at a whole (not streamed) answer, whose headers come only with its last
    /// token, so `first_token_ms` cannot tell a stuck provider from a long answer; past it
    /// the next deployment is tried. Unset: what is left of `total_ms` (a stuck provider
    /// then takes the whole request, as Envoy's per-try timeout does unset).
    pub attempt_ms: Option<u64>,
    /// A client's request body arriving, from its headers: a client that stalls mid-body is
    /// answered 408 rather than holding its connection open.
    pub body_ms: u64,
    /// A client's request headers arriving, from when the connection waits for them: a
    /// client that trickles them (slowloris), or leaves a kept-alive connection idle, has it
    /// closed.
    pub header_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect_ms: 2_000,
            first_token_ms: 30_000,
            stall_ms: 30_000,
            total_ms: 600_000,
            attempt_ms: None,
            body_ms: 30_000,
            header_ms: 30_000,
        }
    }
}

/// `[retries]`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retries {
    /// Tries per request, the first included.
    pub max_attempts: u32,
    /// Retries allowed per original request over time, so that retries cannot multiply an
    /// outage's load (as linkerd's retry budget).
    pub budget_ratio: f64,
    /// Retries per second allowed regardless of the ratio, so a quiet gateway can still retry.
    pub min_per_s: f64,
}

impl Default for Retries {
    fn default() -> Self {
        Retries {
            max_attempts: 3,
            budget_ratio: 0.2,
            min_per_s: 10.0,
        }
    }
}

/// `[[provider]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSection {
    /// Name, as deployments refer to it.
    pub name: String,
    /// `openai` (any OpenAI-compatible server) or `emulated`.
    pub kind: String,
    /// Base URL of an `openai` provider, such as `https://api.example.com/v1`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Environment variable holding an `openai` provider's API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Whether an `openai` provider is asked for a usage chunk on streams whose client asked
    /// none (`stream_options.include_usage`), so that tokens are counted as the provider
    /// counts them; the client is not sent it. False for a provider that refuses
    /// `stream_options`: its streams are then counted a content chunk a token.
    #[serde(default = "yes")]
    pub stream_usage: bool,
    /// Catalog system of an `emulated` provider.
    #[serde(default)]
    pub system: Option<String>,
    /// Replicas per model of an `emulated` provider.
    #[serde(default = "one")]
    pub replicas: u32,
    /// Chips (or wafers) per replica of an `emulated` provider (default: one model replica of
    /// the best layout of a server's chips, up to 8 GPUs or an RDU rack, or of the fewest
    /// wafers or LPUs that fit; one engine a replica). Where a model's best layout splits them into several model
    /// replicas, as a small model on an 8-GPU server, each runs as an engine of its own, as in
    /// `simulate`.
    #[serde(default)]
    pub chips: Option<u32>,
    /// One replica's layout on an `emulated` provider (`tp8`, `tp4-pp2`, `ep8`), as a
    /// simulation scenario's provider takes it (default: the layout that carries the most on
    /// its chips, which may split them into several replicas).
    #[serde(default)]
    pub layout: Option<String>,
    /// Faults an `emulated` provider injects, for tests and drills.
    #[serde(default)]
    pub faults: Faults,
    /// Replicas of a separate prefill pool of an `emulated` provider (disaggregated serving:
    /// prompts run there, then move to the replicas above, which only decode).
    #[serde(default)]
    pub prefill_replicas: Option<u32>,
    /// Chips per prefill replica (default: the fewest that fit).
    #[serde(default)]
    pub prefill_chips: Option<u32>,
    /// Whether an `emulated` provider's engines cache prompts' prefixes (on by default, as
    /// in vLLM and SGLang).
    #[serde(default = "yes")]
    pub prefix_caching: bool,
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

/// Faults of an emulated provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Share of requests answered with a 500 error at once.
    pub error_rate: f64,
    /// Share of requests delayed by `spike_ms` before they start.
    pub spike_rate: f64,
    /// Length of a latency spike, ms.
    pub spike_ms: u64,
    /// Start of an outage, seconds after the provider starts: every request is refused
    /// with 503 until `outage_end_s`.
    pub outage_start_s: Option<f64>,
    /// End of the outage.
    pub outage_end_s: Option<f64>,
    /// Seed of the draws that pick the requests that fail or spike: a seed draws the same
    /// ones on every start; left out, one is taken from the clock, so that each start draws
    /// its own (a fixed one made the first eight requests of every start spike at a rate of
    /// one half).
    pub seed: Option<u64>,
}

/// `[[model]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Public name clients ask for.
    pub name: String,
    /// Routing policy across the deployments.
    #[serde(default = "latency")]
    pub policy: Policy,
    /// Where the model is served.
    #[serde(rename = "deployment")]
    pub deployments: Vec<Spanned<DeploymentSection>>,
}

fn latency() -> Policy {
    Policy::Latency
}

/// `[[model.deployment]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSection {
    /// Provider name.
    pub provider: String,
    /// The model's name at the provider (for `emulated`, a catalog model id); default: the
    /// public name.
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// Share under the weighted policy.
    #[serde(default = "unit")]
    pub weight: f64,
    /// Price of a million output tokens, in USD: the cost policy ranks by it, and a
    /// client key's spending is charged it (emulated: the pool's own cost, from its system's
    /// price, where the catalog has one).
    #[serde(default)]
    pub usd_per_mtok: Option<f64>,
    /// Price of a million prompt tokens, in USD, charged to a client key's spending beside
    /// [`DeploymentSection::usd_per_mtok`] (default: none where `usd_per_mtok` is given, the
    /// prompts' cost taken as priced into the output's; emulated without either: the
    /// prompts' share of the pool's own cost).
    #[serde(default)]
    pub input_usd_per_mtok: Option<f64>,
    /// Price of a million prompt tokens the provider found in its prefix cache, in USD
    /// (default: the input price; emulated with the pool's own prices: none, as the engine
    /// does no work for them).
    #[serde(default)]
    pub cached_input_usd_per_mtok: Option<f64>,
    /// Preference under the priority policy: lower first.
    #[serde(default)]
    pub priority: u32,
    /// Traffic classes this deployment takes (default: all).
    #[serde(default)]
    pub classes: Vec<String>,
    /// Expected time to first token before any is observed, ms (emulated: predicted;
    /// otherwise unstated, a typical cloud's 500 ms).
    #[serde(default)]
    pub ttft_ms: Option<f64>,
    /// Expected time per output token before any is observed, ms (emulated: predicted;
    /// otherwise unstated, a typical cloud's 20 ms).
    #[serde(default)]
    pub tpot_ms: Option<f64>,
    /// Requests it serves at once before queueing (emulated: predicted).
    #[serde(default)]
    pub capacity: Option<f64>,
    /// Longest request it takes, prompt plus output tokens (emulated: its KV cache); longer
    /// requests go to other deployments.
    #[serde(default)]
    pub max_context: Option<u32>,
}

/// The most a price of a million tokens may be: a dollar a token.
const MAX_USD_PER_MTOK: f64 = 1e6;

fn unit() -> f64 {
    1.0
}

/// Where in a configuration text an error lies.
#[derive(Debug, Clone)]
pub(crate) struct Origin<'t> {
    pub text: &'t str,
    pub name: &'t str,
}

impl Origin<'_> {
    /// An error about `field` of the table at `span`: the line that sets the field, or the
    /// table's first line where none does.
    pub(crate) fn error(&self, span: Range<usize>, field: &str, message: String) -> GatewayError {
        let at = switchyard_catalog::field_offset(self.text, span, field);
        GatewayError::Config(format!(
            "{}: line {}, field `{field}`: {message}",
            self.name,
            switchyard_catalog::line_at(self.text, at)
        ))
    }
}

impl Config {
    /// Parses configuration TOML; `origin` names the file in errors.
    ///
    /// # Errors
    /// [`GatewayError::Config`] naming the line, column and field.
    pub fn parse(text: &str, origin: &str) -> Result<Self, GatewayError> {
        let mut c: Config = toml::from_str(text).map_err(|e| {
            GatewayError::Config(format!(
                "{origin}: {}",
                switchyard_catalog::toml_error_line(text, &e)
            ))
        })?;
        let o = Origin { text, name: origin };
        if c.providers.is_empty() {
            return Err(GatewayError::Config(format!(
                "{origin}: no [[provider]]: deployments would have nowhere to run"
            )));
        }
        let mut names: Vec<&str> = Vec::new();
        for (i, p) in c.providers.iter().enumerate() {
            let s = p.get_ref();
            // A provider's span ends before its `faults` table: the field is looked for up to
            // the next provider.
            let end = c
                .providers
                .get(i + 1)
                .map_or(text.len(), |n| n.span().start);
            let err = |f: &str, m: String| {
                o.error(
                    p.span().start..end,
                    f,
                    format!("provider `{}`: {m}", s.name),
                )
            };
            if s.name.trim().is_empty() {
                return Err(err(
                    "name",
                    "is empty: deployments, errors and metrics name the provider by it".into(),
                ));
            }
            if names.contains(&s.name.as_str()) {
                return Err(err("name", "two providers have this name".into()));
            }
            names.push(&s.name);
            // A field of the other kind of provider would be read by nothing: a fault drill
            // set on an outside provider would inject nothing without a word.
            // Set as parsed, or, for a field with a default, written in the provider's text.
            let given = |field: &str| match field {
                "system" => s.system.is_some(),
                "chips" => s.chips.is_some(),
                "layout" => s.layout.is_some(),
                "faults" => s.faults != Faults::default(),
                "prefill_replicas" => s.prefill_replicas.is_some(),
                "prefill_chips" => s.prefill_chips.is_some(),
                "base_url" => s.base_url.is_some(),
                "api_key_env" => s.api_key_env.is_some(),
                _ => switchyard_catalog::key_offset(text, p.span().start..end, field).is_some(),
            };
            let (other, fields): (&str, &[&str]) = match s.kind.as_str() {
                "openai" => (
                    "emulated",
                    &[
                        "system",
                        "replicas",
                        "chips",
                        "layout",
                        "faults",
                        "prefill_replicas",
                        "prefill_chips",
                        "prefix_caching",
                    ],
                ),
                _ => ("openai", &["base_url", "api_key_env", "stream_usage"]),
            };
            if let Some(f) = fields.iter().find(|f| given(f)) {
                if matches!(s.kind.as_str(), "openai" | "emulated") {
                    return Err(err(
                        f,
                        format!("applies to `{other}` providers, not to `{}` ones", s.kind),
                    ));
                }
            }
            match s.kind.as_str() {
                "openai" => {
                    let url = s.base_url.as_deref().ok_or_else(|| {
                        err("base_url", "an `openai` provider needs a base_url".into())
                    })?;
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(err("base_url", format!("`{url}` is not an http(s) URL")));
                    }
                }
                "emulated" => {
                    if s.system.is_none() {
                        return Err(err(
                            "system",
                            "an `emulated` provider needs a catalog system".into(),
                        ));
                    }
                    if s.replicas == 0 {
                        return Err(err("replicas", "must be at least 1".into()));
                    }
                    if s.prefill_replicas == Some(0) {
                        return Err(err("prefill_replicas", "must be at least 1".into()));
                    }
                    for (field, n) in [
                        ("replicas", Some(s.replicas)),
                        ("prefill_replicas", s.prefill_replicas),
                    ] {
                        if n.is_some_and(|n| n > crate::MAX_ENGINES) {
                            return Err(err(
                                field,
                                format!("at most {} engines per emulated pool", crate::MAX_ENGINES),
                            ));
                        }
                    }
                    if s.prefill_chips.is_some() && s.prefill_replicas.is_none() {
                        return Err(err("prefill_chips", "needs prefill_replicas".into()));
                    }
                    let f = s.faults;
                    for (field, v) in [
                        ("faults.error_rate", f.error_rate),
                        ("faults.spike_rate", f.spike_rate),
                    ] {
                        if !(0.0..=1.0).contains(&v) {
                            return Err(err(field, format!("{v} is not a share between 0 and 1")));
                        }
                    }
                    if let Some(a) = f.outage_start_s {
                        if !(a >= 0.0 && a.is_finite()) {
                            return Err(err(
                                "faults.outage_start_s",
                                "must be a finite time of at least 0".into(),
                            ));
                        }
                        if f.outage_end_s.is_some_and(|b| b.is_nan() || b <= a) {
                            return Err(err(
                                "faults.outage_end_s",
                                "must come after outage_start_s".into(),
                            ));
                        }
                    } else if f.outage_end_s.is_some() {
                        return Err(err(
                            "faults.outage_end_s",
                            "an outage needs its outage_start_s".into(),
                        ));
                    }
                }
                other => {
                    return Err(err(
                        "kind",
                        format!("unknown provider kind `{other}`; known: openai, emulated"),
                    ))
                }
            }
        }
        let mut models: Vec<&str> = Vec::new();
        for (i, m) in c.models.iter().enumerate() {
            let s = m.get_ref();
            // A model's span ends before its deployments' tables: the field is looked for up
            // to the next model.
            let end = c.models.get(i + 1).map_or(text.len(), |n| n.span().start);
            let err = |f: &str, msg: String| {
                o.error(m.span().start..end, f, format!("model `{}`: {msg}", s.name))
            };
            if s.name.trim().is_empty() {
                return Err(err(
                    "name",
                    "is empty: clients ask for a model by it".into(),
                ));
            }
            if models.contains(&s.name.as_str()) {
                return Err(err("name", "two models have this name".into()));
            }
            models.push(&s.name);
            if s.deployments.is_empty() {
                return Err(err(
                    "deployment",
                    "a model needs at least one [[model.deployment]]".into(),
                ));
            }
            for (j, ds) in s.deployments.iter().enumerate() {
                let d = ds.get_ref();
                // A deployment's own fields are looked for in its own table.
                let err = |f: &str, msg: String| {
                    o.error(ds.span(), f, format!("model `{}`: {msg}", s.name))
                };
                // Deployments are told apart by their provider and upstream model in
                // /health: two of both alike would read as one, and route as two.
                let upstream = |d: &DeploymentSection| {
                    d.upstream_model.clone().unwrap_or_else(|| s.name.clone())
                };
                if s.deployments[..j].iter().any(|e| {
                    e.get_ref().provider == d.provider && upstream(e.get_ref()) == upstream(d)
                }) {
                    return Err(err(
                        "deployment.provider",
                        format!(
                            "a second deployment of `{}` on `{}`; to deploy it twice, add a second [[provider]] of another name for it",
                            upstream(d),
                            d.provider
                        ),
                    ));
                }
                if !names.contains(&d.provider.as_str()) {
                    return Err(err(
                        "deployment.provider",
                        format!("no provider named `{}`", d.provider),
                    ));
                }
                // Numbers a typo would turn into a router that sends nothing, or everything,
                // one way.
                let checks: [(&str, Option<f64>, bool, &str); 7] = [
                    (
                        "deployment.weight",
                        Some(d.weight),
                        false,
                        "a finite share, 0 or more",
                    ),
                    (
                        "deployment.usd_per_mtok",
                        d.usd_per_mtok,
                        false,
                        "a finite price, 0 or more",
                    ),
                    (
                        "deployment.input_usd_per_mtok",
                        d.input_usd_per_mtok,
                        false,
                        "a finite price, 0 or more",
                    ),
                    (
                        "deployment.cached_input_usd_per_mtok",
                        d.cached_input_usd_per_mtok,
                        false,
                        "a finite price, 0 or more",
                    ),
                    (
                        "deployment.ttft_ms",
                        d.ttft_ms,
                        true,
                        "a finite time above 0",
                    ),
                    (
                        "deployment.tpot_ms",
                        d.tpot_ms,
                        true,
                        "a finite time above 0",
                    ),
                    (
                        "deployment.capacity",
                        d.capacity,
                        true,
                        "a finite count above 0",
                    ),
                ];
                for (field, v, positive, says) in checks {
                    if v.is_some_and(|v| !(v.is_finite() && v >= 0.0 && (!positive || v > 0.0))) {
                        return Err(err(field, format!("must be {says}")));
                    }
                }
                // A dollar a token is past any price; beyond it sums of spending overflow.
                for (field, v) in [
                    ("deployment.usd_per_mtok", d.usd_per_mtok),
                    ("deployment.input_usd_per_mtok", d.input_usd_per_mtok),
                    (
                        "deployment.cached_input_usd_per_mtok",
                        d.cached_input_usd_per_mtok,
                    ),
                ] {
                    if v.is_some_and(|v| v > MAX_USD_PER_MTOK) {
                        return Err(err(
                            field,
                            "must be at most 1000000 (a dollar a token)".into(),
                        ));
                    }
                }
                // Cached prompt tokens are the input's, found cached: priced apart from it,
                // never above it.
                match (d.cached_input_usd_per_mtok, d.input_usd_per_mtok) {
                    (Some(_), None) => {
                        return Err(err(
                            "deployment.cached_input_usd_per_mtok",
                            "prices cached prompt tokens apart from the others: give input_usd_per_mtok too".into(),
                        ))
                    }
                    (Some(c), Some(i)) if c > i => {
                        return Err(err(
                            "deployment.cached_input_usd_per_mtok",
                            format!("must be at most input_usd_per_mtok ({i}): a prompt found cached costs no more than one prefilled"),
                        ))
                    }
                    _ => {}
                }
                if d.max_context == Some(0) {
                    return Err(err(
                        "deployment.max_context",
                        "must be at least 1 token".into(),
                    ));
                }
                // An empty name would be sent to the provider, or name no class.
                if d.upstream_model
                    .as_deref()
                    .is_some_and(|m| m.trim().is_empty())
                {
                    return Err(err(
                        "deployment.upstream_model",
                        "is empty; leave it out to send the public name".into(),
                    ));
                }
                if d.classes.iter().any(|c| c.trim().is_empty()) {
                    return Err(err("deployment.classes", "a class name is empty".into()));
                }
                // Left out, every class; written empty, it would read as none and take every one.
                if d.classes.is_empty()
                    && switchyard_catalog::key_offset(text, ds.span(), "classes").is_some()
                {
                    return Err(err(
                        "deployment.classes",
                        "is empty, which would take every class; leave it out for every class"
                            .into(),
                    ));
                }
            }
            if s.policy == Policy::Weighted
                && s.deployments.iter().all(|d| d.get_ref().weight == 0.0)
            {
                return Err(err(
                    "deployment.weight",
                    "under the weighted policy every deployment has a weight of 0, so none would be sent a request".into(),
                ));
            }
        }
        if c.models.is_empty() {
            return Err(GatewayError::Config(format!(
                "{origin}: no [[model]]: clients would have nothing to ask for"
            )));
        }
        // The top-level tables keep no span: the line that sets the key stands for them.
        let top = |field: &str, message: &str| o.error(0..text.len(), field, message.into());
        if c.retries.max_attempts == 0 {
            return Err(top("retries.max_attempts", "must be at least 1"));
        }
        if c.health.eject_after == 0 {
            return Err(top(
                "health.eject_after",
                "must be at least 1 consecutive failure",
            ));
        }
        let r = c.retries;
        for (field, v) in [
            ("retries.budget_ratio", r.budget_ratio),
            ("retries.min_per_s", r.min_per_s),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(top(field, "must be a finite number, 0 or more"));
            }
        }
        if !(c.health.cooldown_s.is_finite() && c.health.cooldown_s >= 0.0) {
            return Err(top(
                "health.cooldown_s",
                "must be a finite number of seconds, 0 or more",
            ));
        }
        let t = c.timeouts;
        for (field, v) in [
            ("timeouts.connect_ms", t.connect_ms),
            ("timeouts.first_token_ms", t.first_token_ms),
            ("timeouts.stall_ms", t.stall_ms),
            ("timeouts.total_ms", t.total_ms),
            ("timeouts.attempt_ms", t.attempt_ms.unwrap_or(1)),
            ("timeouts.body_ms", t.body_ms),
            ("timeouts.header_ms", t.header_ms),
        ] {
            if v == 0 {
                return Err(top(
                    field,
                    "must be at least 1 ms: at 0 every request times out",
                ));
            }
        }
        if t.attempt_ms.is_some_and(|a| a > t.total_ms) {
            return Err(top(
                "timeouts.attempt_ms",
                "must be at most `total_ms`, which would end the request first",
            ));
        }
        // Unset, the first token's limit is the default or the whole request's, whichever
        // is shorter: `total_ms = 2000` alone is no contradiction of the user's.
        if t.first_token_ms > t.total_ms
            && switchyard_catalog::key_offset(text, 0..text.len(), "first_token_ms").is_none()
        {
            c.timeouts.first_token_ms = t.total_ms;
        }
        let t = c.timeouts;
        if t.first_token_ms > t.total_ms {
            return Err(top(
                "timeouts.first_token_ms",
                "must be at most `total_ms`, which would end the request first",
            ));
        }
        // A listening address is `host:port`; caught here, it names its line, not only the
        // failure to bind.
        let listen = &c.server.listen;
        let port_ok = listen
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(top(
                "server.listen",
                &format!("`{listen}` is not `host:port` with a port from 0 to 65535"),
            ));
        }
        if c.server.max_body_bytes < 1024 {
            return Err(top(
                "server.max_body_bytes",
                "must be at least 1024: smaller, no chat request fits",
            ));
        }
        Ok(c)
    }

    /// The built-in configuration.
    ///
    /// # Errors
    /// Never in a released build; the built-in text is tested.
    pub fn builtin() -> Result<Self, GatewayError> {
        Config::parse(DEFAULT_CONFIG, "built-in gateway configuration")
    }
}
