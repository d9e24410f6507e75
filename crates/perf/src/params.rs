//! The fitted and assumed parameters of the performance model, in one place.
//!
//! Every value here is either an efficiency (a fraction of a published peak that software
//! achieves), a latency, or an operating assumption. Each says what it was fitted to or where
//! it comes from. [`crate::calibrate`] refits them to published points within physical
//! bounds (`switchyard calibrate`). Its optimum on `reference/points.csv`, all parameters
//! free, scored 24.6% there and 19.6% on `reference/heldout.csv` (against 25.2% and 20.6%),
//! with 1.06 ms a step, 58 us a layer, a 31 us all-reduce at 0.23 of the fabric, moves of
//! the wafer's phase, hop, read share and link (2.74 us, 0.39 ns, 0.18, 3.04 us), and the
//! RDU's layer latency and bandwidth share (26.3 us, 0.57), which were taken (see
//! [`Params::rdu_layer_s`]; then 25.0% and 20.6%). An all-reduce three times its measured
//! latency and a layer's fixed cost past its measured 50 us contradict the measurements
//! those values rest on: not taken. The wafer's four were left then (half a point in their
//! group from a handful of vendor rows); once a pipeline whose wafers do not divide the
//! layers stopped charging a lone token the fullest wafer's layers on every wafer, the
//! values fitted before it no longer fitted the physics (25.1%), and the four took their
//! joint fit (`switchyard calibrate --only wafer_phase_s,wafer_hop_s,wafer_sram_read_eff,wafer_link_s`
//! leaves them): 24.9% and 20.6%. An earlier optimum (24.6% and 20.8% against 25.0% and 20.3%) traded the rows it
//! saw for those it did not. Earlier optima contradicted
//! measurements: before the input embedding table left the stream and the output head ran
//! once a prompt, 24.6% and 20.4% took a 42 us all-reduce and a 54 us launch cost. The
//! values below were chosen with it, each within what its own evidence allows, not copied
//! from it.
//! Nothing in the model looks up a data point: the same formulas serve every system and model.
//!
//! A user's TOML file may set any of them ([`Params::from_toml`]): names as the fields
//! below, values in their units; what a file leaves out keeps its default. `switchyard
//! calibrate` writes such a file, fitted to the user's own measurements.

use serde::{Deserialize, Serialize};

