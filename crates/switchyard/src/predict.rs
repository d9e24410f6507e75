//! The prediction commands: `estimate`, `compare`, `validate` and `catalog`.

use crate::input::{read_text, Kind};
use crate::UsageError;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use std::fmt::Write as _;
use std::path::Path;
use switchyard_perf::validate::{self, Group};
use switchyard_perf::{
    unit_name, Catalog, Disaggregated, Estimate, Frontier, Layout, Objective, Params, PerfError,
    Precision, Query, Speculative,
};

/// The repository's copy of the published measurements, compiled in so that `validate`
/// needs nothing outside the binary.
/// The most tokens `--draft-len` may draft a cycle: speculative decoding methods draft a
/// few to a few tens, and past that a cycle only grows longer.
const MAX_DRAFT_LEN: u32 = 64;

const BUILTIN_POINTS: &str = include_str!("../../../reference/points.csv");

fn usage(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::Error::new(UsageError(e.to_string()))
}

/// The built-in catalog, extended by the user's files in the order given.
pub fn load_catalog(extra: &[std::path::PathBuf]) -> Result<Catalog> {
    let mut cat = Catalog::builtin().context("built-in catalog")?;
    for path in extra {
        let text = read_text(path, Kind::Settings)?;
        cat.extend_from_toml(&text, &path.display().to_string())
            .map_err(usage)?;
    }
    Ok(cat)
}

/// Options shared by `estimate` and `compare`.
#[derive(Debug, Args)]
pub struct Workload {
    /// Weight precision: bf16, fp16, fp8, int8, fp4, int4, w4a8 (4-bit weights multiplied in
    /// 8 bits), or weights only in w4a16 (awq, gptq) or w8a16, multiplied in 16 bits
    /// (default: the model's own).
    #[arg(long)]
    precision: Option<Precision>,
    /// KV-cache precision: bf16, fp16, fp8, int8, fp4, int4 (default: fp8 with weights
    /// narrower than 16 bits, not weight-only, on chips that compute in fp8, else bf16).
    #[arg(long, value_name = "PRECISION")]
    kv_precision: Option<Precision>,
    /// Requests in flight, on average (a fraction is a mean over time).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    concurrency: f64,
    /// Prompt tokens per request, a mean (so a fraction is read as such) [default: the workload's mean, else `default_isl` of the parameters, 1024].
    #[arg(long, allow_negative_numbers = true)]
    isl: Option<f64>,
    /// Output tokens per request, a mean (so a fraction is read as such) [default: the workload's mean, else `default_osl` of the parameters, 512].
    #[arg(long, allow_negative_numbers = true)]
    osl: Option<f64>,
    /// A benchmark workload (see `switchyard catalog workloads`): its dataset's mean lengths,
    /// and its server scenario's latency limits for the peak-throughput search.
    #[arg(long, value_name = "ID")]
    workload: Option<String>,
    /// Spread of the output lengths, their standard deviation over their mean: 0 for
    /// outputs all alike (a benchmark tool's fixed lengths), about 0.8 for chat and 1.1 for
    /// reasoning; the sequences decoding at a moment are the longer ones, so a spread lengthens
    /// their mean context [default: 0, or the workload's].
    #[arg(long, value_name = "CV", allow_negative_numbers = true)]
    osl_cv: Option<f64>,
    /// Speculative decoding with this acceptance rate per drafted token (e.g. 0.8).
    #[arg(long, value_name = "RATE", allow_negative_numbers = true)]
    speculative: Option<f64>,
    /// Tokens drafted per step with --speculative; each costs `spec_draft_token_cost` of a
    /// target step (see `switchyard catalog params`) [default: 4].
    #[arg(long)]
    draft_len: Option<u32>,
    /// Limit on time per output token for the peak-throughput search, in ms.
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    tpot_limit_ms: Option<f64>,
    /// Limit on time to first token for the peak-throughput search, in ms.
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    ttft_limit_ms: Option<f64>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Cost every system on one basis: `rent`, the published hourly rate; `owned`, the
    /// purchase over its life plus electricity [default: the rent where one is published,
    /// else the purchase].
    #[arg(long, value_enum)]
    cost: Option<CostBasisArg>,
}

/// The basis `--cost` names.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum CostBasisArg {
    Rent,
    Owned,
}

impl Workload {
    /// `cat`, with one basis of price where `--cost` names one.
    fn priced<'c>(&self, cat: &'c Catalog) -> std::borrow::Cow<'c, Catalog> {
        match self.cost {
            None => std::borrow::Cow::Borrowed(cat),
            Some(basis) => {
                let mut c = cat.clone();
                c.price_on(matches!(basis, CostBasisArg::Rent));
                std::borrow::Cow::Owned(c)
            }
        }
    }
}

/// A query's lengths and latency limits once the flags and the workload are read.
struct Resolved {
    isl: f64,
    osl: f64,
    osl_cv: f64,
    tpot_limit: Option<f64>,
    ttft_limit: Option<f64>,
}

impl Workload {
    /// The model a command runs: the one `--model` gives, else the workload's, else none.
    fn model(&self, cat: &Catalog, given: Option<&String>) -> Result<Option<String>> {
        Ok(match (given, &self.workload) {
            (Some(m), _) => Some(m.clone()),
            (None, Some(id)) => Some(cat.workload(id).map_err(usage)?.model.clone()),
            (None, None) => None,
        })
    }

    fn check(&self) -> Result<()> {
        // Bounds far beyond any deployment keep every figure finite.
        const MOST: f64 = 1e9;
        if !(1.0..=MOST).contains(&self.concurrency) {
            return Err(usage("--concurrency must be from 1 to 1,000,000,000"));
        }
        if [self.isl, self.osl]
            .into_iter()
            .flatten()
            .any(|v| !(1.0..=MOST).contains(&v))
        {
            return Err(usage(
                "--isl and --osl must be from 1 to 1,000,000,000 tokens",
            ));
        }
        for (flag, v) in [
            ("--tpot-limit-ms", self.tpot_limit_ms),
            ("--ttft-limit-ms", self.ttft_limit_ms),
        ] {
            if v.is_some_and(|v| !(v > 0.0 && v.is_finite())) {
                return Err(usage(format!("{flag} must be a finite number above 0")));
            }
        }
        if self
            .osl_cv
            .is_some_and(|v| !switchyard_catalog::OSL_CV_RANGE.contains(&v))
        {
            return Err(usage(format!(
                "--osl-cv must be from 0 to {}",
                switchyard_catalog::OSL_CV_RANGE.end()
            )));
        }
        if self.draft_len.is_some() && self.speculative.is_none() {
            return Err(usage(
                "--draft-len sets speculative decoding's drafts: give --speculative RATE with it",
            ));
        }
        if let Some(a) = self.speculative {
            if !(0.0..1.0).contains(&a) {
                return Err(usage(
                    "--speculative takes an acceptance rate from 0 to below 1, e.g. 0.8",
                ));
            }
            if self.draft_len == Some(0) {
                return Err(usage(
                    "--draft-len must be at least 1: a cycle that drafts nothing is not speculative decoding",
                ));
            }
            if self.draft_len.is_some_and(|k| k > MAX_DRAFT_LEN) {
                return Err(usage(format!(
                    "--draft-len takes at most {MAX_DRAFT_LEN} tokens a cycle: drafts past the first rejection are wasted, and at an acceptance rate below 1 a cycle rarely keeps more than a handful"
                )));
            }
        }
        Ok(())
    }

