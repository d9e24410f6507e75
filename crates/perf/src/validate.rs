//! Validation against published measurements: predict every row of a points file (the
//! columns of `reference/points.csv`) and score the model by mean absolute percentage error.
//!
//! Reading rules, applied to every row alike (no row is looked up by id):
//! - the columns are those of `reference/points.csv` ([`COLUMNS`], in any case and order;
//!   `id`, `hardware`, `model`, `metric` and `value` are required): a column by another name
//!   is refused with the known name nearest to it, rather than its values lost; a row with
//!   more or fewer fields than the header is skipped naming its line, and a line of blanks
//!   is no row;
//! - `hardware` and `model` take catalog ids, aliases or published names (`NVIDIA H200`,
//!   `H100 SXM5 80GB`, `meta-llama/Llama-3.3-70B-Instruct`); a hardware cell may state the
//!   chip count too (`8xH100`, `H100 x 8`), used when `count` is blank, and may be an MLPerf
//!   result folder's name (`H200-SXM-141GBx8_TRT`), read from its parts (see `system_of`);
//! - `value` may group thousands with commas (`"21,805.8"`) and be marked approximate
//!   (`~2600`) or as a bound (`>250`, `250+`); the number is taken. A value that cannot be
//!   read skips its row, naming the line and column, and the other rows are still scored;
//! - a count may carry its unit (`8 GPUs`, `4 wafers`) or count whole systems (`2 nodes` of
//!   an eight-GPU server, `1 rack` of a rack-scale one); a blank count takes the default chip
//!   count of [`crate::estimate`];
//! - `parallel` fixes the tensor, pipeline and data-parallel degrees it names (`tp4-pp2`,
//!   `TP=8`, `tensor parallel 8`, `TP2 x 4` for four replicas of two); `ep` parts
//!   (expert parallelism within those chips) are dropped, and a blank or `ep`-only cell lets
//!   the search choose;
//! - a blank precision takes the model's own, except on a GPU throughput row, where it takes
//!   the narrowest floating-point format the GPU multiplies natively (FP4 on Blackwell, FP8
//!   on Hopper and CDNA 3) when that is narrower, or as narrow as a weight-only own format
//!   (whose products run in 16 bits): a throughput submission quantises to the
//!   fastest format that keeps accuracy (MLPerf's closed division allows it within 99% or
//!   99.9% of the reference accuracy);
//! - metrics are `decode_tok_s_per_user`, `ttft_s`, `tpot_ms`, `throughput_tok_s` and
//!   `throughput_tok_s_per_chip`, or another spelling of one of them in its own unit,
//!   including the labels benchmark tools print (`Mean TTFT (ms)`, `Median ITL (ms)`,
//!   `Output token throughput (tok/s)`); also a request's end-to-end latency (`E2EL (ms)`:
//!   its first token, then `osl` − 1 more), total token throughput (prompt and output tokens,
//!   `Total Token throughput (tok/s)`), requests per second and a prompt's prefill speed
//!   (`prefill_tok_s_per_user`: its tokens over its TTFT; a prefill rate that does not say
//!   whose is refused). Energy, cost and rates per watt are refused (see `metric_of`);
//! - `speculative` `yes` or a method's name (`mtp`, `eagle3`, `medusa`, `draft`) turns
//!   speculative decoding on at the default tokens per step; `none`, `no` and `unknown` (or
//!   blank) leave it off; any other word skips the row with the reason;
//! - scenario names, speculation words and metric names are read in any case (`Offline`,
//!   `TTFT_ms`); a hardware cell's count of whole systems (`2x DGX H100`) counts their chips;
//! - concurrency `offline`, a peak in words (`max`, `max load`, `saturation`) or blank (for
//!   throughput) is the peak throughput, and a latency at such a load is the peak's; `server` or
//!   `interactive` the peak within that scenario's latency limits, a number the closed-loop
//!   load at that many requests; a per-user or TTFT row with no concurrency is a single
//!   request;
//! - `offline`, `server` and `interactive` are MLPerf Inference's scenario names: where the
//!   catalog holds MLPerf's workload for the row's model, blank lengths take its dataset's mean
//!   lengths and the latency scenarios its p99 TTFT and TPOT limits (see [`scenario_limits`]);
//!   an `interactive` row whose model has no interactive limits in the catalog is skipped;
//! - a latency scenario's limits may be stated in the row's notes, as MLPerf states them
//!   (`SLO p99 TTFT 450 ms / TPOT 40 ms`, in `ms` or `s`); those are the run's own and come
//!   before the catalog's (a `server` row that ran under the interactive limits is judged
//!   under them); other notes are not read;
//! - a time to first token on a wafer-scale, LPU or RDU system (and so an end-to-end
//!   latency or prompt speed) is the engine's plus [`Params::cloud_ttft_s`]: those systems
//!   are reached through their makers' clouds, and their published TTFTs time the API;
//! - other blank lengths take the default input and output lengths; `1k` is 1,024 tokens;
//! - a load may be written `64`, `bs64`, `batch 64`, `c=64` or `64 users`; a concurrency or
//!   length that cannot be read skips the row with the reason, never a default;
//! - a per-chip throughput row with neither a count nor a concurrency is skipped: nothing in
//!   it says where on the throughput-latency curve it was measured.
//!
//! Beside its prediction, a row may be checked against its hardware at its best
//! ([`beyond_hardware`]): predicted again with every efficiency at its datasheet figure and
//! every fixed latency at zero ([`Params::ideal`]), a published speed above that, or a time
//! below it, is one no calibration reaches, and its error at that bound is a floor under the
//! MAPE ([`floor`]).

use crate::{estimate, Catalog, Layout, Objective, Params, Query, Speculative};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use switchyard_catalog::{Precision, System, SystemKind, Workload};

/// One published measurement, in the columns of `points.csv`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Point {
    /// Row id.
    pub id: String,
    /// The system: a catalog id, alias or published name, possibly with a chip count.
    pub hardware: String,
    /// Chips or wafers, when stated.
    #[serde(default)]
    pub count: String,
    /// The model: a catalog id, alias or published name.
    pub model: String,
    /// Weight precision, when stated.
    #[serde(default)]
    pub precision: String,
    /// Layout, when stated (`tp8`, `pp4`, `ep`).
    #[serde(default)]
    pub parallel: String,
    /// `yes` or a method (`mtp`, `eagle3`), `none`, or `unknown`.
    #[serde(default)]
    pub speculative: String,
    /// A number, `offline`, `server`, `interactive` or blank.
    #[serde(default)]
    pub concurrency: String,
    /// Prompt length.
    #[serde(default)]
    pub isl: String,
    /// Output length.
    #[serde(default)]
    pub osl: String,
    /// What was measured.
    pub metric: String,
    /// The published value as written; [`Point::published`] reads it.
    pub value: String,
    /// Where the figure comes from (`mlperf`, `vendor`, `third-party`, `paper`): rows are
    /// also scored per kind, since an audited benchmark and a vendor's claim are not
    /// measured alike.
    #[serde(default)]
    pub source_kind: String,
    /// Free text; a latency limit stated here (`SLO p99 TTFT 450 ms / TPOT 40 ms`) is the
    /// run's own and overrides its scenario's.
    #[serde(default)]
    pub notes: String,
    /// The file line the row starts on (set by [`parse_points`]).
    #[serde(skip)]
    pub line: usize,
    /// Why the line could not be read as a row (set by [`parse_points`]): it is reported as
    /// skipped, and the other rows are still scored.
    #[serde(skip)]
    pub unreadable: Option<String>,
}

/// The columns a points file may have: those of `reference/points.csv`. A column by any
/// other name is refused rather than ignored, so that a misspelt `concurrency` does not
/// quietly leave every row without its load.
pub const COLUMNS: [&str; 16] = [
    "id",
    "hardware",
    "count",
    "model",
    "precision",
    "parallel",
    "speculative",
    "concurrency",
    "isl",
    "osl",
    "metric",
    "value",
    "source_kind",
    "source_url",
    "date",
    "notes",
];

