//! Tables and the page: a whole HTML5 document with its style inline, so the file alone is the
//! report.

use crate::escape;

/// A simple HTML table; every header and cell is text and is escaped when rendered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Table {
    /// Column headings.
    pub headers: Vec<String>,
    /// Rows of cells, one under each heading.
    pub rows: Vec<Vec<String>>,
}

/// One section of a page: a heading and already-rendered HTML (charts, tables, paragraphs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    /// The section heading, as text (escaped when rendered).
    pub heading: String,
    /// Trusted HTML inserted as is, typically from [`crate::line_chart`] or [`table`].
    pub html: String,
}

/// Renders a table. Cells that read as numbers (`1,234.5`, `-3`, `12%`) are right-aligned
/// with tabular figures so columns of figures line up by place value.
pub fn table(t: &Table) -> String {
    let mut out = String::from("<div class=\"table-wrap\"><table>\n<thead><tr>");
    for h in &t.headers {
        out.push_str(&format!("<th>{}</th>", escape(h)));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in &t.rows {
        // A row of another width than its headings shifts every cell after the gap under
        // the wrong heading.
        debug_assert_eq!(
            row.len(),
            t.headers.len(),
            "{:?} under {:?}",
            row,
            t.headers
        );
        out.push_str("<tr>");
        for cell in row {
            let class = if numeric(cell) { " class=\"num\"" } else { "" };
            out.push_str(&format!("<td{class}>{}</td>", escape(cell)));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table></div>\n");
    out
}

/// Whether a cell is a plain number, possibly with thousands separators or a percent sign.
fn numeric(cell: &str) -> bool {
    let s = cell.trim().trim_end_matches('%').replace(',', "");
    // `f64::from_str` also accepts "inf" and "nan"; those are words in a table, not figures.
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
        && s.parse::<f64>().is_ok()
}

/// Readable on screen, sensible on paper, and scaling charts to the column width. Inline
/// because a report must not fetch a stylesheet.
const CSS: &str = "\
body{font-family:system-ui,-apple-system,\"Segoe UI\",Roboto,Helvetica,Arial,sans-serif;\
color:#1f2328;background:#fff;max-width:960px;margin:0 auto;padding:1.5rem;line-height:1.5}
h1{font-size:1.6rem;margin:0 0 .25rem}
.subtitle{color:#57606a;margin:0 0 1.5rem}
h2{font-size:1.25rem;border-bottom:1px solid #d0d7de;padding-bottom:.25rem;margin-top:2rem}
svg.chart{display:block;max-width:100%;height:auto;margin:1rem 0}
.table-wrap{overflow-x:auto}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}
th,td{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
nav ol{padding-left:1.4rem}
@media print{body{max-width:none;padding:0}nav{display:none}h2{break-after:avoid}\
svg.chart,tr{break-inside:avoid}a{color:inherit;text-decoration:none}}
";

/// A whole HTML5 document: `<meta charset>`, title, inline CSS, an optional subtitle, a table
/// of contents when there is more than one section, and the sections in order.
///
/// Nothing is fetched from the network; the only URL in the output is the SVG namespace
/// inside charts, which browsers never load.
pub fn page(title: &str, subtitle: &str, sections: &[Section]) -> String {
    let t = escape(title);
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{t}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n<header>\n<h1>{t}</h1>\n"
    );
    if !subtitle.is_empty() {
        out.push_str(&format!("<p class=\"subtitle\">{}</p>\n", escape(subtitle)));
    }
    out.push_str("</header>\n");
    if sections.len() > 1 {
        out.push_str("<nav>\n<ol>\n");
        for (i, s) in sections.iter().enumerate() {
            out.push_str(&format!(
                "<li><a href=\"#section-{}\">{}</a></li>\n",
                i + 1,
                escape(&s.heading)
            ));
        }
        out.push_str("</ol>\n</nav>\n");
    }
    for (i, s) in sections.iter().enumerate() {
        out.push_str(&format!(
            "<section id=\"section-{}\">\n<h2>{}</h2>\n{}\n</section>\n",
            i + 1,
            escape(&s.heading),
            s.html
        ));
    }
    out.push_str("</body>\n</html>\n");
    out
}