    /// Prompt and output lengths and the TPOT and TTFT limits in seconds for `model`: the
    /// flags where given, else the workload's, else the defaults.
    fn resolve(&self, cat: &Catalog, p: &Params, model: &str) -> Result<Resolved> {
        let w = match &self.workload {
            None => None,
            Some(id) => Some(cat.workload(id).map_err(usage)?),
        };
        // The model may be given by an alias or a published name; compare catalog ids.
        let model = cat.model(model).map_or(model, |m| m.id.as_str());
        if let Some(w) = w.filter(|w| w.model != model) {
            return Err(usage(format!(
                "workload `{}` runs `{}`, not `{model}`: pass --model {} or leave out --workload",
                w.id, w.model, w.model
            )));
        }
        // The parameters' default lengths (1,024 and 512 unless a `--params` file says).
        let isl = self
            .isl
            .or(w.and_then(|w| w.isl))
            .unwrap_or(f64::from(p.default_isl));
        let osl = self
            .osl
            .or(w.and_then(|w| w.osl))
            .unwrap_or(f64::from(p.default_osl));
        let osl_cv = self.osl_cv.or(w.and_then(|w| w.osl_cv)).unwrap_or(0.0);
        // The limits the workload's server scenario states, as the means they stand for; a
        // workload that states none (a user's, of lengths only) imposes none.
        let (tpot, ttft) = match w {
            Some(w) => {
                let (tpot, ttft) =
                    validate::scenario_limits(Some(w), validate::Scenario::Server, p);
                (w.server_tpot_ms.map(|_| tpot), ttft)
            }
            None => (None, None),
        };
        Ok(Resolved {
            isl,
            osl,
            osl_cv,
            tpot_limit: self.tpot_limit_ms.map(|ms| ms / 1000.0).or(tpot),
            ttft_limit: self.ttft_limit_ms.map(|ms| ms / 1000.0).or(ttft),
        })
    }

    fn query<'a>(
        &self,
        cat: &'a Catalog,
        p: &Params,
        model: &str,
        hardware: &str,
    ) -> Result<Query<'a>> {
        let Resolved {
            isl,
            osl,
            osl_cv,
            tpot_limit,
            ttft_limit,
        } = self.resolve(cat, p, model)?;
        Ok(Query {
            model: cat.model(model).map_err(usage)?,
            system: cat.system(hardware).map_err(usage)?,
            chips: None,
            // A model named with its number format (`…-FP8`) is that checkpoint.
            precision: self.precision.or(Precision::in_model_name(model)),
            // A weight scheme names no format for a cache: one line saying so.
            kv_precision: self
                .kv_precision
                .map(|kv| kv.for_kv().map_err(usage))
                .transpose()?,
            layout: None,
            concurrency: self.concurrency,
            isl,
            osl,
            osl_cv,
            speculative: self.speculative.map(|a| {
                Speculative::from_acceptance(
                    a,
                    self.draft_len.unwrap_or(4),
                    p.spec_draft_token_cost,
                )
            }),
            tpot_limit,
            ttft_limit,
        })
    }
}

/// `switchyard estimate`.
#[derive(Debug, Args)]
pub struct EstimateArgs {
    /// Model id (see `switchyard catalog models`) [default: the workload's model].
    #[arg(long, required_unless_present = "workload")]
    model: Option<String>,
    /// System id (see `switchyard catalog systems`).
    #[arg(long)]
    hardware: String,
    /// Chips (wafers for wafer-scale systems), 1 to 65,536; default: the fewest that fit, on
    /// GPUs in whole nodes of up to 8. A count no layout fills well may leave some idle,
    /// where fewer serve a user faster (said as `idle`).
    #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=i64::from(switchyard_perf::MAX_CHIPS)))]
    chips: Option<u32>,
    /// Layout, e.g. tp8, pp4, tp4-pp2, or ep8 for a mixture of experts (default: the best
    /// tp/pp split for per-user speed).
    #[arg(long)]
    layout: Option<String>,
    /// Print the throughput-interactivity frontier instead: over every layout of the chips
    /// (or the one given) and every load, the points that no other beats on both per-user
    /// speed and throughput, within the latency limits.
    #[arg(long, conflicts_with = "concurrency")]
    frontier: bool,
    /// Split the chips into a prefill pool and a decode pool (disaggregated serving) for the
    /// most requests per second within the latency limits, and show it beside the
    /// aggregated peak on the same chips.
    #[arg(long, conflicts_with_all = ["concurrency", "frontier"])]
    disagg: bool,
    #[command(flatten)]
    workload: Workload,
}

fn perf_err(e: PerfError) -> anyhow::Error {
    usage(e)
}

/// Runs `estimate`.
pub fn estimate(cat: &Catalog, p: &Params, a: &EstimateArgs) -> Result<()> {
    a.workload.check()?;
    let priced = a.workload.priced(cat);
    let cat: &Catalog = &priced;
    // Clap asks for one or the other.
    let model = a
        .workload
        .model(cat, a.model.as_ref())?
        .ok_or_else(|| usage("give --model, or a --workload that names one"))?;
    let mut q = a.workload.query(cat, p, &model, &a.hardware)?;
    q.chips = a.chips;
    q.layout = match &a.layout {
        Some(s) => Some(s.parse::<Layout>().map_err(usage)?),
        None => None,
    };
    if a.frontier {
        let f = switchyard_perf::frontier(&q, p).map_err(perf_err)?;
        if a.workload.json {
            // What the text's heading says, beside the points.
            let mut v = serde_json::to_value(&f)?;
            v["model"] = q.model.id.clone().into();
            v["system"] = q.system.id.clone().into();
            v["isl"] = q.isl.into();
            v["osl"] = q.osl.into();
            v["tpot_limit_s"] = q.tpot_limit.into();
            v["ttft_limit_s"] = q.ttft_limit.into();
            out!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            out!("{}", render_frontier(&f, &q).trim_end());
        }
        return Ok(());
    }
    if a.disagg {
        let split = switchyard_perf::disaggregated(&q, p).map_err(perf_err)?;
        // Aggregated serving on the same chips as the split, which may be more than the
        // default when the default holds fewer than two replicas.
        let same = Query {
            chips: split.map(|d| d.chips).or(q.chips),
            ..q.clone()
        };
        let agg = switchyard_perf::estimate(&same, p, Objective::Peak).map_err(perf_err)?;
        if a.workload.json {
            let v = serde_json::json!({ "disaggregated": split, "aggregated": agg });
            out!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            out!("{}", render_disagg(split.as_ref(), &agg, &q).trim_end());
        }
        return Ok(());
    }
    let e = switchyard_perf::estimate(&q, p, Objective::Latency).map_err(perf_err)?;
    let busier = busier(&q, p, &e);
    if a.workload.json {
        let mut v = serde_json::to_value(&e)?;
        if let Some(b) = &busier {
            v["busiest_layout"] = busiest_json(b);
        }
        no_second_token(&mut v, q.osl);
        out!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        out!("{}", render_estimate(&e, &q).trim_end());
        if let Some(b) = busier {
            // A request of one output token has no TPOT; its wait is the TTFT.
            let (what, ms) = if q.osl <= 1.0 {
                ("TTFT", b.peak.ttft_s)
            } else {
                ("TPOT", b.peak.tpot_s)
            };
            out!(
                "  busiest layout  {} carries {:.0} tok/s at its peak on the same chips ({what} {:.1} ms): --layout {} for its figures",
                b.layout,
                b.peak.throughput_tok_s,
                ms * 1000.0,
                b.layout
            );
        }
    }
    Ok(())
}

/// A JSON estimate of requests of one output token (`osl` at most 1) shows no time per
/// output token and no speed after the first token, as the text does: `null`, and no
/// parts. A figure there would be the prompt's time over a token that never comes.
fn no_second_token(v: &mut serde_json::Value, osl: f64) {
    if osl > 1.0 {
        return;
    }
    for op in ["at", "peak"] {
        for field in ["tpot_s", "user_tok_s"] {
            if let Some(x) = v[op].get_mut(field) {
                *x = serde_json::Value::Null;
            }
            if let Some(x) = v["busiest_layout"]["peak"].get_mut(field) {
                *x = serde_json::Value::Null;
            }
        }
    }
    if let Some(parts) = v.get_mut("at_parts") {
        *parts = serde_json::Value::Array(Vec::new());
    }
}