/// Parameters of the physics. [`Params::default`] is the calibrated set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    // ---- GPUs -------------------------------------------------------------------------
    /// Fraction of datasheet HBM bandwidth that streaming weights and KV cache reaches on a
    /// chip with no measured read bandwidth in the catalog: 0.90, the median of the measured
    /// read-only streams (STREAM's dot product) of the four chips that have one (A100 0.86,
    /// H100 0.95, H200 0.95, MI300X 0.75; catalog `measured`). Where a chip has its own
    /// measurement, that is used instead. Not fitted.
    pub gpu_bw_eff: f64,
    /// Fraction of datasheet dense peak FLOP/s that the batched matrix products of decode
    /// reach on H100; every GPU scales it by its measured large-product share over H100's
    /// (`gpu::weight_rate`: MI300X 0.67x, B200 and GB200 0.83x, A100 1.18x). The LPU's and
    /// RDU's arithmetic takes it too, unscaled (they have no measurement). Chosen with
    /// [`Params::gpu_prefill_flops_eff`] as one value for both: over decode and prefill each
    /// 0.40-0.50, one value of 0.44-0.46 gave 25.0-25.1% on `reference/points.csv` and
    /// 20.7-21.0% on `reference/heldout.csv`, and no split did better on both (decode 0.42
    /// by prefill 0.48: 25.3% and 20.5%; 0.50 by 0.45: 25.3% and 20.8%). Since the input
    /// embedding table left the stream, the output head runs once a prompt and the layers'
    /// fixed cost took its measured 50 µs, 0.43, 0.44, 0.45, 0.46 and 0.47 give 25.2, 24.8,
    /// 24.6, 24.7 and 25.1% and 20.6, 20.3, 20.0, 20.0 and 20.1%.
    ///
    /// History: 0.32, then 0.40 once the experts' products paid for whole tiles
    /// ([`Params::gpu_expert_tile_tokens`]), both with the measured share applied to prefill
    /// alone, on the grounds that decode's products are skinnier than the measured ones. That
    /// left the Hopper runs 15-40% under their published throughput while the Blackwell and
    /// AMD runs fit (27.1% and 22.9%). Applying the share to decode too, at 0.45, gave
    /// 25.1% and 20.7%. Two alternatives were measured beside it: MI325X held to MI300X's
    /// share as well (0.475: 25.6% and 21.5%), and B200 left at H100's share rather than
    /// GB200's (0.45: 26.1% and 21.9%). B200 borrows because its die is GB200's and its
    /// lower datasheet peaks carry its lower power limit (`matrix_share_from`). MI325X does
    /// not, a choice the fit made and these reasons allow without proving: MI300X's share
    /// was taken at 750 W on ROCm 6.2, MI325X runs at 1,000 W under the same datasheet peaks,
    /// and its MLPerf results come from later ROCm releases, so MI300X's share is only a
    /// lower bound for it; it takes H100's, as every chip with neither a measurement nor a
    /// lender. Earlier, when the model scored 31.9% on `points.csv`, each chip's own
    /// per-precision shares were tried on decode and gave 32.7%; FP4's own share, retried
    /// now, is worse too (the `gpu` module).
    ///
    /// Products of decode size, measured alone, bracket the figure: DeepGEMM's FP8 products
    /// on H800 reach 0.27 of the peak at 128 rows (4,096 by 7,168) and 0.46-0.62 at
    /// 512-1,024 rows (<https://github.com/deepseek-ai/DeepGEMM>, README of February 2025),
    /// while FP4 products on B200, the better of DeepGEMM's and cuBLASLt's, reach 0.04 at 128
    /// rows and 0.16-0.23 at 512-1,024 rows against 0.59-0.63 at 4,096-8,192
    /// (<https://github.com/deepseek-ai/DeepGEMM/pull/348>). That shortfall is why FP4
    /// products are given FP8's measured share, not the 0.76 GB200 reaches with large FP4
    /// products. The engines behind the published rows run their own kernels, so no one of
    /// these figures is taken for a chip.
    ///
    /// Measured on one H200 (`bench/gpu/README.md`), the products of Llama 3.1 8B's layers
    /// and of 70B's split eight ways (all but its smallest, the attention projections) take
    /// 0.47-0.65 of the time this efficiency gives them at 512 rows and more, and the
    /// physics' whole decode step is 5-25% longer than a plain engine's at batches 128-512
    /// and 40% longer than a compiler-fused one's at batch 256 (a test keeps it within 35%
    /// of every plain step measured). Timing the products as measured
    /// (the smooth larger of stream and arithmetic, at 0.70 on H100 for decode and prefill)
    /// scores 45.3% and 53.7% on the two files, and a fit with that form takes this
    /// efficiency back to 0.41. With a host cost per sequence per step fitted beside it
    /// (19 µs; this efficiency then 0.66), 25.2-25.3% and 19.4-19.6%: better held out,
    /// worse fitted, and worst for TensorRT-LLM's small models at thousands of sequences,
    /// whose C++ runtime pays no such cost. The published serving rows carry costs a bare
    /// step does not, and this efficiency is where the model carries them.
    pub gpu_decode_flops_eff: f64,
    /// Fraction of datasheet dense peak FLOP/s that prefill's matrix products reach on H100,
    /// scaled on other chips as [`Params::gpu_decode_flops_eff`] is, and chosen with it.
    /// History: 0.40 from 2024 until decode took the measured share as well. A grid over the
    /// two at the time (decode 0.24-0.38, prefill 0.32-0.44, by 0.02) gave 0.32 and 0.40 at
    /// 31.8% on `reference/points.csv`; once decode read the length-biased context of spread
    /// outputs ([`crate::Deployment::decode_ctx`]) and chunked prompts paid their exchanges,
    /// 0.30-0.38 by 0.38-0.44 gave 28.7-29.4%; once the experts' products were padded to
    /// whole tiles, 0.36-0.42 by 0.38-0.42 gave 27.1-27.5%.
    ///
    /// A plain PyTorch engine's whole prefill pass of a Llama 3.1 8B-shaped model on one
    /// H200 does its work at 0.44-0.50 of the bf16 datasheet peak (512-8,192 tokens), and a
    /// 70B-shaped one in FP8 at 0.42-0.45 of the FP8 peak (`bench/gpu/README.md`): about this
    /// efficiency on H200 (0.43). The physics' pass, with its step overhead and its
    /// weights' stream added to the arithmetic, takes 1.1-1.4 times as long. At 0.55 the
    /// published rows score 26.1% and 22.5%; at 0.42 and 0.48, 24.9% and 20.9%, 24.9% and
    /// 20.4%.
    pub gpu_prefill_flops_eff: f64,
    /// Rows of the tile in which a mixture-of-experts layer's grouped matrix product runs
    /// each expert's tokens: an expert given fewer tokens than a tile still costs a whole
    /// tile of arithmetic. The grouped kernels pad every expert's share of the batch up to
    /// their block of rows: DeepGEMM's grouped products ask each expert's segment to be
    /// aligned to the block (<https://github.com/deepseek-ai/DeepGEMM>, README, "Grouped
    /// GEMMs"), and vLLM's fused kernel pads each expert's tokens to its block size before
    /// the product (`moe_align_block_size`,
    /// <https://github.com/vllm-project/vllm/blob/main/vllm/model_executor/layers/fused_moe/moe_align_block_size.py>).
    /// Engines pick smaller blocks for fewer rows, down to vLLM's 16, so an expert pays at
    /// most [`Params::gpu_expert_pad`] times the rows it gets. Dense projections are left
    /// alone: their rows are the whole batch.
    ///
    /// 128 rows is the M block of a Hopper product across two warpgroups of 64 and of a
    /// Blackwell single-SM tensor-core product. Compared on `reference/points.csv` at the
    /// efficiencies of the time (decode 0.32): 0 (no padding) 28.9%, 16 28.8%, 32 28.5%,
    /// 64 28.4%, 96 and 128 28.0%, 256 28.6%; on `reference/heldout.csv` 26.3, 26.0, 25.8,
    /// 25.5, 24.9, 24.4 and 25.3%. A fine-grained model sends each expert few tokens in a
    /// decode step (DeepSeek-R1 at 1,000 sequences: about 30 each of its 256), so at a
    /// server's batch its experts' products cost several times their arithmetic: the MLPerf
    /// DeepSeek-R1 server runs on eight B200s and on an NVL72 rack go from +34% and +41% of
    /// their published throughput to +7% and +14% (with the decode efficiency refitted).
    ///
    /// PyTorch's grouped products over DeepSeek-V3's experts on one H200, at 2 and 8 rows an
    /// expert, took about what their stream plus their arithmetic at the measured peak takes
    /// with each expert padded to 64 rows (`bench/gpu/README.md`), 20-21% less than padded to
    /// 128; but the same kernels stream a lone row's experts at 0.44-0.61 of the read rate, a
    /// cost per expert that padding and a slow stream both explain, and the engines behind the
    /// published rows run kernels of their own. The tile stays as the published rows chose it.
    pub gpu_expert_tile_tokens: f64,
    /// The most a touched expert's rows are padded, as a multiple of the rows it gets,
    /// short of a whole tile ([`Params::gpu_expert_tile_tokens`]): a lone token's experts
    /// cost 16 rows each, vLLM's smallest block, and an expert given 8 rows or more pays
    /// a whole tile of 128. The grouped kernel's arithmetic per token therefore never rises
    /// with the batch, and a step of twice the sequences never costs more than two steps.
    ///
    /// Until it was set the tile spanned no more rows than the step had tokens, so a
    /// touched expert paid for every token of a step short of a tile, and the arithmetic
    /// per token rose with the batch up to 128 tokens a step: Kimi K2.6 on four H200 NVL in
    /// two stages carried 1,300 tok/s at 48 sequences and 1,146 at 256, where the padded
    /// tiles cost more than the experts' weights take to stream. Against
    /// `reference/points.csv` and `reference/heldout.csv`: that rule 25.0% and 20.3%; this
    /// one at 8 25.2% and 20.8%, at 16 24.9% and 20.4%, at 24 25.0% and 20.2%. Padding to a
    /// whole tile whatever the rows, with the padded arithmetic hidden under the weights'
    /// stream where it is shorter, scored 25.0% and 19.2% at a tile of 320 rows, but made a
    /// lone sequence's experts pay for 320 rows each (Kimi K2.6 above at 16 sequences: 205
    /// tok/s against 1,044).
    pub gpu_expert_pad: f64,
    /// Fixed time per engine step (scheduling, sampling, kernel launches), in seconds.
    /// Fitted to the batch-1 rows.
    pub gpu_step_overhead_s: f64,
    /// Fixed time per layer of every pass, in seconds: a layer runs a dozen or more
    /// kernels (norms, projections, rotary embedding, attention, activation, routing), and
    /// each costs a few microseconds however little work it does, even replayed from a CUDA
    /// graph. TensorRT-LLM measured CUDA graphs alone speeding batch-1 DeepSeek-R1 decoding
    /// 7.22x on 8xB200 (<https://github.com/NVIDIA/TensorRT-LLM/blob/main/docs/source/blogs/tech_blog/blog2_DeepSeek_R1_MTP_Implementation_and_Optimization.md>),
    /// so launch-bound is what a small step is. A prompt's pass runs the same kernels and
    /// pays it too, so that a short prompt takes no less than a decode step of one sequence;
    /// on a long prompt it is a few percent (4 ms of a 2,048-token Llama 3.1 70B pass).
    /// Left out of prefill, as it was until then, `points.csv` and `heldout.csv` scored the
    /// same to a tenth of a point.
    ///
    /// 50 µs is what H200s measured (`bench/gpu/README.md`). With the work between the
    /// products fused by the PyTorch compiler (about 18 kernels a layer) and the step
    /// replayed from a CUDA graph, a lone sequence of a Llama 3.1 8B-shaped model took 4.96
    /// and 5.38 ms a token on two machines: 52 and 66 µs a layer beyond streaming its 15.0 GB
    /// of weights at the 4.57 TB/s the catalog streams an H200 at, of which the KV cache's
    /// stream and attention's arithmetic take about 1 µs. 50 µs sits near the lower figure,
    /// as serving engines' own fused kernels are at least as tight as the compiler's; the
    /// physics' small-batch steps then come to 0.93-0.96 of the fused engine's (a test keeps
    /// them within 10%). In the plain engine the same layer's four products took 18-24 µs
    /// more than their stream and each of its other small kernels 2.35 µs.
    ///
    /// History: 40 µs until then, chosen on published rows (at 40 µs, 8xH100 served Llama
    /// 3.1 70B at FP8 at 104 tok/s per user, under the 128 that Cerebras's launch slide gave
    /// the best H100 cloud, `cs3-llama31-70b-launch` in `points.csv`; at 50 µs, 96). When 40
    /// was chosen, before the measured peaks of the catalog were used, both MAPEs fell
    /// further with larger values (0, 20, 40, 80, 120 µs: `points.csv` 34.1, 33.5, 33.2,
    /// 32.6, 31.8%; `heldout.csv` 37.5, 34.6, 32.5, 29.6, 28.3%). Today 35, 40, 45, 50, 55 and
    /// 60 µs give 24.8, 24.7, 24.7, 24.6, 24.7 and 24.7% on `points.csv` and 20.7, 20.4, 20.2,
    /// 20.0, 20.0 and 20.1% on `heldout.csv`. The fitted per-layer latencies of the LPU
    /// (37 µs) and RDU (31 µs) are of the same size.
    pub gpu_layer_overhead_s: f64,
    /// Latency of one tensor-parallel all-reduce inside the fast fabric, in seconds. The
    /// one-shot kernels inference engines use take 6-13 us on 8 x H100 for small messages,
    /// NCCL through PyTorch about 20 (<https://github.com/sgl-project/sglang/pull/2904>,
    /// <https://github.com/pytorch/helion/pull/245>). With [`Params::fabric_eff`] it times one
    /// all-reduce of Llama 70B's decode at batch 96 on 8 x H100 at 20.5 us, against 21.0-22.3
    /// measured (<https://github.com/pytorch/FBGEMM/pull/3139>; a test checks it). MI300X took
    /// 32.9-35.1 us in the same measurement, which one latency for every fabric misses.
    ///
    /// Calibrating it freely (`switchyard calibrate --only allreduce_latency_s`) takes it to
    /// 93 us, which lowers both MAPEs (`points.csv` 31.8 to 28.4%, `heldout.csv` 31.6 to
    /// 26.9%): runs with wide tensor parallelism under a latency limit (Llama 3.1 405B and
    /// DeepSeek-R1 server scenarios) cost more than the model gives them. An all-reduce that
    /// slow contradicts the measurements above, so the missing cost is something else
    /// (waiting for the slowest rank at each collective is one candidate) and stays
    /// unmodelled.
    pub allreduce_latency_s: f64,
    /// Fraction of the fabric's per-chip bandwidth (both directions) that one direction of a
    /// ring all-reduce achieves. Fitted to the GPU throughput rows with the latency above.
    pub fabric_eff: f64,
    /// Network bandwidth per chip between scale-up domains, in GB/s: one 400 Gb/s NIC per GPU,
    /// as in DGX H100 and B200 (eight ConnectX-7 per eight GPUs,
    /// <https://docs.nvidia.com/dgx/dgxh100-user-guide/introduction-to-dgxh100.html>). It
    /// carries KV caches between disaggregated prefill and decode replicas and the share of an
    /// expert-parallel all-to-all bound for groups in other domains. DeepEP's all-to-all
    /// kernels reach 39-46 GB/s of such a NIC (<https://github.com/deepseek-ai/DeepEP>); with
    /// activations counted at 16 bits both ways, 50 times a dispatch and combine at 64 and 256
    /// H800s within 8% of DeepEP's (a test checks it).
    ///
    /// On a PCIe server, beyond the cards its bridges join, the link is the card's PCIe 5.0
    /// x16 slot: 32 GT/s on each of 16 lanes, about 63 GB/s a direction
    /// (<https://pcisig.com/pci-express-50-specification-now-available>), of the same size, so
    /// this figure stands for it too.
    pub network_gb_s: f64,
    /// Latency of one tensor-parallel all-reduce whose group spans several scale-up domains,
    /// paid on top of the in-domain latency ([`Params::allreduce_latency_s`]) for the step
    /// across the network: an 8-byte NCCL all-reduce between two nodes of A100s over HDR
    /// InfiniBand takes 19-20 us (<https://github.com/NVIDIA/nccl-tests/issues/150>), and
    /// NCCL's own cost model puts a 4 KB one between H100 nodes at 26 us
    /// (<https://github.com/NVIDIA/nccl/issues/1453>). Not fitted.
    pub network_allreduce_latency_s: f64,
    /// Latency to pass activations between two pipeline stages on GPUs, in seconds: a small
    /// point-to-point send and the wait for it. Assumed, of the size of one all-reduce's
    /// latency; no published row isolates it.
    pub gpu_stage_hop_s: f64,
    /// Fraction of HBM that may hold weights, activations and KV cache (the rest is runtime,
    /// CUDA graphs and fragmentation; vLLM's `gpu_memory_utilization` defaults to 0.9).
    pub gpu_mem_usable: f64,
    /// Largest batch one engine runs (TensorRT-LLM's `max_batch_size` default is 2048;
    /// vLLM's `max_num_seqs` 256-1024). It counts every sequence the replica holds, which a
    /// pipeline splits into one micro-batch per stage; with expert parallelism each group is
    /// an engine of its own, with this limit each.
    pub max_batch: u32,
    /// Most tokens one engine step carries, prompt chunks and one a decoding sequence: vLLM's
    /// `max_num_batched_tokens`, which its OpenAI server sets to 8,192 on GPUs of 70 GiB or
    /// more (`_set_default_args` in
    /// <https://github.com/vllm-project/vllm/blob/main/vllm/engine/arg_utils.py>). With
    /// expert parallelism, each group's. A prefill replica of a disaggregated deployment
    /// passes as many whole prompts at once as fit in it (one, where a prompt is longer).
    pub token_budget: u32,
    /// Activation workspace per chip, in bytes, reserved on top of weights and KV. Assumed.
    pub activation_bytes: f64,

    // ---- Wafer-scale engines -------------------------------------------------------------
    /// Dependent communication phases per transformer layer on the wafer (QKV projection,
    /// attention, output projection, gate/up, down): each ends in a reduction or broadcast
    /// across the cores that hold the layer.
    pub wafer_phases_per_layer: f64,
    /// Fixed cost of one phase (router ramp-up, synchronisation, kernel switch), in seconds.
    /// Fitted to the Cerebras and WaferLLM per-user speeds.
    pub wafer_phase_s: f64,
    /// Time per mesh hop of a reduction wavefront, in seconds. One 32-bit wavelet moves one
    /// hop per cycle (<https://sdk.cerebras.net/computing-with-cerebras>); a reduction pays the
    /// region's side in hops at each phase (the L in WaferLLM's PLMR model,
    /// <https://arxiv.org/abs/2502.04563>). Fitted.
    pub wafer_hop_s: f64,
    /// Fraction of a core's SRAM read bandwidth (the wafer's published SRAM bandwidth over its
    /// cores) reached while streaming the core's slice of the weights through its SIMD unit
    /// once per step. At a few tokens per step this read, not the arithmetic, bounds each
    /// layer; it does not grow with the tokens in the step, which is why verifying several
    /// speculative tokens, or decoding a small batch, costs little more than one token.
    /// Fitted to the Cerebras and WaferLLM per-user speeds.
    pub wafer_sram_read_eff: f64,
    /// Fraction of a core's peak multiply-accumulate rate reached once a step carries enough
    /// tokens for the arithmetic to bound it (matrix-matrix on the SIMD unit). Assumed, as
    /// GPU tensor-core efficiencies at large batch; no published wafer measurement isolates it.
    pub wafer_core_eff: f64,
    /// Fraction of the wafer's 16-bit peak reached while streaming a prompt through the layer
    /// pipeline, every layer's region working on its own tokens. Assumed equal to
    /// [`Params::wafer_core_eff`]: a prompt's products are the same matrix-matrix work on the
    /// same cores. The published Cerebras TTFTs time the public API, whose path dwarfs the
    /// engine's prefill of a short prompt ([`Params::cloud_ttft_s`]); fitted to them instead,
    /// this took 0.0135, which made a wafer's prompts, and so its throughput under load,
    /// forty times slower than its arithmetic allows.
    pub wafer_prefill_eff: f64,
    /// Latency of passing activations from one wafer to the next in a pipeline, in seconds
    /// (system I/O over 100 GbE links and the SwarmX fabric). Fitted.
    pub wafer_link_s: f64,
    /// Fraction of wafer SRAM that can hold weights and KV cache; the rest holds code,
    /// activations and routing buffers. Assumed; with it, 70B at 16 bits needs four CS-3s
    /// and 8B one, as Cerebras deploys them.
    pub wafer_sram_usable: f64,

    // ---- SRAM chips (Groq LPU) and dataflow units (SambaNova RDU) --------------------------
    /// Fixed latency of one transformer layer on an LPU chip group, in seconds. Fitted to the
    /// Groq per-user speeds.
    pub lpu_layer_s: f64,
    /// Latency of one chip-to-chip crossing on the LPU fabric, paid once per chip a layer spans.
    /// Fitted with [`Params::lpu_layer_s`] to the Groq per-user speeds
    /// (`switchyard calibrate --only lpu_layer_s,lpu_chip_hop_s` leaves both where they are;
    /// 35.9 and 1.76 us before the fit left out the rows beyond their hardware, which changed
    /// the weight of the group the Groq rows share with SambaNova's; 1.73 us before the
    /// search for the fewest chips tried every count, when it gave Llama 3.1 70B 735 LPUs
    /// rather than 688).
    pub lpu_chip_hop_s: f64,
    /// Fraction of LPU SRAM usable for weights. Assumed, as for GPU memory; it sets how many
    /// chips a model needs, which Groq does not publish per model.
    pub lpu_sram_usable: f64,
    /// Fixed latency of one layer on an RDU, in seconds (a fused dataflow kernel per layer).
    /// Fitted to the SambaNova per-user speeds (with [`Params::rdu_bw_eff`]: 26.3 us and 0.57,
    /// where 30.5 us and 0.58 had stood since the rows beyond the hardware left the fit and
    /// the fit no longer held them; the SRAM group 29.9% to 29.1%).
    pub rdu_layer_s: f64,
    /// Fraction of an RDU's HBM bandwidth reached when streaming weights. Fitted with
    /// [`Params::rdu_layer_s`] to the SambaNova per-user speeds that its hardware allows
    /// (`switchyard calibrate --only rdu_layer_s,rdu_bw_eff` leaves both where they are). The
    /// published Llama 3.1 70B and 405B and Llama 4 Maverick speeds lie beyond an RDU's HBM
    /// at full rate (`switchyard validate` names them); fitted to as well, they held it at
    /// 0.61 (and the layer at 30.6 us).
    pub rdu_bw_eff: f64,
    /// Fraction of the main memory kept for the KV cache when weights overflow into a
    /// capacity tier (SambaNova's DDR): the layers that stream from the slow tier are the
    /// price of room for sequences. Assumed: a tenth.
    pub capacity_kv_reserve: f64,

    // ---- Serving assumptions -------------------------------------------------------------
    /// Tokens accepted per target-model step with speculative decoding when a row says only
    /// "yes": the low end of the 4-5.5 tokens per draft-and-verify cycle that tree drafting
    /// reaches on 7B-70B chat models (EAGLE-2, Li et al., <https://arxiv.org/abs/2406.16858>).
    /// A plain chain of 4-5 drafts at 70-80% acceptance gives about 3 (Leviathan et al.,
    /// <https://arxiv.org/abs/2211.17192>, eq. 1).
    pub spec_tokens_per_step: f64,
    /// Cost of drafting one token, as a fraction of a target step: a cycle that drafts `k`
    /// tokens costs `k` times this on top of its verifying step (Leviathan et al., eq. 2's
    /// `c`). Assumed: a sixteenth, so a cycle of four drafts costs a quarter of a step; the
    /// small draft models and one-layer draft heads of that paper and of EAGLE cost a few
    /// hundredths of the target per token.
    pub spec_draft_token_cost: f64,
    /// p99 time-per-output-token limit of a `server` row whose model has no MLPerf workload
    /// in the catalog, in seconds: 200 ms, MLPerf's limit for its Llama 2 70B and Mixtral
    /// server scenarios (<https://github.com/mlcommons/inference_policies/blob/master/inference_rules.adoc>).
    pub server_tpot_s: f64,
    /// Mean time per output token of a server run as a fraction of its p99 limit, since the
    /// model predicts means. Fitted to the MLPerf Llama 2 70B server runs whose mean TPOT is
    /// published (8×H100 155 ms, 8×H200 123 ms, 8×B200 150 ms, 1×B200 145 ms, 8×MI325X
    /// 160 ms, all under the 200 ms limit: 0.62-0.80, mean 0.73).
    pub server_mean_tpot_frac: f64,
    /// Mean time to first token of a server run as a fraction of its p99: queueing behind
    /// other prompts gives TTFT a long tail. Fitted to the MLPerf server runs that publish both
    /// (Llama 2 70B on 8×H100 276/461 ms, 8×H200 198/453 ms, 8×B200 526/1,570 ms; Llama 3.1
    /// 405B on 8×B200 1.86/4.30 s: 0.34-0.60, mean 0.45). A TTFT limit is applied as this
    /// fraction of the p99 limit, which assumes that where TTFT binds its p99 sits at the
    /// limit (the 405B runs on 8×H200 and 8×B200 reached 5.64 and 4.30 s of 6 s).
    pub server_mean_ttft_frac: f64,
    /// Time from a client, through a maker's cloud API (TLS, gateway, tokeniser, queue, the
    /// network both ways), to the engine and back with the first token, in seconds. The
    /// model's TTFT is the engine's; `validate` adds this to a published TTFT of a wafer-scale,
    /// LPU or RDU system, which is reached only as its maker's cloud service and measured at
    /// that API. Fitted to the two Cerebras TTFT rows of `reference/points.csv` (0.17 s for
    /// Llama 3.3 70B, 0.24 s for Llama 3.1 405B: the engine's part is 5-6 ms of each).
    pub cloud_ttft_s: f64,
    /// Input length assumed when a row gives none.
    pub default_isl: u32,
    /// Output length assumed when a row gives none.
    pub default_osl: u32,

    // ---- Energy and cost -----------------------------------------------------------------
    /// Power at idle as a fraction of full-load power (GPU servers idle at roughly a third
    /// of nameplate; assumption).
    pub idle_power_frac: f64,
    /// A server's power over its chips' where the server's is not published: host CPUs,
    /// memory, fans, network and power conversion, at the same nameplate basis as the
    /// systems that publish theirs, so that energy per token compares across systems. The
    /// median of the catalog's 8-chip servers that publish both (DGX A100 6.5 kW over
    /// 8 × 400 W: 2.03; DGX H100 and H200 10.2 kW over 8 × 700 W: 1.82; DGX B200 14.3 kW over
    /// 8 × 1,000 W: 1.79; HGX B300 14.5 kW over 8 × 1,100 W: 1.65). A nameplate is a
    /// maximum: DGX H100 draws 6.5-8.5 kW of its 10.2 under load.
    pub host_overhead: f64,
    /// Power usage effectiveness of the facility: 1.10 for a modern liquid-cooled AI
    /// datacentre (<https://research-viewer.pages.dev/orbital-ai-datacenters-3/pages/terrestrial-pue/>).
    pub pue: f64,
    /// Electricity price in USD per kWh: US large datacentres pay $0.065-0.090 blended
    /// (<https://research-viewer.pages.dev/pages/terrestrial-energy-cost>).
    pub usd_per_kwh: f64,
    /// Amortisation life in years where a price gives none.
    pub life_years: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            gpu_bw_eff: 0.90,
            gpu_decode_flops_eff: 0.45,
            gpu_prefill_flops_eff: 0.45,
            gpu_expert_tile_tokens: 128.0,
            gpu_expert_pad: 16.0,
            gpu_step_overhead_s: 2.0e-3,
            gpu_layer_overhead_s: 50.0e-6,
            allreduce_latency_s: 10.0e-6,
            fabric_eff: 0.29,
            network_gb_s: 50.0,
            network_allreduce_latency_s: 20.0e-6,
            gpu_stage_hop_s: 20.0e-6,
            gpu_mem_usable: 0.90,
            max_batch: 2048,
            token_budget: 8192,
            activation_bytes: 2.0e9,

            wafer_phases_per_layer: 5.0,
            wafer_phase_s: 2.74e-6,
            wafer_hop_s: 0.356e-9,
            wafer_sram_read_eff: 0.193,
            wafer_core_eff: 0.6,
            wafer_prefill_eff: 0.6,
            wafer_link_s: 6.3e-6,
            wafer_sram_usable: 0.85,

            lpu_layer_s: 37.1e-6,
            lpu_chip_hop_s: 1.95e-6,
            lpu_sram_usable: 0.90,
            rdu_layer_s: 26.3e-6,
            rdu_bw_eff: 0.57,
            capacity_kv_reserve: 0.10,

            spec_tokens_per_step: 4.0,
            spec_draft_token_cost: 0.0625,
            server_tpot_s: 0.200,
            server_mean_tpot_frac: 0.73,
            server_mean_ttft_frac: 0.45,
            cloud_ttft_s: 0.165,
            default_isl: 1024,
            default_osl: 512,

            idle_power_frac: 0.35,
            host_overhead: 1.8,
            pue: 1.10,
            usd_per_kwh: 0.08,
            life_years: 5.0,
        }
    }
}

