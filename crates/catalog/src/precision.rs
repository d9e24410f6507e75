//! Numeric precisions for weights and for the KV cache.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A number format used to store weights or the KV cache and to run matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// bfloat16.
    Bf16,
    /// IEEE half precision; same size and, on every catalogued chip, same rate as bf16.
    Fp16,
    /// 8-bit floating point (E4M3/E5M2).
    Fp8,
    /// 8-bit integer.
    Int8,
    /// 4-bit floating point (NVFP4 / MXFP4), block-scaled.
    Fp4,
    /// 4-bit integer, group-scaled, multiplied in the chip's narrowest format that takes it
    /// (FP4 or FP8 on chips that have them: W4A8).
    Int4,
    /// 4-bit integer weights multiplied in 16 bits (AWQ, GPTQ): the kernel dequantises each
    /// tile of weights as it streams it (Marlin, <https://arxiv.org/abs/2408.11743>), so a
    /// step reads a quarter of the 16-bit bytes and computes at the 16-bit rate.
    W4a16,
    /// 8-bit integer weights multiplied in 16 bits (weight-only INT8).
    W8a16,
}

impl Precision {
    /// Every precision, for listings.
    pub const ALL: [Precision; 8] = [
        Precision::Bf16,
        Precision::Fp16,
        Precision::Fp8,
        Precision::Int8,
        Precision::Fp4,
        Precision::Int4,
        Precision::W4a16,
        Precision::W8a16,
    ];

    /// Bytes per stored value, including block-scale overhead for the 4-bit formats
    /// (one 8-bit scale per 16 or 32 values: NVFP4 and MXFP4 layouts, see
    /// <https://www.opencompute.org/documents/ocp-microscaling-formats-mx-v1-0-spec-final-pdf>;
    /// AWQ's and GPTQ's 16-bit scale and zero per group of 128 are the same 1/32 of a byte).
    pub fn bytes(self) -> f64 {
        match self {
            Precision::Bf16 | Precision::Fp16 => 2.0,
            Precision::Fp8 | Precision::Int8 | Precision::W8a16 => 1.0,
            Precision::Fp4 | Precision::Int4 | Precision::W4a16 => 0.5 + 1.0 / 32.0,
        }
    }

    /// Whether only the weights are stored in this format, the products running in 16 bits:
    /// no format for a KV cache, whose values are products' inputs.
    pub fn weight_only(self) -> bool {
        matches!(self, Precision::W4a16 | Precision::W8a16)
    }

    /// The lower-case name used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Bf16 => "bf16",
            Precision::Fp16 => "fp16",
            Precision::Fp8 => "fp8",
            Precision::Int8 => "int8",
            Precision::Fp4 => "fp4",
            Precision::Int4 => "int4",
            Precision::W4a16 => "w4a16",
            Precision::W8a16 => "w8a16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error for a precision name that is not known.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "unknown precision `{0}`; known: bf16, fp16, fp8, int8, fp4, int4, and the weight-only w4a16 (awq, gptq) and w8a16"
)]
pub struct UnknownPrecision(pub String);

impl FromStr for Precision {
    type Err = UnknownPrecision;
    /// A format's name in any case, with `_` or spaces for `-` (`fp8_e4m3fn`) and a note in
    /// brackets after it (`FP8 (E4M3)`). The weight-only schemes are named as quantisers
    /// and engines name them: `w4a16`, `awq`, `gptq`, `int4-awq` (TensorRT-LLM),
    /// `INT4 (GPTQ)`, `w8a16`, `int8 (weight-only)`; `w4a8` (and `w4a8-awq`) is `int4`,
    /// multiplied in 8 bits.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        let (head, note) = lower.split_once('(').unwrap_or((&lower, ""));
        let cleaned = head.trim().replace([' ', '_'], "-");
        // A scheme named in the name or its note (`int4-awq`, `INT4 (GPTQ)`) keeps the
        // weights at the width named and multiplies in 16 bits.
        let whole = format!("{cleaned} {note}");
        let weight_only = ["awq", "gptq", "weight-only", "weight only", "-wo"]
            .iter()
            .any(|w| whole.contains(w));
        if weight_only && !whole.contains("w4a8") {
            let head = cleaned
                .split('-')
                .find(|part| !["awq", "gptq", "weight", "only", "wo"].contains(part))
                .unwrap_or("int4");
            return match head {
                "int4" | "i4" | "w4a16" | "4-bit" => Ok(Precision::W4a16),
                "int8" | "i8" | "w8a16" | "8-bit" => Ok(Precision::W8a16),
                _ => Err(UnknownPrecision(s.to_string())),
            };
        }
        let cleaned = cleaned
            .trim_end_matches("-awq")
            .trim_end_matches("-gptq")
            .to_string();
        let named = |n: &str| {
            Some(match n {
                "bf16" | "bfloat16" => Precision::Bf16,
                "fp16" | "f16" | "float16" | "half" | "16-bit" => Precision::Fp16,
                "fp8" | "f8" | "float8" | "fp8-e4m3" | "fp8-e4m3fn" | "float8-e4m3fn" | "e4m3"
                | "fp8-e5m2" | "e5m2" | "mxfp8" | "w8a8-fp8" | "fp8-dynamic" => Precision::Fp8,
                "int8" | "i8" | "w8a8" | "w8a8-int8" => Precision::Int8,
                "fp4" | "nvfp4" | "mxfp4" | "e2m1" => Precision::Fp4,
                "int4" | "i4" | "w4a8" => Precision::Int4,
                "w4a16" => Precision::W4a16,
                "w8a16" => Precision::W8a16,
                _ => return None,
            })
        };
        named(&cleaned).ok_or_else(|| UnknownPrecision(s.to_string()))
    }
}

impl Precision {
    /// The number format a published model name ends with, if any: `DeepSeek-R1-FP4`,
    /// `Llama-3.1-405B-Instruct-FP8`. A name that says its format is that format's checkpoint.
    pub fn in_model_name(name: &str) -> Option<Precision> {
        // `-FP8-dynamic` names how the scales were chosen after the format.
        let mut parts = name.trim().rsplit(['-', '_', ' ', '/']);
        let mut last = parts.next()?;
        if last.eq_ignore_ascii_case("dynamic") {
            last = parts.next()?;
        }
        let lower = name.to_ascii_lowercase();
        // `-AWQ`, `-GPTQ-Int4`, `-GPTQ-Int8`: a weight-only checkpoint, of the width named.
        if ["awq", "gptq"].iter().any(|w| lower.contains(w)) {
            return Some(if last.eq_ignore_ascii_case("int8") {
                Precision::W8a16
            } else {
                Precision::W4a16
            });
        }
        match last.to_ascii_lowercase().as_str() {
            "fp8" | "fp4" | "nvfp4" | "mxfp4" | "bf16" | "fp16" | "int8" | "int4" | "w8a8"
            | "w4a16" | "w8a16" => last.parse().ok(),
            _ => None,
        }
    }
}
