//! The `switchyard` binary as a user runs it.

use std::process::{Command, Output};

mod serve;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .output()
        .expect("binary runs")
}

/// Writes `contents` to a fresh file named `name` under the system temp folder.
fn temp_file(name: &str, contents: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write");
    path
}

/// A command line: `base` followed by `extra`.
fn joined(base: &[&'static str], extra: &[&'static str]) -> Vec<&'static str> {
    base.iter().chain(extra).copied().collect()
}

/// Runs `args`, which must succeed and print every one of `needles`; returns the output.
fn prints(args: &[&str], needles: &[&str]) -> String {
    let o = run(args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    for needle in needles {
        assert!(out.contains(needle), "missing {needle} in\n{out}");
    }
    out
}

/// Runs `args`, which must be refused as the user's mistake (status 2) with `needle` in the
/// one line on standard error.
fn refused(args: &[&str], needle: &str) {
    let o = run(args);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(needle), "{err}");
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn estimate_reports_layout_fit_and_figures() {
    let wafers = prints(
        &["estimate", "--model", "llama-3.1-70b", "--hardware", "cs3"],
        &[
            "4 x cs3",
            "tp1-pp4",
            "TTFT",
            "per-user speed",
            "throughput",
            "J/token",
            "per million tokens",
        ],
    );
    // Lengths past the model's context window are estimated with a note that says so.
    let out = prints(
        &[
            "estimate",
            "--model",
            "llama-3.1-8b",
            "--hardware",
            "h200",
            "--isl",
            "200000",
        ],
        &["exceed llama-3.1-8b's 131072-token context"],
    );
    let plain = prints(
        &["estimate", "--model", "llama-3.1-8b", "--hardware", "h200"],
        &["TTFT"],
    );
    assert!(out.contains("note") && !plain.contains("note"));
    // One output token has no time per output token to tell.
    let one = prints(
        &[
            "estimate",
            "--model",
            "llama-3.1-8b",
            "--hardware",
            "h100-sxm",
            "--osl",
            "1",
        ],
        &["TTFT", "one output token"],
    );
    assert!(plain.contains("TPOT") && !one.contains("TPOT"), "{one}");
    // ... in JSON too, and in the side-by-side view.
    let long = [
        "--model",
        "llama-3.1-8b",
        "--hardware",
        "h200",
        "--isl",
        "200000",
    ];
    prints(
        &joined(&["estimate", "--json"], &long),
        &["\"beyond_context\": true"],
    );
    prints(
        &joined(&["compare"], &long),
        &["note: 200000+512 tokens exceed llama-3.1-8b's 131072-token context"],
    );
    prints(
        &[
            "estimate",
            "--model",
            "llama-3.1-8b",
            "--hardware",
            "h200",
            "--json",
        ],
        &["\"beyond_context\": false"],
    );
    // Where the KV cache holds more requests than the engine batches, both limits are named.
    prints(
        &[
            "estimate",
            "--model",
            "llama-3.2-1b",
            "--hardware",
            "b200",
            "--layout",
            "tp8",
        ],
        &["of which the engine batches at most 2048"],
    );
    assert!(!wafers.contains("the engine batches"));
    // The TPOT is broken into where it goes, and the parts add up to it.
    let tpot = |out: &str| -> f64 {
        out.split("(TPOT ")
            .nth(1)
            .and_then(|t| t.split(" ms").next())
            .and_then(|t| t.parse().ok())
            .expect("TPOT")
    };
    let parts = |out: &str| -> Vec<(String, f64)> {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with("TPOT parts"))
            .expect("parts");
        line.trim_start()
            .trim_start_matches("TPOT parts")
            .split("; ")
            .map(|p| {
                let (name, ms) = p
                    .trim()
                    .rsplit_once(' ')
                    .expect("part")
                    .0
                    .rsplit_once(' ')
                    .expect("part");
                (name.to_string(), ms.parse().expect("ms"))
            })
            .collect()
    };
    for out in [&wafers, &plain] {
        let sum: f64 = parts(out).iter().map(|(_, ms)| ms).sum();
        // Each part is rounded to 0.01 ms, and parts under 5 us are left out.
        assert!((sum - tpot(out)).abs() < 0.05, "{out}");
    }
    for part in [
        "mesh reductions",
        "links (between wafers and back to the host)",
    ] {
        assert!(parts(&wafers).iter().any(|(n, _)| n == part), "{wafers}");
    }
    assert!(
        parts(&plain).iter().any(|(n, _)| n == "kernel launches"),
        "{plain}"
    );
}

#[test]
fn estimate_takes_a_benchmark_workload() {
    let args = |extra: &[&'static str]| {
        h100_node(
            "llama-2-70b",
            &joined(&["--workload", "mlperf-llama2-70b"], extra),
        )
    };
    let o = run(&args(&[]));
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    // The dataset's mean lengths and the spread of its outputs.
    assert!(out.contains("isl 222.3, osl 294.45, osl cv 0.787"), "{out}");
    // The workload names its model: --model may be left out.
    let o = run(&[
        "estimate",
        "--hardware",
        "h100-sxm",
        "--workload",
        "mlperf-llama2-70b",
    ]);
    let (alone, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(alone.starts_with("llama-2-70b on "), "{alone}");
    // The server scenario's p99 limits (200 ms, 2 s) stand as limits on the means.
    assert!(
        out.contains("within          TPOT 146.0 ms, TTFT 0.900 s (means)"),
        "{out}"
    );
    // Flags win over the workload.
    let o = run(&args(&["--isl", "100", "--tpot-limit-ms", "50"]));
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("isl 100, osl 294.45, osl cv 0.787") && out.contains("TPOT 50.0 ms"),
        "{out}"
    );
    // --osl-cv wins too: outputs all alike.
    let (out, _) = text(&run(&args(&["--osl-cv", "0"])));
    assert!(out.contains("isl 222.3, osl 294.45):"), "{out}");
    // A limit no load can meet is said to be missed, not claimed as met.
    let o = run(&args(&["--ttft-limit-ms", "0.001"]));
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("limits not met"), "{out}");
    // Only the limit missed is named: the workload's TPOT limit is met.
    let missed = out
        .lines()
        .find(|l| l.contains("limits not met"))
        .expect("the line");
    assert!(
        missed.contains("TTFT") && !missed.contains("TPOT"),
        "{missed}"
    );
    // compare takes the workload's model when none is named.
    let o = run(&[
        "compare",
        "--workload",
        "mlperf-llama2-70b",
        "--hardware",
        "h100-sxm,cs3",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.starts_with("llama-2-70b at concurrency"), "{out}");
    assert!(out.contains("within TPOT 146.0 ms"), "{out}");
    // A workload of lengths only states no limits, and the peak is sought within none.
    let user = temp_file(
        "lengths-only.toml",
        "[[workload]]\nid = \"mine\"\nsuite = \"own\"\nmodel = \"llama-3.1-8b\"\nosl = 100\nsources = [\"https://example.org\"]\n",
    );
    let o = run(&[
        "--catalog",
        user.to_str().expect("utf-8"),
        "estimate",
        "--hardware",
        "h100-sxm",
        "--model",
        "llama-3.1-8b",
        "--workload",
        "mine",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("peak throughput") && !out.contains("within TPOT"),
        "{out}"
    );
}

#[test]
fn estimate_json_is_machine_readable() {
    // llama-3.1-8b on one H100, as JSON, with `extra` options.
    let json = |extra: &[&'static str]| {
        let base = [
            "estimate",
            "--model",
            "llama-3.1-8b",
            "--hardware",
            "h100-sxm",
            "--chips",
            "1",
            "--json",
        ];
        run(&joined(&base, extra))
    };
    let o = json(&["--precision", "fp8", "--concurrency", "16"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["chips"], 1);
    assert_eq!(v["precision"], "fp8");
    assert!(v["at"]["throughput_tok_s"]
        .as_f64()
        .is_some_and(|t| t > v["at"]["user_tok_s"].as_f64().unwrap_or(f64::MAX)));
    assert!(v["at_economics"]["usd_per_mtok"]
        .as_f64()
        .is_some_and(|c| c > 0.0));
    assert_eq!(v["at_economics"]["cost_basis"], "rent");
    // The KV cache may be stored narrower than the weights: half the bytes, twice the room.
    let kv = |precision: &'static str| {
        let o = json(&["--kv-precision", precision]);
        assert!(o.status.success(), "{:?}", text(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).expect("json")
    };
    let (bf16, fp8) = (kv("bf16"), kv("fp8"));
    assert_eq!(
        (bf16["precision"].as_str(), fp8["precision"].as_str()),
        (Some("bf16"), Some("bf16"))
    );
    assert_eq!(fp8["kv_precision"], "fp8");
    let room = |v: &serde_json::Value| v["memory"]["kv_tokens_per_replica"].as_f64().unwrap_or(0.0);
    assert!(
        (room(&fp8) / room(&bf16) - 2.0).abs() < 1e-6,
        "{} against {}",
        room(&fp8),
        room(&bf16)
    );
}

/// `estimate` of `model` at FP8 on one 8-GPU H100 node, with `extra` options.
fn h100_node(model: &'static str, extra: &[&'static str]) -> Vec<&'static str> {
    joined(
        &[
            "estimate",
            "--model",
            model,
            "--hardware",
            "h100-sxm",
            "--chips",
            "8",
            "--precision",
            "fp8",
        ],
        extra,
    )
}

