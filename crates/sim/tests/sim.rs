//! The simulator against queueing theory, its own accounting, the example scenarios and bad
//! input.

use switchyard_perf::{Batch, Catalog, Params};
use switchyard_sim::{
    parse_trace, simulate, Arrivals, Histogram, Lengths, MaxTokens, Overrides, Record, RunOptions,
    Scenario, ScenarioFile, SimError, Summary, Workload, WorkloadSpec,
};

const CONV: &str = include_str!("../../../traces/splitwise_conv.csv");
const WAFER_VS_GPU: &str = include_str!("../../../scenarios/wafer-vs-gpu.toml");
const OUTAGE: &str = include_str!("../../../scenarios/outage.toml");
const PREFIX_CACHE: &str = include_str!("../../../scenarios/prefix-cache.toml");
const MOONCAKE: &str = include_str!("../../../traces/mooncake_conversation.jsonl");

fn resolve<'a>(
    text: &str,
    cat: &'a Catalog,
    params: &Params,
    trace: bool,
) -> Result<Scenario<'a>, SimError> {
    let file = ScenarioFile::parse(text, "test.toml")?;
    let rows = trace.then(|| parse_trace(CONV, "splitwise_conv.csv").expect("trace"));
    file.resolve(text, "test.toml", cat, params, rows, &Overrides::default())
}

fn run(scn: &Scenario<'_>, params: &Params) -> (Summary, String) {
    let mut csv = String::new();
    let (s, _) = simulate(
        scn,
        params,
        RunOptions::default(),
        |r: &Record<'_>| r.write_csv(&mut csv),
        &mut |_| {},
    );
    (s, csv)
}

/// The summary of `text`, a scenario without a trace, run on the built-in catalog.
fn simulated(text: &str) -> Summary {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    run(&resolve(text, &cat, &p, false).expect("scenario"), &p).0
}

/// A single replica serving one request at a time: a single-server FIFO queue.
fn single_server(rate: f64, output: &str) -> String {
    format!(
        r#"
model = "llama-3.1-8b"
seed = 11
[[provider]]
name = "q"
system = "h100-sxm"
chips = 1
max_batch = 1
[workload]
requests = 1000000
arrival = {{ process = "poisson", rate = {rate} }}
prompt = {{ dist = "fixed", tokens = 1 }}
output = {output}
"#
    )
}

/// Service time of a request with `n` output tokens on the single-server replica, from the
/// performance model step by step: a one-token prefill, then n − 1 decode steps.
fn service(scn: &Scenario<'_>, p: &Params, n: u32) -> f64 {
    let d = &scn.providers[0].deployment;
    let prefill = Batch {
        prefill_tokens: 1,
        prefill_ctx: 0.5,
        ..Batch::default()
    };
    let mut s = d.step_time(p, &prefill);
    for kv in 1..n {
        let b = Batch {
            decode_seqs: 1,
            decode_ctx: f64::from(kv),
            ..Batch::default()
        };
        s += d.step_time(p, &b);
    }
    s
}

#[test]
fn m_d_1_mean_wait_matches_the_closed_form() {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    // Probe the service time with any rate, then set the rate for a load of 0.5.
    let probe = resolve(
        &single_server(1.0, "{ dist = \"fixed\", tokens = 4 }"),
        &cat,
        &p,
        false,
    )
    .expect("resolves");
    let s = service(&probe, &p, 4);
    let rho = 0.5;
    let lambda = rho / s;
    let scn = resolve(
        &single_server(lambda, "{ dist = \"fixed\", tokens = 4 }"),
        &cat,
        &p,
        false,
    )
    .expect("resolves");
    let (sum, _) = run(&scn, &p);
    assert_eq!(sum.completed, 1_000_000);
    // M/D/1 (Pollaczek–Khinchine with zero service variance): Wq = ρS / (2(1 − ρ)).
    let expected = rho * s / (2.0 * (1.0 - rho));
    let measured = sum.fleet.queue_s.mean.expect("waits");
    let err = (measured - expected).abs() / expected;
    assert!(
        err < 0.02,
        "M/D/1: measured {measured}, expected {expected}"
    );
    // Every request's service is the same: end-to-end minus queueing is S.
    let e2e = sum.fleet.e2e_s.mean.expect("e2e");
    assert!(
        ((e2e - measured) - s).abs() / s < 1e-6,
        "service {}",
        e2e - measured
    );
}

#[test]
fn m_m_1_mean_wait_matches_the_closed_form() {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let m = 50.0;
    let output = format!("{{ dist = \"exponential\", mean = {m} }}");
    let probe = resolve(&single_server(1.0, &output), &cat, &p, false).expect("resolves");
    // Output lengths are an exponential rounded up, so geometric: P(N = n) =
    // e^{-(n-1)/m} − e^{-n/m}. The service-time moments follow from the step times.
    let (mut es, mut es2, mut mass) = (0.0, 0.0, 0.0);
    let mut s = service(&probe, &p, 1);
    let d = &probe.providers[0].deployment;
    for n in 1..4000u32 {
        if n > 1 {
            let b = Batch {
                decode_seqs: 1,
                decode_ctx: f64::from(n - 1),
                ..Batch::default()
            };
            s += d.step_time(&p, &b);
        }
        let pr = (-(f64::from(n) - 1.0) / m).exp() - (-f64::from(n) / m).exp();
        es += pr * s;
        es2 += pr * s * s;
        mass += pr;
    }
    assert!((mass - 1.0).abs() < 1e-9);
    let cv2 = es2 / (es * es) - 1.0;
    assert!(cv2 > 0.97, "service is close to exponential: cv² {cv2}");
    let rho = 0.5;
    let lambda = rho / es;
    let scn = resolve(&single_server(lambda, &output), &cat, &p, false).expect("resolves");
    let (sum, _) = run(&scn, &p);
    let measured = sum.fleet.queue_s.mean.expect("waits");
    // M/M/1: Wq = ρ / (μ − λ) = ρ·E[S] / (1 − ρ).
    let mm1 = rho * es / (1.0 - rho);
    let err = (measured - mm1).abs() / mm1;
    assert!(err < 0.02, "M/M/1: measured {measured}, closed form {mm1}");
    // And the exact M/G/1 value for this service distribution (Pollaczek–Khinchine).
    let pk = lambda * es2 / (2.0 * (1.0 - rho));
    assert!(
        (measured - pk).abs() / pk < 0.02,
        "P-K: measured {measured}, expected {pk}"
    );
}

#[test]
fn littles_law_holds_on_the_per_request_records() {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let scn = resolve(WAFER_VS_GPU, &cat, &p, true).expect("resolves");
    let (sum, csv) = run(&scn, &p);
    assert_eq!(sum.arrivals, 19_366);
    assert_eq!(sum.completed + sum.failed, sum.arrivals);
    // W from the records themselves (their `e2e_s` column), λ from the count and the run's
    // length.
    let column = Record::CSV_HEADER
        .split(',')
        .position(|c| c == "e2e_s")
        .expect("an e2e_s column");
    let e2e: Vec<f64> = csv
        .lines()
        .map(|l| {
            l.split(',')
                .nth(column)
                .expect("e2e")
                .parse()
                .expect("number")
        })
        .collect();
    assert_eq!(e2e.len() as u64, sum.arrivals);
    let w = e2e.iter().sum::<f64>() / e2e.len() as f64;
    let lambda = e2e.len() as f64 / sum.duration_s;
    let l = sum.little.mean_in_system;
    assert!(
        (l - lambda * w).abs() / l < 1e-3,
        "L {l} against λW {}",
        lambda * w
    );
    let goodput = sum.fleet.goodput.expect("its classes set targets");
    assert!(goodput > 0.5 && goodput <= 1.0);
    assert!(sum.providers.iter().all(|g| g.requests > 0));
}

#[test]
fn a_warm_up_is_reported_apart_from_the_whole_run() {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let text = format!("warmup_s = 600\n{WAFER_VS_GPU}");
    let scn = resolve(&text, &cat, &p, true).expect("resolves");
    let (sum, csv) = run(&scn, &p);
    let steady = sum.steady.expect("a warm-up gives a steady-state group");
    // The group holds exactly the requests whose arrival (fifth column) is at 600 s or later.
    let after = csv
        .lines()
        .filter(|l| {
            let at: f64 = l
                .split(',')
                .nth(4)
                .expect("arrival")
                .parse()
                .expect("number");
            at >= 600.0
        })
        .count() as u64;
    assert_eq!(steady.completed + steady.failed, after);
    assert!(after > 0 && after < sum.arrivals);
    assert!(resolve(WAFER_VS_GPU, &cat, &p, true)
        .map(|s| run(&s, &p).0.steady.is_none())
        .expect("resolves"));
}

#[test]
fn the_same_seed_gives_the_same_outputs_and_another_seed_does_not() {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let scn = resolve(WAFER_VS_GPU, &cat, &p, true).expect("resolves");
    let (a, csv_a) = run(&scn, &p);
    let (b, csv_b) = run(&scn, &p);
    assert_eq!(a, b);
    assert_eq!(csv_a, csv_b);
    let mut other = scn.clone();
    other.seed = 2;
    let (_, csv_c) = run(&other, &p);
    assert_ne!(csv_a, csv_c, "the seed draws the classes");
}

#[test]
fn an_outage_moves_traffic_to_the_survivors_and_loses_no_request() {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let scn = resolve(OUTAGE, &cat, &p, true).expect("resolves");
    let (sum, csv) = run(&scn, &p);
    assert_eq!(sum.completed + sum.failed, sum.arrivals);
    let rows = csv.lines().count() as u64;
    assert_eq!(rows, sum.arrivals, "one record per arrival");
    let failed_rows = csv.lines().filter(|l| l.contains(",failed,")).count() as u64;
    assert_eq!(failed_rows, sum.failed);
    let by_reason: u64 = sum.failures.iter().map(|f| f.count).sum();
    assert_eq!(by_reason, sum.failed);
    let h200 = scn
        .providers
        .iter()
        .position(|q| q.name == "h200")
        .expect("h200");
    // No tokens from the failed provider while it is down (bins fully inside the window).
    for b in &sum.bins {
        if b.start_s >= 1200.0 && b.start_s + sum.bin_s <= 1800.0 {
            assert_eq!(b.tokens[h200], 0, "bin at {}", b.start_s);
        }
    }
    // Requests that failed on it before their first token completed elsewhere.
    let survivors_fallbacks: u64 = sum
        .providers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != h200)
        .map(|(_, g)| g.fallbacks_in)
        .sum();
    assert!(survivors_fallbacks > 0);
    assert_eq!(sum.providers[h200].fallbacks_in, 0);
    // The window's requests pay for it: the survivors are busier, so slower.
    let w = &sum.failure_windows[0];
    assert!(w.requests > 0);
    assert!(
        w.tpot_s.p99 > sum.fleet.tpot_s.p99,
        "{:?} vs {:?}",
        w.tpot_s,
        sum.fleet.tpot_s
    );
}

#[test]
fn a_slowdown_costs_latency_and_a_dead_replica_sends_its_work_elsewhere() {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let base = r#"
model = "llama-3.1-8b"
[[provider]]
name = "gpu"
system = "h100-sxm"
chips = 1
replicas = 2
[workload]
requests = 4000
arrival = { process = "poisson", rate = 20.0 }
prompt = { dist = "fixed", tokens = 500 }
output = { dist = "fixed", tokens = 100 }
"#;
    let (calm, _) = run(&resolve(base, &cat, &p, false).expect("ok"), &p);
    let slow = format!(
        "{base}[[failure]]\nkind = \"slowdown\"\nprovider = \"gpu\"\nfactor = 3.0\nstart_s = 0\nend_s = 1000\n"
    );
    let (slowed, _) = run(&resolve(&slow, &cat, &p, false).expect("ok"), &p);
    let tpot = |s: &Summary| s.fleet.tpot_s.p50.expect("tpot");
    assert!(
        tpot(&slowed) > 2.5 * tpot(&calm),
        "{} vs {}",
        tpot(&slowed),
        tpot(&calm)
    );
    let dead = format!(
        "{base}[[failure]]\nkind = \"replica\"\nprovider = \"gpu\"\nreplica = 1\nstart_s = 50\n"
    );
    let scn = resolve(&dead, &cat, &p, false).expect("ok");
    let (s, csv) = run(&scn, &p);
    assert_eq!(s.completed + s.failed, 4000);
    // After the failure every completion is on replica 0.
    for l in csv.lines() {
        let f: Vec<&str> = l.split(',').collect();
        let arrival: f64 = f[4].parse().expect("arrival");
        if arrival > 60.0 && f[8] == "ok" {
            assert_eq!(f[3], "0", "{l}");
        }
    }
}

