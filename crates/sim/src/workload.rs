//! Workloads: when requests arrive, how long their prompts and outputs are, and which
//! traffic class each belongs to.
//!
//! Arrivals are synthetic (Poisson; Gamma-distributed gaps for bursts; a diurnal profile by
//! thinning) or replayed from a trace with its times scaled. Lengths are fixed, exponential,
//! log-normal, or drawn from a trace's own lengths. Requests are produced one at a time, so a
//! run of ten million requests holds only the next one in memory.

use crate::rng::Rng;
use crate::SimError;
use std::sync::Arc;

/// Tokens each prefix block hash of a Mooncake trace stands for (`hash_ids`; Qin et al.,
/// "Mooncake", FAST 2025, whose traces hash prompts in blocks of 512 tokens).
pub const PREFIX_BLOCK_TOKENS: u32 = 512;

/// One row of a request trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRow {
    /// Seconds from the trace's first request; NaN where the trace holds lengths only.
    pub arrival_s: f64,
    /// Prompt tokens.
    pub prompt: u32,
    /// Output tokens.
    pub output: u32,
    /// The prompt's prefix as hashes of its blocks of [`PREFIX_BLOCK_TOKENS`], where the
    /// trace gives them (Mooncake's `hash_ids`): equal hashes in the same place mean the same
    /// tokens up to the end of that block, which a replica's prefix cache serves again.
    pub prefix: Option<Arc<[u64]>>,
}

/// Column names accepted for each field: the splitwise/Vidur format, then the Azure LLM
/// inference trace's own (wall-clock `TIMESTAMP`).
/// The names a CSV trace's arrival-time column may have (seconds, or a wall-clock time).
pub const ARRIVAL: [&str; 4] = ["arrived_at", "arrival_s", "timestamp_s", "TIMESTAMP"];
const PROMPT: [&str; 4] = [
    "num_prefill_tokens",
    "prompt_tokens",
    "input_length",
    "ContextTokens",
];
const OUTPUT: [&str; 4] = [
    "num_decode_tokens",
    "output_tokens",
    "output_length",
    "GeneratedTokens",
];

/// Seconds since 1970-01-01 of a `YYYY-MM-DD HH:MM:SS[.fraction]` wall-clock time (UTC
/// assumed; only differences matter), by the days-from-civil count of the proleptic
/// Gregorian calendar (Hinnant, "chrono-compatible low-level date algorithms").
fn wall_clock_s(v: &str) -> Option<f64> {
    let (date, time) = v.trim().split_once([' ', 'T'])?;
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if d.next().is_some() || !(1..=12).contains(&m) || !(1..=month_days).contains(&day) {
        return None;
    }
    let mut t = time.trim_end_matches('Z').split(':');
    let (h, min): (u8, u8) = (t.next()?.parse().ok()?, t.next()?.parse().ok()?);
    let sec: f64 = t.next()?.parse().ok()?;
    // A leap second is 60.x.
    if t.next().is_some() || h > 23 || min > 59 || !(0.0..61.0).contains(&sec) {
        return None;
    }
    let (h, min) = (f64::from(h), f64::from(min));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + h * 3600.0 + min * 60.0 + sec)
}

/// One line of a Mooncake-style JSON-lines trace (timestamps in milliseconds). Each field
/// is read as any JSON value and checked here, so that a wrong one is named.
#[derive(Debug, serde::Deserialize)]
struct JsonRow {
    timestamp: serde_json::Value,
    input_length: serde_json::Value,
    output_length: serde_json::Value,
    #[serde(default)]
    hash_ids: serde_json::Value,
}

/// A JSON trace field that must be a number.
fn number(field: &str, v: &serde_json::Value) -> Result<f64, String> {
    v.as_f64()
        .ok_or_else(|| format!("field `{field}`: {v} is not a number"))
}

