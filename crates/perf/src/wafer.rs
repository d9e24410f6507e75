//! Wafer-scale physics (Cerebras WSE): weights stay in the SRAM of the cores that use them,
//! so a token's latency is not weight bytes over SRAM bandwidth. It is set by the layers
//! running one after another across the core mesh, each layer spread over a region of the
//! wafer, and by the hops between wafers of a pipeline.
//!
//! Per layer, a token passes `wafer_phases_per_layer` dependent phases (projections,
//! attention, MLP), each ending in a reduction across the layer's region. A reduction
//! wavefront crosses the region's side, so its latency grows with mesh distance: the L
//! (latency) constraint of WaferLLM's PLMR device model (He et al., OSDI 2025,
//! <https://arxiv.org/abs/2502.04563>), with one hop per cycle per wavelet
//! (<https://sdk.cerebras.net/computing-with-cerebras>). Inside a phase each core of the
//! region streams its slice of the layer's weights, and of the sequences' KV cache, from its own
//! SRAM once per step and applies it to every token of the step: the step's work is the larger
//! of that read (the weights' part independent of the token count) and the arithmetic
//! (proportional to it), a roofline per core rather than per wafer. The whole wafer's SRAM bandwidth never applies to one token, because the layers
//! run one after another, each on its own region.

use crate::{Bound, Deployment, Params, Prompts, Step, StepPart};

/// The parts of one token's pass, per wafer stage.
struct Pass {
    mesh: f64,
    compute: f64,
    links: f64,
    /// Whether the per-core weight read, not the arithmetic, sets `compute`.
    read_bound: bool,
}

/// One pass of `tokens` tokens of `seqs` sequences at context `ctx` over a wafer's layers.
///
/// Each layer's region is a stage of a pipeline inside the wafer, as the wafers are stages of
/// one across wafers: the sequences split into as many sub-batches as there are layers on the
/// wafer (or sequences, if fewer), which follow one another through the regions, so every
/// region works on one sub-batch while the others are elsewhere (the micro-batching of GPipe,
/// Huang et al., <https://arxiv.org/abs/1811.06965>). A sub-batch's token still crosses every
/// layer in turn, each layer costing its phases' latency and the larger of its weight read
/// and its arithmetic for that sub-batch; with no more sub-batches than layers, the last
/// one's token is back at the first layer when the first one's next token arrives, so the
/// step is one sub-batch's trip. A lone sequence is one sub-batch: batch 1 is unchanged.
fn pass(d: &Deployment<'_>, p: &Params, tokens: f64, seqs: f64, ctx: f64) -> Pass {
    let Some(mesh) = d.system.mesh.as_ref() else {
        return Pass {
            mesh: f64::INFINITY,
            compute: 0.0,
            links: 0.0,
            read_bound: false,
        };
    };
    let pp = f64::from(d.layout.pp);
    let layers = f64::from(d.model.layers);
    let per_wafer = (layers / pp).ceil();
    // The layers on a wafer share its cores evenly; each layer's region is a square patch.
    let region = mesh.cores() / per_wafer;
    let side = region.sqrt();
    let phase = p.wafer_phase_s + p.wafer_hop_s * side;
    let mesh_latency = per_wafer * p.wafer_phases_per_layer * phase;
    // Sub-batches in flight on the wafer, and the tokens and sequences of each.
    let groups = seqs.min(per_wafer).max(1.0);
    let (tokens, seqs) = (tokens / groups, seqs / groups);
    let flops_per_layer = tokens * d.token_flops(ctx) / layers;
    let arithmetic = per_wafer * flops_per_layer / (region * mesh.core_flops() * p.wafer_core_eff);
    let weight_bytes_per_layer = d.streamed_weight_bytes(tokens) / layers;
    // Attention reads each sequence's KV cache, which sits in the SRAM of the layer's
    // region beside its weights, once per step.
    let kv_bytes_per_layer = seqs * d.model.kv_bytes(ctx, d.kv) / layers;
    let core_bw = d.system.sram_bw_tb_s * 1e12 / mesh.cores();
    let read = per_wafer * (weight_bytes_per_layer + kv_bytes_per_layer)
        / (region * core_bw * p.wafer_sram_read_eff);
    let compute = arithmetic.max(read);
    Pass {
        mesh: mesh_latency,
        compute,
        links: p.wafer_link_s,
        read_bound: read >= arithmetic,
    }
}

/// One decode step of a pipeline of `pp` wafers running `batch` sequences: `pp` micro-batches
/// keep the wafers busy; a token crosses every wafer and the link after it (the last link
/// returns it to the host that samples the next token).
///
/// With the step come its parts, which add up to its time: the mesh's reductions, the
/// cores' reads or arithmetic, and the links between wafers, over every wafer.
#[inline] // see `Deployment::decode_step`
pub(crate) fn decode_step(
    d: &Deployment<'_>,
    p: &Params,
    batch: f64,
    q: f64,
    ctx: f64,
) -> (Step, [StepPart; 3]) {
    let pp = f64::from(d.layout.pp);
    let micro = (batch / pp).max(1.0);
    let s = pass(d, p, micro * q, micro, ctx);
    let time = pp * (s.mesh + s.compute + s.links);
    let bound = if s.links > s.mesh.max(s.compute) {
        Bound::Interconnect
    } else if s.compute > s.mesh && s.read_bound {
        Bound::MemoryBandwidth
    } else if s.compute > s.mesh {
        Bound::Compute
    } else {
        Bound::MeshLatency
    };
    let core = if s.read_bound {
        "cores' weight and KV reads"
    } else {
        "cores' arithmetic"
    };
    let parts = [
        StepPart::new("mesh reductions", pp * s.mesh),
        StepPart::new(core, pp * s.compute),
        StepPart::new("links (between wafers and back to the host)", pp * s.links),
    ];
    (Step { time, bound }, parts)
}

/// Prefill of `prompts`: they stream through the layer pipeline, so the slowest
/// stage's arithmetic sets the rate, at the prefill efficiency, after one token's latency.
/// Each layer's cores read their weights at least once for the pass, so a short prompt
/// takes no less than one token's trip through every wafer, a decode step of one sequence.
pub(crate) fn prefill(d: &Deployment<'_>, p: &Params, prompts: &Prompts) -> f64 {
    let pp = f64::from(d.layout.pp);
    let first = pass(d, p, 1.0, 1.0, prompts.ctx);
    let Some(mesh) = d.system.mesh.as_ref() else {
        return f64::INFINITY;
    };
    let flops = d.prompt_flops(prompts) / pp;
    let stream = flops / (mesh.cores() * mesh.core_flops() * p.wafer_prefill_eff);
    pp * (first.mesh + first.links) + stream.max(pp * first.compute)
}