#[test]
fn a_small_kv_cache_preempts_and_still_completes_everything() {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    // 70B in 16 bits fills most of four wafers' SRAM: long requests must take turns in the
    // KV cache that is left.
    let text = r#"
model = "llama-3.1-70b"
[[provider]]
name = "tight"
system = "cs3"
[workload]
requests = 300
arrival = { process = "poisson", rate = 5.0 }
prompt = { dist = "fixed", tokens = 3000 }
output = { dist = "fixed", tokens = 400 }
"#;
    let scn = resolve(text, &cat, &p, false).expect("resolves");
    let (s, _) = run(&scn, &p);
    assert_eq!(s.completed, 300);
    assert!(s.providers[0].preemptions.expect("counted") > 0);
}

#[test]
fn workloads_have_the_rates_and_shapes_they_claim() {
    let spec = |arrivals| WorkloadSpec {
        arrivals,
        prompt: Lengths::LogNormal {
            median: 1000.0,
            sigma: 0.5,
        },
        output: Lengths::Exponential(100.0),
        class_shares: vec![3.0, 1.0],
        max_requests: Some(200_000),
        horizon_s: None,
    };
    let w: Vec<_> = Workload::new(spec(Arrivals::Poisson { rate: 10.0 }), Vec::new(), 1).collect();
    let span = w.last().expect("some").at;
    assert!((w.len() as f64 / span - 10.0).abs() < 0.1);
    let share0 = w.iter().filter(|a| a.class == 0).count() as f64 / w.len() as f64;
    assert!((share0 - 0.75).abs() < 0.01);
    let mut prompts: Vec<u32> = w.iter().map(|a| a.prompt).collect();
    prompts.sort_unstable();
    let median = prompts[prompts.len() / 2];
    assert!((980..=1020).contains(&median), "median {median}");
    // Gamma gaps with cv 3: same rate, burstier.
    let g: Vec<_> = Workload::new(
        spec(Arrivals::Gamma {
            rate: 10.0,
            cv: 3.0,
        }),
        Vec::new(),
        1,
    )
    .collect();
    let gaps: Vec<f64> = g.windows(2).map(|x| x[1].at - x[0].at).collect();
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    let var = gaps.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
    assert!((mean - 0.1).abs() < 0.005, "mean gap {mean}");
    assert!(
        (var.sqrt() / mean - 3.0).abs() < 0.15,
        "cv {}",
        var.sqrt() / mean
    );
    // Trace replay at twice the speed halves every time.
    let rows = parse_trace(CONV, "conv").expect("trace");
    let t = |rate_x| {
        let s = WorkloadSpec {
            arrivals: Arrivals::Trace { rate_x },
            prompt: Lengths::FromTrace,
            output: Lengths::FromTrace,
            class_shares: vec![1.0],
            max_requests: None,
            horizon_s: None,
        };
        Workload::new(s, rows.clone(), 1).collect::<Vec<_>>()
    };
    let (a, b) = (t(1.0), t(2.0));
    assert_eq!(a.len(), 19_366);
    assert!((b[1000].at * 2.0 - a[1000].at).abs() < 1e-9);
    assert_eq!((a[5].prompt, a[5].output), (rows[5].prompt, rows[5].output));
}

#[test]
fn bad_scenarios_name_the_line_and_field() {
    // Each error names the line that sets the field at fault, within its table.
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let check = |text: &str, needles: &[&str]| {
        let e = resolve(text, &cat, &p, false).expect_err("bad").to_string();
        for n in needles {
            assert!(e.contains(n), "`{n}` missing from: {e}");
        }
    };
    let good = "model = \"llama-3.1-8b\"\n[[provider]]\nname = \"a\"\nsystem = \"h100-sxm\"\n[workload]\nrequests = 10\narrival = { process = \"poisson\", rate = 1.0 }\nprompt = { dist = \"fixed\", tokens = 10 }\noutput = { dist = \"fixed\", tokens = 10 }\n";
    resolve(good, &cat, &p, false).expect("the base is good");
    // What requests state as max_tokens: each its own output, none, or a number.
    for (value, want) in [
        ("\"output\"", MaxTokens::Output),
        ("\"none\"", MaxTokens::Unstated),
        ("300", MaxTokens::Fixed(300)),
    ] {
        let text = format!("{good}[router]\nmax_tokens = {value}\n");
        let scn = resolve(&text, &cat, &p, false).expect("max_tokens");
        assert_eq!(scn.max_tokens, want);
    }
    check(
        &format!("{good}[router]\nmax_tokens = 0\n"),
        &["line 11", "max_tokens", "\"none\""],
    );
    // A table the file lacks is named, with what it holds, not blamed on line 1.
    check(
        &good[good.find("[workload]").expect("workload")..],
        &["test.toml", "no [[provider]] table"],
    );
    check(
        &good[..good.find("[workload]").expect("workload")],
        &["no [workload] table", "arrival process"],
    );
    check(
        &good.replace("system = \"h100-sxm\"", "system = \"h900\""),
        &["test.toml", "line 4", "field `system`", "h900"],
    );
    check(
        &good.replace("requests = 10", "requests = \"ten\""),
        &["test.toml", "line 6", "requests"],
    );
    check(
        &good.replace("rate = 1.0", "rate = 1.0, burst = 2"),
        &["line 7", "burst"],
    );
    check(
        &good.replace("\"poisson\"", "\"hawkes\""),
        &["line 7", "arrival.process", "hawkes"],
    );
    check(
        &format!(
            "{good}[[failure]]\nkind = \"outage\"\nprovider = \"b\"\nstart_s = 1\nend_s = 2\n"
        ),
        &["line 12", "field `provider`", "no provider named `b`"],
    );
    check(
        &format!(
            "{good}[[failure]]\nkind = \"outage\"\nprovider = \"a\"\nstart_s = 5\nend_s = 2\n"
        ),
        &["line 14", "end_s"],
    );
    check(
        &good.replace("name = \"a\"", "name = \"a\"\nlayout = \"tp3x\""),
        &["line 4", "layout"],
    );
    check(
        &good.replace("name = \"a\"", "name = \"a\"\nkv_precision = \"fp3\""),
        &["line 4", "kv_precision", "fp3"],
    );
    // A format the system cannot keep a KV cache in is the KV precision's fault, not the
    // chips'.
    check(
        &good.replace(
            "name = \"a\"",
            "name = \"a\"\nchips = 1\nkv_precision = \"fp4\"",
        ),
        &["line 5", "field `kv_precision`", "FP4"],
    );
    // A server's chips that the best layout splits into several replicas all serve, each
    // as a replica of the pool.
    let split = resolve(
        &good.replace("name = \"a\"", "name = \"a\"\nchips = 2\nreplicas = 3"),
        &cat,
        &p,
        false,
    )
    .expect("two chips of an 8B model");
    let pool = &split.providers[0];
    assert_eq!(pool.deployment.layout.dp, 1);
    assert_eq!(pool.replicas * pool.deployment.layout.chips(), 3 * 2);
    assert!(pool.replicas > 3, "{}", pool.deployment.layout);
    check(
        &good.replace(
            "name = \"a\"",
            "name = \"a\"\nchips = 2\nreplicas = 1000000",
        ),
        &["line 5", "field `replicas`", "1000000"],
    );
    // A pool too large to simulate is refused, not left to exhaust memory.
    check(
        &good.replace("name = \"a\"", "name = \"a\"\nreplicas = 100000000"),
        &["line 4", "replicas", "1000000"],
    );
    check(
        &good.replace("name = \"a\"", "name = \"a\"\nprefill_replicas = 100000000"),
        &["line 4", "prefill_replicas", "1000000"],
    );
    check(&format!("warmup_s = -1\n{good}"), &["line 1", "warmup_s"]);
    check(
        &format!("duration_s = 10\nwarmup_s = 20\n{good}"),
        &["line 2", "warmup_s", "duration_s"],
    );
    check(
        &good.replace("name = \"a\"", "name = \"a\"\nclasses = []"),
        &["line 4", "field `classes`", "empty list"],
    );
    check(
        &format!(
            "{}[[class]]\nname = \"c\"\nshare = 1\n",
            good.replace("name = \"a\"", "name = \"a\"\nclasses = [\"c\", \"c\"]")
        ),
        &["line 4", "field `classes`", "names `c` twice"],
    );
    check(
        &format!("{good}[[failure]]\nkind = \"slowdown\"\nprovider = \"a\"\nstart_s = 1\nend_s = 2\nfactor = 0.5\n"),
        &["field `factor`", "cannot make the hardware faster"],
    );
    for name in ["", "fleet"] {
        check(
            &good.replace("name = \"a\"", &format!("name = \"{name}\"")),
            &["line 3", "field `name`", "a name of its own"],
        );
    }
    // A failure the run never reaches is a mistake to say.
    check(
        &format!("duration_s = 10\n{good}\n[[failure]]\nkind = \"outage\"\nprovider = \"a\"\nstart_s = 10\nend_s = 20\n"),
        &["start_s", "before the run ends", "duration_s"],
    );
    // Lengths drawn from distributions with no end would hang the run.
    for (from, to, needles) in [
        (
            "output = { dist = \"fixed\", tokens = 10 }",
            "output = { dist = \"exponential\", mean = inf }",
            ["line 9", "output", "`mean` from 1"],
        ),
        (
            "prompt = { dist = \"fixed\", tokens = 10 }",
            "prompt = { dist = \"lognormal\", median = 100, sigma = 1e300 }",
            ["line 8", "prompt", "`sigma` from 0"],
        ),
        (
            "requests = 10",
            "requests = 10\nrate_x = nan",
            ["line 7", "rate_x", "0.000001 to 1,000,000"],
        ),
        (
            "requests = 10",
            "requests = 10\nrate_x = 1e9",
            ["line 7", "rate_x", "0.000001 to 1,000,000"],
        ),
        (
            "rate = 1.0",
            "rate = 1e-300",
            ["line 7", "arrival.rate", "requests a second"],
        ),
    ] {
        check(&good.replace(from, to), &needles);
    }
    // Numbers serde only types: a NaN or negative share, weight, price or target is named,
    // not turned into a routing that sends every request one way.
    let classed = format!("{good}[[class]]\nname = \"chat\"\nshare = 1.0\nttft_ms = 500\n");
    resolve(&classed, &cat, &p, false).expect("the classed base is good");
    check(
        &classed.replace("share = 1.0", "share = nan"),
        &["line 12", "field `share`", "class `chat`"],
    );
    check(
        &classed.replace("share = 1.0", "share = -1.0"),
        &["line 12", "field `share`"],
    );
    // A trace a process and two distributions leave nothing of.
    let e = resolve(good, &cat, &p, true)
        .expect_err("the trace would be unused")
        .to_string();
    assert!(e.contains("nothing of the trace to use"), "{e}");
    // A class every provider's own list leaves out.
    check(
        &format!("{classed}[[class]]\nname = \"batch\"\n").replace(
            "system = \"h100-sxm\"\n",
            "system = \"h100-sxm\"\nclasses = [\"batch\"]\n",
        ),
        &["line 12", "class `chat`", "no provider serves it"],
    );
    check(
        &classed.replace("share = 1.0", "share = 0.0"),
        &["share", "no request"],
    );
    check(
        &classed.replace("ttft_ms = 500", "ttft_ms = -5"),
        &["line 13", "field `ttft_ms`"],
    );
    check(
        &format!("{classed}[[class]]\nname = \"chat\"\n"),
        &["line 15", "field `name`", "two classes"],
    );
    check(
        &good.replace("name = \"a\"", "name = \"a\"\nweight = nan"),
        &["line 4", "field `weight`"],
    );
    check(
        &good.replace("name = \"a\"", "name = \"a\"\nusd_per_mtok = -0.5"),
        &["line 4", "field `usd_per_mtok`"],
    );
    check(
        &format!(
            "{}[router]\npolicy = \"weighted\"\n",
            good.replace("name = \"a\"", "name = \"a\"\nweight = 0.0")
        ),
        &["field `weight`", "weighted"],
    );
    check(
        &format!("{good}[router]\ncooldown_s = nan\n"),
        &["line 11", "router.cooldown_s"],
    );
    // A field the kind at hand does not read is named, not dropped.
    check(
        &good.replace("rate = 1.0", "rate = 1.0, cv = 5"),
        &[
            "line 7",
            "arrival.cv",
            "`poisson` process does not take `cv`",
        ],
    );
    check(
        &good.replace("tokens = 10 }\noutput", "tokens = 10, sigma = 3 }\noutput"),
        &["line 8", "prompt", "`fixed` does not take `sigma`"],
    );
    check(
        &format!("{good}[[failure]]\nkind = \"slowdown\"\nprovider = \"a\"\nreplica = 0\nstart_s = 1\nend_s = 2\nfactor = 2\n"),
        &["line 13", "field `replica`", "a failure of kind `slowdown` does not take `replica`"],
    );
    check(
        &format!("{good}[[failure]]\nkind = \"outage\"\nprovider = \"a\"\nstart_s = 1\nend_s = 2\nfactor = 3\n"),
        &["field `factor`", "only a `slowdown`"],
    );
}

