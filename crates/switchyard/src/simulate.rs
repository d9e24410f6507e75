//! `switchyard simulate`: reads a scenario and its trace, runs the simulator, prints the
//! summary and writes the per-request CSV, the JSON summary and the HTML report.

use crate::input::{read_text, Kind};
use crate::UsageError;
use anyhow::{Context, Result};
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use switchyard_perf::{Catalog, Params};
use switchyard_sim::{
    parse_trace, report, simulate as run_sim, Group, Overrides, Record, RunOptions, ScenarioFile,
    Summary,
};

/// The built-in scenario: a wafer-scale pool against a GPU pool on the conversation trace.
const DEFAULT_SCENARIO: &str = include_str!("../../../scenarios/wafer-vs-gpu.toml");
const DEFAULT_SCENARIO_NAME: &str = "scenarios/wafer-vs-gpu.toml";
/// Traces compiled in, so that the built-in scenario runs anywhere.
const BUILTIN_TRACES: [(&str, &str); 2] = [
    (
        "splitwise_conv.csv",
        include_str!("../../../traces/splitwise_conv.csv"),
    ),
    (
        "splitwise_code.csv",
        include_str!("../../../traces/splitwise_code.csv"),
    ),
];

/// Arguments of `simulate`.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Scenario file (TOML); without it, the built-in wafer-scale against GPU scenario.
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Replay this trace (CSV, or Mooncake JSON lines) instead of the scenario's workload: its arrival times and lengths
    /// replace the scenario's trace, arrival process and length distributions.
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// Speed up arrivals by this factor (trace times divided, synthetic rates multiplied),
    /// in place of the scenario's `rate_x`.
    #[arg(long, value_name = "FACTOR", allow_negative_numbers = true)]
    rate_x: Option<f64>,
    /// Seed of every random draw.
    #[arg(long)]
    seed: Option<u64>,
    /// Run this many requests, in place of the scenario's `requests` (a trace: at most its
    /// rows).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    requests: Option<u64>,
    /// Folder for requests.csv, summary.json and report.html.
    #[arg(long, value_name = "DIR", default_value = "sim-out")]
    out: PathBuf,
    /// Print the JSON summary instead of the tables.
    #[arg(long)]
    json: bool,
    /// No per-request CSV (long runs).
    #[arg(long)]
    no_csv: bool,
}

fn usage(e: impl std::fmt::Display) -> anyhow::Error {
    UsageError(e.to_string()).into()
}