/// A row's `hash_ids`: absent, null or a list of whole numbers from 0 to 2^64 − 1, an id a
/// block of [`PREFIX_BLOCK_TOKENS`] of a `prompt`-token prompt: no more of them than its
/// blocks, and none twice (an id names a block and all before it).
fn hash_ids(v: &serde_json::Value, prompt: u32) -> Result<Option<Arc<[u64]>>, String> {
    let list = match v {
        serde_json::Value::Null => return Ok(None),
        serde_json::Value::Array(list) => list,
        _ => return Err(format!("field `hash_ids`: {v} is not a list of block ids")),
    };
    let ids = list
        .iter()
        .enumerate()
        .map(|(k, x)| {
            x.as_u64().ok_or_else(|| {
                format!(
                    "field `hash_ids`: element {k}, {x}, is not a whole number from 0 to 2^64 - 1"
                )
            })
        })
        .collect::<Result<Vec<u64>, String>>()?;
    let blocks = prompt.div_ceil(PREFIX_BLOCK_TOKENS) as usize;
    if ids.len() > blocks {
        return Err(format!(
            "field `hash_ids`: {} ids for a prompt of {prompt} tokens, {blocks} blocks of {PREFIX_BLOCK_TOKENS}",
            ids.len()
        ));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some((k, id)) = ids.iter().enumerate().find(|(_, id)| !seen.insert(**id)) {
        return Err(format!(
            "field `hash_ids`: element {k}, {id}, repeats an id before it (an id names a block and all before it)"
        ));
    }
    Ok((!ids.is_empty()).then(|| Arc::from(ids)))
}

/// Parses a request trace: CSV with a header naming the arrival time (seconds, or a
/// wall-clock `TIMESTAMP` as in the Azure LLM inference traces), prompt and output token
/// columns; or JSON lines with `timestamp` (ms), `input_length` and `output_length` as in the
/// Mooncake traces. Times are taken from the first row's, so that a trace cut from the middle
/// of a longer one starts at once rather than after an idle stretch that would thin every
/// rate. A CSV without an arrival column holds lengths only (as Vidur's length traces do):
/// its rows' times are NaN, for a synthetic process to draw. Fields may be quoted. Token
/// counts are whole numbers from 1 (an engine needs a token to start and one to answer), so
/// a row of none is refused with its line. `origin` names the file in errors, which give
/// the line and field.
///
/// # Errors
/// [`SimError::Trace`] naming the line and field of the first bad value.
pub fn parse_trace(text: &str, origin: &str) -> Result<Vec<TraceRow>, SimError> {
    let err = |line: usize, message: String| SimError::Trace {
        origin: origin.to_string(),
        line,
        message,
    };
    // A byte-order mark, which spreadsheet programs write, is not part of the first column's
    // name.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim_start().starts_with('{') {
        return parse_json_lines(text, origin);
    }
    // Read as CSV writes it (RFC 4180): a quoted field may hold commas and doubled quotes.
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    // A record's line from its first byte (see `Lines`).
    let mut lines = switchyard_catalog::Lines::new(text);
    let mut line_of = |p: Option<&csv::Position>| p.map_or(1, |p| lines.of_byte(p.byte()));
    let mut records = reader.records();
    let names = match records.next() {
        None => return Err(err(1, "the file is empty".into())),
        Some(Err(e)) => return Err(err(line_of(e.position()), e.to_string())),
        Some(Ok(r)) => r,
    };
    let header = text.lines().next().unwrap_or_default();
    let cols: Vec<&str> = names.iter().collect();
    let find = |names: &[&str; 4]| {
        cols.iter().position(|c| names.contains(c)).ok_or_else(|| {
            err(
                1,
                format!(
                    "no column named {} in header `{header}`",
                    names.join(" or ")
                ),
            )
        })
    };
    // Two columns of one meaning leave which to read to chance.
    for names in [&ARRIVAL, &PROMPT, &OUTPUT] {
        let named: Vec<&str> = cols.iter().copied().filter(|c| names.contains(c)).collect();
        if named.len() > 1 {
            return Err(err(
                1,
                format!(
                    "header `{header}` has {} columns of one meaning ({}): keep one",
                    named.len(),
                    named.join(", ")
                ),
            ));
        }
    }
    let (p, o) = (find(&PROMPT)?, find(&OUTPUT)?);
    let a = cols.iter().position(|c| ARRIVAL.contains(c));
    let mut rows = Vec::new();
    let mut last = f64::NEG_INFINITY;
    let mut origin_s: Option<f64> = None;
    for record in records {
        let record = record.map_err(|e| err(line_of(e.position()), e.to_string()))?;
        let n = line_of(record.position());
        // A line of blanks is no row.
        if record.iter().all(str::is_empty) {
            continue;
        }
        let fields: Vec<&str> = record.iter().collect();
        // A value past the header's columns belongs to none: a comma too many shifts the
        // row's meaning.
        if fields.len() > cols.len() && fields[cols.len()..].iter().any(|f| !f.is_empty()) {
            return Err(err(
                n,
                format!(
                    "{} fields where the header names {} columns",
                    fields.len(),
                    cols.len()
                ),
            ));
        }
        let get = |k: usize| {
            fields
                .get(k)
                .copied()
                .ok_or_else(|| err(n, format!("field `{}` is missing", cols[k])))
        };
        let arrival = match a {
            None => f64::NAN,
            Some(a) => {
                let raw = get(a)?;
                let t = match raw.parse::<f64>() {
                    Ok(v) => v,
                    Err(_) => wall_clock_s(raw).ok_or_else(|| {
                        err(
                            n,
                            format!(
                                "field `{}`: `{raw}` is neither seconds nor a YYYY-MM-DD HH:MM:SS time",
                                cols[a]
                            ),
                        )
                    })?,
                };
                if !t.is_finite() || t < last || t < 0.0 {
                    return Err(err(
                        n,
                        format!(
                            "field `{}`: times must be finite, at least 0 and non-decreasing",
                            cols[a]
                        ),
                    ));
                }
                last = t;
                let at = t - *origin_s.get_or_insert(t);
                within_span(at).map_err(|m| err(n, format!("field `{}`: {m}", cols[a])))?
            }
        };
        let tokens = |k: usize| -> Result<u32, SimError> {
            let v: f64 = get(k)?
                .parse()
                .map_err(|_| err(n, format!("field `{}`: not a number", cols[k])))?;
            token_count(v).map_err(|m| err(n, format!("field `{}`: {m}", cols[k])))
        };
        rows.push(TraceRow {
            arrival_s: arrival,
            prompt: tokens(p)?,
            output: tokens(o)?,
            prefix: None,
        });
    }
    if rows.is_empty() {
        return Err(err(1, "the trace has no requests".into()));
    }
    Ok(rows)
}

