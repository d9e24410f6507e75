//! The fleet simulator: replicas of the replica engine behind the shared router, driven by a
//! workload in virtual time, with outages, replica failures and slow-downs.
//!
//! Pure: it reads no files and prints nothing. The caller parses the scenario and trace
//! text with [`ScenarioFile::parse`] and [`parse_trace`], resolves it against the catalog,
//! runs [`simulate`] with a sink for per-request records, and renders the [`Summary`] as it
//! likes ([`report::html`] gives the HTML report). The same scenario and seed give the same
//! outputs, byte for byte.

mod fleet;
pub mod report;
mod rng;
mod scenario;
mod stats;
mod workload;

pub use fleet::{reason, simulate, Distributions, RunOptions};
pub use rng::Rng;
pub use scenario::{
    ArrivalSection, Class, ClassSection, Failure, FailureSection, LengthSection, MaxTokens,
    Overrides, PrefillPool, Provider, ProviderSection, RouterSection, Scenario, ScenarioFile,
    WorkloadSection,
};
pub use stats::{Bin, FailureCount, Group, Histogram, Little, Quantiles, Record, Summary};
/// The routing policies a scenario names, from the router the gateway shares.
pub use switchyard_router::Policy;
pub use workload::{
    parse_trace, Arrival, Arrivals, Lengths, TraceRow, Workload, WorkloadSpec, ARRIVAL,
    PREFIX_BLOCK_TOKENS,
};

/// Errors in a scenario or a trace. Each names the file, the line and the field.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The scenario file is malformed or refers to something that does not exist.
    #[error("{origin}: {message}")]
    Scenario {
        /// The file.
        origin: String,
        /// Where and what.
        message: String,
    },
    /// A value given on the command line in place of the scenario's is out of range: the
    /// flag is at fault, not a line of the file.
    #[error("{message}")]
    Override {
        /// The flag and what is wrong with its value.
        message: String,
    },
    /// A trace file is malformed.
    #[error("{origin}: line {line}: {message}")]
    Trace {
        /// The file.
        origin: String,
        /// 1-based line.
        line: usize,
        /// What is wrong, naming the field.
        message: String,
    },
}
