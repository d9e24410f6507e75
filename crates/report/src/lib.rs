//! Self-contained HTML reports: charts drawn as inline SVG, tables, and a page around them.
//!
//! The simulator and the planner write `report.html` files that must open anywhere, offline
//! and years later, so nothing here refers to the network: no scripts, fonts, stylesheets or
//! images are fetched. Everything is a pure function from data to a `String` (the crate does
//! no IO), and the same input always gives byte-identical output, with numbers written at a
//! fixed precision, so reports can be diffed and checked into tests.

mod chart;
mod html;
mod scale;

pub use chart::{line_chart, stacked_bars, step_chart, Axis, Series};
pub use html::{page, table, Section, Table};
pub use scale::nice_ticks;

/// HTML/XML escaping of text (`&`, `<`, `>`, `"` and `'`), safe both in element content and in
/// quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A number written compactly for tick and total labels: `1.5k`, `2M`, `37.5`, `0.05`,
/// `1e-5`.
///
/// At most three significant decimals survive, trailing zeros are dropped, and thousands
/// take SI-style suffixes (k, M, G, T) so labels stay short enough not to collide.
pub fn compact(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_owned();
    }
    if v.is_infinite() {
        return if v > 0.0 { "∞" } else { "-∞" }.to_owned();
    }
    let a = v.abs();
    if a == 0.0 {
        return "0".to_owned();
    }
    const SUFFIXES: [(f64, &str); 4] = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
    for (scale, suffix) in SUFFIXES {
        if a >= scale {
            return format!("{}{suffix}", trim(&format!("{:.2}", v / scale)));
        }
    }
    if a >= 1.0 {
        trim(&format!("{v:.2}"))
    } else if a >= 1e-3 {
        trim(&format!("{v:.4}"))
    } else {
        // Below a thousandth, fixed decimals would be a row of zeros; use an exponent.
        format!("{v:.1e}").replace(".0e", "e")
    }
}

/// Drops trailing zeros (and a bare point) from a fixed-decimal number, and the sign of a
/// value that rounded to zero.
fn trim(s: &str) -> String {
    let t = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    };
    if t == "-0" { "0" } else { t }.to_owned()
}

/// The empirical CDF of `values`, thinned to at most `max_points` points for drawing.
///
/// Sorts `values` in place (non-finite values sort to the ends and are ignored) and returns
/// `(value, fraction of values <= value)` points with increasing x and y, ending at `y = 1.0`.
/// Equal values collapse into one point, so each point is exact. When more than `max_points`
/// remain, points are picked evenly along the curve's length with x scaled to the value range
/// and y already in 0..1, which keeps both the steep middle and a long thin tail (p99.9 of a
/// latency distribution); the first and last point are always kept. `max_points` of 1 keeps
/// only the last point; 0, or no finite values, gives nothing. Draw it with [`step_chart`].
pub fn cdf(values: &mut [f64], max_points: usize) -> Vec<(f64, f64)> {
    values.sort_by(f64::total_cmp);
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let n = finite.len() as f64;
    let mut pts: Vec<(f64, f64)> = Vec::new();
    for (i, &v) in finite.iter().enumerate() {
        let y = (i + 1) as f64 / n;
        match pts.last_mut() {
            Some(last) if last.0 == v => last.1 = y,
            _ => pts.push((v, y)),
        }
    }
    if let Some(last) = pts.last_mut() {
        // (i + 1) / n is exactly 1 at i = n - 1, but say so rather than rely on it.
        last.1 = 1.0;
    }
    if pts.len() <= max_points {
        return pts;
    }
    match max_points {
        0 => return Vec::new(),
        1 => return pts.split_off(pts.len() - 1),
        _ => {}
    }
    let (x0, x1) = (pts[0].0, pts[pts.len() - 1].0);
    let xspan = x1 - x0;
    // Cumulative normalised path length at each point.
    let mut along = Vec::with_capacity(pts.len());
    let mut total = 0.0;
    for (k, p) in pts.iter().enumerate() {
        if k > 0 {
            let q = pts[k - 1];
            let dx = if xspan > 0.0 {
                (p.0 - q.0) / xspan
            } else {
                0.0
            };
            total += dx.hypot(p.1 - q.1);
        }
        along.push(total);
    }
    let last = pts.len() - 1;
    let mut keep = vec![0];
    let mut k = 1;
    for j in 1..max_points - 1 {
        let target = total * j as f64 / (max_points - 1) as f64;
        while k < last && along[k] < target {
            k += 1;
        }
        if k < last && keep.last() != Some(&k) {
            keep.push(k);
        }
    }
    keep.push(last);
    keep.into_iter().map(|k| pts[k]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_labels() {
        let got: Vec<String> = [0.0, 1500.0, 2e6, 37.5, 0.05, 1e-5, -0.0001, 3.1e12, 999.0]
            .iter()
            .map(|&v| compact(v))
            .collect();
        assert_eq!(
            got,
            ["0", "1.5k", "2M", "37.5", "0.05", "1e-5", "-1e-4", "3.1T", "999"]
        );
    }

    #[test]
    fn cdf_collapses_ties() {
        let mut v = [2.0, 1.0, 2.0, 3.0];
        assert_eq!(cdf(&mut v, 10), vec![(1.0, 0.25), (2.0, 0.75), (3.0, 1.0)]);
        assert_eq!(v, [1.0, 2.0, 2.0, 3.0]);
    }
}
