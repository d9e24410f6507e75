//! Latency histograms with bounded memory and the summary types the simulator reports.
//!
//! A histogram keeps counts in logarithmic buckets 1% wide from 1 µs up, so percentiles are
//! exact to within 1% relative whatever the number of requests, in a fixed 11 KiB; the mean
//! is kept exactly. This is what lets a run of ten million requests report p99s without
//! holding ten million latencies.

use serde::Serialize;

/// Smallest value resolved, in seconds; anything below lands in the first bucket.
const FLOOR: f64 = 1e-6;
/// Relative width of a bucket.
const GROWTH: f64 = 1.01;
/// Buckets: 1 µs to about 10^6 s.
const BUCKETS: usize = 2800;

/// A log-bucketed histogram of non-negative values (seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    counts: Vec<u32>,
    n: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: Vec::new(),
            n: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: 0.0,
        }
    }
}

fn bucket(x: f64) -> usize {
    if x <= FLOOR {
        return 0;
    }
    (((x / FLOOR).ln() / GROWTH.ln()) as usize + 1).min(BUCKETS - 1)
}

/// The value a bucket stands for: its geometric centre.
fn centre(b: usize) -> f64 {
    if b == 0 {
        return FLOOR;
    }
    FLOOR * GROWTH.powf(b as f64 - 0.5)
}

impl Histogram {
    /// Adds one value; non-finite values are ignored.
    pub fn record(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        let x = x.max(0.0);
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
        }
        self.counts[bucket(x)] += 1;
        self.n += 1;
        self.sum += x;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        if other.n == 0 {
            return;
        }
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.n += other.n;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Exact mean, or `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }

    /// The `q` quantile (0 to 1), within 1%, or `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return Some(centre(b).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }

    /// The `q` quantile of a mixture of distributions, each weighed by its share of the
    /// whole (the weights need not sum to 1; empty parts and parts of no weight are left
    /// out), within 1%; `None` when nothing is left. A pool simulated at a size out of
    /// proportion to the fleet it stands for counts at the fleet's proportion.
    pub fn mixture_quantile(parts: &[(&Histogram, f64)], q: f64) -> Option<f64> {
        let parts: Vec<(&Histogram, f64)> = parts
            .iter()
            .copied()
            .filter(|(h, w)| h.n > 0 && *w > 0.0 && w.is_finite())
            .collect();
        let total: f64 = parts.iter().map(|(_, w)| w).sum();
        if parts.is_empty() {
            return None;
        }
        let lo = parts
            .iter()
            .map(|(h, _)| h.min)
            .fold(f64::INFINITY, f64::min);
        let hi = parts.iter().map(|(h, _)| h.max).fold(0.0, f64::max);
        let q = q.clamp(0.0, 1.0);
        let mut seen = 0.0;
        for b in 0..BUCKETS {
            seen += parts
                .iter()
                .map(|(h, w)| f64::from(h.counts[b]) / h.n as f64 * w / total)
                .sum::<f64>();
            if seen >= q * (1.0 - 1e-12) {
                return Some(centre(b).clamp(lo, hi));
            }
        }
        Some(hi)
    }

    /// The distribution as (value, cumulative fraction) points, one per non-empty bucket.
    pub fn cdf(&self) -> Vec<(f64, f64)> {
        let mut out = Vec::new();
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            if c > 0 {
                seen += u64::from(c);
                out.push((
                    centre(b).clamp(self.min, self.max),
                    seen as f64 / self.n as f64,
                ));
            }
        }
        out
    }

    /// Mean and percentiles for reports.
    pub fn summary(&self) -> Quantiles {
        Quantiles {
            mean: self.mean(),
            p50: self.quantile(0.50),
            p90: self.quantile(0.90),
            p99: self.quantile(0.99),
        }
    }
}

/// Mean and percentiles of a latency, in seconds (`None` when nothing was measured).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quantiles {
    /// Mean.
    pub mean: Option<f64>,
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

