//! Choosing a layout and producing the figures a user asks for: the one entry point the
//! command line, the planner and the validation use.

use crate::{
    unit_name, Arrivals, Deployment, Economics, Layout, Memory, Operating, Params, PerfError,
    Speculative, StepPart,
};
use serde::Serialize;
use switchyard_catalog::{Model, Precision, System, SystemKind};

/// What to ask of a model on a system. Unset fields are chosen: the chip count is the fewest
/// that fit, the layout the best for the objective, the precision the model's own.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    /// The model.
    pub model: &'a Model,
    /// The system.
    pub system: &'a System,
    /// Chips (wafers) in the deployment.
    pub chips: Option<u32>,
    /// Weight precision.
    pub precision: Option<Precision>,
    /// KV-cache precision (default: FP8 where the weights are narrower than 16 bits and the
    /// chip computes in FP8, else BF16).
    pub kv_precision: Option<Precision>,
    /// A fixed layout.
    pub layout: Option<Layout>,
    /// Requests in flight.
    pub concurrency: f64,
    /// Prompt tokens per request.
    pub isl: f64,
    /// Output tokens per request, on average.
    pub osl: f64,
    /// Spread of the output lengths: standard deviation over mean (0: all alike).
    pub osl_cv: f64,
    /// Speculative decoding.
    pub speculative: Option<Speculative>,
    /// Time-per-output-token limit for the peak-throughput search, in seconds.
    pub tpot_limit: Option<f64>,
    /// Time-to-first-token limit for the peak-throughput search, in seconds.
    pub ttft_limit: Option<f64>,
}

impl<'a> Query<'a> {
    /// `model` on `system` with `isl` prompt and `osl` output tokens, everything else chosen
    /// by the search: one request, no speculation, no latency limits.
    pub fn new(model: &'a Model, system: &'a System, isl: f64, osl: f64) -> Self {
        Query {
            model,
            system,
            chips: None,
            precision: None,
            kv_precision: None,
            layout: None,
            concurrency: 1.0,
            isl,
            osl,
            osl_cv: 0.0,
            speculative: None,
            tpot_limit: None,
            ttft_limit: None,
        }
    }

    /// The fewest chips on which the model fits at `precision` and the query's lengths (see
    /// [`min_chips`]).
    pub(crate) fn fewest_chips(&self, precision: Precision, p: &Params) -> Option<u32> {
        min_chips(
            self.model,
            self.system,
            (precision, self.kv_precision),
            p,
            self.isl,
            self.osl,
        )
    }

    /// Whether some layout of `n` chips holds the model and one sequence of the query's
    /// lengths, as [`fitting_deployments`] asks, without building the message of a refusal:
    /// a refusal searches counts near its own, and must not recurse into more searches.
    fn count_fits(&self, n: u32, precision: Precision, p: &Params) -> bool {
        layouts(self.model, self.system, n)
            .into_iter()
            .any(|l| self.layout_holds(l, precision, p))
    }

    /// Whether layout `l` holds the model and one sequence of the query's lengths.
    fn layout_holds(&self, l: Layout, precision: Precision, p: &Params) -> bool {
        self.deployment(l, precision)
            .is_ok_and(|d| d.memory(p).fits && self.holds_one(&d, p))
    }

    /// For a layout `asked` whose replica cannot hold the model: the single replicas on the
    /// fewest chips that do, and the shallowest pipeline of `asked`'s tensor-parallel width
    /// that does, as layouts to give instead; `None` where none up to 65,536 chips does.
    fn replicas_that_hold(
        &self,
        asked: Layout,
        precision: Precision,
        p: &Params,
    ) -> Option<String> {
        let min = self.fewest_chips(precision, p)?;
        let holds = |l: Layout| self.layout_holds(l, precision, p);
        let unit = |n: u32| unit_name(self.system.kind, n);
        let fewest: Vec<Layout> = (min..=min.saturating_add(64))
            .map(|n| {
                replica_layouts(self.model, self.system, n)
                    .into_iter()
                    .filter(|l| holds(*l))
                    .collect::<Vec<_>>()
            })
            .find(|ls| !ls.is_empty())?;
        let n = fewest[0].chips();
        let names: Vec<String> = fewest.iter().take(3).map(ToString::to_string).collect();
        let mut out = format!(
            "a replica of {asked} cannot hold it; on the fewest {} that do ({n}): --layout {}",
            unit(2),
            names.join(" or --layout ")
        );
        // The asked width kept, more stages: the change a user of that width looks for.
        let keep = (asked.pp.max(1) + 1..=self.model.layers)
            .map(|pp| Layout::replica(asked.tp, pp))
            .find(|l| holds(*l))
            .filter(|l| !fewest.contains(l));
        if let Some(l) = keep {
            out += &format!(
                "; keeping tp{}: --layout {l} ({} {})",
                asked.tp,
                l.chips(),
                unit(l.chips())
            );
        }
        Some(out)
    }

