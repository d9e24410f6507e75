//! Physics of SRAM chips (Groq LPU) and dataflow units (SambaNova RDU).
//!
//! An LPU holds the weights only in on-chip SRAM, so a model spans as many chips as its
//! weights need; a layer's work is statically scheduled across the chips that hold it, and
//! the token pays a fixed per-layer latency plus one chip-to-chip crossing per chip the
//! layer spans. An RDU fuses each layer into one dataflow pipeline and streams its weights
//! from HBM, so a layer costs a fixed latency plus its per-socket bytes over HBM bandwidth;
//! weights beyond HBM sit in the DDR capacity tier and stream from there at its far lower
//! bandwidth (Prabhakar et al., "SambaNova SN40L", <https://arxiv.org/abs/2405.07518>).

use crate::{gpu, Bound, Deployment, Params, Prompts, Step, StepPart};
use switchyard_catalog::SystemKind;

/// What the stream of weights and KV cache from main memory is called in a step's parts.
const STREAM: &str = "weights and KV, stream";

/// One decode step of `batch` sequences each verifying `q` tokens at mean context `ctx`,
/// with its parts, which add up to its time: the fixed per-layer latencies, and the larger
/// of the stream and the arithmetic (the other overlaps it).
#[inline] // see `Deployment::decode_step`
pub(crate) fn decode_step(
    d: &Deployment<'_>,
    p: &Params,
    batch: f64,
    q: f64,
    ctx: f64,
) -> (Step, [StepPart; 2]) {
    let chips = f64::from(d.layout.replica_chips());
    let layers = f64::from(d.model.layers);
    let tokens = batch * q;
    let flops = tokens * d.token_flops(ctx);
    // The fixed latency, the stream and the arithmetic, and what the stream and the fixed
    // latency are called in the step's parts.
    let (fixed, memory, compute, stream, latency) = match d.system.kind {
        SystemKind::Lpu => {
            let per_layer_chips = (chips / layers).max(1.0);
            (
                layers * (p.lpu_layer_s + p.lpu_chip_hop_s * per_layer_chips),
                0.0,
                flops / chips / gpu::weight_rate(d, p.gpu_decode_flops_eff),
                STREAM,
                "per-layer latency and chip hops",
            )
        }
        _ => {
            // A token passes the pipeline's stages one after another, each streaming its
            // layers' share over its own tensor-parallel group: the step moves the whole
            // model's bytes through one stage's `tp` sockets, however many stages there are.
            let tp = f64::from(d.layout.tp);
            let weights = d.streamed_weight_bytes(tokens) / tp;
            // The busiest socket's sequences, each whole on it, stage after stage.
            let kv = (batch / tp).ceil() * d.model.kv_bytes(ctx, d.kv);
            // The share of the weights held in the capacity tier streams from there, over
            // its own channels, while the rest and the KV cache stream from HBM.
            // Only a system with a capacity tier can spill; the rest skip the fit.
            let spilled = match d.system.capacity_memory_bw_tb_s {
                Some(_) => {
                    let m = d.memory(p);
                    weights * (m.spilled_per_chip / m.weights_per_chip.max(1.0))
                }
                None => 0.0,
            };
            let hbm = (weights - spilled + kv) / (d.system.memory_bw_tb_s * 1e12 * p.rdu_bw_eff);
            let slow = d
                .system
                .capacity_memory_bw_tb_s
                .map_or(0.0, |bw| spilled / (bw * 1e12 * p.rdu_bw_eff));
            (
                layers * p.rdu_layer_s,
                hbm.max(slow),
                flops / tp / gpu::weight_rate(d, p.gpu_decode_flops_eff),
                if slow > hbm {
                    "weights in the capacity tier (DDR), stream"
                } else {
                    STREAM
                },
                "per-layer latency",
            )
        }
    };
    let time = fixed + memory.max(compute);
    let bound = if fixed > memory.max(compute) {
        Bound::MeshLatency
    } else if compute > memory {
        Bound::Compute
    } else {
        Bound::MemoryBandwidth
    };
    let work = if compute > memory {
        StepPart::new("arithmetic", compute)
    } else {
        StepPart::new(stream, memory)
    };
    (Step { time, bound }, [StepPart::new(latency, fixed), work])
}

pub(crate) fn prefill(d: &Deployment<'_>, p: &Params, prompts: &Prompts) -> f64 {
    // An RDU pipeline's stages run one after another for a prompt, as for a token; an LPU's
    // chips all work on it.
    let chips = match d.system.kind {
        SystemKind::Lpu => f64::from(d.layout.replica_chips()),
        _ => f64::from(d.layout.tp),
    };
    let flops = d.prompt_flops(prompts);
    // One pass over the layers reading the KV up to the end of the longest chunk.
    let end = prompts.ctx + prompts.longest / 2.0;
    decode_step(d, p, 1.0, 1.0, end).0.time
        + flops / (chips * gpu::weight_rate(d, p.gpu_prefill_flops_eff))
}
