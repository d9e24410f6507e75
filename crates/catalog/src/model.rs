//! Models: the architecture shapes that set weight bytes, FLOPs and KV-cache size per token.

use crate::Precision;
use serde::{Deserialize, Serialize};

/// How attention keys and values are cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttentionKind {
    /// Multi-head attention: one K and V per query head.
    Mha,
    /// Grouped-query attention: `kv_heads` K/V heads shared by groups of query heads.
    Gqa,
    /// Multi-head latent attention (DeepSeek-V2/V3): one compressed latent of
    /// `kv_lora_rank + qk_rope_dim` values per token per layer.
    Mla,
}

/// One model architecture.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// Short id used on the command line, e.g. `llama-3.1-70b`.
    pub id: String,
    /// Other names the model goes by, accepted wherever the id is (published names are also
    /// matched loosely: see [`crate::Catalog::model`]).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Model family.
    #[serde(default)]
    pub family: String,
    /// All parameters, in billions (every expert counted).
    pub total_params_b: f64,
    /// Parameters used for one token, in billions (routed experts chosen plus shared ones).
    pub active_params_b: f64,
    /// Transformer layers.
    pub layers: u32,
    /// Hidden (model) width.
    pub hidden: u32,
    /// Query heads.
    pub heads: u32,
    /// Key/value heads (equal to `heads` for MHA).
    pub kv_heads: u32,
    /// Width of one attention head (query/key width for MLA).
    pub head_dim: u32,
    /// Feed-forward width (per expert for mixture-of-experts models).
    pub ffn_hidden: u32,
    /// Vocabulary size.
    #[serde(default)]
    pub vocab: u32,
    /// The output head reuses the input embedding table (`tie_word_embeddings` in the
    /// model's `config.json`). Left out, the two are separate tables, as in the models above
    /// a few billion parameters carried here (Falcon 180B's was not checked).
    #[serde(default)]
    pub tied_embeddings: bool,
    /// Routed experts per MoE layer (absent for dense models).
    pub experts: Option<u32>,
    /// Routed experts chosen per token.
    pub experts_per_token: Option<u32>,
    /// Shared (always-on) experts per MoE layer, as the model card gives them: a record, not
    /// an input to the physics, since their parameters are among the dense ones (the total
    /// less the routed experts, [`Model::dense_params`]) whatever their count.
    pub shared_experts: Option<u32>,
    /// Layers that carry routed experts.
    pub moe_layers: Option<u32>,
    /// Attention family.
    pub attention: AttentionKind,
    /// The attention as published, where it says more than the family.
    #[serde(default)]
    pub attention_detail: String,
    /// MLA latent width.
    pub kv_lora_rank: Option<u32>,
    /// MLA decoupled RoPE key width.
    pub qk_rope_dim: Option<u32>,
    /// Window of the local (sliding or chunked) attention layers, in tokens.
    pub sliding_window: Option<u32>,
    /// One layer in every `global_every` attends to the whole context; the others are local.
    /// Without it, a `sliding_window` makes every layer local.
    pub global_every: Option<u32>,
    /// Longest context the model accepts.
    pub max_context: u64,
    /// The precision its weights are published in, where not 16-bit.
    pub native_precision: Option<Precision>,
    /// Where the published weights mix precisions: the one that every weight outside the
    /// routed experts (attention, router, embedding, head) keeps at `native_precision`, as
    /// gpt-oss ships its experts in MXFP4 and the rest in BF16. Quantised to any other
    /// precision, the whole model takes that one.
    #[serde(default)]
    pub dense_precision: Option<Precision>,
    /// Where the shapes come from.
    pub sources: Vec<String>,
    /// Caveats.
    #[serde(default)]
    pub notes: String,
}

impl Model {
    /// Whether the model routes tokens to experts.
    pub fn is_moe(&self) -> bool {
        self.experts.unwrap_or(0) > 1
    }

    /// Parameters of one routed expert (a gated feed-forward block: gate, up and down).
    pub fn expert_params(&self) -> f64 {
        3.0 * f64::from(self.hidden) * f64::from(self.ffn_hidden)
    }