/// The `busiest_layout` of a JSON estimate: the layout that carries more, at its peak.
fn busiest_json(b: &Estimate) -> serde_json::Value {
    serde_json::json!({
        "layout": b.layout, "peak": b.peak, "peak_meets_limits": b.peak_meets_limits,
        "peak_economics": b.peak_economics,
    })
}

/// The layout chosen for `e` is the fastest for one user; where another layout of the same
/// chips carries clearly more (5%) at its peak, within the same limits, that one's estimate.
fn busier(q: &Query<'_>, p: &Params, e: &Estimate) -> Option<Estimate> {
    if q.layout.is_some() {
        return None;
    }
    switchyard_perf::estimate(
        &Query {
            chips: Some(e.chips),
            ..q.clone()
        },
        p,
        Objective::Peak,
    )
    .ok()
    .filter(|b| {
        b.layout != e.layout
            && b.peak_meets_limits
            && b.peak.throughput_tok_s > e.peak.throughput_tok_s * 1.05
    })
}

/// A rate with the decimals its size needs, so that an LPU rack's 0.34 tok/s a chip or a
/// long prompt's few tokens a second do not print as 0: whole above 100, else three
/// significant figures.
fn figures(v: f64) -> String {
    let digits = if v >= 100.0 || v == 0.0 {
        0
    } else {
        // 2 below 10, 1 below 100, more for smaller values.
        (2.0 - v.log10().floor()).clamp(0.0, 9.0) as usize
    };
    format!("{v:.digits$}")
}

/// A count that may be a mean: whole as a whole number (`1`, not `1.00`), else to three
/// significant figures.
fn count(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        figures(v)
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "n/a".to_string(), |x| format!("{x:.digits$}"))
}

/// A cost with the basis it rests on (`1.904 rent`), so that rented and owned systems side
/// by side are not read as the same kind of figure.
fn cost(e: &switchyard_perf::Economics) -> String {
    match (e.usd_per_mtok, e.cost_basis) {
        (Some(c), Some(b)) => format!("{c:.3} {}", b.name()),
        (c, _) => opt(c, 3),
    }
}

/// The wider format `system` multiplies weights of `precision` in, where the catalog gives
/// it no rate for that format itself (FP4 weights on an H100 multiply in FP8); `None` where
/// it gives one, where the format's name says what it multiplies in (`w4a8`, weight-only
/// `w4a16`), or for FP16, which tensor units multiply at the BF16 rate.
fn widened(system: &switchyard_perf::System, precision: Precision) -> Option<Precision> {
    if precision.weight_only() || matches!(precision, Precision::W4a8 | Precision::Fp16) {
        return None;
    }
    system
        .flops(precision)
        .map(|(_, native)| native)
        .filter(|&n| n != precision)
}

/// Speculative decoding in words: what a step verifies and what it yields.
fn speculation(spec: &Speculative) -> String {
    format!(
        "{} drafted tokens verified a step, {:.2} tokens a step on average (drafting costs {:.0}% of a step)",
        spec.verified - 1.0,
        spec.tokens_per_step,
        spec.draft_cost * 100.0
    )
}

