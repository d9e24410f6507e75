//! Charts as inline SVG strings: line and step charts over two axes, and stacked bars.
//!
//! Every chart is a 720 x 360 `viewBox`, so it scales with the page, carries `role="img"` and
//! a `<title>` for screen readers, and draws nothing that needs scripts or fetched fonts.
//! Coordinates are written with one decimal so the same data always gives the same bytes.

use crate::scale::{nice_ticks, Scale};
use crate::{compact, escape};

/// Width of every chart in SVG user units.
const W: f64 = 720.0;
/// Height of every chart in SVG user units.
const H: f64 = 360.0;
/// Room left of the plot for y tick labels and the rotated axis label.
const LEFT: f64 = 68.0;
/// Room right of the plot so the last x tick label is not clipped.
const RIGHT: f64 = 24.0;
/// Room below the plot for x tick labels and the axis label.
const BOTTOM: f64 = 48.0;
/// Baseline of the first legend row, just under the title.
const LEGEND_Y: f64 = 44.0;
/// Height of one legend row.
const LEGEND_ROW: f64 = 16.0;
/// Rough width of one 12-unit glyph; SVG has no text measurement without a renderer, so the
/// legend wraps on an estimate that errs wide.
const GLYPH: f64 = 7.0;
/// System fonts only: a report must render offline, so no web fonts.
const FONT: &str = "system-ui, -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif";

/// The Okabe-Ito palette, distinguishable under the common colour-vision deficiencies; yellow
/// goes last because it is faint on white.
const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442",
];
/// Dash patterns for the second and third trips round the palette, so series 1 and 9 still
/// differ when more than eight are drawn.
const DASHES: [&str; 3] = ["", " stroke-dasharray=\"6 3\"", " stroke-dasharray=\"2 2\""];

/// One named series of (x, y) points.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// The name shown in the legend and tooltips.
    pub name: String,
    /// The points in drawing order; line charts join them in this order, unsorted.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series from a name and its points.
    pub fn new(name: &str, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.to_owned(),
            points,
        }
    }
}

/// An axis: label and whether it is logarithmic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Axis {
    /// The text under (x) or beside (y) the axis, units included by the caller.
    pub label: String,
    /// Logarithmic (ticks at powers of ten; values that are not positive are skipped).
    pub log: bool,
}

impl Axis {
    /// A linear axis with 1-2-5 ticks.
    pub fn linear(label: &str) -> Self {
        Self {
            label: label.to_owned(),
            log: false,
        }
    }

    /// A logarithmic axis with power-of-ten ticks.
    pub fn log(label: &str) -> Self {
        Self {
            label: label.to_owned(),
            log: true,
        }
    }

    /// Whether `v` can be placed on this axis: finite, and positive on a log axis.
    fn shows(&self, v: f64) -> bool {
        v.is_finite() && (!self.log || v > 0.0)
    }
}

/// A line chart: one polyline per series joining its points in order, with nice ticks,
/// compact tick labels and a legend.
///
/// Non-finite points, and on a log axis points with a non-positive coordinate, are skipped;
/// a series left with one point is drawn as a dot. With no drawable point at all the chart
/// is an empty frame saying "no data".
pub fn line_chart(title: &str, x: &Axis, y: &Axis, series: &[Series]) -> String {
    xy_chart(title, x, y, series, false)
}

/// Like [`line_chart`], but each pair of points is joined horizontally then vertically, as
/// for an empirical CDF (see [`crate::cdf`]) or a value that holds until it next changes.
pub fn step_chart(title: &str, x: &Axis, y: &Axis, series: &[Series]) -> String {
    xy_chart(title, x, y, series, true)
}