/// Runs `simulate`.
pub fn simulate(cat: &Catalog, params: &Params, a: &SimulateArgs) -> Result<()> {
    // A million times either way: beyond it a trace's times lose their precision, or its
    // requests all arrive at once.
    if let Some(x) = a.rate_x {
        if !(1e-6..=1e6).contains(&x) {
            return Err(usage(format!(
                "--rate-x must be a factor from 0.000001 to 1,000,000, not {x}"
            )));
        }
    }
    let (text, origin, dir) = match &a.scenario {
        Some(p) => (
            read_text(p, Kind::Settings)?,
            p.display().to_string(),
            p.parent().map(Path::to_path_buf),
        ),
        None => (
            DEFAULT_SCENARIO.to_string(),
            DEFAULT_SCENARIO_NAME.to_string(),
            None,
        ),
    };
    let mut file = ScenarioFile::parse(&text, &origin).map_err(usage)?;
    let own_trace = file
        .workload
        .as_ref()
        .and_then(|w| w.get_ref().trace.clone());
    let trace_rows = match (&a.trace, &own_trace) {
        (Some(p), _) => {
            let rows = parse_trace(&read_text(p, Kind::Trace)?, &p.display().to_string())
                .map_err(usage)?;
            // The trace given on the command line is used as it is: a length distribution
            // left in place would silently keep it from being used, and so would a
            // synthetic process where it has times of its own. One with lengths only takes
            // its times from the scenario's process.
            // A scenario without a workload takes the trace's whole.
            let w = file.workload.as_mut().map(|w| w.get_mut());
            let timed = rows.iter().all(|r| !r.arrival_s.is_nan());
            if !timed && w.as_ref().is_none_or(|w| w.arrival.is_none()) {
                // The scenario replays its own trace's times, or has none: nothing draws
                // this one's.
                return Err(usage(format!(
                    "{}: line 1: the trace holds lengths only, no arrival column ({}); give a --scenario whose workload has an `arrival` process to draw the times",
                    p.display(),
                    switchyard_sim::ARRIVAL.join(", ")
                )));
            }
            if let Some(w) = w {
                if timed {
                    w.arrival = None;
                }
                w.prompt = None;
                w.output = None;
            }
            Some(rows)
        }
        (None, Some(rel)) => {
            let (body, name) = match &dir {
                Some(d) => {
                    let path = d.join(rel);
                    // The scenario's line that names the trace, with the file it resolved to.
                    let span = file.workload.as_ref().map_or(0..0, |w| w.span());
                    let at = switchyard_catalog::key_offset(&text, span, "trace")
                        .map_or_else(String::new, |o| {
                            format!("line {}: ", switchyard_catalog::line_at(&text, o))
                        });
                    let body = read_text(&path, Kind::Trace)
                        .map_err(|e| usage(format!("{origin}: {at}field `trace`: {e:#}")))?;
                    (body, path.display().to_string())
                }
                None => {
                    let base = Path::new(rel)
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or_default();
                    let body = BUILTIN_TRACES
                        .iter()
                        .find(|(n, _)| *n == base)
                        .map(|(_, t)| (*t).to_string())
                        .ok_or_else(|| usage(format!("{origin}: no built-in trace `{rel}`")))?;
                    (body, rel.clone())
                }
            };
            Some(parse_trace(&body, &name).map_err(usage)?)
        }
        (None, None) => None,
    };
    let over = Overrides {
        seed: a.seed,
        rate_x: a.rate_x,
        requests: a.requests,
    };
    let scn = file
        .resolve(&text, &origin, cat, params, trace_rows, &over)
        .map_err(usage)?;
    // The cost policy ranks a provider without a price last, after every priced one: said,
    // since it may then serve nothing.
    if scn.policy == switchyard_sim::Policy::Cost {
        let unpriced: Vec<&str> = scn
            .providers
            .iter()
            .filter(|p| !p.target.usd_per_mtok.is_finite())
            .map(|p| p.name.as_str())
            .collect();
        if !unpriced.is_empty() {
            err!(
                "note: {} {} no price, so the cost policy sends {} only what the priced providers cannot take; give `usd_per_mtok` to rank {}\n",
                unpriced.join(", "),
                if unpriced.len() == 1 { "has" } else { "have" },
                if unpriced.len() == 1 { "it" } else { "them" },
                if unpriced.len() == 1 { "it" } else { "them" }
            );
        }
    }
    crate::make_out_dir(&a.out, "requests.csv, summary.json and report.html")?;
    let csv_path = a.out.join("requests.csv");
    let mut csv = if a.no_csv {
        // A requests.csv of an earlier run would sit beside this run's summary as if it
        // were this run's.
        match std::fs::remove_file(&csv_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", csv_path.display()));
            }
            _ => {}
        }
        None
    } else {
        let f = std::fs::File::create(&csv_path)
            .with_context(|| format!("creating {}", csv_path.display()))?;
        let mut w = BufWriter::new(f);
        writeln!(w, "{}", Record::CSV_HEADER)?;
        Some(w)
    };
    let mut line = String::new();
    let mut io_err = None;
    let sink = |r: &Record<'_>| {
        if let Some(w) = csv.as_mut() {
            line.clear();
            r.write_csv(&mut line);
            if let Err(e) = w.write_all(line.as_bytes()) {
                io_err.get_or_insert(e);
            }
        }
    };
    let tty = std::io::stderr().is_terminal();
    let mut last = -1i64;
    let mut progress = |f: f64| {
        if !tty {
            return;
        }
        let pct = (f * 100.0).floor() as i64;
        if pct != last {
            last = pct;
            let filled = (pct / 4) as usize;
            err!(
                "\r[{}{}] {pct:>3}% of arrivals",
                "#".repeat(filled),
                " ".repeat(25 - filled.min(25))
            );
            if pct >= 100 {
                err!("\n");
            }
        }
    };
    let (summary, dist) = run_sim(&scn, params, RunOptions::default(), sink, &mut progress);
    // As `requests = 0` is refused: a run in which nothing arrives shows nothing, and
    // leaves no empty requests.csv behind.
    if summary.arrivals == 0 {
        drop(csv);
        if !a.no_csv {
            let _ = std::fs::remove_file(&csv_path);
        }
        return Err(UsageError(format!(
            "no request arrives in the run of {}: its `duration_s` ends before the first arrival; lengthen it or raise the rate",
            a.scenario.as_ref().map_or_else(|| "the built-in scenario".to_string(), |p| p.display().to_string())
        ))
        .into());
    }
    if let Some(e) = io_err {
        return Err(e).with_context(|| format!("writing {}", csv_path.display()));
    }
    if let Some(mut w) = csv {
        w.flush()
            .with_context(|| format!("writing {}", csv_path.display()))?;
    }
    let json = serde_json::to_string_pretty(&summary)?;
    let json_path = a.out.join("summary.json");
    std::fs::write(&json_path, format!("{json}\n"))
        .with_context(|| format!("writing {}", json_path.display()))?;
    let html_path = a.out.join("report.html");
    std::fs::write(&html_path, report::html(&summary, &dist))
        .with_context(|| format!("writing {}", html_path.display()))?;
    if a.json {
        out!("{json}");
        return Ok(());
    }
    print_summary(&summary);
    out!("");
    if !a.no_csv {
        out!("per-request CSV: {}", csv_path.display());
    }
    out!("summary JSON:    {}", json_path.display());
    out!("HTML report:     {}", html_path.display());
    Ok(())
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{:.0}", x * 1000.0))
}

