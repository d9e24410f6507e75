//! The gateway: one OpenAI-compatible front door over every provider.
//!
//! Clients speak the OpenAI API; the gateway maps each public model to deployments on
//! providers (any OpenAI-compatible server, or an emulated provider that runs the
//! simulator's replica engine on the wall clock), picks one with the shared router library,
//! and falls back to the next on connection errors, 429, 5xx and first-token timeouts before
//! the first byte reaches the client. Once a stream has started, an upstream failure ends it
//! with an error event the client can see.
//!
//! Only this crate knows HTTP; it prints nothing (logs go through `tracing`).

pub mod api;
mod clock;
pub mod config;
pub mod emulated;
pub mod keys;
pub mod metrics;
mod proxy;
mod server;
mod spend;
pub mod sse;

pub use config::Config;
pub use server::serve;

use crate::config::Origin;
use emulated::{EmuPool, PrefillSpec};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard_perf::{best_deployment, Catalog, Objective, Params, PoolPrices, Query};
use switchyard_replica::{EngineConfig, Physics};
use switchyard_router::{Router, Target, UNSTATED_TPOT_S, UNSTATED_TTFT_S};

/// The most engines one emulated pool may run: each is a task with its own batch and KV
/// cache, and far more would exhaust memory before serving a request.
pub const MAX_ENGINES: u32 = 10_000;

/// Errors building or running the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The configuration is wrong; the message names the file, line and field.
    #[error("{0}")]
    Config(String),
    /// Listening or serving failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Where a deployment's requests go.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    /// An OpenAI-compatible server.
    OpenAi {
        /// `{base_url}/chat/completions` and `{base_url}/completions`, parsed once.
        chat_url: reqwest::Url,
        completions_url: reqwest::Url,
        api_key: Option<String>,
        /// Ask for a usage chunk on every stream (see `ProviderSection::stream_usage`).
        stream_usage: bool,
    },
    /// An emulated pool.
    Emulated(Arc<EmuPool>),
}

/// One deployment of a public model.
#[derive(Debug)]
pub(crate) struct Deployment {
    pub provider: String,
    pub upstream_model: String,
    pub backend: Backend,
    pub labels: metrics::Labels,
    pub prices: Prices,
    /// The longest request (prompt and output) the configuration lets it take, where it
    /// sets one: an emulated answer with no `max_tokens` stops there.
    pub max_context: Option<u32>,
}

/// What a deployment's tokens cost, in USD per million; `None` where no price is known.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prices {
    /// Of output tokens.
    pub output: Option<f64>,
    /// Of prompt tokens.
    pub input: Option<f64>,
    /// Of prompt tokens the provider found in its prefix cache.
    pub cached_input: Option<f64>,
}

impl Prices {
    /// Dollars for `input` prompt tokens, `cached` of them found in a prefix cache, and
    /// `output` output tokens.
    pub fn cost(&self, input: u64, cached: u64, output: u64) -> f64 {
        let cached = cached.min(input);
        let per = |n: u64, price: Option<f64>| n as f64 * price.unwrap_or(0.0);
        (per(input - cached, self.input)
            + per(cached, self.cached_input)
            + per(output, self.output))
            / 1e6
    }
}

/// A public model: its deployments and the router choosing among them.
#[derive(Debug)]
pub(crate) struct ModelRoute {
    pub name: String,
    pub router: Mutex<Router>,
    pub deployments: Vec<Deployment>,
}

impl ModelRoute {
    /// The router, locked. A panic elsewhere while it was held leaves counters that are
    /// still usable, so a poisoned lock is taken over rather than propagated.
    pub(crate) fn router(&self) -> std::sync::MutexGuard<'_, Router> {
        self.router
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A token bucket for retries: each original request adds `ratio` tokens, time adds
/// `min_per_s` per second, a retry takes one; the bucket holds at most ten seconds' worth.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    tokens: f64,
    last: Instant,
    ratio: f64,
    min_per_s: f64,
    cap: f64,
}