    /// Parameters held in routed experts, all layers together.
    pub fn routed_expert_params(&self) -> f64 {
        if !self.is_moe() {
            return 0.0;
        }
        let layers = f64::from(self.moe_layers.unwrap_or(self.layers));
        layers * f64::from(self.experts.unwrap_or(0)) * self.expert_params()
    }

    /// Parameters every token uses whatever the routing (attention, dense layers, shared
    /// experts, embeddings and head).
    pub fn dense_params(&self) -> f64 {
        (self.total_params_b * 1e9 - self.routed_expert_params()).max(0.0)
    }

    /// Parameters of the input embedding table that a forward pass only gathers rows of (one
    /// per token) rather than multiplying or streaming whole: the table, unless the output
    /// head reuses it, in which case the head streams it once and multiplies by it.
    pub fn gathered_params(&self) -> f64 {
        if self.tied_embeddings {
            0.0
        } else {
            f64::from(self.vocab) * f64::from(self.hidden)
        }
    }

    /// Parameters every token multiplies by and a step streams whole: the dense parameters
    /// less the embedding table it only gathers from ([`Model::gathered_params`]).
    pub fn streamed_dense_params(&self) -> f64 {
        (self.dense_params() - self.gathered_params()).max(0.0)
    }

    /// Parameters of the output head, which turns a position's hidden state into logits
    /// over the vocabulary (the embedding table itself where the head reuses it).
    pub fn head_params(&self) -> f64 {
        f64::from(self.vocab) * f64::from(self.hidden)
    }

    /// Parameters one token multiplies by: the active ones less the embedding table it only
    /// gathers from.
    pub fn computed_params(&self) -> f64 {
        (self.active_params_b * 1e9 - self.gathered_params()).max(0.0)
    }

    /// Routed-expert parameters one token uses: `experts_per_token` of the `experts` in each
    /// MoE layer (zero for a dense model).
    pub fn routed_active_params(&self) -> f64 {
        if !self.is_moe() {
            return 0.0;
        }
        let e = f64::from(self.experts.unwrap_or(1));
        let k = f64::from(self.experts_per_token.unwrap_or(1)).min(e);
        self.routed_expert_params() * k / e
    }

    /// Expected routed-expert parameters read by one forward pass over `tokens` tokens,
    /// with uniform routing: each layer touches E·(1 − (1 − k/E)^tokens) distinct experts.
    pub fn touched_expert_params(&self, tokens: f64) -> f64 {
        if !self.is_moe() {
            return 0.0;
        }
        let e = f64::from(self.experts.unwrap_or(1));
        let k = f64::from(self.experts_per_token.unwrap_or(1)).min(e);
        let touched = e * (1.0 - (1.0 - k / e).powf(tokens.max(0.0)));
        let layers = f64::from(self.moe_layers.unwrap_or(self.layers));
        layers * touched * self.expert_params()
    }

    /// Layers whose attention spans the whole context: the last of every `global_every`,
    /// so a remainder of layers past the last whole group is local (Gemma 3 27B's 62 layers
    /// in groups of six have ten global ones, layers 6, 12, ..., 60); with a window and no
    /// `global_every`, none (every layer local, as Mistral 7B v0.1).
    pub fn global_layers(&self) -> f64 {
        match (self.sliding_window, self.global_every) {
            (Some(_), Some(n)) if n > 0 => (f64::from(self.layers) / f64::from(n)).floor(),
            (Some(_), _) => 0.0,
            (None, _) => f64::from(self.layers),
        }
    }

    /// Attended tokens summed over layers for a token at position `ctx`: global layers see
    /// the whole context, local layers at most their window.
    pub fn attended_tokens(&self, ctx: f64) -> f64 {
        let global = self.global_layers();
        let local = f64::from(self.layers) - global;
        let window = f64::from(self.sliding_window.unwrap_or(0));
        global * ctx + local * ctx.min(window)
    }

    /// Values cached per attended token per layer (keys and values, or the MLA latent).
    pub fn kv_values_per_token_layer(&self) -> f64 {
        match self.attention {
            AttentionKind::Mla => {
                f64::from(self.kv_lora_rank.unwrap_or(512) + self.qk_rope_dim.unwrap_or(64))
            }
            AttentionKind::Mha | AttentionKind::Gqa => {
                2.0 * f64::from(self.kv_heads) * f64::from(self.head_dim)
            }
        }
    }

