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
    /// 4-bit integer, group-scaled.
    Int4,
}

impl Precision {
    /// Every precision, for listings.
    pub const ALL: [Precision; 6] = [
        Precision::Bf16,
        Precision::Fp16,
        Precision::Fp8,
        Precision::Int8,
        Precision::Fp4,
        Precision::Int4,
    ];

    /// Bytes per stored value, including block-scale overhead for the 4-bit formats
    /// (one 8-bit scale per 16 or 32 values: NVFP4 and MXFP4 layouts, see
    /// <https://www.opencompute.org/documents/ocp-microscaling-formats-mx-v1-0-spec-final-pdf>).
    pub fn bytes(self) -> f64 {
        match self {
            Precision::Bf16 | Precision::Fp16 => 2.0,
            Precision::Fp8 | Precision::Int8 => 1.0,
            Precision::Fp4 | Precision::Int4 => 0.5 + 1.0 / 32.0,
        }
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
#[error("unknown precision `{0}`; known: bf16, fp16, fp8, int8, fp4, int4")]
pub struct UnknownPrecision(pub String);

impl FromStr for Precision {
    type Err = UnknownPrecision;
    /// A format's name in any case, with `_` or spaces for `-` (`fp8_e4m3fn`) and a note in
    /// brackets after it (`FP8 (E4M3)`). Weight-only formats (`W4A16`, AWQ, GPTQ) are
    /// refused: their products run in 16 bits, which no one precision describes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        // A note that names a weight-only scheme (`INT4 (AWQ)`) changes what the name means.
        let (head, note) = lower.split_once('(').unwrap_or((&lower, ""));
        if [
            "awq",
            "gptq",
            "w4a16",
            "w8a16",
            "weight-only",
            "weight only",
        ]
        .iter()
        .any(|w| note.contains(w))
        {
            return Err(UnknownPrecision(s.to_string()));
        }
        let cleaned = head.trim().replace([' ', '_'], "-");
        let named = |n: &str| {
            Some(match n {
                "bf16" | "bfloat16" => Precision::Bf16,
                "fp16" | "f16" | "float16" | "half" | "16-bit" => Precision::Fp16,
                "fp8" | "f8" | "float8" | "fp8-e4m3" | "fp8-e4m3fn" | "float8-e4m3fn" | "e4m3"
                | "fp8-e5m2" | "e5m2" | "mxfp8" | "w8a8-fp8" | "fp8-dynamic" => Precision::Fp8,
                "int8" | "i8" | "w8a8" | "w8a8-int8" => Precision::Int8,
                "fp4" | "nvfp4" | "mxfp4" | "e2m1" => Precision::Fp4,
                "int4" | "i4" => Precision::Int4,
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
        match last.to_ascii_lowercase().as_str() {
            "fp8" | "fp4" | "nvfp4" | "mxfp4" | "bf16" | "fp16" | "int8" | "int4" | "w8a8" => {
                last.parse().ok()
            }
            _ => None,
        }
    }
}
