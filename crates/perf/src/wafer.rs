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

/// One pass of `tokens` tokens of `seqs` sequences at context `ctx` over a wafer holding
/// `per_wafer` layers.
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
fn pass(d: &Deployment<'_>, p: &Params, per_wafer: f64, tokens: f64, seqs: f64, ctx: f64) -> Pass {
    let Some(mesh) = d.system.mesh.as_ref() else {
        return Pass {
            mesh: f64::INFINITY,
            compute: 0.0,
            links: 0.0,
            read_bound: false,
        };
    };
    let layers = f64::from(d.model.layers);
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

/// The wafers of a pipeline as (wafers, layers on each): the layers split as evenly as
/// they go, so some wafers may hold one layer more than the rest. The fuller wafers come
/// first; the second entry holds no wafers when the split is even.
fn stages(d: &Deployment<'_>) -> [(f64, f64); 2] {
    let (layers, pp) = (d.model.layers, d.layout.pp.max(1));
    let (fewer, fuller) = (layers / pp, layers % pp);
    if fuller == 0 {
        [(f64::from(pp), f64::from(fewer)), (0.0, 0.0)]
    } else {
        [
            (f64::from(fuller), f64::from(fewer + 1)),
            (f64::from(pp - fuller), f64::from(fewer)),
        ]
    }
}

/// One token's trip through every wafer of the pipeline, for `tokens` tokens of `seqs`
/// sequences at context `ctx` on each: the fullest wafer's pass, and the mesh, core and link
/// times summed over the wafers, each wafer at its own layers.
fn trip(d: &Deployment<'_>, p: &Params, tokens: f64, seqs: f64, ctx: f64) -> (Pass, [f64; 3]) {
    let [(fuller, most), (rest, fewer)] = stages(d);
    let s = pass(d, p, most, tokens, seqs, ctx);
    let mut sum = [fuller * s.mesh, fuller * s.compute, fuller * s.links];
    if rest > 0.0 {
        let t = pass(d, p, fewer, tokens, seqs, ctx);
        for (x, y) in sum.iter_mut().zip([t.mesh, t.compute, t.links]) {
            *x += rest * y;
        }
    }
    (s, sum)
}

/// One decode step of a pipeline of `pp` wafers running `batch` sequences: up to `pp`
/// micro-batches keep the wafers busy; a token crosses every wafer and the link after it
/// (the last link returns it to the host that samples the next token).
///
/// A micro-batch's next token waits for its trip through every stage, and the fullest
/// wafer serves every micro-batch in turn: the step is the longer of the trip (the sum of
/// the stages) and the fullest stage's time for each micro-batch in flight. An even split
/// makes both the same once the pipeline is full; where the layers do not divide, a lone
/// sequence pays each wafer's own layers, not the fullest wafer's on every wafer.
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
    let in_flight = batch.clamp(1.0, pp);
    let (s, trip) = trip(d, p, micro * q, micro, ctx);
    let fullest = [
        in_flight * s.mesh,
        in_flight * s.compute,
        in_flight * s.links,
    ];
    let [mesh, compute, links] = if fullest.iter().sum::<f64>() > trip.iter().sum::<f64>() {
        fullest
    } else {
        trip
    };
    let time = mesh + compute + links;
    let bound = if links > mesh.max(compute) {
        Bound::Interconnect
    } else if compute > mesh && s.read_bound {
        Bound::MemoryBandwidth
    } else if compute > mesh {
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
        StepPart::new("mesh reductions", mesh),
        StepPart::new(core, compute),
        StepPart::new("links (between wafers and back to the host)", links),
    ];
    (Step { time, bound }, parts)
}

/// Prefill of `prompts`: they stream through the layer pipeline, so the slowest
/// stage's arithmetic (the fullest wafer's) sets the rate, at the prefill efficiency, after
/// one token's latency. Each layer's cores read their weights at least once for the pass, so
/// a short prompt takes no less than one token's trip through every wafer, a decode step of
/// one sequence.
pub(crate) fn prefill(d: &Deployment<'_>, p: &Params, prompts: &Prompts) -> f64 {
    let Some(mesh) = d.system.mesh.as_ref() else {
        return f64::INFINITY;
    };
    let (_, [mesh_s, reads, links]) = trip(d, p, 1.0, 1.0, prompts.ctx);
    let most = stages(d)[0].1;
    let flops = d.prompt_flops(prompts) * most / f64::from(d.model.layers);
    let stream = flops / (mesh.cores() * mesh.core_flops() * p.wafer_prefill_eff);
    mesh_s + links + stream.max(reads)
}