#[test]
fn bad_traces_name_the_line_and_field() {
    // A byte-order mark before the header is not part of its first column's name.
    let rows = parse_trace(
        "\u{feff}arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,10,5\n",
        "bom.csv",
    )
    .expect("a trace with a byte-order mark");
    assert_eq!(rows.len(), 1);
    let e = parse_trace(
        "arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,10,5\n1.0,x,5\n",
        "t.csv",
    )
    .expect_err("bad")
    .to_string();
    assert!(
        e.contains("t.csv") && e.contains("line 3") && e.contains("num_prefill_tokens"),
        "{e}"
    );
    let e = parse_trace(
        "arrived_at,num_prefill_tokens,num_decode_tokens\n2.0,10,5\n1.0,10,5\n",
        "t.csv",
    )
    .expect_err("bad")
    .to_string();
    assert!(e.contains("line 3") && e.contains("non-decreasing"), "{e}");
    let e = parse_trace("time,in,out\n", "t.csv")
        .expect_err("bad")
        .to_string();
    assert!(
        e.contains("line 1") && e.contains("num_prefill_tokens"),
        "{e}"
    );
    // A row with a value past the header's columns, and a header with two columns of one
    // meaning, are refused; a trailing comma is not a value.
    let e = parse_trace(
        "arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,5\n1,10,5,7\n",
        "t.csv",
    )
    .expect_err("bad")
    .to_string();
    assert!(
        e.contains("line 3") && e.contains("4 fields where the header names 3"),
        "{e}"
    );
    parse_trace(
        "arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,5,\n",
        "t.csv",
    )
    .expect("a trailing comma");
    let e = parse_trace(
        "arrived_at,timestamp_s,num_prefill_tokens,num_decode_tokens\n0,5,10,5\n",
        "t.csv",
    )
    .expect_err("bad")
    .to_string();
    assert!(
        e.contains("line 1") && e.contains("arrived_at, timestamp_s"),
        "{e}"
    );
    // Times count from the first request's, however late in the day it came.
    let rows = parse_trace(
        "arrived_at,num_prefill_tokens,num_decode_tokens\n3600.0,10,5\n3601.5,10,5\n",
        "late.csv",
    )
    .expect("a late trace");
    assert_eq!((rows[0].arrival_s, rows[1].arrival_s), (0.0, 1.5));
    let rows = parse_trace(
        "{\"timestamp\": 7000, \"input_length\": 10, \"output_length\": 5}\n{\"timestamp\": 8500, \"input_length\": 10, \"output_length\": 5}\n",
        "late.jsonl",
    )
    .expect("a late trace");
    assert_eq!((rows[0].arrival_s, rows[1].arrival_s), (0.0, 1.5));
    // Lengths are whole tokens, at least one; arrivals within 10^9 s of the first.
    for (row, field) in [
        ("0,0,5", "num_prefill_tokens"),
        ("0,10,0", "num_decode_tokens"),
        ("0,10.5,5", "num_prefill_tokens"),
        ("1e300,10,5", "arrived_at"),
    ] {
        let e = parse_trace(
            &format!("arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,5\n{row}\n"),
            "t.csv",
        )
        .expect_err(row)
        .to_string();
        assert!(e.contains("line 3") && e.contains(field), "{row}: {e}");
    }
    let e = parse_trace(
        "{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 0.5}\n",
        "t.jsonl",
    )
    .expect_err("half a token")
    .to_string();
    assert!(e.contains("line 1") && e.contains("output_length"), "{e}");
}

/// A trace of lengths only, as Vidur's length traces are, gives a synthetic process its
/// requests' lengths; replaying it, with no times to replay, is refused with what to add.
#[test]
fn a_trace_of_lengths_only_serves_a_synthetic_process() {
    let lengths = "num_prefill_tokens,num_decode_tokens,num_total_tokens\n3772,54,3826\n2015,156,2171\n900,40,940\n";
    let rows = parse_trace(lengths, "arxiv.csv").expect("lengths only");
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.arrival_s.is_nan()));
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let base = "model = \"llama-3.1-8b\"\n[[provider]]\nname = \"a\"\nsystem = \"h100-sxm\"\nchips = 1\n[workload]\nrequests = 50\n";
    let resolve_with = |text: &str| {
        ScenarioFile::parse(text, "test.toml")
            .expect("parses")
            .resolve(
                text,
                "test.toml",
                &cat,
                &p,
                Some(rows.clone()),
                &Overrides::default(),
            )
    };
    let e = resolve_with(base).expect_err("no times").to_string();
    assert!(e.contains("arrival") && e.contains("lengths only"), "{e}");
    let text = format!("{base}arrival = {{ process = \"poisson\", rate = 2.0 }}\n");
    let scn = resolve_with(&text).expect("a process draws the times");
    let (s, csv) = run(&scn, &p);
    assert_eq!(s.completed, 50);
    // Every request is one of the trace's three.
    for line in csv.lines() {
        let f: Vec<&str> = line.split(',').collect();
        let pair = (f[5], f[6]);
        assert!(
            [("3772", "54"), ("2015", "156"), ("900", "40")].contains(&pair),
            "{line}"
        );
    }
}

#[test]
fn overlapping_failures_do_not_end_each_other() {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    // Replica 1 fails from 100 s to 400 s; the whole provider is out from 200 s to 300 s.
    let text = r#"
model = "llama-3.1-8b"
[router]
max_attempts = 1
[[provider]]
name = "gpu"
system = "h100-sxm"
chips = 1
replicas = 2
[workload]
requests = 12000
arrival = { process = "poisson", rate = 25.0 }
prompt = { dist = "fixed", tokens = 200 }
output = { dist = "fixed", tokens = 20 }
[[failure]]
kind = "replica"
provider = "gpu"
replica = 1
start_s = 100
end_s = 400
[[failure]]
kind = "outage"
provider = "gpu"
start_s = 200
end_s = 300
"#;
    let scn = resolve(text, &cat, &p, false).expect("resolves");
    let (s, csv) = run(&scn, &p);
    assert_eq!(s.completed + s.failed, s.arrivals);
    let mut after_outage_on_1 = 0;
    let mut after_recovery_on_1 = 0;
    for l in csv.lines() {
        let f: Vec<&str> = l.split(',').collect();
        let arrival: f64 = f[4].parse().expect("arrival");
        if f[8] == "ok" && f[3] == "1" {
            if (300.0..399.0).contains(&arrival) {
                after_outage_on_1 += 1;
            }
            if arrival > 401.0 {
                after_recovery_on_1 += 1;
            }
        }
    }
    assert_eq!(after_outage_on_1, 0, "replica 1 must stay down until 400 s");
    assert!(after_recovery_on_1 > 0, "and come back after");
}

#[test]
fn azure_wall_clock_and_mooncake_json_traces_replay_too() {
    let azure = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n2023-11-17 00:00:01.0,10,5\n";
    let rows = parse_trace(azure, "azure.csv").expect("azure");
    assert_eq!(rows[0].arrival_s, 0.0);
    assert!(
        (rows[1].arrival_s - 4.314579).abs() < 1e-6,
        "{}",
        rows[1].arrival_s
    );
    // Across midnight: 18:15:46.68 to 00:00:01 next day.
    assert!(
        (rows[2].arrival_s - (5.0 * 3600.0 + 44.0 * 60.0 + 14.31941)).abs() < 1e-3,
        "{}",
        rows[2].arrival_s
    );
    assert_eq!((rows[1].prompt, rows[1].output), (396, 109));
    // A time that is no time of the calendar or the clock is named with its line.
    for when in [
        "yesterday",
        "2023-11-16 25:99:04.03",
        "2023-02-31 00:00:01",
        "2023-11-16 18:-1:04",
        "2023-11-16 18:17:61",
    ] {
        let bad = format!(
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,1,1\n{when},1,1\n"
        );
        let e = parse_trace(&bad, "azure.csv").expect_err("bad").to_string();
        assert!(
            e.contains("line 3") && e.contains("TIMESTAMP") && !e.contains("decreasing"),
            "{when}: {e}"
        );
    }
    // 2024 was a leap year.
    let leap = "TIMESTAMP,ContextTokens,GeneratedTokens\n2024-02-28 23:59:59,1,1\n2024-02-29 00:00:01,1,1\n";
    let rows = parse_trace(leap, "azure.csv").expect("a leap day");
    assert!(
        (rows[1].arrival_s - 2.0).abs() < 1e-9,
        "{}",
        rows[1].arrival_s
    );
    let mooncake = "{\"timestamp\": 0, \"input_length\": 6758, \"output_length\": 500, \"hash_ids\": [0, 1]}\n{\"timestamp\": 1500, \"input_length\": 7322, \"output_length\": 490, \"hash_ids\": [0]}\n";
    let rows = parse_trace(mooncake, "m.jsonl").expect("mooncake");
    assert_eq!(rows.len(), 2);
    assert!((rows[1].arrival_s - 1.5).abs() < 1e-12);
    assert_eq!(rows[0].prompt, 6758);
    let e = parse_trace("{\"timestamp\": 0}\n", "m.jsonl")
        .expect_err("bad")
        .to_string();
    assert!(e.contains("line 1") && e.contains("input_length"), "{e}");
    // The file's line, and only the file's: serde's position within it is a column.
    let e = parse_trace(
        "{\"timestamp\": 0, \"input_length\": 5, \"output_length\": 5}\n{\"timestamp\": 1, \"input_length\": 5}\n",
        "m.jsonl",
    )
    .expect_err("bad")
    .to_string();
    assert!(
        e.contains("line 2") && !e.contains("line 1") && e.contains("column"),
        "{e}"
    );
    // A time far past the first is told in a few digits.
    let e = parse_trace(
        "{\"timestamp\": 0, \"input_length\": 5, \"output_length\": 5}\n{\"timestamp\": 5e300, \"input_length\": 5, \"output_length\": 5}\n",
        "m.jsonl",
    )
    .expect_err("bad")
    .to_string();
    assert!(e.contains("line 2") && e.len() < 200, "{e}");
    // A field of the wrong kind is named, and so is a block id that is no id.
    for (row, field) in [
        (
            "\"timestamp\": 0, \"input_length\": \"100\", \"output_length\": 5",
            "`input_length`",
        ),
        (
            "\"timestamp\": null, \"input_length\": 5, \"output_length\": 5",
            "`timestamp`",
        ),
        (
            "\"timestamp\": 0, \"input_length\": 5, \"output_length\": 5, \"hash_ids\": [0, -1]",
            "`hash_ids`: element 1",
        ),
        (
            "\"timestamp\": 0, \"input_length\": 5, \"output_length\": 5, \"hash_ids\": [1.5]",
            "`hash_ids`: element 0",
        ),
        (
            "\"timestamp\": 0, \"input_length\": 5, \"output_length\": 5, \"hash_ids\": 7",
            "`hash_ids`",
        ),
        (
            "\"timestamp\": 0, \"input_length\": 600, \"output_length\": 5, \"hash_ids\": [1, 2, 3]",
            "3 ids for a prompt of 600 tokens",
        ),
        (
            "\"timestamp\": 0, \"input_length\": 1200, \"output_length\": 5, \"hash_ids\": [1, 2, 1]",
            "element 2, 1, repeats",
        ),
    ] {
        let e = parse_trace(&format!("{{{row}}}\n"), "m.jsonl")
            .expect_err("bad")
            .to_string();
        assert!(e.contains("line 1") && e.contains(field), "{e}");
    }
    let rows = parse_trace(
        "{\"timestamp\": 0, \"input_length\": 5, \"output_length\": 5, \"hash_ids\": null}\n{\"timestamp\": 0, \"input_length\": 5, \"output_length\": 5, \"hash_ids\": [18446744073709551615]}\n",
        "m.jsonl",
    )
    .expect("ids");
    assert_eq!(rows[0].prefix, None);
    assert_eq!(rows[1].prefix.as_deref(), Some(&[u64::MAX][..]));
}