    /// The query's model on layout `l` at `precision`, with its speculation, KV precision and
    /// output spread.
    fn deployment(&self, l: Layout, precision: Precision) -> Result<Deployment<'a>, PerfError> {
        Deployment::new(self.model, self.system, l, precision).map(|d| {
            d.with_speculative(self.speculative)
                .with_kv(self.kv_precision)
                .with_osl_cv(self.osl_cv)
        })
    }

    /// Whether `d` holds one sequence of the query's lengths.
    fn holds_one(&self, d: &Deployment<'_>, p: &Params) -> bool {
        d.max_sequences(p, self.isl + self.osl) >= 1.0
    }

    /// The peak of `d` within the query's limits, and whether it meets them.
    fn peak(&self, d: &Deployment<'_>, p: &Params) -> (Operating, bool) {
        d.peak_within(p, self.isl, self.osl, self.tpot_limit, self.ttft_limit)
    }
}

/// What the layout search optimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    /// Per-user speed at the query's concurrency.
    Latency,
    /// Throughput at the best concurrency within the TPOT and TTFT limits; among layouts
    /// within 2% of the best, the one fastest for a lone request, as a fleet would serve.
    Throughput,
    /// The highest throughput within the limits and nothing else: the peak a comparison
    /// names.
    Peak,
}

/// Everything an estimate reports.
#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    /// Model id.
    pub model: String,
    /// System id.
    pub system: String,
    /// The layout chosen.
    pub layout: Layout,
    /// Chips (wafers) used.
    pub chips: u32,
    /// Chips (wafers) of those the query gave that the layout leaves idle: where no layout
    /// of them all serves better than one of fewer.
    pub idle_chips: u32,
    /// Weight precision.
    pub precision: Precision,
    /// KV-cache precision.
    pub kv_precision: Precision,
    /// Speculative decoding, where the query asked for it.
    pub speculative: Option<Speculative>,
    /// Memory per chip.
    pub memory: Memory,
    /// Tokens of context one replica's KV cache holds, in the engine's whole blocks
    /// ([`crate::Deployment::kv_tokens_in_blocks`]).
    pub kv_tokens_per_replica: f64,
    /// Requests one replica can hold in its KV cache at the query's lengths.
    pub max_concurrency_per_replica: f64,
    /// Tokens of KV cache a request in the batch holds on average: its mean lengths, or more
    /// where its outputs spread past cv 1 ([`crate::Deployment::kv_ctx`]).
    pub kv_tokens_per_request: f64,
    /// Sequences one replica's engine batches at most ([`Params::max_batch`] per
    /// expert-parallel group); above it, requests wait even where the KV cache has room.
    pub batch_limit_per_replica: f64,
    /// Serving at the query's concurrency.
    pub at: Operating,
    /// Where a user's time per output token goes at the query's concurrency: the parts of
    /// `at.tpot_s` ([`Deployment::tpot_parts`]).
    pub at_parts: Vec<StepPart>,
    /// Energy and cost at the query's concurrency.
    pub at_economics: Economics,
    /// Serving at the highest throughput within the TPOT and TTFT limits, if any; when no
    /// load meets them, at the lightest load the search tries (see `peak_meets_limits`).
    pub peak: Operating,
    /// Whether `peak` meets the query's limits.
    pub peak_meets_limits: bool,
    /// Energy and cost at peak throughput.
    pub peak_economics: Economics,
    /// Whether a request's prompt and output run past the model's context: served only with
    /// its positions extended (RoPE scaling), which the figures do not price.
    pub beyond_context: bool,
}

fn powers_of_two_upto(n: u32) -> impl Iterator<Item = u32> {
    (0..31).map(|i| 1u32 << i).take_while(move |&x| x <= n)
}

/// Every layout of exactly `chips` chips that the system can host.
/// An LPU replica of `n` chips: its layers split into as many stages as divide evenly.
fn lpu_replica(model: &Model, n: u32) -> Layout {
    let pp = (1..=n.min(model.layers))
        .rev()
        .find(|pp| n.is_multiple_of(*pp))
        .unwrap_or(1);
    Layout::replica(n / pp, pp)
}

/// The layouts of one model replica on exactly `chips` chips (`dp` 1), as [`layouts`] has
/// them, without the data-parallel ones.
pub(crate) fn replica_layouts(model: &Model, system: &System, chips: u32) -> Vec<Layout> {
    if system.kind == SystemKind::Lpu {
        return vec![lpu_replica(model, chips)];
    }
    // The layouts of `layouts` with one replica: each width whose stages the layers hold,
    // found without listing the replicated ones (the fit searches try every count up to
    // 65,536).
    widths(model, system, chips)
        .into_iter()
        .filter(|tp| chips.is_multiple_of(*tp) && chips / tp <= model.layers)
        .map(|tp| Layout::replica(tp, chips / tp))
        .collect()
}

