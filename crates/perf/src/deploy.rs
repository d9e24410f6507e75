//! A deployment (model on system with a layout) and its memory fit; dispatch of the
//! step-time physics by system kind.

use crate::{gpu, sram, wafer, Params, PerfError};
use serde::Serialize;
use std::fmt;
use std::str::FromStr;
use switchyard_catalog::{AttentionKind, Model, Precision, System, SystemKind};

/// Tokens per block of a replica's paged KV cache: vLLM's default block size, which keeps
/// a sequence's unused room under one block. The estimate's capacity and the replica engine
/// both count in these blocks.
pub const KV_BLOCK_TOKENS: u32 = 16;

/// How the chips of a deployment are split: `tp` chips share each layer (tensor parallel,
/// the routed experts of a mixture of experts sliced over the same chips), `pp` groups of
/// layers run as a pipeline (wafers in a pipeline for wafer-scale engines), `ep` groups of
/// `tp` chips each serve their own share of the sequences while the routed experts are
/// spread over all of them (expert parallelism with data-parallel attention, as DeepSeek
/// and SGLang deploy it), and `dp` independent replicas serve side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Layout {
    /// Tensor-parallel degree within a replica.
    pub tp: u32,
    /// Pipeline stages within a replica.
    pub pp: u32,
    /// Expert-parallel groups within a replica (1: none).
    pub ep: u32,
    /// Replicas.
    pub dp: u32,
}

impl Layout {
    /// A single replica with `tp` x `pp` chips.
    pub fn replica(tp: u32, pp: u32) -> Self {
        Layout {
            tp,
            pp,
            ep: 1,
            dp: 1,
        }
    }

    /// One replica's split as a configuration file writes it (`tp8`, `tp4-pp2`), its count
    /// of replicas given beside it in the field named `count`.
    ///
    /// # Errors
    /// What [`Layout::from_str`] refuses, and a layout of several data-parallel replicas,
    /// with how to write it.
    pub fn one_replica(text: &str, count: &str) -> Result<Self, String> {
        let l: Layout = text.parse()?;
        if l.dp > 1 {
            return Err(format!(
                "it has {} data-parallel replicas; write one replica's split (`{}`) and `{count} = {}`",
                l.dp,
                Layout { dp: 1, ..l },
                l.dp
            ));
        }
        Ok(l)
    }

    /// Chips in one replica.
    pub fn replica_chips(&self) -> u32 {
        self.tp.saturating_mul(self.pp).saturating_mul(self.ep)
    }

    /// Chips in the whole deployment.
    pub fn chips(&self) -> u32 {
        self.replica_chips().saturating_mul(self.dp)
    }

    /// Chips in the whole deployment, or `None` when the degrees multiply past `u32`.
    fn checked_chips(&self) -> Option<u32> {
        self.tp
            .checked_mul(self.pp)?
            .checked_mul(self.ep)?
            .checked_mul(self.dp)
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tp{}-pp{}", self.tp, self.pp)?;
        if self.ep > 1 {
            write!(f, "-ep{}", self.ep)?;
        }
        if self.dp > 1 {
            write!(f, "-dp{}", self.dp)?;
        }
        Ok(())
    }
}

impl FromStr for Layout {
    type Err = String;
    /// Parses `tp8`, `pp4`, `tp2-pp2`, `tp4-dp2`, `tp2pp2`, `ep8`, `tp2-ep4`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut layout = Layout::replica(1, 1);
        let mut named: Vec<&str> = Vec::new();
        let mut rest = s.trim().to_ascii_lowercase();
        if rest.is_empty() {
            return Err("empty layout".into());
        }
        while !rest.is_empty() {
            rest = rest.trim_start_matches(['-', 'x', '*']).to_string();
            let (part, key, slot) = if let Some(r) = rest.strip_prefix("tp") {
                ("tp", r.to_string(), &mut layout.tp)
            } else if let Some(r) = rest.strip_prefix("pp") {
                ("pp", r.to_string(), &mut layout.pp)
            } else if let Some(r) = rest.strip_prefix("dp") {
                ("dp", r.to_string(), &mut layout.dp)
            } else if let Some(r) = rest.strip_prefix("ep") {
                ("ep", r.to_string(), &mut layout.ep)
            } else {
                return Err(format!(
                    "layout `{s}`: expected parts like tp8, pp4, ep8, dp2 (joined by `-`)"
                ));
            };
            let digits: String = key.chars().take_while(char::is_ascii_digit).collect();
            let n: u32 = digits.parse().map_err(|_| {
                if digits.is_empty() {
                    format!("layout `{s}`: a number must follow tp, pp, ep or dp")
                } else {
                    format!("layout `{s}`: {part}{digits} is more chips than any layout spans")
                }
            })?;
            if n == 0 {
                return Err(format!("layout `{s}`: degrees must be at least 1"));
            }
            // `tp8-tp4` is a typo, not a layout: which of the two was meant is unknowable.
            if named.contains(&part) {
                return Err(format!("layout `{s}`: {part} is given twice"));
            }
            named.push(part);
            *slot = n;
            rest = key[digits.len()..].to_string();
        }
        if layout.checked_chips().is_none() {
            return Err(format!(
                "layout `{s}`: its degrees multiply to more than {} chips",
                u32::MAX
            ));
        }
        Ok(layout)
    }
}