/// The values a parameter may take.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Range {
    /// A share of a peak or of a capacity: above 0, at most 1.
    Fraction,
    /// A share that may be 0: from 0 to 1.
    Share,
    /// A share that may be 0 but must leave something: from 0 to below 1.
    BelowOne,
    /// A duration, size or price: 0 or more.
    NonNegative,
    /// Above 0.
    Positive,
    /// 1 or more (a count, a ratio of at least one).
    AtLeastOne,
    /// A whole count of tokens or sequences, from 1 to 10^9 (as the command line's
    /// `--isl` and `--osl` take).
    Count,
}

/// The largest value any parameter takes: far above every default (the largest, the
/// activation workspace, is 2·10^9 bytes), low enough that every figure computed from the
/// parameters stays finite.
const MOST: f64 = 1e12;

/// The smallest value above zero any parameter takes: far below every default (the
/// smallest, the wafer's hop, is 4.2·10^-10 s), high enough that no figure computed from
/// the parameters overflows (an efficiency of 10^-300 would).
const LEAST: f64 = 1e-12;

impl Range {
    fn admits(self, v: f64) -> bool {
        v.is_finite()
            && v <= MOST
            && (v == 0.0 || v.abs() >= LEAST)
            && match self {
                Range::Fraction => v > 0.0 && v <= 1.0,
                Range::Share => (0.0..=1.0).contains(&v),
                Range::BelowOne => (0.0..1.0).contains(&v),
                Range::NonNegative => v >= 0.0,
                Range::Positive => v > 0.0,
                Range::AtLeastOne => v >= 1.0,
                Range::Count => (1.0..=1e9).contains(&v) && v.fract() == 0.0,
            }
    }

