//! The performance model: how a model runs on a system.
//!
//! Given a [`Deployment`] (model, system, layout, precisions) the model answers how much memory
//! it needs, how long a prefill and a decode step take, and from those the time to first
//! token, per-user speed and throughput at a concurrency, energy per token and cost per
//! million tokens. It is the only source of timing in Switchyard: the simulator, the emulated
//! providers and the planner all call it.
//!
//! Three physics share one interface, chosen by [`SystemKind`]:
//! GPUs run kernels over HBM and tensor cores, each taking its stream plus its arithmetic,
//! and fabric collectives (`gpu`); wafer-scale engines are layer-serial over a 2-D core mesh
//! whose latency grows with mesh distance (`wafer`); SRAM chips and dataflow units pay a
//! per-layer latency across chips (`sram`).
//! The module is pure: no IO, no printing, no clocks.

pub mod calibrate;
mod deploy;
mod disagg;
mod estimate;
mod gpu;
mod params;
mod serve;
mod sram;
pub mod validate;
mod wafer;

pub use deploy::{
    unit_name, Bound, Deployment, Layout, Memory, Prompts, Speculative, Step, StepPart,
    KV_BLOCK_TOKENS,
};
pub use disagg::{disaggregated, DecodePool, Disaggregated, PrefillPool};
pub use estimate::{
    best_deployment, estimate, frontier, Estimate, Frontier, FrontierPoint, Objective, Query,
    MAX_CHIPS,
};
pub use gpu::matrix_scale;
pub use params::{Params, ParamsError};
pub use serve::{Arrivals, Batch, CostBasis, Economics, Operating, PoolPrices, RouterPriors};
pub use switchyard_catalog::{Catalog, Model, Precision, System, SystemKind};

/// Errors from building or estimating a deployment. Each message says what is wrong and
/// what would work.
#[derive(Debug, thiserror::Error)]
pub enum PerfError {
    /// A catalog lookup failed.
    #[error(transparent)]
    Catalog(#[from] switchyard_catalog::CatalogError),
    /// The layout cannot exist on this system.
    #[error("layout {layout} is impossible on {system}: {why}")]
    BadLayout {
        layout: String,
        system: String,
        why: String,
    },
    /// The model does not fit in the memory of the chips given.
    #[error("{deployment} does not fit: {why}; {needs}")]
    DoesNotFit {
        /// The model, precision, chips and system, e.g. `llama-3.1-70b at bf16 on 3 x cs3`.
        deployment: String,
        why: String,
        /// The fewest chips (wafers) that hold it; 0 when no count up to 65,536 does.
        min_chips: u32,
        /// What would fit, in words.
        needs: String,
    },
    /// The weights fit, but not the KV cache of one sequence of the lengths asked for.
    #[error("{deployment} holds the weights but not the KV cache of one sequence of {tokens} tokens (at most {longest} fit); {remedy}")]
    ContextTooLong {
        /// The model, precision, chips and system.
        deployment: String,
        /// Chips (wafers) tried.
        chips: u32,
        tokens: u64,
        longest: u64,
        remedy: String,
    },
    /// The system cannot run this precision at all.
    #[error("{system} has no {precision} support and no wider format to fall back to")]
    NoPrecision { system: String, precision: String },
    /// The KV cache's precision is one the system cannot store it in.
    #[error("{0}")]
    BadKvPrecision(String),
    /// An input value is out of range.
    #[error("{0}")]
    BadInput(String),
}
