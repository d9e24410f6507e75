//! Simulator speed, reported as simulated requests per second of wall time.
//!
//! `conv_trace_4xh100`: the whole one-hour Azure conversation trace (19,366 requests) on four
//! replicas of Llama 3.1 70B on 8×H100. `synthetic_10m_1000_replicas`: ten million Poisson
//! requests over 1,000 replicas in four providers (`scenarios/fleet-1000.toml`), run once.
//!
//! Run: `cargo bench -p switchyard-sim --bench simulate`

use switchyard_perf::{Catalog, Params};
use switchyard_sim::{parse_trace, simulate, Overrides, RunOptions, ScenarioFile};

fn main() {
    divan::main();
}

const TRACE: &str = include_str!("../../../traces/splitwise_conv.csv");

const CONV: &str = r#"
model = "llama-3.1-70b"
[[provider]]
name = "h100"
system = "h100-sxm"
chips = 8
replicas = 4
[workload]
trace = "splitwise_conv.csv"
"#;

const BIG: &str = include_str!("../../../scenarios/fleet-1000.toml");

fn run(text: &str, with_trace: bool, requests: Option<u64>) -> u64 {
    let cat = Catalog::builtin().expect("catalog");
    let params = Params::default();
    let file = ScenarioFile::parse(text, "bench").expect("scenario");
    let trace = with_trace.then(|| parse_trace(TRACE, "splitwise_conv.csv").expect("trace"));
    let over = Overrides {
        requests,
        ..Overrides::default()
    };
    let scn = file
        .resolve(text, "bench", &cat, &params, trace, &over)
        .expect("resolves");
    let (summary, _) = simulate(&scn, &params, RunOptions::default(), |_| {}, &mut |_| {});
    assert_eq!(summary.completed + summary.failed, summary.arrivals);
    summary.arrivals
}

#[divan::bench(sample_count = 10, sample_size = 1)]
fn conv_trace_4xh100(b: divan::Bencher<'_, '_>) {
    b.counter(divan::counter::ItemsCount::new(19_366usize))
        .bench(|| run(CONV, true, None));
}

#[divan::bench(sample_count = 1, sample_size = 1)]
fn synthetic_10m_1000_replicas(b: divan::Bencher<'_, '_>) {
    b.counter(divan::counter::ItemsCount::new(10_000_000usize))
        .bench(|| run(BIG, false, None));
}

#[divan::bench(sample_count = 3, sample_size = 1)]
fn synthetic_100k_1000_replicas(b: divan::Bencher<'_, '_>) {
    b.counter(divan::counter::ItemsCount::new(100_000usize))
        .bench(|| run(BIG, false, Some(100_000)));
}