/// Results for a group of requests: one provider, one class, or the whole fleet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    /// Provider or class name (`fleet` for everything).
    pub name: String,
    /// Requests that ended here (completed or failed).
    pub requests: u64,
    /// Requests completed.
    pub completed: u64,
    /// Requests failed.
    pub failed: u64,
    /// Share of the requests whose class sets a target that completed within both its
    /// targets; `None` where no request's class sets one.
    pub goodput: Option<f64>,
    /// Requests that reached this provider after failing elsewhere.
    pub fallbacks_in: u64,
    /// Time from arrival to the first batch that took the request.
    pub queue_s: Quantiles,
    /// Time to first token.
    pub ttft_s: Quantiles,
    /// Time per output token after the first.
    pub tpot_s: Quantiles,
    /// Time from arrival to the last token.
    pub e2e_s: Quantiles,
    /// Prompt tokens of completed requests.
    pub prompt_tokens: u64,
    /// Output tokens of completed requests.
    pub output_tokens: u64,
    /// Output tokens per second over the run; for a failure window, those the whole fleet
    /// produced within the window (its requests' own stream on past it).
    pub throughput_tok_s: f64,
    /// Share of replica time spent in steps (providers only): busy, however small the
    /// batch each step carries.
    pub utilization: Option<f64>,
    /// Output tokens per second over the pool's peak throughput at the mean lengths of the
    /// requests it served, as `estimate` gives it (providers only; a disaggregated provider's decode pool): the
    /// share of what it could carry that it carries, which sets its power.
    pub load: Option<f64>,
    /// KV-cache preemptions (providers only).
    pub preemptions: Option<u64>,
    /// Share of its completed requests' prompt tokens that their replicas found in their
    /// prefix caches, not prefilled again (where the trace names prompts' prefixes).
    pub prefix_hit: Option<f64>,
    /// Facility energy per output token, J (providers only; needs a power figure).
    pub joules_per_token: Option<f64>,
    /// Cost per million output tokens, USD: the rent, or the amortised purchase plus
    /// electricity (providers only; needs a price).
    pub usd_per_mtok: Option<f64>,
}

/// Little's law on the run's own outputs, L = λW, over the whole run (from the first
/// arrival's time to the last request's end, the system empty at both): the requests in the
/// system, counted up at each arrival and down at each end and averaged over time, against
/// each request's own time from arrival to end. Over a run that starts and ends empty the
/// two agree exactly when the bookkeeping is sound, so this checks the simulator's events
/// (a request that never ends, or ends twice, breaks it), not the fleet's performance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Little {
    /// Arrivals per second over the whole run, its draining included (not the offered rate
    /// while requests arrive: see the time bins for that).
    pub arrival_rate: f64,
    /// Time-averaged requests in the system (arrived, not yet ended), from the running count.
    pub mean_in_system: f64,
    /// Mean time from arrival to the end (completion or failure).
    pub mean_time_in_system: f64,
}

/// One time bin of the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bin {
    /// Start of the bin, seconds.
    pub start_s: f64,
    /// Arrivals in the bin.
    pub arrivals: u64,
    /// Requests completed in the bin.
    pub completed: u64,
    /// Requests failed in the bin.
    pub failed: u64,
    /// Output tokens per provider produced in the bin, those of requests that later failed
    /// included (the providers' `output_tokens` count completed requests' alone).
    pub tokens: Vec<u64>,
    /// Requests waiting in replica queues at the end of the bin.
    pub queued: u64,
    /// Requests in the system at the end of the bin.
    pub in_system: u64,
    /// Mean time to first token of the requests completed in the bin, seconds.
    pub mean_ttft_s: Option<f64>,
    /// Requests per provider completed in the bin that had failed elsewhere first.
    pub fallbacks: Vec<u64>,
    #[serde(skip)]
    pub(crate) ttft_sum: f64,
}

/// Failed requests by class and reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureCount {
    /// Traffic class.
    pub class: String,
    /// Why they failed.
    pub reason: String,
    /// How many.
    pub count: u64,
}