    fn says(self) -> &'static str {
        match self {
            Range::Fraction => "from 10^-12 to 1",
            Range::Share => "0, or from 10^-12 to 1",
            Range::BelowOne => "0, or from 10^-12 to below 1",
            Range::NonNegative => "0, or from 10^-12 to 10^12",
            Range::Positive => "from 10^-12 to 10^12",
            Range::AtLeastOne => "from 1 to 10^12",
            Range::Count => "a whole number from 1 to 1000000000",
        }
    }
}

/// The range of every parameter, by field name. A test checks that every field has one.
const RANGES: &[(&str, Range)] = &[
    ("gpu_bw_eff", Range::Fraction),
    ("gpu_decode_flops_eff", Range::Fraction),
    ("gpu_prefill_flops_eff", Range::Fraction),
    ("gpu_expert_tile_tokens", Range::NonNegative),
    ("gpu_expert_pad", Range::NonNegative),
    ("gpu_step_overhead_s", Range::NonNegative),
    ("gpu_layer_overhead_s", Range::NonNegative),
    ("allreduce_latency_s", Range::NonNegative),
    ("fabric_eff", Range::Fraction),
    ("network_gb_s", Range::Positive),
    ("network_allreduce_latency_s", Range::NonNegative),
    ("gpu_stage_hop_s", Range::NonNegative),
    ("gpu_mem_usable", Range::Fraction),
    ("max_batch", Range::Count),
    ("token_budget", Range::Count),
    ("activation_bytes", Range::NonNegative),
    ("wafer_phases_per_layer", Range::Positive),
    ("wafer_phase_s", Range::NonNegative),
    ("wafer_hop_s", Range::NonNegative),
    ("wafer_sram_read_eff", Range::Fraction),
    ("wafer_core_eff", Range::Fraction),
    ("wafer_prefill_eff", Range::Fraction),
    ("wafer_link_s", Range::NonNegative),
    ("wafer_sram_usable", Range::Fraction),
    // The only fixed latency of an LPU token: at zero, only its arithmetic would bound it.
    ("lpu_layer_s", Range::Positive),
    ("lpu_chip_hop_s", Range::NonNegative),
    ("lpu_sram_usable", Range::Fraction),
    ("rdu_layer_s", Range::NonNegative),
    ("rdu_bw_eff", Range::Fraction),
    ("capacity_kv_reserve", Range::BelowOne),
    ("spec_tokens_per_step", Range::AtLeastOne),
    ("spec_draft_token_cost", Range::NonNegative),
    ("server_tpot_s", Range::Positive),
    ("server_mean_tpot_frac", Range::Fraction),
    ("server_mean_ttft_frac", Range::Fraction),
    ("cloud_ttft_s", Range::NonNegative),
    ("default_isl", Range::Count),
    ("default_osl", Range::Count),
    ("idle_power_frac", Range::Share),
    ("host_overhead", Range::AtLeastOne),
    ("pue", Range::AtLeastOne),
    ("usd_per_kwh", Range::NonNegative),
    ("life_years", Range::Positive),
];

