//! GPU physics: the kernels of a step over HBM bandwidth and tensor-core FLOPs per chip,
//! plus the tensor-parallel all-reduces, expert-parallel all-to-alls and pipeline hops
//! between chips.
//!
//! Decode streams every weight a step touches and every sequence's KV cache once per step
//! (Williams et al., "Roofline", CACM 2009; applied to LLM decode in Pope et al.,
//! "Efficiently Scaling Transformer Inference", <https://arxiv.org/abs/2211.05102>, §2).
//! A kernel's time is its streaming time plus its arithmetic time ([`kernel_time`]): the
//! no-overlap bound, where the roofline's maximum of the two is the perfect-overlap bound.
//! A ring all-reduce of `n` bytes over `t` chips moves 2(t−1)/t·n bytes per chip
//! (Patarasuk and Yuan, JPDC 2009) after a fixed latency.

use crate::{Bound, Deployment, Params, Prompts, Step, StepPart};

/// Bytes per activation value passed between chips (activations stay 16-bit).
const ACT_BYTES: f64 = 2.0;

/// One layer's exchange between chips: a latency paid once, and a time per token carried.
#[derive(Clone, Copy)]
struct Exchange {
    latency: f64,
    per_token: f64,
}

impl Exchange {
    const NONE: Exchange = Exchange {
        latency: 0.0,
        per_token: 0.0,
    };

    /// Two exchanges per layer (out and back, or after attention and after the MLP) over
    /// `layers` layers carrying `tokens` tokens.
    fn time(self, tokens: f64, layers: f64) -> f64 {
        2.0 * layers * (self.latency + tokens * self.per_token)
    }
}

/// The tensor-parallel all-reduce of one token's activation, two per layer (after attention
/// and after the MLP).
///
/// A group wider than the scale-up domain (tp16 over two eight-GPU nodes, tp8 over a PCIe
/// server's bridged pairs) reduces hierarchically, as NCCL does: a reduce-scatter and an
/// all-gather inside each domain over the fast fabric, and between them an all-reduce across
/// the `m` domains of each chip's 1/g shard over the network, which moves 2(m−1)/m of the
/// shard per chip and adds the network's latency. A decode step's shards are a few
/// kilobytes, which NCCL reduces over its double binary trees, whose latency grows with the
/// logarithm of the nodes (<https://developer.nvidia.com/blog/massively-scale-deep-learning-training-nccl-2-4/>):
/// the two-node latency ([`Params::network_allreduce_latency_s`]) times log2(m).
fn allreduce(d: &Deployment<'_>, p: &Params) -> Exchange {
    let tp = f64::from(d.layout.tp);
    if tp <= 1.0 {
        return Exchange::NONE;
    }
    let link = d.system.interconnect_gb_s.unwrap_or(100.0) * 1e9 * p.fabric_eff;
    let bytes = f64::from(d.model.hidden) * ACT_BYTES;
    // Chips of the group in one domain, and domains the group spans.
    let g = tp.min(f64::from(d.system.scale_up()));
    let m = tp / g;
    let inside = Exchange {
        latency: p.allreduce_latency_s,
        per_token: 2.0 * (g - 1.0) / g * bytes / link,
    };
    if m <= 1.0 {
        return inside;
    }
    Exchange {
        latency: inside.latency + p.network_allreduce_latency_s * m.log2(),
        per_token: inside.per_token + 2.0 * (m - 1.0) / m * (bytes / g) / (p.network_gb_s * 1e9),
    }
}

/// Time of the tensor-parallel all-reduces of one pass over `layers` layers carrying
/// `tokens` token activations (see [`allreduce`]).
pub(crate) fn allreduce_time(d: &Deployment<'_>, p: &Params, tokens: f64, layers: f64) -> f64 {
    allreduce(d, p).time(tokens, layers)
}

/// The expert-parallel all-to-all of one token of one expert-parallel group: each token's
/// activation goes to the groups holding its `k` experts and the results come back (dispatch
/// and combine), each chip of the group sending its 1/tp share, spread evenly over the `ep`
/// groups. The share bound for groups in the chip's own scale-up domain crosses the fast
/// fabric; the rest, when the groups span several domains (wide expert parallelism), crosses
/// the network at [`Params::network_gb_s`] per chip, the two at once. A group wider than a
/// domain shares none with another group, so all of its exchange crosses the network.
fn all_to_all(d: &Deployment<'_>, p: &Params) -> Exchange {
    let ep = f64::from(d.layout.ep);
    if ep <= 1.0 {
        return Exchange::NONE;
    }
    let tp = f64::from(d.layout.tp);
    let k = f64::from(d.model.experts_per_token.unwrap_or(1));
    let link = d.system.interconnect_gb_s.unwrap_or(100.0) * 1e9 * p.fabric_eff;
    let bytes = k * f64::from(d.model.hidden) * ACT_BYTES / tp;
    // Groups that share the chip's scale-up domain, its own included.
    let near = (f64::from(d.system.scale_up()) / tp).floor().clamp(1.0, ep);
    let fabric = bytes * (near - 1.0) / ep / link;
    let network = bytes * (ep - near) / ep / (p.network_gb_s * 1e9);
    Exchange {
        latency: p.allreduce_latency_s,
        per_token: fabric.max(network),
    }
}