/// The known column nearest to `name` in spelling, where one is near: at most two letters
/// added, dropped or changed, or one name the start of the other, for names of three
/// letters or more.
fn nearest_column(name: &str) -> Option<&'static str> {
    let distance = |a: &str, b: &str| {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut diagonal = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let next = (row[j + 1] + 1)
                    .min(row[j] + 1)
                    .min(diagonal + usize::from(ca != *cb));
                diagonal = row[j + 1];
                row[j + 1] = next;
            }
        }
        row[b.len()]
    };
    COLUMNS
        .iter()
        .map(|c| (distance(name, c), *c))
        .filter(|(d, c)| {
            // A name of a letter or two is near everything short; it gets no guess.
            name.len() >= 3 && (*d <= 2 || c.starts_with(name) || name.starts_with(c))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

impl Point {
    /// The published value: a finite number above zero, whose thousands may be grouped with
    /// commas (`21,805.8` is 21805.8), and which may be marked approximate (`~2600`) or as a
    /// bound (`>250`, `250+`, `over 250`), as vendor pages write them; the number is taken.
    /// A comma anywhere else (`0,125`, `21,80.5`, `1,234.5,6`) is refused rather than
    /// guessed at, as is zero, which no error can be measured against.
    ///
    /// # Errors
    /// What the cell holds, with its line and column.
    pub fn published(&self) -> Result<f64, String> {
        let raw = self.value.trim();
        let mut t = raw.to_ascii_lowercase();
        for mark in ["over ", "about ", "above ", "~", "≈", ">=", "≥", ">"] {
            if let Some(r) = t.strip_prefix(mark) {
                t = r.trim().to_string();
                break;
            }
        }
        if let Some(r) = t.strip_suffix('+') {
            t = r.trim().to_string();
        }
        // A normal number: zero, subnormals (1e-320) and infinities leave no error to
        // measure against.
        match without_thousands(&t).parse::<f64>() {
            Ok(v) if v.is_normal() && v > 0.0 => Ok(v),
            _ => Err(format!(
                "line {}, field `value`: `{raw}` is not a number above zero that an error can be measured against",
                self.line
            )),
        }
    }
}

/// `t` without the commas that group its thousands (`1,024`), or unchanged when its commas
/// do something else.
fn without_thousands(t: &str) -> String {
    let (whole, fraction) = t.split_once('.').unwrap_or((t, ""));
    if whole.contains(',') && grouped(whole) && !fraction.contains(',') {
        t.replace(',', "")
    } else {
        t.to_string()
    }
}

/// Whether `whole` is digits grouped in threes by commas (`21,805`), the first group not
/// starting with a zero.
fn grouped(whole: &str) -> bool {
    let mut parts = whole.split(',');
    let first = parts.next().unwrap_or("");
    (1..=3).contains(&first.len())
        && !first.starts_with('0')
        && first.bytes().all(|b| b.is_ascii_digit())
        && parts.all(|p| p.len() == 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Which group a row's error counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Group {
    /// Wafer-scale per-user speed and TTFT.
    WaferLatency,
    /// SRAM chips and dataflow units: per-user speed and TTFT.
    SramLatency,
    /// GPU per-user speed, TTFT and TPOT.
    GpuLatency,
    /// GPU throughput.
    GpuThroughput,
    /// Throughput of non-GPU systems.
    OtherThroughput,
}

impl Group {
    /// Every group, in report order.
    pub const ALL: [Group; 5] = [
        Group::WaferLatency,
        Group::SramLatency,
        Group::GpuLatency,
        Group::GpuThroughput,
        Group::OtherThroughput,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Group::WaferLatency => "wafer-scale per-user speed and TTFT",
            Group::SramLatency => "SRAM machines per-user speed and TTFT",
            Group::GpuLatency => "GPU per-user speed, TTFT and TPOT",
            Group::GpuThroughput => "GPU throughput",
            Group::OtherThroughput => "non-GPU throughput",
        }
    }
}

/// The outcome for one row.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Row id.
    pub id: String,
    /// Metric.
    pub metric: String,
    /// Group, where the row was modelled.
    pub group: Option<Group>,
    /// Published value.
    pub published: f64,
    /// Predicted value, or the reason the row was skipped.
    pub predicted: Result<f64, String>,
    /// Layout used, for the report.
    pub layout: String,
    /// The system's catalog id, where the row was modelled.
    pub system: Option<String>,
    /// Which way the hardware at its best bounds the row's value, where it does
    /// ([`beyond_hardware`]).
    pub limit: Option<Limit>,
}

/// Which way the hardware bounds a row's value: with every efficiency and latency at its
/// best ([`Params::ideal`]), a speed or a throughput can only rise and a time only fall.
///
/// Bounded are a throughput (at a stated load, or the peak, within a scenario's limits or
/// without; the bound drops a TTFT limit, which faster decoding can tighten), a user's
/// speed and time per output token at a stated load, and a lone request's time to first
/// token, end-to-end time and prompt speed. Not bounded: a request's speed or times at a
/// scenario's or a peak's load (faster hardware runs that scenario at a heavier load,
/// whose times may be longer); a first token under load (it queues behind other prompts,
/// the longer the faster decode leaves room for them); and any row with speculative
/// decoding (how many tokens a step accepts is an assumption about the draft, not the
/// hardware). Each bound is over every layout the search weighs, ranked as it ranks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Limit {
    /// The value is at most the hardware's best (speeds, throughputs).
    AtMost,
    /// The value is at least the hardware's best (times).
    AtLeast,
}

impl Outcome {
    /// Signed error in percent of the published value.
    pub fn error_pct(&self) -> Option<f64> {
        self.predicted
            .as_ref()
            .ok()
            .map(|p| (p - self.published) / self.published * 100.0)
    }

    /// The row's group and absolute error in percent, where it was modelled: what the
    /// summary averages.
    pub fn scored(&self) -> Option<(Group, f64)> {
        Some((self.group?, self.error_pct()?.abs()))
    }
}

/// Fields of `r` up to its last that is not empty: trailing empty fields (a trailing comma)
/// are not columns.
fn filled_width(r: &csv::StringRecord) -> usize {
    (0..r.len())
        .rfind(|&i| !r[i].is_empty())
        .map_or(0, |i| i + 1)
}

/// Summary over all rows.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Mean absolute percentage error over the modelled rows.
    pub mape: f64,
    /// Rows modelled.
    pub n: usize,
    /// Rows skipped.
    pub skipped: usize,
    /// MAPE and row count per group.
    pub groups: Vec<(Group, f64, usize)>,
    /// MAPE and row count per kind of source (the `source_kind` column, read in any case
    /// with spaces, hyphens and underscores alike; `unstated` where blank), in alphabetical
    /// order. Only modelled rows count.
    pub sources: Vec<(String, f64, usize)>,
    /// MAPE and row count per system (its catalog id), in alphabetical order: where the
    /// model errs by hardware. Only modelled rows count.
    pub systems: Vec<(String, f64, usize)>,
}

/// A chip count, possibly with its unit (`8`, `8 GPUs`, `4 wafers`, `16 sockets`, `8x`), or a
/// count of whole systems (`2 nodes`, `1 server`, `4 racks`), which is that many times the
/// system's chips.
fn count_of(cell: &str, system: &System) -> Option<u32> {
    let t = cell.trim().to_ascii_lowercase();
    let digits: String = t.chars().take_while(char::is_ascii_digit).collect();
    let unit = t[digits.len()..].trim();
    // A unit names the system's own kind of chip: `4 wafers` of an H100 is a mistake in
    // the row, not four GPUs.
    let own: &[&str] = match system.kind {
        SystemKind::Gpu => &["gpu", "gpus"],
        SystemKind::Wafer => &["wafer", "wafers", "wse", "wses"],
        SystemKind::Rdu => &["socket", "sockets", "rdu", "rdus"],
        SystemKind::Lpu => &["lpu", "lpus"],
    };
    let chips = ["", "x", "chip", "chips"];
    // A node or server is a system of at most eight chips, a rack one of more (GB200 NVL72,
    // SambaRack): 18 nodes of an NVL72 are not 18 racks.
    let rack_scale = system.chips_per_system > 8;
    let systems: &[&str] = if rack_scale {
        &["system", "systems", "rack", "racks"]
    } else {
        &["system", "systems", "node", "nodes", "server", "servers"]
    };
    let n = digits.parse::<u32>().ok().filter(|n| *n > 0)?;
    if chips.contains(&unit) || own.contains(&unit) {
        Some(n)
    } else if systems.contains(&unit) {
        n.checked_mul(system.chips_per_system)
    } else {
        None
    }
}

/// Loads that mean the most a deployment carries, like a blank cell or `offline`.
const PEAK_LOADS: [&str; 11] = [
    "max",
    "max load",
    "max-load",
    "maximum",
    "saturation",
    "saturated",
    "peak",
    "inf",
    "infinite",
    "unlimited",
    "max throughput",
];

/// A token length: a number, or thousands of tokens written `1k`, `8K` (1,024 each, as
/// benchmark names such as "1k/1k" mean); blank is `None`, anything else an error naming
/// the column.
/// The largest token count or concurrency a row may state.
const MAX_ROW_COUNT: f64 = 1e9;

fn length_of(cell: &str, column: &str) -> Result<Option<f64>, String> {
    let t = cell.trim().to_ascii_lowercase();
    if t.is_empty() {
        return Ok(None);
    }
    let t = without_thousands(&t);
    let v = match t.strip_suffix('k') {
        Some(k) => k.trim().parse::<f64>().map(|k| k * 1024.0),
        None => t.parse::<f64>(),
    };
    // Up to a billion tokens, as the command line takes: past that a count is a typo, and
    // would pass through the integer casts of the engine as their largest value.
    match v {
        Ok(v) if (1.0..=MAX_ROW_COUNT).contains(&v) => Ok(Some(v)),
        _ => Err(format!(
            "{column} `{}` is not a token count from 1 to 1,000,000,000",
            cell.trim()
        )),
    }
}