pub(crate) fn layouts(model: &Model, system: &System, chips: u32) -> Vec<Layout> {
    let mut out = Vec::new();
    if system.kind == SystemKind::Lpu {
        // An LPU model spans many chips per layer on a flat, statically scheduled fabric: a
        // replica takes its chips whole, layers split into as many stages as divide evenly.
        // The chips may hold one replica or several alike, so that more chips than one
        // replica needs serve more users rather than spread one thinner.
        // Divisors in pairs up to the square root: a rack of 65,536 chips has few.
        let mut out: Vec<Layout> = Vec::new();
        let mut d = 1;
        while d * d <= chips {
            if chips.is_multiple_of(d) {
                for dp in [d, chips / d] {
                    if out.iter().all(|l| l.dp != dp) {
                        out.push(Layout {
                            dp,
                            ..lpu_replica(model, chips / dp)
                        });
                    }
                }
            }
            d += 1;
        }
        out.sort_by_key(|l| l.dp);
        return out;
    }
    let tps = widths(model, system, chips);
    // Expert-parallel layouts are modelled when asked for, not searched: the model's costs
    // for them (all-to-all at the fabric efficiency of an all-reduce, routing spread at
    // random) are optimistic. Searched, they lift the MLPerf DeepSeek-R1 rows on eight GPUs,
    // which ran expert-parallel, from -13..+82% to +27..+207% of their published throughput
    // (`points.csv` 30.3 to 32.6%, `heldout.csv` 27.6 to 33.6%).
    for tp in tps {
        for pp in 1..=chips / tp {
            if chips.is_multiple_of(tp * pp) && pp <= model.layers {
                out.push(Layout {
                    dp: chips / (tp * pp),
                    ..Layout::replica(tp, pp)
                });
            }
        }
    }
    out
}

/// The tensor-parallel widths a replica on up to `chips` chips may take.
fn widths(model: &Model, system: &System, chips: u32) -> Vec<u32> {
    match system.kind {
        SystemKind::Wafer | SystemKind::Lpu => vec![1],
        // A GPU's tensor parallelism may span scale-up domains; an RDU's stays in one.
        SystemKind::Gpu => powers_of_two_upto(model.heads.min(chips))
            .filter(|tp| model.heads.is_multiple_of(*tp))
            .collect(),
        SystemKind::Rdu => {
            powers_of_two_upto(system.scale_up().min(model.heads).min(chips)).collect()
        }
    }
}

/// The layouts that may serve on `chips` chips a caller gives: those that use them all
/// ([`layouts`]), and a replica of every smaller size (every width and depth; an LPU's of
/// every chip count) in as many copies as the chips hold whole, the rest left idle. Nine
/// H100s serve Llama 3.1 70B best as tp8 with one idle, not as three 3-stage pipelines (a
/// lone request 4x slower, a peak 19% lower); 80 LPUs' 20 stages beat any split of 81 to 128
/// with deeper ones. Every smaller replica a candidate, more chips never serve worse than
/// fewer. The search stays small: 72 GB200s add some 140 layouts, `validate` takes 0.24 s
/// where depths up to 8 and powers of two took 0.13 s. A count the model picks itself is
/// whole nodes it fills.
pub(crate) fn serving_layouts(model: &Model, system: &System, chips: u32) -> Vec<Layout> {
    let mut out = layouts(model, system, chips);
    if system.kind == SystemKind::Lpu {
        for r in 1..chips {
            if !chips.is_multiple_of(r) {
                out.push(Layout {
                    dp: chips / r,
                    ..lpu_replica(model, r)
                });
            }
        }
        return out;
    }
    for tp in widths(model, system, chips) {
        for pp in 1..=(chips / tp).min(model.layers) {
            if !chips.is_multiple_of(tp * pp) {
                out.push(Layout {
                    dp: chips / (tp * pp),
                    ..Layout::replica(tp, pp)
                });
            }
        }
    }
    out
}