/// A parameters file that cannot be used. Each message names the file, the line and the
/// field at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamsError {
    /// The file is not TOML, names a field that does not exist, or gives a value of the
    /// wrong type.
    #[error("{origin}: {message}")]
    Parse {
        /// Where the text came from (a path).
        origin: String,
        /// What is wrong, with its line.
        message: String,
    },
    /// A value is outside what the physics admits.
    #[error("{origin}: line {line}, field `{field}`: {} is out of range: it must be {range}", shown(*.value))]
    OutOfRange {
        /// Where the text came from (a path).
        origin: String,
        /// The line that sets the field (0 where the file does not set it).
        line: usize,
        /// The field.
        field: String,
        /// Its value.
        value: f64,
        /// The range it must be in.
        range: &'static str,
    },
}

/// A value as a person would write it: huge and tiny ones in exponent form.
fn shown(v: f64) -> String {
    if v != 0.0 && !(1e-4..1e9).contains(&v.abs()) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

impl Params {
    /// The same parameters with the hardware at its best: every efficiency at the chip's
    /// datasheet figure (the matrix products at the datasheet peak of every chip, whatever
    /// its measured share; HBM, SRAM, fabric and the dataflow unit's streams at full rate),
    /// every fixed latency and overhead at zero (launches, all-reduce and stage latencies,
    /// the wafer's phases, hops and links, the LPU's and RDU's per-layer latencies, the path
    /// through a maker's cloud) and no padding of the experts' products to whole tiles.
    ///
    /// What is not an efficiency or a latency stays as it is: memory shares, the batch limit,
    /// the network's bandwidth per chip, the serving assumptions (lengths, scenario limits,
    /// speculative decoding) and the economics. A catalog measurement of a chip's read
    /// bandwidth still applies: it is the most that chip was measured to stream. A speed or
    /// throughput predicted with these parameters is therefore one that no calibration of
    /// the efficiencies and latencies can exceed, and a time one it cannot undercut; a
    /// published value beyond it needs something the row does not state (speculative
    /// decoding, a narrower precision, more chips) or faster hardware than the catalog's.
    pub fn ideal(&self) -> Params {
        Params {
            gpu_bw_eff: 1.0,
            // Past every chip's measured share: the products reach the datasheet peak,
            // where `gpu::achieved` caps them.
            gpu_decode_flops_eff: MOST,
            gpu_prefill_flops_eff: MOST,
            gpu_expert_tile_tokens: 0.0,
            gpu_step_overhead_s: 0.0,
            gpu_layer_overhead_s: 0.0,
            allreduce_latency_s: 0.0,
            fabric_eff: 1.0,
            network_allreduce_latency_s: 0.0,
            gpu_stage_hop_s: 0.0,
            wafer_phase_s: 0.0,
            wafer_hop_s: 0.0,
            wafer_sram_read_eff: 1.0,
            wafer_core_eff: 1.0,
            wafer_prefill_eff: 1.0,
            wafer_link_s: 0.0,
            lpu_layer_s: 0.0,
            lpu_chip_hop_s: 0.0,
            rdu_layer_s: 0.0,
            rdu_bw_eff: 1.0,
            cloud_ttft_s: 0.0,
            ..self.clone()
        }
    }

    /// Every parameter as (name, value, the value as a parameters file writes it), in name
    /// order, through its serialized form so that no field can be missed and integer fields
    /// stay integers.
    pub fn entries(&self) -> Vec<(String, f64, String)> {
        let Ok(toml::Value::Table(t)) = toml::Value::try_from(self) else {
            return Vec::new();
        };
        t.into_iter()
            .filter_map(|(k, v)| {
                let x = match v {
                    toml::Value::Float(f) => f,
                    toml::Value::Integer(i) => i as f64,
                    _ => return None,
                };
                Some((k, x, v.to_string()))
            })
            .collect()
    }

    /// The first parameter outside its range, as (name, value, what the range is).
    pub fn check(&self) -> Result<(), (String, f64, &'static str)> {
        for (name, v, _) in self.entries() {
            let range = RANGES
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(Range::Positive, |(_, r)| *r);
            if !range.admits(v) {
                return Err((name, v, range.says()));
            }
        }
        Ok(())
    }

    /// Reads a parameters file: the defaults, with the fields the file sets replaced.
    /// `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Params, ParamsError> {
        let p: Params = toml::from_str(text).map_err(|e| {
            let mut message = switchyard_catalog::toml_error_line(text, &e);
            // A whole-number field states its own range, which is narrower than its type's.
            if RANGES
                .iter()
                .any(|(name, r)| *r == Range::Count && message.contains(&format!("field `{name}`")))
            {
                message = message.replace(
                    "expected a whole number, not negative, up to 4294967295",
                    &format!("it must be {}", Range::Count.says()),
                );
            }
            ParamsError::Parse {
                origin: origin.to_string(),
                message,
            }
        })?;
        p.check()
            .map_err(|(field, value, range)| ParamsError::OutOfRange {
                origin: origin.to_string(),
                line: line_setting(text, &field),
                field,
                value,
                range,
            })?;
        Ok(p)
    }

    /// The parameters that differ from `base`, one `name = value` line each, in a form
    /// [`Params::from_toml`] reads back exactly.
    pub fn diff_toml(&self, base: &Params) -> String {
        self.entries()
            .into_iter()
            .zip(base.entries())
            .filter(|((_, v, _), (_, b, _))| v.to_bits() != b.to_bits())
            .map(|((name, _, text), _)| format!("{name} = {text}\n"))
            .collect()
    }
}