/// A stated load: a number of requests in flight, possibly written `bs64`, `batch 64`,
/// `c=64` or `64 users`; blank is `None`. Scenario names are read before this.
fn concurrency_of(cell: &str) -> Result<Option<f64>, String> {
    let t = cell.trim().to_ascii_lowercase();
    if t.is_empty() {
        return Ok(None);
    }
    let mut rest = t.as_str();
    for prefix in [
        "batch size",
        "batch-size",
        "batch",
        "bs",
        "concurrency",
        "c",
    ] {
        if let Some(r) = rest.strip_prefix(prefix) {
            rest = r;
            break;
        }
    }
    rest = rest.trim_start_matches([' ', '=', ':']);
    loop {
        let before = rest.len();
        for suffix in [
            "users",
            "user",
            "requests",
            "request",
            "streams",
            "stream",
            "concurrent",
        ] {
            if let Some(r) = rest.trim_end().strip_suffix(suffix) {
                rest = r;
            }
        }
        if rest.len() == before {
            break;
        }
    }
    match without_thousands(rest.trim()).parse::<f64>() {
        Ok(v) if (1.0..=MAX_ROW_COUNT).contains(&v) => Ok(Some(v)),
        _ => Err(format!(
            "concurrency `{}` is neither a number of requests nor offline, server, interactive or a peak (max, saturation)",
            cell.trim()
        )),
    }
}

/// A latency-bounded scenario of a benchmark suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// MLPerf's server scenario.
    Server,
    /// MLPerf's interactive variant of it, with tighter limits.
    Interactive,
}

/// The limits on mean time per output token and mean time to first token, in seconds, that
/// stand for a scenario's p99 limits, scaled by [`Params::server_mean_tpot_frac`] and
/// [`Params::server_mean_ttft_frac`] because the model predicts means. Without a stated TPOT
/// limit it is [`Params::server_tpot_s`]; without a stated TTFT limit there is none.
pub fn scenario_limits(w: Option<&Workload>, scenario: Scenario, p: &Params) -> (f64, Option<f64>) {
    let (tpot_ms, ttft_ms) = match (w, scenario) {
        (None, _) => (None, None),
        (Some(w), Scenario::Interactive) => (w.interactive_tpot_ms, w.interactive_ttft_ms),
        (Some(w), Scenario::Server) => (w.server_tpot_ms, w.server_ttft_ms),
    };
    let tpot = tpot_ms.map_or(p.server_tpot_s, |ms| ms / 1000.0) * p.server_mean_tpot_frac;
    let ttft = ttft_ms.map(|ms| ms / 1000.0 * p.server_mean_ttft_frac);
    (tpot, ttft)
}

/// The p99 TTFT and TPOT limits, in seconds, a row's notes state for its run, written as
/// `SLO p99 TTFT 450 ms / TPOT 40 ms` (any case; `ms`, `s` or `sec`; the TPOT limit follows
/// the TTFT one after `/`, `,`, `;` or spaces, perhaps as `p99 TPOT`). `Ok(None)` when the notes state no limits; an error
/// when they start to (`SLO p99 TTFT`) but cannot be read, so that a garbled interactive
/// limit does not fall back to the looser server one.
fn stated_slo(notes: &str) -> Result<Option<(f64, f64)>, String> {
    // A p99 TTFT without `SLO` before it is a measurement, not a limit.
    const OPENING: &str = "slo p99 ttft";
    // Punctuation and spacing between words do not matter (`SLO: p99 TTFT`, `SLO p99-TTFT`);
    // the number separators `/`, `,`, `;` and `.` are kept. Every character maps to one, so
    // positions in `t` are positions in `notes`.
    let t: String = notes
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "/,;.".contains(c) {
                c.to_ascii_lowercase()
            } else if c.is_ascii() {
                ' '
            } else {
                '_'
            }
        })
        .collect();
    let squeezed = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let Some(at) = t
        .match_indices("slo")
        .map(|(i, _)| i)
        .find(|&i| squeezed(&t[i..]).starts_with(OPENING))
    else {
        return Ok(None);
    };
    // `t` has one ASCII byte per character of `notes`: the limits start at this character.
    let from = t[..at].chars().count();
    let t = format!("{}{}", &t[..at], squeezed(&t[at..]));
    // A number and its unit word, and how much of `text` they take.
    let seconds = |text: &str| -> Option<(f64, usize)> {
        let lead = text.len() - text.trim_start().len();
        let text = text.trim_start();
        let end = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let v: f64 = text[..end]
            .parse()
            .ok()
            .filter(|v: &f64| *v > 0.0 && v.is_finite())?;
        let rest = &text[end..];
        let gap = rest.len() - rest.trim_start().len();
        let word: String = rest[gap..]
            .chars()
            .take_while(char::is_ascii_alphabetic)
            .collect();
        let scale = match word.as_str() {
            "ms" | "msec" => 1e-3,
            "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            _ => return None,
        };
        Some((v * scale, lead + end + gap + word.len()))
    };
    let rest = &t[at + OPENING.len()..];
    let read = || -> Option<(f64, f64)> {
        let (ttft, used) = seconds(rest)?;
        let after = rest[used..].trim_start_matches([' ', '/', ',', ';']);
        let after = after.strip_prefix("p99").unwrap_or(after).trim_start();
        let (tpot, _) = seconds(after.strip_prefix("tpot")?)?;
        Some((ttft, tpot))
    };
    read().map(Some).ok_or_else(|| {
        let quoted: String = notes.chars().skip(from).take(48).collect();
        format!(
            "notes `{}` state latency limits that cannot be read (write `SLO p99 TTFT 450 ms / TPOT 40 ms`)",
            quoted.trim()
        )
    })
}

/// What a row measured, as the model computes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metric {
    /// Output tokens per second seen by one user.
    UserSpeed,
    /// Time to first token.
    Ttft,
    /// Time per output token (inter-token latency).
    Tpot,
    /// A request's whole latency: first token, then the rest of its output.
    EndToEnd,
    /// Prompt tokens per second of one request's prefill: its prompt over its TTFT.
    PrefillSpeed,
    /// Tokens per second of the deployment (output, prompt or both), in all or per chip.
    Throughput { kind: Tokens, per_chip: bool },
    /// Requests completed per second.
    Requests,
}

/// Which tokens a throughput counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tokens {
    /// Output tokens (what a throughput that names none counts).
    Output,
    /// Prompt tokens.
    Input,
    /// Prompt and output tokens together.
    Total,
}

impl Metric {
    /// Whether the metric is a latency (judged at the row's load for one user).
    fn is_latency(self) -> bool {
        matches!(
            self,
            Metric::UserSpeed
                | Metric::Ttft
                | Metric::Tpot
                | Metric::EndToEnd
                | Metric::PrefillSpeed
        )
    }
}