/// Speculative decoding: a draft proposes tokens that the target verifies in one step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Speculative {
    /// Mean tokens emitted per target step (accepted drafts plus the target's own token).
    pub tokens_per_step: f64,
    /// Cost of one cycle's drafting (all its drafted tokens), as a fraction of a target step.
    pub draft_cost: f64,
    /// Tokens the target's verifying step processes per sequence: the drafts and its own.
    pub verified: f64,
}

impl Speculative {
    /// From an acceptance rate `a` per drafted token, a draft length `k` and the cost of
    /// drafting one token as a fraction of a target step: the expected tokens per step is
    /// (1 − a^(k+1)) / (1 − a), and the cycle's drafting costs `k` times the token's cost
    /// (Leviathan et al., eqs. 1 and 2, <https://arxiv.org/abs/2211.17192>). Drafting more
    /// tokens than the acceptance rate rewards therefore slows decoding down.
    pub fn from_acceptance(a: f64, k: u32, token_cost: f64) -> Self {
        let a = a.clamp(0.0, 0.999);
        Speculative {
            tokens_per_step: (1.0 - a.powi(k.min(1 << 16) as i32 + 1)) / (1.0 - a),
            draft_cost: f64::from(k) * token_cost,
            verified: f64::from(k) + 1.0,
        }
    }
}

/// What a system's chips are called in a count of `n`: wafers for wafer-scale engines,
/// chips otherwise.
pub fn unit_name(kind: SystemKind, n: u32) -> &'static str {
    match (kind == SystemKind::Wafer, n == 1) {
        (true, true) => "wafer",
        (true, false) => "wafers",
        (false, true) => "chip",
        (false, false) => "chips",
    }
}

/// Prompt tokens prefilled together in a pass that decodes nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prompts {
    /// Prompt tokens in the pass, over all prompts.
    pub tokens: f64,
    /// Mean context position of those tokens (half the prompt for a whole prompt; more for
    /// a chunk that resumes one).
    pub ctx: f64,
    /// Prompts the tokens come from.
    pub count: u32,
    /// Tokens of the largest prompt chunk.
    pub longest: f64,
}

impl Prompts {
    /// One whole prompt of `tokens` tokens.
    pub fn one(tokens: f64) -> Self {
        Prompts::equal(1, tokens)
    }

    /// `count` whole prompts of `tokens` tokens each.
    pub fn equal(count: u32, tokens: f64) -> Self {
        Prompts {
            tokens: f64::from(count.max(1)) * tokens,
            ctx: tokens / 2.0,
            count: count.max(1),
            longest: tokens,
        }
    }
}

/// What limits a step: the resource whose time dominates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bound {
    /// Streaming weights and KV cache from memory.
    MemoryBandwidth,
    /// Tensor-core or core arithmetic.
    Compute,
    /// Collectives and hops between chips.
    Interconnect,
    /// Layer-serial latency across a wafer's core mesh or a chip group.
    MeshLatency,
    /// Fixed per-step overheads.
    Overhead,
}

impl Bound {
    /// A short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Bound::MemoryBandwidth => "memory-bw",
            Bound::Compute => "compute",
            Bound::Interconnect => "interconnect",
            Bound::MeshLatency => "mesh-latency",
            Bound::Overhead => "overhead",
        }
    }
}

/// The time of one decode step and what bounds it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Step {
    /// Seconds between two tokens of one sequence.
    pub time: f64,
    /// The dominant term.
    pub bound: Bound,
}

/// One part of a decode step's time: where the time between two tokens goes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepPart {
    /// What the time is spent on.
    pub part: &'static str,
    /// Seconds of it per token a sequence yields.
    pub seconds: f64,
}

impl StepPart {
    pub(crate) const fn new(part: &'static str, seconds: f64) -> Self {
        StepPart { part, seconds }
    }
}