/// Time of the all-to-all exchanges of expert parallelism over `layers` mixture-of-experts
/// layers, for `tokens` tokens of one expert-parallel group (see [`all_to_all`]).
pub(crate) fn all_to_all_time(d: &Deployment<'_>, p: &Params, tokens: f64, layers: f64) -> f64 {
    all_to_all(d, p).time(tokens, layers)
}

/// How much more than its even share the busiest of `ep` expert-parallel groups receives
/// when `assignments` token-to-expert choices land on them at random: the expected maximum
/// of `ep` near-normal loads is the mean plus sqrt(2 ln ep) standard deviations (Gumbel's
/// extreme-value limit), each load being binomial with n = assignments and p = 1/ep. At most
/// `ep` (everything on one group).
fn expert_imbalance(ep: f64, assignments: f64) -> f64 {
    if ep <= 1.0 {
        return 1.0;
    }
    let spread = (2.0 * ep.ln()).sqrt() * ((ep - 1.0) / assignments.max(1.0)).sqrt();
    (1.0 + spread).min(ep)
}

/// Datasheet peak FLOP/s per chip for the deployment's weights.
fn peak(d: &Deployment<'_>) -> f64 {
    d.system.flops(d.weights).map_or(1e12, |(f, _)| f)
}

/// The share of its datasheet FP8 peak that H100's measured large matrix product reaches
/// (1,382.2 of 1,979 TFLOP/s; the catalog's `measured` table for `h100-sxm`): the chip the
/// FLOP efficiencies are stated on.
const REFERENCE_GEMM_SHARE: f64 = 1382.2 / 1979.0;

/// FLOP/s that matrix products reach per chip at efficiency `eff` of a datasheet `peak`.
/// The efficiencies ([`Params::gpu_decode_flops_eff`], [`Params::gpu_prefill_flops_eff`])
/// are stated on H100; a chip whose large products were measured
/// ([`switchyard_catalog::System::matrix_share`]) reaches its measured share over H100's
/// times as much of its own peak (A100 1.18×, H200 0.96×, B200 and GB200 0.83×, MI300X
/// 0.67×), at every precision, and a chip with neither a measurement nor a lender
/// (`matrix_share_from`) H100's share. Never above the peak. An efficiency may take a chip
/// past its measured large product: the efficiencies are fitted, and absorb what timing a
/// kernel as its stream plus its arithmetic ([`kernel_time`]) overstates for a product
/// that overlaps them, so a user's `calibrate` may need them that high.
///
/// Why the measured share scales decode as well as prefill is the published runs, not the
/// shapes of the products: decode's are skinnier than the measured ones, and their
/// shortfall is in the efficiency, but how far one chip's kernels get from its peak
/// against another's carries over. With decode unscaled the Hopper runs were
/// under-predicted 15-40% while the Blackwell and AMD runs fit, and the measurements are
/// what tell those chips apart: H100 reaches 0.70 of its FP8 peak, GB200 0.58, MI300X 0.47.
/// Scaled, with one efficiency of 0.45 for both, `reference/points.csv` went from 27.1% to
/// 25.1% and `reference/heldout.csv` from 22.9% to 20.7% (0.44-0.46 gave 25.0-25.1% and
/// 20.7-21.0%); the MLPerf rows from 17.6% and 16.6% to 13.9% and 15.0%. The cost is
/// borne by the three multi-GPU H100 rows of TensorRT-LLM's 2023 tables and one dashboard
/// row, already 53-73% over their published throughput and now 63-82% over.
///
/// One share, FP8's where measured, serves every precision. GB200's FP4 product reaches
/// 0.76 of its FP4 peak at 16,384 rows, but products of serving size fall far shorter
/// ([`Params::gpu_decode_flops_eff`]), and the published FP4 runs refuse the higher share:
/// with GB200's and B200's FP4 products at it, 27.6% and 23.7% at best (efficiencies
/// 0.35-0.45).
fn achieved(d: &Deployment<'_>, peak: f64, eff: f64) -> f64 {
    peak * (eff * matrix_scale(d.system)).min(1.0)
}

/// FLOP/s the products of the deployment's weights reach per chip at efficiency `eff`
/// ([`achieved`] at the weights' datasheet peak).
pub(crate) fn weight_rate(d: &Deployment<'_>, eff: f64) -> f64 {
    achieved(d, peak(d), eff)
}

/// What the FLOP efficiencies, stated on H100, are multiplied by on `system`: its measured
/// matrix share over H100's, 1 where it has none (see `achieved`).
pub fn matrix_scale(system: &switchyard_catalog::System) -> f64 {
    system
        .matrix_share()
        .map_or(1.0, |s| s / REFERENCE_GEMM_SHARE)
}