/// Reads a metric name and the factor from the model's unit (seconds, tokens per second) to
/// the row's. The names of `points.csv` (`decode_tok_s_per_user`, `ttft_s`, `tpot_ms`,
/// `throughput_tok_s`, `throughput_tok_s_per_chip`) and the labels benchmark tools print
/// are read alike, by their words in any case and punctuation: `TTFT (ms)`, `Mean ITL
/// (ms)`, `Median E2EL (ms)`, `Output token throughput (tok/s)`, `Total Token throughput
/// (tok/s)`, `Request throughput (req/s)`, `tok/s/user`, `tokens_per_second_per_gpu`. A
/// latency names its unit (`ms` or `s`); a throughput that says neither output nor total
/// counts output tokens, and a count of tokens that is no rate is refused; a mean, median
/// or p50 is the model's mean, and other percentiles, spreads, extremes and rates per
/// minute are refused. A latency in microseconds is `us`.
fn metric_of(name: &str) -> Result<(Metric, f64), String> {
    let lower = name.trim().to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let has = |w: &str| words.contains(&w);
    let not_modelled = || {
        format!(
            "metric `{}` is not modelled; modelled are means or medians of per-user speed \
             (`decode_tok_s_per_user`), TTFT (`ttft_s`, `ttft_ms`), time per output token \
             (`tpot_ms`), end-to-end latency (`e2e_s`), prefill speed, throughput of output, \
             prompt or all tokens in all or per chip (`throughput_tok_s`, \
             `throughput_tok_s_per_chip`) and requests per second",
            name.trim()
        )
    };
    // Only means (or medians, which the model does not tell apart) are predicted: spreads,
    // extremes and percentiles are not, nor rates per minute.
    let percentile = |w: &str| {
        (w.len() > 1
            && w.starts_with('p')
            && w[1..].chars().all(|c| c.is_ascii_digit())
            && w != "p50")
            || (w.ends_with("th")
                && w[..w.len() - 2].chars().all(|c| c.is_ascii_digit())
                && w.len() > 2)
    };
    let statistic = [
        "std",
        "stdev",
        "stddev",
        "max",
        "maximum",
        "min",
        "minimum",
        "peak",
        "percentile",
    ];
    // Rates per unit of power or money, and energy and cost, are outputs of the model but not
    // what `validate` scores: published figures of them rest on bases (facility or chip
    // power, rent or purchase) that a row does not state.
    // A power unit divides a rate when `/` or the word `per` stands before it (`tok/s/MW`,
    // `tok_s_per_w`); `w/ spec` is "with".
    let per_power = ["w", "kw", "mw", "kwh", "gw"].iter().any(|u| {
        let mut from = 0;
        while let Some(at) = lower[from..].find(u).map(|i| i + from) {
            from = at + u.len();
            let whole = lower[..at]
                .chars()
                .last()
                .is_none_or(|c| !c.is_ascii_alphanumeric())
                && lower[from..]
                    .chars()
                    .next()
                    .is_none_or(|c| !c.is_ascii_alphanumeric() && c != '/');
            let before = lower[..at].trim_end().trim_end_matches(['_', '-']);
            let per = before
                .strip_suffix("per")
                .is_some_and(|b| b.chars().last().is_none_or(|c| !c.is_ascii_alphanumeric()));
            if whole && (before.ends_with('/') || per) {
                return true;
            }
        }
        false
    });
    if per_power
        || [
            "watt", "watts", "megawatt", "joule", "joules", "j", "kj", "wh", "usd", "dollar",
            "dollars", "cost", "price", "mtok",
        ]
        .iter()
        .any(|w| has(w))
    {
        return Err(format!(
            "metric `{}`: energy, cost and rates per watt or dollar are not validated",
            name.trim()
        ));
    }
    // What each rate is counted per: the first word after a `/` (`tok/s/gpu`, `ms/output
    // token`) or after the word `per` (`tokens_per_second_per_gpu`, `ms per output token`),
    // past the words that only qualify a token. A `/` followed by a space is "with" (`w/
    // spec`). A qualifier `input` or `prompt` there makes it a prompt token.
    const QUALIFIERS: [&str; 6] = ["output", "generated", "decode", "decoded", "each", "one"];
    let mut per: Vec<&str> = Vec::new();
    let mut per_prompt_token = false;
    let mut denominator = |after: &[&'_ str]| -> Option<usize> {
        let mut i = 0;
        while let Some(w) = after.get(i) {
            if ["input", "prompt"].contains(w) {
                per_prompt_token = true;
            } else if !QUALIFIERS.contains(w) {
                return Some(i);
            }
            i += 1;
        }
        None
    };
    for (at, _) in lower.match_indices('/') {
        let rest = &lower[at + 1..];
        if !rest.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            continue;
        }
        // The words of the rest of this part of the name, up to a bracket or another `/`.
        let part = rest
            .split(['/', '(', ')', '[', ']', ',', ';'])
            .next()
            .unwrap_or("");
        let after: Vec<&str> = part
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        if let Some(i) = denominator(&after) {
            per.push(after[i]);
        }
    }
    // `per 8 GPUs` counts per group of chips, like `per node`.
    let mut per_count: Option<&str> = None;
    for (i, w) in words.iter().enumerate() {
        if *w == "per" {
            if let Some(j) = denominator(&words[i + 1..]) {
                let d = words[i + 1 + j];
                if d.starts_with(|c: char| c.is_ascii_digit()) {
                    per_count = Some(d);
                } else {
                    per.push(d);
                }
            }
        }
    }
    // Seconds in one unit of a rate's time, where a rate is counted per unit of time.
    let time_unit = |w: &str| -> Option<f64> {
        match w {
            "s" | "sec" | "secs" | "second" | "seconds" => Some(1.0),
            "ms" | "msec" => Some(1e-3),
            "min" | "mins" | "minute" | "minutes" => Some(60.0),
            "h" | "hr" | "hrs" | "hour" | "hours" => Some(3600.0),
            "d" | "day" | "days" => Some(86_400.0),
            _ => None,
        }
    };
    // A name in words joined by `_` puts a rate's time right after what it counts
    // (`throughput_tok_s`, `tok_h`, `req_min`): read as if after a `/`, where it was read as
    // a rate per second whatever it said. Not where what is counted is itself counted per
    // (`time_per_token_ms` is a time per token, in ms).
    const COUNTED: [&str; 8] = [
        "tok", "tokens", "token", "req", "request", "requests", "queries", "samples",
    ];
    for (i, pair) in words.windows(2).enumerate() {
        if COUNTED.contains(&pair[0])
            && time_unit(pair[1]).is_some()
            && (i == 0 || words[i - 1] != "per")
            && lower.contains(&[pair[0], pair[1]].join("_"))
            && !per.contains(&pair[1])
        {
            per.push(pair[1]);
        }
    }
    // `min` after a `/` or `per` is minutes, elsewhere the minimum.
    if let Some(w) = words.iter().find(|w| {
        percentile(w) || (statistic.contains(w) && !(per.contains(w) && time_unit(w).is_some()))
    }) {
        return Err(format!(
            "metric `{}`: the model predicts means, not `{w}`",
            name.trim()
        ));
    }
    let per_time: Option<f64> = per.iter().find_map(|w| time_unit(w));
    let per_token = per.iter().any(|w| ["token", "tokens", "tok"].contains(w));
    // A time per token is the time between output tokens (`s/token`, `ms per output
    // token`); per prompt token it is not modelled.
    let prefill_words = has("prefill") || has("first") || has("input") || has("prompt");
    if (per_prompt_token || (per_token && prefill_words)) && per_time.is_none() {
        return Err(not_modelled());
    }
    if per_token && per_time.is_none() {
        let unit = words.iter().find_map(|w| time_unit(w));
        return match unit {
            Some(s) if s < 60.0 => Ok((Metric::Tpot, 1.0 / s)),
            _ => Err(format!(
                "metric `{}`: a time per token is read in ms or s",
                name.trim()
            )),
        };
    }
    // A rate per a group of chips (a node, a server, a named chip) has a base the row does
    // not state; other words after a `/` (`1k/1k`, `w/o`) are not denominators.
    let groups = [
        "node",
        "nodes",
        "server",
        "servers",
        "replica",
        "replicas",
        "instance",
        "instances",
        "system",
        "systems",
        "rack",
        "racks",
        "dgx",
        "hgx",
        "socket",
        "sockets",
    ];
    // A chip's name: a few letters, then digits (`h100`, `mi300x`, `gb200`).
    let chip_name = |w: &str| {
        let letters = w.chars().take_while(char::is_ascii_alphabetic).count();
        let digits = w[letters..]
            .chars()
            .take_while(char::is_ascii_digit)
            .count();
        (1..=3).contains(&letters) && digits >= 2 && w.len() - letters - digits <= 2
    };
    if let Some(w) = per_count.or_else(|| {
        per.iter()
            .find(|w| groups.contains(w) || chip_name(w))
            .copied()
    }) {
        return Err(format!(
            "metric `{}`: a rate per `{w}` is not read; state it per chip (GPU, wafer) or for the whole deployment, with the count in `count`",
            name.trim()
        ));
    }
    // A rate counted per unit of time other than the second: predicted per second, scaled.
    let time_scale = per_time.unwrap_or(1.0);
    let latency = |m: Metric| -> Result<(Metric, f64), String> {
        if has("ms") {
            Ok((m, 1000.0))
        } else if has("us") {
            Ok((m, 1e6))
        } else if has("s") || has("sec") || has("secs") || has("seconds") {
            Ok((m, 1.0))
        } else {
            Err(format!(
                "metric `{}` does not name its unit (s, ms or us)",
                name.trim()
            ))
        }
    };
    if has("ttft") || (has("first") && has("token")) {
        return latency(Metric::Ttft);
    }
    let tokens = has("tok") || has("tokens") || has("token") || has("tps");
    // `End-to-end throughput (tok/s)` is a throughput measured end to end, not a latency.
    let token_rate = tokens && per_time.is_some();
    if !token_rate
        && (has("e2el")
            || has("e2e")
            || (has("end") && has("to"))
            || (has("request") && has("latency")))
    {
        return latency(Metric::EndToEnd);
    }
    if has("tpot") || has("itl") || has("inter") || (has("time") && has("per") && has("output")) {
        return latency(Metric::Tpot);
    }
    let rate = per_time.is_some()
        || has("s")
        || has("sec")
        || has("second")
        || has("throughput")
        || has("tps");
    let per_chip = [
        "gpu",
        "gpus",
        "chip",
        "device",
        "accelerator",
        "wafer",
        "card",
    ]
    .iter()
    .any(|w| has(w));
    // `prefill tok/s` is said of one prompt's speed and of a deployment's prompt throughput;
    // only a name that says which is read.
    if has("prefill") {
        return if !rate {
            Err(not_modelled())
        } else if has("user") || has("request") || has("speed") {
            Ok((Metric::PrefillSpeed, time_scale))
        } else if has("input") || has("prompt") {
            Ok((
                Metric::Throughput {
                    kind: Tokens::Input,
                    per_chip,
                },
                time_scale,
            ))
        } else {
            Err(format!(
                "metric `{}` is ambiguous: name it a prefill speed per request (a prompt's tokens over its TTFT) or an input token throughput (prompt tokens the deployment takes per second)",
                name.trim()
            ))
        };
    }
    // Queries and samples are MLPerf's and load tools' words for requests (`QPS`,
    // `Completed samples per second`).
    let queries = ["query", "queries", "sample", "samples"]
        .iter()
        .any(|w| has(w));
    if has("qps") && !tokens {
        return Ok((Metric::Requests, 1.0));
    }
    if (has("req") || has("request") || has("requests") || queries) && !tokens {
        return if rate {
            Ok((Metric::Requests, time_scale))
        } else {
            Err(not_modelled())
        };
    }
    // Tokens per second of one request (LLMPerf's `request_output_throughput_token_per_s`)
    // is what its user sees.
    let per_user = per
        .iter()
        .any(|w| ["user", "users", "request", "requests", "req"].contains(w));
    if per_user || has("user") || has("interactivity") || has("speed") || has("request") {
        // `speed` alone says neither what it counts nor over what time.
        if !(tokens || rate) {
            return Err(format!(
                "metric `{}` does not name its unit: output tokens a second of one user (tok/s/user)",
                name.trim()
            ));
        }
        return Ok((Metric::UserSpeed, time_scale));
    }
    if tokens || has("throughput") {
        // A count of tokens is not a rate.
        if !rate {
            return Err(not_modelled());
        }
        let input = has("input") || has("prompt");
        let output = has("output") || has("generated") || has("generation");
        let kind = if has("total") || (input && output) {
            Tokens::Total
        } else if input {
            Tokens::Input
        } else {
            Tokens::Output
        };
        return Ok((Metric::Throughput { kind, per_chip }, time_scale));
    }
    Err(not_modelled())
}

