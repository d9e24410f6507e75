//! Cost of one model evaluation: the simulator asks for a decode step every engine step, so
//! it must stay far under 10 µs. Run with `cargo bench -p switchyard-perf`.

use switchyard_perf::{Catalog, Deployment, Layout, Params, Precision};

fn main() {
    divan::main();
}

/// Times `f` on a deployment of `model` on `system` with `layout` and `precision`.
fn bench_on(
    bencher: divan::Bencher<'_, '_>,
    model: &str,
    system: &str,
    layout: Layout,
    precision: Precision,
    f: impl Fn(&Deployment<'_>, &Params) -> f64 + Sync,
) {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let d = Deployment::new(
        cat.model(model).expect("model"),
        cat.system(system).expect("system"),
        layout,
        precision,
    )
    .expect("deployment");
    bencher.bench(|| f(&d, &p));
}

/// Times one decode step of Llama 3.1 70B on `system` with `layout` at `precision`, for a
/// batch of `batch` at 1,500 tokens of context.
fn decode_step_of(
    bencher: divan::Bencher<'_, '_>,
    system: &str,
    layout: Layout,
    precision: Precision,
    batch: f64,
) {
    bench_on(
        bencher,
        "llama-3.1-70b",
        system,
        layout,
        precision,
        |d, p| {
            d.decode_step(p, divan::black_box(batch), divan::black_box(1500.0))
                .time
        },
    );
}

/// One decode-step time for 70B on an 8-GPU node (the simulator's hot call); the
/// baseline for the other figures.
#[divan::bench]
fn decode_step_h100(bencher: divan::Bencher<'_, '_>) {
    decode_step_of(
        bencher,
        "h100-sxm",
        Layout::replica(8, 1),
        Precision::Fp8,
        64.0,
    );
}

/// One decode-step time on a pipeline of four CS-3 wafers.
#[divan::bench]
fn decode_step_cs3(bencher: divan::Bencher<'_, '_>) {
    decode_step_of(bencher, "cs3", Layout::replica(1, 4), Precision::Bf16, 4.0);
}

/// One decode-step time on a SambaNova rack (the RDU physics, including its memory fit for
/// the capacity tier).
#[divan::bench]
fn decode_step_sn40l(bencher: divan::Bencher<'_, '_>) {
    decode_step_of(
        bencher,
        "sn40l",
        Layout::replica(16, 1),
        Precision::Bf16,
        4.0,
    );
}

/// A full operating point (TTFT, TPOT, throughput) at a concurrency: one estimate.
#[divan::bench]
fn operating_point_moe(bencher: divan::Bencher<'_, '_>) {
    bench_on(
        bencher,
        "deepseek-r1",
        "b200",
        Layout::replica(8, 1),
        Precision::Fp8,
        |d, p| {
            d.at_concurrency(p, divan::black_box(128.0), 1024.0, 1024.0)
                .throughput_tok_s
        },
    );
}