/// Memory use per chip (per wafer) of a deployment.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// Bytes of memory that may hold weights, activations and KV cache, per chip.
    pub usable_per_chip: f64,
    /// Weight bytes per chip.
    pub weights_per_chip: f64,
    /// Of those, the bytes held in the system's slower capacity tier (SambaNova's DDR)
    /// because the main memory could not hold them; they stream from there every step.
    pub spilled_per_chip: f64,
    /// Activation workspace per chip.
    pub activations_per_chip: f64,
    /// Bytes left for the KV cache per chip (negative when the weights do not fit).
    pub kv_free_per_chip: f64,
    /// Tokens of context the KV cache of one replica holds (for full-attention layers).
    pub kv_tokens_per_replica: f64,
    /// Whether the weights and workspace fit.
    pub fits: bool,
}

/// One model deployed on some chips of one system.
#[derive(Debug, Clone)]
pub struct Deployment<'a> {
    /// The model.
    pub model: &'a Model,
    /// The system.
    pub system: &'a System,
    /// How the chips are split.
    pub layout: Layout,
    /// Weight precision.
    pub weights: Precision,
    /// KV-cache precision.
    pub kv: Precision,
    /// Speculative decoding, off by default.
    pub speculative: Option<Speculative>,
    /// Spread of the load's output lengths, their standard deviation over their mean, for
    /// the operating-point formulas (0, the default: every output the same length).
    pub osl_cv: f64,
}

impl<'a> Deployment<'a> {
    /// A deployment, checking that the layout can exist on the system.
    ///
    /// # Errors
    /// [`PerfError::BadLayout`] for a layout the system cannot host, and
    /// [`PerfError::NoPrecision`] for a precision it cannot run.
    pub fn new(
        model: &'a Model,
        system: &'a System,
        layout: Layout,
        weights: Precision,
    ) -> Result<Self, PerfError> {
        let bad = |why: String| PerfError::BadLayout {
            layout: layout.to_string(),
            system: system.id.clone(),
            why,
        };
        if layout.tp == 0 || layout.pp == 0 || layout.ep == 0 || layout.dp == 0 {
            return Err(bad("every degree must be at least 1".into()));
        }
        if layout.checked_chips().is_none() {
            return Err(bad(
                "its degrees multiply past the chips that can be counted".into(),
            ));
        }
        if layout.ep > 1 {
            let experts = model.experts.unwrap_or(0);
            if system.kind != SystemKind::Gpu {
                return Err(bad(format!(
                    "expert parallelism is modelled on GPUs; a {} system spreads experts with its layers",
                    system.kind.name()
                )));
            }
            if !model.is_moe() {
                return Err(bad(format!(
                    "{} has no experts to spread; split it with tp and pp",
                    model.id
                )));
            }
            if layout.tp * layout.ep > experts || !experts.is_multiple_of(layout.tp * layout.ep) {
                return Err(bad(format!(
                    "{} has {experts} experts, which do not spread evenly over {} chips",
                    model.id,
                    layout.tp * layout.ep
                )));
            }
        }
        if layout.pp > model.layers {
            return Err(bad(format!(
                "{} has only {} layers to split into {} stages",
                model.id, model.layers, layout.pp
            )));
        }
        match system.kind {
            SystemKind::Wafer if layout.tp > 1 => {
                return Err(bad(format!(
                    "a {} system splits a model by layers only; use pp (e.g. pp{})",
                    system.kind.name(),
                    layout.tp * layout.pp
                )));
            }
            // A GPU group may reach past its fast fabric, paying the network in every
            // all-reduce (see `gpu::allreduce_time`); an RDU's dataflow is modelled within one
            // node's links only.
            SystemKind::Rdu if layout.tp > system.scale_up() => {
                return Err(bad(format!(
                    "tensor parallelism beyond the {}-chip fast fabric; use tp{} or less and pp for more chips",
                    system.scale_up(),
                    system.scale_up()
                )));
            }
            SystemKind::Gpu | SystemKind::Rdu if layout.tp > model.heads => {
                return Err(bad(format!(
                    "{} has only {} attention heads to split",
                    model.id, model.heads
                )));
            }
            // GPU engines shard attention by whole heads and refuse an uneven split (vLLM
            // checks that the tensor-parallel size divides the head count).
            SystemKind::Gpu if !model.heads.is_multiple_of(layout.tp) => {
                // Every even split within the fast fabric, wider ones too: the narrower
                // splits may not hold the weights.
                let fits: Vec<String> = (1..=system.scale_up().max(layout.tp))
                    .filter(|t| model.heads.is_multiple_of(*t) && t.is_power_of_two())
                    .map(|t| format!("tp{t}"))
                    .collect();
                return Err(bad(format!(
                    "{} has {} attention heads, which tp{} does not split evenly; {} do",
                    model.id,
                    model.heads,
                    layout.tp,
                    fits.join(", ")
                )));
            }
            _ => {}
        }
        if system.kind != SystemKind::Wafer && system.flops(weights).is_none() {
            return Err(PerfError::NoPrecision {
                system: system.id.clone(),
                precision: weights.to_string(),
            });
        }
        // Weight-only formats keep their activations, and so the keys and values, in 16
        // bits, as the engines that serve them do (vLLM's `kv_cache_dtype` auto).
        let kv =
            if weights.bytes() < 2.0 && !weights.weight_only() && system.dense_tflops.fp8.is_some()
            {
                Precision::Fp8
            } else {
                Precision::Bf16
            };
        Ok(Deployment {
            model,
            system,
            layout,
            weights,
            kv,
            speculative: None,
            osl_cv: 0.0,
        })
    }