/// The layout a `parallel` cell fixes, if any. Published cells count expert parallelism
/// within the chips the other degrees already count (TensorRT-LLM's `--tp 8 --ep 8` is
/// eight GPUs), where [`Layout::ep`] multiplies them, so `ep` parts (`ep`, `ep8`, `tp8-ep8`)
/// are dropped and what remains is read as `tp`/`pp`/`dp` degrees; except that equal `dp`
/// and `ep` degrees alone (`dp8-ep8`) are attention data parallelism, the model's `ep8`.
fn layout_of(cell: &str) -> Result<Option<Layout>, String> {
    // Degrees as words (`tensor parallel 8`), a degree after `=` or a space (`TP=8`), and
    // replicas as a count after `x` (`TP2 x 4`) are read as the short forms.
    let mut words = cell.to_ascii_lowercase();
    for (long, short) in [
        ("tensor", "tp"),
        ("pipeline", "pp"),
        ("expert", "ep"),
        ("data", "dp"),
    ] {
        for sep in [" ", "-", "_", ""] {
            words = words.replace(&format!("{long}{sep}parallel"), short);
        }
    }
    // `DP-attention 8` and `attention DP 8` are data parallelism of attention.
    for w in ["attention", "attn"] {
        words = words.replace(w, " ");
    }
    // Parts are separated by punctuation or written together (`tp8ep8`): a letter after a
    // digit starts a new part.
    let mut parts: Vec<String> = Vec::new();
    let mut prev_digit = false;
    for c in words.chars() {
        if !c.is_ascii_alphanumeric() {
            prev_digit = false;
            parts.push(String::new());
            continue;
        }
        if parts.is_empty() || (prev_digit && c.is_ascii_alphabetic()) {
            parts.push(String::new());
        }
        if let Some(p) = parts.last_mut() {
            p.push(c.to_ascii_lowercase());
        }
        prev_digit = c.is_ascii_digit();
    }
    let parts: Vec<String> = parts.into_iter().filter(|p| !p.is_empty()).collect();
    let mut joined: Vec<String> = Vec::new();
    let mut i = 0;
    while i < parts.len() {
        let next_is_number = parts
            .get(i + 1)
            .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()));
        match parts[i].as_str() {
            "tp" | "pp" | "ep" | "dp" if next_is_number => {
                joined.push(format!("{}{}", parts[i], parts[i + 1]));
                i += 2;
            }
            "x" if next_is_number && !joined.is_empty() => {
                joined.push(format!("dp{}", parts[i + 1]));
                i += 2;
            }
            // `TP2x4`: the letter after the digit split off `x4`.
            x if !joined.is_empty()
                && x.len() > 1
                && x.starts_with('x')
                && x[1..].chars().all(|c| c.is_ascii_digit()) =>
            {
                joined.push(format!("dp{}", &x[1..]));
                i += 1;
            }
            _ => {
                joined.push(parts[i].clone());
                i += 1;
            }
        }
    }
    // Attention data parallelism over the expert-parallel chips (SGLang's `--dp 8
    // --enable-dp-attention --ep 8`, written `dp8-ep8` or `dp-attention 8, ep8`) is the
    // model's `ep` layout: each group serves its own sequences, the experts spread over all.
    let degree = |prefix: &str| {
        joined
            .iter()
            .find_map(|p| p.strip_prefix(prefix)?.parse::<u32>().ok())
    };
    if let (Some(dp), Some(ep)) = (degree("dp"), degree("ep")) {
        let others = joined
            .iter()
            .any(|p| p.starts_with("tp") && p != "tp1" || p.starts_with("pp") && p != "pp1");
        if dp == ep && !others {
            return format!("ep{ep}").parse().map(Some);
        }
    }
    let kept: Vec<String> = joined
        .into_iter()
        .filter(|p| !p.starts_with("ep"))
        .collect();
    if kept.is_empty() {
        return Ok(None);
    }
    kept.join("-").parse().map(Some)
}

/// Predicts one row.
pub fn predict(cat: &Catalog, p: &Params, row: &Point) -> Outcome {
    predict_as(cat, p, row, Purpose::Prediction)
}

/// What a prediction is for: the row's own, or its bound with the hardware at its best,
/// which drops a scenario's TTFT limit (see [`beyond_hardware`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Prediction,
    Bound,
}

fn predict_as(cat: &Catalog, p: &Params, row: &Point, purpose: Purpose) -> Outcome {
    let mut out = Outcome {
        id: row.id.clone(),
        metric: row.metric.clone(),
        group: None,
        published: f64::NAN,
        predicted: Err(String::new()),
        layout: String::new(),
        system: None,
        limit: None,
    };
    if let Some(why) = &row.unreadable {
        out.predicted = Err(format!("line {}: {why}", row.line));
        return out;
    }
    match row.published() {
        Ok(v) => out.published = v,
        Err(why) => {
            out.predicted = Err(why);
            return out;
        }
    }
    match predict_inner(cat, p, row, purpose) {
        Ok(Predicted {
            value,
            group,
            layout,
            system,
            limit,
        }) => {
            out.predicted = Ok(value);
            out.group = Some(group);
            out.layout = layout;
            out.system = Some(system);
            out.limit = limit;
        }
        // The line finds the row where its id does not (a blank or repeated id).
        Err(why) if row.line > 0 => out.predicted = Err(format!("line {}: {why}", row.line)),
        Err(why) => out.predicted = Err(why),
    }
    out
}

/// The system a `hardware` cell names, a chip count it states in the same cell (`8xH100`,
/// `H100x8`, `8 x H100`) or its name implies (`DGX H100`), and whether the cell counts them
/// outright. A name in MLPerf's
/// style, parts joined by `_` (`H200-SXM-141GBx8_TRT`, `8xMI300X_2xEPYC_9575F`,
/// `GB200-NVL72_GB200-186GB_aarch64x72`), is read from the longest run of parts that names a
/// system; runs of one length that name different systems name none.
fn system_of<'a>(cat: &'a Catalog, cell: &str) -> Result<(&'a System, Option<u32>, bool), String> {
    let cell = cell.trim();
    // A name of a whole system as sold (`GB200 NVL72`, `DGX H100`) states its chips where
    // nothing in the cell counts them; a chip's name (`GB200`, `H100`) leaves the count to
    // the `count` column. The flag says whether the cell counts them outright (`x8`).
    let implied = |found: (&'a System, Option<u32>)| match found {
        (s, None) if names_whole_system(&cell.to_ascii_lowercase()) => {
            (s, Some(s.chips_per_system), false)
        }
        (s, n) => (s, n, n.is_some()),
    };
    let whole = match system_in(cat, cell) {
        Ok(found) => return Ok(implied(found)),
        Err(e) => e,
    };
    let parts: Vec<&str> = cell.split('_').filter(|p| !p.trim().is_empty()).collect();
    for len in (1..parts.len()).rev() {
        let mut found: Vec<(&System, Option<u32>)> = parts
            .windows(len)
            .filter_map(|run| system_in(cat, &run.join("-")).ok())
            .collect();
        if found.iter().any(|(s, _)| s.id != found[0].0.id) {
            return Err(format!(
                "`{cell}` names more than one system ({} and {})",
                found[0].0.id,
                found
                    .iter()
                    .find(|(s, _)| s.id != found[0].0.id)
                    .map_or("", |(s, _)| &s.id)
            ));
        }
        let counts: Vec<u32> = found.iter().filter_map(|(_, n)| *n).collect();
        if let Some(other) = counts.iter().find(|n| **n != counts[0]) {
            return Err(format!(
                "`{cell}` states two chip counts ({} and {other})",
                counts[0]
            ));
        }
        // A run that states a count says more than one that does not.
        found.sort_by_key(|(_, n)| n.is_none());
        if let Some(first) = found.into_iter().next() {
            return Ok(implied(first));
        }
    }
    Err(whole)
}