/// The bandwidth a read stream achieves from HBM per chip, in bytes/s: the catalog's
/// measured figure, or the datasheet's times [`Params::gpu_bw_eff`].
pub(crate) fn read_bw(d: &Deployment<'_>, p: &Params) -> f64 {
    d.system.memory_bw_tb_s * 1e12 * d.system.read_bw_fraction().unwrap_or(p.gpu_bw_eff)
}

/// Peak FLOP/s per chip for attention, whose operands are the activations and the KV cache:
/// its products run at the KV cache's precision, not the weights' (FP4 weights do not make
/// attention an FP4 product).
pub(crate) fn attention_peak(d: &Deployment<'_>) -> f64 {
    // A KV cache stored in four bits is widened to at least eight for the products.
    let kv = if d.kv.bytes() < 1.0 {
        switchyard_catalog::Precision::Fp8
    } else {
        d.kv
    };
    d.system.flops(kv).map_or_else(|| peak(d), |(f, _)| f)
}

/// Seconds of matrix arithmetic (two FLOPs per parameter per token) over `params`
/// parameters for `tokens` tokens on one chip of `chips`, each reaching `rate` FLOP/s
/// (from [`weight_rate`], which callers take once for all their products).
fn matmul_time(params: f64, tokens: f64, chips: f64, rate: f64) -> f64 {
    tokens * 2.0 * params / (chips * rate)
}

/// Seconds of attention arithmetic, `flops` of it, on one chip of `chips`, at the KV
/// cache's rate and efficiency `eff`. A decoded token's FLOPs are
/// [`switchyard_catalog::Model::attention_flops`], a prompt token's
/// [`switchyard_catalog::Model::prompt_attention_flops`] (MLA runs in another form there).
fn attention_time(d: &Deployment<'_>, flops: f64, chips: f64, eff: f64) -> f64 {
    flops / (chips * achieved(d, attention_peak(d), eff))
}

/// Seconds of one prompt token's arithmetic in a prompt of `isl` tokens riding a decode
/// step, at the prefill efficiency: its dense projections, attention and its share of the
/// output head on the `dense_chips` chips of the groups holding the step's prompts, its
/// routed experts over every chip of the replica.
pub(crate) fn prompt_token_time(d: &Deployment<'_>, p: &Params, isl: f64, dense_chips: f64) -> f64 {
    let eff = p.gpu_prefill_flops_eff;
    let chips = f64::from(d.layout.replica_chips());
    let rate = weight_rate(d, eff);
    let head = d.model.head_params();
    let routed = d.model.routed_active_params();
    let dense = (d.model.computed_params() - head - routed).max(0.0);
    matmul_time(dense, 1.0, dense_chips, rate)
        + matmul_time(head, isl.max(1.0).recip(), dense_chips, rate)
        + matmul_time(routed, 1.0, chips, rate)
        + attention_time(
            d,
            d.model.prompt_attention_flops(isl / 2.0),
            dense_chips,
            eff,
        )
}

/// The weight kernels of one pass, per chip, each as (seconds streaming its weights at `bw`
/// bytes/s, seconds of its arithmetic at efficiency `eff`): the dense projections (attention
/// projections, dense layers, shared experts), which one expert-parallel group runs over
/// its `group_chips` chips for its `group_tokens` tokens, and the routed experts, spread
/// over the `ep` groups' chips, which see `expert_tokens` tokens from all of them. The
/// expert kernel streams every expert some token chose while each expert multiplies only
/// its k/E share of the tokens, padded to a tile of at most `tile` rows, and to no more
/// than `pad` times the rows it gets (see [`Params::gpu_expert_tile_tokens`] and
/// [`Params::gpu_expert_pad`]), and waits for the busiest group.
fn weight_kernels(
    d: &Deployment<'_>,
    bw: f64,
    (group_tokens, expert_tokens): (f64, f64),
    group_chips: f64,
    eff: f64,
    (tile, pad): (f64, f64),
) -> [(f64, f64); 2] {
    let m = d.model;
    let ep = f64::from(d.layout.ep);
    let rate = weight_rate(d, eff);
    let stream = |params: f64, bytes: f64, chips: f64| params * bytes / chips / bw;
    let routed = m.routed_active_params();
    let k = f64::from(m.experts_per_token.unwrap_or(1));
    let busiest = expert_imbalance(ep, expert_tokens * k);
    let reached = m.touched_expert_params(expert_tokens);
    let touched = (reached * busiest).min(m.routed_expert_params());
    // The rows a touched expert gets on average: k per token over the experts reached.
    let rows = if reached > 0.0 {
        m.routed_active_params() * expert_tokens / reached
    } else {
        0.0
    };
    [
        (
            stream(m.streamed_dense_params(), d.dense_bytes(), group_chips),
            matmul_time(
                (m.computed_params() - routed).max(0.0),
                group_tokens,
                group_chips,
                rate,
            ),
        ),
        (
            stream(touched, d.weights.bytes(), group_chips * ep),
            // Each touched expert's rows, padded to its tile: a touched expert costs
            // `pad` times its rows of arithmetic, up to a whole tile.
            (matmul_time(routed, expert_tokens, group_chips * ep, rate) * busiest).max(
                matmul_time(touched, tile.min(pad * rows), group_chips * ep, rate),
            ),
        ),
    ]
}

