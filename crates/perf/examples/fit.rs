//! Refits the model's fitted parameters, each within the range its physics allows, to `reference/points.csv` by coordinate descent on
//! the mean of the per-group MAPEs, and prints the values to put in `Params::default`.
//! Run with `cargo run --release -p switchyard-perf --example fit`.

#![allow(clippy::print_stdout)]

use switchyard_perf::validate::{parse_points, run};
use switchyard_perf::{Catalog, Params};

type Knob = (&'static str, fn(&mut Params) -> &mut f64, f64, f64);

fn score(cat: &Catalog, p: &Params, rows: &[switchyard_perf::validate::Point]) -> (f64, f64) {
    let (_, s) = run(cat, p, rows);
    let groups: f64 =
        s.groups.iter().map(|(_, m, _)| *m).sum::<f64>() / s.groups.len().max(1) as f64;
    (groups + 0.5 * s.mape, s.mape)
}

fn main() {
    let cat = Catalog::builtin().expect("built-in catalog");
    let rows = parse_points(include_str!("../../../reference/points.csv")).expect("points");
    let knobs: Vec<Knob> = vec![
        (
            "gpu_decode_flops_eff",
            |p| &mut p.gpu_decode_flops_eff,
            0.3,
            0.8,
        ),
        (
            "gpu_prefill_flops_eff",
            |p| &mut p.gpu_prefill_flops_eff,
            0.3,
            0.8,
        ),
        (
            "gpu_step_overhead_s",
            |p| &mut p.gpu_step_overhead_s,
            1e-4,
            5e-3,
        ),
        (
            "allreduce_latency_s",
            |p| &mut p.allreduce_latency_s,
            2e-6,
            1e-5,
        ),
        ("fabric_eff", |p| &mut p.fabric_eff, 0.2, 0.8),
        ("wafer_phase_s", |p| &mut p.wafer_phase_s, 1e-8, 2e-5),
        ("wafer_hop_s", |p| &mut p.wafer_hop_s, 1e-10, 1e-7),
        (
            "wafer_sram_read_eff",
            |p| &mut p.wafer_sram_read_eff,
            0.01,
            1.0,
        ),
        (
            "wafer_prefill_eff",
            |p| &mut p.wafer_prefill_eff,
            0.001,
            0.5,
        ),
        ("wafer_link_s", |p| &mut p.wafer_link_s, 1e-6, 5e-4),
        ("lpu_layer_s", |p| &mut p.lpu_layer_s, 1e-6, 1e-4),
        ("lpu_chip_hop_s", |p| &mut p.lpu_chip_hop_s, 1e-8, 2e-5),
        ("rdu_layer_s", |p| &mut p.rdu_layer_s, 1e-7, 1e-4),
        ("rdu_bw_eff", |p| &mut p.rdu_bw_eff, 0.2, 1.0),
    ];
    let mut p = Params::default();
    let (mut best, mut mape) = score(&cat, &p, &rows);
    println!("start: objective {best:.2}, MAPE {mape:.2}%");
    for round in 0..6 {
        let mut improved = false;
        for (name, get, lo, hi) in &knobs {
            for f in [0.5, 0.7, 0.85, 0.93, 1.07, 1.18, 1.4, 2.0] {
                let mut trial = p.clone();
                let v = get(&mut trial);
                *v = (*v * f).clamp(*lo, *hi);
                let (s, m) = score(&cat, &trial, &rows);
                if s < best - 1e-6 {
                    best = s;
                    mape = m;
                    p = trial;
                    improved = true;
                    println!(
                        "round {round}: {name} -> {:.6e}: objective {best:.2}, MAPE {mape:.2}%",
                        get(&mut p)
                    );
                }
            }
        }
        if !improved {
            break;
        }
    }
    println!("final objective {best:.2}, MAPE {mape:.2}%");
    for (name, get, _, _) in &knobs {
        println!("{name}: {:.6e}", get(&mut p.clone()));
    }
}