    /// The same deployment serving outputs whose lengths spread by `cv` (standard deviation
    /// over mean).
    #[must_use]
    pub fn with_osl_cv(mut self, cv: f64) -> Self {
        self.osl_cv = cv;
        self
    }

    /// Mean context of the sequences decoding at any moment, for requests of `isl` prompt
    /// tokens and `osl` output tokens on average. A sequence is caught at a point spread
    /// evenly over its output, and holds a place for as long as its output runs, so the
    /// sequences caught are the longer ones: a length L is caught in proportion to L, and
    /// their mean position is `E[L²]/(2E[L])` = osl·(1 + cv²)/2 (the length-biased sampling of
    /// renewal theory; Kleinrock, Queueing Systems vol. 1, 1975, §5.2). With outputs all
    /// alike that is half the output; with MLPerf DeepSeek-R1's (cv 1.11) 1.12 outputs.
    pub fn decode_ctx(&self, isl: f64, osl: f64) -> f64 {
        let biased = isl + osl * (1.0 + self.osl_cv * self.osl_cv) / 2.0;
        // No sequence holds more than the model's window (or the request's own length, where
        // that is longer): a spread so wide that the mean would pass it is cut there.
        biased.min((isl + osl).max(self.model.max_context as f64))
    }

    /// Tokens of KV cache a place in the batch is sized for: a whole request of mean lengths,
    /// or, where outputs spread so widely (cv above 1) that the sequences caught decoding hold
    /// more than that on average, what they hold.
    pub fn kv_ctx(&self, isl: f64, osl: f64) -> f64 {
        (isl + osl).max(self.decode_ctx(isl, osl))
    }

    /// The same deployment with its KV cache stored at `kv` (unchanged when `None`).
    #[must_use]
    pub fn with_kv(mut self, kv: Option<Precision>) -> Self {
        if let Some(kv) = kv {
            self.kv = kv;
        }
        self
    }

    /// The same deployment with speculative decoding.
    #[must_use]
    pub fn with_speculative(mut self, spec: Option<Speculative>) -> Self {
        self.speculative = spec;
        self
    }

    /// Total weight bytes of the model at the deployment's precision.
    pub fn weight_bytes(&self) -> f64 {
        self.model.weight_bytes(self.weights)
    }

    /// Bytes per weight outside the routed experts ([`Model::dense_bytes`]).
    pub fn dense_bytes(&self) -> f64 {
        self.model.dense_bytes(self.weights)
    }

    /// Weight bytes a pass of `tokens` tokens streams, over all chips: the dense weights (the
    /// embedding table only gathered from) and the experts the tokens touch.
    pub(crate) fn streamed_weight_bytes(&self, tokens: f64) -> f64 {
        self.model.streamed_dense_params() * self.dense_bytes()
            + self.model.touched_expert_params(tokens) * self.weights.bytes()
    }

    /// Fraction of one sequence's KV cache that one chip of a replica holds, averaged over
    /// the replica's sequences. GQA/MHA heads split over tensor-parallel chips until each
    /// holds one KV head; an MLA latent is shared by all heads, so every tensor-parallel chip
    /// holds all of it; stages hold their layers; an expert-parallel group holds only its
    /// own sequences. An RDU's tensor-parallel sockets split the sequences instead, each
    /// socket holding whole caches of its own ([`Deployment::kv_groups`]): with a
    /// DeepSeek-R1 latent on every socket, one rack of SN40L would carry 2,540 tok/s at 256
    /// users against the 4,500 SambaNova measured (`sn40l-deepseek-throughput` in
    /// `reference/points.csv`); split, 4,580 (both with the FLOP efficiencies at 0.40; split,
    /// 4,480 with today's parameters).
    pub fn kv_share_per_chip(&self) -> f64 {
        // Chips of a stage across which one sequence's cache is split, and groups of them
        // that each hold their own sequences.
        let split = match (self.system.kind, self.model.attention) {
            (SystemKind::Rdu, _) | (_, AttentionKind::Mla) => 1.0,
            _ => f64::from(self.layout.tp.min(self.model.kv_heads)),
        };
        self.stage_share() / (split * f64::from(self.kv_groups()))
    }