/// Time of one kernel that streams its operands from HBM in `bytes_s` seconds and does its
/// arithmetic in `arithmetic_s` seconds: the sum, not the roofline's maximum.
///
/// The maximum is the perfect-overlap bound and the sum the no-overlap bound. A decode
/// step's products are skinny (a few hundred rows against thousands of columns) and each
/// lasts tens of microseconds, so the pipeline that overlaps loads with tensor-core work
/// spends much of the kernel filling and draining, and the sum is the closer of the two.
/// Against the 58 GPU throughput rows of `reference/points.csv`, at unchanged efficiencies,
/// the sum gives 39.9% MAPE and the maximum 46.9%, and the smooth maxima (a^n + b^n)^(1/n)
/// in between do worse than the sum (n = 1.5: 43.2%, n = 2: 44.6%, n = 4: 46.2%); against
/// the 21 GPU throughput rows `reference/heldout.csv` then held, which nothing is fitted to, 24.9% against 28.5%. At
/// batch 1 the arithmetic adds 1-2% to the stream time (more when speculative decoding
/// verifies several tokens a step).
///
/// Isolated products measured on one H200 overlap better than this: from 512 rows on, the
/// smooth maximum with n = 2 at the measured peak matches the larger ones within 16% in
/// bf16 and 28% in FP8 (`bench/gpu/README.md`). With the fitted efficiency, the sum stands
/// for an engine's whole step, not for one product (see [`Params::gpu_decode_flops_eff`]).
pub(crate) fn kernel_time(bytes_s: f64, arithmetic_s: f64) -> f64 {
    bytes_s + arithmetic_s
}

/// One decode step: `batch` sequences each verifying `q` tokens at mean context `ctx`.
///
/// The dense projections, the routed experts of a mixture-of-experts model and attention
/// run as separate kernels, one after the other, each timed by [`kernel_time`], and their
/// times add. The dense projections stream their weights once for the whole micro-batch
/// and do their matrix arithmetic. The routed experts stream every expert some token
/// chose, and each expert multiplies only its share of the tokens (k/E of them).
/// Attention streams each sequence's KV cache (its arithmetic is a few FLOPs per byte).
/// A kernel counts as bound by whichever of its two terms is larger, and the step by the
/// kind of kernel time that dominates: keeping the experts apart is what lets a step whose
/// dense projections are bound by arithmetic still be reported as bound by the expert
/// weights it streams.
///
/// With the step come its parts, which add up to its time: each kernel's stream and
/// arithmetic over every stage, the exchanges, the launches, the hops between stages and
/// the step's fixed overhead.
#[inline(always)] // see `Deployment::decode_step`
pub(crate) fn decode_step(
    d: &Deployment<'_>,
    p: &Params,
    batch: f64,
    q: f64,
    ctx: f64,
) -> (Step, [StepPart; 10]) {
    let pp = f64::from(d.layout.pp);
    let ep = f64::from(d.layout.ep);
    let chips = f64::from(d.layout.replica_chips());
    // Pipeline stages each hold 1/pp of the layers; `pp` micro-batches keep them all busy,
    // so each stage works on batch/pp sequences at a time, split over the expert-parallel
    // groups.
    // The busiest group runs at least one sequence.
    let micro = (batch / (pp * ep)).max(1.0) * ep;
    let tokens = micro * q;
    // The experts see the micro-batch's real tokens: at a batch below `ep` the other groups
    // are idle, not carrying a sequence each.
    let expert_tokens = (batch / pp).max(1.0) * q;
    let group = f64::from(d.layout.tp) * pp;
    let bw = read_bw(d, p);
    let [dense, experts] = weight_kernels(
        d,
        bw,
        (tokens / ep, expert_tokens),
        group,
        p.gpu_decode_flops_eff,
        (p.gpu_expert_tile_tokens, p.gpu_expert_pad),
    );
    let kv_bytes = micro * d.model.kv_bytes(ctx, d.kv) * d.kv_share_per_chip();
    let attention = (
        kv_bytes / bw,
        attention_time(
            d,
            tokens * d.model.attention_flops(ctx),
            chips,
            p.gpu_decode_flops_eff,
        ),
    );
    // The step's bound is the kind of kernel time that dominates.
    let (mut mem, mut comp) = (0.0, 0.0);
    for (bytes, arithmetic) in [dense, experts, attention] {
        if arithmetic > bytes {
            comp += kernel_time(bytes, arithmetic);
        } else {
            mem += kernel_time(bytes, arithmetic);
        }
    }
    let work = mem + comp;
    let comm = allreduce_time(d, p, tokens / ep, f64::from(d.model.layers) / pp)
        + all_to_all_time(d, p, tokens / ep, moe_layers(d) / pp);
    let launches = f64::from(d.model.layers) * p.gpu_layer_overhead_s;
    let stage = work + comm + launches / pp;
    let time = pp * stage + (pp - 1.0) * p.gpu_stage_hop_s + p.gpu_step_overhead_s;
    let bound = if p.gpu_step_overhead_s + launches > (work + comm) * pp {
        Bound::Overhead
    } else if comm > work {
        Bound::Interconnect
    } else if comp > mem {
        Bound::Compute
    } else {
        Bound::MemoryBandwidth
    };
    // A kernel's time is its stream plus its arithmetic (`kernel_time`), so the two parts
    // of each add up to it.
    let parts = [
        StepPart::new("dense weights, stream", pp * dense.0),
        StepPart::new("dense weights, arithmetic", pp * dense.1),
        StepPart::new("expert weights, stream", pp * experts.0),
        StepPart::new("expert weights, arithmetic", pp * experts.1),
        StepPart::new("KV cache, stream", pp * attention.0),
        StepPart::new("attention, arithmetic", pp * attention.1),
        StepPart::new("exchanges between chips", pp * comm),
        StepPart::new("kernel launches", launches),
        StepPart::new("hops between stages", (pp - 1.0) * p.gpu_stage_hop_s),
        StepPart::new("step overhead", p.gpu_step_overhead_s),
    ];
    (Step { time, bound }, parts)
}

