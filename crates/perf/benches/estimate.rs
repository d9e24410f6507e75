//! Cost of one model evaluation: the simulator asks for a decode step every engine step, so
//! it must stay far under 10 µs. Run with `cargo bench -p switchyard-perf`.

use switchyard_perf::{Catalog, Deployment, Layout, Params, Precision};

fn main() {
    divan::main();
}

/// One decode-step time for 70B on an 8-GPU node (the simulator's hot call); the
/// baseline for the other figures.
#[divan::bench]
fn decode_step_h100(bencher: divan::Bencher<'_, '_>) {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let d = Deployment::new(
        cat.model("llama-3.1-70b").expect("model"),
        cat.system("h100-sxm").expect("system"),
        Layout::replica(8, 1),
        Precision::Fp8,
    )
    .expect("deployment");
    bencher.bench(|| d.decode_step(&p, divan::black_box(64.0), divan::black_box(1500.0)));
}

/// One decode-step time on a pipeline of four CS-3 wafers.
#[divan::bench]
fn decode_step_cs3(bencher: divan::Bencher<'_, '_>) {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let d = Deployment::new(
        cat.model("llama-3.1-70b").expect("model"),
        cat.system("cs3").expect("system"),
        Layout::replica(1, 4),
        Precision::Bf16,
    )
    .expect("deployment");
    bencher.bench(|| d.decode_step(&p, divan::black_box(4.0), divan::black_box(1500.0)));
}

/// A full operating point (TTFT, TPOT, throughput) at a concurrency: one estimate.
#[divan::bench]
fn operating_point_moe(bencher: divan::Bencher<'_, '_>) {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let d = Deployment::new(
        cat.model("deepseek-r1").expect("model"),
        cat.system("b200").expect("system"),
        Layout::replica(8, 1),
        Precision::Fp8,
    )
    .expect("deployment");
    bencher.bench(|| d.at_concurrency(&p, divan::black_box(128.0), 1024.0, 1024.0));
}