#[test]
fn a_disaggregated_provider_prefills_on_one_pool_and_decodes_on_the_other() {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let workload = |rate: f64, requests: u32| {
        format!(
            "[workload]\nrequests = {requests}\narrival = {{ process = \"poisson\", rate = {rate} }}\n\
             prompt = {{ dist = \"fixed\", tokens = 4000 }}\noutput = {{ dist = \"fixed\", tokens = 200 }}\n"
        )
    };
    let split = "model = \"llama-3.1-8b\"\n[[provider]]\nname = \"pd\"\nsystem = \"h100-sxm\"\nchips = 1\nreplicas = 3\nprefill_replicas = 1\nprefill_chips = 1\n";
    let joint = "model = \"llama-3.1-8b\"\n[[provider]]\nname = \"agg\"\nsystem = \"h100-sxm\"\nchips = 1\nreplicas = 4\n";

    // Alone, a request's first token comes from the prefill pass and reaches its client
    // with the KV cache on another replica, as the performance model's disaggregated TTFT
    // counts it; the rest come from decode steps there.
    let scn = resolve(&format!("{split}{}", workload(0.05, 40)), &cat, &p, false).expect("ok");
    let (s, _) = run(&scn, &p);
    assert_eq!(s.completed, 40);
    let pre = scn.providers[0].prefill.as_ref().expect("a prefill pool");
    let pass = pre.deployment.prefill(&p, 4000.0);
    let send = pre.deployment.kv_send_s(&p, 4000.0, pre.same_domain);
    let got = s.fleet.ttft_s.p50.expect("ttft");
    assert!(
        (got - (pass + send)).abs() < 0.1 * send,
        "{got} against {pass} + {send}"
    );
    let ttft = pass;
    let step = scn.providers[0]
        .deployment
        .decode_step(&p, 1.0, 4100.0)
        .time;
    let e2e = s.fleet.e2e_s.p50.expect("e2e");
    let want = ttft + send + 199.0 * step;
    assert!((e2e / want - 1.0).abs() < 0.05, "{e2e} against {want}");

    // Under load on the same four chips, decode steps that carry no prompts give a faster
    // time per token than replicas that interleave both.
    let (s_split, _) = run(
        &resolve(&format!("{split}{}", workload(5.0, 600)), &cat, &p, false).expect("ok"),
        &p,
    );
    let (s_joint, _) = run(
        &resolve(&format!("{joint}{}", workload(5.0, 600)), &cat, &p, false).expect("ok"),
        &p,
    );
    assert_eq!(s_split.completed, 600);
    assert_eq!(s_joint.completed, 600);
    let tpot = |s: &Summary| s.fleet.tpot_s.p50.expect("tpot");
    assert!(
        tpot(&s_split) < tpot(&s_joint),
        "{} against {}",
        tpot(&s_split),
        tpot(&s_joint)
    );

    // An outage of the provider takes both pools down; a second provider takes the prompts
    // that had not yet produced a token, and nothing goes unaccounted for. Round robin
    // keeps offering the split provider its turn, so some prompt meets the outage whether or
    // not one is in its prefill pool when it starts.
    let outage = format!(
        "{split}[router]\npolicy = \"round-robin\"\n[[provider]]\nname = \"spare\"\nsystem = \"h100-sxm\"\nchips = 1\nreplicas = 4\n{}\
         [[failure]]\nkind = \"outage\"\nprovider = \"pd\"\nstart_s = 100\nend_s = 200\n",
        workload(5.0, 600)
    );
    let (s, csv) = run(&resolve(&outage, &cat, &p, false).expect("ok"), &p);
    assert_eq!(s.completed + s.failed, 600);
    assert_eq!(csv.lines().count(), 600);
    assert!(s.providers[1].fallbacks_in > 0);

    // Prefill settings need a prefill pool.
    let bad = format!(
        "model = \"llama-3.1-8b\"\n[[provider]]\nname = \"x\"\nsystem = \"h100-sxm\"\nprefill_chips = 1\n{}",
        workload(1.0, 1)
    );
    let e = resolve(&bad, &cat, &p, false)
        .expect_err("refused")
        .to_string();
    assert!(e.contains("prefill_chips") && e.contains("line"), "{e}");
}

#[test]
fn a_disaggregated_provider_without_a_decode_replica_refuses_rather_than_failing_mid_stream() {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let text = r#"
model = "llama-3.1-8b"
[router]
policy = "round-robin"
[[provider]]
name = "pd"
system = "h100-sxm"
chips = 1
replicas = 1
prefill_replicas = 1
prefill_chips = 1
[[provider]]
name = "joint"
system = "h100-sxm"
chips = 1
replicas = 2
[workload]
requests = 400
arrival = { process = "poisson", rate = 4.0 }
prompt = { dist = "fixed", tokens = 1000 }
output = { dist = "fixed", tokens = 50 }
[[failure]]
kind = "replica"
provider = "pd"
replica = 0
start_s = 10
"#;
    let (s, csv) = run(&resolve(text, &cat, &p, false).expect("ok"), &p);
    assert_eq!(s.completed + s.failed, 400);
    // Only the requests decoding when the replica failed are lost; later ones go elsewhere.
    let mid: u64 = s
        .failures
        .iter()
        .filter(|f| f.reason.contains("after the first token"))
        .map(|f| f.count)
        .sum();
    assert!(mid <= 5, "{:?}", s.failures);
    assert!(s.providers[1].fallbacks_in > 0, "{:?}", s.providers[1]);
    assert_eq!(csv.lines().count(), 400);
    // One-token requests end in the prefill pool and name no (decode) replica; longer ones
    // name the decode replica that finished them.
    let short = text
        .replace("tokens = 50", "tokens = 1")
        .replace(
            "kind = \"replica\"",
            "kind = \"slowdown\"\nfactor = 1.0\nend_s = 11",
        )
        .replace("replica = 0\n", "");
    let (_, csv) = run(&resolve(&short, &cat, &p, false).expect("ok"), &p);
    let pd: Vec<&str> = csv.lines().filter(|l| l.contains(",pd,")).collect();
    assert!(!pd.is_empty());
    for l in pd {
        assert_eq!(l.split(',').nth(3), Some(""), "{l}");
    }
}

/// A request no replica of the providers serving its class can hold fails as too long, not
/// as a class nobody serves.
#[test]
fn a_request_longer_than_any_cache_fails_as_too_long() {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    // Prompts of a median 100k tokens, the longest beyond the 411k one H100 holds for 8B.
    let text = "model = \"llama-3.1-8b\"\n[[provider]]\nname = \"a\"\nsystem = \"h100-sxm\"\nchips = 1\n\
                [workload]\nrequests = 100\narrival = { process = \"poisson\", rate = 0.1 }\n\
                prompt = { dist = \"lognormal\", median = 100000, sigma = 1.5 }\noutput = { dist = \"fixed\", tokens = 10 }\n";
    let (s, _) = run(&resolve(text, &cat, &p, false).expect("ok"), &p);
    assert!(
        s.failed > 0 && s.completed > 0,
        "{} {}",
        s.failed,
        s.completed
    );
    assert!(
        s.failures.iter().all(|f| f.reason.contains("exceed")),
        "{:?}",
        s.failures
    );
}

/// When one replica of a provider fails, the requests it held that had sent nothing are
/// retried on the provider's other replicas, not failed as if the whole provider were down.
#[test]
fn a_replica_failure_retries_on_the_providers_other_replicas() {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let text = "model = \"llama-3.1-8b\"\n[[provider]]\nname = \"a\"\nsystem = \"h100-sxm\"\nchips = 1\nreplicas = 2\n\
                [workload]\nrequests = 800\narrival = { process = \"poisson\", rate = 100.0 }\n\
                prompt = { dist = \"fixed\", tokens = 1000 }\noutput = { dist = \"fixed\", tokens = 200 }\n\
                [[failure]]\nkind = \"replica\"\nprovider = \"a\"\nreplica = 0\nstart_s = 5\n";
    let (s, _) = run(&resolve(text, &cat, &p, false).expect("ok"), &p);
    assert_eq!(s.completed + s.failed, 800);
    // Only requests already streaming when the replica failed are lost.
    assert!(s.failed > 0, "the failure hit nothing");
    assert!(
        s.failures
            .iter()
            .all(|f| f.reason.contains("after the first token")),
        "{:?}",
        s.failures
    );
}

/// The spread a workload's outputs are drawn with, which the performance model's choice of
/// layout and the router's priors read.
#[test]
fn lengths_know_their_spread() {
    use switchyard_sim::Lengths;
    let none: &[switchyard_sim::TraceRow] = &[];
    let out = |r: &switchyard_sim::TraceRow| r.output;
    assert_eq!(Lengths::Fixed(200).cv(none, out), 0.0);
    assert_eq!(Lengths::Exponential(200.0).cv(none, out), 1.0);
    let sigma = 0.8_f64;
    let ln = Lengths::LogNormal {
        median: 100.0,
        sigma,
    };
    assert!((ln.cv(none, out) - ((sigma * sigma).exp() - 1.0).sqrt()).abs() < 1e-12);
    // 1 and 3: mean 2, standard deviation 1.
    assert!((Lengths::Empirical(vec![1, 3]).cv(none, out) - 0.5).abs() < 1e-12);
    assert_eq!(Lengths::Empirical(Vec::new()).cv(none, out), 0.0);
}