/// Seconds a decode step of `batch` sequences, each verifying `q` tokens, takes beyond its
/// own time and the chunked-prefill cost of the `chunk` prompt tokens riding it
/// ([`Deployment::prefill_token_cost`], which charges their routed experts' arithmetic
/// unpadded): the experts the chunk's tokens reach and the decoding tokens do not, whose
/// weights the step streams too, and the padding of the rows the experts then get. The
/// routed-expert kernel of the step sees every token it carries, each stage its share of
/// the chunk as of the sequences; this is that kernel on all of them, less the kernel on
/// the decoding tokens alone and the chunk's unpadded arithmetic, never below nothing.
/// Charged the arithmetic alone, a 1,024-token prompt riding the steps of a mixture of
/// experts came out sooner than it did alone (gpt-oss-120b on one H100: 20 ms beside a
/// few requests decoding, 58 ms alone), its experts' weights left unread.
pub(crate) fn chunk_experts(d: &Deployment<'_>, p: &Params, batch: f64, q: f64, chunk: f64) -> f64 {
    if !d.model.is_moe() || chunk <= 0.0 {
        return 0.0;
    }
    let pp = f64::from(d.layout.pp);
    let ep = f64::from(d.layout.ep);
    let group = f64::from(d.layout.tp) * pp;
    let bw = read_bw(d, p);
    let tiles = (p.gpu_expert_tile_tokens, p.gpu_expert_pad);
    // As `decode_step` sees its sequences' tokens.
    let decoding = (batch / pp).max(1.0) * q;
    let kernel = |tokens: f64| {
        let [_, experts] =
            weight_kernels(d, bw, (0.0, tokens), group, p.gpu_decode_flops_eff, tiles);
        kernel_time(experts.0, experts.1)
    };
    let share = chunk / pp;
    let charged = matmul_time(
        d.model.routed_active_params(),
        share,
        group * ep,
        weight_rate(d, p.gpu_prefill_flops_eff),
    );
    pp * (kernel(decoding + share) - kernel(decoding) - charged).max(0.0)
}

/// A pass of prompt tokens only. Pipeline stages run one after another, so the pass takes
/// the whole model's work over one stage's tensor-parallel group. With expert parallelism
/// the prompts spread over the groups, each prompt whole in one: the busiest group runs
/// an even share of the tokens or the longest prompt, whichever is more, through the dense
/// projections and attention, while the routed experts of all groups see every token.
pub(crate) fn prefill(d: &Deployment<'_>, p: &Params, prompts: &Prompts) -> f64 {
    let n = prompts.tokens.max(1.0);
    let tp = f64::from(d.layout.tp);
    let pp = f64::from(d.layout.pp);
    let groups = f64::from(prompts.count.clamp(1, d.layout.ep.max(1)));
    let per_group = (n / groups).max(prompts.longest).min(n);
    let eff = p.gpu_prefill_flops_eff;
    let [dense, experts] = weight_kernels(
        d,
        read_bw(d, p),
        (per_group, n),
        tp,
        eff,
        (p.gpu_expert_tile_tokens, p.gpu_expert_pad),
    );
    // The output head runs for each prompt's last position only (see
    // `Deployment::prompt_token_flops`), not for all of the busiest group's tokens.
    let group_prompts = (f64::from(prompts.count.max(1)) / groups)
        .max(1.0)
        .min(per_group);
    let head_skipped = matmul_time(
        d.model.head_params(),
        per_group - group_prompts,
        tp,
        weight_rate(d, eff),
    );
    let kernels =
        kernel_time(dense.0, (dense.1 - head_skipped).max(0.0)) + kernel_time(experts.0, experts.1);
    kernels
        + attention_time(
            d,
            per_group * d.model.prompt_attention_flops(prompts.ctx),
            tp,
            eff,
        )
        + allreduce_time(d, p, per_group, f64::from(d.model.layers))
        + all_to_all_time(d, p, per_group, moe_layers(d))
        // A pass launches every layer's kernels, as a decode step does: a one-token prompt
        // is no faster than a step of one sequence.
        + f64::from(d.model.layers) * p.gpu_layer_overhead_s
        + (pp - 1.0) * p.gpu_stage_hop_s
        + p.gpu_step_overhead_s
}