/// The plot rectangle inside the chart, in chart coordinates.
#[derive(Debug, Clone, Copy)]
struct Plot {
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

/// Shared body of [`line_chart`] and [`step_chart`]; `step` inserts the corner points.
fn xy_chart(title: &str, x: &Axis, y: &Axis, series: &[Series], step: bool) -> String {
    let kept: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| {
            s.points
                .iter()
                .copied()
                .filter(|&(px, py)| x.shows(px) && y.shows(py))
                .collect()
        })
        .collect();
    let mut out = open_svg(title);
    let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
    let plot = plot_below(legend(&mut out, &names, false));
    let all = || kept.iter().flatten();
    let (Some((xlo, xhi)), Some((ylo, yhi))) =
        (bounds(all().map(|p| p.0)), bounds(all().map(|p| p.1)))
    else {
        no_data(&mut out, &plot, x, y);
        return out;
    };
    let xt = nice_ticks(xlo, xhi, x.log);
    let yt = nice_ticks(ylo, yhi, y.log);
    let xs = Scale::new(&xt, x.log, plot.left, plot.right);
    let ys = Scale::new(&yt, y.log, plot.bottom, plot.top);
    grid(&mut out, &plot, &xt, &xs, &yt, &ys);
    frame(&mut out, &plot, x, y);
    for (i, pts) in kept.iter().enumerate() {
        let style = series_style(i);
        let name = escape(&series[i].name);
        if let [(px, py)] = pts.as_slice() {
            out.push_str(&format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{}\"><title>{name}</title></circle>",
                xs.at(*px),
                ys.at(*py),
                style.0
            ));
            continue;
        }
        let mut coords = String::new();
        let mut prev: Option<(f64, f64)> = None;
        for &(px, py) in pts {
            let (cx, cy) = (xs.at(px), ys.at(py));
            if let (true, Some((_, pcy))) = (step, prev) {
                coords.push_str(&format!("{cx:.1},{pcy:.1} "));
            }
            coords.push_str(&format!("{cx:.1},{cy:.1} "));
            prev = Some((cx, cy));
        }
        if !coords.is_empty() {
            out.push_str(&format!(
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\" \
                 stroke-linejoin=\"round\"{}><title>{name}</title></polyline>",
                coords.trim_end(),
                style.0,
                style.1
            ));
        }
    }
    out.push_str("</svg>");
    out
}

/// Vertical stacked bars: one bar per category, one segment per series.
///
/// `series[i].points[j].1` is the value of series `i` in category `j` (x is ignored); a
/// missing, non-finite or negative value adds nothing, since a negative segment cannot be
/// stacked meaningfully. The y axis always starts at zero and is linear even if `y.log` is
/// set, because stacked segments on a log scale misstate each part's share. Each bar has its
/// total written above it. No categories or no series render "no data".
pub fn stacked_bars(title: &str, categories: &[String], y: &Axis, series: &[Series]) -> String {
    let value = |i: usize, j: usize| {
        series[i]
            .points
            .get(j)
            .map(|p| p.1)
            .filter(|v| v.is_finite() && *v > 0.0)
            .unwrap_or(0.0)
    };
    let mut out = open_svg(title);
    let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
    let plot = plot_below(legend(&mut out, &names, true));
    let x = Axis::default();
    let y_lin = Axis::linear(&y.label);
    if categories.is_empty() || series.is_empty() {
        no_data(&mut out, &plot, &x, &y_lin);
        return out;
    }
    let totals: Vec<f64> = (0..categories.len())
        .map(|j| (0..series.len()).map(|i| value(i, j)).sum())
        .collect();
    let max = totals.iter().copied().fold(0.0, f64::max);
    let yt = nice_ticks(0.0, max, false);
    let ys = Scale::new(&yt, false, plot.bottom, plot.top);
    grid(&mut out, &plot, &[], &ys, &yt, &ys);
    frame(&mut out, &plot, &x, &y_lin);
    let slot = (plot.right - plot.left) / categories.len() as f64;
    let bar = slot * 0.6;
    for (j, cat) in categories.iter().enumerate() {
        let cx = plot.left + slot * (j as f64 + 0.5);
        let mut acc = 0.0;
        for (i, s) in series.iter().enumerate() {
            let v = value(i, j);
            if v <= 0.0 {
                continue;
            }
            let (top, bottom) = (ys.at(acc + v), ys.at(acc));
            out.push_str(&format!(
                "<rect x=\"{:.1}\" y=\"{top:.1}\" width=\"{bar:.1}\" height=\"{:.1}\" \
                 fill=\"{}\"><title>{}, {}: {}</title></rect>",
                cx - bar / 2.0,
                bottom - top,
                series_style(i).0,
                escape(&s.name),
                escape(cat),
                compact(v)
            ));
            acc += v;
        }
        out.push_str(&format!(
            "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-weight=\"bold\">{}</text>",
            ys.at(totals[j]) - 4.0,
            compact(totals[j])
        ));
        out.push_str(&format!(
            "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            plot.bottom + 16.0,
            escape(cat)
        ));
    }
    out.push_str("</svg>");
    out
}