#[test]
fn estimate_draws_the_throughput_interactivity_frontier() {
    let base = h100_node("llama-3.1-70b", &["--frontier"]);
    let o = run(&base);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("throughput-interactivity frontier"), "{out}");
    assert!(
        out.contains("tok/s/chip") && out.contains("tp8-pp1"),
        "{out}"
    );
    let o = run(&joined(&base, &["--json", "--tpot-limit-ms", "40"]));
    assert!(o.status.success(), "{:?}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["chips"], 8);
    let points = v["points"].as_array().expect("an array of points");
    assert!(points.len() > 2);
    let speed = |i: usize| points[i]["op"]["user_tok_s"].as_f64().unwrap_or(0.0);
    assert!(speed(0) > speed(points.len() - 1));
    assert!(points
        .iter()
        .all(|x| x["op"]["tpot_s"].as_f64().is_some_and(|t| t <= 0.040)));
    // Limits no load meets leave an empty frontier that still names its chips.
    let o = run(&joined(&base, &["--ttft-limit-ms", "0.001"]));
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("on 8 x h100-sxm") && out.contains("no layout and load meets the limits"),
        "{out}"
    );
    // A frontier spans the loads: a fixed one is refused, not ignored.
    let o = run(&joined(&base, &["--concurrency", "4"]));
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    // A mixture of experts' frontier says which layouts it did not search, and how to ask.
    let (out, _) = text(&run(&h100_node("mixtral-8x7b", &["--frontier"])));
    assert!(
        out.contains("give --layout ep8 or --layout tp2-ep4"),
        "{out}"
    );
    // ... and offers no layout the chips cannot host: Mixtral's 8 experts do not spread
    // over 16.
    let (out, _) = text(&run(&[
        "estimate",
        "--model",
        "mixtral-8x7b",
        "--hardware",
        "h100-sxm",
        "--chips",
        "16",
        "--frontier",
    ]));
    assert!(
        out.contains("no expert-parallel layout of 16 chips"),
        "{out}"
    );
    assert!(!text(&run(&base)).0.contains("--layout ep"));
}

/// The layout `estimate` picks is the fastest for one user; where another of the same chips
/// carries clearly more at its peak, it is named with that peak, and JSON carries it. A
/// layout the user gives is not second-guessed.
#[test]
fn estimate_names_a_busier_layout_of_the_same_chips() {
    let base = h100_node("llama-3.1-8b", &[]);
    let (out, err) = text(&run(&base));
    assert!(out.contains("layout tp8-pp1"), "{out}{err}");
    let peak = |line: &str, after: &str| -> f64 {
        line.split(after)
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .and_then(|t| t.parse().ok())
            .expect("a figure")
    };
    let own = peak(
        out.lines()
            .find(|l| l.starts_with("peak throughput"))
            .expect("peak"),
        "peak throughput",
    );
    let hint = out
        .lines()
        .find(|l| l.trim_start().starts_with("busiest layout"))
        .expect("a busier layout is named");
    let layout = hint.split_whitespace().nth(2).expect("layout");
    assert!(peak(hint, " carries") > own * 1.05, "{hint}");
    // Its own figures agree with the hint.
    let mut given: Vec<&str> = base.clone();
    given.extend(["--layout", layout]);
    let (out, _) = text(&run(&given));
    let theirs = peak(
        out.lines()
            .find(|l| l.starts_with("peak throughput"))
            .expect("peak"),
        "peak throughput",
    );
    assert!(
        (theirs - peak(hint, " carries")).abs() < 1.0,
        "{theirs} {hint}"
    );
    assert!(!out.contains("busiest layout"), "{out}");
    // Only a layout that meets the limits is named: under a TPOT no layout reaches, none.
    let (out, _) = text(&run(&joined(&base, &["--tpot-limit-ms", "1"])));
    assert!(out.contains("limits not met"), "{out}");
    assert!(!out.contains("busiest layout"), "{out}");
    let o = run(&joined(&base, &["--json"]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["busiest_layout"]["layout"]["tp"], 1);
    assert!(v["busiest_layout"]["peak"]["throughput_tok_s"]
        .as_f64()
        .is_some_and(|t| t > own * 1.05));
}

#[test]
fn estimate_splits_prefill_and_decode_on_request() {
    let base = h100_node(
        "llama-3.1-70b",
        &[
            "--isl",
            "8192",
            "--osl",
            "256",
            "--tpot-limit-ms",
            "30",
            "--disagg",
        ],
    );
    prints(
        &base,
        &[
            "prefill ",
            "decode ",
            "KV transfer",
            "aggregated",
            "per chip",
        ],
    );
    let o = run(&joined(&base, &["--json"]));
    assert!(o.status.success(), "{:?}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(v["disaggregated"]["tpot_s"]
        .as_f64()
        .is_some_and(|t| t <= 0.030));
    assert!(v["aggregated"]["peak"]["throughput_tok_s"]
        .as_f64()
        .is_some());
    let o = run(&joined(&base, &["--frontier"]));
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
}

#[test]
fn one_output_token_has_no_time_per_token_to_show_or_limit() {
    let base = h100_node(
        "llama-3.1-70b",
        &["--layout", "tp8", "--concurrency", "32", "--osl", "1"],
    );
    let json = |extra: &[&'static str]| {
        let o = run(&joined(&joined(&base, extra), &["--json"]));
        assert!(o.status.success(), "{:?}", text(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).expect("json")
    };
    let v = json(&[]);
    for op in ["at", "peak"] {
        assert!(v[op]["tpot_s"].is_null(), "{}", v[op]);
        assert!(v[op]["user_tok_s"].is_null(), "{}", v[op]);
        assert!(v[op]["ttft_s"].as_f64().is_some_and(|t| t > 0.0));
    }
    // A TPOT limit binds no request that has no second token.
    let limited = json(&["--tpot-limit-ms", "20"]);
    assert_eq!(limited["peak"], v["peak"]);
}

#[test]
fn bad_input_is_one_clear_line_and_status_two() {
    let est8 = |extra: &[&'static str]| {
        joined(
            &[
                "estimate",
                "--model",
                "llama-3.1-8b",
                "--hardware",
                "h100-sxm",
            ],
            extra,
        )
    };
    // A limit no load meets is told in figures that show it, not rounded to nothing.
    prints(
        &est8(&["--chips", "1", "--tpot-limit-ms", "0.001"]),
        &["misses TPOT 0.00100 ms"],
    );
    for (args, needle) in [
        (
            vec!["estimate", "--model", "llama-9", "--hardware", "cs3"],
            "unknown model `llama-9`; known:",
        ),
        (
            vec!["estimate", "--model", "llama-3.1-8b", "--hardware", "tpu9"],
            "unknown hardware `tpu9`",
        ),
        (
            vec![
                "estimate",
                "--model",
                "llama-3.1-70b",
                "--hardware",
                "cs3",
                "--chips",
                "2",
            ],
            "needs at least 4 wafers",
        ),
        (
            vec![
                "estimate",
                "--model",
                "llama-3.1-70b",
                "--hardware",
                "cs3",
                "--layout",
                "tp4",
            ],
            "use pp",
        ),
        (est8(&["--concurrency", "0"]), "--concurrency"),
        (est8(&["--concurrency", "1e308"]), "1,000,000,000"),
        (est8(&["--layout", "tp8-tp4"]), "tp is given twice"),
        (
            joined(&["--params", "a.toml"], &est8(&["--params=b.toml"])),
            "--params is given more than once",
        ),
        (
            est8(&["--speculative", "0.8", "--draft-len", "0"]),
            "--draft-len",
        ),
        (
            est8(&["--speculative", "0.8", "--draft-len", "1000000"]),
            "--draft-len takes at most 64",
        ),
        (
            est8(&["--chips", "8", "--isl", "50000000"]),
            "holds the weights but not the KV cache",
        ),
        (
            est8(&["--chips", "1", "--isl", "3000000"]),
            "though llama-3.1-8b takes at most 131072 tokens a request",
        ),
        (est8(&["--ttft-limit-ms", "0"]), "--ttft-limit-ms"),
        (est8(&["--tpot-limit-ms", "inf"]), "finite number above 0"),
        (est8(&["--draft-len", "3"]), "give --speculative"),
        (est8(&["--osl-cv", "11"]), "--osl-cv must be from 0 to 10"),
        (
            est8(&["--kv-precision", "fp4"]),
            "h100-sxm has no FP4 format for a KV cache; store it in fp8 or int4",
        ),
        (
            vec![
                "estimate",
                "--model",
                "llama-3.1-70b",
                "--hardware",
                "h100-sxm",
                "--precision",
                "fp8",
                "--layout",
                "tp1",
            ],
            "its layout, tp1-pp1, needs 70.6 GB of weights on each chip, where each chip leaves 70.0 GB of its 80.0 GB",
        ),
        (
            est8(&["--workload", "mlperf-nothing"]),
            "unknown workload `mlperf-nothing`; known: mlperf-llama2-70b",
        ),
        (
            est8(&["--workload", "mlperf-llama2-70b"]),
            "runs `llama-2-70b`, not `llama-3.1-8b`",
        ),
        (
            vec!["validate", "--points", "/nonexistent/points.csv"],
            "/nonexistent/points.csv",
        ),
        (
            vec![
                "compare",
                "--model",
                "llama-3.1-70b",
                "--hardware",
                "h100-sxm",
                "--kv-precision",
                "fp4",
            ],
            "runs on none of the systems asked (h100-sxm: h100-sxm has no FP4 format",
        ),
        (
            est8(&["--precision", "awq", "--kv-precision", "gptq"]),
            "`w4a16` is a scheme for weights; a KV cache is stored in bf16",
        ),
        // A negative number is the flag's own range error, not the parser's.
        (
            est8(&["--speculative", "-0.1"]),
            "--speculative takes an acceptance rate",
        ),
        (est8(&["--concurrency", "-1"]), "--concurrency must be from 1"),
        (est8(&["--tpot-limit-ms", "-5"]), "finite number above 0"),
        (est8(&["--chips", "4294967295"]), "4294967295 is not in 1..=65536"),
        (est8(&["--chips", "-1"]), "-1 is not in 1..=65536"),
        // The parser's own errors are one line too, without its usage.
        (est8(&["--chip", "8"]), "unexpected argument '--chip'"),
        (
            vec!["estimate", "--model", "llama-3.1-8b"],
            "required arguments were not provided: --hardware",
        ),
    ] {
        let o = run(&args);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("panicked"));
    }
    // A workspace larger than a chip: no count helps, and the line says why, not "0 x".
    let params = temp_file("huge-workspace.toml", "activation_bytes = 1e12\n");
    let params = params.to_str().expect("path");
    for chips in [None, Some("8")] {
        let mut args = vec![
            "--params",
            params,
            "estimate",
            "--model",
            "gpt-oss-120b",
            "--hardware",
            "h100",
        ];
        args.extend(chips.map(|c| ["--chips", c]).into_iter().flatten());
        let o = run(&args);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains("workspace") && err.contains("no count of them helps"),
            "{err}"
        );
        assert!(!err.contains(" 0 x "), "{err}");
    }
}

