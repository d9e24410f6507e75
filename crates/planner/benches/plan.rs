//! Planning speed: the whole example scenario (three phases, the N-1 checks, and every
//! confirming simulation).
//!
//! Run: `cargo bench -p switchyard-planner --bench plan`

use switchyard_perf::{Catalog, Params};
use switchyard_planner::{plan, PlanFile, WhatIf};

fn main() {
    divan::main();
}

const EXAMPLE: &str = include_str!("../../../scenarios/plan-750mw.toml");

#[divan::bench(sample_count = 5, sample_size = 1)]
fn example_750mw() -> usize {
    let cat = Catalog::builtin().expect("catalog");
    let file = PlanFile::parse(EXAMPLE, "plan-750mw.toml").expect("scenario");
    let p = plan(
        &file,
        EXAMPLE,
        "plan-750mw.toml",
        &cat,
        &Params::default(),
        &WhatIf::default(),
    )
    .expect("plans");
    p.phases.len()
}