/// The SVG root, accessible title, white background and visible title.
fn open_svg(title: &str) -> String {
    let t = escape(title);
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" viewBox=\"0 0 {W} {H}\" \
         width=\"{W}\" height=\"{H}\" role=\"img\" font-family=\"{FONT}\" font-size=\"12\" \
         fill=\"#222\"><title>{t}</title><rect width=\"{W}\" height=\"{H}\" fill=\"#fff\"/>\
         <text x=\"{:.1}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\" \
         font-weight=\"bold\">{t}</text>",
        W / 2.0
    )
}

/// Colour and dash attribute of series `i`.
fn series_style(i: usize) -> (&'static str, &'static str) {
    (
        PALETTE[i % PALETTE.len()],
        DASHES[(i / PALETTE.len()) % DASHES.len()],
    )
}

/// Draws the legend in rows under the title, wrapping by estimated text width, and returns
/// the y where the legend ends. Bars get square swatches, lines short strokes.
fn legend(out: &mut String, names: &[&str], bars: bool) -> f64 {
    let mut cx = LEFT;
    let mut row = 0.0;
    for (i, name) in names.iter().enumerate() {
        let width = 24.0 + GLYPH * name.chars().count() as f64 + 16.0;
        if cx > LEFT && cx + width > W - RIGHT {
            cx = LEFT;
            row += 1.0;
        }
        let y = LEGEND_Y + row * LEGEND_ROW;
        let (colour, dash) = series_style(i);
        if bars {
            out.push_str(&format!(
                "<rect x=\"{cx:.1}\" y=\"{:.1}\" width=\"16\" height=\"10\" fill=\"{colour}\"/>",
                y - 9.0
            ));
        } else {
            out.push_str(&format!(
                "<line x1=\"{cx:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{colour}\" \
                 stroke-width=\"2\"{dash}/>",
                y - 4.0,
                cx + 18.0,
                y - 4.0
            ));
        }
        out.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{y:.1}\">{}</text>",
            cx + 24.0,
            escape(name)
        ));
        cx += width;
    }
    if names.is_empty() {
        LEGEND_Y - LEGEND_ROW
    } else {
        LEGEND_Y + row * LEGEND_ROW
    }
}

/// The plot rectangle under a legend that ends at `legend_bottom`.
fn plot_below(legend_bottom: f64) -> Plot {
    Plot {
        left: LEFT,
        right: W - RIGHT,
        // Never let a huge legend squeeze the plot below a third of the chart.
        top: (legend_bottom + 14.0).min(H / 2.0),
        bottom: H - BOTTOM,
    }
}

/// Gridlines and tick labels; an empty tick list draws nothing on that axis.
fn grid(out: &mut String, p: &Plot, xt: &[f64], xs: &Scale, yt: &[f64], ys: &Scale) {
    for &t in xt {
        let x = xs.at(t);
        out.push_str(&format!(
            "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#e4e4e4\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            p.top,
            p.bottom,
            p.bottom + 16.0,
            compact(t)
        ));
    }
    for &t in yt {
        let y = ys.at(t);
        out.push_str(&format!(
            "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#e4e4e4\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            p.left,
            p.right,
            p.left - 6.0,
            y + 4.0,
            compact(t)
        ));
    }
}

/// The plot border and both axis labels.
fn frame(out: &mut String, p: &Plot, x: &Axis, y: &Axis) {
    let mid_y = (p.top + p.bottom) / 2.0;
    out.push_str(&format!(
        "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" \
         stroke=\"#999\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
         <text transform=\"translate(16 {mid_y:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        p.left,
        p.top,
        p.right - p.left,
        p.bottom - p.top,
        (p.left + p.right) / 2.0,
        H - 10.0,
        escape(&x.label),
        escape(&y.label)
    ));
}

/// An empty frame that says so, keeping the page layout the same as with data, and closes
/// the SVG.
fn no_data(out: &mut String, p: &Plot, x: &Axis, y: &Axis) {
    frame(out, p, x, y);
    out.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"14\" \
         fill=\"#777\">no data</text></svg>",
        (p.left + p.right) / 2.0,
        (p.top + p.bottom) / 2.0
    ));
}

/// Smallest and largest of the values, or `None` if there are none.
fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}