    /// The share of the model's layers that the fullest pipeline stage holds: whole layers,
    /// `ceil(layers / pp)` of them, on GPUs and RDUs; an even `1 / pp` on wafers and LPUs
    /// (see [`Deployment::weights_per_chip`]).
    pub fn stage_share(&self) -> f64 {
        let pp = self.layout.pp.max(1);
        if !self.whole_layer_stages() {
            return 1.0 / f64::from(pp);
        }
        let layers = self.model.layers.max(1);
        f64::from(layers.div_ceil(pp).min(layers)) / f64::from(layers)
    }

    /// Whether pipeline stages hold whole layers, the first the embedding table and the last
    /// the head (GPUs and RDUs, as their engines split a pipeline), rather than even shares.
    fn whole_layer_stages(&self) -> bool {
        !matches!(self.system.kind, SystemKind::Lpu | SystemKind::Wafer)
    }

    /// Groups of a replica's chips that each hold whole sequences' KV caches, in pools of
    /// their own: the expert-parallel groups on GPUs, the tensor-parallel sockets of an RDU.
    pub fn kv_groups(&self) -> u32 {
        match self.system.kind {
            SystemKind::Rdu => self.layout.tp.max(1),
            _ => self.layout.ep.max(1),
        }
    }

    /// Weight bytes per chip of the fullest pipeline stage: the dense part over the stage's
    /// tensor-parallel group (each expert-parallel group holds its own copy), the routed
    /// experts over all of the stage's chips.
    ///
    /// Stages hold whole layers, so the fullest holds `ceil(layers / pp)` of them; the first
    /// also holds the embedding table and the last the output head (both, with a tied head,
    /// hold a copy of the one table), so the fullest holds the larger of the two beside its
    /// layers, as vLLM and TensorRT-LLM split a pipeline. An LPU spreads a model over its
    /// chips by its compiler's static schedule, and Cerebras does not publish how it splits
    /// a model over wafers: their shares stay even. (Whole layers a wafer would put Llama 3.1
    /// 405B on 26 wafers, against the 19-22 that observers estimate, and move `points.csv`
    /// from 24.7 to 24.8%.)
    pub fn weights_per_chip(&self) -> f64 {
        let tp = f64::from(self.layout.tp);
        let pp = self.layout.pp.max(1);
        let ep = f64::from(self.layout.ep);
        let routed = self.model.routed_expert_params();
        let dense = self.model.dense_params();
        if pp == 1 || !self.whole_layer_stages() {
            let group = tp * f64::from(pp);
            return dense / group * self.dense_bytes()
                + routed / (group * ep) * self.weights.bytes();
        }
        // The embedding table and the head are the same size, and counted once in the
        // parameters when tied.
        let head = self.model.head_params();
        let ends = self.model.gathered_params() + head;
        let stage_layers = self.model.layers.div_ceil(pp).min(self.model.layers);
        // The stage with the most mixture-of-experts layers holds as many as it has layers,
        // or its even share of them rounded up, whichever is fewer.
        let moe = self.model.moe_layers.unwrap_or(self.model.layers).max(1);
        let moe_share = f64::from(moe.div_ceil(pp).min(stage_layers)) / f64::from(moe);
        ((dense - ends).max(0.0) * self.stage_share() + head) / tp * self.dense_bytes()
            + routed * moe_share / (tp * ep) * self.weights.bytes()
    }

    /// Memory use per chip and how much KV cache fits.
    pub fn memory(&self, p: &Params) -> Memory {
        self.memory_with(p, true)
    }

    /// Whether the weights, the workspace and one sequence of `ctx` tokens fit in main
    /// memory alone, with no capacity tier: how many chips a model needs.
    pub(crate) fn fits_main_memory(&self, p: &Params, ctx: f64) -> bool {
        let m = self.memory_with(p, false);
        m.fits && self.sequences_in(&m, ctx) >= 1.0
    }

    /// Whether the weights and the workspace fit in main memory alone, with no capacity tier.
    pub(crate) fn holds_weights(&self, p: &Params) -> bool {
        self.memory_with(p, false).fits
    }