fn render_estimate(e: &Estimate, q: &Query<'_>) -> String {
    let unit = unit_name(q.system.kind, 1);
    let m = &e.memory;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} on {} x {} ({}), layout {}",
        e.model, e.chips, e.system, q.system.system, e.layout
    );
    if let Some(spec) = e.speculative {
        let _ = writeln!(s, "speculative     {}", speculation(&spec));
    }
    if e.idle_chips > 0 {
        let given = e.chips + e.idle_chips;
        let _ = writeln!(
            s,
            "idle            {} of the {given} {} given: no layout of all {given} serves a user faster",
            e.idle_chips,
            unit_name(q.system.kind, given)
        );
    }
    let _ = writeln!(
        s,
        "precision       {} weights{}, {} KV cache",
        e.precision,
        widened(q.system, e.precision).map_or_else(String::new, |n| format!(
            " (multiplied in {}: the catalog gives {} no {} rate)",
            n.name(),
            q.system.id,
            e.precision.name()
        )),
        e.kv_precision
    );
    let _ = writeln!(
        s,
        "memory per {unit}  weights {:.1} GB + workspace {:.1} GB of {:.1} GB usable; KV room {:.1} GB",
        m.weights_per_chip / 1e9 - m.spilled_per_chip / 1e9,
        m.activations_per_chip / 1e9,
        m.usable_per_chip / 1e9,
        m.kv_free_per_chip / 1e9
    );
    if m.spilled_per_chip > 0.0 {
        let _ = writeln!(
            s,
            "capacity tier   weights {:.1} GB per {unit} beyond main memory, streamed from it every step",
            m.spilled_per_chip / 1e9
        );
    }
    // With local layers a sequence past the window holds fewer than its tokens' worth.
    let window = match q.model.sliding_window {
        Some(w) if q.model.global_layers() < f64::from(q.model.layers) => {
            format!(" (tokens of every layer; local layers keep at most {w})")
        }
        _ => String::new(),
    };
    let batched = if e.max_concurrency_per_replica > e.batch_limit_per_replica {
        format!(
            ", of which the engine batches at most {:.0}",
            e.batch_limit_per_replica
        )
    } else {
        String::new()
    };
    // Spread outputs past cv 1 leave the sequences caught decoding holding more than a
    // request of mean lengths; the count is of those.
    let noun = if e.max_concurrency_per_replica == 1.0 {
        "request"
    } else {
        "requests"
    };
    let held = if e.kv_tokens_per_request > q.isl + q.osl {
        format!(
            "{noun} holding {:.0} tokens on average (outputs spread, cv {})",
            e.kv_tokens_per_request, q.osl_cv
        )
    } else {
        format!("{noun} of {}+{} tokens", q.isl, q.osl)
    };
    let _ = writeln!(
        s,
        "KV capacity     {:.0} tokens per replica{window}; {:.0} {held}{batched}",
        e.kv_tokens_per_replica, e.max_concurrency_per_replica
    );
    if e.beyond_context {
        let _ = writeln!(
            s,
            "note            {}+{} tokens exceed {}'s {}-token context: served only with its positions extended (RoPE scaling)",
            q.isl, q.osl, q.model.id, q.model.max_context
        );
    }
    let spread = if q.osl_cv > 0.0 {
        format!(", osl cv {}", q.osl_cv)
    } else {
        String::new()
    };
    let _ = writeln!(
        s,
        "at concurrency {} (isl {}, osl {}{spread}):",
        e.at.concurrency, q.isl, q.osl
    );
    let _ = writeln!(s, "  TTFT            {:.3} s", e.at.ttft_s);
    // Requests beyond what the replicas hold wait for a place; their wait is in the TTFT.
    let running = e.at.running;
    if running < e.at.concurrency - 0.5 {
        let _ = writeln!(
            s,
            "  waiting         {:.0} of the {:.0} requests wait for a place (each replica runs at most {:.0}); the wait is in the TTFT",
            e.at.concurrency - running,
            e.at.concurrency,
            running / f64::from(e.layout.dp)
        );
    }
    // A request of one output token has no token after its first: no TPOT to tell.
    let one_token = q.osl <= 1.0;
    if one_token {
        let _ = writeln!(
            s,
            "  per-user speed  - (one output token: its time is the TTFT, with no token after it)"
        );
    } else {
        let _ = writeln!(
            s,
            "  per-user speed  {:.1} tok/s (TPOT {:.2} ms, bound by {})",
            e.at.user_tok_s,
            e.at.tpot_s * 1000.0,
            e.at.bound.name()
        );
        // Where the TPOT goes, largest first, each part in ms; parts under 5 us are left
        // to JSON.
        let mut parts: Vec<_> = e
            .at_parts
            .iter()
            .filter(|x| x.seconds >= 5e-6)
            .copied()
            .collect();
        parts.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        let _ = writeln!(
            s,
            "  TPOT parts      {}",
            parts
                .iter()
                .map(|x| format!("{} {:.2} ms", x.part, x.seconds * 1000.0))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    let _ = writeln!(s, "  throughput      {:.1} tok/s", e.at.throughput_tok_s);
    let _ = writeln!(
        s,
        "  energy          {} J/token",
        opt(e.at_economics.joules_per_token, 3)
    );
    let _ = writeln!(
        s,
        "  cost            ${} per million tokens",
        cost(&e.at_economics)
    );
    let _ = writeln!(
        s,
        "peak throughput  {} tok/s at concurrency {} ({}TTFT {:.3} s, {} J/token, ${} per million tokens)",
        figures(e.peak.throughput_tok_s),
        count(e.peak.concurrency),
        if one_token {
            String::new()
        } else {
            format!("TPOT {:.1} ms, ", e.peak.tpot_s * 1000.0)
        },
        e.peak.ttft_s,
        opt(e.peak_economics.joules_per_token, 3),
        cost(&e.peak_economics)
    );
    if let Some(l) = limits_text(q.tpot_limit, q.ttft_limit) {
        if e.peak_meets_limits {
            let _ = writeln!(s, "  within          {l}");
        } else {
            // The limits the lightest load misses, not those it meets.
            let tpot = q.tpot_limit.filter(|&t| e.peak.tpot_s > t);
            let ttft = q.ttft_limit.filter(|&t| e.peak.ttft_s > t);
            let missed = limits_text(tpot, ttft).unwrap_or(l);
            let _ = writeln!(
                s,
                "  limits not met  even the lightest load tried misses {missed}"
            );
        }
    }
    s
}

fn render_frontier(f: &Frontier, q: &Query<'_>) -> String {
    let mut s = String::new();
    let (chips, points) = (f.chips, &f.points);
    let _ = writeln!(
        s,
        "{} on {} x {}, {} in / {} out tokens: the throughput-interactivity frontier",
        q.model.id, chips, q.system.id, q.isl, q.osl
    );
    if let Some(l) = limits_text(q.tpot_limit, q.ttft_limit) {
        let _ = writeln!(s, "within {l}");
    }
    if points.is_empty() {
        let _ = writeln!(s, "no layout and load meets the limits");
        return s;
    }
    let _ = writeln!(
        s,
        "{:<15} {:>11} {:>10} {:>9} {:>9} {:>11} {:>10} {:<14} {:>9} {:>14}",
        "layout",
        "concurrency",
        "tok/s/user",
        "TPOT ms",
        "TTFT ms",
        "tok/s",
        "tok/s/chip",
        "bound",
        "J/token",
        "$/Mtok"
    );
    for f in points {
        let _ = writeln!(
            s,
            "{:<15} {:>11} {:>10.1} {:>9.2} {:>9.1} {:>11.0} {:>10.1} {:<14} {:>9} {:>14}",
            f.layout.to_string(),
            figures(f.op.concurrency),
            f.op.user_tok_s,
            f.op.tpot_s * 1000.0,
            f.op.ttft_s * 1000.0,
            f.op.throughput_tok_s,
            f.throughput_per_chip,
            f.op.bound.name(),
            opt(f.economics.joules_per_token, 3),
            cost(&f.economics)
        );
    }
    let _ = writeln!(
        s,
        "each row: a layout at a load that no other beats on both tok/s/user and tok/s; J/token and $/Mtok with the chips busy that load's share of the layout's peak"
    );
    if q.layout.is_none()
        && q.model.is_moe()
        && q.system.kind == switchyard_catalog::SystemKind::Gpu
    {
        // Offer only expert-parallel layouts these chips can host.
        let precision = q.precision.unwrap_or_else(|| q.model.default_precision());
        let hosts = |l: &str| {
            l.parse::<Layout>().is_ok_and(|l| {
                l.ep > 1
                    && switchyard_perf::Deployment::new(q.model, q.system, l, precision).is_ok()
            })
        };
        let offer: Vec<String> = [format!("ep{chips}"), format!("tp2-ep{}", chips / 2)]
            .into_iter()
            .filter(|l| hosts(l))
            .map(|l| format!("--layout {l}"))
            .collect();
        let how = if offer.is_empty() {
            format!("no expert-parallel layout of {chips} chips spreads its experts evenly")
        } else {
            format!("for expert parallelism give {}", offer.join(" or "))
        };
        let _ = writeln!(s, "layouts searched: tensor and pipeline parallel; {how}");
    }
    s
}

fn render_disagg(split: Option<&Disaggregated>, agg: &Estimate, q: &Query<'_>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} on {} x {}, {} in / {} out tokens: prefill and decode on separate replicas",
        q.model.id, agg.chips, q.system.id, q.isl, q.osl
    );
    if let Some(l) = limits_text(q.tpot_limit, q.ttft_limit) {
        let _ = writeln!(s, "within {l}");
    }
    match split {
        None => {
            let _ = writeln!(
                s,
                "no split into prefill and decode replicas meets the limits"
            );
        }
        Some(d) => {
            let chips = |l: &Layout, n: u32| {
                let k = l.replica_chips() * n;
                format!("{k} {}", unit_name(q.system.kind, k))
            };
            let _ = writeln!(
                s,
                "prefill      {} x {} ({}), {:.0} prompt{} a pass of {:.1} ms, {:.0}% busy",
                d.prefill.replicas,
                d.prefill.layout,
                chips(&d.prefill.layout, d.prefill.replicas),
                d.prefill.batch,
                if d.prefill.batch > 1.0 { "s" } else { "" },
                d.prefill.pass_s * 1000.0,
                d.prefill.busy * 100.0
            );
            let _ = writeln!(
                s,
                "decode       {} x {} ({}), {} requests each",
                d.decode.replicas,
                d.decode.layout,
                chips(&d.decode.layout, d.decode.replicas),
                figures(d.decode.concurrency)
            );
            let _ = writeln!(
                s,
                "KV transfer  {:.2} ms a request",
                d.kv_transfer_s * 1000.0
            );
            let _ = writeln!(
                s,
                "TTFT {:.3} s, TPOT {:.2} ms ({:.1} tok/s per user)",
                d.ttft_s,
                d.tpot_s * 1000.0,
                d.user_tok_s
            );
            let _ = writeln!(
                s,
                "throughput   {:.0} tok/s ({:.1} per {}, {:.2} requests/s; {} of {} {} used)",
                d.throughput_tok_s,
                d.throughput_per_chip,
                unit_name(q.system.kind, 1),
                d.requests_per_s,
                d.chips_used,
                d.chips,
                unit_name(q.system.kind, d.chips)
            );
            let _ = writeln!(
                s,
                "energy       {} J/token; cost ${} per million tokens",
                opt(d.economics.joules_per_token, 3),
                cost(&d.economics)
            );
            let _ = writeln!(
                s,
                "set by       {}",
                if d.prefill_bound {
                    "the prefill pool: its prompts queue for whole passes, which the TTFT limit (or a 90% ceiling) holds it to; the decode pool runs lighter"
                } else {
                    "the decode pool, at the most requests its KV cache, batch limit and the TPOT limit allow"
                }
            );
        }
    }
    let verdict = if agg.peak_meets_limits {
        ""
    } else {
        " (misses the limits)"
    };
    let _ = writeln!(
        s,
        "aggregated   {:.0} tok/s ({:.1} per {}) at {}, TTFT {:.3} s, TPOT {:.2} ms, {} J/token, ${} per million tokens{verdict}",
        agg.peak.throughput_tok_s,
        agg.peak.throughput_tok_s / f64::from(agg.chips),
        unit_name(q.system.kind, 1),
        agg.layout,
        agg.peak.ttft_s,
        agg.peak.tpot_s * 1000.0,
        opt(agg.peak_economics.joules_per_token, 3),
        cost(&agg.peak_economics)
    );
    s
}