/// The fewest chips (wafers) on which some layout fits in main memory, at lengths `isl` +
/// `osl`: a capacity tier holds weights only on a chip count the user fixes.
pub fn min_chips(
    model: &Model,
    system: &System,
    (precision, kv): (Precision, Option<Precision>),
    p: &Params,
    isl: f64,
    osl: f64,
) -> Option<u32> {
    // Whether some single-replica layout of `n` chips holds the weights and, with `ctx`,
    // one sequence of that many tokens.
    let fits = |n: u32, ctx: Option<f64>| {
        replica_layouts(model, system, n).into_iter().any(|l| {
            Deployment::new(model, system, l, precision)
                .map(|d| d.with_kv(kv))
                .is_ok_and(|d| match ctx {
                    Some(ctx) => d.fits_main_memory(p, ctx),
                    None => d.holds_weights(p),
                })
        })
    };
    // Whether a count holds the weights depends on how it factors, not only on its size
    // (592 H100s hold a 20T-parameter model as tp16-pp37 where 582 and 654 hold it no way;
    // an 8 GB GPU holds Llama 4 Maverick as tp8-pp24 on 192 and on none of 182 or 204), so
    // every count is tried, from the fewest that could hold the weights split perfectly.
    // Room for a sequence's KV cache depends on the factors too (an LPU's splits over no
    // more chips per stage than the model has KV heads): 3,944 LPUs hold Llama 3.1 405B and
    // a sequence where 4,282 do not. So the search finds where the weights first fit and
    // tries every count from there.
    let lower = Deployment::new(model, system, Layout::replica(1, 1), precision)
        .map(|d| d.memory(p))
        .ok()
        .filter(|m| m.usable_per_chip > 0.0)
        .map_or(1, |m| {
            (m.weights_per_chip / m.usable_per_chip)
                .floor()
                .clamp(1.0, f64::from(MAX_CHIPS)) as u32
        });
    let weights = (lower..=MAX_CHIPS).find(|&n| fits(n, None))?;
    (weights..=MAX_CHIPS).find(|&n| fits(n, Some(isl + osl)))
}

/// The most chips a deployment may have: the fit searches go no further, and no deployment
/// comes near (NVIDIA's largest NVLink domain is 576 GPUs, a Cerebras cluster 2,048 wafers).
pub const MAX_CHIPS: u32 = 65_536;

/// The chip count used when none is given: for GPUs the fewest whole nodes (up to 8 GPUs)
/// that hold the model; for RDUs one rack, doubled until the model fits; for wafers and
/// LPUs the fewest that fit.
fn default_chips(q: &Query<'_>, precision: Precision, p: &Params) -> Option<u32> {
    let need = q.fewest_chips(precision, p)?;
    Some(match q.system.kind {
        // Whole nodes of up to 8 GPUs, the fewest that hold the model (three nodes, where
        // the model needs 20 GPUs).
        SystemKind::Gpu => {
            let node = q.system.chips_per_system.clamp(1, 8);
            let mut n = need.div_ceil(node).saturating_mul(node);
            while !q.count_fits(n, precision, p) && n < MAX_CHIPS {
                n = n.saturating_add(node);
            }
            n
        }
        SystemKind::Rdu => {
            let mut n = q.system.chips_per_system.max(1);
            while n < need {
                n = n.saturating_mul(2);
            }
            n
        }
        SystemKind::Wafer | SystemKind::Lpu => need,
    })
}

/// Every deployment of `q` that fits: the layouts of the query's chip count (or its fixed
/// layout), each with the query's speculation and KV precision.
///
/// # Errors
/// A layout the system cannot host, or a model that does not fit (naming the fewest chips
/// that would).
/// Why no count of the query's system holds its model: a chip whose workspace leaves
/// nothing for weights (no count helps), or weights beyond the largest count searched.
fn nowhere(q: &Query<'_>, precision: Precision, p: &Params) -> PerfError {
    let unit = unit_name(q.system.kind, 2);
    let deployment = format!("{} at {precision} on {}", q.model.id, q.system.id);
    let one = q
        .deployment(Layout::replica(1, 1), precision)
        .map(|d| d.memory(p));
    match one {
        Ok(m) if m.activations_per_chip >= m.usable_per_chip => PerfError::DoesNotFit {
            deployment,
            why: format!(
                "each of its {unit} keeps {} GB of workspace (the parameters' `activation_bytes`) out of the {} GB it may use, which leaves nothing for weights",
                gigabytes(m.activations_per_chip / 1e9),
                gigabytes(m.usable_per_chip / 1e9),
            ),
            min_chips: 0,
            needs: "no count of them helps; check the parameters and the system's memory".into(),
        },
        _ => {
            // More chips cannot help once every stage holds one layer, but narrower weights
            // may: name the widest that fits, and where.
            let narrower = [Precision::Fp8, Precision::Fp4]
                .into_iter()
                .filter(|n| n.bytes() < precision.bytes())
                .find_map(|n| q.fewest_chips(n, p).map(|c| (n, c)));
            PerfError::DoesNotFit {
                deployment,
                why: format!(
                    "its weights take {} GB",
                    gigabytes(q.model.weight_bytes(precision) / 1e9)
                ),
                min_chips: 0,
                needs: match narrower {
                    Some((n, c)) => format!(
                        "no layout of up to 65,536 {unit} holds them{}; at {n}, {c} {} do (--precision {n})",
                        if q.system.kind == SystemKind::Wafer {
                            format!(
                                " (a wafer holds at least a layer, and it has {})",
                                q.model.layers
                            )
                        } else {
                            String::new()
                        },
                        unit_name(q.system.kind, c)
                    ),
                    None => format!("no layout of up to 65,536 {unit} holds them"),
                },
            }
        }
    }
}