    fn memory_with(&self, p: &Params, tier: bool) -> Memory {
        let (usable, activations) = match self.system.kind {
            SystemKind::Gpu | SystemKind::Rdu => (
                self.system.weight_memory_bytes() * p.gpu_mem_usable,
                p.activation_bytes,
            ),
            SystemKind::Wafer => (self.system.weight_memory_bytes() * p.wafer_sram_usable, 0.0),
            SystemKind::Lpu => (self.system.weight_memory_bytes() * p.lpu_sram_usable, 0.0),
        };
        let weights = self.weights_per_chip();
        // Where the main memory cannot hold the weights beside the workspace, and the system
        // has a capacity tier, the overflow goes there, and enough more to leave a reserve
        // for the KV cache.
        let capacity = if tier {
            self.system.capacity_memory_gb.unwrap_or(0.0) * 1e9 * p.gpu_mem_usable
        } else {
            0.0
        };
        let resident_room = (usable - activations - p.capacity_kv_reserve * usable).max(0.0);
        let spilled = if capacity > 0.0 && weights > resident_room {
            (weights - resident_room).clamp(0.0, capacity.min(weights))
        } else {
            0.0
        };
        let free = usable - (weights - spilled) - activations;
        let per_token = self.model.kv_bytes(1.0, self.kv) * self.kv_share_per_chip();
        Memory {
            usable_per_chip: usable,
            weights_per_chip: weights,
            spilled_per_chip: spilled,
            activations_per_chip: activations,
            kv_free_per_chip: free,
            kv_tokens_per_replica: (free / per_token).max(0.0),
            fits: free > 0.0,
        }
    }

    /// Most sequences one replica runs at once by its engines' batch limit: each
    /// expert-parallel group is an engine of its own ([`Params::max_batch`] each).
    pub fn batch_limit(&self, p: &Params) -> f64 {
        f64::from(p.max_batch) * f64::from(self.layout.ep.max(1))
    }

    /// Sequences of `ctx` tokens whose KV cache fits in one replica at once.
    ///
    /// The cache is paged in blocks of [`KV_BLOCK_TOKENS`], as the replica engine keeps it:
    /// each group's pool holds whole blocks of the replica's, and a sequence takes whole
    /// blocks, so a request the estimate says fits is one the engine admits.
    pub fn max_sequences(&self, p: &Params, ctx: f64) -> f64 {
        self.sequences_in(&self.memory(p), ctx)
    }

    /// Whole [`KV_BLOCK_TOKENS`] blocks of the KV room of `m` that each of the replica's
    /// groups holds (each group's pool whole blocks of the replica's, as the engine keeps
    /// them).
    fn group_blocks(&self, m: &Memory) -> f64 {
        let block = f64::from(KV_BLOCK_TOKENS);
        ((m.kv_tokens_per_replica / block).floor() / f64::from(self.kv_groups())).floor()
    }

    /// Tokens of context the replica's KV cache holds in whole blocks, as the engine pages
    /// it: [`Memory::kv_tokens_per_replica`] less what no whole block of a group takes.
    pub fn kv_tokens_in_blocks(&self, p: &Params) -> f64 {
        let m = self.memory(p);
        self.group_blocks(&m) * f64::from(self.kv_groups()) * f64::from(KV_BLOCK_TOKENS)
    }

    /// Sequences of `ctx` tokens that the KV room of `m` holds ([`Deployment::max_sequences`]).
    fn sequences_in(&self, m: &Memory, ctx: f64) -> f64 {
        let groups = f64::from(self.kv_groups());
        let per_token = self.model.kv_bytes(1.0, self.kv);
        if per_token <= 0.0 {
            // A model that keeps no KV cache: only the weights can fail to fit.
            return if m.fits { f64::INFINITY } else { 0.0 };
        }
        let block = f64::from(KV_BLOCK_TOKENS);
        let group_blocks = self.group_blocks(m);
        // Full-context token equivalents of `ctx` (a local layer holds at most its window);
        // the tolerance keeps an exact multiple of a block from rounding up to the next.
        let units = self.model.kv_bytes(ctx.max(1.0), self.kv) / per_token;
        let seq_blocks = (units * (1.0 - 1e-12) / block).ceil().max(1.0);
        (group_blocks / seq_blocks).floor() * groups
    }

    /// One decode step of a replica running `batch` sequences at mean context `ctx`: the
    /// time between two tokens of each sequence. Speculative decoding verifies several
    /// tokens per step and divides the step among the tokens it accepts.
    pub fn decode_step(&self, p: &Params, batch: f64, ctx: f64) -> Step {
        let batch = batch.max(1.0);
        let (q, overhead) = self.verifying();
        let step = match self.system.kind {
            // Each kind's step comes with its parts, which this, the simulator's inner loop,
            // drops. The GPU step is always inlined here, so that its ten parts cost nothing
            // (called, building them made an H100 step 1.3x slower); the wafer's and the
            // LPU's and RDU's are left to the compiler (always inlined as well, the wafer
            // step took 1.6x as long).
            SystemKind::Gpu => gpu::decode_step(self, p, batch, q, ctx).0,
            SystemKind::Wafer => wafer::decode_step(self, p, batch, q, ctx).0,
            SystemKind::Lpu | SystemKind::Rdu => sram::decode_step(self, p, batch, q, ctx).0,
        };
        match self.speculative {
            Some(s) => Step {
                time: step.time * overhead / s.tokens_per_step,
                bound: step.bound,
            },
            None => step,
        }
    }