/// Exchange time per prompt token when prompts ride in chunks beside decodes: the bytes of
/// one token's activation through every all-reduce and all-to-all of a pass. The exchanges'
/// fixed latencies are the step's, paid once for all its tokens.
pub(crate) fn exchange_per_token(d: &Deployment<'_>, p: &Params) -> f64 {
    2.0 * (f64::from(d.model.layers) * allreduce(d, p).per_token
        + moe_layers(d) * all_to_all(d, p).per_token)
}

/// Layers with routed experts.
fn moe_layers(d: &Deployment<'_>) -> f64 {
    if d.model.is_moe() {
        f64::from(d.model.moe_layers.unwrap_or(d.model.layers))
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::{all_to_all_time, allreduce_time, expert_imbalance, read_bw};
    use crate::{Catalog, Deployment, Layout, Params, Precision};

    /// One all-reduce of Llama 70B's decode at batch 96 on 8 x H100 against a measurement:
    /// FBGEMM's two-shot all-reduce took 21.0-22.3 us there
    /// (<https://github.com/pytorch/FBGEMM/pull/3139>). The latency and fabric share that
    /// time it were chosen before this check.
    #[test]
    fn an_all_reduce_takes_what_one_was_measured_to_take() {
        let cat = Catalog::builtin().expect("catalog");
        let d = Deployment::new(
            cat.model("llama-3.1-70b").expect("model"),
            cat.system("h100-sxm").expect("system"),
            Layout::replica(8, 1),
            Precision::Fp8,
        )
        .expect("deployment");
        // Two all-reduces per layer: one layer's pair, halved.
        let one = allreduce_time(&d, &Params::default(), 96.0, 1.0) / 2.0;
        assert!((19e-6..=24e-6).contains(&one), "{one}");
    }

    /// Wide expert parallelism against a measurement: DeepEP's low-latency kernels move one
    /// MoE layer's dispatch and combine for 128 tokens per GPU (hidden 7168, eight experts
    /// each) over 64 and 256 H800s with one 400 Gb/s NIC each in 186 + 353 us and
    /// 194 + 360 us (<https://github.com/deepseek-ai/DeepEP>, README, Performance). H800 is
    /// H100 with a narrower NVLink, which this exchange, almost all remote, barely uses.
    #[test]
    fn a_wide_expert_parallel_exchange_takes_what_deepep_measured() {
        let cat = Catalog::builtin().expect("catalog");
        let p = Params::default();
        for (ep, measured) in [(64u32, 539e-6), (256, 554e-6)] {
            let d = Deployment::new(
                cat.model("deepseek-r1").expect("model"),
                cat.system("h100-sxm").expect("system"),
                Layout {
                    ep,
                    ..Layout::replica(1, 1)
                },
                Precision::Fp8,
            )
            .expect("deployment");
            let one = all_to_all_time(&d, &p, 128.0, 1.0);
            assert!(
                (one / measured - 1.0).abs() < 0.15,
                "ep{ep}: {one} against {measured}"
            );
        }
    }

    #[test]
    fn the_busiest_group_carries_more_the_fewer_the_choices() {
        assert!((expert_imbalance(1.0, 8.0) - 1.0).abs() < 1e-12);
        // One token's eight choices over eight groups: the busiest gets several.
        let one = expert_imbalance(8.0, 8.0);
        assert!(one > 2.5 && one <= 8.0, "{one}");
        // A large batch spreads evenly.
        assert!(expert_imbalance(8.0, 1e6) < 1.01);
        let mut last = f64::INFINITY;
        for a in [8.0, 64.0, 512.0, 4096.0] {
            let f = expert_imbalance(8.0, a);
            assert!(f < last && f >= 1.0, "{a}: {f}");
            last = f;
        }
    }

    /// A step streams every weight it multiplies by, and of the input embedding table only
    /// the rows it gathers, which the stream leaves out; a head that reuses the table streams
    /// it once, whole.
    #[test]
    fn a_step_streams_the_embedding_table_only_as_the_head() {
        let cat = Catalog::builtin().expect("catalog");
        let p = Params::default();
        for (id, tied) in [("llama-3.1-8b", false), ("llama-3.2-1b", true)] {
            let d = on_one_h200(&cat, id, Precision::Bf16);
            let m = d.model;
            assert_eq!(m.tied_embeddings, tied, "{id}");
            let table = f64::from(m.vocab) * f64::from(m.hidden);
            let whole = m.total_params_b * 1e9;
            let streamed = if tied { whole } else { whole - table };
            let part = d
                .step_parts(&p, 1.0, 1024.0)
                .iter()
                .find(|x| x.part == "dense weights, stream")
                .expect("a stream part")
                .seconds;
            let expected = streamed * 2.0 / read_bw(&d, &p);
            assert!(
                (part / expected - 1.0).abs() < 1e-9,
                "{id}: {part} against {expected}"
            );
        }
    }

    /// Decode steps of a model in Llama 3.1 8B's shapes (random bf16 weights, one H200,
    /// every sequence at one context), each captured in one CUDA graph and timed by
    /// `bench/gpu/engine.py` on three machines on 2026-11-29 (`bench/gpu/h200-2026-11-29-*.json`):
    /// batch, context, and the step's median seconds on each. The engine is plain PyTorch:
    /// cuBLAS products, PyTorch's flash-decoding attention, and unfused norms and rotary
    /// embedding, about 35 small kernels a layer beside the products.
    const H200_LLAMA8B_STEPS: [(f64, f64, [f64; 3]); 10] = [
        (1.0, 1024.0, [6.3326e-3, 6.4110e-3, 6.5789e-3]),
        (1.0, 8192.0, [7.0049e-3, 7.0412e-3, 7.5286e-3]),
        (8.0, 2048.0, [7.8253e-3, 7.8732e-3, 8.3593e-3]),
        (32.0, 2048.0, [9.6688e-3, 9.7897e-3, 10.2627e-3]),
        (64.0, 1024.0, [9.9183e-3, 10.0128e-3, 10.3458e-3]),
        (64.0, 4096.0, [15.5199e-3, 15.7616e-3, 15.6898e-3]),
        (128.0, 2048.0, [16.1825e-3, 16.5315e-3, 16.4542e-3]),
        (256.0, 1024.0, [18.6683e-3, 19.0640e-3, 19.3445e-3]),
        (256.0, 2048.0, [26.0529e-3, 26.6605e-3, 26.9946e-3]),
        (512.0, 1024.0, [31.8578e-3, 32.7673e-3, 32.6810e-3]),
    ];

    /// The mean of one figure's runs.
    fn mean(runs: &[f64]) -> f64 {
        runs.iter().sum::<f64>() / runs.len() as f64
    }

    /// `model` on one H200 at `weights`, its KV cache in bf16 as the measured engine keeps
    /// it.
    fn on_one_h200<'a>(cat: &'a Catalog, model: &str, weights: Precision) -> Deployment<'a> {
        Deployment::new(
            cat.model(model).expect("model"),
            cat.system("h200").expect("system"),
            Layout::replica(1, 1),
            weights,
        )
        .expect("deployment")
        .with_kv(Some(Precision::Bf16))
    }

    fn h200_llama8b(cat: &Catalog) -> Deployment<'_> {
        on_one_h200(cat, "llama-3.1-8b", Precision::Bf16)
    }

    /// Decode steps of a model in Llama 3.1 70B's shapes with FP8 weights (per-tensor
    /// scales, a batch padded to 16 rows for the FP8 product) and a bf16 KV cache, on one
    /// H200, by the same engine (`bench/gpu/h200-2026-11-29-4.json`, one run): batch,
    /// context and the step's median seconds.
    const H200_LLAMA70B_FP8_STEPS: [(f64, f64, f64); 6] = [
        (1.0, 1024.0, 24.678e-3),
        (1.0, 8192.0, 28.220e-3),
        (16.0, 2048.0, 29.306e-3),
        (64.0, 2048.0, 39.705e-3),
        (128.0, 1024.0, 41.354e-3),
        (256.0, 512.0, 56.660e-3),
    ];

    /// The physics' decode step, less the engine's fixed step overhead (scheduling and
    /// sampling on the host, which a replayed graph does not do), against the steps
    /// measured on an H200. The plain engine launches about twice the small kernels a fused
    /// one does, so at small batches the physics' step is the shorter (by 17-30% at batches
    /// 1-16); at large ones the engine's products run at up to twice the speed that the
    /// physics' decode efficiency gives them, which it fits to published serving rows, so
    /// the physics' step is the longer (by 5-25% at batches 128-512). Within 35% either way
    /// at every batch and context measured, for 8B in bf16 and 70B in FP8.
    #[test]
    fn a_decode_step_takes_about_what_one_h200_took() {
        let cat = Catalog::builtin().expect("catalog");
        let p = Params::default();
        let llama8b = h200_llama8b(&cat);
        let llama70b = on_one_h200(&cat, "llama-3.1-70b", Precision::Fp8);
        let steps = H200_LLAMA8B_STEPS
            .iter()
            .map(|&(batch, ctx, runs)| (&llama8b, batch, ctx, mean(&runs)))
            .chain(
                H200_LLAMA70B_FP8_STEPS
                    .iter()
                    .map(|&(batch, ctx, s)| (&llama70b, batch, ctx, s)),
            );
        for (d, batch, ctx, measured) in steps {
            let model = d.decode_step(&p, batch, ctx).time - p.gpu_step_overhead_s;
            let ratio = model / measured;
            assert!(
                (0.65..=1.35).contains(&ratio),
                "{}, batch {batch}, context {ctx}: {model} s, {ratio} of the measured step",
                d.model.id
            );
        }
    }

    /// Small-batch steps of the 8B-shaped model with the work between its products fused
    /// by the PyTorch compiler, as serving engines fuse it (about 18 kernels a layer against
    /// the plain engine's 41; `bench/gpu/h200-2026-11-29-5.json` and `-6.json`, `fused`):
    /// batch, context and the median seconds on each machine (run 5 timed only the first).
    /// A lone sequence at context 1,024 took 4.96 and 5.38 ms, 52 and 66 us a layer beyond
    /// streaming its 15.0 GB of weights at the 4.57 TB/s the catalog streams an H200 at. The
    /// physics, less its host overhead, gives 4.95 ms: its 50 us a layer of launches, 1 us
    /// of KV-cache stream and attention and 1 us of the products' arithmetic. A small
    /// batch's step moved by up to 10% between runs and within one (`bench/gpu/README.md`);
    /// within 10% of the mean.
    #[test]
    fn a_small_batchs_step_takes_what_a_fused_engine_took() {
        let cat = Catalog::builtin().expect("catalog");
        let p = Params::default();
        let d = h200_llama8b(&cat);
        for (batch, ctx, runs) in [
            (1.0, 1024.0, vec![4.9644e-3, 5.3803e-3]),
            (1.0, 8192.0, vec![5.5691e-3]),
            (8.0, 2048.0, vec![5.9181e-3]),
        ] {
            let measured = mean(&runs);
            let model = d.decode_step(&p, batch, ctx).time - p.gpu_step_overhead_s;
            let ratio = model / measured;
            assert!(
                (0.9..=1.1).contains(&ratio),
                "batch {batch}, context {ctx}: {model} s, {ratio} of the measured step"
            );
        }
    }

    /// The KV cache's stream against PyTorch's flash-decoding attention over one layer's
    /// cache on the same H200s: batch, context and the median seconds on each machine.
    /// At these batches the kernel streams the cache at 4.2-4.4 TB/s, against the 4.57 of
    /// the catalog's measured read (Azure's STREAM dot product), so the physics is 4-7%
    /// faster. A lone sequence's attention (16 us a layer at 8,192 tokens, twice its
    /// stream) is a small kernel whose fixed cost the layers' launch overhead carries.
    #[test]
    fn the_kv_cache_streams_as_fast_as_flash_decoding_read_it() {
        let cat = Catalog::builtin().expect("catalog");
        let p = Params::default();
        let d = h200_llama8b(&cat);
        let layers = f64::from(d.model.layers);
        for (batch, ctx, runs) in [
            (64.0, 2048.0, [123.64e-6, 129.39e-6, 127.07e-6]),
            (256.0, 1024.0, [242.08e-6, 246.78e-6, 248.86e-6]),
        ] {
            let stream = d
                .step_parts(&p, batch, ctx)
                .iter()
                .find(|x| x.part == "KV cache, stream")
                .expect("a KV cache part")
                .seconds
                / layers;
            let ratio = stream / mean(&runs);
            assert!(
                (0.88..=1.05).contains(&ratio),
                "batch {batch}, context {ctx}: {stream} s a layer, {ratio} of the measured"
            );
        }
    }

    /// The fixed cost per layer of a decode step ([`Params::gpu_layer_overhead_s`]) against
    /// what one H200 spent beyond streaming a Llama 3.1 8B layer at batch 1
    /// (`bench/gpu/h200-2026-11-29-2.json` and `-3.json`, `decompose`): the layer's four
    /// products alone, replayed from a graph, then everything but them; each run's read
    /// bandwidth beside. The products of the 32 layers and the output head took 4.17 and
    /// 4.38 ms, 0.58 and 0.78 ms more than their 15.0 GB take at the 4.19 and 4.17 TB/s the
    /// same runs read at: 18-24 us a layer that no engine avoids with these kernels. The
    /// plain engine's 35 other kernels a layer took 2.61 and 2.63 ms (82 us a layer, 2.35 us
    /// each). The fixed cost lies between the two bounds: above what the products alone
    /// spend, below what the plain engine spends on everything (the fused engine's own
    /// figure is the test above).
    #[test]
    fn a_layers_fixed_cost_lies_within_what_one_h200_spent() {
        let layers = 32.0;
        let weights = 15.0098e9;
        for (products, rest, read) in [
            (4.1723e-3, 2.6101e-3, 4.1939e12),
            (4.3842e-3, 2.6313e-3, 4.1679e12),
        ] {
            let beyond_stream = (products - weights / read) / layers;
            let most = beyond_stream + rest / layers;
            let fixed = Params::default().gpu_layer_overhead_s;
            assert!(
                (beyond_stream..=most).contains(&fixed),
                "{fixed} s a layer, outside {beyond_stream} to {most}"
            );
        }
    }
}