pub(crate) fn fitting_deployments<'a>(
    q: &Query<'a>,
    p: &Params,
) -> Result<Vec<Deployment<'a>>, PerfError> {
    let precision = q.precision.unwrap_or_else(|| q.model.default_precision());
    if let Some(kv) = q.kv_precision.filter(|kv| kv.weight_only()) {
        return Err(PerfError::BadKvPrecision(format!(
            "{kv} stores weights only, its products in 16 bits; store the KV cache in bf16, fp8, int8, fp4 or int4"
        )));
    }
    // A 4-bit floating-point KV cache is read by attention kernels in the chip's own FP4
    // format (NVFP4 on Blackwell); an integer one is dequantised in software, on any chip.
    if q.kv_precision == Some(Precision::Fp4)
        && q.system
            .flops(Precision::Fp4)
            .is_none_or(|(_, native)| native != Precision::Fp4)
    {
        return Err(PerfError::BadKvPrecision(format!(
            "{} has no FP4 format for a KV cache; store it in fp8 or int4",
            q.system.id
        )));
    }
    let too_small = |chips: u32, why: String, min: Option<u32>| PerfError::DoesNotFit {
        deployment: format!("{} at {precision} on {chips} x {}", q.model.id, q.system.id),
        why,
        min_chips: min.unwrap_or(0),
        needs: match min {
            Some(n) if n < chips => {
                format!(
                    "the fewest that hold it are {n} {}",
                    unit_name(q.system.kind, n)
                )
            }
            Some(n) => format!("it needs at least {n} {}", unit_name(q.system.kind, n)),
            None => "no count up to 65,536 holds it".into(),
        },
    };
    let chips = match (q.chips, q.layout) {
        (Some(n), _) => n,
        (None, Some(l)) => l.chips(),
        // Where no count holds a sequence of the query's lengths but some holds the weights,
        // the fewest that hold the weights: the search below then says how long a sequence
        // fits there.
        (None, None) => match default_chips(q, precision, p) {
            Some(n) => n,
            None => Query {
                isl: 1.0,
                osl: 0.0,
                ..*q
            }
            .fewest_chips(precision, p)
            .ok_or_else(|| nowhere(q, precision, p))?,
        },
    };
    if chips == 0 {
        return Err(PerfError::BadInput(
            "the chip count must be at least 1".into(),
        ));
    }
    let candidates = match q.layout {
        Some(l) if l.chips() == chips => vec![l],
        Some(l) if l.dp == 1 && chips.is_multiple_of(l.replica_chips()) => {
            vec![Layout {
                dp: chips / l.replica_chips(),
                ..l
            }]
        }
        Some(l) => {
            return Err(PerfError::BadLayout {
                layout: l.to_string(),
                system: q.system.id.clone(),
                why: if l.dp == 1 {
                    // Replicas of it fill the chips only where their count is a multiple.
                    let n = l.replica_chips();
                    format!(
                        "a replica of it uses {n} {}, and {chips} {} no whole number of replicas; give a multiple of {n} {}",
                        unit_name(q.system.kind, n),
                        if chips == 1 { "is" } else { "are" },
                        unit_name(q.system.kind, n)
                    )
                } else {
                    format!(
                        "it uses {} {} but {chips} were given",
                        l.chips(),
                        unit_name(q.system.kind, l.chips())
                    )
                },
            });
        }
        None if q.chips.is_some() => serving_layouts(q.model, q.system, chips),
        None => layouts(q.model, q.system, chips),
    };
    let mut out = Vec::new();
    let mut first_err = None;
    // The most tokens one sequence may hold on a layout that holds the weights but not a
    // sequence of the query's lengths.
    let mut longest: Option<u64> = None;
    // The layout that comes closest to holding the weights: its weights in main memory per
    // chip (its fullest stage's) and the room one chip leaves them once its reserve and
    // workspace are set aside.
    let mut closest: Option<(Layout, f64, f64)> = None;
    for l in candidates {
        match q.deployment(l, precision) {
            Ok(d) => {
                let m = d.memory(p);
                let need = m.weights_per_chip - m.spilled_per_chip;
                let room = m.usable_per_chip - m.activations_per_chip;
                if closest.is_none_or(|(_, n, r)| need / room < n / r) {
                    closest = Some((l, need, room));
                }
                if m.fits && q.holds_one(&d, p) {
                    out.push(d);
                } else if m.fits {
                    let n = longest_sequence(&d, p, q.isl + q.osl);
                    longest = Some(longest.map_or(n, |m| m.max(n)));
                }
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    // Whether, when the query fixes a layout, another layout of these chips would do.
    let another_holds = || q.layout.is_some() && q.count_fits(chips, precision, p);
    match (out.is_empty(), first_err) {
        (false, _) => Ok(out),
        (true, Some(e)) if q.layout.is_some() => Err(e),
        (true, _) if longest.is_some() => {
            // Fewer chips may hold a sequence while this count, prime say, has no layout
            // that does.
            let another_holds = another_holds();
            let remedy = match q.fewest_chips(precision, p) {
                Some(n) if n > chips => format!("{n} {} hold one", unit_name(q.system.kind, n)),
                // Only the layout asked for is short of room.
                Some(_) if another_holds => format!(
                    "another layout of these {chips} {} holds one (leave out the layout to find it)",
                    unit_name(q.system.kind, chips)
                ),
                Some(n) => format!(
                    "no layout of these {chips} {} holds one, but {n} {} do",
                    unit_name(q.system.kind, chips),
                    unit_name(q.system.kind, n)
                ),
                None => "no layout of up to 65,536 chips holds one: shorten the prompt or the output"
                    .into(),
            };
            // More chips hold a sequence the model itself refuses: say so.
            let remedy = if q.isl + q.osl > q.model.max_context as f64 {
                format!(
                    "{remedy}, though {} takes at most {} tokens a request",
                    q.model.id, q.model.max_context
                )
            } else {
                remedy
            };
            Err(PerfError::ContextTooLong {
                deployment: format!(
                    "{} at {precision} on {chips} x {}{}",
                    q.model.id,
                    q.system.id,
                    if q.chips.is_none() && q.layout.is_none() {
                        " (no count given: the fewest that hold the weights)"
                    } else {
                        ""
                    }
                ),
                chips,
                // Lengths are checked finite and at least 1 by every caller's input checks.
                tokens: (q.isl + q.osl).round() as u64,
                longest: longest.unwrap_or(0),
                remedy,
            })
        }
        (true, _) => {
            let per_chip = q.system.weight_memory_bytes() / 1e9;
            let unit = unit_name(q.system.kind, 1);
            let Some(min) = q.fewest_chips(precision, p) else {
                return Err(nowhere(q, precision, p));
            };
            let min = Some(min);
            let mut why = match closest {
                // The layout nearest to fitting, by its own fullest chip: a total room that
                // looks ample says nothing of a pipeline's fullest stage or of a count that
                // splits only into small replicas.
                Some((l, need, room)) => format!(
                    "{} {l}, needs {} GB of weights on each {unit}{}, where each {unit} leaves {} GB of its {} GB for weights and KV cache",
                    if q.layout.is_some() { "its layout," } else { "its closest layout," },
                    gigabytes(need / 1e9),
                    if l.pp > 1 && matches!(q.system.kind, SystemKind::Gpu | SystemKind::Rdu) {
                        " of its fullest stage"
                    } else {
                        ""
                    },
                    gigabytes(room / 1e9),
                    gigabytes(per_chip),
                ),
                None => format!(
                    "weights take {} GB against {} GB per {unit}",
                    gigabytes(q.model.weight_bytes(precision) / 1e9),
                    gigabytes(per_chip),
                ),
            };
            if another_holds() {
                why += &format!(
                    "; another layout of these {chips} {} holds it (leave out the layout to find it)",
                    unit_name(q.system.kind, chips)
                );
            } else if min.is_some_and(|m| m <= chips) {
                // Fewer chips hold it, but not this count: name the next one that does.
                let up =
                    (chips + 1..=chips.saturating_add(64)).find(|&n| q.count_fits(n, precision, p));
                if let Some(n) = up {
                    why += &format!("; {n} {} hold it", unit_name(q.system.kind, n));
                }
            }
            let mut e = too_small(chips, why, min);
            // A fixed layout that cannot hold it: name the replicas that do, as a chip count
            // alone would fail the layout again.
            if let (Some(l), PerfError::DoesNotFit { needs, .. }) = (q.layout, &mut e) {
                if let Some(remedy) = q.replicas_that_hold(l, precision, p) {
                    *needs = remedy;
                }
            }
            Err(e)
        }
    }
}

/// `gb` gigabytes to three significant figures, so that an LPU's 0.23 GB does not print
/// as 0.
fn gigabytes(gb: f64) -> String {
    let decimals = if gb >= 100.0 {
        0
    } else if gb >= 10.0 {
        1
    } else {
        2
    };
    format!("{gb:.decimals$}")
}

/// The most tokens, below `tokens`, that one sequence's KV cache may hold on `d` (0 when
/// not even one fits), found by bisection: a sequence's KV cache grows with its length.
fn longest_sequence(d: &Deployment<'_>, p: &Params, tokens: f64) -> u64 {
    let holds = |n: f64| d.max_sequences(p, n) >= 1.0;
    if !holds(1.0) {
        return 0;
    }
    let (mut lo, mut hi) = (1.0_f64, tokens.max(1.0));
    while hi - lo > 1.0 {
        let mid = ((lo + hi) / 2.0).floor();
        if holds(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo as u64
}

/// The best deployment for `q` under `objective`.
///
/// # Errors
/// A layout the system cannot host, or a model that does not fit (naming the fewest chips
/// that would).
pub fn best_deployment<'a>(
    q: &Query<'a>,
    p: &Params,
    objective: Objective,
) -> Result<Deployment<'a>, PerfError> {
    let mut scored: Vec<(f64, Deployment<'a>)> = Vec::new();
    for d in fitting_deployments(q, p)? {
        let score = match objective {
            // A user's tokens per second over its whole stay, its first token (waiting for a
            // place included) and the rest: a layout whose KV cache holds fewer of the
            // requests does not win by decoding the few it runs faster, nor one that decodes
            // faster where the prompt is most of the wait (one output token: by its TTFT).
            Objective::Latency => {
                let op = d.at_concurrency(p, q.concurrency, q.isl, q.osl);
                let osl = q.osl.max(1.0);
                osl / (op.ttft_s + (osl - 1.0) * op.tpot_s)
            }
            // A layout that meets the limits beats any that does not.
            Objective::Throughput | Objective::Peak => match q.peak(&d, p) {
                (op, true) => op.throughput_tok_s,
                (op, false) => op.throughput_tok_s * 1e-9,
            },
        };
        scored.push((score, d));
    }
    // `fitting_deployments` returns at least one deployment or an error.
    let pick = match objective {
        Objective::Latency | Objective::Peak => scored
            .into_iter()
            .reduce(|a, b| if b.0 > a.0 { b } else { a })
            .map(|(_, d)| d),
        // Throughput within a small margin of the best is no reason to serve every request
        // more slowly: among those layouts, the one that serves a lone request fastest (on 8
        // H100s, Llama 3.1 70B as tp4-pp2 carries 0.4% more than tp8 at its peak and takes
        // 43% longer a token alone).
        Objective::Throughput => {
            let top = scored
                .iter()
                .map(|(s, _)| *s)
                .fold(f64::NEG_INFINITY, f64::max);
            scored
                .into_iter()
                .filter(|(s, _)| *s * (1.0 + THROUGHPUT_TIE) >= top)
                .map(|(_, d)| (d.at_concurrency(p, 1.0, q.isl, q.osl).user_tok_s, d))
                .reduce(|a, b| if b.0 > a.0 * 1.0001 { b } else { a })
                .map(|(_, d)| d)
        }
    };
    pick.ok_or_else(|| PerfError::BadInput("no deployment to choose from".into()))
}

/// How far below the best peak throughput a layout may carry and still be chosen for serving
/// a lone request faster.
const THROUGHPUT_TIE: f64 = 0.02;

impl<'a> Deployment<'a> {
    /// A prefill replica to pair with this (decode) replica in disaggregated serving: the
    /// same model, system and precisions, with `layout` where given, else the layout fastest
    /// for one request on `chips` (default: the fewest that fit requests of `isl` + `osl`).
    /// Its `dp` is the replicas `chips` split into with that layout (`tp2` on eight chips:
    /// four).
    ///
    /// # Errors
    /// As [`best_deployment`].
    pub fn prefill_partner(
        &self,
        p: &Params,
        chips: Option<u32>,
        layout: Option<Layout>,
        (isl, osl): (f64, f64),
    ) -> Result<Deployment<'a>, PerfError> {
        let q = Query {
            chips,
            precision: Some(self.weights),
            kv_precision: Some(self.kv),
            layout: layout.map(|l| Layout { dp: 1, ..l }),
            ..Query::new(self.model, self.system, isl, osl)
        };
        best_deployment(&q, p, Objective::Latency)
    }
}

/// One point of a throughput-interactivity frontier: a layout at a load.
#[derive(Debug, Clone, Serialize)]
pub struct FrontierPoint {
    /// The layout.
    pub layout: Layout,
    /// Serving figures at this load.
    pub op: Operating,
    /// Output tokens per second per chip.
    pub throughput_per_chip: f64,
    /// Energy and cost at this load, the chips busy its share of the layout's peak within
    /// the limits (as [`Estimate::at_economics`]).
    pub economics: Economics,
}

/// The throughput-interactivity frontier of a query: its chip count and its points.
#[derive(Debug, Clone, Serialize)]
pub struct Frontier {
    /// Chips (wafers) every point uses.
    pub chips: u32,
    /// From the fastest per-user speed to the highest throughput.
    pub points: Vec<FrontierPoint>,
}

/// The throughput-interactivity frontier of `q` on its chip count: over every layout that
/// fits (or the query's fixed one) and every load [`Deployment::loads`] tries, the points
/// within the query's TPOT and TTFT limits that no other point beats on both per-user speed
/// and throughput, sorted from the fastest per-user speed to the highest throughput. This is
/// the curve InferenceMAX and AIConfigurator plot (throughput per GPU against tokens per
/// second per user). Under a TTFT limit the requests arrive at random, else in a closed
/// loop ([`crate::Arrivals::under`]). Empty when no load meets the limits.
///
/// # Errors
/// As [`best_deployment`].
pub fn frontier(q: &Query<'_>, p: &Params) -> Result<Frontier, PerfError> {
    let deployments = fitting_deployments(q, p)?;
    let chips = deployments.first().map_or(0, |d| d.layout.chips());
    // Every load within the limits, with its deployment and that deployment's peak.
    // The peak is the deployment's whatever the limits: the chips' power follows the load
    // they carry, not how much of it a latency limit allows.
    let mut all: Vec<(usize, Operating, f64)> = Vec::new();
    for (i, d) in deployments.iter().enumerate() {
        let ops: Vec<Operating> = d
            .loads(p, q.isl, q.osl, Arrivals::under(q.ttft_limit))
            .map(|(_, op)| op)
            .collect();
        let peak = ops
            .iter()
            .map(|op| op.throughput_tok_s)
            .fold(f64::MIN_POSITIVE, f64::max);
        all.extend(
            ops.into_iter()
                .filter(|op| op.within(q.tpot_limit, q.ttft_limit))
                .map(|op| (i, op, peak)),
        );
        // Under a limit, the load where it binds, which the steps pass over.
        if q.tpot_limit.is_some() || q.ttft_limit.is_some() {
            if let Some(op) = d.max_throughput_within(p, q.isl, q.osl, q.tpot_limit, q.ttft_limit) {
                all.push((i, op, peak));
            }
        }
    }
    // Fastest first; among equal speeds the higher throughput first. A point stays when it
    // carries more than every faster point.
    all.sort_by(|(_, a, _), (_, b, _)| {
        b.user_tok_s
            .total_cmp(&a.user_tok_s)
            .then(b.throughput_tok_s.total_cmp(&a.throughput_tok_s))
    });
    let mut best = f64::NEG_INFINITY;
    all.retain(|(_, op, _)| {
        let keep = op.throughput_tok_s > best * (1.0 + 1e-9);
        if keep {
            best = op.throughput_tok_s;
        }
        keep
    });
    let points = all
        .into_iter()
        .map(|(i, op, peak)| {
            let d = &deployments[i];
            FrontierPoint {
                layout: d.layout,
                throughput_per_chip: op.throughput_tok_s / f64::from(chips.max(1)),
                economics: d.economics(p, &op, op.throughput_tok_s / peak),
                op,
            }
        })
        .collect();
    Ok(Frontier { chips, points })
}

/// The full estimate for `q`.
///
/// # Errors
/// As [`best_deployment`].
pub fn estimate(q: &Query<'_>, p: &Params, objective: Objective) -> Result<Estimate, PerfError> {
    let d = best_deployment(q, p, objective)?;
    let at = d.at_concurrency(p, q.concurrency, q.isl, q.osl);
    let (peak, peak_meets_limits) = q.peak(&d, p);
    // Power follows the share of the deployment's own peak in use: a latency limit that
    // holds the load down does not make the same load cost more.
    let most = if q.tpot_limit.is_none() && q.ttft_limit.is_none() {
        peak.throughput_tok_s
    } else {
        d.max_throughput(p, q.isl, q.osl, None).throughput_tok_s
    };
    let util = |op: &Operating| op.throughput_tok_s / most.max(f64::MIN_POSITIVE);
    Ok(Estimate {
        model: q.model.id.clone(),
        system: q.system.id.clone(),
        layout: d.layout,
        chips: d.layout.chips(),
        idle_chips: q.chips.map_or(0, |n| n.saturating_sub(d.layout.chips())),
        precision: d.weights,
        kv_precision: d.kv,
        speculative: d.speculative,
        memory: d.memory(p),
        kv_tokens_per_replica: d.kv_tokens_in_blocks(p),
        max_concurrency_per_replica: d.max_sequences(p, d.kv_ctx(q.isl, q.osl)),
        kv_tokens_per_request: d.kv_ctx(q.isl, q.osl),
        batch_limit_per_replica: d.batch_limit(p),
        at_economics: d.economics(p, &at, util(&at)),
        peak_economics: d.economics(p, &peak, util(&peak)),
        at_parts: d.tpot_parts(p, q.concurrency, q.isl, q.osl),
        at,
        peak,
        peak_meets_limits,
        beyond_context: q.isl + q.osl > q.model.max_context as f64,
    })
}