/// Whether a name states a memory size (`141GB`, `80 GB`): a count after such a name counts
/// chips of that size.
fn sized(name: &str) -> bool {
    let tokens: Vec<&str> = name.split([' ', '-', '_']).collect();
    tokens.iter().enumerate().any(|(i, t)| {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        t.strip_suffix("gb").is_some_and(digits) || (*t == "gb" && i > 0 && digits(tokens[i - 1]))
    })
}

/// [`system_of`] for one run of a name.
fn system_in<'a>(cat: &'a Catalog, cell: &str) -> Result<(&'a System, Option<u32>), String> {
    let lower = cell.to_ascii_lowercase();
    let whole = match cat.system(cell) {
        Ok(s) => return Ok((s, None)),
        Err(e) => e.to_string(),
    };
    // (count, name, whether the count comes first)
    let split = |a: &str, b: &str| -> Option<(u32, String, bool)> {
        let (a, b) = (a.trim(), b.trim());
        a.parse::<u32>()
            .ok()
            .map(|n| (n, b.to_string(), true))
            .or_else(|| b.parse::<u32>().ok().map(|n| (n, a.to_string(), false)))
    };
    let mut candidates = Vec::new();
    for sep in ['x', '×', '*'] {
        for pair in [lower.split_once(sep), lower.rsplit_once(sep)]
            .into_iter()
            .flatten()
        {
            candidates.extend(split(pair.0, pair.1));
        }
    }
    // A count of whole systems (`2x DGX H100`, `2x GB200 NVL72`, `4x SambaRack`) is that
    // many times the system's chips; a count after a memory size counts chips of that size
    // (`GB300-NVL72-288GBx72`).
    let whole_systems = |name: &str, first: bool| {
        (first || !sized(name))
            && ["dgx", "hgx", "nvl", "rack", "node", "sn40l-16"]
                .iter()
                .any(|w| name.contains(w))
    };
    candidates
        .into_iter()
        .filter(|(n, _, _)| *n > 0)
        .find_map(|(n, name, first)| {
            let s = cat.system(&name).ok()?;
            let chips = if whole_systems(&name, first) {
                n.checked_mul(s.chips_per_system)?
            } else {
                n
            };
            Some((s, Some(chips)))
        })
        .ok_or(whole)
}

/// Whether a hardware name names a whole system rather than its chip: a DGX or HGX, a
/// rack, or an NVLink domain with its size (`NVL72`, `nvl8`; `H200 NVL` is a card).
fn names_whole_system(lower: &str) -> bool {
    let nvl_n = lower.match_indices("nvl").any(|(at, _)| {
        lower[at + 3..]
            .trim_start_matches(['-', ' '])
            .starts_with(|c: char| c.is_ascii_digit())
    });
    nvl_n || ["dgx", "hgx", "rack"].iter().any(|w| lower.contains(w))
}

/// A modelled row: its value, group, deployment and bound ([`Outcome`]).
struct Predicted {
    value: f64,
    group: Group,
    layout: String,
    system: String,
    limit: Option<Limit>,
}

