//! Every metric the gateway exports, named in one place.
//!
//! Latency names follow the OpenTelemetry semantic conventions for generative AI
//! (<https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-metrics/>), written the
//! Prometheus way (dots as underscores, unit suffix); the rest are the gateway's own and carry
//! the `switchyard_` prefix. Labels: `model` (the public name) and `provider`.

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Time to first token, seconds (`gen_ai.server.time_to_first_token`), the deployment's
/// own: from the attempt it served, not the request's arrival, so that a fallback is not
/// charged the time a failed deployment took before it.
pub const TTFT: &str = "gen_ai_server_time_to_first_token_seconds";
/// Time per output token after the first, seconds (`gen_ai.server.time_per_output_token`).
pub const TPOT: &str = "gen_ai_server_time_per_output_token_seconds";
/// Whole request duration, seconds (`gen_ai.server.request.duration`), on the deployment
/// that ended it, from its own attempt.
pub const DURATION: &str = "gen_ai_server_request_duration_seconds";
/// Requests answered, by `outcome`: `ok`, `client_error`, `failed`, `timed_out` (the
/// request's `total_ms` ran out) and `cancelled` for
/// those a deployment took; `unauthorized`, `rate_limited` and `insufficient_quota` for those
/// a client key's check refused, and `rate_limited` too where every provider was over its
/// rate. `model` is `-`
/// for a request refused before its body was read.
pub const REQUESTS: &str = "switchyard_requests_total";
/// The `outcome` labels of [`REQUESTS`] for the requests a deployment took.
pub const OUTCOMES: [&str; 5] = ["ok", "client_error", "failed", "timed_out", "cancelled"];
/// Attempts on a deployment that failed (connect error, 429, 5xx, timeout, broken stream).
pub const ERRORS: &str = "switchyard_upstream_errors_total";
/// Requests in flight per deployment.
pub const IN_FLIGHT: &str = "switchyard_in_flight_requests";
/// Retries on another deployment after a failure.
pub const FALLBACKS: &str = "switchyard_fallbacks_total";
/// Times a deployment was ejected by passive health checks.
pub const EJECTIONS: &str = "switchyard_ejections_total";
/// Tokens, by `type` (`input`, `output`), as `gen_ai.client.token.usage` counts them, and
/// `cached`: the input tokens an emulated engine found in its prefix cache, or a provider's
/// usage says it did.
pub const TOKENS: &str = "switchyard_tokens_total";
/// Requests per client key, by `key` (its name) and `outcome`: `admitted` past the key's limits
/// once its body is read (it may still fail at a provider), `rate_limited`, over its rate
/// on arrival or its tokens once its body is read, or `insufficient_quota`, over its
/// dollars. A request refused for its body or its model counts in none.
pub const KEY_REQUESTS: &str = "switchyard_key_requests_total";
/// Tokens per client key, by `key` and `type` (`input`, `output`).
pub const KEY_TOKENS: &str = "switchyard_key_tokens_total";
/// Dollars spent per client key since the gateway started, by `key`: each request's tokens at
/// the prices of the deployment that served it. A gauge, as dollars are no whole count; it
/// only grows.
pub const KEY_SPEND: &str = "switchyard_key_spend_usd";
/// Dollars spent per deployment since the gateway started, at its prices; absent for a
/// deployment with no price.
pub const SPEND: &str = "switchyard_spend_usd";
/// The `model` label of requests for a model the gateway does not serve (or the key may not
/// use), whatever name they sent: one label, not one per name.
pub const UNKNOWN_MODEL: &str = "unknown";

/// Bucket bounds for time to first token and request duration: 5 ms to 10 minutes, the
/// default `total_ms` (a long answer's stream runs for minutes).
const LATENCY_BUCKETS: [f64; 18] = [
    0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0,
    300.0, 600.0,
];
/// Bucket bounds for time per output token: 0.5 ms (wafer-scale) to 1 s.
const TPOT_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 1.0,
];

/// The process-wide Prometheus recorder, installed on first use. `None` if another recorder
/// was installed first (metrics then go there).
pub fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let b = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(TTFT.into()), &LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(DURATION.into()), &LATENCY_BUCKETS)
                })
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(TPOT.into()), &TPOT_BUCKETS))
                .ok()?;
            let h = b.install_recorder().ok()?;
            describe();
            Some(h)
        })
        .as_ref()
}

/// The `# HELP` line of every metric, from the same words as the names' own docs.
fn describe() {
    describe_histogram!(
        TTFT,
        Unit::Seconds,
        "Time to first token, from the deployment's own attempt."
    );
    describe_histogram!(
        TPOT,
        Unit::Seconds,
        "Time per output token after the first."
    );
    describe_histogram!(
        DURATION,
        Unit::Seconds,
        "Whole request duration, from the deployment's own attempt."
    );
    describe_counter!(
        REQUESTS,
        "Requests answered, by outcome: ok, client_error, failed, timed_out, cancelled, unauthorized, rate_limited, insufficient_quota."
    );
    describe_counter!(
        ERRORS,
        "Attempts on a deployment that failed (connect error, 429, 5xx, timeout, broken stream)."
    );
    describe_gauge!(IN_FLIGHT, "Requests in flight per deployment.");
    describe_counter!(FALLBACKS, "Retries on another deployment after a failure.");
    describe_counter!(
        EJECTIONS,
        "Times a deployment was ejected by passive health checks."
    );
    describe_counter!(
        TOKENS,
        "Tokens, by type (input, output; cached: input found in a prefix cache)."
    );
    describe_counter!(
        KEY_REQUESTS,
        "Requests per client key, by outcome: admitted, rate_limited or insufficient_quota."
    );
    describe_counter!(
        KEY_TOKENS,
        "Tokens per client key, by type (input, output)."
    );
    describe_gauge!(
        KEY_SPEND,
        "Dollars spent per client key since the gateway started, at the serving deployments' prices."
    );
    describe_gauge!(
        SPEND,
        "Dollars spent per deployment since the gateway started, at its prices."
    );
}

