//! The HTML report of a run: tables per provider and class, latency CDFs per provider, and
//! queue length and throughput over time, as one self-contained page.

use crate::fleet::Distributions;
use crate::stats::{Bin, Group, Quantiles, Summary};
use switchyard_report::{
    escape, line_chart, page, step_chart, table, Axis, Section, Series, Table,
};

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |x| format!("{:.1}", x * 1000.0))
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_string(), |x| format!("{x:.digits$}"))
}

fn latency_cells(q: &Quantiles) -> [String; 3] {
    [ms(q.p50), ms(q.p90), ms(q.p99)]
}

/// The classes' targets in words (`chat: TTFT 2000 ms, TPOT 50 ms; batch: none`).
pub fn targets_text(classes: &[crate::Class]) -> String {
    classes
        .iter()
        .map(|c| {
            let parts: Vec<String> = [("TTFT", c.ttft_s), ("TPOT", c.tpot_s)]
                .iter()
                .filter_map(|(what, v)| v.map(|v| format!("{what} {} ms", (v * 1e6).round() / 1e3)))
                .collect();
            let parts = if parts.is_empty() {
                "none".to_string()
            } else {
                parts.join(", ")
            };
            format!("{}: {parts}", c.name)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A goodput share as a percentage to one decimal, rounded down: a share short of all
/// (99.95%) never reads as every request meeting its targets.
pub fn goodput_percent(share: f64) -> String {
    // The nudge keeps a share that is a whole tenth (0.999) from flooring a tenth below it
    // for the binary fraction it is stored as.
    format!("{:.1}", (share * 1000.0 + 1e-6).floor() / 10.0)
}

/// The rows of a group table: counts, goodput, TTFT/TPOT/E2E percentiles in ms,
/// throughput, and the provider-only columns.
pub fn group_table(groups: &[&Group]) -> Table {
    let headers = [
        "name",
        "requests",
        "completed",
        "failed",
        "goodput %",
        "fallbacks in",
        "TTFT p50 ms",
        "TTFT p90",
        "TTFT p99",
        "TPOT p50 ms",
        "TPOT p90",
        "TPOT p99",
        "E2E p50 ms",
        "E2E p90",
        "E2E p99",
        "tok/s",
        "util %",
        "load %",
        "preempt",
        "prefix hit %",
        "J/tok",
        "$/Mtok",
    ];
    let rows = groups
        .iter()
        .map(|g| {
            let mut row = vec![
                g.name.clone(),
                g.requests.to_string(),
                g.completed.to_string(),
                g.failed.to_string(),
                g.goodput.map_or_else(|| "-".to_string(), goodput_percent),
                g.fallbacks_in.to_string(),
            ];
            row.extend(latency_cells(&g.ttft_s));
            row.extend(latency_cells(&g.tpot_s));
            row.extend(latency_cells(&g.e2e_s));
            row.push(format!("{:.0}", g.throughput_tok_s));
            row.push(opt(g.utilization.map(|u| u * 100.0), 1));
            row.push(opt(g.load.map(|u| u * 100.0), 1));
            row.push(g.preemptions.map_or_else(|| "–".into(), |n| n.to_string()));
            row.push(opt(g.prefix_hit.map(|h| h * 100.0), 1));
            row.push(opt(g.joules_per_token, 3));
            row.push(opt(g.usd_per_mtok, 3));
            row
        })
        .collect();
    Table {
        headers: headers.iter().map(|h| (*h).to_string()).collect(),
        rows,
    }
}

/// One series per provider of a per-bin count turned into a rate per second.
fn per_provider_rate(s: &Summary, counts: impl Fn(&Bin) -> &Vec<u64>) -> Vec<Series> {
    s.providers
        .iter()
        .enumerate()
        .map(|(p, g)| Series {
            name: g.name.clone(),
            points: s
                .bins
                .iter()
                .map(|b| {
                    let n = counts(b).get(p).copied().unwrap_or(0);
                    (b.start_s, n as f64 / s.bin_s)
                })
                .collect(),
        })
        .collect()
}

/// The whole report page.
pub fn html(s: &Summary, d: &Distributions) -> String {
    let mut sections = vec![Section {
        heading: "Deployments".into(),
        html: format!(
            "<ul>{}</ul><p>Targets: {}.</p>",
            s.deployments
                .iter()
                .map(|d| format!("<li>{}</li>", escape(d)))
                .collect::<String>(),
            escape(&targets_text(&s.targets))
        ),
    }];
    let mut groups: Vec<&Group> = s.providers.iter().collect();
    groups.push(&s.fleet);
    sections.push(Section {
        heading: "Providers".into(),
        html: table(&group_table(&groups)),
    });
    sections.push(Section {
        heading: "Traffic classes".into(),
        html: table(&group_table(&s.classes.iter().collect::<Vec<_>>())),
    });
    let cells: Vec<&Group> = s
        .cells
        .iter()
        .flatten()
        .filter(|g| g.requests > 0)
        .collect();
    if s.classes.len() > 1 {
        sections.push(Section {
            heading: "Providers by class".into(),
            html: table(&group_table(&cells)),
        });
    }
    let cdf = |hs: &[crate::stats::Histogram], names: &mut dyn Iterator<Item = &str>| {
        hs.iter()
            .zip(names)
            .filter(|(h, _)| h.count() > 0)
            .map(|(h, n)| Series {
                name: n.to_string(),
                points: h.cdf(),
            })
            .collect::<Vec<_>>()
    };
    let ttft = cdf(&d.ttft, &mut s.providers.iter().map(|g| g.name.as_str()));
    let e2e = cdf(&d.e2e, &mut s.providers.iter().map(|g| g.name.as_str()));
    let class_ttft = cdf(
        &d.class_ttft,
        &mut s.classes.iter().map(|g| g.name.as_str()),
    );
    let fraction = Axis::linear("fraction of requests");
    sections.push(Section {
        heading: "Latency distributions".into(),
        html: [
            step_chart(
                "Time to first token by provider",
                &Axis::log("seconds"),
                &fraction,
                &ttft,
            ),
            step_chart(
                "Time to first token by class",
                &Axis::log("seconds"),
                &fraction,
                &class_ttft,
            ),
            step_chart(
                "End-to-end latency by provider",
                &Axis::log("seconds"),
                &fraction,
                &e2e,
            ),
        ]
        .concat(),
    });
    let t = |b: &Bin| b.start_s;
    // Queue lengths are snapshots at the end of each bin; rates are per bin.
    let end = |b: &Bin| b.start_s + s.bin_s;
    let queue = vec![
        Series {
            name: "waiting in replica queues".into(),
            points: s.bins.iter().map(|b| (end(b), b.queued as f64)).collect(),
        },
        Series {
            name: "in the system".into(),
            points: s
                .bins
                .iter()
                .map(|b| (end(b), b.in_system as f64))
                .collect(),
        },
    ];
    let tput = per_provider_rate(s, |b| &b.tokens);
    let failed = vec![Series {
        name: "failed requests per second".into(),
        points: s
            .bins
            .iter()
            .map(|b| (t(b), b.failed as f64 / s.bin_s))
            .collect(),
    }];
    let time = Axis::linear("simulated seconds");
    let ttft_t = vec![Series {
        name: "mean TTFT of completed requests".into(),
        points: s
            .bins
            .iter()
            .filter_map(|b| b.mean_ttft_s.map(|v| (end(b), v)))
            .collect(),
    }];
    let fallbacks = per_provider_rate(s, |b| &b.fallbacks);
    let mut over_time = vec![
        line_chart(
            "Requests queued and in the system",
            &time,
            &Axis::linear("requests"),
            &queue,
        ),
        line_chart(
            "Output tokens per second by provider",
            &time,
            &Axis::linear("tokens/s"),
            &tput,
        ),
    ];
    over_time.push(line_chart(
        "Time to first token over time",
        &time,
        &Axis::linear("seconds"),
        &ttft_t,
    ));
    if !s.failure_windows.is_empty() {
        over_time.push(line_chart(
            "Fallback requests completed per second, by the provider that took them",
            &time,
            &Axis::linear("requests/s"),
            &fallbacks,
        ));
    }
    if s.failed > 0 {
        over_time.push(line_chart(
            "Failures",
            &time,
            &Axis::linear("per second"),
            &failed,
        ));
    }
    sections.push(Section {
        heading: "Over time".into(),
        html: over_time.concat(),
    });
    if let Some(steady) = &s.steady {
        sections.push(Section {
            heading: "Requests arriving after the warm-up, against the whole run".into(),
            html: table(&group_table(&[steady, &s.fleet])),
        });
    }
    if !s.failure_windows.is_empty() {
        let mut rows: Vec<&Group> = s.failure_windows.iter().collect();
        rows.push(&s.fleet);
        sections.push(Section {
            heading: "Requests arriving during each failure, against the whole run".into(),
            html: table(&group_table(&rows)),
        });
    }
    if !s.failures.is_empty() {
        sections.push(Section {
            heading: "Failed requests".into(),
            html: table(&Table {
                headers: vec!["class".into(), "reason".into(), "requests".into()],
                rows: s
                    .failures
                    .iter()
                    .map(|f| vec![f.class.clone(), f.reason.clone(), f.count.to_string()])
                    .collect(),
            }),
        });
    }
    let l = &s.little;
    sections.push(Section {
        heading: "Checks".into(),
        html: format!(
            "<p>Bookkeeping: arrivals {} = completed {} + failed {}. Little's law over the whole run, draining included: mean in system (the running count) {:.3} against arrival rate × mean time in system (each request's own) = {:.3} × {:.3} = {:.3}.</p>",
            s.arrivals,
            s.completed,
            s.failed,
            l.mean_in_system,
            l.arrival_rate,
            l.mean_time_in_system,
            l.arrival_rate * l.mean_time_in_system
        ),
    });
    let subtitle = format!(
        "policy {}, seed {}, {} requests over {:.0} simulated seconds, {} steps",
        s.policy, s.seed, s.arrivals, s.duration_s, s.steps
    );
    page(
        &format!("Switchyard simulation: {}", s.scenario),
        &subtitle,
        &sections,
    )
}