fn predict_inner(
    cat: &Catalog,
    p: &Params,
    row: &Point,
    purpose: Purpose,
) -> Result<Predicted, String> {
    let (system, stated_chips, counted_in_cell) = system_of(cat, &row.hardware)?;
    let model = cat.model(row.model.trim()).map_err(|e| e.to_string())?;
    let precision = match row.precision.trim() {
        "" => Precision::in_model_name(&row.model),
        s => Some(
            s.parse()
                .map_err(|e: switchyard_catalog::UnknownPrecision| e.to_string())?,
        ),
    };
    let chips = match row.count.trim() {
        "" => stated_chips,
        s => Some(count_of(s, system).ok_or_else(|| {
            format!(
                "count `{s}` is not a number of {}'s chips ({}) or of its systems ({})",
                system.id,
                match system.kind {
                    SystemKind::Gpu => "8, 8 GPUs",
                    SystemKind::Wafer => "4, 4 wafers",
                    SystemKind::Rdu => "16, 16 sockets",
                    SystemKind::Lpu => "64, 64 LPUs",
                },
                if system.chips_per_system > 8 {
                    "2 racks"
                } else {
                    "2 nodes"
                }
            )
        })?),
    };
    if let Some(n) = chips.filter(|&n| n > crate::MAX_CHIPS) {
        return Err(format!(
            "{n} chips, more than the {} a deployment may have",
            crate::MAX_CHIPS
        ));
    }
    // A count the hardware cell states and another in the `count` column: one is wrong, and
    // which is not for the model to guess.
    if let (Some(named), Some(counted), true) = (stated_chips, chips, counted_in_cell) {
        if named != counted {
            let cell = row.count.trim();
            return Err(format!(
                "hardware `{}` names {named} chips and count `{cell}`{}: give one, or the same in both",
                row.hardware.trim(),
                if cell == counted.to_string() {
                    String::new()
                } else {
                    format!(" {counted}")
                }
            ));
        }
    }
    let layout = layout_of(&row.parallel)?;
    let speculative = match row.speculative.trim().to_ascii_lowercase().as_str() {
        "yes" | "y" | "on" | "true" | "mtp" | "eagle" | "eagle2" | "eagle-2" | "eagle3"
        | "eagle-3" | "medusa" | "draft" | "specdec" | "speculative" => Some(Speculative {
            tokens_per_step: p.spec_tokens_per_step,
            // A cycle drafts at least as many tokens as it accepts, and its target verifies
            // those and one of its own.
            draft_cost: p.spec_tokens_per_step * p.spec_draft_token_cost,
            verified: p.spec_tokens_per_step + 1.0,
        }),
        "" | "none" | "no" | "n" | "off" | "false" | "unknown" | "n/a" | "-" => None,
        _ => {
            return Err(format!(
                "speculative `{}` is neither yes (or a method: mtp, eagle, medusa, draft) nor none or unknown",
                row.speculative.trim()
            ))
        }
    };
    let conc_cell = row.concurrency.trim().to_ascii_lowercase();
    let conc = conc_cell.as_str();
    let scenario = match conc {
        "server" => Some(Scenario::Server),
        "interactive" => Some(Scenario::Interactive),
        _ => None,
    };
    let workload = (scenario.is_some() || conc == "offline")
        .then(|| cat.suite_workload("mlperf", &model.id))
        .flatten();
    let isl = length_of(&row.isl, "isl")?
        .or(workload.and_then(|w| w.isl))
        .unwrap_or(f64::from(p.default_isl));
    let osl = length_of(&row.osl, "osl")?
        .or(workload.and_then(|w| w.osl))
        .unwrap_or(f64::from(p.default_osl));
    // A peak load stated in words is read as MLPerf's offline, without its dataset.
    let peak_load = conc == "offline" || PEAK_LOADS.contains(&conc);
    let stated = if scenario.is_some() || peak_load {
        None
    } else {
        concurrency_of(&row.concurrency)?
    };
    let (metric, scale) = metric_of(&row.metric)?;
    let is_gpu = system.kind == SystemKind::Gpu;
    let (objective, group) = if metric.is_latency() {
        (
            Objective::Latency,
            match system.kind {
                SystemKind::Gpu => Group::GpuLatency,
                SystemKind::Wafer => Group::WaferLatency,
                _ => Group::SramLatency,
            },
        )
    } else {
        (
            Objective::Throughput,
            if is_gpu {
                Group::GpuThroughput
            } else {
                Group::OtherThroughput
            },
        )
    };
    let precision = match precision {
        None if is_gpu && objective == Objective::Throughput => {
            let own = model.default_precision();
            [Precision::Fp4, Precision::Fp8]
                .into_iter()
                .find(|&f| system.flops(f).is_some_and(|(_, native)| native == f))
                // A weight-only model's own format multiplies in 16 bits: a format of its size
                // that multiplies natively is the faster run of the same bytes.
                .filter(|f| {
                    f.bytes() < own.bytes() || (own.weight_only() && f.bytes() <= own.bytes())
                })
                .or(Some(own))
        }
        given => given,
    };
    let per_chip = matches!(metric, Metric::Throughput { per_chip: true, .. });
    if per_chip && chips.is_none() && conc.is_empty() {
        return Err("per-chip throughput with neither a chip count nor a concurrency: the operating point is not stated".into());
    }
    // A run's own limits, stated in its notes, come before its scenario's in the catalog.
    let slo = match scenario {
        Some(_) => stated_slo(&row.notes)?,
        None => None,
    };
    if scenario == Some(Scenario::Interactive)
        && slo.is_none()
        && workload.is_none_or(|w| w.interactive_tpot_ms.is_none())
    {
        return Err(format!(
            "interactive scenario: the catalog holds no interactive limits for {}, and the notes state none",
            model.id
        ));
    }
    let (tpot_limit, ttft_limit) = match (scenario, slo) {
        (Some(_), Some((ttft_s, tpot_s))) => (
            Some(tpot_s * p.server_mean_tpot_frac),
            Some(ttft_s * p.server_mean_ttft_frac),
        ),
        (Some(sc), None) => {
            let (tpot, ttft) = scenario_limits(workload, sc, p);
            (Some(tpot), ttft)
        }
        (None, _) => (None, None),
    };
    // A faster step gives prompts a larger share of each step, so they queue longer, and a
    // TTFT limit binds at a lighter load: the bound on a scenario's throughput holds its
    // TPOT limit alone, which only widens the loads it may take.
    let ttft_limit = ttft_limit.filter(|_| purpose == Purpose::Prediction);
    let concurrency = stated.unwrap_or(1.0);
    let q = Query {
        model,
        system,
        chips,
        precision,
        kv_precision: None,
        layout,
        concurrency,
        isl,
        osl,
        // A run on a benchmark's dataset has its outputs' spread.
        osl_cv: workload.and_then(|w| w.osl_cv).unwrap_or(0.0),
        speculative,
        tpot_limit,
        ttft_limit,
    };
    // Rows at a stated concurrency are judged at that load; peak rows search the load. A
    // latency measured in a scenario run comes from the layout that run chose for its
    // throughput.
    let objective = if stated.is_some() && objective == Objective::Throughput {
        Objective::Latency
    } else if scenario.is_some() || peak_load {
        // A latency measured at a peak load is the latency of the peak operating point.
        Objective::Throughput
    } else {
        objective
    };
    let e = estimate(&q, p, objective).map_err(|e| e.to_string())?;
    // A scenario row's latency, too, is the latency at that run's load.
    let peak_row = conc.is_empty() || peak_load || scenario.is_some();
    let at_peak = peak_row && objective == Objective::Throughput;
    let op = if at_peak { e.peak } else { e.at };
    // The path from a client through a maker's cloud to the engine, which the engine's TTFT
    // leaves out.
    let ttft = op.ttft_s + if is_gpu { 0.0 } else { p.cloud_ttft_s };
    let value = match metric {
        Metric::UserSpeed => op.user_tok_s,
        Metric::Ttft => ttft,
        Metric::Tpot => op.tpot_s,
        Metric::EndToEnd => ttft + (osl - 1.0).max(0.0) * op.tpot_s,
        Metric::PrefillSpeed => isl / ttft,
        Metric::Requests => op.throughput_tok_s / osl.max(1.0),
        Metric::Throughput { kind, per_chip } => {
            let tokens = match kind {
                Tokens::Output => 1.0,
                Tokens::Input => isl / osl.max(1.0),
                Tokens::Total => (isl + osl) / osl.max(1.0),
            };
            let chips = if per_chip { f64::from(e.chips) } else { 1.0 };
            op.throughput_tok_s * tokens / chips
        }
    } * scale;
    let limit = match metric {
        _ if q.speculative.is_some() => None,
        Metric::Requests | Metric::Throughput { .. } => Some(Limit::AtMost),
        // A request's speed and time are bounded only at a load the row fixes.
        _ if at_peak => None,
        Metric::UserSpeed => Some(Limit::AtMost),
        Metric::Tpot => Some(Limit::AtLeast),
        // With other requests in flight a prompt queues behind theirs, the longer the faster
        // decode runs (see `Deployment::at_concurrency`): a first token is bounded alone.
        _ if concurrency > 1.0 => None,
        Metric::PrefillSpeed => Some(Limit::AtMost),
        Metric::Ttft | Metric::EndToEnd => Some(Limit::AtLeast),
    };
    // What the row leaves unstated and the prediction assumes is said beside the layout.
    let mut label = format!("{}x{} {}", e.chips + e.idle_chips, e.system, e.layout);
    if e.idle_chips > 0 {
        let _ = write!(label, " ({} idle)", e.idle_chips);
    }
    if let Some(s) = q.speculative {
        let _ = write!(
            label,
            ", speculative at {:.1} tokens a step",
            s.tokens_per_step
        );
    }
    // A scenario row whose lengths neither it nor a workload states, or whose TPOT limit
    // neither its notes nor the workload's scenario does.
    let mut assumed = Vec::new();
    let unstated = |cell: &str| cell.trim().is_empty();
    if scenario.is_some() && workload.is_none() && (unstated(&row.isl) || unstated(&row.osl)) {
        assumed.push(format!("{isl:.0}+{osl:.0} tokens"));
    }
    let tpot_stated = slo.is_some()
        || workload.is_some_and(|w| match scenario {
            Some(Scenario::Interactive) => w.interactive_tpot_ms.is_some(),
            _ => w.server_tpot_ms.is_some(),
        });
    if scenario.is_some() && !tpot_stated {
        assumed.push(format!(
            "a mean TPOT within {:.0} ms",
            tpot_limit.unwrap_or(0.0) * 1000.0
        ));
    }
    if !assumed.is_empty() {
        let _ = write!(label, ", {} assumed", assumed.join(" and "));
    }
    Ok(Predicted {
        value,
        group,
        layout: label,
        system: e.system.clone(),
        limit,
    })
}

/// Parses a points file.
///
/// # Errors
/// The line and field at fault.
pub fn parse_points(text: &str) -> Result<Vec<Point>, String> {
    if text.trim_start_matches('\u{feff}').trim().is_empty() {
        return Err(format!(
            "line 1: the file is empty; its first line names the columns: {}",
            COLUMNS.join(",")
        ));
    }
    // A quote never closed swallows the rest of the file into one field, whatever column
    // it opens in: the rows after it cannot be told apart, so the file is refused rather
    // than half-read.
    if let Some(line) = unclosed_quote(text) {
        return Err(format!(
            "line {line}: a double quote on this line is never closed, so the lines after it read as one field; close it"
        ));
    }
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(text.as_bytes());
    // Column names are read in any case and spacing (`ID`, ` Hardware `).
    let mut headers: csv::StringRecord = reader
        .headers()
        .map_err(|e| format!("line 1: {e}"))?
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_ascii_lowercase())
        .collect();
    // Trailing commas after the last name add unnamed columns that hold nothing; any other
    // unnamed column would hold values that no rule reads.
    let width = filled_width(&headers);
    headers.truncate(width);
    if let Some(i) = headers.iter().position(str::is_empty) {
        return Err(format!(
            "line 1: column {} has no name; name it (the columns are {}) or remove it",
            i + 1,
            COLUMNS.join(", ")
        ));
    }
    let needed_missing = |hint: &str| {
        ["id", "hardware", "model", "metric", "value"]
            .into_iter()
            .find(|needed| !headers.iter().any(|h| h == *needed))
            .map(|needed| {
                format!(
                    "line 1: the header has no column `{needed}`{hint}; it has: {}",
                    headers.iter().collect::<Vec<_>>().join(", ")
                )
            })
    };
    if headers.len() == 1 && headers[0].contains([';', '\t']) {
        if let Some(e) = needed_missing(" (the file is not comma-separated)") {
            return Err(e);
        }
    }
    // A named column must be a known one, and only once: a misspelt one is named with the
    // column it may have meant, before the column it leaves missing.
    for (i, h) in headers.iter().enumerate() {
        if !COLUMNS.contains(&h) {
            let hint =
                nearest_column(h).map_or(String::new(), |c| format!(" (did you mean `{c}`?)"));
            return Err(format!(
                "line 1: column `{h}` is not one a points file has{hint}; the columns are {}",
                COLUMNS.join(", ")
            ));
        }
        if headers.iter().take(i).any(|earlier| earlier == h) {
            return Err(format!("line 1: column `{h}` is named twice"));
        }
    }
    if let Some(e) = needed_missing("") {
        return Err(e);
    }
    let id_column = headers.iter().position(|h| h == "id").unwrap_or(0);
    reader.set_headers(headers.clone());
    let mut lines = switchyard_catalog::Lines::new(text);
    let mut rows: Vec<Point> = Vec::new();
    // Each row read, field for field, with its line.
    let mut seen: std::collections::HashMap<Vec<String>, usize> = std::collections::HashMap::new();
    let mut record = csv::StringRecord::new();
    loop {
        let fallback = rows.last().map_or(2, |r| r.line + 1);
        let read = reader.read_record(&mut record).map_err(|e| {
            let line = e.position().map_or(fallback, |p| lines.of_byte(p.byte()));
            format!("line {line}: {e}")
        })?;
        if !read {
            break;
        }
        // A line of blanks (spaces, or only commas) is no row.
        if record.iter().all(str::is_empty) {
            continue;
        }
        let line = record
            .position()
            .map_or(fallback, |p| lines.of_byte(p.byte()));
        // Fields past the header's named columns may be there only as trailing commas.
        let extra_filled = record.iter().skip(width).any(|f| !f.is_empty());
        let row = if record.len() >= width && !extra_filled {
            let fields: csv::StringRecord = record.iter().take(width).collect();
            match fields.deserialize::<Point>(Some(&headers)) {
                // A blank or repeated id is let be: the reports name each row's line, and one
                // run may give several rows. A row that repeats an earlier one field for
                // field would score one measurement twice.
                Ok(mut row) => {
                    row.line = line;
                    let key: Vec<String> = fields.iter().map(str::to_string).collect();
                    match seen.get(&key) {
                        Some(first) => unreadable(
                            &record,
                            id_column,
                            line,
                            format!(
                                "repeats line {first} field for field: each measurement is scored once"
                            ),
                        ),
                        None => {
                            seen.insert(key, line);
                            row
                        }
                    }
                }
                Err(e) => unreadable(&record, id_column, line, e.to_string()),
            }
        } else {
            // A long row's fields up to its last filled one: empty ones after it are commas.
            let fields = if record.len() < width {
                record.len()
            } else {
                filled_width(&record)
            };
            unreadable(
                &record,
                id_column,
                line,
                format!(
                    "{fields} fields where the header names {width}; a field that holds a comma needs double quotes"
                ),
            )
        };
        rows.push(row);
    }
    Ok(rows)
}