/// The performance model's steady state agrees with the simulator's replica engine on one
/// replica under a Poisson load, outputs alike and spread alike: the model's mean context of
/// the sequences caught decoding, isl + osl(1 + cv²)/2, is what the engine's steps read.
#[test]
fn the_model_and_the_engine_agree_on_spread_outputs() {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    for (out, cv) in [
        (r#"{ dist = "exponential", mean = 500 }"#, 1.0),
        (r#"{ dist = "fixed", tokens = 500 }"#, 0.0),
    ] {
        let text = format!(
            r#"
model = "llama-3.1-8b"
seed = 3
[[provider]]
name = "q"
system = "h100-sxm"
chips = 1
[workload]
requests = 20000
arrival = {{ process = "poisson", rate = 6.5 }}
prompt = {{ dist = "fixed", tokens = 1000 }}
output = {out}
"#
        );
        let scn = resolve(&text, &cat, &p, false).expect("resolves");
        let (sum, _) = run(&scn, &p);
        let sim_tpot = sum.fleet.tpot_s.mean.expect("tpot");
        let d = scn.providers[0].deployment.clone();
        // The model at the load the simulation held on average.
        let at = |cv: f64| {
            d.clone()
                .with_osl_cv(cv)
                .at_concurrency(&p, sum.little.mean_in_system, 1000.0, 500.0)
        };
        let (model, other) = (at(cv), at(1.0 - cv));
        let off = |v: f64, want: f64| (v - want).abs() / want;
        assert!(
            off(model.tpot_s, sim_tpot) < 0.03,
            "{out}: {} against {sim_tpot}",
            model.tpot_s
        );
        assert!(
            off(model.throughput_tok_s, sum.fleet.throughput_tok_s) < 0.03,
            "{out}: {} against {}",
            model.throughput_tok_s,
            sum.fleet.throughput_tok_s
        );
        // The other spread misses by more.
        assert!(
            off(other.tpot_s, sim_tpot) > off(model.tpot_s, sim_tpot),
            "{out}"
        );
    }
}

/// A replica kept busy by one request at a time draws the power `estimate` gives at a
/// concurrency of one, not full power: power follows the share of the pool's peak
/// throughput in use, in the simulator as in the estimate.
#[test]
fn energy_per_token_follows_the_estimate_at_the_same_load() {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let q = switchyard_perf::Query {
        chips: Some(1),
        concurrency: 1.0,
        ..switchyard_perf::Query::new(
            cat.model("llama-3.1-8b").expect("model"),
            cat.system("h100-sxm").expect("system"),
            1024.0,
            256.0,
        )
    };
    let est =
        switchyard_perf::estimate(&q, &p, switchyard_perf::Objective::Latency).expect("estimate");
    let e2e = est.at.ttft_s + 255.0 * est.at.tpot_s;
    // Arrivals almost evenly spaced, each a little after the last one ends.
    let text = format!(
        "model = \"llama-3.1-8b\"\n[[provider]]\nname = \"a\"\nsystem = \"h100-sxm\"\nchips = 1\n[workload]\nrequests = 200\narrival = {{ process = \"gamma\", rate = {}, cv = 0.01 }}\nprompt = {{ dist = \"fixed\", tokens = 1024 }}\noutput = {{ dist = \"fixed\", tokens = 256 }}\n",
        0.97 / e2e
    );
    let scn = resolve(&text, &cat, &p, false).expect("scenario");
    let (s, _) = run(&scn, &p);
    let sim = s.providers[0].joules_per_token.expect("joules");
    let want = est.at_economics.joules_per_token.expect("joules");
    // The simulated replica idles 3% of the time, and so makes 3% fewer tokens a second.
    assert!(
        (sim / want - 1.0).abs() < 0.1,
        "simulated {sim} J/token against the estimate's {want}"
    );
}

/// Under the cost policy a pool with no price (no catalog price, none in the scenario) ranks
/// last, not first as if it were free.
#[test]
fn an_unpriced_pool_ranks_last_under_the_cost_policy() {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let text = "model = \"llama-3.1-8b\"\n[router]\npolicy = \"cost\"\n[[provider]]\nname = \"wafer\"\nsystem = \"cs3\"\n[[provider]]\nname = \"gpu\"\nsystem = \"h100-sxm\"\nchips = 1\n[workload]\nrequests = 50\narrival = { process = \"poisson\", rate = 0.5 }\nprompt = { dist = \"fixed\", tokens = 100 }\noutput = { dist = \"fixed\", tokens = 20 }\n";
    let scn = resolve(text, &cat, &p, false).expect("scenario");
    assert!(scn.providers[0].target.usd_per_mtok.is_infinite());
    let (s, _) = run(&scn, &p);
    assert_eq!(s.providers[1].requests, 50, "{:?}", s.providers);
}

/// One replica going down is one failure to its provider's health check, however many
/// requests it held: the provider's other replicas go on serving, not ejected with it.
#[test]
fn a_replica_failure_does_not_eject_its_provider() {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let text = "model = \"llama-3.1-8b\"\nduration_s = 60\n[router]\npolicy = \"least-outstanding\"\neject_after = 3\ncooldown_s = 1000\n[[provider]]\nname = \"a\"\nsystem = \"h100-sxm\"\nchips = 1\nreplicas = 4\n[[provider]]\nname = \"b\"\nsystem = \"h100-sxm\"\nchips = 1\nreplicas = 4\n[workload]\narrival = { process = \"poisson\", rate = 10 }\nprompt = { dist = \"fixed\", tokens = 1000 }\noutput = { dist = \"fixed\", tokens = 300 }\n[[failure]]\nkind = \"replica\"\nprovider = \"a\"\nreplica = 0\nstart_s = 20\nend_s = 25\n";
    let scn = resolve(text, &cat, &p, false).expect("scenario");
    let (s, _) = run(&scn, &p);
    let share = s.providers[0].requests as f64 / s.arrivals as f64;
    assert!(share > 0.4, "provider a took {share} of the requests");
    // Two replicas failing at once are two windows, told apart by replica; one that
    // outlasts the run ends with it.
    let two = format!(
        "{text}[[failure]]\nkind = \"replica\"\nprovider = \"a\"\nreplica = 1\nstart_s = 20\n"
    );
    let scn = resolve(&two, &cat, &p, false).expect("scenario");
    let (s, _) = run(&scn, &p);
    let names: Vec<&str> = s.failure_windows.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "failure of replica 0 of a (20-25 s)",
            "failure of replica 1 of a (20 s to the end)"
        ]
    );
}

/// A request longer than the model's context is refused, as a serving engine refuses it,
/// even where the KV cache would hold it.
#[test]
fn a_request_past_the_models_context_is_refused() {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    // Llama 3 8B accepts 8,192 tokens; an H200 holds far more of its KV cache.
    let text = "model = \"llama-3-8b\"\n[[provider]]\nname = \"a\"\nsystem = \"h200\"\nchips = 1\n[workload]\nrequests = 4\narrival = { process = \"poisson\", rate = 1.0 }\nprompt = { dist = \"fixed\", tokens = 9000 }\noutput = { dist = \"fixed\", tokens = 10 }\n";
    let scn = resolve(text, &cat, &p, false).expect("scenario");
    assert!(scn.providers[0].engine.max_context() > 9010);
    let (s, _) = run(&scn, &p);
    assert_eq!(s.failed, 4);
    assert_eq!(
        s.failures[0].reason,
        switchyard_sim::reason::PAST_CONTEXT,
        "{:?}",
        s.failures
    );
    // One within the context but past what a replica's KV cache holds is told as that:
    // Llama 3.1 70B on four CS-3s leaves room for about 25,000 tokens.
    let s = simulated("model = \"llama-3.1-70b\"\n[[provider]]\nname = \"a\"\nsystem = \"cs3\"\nchips = 4\n[workload]\nrequests = 4\narrival = { process = \"poisson\", rate = 1.0 }\nprompt = { dist = \"fixed\", tokens = 30000 }\noutput = { dist = \"fixed\", tokens = 10 }\n");
    assert_eq!(s.failed, 4);
    assert_eq!(
        s.failures[0].reason,
        switchyard_sim::reason::PAST_KV,
        "{:?}",
        s.failures
    );
}

/// A request that states a `max_tokens` stops there; one that states none stops at the
/// model's context, as vLLM stops it at `max_model_len`.
#[test]
fn an_output_stops_at_its_max_tokens_and_at_the_context() {
    let run_with = |max_tokens: &str, prompt: u32, output: u32| {
        simulated(&format!(
            "model = \"llama-3-8b\"\n[router]\nmax_tokens = {max_tokens}\n[[provider]]\nname = \"a\"\nsystem = \"h200\"\nchips = 1\n[workload]\nrequests = 3\narrival = {{ process = \"poisson\", rate = 0.1 }}\nprompt = {{ dist = \"fixed\", tokens = {prompt} }}\noutput = {{ dist = \"fixed\", tokens = {output} }}\n"
        ))
    };
    let s = run_with("64", 100, 500);
    assert_eq!((s.completed, s.providers[0].output_tokens), (3, 3 * 64));
    // Llama 3 8B takes 8,192 tokens.
    let s = run_with("\"none\"", 8000, 500);
    assert_eq!((s.completed, s.providers[0].output_tokens), (3, 3 * 192));
    let s = run_with("\"none\"", 8192, 10);
    assert_eq!((s.completed, s.failed), (0, 3));
    // Stated, a request past the context is passed over by the router: refused.
    let s = run_with("\"output\"", 8000, 500);
    assert_eq!((s.completed, s.failed), (0, 3));
}

/// Replays the trace `csv` (its header and rows) on one H100 serving Llama 3.1 8B.
fn replay_on_one_h100(csv: &str) -> Summary {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let text = "model = \"llama-3.1-8b\"\n[[provider]]\nname = \"a\"\nsystem = \"h100-sxm\"\nchips = 1\n[workload]\n";
    run(&replaying(text, csv, &cat, &p), &p).0
}

/// Scenario `text` (whose workload states no arrivals) replaying trace `csv`.
fn replaying<'a>(text: &str, csv: &str, cat: &'a Catalog, p: &Params) -> Scenario<'a> {
    resolve_replay(text, csv, cat, p).expect("resolves")
}

/// Scenario `text` resolved to replay trace `csv`, or why it cannot.
fn resolve_replay<'a>(
    text: &str,
    csv: &str,
    cat: &'a Catalog,
    p: &Params,
) -> Result<Scenario<'a>, SimError> {
    let rows = parse_trace(csv, "trace.csv").expect("trace");
    ScenarioFile::parse(text, "test.toml")
        .expect("parses")
        .resolve(text, "test.toml", cat, p, Some(rows), &Overrides::default())
}

/// A trace whose mean request is longer than the model takes (one request of ten million
/// tokens among short ones) is replayed, the long one refused, rather than refused whole for
/// a mean no request has.
#[test]
fn a_trace_mean_past_the_context_still_replays() {
    let s = replay_on_one_h100(
        "arrived_at,num_prefill_tokens,num_decode_tokens\n0,10000000,10\n1,100,10\n2,100,10\n",
    );
    assert_eq!((s.completed, s.failed), (2, 1));
    // Its load is taken against the peak at the lengths the model takes, as its layout is.
    let load = s.providers[0].load.expect("load");
    assert!(load < 0.5, "load {load}");
}

/// A warm-up past a process's expected last arrival, and a process that would bring more
/// requests than a run simulates, are refused with their lines.
#[test]
fn a_warm_up_past_a_processs_end_and_endless_arrivals_are_refused() {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let base = "model = \"llama-3.1-8b\"\n[[provider]]\nname = \"a\"\nsystem = \"h100-sxm\"\nchips = 1\n[workload]\nprompt = { dist = \"fixed\", tokens = 100 }\noutput = { dist = \"fixed\", tokens = 10 }\n";
    let refused = |head: &str, tail: &str| {
        resolve(&format!("{head}{base}{tail}"), &cat, &p, false)
            .expect_err("refused")
            .to_string()
    };
    for head in ["warmup_s = 1000\n", "warmup_s = 1000\nduration_s = 2000\n"] {
        // A longer `duration_s` brings no more requests.
        let e = refused(
            head,
            "requests = 50\narrival = { process = \"poisson\", rate = 1.0 }\n",
        );
        assert!(
            e.contains("line 1") && e.contains("warmup_s") && e.contains("50.0 s"),
            "{e}"
        );
    }
    let e = refused(
        "duration_s = 3600\n",
        "arrival = { process = \"poisson\", rate = 1e9 }\n",
    );
    assert!(
        e.contains("line 10") && e.contains("arrival.rate") && e.contains("3.60e12"),
        "{e}"
    );
    let e = refused(
        "",
        "requests = 60000000\narrival = { process = \"poisson\", rate = 1.0 }\n",
    );
    assert!(
        e.contains("`workload.requests`") && e.contains("6.00e7"),
        "{e}"
    );
    // Within the bound, the same run resolves.
    resolve(
        &format!("warmup_s = 10\n{base}requests = 50\narrival = {{ process = \"poisson\", rate = 1.0 }}\n"),
        &cat,
        &p,
        false,
    )
    .expect("resolves");
}

