//! Behaviour of the report renderer as its callers see it: escaping, determinism, no network
//! references, axis ticks, bar totals, the CDF helper and the empty cases.

use switchyard_report::{
    cdf, compact, escape, line_chart, nice_ticks, page, stacked_bars, step_chart, table, Axis,
    Section, Series, Table,
};

/// The `points` attribute of every polyline in a chart, as coordinate pairs.
fn polylines(svg: &str) -> Vec<Vec<(f64, f64)>> {
    svg.split("<polyline points=\"")
        .skip(1)
        .map(|rest| {
            let attr = rest.split('"').next().expect("closing quote");
            attr.split(' ')
                .map(|pair| {
                    let (x, y) = pair.split_once(',').expect("x,y pair");
                    (
                        x.parse().expect("x is a number"),
                        y.parse().expect("y is a number"),
                    )
                })
                .collect()
        })
        .collect()
}

/// A report exercising every kind of content.
fn sample_page() -> String {
    let mut lat = vec![0.12, 0.3, 0.25, 0.9, 4.0, 0.31, 0.28, 1.7];
    let series = vec![
        Series::new("H100 x8", vec![(1.0, 120.0), (8.0, 700.0), (64.0, 2400.0)]),
        Series::new("wafer", vec![(1.0, 900.0), (8.0, 6000.0), (64.0, 21000.0)]),
    ];
    let bars = vec![
        Series::new("capex", vec![(0.0, 3.0), (0.0, 5.5)]),
        Series::new("power", vec![(0.0, 1.25), (0.0, 2.0)]),
    ];
    let cats = vec!["plan A".to_owned(), "plan B".to_owned()];
    let sections = vec![
        Section {
            heading: "Throughput".into(),
            html: line_chart(
                "Tokens/s vs users",
                &Axis::log("users"),
                &Axis::linear("tok/s"),
                &series,
            ),
        },
        Section {
            heading: "Latency".into(),
            html: step_chart(
                "TTFT CDF",
                &Axis::linear("s"),
                &Axis::linear("fraction"),
                &[Series::new("ttft", cdf(&mut lat, 50))],
            ),
        },
        Section {
            heading: "Cost".into(),
            html: stacked_bars("Cost", &cats, &Axis::linear("$M"), &bars),
        },
        Section {
            heading: "Table".into(),
            html: table(&Table {
                headers: vec!["plan".into(), "cost".into()],
                rows: vec![vec!["A".into(), "4.25".into()]],
            }),
        },
    ];
    page("Fleet report", "run 7 <test>", &sections)
}

