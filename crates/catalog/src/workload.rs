//! Workloads: published benchmark datasets described by what the physics needs, their mean
//! prompt and output lengths and the latency limits their server runs must hold.
//!
//! A published throughput means little without the lengths it was measured at. MLPerf
//! Inference results, for example, give tokens per second on a fixed dataset per model and
//! state neither length; the dataset's own statistics fill that gap, and its server
//! scenario's limits say where on the throughput-latency curve the result sits.

use serde::{Deserialize, Serialize};

/// The output-length spreads (standard deviation over mean) a workload, a query or a
/// planned class may state: 0 for outputs all alike, up to 10, well past any published
/// dataset's (MLPerf DeepSeek-R1's 1.11 is the widest in the catalog).
pub const OSL_CV_RANGE: std::ops::RangeInclusive<f64> = 0.0..=10.0;

/// One benchmark workload.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Identifier, e.g. `mlperf-llama2-70b`.
    pub id: String,
    /// The benchmark suite whose scenarios (`offline`, `server`, `interactive`) it belongs to.
    pub suite: String,
    /// The catalog model the benchmark runs.
    pub model: String,
    /// Mean prompt length of the dataset, in tokens of the model's tokenizer, where known.
    pub isl: Option<f64>,
    /// Mean output length, in tokens, where known.
    pub osl: Option<f64>,
    /// Spread of the output lengths: their standard deviation over their mean, where known.
    /// The sequences decoding at any moment are caught part-way through outputs that are
    /// the longer for being caught, so the spread sets their mean context.
    #[serde(default)]
    pub osl_cv: Option<f64>,
    /// The server scenario's limit on the 99th-percentile time to first token, in ms.
    pub server_ttft_ms: Option<f64>,
    /// The server scenario's limit on the 99th-percentile time per output token, in ms.
    pub server_tpot_ms: Option<f64>,
    /// The interactive scenario's limit on the 99th-percentile time to first token, in ms.
    pub interactive_ttft_ms: Option<f64>,
    /// The interactive scenario's limit on the 99th-percentile time per output token, in ms.
    pub interactive_tpot_ms: Option<f64>,
    /// Where each figure comes from.
    pub sources: Vec<String>,
    /// How the figures were obtained.
    #[serde(default)]
    pub notes: String,
}

impl Workload {
    pub(crate) fn check(&self) -> Result<(), String> {
        for (name, v) in [
            ("isl", self.isl),
            ("osl", self.osl),
            ("server_ttft_ms", self.server_ttft_ms),
            ("server_tpot_ms", self.server_tpot_ms),
            ("interactive_ttft_ms", self.interactive_ttft_ms),
            ("interactive_tpot_ms", self.interactive_tpot_ms),
        ] {
            if v.is_some_and(|v| !(v > 0.0 && v.is_finite())) {
                return Err(format!("field `{name}` must be a finite number above 0"));
            }
        }
        // Token counts as the command line takes them, up to a billion.
        for (name, v) in [("isl", self.isl), ("osl", self.osl)] {
            if v.is_some_and(|v| !(1.0..=1e9).contains(&v)) {
                return Err(format!(
                    "field `{name}` must be from 1 to 1,000,000,000 tokens"
                ));
            }
        }
        // Far beyond any dataset's; keeps every derived length finite.
        if self.osl_cv.is_some_and(|v| !OSL_CV_RANGE.contains(&v)) {
            return Err(format!(
                "field `osl_cv` must be a number from 0 to {}",
                OSL_CV_RANGE.end()
            ));
        }
        if self.suite.trim().is_empty() {
            return Err("field `suite` must not be empty".into());
        }
        crate::check_sources("sources", &self.sources)?;
        Ok(())
    }
}