    /// KV-cache bytes held for one sequence of `ctx` tokens at precision `kv`.
    pub fn kv_bytes(&self, ctx: f64, kv: Precision) -> f64 {
        self.attended_tokens(ctx) * self.kv_values_per_token_layer() * kv.bytes()
    }

    /// Attention FLOPs (scores and weighted sum) for one decoded token at position `ctx`:
    /// 2·2·heads·head_dim per attended token per layer; for MLA, 2·heads·(the latent and
    /// rope widths the scores span + the latent width the sum spans).
    pub fn attention_flops(&self, ctx: f64) -> f64 {
        let width = match self.attention {
            // Absorbed MLA attends in the latent space: scores over latent+rope, output over
            // the latent (DeepSeek-V2 paper, section 2.1.2, https://arxiv.org/abs/2405.04434).
            AttentionKind::Mla => {
                f64::from(2 * self.kv_lora_rank.unwrap_or(512) + self.qk_rope_dim.unwrap_or(64))
                    / 2.0
            }
            _ => f64::from(self.head_dim),
        };
        4.0 * f64::from(self.heads) * width * self.attended_tokens(ctx)
    }

    /// Attention FLOPs for one prompt token at position `ctx`. Engines run a prompt's MLA in
    /// its decompressed form, the latent expanded into per-head keys and values, because
    /// when as many queries as keys attend it is the form with less arithmetic (vLLM's MLA
    /// backends: "compute friendly" for prefill, "data-movement friendly" for decode,
    /// <https://github.com/vllm-project/vllm/blob/main/vllm/v1/attention/backends/mla/common.py>):
    /// scores over `head_dim` (the no-rope part and the rope part) and the weighted sum over
    /// value heads of `head_dim - qk_rope_dim` (DeepSeek-V3 and Kimi K2: 192 and 128, against
    /// 576 and 512 absorbed). Other attention is the same in both passes.
    pub fn prompt_attention_flops(&self, ctx: f64) -> f64 {
        match self.attention {
            AttentionKind::Mla => {
                let qk = f64::from(self.head_dim);
                let v = qk - f64::from(self.qk_rope_dim.unwrap_or(64));
                2.0 * f64::from(self.heads) * (qk + v) * self.attended_tokens(ctx)
            }
            _ => self.attention_flops(ctx),
        }
    }

    /// The weight precision used when none is asked for.
    pub fn default_precision(&self) -> Precision {
        self.native_precision.unwrap_or(Precision::Bf16)
    }

    /// Bytes per weight outside the routed experts when the weights are stored at
    /// `weights`: [`Model::dense_precision`]'s at the native precision, else `weights`'.
    pub fn dense_bytes(&self, weights: Precision) -> f64 {
        match self.dense_precision {
            Some(d) if Some(weights) == self.native_precision => d.bytes().max(weights.bytes()),
            _ => weights.bytes(),
        }
    }

    /// Bytes of all the weights stored at `weights`.
    pub fn weight_bytes(&self, weights: Precision) -> f64 {
        let routed = self.routed_expert_params();
        self.dense_params() * self.dense_bytes(weights) + routed * weights.bytes()
    }