/// The metrics of one deployment, resolved once so that a request pays no label
/// allocation or registry lookup.
#[derive(Debug, Clone)]
pub struct Labels {
    in_flight: Gauge,
    ttft: Histogram,
    tpot: Histogram,
    duration: Histogram,
    errors: Counter,
    ejections: Counter,
    fallbacks: Counter,
    outcomes: [(&'static str, Counter); OUTCOMES.len()],
    tokens_in: Counter,
    tokens_out: Counter,
    tokens_cached: Counter,
    /// None for a deployment with no price, whose spending is not known (not none).
    spent: Option<Gauge>,
}

impl Labels {
    /// The handles for (`model`, `provider`), a deployment with a price where `priced`.
    /// Install the recorder ([`handle`]) first.
    pub fn new(model: &str, provider: &str, priced: bool) -> Self {
        let l = [
            ("model", model.to_string()),
            ("provider", provider.to_string()),
        ];
        let with = |k: &'static str, v: &'static str| {
            let mut x = l.to_vec();
            x.push((k, v.to_string()));
            x
        };
        Labels {
            in_flight: gauge!(IN_FLIGHT, &l),
            ttft: histogram!(TTFT, &l),
            tpot: histogram!(TPOT, &l),
            duration: histogram!(DURATION, &l),
            errors: counter!(ERRORS, &l),
            ejections: counter!(EJECTIONS, &l),
            fallbacks: counter!(FALLBACKS, &l),
            outcomes: OUTCOMES.map(|o| (o, counter!(REQUESTS, &with("outcome", o)))),
            tokens_in: counter!(TOKENS, &with("type", "input")),
            tokens_out: counter!(TOKENS, &with("type", "output")),
            tokens_cached: counter!(TOKENS, &with("type", "cached")),
            spent: priced.then(|| gauge!(SPEND, &l)),
        }
    }

    /// A request was sent to the deployment.
    pub fn started(&self) {
        self.in_flight.increment(1.0);
    }

    /// A request on the deployment ended (any way).
    pub fn ended(&self) {
        self.in_flight.decrement(1.0);
    }

    /// First token after `s` seconds.
    pub fn ttft(&self, s: f64) {
        self.ttft.record(s);
    }

    /// Time per output token.
    pub fn tpot(&self, s: f64) {
        self.tpot.record(s);
    }

    /// Input tokens an engine found in its prefix cache for a request.
    pub fn cached(&self, tokens: impl Into<u64>) {
        self.tokens_cached.increment(tokens.into());
    }

    /// An attempt failed; `ejected` if that ejected the deployment.
    pub fn error(&self, ejected: bool) {
        self.errors.increment(1);
        if ejected {
            self.ejections.increment(1);
        }
    }

    /// A request was retried elsewhere after failing here.
    pub fn fallback(&self) {
        self.fallbacks.increment(1);
    }

    /// The tokens of a request cost `usd` at the deployment's prices.
    pub fn spent(&self, usd: f64) {
        if let (Some(g), true) = (&self.spent, usd > 0.0) {
            g.increment(usd);
        }
    }

    /// A request finished with `outcome` (`ok`, `client_error`, `failed`, `cancelled`) after
    /// `s` seconds, with its token counts.
    pub fn finished(&self, outcome: &'static str, s: f64, input: u64, output: u64) {
        self.duration.record(s);
        let counted = self.outcomes.iter().find(|(o, _)| *o == outcome);
        debug_assert!(counted.is_some(), "outcome `{outcome}` is not in OUTCOMES");
        if let Some((_, c)) = counted {
            c.increment(1);
        }
        self.tokens_in.increment(input);
        self.tokens_out.increment(output);
    }
}

/// The request counter of client key `key` for `outcome`.
pub fn key_requests(key: &str, outcome: &'static str) -> Counter {
    counter!(
        KEY_REQUESTS,
        &[("key", key.to_string()), ("outcome", outcome.to_string())]
    )
}

/// The token counter of client key `key` for `kind` (`input` or `output`).
pub fn key_tokens(key: &str, kind: &'static str) -> Counter {
    counter!(
        KEY_TOKENS,
        &[("key", key.to_string()), ("type", kind.to_string())]
    )
}

/// Counts a request answered without reaching a deployment.
pub fn unanswered(model: &str, outcome: &'static str) {
    counter!(
        REQUESTS,
        &[
            ("model", model.to_string()),
            ("provider", "none".to_string()),
            ("outcome", outcome.to_string())
        ]
    )
    .increment(1);
}

/// The spending gauge of client key `key`.
pub fn key_spend(key: &str) -> Gauge {
    gauge!(KEY_SPEND, &[("key", key.to_string())])
}