/// A warm-up past a replay's last arrival would leave nothing after it: refused, naming it.
#[test]
fn a_warm_up_past_the_traces_end_is_refused() {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let text = "warmup_s = 10\nmodel = \"llama-3.1-8b\"\n[[provider]]\nname = \"a\"\nsystem = \"h100-sxm\"\nchips = 1\n[workload]\n";
    let csv = "arrived_at,num_prefill_tokens,num_decode_tokens\n0,100,10\n2,100,10\n";
    // However long the run is given.
    for text in [text.to_string(), format!("duration_s = 20\n{text}")] {
        let e = resolve_replay(&text, csv, &cat, &p)
            .expect_err("refused")
            .to_string();
        assert!(e.contains("warmup_s") && e.contains("2.0 s"), "{e}");
    }
}

/// A wafer pool whose KV cache holds the trace's short requests but not one of its mean
/// length (a 120,000-token prompt among 1,000-token ones) serves the short ones beside a GPU
/// pool that takes the long one, rather than being refused.
#[test]
fn a_pool_that_holds_less_than_the_mean_request_takes_the_shorter_ones() {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let text = "model = \"llama-3.1-70b\"\n[[provider]]\nname = \"cs3\"\nsystem = \"cs3\"\nchips = 4\n[[provider]]\nname = \"h100\"\nsystem = \"h100-sxm\"\nchips = 8\n[workload]\n";
    let csv = "arrived_at,num_prefill_tokens,num_decode_tokens\n0,1000,100\n1,1000,100\n2,1000,100\n3,120000,100\n";
    let s = run(&replaying(text, csv, &cat, &p), &p).0;
    assert_eq!((s.completed, s.failed), (4, 0));
    let served = |name: &str| {
        s.providers
            .iter()
            .find(|g| g.name == name)
            .map_or(0, |g| g.completed)
    };
    assert!(
        served("cs3") >= 1 && served("h100") >= 1,
        "{:?}",
        s.providers
    );
}

/// The requests a failed replica held leave its provider's count of requests in flight,
/// blamed or not: a balancer by requests in flight treats the provider as before once the
/// replica is back.
#[test]
fn a_replica_failure_leaves_no_requests_counted_in_flight() {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let text = "model = \"llama-3.1-8b\"\nduration_s = 300\n[router]\npolicy = \"least-outstanding\"\neject_after = 100000\n[[provider]]\nname = \"a\"\nsystem = \"h100-sxm\"\nchips = 1\nreplicas = 2\n[[provider]]\nname = \"b\"\nsystem = \"h100-sxm\"\nchips = 1\nreplicas = 2\n[workload]\narrival = { process = \"poisson\", rate = 10.0 }\nprompt = { dist = \"fixed\", tokens = 1000 }\noutput = { dist = \"fixed\", tokens = 300 }\n[[failure]]\nkind = \"replica\"\nprovider = \"a\"\nreplica = 0\nstart_s = 20\nend_s = 25\n";
    let scn = resolve(text, &cat, &p, false).expect("scenario");
    let (s, _) = run(&scn, &p);
    let share = s.providers[0].requests as f64 / s.arrivals as f64;
    assert!(share > 0.47, "provider a took {share} of the requests");
}

/// A replica stepping a small batch all the time is busy, but carries a small share of its
/// peak: `utilization` counts the first, `load` the second.
#[test]
fn load_is_the_share_of_peak_throughput_carried() {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let text = "model = \"llama-3.1-8b\"\n[[provider]]\nname = \"a\"\nsystem = \"h100-sxm\"\nchips = 1\n[workload]\nrequests = 400\narrival = { process = \"poisson\", rate = 2.0 }\nprompt = { dist = \"fixed\", tokens = 500 }\noutput = { dist = \"fixed\", tokens = 200 }\n";
    let scn = resolve(text, &cat, &p, false).expect("scenario");
    let (s, _) = run(&scn, &p);
    let g = &s.providers[0];
    let (util, load) = (g.utilization.expect("util"), g.load.expect("load"));
    let peak = scn.providers[0]
        .deployment
        .max_throughput(&p, 500.0, 200.0, None)
        .throughput_tok_s;
    assert!((load - g.throughput_tok_s / peak).abs() < 1e-9, "{load}");
    assert!(load < 0.5 * util, "load {load}, util {util}");
}

/// A decode pool beside a prefill pool runs no prompts: its load is the share of its own
/// peak as such, which a saturated pool reaches but does not pass, however long the prompts
/// the prefill pool takes off it.
#[test]
fn a_decode_pools_load_is_against_its_peak_without_prompts() {
    let text = "model = \"llama-3.1-8b\"\n[[provider]]\nname = \"pd\"\nsystem = \"h100-sxm\"\nchips = 1\nreplicas = 1\nprefill_replicas = 16\nprefill_chips = 1\n[workload]\nrequests = 4000\narrival = { process = \"poisson\", rate = 80.0 }\nprompt = { dist = \"fixed\", tokens = 8000 }\noutput = { dist = \"fixed\", tokens = 300 }\n";
    let s = simulated(text);
    let load = s.providers[0].load.expect("load");
    assert!(load > 0.8 && load < 1.1, "load {load}");
}

/// A price the scenario states is what the reports give for the provider, for a system the
/// catalog prices and for one it does not.
#[test]
fn a_stated_price_is_the_reported_cost() {
    let text = "model = \"llama-3.1-8b\"\n[router]\npolicy = \"round-robin\"\n[[provider]]\nname = \"gpu\"\nsystem = \"h100-sxm\"\nchips = 1\nusd_per_mtok = 0.6\n[[provider]]\nname = \"wafer\"\nsystem = \"cs3\"\nusd_per_mtok = 0.25\n[[provider]]\nname = \"catalog\"\nsystem = \"h100-sxm\"\nchips = 1\n[workload]\nrequests = 300\narrival = { process = \"poisson\", rate = 5.0 }\nprompt = { dist = \"fixed\", tokens = 500 }\noutput = { dist = \"fixed\", tokens = 100 }\n";
    let s = simulated(text);
    assert_eq!(s.providers[0].usd_per_mtok, Some(0.6));
    assert_eq!(s.providers[1].usd_per_mtok, Some(0.25));
    // Without one, the catalog's rent through the model: some other figure.
    let own = s.providers[2]
        .usd_per_mtok
        .expect("the catalog prices an H100");
    assert!(own > 0.0 && own != 0.6, "{own}");
}

/// The file's `rate_x` speeds up a synthetic process as `--rate-x` does, and the command
/// line's wins over it.
#[test]
fn a_files_rate_x_speeds_up_synthetic_arrivals() {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let text = "model = \"llama-3.1-8b\"\n[[provider]]\nname = \"a\"\nsystem = \"h100-sxm\"\nchips = 1\n[workload]\nrequests = 10\nrate_x = 4.0\narrival = { process = \"poisson\", rate = 2.0 }\nprompt = { dist = \"fixed\", tokens = 500 }\noutput = { dist = \"fixed\", tokens = 100 }\n";
    let scn = resolve(text, &cat, &p, false).expect("scenario");
    assert!(
        matches!(scn.workload.arrivals, Arrivals::Poisson { rate } if rate == 8.0),
        "{:?}",
        scn.workload.arrivals
    );
    let file = ScenarioFile::parse(text, "test.toml").expect("parses");
    let over = Overrides {
        rate_x: Some(0.5),
        ..Overrides::default()
    };
    let scn = file
        .resolve(text, "test.toml", &cat, &p, None, &over)
        .expect("scenario");
    assert!(
        matches!(scn.workload.arrivals, Arrivals::Poisson { rate } if rate == 1.0),
        "{:?}",
        scn.workload.arrivals
    );
}

/// Under a synthetic process, lengths taken from a trace come a row at a time: each request's
/// prompt and output are one recorded request's, so a trace whose long prompts bring short
/// answers keeps that pairing.
#[test]
fn trace_lengths_under_a_synthetic_process_keep_each_rows_pair() {
    let rows: Vec<switchyard_sim::TraceRow> = (1..=20)
        .map(|i| switchyard_sim::TraceRow {
            arrival_s: f64::from(i),
            prompt: 1000 * i,
            output: 21 - i,
            prefix: None,
        })
        .collect();
    let spec = WorkloadSpec {
        arrivals: Arrivals::Poisson { rate: 5.0 },
        prompt: Lengths::FromTrace,
        output: Lengths::FromTrace,
        class_shares: vec![1.0],
        max_requests: Some(2000),
        horizon_s: None,
    };
    let w: Vec<_> = Workload::new(spec, rows, 7).collect();
    assert_eq!(w.len(), 2000);
    assert!(
        w.iter().all(|a| a.prompt == 1000 * (21 - a.output)),
        "a pair no row holds"
    );
    // Every row is drawn, not only the first.
    let mut seen: Vec<u32> = w.iter().map(|a| a.output).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 20);
    // A scenario that names the trace's lengths under a process draws them so.
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let text = "model = \"llama-3.1-8b\"\n[[provider]]\nname = \"a\"\nsystem = \"h100-sxm\"\nchips = 1\n[workload]\nrequests = 10\narrival = { process = \"poisson\", rate = 2.0 }\nprompt = { dist = \"trace\" }\n";
    let scn = resolve(text, &cat, &p, true).expect("scenario");
    assert_eq!(scn.workload.prompt, Lengths::FromTrace);
    assert_eq!(scn.workload.output, Lengths::FromTrace);
}

/// Chips that a given layout splits into several model replicas run as that many replicas,
/// as `estimate` counts them (`--chips 8 --layout tp4` is tp4-pp1-dp2), for the decode pool
/// and for a prefill pool alike: none sits idle.
#[test]
fn chips_a_given_layout_splits_run_as_several_replicas() {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let text = "model = \"llama-3.1-70b\"\n[[provider]]\nname = \"a\"\nsystem = \"h100-sxm\"\nprecision = \"fp8\"\nchips = 8\nlayout = \"tp4\"\nreplicas = 2\nprefill_replicas = 1\nprefill_chips = 8\nprefill_layout = \"tp2\"\n[workload]\nrequests = 10\narrival = { process = \"poisson\", rate = 1.0 }\nprompt = { dist = \"fixed\", tokens = 500 }\noutput = { dist = \"fixed\", tokens = 50 }\n";
    let scn = resolve(text, &cat, &p, false).expect("scenario");
    let pr = &scn.providers[0];
    assert_eq!((pr.replicas, pr.deployment.layout.chips()), (4, 4));
    let pre = pr.prefill.as_ref().expect("a prefill pool");
    assert_eq!((pre.replicas, pre.deployment.layout.chips()), (4, 2));
}