/// A trace's token count: a whole number from 1 to 10^9, as a request has (a request of
/// no tokens, or of half a token, is a trace's mistake, not one to round away unsaid).
fn token_count(v: f64) -> Result<u32, String> {
    if v.fract() == 0.0 && (1.0..=1e9).contains(&v) {
        Ok(v as u32)
    } else {
        Err(format!(
            "{v} is not a whole number of tokens from 1 to 10^9"
        ))
    }
}

/// A request's arrival after the trace's first, within 10^9 s (31 years): the bound the
/// synthetic rates keep, past which durations print as hundreds of digits.
fn within_span(at: f64) -> Result<f64, String> {
    if at <= 1e9 {
        Ok(at)
    } else {
        Err(format!(
            "{at:.3e} s after the first request is past 10^9 s (31 years)"
        ))
    }
}

fn parse_json_lines(text: &str, origin: &str) -> Result<Vec<TraceRow>, SimError> {
    let err = |line: usize, message: String| SimError::Trace {
        origin: origin.to_string(),
        line,
        message,
    };
    let mut rows = Vec::new();
    let mut first: Option<f64> = None;
    let mut last = f64::NEG_INFINITY;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        // The line is the file's; serde's own position is within it, a column.
        let r: JsonRow = serde_json::from_str(line).map_err(|e| {
            let message = e.to_string();
            let place = format!(" at line {} column {}", e.line(), e.column());
            let message = message.strip_suffix(&place).unwrap_or(&message);
            err(n, format!("{message} (column {})", e.column()))
        })?;
        let field = |m: String| err(n, m);
        let at = number("timestamp", &r.timestamp).map_err(field)? / 1000.0;
        if !at.is_finite() || at < last || at < 0.0 {
            return Err(err(
                n,
                "field `timestamp`: times must be finite, at least 0 and non-decreasing".into(),
            ));
        }
        last = at;
        let count = |field: &str, v: f64| {
            token_count(v).map_err(|m| err(n, format!("field `{field}`: {m}")))
        };
        let arrival_s = within_span(at - *first.get_or_insert(at))
            .map_err(|m| err(n, format!("field `timestamp`: {m}")))?;
        let prompt = count(
            "input_length",
            number("input_length", &r.input_length).map_err(field)?,
        )?;
        rows.push(TraceRow {
            arrival_s,
            prompt,
            output: count(
                "output_length",
                number("output_length", &r.output_length).map_err(field)?,
            )?,
            prefix: hash_ids(&r.hash_ids, prompt).map_err(field)?,
        });
    }
    if rows.is_empty() {
        return Err(err(1, "the trace has no requests".into()));
    }
    Ok(rows)
}