/// A row of `record` that could not be read, with its id where the id column holds one.
fn unreadable(record: &csv::StringRecord, id_column: usize, line: usize, why: String) -> Point {
    Point {
        id: record.get(id_column).unwrap_or_default().to_string(),
        line,
        unreadable: Some(why),
        ..Point::default()
    }
}

/// The line on which a double quote opens that is never closed, if one is. Inside a quoted
/// field a doubled quote stands for one, so counting every quote as a toggle reads it right.
fn unclosed_quote(text: &str) -> Option<usize> {
    let (mut open, mut line, mut opened) = (false, 1, 1);
    for b in text.bytes() {
        match b {
            b'"' => {
                open = !open;
                if open {
                    opened = line;
                }
            }
            b'\n' => line += 1,
            _ => {}
        }
    }
    open.then_some(opened)
}

/// A row whose published value lies beyond what its hardware allows at its best.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Beyond {
    /// The row's index among the rows given.
    pub row: usize,
    /// The row's id.
    pub id: String,
    /// The row predicted with [`Params::ideal`]: the most a speed or throughput can be, the
    /// least a time can be, on the row's deployment.
    pub bound: f64,
    /// The row's error at that value, in percent of the published value: the least error
    /// that any efficiencies and latencies leave it.
    pub floor_pct: f64,
}

/// The rows of `outcomes` (from [`run`] on `rows` with `p`) whose published value lies
/// beyond their hardware at its best: above the speed or throughput [`Params::ideal`]
/// predicts, or below its time. Only rows with a [`Limit`] are checked. Such a row's error
/// is out of reach of calibration; it points at something the row leaves unstated.
pub fn beyond_hardware(
    cat: &Catalog,
    p: &Params,
    rows: &[Point],
    outcomes: &[Outcome],
) -> Vec<Beyond> {
    bounds(cat, p, rows, outcomes)
        .into_iter()
        .zip(outcomes)
        .enumerate()
        .filter_map(|(i, (bound, o))| {
            let (bound, limit) = (bound?, o.limit?);
            // The layout search keeps ties within 0.01% (`estimate`), and a published figure
            // is rounded: a row that close to its bound is not past it.
            let slack = 1e-4 * bound.abs();
            let beyond = match limit {
                Limit::AtMost => o.published > bound + slack,
                Limit::AtLeast => o.published < bound - slack,
            };
            beyond.then(|| Beyond {
                row: i,
                id: o.id.clone(),
                bound,
                floor_pct: ((bound - o.published) / o.published * 100.0).abs(),
            })
        })
        .collect()
}

/// Each row's bound with its hardware at its best: its prediction with [`Params::ideal`]
/// (a scenario's throughput within its TPOT limit alone), where the row has a [`Limit`] and
/// `outcomes` (from [`run`] on `rows` with `p`) models it; `None` elsewhere.
pub fn bounds(cat: &Catalog, p: &Params, rows: &[Point], outcomes: &[Outcome]) -> Vec<Option<f64>> {
    let ideal = p.ideal();
    rows.iter()
        .zip(outcomes)
        .map(|(row, o)| {
            o.limit?;
            o.predicted.as_ref().ok()?;
            predict_as(cat, &ideal, row, Purpose::Bound).predicted.ok()
        })
        .collect()
}

/// The share of the MAPE that rows beyond their hardware carry even at its best: their
/// floors summed over all modelled rows, as a MAPE, overall and per group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Floor {
    /// Over all modelled rows.
    pub mape: f64,
    /// Per group with a row beyond its hardware: the floor over the group's modelled rows,
    /// and how many of them lie beyond.
    pub groups: Vec<(Group, f64, usize)>,
}

/// The [`Floor`] of `beyond` (from [`beyond_hardware`]) under `summary` (from [`run`] on the
/// same outcomes).
pub fn floor(outcomes: &[Outcome], summary: &Summary, beyond: &[Beyond]) -> Floor {
    let share = |sum: f64, n: usize| if n == 0 { 0.0 } else { sum / n as f64 };
    let groups = summary
        .groups
        .iter()
        .filter_map(|&(g, _, n)| {
            let mine: Vec<f64> = beyond
                .iter()
                .filter(|b| outcomes.get(b.row).and_then(|o| o.group) == Some(g))
                .map(|b| b.floor_pct)
                .collect();
            (!mine.is_empty()).then(|| (g, share(mine.iter().sum(), n), mine.len()))
        })
        .collect();
    Floor {
        mape: share(beyond.iter().map(|b| b.floor_pct).sum(), summary.n),
        groups,
    }
}

/// Predicts every row and summarises.
pub fn run(cat: &Catalog, p: &Params, rows: &[Point]) -> (Vec<Outcome>, Summary) {
    let outcomes: Vec<Outcome> = rows.iter().map(|r| predict(cat, p, r)).collect();
    let errs: Vec<(Group, f64)> = outcomes.iter().filter_map(Outcome::scored).collect();
    let mean = |v: &[f64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let all: Vec<f64> = errs.iter().map(|(_, e)| *e).collect();
    let groups = Group::ALL
        .iter()
        .filter_map(|g| {
            let v: Vec<f64> = errs
                .iter()
                .filter(|(h, _)| h == g)
                .map(|(_, e)| *e)
                .collect();
            (!v.is_empty()).then(|| (*g, mean(&v), v.len()))
        })
        .collect();
    // Each key's MAPE and row count, in the map's (alphabetical) order.
    let per_key = |m: std::collections::BTreeMap<String, Vec<f64>>| {
        m.into_iter()
            .map(|(k, v)| {
                let m = mean(&v);
                (k, m, v.len())
            })
            .collect()
    };
    let mut by_system: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for o in &outcomes {
        if let (Some((_, e)), Some(system)) = (o.scored(), &o.system) {
            by_system.entry(system.clone()).or_default().push(e);
        }
    }
    let mut by_kind: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for (row, o) in rows.iter().zip(&outcomes) {
        if let Some((_, e)) = o.scored() {
            // `Third party`, `third_party` and `third-party` are one kind.
            let kind = match row.source_kind.trim() {
                "" => "unstated".to_string(),
                k => k
                    .split(|c: char| c.is_whitespace() || c == '_' || c == '-')
                    .filter(|w| !w.is_empty())
                    .map(str::to_ascii_lowercase)
                    .collect::<Vec<_>>()
                    .join("-"),
            };
            by_kind.entry(kind).or_default().push(e);
        }
    }
    let summary = Summary {
        mape: mean(&all),
        n: all.len(),
        skipped: outcomes.len() - all.len(),
        groups,
        sources: per_key(by_kind),
        systems: per_key(by_system),
    };
    (outcomes, summary)
}