/// A chip's measured matrix rates by precision with their shares of the datasheet peak,
/// `1382 TFLOP/s at fp8 (0.70 of peak)`.
fn gemm_text(s: &switchyard_catalog::System, t: &switchyard_catalog::DenseTflops) -> String {
    let parts: Vec<String> = t
        .entries()
        .map(|(p, v)| {
            let (unit, name) = match p {
                Precision::Bf16 | Precision::Fp16 => ("TFLOP/s", "16-bit".to_string()),
                Precision::Int8 | Precision::Int4 => ("TOP/s", p.to_string()),
                _ => ("TFLOP/s", p.to_string()),
            };
            let share = s
                .gemm_fraction(p)
                .map_or(String::new(), |f| format!(" ({f:.2} of peak)"));
            format!("{v:.0} {unit} at {name}{share}")
        })
        .collect();
    if parts.is_empty() {
        "n/a".into()
    } else {
        parts.join(", ")
    }
}

/// The limits on mean TPOT and TTFT as one phrase, when there are any.
fn limits_text(tpot_limit: Option<f64>, ttft_limit: Option<f64>) -> Option<String> {
    // A limit below the usual decimals keeps three figures: 0.001 ms is not 0.0 ms.
    let fixed = |v: f64, decimals: usize| {
        if v >= 10f64.powi(-(decimals as i32)) {
            format!("{v:.decimals$}")
        } else {
            figures(v)
        }
    };
    let parts: Vec<String> = [
        tpot_limit.map(|l| format!("TPOT {} ms", fixed(l * 1000.0, 1))),
        ttft_limit.map(|l| format!("TTFT {} s", fixed(l, 3))),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!parts.is_empty()).then(|| format!("{} (means)", parts.join(", ")))
}

/// `switchyard compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Model id [default: the workload's model, else llama-3.1-70b].
    #[arg(long)]
    model: Option<String>,
    /// Only these systems (comma-separated ids); default: every system in the catalog.
    #[arg(long, value_delimiter = ',')]
    hardware: Vec<String>,
    #[command(flatten)]
    workload: Workload,
}

/// Runs `compare`.
pub fn compare(cat: &Catalog, p: &Params, a: &CompareArgs) -> Result<()> {
    a.workload.check()?;
    let priced = a.workload.priced(cat);
    let cat: &Catalog = &priced;
    let model = a
        .workload
        .model(cat, a.model.as_ref())?
        .unwrap_or_else(|| "llama-3.1-70b".to_string());
    let context = cat.model(&model).map_err(usage)?.max_context;
    // Systems by their catalog ids, each once however it was spelled; an unknown one keeps
    // its spelling for its error.
    let mut ids: Vec<String> = Vec::new();
    let asked = if a.hardware.is_empty() {
        cat.systems().iter().map(|s| s.id.clone()).collect()
    } else {
        a.hardware.clone()
    };
    for h in asked {
        let id = cat.system(&h).map_or(h, |s| s.id.clone());
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    // Each system's fastest layout for a user, and the layout of the same chips that carries
    // clearly more at its peak where there is one: the peak columns are the busier's, as a
    // fleet would run the chips for throughput.
    let mut rows = Vec::new();
    // The requests' output length, which every system's query shares.
    let mut osl = 0.0;
    for id in &ids {
        let q = a.workload.query(cat, p, &model, id)?;
        osl = q.osl;
        let e = switchyard_perf::estimate(&q, p, Objective::Latency);
        let busy = e.as_ref().ok().and_then(|e| busier(&q, p, e));
        rows.push((id.clone(), e.map(|e| (e, busy))));
    }
    // Nothing to compare: the one line says why for each system asked.
    if rows.iter().all(|(_, r)| r.is_err()) {
        let why: Vec<String> = rows
            .iter()
            .filter_map(|(id, r)| r.as_ref().err().map(|e| format!("{id}: {e}")))
            .collect();
        return Err(usage(format!(
            "{model} runs on none of the systems asked ({})",
            why.join("; ")
        )));
    }
    if a.workload.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(id, r)| match r {
                Ok((e, busy)) => {
                    let mut v = serde_json::to_value(e).unwrap_or_default();
                    if let Some(b) = busy {
                        v["busiest_layout"] = busiest_json(b);
                    }
                    no_second_token(&mut v, osl);
                    v
                }
                Err(err) => serde_json::json!({ "system": id, "error": err.to_string() }),
            })
            .collect();
        out!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let Resolved {
        isl,
        osl,
        tpot_limit,
        ttft_limit,
        ..
    } = a.workload.resolve(cat, p, &model)?;
    out!(
        "{} at concurrency {}, {isl} in / {osl} out tokens; each system at its fastest layout on the fewest chips that fit (GPUs in whole nodes)",
        model, a.workload.concurrency
    );
    // Every system's query asks the same speculation: the first estimate says which.
    if let Some(spec) = rows
        .iter()
        .find_map(|(_, r)| r.as_ref().ok().and_then(|(e, _)| e.speculative))
    {
        out!(
            "speculative decoding on every system: {}",
            speculation(&spec)
        );
    }
    if isl + osl > context as f64 {
        out!(
            "note: {isl}+{osl} tokens exceed {model}'s {context}-token context: served only with its positions extended (RoPE scaling)"
        );
    }
    out!(
        "{:<10} {:>6} {:<14} {:>5} {:>9}  {:>10} {:<13} {:<14} {:>11} {:>8} {:>10} {:>9} {:>13}",
        "system",
        "chips",
        "layout",
        "prec",
        "TTFT ms",
        "tok/s/user",
        "bound",
        "peak layout",
        "peak tok/s",
        "at load",
        "peak/chip",
        "J/token",
        "$/Mtok"
    );
    let (mut missed, mut queued, mut wide, mut full) = (false, false, false, false);
    for (id, r) in rows {
        match r {
            Ok((e, busy)) => {
                let top = busy.as_ref().unwrap_or(&e);
                // A system no load of which meets the limits is shown at one request per
                // replica, marked, rather than passed off as within them.
                let mark = if top.peak_meets_limits { " " } else { "*" };
                missed |= !top.peak_meets_limits;
                // Chips sized for the model hold fewer requests than asked: the rest wait,
                // and their wait is in the TTFT, marked.
                let waits = e.at.running < e.at.concurrency * (1.0 - 1e-9);
                queued |= waits;
                // Weights in a format the chip has no units for multiply in a wider one.
                let widens = cat
                    .system(&id)
                    .is_ok_and(|sys| widened(sys, e.precision).is_some());
                wide |= widens;
                let prec = format!("{}{}", e.precision.name(), if widens { "^" } else { "" });
                // The requests in flight at the peak, marked where they are all the KV cache
                // holds: chips sized for the weights may leave it little room.
                let kv_most = top.max_concurrency_per_replica * f64::from(top.layout.dp);
                let kv_bound = top.max_concurrency_per_replica < top.batch_limit_per_replica
                    && top.peak.running >= kv_most * (1.0 - 1e-9);
                full |= kv_bound;
                let load = format!(
                    "{}{}",
                    figures(top.peak.concurrency),
                    if kv_bound { " kv" } else { "" }
                );
                out!(
                    "{:<10} {:>6} {:<14} {:>5} {:>9.1}{} {:>10.1} {:<13} {:<14} {:>10.0}{mark} {:>8} {:>10} {:>9} {:>13}",
                    id,
                    e.chips,
                    e.layout.to_string(),
                    prec,
                    e.at.ttft_s * 1000.0,
                    if waits { "+" } else { " " },
                    e.at.user_tok_s,
                    e.at.bound.name(),
                    top.layout.to_string(),
                    top.peak.throughput_tok_s,
                    load,
                    figures(top.peak.throughput_tok_s / f64::from(e.chips)),
                    opt(top.peak_economics.joules_per_token, 3),
                    cost(&top.peak_economics)
                );
            }
            Err(err) => out!("{id:<10} -- {err}"),
        }
    }
    let limits = limits_text(tpot_limit, ttft_limit);
    let within = limits
        .as_ref()
        .map_or(String::new(), |l| format!(" within {l}"));
    out!("peak = highest throughput the KV cache and the engine's batch limit allow{within}, at the layout of the same chips that carries the most where it carries over 5% more than the fastest; J/token and $/Mtok at peak, facility power (PUE {})", p.pue);
    if missed {
        out!(
            "* no load meets {}: the peak shown is the lightest load tried",
            limits.unwrap_or_default()
        );
    }
    if full {
        out!("kv: the peak is at the most requests the KV cache holds: the fewest chips that fit the weights may leave it little room, and more chips may carry more per chip (`estimate --chips`)");
    }
    if wide {
        out!("^ the catalog gives the chip no rate for this format: its weights multiply in a wider one (estimate names it)");
    }
    if queued {
        out!("+ the KV cache of these chips holds fewer requests than the concurrency: the rest wait, and the TTFT counts the wait (`estimate --chips` sizes a system for them)");
    }
    out!(
        "$/Mtok: rent = the published hourly rate per chip (power included); owned = purchase price over the system's life ({} years where the catalog gives none) plus electricity at ${}/kWh{}",
        p.life_years,
        p.usd_per_kwh,
        match a.workload.cost {
            None => "; --cost rent or --cost owned costs every system alike",
            Some(_) => "",
        }
    );
    Ok(())
}