#[test]
fn compare_lists_wafer_and_gpu_side_by_side() {
    let o = run(&["compare", "--model", "llama-3.1-70b"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let speed = |id: &str| -> f64 {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .expect("row");
        line.split_whitespace()
            .nth(5)
            .and_then(|v| v.parse().ok())
            .expect("tok/s/user column")
    };
    assert!(speed("cs3") > 400.0);
    assert!(speed("h100-sxm") < 150.0);
    assert!(out.contains("mesh-latency") || out.contains("compute"));
    assert!(out.contains("memory-bw"));
    assert!(!out.contains("no load meets"), "{out}");

    assert!(!out.contains("+ the KV cache"), "{out}");
    // A peak at all the requests the KV cache holds is marked: four CS-3s hold little of it.
    let cs3 = out.lines().find(|l| l.starts_with("cs3 ")).expect("row");
    assert!(cs3.contains(" kv "), "{cs3}");
    assert!(out.contains("kv: the peak is at the most requests the KV cache holds"));
    // Chips sized for the model that hold fewer requests than asked are marked: their
    // TTFT is mostly the wait.
    let out = prints(
        &[
            "compare",
            "--model",
            "deepseek-r1",
            "--hardware",
            "cs3,b200",
            "--concurrency",
            "32",
        ],
        &["+ the KV cache of these chips holds fewer requests"],
    );
    assert!(
        row_of(&out, "cs3").contains('+') && !row_of(&out, "b200").contains('+'),
        "{out}"
    );
    // A system whose every load misses the limits is marked, not passed off as within them.
    let out = prints(
        &[
            "compare",
            "--model",
            "llama-3.1-70b",
            "--hardware",
            "h100-sxm,cs3",
            "--tpot-limit-ms",
            "10",
        ],
        &["* no load meets TPOT 10.0 ms"],
    );
    assert!(row_of(&out, "h100-sxm").contains('*'), "{out}");
    assert!(!row_of(&out, "cs3").contains('*'), "{out}");

    // Systems are named by their catalog ids, each once however spelled; a rack of LPUs'
    // throughput a chip is under one token a second and is not printed as 0.
    let out = prints(
        &[
            "compare",
            "--model",
            "llama-3.1-70b",
            "--hardware",
            "H100 SXM5 80GB,h100-sxm,groq-lpu",
        ],
        &["h100-sxm "],
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("h100-sxm ")).count(),
        1,
        "{out}"
    );
    assert!(!out.contains("H100 SXM5"), "{out}");
    let per_chip: f64 = row_of(&out, "groq-lpu")
        .split_whitespace()
        .nth(9)
        .and_then(|v| v.parse().ok())
        .expect("peak/chip column");
    assert!(per_chip > 0.0 && per_chip < 10.0, "{out}");
    // The peak is the busiest layout's on the same chips, named, never below the fastest
    // layout's own.
    let h100 = row_of(&out, "h100-sxm");
    let cols: Vec<&str> = h100.split_whitespace().collect();
    let shown: f64 = cols[8].parse().expect("peak tok/s column");
    let o = run(&[
        "estimate",
        "--model",
        "llama-3.1-70b",
        "--hardware",
        "h100-sxm",
        "--chips",
        "8",
        "--layout",
        cols[2],
        "--json",
    ]);
    let (json, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let own = v["peak"]["throughput_tok_s"].as_f64().expect("peak");
    assert!(shown >= own * 0.999, "{shown} against {own}: {h100}");
    if cols[7] != cols[2] {
        assert!(shown > own * 1.05, "{shown} against {own}: {h100}");
    }
    // `--cost` costs every system on one basis: owned, each at its purchase; rented, a
    // system with no published rate has no cost rather than its purchase's.
    let owned = prints(
        &[
            "compare",
            "--model",
            "llama-3.1-70b",
            "--hardware",
            "gb200,gb300",
            "--cost",
            "owned",
        ],
        &["gb200 "],
    );
    for id in ["gb200", "gb300"] {
        assert!(row_of(&owned, id).ends_with("owned"), "{owned}");
    }
    let rent = prints(
        &[
            "compare",
            "--model",
            "llama-3.1-70b",
            "--hardware",
            "gb200,gb300",
            "--cost",
            "rent",
        ],
        &["gb200 "],
    );
    assert!(row_of(&rent, "gb200").ends_with("rent"), "{rent}");
    assert!(row_of(&rent, "gb300").ends_with("n/a"), "{rent}");
}

/// The line of `out` that starts with system `id`.
fn row_of(out: &str, id: &str) -> String {
    out.lines()
        .find(|l| l.starts_with(&format!("{id} ")))
        .expect("row")
        .to_string()
}

#[test]
fn validate_ends_with_the_summary_line() {
    let o = run(&["validate"]);
    let (out, _) = text(&o);
    assert!(o.status.success());
    let last = out.lines().last().expect("output");
    assert!(
        last.starts_with("MAPE ") && last.contains("% over ") && last.ends_with(" skipped"),
        "{last}"
    );
    assert!(out.contains("skipped: "));
    // The audited benchmark rows are scored on their own, and each system's.
    assert!(
        out.lines()
            .any(|l| l.starts_with("source mlperf ") && l.contains("% over ")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("system h100-sxm ") && l.contains("% over ")),
        "{out}"
    );
}

/// A row past what its hardware can do at its best is named with that bound, and the share
/// of the MAPE that such rows carry is given beside the group's and before the summary line;
/// JSON carries the bound per row and the floor.
#[test]
fn validate_names_rows_beyond_their_hardware() {
    let f = temp_file(
        "beyond.csv",
        "id,hardware,count,model,precision,speculative,concurrency,metric,value\n\
         fast,sn40l,16,llama-3.1-405b,bf16,unknown,1,decode_tok_s_per_user,129\n\
         fine,sn40l,16,llama-3.1-405b,bf16,unknown,1,decode_tok_s_per_user,15\n",
    );
    let path = f.to_str().expect("path");
    let o = run(&["validate", "--points", path]);
    let (out, _) = text(&o);
    assert!(o.status.success());
    let named: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("beyond the hardware: "))
        .collect();
    assert_eq!(named.len(), 2, "{out}");
    assert!(
        named[0].contains("fast publishes 129, above 31.") && named[0].contains("% off"),
        "{out}"
    );
    assert!(
        named[1].contains(": 1 row, ") && named[1].contains(" MAPE points"),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("group SRAM")
            && l.contains("points of it from 1 row beyond the hardware)")),
        "{out}"
    );
    assert!(out
        .trim_end()
        .lines()
        .last()
        .expect("line")
        .starts_with("MAPE "));
    let o = run(&["validate", "--points", path, "--json"]);
    let (out, _) = text(&o);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let bound = v["points"][0]["beyond_hardware"]["bound"]
        .as_f64()
        .expect("bound");
    assert!((31.0..32.5).contains(&bound), "{bound}");
    assert_eq!(v["points"][0]["limit"], "at-most");
    assert!(v["points"][1]["beyond_hardware"].is_null());
    let floor = v["floor"]["mape"].as_f64().expect("floor");
    assert!(
        (floor - (129.0 - bound) / 129.0 * 100.0 / 2.0).abs() < 1e-6,
        "{floor}"
    );
    // A calibration leaves that row out of its fit and says so.
    let out = prints(
        &["calibrate", "--points", path, "--only", "rdu_bw_eff"],
        &["before -> after"],
    );
    assert!(
        out.lines().any(
            |l| l.starts_with("left out of the fit, beyond their hardware")
                && l.ends_with(": fast")
        ),
        "{out}"
    );
}

