//! Systems: one accelerator chip (or one wafer) and how it is packaged and sold.

use crate::Precision;
use serde::{Deserialize, Serialize};

/// The architecture family, which decides which part of the performance model applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SystemKind {
    /// A GPU with off-chip HBM (NVIDIA, AMD).
    Gpu,
    /// A wafer-scale engine: weights and KV cache live in on-wafer SRAM (Cerebras).
    Wafer,
    /// A language processing unit: weights in on-chip SRAM spread over many chips (Groq).
    Lpu,
    /// A reconfigurable dataflow unit with SRAM, HBM and DDR tiers (SambaNova).
    Rdu,
}

impl SystemKind {
    /// The lower-case name used in files and listings.
    pub fn name(self) -> &'static str {
        match self {
            SystemKind::Gpu => "gpu",
            SystemKind::Wafer => "wafer",
            SystemKind::Lpu => "lpu",
            SystemKind::Rdu => "rdu",
        }
    }
}

/// Dense (non-sparse) peak tensor throughput per chip, in TFLOP/s (TOP/s for int8), by the
/// precision of the operands. A missing entry means the chip has no native support.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenseTflops {
    /// bf16/fp16 operands.
    pub bf16: Option<f64>,
    /// fp8 operands.
    pub fp8: Option<f64>,
    /// int8 operands.
    pub int8: Option<f64>,
    /// fp4 operands.
    pub fp4: Option<f64>,
}

impl DenseTflops {
    /// The figures given, each with its precision (`bf16` standing for 16-bit).
    pub fn entries(&self) -> impl Iterator<Item = (Precision, f64)> {
        [
            (Precision::Bf16, self.bf16),
            (Precision::Fp8, self.fp8),
            (Precision::Int8, self.int8),
            (Precision::Fp4, self.fp4),
        ]
        .into_iter()
        .filter_map(|(p, v)| Some((p, v?)))
    }
}

/// The core mesh of a wafer-scale engine, which sets on-wafer communication distances.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaferMesh {
    /// Cores along the x axis of the 2-D mesh.
    pub cores_x: u32,
    /// Cores along the y axis.
    pub cores_y: u32,
    /// Core clock in GHz.
    pub clock_ghz: f64,
    /// SRAM per core in KB.
    pub sram_per_core_kb: f64,
    /// 16-bit multiply-accumulates per core per cycle (the SIMD width).
    pub fmac_per_cycle: f64,
    /// Where these mesh figures come from.
    pub sources: Vec<String>,
}

impl WaferMesh {
    /// Cores on the wafer.
    pub fn cores(&self) -> f64 {
        f64::from(self.cores_x) * f64::from(self.cores_y)
    }

    /// Dense 16-bit peak of one core in FLOP/s (two FLOPs per multiply-accumulate).
    pub fn core_flops(&self) -> f64 {
        2.0 * self.fmac_per_cycle * self.clock_ghz * 1e9
    }
}

/// What a system costs: a purchase price amortised over a life, a rental rate, or both.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Purchase price of one whole system (`chips_per_system` chips), in US dollars.
    pub capex_usd_per_system: Option<f64>,
    /// Years over which the purchase is amortised.
    pub life_years: Option<f64>,
    /// Rental price per chip-hour (per wafer-hour for wafers), in US dollars.
    pub rent_usd_per_chip_hour: Option<f64>,
    /// Where these prices come from.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Caveats: list price against street price, date, what the price covers.
    #[serde(default)]
    pub notes: String,
}

/// What microbenchmarks measured on a chip: the bandwidth a read stream reaches and the
/// rate of a large matrix product, the achieved figures the datasheet peaks stand above.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measured {
    /// Off-chip memory bandwidth of a read-only stream (STREAM's dot product) per chip, TB/s.
    pub memory_read_bw_tb_s: Option<f64>,
    /// Best rate of a large dense matrix product per chip, in TFLOP/s, by operand precision
    /// (`bf16` holds a 16-bit measurement, FP16 or BF16).
    #[serde(default)]
    pub gemm_tflops: DenseTflops,
    /// Where the measurements come from.
    #[serde(default)]
    pub sources: Vec<String>,
    /// What was run, on what software.
    #[serde(default)]
    pub notes: String,
}