/// How requests arrive.
#[derive(Debug, Clone, PartialEq)]
pub enum Arrivals {
    /// A Poisson process of `rate` requests per second.
    Poisson {
        /// Requests per second.
        rate: f64,
    },
    /// A renewal process with Gamma gaps: mean rate `rate`, coefficient of variation `cv`
    /// of the gaps (1 is Poisson, above 1 bursty).
    Gamma {
        /// Requests per second.
        rate: f64,
        /// Coefficient of variation of the gaps.
        cv: f64,
    },
    /// A Poisson process whose rate follows a sinusoid between `rate·(1−swing)` and
    /// `rate·(1+swing)` over `period_s`, by thinning (Lewis and Shedler, 1979).
    Diurnal {
        /// Mean requests per second.
        rate: f64,
        /// Relative swing, 0 to 1.
        swing: f64,
        /// Period in seconds (a day: 86,400).
        period_s: f64,
    },
    /// Replay of a trace's arrival times divided by `rate_x` (2 plays it twice as fast).
    Trace {
        /// Speed-up factor.
        rate_x: f64,
    },
}

impl Arrivals {
    /// A process's mean requests per second; `None` for a replay, whose times are its own.
    pub fn mean_rate(&self) -> Option<f64> {
        match *self {
            Arrivals::Poisson { rate }
            | Arrivals::Gamma { rate, .. }
            | Arrivals::Diurnal { rate, .. } => Some(rate),
            Arrivals::Trace { .. } => None,
        }
    }
}

/// A distribution of token counts.
#[derive(Debug, Clone, PartialEq)]
pub enum Lengths {
    /// Always `n`.
    Fixed(u32),
    /// Exponential with the given mean, rounded up (so geometric on 1, 2, …).
    Exponential(f64),
    /// Log-normal with the given median and σ of the logarithm.
    LogNormal {
        /// Median tokens.
        median: f64,
        /// Standard deviation of ln(tokens).
        sigma: f64,
    },
    /// Drawn uniformly from a list of observed lengths.
    Empirical(Vec<u32>),
    /// The length recorded on a trace row: the arriving row in a replay; under a synthetic
    /// process a row drawn at random, the prompt and the output of one request together, so
    /// that the trace's pairing of long prompts with their outputs survives.
    FromTrace,
}

impl Lengths {
    fn draw(&self, rng: &mut Rng, row: Option<u32>) -> u32 {
        let v = match self {
            Lengths::Fixed(n) => f64::from(*n),
            Lengths::Exponential(mean) => rng.exponential(*mean).ceil(),
            Lengths::LogNormal { median, sigma } => (median * (sigma * rng.normal()).exp()).round(),
            Lengths::Empirical(v) if !v.is_empty() => f64::from(v[rng.below(v.len())]),
            Lengths::Empirical(_) => 1.0,
            Lengths::FromTrace => f64::from(row.unwrap_or(1)),
        };
        v.clamp(1.0, 1e9) as u32
    }

    /// The distribution's mean, for sizing the router's predictions; `column` reads the
    /// length off a trace row for [`Lengths::FromTrace`].
    pub fn mean(&self, trace: &[TraceRow], column: fn(&TraceRow) -> u32) -> f64 {
        match self {
            Lengths::Fixed(n) => f64::from(*n),
            Lengths::Exponential(m) => *m,
            Lengths::LogNormal { median, sigma } => median * (sigma * sigma / 2.0).exp(),
            Lengths::Empirical(v) => mean_of(v.iter().copied()),
            Lengths::FromTrace => mean_of(trace.iter().map(column)),
        }
    }

    /// Spread of the lengths drawn: their standard deviation over their mean (0 for fixed
    /// lengths, 1 for exponential ones).
    pub fn cv(&self, trace: &[TraceRow], column: fn(&TraceRow) -> u32) -> f64 {
        match self {
            Lengths::Fixed(_) => 0.0,
            Lengths::Exponential(_) => 1.0,
            Lengths::LogNormal { sigma, .. } => ((sigma * sigma).exp() - 1.0).sqrt(),
            Lengths::Empirical(v) => cv_of(v.iter().copied()),
            Lengths::FromTrace => cv_of(trace.iter().map(column)),
        }
    }

