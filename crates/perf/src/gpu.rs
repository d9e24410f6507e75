//! GPU physics: a roofline over HBM bandwidth and tensor-core FLOPs per chip, plus the
//! tensor-parallel all-reduces and pipeline hops between chips.
//!
//! Decode streams every weight a step touches and every sequence's KV cache once per step
//! (Williams et al., "Roofline", CACM 2009; applied to LLM decode in Pope et al.,
//! "Efficiently Scaling Transformer Inference", <https://arxiv.org/abs/2211.05102>, §2).
//! A ring all-reduce of `n` bytes over `t` chips moves 2(t−1)/t·n bytes per chip
//! (Patarasuk and Yuan, JPDC 2009) after a fixed latency.

use crate::{Bound, Deployment, Params, Step};

/// Bytes per activation value passed between chips (activations stay 16-bit).
const ACT_BYTES: f64 = 2.0;

/// Time of the tensor-parallel all-reduces of one pass over `layers` layers carrying
/// `tokens` token activations: two per layer (after attention and after the MLP).
pub(crate) fn allreduce_time(d: &Deployment<'_>, p: &Params, tokens: f64, layers: f64) -> f64 {
    let tp = f64::from(d.layout.tp);
    if tp <= 1.0 {
        return 0.0;
    }
    let link = d.system.interconnect_gb_s.unwrap_or(100.0) * 1e9 * p.fabric_eff;
    let bytes = tokens * f64::from(d.model.hidden) * ACT_BYTES;
    2.0 * layers * (p.allreduce_latency_s + 2.0 * (tp - 1.0) / tp * bytes / link)
}

/// Peak FLOP/s per chip for the deployment's weights.
pub(crate) fn peak(d: &Deployment<'_>) -> f64 {
    d.system.flops(d.weights).map_or(1e12, |(f, _)| f)
}

/// One decode step: `batch` sequences each verifying `q` tokens at mean context `ctx`.
pub(crate) fn decode_step(d: &Deployment<'_>, p: &Params, batch: f64, q: f64, ctx: f64) -> Step {
    let pp = f64::from(d.layout.pp);
    let chips = f64::from(d.layout.replica_chips());
    // Pipeline stages each hold 1/pp of the layers; `pp` micro-batches keep them all busy,
    // so each stage works on batch/pp sequences at a time.
    let micro = (batch / pp).max(1.0);
    let tokens = micro * q;
    let w_bytes = (d.model.dense_params() + d.model.touched_expert_params(tokens))
        * d.weights.bytes()
        / chips;
    let kv_bytes = micro * d.model.kv_bytes(ctx, d.kv) * d.kv_share_per_chip();
    let bw = d.system.memory_bw_tb_s * 1e12 * p.gpu_bw_eff;
    let mem = (w_bytes + kv_bytes) / bw;
    let flops = tokens * d.token_flops(ctx) / chips;
    let comp = flops / (peak(d) * p.gpu_decode_flops_eff);
    let comm = allreduce_time(d, p, tokens, f64::from(d.model.layers) / pp);
    let stage = mem.max(comp) + comm;
    let time = pp * stage + (pp - 1.0) * p.gpu_stage_hop_s + p.gpu_step_overhead_s;
    let bound = if p.gpu_step_overhead_s > stage * pp {
        Bound::Overhead
    } else if comm > mem.max(comp) {
        Bound::Interconnect
    } else if comp > mem {
        Bound::Compute
    } else {
        Bound::MemoryBandwidth
    };
    Step { time, bound }
}

/// Prefill of one request of `n` tokens alone: pipeline stages run one after another, so the
/// pass takes the whole model's work over one stage's tensor-parallel group.
pub(crate) fn prefill(d: &Deployment<'_>, p: &Params, n: f64) -> f64 {
    let n = n.max(1.0);
    let tp = f64::from(d.layout.tp);
    let pp = f64::from(d.layout.pp);
    // Causal attention over a prompt of n tokens: the mean token attends to n/2 others.
    let flops = n * d.token_flops(n / 2.0);
    let comp = flops / (tp * peak(d) * p.gpu_prefill_flops_eff);
    let w_bytes =
        (d.model.dense_params() + d.model.touched_expert_params(n)) * d.weights.bytes() / tp;
    let mem = w_bytes / (d.system.memory_bw_tb_s * 1e12 * p.gpu_bw_eff);
    comp.max(mem)
        + allreduce_time(d, p, n, f64::from(d.model.layers))
        + (pp - 1.0) * p.gpu_stage_hop_s
        + p.gpu_step_overhead_s
}