/// One kind of system in the catalog.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct System {
    /// Short id used on the command line, e.g. `h100-sxm`, `cs3`.
    pub id: String,
    /// Other names the system goes by (`h100`, `wse-3`), accepted wherever the id is.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Maker.
    pub vendor: String,
    /// Architecture family.
    pub kind: SystemKind,
    /// The product a chip is sold in, e.g. `DGX/HGX H100`.
    pub system: String,
    /// Off-chip memory per chip in GB (0 when weights live only in SRAM).
    #[serde(default)]
    pub memory_gb: f64,
    /// Off-chip memory bandwidth per chip in TB/s.
    #[serde(default)]
    pub memory_bw_tb_s: f64,
    /// A third, slower memory tier per chip in GB that holds the weights the first two
    /// cannot (SambaNova's DDR); none on most systems.
    pub capacity_memory_gb: Option<f64>,
    /// Bandwidth of that tier per chip in TB/s.
    pub capacity_memory_bw_tb_s: Option<f64>,
    /// On-chip SRAM per chip in GB (for GPUs: the L2 cache).
    #[serde(default)]
    pub sram_gb: f64,
    /// On-chip SRAM bandwidth per chip in TB/s, where published.
    #[serde(default)]
    pub sram_bw_tb_s: f64,
    /// Dense peak throughput by operand precision.
    #[serde(default)]
    pub dense_tflops: DenseTflops,
    /// Name of the chip-to-chip fabric.
    #[serde(default)]
    pub interconnect: String,
    /// Chip-to-chip bandwidth per chip in GB/s (both directions together).
    pub interconnect_gb_s: Option<f64>,
    /// Chips joined by the fast fabric (the NVLink domain); defaults to `chips_per_system`.
    pub scale_up_chips: Option<u32>,
    /// Power per chip at full load in W.
    pub chip_power_w: Option<f64>,
    /// Chips (or wafers) in one system as sold.
    pub chips_per_system: u32,
    /// Power of one whole system at full load in kW (host, fans and networking included).
    pub system_power_kw: Option<f64>,
    /// The core mesh, for wafer-scale engines.
    pub mesh: Option<WaferMesh>,
    /// Purchase and rental prices.
    pub price: Option<Price>,
    /// Measured bandwidth and matrix rate, where published.
    pub measured: Option<Measured>,
    /// Another system whose chip is this one's silicon, and whose measured matrix share
    /// ([`System::matrix_share`]) stands for this one's, which has none: the closest
    /// measurement there is, for a chip whose own datasheet peaks already carry what sets
    /// the two apart (B200 at 1,000 W is rated 4.5 PFLOP/s dense at FP8, the same die in
    /// GB200 at 1,200 W 5.0). Where a tight power limit throttles the chip below the clock
    /// its datasheet counts (H100 PCIe at 350 W), the borrowed share is an upper bound.
    /// MI325X, rated at MI300X's peaks under a higher power limit (1,000 W against 750 W)
    /// and published on later software, does not borrow MI300X's: that share would be a
    /// lower bound, and the published rows fit better without it (the `switchyard-perf`
    /// `Params::gpu_decode_flops_eff` documentation gives the figures).
    pub matrix_share_from: Option<String>,
    /// The measured matrix share of the `matrix_share_from` system, which the catalog fills
    /// in whenever it reads a file (it is not read from one).
    #[serde(skip)]
    pub borrowed_matrix_share: Option<f64>,
    /// Where the hardware figures come from.
    pub sources: Vec<String>,
    /// What is derived, uncertain or assumed.
    #[serde(default)]
    pub notes: String,
}

impl System {
    /// Dense peak FLOP/s per chip for matrix products whose operands are stored in `p`, and the
    /// precision the product actually runs in: a chip without native support for `p` runs the
    /// product in the next wider format it supports (weight-only quantisation).
    pub fn flops(&self, p: Precision) -> Option<(f64, Precision)> {
        let t = &self.dense_tflops;
        let order: &[(Option<f64>, Precision)] = match p {
            Precision::Fp4 | Precision::Int4 => &[
                (t.fp4, Precision::Fp4),
                (t.fp8, Precision::Fp8),
                (t.int8, Precision::Int8),
                (t.bf16, Precision::Bf16),
            ],
            // A floating-point format does not multiply on integer units: without FP8, FP8
            // weights are widened to 16 bits (weight-only, as Ampere's Marlin kernels run
            // them).
            Precision::Fp8 => &[(t.fp8, Precision::Fp8), (t.bf16, Precision::Bf16)],
            // 4-bit integer weights multiplied in 8 bits, FP8 or INT8 (QServe's W4A8 on INT8
            // tensor cores).
            Precision::W4a8 => &[
                (t.fp8, Precision::Fp8),
                (t.int8, Precision::Int8),
                (t.bf16, Precision::Bf16),
            ],
            Precision::Int8 => &[
                (t.int8, Precision::Int8),
                (t.fp8, Precision::Fp8),
                (t.bf16, Precision::Bf16),
            ],
            Precision::Bf16 | Precision::Fp16 | Precision::W4a16 | Precision::W8a16 => {
                &[(t.bf16, Precision::Bf16)]
            }
        };
        order.iter().find_map(|(v, q)| v.map(|tf| (tf * 1e12, *q)))
    }