#[test]
fn validate_reads_a_user_file_and_names_bad_lines() {
    let good = temp_file(
        "good.csv",
        "id,hardware,count,model,precision,parallel,speculative,concurrency,isl,osl,metric,value,source_kind,source_url,date,notes\n\
         x,cs3,1,llama-3.1-8b,bf16,,none,,,,decode_tok_s_per_user,1800,vendor,https://a,2024,\n\
         y,cs3,1,llama-3.1-8b,bf16,,none,,,,joules,1,vendor,https://a,2024,\n",
    );
    let o = run(&["validate", "--points", good.to_str().expect("path")]);
    let (out, _) = text(&o);
    assert!(
        out.trim_end().ends_with("MAPE") || out.contains("over 1 points, 1 skipped"),
        "{out}"
    );
    // One kind of source: its line would repeat the overall one.
    assert!(!out.contains("source vendor"), "{out}");
    // A value that is not a number skips its row, naming the line and column.
    let odd = temp_file("odd.csv", "id,hardware,count,model,precision,parallel,speculative,concurrency,isl,osl,metric,value\nx,cs3,1,llama-3.1-8b,,,,,,,decode_tok_s_per_user,n/a\n");
    let o = run(&["validate", "--points", odd.to_str().expect("path")]);
    let (out, err) = text(&o);
    assert!(
        out.contains("skipped: line 2, field `value`: `n/a`"),
        "{out}"
    );
    // With no row modelled there is no MAPE: the skipped rows are listed, and it fails.
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err.contains("none of its 1 rows could be modelled") && !out.contains("MAPE"),
        "{err}"
    );
    let o = run(&[
        "validate",
        "--points",
        odd.to_str().expect("path"),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(
        v["summary"]["mape"].is_null() && v["summary"]["n"] == 0,
        "{v}"
    );
    for (empty, says) in [
        ("", "the file is empty"),
        (
            "id,hardware,count,model,metric,value\n",
            "no rows under its header",
        ),
    ] {
        let f = temp_file("empty.csv", empty);
        let o = run(&["validate", "--points", f.to_str().expect("path")]);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{empty:?}");
        assert!(err.contains(says) && out.is_empty(), "{err}");
    }
    // A count past what a deployment may have is skipped, not searched for minutes.
    let huge = temp_file("huge.csv", "id,hardware,count,model,metric,value\nx,h100-sxm,99999999,llama-3.1-8b,decode_tok_s_per_user,120\ny,cs3,1,llama-3.1-8b,decode_tok_s_per_user,1800\n");
    prints(
        &["validate", "--points", huge.to_str().expect("path")],
        &[
            "skipped: line 2: 99999999 chips, more than the 65536",
            "1 skipped",
        ],
    );
    // Column names in capitals are read; a file split by semicolons is named as such on
    // its header's line.
    let caps = temp_file("caps.csv", "ID,HARDWARE,COUNT,MODEL,PRECISION,PARALLEL,SPECULATIVE,CONCURRENCY,ISL,OSL,METRIC,VALUE\nx,cs3,1,llama-3.1-8b,bf16,,none,,,,decode_tok_s_per_user,1800\n");
    prints(
        &["validate", "--points", caps.to_str().expect("path")],
        &["over 1 points, 0 skipped"],
    );
    let semi = temp_file(
        "semi.csv",
        "id;hardware;model;metric;value\nx;cs3;llama-3.1-8b;decode_tok_s_per_user;1800\n",
    );
    let o = run(&["validate", "--points", semi.to_str().expect("path")]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err.contains("line 1") && err.contains("not comma-separated"),
        "{err}"
    );
    // A byte that is not UTF-8 is named by its line.
    let dir = std::env::temp_dir().join(format!("switchyard-cli-{}", std::process::id()));
    let latin = dir.join("latin.csv");
    std::fs::write(&latin, b"id,hardware,model,metric,value\nx,cs3,llama-3.1-8b,decode_tok_s_per_user,1800\ny,cs3,caf\xe9,decode_tok_s_per_user,1\n").expect("write");
    let o = run(&["validate", "--points", latin.to_str().expect("path")]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2));
    assert!(err.contains("latin.csv: line 3: not UTF-8"), "{err}");
    // So is one in a scenario, which the simulator reads the same way.
    let latin = dir.join("latin.toml");
    std::fs::write(&latin, b"name = \"caf\xe9\"\n").expect("write");
    refused(
        &["simulate", "--scenario", latin.to_str().expect("path")],
        "latin.toml: line 1: not UTF-8",
    );
    // A file larger than any of its kind is refused by its size, before a byte is read.
    let huge = dir.join("huge.csv");
    std::fs::File::create(&huge)
        .and_then(|f| f.set_len(5 << 30))
        .expect("a sparse file");
    refused(
        &["simulate", "--trace", huge.to_str().expect("path")],
        "5120 MiB, more than the 4096 MiB a trace may hold",
    );
    let _ = std::fs::remove_file(&huge);
    // A path to an endless stream is refused once it outgrows any real file of its kind,
    // before it fills memory.
    if std::path::Path::new("/dev/zero").exists() {
        refused(
            &["--catalog", "/dev/zero", "catalog"],
            "/dev/zero: larger than 64 MiB, the most a settings file may hold",
        );
    }
    // A row that does not fit its header is skipped with its line, and the rest scored.
    let bad = temp_file("bad.csv", "id,hardware,count,model,precision,parallel,speculative,concurrency,isl,osl,metric,value\nx,cs3,1,llama-3.1-8b,,,,,,,decode_tok_s_per_user,1,2\ny,cs3,1,llama-3.1-8b,,,,,,,decode_tok_s_per_user,1800\n");
    prints(
        &["validate", "--points", bad.to_str().expect("path")],
        &[
            "skipped: line 2: 13 fields where the header names 12",
            "over 1 points, 1 skipped",
        ],
    );
    // A misspelt column is refused on the header's line, with the name it may have meant.
    let typo = temp_file("typo.csv", "id,hardware,model,metric,value,concurrencyx\ny,cs3,llama-3.1-8b,decode_tok_s_per_user,1800,1\n");
    let o = run(&["validate", "--points", typo.to_str().expect("path")]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err.contains("typo.csv: line 1: column `concurrencyx`")
            && err.contains("did you mean `concurrency`?"),
        "{err}"
    );
}