/// A mixture's quantile weighs each part by its given share, not by how many values it
/// holds: one pool's ten requests stand for half the fleet when that pool is half of it.
#[test]
fn a_mixture_weighs_each_part_by_its_share() {
    let (mut fast, mut slow) = (Histogram::default(), Histogram::default());
    for _ in 0..1000 {
        fast.record(0.001);
    }
    for _ in 0..10 {
        slow.record(0.100);
    }
    let near = |x: f64, want: f64| (x / want - 1.0).abs() < 0.011;
    let half = Histogram::mixture_quantile(&[(&fast, 1.0), (&slow, 1.0)], 0.75).expect("q");
    assert!(near(half, 0.100), "{half}");
    let mut merged = fast.clone();
    merged.merge(&slow);
    assert!(near(merged.quantile(0.75).expect("q"), 0.001));
    // By count, the mixture is the merge.
    let by_count = Histogram::mixture_quantile(&[(&fast, 1000.0), (&slow, 10.0)], 0.75).expect("q");
    assert!(near(by_count, 0.001), "{by_count}");
    // Parts of no weight, or empty, are left out.
    let only = Histogram::mixture_quantile(&[(&fast, 0.0), (&slow, 1.0)], 0.1).expect("q");
    assert!(near(only, 0.100), "{only}");
    assert_eq!(
        Histogram::mixture_quantile(&[(&Histogram::default(), 1.0)], 0.5),
        None
    );
}

/// A run that overruns its arrivals' span many times over (every request at once) keeps its
/// time bins few and their counts whole.
#[test]
fn bins_stay_few_when_the_run_overruns_its_arrivals() {
    let mut csv = String::from("arrived_at,num_prefill_tokens,num_decode_tokens\n");
    for _ in 0..300 {
        csv.push_str("0.0,1000,200\n");
    }
    let s = replay_on_one_h100(&csv);
    assert_eq!(s.completed, 300);
    assert!(s.bins.len() <= 1000, "{} bins", s.bins.len());
    let done: u64 = s.bins.iter().map(|b| b.completed).sum();
    assert_eq!(done, 300);
    let arrived: u64 = s.bins.iter().map(|b| b.arrivals).sum();
    assert_eq!(arrived, 300);
}

/// Each request's time to first token, replaying trace `csv` on one replica of Llama 3.1
/// 70B in FP8 over eight H100s laid out as `layout`.
fn first_tokens_on_h100s(layout: &str, csv: &str) -> Vec<f64> {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let text = format!(
        "model = \"llama-3.1-70b\"\n[[provider]]\nname = \"a\"\nsystem = \"h100-sxm\"\nchips = 8\nprecision = \"fp8\"\nlayout = \"{layout}\"\n[workload]\n"
    );
    let scn = replaying(&text, csv, &cat, &p);
    let mut ttft = Vec::new();
    simulate(
        &scn,
        &p,
        RunOptions::default(),
        |r: &Record<'_>| ttft.push((r.id, r.ttft_s.expect("first token"))),
        &mut |_| {},
    );
    ttft.sort_by_key(|t| t.0);
    ttft.into_iter().map(|t| t.1).collect()
}

#[test]
fn a_prompt_beside_decodes_still_passes_every_pipeline_stage() {
    // A long prompt alone, and the same prompt arriving while another request decodes.
    for layout in ["tp2-pp4", "tp1-pp8", "tp8-pp1"] {
        let alone = first_tokens_on_h100s(
            layout,
            "arrived_at,num_prefill_tokens,num_decode_tokens\n0,4000,10\n",
        )[0];
        let busy = first_tokens_on_h100s(
            layout,
            "arrived_at,num_prefill_tokens,num_decode_tokens\n0,100,2000\n5,4000,10\n",
        )[1];
        // Beside the decodes it waits out part of a step and rides one: no faster than
        // alone, and slower by no more than a few steps of the other request.
        assert!(
            busy >= alone && busy < alone + 0.2,
            "{layout}: {busy} s beside a decoding request, {alone} s alone"
        );
        // Several prompts in one step pass the stages together: beside a decode, none is
        // out sooner than the same prompts after a request that has finished.
        let four = "0.1,2000,10\n".repeat(4);
        let header = "arrived_at,num_prefill_tokens,num_decode_tokens\n";
        let after = first_tokens_on_h100s(layout, &format!("{header}0,8000,1\n{four}"));
        let beside = first_tokens_on_h100s(layout, &format!("{header}0,8000,300\n{four}"));
        for (b, a) in beside[1..].iter().zip(&after[1..]) {
            assert!(
                b >= &(a * 0.999),
                "{layout}: {b} s beside a decode, {a} s after one"
            );
        }
    }
}

/// Names with commas or quotes are quoted in the per-request CSV, as RFC 4180 writes them,
/// and a trace whose fields are quoted is read.
#[test]
fn csv_fields_are_quoted_out_and_read_in() {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let text = "model = \"llama-3.1-8b\"\n[[provider]]\nname = \"gpu, \\\"east\\\"\"\nsystem = \"h100-sxm\"\nchips = 1\n[workload]\n";
    let scn = replaying(
        text,
        "\"arrived_at\",\"num_prefill_tokens\",\"num_decode_tokens\"\n\"0\",\"100\",\"4\"\n",
        &cat,
        &p,
    );
    let (s, csv) = run(&scn, &p);
    assert_eq!(s.completed, 1);
    assert!(csv.contains(",\"gpu, \"\"east\"\"\","), "{csv}");
    // The per-request file replays as a trace, its quoted name whole.
    let rows = parse_trace(&format!("{}\n{csv}", Record::CSV_HEADER), "requests.csv")
        .expect("its own records replay");
    assert_eq!((rows[0].prompt, rows[0].output), (100, 4));
}

/// Goodput is the share of the requests that have a target meeting it: a class without one
/// does not dilute it (a target no request meets gives 0 for the class and the fleet alike).
#[test]
fn goodput_counts_only_requests_with_a_target() {
    let text = single_server(1.0, "{ dist = \"fixed\", tokens = 4 }").replace("1000000", "200")
        + "[[class]]\nname = \"tgt\"\nshare = 0.5\nttft_ms = 0.001\n[[class]]\nname = \"free\"\nshare = 0.5\n";
    let s = simulated(&text);
    assert_eq!(s.completed, 200);
    let class = |n: &str| s.classes.iter().find(|g| g.name == n).expect("class");
    assert_eq!(class("tgt").goodput, Some(0.0));
    assert_eq!(class("free").goodput, None);
    assert_eq!(s.fleet.goodput, Some(0.0));
}

/// Without a target, no request is judged: goodput is not reported as a share of none.
#[test]
fn goodput_without_targets_is_not_reported() {
    let s = simulated(
        &single_server(1.0, "{ dist = \"fixed\", tokens = 4 }").replace("1000000", "100"),
    );
    assert_eq!(s.completed, 100);
    assert_eq!(s.fleet.goodput, None);
    assert!(s.providers.iter().all(|g| g.goodput.is_none()));
}

/// An outage of the only provider produces nothing within it, though tokens were made in
/// the time bin it starts in; one that outlasts the run names both ends.
#[test]
fn an_outage_of_the_only_provider_shows_no_output_within_it() {
    let text = |end: u32| {
        format!("model = \"llama-3.1-8b\"\n[[provider]]\nname = \"a\"\nsystem = \"h100-sxm\"\nchips = 1\nreplicas = 2\n[workload]\nrequests = 600\narrival = {{ process = \"poisson\", rate = 5.0 }}\nprompt = {{ dist = \"fixed\", tokens = 500 }}\noutput = {{ dist = \"fixed\", tokens = 100 }}\n[[failure]]\nkind = \"outage\"\nprovider = \"a\"\nstart_s = 61.4\nend_s = {end}\n")
    };
    let s = simulated(&text(100));
    let w = &s.failure_windows[0];
    assert_eq!(w.name, "outage of a (61-100 s)");
    assert_eq!((w.completed, w.throughput_tok_s), (0, 0.0), "{w:?}");
    let straddling = s
        .bins
        .iter()
        .find(|b| b.start_s < 61.4 && b.start_s + s.bin_s > 61.4)
        .expect("a bin");
    assert!(straddling.tokens[0] > 0, "{straddling:?}");
    let s = simulated(&text(100_000));
    let w = &s.failure_windows[0];
    assert!(
        w.name
            .starts_with("outage of a (61-100000 s, the run ending at "),
        "{}",
        w.name
    );
    assert_eq!(w.throughput_tok_s, 0.0);
}

/// A failure window's tok/s is what the fleet produced within it, not the tokens its
/// requests stream on long after it over its length; its goodput never rounds up to all.
#[test]
fn a_window_counts_the_tokens_produced_within_it() {
    let s = simulated(
        "model = \"llama-3.1-8b\"\n[[provider]]\nname = \"a\"\nsystem = \"h100-sxm\"\nchips = 1\nreplicas = 2\n[workload]\nrequests = 300\narrival = { process = \"poisson\", rate = 10.0 }\nprompt = { dist = \"fixed\", tokens = 1000 }\noutput = { dist = \"fixed\", tokens = 2000 }\n[[failure]]\nkind = \"slowdown\"\nprovider = \"a\"\nfactor = 1.01\nstart_s = 10\nend_s = 11\n",
    );
    let w = &s.failure_windows[0];
    let peak_bin = s
        .bins
        .iter()
        .map(|b| b.tokens.iter().sum::<u64>() as f64 / s.bin_s)
        .fold(0.0, f64::max);
    assert!(
        w.throughput_tok_s > 0.0 && w.throughput_tok_s <= peak_bin * 1.01,
        "the window's {} tok/s against the busiest bin's {peak_bin}",
        w.throughput_tok_s
    );
    use switchyard_sim::report::goodput_percent;
    assert_eq!(
        [0.99951, 0.999, 1.0, 0.5, 0.0].map(goodput_percent),
        ["99.9", "99.9", "100.0", "50.0", "0.0"]
    );
}

/// Under the latency policy a provider slowed ten times for 200 s is passed over while slow
/// and takes its share again soon after: its first tokens, fast once more, do not restart
/// the fade of the slow time per token it was seen at, which no answer then corrects.
#[test]
fn a_provider_slowed_for_a_while_takes_its_share_again_soon_after() {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let text = "model = \"llama-3.1-8b\"\nseed = 1\n[router]\npolicy = \"latency\"\n[[provider]]\nname = \"a\"\nsystem = \"h100-sxm\"\nchips = 1\nreplicas = 2\n[[provider]]\nname = \"b\"\nsystem = \"h100-sxm\"\nchips = 1\nreplicas = 2\n[workload]\nrequests = 6000\narrival = { process = \"poisson\", rate = 10.0 }\nprompt = { dist = \"lognormal\", median = 1000, sigma = 0.8 }\noutput = { dist = \"lognormal\", median = 200, sigma = 0.8 }\n[[failure]]\nkind = \"slowdown\"\nprovider = \"a\"\nfactor = 10\nstart_s = 200\nend_s = 400\n";
    let scn = resolve(text, &cat, &p, false).expect("scenario");
    let (_, csv) = run(&scn, &p);
    // Of the requests that arrived from `from` to `to` s, the share `a` served.
    let share = |from: f64, to: f64| {
        let (mut all, mut on_a) = (0u32, 0u32);
        for line in csv.lines() {
            let f: Vec<&str> = line.split(',').collect();
            let at: f64 = f[4].parse().expect("arrival");
            if (from..to).contains(&at) {
                all += 1;
                on_a += u32::from(f[2] == "a");
            }
        }
        assert!(f64::from(all) > 8.0 * (to - from), "{all}");
        f64::from(on_a) / f64::from(all)
    };
    // What it learned of the slowdown fades over two minutes or so (its half-life is 30 s):
    // some of the next 100 s, and most of its half of the 100 s after (it took 2 of the
    // next 100 s's 1,006 requests when its fast first tokens kept its slow tokens from
    // fading).
    let (next, after) = (share(400.0, 500.0), share(500.0, 600.0));
    assert!(
        next > 0.05 && after > 0.4,
        "`a` served {next:.3} of the requests of the 100 s after its slowdown and {after:.3} of the 100 s after them"
    );
}