    /// The share of its datasheet peak that a large matrix product with operands in `p`
    /// reaches on this chip, where measured: the measurement at the precision the product
    /// runs in, else the mean share of the precisions measured. What the performance model
    /// uses is [`System::matrix_share`].
    pub fn gemm_fraction(&self, p: Precision) -> Option<f64> {
        let m = self.measured.as_ref()?;
        let (_, runs_in) = self.flops(p)?;
        self.gemm_shares(m)
            .find(|(q, _)| *q == runs_in)
            .map(|(_, f)| f)
            .or_else(|| {
                let (sum, n) = self
                    .gemm_shares(m)
                    .fold((0.0, 0u32), |(s, n), (_, f)| (s + f, n + 1));
                (n > 0).then(|| sum / f64::from(n))
            })
    }

    /// The share of its datasheet peak that a large matrix product reaches on this chip: its
    /// measured share at FP8, else at INT8, else at 16 bits (A100), never at four bits, whose
    /// large products reach a share that products of serving size do not; for a chip
    /// measured at none of these, that of its [`System::matrix_share_from`] system. The
    /// performance model runs every precision's products at this one share of their own peak
    /// (its `switchyard-perf` `gpu` module says why FP8's).
    pub fn matrix_share(&self) -> Option<f64> {
        self.own_matrix_share().or(self.borrowed_matrix_share)
    }

    /// [`System::matrix_share`] from this chip's own measurements alone.
    pub fn own_matrix_share(&self) -> Option<f64> {
        // The performance model asks for every matrix product it times: plain field reads.
        let (got, peak) = (&self.measured.as_ref()?.gemm_tflops, &self.dense_tflops);
        [
            (got.fp8, peak.fp8),
            (got.int8, peak.int8),
            (got.bf16, peak.bf16),
        ]
        .into_iter()
        .find_map(|pair| match pair {
            (Some(got), Some(peak)) => Some(got / peak),
            _ => None,
        })
    }

    /// The share of its datasheet memory bandwidth that a read stream reaches, where measured.
    pub fn read_bw_fraction(&self) -> Option<f64> {
        self.read_share(self.measured.as_ref()?)
    }

    /// `m`'s read bandwidth as a share of this chip's datasheet bandwidth.
    fn read_share(&self, m: &Measured) -> Option<f64> {
        m.memory_read_bw_tb_s
            .filter(|_| self.memory_bw_tb_s > 0.0)
            .map(|bw| bw / self.memory_bw_tb_s)
    }

    /// Each measured matrix rate of `m` as a share of this chip's datasheet peak at its
    /// precision (a precision the chip has no peak of its own for is left out).
    fn gemm_shares<'s>(&'s self, m: &'s Measured) -> impl Iterator<Item = (Precision, f64)> + 's {
        m.gemm_tflops.entries().filter_map(|(q, measured)| {
            let (peak, runs_in) = self.flops(q)?;
            (runs_in == q).then(|| (q, measured * 1e12 / peak))
        })
    }

    /// Chips joined by the fast fabric.
    pub fn scale_up(&self) -> u32 {
        self.scale_up_chips.unwrap_or(self.chips_per_system).max(1)
    }