#[test]
fn catalog_lists_sources_and_takes_a_user_file() {
    let o = run(&["catalog", "systems"]);
    let (out, _) = text(&o);
    assert!(o.status.success());
    assert!(out.contains("cs3") && out.contains("sources: https://"));
    // A system's lines in a listing: its own and the indented ones under it.
    let entry = |out: &str, id: &str| {
        out.lines()
            .skip_while(|l| !l.starts_with(&format!("{id} ")))
            .take_while(|l| l.starts_with(&format!("{id} ")) || l.starts_with(' '))
            .collect::<Vec<_>>()
            .join("\n")
    };
    // A system with no published power shows the figure the model takes, marked as such:
    // eight MI300Xs at 750 W with the host's share.
    let mi300x = entry(&out, "mi300x");
    assert!(
        mi300x.contains(" 10.8* ") && mi300x.contains("no system figure published"),
        "{mi300x}"
    );
    // B200's matrix share is GB200's, and the listing says so.
    let b200 = entry(&out, "b200");
    assert!(
        b200.contains("matrix share 0.58 of peak, measured on gb200") && b200.contains("x0.83"),
        "{b200}"
    );
    // A borrower named by alias is listed with its lender's id; a lender replaced by an
    // unmeasured chip leaves its borrowers at H100's share, and the listing says that too.
    let chip = |id: &str, extra: &str| {
        format!("[[system]]\nid = \"{id}\"\nvendor = \"v\"\nkind = \"gpu\"\nsystem = \"s\"\nmemory_gb = 24.0\nmemory_bw_tb_s = 1.0\ndense_tflops = {{ bf16 = 50.0, fp8 = 100.0 }}\nchips_per_system = 1\n{extra}sources = [\"https://example.org\"]\n")
    };
    let user = temp_file(
        "lenders.toml",
        &format!(
            "{}{}",
            chip("twin", "matrix_share_from = \"h100\"\n"),
            chip("gb200", "")
        ),
    );
    let o = run(&[
        "--catalog",
        user.to_str().expect("path"),
        "catalog",
        "systems",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let twin = entry(&out, "twin");
    assert!(
        twin.contains("measured on h100-sxm") && twin.contains("x1.00"),
        "{twin}"
    );
    let b200 = entry(&out, "b200");
    assert!(
        b200.contains("which has none to lend now") && b200.contains("H100's share"),
        "{b200}"
    );
    // Files add up in order: a second file's chip beside the first's, and its entry of an
    // id the first gave replaces that one (twin no longer borrows H100's measurement).
    let more = temp_file(
        "more.toml",
        &format!("{}{}", chip("third", ""), chip("twin", "")),
    );
    let o = run(&[
        "--catalog",
        user.to_str().expect("path"),
        "catalog",
        "--catalog",
        more.to_str().expect("path"),
        "systems",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(!entry(&out, "third").is_empty(), "{out}");
    let twin = entry(&out, "twin");
    assert!(
        !twin.is_empty() && !twin.contains("measured on h100-sxm"),
        "{twin}"
    );
    let o = run(&["catalog", "workloads"]);
    let (out, _) = text(&o);
    assert!(o.status.success());
    assert!(out.contains("mlperf-llama2-70b") && out.contains("sources: https://"));
    let bad = temp_file("extra.toml", "[[model]]\nid = \"m\"\nlayers = \"many\"\n");
    let o = run(&[
        "--catalog",
        bad.to_str().expect("path"),
        "catalog",
        "models",
    ]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err.contains("extra.toml") && err.contains("line 3") && err.contains("layers"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn calibrate_writes_a_parameters_file_that_the_other_commands_take() {
    // Two H100 throughputs, published 30% above what the defaults predict.
    let header = "id,hardware,count,model,precision,parallel,speculative,concurrency,isl,osl,metric,value,source_kind,source_url,date,notes\n";
    let rows = [
        "a,h100-sxm,8,llama-3.1-70b,fp8,tp8,none,64,2048,512,throughput_tok_s",
        "b,h100-sxm,1,llama-3.1-8b,fp8,tp1,none,128,1024,1024,throughput_tok_s",
    ];
    let probe = temp_file(
        "probe.csv",
        &format!("{header}{},1,test,,,\n{},1,test,,,\n", rows[0], rows[1]),
    );
    let o = run(&[
        "validate",
        "--points",
        probe.to_str().expect("path"),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let predicted: Vec<f64> = v["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| p["predicted"].as_f64().expect("modelled"))
        .collect();
    let mine = temp_file(
        "mine.csv",
        &format!(
            "{header}{},{},test,,,\n{},{},test,,,\n",
            rows[0],
            predicted[0] * 1.3,
            rows[1],
            predicted[1] * 1.3
        ),
    );
    let fitted = temp_file("fitted.toml", "");
    let mine_s = mine.to_str().expect("path");
    let fitted_s = fitted.to_str().expect("path");
    let out = prints(
        &[
            "calibrate",
            "--points",
            mine_s,
            "--only",
            "gpu_decode_flops_eff,gpu_prefill_flops_eff",
            "--out",
            fitted_s,
        ],
        &["gpu_decode_flops_eff", "before -> after", "wrote"],
    );
    let file = std::fs::read_to_string(&fitted).expect("written");
    assert!(file.contains("gpu_decode_flops_eff = "), "{file}");
    // Held-out rows the defaults predict exactly are predicted worse after a fit to rows
    // 30% above them, which the run says.
    let exact = temp_file(
        "exact.csv",
        &format!(
            "{header}c{},{},test,,,\nd{},{},test,,,\n",
            &rows[0][1..],
            predicted[0],
            &rows[1][1..],
            predicted[1]
        ),
    );
    prints(
        &[
            "calibrate",
            "--points",
            mine_s,
            "--only",
            "gpu_decode_flops_eff,gpu_prefill_flops_eff",
            "--check",
            exact.to_str().expect("path"),
        ],
        &[
            "note: the fit predicts",
            "exact.csv worse than before (0.0% ->",
        ],
    );
    // The fitted file is no held-out check of itself.
    refused(
        &["calibrate", "--points", mine_s, "--check", mine_s],
        "2 of its 2 rows are also in",
    );
    // An H100's catalog bandwidth is a measurement, which `gpu_bw_eff` does not scale: the
    // search says so rather than that its starting value fits best.
    let inert = prints(
        &["calibrate", "--points", mine_s, "--only", "gpu_bw_eff"],
        &["no prediction of these points depends on gpu_bw_eff"],
    );
    assert!(!inert.contains("fit these points best"), "{inert}");
    // Rows far slower than any efficiency in its range makes them pin it at the range's
    // end, and the output says so, with what the search minimised.
    let slow = temp_file(
        "slow.csv",
        &format!(
            "{header}{},{},test,,,\n{},{},test,,,\n",
            rows[0],
            predicted[0] * 0.05,
            rows[1],
            predicted[1] * 0.05
        ),
    );
    prints(
        &[
            "calibrate",
            "--points",
            slow.to_str().expect("path"),
            "--only",
            "gpu_decode_flops_eff",
        ],
        &["at the bottom of the range it may move in", "minimised:"],
    );
    // Only what moved is written, each a parameter `--only` named.
    let set: Vec<&str> = file.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(!set.is_empty() && set.len() <= 2, "{file}");
    assert!(
        set.iter().all(|l| l.starts_with("gpu_decode_flops_eff = ")
            || l.starts_with("gpu_prefill_flops_eff = ")),
        "{file}"
    );
    let overall = out
        .lines()
        .find(|l| l.contains("overall"))
        .expect("overall line");
    let after: f64 = overall
        .split("->")
        .nth(1)
        .and_then(|t| t.trim().split('%').next())
        .and_then(|t| t.trim().parse().ok())
        .expect("after MAPE");
    assert!(after < 10.0, "{overall}");
    // The file, given back with --params, predicts the points as calibrate said.
    let o = run(&["--params", fitted_s, "validate", "--points", mine_s]);
    let (v_out, _) = text(&o);
    assert!(o.status.success());
    assert!(
        v_out
            .trim_end()
            .ends_with(&format!("MAPE {after:.1}% over 2 points, 0 skipped")),
        "{v_out}\n{overall}"
    );
    // ... and the other commands use it: a faster H100 estimate than the defaults give.
    let speed = |extra: &[&str]| {
        let mut args = extra.to_vec();
        args.extend([
            "estimate",
            "--model",
            "llama-3.1-8b",
            "--hardware",
            "h100-sxm",
            "--json",
        ]);
        let o = run(&args);
        assert!(o.status.success());
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        v["peak"]["throughput_tok_s"].as_f64().expect("peak")
    };
    assert!(speed(&["--params", fitted_s]) > speed(&[]) * 1.05);
    let default = format!(
        "# default {}",
        switchyard_perf::Params::default().gpu_decode_flops_eff
    );
    let listed = prints(&["--params", fitted_s, "catalog", "params"], &[&default]);
    assert!(listed.contains("max_batch = 2048\n"), "{listed}");
    // A bad file or knob is one line naming what is wrong.
    let bad = temp_file("bad.toml", "# mine\ngpu_prefill_flops_eff = 1.5\n");
    let o = run(&[
        "--params",
        bad.to_str().expect("path"),
        "estimate",
        "--model",
        "llama-3.1-8b",
        "--hardware",
        "h100-sxm",
    ]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err.contains("bad.toml: line 2, field `gpu_prefill_flops_eff`"),
        "{err}"
    );
    let o = run(&["calibrate", "--points", mine_s, "--only", "speed"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err.contains("`speed` is not a parameter") && err.trim().lines().count() == 1,
        "{err}"
    );
    // The fitted file never replaces the measurements it was fitted to or checked on.
    let kept = std::fs::read_to_string(&mine).expect("measurements");
    let txt = temp_file("mine.txt", &kept);
    let txt_s = txt.to_str().expect("path");
    // Nor the parameters or catalog the run reads.
    let prm = temp_file("start.toml", "gpu_bw_eff = 0.9\n");
    let prm_s = prm.to_str().expect("path");
    let cat = temp_file("extra.toml", "# no entries\n");
    let cat_s = cat.to_str().expect("path");
    for (args, says) in [
        (
            vec![
                "--params",
                prm_s,
                "calibrate",
                "--points",
                mine_s,
                "--out",
                prm_s,
            ],
            "is the --params file this run reads",
        ),
        (
            vec![
                "--catalog",
                cat_s,
                "calibrate",
                "--points",
                mine_s,
                "--out",
                cat_s,
            ],
            "is the --catalog file this run reads",
        ),
        (
            vec!["calibrate", "--points", txt_s, "--out", txt_s],
            "is the --points file",
        ),
        (
            vec!["calibrate", "--check", txt_s, "--out", txt_s],
            "is the --check file",
        ),
        (vec!["calibrate", "--out", mine_s], "names a CSV file"),
    ] {
        let o = run(&args);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(err.contains(says), "{err}");
    }
    assert_eq!(std::fs::read_to_string(&txt).expect("measurements"), kept);
    assert_eq!(
        std::fs::read_to_string(&prm).expect("parameters"),
        "gpu_bw_eff = 0.9\n"
    );
    assert_eq!(
        std::fs::read_to_string(&cat).expect("catalog"),
        "# no entries\n"
    );
    assert_eq!(std::fs::read_to_string(&mine).expect("measurements"), kept);
    // A held-out file none of whose rows can be modelled checks nothing.
    let none = temp_file(
        "none.csv",
        &format!(
            "{header}c,h100-sxm,8,no-such-model,fp8,,none,64,2048,512,throughput_tok_s,1,test,,,\n"
        ),
    );
    let o = run(&[
        "calibrate",
        "--points",
        mine_s,
        "--check",
        none.to_str().expect("path"),
    ]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err.contains("none.csv: none of its 1 rows could be modelled"),
        "{err}"
    );
}

fn out_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-sim-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn simulate_runs_the_builtin_scenario_and_writes_its_reports() {
    let dir = out_dir("builtin");
    let o = run(&[
        "simulate",
        "--requests",
        "2000",
        "--out",
        dir.to_str().expect("utf-8"),
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.is_empty(),
        "no progress bar when standard error is not a terminal: {err}"
    );
    for needle in [
        "by provider",
        "by class",
        "cs3",
        "h100",
        "interactive",
        "goodput",
        "1 x llama-3.1-70b tp1-pp4 on 4 x cs3",
        "targets: interactive: TTFT 1000 ms, TPOT 20 ms",
    ] {
        assert!(out.contains(needle), "missing {needle} in\n{out}");
    }
    let csv = std::fs::read_to_string(dir.join("requests.csv")).expect("csv");
    assert_eq!(csv.lines().count(), 2001);
    assert!(csv.starts_with("id,class,provider"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).expect("json"))
            .expect("valid JSON");
    assert_eq!(json["arrivals"], 2000);
    assert_eq!(json["providers"].as_array().map(Vec::len), Some(2));
    assert_eq!(json["targets"][0]["name"], "interactive");
    assert_eq!(json["targets"][0]["tpot_s"], 0.02);
    let html = std::fs::read_to_string(dir.join("report.html")).expect("html");
    assert!(html.contains("<svg") && html.contains("Time to first token"));
    assert!(html.contains("Deployments") && html.contains("llama-3.1-70b tp1-pp4 on 4 x cs3"));
    assert!(!html.contains("<script"));
    // A run without the per-request file leaves none of an earlier run beside its summary.
    let o = run(&[
        "simulate",
        "--requests",
        "20",
        "--no-csv",
        "--out",
        dir.to_str().expect("utf-8"),
    ]);
    assert!(o.status.success(), "{}", text(&o).1);
    assert!(!dir.join("requests.csv").exists());
}

#[test]
fn simulate_outputs_are_byte_identical_for_a_seed() {
    let go = |name: &str, seed: &str| {
        let dir = out_dir(name);
        let o = run(&[
            "simulate",
            "--scenario",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../scenarios/outage.toml"),
            "--requests",
            "3000",
            "--rate-x",
            "4",
            "--seed",
            seed,
            "--out",
            dir.to_str().expect("utf-8"),
        ]);
        assert!(o.status.success(), "{}", text(&o).1);
        ["requests.csv", "summary.json", "report.html"]
            .map(|f| std::fs::read(dir.join(f)).expect("output"))
    };
    let a = go("a", "5");
    let b = go("b", "5");
    let c = go("c", "6");
    assert_eq!(a, b);
    assert_ne!(a[0], c[0]);
}

#[test]
fn simulate_names_the_file_line_and_field_of_a_bad_scenario() {
    let path = temp_file(
        "bad-scenario.toml",
        "model = \"llama-3.1-8b\"\n[[provider]]\nname = \"a\"\nsystem = \"tpu-v9\"\n[workload]\nrequests = 5\narrival = { process = \"poisson\", rate = 1.0 }\nprompt = { dist = \"fixed\", tokens = 10 }\noutput = { dist = \"fixed\", tokens = 10 }\n",
    );
    let o = run(&["simulate", "--scenario", path.to_str().expect("utf-8")]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("bad-scenario.toml"), "{err}");
    assert!(
        err.contains("line 4") && err.contains("field `system`"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // A trace the scenario names but that is not there: the scenario's line and field.
    let missing = temp_file(
        "missing-trace.toml",
        "model = \"llama-3.1-8b\"\n[[provider]]\nname = \"a\"\nsystem = \"h100-sxm\"\n[workload]\ntrace = \"no-such-trace.csv\"\n",
    );
    let o = run(&["simulate", "--scenario", missing.to_str().expect("utf-8")]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("missing-trace.toml: line 6: field `trace`")
            && err.contains("no-such-trace.csv"),
        "{err}"
    );
    let o = run(&[
        "simulate",
        "--trace",
        path.to_str().expect("utf-8"),
        "--requests",
        "10",
    ]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("line 1") && err.contains("num_prefill_tokens"),
        "{err}"
    );
    // A trace of lengths only takes its times from the scenario's process, and without one
    // says so.
    let lengths = temp_file(
        "lengths.csv",
        "num_prefill_tokens,num_decode_tokens\n700,30\n1200,80\n",
    );
    let process = temp_file("process.toml", "model = \"llama-3.1-8b\"\n[[provider]]\nname = \"a\"\nsystem = \"h100-sxm\"\nchips = 1\n[workload]\nrequests = 20\narrival = { process = \"poisson\", rate = 2.0 }\n");
    let dir = out_dir("lengths");
    let out = prints(
        &[
            "simulate",
            "--scenario",
            process.to_str().expect("utf-8"),
            "--trace",
            lengths.to_str().expect("utf-8"),
            "--out",
            dir.to_str().expect("utf-8"),
            "--json",
        ],
        &[],
    );
    let summary: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(summary["completed"], 20, "{out}");
    // Without a scenario's process to draw them, the trace is at fault, not the built-in
    // scenario (which replays its own trace's times).
    refused(
        &["simulate", "--trace", lengths.to_str().expect("utf-8")],
        &format!(
            "{}: line 1: the trace holds lengths only, no arrival column",
            lengths.display()
        ),
    );
    // A --requests past what a run simulates is the flag's fault, not the file's.
    let o = run(&[
        "simulate",
        "--scenario",
        process.to_str().expect("utf-8"),
        "--requests",
        "18446744073709551615",
    ]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(
        err.trim(),
        "error: --requests 1.84e19 is past the 5e7 requests a run simulates"
    );
    // A scenario of the fleet alone replays a timed trace given beside it, which is its
    // workload; without one, it is refused for lacking the table.
    let fleet = temp_file(
        "fleet-only.toml",
        "model = \"llama-3.1-8b\"\n[[provider]]\nname = \"a\"\nsystem = \"h100-sxm\"\nchips = 1\n",
    );
    let timed = temp_file(
        "timed.csv",
        "arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,700,30\n0.5,1200,80\n",
    );
    let out = prints(
        &[
            "simulate",
            "--scenario",
            fleet.to_str().expect("utf-8"),
            "--trace",
            timed.to_str().expect("utf-8"),
            "--out",
            out_dir("fleet-only").to_str().expect("utf-8"),
            "--json",
        ],
        &[],
    );
    let summary: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(summary["completed"], 2, "{out}");
    refused(
        &["simulate", "--scenario", fleet.to_str().expect("utf-8")],
        &format!("{}: no [workload] table", fleet.display()),
    );
    // Values that would hang the run or exhaust memory are refused with their field.
    let base = "model = \"llama-3.1-8b\"\nduration_s = 10\n[[provider]]\nname = \"a\"\nsystem = \"h100-sxm\"\n[workload]\narrival = { process = \"poisson\", rate = 1.0 }\nprompt = { dist = \"fixed\", tokens = 10 }\noutput = { dist = \"fixed\", tokens = 10 }\n";
    let slow = format!("{base}[[failure]]\nkind = \"slowdown\"\nprovider = \"a\"\nfactor = inf\nstart_s = 1.0\nend_s = 2.0\n");
    for (toml, field) in [
        (
            base.replace("duration_s = 10", "duration_s = nan"),
            "duration_s",
        ),
        (
            base.replace(
                "process = \"poisson\"",
                "process = \"diurnal\", period_s = 0.0",
            ),
            "period_s",
        ),
        (
            base.replace("process = \"poisson\"", "process = \"gamma\", cv = inf"),
            "cv",
        ),
        (slow, "factor"),
        (
            base.replace(
                "system = \"h100-sxm\"",
                "system = \"h100-sxm\"\nlayout = \"tp1-dp4\"",
            ),
            "replicas = 4",
        ),
    ] {
        let path = temp_file("odd-scenario.toml", &toml);
        let o = run(&["simulate", "--scenario", path.to_str().expect("utf-8")]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{toml}: {err}");
        assert!(err.contains(field), "{toml}: {err}");
    }
    // A process with nothing to end it, and limits of 0 that would run nothing, are refused
    // at the line that sets them (a top-level table's key in its own table).
    for (toml, needle) in [
        (
            base.replace("duration_s = 10\n", ""),
            "line 5, field `workload.requests`",
        ),
        (
            format!("{base}[router]\npolicy = \"latency\"\neject_after = 0\n"),
            "line 12, field `router.eject_after`",
        ),
        (
            format!("{base}[router]\nmax_attempts = 0\n"),
            "line 11, field `router.max_attempts`",
        ),
        (
            base.replace(
                "system = \"h100-sxm\"",
                "system = \"h100-sxm\"\nmax_batch = 0",
            ),
            "line 6, field `max_batch`",
        ),
        (
            base.replace("rate = 1.0", "rate = -1.0"),
            "line 7, field `workload.arrival.rate`",
        ),
        // A key missing from an inline table: the table's line, not its section's.
        (
            base.replace("process = \"poisson\"", "process = \"gamma\""),
            "line 7, field `workload.arrival.cv`: a gamma process needs `cv`",
        ),
        // A negative count: the type's bound, claiming no lower one that 0 would break.
        (
            base.replace(
                "system = \"h100-sxm\"",
                "system = \"h100-sxm\"\nreplicas = -1",
            ),
            "line 6, column 12, field `replicas`: invalid value: integer `-1`, expected a whole number, not negative, up to 4294967295",
        ),
    ] {
        let path = temp_file("zero-scenario.toml", &toml);
        let o = run(&["simulate", "--scenario", path.to_str().expect("utf-8")]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{toml}: {err}");
        assert!(err.contains(needle), "{toml}: {err}");
    }
    // A run too short for any request to arrive is refused as one of no requests, and
    // leaves no empty requests.csv behind.
    let path = temp_file(
        "short-scenario.toml",
        &base.replace("duration_s = 10", "duration_s = 0.001"),
    );
    let dir = std::env::temp_dir().join(format!("switchyard-short-{}", std::process::id()));
    let o = run(&[
        "simulate",
        "--scenario",
        path.to_str().expect("utf-8"),
        "--out",
        dir.to_str().expect("utf-8"),
    ]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("no request arrives in the run of"), "{err}");
    assert!(!dir.join("requests.csv").exists());
}

/// A trace given on the command line is replayed, arrival times and lengths, even where the
/// scenario writes a synthetic workload; and arguments that cannot make a run are refused.
#[test]
fn simulate_replays_the_trace_it_is_given() {
    let scenario = temp_file(
        "synthetic.toml",
        "model = \"llama-3.1-8b\"\n[[provider]]\nname = \"a\"\nsystem = \"h100-sxm\"\n[workload]\narrival = { process = \"poisson\", rate = 1.0 }\nprompt = { dist = \"fixed\", tokens = 10 }\noutput = { dist = \"fixed\", tokens = 10 }\n",
    );
    let trace = temp_file(
        "three.csv",
        "arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,123,45\n0.5,123,45\n1.0,123,45\n",
    );
    let dir = out_dir("replay");
    let o = run(&[
        "simulate",
        "--scenario",
        scenario.to_str().expect("utf-8"),
        "--trace",
        trace.to_str().expect("utf-8"),
        "--out",
        dir.to_str().expect("utf-8"),
    ]);
    assert!(o.status.success(), "{}", text(&o).1);
    let csv = std::fs::read_to_string(dir.join("requests.csv")).expect("csv");
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{csv}");
    for r in rows {
        let cells: Vec<&str> = r.split(',').collect();
        assert_eq!((cells[5], cells[6]), ("123", "45"), "{r}");
    }
    let o = run(&["simulate", "--requests", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o).1);
    // A file, or a folder under a file, cannot be the output folder: the user's to change,
    // named.
    for (out, says) in [
        (trace.clone(), "is a file"),
        (trace.join("out"), "cannot create the folder"),
    ] {
        let o = run(&[
            "simulate",
            "--requests",
            "5",
            "--out",
            out.to_str().expect("utf-8"),
        ]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(says), "{err}");
    }
}

#[test]
fn plan_runs_the_builtin_scenario_and_writes_its_reports() {
    let dir = std::env::temp_dir().join(format!("switchyard-plan-{}", std::process::id()));
    let o = run(&["plan", "--out", dir.to_str().expect("utf-8")]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    for needle in [
        "== phase 2026",
        "== phase 2028",
        "cerebras",
        "N-1",
        "confirmed",
        // Each option's price says whether it is rented or bought.
        "an hour each",
        " owned)",
    ] {
        assert!(out.contains(needle), "missing {needle} in\n{out}");
    }
    assert!(!out.contains("NO PLAN"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("plan.json")).expect("json"))
            .expect("valid JSON");
    assert_eq!(json["phases"].as_array().map(Vec::len), Some(3));
    let html = std::fs::read_to_string(dir.join("plan.html")).expect("html");
    assert!(html.contains("<svg") && html.contains("Megawatts used by provider"));
    let o = run(&[
        "plan",
        "--lose",
        "amd-cloud",
        "--demand-x",
        "0.5",
        "--mw-is",
        "it",
        "--out",
        dir.to_str().expect("utf-8"),
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    // Named as left out, and nowhere else.
    assert!(
        out.contains("what if: without amd-cloud, demand x 0.5, MW as IT power"),
        "{out}"
    );
    assert_eq!(out.matches("amd-cloud").count(), 1, "{out}");
}

/// A plan that does not hold (no system meets a 1 ms TPOT) exits 1, saying why, with its
/// reports written all the same.
#[test]
fn a_plan_that_does_not_hold_fails_the_command() {
    let plan = include_str!("../../../../scenarios/plan-750mw.toml");
    let from = "tpot_ms = 6.5";
    assert!(plan.contains(from), "{from}");
    let path = temp_file("tight-plan.toml", &plan.replacen(from, "tpot_ms = 1.0", 1));
    let dir = std::env::temp_dir().join(format!("switchyard-tight-{}", std::process::id()));
    let o = run(&[
        "plan",
        "--scenario",
        path.to_str().expect("utf-8"),
        "--out",
        dir.to_str().expect("utf-8"),
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(out.contains("NO PLAN"), "{out}");
    assert!(err.contains("phase 2026 has no plan"), "{err}");
    assert!(dir.join("plan.json").exists());
    // Read by no one (`switchyard plan | head -1`, its reader gone), it still exits 1: a
    // closed pipe neither panics nor passes for success.
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["plan", "--scenario", path.to_str().expect("utf-8"), "--out"])
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("binary runs");
    drop(child.stdout.take());
    drop(child.stderr.take());
    assert_eq!(child.wait().expect("waits").code(), Some(1));
}

/// Output that cannot be written (a full disk) fails the command, saying so, where a reader
/// that went away (`| head`) ends it quietly.
#[test]
fn output_that_cannot_be_written_fails_the_command() {
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        return;
    };
    let o = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "estimate",
            "--model",
            "llama-3.1-8b",
            "--hardware",
            "h100-sxm",
            "--json",
        ])
        .stdout(full)
        .output()
        .expect("binary runs");
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("writing to standard output"), "{err}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["catalog", "systems"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("binary runs");
    drop(child.stdout.take());
    assert_eq!(child.wait().expect("waits").code(), Some(0));
}

#[test]
fn plan_rejects_bad_input_with_one_line() {
    let o = run(&["plan", "--mw-is", "grid"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--mw-is"), "{err}");
    // Factors past a million either way, where demand rounds to nothing or times lose
    // their precision, are refused.
    for args in [
        ["plan", "--demand-x", "1e-9"],
        ["plan", "--demand-x", "1e300"],
        ["simulate", "--rate-x", "1e-15"],
    ] {
        let o = run(&args);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("1,000,000"), "{args:?}: {err}");
    }
    // Values the solver or the confirming simulation cannot work with are refused with
    // their field, not run: a negative life made buying more cheaper, a NaN run hung.
    let plan = include_str!("../../../../scenarios/plan-750mw.toml");
    for (from, to, field) in [
        ("life_years = 5.0", "life_years = -5.0", "life_years"),
        ("confirm_s = 20", "confirm_s = nan", "confirm_s"),
    ] {
        assert!(plan.contains(from), "{from}");
        let path = temp_file("odd-plan.toml", &plan.replacen(from, to, 1));
        let o = run(&["plan", "--scenario", path.to_str().expect("utf-8")]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{to}: {err}");
        assert!(err.contains(field), "{to}: {err}");
    }
    let path = temp_file("bad-plan.toml", "[[phase]]\nname = \"p\"\n[[provider]]\nname = \"x\"\nsystems = [\"h100-sxm\"]\nmw = \"lots\"\n");
    let o = run(&["plan", "--scenario", path.to_str().expect("utf-8")]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("bad-plan.toml") && err.contains("line 6") && err.contains("mw"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// A parameters file's default lengths are the lengths estimate and compare take when no
/// flag or workload gives them.
#[test]
fn a_parameters_files_default_lengths_apply() {
    let params = temp_file("lengths.toml", "default_isl = 4096\ndefault_osl = 128\n");
    let p = params.to_str().expect("utf-8");
    prints(
        &[
            "--params",
            p,
            "estimate",
            "--model",
            "llama-3.1-8b",
            "--hardware",
            "h100-sxm",
        ],
        &["isl 4096, osl 128"],
    );
    prints(
        &["--params", p, "compare", "--model", "llama-3.1-8b"],
        &["4096 in / 128 out tokens"],
    );
}

/// Weights in a format the chip has no units for are said to multiply in the wider one it
/// has, and a weight scheme is no KV-cache format.
#[test]
fn formats_a_chip_lacks_are_named_and_weight_schemes_are_no_kv_format() {
    prints(
        &"estimate --model llama-3.1-70b --hardware h100-sxm --precision fp4"
            .split(' ')
            .collect::<Vec<_>>(),
        &["fp4 weights (multiplied in fp8: the catalog gives h100-sxm no fp4 rate)"],
    );
    let out = prints(
        &"compare --model llama-3.1-70b --hardware h100-sxm,b200 --precision fp4"
            .split(' ')
            .collect::<Vec<_>>(),
        &["^ the catalog gives the chip no rate for this format"],
    );
    assert!(
        row_of(&out, "h100-sxm").contains("fp4^") && !row_of(&out, "b200").contains("fp4^"),
        "{out}"
    );
    // FP16 multiplies at the BF16 rate: nothing is widened, nothing said.
    let out = prints(
        &"estimate --model llama-3.1-8b --hardware h100-sxm --precision fp16"
            .split(' ')
            .collect::<Vec<_>>(),
        &["fp16 weights"],
    );
    assert!(!out.contains("multiplied in"), "{out}");
    for kv in ["w4a8", "w4a16"] {
        refused(
            &[
                "estimate",
                "--model",
                "llama-3.1-8b",
                "--hardware",
                "h100-sxm",
                "--kv-precision",
                kv,
            ],
            "is a scheme for weights",
        );
    }
}

/// Under the cost policy a provider without a price is ranked after every priced one, and
/// the run says so.
#[test]
fn simulate_notes_an_unpriced_provider_under_the_cost_policy() {
    let path = temp_file(
        "cost-policy.toml",
        "model = \"llama-3.1-70b\"\n[router]\npolicy = \"cost\"\n[[provider]]\nname = \"wafer\"\nsystem = \"cs3\"\nchips = 4\n[[provider]]\nname = \"gpu\"\nsystem = \"h100-sxm\"\nchips = 8\n[workload]\nrequests = 20\narrival = { process = \"poisson\", rate = 1.0 }\nprompt = { dist = \"fixed\", tokens = 100 }\noutput = { dist = \"fixed\", tokens = 10 }\n",
    );
    let dir = std::env::temp_dir().join(format!("switchyard-cost-{}", std::process::id()));
    let o = run(&[
        "simulate",
        "--scenario",
        path.to_str().expect("utf-8"),
        "--no-csv",
        "--out",
        dir.to_str().expect("utf-8"),
    ]);
    let (_, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("note: wafer has no price, so the cost policy sends it only what the priced providers cannot take"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