/// The line of `text` that sets `field` (`field = ...`, the key bare or quoted), or 0 where
/// none does.
fn line_setting(text: &str, field: &str) -> usize {
    switchyard_catalog::key_offset(text, 0..text.len(), field)
        .map_or(0, |at| switchyard_catalog::line_at(text, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_has_a_range_and_the_defaults_are_in_it() {
        let entries = Params::default().entries();
        let names: Vec<String> = entries.iter().map(|(n, _, _)| n.clone()).collect();
        assert_eq!(names.len(), RANGES.len(), "{names:?}");
        for n in &names {
            assert!(RANGES.iter().any(|(r, _)| r == n), "no range for {n}");
        }
        for i in ["max_batch", "token_budget", "default_isl", "default_osl"] {
            assert!(
                entries
                    .iter()
                    .any(|(n, _, text)| n == i && !text.contains('.')),
                "{i}"
            );
        }
        assert_eq!(Params::default().check(), Ok(()));
    }

    #[test]
    fn a_file_sets_only_what_it_names() {
        let p = Params::from_toml("gpu_decode_flops_eff = 0.5\nmax_batch = 512\n", "p.toml")
            .expect("valid");
        assert_eq!(p.gpu_decode_flops_eff, 0.5);
        assert_eq!(p.max_batch, 512);
        let d = Params::default();
        assert_eq!(p.gpu_prefill_flops_eff, d.gpu_prefill_flops_eff);
        assert_eq!(
            p.diff_toml(&d),
            "gpu_decode_flops_eff = 0.5\nmax_batch = 512\n"
        );
        assert_eq!(Params::from_toml("", "p.toml").expect("valid"), d);
    }

    #[test]
    fn a_diff_reads_back_exactly() {
        let p = Params {
            wafer_hop_s: 0.1 + 0.2,
            gpu_step_overhead_s: 1.234_567_890_123e-3,
            default_osl: 300,
            ..Params::default()
        };
        let back = Params::from_toml(&p.diff_toml(&Params::default()), "d").expect("valid");
        assert_eq!(back, p);
    }

    #[test]
    fn bad_files_name_the_line_and_field() {
        let e =
            Params::from_toml("# fitted\ngpu_decode_eff = 0.5\n", "p.toml").expect_err("refused");
        let msg = e.to_string();
        assert!(msg.starts_with("p.toml: line 2"), "{msg}");
        assert!(msg.contains("gpu_decode_eff"), "{msg}");
        let e = Params::from_toml("pue = 1.2\nfabric_eff = 1.5\n", "p.toml").expect_err("refused");
        assert_eq!(
            e.to_string(),
            "p.toml: line 2, field `fabric_eff`: 1.5 is out of range: it must be from 10^-12 to 1"
        );
        let e = Params::from_toml("max_batch = \"many\"\n", "p.toml").expect_err("refused");
        assert!(e.to_string().contains("line 1"), "{e}");
        assert!(Params::from_toml("wafer_hop_s = -1e-9", "p").is_err());
        let e = Params::from_toml("\"fabric_eff\" = 1.5\n", "q.toml").expect_err("refused");
        assert!(
            e.to_string()
                .starts_with("q.toml: line 1, field `fabric_eff`"),
            "{e}"
        );
        assert!(Params::from_toml("lpu_layer_s = 0.0", "p").is_err());
        assert!(Params::from_toml("capacity_kv_reserve = 1.0", "p").is_err());
        assert!(Params::from_toml("pue = nan", "p").is_err());
        // Values beyond any physics are refused before they make figures infinite.
        let e = Params::from_toml("pue = 1e308", "p").expect_err("refused");
        assert!(e.to_string().contains("1e308 is out of range"), "{e}");
        // ... and so are values so near zero that figures divided by them overflow.
        for tiny in [
            "gpu_bw_eff = 5e-324",
            "gpu_bw_eff = 1e-300",
            "wafer_hop_s = 1e-300",
        ] {
            assert!(Params::from_toml(tiny, "p").is_err(), "{tiny}");
        }
        assert!(Params::from_toml("wafer_hop_s = 0.0", "p").is_ok());
        // A whole-number field says so in words, not in Rust's type names.
        let e = Params::from_toml("max_batch = 5000000000", "p").expect_err("refused");
        assert!(
            e.to_string()
                .contains("it must be a whole number from 1 to 1000000000"),
            "{e}"
        );
        for v in ["0", "1.5", "4294967295"] {
            let e = Params::from_toml(&format!("default_isl = {v}"), "p").expect_err("refused");
            assert!(e.to_string().contains("from 1 to 1000000000"), "{v}: {e}");
        }
    }
}