    /// Seconds a decode step of `batch` sequences takes beyond [`Deployment::decode_step`]
    /// and the chunked-prefill cost of `chunk` prompt tokens riding it: on a GPU, the routed
    /// experts those tokens reach beyond the decoding ones' (`gpu::chunk_experts`); nothing
    /// for a dense model, or where the weights stay on the chips.
    pub fn chunk_experts(&self, p: &Params, batch: f64, chunk: f64) -> f64 {
        match self.system.kind {
            SystemKind::Gpu => {
                gpu::chunk_experts(self, p, batch.max(1.0), self.verifying().0, chunk)
            }
            _ => 0.0,
        }
    }

    /// Seconds the steps that carry a prompt of `isl` tokens beside `batch` sequences
    /// decoding take beyond its chunked-prefill cost: each of its chunks (the engine's token
    /// budget, every group's, at most) reaches experts the decoding tokens do not
    /// ([`Deployment::chunk_experts`]).
    pub fn prompt_experts(&self, p: &Params, batch: f64, isl: f64) -> f64 {
        let budget = f64::from(p.token_budget.max(1)) * f64::from(self.kv_groups());
        let chunks = (isl / budget).ceil().max(1.0);
        chunks * self.chunk_experts(p, batch, isl / chunks)
    }

    /// Where the time of [`Deployment::decode_step`] goes: its parts, which add up to it,
    /// those of no time left out. The physics of each kind of system reports its own parts
    /// (a GPU's kernels as their streams and their arithmetic, its exchanges, launches and
    /// overheads; a wafer's mesh reductions, core work and links; an LPU's or RDU's layer
    /// latencies and the larger of its stream and arithmetic), with speculative decoding's
    /// drafting apart; each is per token a sequence yields, in the physics' order.
    pub fn step_parts(&self, p: &Params, batch: f64, ctx: f64) -> Vec<StepPart> {
        let batch = batch.max(1.0);
        let (q, overhead) = self.verifying();
        let mut parts: Vec<StepPart> = match self.system.kind {
            SystemKind::Gpu => gpu::decode_step(self, p, batch, q, ctx).1.to_vec(),
            SystemKind::Wafer => wafer::decode_step(self, p, batch, q, ctx).1.to_vec(),
            SystemKind::Lpu | SystemKind::Rdu => {
                sram::decode_step(self, p, batch, q, ctx).1.to_vec()
            }
        };
        // Speculative decoding spreads a step, and its drafting, over the tokens it accepts.
        let tokens = self.tokens_per_step();
        let step: f64 = parts.iter().map(|x| x.seconds).sum();
        parts.push(StepPart::new("drafting", step * (overhead - 1.0)));
        parts
            .into_iter()
            .filter(|x| x.seconds > 0.0)
            .map(|x| StepPart::new(x.part, x.seconds / tokens))
            .collect()
    }

    /// Tokens a sequence receives per decode step: those speculative decoding accepts, else
    /// one.
    pub fn tokens_per_step(&self) -> f64 {
        self.speculative.map_or(1.0, |s| s.tokens_per_step)
    }

    /// Tokens each sequence's step verifies, and the step's cost with its drafting as a
    /// multiple of the step alone: one and one without speculative decoding.
    fn verifying(&self) -> (f64, f64) {
        match self.speculative {
            Some(s) => (s.verified.max(1.0), 1.0 + s.draft_cost),
            None => (1.0, 1.0),
        }
    }

    /// Time for one replica to prefill `tokens` prompt tokens of a single request alone.
    pub fn prefill(&self, p: &Params, tokens: f64) -> f64 {
        self.prefill_prompts(p, &Prompts::one(tokens))
    }

    /// Time of a pass that prefills `prompts` and decodes nothing. Several prompts attend
    /// only within themselves, and with expert parallelism they spread over the groups (each
    /// prompt whole in one group, so the busiest group runs at least the longest).
    pub fn prefill_prompts(&self, p: &Params, prompts: &Prompts) -> f64 {
        match self.system.kind {
            SystemKind::Gpu => gpu::prefill(self, p, prompts),
            SystemKind::Wafer => wafer::prefill(self, p, prompts),
            SystemKind::Lpu | SystemKind::Rdu => sram::prefill(self, p, prompts),
        }
    }