/// Everything a run reports, deterministic for a scenario and seed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Routing policy.
    pub policy: String,
    /// What each provider runs, in scenario order: its replicas, their model, layout,
    /// system and precisions (and its prefill pool's), as the performance model chose them.
    pub deployments: Vec<String>,
    /// The traffic classes with their targets, which goodput is judged by.
    pub targets: Vec<crate::Class>,
    /// Arrivals.
    pub arrivals: u64,
    /// Completed requests.
    pub completed: u64,
    /// Failed requests (explicitly, with a reason).
    pub failed: u64,
    /// Simulated seconds from the start to the last event of a request.
    pub duration_s: f64,
    /// The whole fleet.
    pub fleet: Group,
    /// Per provider, in scenario order.
    pub providers: Vec<Group>,
    /// Per traffic class, in scenario order.
    pub classes: Vec<Group>,
    /// Per provider and class: `providers.len()` rows of `classes.len()` groups.
    pub cells: Vec<Vec<Group>>,
    /// Little's law check.
    pub little: Little,
    /// Failures by class and reason.
    pub failures: Vec<FailureCount>,
    /// For each failure in the scenario, the requests that arrived while it lasted (a
    /// replica failure that never recovers counts to the end of the run).
    pub failure_windows: Vec<Group>,
    /// The requests that arrived after the scenario's warm-up, when it sets one.
    pub steady: Option<Group>,
    /// Seconds per time bin.
    pub bin_s: f64,
    /// Time series.
    pub bins: Vec<Bin>,
    /// Simulated steps over all replicas.
    pub steps: u64,
}

/// One request's outcome, for the per-request CSV.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<'a> {
    /// Arrival order, from 0.
    pub id: u64,
    /// Traffic class.
    pub class: &'a str,
    /// The provider that served it last (empty if none took it).
    pub provider: &'a str,
    /// Replica index within the provider.
    pub replica: Option<u32>,
    /// Arrival time, seconds.
    pub arrival_s: f64,
    /// Prompt tokens.
    pub prompt: u32,
    /// Prompt tokens its replica found in its prefix cache, which it did not prefill.
    pub cached: u32,
    /// Output tokens asked for, within the request's `max_tokens` and the context of the
    /// provider that took it: what a completed request produced, and what a failed one
    /// asked for (its failure says why it got none or fewer).
    pub output: u32,
    /// Tries, the first included.
    pub attempts: u32,
    /// Failure reason, or `None` when it completed.
    pub failure: Option<&'a str>,
    /// Queueing time.
    pub queue_s: Option<f64>,
    /// Time to first token.
    pub ttft_s: Option<f64>,
    /// Time per output token after the first.
    pub tpot_s: Option<f64>,
    /// Time from arrival to the end.
    pub e2e_s: f64,
}

/// A text field as CSV writes it (RFC 4180): quoted, its quotes doubled, where it holds a
/// comma, a quote or a line break (a provider named `gpu, east`); else as it is.
fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

impl Record<'_> {
    /// The CSV header matching [`Record::write_csv`].
    pub const CSV_HEADER: &'static str =
        "id,class,provider,replica,arrival_s,prompt_tokens,output_tokens,attempts,status,reason,queue_s,ttft_s,tpot_s,e2e_s,cached_tokens";

    /// Appends the record as one CSV line (with its newline) to `out`.
    pub fn write_csv(&self, out: &mut String) {
        use std::fmt::Write as _;
        let opt = |v: Option<f64>| v.map(|x| format!("{x:.6}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "{},{},{},{},{:.6},{},{},{},{},{},{},{},{},{:.6},{}",
            self.id,
            csv_field(self.class),
            csv_field(self.provider),
            self.replica.map(|r| r.to_string()).unwrap_or_default(),
            self.arrival_s,
            self.prompt,
            self.output,
            self.attempts,
            if self.failure.is_some() {
                "failed"
            } else {
                "ok"
            },
            csv_field(self.failure.unwrap_or("")),
            opt(self.queue_s),
            opt(self.ttft_s),
            opt(self.tpot_s),
            self.e2e_s,
            self.cached
        );
    }
}