/// A pool's load is its share of the peak of the engine as the scenario configured it: one
/// that batches a single sequence, queued far past its capacity, is fully loaded.
#[test]
fn the_load_counts_the_engines_own_batch_limit() {
    let s = simulated("model = \"llama-3.1-8b\"\n[[provider]]\nname = \"a\"\nsystem = \"h100-sxm\"\nchips = 1\nreplicas = 2\nmax_batch = 1\n[workload]\nrequests = 400\narrival = { process = \"poisson\", rate = 10.0 }\nprompt = { dist = \"fixed\", tokens = 1000 }\noutput = { dist = \"fixed\", tokens = 200 }\n");
    let load = s.providers[0].load.expect("a load");
    assert!(load > 0.9, "{load}");
}

/// The fleet's energy and cost a token are its providers' power and spend an hour over the
/// tokens it produced, a provider that served nothing drawing its idle power and costing its
/// hours.
#[test]
fn the_fleets_energy_and_cost_count_every_provider() {
    let base = "model = \"llama-3.1-8b\"\n[[provider]]\nname = \"a\"\nsystem = \"h100-sxm\"\nchips = 1\nclasses = [\"x\"]\n[[provider]]\nname = \"b\"\nsystem = \"h100-sxm\"\nchips = 1\nclasses = [\"y\"]\n[workload]\nrequests = 200\narrival = { process = \"poisson\", rate = 5.0 }\nprompt = { dist = \"fixed\", tokens = 500 }\noutput = { dist = \"fixed\", tokens = 100 }\n[[class]]\nname = \"x\"\nshare = 1\n[[class]]\nname = \"y\"\nshare = 0\n";
    let s = simulated(base);
    let (a, b, fleet) = (&s.providers[0], &s.providers[1], &s.fleet);
    assert_eq!(b.output_tokens, 0);
    let ja = a.joules_per_token.expect("a's energy");
    let jf = fleet.joules_per_token.expect("the fleet's energy");
    let ua = a.usd_per_mtok.expect("a's cost");
    let uf = fleet.usd_per_mtok.expect("the fleet's cost");
    // Two rented H100s where one served: the fleet pays both hours for a's tokens.
    assert!(
        (uf / ua - 2.0).abs() < 1e-6,
        "{uf} against {ua}: two chips' rent over one's tokens"
    );
    // And b's idle power on top of a's.
    assert!(jf > ja * 1.1 && jf < ja * 2.0, "{jf} against {ja}");
}

/// A disaggregated pool's decode replicas are full at their own peak, their steps carrying
/// no prompts: rated as replicas that also run their prompts, the pool (its tokens at 25 ms
/// under a 40 ms target) was held full at half its load, its first tokens expected seconds
/// late, and the latency policy sent a quarter of the requests to the aggregated replica
/// beside it, whose tokens then came at 70 ms (74% goodput).
#[test]
fn the_latency_policy_rates_a_disaggregated_pool_by_its_decode_peak() {
    let s = simulated("model = \"llama-3.1-70b\"\nseed = 1\n[router]\npolicy = \"latency\"\n[[provider]]\nname = \"disagg\"\nsystem = \"mi300x\"\nchips = 8\nlayout = \"tp8\"\nprefill_replicas = 21\nprefill_chips = 1\n[[provider]]\nname = \"agg\"\nsystem = \"mi300x\"\nchips = 8\nlayout = \"tp8\"\n[workload]\narrival = { process = \"poisson\", rate = 30.0 }\nprompt = { dist = \"fixed\", tokens = 1500 }\noutput = { dist = \"lognormal\", median = 195, sigma = 0.703 }\nrequests = 3000\n[[class]]\nname = \"chat\"\nshare = 1.0\nttft_ms = 2000\ntpot_ms = 40\n");
    let goodput = s.fleet.goodput.expect("targets");
    assert!(goodput > 0.95, "{goodput}");
}

/// The summary of scenario `text` replaying trace `rows`, on the built-in catalog.
fn replayed(text: &str, rows: Vec<switchyard_sim::TraceRow>) -> Summary {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let file = ScenarioFile::parse(text, "test.toml").expect("parses");
    let scn = file
        .resolve(
            text,
            "test.toml",
            &cat,
            &p,
            Some(rows),
            &Overrides::default(),
        )
        .expect("scenario");
    run(&scn, &p).0
}

/// A trace that names prompts' prefixes: every prompt begins with one 4,096-token system
/// prompt (eight blocks of 512) and ends in 512 tokens of its own, each arriving after the
/// one before has ended. A replica that caches prefixes prefills the system prompt once, so
/// most prompt tokens are found cached and first tokens come sooner; with caching off, none
/// is.
#[test]
fn a_replica_serves_cached_prefixes_from_a_trace_that_names_them() {
    let mut trace = String::new();
    for i in 0..200u64 {
        let own = 1000 + i;
        trace.push_str(&format!(
            "{{\"timestamp\": {}, \"input_length\": 4608, \"output_length\": 50, \"hash_ids\": [0, 1, 2, 3, 4, 5, 6, 7, {own}]}}\n",
            i * 2000
        ));
    }
    let rows = parse_trace(&trace, "shared.jsonl").expect("trace");
    assert_eq!(rows[3].prefix.as_deref().map(<[u64]>::len), Some(9));
    let run_with = |caching: bool| {
        let text = format!(
            "model = \"llama-3.1-8b\"\n[[provider]]\nname = \"a\"\nsystem = \"h100-sxm\"\nchips = 1\nprefix_caching = {caching}\n[workload]\ntrace = \"shared.jsonl\"\n"
        );
        replayed(&text, rows.clone())
    };
    let (on, off) = (run_with(true), run_with(false));
    let hit = on.providers[0].prefix_hit.expect("a share");
    // The first prompt finds nothing; each later one finds its 4,096 shared tokens.
    let share = 199.0 * 4096.0 / (200.0 * 4608.0);
    assert!((hit - share).abs() < 1e-9, "hit {hit} against {share}");
    assert_eq!(off.providers[0].prefix_hit, Some(0.0));
    assert_eq!(on.classes[0].prefix_hit, Some(hit));
    let (fast, slow) = (
        on.fleet.ttft_s.mean.expect("ttft"),
        off.fleet.ttft_s.mean.expect("ttft"),
    );
    assert!(fast < 0.5 * slow, "TTFT {fast} cached against {slow}");
    // A trace that names no prefixes reports no share.
    assert_eq!(
        simulated(&single_server(1.0, "{ dist = \"fixed\", tokens = 2 }"))
            .fleet
            .prefix_hit,
        None
    );
}

/// A pool sends a prompt to the replica whose prefix cache holds its beginning where that
/// leaves less to do than the least loaded: two prompts arrive together and go one to each
/// of two replicas; a later prompt that begins as the second did goes where the second
/// went, though both replicas are idle by then.
#[test]
fn a_pool_sends_a_prompt_where_its_prefix_is_cached() {
    let line = |ms: u64, hashes: &str| {
        format!("{{\"timestamp\": {ms}, \"input_length\": 4608, \"output_length\": 20, \"hash_ids\": [{hashes}]}}\n")
    };
    let trace = [
        line(0, "0, 1, 2, 3, 4, 5, 6, 7, 100"),
        line(0, "50, 51, 52, 53, 54, 55, 56, 57, 101"),
        line(10_000, "50, 51, 52, 53, 54, 55, 56, 57, 102"),
    ]
    .concat();
    let rows = parse_trace(&trace, "turns.jsonl").expect("trace");
    let text = "model = \"llama-3.1-8b\"\n[[provider]]\nname = \"a\"\nsystem = \"h100-sxm\"\nchips = 1\nreplicas = 2\n[workload]\ntrace = \"turns.jsonl\"\n";
    let hit = replayed(text, rows).fleet.prefix_hit.expect("a share");
    let share = 4096.0 / (3.0 * 4608.0);
    assert!((hit - share).abs() < 1e-9, "hit {hit} against {share}");
}

/// The shipped prefix-caching scenario on the shipped Mooncake trace: turned off, nothing is
/// found cached; on, a share well short of the 37% of prompt tokens that repeat a block seen
/// before (a cache of every block ever seen), and the first tokens come sooner.
#[test]
fn the_shipped_mooncake_scenario_finds_prefixes_cached() {
    let rows = parse_trace(MOONCAKE, "mooncake_conversation.jsonl").expect("trace");
    assert_eq!(rows.len(), 12_031);
    let on = replayed(PREFIX_CACHE, rows.clone()).fleet;
    let off = replayed(
        &PREFIX_CACHE.replace("prefix_caching = true", "prefix_caching = false"),
        rows,
    )
    .fleet;
    let hit = on.prefix_hit.expect("a share");
    assert!(hit > 0.05 && hit < 0.37, "hit {hit}");
    assert_eq!(off.prefix_hit, Some(0.0));
    let (fast, slow) = (
        on.ttft_s.mean.expect("ttft"),
        off.ttft_s.mean.expect("ttft"),
    );
    assert!(fast < slow, "TTFT {fast} cached against {slow}");
}

/// Providers of different models take only the classes that ask for their model, and a
/// scenario that does not say which model each class asks for is refused, naming the class,
/// or the provider no class asks for.
#[test]
fn providers_of_different_models_serve_the_classes_that_ask_for_them() {
    let text = |small: &str, big: &str| {
        format!(
            "[router]\npolicy = \"round-robin\"\n[[provider]]\nname = \"eight\"\nsystem = \"h100-sxm\"\nchips = 1\nmodel = \"llama-3.1-8b\"\n[[provider]]\nname = \"seventy\"\nsystem = \"h100-sxm\"\nchips = 8\nmodel = \"llama-3.1-70b\"\n[workload]\nrequests = 400\narrival = {{ process = \"poisson\", rate = 4.0 }}\nprompt = {{ dist = \"fixed\", tokens = 500 }}\noutput = {{ dist = \"fixed\", tokens = 50 }}\n[[class]]\nname = \"small\"\nshare = 0.5\n{small}[[class]]\nname = \"big\"\nshare = 0.5\n{big}"
        )
    };
    let s = simulated(&text(
        "model = \"llama-3.1-8b\"\n",
        "model = \"llama-3.1-70b\"\n",
    ));
    // Cells: providers by classes (small, big).
    assert_eq!(s.cells[0][1].requests, 0);
    assert_eq!(s.cells[1][0].requests, 0);
    assert!(s.cells[0][0].requests > 150 && s.cells[1][1].requests > 150);
    assert_eq!(s.fleet.failed, 0);
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let refused = |text: &str| {
        resolve(text, &cat, &p, false)
            .expect_err("refused")
            .to_string()
    };
    let e = refused(&text("", "model = \"llama-3.1-70b\"\n"));
    assert!(
        e.contains("class `small` names no `model`") && e.contains("`seventy` llama-3.1-70b"),
        "{e}"
    );
    let e = refused(&text(
        "model = \"llama-3.1-70b\"\n",
        "model = \"llama-3.1-70b\"\n",
    ));
    assert!(
        e.contains("provider `eight`: no class it takes asks for `llama-3.1-8b`"),
        "{e}"
    );
    let e = refused(&text(
        "model = \"llama-3.1-8b\"\n",
        "model = \"llama-3.1-405b\"\n",
    ));
    assert!(
        e.contains("field `model`: class `big`: no provider serves `llama-3.1-405b`"),
        "{e}"
    );
    // A third class asking for the 8B model, which its one provider does not take (the 70B
    // one, taking every class, serves another model): refused, not failed request by
    // request.
    let third = text("model = \"llama-3.1-8b\"\n", "model = \"llama-3.1-70b\"\n").replace(
        "model = \"llama-3.1-8b\"\n[[provider]]",
        "model = \"llama-3.1-8b\"\nclasses = [\"small\"]\n[[provider]]",
    ) + "[[class]]\nname = \"orphan\"\nshare = 0.2\nmodel = \"llama-3.1-8b\"\n";
    let e = refused(&third);
    assert!(
        e.contains("field `name`: class `orphan`: no provider of `llama-3.1-8b` takes it (`eight` names the classes it takes"),
        "{e}"
    );
}