fn ms1(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{:.1}", x * 1000.0))
}

fn print_groups(title: &str, groups: &[&Group]) {
    out!("{title}");
    // As wide as the longest name (a failure window's names its kind, replica and times),
    // so that the columns stay aligned.
    let w = groups
        .iter()
        .map(|g| g.name.chars().count())
        .fold(34, usize::max);
    out!(
        "  {:<w$} {:>8} {:>7} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6} {:>6} {:>8} {:>6} {:>8} {:>8}",
        "name", "requests", "failed", "fallback", "goodput", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99",
        "E2E p99", "tok/s", "util", "load", "preempt", "cached", "J/tok", "$/Mtok"
    );
    for g in groups {
        out!(
            "  {:<w$} {:>8} {:>7} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9.0} {:>6} {:>6} {:>8} {:>6} {:>8} {:>8}",
            g.name,
            g.requests,
            g.failed,
            g.fallbacks_in,
            // No request with a target, no share of them.
            g.goodput.map_or_else(
                || "-".to_string(),
                |v| format!("{}%", report::goodput_percent(v))
            ),
            ms(g.ttft_s.p50),
            ms(g.ttft_s.p99),
            ms1(g.tpot_s.p50),
            ms1(g.tpot_s.p99),
            ms(g.e2e_s.p99),
            g.throughput_tok_s,
            g.utilization.map_or_else(|| "-".into(), |u| format!("{:.0}%", u * 100.0)),
            g.load.map_or_else(|| "-".into(), |u| format!("{:.0}%", u * 100.0)),
            g.preemptions.map_or_else(|| "-".into(), |n| n.to_string()),
            g.prefix_hit.map_or_else(|| "-".into(), |h| format!("{:.0}%", h * 100.0)),
            g.joules_per_token.map_or_else(|| "-".into(), |j| format!("{j:.2}")),
            g.usd_per_mtok.map_or_else(|| "-".into(), |c| format!("{c:.2}")),
        );
    }
}

fn print_summary(s: &Summary) {
    out!(
        "{}: {} requests over {:.0} s simulated ({} completed, {} failed), policy {}, seed {}",
        s.scenario,
        s.arrivals,
        s.duration_s,
        s.completed,
        s.failed,
        s.policy,
        s.seed
    );
    for d in &s.deployments {
        out!("  {d}");
    }
    out!("targets: {}", report::targets_text(&s.targets));
    out!("latencies in ms; goodput = share of the requests with TTFT or TPOT targets that meet them (- where no class sets one)");
    out!("");
    let mut providers: Vec<&Group> = s.providers.iter().collect();
    providers.push(&s.fleet);
    print_groups("by provider", &providers);
    out!("");
    print_groups("by class", &s.classes.iter().collect::<Vec<_>>());
    if let Some(steady) = &s.steady {
        out!("");
        print_groups(
            "requests arriving after the warm-up, against the whole run",
            &[steady, &s.fleet],
        );
    }
    if !s.failure_windows.is_empty() {
        out!("");
        let mut rows: Vec<&Group> = s.failure_windows.iter().collect();
        rows.push(&s.fleet);
        print_groups(
            "requests arriving during each failure, against the whole run",
            &rows,
        );
    }
    if !s.failures.is_empty() {
        out!("");
        out!("failed requests");
        for f in &s.failures {
            out!("  {:<14} {:>8}  {}", f.class, f.count, f.reason);
        }
    }
}