#[test]
fn escape_covers_markup_characters() {
    assert_eq!(
        escape(r#"a & b < c > d "e" 'f'"#),
        "a &amp; b &lt; c &gt; d &quot;e&quot; &#39;f&#39;"
    );
    assert_eq!(escape("plain ü"), "plain ü");
}

#[test]
fn rendering_is_deterministic() {
    let a = sample_page();
    let b = sample_page();
    assert_eq!(a, b);
    assert!(a.starts_with("<!DOCTYPE html>"));
    assert!(a.contains("<meta charset=\"utf-8\">"));
    assert!(a.contains("run 7 &lt;test&gt;"));
    // Sections appear in the order given.
    let pos = |s: &str| a.find(s).expect("section heading present");
    assert!(pos("<h2>Throughput") < pos("<h2>Latency"));
    assert!(pos("<h2>Latency") < pos("<h2>Cost"));
    assert!(pos("<h2>Cost") < pos("<h2>Table"));
}

#[test]
fn page_references_no_network() {
    let html = sample_page();
    assert!(html.contains("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    let rest = html.replace("http://www.w3.org/2000/svg", "");
    assert!(!rest.contains("http://"), "found a URL");
    assert!(!rest.contains("https://"), "found a URL");
    for fetcher in ["<script", "<link", "<img", "@import", "url(", "src="] {
        assert!(!rest.contains(fetcher), "found {fetcher}");
    }
    for bad in ["NaN", "inf"] {
        assert!(!html.contains(bad), "found {bad}");
    }
}

#[test]
fn charts_are_accessible_scalable_svg() {
    let svg = line_chart(
        "A <b> chart",
        &Axis::linear("x"),
        &Axis::linear("y"),
        &[Series::new("s", vec![(0.0, 1.0), (1.0, 2.0)])],
    );
    assert!(svg.contains("viewBox=\"0 0 720 360\""));
    assert!(svg.contains("role=\"img\""));
    assert!(svg.contains("<title>A &lt;b&gt; chart</title>"));
    assert!(svg.contains("sans-serif"));
    assert!(svg.ends_with("</svg>"));
}

#[test]
fn log_axis_skips_non_positive_and_ticks_at_powers_of_ten() {
    assert_eq!(
        nice_ticks(0.5, 2000.0, true),
        vec![0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0]
    );
    assert!(nice_ticks(0.0, 10.0, true).is_empty());

    let points = vec![
        (1.0, 0.0),
        (10.0, -5.0),
        (100.0, 50.0),
        (f64::NAN, 3.0),
        (1000.0, 500.0),
        (-1.0, 20.0),
        (10000.0, f64::INFINITY),
    ];
    let svg = line_chart(
        "log",
        &Axis::log("x"),
        &Axis::log("y"),
        &[Series::new("s", points)],
    );
    let lines = polylines(&svg);
    assert_eq!(lines.len(), 1);
    assert_eq!(
        lines[0].len(),
        2,
        "only (100, 50) and (1000, 500) are drawable"
    );
    // Ticks: x spans 100..1000, y 50..500 -> 10..1000.
    for label in [">100<", ">1k<", ">10<"] {
        assert!(svg.contains(label), "missing tick {label}");
    }
    assert!(!svg.contains("NaN") && !svg.contains("inf"));
}

#[test]
fn linear_ticks_are_round_and_cover_the_data() {
    let t = nice_ticks(0.0, 37.0, false);
    assert_eq!(t, vec![0.0, 10.0, 20.0, 30.0, 40.0]);

    for (lo, hi) in [
        (0.0, 37.0),
        (0.013, 0.087),
        (-4.2, 123_456.0),
        (5.0, 5.0),
        (-3.0, -2.9),
        (1e6, 3e9),
    ] {
        let t = nice_ticks(lo, hi, false);
        assert!(t.len() >= 2 && t.len() <= 12, "{lo}..{hi}: {t:?}");
        assert!(t[0] <= lo && t[t.len() - 1] >= hi, "{lo}..{hi}: {t:?}");
        let step = t[1] - t[0];
        let mantissa = step / 10f64.powf(step.log10().floor());
        assert!(
            [1.0, 2.0, 5.0].iter().any(|m| (mantissa - m).abs() < 1e-6),
            "{lo}..{hi}: step {step}"
        );
        for (k, v) in t.iter().enumerate() {
            // Each tick is a whole multiple of the step, and evenly spaced.
            let units = v / step;
            assert!((units - units.round()).abs() < 1e-6, "{v} not on {step}");
            assert!((v - (t[0] + k as f64 * step)).abs() < step * 1e-6);
        }
    }
    let small: Vec<String> = nice_ticks(0.0, 0.3, false)
        .into_iter()
        .map(compact)
        .collect();
    assert_eq!(small, ["0", "0.1", "0.2", "0.3"]);
}

#[test]
fn stacked_bar_totals_appear() {
    let cats = vec!["east".to_owned(), "west".to_owned(), "<north>".to_owned()];
    let series = vec![
        Series::new("a", vec![(0.0, 1.5), (0.0, 1200.0), (0.0, f64::NAN)]),
        Series::new("b", vec![(0.0, 2.5), (0.0, 300.0)]),
    ];
    let svg = stacked_bars("totals", &cats, &Axis::linear("n"), &series);
    assert!(
        svg.contains("font-weight=\"bold\">4</text>"),
        "east total 4"
    );
    assert!(
        svg.contains("font-weight=\"bold\">1.5k</text>"),
        "west total 1.5k"
    );
    assert!(
        svg.contains("font-weight=\"bold\">0</text>"),
        "north total 0"
    );
    assert!(svg.contains("&lt;north&gt;"));
    // Four positive segments (each with a tooltip); the NaN and the missing value draw nothing.
    assert_eq!(svg.matches("</title></rect>").count(), 4);
    assert!(svg.contains("<title>b, west: 300</title>"));
}

#[test]
fn cdf_is_monotone_ends_at_one_and_respects_max_points() {
    // A skewed sample: many small values and a long tail.
    let mut values: Vec<f64> = (0..5000)
        .map(|i| {
            let u = (i as f64 * 0.618_033_988_75).fract();
            0.05 / (1.0 - u * 0.999)
        })
        .collect();
    values.push(f64::NAN);
    let max = values
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let min = values
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f64::MAX, f64::min);
    let pts = cdf(&mut values, 100);
    assert!(pts.len() <= 100 && pts.len() >= 50, "{}", pts.len());
    assert_eq!(pts[0].0, min);
    assert_eq!(pts[pts.len() - 1], (max, 1.0));
    for w in pts.windows(2) {
        assert!(w[0].0 < w[1].0 && w[0].1 < w[1].1, "{w:?}");
    }
    assert!(pts[0].1 > 0.0);
    // Values were sorted in place.
    assert!(values[..5000].windows(2).all(|w| w[0] <= w[1]));

    let mut few = [3.0, 1.0, 2.0];
    assert_eq!(cdf(&mut few, 2).len(), 2);
    assert_eq!(cdf(&mut few, 1), vec![(3.0, 1.0)]);
    assert!(cdf(&mut [], 10).is_empty());
}

#[test]
fn step_chart_draws_horizontal_then_vertical() {
    let s = [Series::new("c", vec![(0.0, 0.0), (1.0, 0.5), (2.0, 1.0)])];
    let svg = step_chart("steps", &Axis::linear("x"), &Axis::linear("y"), &s);
    let line = &polylines(&svg)[0];
    assert_eq!(line.len(), 5);
    for pair in line[..].windows(2) {
        let (a, b) = (pair[0], pair[1]);
        assert!(a.0 == b.0 || a.1 == b.1, "diagonal segment {a:?} -> {b:?}");
    }
    assert_eq!(line[1].1, line[0].1, "first move is horizontal");
}

#[test]
fn empty_input_says_no_data() {
    let x = Axis::linear("x");
    let y = Axis::linear("y");
    for svg in [
        line_chart("empty", &x, &y, &[]),
        line_chart("nan", &x, &y, &[Series::new("s", vec![(f64::NAN, 1.0)])]),
        line_chart(
            "log",
            &Axis::log("x"),
            &y,
            &[Series::new("s", vec![(0.0, 1.0)])],
        ),
        step_chart("empty", &x, &y, &[Series::new("s", vec![])]),
        stacked_bars("empty", &[], &y, &[Series::new("s", vec![(0.0, 1.0)])]),
        stacked_bars("empty", &["a".to_owned()], &y, &[]),
    ] {
        assert!(svg.contains(">no data</text>"), "{svg}");
        assert!(svg.ends_with("</svg>"));
        assert!(!svg.contains("<polyline"));
    }
    let svg = line_chart("data", &x, &y, &[Series::new("s", vec![(1.0, 1.0)])]);
    assert!(!svg.contains("no data"));
    assert!(svg.contains("<circle"), "a lone point is drawn as a dot");
}

#[test]
fn table_escapes_cells() {
    let html = table(&Table {
        headers: vec!["<b>name</b>".into(), "value".into()],
        rows: vec![vec!["<script>alert(1)</script>".into(), "1,234.5".into()]],
    });
    assert!(!html.contains("<script"));
    assert!(!html.contains("<b>"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("<th>&lt;b&gt;name&lt;/b&gt;</th>"));
    assert!(html.contains("<td class=\"num\">1,234.5</td>"));
}