    /// Memory that can hold weights per chip, in bytes: HBM where there is any, else SRAM.
    /// The vendor's gigabytes are read as 10^9 bytes. HBM stacks come in binary sizes, so
    /// an "80 GB" H100 holds 81,559 MiB (about 85.5 x 10^9 bytes) as `nvidia-smi` reports it;
    /// the usable share of memory in the performance model is calibrated on this reading.
    /// Reading them as GiB instead left `reference/points.csv` at 31.9% and took
    /// `reference/heldout.csv` from 31.6% to 32.5%.
    pub fn weight_memory_bytes(&self) -> f64 {
        if self.memory_gb > 0.0 {
            self.memory_gb * 1e9
        } else {
            self.sram_gb * 1e9
        }
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        const FIGURE_LEAST: f64 = 1e-6;
        const FIGURE_MOST: f64 = 1e9;
        if self.id.trim().is_empty() {
            return Err("field `id` must not be empty".into());
        }
        // Tensor-parallel exchanges within a GPU system run at its fabric's rate: left out,
        // no rate would be a guess that moves TTFT and throughput threefold unseen. (A
        // system of one GPU reaches others over the network, `network_gb_s`.)
        if self.kind == SystemKind::Gpu && self.scale_up() > 1 && self.interconnect_gb_s.is_none() {
            return Err("field `interconnect_gb_s` is missing: a GPU system of several chips needs their chip-to-chip bandwidth per chip in GB/s (900 for NVLink 4, 64 for PCIe 5 x16)".into());
        }
        // Every figure is a finite amount: none is negative, and those that scale a rate or
        // a power must be above 0 where given (a zero or negative one would give negative or
        // infinite times, energies and capacities downstream).
        let at_least_zero = [
            ("memory_gb", Some(self.memory_gb)),
            ("memory_bw_tb_s", Some(self.memory_bw_tb_s)),
            ("sram_gb", Some(self.sram_gb)),
            ("sram_bw_tb_s", Some(self.sram_bw_tb_s)),
        ];
        let above_zero = [
            ("interconnect_gb_s", self.interconnect_gb_s),
            ("chip_power_w", self.chip_power_w),
            ("system_power_kw", self.system_power_kw),
            ("dense_tflops.bf16", self.dense_tflops.bf16),
            ("dense_tflops.fp8", self.dense_tflops.fp8),
            ("dense_tflops.int8", self.dense_tflops.int8),
            ("dense_tflops.fp4", self.dense_tflops.fp4),
            ("capacity_memory_gb", self.capacity_memory_gb),
            ("capacity_memory_bw_tb_s", self.capacity_memory_bw_tb_s),
        ];
        // Figures beyond any hardware (1e308 GB, 1e-300 TB/s) are refused as typos before
        // they make times, capacities or energies infinite.
        let figure = |v: f64| (FIGURE_LEAST..=FIGURE_MOST).contains(&v);
        for (field, v) in at_least_zero {
            if v.is_some_and(|v| !(v == 0.0 || figure(v))) {
                return Err(format!(
                    "field `{field}` must be 0 or a number from 10^-6 to 10^9"
                ));
            }
        }
        for (field, v) in above_zero {
            if v.is_some_and(|v| !figure(v)) {
                return Err(format!(
                    "field `{field}` must be a number from 10^-6 to 10^9"
                ));
            }
        }
        if self.scale_up_chips == Some(0) {
            return Err("field `scale_up_chips` must be at least 1".into());
        }
        if let Some(m) = &self.mesh {
            let mesh = [
                ("mesh.clock_ghz", m.clock_ghz),
                ("mesh.sram_per_core_kb", m.sram_per_core_kb),
                ("mesh.fmac_per_cycle", m.fmac_per_cycle),
            ];
            if let Some((field, _)) = mesh.iter().find(|(_, v)| !figure(*v)) {
                return Err(format!(
                    "field `{field}` must be a number from 10^-6 to 10^9"
                ));
            }
            for (field, v) in [("mesh.cores_x", m.cores_x), ("mesh.cores_y", m.cores_y)] {
                if v == 0 {
                    return Err(format!("field `{field}` must be at least 1"));
                }
            }
        }
        if let Some(p) = &self.price {
            crate::check_sources("price.sources", &p.sources)?;
            let price = [
                ("price.capex_usd_per_system", p.capex_usd_per_system, 0.0),
                (
                    "price.rent_usd_per_chip_hour",
                    p.rent_usd_per_chip_hour,
                    0.0,
                ),
            ];
            for (field, v, _) in price {
                if v.is_some_and(|v| !(v == 0.0 || figure(v))) {
                    return Err(format!(
                        "field `{field}` must be 0 or a number from 10^-6 to 10^9"
                    ));
                }
            }
            if p.life_years.is_some_and(|v| !figure(v)) {
                return Err("field `price.life_years` must be a number from 10^-6 to 10^9".into());
            }
        }
        if self.chips_per_system == 0 {
            return Err("field `chips_per_system` must be at least 1".into());
        }
        if self.memory_gb <= 0.0 && self.sram_gb <= 0.0 {
            return Err("needs `memory_gb` or `sram_gb` above 0 to hold weights".into());
        }
        // A GPU's weights and KV cache live in its HBM: its on-chip SRAM is a cache.
        if self.kind == SystemKind::Gpu && self.memory_gb <= 0.0 {
            return Err(
                "field `memory_gb` must be above 0 on a `gpu` system (it is missing or 0): its HBM holds the weights"
                    .into(),
            );
        }
        // A system at full load draws at least what its chips do: a smaller figure is a
        // typo that would price its energy near nothing.
        if let (Some(kw), Some(w)) = (self.system_power_kw, self.chip_power_w) {
            let chips = f64::from(self.chips_per_system) * w / 1000.0;
            if kw < chips {
                return Err(format!(
                    "field `system_power_kw` ({kw}) is below what its chips draw alone ({} x {w} W = {chips} kW)",
                    self.chips_per_system
                ));
            }
        }
        if self.memory_gb > 0.0 && self.memory_bw_tb_s <= 0.0 {
            return Err("field `memory_bw_tb_s` must be above 0 when `memory_gb` is".into());
        }
        match (self.capacity_memory_gb, self.capacity_memory_bw_tb_s) {
            (None, None) => {}
            (Some(gb), Some(bw))
                if gb > 0.0 && bw > 0.0 && self.memory_gb > 0.0 && self.kind == SystemKind::Rdu => {}
            _ => {
                return Err("fields `capacity_memory_gb` and `capacity_memory_bw_tb_s` come together, above 0, on an `rdu` system with `memory_gb` (only its physics streams from that tier)".into())
            }
        }
        if self.flops(Precision::Bf16).is_none() && self.kind != SystemKind::Wafer {
            return Err("field `dense_tflops` needs at least a `bf16` figure".into());
        }
        if self.kind == SystemKind::Wafer {
            let Some(m) = &self.mesh else {
                return Err("a wafer-scale system needs a `mesh` table".into());
            };
            // A wafer's weights and KV cache live in its cores' SRAM, read at its bandwidth:
            // without one, every time is infinite.
            for (field, v) in [
                ("sram_gb", self.sram_gb),
                ("sram_bw_tb_s", self.sram_bw_tb_s),
            ] {
                if v <= 0.0 {
                    return Err(format!(
                        "field `{field}` must be above 0 on a `wafer` system: its SRAM holds and feeds the weights"
                    ));
                }
            }
            // The physics streams nothing from memory off the wafer: a figure for it would
            // be counted as room for weights and read at the SRAM's speed.
            if self.memory_gb > 0.0 || self.memory_bw_tb_s > 0.0 {
                return Err("field `memory_gb` must be 0 on a `wafer` system (with `memory_bw_tb_s`): off-wafer memory is not modelled, its weights and KV cache live in SRAM".into());
            }
            // The SRAM is the cores': a figure far from their count times each one's is a
            // typo in one of them (WSE-3: 762 x 1,172 cores of 48 KB, 42.9 GB, against 44).
            let cores_gb =
                f64::from(m.cores_x) * f64::from(m.cores_y) * m.sram_per_core_kb * 1e3 / 1e9;
            if !(0.5 * cores_gb..=1.25 * cores_gb).contains(&self.sram_gb) {
                return Err(format!(
                    "field `sram_gb` ({}) is far from what the mesh's cores hold ({} x {} cores of {} KB: {cores_gb:.1} GB); the two must agree within a quarter",
                    self.sram_gb, m.cores_x, m.cores_y, m.sram_per_core_kb
                ));
            }
        }
        crate::check_sources("sources", &self.sources)?;
        if let Some(m) = &self.measured {
            if self.kind != SystemKind::Gpu {
                return Err("a `measured` table is read only for `gpu` systems".into());
            }
            crate::check_sources("measured.sources", &m.sources)?;
            // A measurement above the datasheet peak is a typo, not a faster chip; one at a
            // precision the chip has no peak for cannot be read as a share.
            // A share below a millionth of the peak is a typo in the units, not a chip.
            if self.gemm_shares(m).count() != m.gemm_tflops.entries().count()
                || self
                    .gemm_shares(m)
                    .any(|(_, f)| !(FIGURE_LEAST..=1.0).contains(&f))
            {
                return Err("field `measured.gemm_tflops`: each figure must be above 0 and at most the chip's dense peak at its precision, which `dense_tflops` must give".into());
            }
            if m.memory_read_bw_tb_s.is_some()
                && !self
                    .read_share(m)
                    .is_some_and(|f| (FIGURE_LEAST..=1.0).contains(&f))
            {
                return Err("field `measured.memory_read_bw_tb_s` must be above 0 and at most `memory_bw_tb_s`".into());
            }
        }
        Ok(())
    }
}