    /// Lengths of mean `mean` spread by `cv`, the inverse of [`Lengths::mean`] and
    /// [`Lengths::cv`]: log-normal, whose mean is its median times exp(σ²/2) and whose
    /// squared spread is exp(σ²) − 1; all alike without a spread.
    pub fn spread(mean: u32, cv: f64) -> Lengths {
        if cv <= 0.0 {
            return Lengths::Fixed(mean);
        }
        let sigma2 = (1.0 + cv * cv).ln();
        Lengths::LogNormal {
            median: f64::from(mean) / (sigma2 / 2.0).exp(),
            sigma: sigma2.sqrt(),
        }
    }
}

/// Population standard deviation over mean (0 for no lengths, or none above 0).
fn cv_of(v: impl ExactSizeIterator<Item = u32> + Clone) -> f64 {
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    let mean = mean_of(v.clone());
    if mean <= 0.0 {
        return 0.0;
    }
    let var = v.map(|x| (f64::from(x) - mean).powi(2)).sum::<f64>() / n as f64;
    var.sqrt() / mean
}

fn mean_of(v: impl ExactSizeIterator<Item = u32>) -> f64 {
    let n = v.len();
    if n == 0 {
        return 1.0;
    }
    v.map(f64::from).sum::<f64>() / n as f64
}

/// A request the workload produced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    /// Seconds from the start.
    pub at: f64,
    /// Prompt tokens.
    pub prompt: u32,
    /// Output tokens.
    pub output: u32,
    /// Index of its traffic class.
    pub class: usize,
    /// The trace row it replays, where that row names its prompt's prefix
    /// ([`TraceRow::prefix`]) and the request keeps the row's prompt.
    pub trace_row: Option<u32>,
}

/// What a workload draws from. Arrivals stop after `max_requests` requests or at `horizon_s`
/// seconds, whichever comes first, or at the end of the trace when replaying one. Class
/// shares need not sum to one; they are normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadSpec {
    /// The arrival process.
    pub arrivals: Arrivals,
    /// Prompt lengths.
    pub prompt: Lengths,
    /// Output lengths.
    pub output: Lengths,
    /// Share of each traffic class, in class order.
    pub class_shares: Vec<f64>,
    /// Most requests to produce.
    pub max_requests: Option<u64>,
    /// Last arrival time, in seconds.
    pub horizon_s: Option<f64>,
}

impl WorkloadSpec {
    /// Mean prompt and output lengths over `trace` (the rows the workload will use), without
    /// building the workload.
    pub fn mean_lengths(&self, trace: &[TraceRow]) -> (f64, f64) {
        (
            self.prompt.mean(trace, |r| r.prompt),
            self.output.mean(trace, |r| r.output),
        )
    }

    /// Spread of the output lengths over `trace`: standard deviation over mean.
    pub fn output_cv(&self, trace: &[TraceRow]) -> f64 {
        self.output.cv(trace, |r| r.output)
    }
}

/// The stream of requests of a run.
#[derive(Debug, Clone)]
pub struct Workload {
    arrivals: Arrivals,
    prompt: Lengths,
    output: Lengths,
    class_shares: Vec<f64>,
    trace: Vec<TraceRow>,
    max_requests: u64,
    horizon_s: f64,
    produced: u64,
    clock: f64,
    rng_time: Rng,
    rng_len: Rng,
    rng_class: Rng,
}

impl Workload {
    /// A workload from its specification, the trace rows it replays or draws lengths from
    /// (empty when none), and a seed.
    pub fn new(spec: WorkloadSpec, trace: Vec<TraceRow>, seed: u64) -> Self {
        let WorkloadSpec {
            arrivals,
            prompt,
            output,
            class_shares,
            max_requests,
            horizon_s,
        } = spec;
        let rng = Rng::new(seed);
        let total: f64 = class_shares.iter().sum();
        let class_shares = if total > 0.0 {
            class_shares.iter().map(|s| s / total).collect()
        } else {
            vec![1.0]
        };
        Workload {
            arrivals,
            prompt,
            output,
            class_shares,
            trace,
            max_requests: max_requests.unwrap_or(u64::MAX),
            horizon_s: horizon_s.unwrap_or(f64::INFINITY),
            produced: 0,
            clock: 0.0,
            rng_time: rng.fork(1),
            rng_len: rng.fork(2),
            rng_class: rng.fork(3),
        }
    }