/// `switchyard validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// A CSV in the columns of reference/points.csv (default: the built-in copy).
    #[arg(long, value_name = "FILE")]
    points: Option<std::path::PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// A points file by path, or the built-in copy of `reference/points.csv`: its name for
/// reports and its rows.
fn read_points(path: Option<&Path>) -> Result<(String, Vec<validate::Point>)> {
    let (name, text) = match path {
        Some(path) => (path.display().to_string(), read_text(path, Kind::Points)?),
        None => (
            "built-in reference/points.csv".to_string(),
            BUILTIN_POINTS.to_string(),
        ),
    };
    let rows = validate::parse_points(&text).map_err(|e| usage(format!("{name}: {e}")))?;
    if rows.is_empty() {
        return Err(usage(format!(
            "{name}: no rows under its header; add one measurement per line"
        )));
    }
    Ok((name, rows))
}

/// The calibrated parameters, or those of the user's file over them.
pub fn load_params(path: Option<&Path>) -> Result<Params> {
    match path {
        None => Ok(Params::default()),
        Some(path) => {
            let text = read_text(path, Kind::Settings)?;
            Params::from_toml(&text, &path.display().to_string()).map_err(usage)
        }
    }
}

/// `switchyard calibrate`.
#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// Measurements to fit to, in the columns of reference/points.csv (default: the
    /// built-in copy).
    #[arg(long, value_name = "FILE")]
    points: Option<std::path::PathBuf>,
    /// Measurements kept out of the fit, scored before and after it: whether the fit
    /// generalises.
    #[arg(long, value_name = "FILE")]
    check: Option<std::path::PathBuf>,
    /// Move only these parameters, comma-separated (default: every one a calibration may
    /// move; a wrong name lists them).
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Write the fitted parameters to this file, for --params.
    #[arg(long, value_name = "FILE")]
    out: Option<std::path::PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// A parameter's value in four significant figures, in the notation that reads best for its
