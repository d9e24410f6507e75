//! Every metric the gateway exports, named in one place.
//!
//! Latency names follow the OpenTelemetry semantic conventions for generative AI
//! (<https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-metrics/>), written the
//! Prometheus way (dots as underscores, unit suffix); the rest are the gateway's own and carry
//! the `switchyard_` prefix. Labels: `model` (the public name) and `provider`.

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Time to first token, seconds (`gen_ai.server.time_to_first_token`).
pub const TTFT: &str = "gen_ai_server_time_to_first_token_seconds";
/// Time per output token after the first, seconds (`gen_ai.server.time_per_output_token`).
pub const TPOT: &str = "gen_ai_server_time_per_output_token_seconds";
/// Whole request duration, seconds (`gen_ai.server.request.duration`).
pub const DURATION: &str = "gen_ai_server_request_duration_seconds";
/// Requests answered, by `outcome` (`ok`, `client_error`, `failed`).
pub const REQUESTS: &str = "switchyard_requests_total";
/// Attempts on a deployment that failed (connect error, 429, 5xx, timeout, broken stream).
pub const ERRORS: &str = "switchyard_upstream_errors_total";
/// Requests in flight per deployment.
pub const IN_FLIGHT: &str = "switchyard_in_flight_requests";
/// Retries on another deployment after a failure.
pub const FALLBACKS: &str = "switchyard_fallbacks_total";
/// Times a deployment was ejected by passive health checks.
pub const EJECTIONS: &str = "switchyard_ejections_total";
/// Tokens, by `type` (`input`, `output`), as `gen_ai.client.token.usage` counts them.
pub const TOKENS: &str = "switchyard_tokens_total";

/// Bucket bounds for time to first token and request duration: 5 ms to 2 minutes.
const LATENCY_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0,
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
            b.install_recorder().ok()
        })
        .as_ref()
}

/// Labels of one deployment.
#[derive(Debug, Clone)]
pub struct Labels {
    /// Public model name.
    pub model: String,
    /// Provider name.
    pub provider: String,
}

impl Labels {
    fn pairs(&self) -> [(&'static str, String); 2] {
        [
            ("model", self.model.clone()),
            ("provider", self.provider.clone()),
        ]
    }

    /// A request was sent to the deployment.
    pub fn started(&self) {
        gauge!(IN_FLIGHT, &self.pairs()).increment(1.0);
    }

    /// A request on the deployment ended (any way).
    pub fn ended(&self) {
        gauge!(IN_FLIGHT, &self.pairs()).decrement(1.0);
    }

    /// First token after `s` seconds.
    pub fn ttft(&self, s: f64) {
        histogram!(TTFT, &self.pairs()).record(s);
    }

    /// Time per output token.
    pub fn tpot(&self, s: f64) {
        histogram!(TPOT, &self.pairs()).record(s);
    }

    /// An attempt failed; `ejected` if that ejected the deployment.
    pub fn error(&self, ejected: bool) {
        counter!(ERRORS, &self.pairs()).increment(1);
        if ejected {
            counter!(EJECTIONS, &self.pairs()).increment(1);
        }
    }

    /// A request was retried elsewhere after failing here.
    pub fn fallback(&self) {
        counter!(FALLBACKS, &self.pairs()).increment(1);
    }

    /// A request finished with `outcome` after `s` seconds, with its token counts.
    pub fn finished(&self, outcome: &'static str, s: f64, input: u64, output: u64) {
        let [m, p] = self.pairs();
        histogram!(DURATION, &[m.clone(), p.clone()]).record(s);
        counter!(
            REQUESTS,
            &[m.clone(), p.clone(), ("outcome", outcome.to_string())]
        )
        .increment(1);
        counter!(
            TOKENS,
            &[m.clone(), p.clone(), ("type", "input".to_string())]
        )
        .increment(input);
        counter!(TOKENS, &[m, p, ("type", "output".to_string())]).increment(output);
    }
}

/// A request that no deployment answered.
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