    /// The fewest and the most parameters a dense model of these shapes holds: the
    /// embedding table once (tied to the head) or twice, each layer's query, key, value and
    /// output projections, and its feed-forward block of two matrices (Falcon's) or three
    /// (gated, Llama's); norms and biases left out.
    fn dense_shape_params(&self) -> (f64, f64) {
        let (h, layers) = (f64::from(self.hidden), f64::from(self.layers));
        let table = f64::from(self.vocab) * h;
        let attention = 2.0 * h * f64::from(self.head_dim) * f64::from(self.heads + self.kv_heads);
        let ffn = h * f64::from(self.ffn_hidden);
        (
            table + layers * (attention + 2.0 * ffn),
            2.0 * table + layers * (attention + 3.0 * ffn),
        )
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        if self.id.trim().is_empty() {
            return Err("field `id` must not be empty".into());
        }
        for (field, v) in [
            ("layers", self.layers),
            ("hidden", self.hidden),
            ("heads", self.heads),
            ("kv_heads", self.kv_heads),
        ] {
            if v == 0 {
                return Err(format!("field `{field}` must be above 0"));
            }
        }
        let sizes = [
            ("head_dim", self.head_dim),
            ("ffn_hidden", self.ffn_hidden),
            ("vocab", self.vocab),
        ];
        if let Some((field, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            // `vocab` may be left out of the file, which reads as 0.
            let missing = if *field == "vocab" {
                " (it is missing or 0)"
            } else {
                ""
            };
            return Err(format!("field `{field}` must be above 0{missing}"));
        }
        if self.max_context == 0 {
            return Err("field `max_context` must be above 0".into());
        }
        // Key-value heads are shared by whole groups of query heads.
        if self.kv_heads > self.heads || !self.heads.is_multiple_of(self.kv_heads) {
            return Err(format!(
                "field `kv_heads` ({}) must divide `heads` ({}): each key-value head serves a whole group of query heads",
                self.kv_heads, self.heads
            ));
        }
        let optional = [
            ("experts", self.experts),
            ("experts_per_token", self.experts_per_token),
            ("moe_layers", self.moe_layers),
            ("kv_lora_rank", self.kv_lora_rank),
            ("qk_rope_dim", self.qk_rope_dim),
            ("sliding_window", self.sliding_window),
            ("global_every", self.global_every),
        ];
        if let Some((field, _)) = optional.iter().find(|(_, v)| *v == Some(0)) {
            return Err(format!("field `{field}` must be above 0 where given"));
        }
        if self.global_every.is_some() && self.sliding_window.is_none() {
            return Err("field `global_every` needs `sliding_window`, the window the other layers attend within".into());
        }
        // A mixed checkpoint keeps its other weights wider than its experts' native format.
        if let Some(d) = self.dense_precision {
            match self.native_precision {
                None => return Err("field `dense_precision` needs `native_precision`, the experts' format it differs from".into()),
                Some(n) if d.bytes() <= n.bytes() => {
                    return Err(format!(
                        "field `dense_precision` ({d}) must be wider than `native_precision` ({n}); where they are the same, leave it out"
                    ))
                }
                Some(_) => {}
            }
        }
        // The latent's width sets the KV cache's size: no default stands in for it.
        if self.attention == AttentionKind::Mla
            && (self.kv_lora_rank.is_none() || self.qk_rope_dim.is_none())
        {
            return Err(
                "an MLA model needs `kv_lora_rank` and `qk_rope_dim` (512 and 64 for DeepSeek-V3)"
                    .into(),
            );
        }
        // A prompt's MLA splits each query-key head into its no-rope and rope parts, and
        // its value heads are the no-rope part (see `prompt_attention_flops`).
        if self.attention == AttentionKind::Mla && self.head_dim <= self.qk_rope_dim.unwrap_or(64) {
            return Err(format!(
                "field `head_dim` ({}) of an MLA model must exceed `qk_rope_dim` ({}): it is the query-key head, its no-rope part and its rope part together",
                self.head_dim,
                self.qk_rope_dim.unwrap_or(64)
            ));
        }
        // Fields that describe a part the model does not have are mistakes, not defaults.
        if self.experts.is_none() {
            if let Some((field, _)) = [
                ("experts_per_token", self.experts_per_token),
                ("moe_layers", self.moe_layers),
            ]
            .iter()
            .find(|(_, v)| v.is_some())
            {
                return Err(format!(
                    "field `{field}` describes a mixture of experts, but the model gives no `experts`"
                ));
            }
        }
        if self.attention != AttentionKind::Mla {
            if let Some((field, _)) = [
                ("kv_lora_rank", self.kv_lora_rank),
                ("qk_rope_dim", self.qk_rope_dim),
            ]
            .iter()
            .find(|(_, v)| v.is_some())
            {
                return Err(format!(
                    "field `{field}` belongs to multi-head latent attention; set `attention = \"mla\"` or leave it out"
                ));
            }
        }
        if let (Some(e), Some(k)) = (self.experts, self.experts_per_token) {
            if k > e {
                return Err(format!(
                    "field `experts_per_token` ({k}) must be at most `experts` ({e})"
                ));
            }
            // A token that skips some experts uses fewer parameters than the model holds.
            if k < e && self.active_params_b >= self.total_params_b {
                return Err(format!(
                    "field `active_params_b` ({}) must be below `total_params_b` ({}): a token uses {k} of the {e} experts",
                    self.active_params_b, self.total_params_b
                ));
            }
        }
        if self.shared_experts.is_some() && self.experts.is_none() {
            return Err(
                "field `shared_experts` describes a mixture of experts, but the model gives no `experts`"
                    .into(),
            );
        }
        // Multi-head attention has a key-value head for every query head; fewer is GQA.
        if self.attention == AttentionKind::Mha && self.kv_heads != self.heads {
            return Err(format!(
                "field `kv_heads` ({}) must equal `heads` ({}) with `attention = \"mha\"`; fewer key-value heads is `gqa`",
                self.kv_heads, self.heads
            ));
        }
        if self.moe_layers.is_some_and(|l| l > self.layers) {
            return Err("field `moe_layers` must be at most `layers`".into());
        }
        // Up to a million billion parameters: a larger figure is a typo, and an infinite one
        // would make every time infinite.
        if !(self.total_params_b > 0.0 && self.total_params_b <= 1e6) {
            return Err(
                "field `total_params_b` must be above 0 and at most 10^6 (billions)".into(),
            );
        }
        // The embedding table and half of each layer's query and output projections are a
        // floor no real model is under (a typo of units, billions read as units, is not).
        let floor = f64::from(self.vocab) * f64::from(self.hidden)
            + f64::from(self.layers)
                * f64::from(self.hidden)
                * f64::from(self.heads)
                * f64::from(self.head_dim)
                * 0.5;
        if self.total_params_b * 1e9 < floor {
            return Err(format!(
                "field `total_params_b` ({}) is below the {} billion parameters that the embedding table and attention of these shapes hold alone",
                self.total_params_b,
                billions(floor)
            ));
        }
        if !(self.active_params_b > 0.0 && self.active_params_b <= self.total_params_b) {
            return Err(
                "field `active_params_b` must be above 0 and at most `total_params_b`".into(),
            );
        }
        // A dense model's count follows from its shapes, and the model takes the count for
        // its weights: Llama 8B's shapes declared as 70 billion streamed 70 billion a step
        // while its KV cache and attention were 8B's. Multi-head latent attention's
        // projections are not in these fields, so only other attention is checked.
        if !self.is_moe() && self.attention != AttentionKind::Mla {
            let (least, most) = self.dense_shape_params();
            if !(0.9 * least..=1.1 * most).contains(&(self.total_params_b * 1e9)) {
                return Err(format!(
                    "field `total_params_b` ({}) is outside the {} to {} billion parameters these shapes hold (the embedding table, tied or not, each layer's attention and a feed-forward block of two or three matrices, a tenth either way): one of them is wrong",
                    self.total_params_b,
                    billions(least),
                    billions(most)
                ));
            }
            // Every token of a dense model goes through every parameter.
            if self.active_params_b < 0.99 * self.total_params_b {
                return Err(format!(
                    "field `active_params_b` ({}) must equal `total_params_b` ({}) in a dense model, whose every token uses every parameter (a model with experts gives `experts`)",
                    self.active_params_b, self.total_params_b
                ));
            }
        }
        if self.is_moe() && self.experts_per_token.is_none() {
            return Err("a model with `experts` needs `experts_per_token`".into());
        }
        if self.routed_expert_params() > self.total_params_b * 1e9 * 1.02 {
            return Err("routed experts (moe_layers x experts x 3 x hidden x ffn_hidden) exceed `total_params_b`".into());
        }
        if self.routed_active_params() > self.active_params_b * 1e9 * 1.02 {
            return Err("the experts a token uses (moe_layers x experts_per_token x 3 x hidden x ffn_hidden) exceed `active_params_b`".into());
        }
        crate::check_sources("sources", &self.sources)?;
        Ok(())
    }
}

/// A count of parameters in billions, to two decimals, or to three significant figures
/// below 0.1 billion, so that a small model's bounds do not both print as 0.00.
fn billions(params: f64) -> String {
    let b = params / 1e9;
    if b >= 0.1 || b <= 0.0 {
        format!("{b:.2}")
    } else {
        let digits = (2.0 - b.log10().floor()).clamp(0.0, 12.0) as usize;
        format!("{b:.digits$}")
    }
}