    /// Expected number of requests, when it is known in advance (for progress reports).
    pub fn expected_requests(&self) -> Option<u64> {
        let by_time = match self.arrivals {
            Arrivals::Trace { .. } => Some(self.trace.len() as u64),
            Arrivals::Poisson { rate }
            | Arrivals::Gamma { rate, .. }
            | Arrivals::Diurnal { rate, .. } => self
                .horizon_s
                .is_finite()
                .then_some((rate * self.horizon_s) as u64),
        };
        match (by_time, self.max_requests) {
            (Some(n), m) => Some(n.min(m)),
            (None, u64::MAX) => None,
            (None, m) => Some(m),
        }
    }

    /// The last arrival time the workload can produce, if bounded.
    pub fn horizon(&self) -> Option<f64> {
        match self.arrivals {
            Arrivals::Trace { rate_x } => self
                .trace
                .last()
                .map(|r| (r.arrival_s / rate_x).min(self.horizon_s)),
            _ if self.horizon_s.is_finite() => Some(self.horizon_s),
            Arrivals::Poisson { rate }
            | Arrivals::Gamma { rate, .. }
            | Arrivals::Diurnal { rate, .. } => {
                (self.max_requests < u64::MAX).then(|| self.max_requests as f64 / rate)
            }
        }
    }

    fn class(&mut self) -> usize {
        if self.class_shares.len() <= 1 {
            return 0;
        }
        let mut x = self.rng_class.open01();
        for (i, s) in self.class_shares.iter().enumerate() {
            x -= s;
            if x <= 0.0 {
                return i;
            }
        }
        self.class_shares.len() - 1
    }
}

impl Iterator for Workload {
    type Item = Arrival;

    fn next(&mut self) -> Option<Arrival> {
        if self.produced >= self.max_requests {
            return None;
        }
        let mut trace_row = None;
        let (at, row) = match self.arrivals {
            Arrivals::Trace { rate_x } => {
                let i = self.produced as usize;
                let row = self.trace.get(i)?;
                if row.prefix.is_some() && matches!(self.prompt, Lengths::FromTrace) {
                    trace_row = u32::try_from(i).ok();
                }
                (row.arrival_s / rate_x, Some((row.prompt, row.output)))
            }
            Arrivals::Poisson { rate } => {
                self.clock += self.rng_time.exponential(1.0 / rate);
                (self.clock, None)
            }
            Arrivals::Gamma { rate, cv } => {
                // Gaps with mean 1/rate and coefficient of variation cv: shape 1/cv².
                let k = 1.0 / (cv * cv);
                self.clock += self.rng_time.gamma(k, 1.0 / (rate * k));
                (self.clock, None)
            }
            Arrivals::Diurnal {
                rate,
                swing,
                period_s,
            } => {
                let peak = rate * (1.0 + swing);
                loop {
                    self.clock += self.rng_time.exponential(1.0 / peak);
                    let phase = std::f64::consts::TAU * self.clock / period_s;
                    let now = rate * (1.0 + swing * phase.sin());
                    if self.rng_time.open01() * peak <= now {
                        break;
                    }
                }
                (self.clock, None)
            }
        };
        if at > self.horizon_s {
            return None;
        }
        let row = row.or_else(|| {
            let from_trace = |l: &Lengths| matches!(l, Lengths::FromTrace);
            (from_trace(&self.prompt) || from_trace(&self.output))
                .then_some(self.trace.len())
                .filter(|&n| n > 0)
                .map(|n| {
                    let r = &self.trace[self.rng_len.below(n)];
                    (r.prompt, r.output)
                })
        });
        self.produced += 1;
        let prompt = self.prompt.draw(&mut self.rng_len, row.map(|r| r.0));
        let output = self.output.draw(&mut self.rng_len, row.map(|r| r.1));
        let class = self.class();
        Some(Arrival {
            at,
            prompt,
            output,
            class,
            trace_row,
        })
    }
}