impl RetryBudget {
    fn new(ratio: f64, min_per_s: f64) -> Self {
        let cap = (min_per_s * 10.0).max(1.0);
        RetryBudget {
            tokens: cap,
            last: Instant::now(),
            ratio,
            min_per_s,
            cap,
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        // Time refills up to the cap; deposits above it (a busy gateway) are kept.
        if self.tokens < self.cap {
            self.tokens = (self.tokens + dt * self.min_per_s).min(self.cap);
        }
    }

    pub(crate) fn deposit(&mut self) {
        self.refill();
        self.tokens = (self.tokens + self.ratio).min(self.cap + self.ratio * 1000.0);
    }

    pub(crate) fn withdraw(&mut self) -> bool {
        self.refill();
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The running gateway's state.
#[derive(Debug)]
pub struct Gateway {
    pub(crate) models: BTreeMap<String, ModelRoute>,
    pub(crate) keys: keys::Keys,
    pub(crate) client: reqwest::Client,
    pub(crate) timeouts: config::Timeouts,
    pub(crate) max_attempts: u32,
    pub(crate) budget: Mutex<RetryBudget>,
    pub(crate) max_body: usize,
    pub(crate) started: Instant,
    pub(crate) created_unix: u64,
    pub(crate) listen: String,
    /// The longest a client is told to wait when every deployment failed: the health
    /// cooldown after which an ejected deployment is tried again.
    pub(crate) retry_after_s: u64,
    /// Requests answered, which numbers each answer's `x-request-id`.
    pub(crate) answered: std::sync::atomic::AtomicU64,
    /// Drawn at start from the clock, so that two runs of the gateway name no two answers
    /// alike.
    pub(crate) id_salt: u64,
    /// Where what is left of the keys' dollars is kept across restarts, if anywhere.
    pub(crate) spend: Option<spend::SpendFile>,
}

/// A seed from the clock, different on every start: nanoseconds since the Unix epoch.
pub(crate) fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x5EED, |d| d.as_nanos() as u64)
}

/// The client keys of `config`, their secrets read from the environment.
fn client_keys(
    config: &Config,
    o: &Origin<'_>,
    models: &BTreeMap<String, ModelRoute>,
) -> Result<keys::Keys, GatewayError> {
    let mut out = keys::Keys::default();
    let mut names = std::collections::BTreeSet::new();
    let mut secrets = std::collections::BTreeSet::new();
    for ks in &config.keys {
        let k = ks.get_ref();
        let err =
            |field: &str, m: String| o.error(ks.span(), field, format!("key `{}`: {m}", k.name));
        if k.name.trim().is_empty() {
            return Err(err(
                "name",
                "is empty; errors and metrics name the key by it".into(),
            ));
        }
        if !names.insert(k.name.clone()) {
            return Err(err("name", "two keys have this name".into()));
        }
        let secret = match std::env::var(&k.key_env) {
            Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
            // An empty secret would let a request with an empty bearer token in.
            Ok(_) => {
                return Err(err(
                    "key_env",
                    format!(
                        "the environment variable `{}` is set but empty: give it the key's secret",
                        k.key_env
                    ),
                ))
            }
            Err(_) => {
                return Err(err(
                    "key_env",
                    format!("the environment variable `{}` is not set", k.key_env),
                ))
            }
        };
        if !secrets.insert(secret.clone()) {
            return Err(err("key_env", "another key has the same secret".into()));
        }
        // Left out, every model; written empty, it would read as none and admit every one.
        if k.models.is_empty()
            && switchyard_catalog::key_offset(o.text, ks.span(), "models").is_some()
        {
            return Err(err(
                "models",
                "is empty, which would admit every model; leave it out for every model".into(),
            ));
        }
        if let Some(m) = k.models.iter().find(|m| !models.contains_key(*m)) {
            return Err(err("models", format!("no [[model]] named `{m}`")));
        }
        for (field, v) in [
            ("requests_per_minute", k.requests_per_minute),
            ("tokens_per_minute", k.tokens_per_minute),
        ] {
            if v.is_some_and(|r| !(r >= 1.0 && r.is_finite())) {
                return Err(err(field, "must be a finite number of at least 1".into()));
            }
        }
        // Below a cent a day, a request's debt takes years to repay.
        if k.usd_per_day.is_some_and(|r| !((0.01..=1e12).contains(&r))) {
            return Err(err(
                "usd_per_day",
                "must be from 0.01 to 1000000000000 dollars".into(),
            ));
        }
        // A key with dollars to spend is charged at every deployment it may reach: one with
        // no price would serve it for nothing, unseen.
        if k.usd_per_day.is_some() {
            let unpriced = models
                .values()
                .filter(|m| k.models.is_empty() || k.models.contains(&m.name))
                .flat_map(|m| m.deployments.iter().map(move |d| (m, d)))
                .find(|(_, d)| d.prices.output.is_none());
            if let Some((m, d)) = unpriced {
                return Err(err(
                    "usd_per_day",
                    format!(
                        "the deployment of model `{}` on provider `{}` has no output price to charge it: give that deployment `usd_per_mtok` (an emulated one with no price of its own takes its pool's cost, where the catalog prices its system), or give the key `models` that leave it out",
                        m.name, d.provider
                    ),
                ));
            }
        }
        out.insert(
            secret,
            keys::Key::new(
                &k.name,
                k.models.iter().cloned().collect(),
                keys::Allowance {
                    requests_per_minute: k.requests_per_minute,
                    tokens_per_minute: k.tokens_per_minute,
                    usd_per_day: k.usd_per_day,
                },
            ),
        );
    }
    Ok(out)
}

impl Gateway {
    /// Builds the gateway from a parsed configuration. Emulated providers start their replica
    /// tasks, so this must run inside a tokio runtime. `text` and `origin` are the
    /// configuration's text and file name, for errors.
    ///
    /// # Errors
    /// [`GatewayError::Config`] for an emulated model or system the catalog does not know,
    /// a model that does not fit, or an API key variable that is not set.
    pub fn new(
        config: &Config,
        text: &str,
        origin: &str,
        catalog: &'static Catalog,
        params: &'static Params,
    ) -> Result<Arc<Self>, GatewayError> {
        let o = Origin { text, name: origin };
        // Deployments resolve their metric handles against the installed recorder.
        let _ = metrics::handle();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.timeouts.connect_ms))
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1024)
            .build()
            .map_err(|e| GatewayError::Config(format!("HTTP client: {e}")))?;
        // One emulated pool per provider and model, with what the router expects of it and
        // its own prices.
        type Pool = (Arc<EmuPool>, Target, Option<PoolPrices>);
        let mut pools: BTreeMap<(String, String), Pool> = BTreeMap::new();
        let mut models = BTreeMap::new();
        for m in &config.models {
            let ms = m.get_ref();
            let mut deployments = Vec::new();
            let mut targets = Vec::new();
            for ds in &ms.deployments {
                let d = ds.get_ref();
                let Some(ps) = config
                    .providers
                    .iter()
                    .find(|p| p.get_ref().name == d.provider)
                else {
                    return Err(o.error(
                        ds.span(),
                        "deployment.provider",
                        format!("no provider named `{}`", d.provider),
                    ));
                };
                let p = ps.get_ref();
                let upstream = d.upstream_model.clone().unwrap_or_else(|| ms.name.clone());
                let mut target = Target {
                    name: p.name.clone(),
                    weight: d.weight,
                    // A deployment with no price ranks last under the cost policy.
                    usd_per_mtok: d.usd_per_mtok.unwrap_or(f64::INFINITY),
                    input_usd_per_mtok: d.input_usd_per_mtok.unwrap_or(0.0),
                    priority: d.priority,
                    classes: d.classes.clone(),
                    // Unstated, a typical cloud's until observed: a zero would draw every
                    // request, however loaded the deployment.
                    ttft_s: d.ttft_ms.map_or(UNSTATED_TTFT_S, |ms| ms / 1000.0),
                    tpot_s: d.tpot_ms.map_or(UNSTATED_TPOT_S, |ms| ms / 1000.0),
                    tpot_full_s: 0.0,
                    disaggregated: false,
                    capacity: d.capacity.unwrap_or(64.0),
                    max_context: d.max_context,
                    // An outside provider's prefill rate is not known: its queue is counted
                    // in requests.
                    prefill_tok_s: 0.0,
                    ttft_prompt_tokens: 0.0,
                };
                let mut prices = Prices {
                    output: d.usd_per_mtok,
                    input: d.input_usd_per_mtok,
                    cached_input: d.cached_input_usd_per_mtok.or(d.input_usd_per_mtok),
                };
                let backend = match p.kind.as_str() {
                    "openai" => {
                        let api_key = match &p.api_key_env {
                            Some(var) => Some(
                                std::env::var(var)
                                    .ok()
                                    .filter(|k| !k.trim().is_empty())
                                    .ok_or_else(|| {
                                        o.error(ps.span(), "api_key_env", format!("provider `{}`: the environment variable `{var}` is not set, or empty", p.name))
                                    })?,
                            ),
                            None => None,
                        };
                        let base = p.base_url.clone().unwrap_or_default();
                        // The endpoint's path goes before a query the URL carries (Azure's
                        // `?api-version=...`), not into it.
                        let (base, query) = base
                            .split_once('?')
                            .map_or((base.as_str(), None), |(b, q)| (b, Some(q)));
                        let base = base.trim_end_matches('/');
                        let url = |path: &str| {
                            let full = match query {
                                Some(q) => format!("{base}{path}?{q}"),
                                None => format!("{base}{path}"),
                            };
                            reqwest::Url::parse(&full).map_err(|e| {
                                o.error(
                                    ps.span(),
                                    "base_url",
                                    format!("provider `{}`: {e}", p.name),
                                )
                            })
                        };
                        Backend::OpenAi {
                            chat_url: url(api::Endpoint::Chat.path())?,
                            completions_url: url(api::Endpoint::Completions.path())?,
                            api_key,
                            stream_usage: p.stream_usage,
                        }
                    }
                    _ => {
                        let key = (p.name.clone(), upstream.clone());
                        // One pool per provider and model, its prediction shared by every
                        // deployment on it; a deployment's own figures come first.
                        if !pools.contains_key(&key) {
                            let err = |f: &str, e: String| {
                                o.error(ps.span(), f, format!("provider `{}`: {e}", p.name))
                            };
                            let model = catalog.model(&upstream).map_err(|e| {
                                o.error(ds.span(), "deployment.upstream_model", e.to_string())
                            })?;
                            let system = catalog
                                .system(p.system.as_deref().unwrap_or_default())
                                .map_err(|e| err("system", e.to_string()))?;
                            let (isl, osl) =
                                (f64::from(params.default_isl), f64::from(params.default_osl));
                            // One replica's split, where the provider gives it.
                            let layout = p
                                .layout
                                .as_deref()
                                .map(|l| switchyard_perf::Layout::one_replica(l, "replicas"))
                                .transpose()
                                .map_err(|e| err("layout", e))?;
                            let q = Query {
                                chips: p.chips,
                                layout,
                                ..Query::new(model, system, isl, osl)
                            };
                            // The layout or chips asked for, where they are what fails.
                            let at_fault = if p.layout.is_some() {
                                "layout"
                            } else if p.chips.is_some() {
                                "chips"
                            } else {
                                "system"
                            };
                            let mut dep = best_deployment(&q, params, Objective::Throughput)
                                .map_err(|e| err(at_fault, e.to_string()))?;
                            // A server's chips that the best layout splits into several
                            // model replicas (a small model on an 8-GPU server) run as that many
                            // engines, so that none of them sits idle, as `simulate` runs them.
                            // Without `chips`, each replica is one model replica of the best
                            // layout.
                            let engines = if p.chips.is_some() {
                                u64::from(p.replicas) * u64::from(dep.layout.dp)
                            } else {
                                u64::from(p.replicas)
                            };
                            if engines > u64::from(MAX_ENGINES) {
                                return Err(err(
                                    if dep.layout.dp > 1 { "chips" } else { "replicas" },
                                    format!(
                                        "{engines} engines of {upstream} ({} replicas, each of {}), more than the {MAX_ENGINES} an emulated pool may run",
                                        p.replicas,
                                        dep.layout
                                    ),
                                ));
                            }
                            let engines = engines as u32;
                            dep.layout.dp = 1;
                            let engine = EngineConfig::for_deployment(&dep, params);
                            let disaggregated = p.prefill_replicas.is_some();
                            let priors = dep.router_priors(params, isl, osl, None, disaggregated);
                            let predicted = Target {
                                ttft_s: priors.ttft_s,
                                tpot_s: priors.tpot_s,
                                tpot_full_s: priors.tpot_full_s,
                                capacity: priors.concurrency * f64::from(engines),
                                prefill_tok_s: priors.prefill_tok_s * f64::from(engines),
                                ttft_prompt_tokens: isl,
                                max_context: Some(engine.longest_request()),
                                disaggregated,
                                ..target.clone()
                            };
                            let prefill = match p.prefill_replicas {
                                None => None,
                                Some(n) => {
                                    let mut pd = dep
                                        .prefill_partner(params, p.prefill_chips, None, (isl, osl))
                                        .map_err(|e| err("prefill_chips", e.to_string()))?;
                                    // Prefill chips the layout splits run as several replicas.
                                    let split = u64::from(n) * u64::from(pd.layout.dp);
                                    if split > u64::from(MAX_ENGINES) {
                                        return Err(err(
                                            "prefill_chips",
                                            format!(
                                                "{split} prefill engines of {upstream} ({n} replicas, each of {}), more than the {MAX_ENGINES} an emulated pool may run",
                                                pd.layout
                                            ),
                                        ));
                                    }
                                    let n = split as u32;
                                    pd.layout.dp = 1;
                                    let chips =
                                        n.saturating_mul(pd.layout.replica_chips()).saturating_add(
                                            engines.saturating_mul(dep.layout.replica_chips()),
                                        );
                                    Some(PrefillSpec {
                                        config: EngineConfig::for_deployment(&pd, params),
                                        physics: Physics {
                                            deployment: pd,
                                            params,
                                        },
                                        replicas: n,
                                        same_domain: chips <= system.scale_up(),
                                    })
                                }
                            };
                            let mut predicted = predicted;
                            if let Some(spec) = &prefill {
                                // A request must fit where its prompt runs and where it decodes.
                                predicted.max_context = predicted
                                    .max_context
                                    .map(|m| m.min(spec.config.longest_request()));
                                // Its first token comes from a prefill pass, and the rest from
                                // decode steps that carry no prompts.
                                let pd = &spec.physics.deployment;
                                (predicted.ttft_s, predicted.prefill_tok_s) = pd
                                    .prefill_pool_priors(
                                        params,
                                        isl,
                                        spec.replicas,
                                        spec.same_domain,
                                    );
                            }
                            // The pool's own cost, where its system has a price: what the
                            // simulator's cost policy ranks the same pool by.
                            let own = dep.pool_prices(
                                params,
                                (isl, osl),
                                None,
                                engines,
                                prefill
                                    .as_ref()
                                    .map(|spec| (&spec.physics.deployment, spec.replicas)),
                            );
                            predicted.usd_per_mtok = own.map_or(f64::INFINITY, |x| x.usd_per_mtok);
                            let pool = EmuPool::start(
                                Physics {
                                    deployment: dep,
                                    params,
                                },
                                engine,
                                engines,
                                p.faults,
                                prefill,
                                p.prefix_caching,
                            );
                            pools.insert(key.clone(), (pool, predicted, own));
                        }
                        let (pool, predicted, own) = &pools[&key];
                        target.ttft_s = d.ttft_ms.map_or(predicted.ttft_s, |v| v / 1000.0);
                        target.tpot_s = d.tpot_ms.map_or(predicted.tpot_s, |v| v / 1000.0);
                        // A stated TPOT keeps the model's ratio of full to idle.
                        target.tpot_full_s = predicted.tpot_full_s * target.tpot_s
                            / predicted.tpot_s.max(f64::MIN_POSITIVE);
                        target.disaggregated = predicted.disaggregated;
                        target.capacity = d.capacity.unwrap_or(predicted.capacity);
                        target.max_context = d.max_context.or(predicted.max_context);
                        target.prefill_tok_s = predicted.prefill_tok_s;
                        target.ttft_prompt_tokens = predicted.ttft_prompt_tokens;
                        // Unpriced, the pool's own cost: its prompts' share of it by the
                        // prompt token, the rest by the output token, and nothing for what
                        // the engine finds cached and does no work for.
                        if d.usd_per_mtok.is_none() {
                            target.usd_per_mtok = predicted.usd_per_mtok;
                        }
                        if let (None, None, Some(own)) =
                            (d.usd_per_mtok, d.input_usd_per_mtok, *own)
                        {
                            prices = Prices {
                                output: Some(own.output_usd_per_mtok),
                                input: Some(own.input_usd_per_mtok),
                                cached_input: d.cached_input_usd_per_mtok.or(Some(0.0)),
                            };
                        }
                        Backend::Emulated(Arc::clone(pool))
                    }
                };
                deployments.push(Deployment {
                    provider: p.name.clone(),
                    upstream_model: upstream,
                    backend,
                    labels: metrics::Labels::new(
                        &ms.name,
                        &p.name,
                        prices.output.is_some() || prices.input.is_some(),
                    ),
                    prices,
                    max_context: d.max_context,
                });
                targets.push(target);
            }
            models.insert(
                ms.name.clone(),
                ModelRoute {
                    name: ms.name.clone(),
                    router: Mutex::new(Router::new(ms.policy, targets, config.health, 0)),
                    deployments,
                },
            );
        }
        let keys = client_keys(config, &o, &models)?;
        let spend = match &config.server.spend_file {
            None => None,
            Some(_) if !config.keys.iter().any(|k| k.get_ref().usd_per_day.is_some()) => {
                return Err(o.error(
                    0..text.len(),
                    "spend_file",
                    "no [[key]] has `usd_per_day`, so the file would keep nothing: give a key dollars a day, or leave the file out".into(),
                ))
            }
            Some(path) if path.trim().is_empty() => {
                return Err(o.error(
                    0..text.len(),
                    "spend_file",
                    "is empty: name a file, or leave the field out".into(),
                ))
            }
            Some(path) => {
                // Relative to the configuration's own file, as a service manager's working
                // directory is no place to look.
                let file = std::path::Path::new(origin);
                let path = match file.parent() {
                    Some(dir) if file.is_file() && std::path::Path::new(path).is_relative() => {
                        dir.join(path)
                    }
                    _ => std::path::PathBuf::from(path),
                };
                let f = spend::SpendFile::open(&path, &keys)
                    .map_err(|m| o.error(0..text.len(), "spend_file", m))?;
                // Written at once, so that a file that cannot be is found at start rather
                // than after a day of spending.
                f.save(&keys, spend::Save::Now).map_err(|e| {
                    o.error(
                        0..text.len(),
                        "spend_file",
                        format!(
                            "{}: cannot be written (it is replaced through a file beside it, so its directory must be writable): {e}",
                            f.path().display()
                        ),
                    )
                })?;
                Some(f)
            }
        };
        Ok(Arc::new(Gateway {
            models,
            keys,
            client,
            timeouts: config.timeouts,
            max_attempts: config.retries.max_attempts,
            budget: Mutex::new(RetryBudget::new(
                config.retries.budget_ratio,
                config.retries.min_per_s,
            )),
            max_body: config.server.max_body_bytes,
            started: Instant::now(),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            listen: config.server.listen.clone(),
            retry_after_s: config.health.cooldown_s.ceil().clamp(1.0, 3600.0) as u64,
            answered: std::sync::atomic::AtomicU64::new(0),
            id_salt: switchyard_router::splitmix64(&mut clock_seed()),
            spend,
        }))
    }

    /// Writes what is left of every key's dollars to the configuration's `spend_file` a
    /// last time, as the server does when it stops, before the process ends: no save starts
    /// after it. Nothing without the file. Returns whether it wrote.
    ///
    /// # Errors
    /// The file could not be written.
    pub fn save_spend(&self) -> std::io::Result<bool> {
        match &self.spend {
            Some(f) => f.save(&self.keys, spend::Save::Last),
            None => Ok(false),
        }
    }

    /// Whether requests must present a client key.
    pub fn requires_keys(&self) -> bool {
        self.keys.enabled()
    }

    /// The address the configuration asks to listen on.
    pub fn listen_addr(&self) -> &str {
        &self.listen
    }

    /// Public model names.
    pub fn model_names(&self) -> Vec<String> {
        self.models.keys().cloned().collect()
    }

    pub(crate) fn now_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}