/// size (efficiencies as decimals, latencies in seconds with an exponent).
fn short(v: f64) -> String {
    if v != 0.0 && v.abs() < 1e-2 {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}

/// A published or predicted figure to four significant digits, without trailing zeros.
/// A published or predicted value in `validate`'s table: four decimals, or in powers of ten
/// where that would run to more digits than a column holds.
fn cell(v: f64) -> String {
    if v == 0.0 || (1e-4..1e12).contains(&v.abs()) {
        format!("{v:.4}")
    } else {
        format!("{v:.4e}")
    }
}

fn figure(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return v.to_string();
    }
    // Past a trillion, or below a millionth, in powers of ten: 1e300 is not 301 digits.
    if !(1e-6..1e12).contains(&v.abs()) {
        return format!("{v:.3e}");
    }
    let decimals = (3 - v.abs().log10().floor() as i32).max(0) as usize;
    let text = format!("{v:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// A group's MAPE and rows, where it has rows.
type Scored = Option<(f64, usize)>;

/// One line per group either summary has and one overall, as `validate` ends: the label,
/// and the score before and after.
fn summary_lines(
    before: &validate::Summary,
    after: &validate::Summary,
) -> Vec<(String, Scored, Scored)> {
    let of = |s: &validate::Summary, g: Group| {
        s.groups
            .iter()
            .find(|(h, _, _)| *h == g)
            .map(|(_, m, n)| (*m, *n))
    };
    let mut v: Vec<_> = Group::ALL
        .iter()
        .filter_map(|g| {
            let (b, a) = (of(before, *g), of(after, *g));
            (b.is_some() || a.is_some()).then(|| (format!("group {}", g.name()), b, a))
        })
        .collect();
    v.push((
        "overall".to_string(),
        Some((before.mape, before.n)),
        Some((after.mape, after.n)),
    ));
    v
}

/// Whether two paths name one file (an `--out` that would overwrite an input).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Runs `calibrate`. `globals` are the files the global options read (`--catalog`,
/// `--params`), which `--out` may not overwrite either.
pub fn calibrate(
    cat: &Catalog,
    p: &Params,
    a: &CalibrateArgs,
    globals: Vec<(&str, &Path)>,
) -> Result<()> {
    if let Some(out) = &a.out {
        // Parameters are TOML; a `.csv` there is a measurements file named by mistake (the
        // built-in points' own copy in a checkout among them).
        if out
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        {
            return Err(usage(format!(
                "--out {} names a CSV file, where measurements live; the parameters are written as TOML (e.g. --out fitted.toml)",
                out.display()
            )));
        }
        let inputs = [
            ("--points", a.points.as_deref()),
            ("--check", a.check.as_deref()),
        ];
        if let Some((flag, _)) = inputs
            .into_iter()
            .filter_map(|(flag, input)| Some((flag, input?)))
            .chain(globals)
            .find(|(_, input)| same_file(out, input))
        {
            return Err(usage(format!(
                "--out {} is the {flag} file this run reads: writing the parameters there would replace it; name another file",
                out.display()
            )));
        }
    }
    let (name, rows) = read_points(a.points.as_deref())?;
    let knobs = switchyard_perf::calibrate::select(a.only.as_deref()).map_err(usage)?;
    // The held-out file is read and scored before the fit, so that one it cannot use is
    // refused before the search's minutes are spent.
    let held_out = match &a.check {
        None => None,
        Some(path) => {
            let (check_name, check_rows) = read_points(Some(path))?;
            // A row the fit sees checks nothing about rows it does not: the held-out score of
            // the fitted file itself would read as a perfect generalisation.
            let fitted: std::collections::HashSet<&str> =
                rows.iter().map(|r| r.id.as_str()).collect();
            let shared: Vec<&str> = check_rows
                .iter()
                .map(|r| r.id.as_str())
                .filter(|id| fitted.contains(id))
                .collect();
            if !shared.is_empty() {
                return Err(usage(format!(
                    "{check_name}: {} of its {} rows are also in {name}, which the fit sees ({}{}); a held-out check needs rows left out of the fit",
                    shared.len(),
                    check_rows.len(),
                    shared[..shared.len().min(3)].join(", "),
                    if shared.len() > 3 { ", ..." } else { "" }
                )));
            }
            let (_, before) = validate::run(cat, p, &check_rows);
            if before.n == 0 {
                return Err(usage(format!(
                    "{check_name}: none of its {} rows could be modelled, so it checks nothing (`switchyard validate --points {}` says why)",
                    before.skipped,
                    path.display()
                )));
            }
            Some((check_name, check_rows, before))
        }
    };
    let c = switchyard_perf::calibrate::calibrate(cat, p, &rows, &knobs)
        .map_err(|e| usage(format!("{name}: {e}")))?;
    let check = held_out.map(|(check_name, check_rows, before)| {
        let (_, after) = validate::run(cat, &c.params, &check_rows);
        (check_name, before, after)
    });
    let file = format!(
        "# Model parameters fitted by `switchyard calibrate` to {name}: {} rows{}, MAPE {:.1}% before, {:.1}% after.\n\
         # Parameters not named here keep their calibrated defaults. Use with --params.\n{}",
        c.after.n,
        match c.beyond.len() {
            0 => String::new(),
            k => format!(" ({k} beyond their hardware left out of the fit)"),
        },
        c.before.mape,
        c.after.mape,
        c.params.diff_toml(&Params::default())
    );
    if let Some(path) = &a.out {
        std::fs::write(path, &file).map_err(|e| usage(format!("{}: {e}", path.display())))?;
    }
    if a.json {
        let v = serde_json::json!({
            "points": name,
            "calibration": c,
            "check": check.as_ref().map(|(n, b, a)| serde_json::json!({"points": n, "before": b, "after": a})),
        });
        out!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    out!(
        "calibrated to {name}: {} rows modelled, {} skipped, {} predictions of the set",
        c.after.n,
        c.after.skipped,
        c.evaluations
    );
    if !c.beyond.is_empty() {
        let ids: Vec<&str> = c.beyond.iter().map(|b| b.id.as_str()).collect();
        out!(
            "left out of the fit, beyond their hardware at its best (no efficiency or latency reaches them; `switchyard validate` gives the bounds): {}",
            ids.join(", ")
        );
    }
    if !c.inert.is_empty() {
        out!(
            "no prediction of these points depends on {}: left where it was",
            c.inert.join(", ")
        );
    }
    if c.moved.is_empty() && c.inert.len() == knobs.len() {
        // Said above: nothing could move.
    } else if c.moved.is_empty() {
        out!("no parameter moved: the starting values fit these points best");
    } else {
        out!("{:<24} {:>12} {:>12}", "parameter", "before", "after");
        for m in &c.moved {
            let end = m.at_end.map_or(String::new(), |e| {
                format!("  at the {e} of the range it may move in: the rows pull it further")
            });
            out!(
                "{:<24} {:>12} {:>12}{end}",
                m.name,
                short(m.from),
                short(m.to)
            );
        }
    }
    out!(
        "minimised: the groups' mean MAPE plus half the MAPE of all rows fitted to, {:.2} -> {:.2}",
        c.objective.0,
        c.objective.1
    );
    let mut scored = vec![(name.clone(), &c.before, &c.after)];
    if let Some((n, b, a)) = &check {
        scored.push((format!("{n} (held out)"), b, a));
    }
    for (n, before, after) in scored {
        out!("MAPE on {n}, before -> after:");
        let cell = |x: Scored| x.map_or("-".to_string(), |(m, n)| format!("{m:.1}% over {n}"));
        for (label, b, a) in summary_lines(before, after) {
            out!("  {label:<46} {:>16} -> {}", cell(b), cell(a));
        }
        if before.skipped > 0 {
            out!(
                "  {} rows skipped (`switchyard validate`, with `--points` and the file where one was given, lists them with the reasons)",
                before.skipped
            );
        }
        if after.n < before.n {
            out!(
                "  {} rows that were modelled before are skipped after",
                before.n - after.n
            );
        }
    }
    // A fit that predicts the rows it did not see worse than before has learned its own
    // rows' quirks (five rows set two efficiencies to 100% of peak and the held-out error rose
    // from 20.6% to 37.7%): said, since the file is written all the same.
    if let Some((n, b, a)) = &check {
        if a.n > 0 && b.n > 0 && a.mape > b.mape {
            out!(
                "note: the fit predicts {n} worse than before ({:.1}% -> {:.1}%): it follows {name}'s rows at the others' cost; fewer parameters (--only) or more rows may generalise better",
                b.mape,
                a.mape
            );
        }
    }
    match &a.out {
        Some(path) => out!(
            "wrote {} (use it with --params {})",
            path.display(),
            path.display()
        ),
        None => out!("\n{}", file.trim_end()),
    }
    Ok(())
}

/// Runs `validate`.
pub fn validate(cat: &Catalog, p: &Params, a: &ValidateArgs) -> Result<()> {
    let (name, rows) = read_points(a.points.as_deref())?;
    let (outcomes, summary) = validate::run(cat, p, &rows);
    let beyond = validate::beyond_hardware(cat, p, &rows, &outcomes);
    let floor = validate::floor(&outcomes, &summary, &beyond);
    if a.json {
        let mut past = vec![None; outcomes.len()];
        for b in &beyond {
            past[b.row] = Some(serde_json::json!({"bound": b.bound, "floor_pct": b.floor_pct}));
        }
        let mut v = serde_json::json!({
            "points": outcomes.iter().enumerate().map(|(i, o)| serde_json::json!({
                "id": o.id, "metric": o.metric, "group": o.group, "published": o.published,
                "predicted": o.predicted.as_ref().ok(), "skipped": o.predicted.as_ref().err(),
                "error_pct": o.error_pct(), "layout": o.layout,
                "limit": o.limit, "beyond_hardware": past[i],
            })).collect::<Vec<_>>(),
            "summary": summary,
            "floor": floor,
        });
        // No modelled row, no error to average: not a perfect 0%.
        if summary.n == 0 {
            v["summary"]["mape"] = serde_json::Value::Null;
        }
        out!("{}", serde_json::to_string_pretty(&v)?);
        if summary.n == 0 {
            return Err(usage(format!(
                "{name}: none of its {} rows could be modelled",
                summary.skipped
            )));
        }
        return Ok(());
    }
    out!(
        "{:<46} {:<27} {:>12} {:>12} {:>8}  {}",
        "id",
        "metric",
        "published",
        "predicted",
        "error%",
        "deployment"
    );
    for o in &outcomes {
        match &o.predicted {
            Ok(v) => out!(
                "{:<46} {:<27} {:>12} {:>12} {:>8}  {}",
                o.id,
                o.metric,
                cell(o.published),
                cell(*v),
                {
                    let e = o.error_pct().unwrap_or(0.0);
                    if e.abs() < 1e7 {
                        format!("{e:+.1}")
                    } else {
                        format!("{e:+.2e}")
                    }
                },
                o.layout
            ),
            Err(why) => out!(
                "{:<46} {:<27} {:>12} {:>12} {:>8}  skipped: {why}",
                o.id,
                o.metric,
                if o.published.is_finite() {
                    cell(o.published)
                } else {
                    "-".to_string()
                },
                "-",
                "-"
            ),
        }
    }
    for b in &beyond {
        let o = &outcomes[b.row];
        let (side, reach) = match o.limit {
            Some(validate::Limit::AtLeast) => ("below", "least its deployment takes"),
            _ => ("above", "most its deployment reaches"),
        };
        out!(
            "beyond the hardware: {} publishes {}, {side} {}, the {reach} at datasheet rates with no fixed latency: at least {:.1}% off",
            o.id,
            figure(o.published),
            figure(b.bound),
            b.floor_pct
        );
    }
    for (g, mape, n) in &summary.groups {
        let reach =
            floor
                .groups
                .iter()
                .find(|(h, _, _)| h == g)
                .map_or(String::new(), |(_, f, k)| {
                    format!(
                        " ({f:.1} points of it from {k} row{} beyond the hardware)",
                        if *k == 1 { "" } else { "s" }
                    )
                });
        out!(
            "group {:<40} MAPE {:.1}% over {} points{reach}",
            Group::name(*g),
            mape,
            n
        );
    }
    // Per kind of source, where the file has more than one kind.
    if summary.sources.len() > 1 {
        for (kind, mape, n) in &summary.sources {
            out!("source {kind:<39} MAPE {mape:.1}% over {n} points");
        }
    }
    // Per system, where the file has more than one.
    if summary.systems.len() > 1 {
        for (system, mape, n) in &summary.systems {
            out!("system {system:<39} MAPE {mape:.1}% over {n} points");
        }
    }
    if summary.n == 0 {
        return Err(usage(format!(
            "{name}: none of its {} rows could be modelled, so there is no MAPE to give",
            summary.skipped
        )));
    }
    if !beyond.is_empty() {
        out!(
            "beyond the hardware: {} row{}, {:.1} of the {:.1} MAPE points, which no efficiency or latency can remove",
            beyond.len(),
            if beyond.len() == 1 { "" } else { "s" },
            floor.mape,
            summary.mape
        );
    }
    out!(
        "MAPE {:.1}% over {} points, {} skipped",
        summary.mape,
        summary.n,
        summary.skipped
    );
    Ok(())
}

/// What `catalog` lists.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Listing {
    /// Systems.
    Systems,
    /// Models.
    Models,
    /// Benchmark workloads (dataset lengths and server limits).
    Workloads,
    /// The model's parameters in use, as a parameters file (not part of the default listing).
    Params,
}

/// `switchyard catalog`.
#[derive(Debug, Args)]
pub struct CatalogArgs {
    /// What to list (default: systems, models and workloads).
    what: Option<Listing>,
}

/// Runs `catalog`.
pub fn catalog(cat: &Catalog, p: &Params, a: &CatalogArgs) -> Result<()> {
    if matches!(a.what, None | Some(Listing::Systems)) {
        out!(
            "{:<10} {:<6} {:>8} {:>8} {:>9} {:>9} {:>6} {:>8}  {}",
            "system",
            "kind",
            "mem GB",
            "TB/s",
            "bf16 TF",
            "fp8 TF",
            "chips",
            "kW",
            "product"
        );
        for s in cat.systems() {
            let f = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.0}"));
            let mem = if s.memory_gb > 0.0 {
                s.memory_gb
            } else {
                s.sram_gb
            };
            out!(
                "{:<10} {:<6} {:>8.1} {:>8} {:>9} {:>9} {:>6} {:>8}  {}",
                s.id,
                s.kind.name(),
                mem,
                if s.memory_bw_tb_s > 0.0 {
                    format!("{:.2}", s.memory_bw_tb_s)
                } else {
                    format!("{:.0}", s.sram_bw_tb_s)
                },
                f(s.dense_tflops.bf16),
                f(s.dense_tflops.fp8),
                s.chips_per_system,
                match (s.system_power_kw, s.chip_power_w) {
                    (Some(k), _) => format!("{k:.1}"),
                    (None, Some(w)) => format!(
                        "{:.1}*",
                        w * p.host_overhead * f64::from(s.chips_per_system) / 1e3
                    ),
                    (None, None) => "-".into(),
                },
                s.system
            );
            out!("{:<10}   sources: {}", "", s.sources.join(" "));
            if let (None, Some(w)) = (s.system_power_kw, s.chip_power_w) {
                out!(
                    "{:<10}   * power: no system figure published; energy, power and megawatts take its chips' {w:.0} W x {} (`host_overhead`, the host's share) each",
                    "",
                    p.host_overhead
                );
            }
            if let Some(pr) = &s.price {
                out!(
                    "{:<10}   price: capex {} per system, rent {} per chip-hour; {}",
                    "",
                    pr.capex_usd_per_system
                        .map_or("n/a".into(), |c| format!("${c:.0}")),
                    pr.rent_usd_per_chip_hour
                        .map_or("n/a".into(), |r| format!("${r:.2}")),
                    pr.sources.join(" ")
                );
            }
            if let Some(from) = &s.matrix_share_from {
                let lender = cat.system(from).ok();
                let (how, lender) = match lender {
                    Some(l) if l.own_matrix_share().is_some() => ("measured on", l.id.as_str()),
                    Some(l) => ("borrowed through", l.id.as_str()),
                    None => ("from", from.as_str()),
                };
                match s.borrowed_matrix_share {
                    Some(share) => out!(
                        "{:<10}   matrix share {share:.2} of peak, {how} {lender} (the same die): the model's FLOP efficiencies, stated on H100, take x{:.2} here",
                        "",
                        switchyard_perf::matrix_scale(s)
                    ),
                    None => out!(
                        "{:<10}   matrix share from {lender}, which has none to lend now (no fp8, int8 or bf16 matrix rate of its own or borrowed): the model takes H100's share",
                        ""
                    ),
                }
            }
            if let Some(m) = &s.measured {
                out!(
                    "{:<10}   measured: read stream {}, matrix product {}{}; {}",
                    "",
                    m.memory_read_bw_tb_s.map_or("n/a".into(), |b| format!(
                        "{b:.2} TB/s ({:.2} of peak, used by the model)",
                        s.read_bw_fraction().unwrap_or(0.0)
                    )),
                    gemm_text(s, &m.gemm_tflops),
                    match (s.own_matrix_share(), m.gemm_tflops.entries().next()) {
                        (Some(_), _) => format!(
                            "; the model's FLOP efficiencies, stated on H100, take x{:.2} here at every precision",
                            switchyard_perf::matrix_scale(s)
                        ),
                        (None, Some(_)) => {
                            "; these give the model no share (fp4 is not one, nor a precision without a datasheet peak)".into()
                        }
                        (None, None) => String::new(),
                    },
                    m.sources.join(" ")
                );
            }
        }
    }
    if matches!(a.what, None | Some(Listing::Models)) {
        out!(
            "{:<30} {:>8} {:>8} {:>7} {:>6} {:<5} {:>9}",
            "model",
            "total B",
            "active B",
            "layers",
            "hidden",
            "attn",
            "KV KB/tok"
        );
        for m in cat.models() {
            out!(
                "{:<30} {:>8.1} {:>8.1} {:>7} {:>6} {:<5} {:>9.1}",
                m.id,
                m.total_params_b,
                m.active_params_b,
                m.layers,
                m.hidden,
                format!("{:?}", m.attention).to_lowercase(),
                m.kv_bytes(1.0, Precision::Bf16) / 1e3
            );
            out!("{:<30}   sources: {}", "", m.sources.join(" "));
        }
    }
    if matches!(a.what, None | Some(Listing::Workloads)) {
        out!(
            "{:<22} {:<7} {:<16} {:>8} {:>8} {:>6} {:>15} {:>15}",
            "workload",
            "suite",
            "model",
            "isl",
            "osl",
            "osl cv",
            "server TTFT/TPOT",
            "interactive"
        );
        for w in cat.workloads() {
            let f = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.0}"));
            let pair = |a: Option<f64>, b: Option<f64>| format!("{}/{} ms", f(a), f(b));
            out!(
                "{:<22} {:<7} {:<16} {:>8} {:>8} {:>6} {:>15} {:>15}",
                w.id,
                w.suite,
                w.model,
                w.isl.map_or("-".to_string(), |x| format!("{x:.1}")),
                w.osl.map_or("-".to_string(), |x| format!("{x:.1}")),
                w.osl_cv.map_or("-".to_string(), |x| format!("{x:.2}")),
                pair(w.server_ttft_ms, w.server_tpot_ms),
                pair(w.interactive_ttft_ms, w.interactive_tpot_ms)
            );
            out!("{:<22}   sources: {}", "", w.sources.join(" "));
        }
    }
    if matches!(a.what, Some(Listing::Params)) {
        for ((name, v, text), (_, d, default)) in
            p.entries().into_iter().zip(Params::default().entries())
        {
            if v.to_bits() == d.to_bits() {
                out!("{name} = {text}");
            } else {
                out!("{name} = {text}  # default {default}");
            }
        }
    }
    Ok(())
}