    /// FLOPs of one token's forward pass at context position `ctx`: two per active
    /// parameter (one multiply-accumulate) plus attention over the context (Kaplan et al.,
    /// <https://arxiv.org/abs/2001.08361>, table 1), the input embedding table left out: a
    /// token gathers its row of it and multiplies by none
    /// ([`switchyard_catalog::Model::computed_params`]).
    pub fn token_flops(&self, ctx: f64) -> f64 {
        2.0 * self.model.computed_params() + self.model.attention_flops(ctx)
    }

    /// FLOPs of one prompt token's forward pass at context position `ctx`: as
    /// [`Deployment::token_flops`], with attention in the form a prompt runs it
    /// ([`switchyard_catalog::Model::prompt_attention_flops`]) and without the output head:
    /// engines turn only a prompt's last position into logits, the one a token is sampled
    /// from (vLLM's `logits_indices`, TensorRT-LLM's `gather_context_logits` off by
    /// default), so the head runs once a prompt ([`Deployment::prompt_flops`]).
    pub fn prompt_token_flops(&self, ctx: f64) -> f64 {
        2.0 * (self.model.computed_params() - self.model.head_params()).max(0.0)
            + self.model.prompt_attention_flops(ctx)
    }

    /// FLOPs of a pass over `prompts`: each token's ([`Deployment::prompt_token_flops`])
    /// and the output head once a prompt.
    pub fn prompt_flops(&self, prompts: &Prompts) -> f64 {
        prompts.tokens * self.prompt_token_flops(prompts.ctx)
            + f64::from(prompts.count.max(1)) * 2.0 * self.model.head_params()
    }

    /// Replica time per prompt token when prefill is batched into busy decode steps
    /// (chunked prefill): the compute the token needs at the prefill efficiency, with the
    /// whole replica working on it, or on an RDU one stage's sockets, as its stages run one
    /// after another (MLA attention in its decompressed form; re-expanding the
    /// earlier chunks' cached latents into keys and values, which a later chunk needs, is
    /// left out: for DeepSeek-V3 it is 2·512·256·128 FLOPs, 34 M, per cached token per layer,
    /// some 5% of the products of a 2,048-token chunk at 4,096 tokens of context), and on
    /// GPUs its activation's share of the exchanges between chips, as a prompt pass pays
    /// them. The experts' tiles ([`Params::gpu_expert_tile_tokens`]) are the decode step's to
    /// pay: a chunk of hundreds of prompt tokens fills its experts' tiles.
    pub fn prefill_token_cost(&self, p: &Params, isl: f64) -> f64 {
        self.prefill_token_cost_in(p, isl, f64::from(self.layout.ep.max(1)))
    }

    /// As [`Deployment::prefill_token_cost`], with the prompts of a step in `groups` of a
    /// replica's expert-parallel groups (1 to `ep`; the rest decode only). Each prompt is
    /// whole in one group, whose chips alone run its dense projections and attention,
    /// while the routed experts of every group see its tokens; the step waits for the
    /// busiest group. So a step carrying one prompt's chunk takes its dense work over one
    /// group's chips, not the replica's: spread over all of them, an `ep8` replica's
    /// prompts came out of loaded steps sooner than alone, and its first token did not
    /// grow with load. Without expert parallelism `groups` is 1 and changes nothing.
    pub fn prefill_token_cost_in(&self, p: &Params, isl: f64, groups: f64) -> f64 {
        let chips = f64::from(self.layout.replica_chips());
        if self.system.kind == SystemKind::Gpu {
            let ep = f64::from(self.layout.ep.max(1));
            let groups = groups.clamp(1.0, ep);
            // The exchanges are one group's for its own tokens: stages and the groups with
            // prompts each carry their share of the prompts at once.
            let parallel = f64::from(self.layout.pp) * groups;
            return gpu::prompt_token_time(self, p, isl, chips * groups / ep)
                + gpu::exchange_per_token(self, p) / parallel;
        }
        // A token's share of its prompt's work, the head's included.
        let flops = self.prompt_flops(&Prompts::one(isl)) / isl.max(1.0);
        match self.system.kind {
            SystemKind::Wafer => {
                let mesh = self
                    .system
                    .mesh
                    .as_ref()
                    .map_or(1.0, |m| m.cores() * m.core_flops());
                flops / (chips * mesh * p.wafer_prefill_eff)
            }
            // An RDU's stages run one after another, for a prompt as for a token
            // (`sram::prefill`): one stage's tensor-parallel sockets do the work.
            SystemKind::Rdu => {
                flops
                    / (f64::from(self.layout.tp) * gpu::weight_rate(self, p.gpu_prefill_flops_eff))
            }
            _ => flops / (chips * gpu::weight_rate(self, p.gpu_prefill_flops_eff)),
        }
    }
}
