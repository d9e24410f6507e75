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
    /// (FP4 on Blackwell and MI355X, FP8 on Hopper and MI300X).
    Int4,
    /// 4-bit integer weights multiplied in 8 bits (W4A8: FP8 where the chip has it, else
    /// INT8).
    W4a8,
    /// 4-bit integer weights multiplied in 16 bits (AWQ, GPTQ): the kernel dequantises each
    /// tile of weights as it streams it (Marlin, <https://arxiv.org/abs/2408.11743>), so a
    /// step reads a quarter of the 16-bit bytes and computes at the 16-bit rate.
    W4a16,
    /// 8-bit weights (integer or FP8) multiplied in 16 bits (weight-only INT8, FP8 Marlin).
    W8a16,
}

/// The formats a KV cache is stored in.
const KV_FORMATS: &str = "bf16, fp16, fp8, int8, fp4, int4";

impl Precision {
    /// Every precision, for listings.
    pub const ALL: [Precision; 9] = [
        Precision::Bf16,
        Precision::Fp16,
        Precision::Fp8,
        Precision::Int8,
        Precision::Fp4,
        Precision::Int4,
        Precision::W4a8,
        Precision::W4a16,
        Precision::W8a16,
    ];

    /// Bytes per stored value, including block-scale overhead for the 4-bit formats
    /// (one 8-bit scale per 16 or 32 values: NVFP4 and MXFP4 layouts, see
    /// <https://www.opencompute.org/documents/ocp-microscaling-formats-mx-v1-0-spec-final-pdf>).
    /// The integer 4-bit formats take the same: AWQ's and GPTQ's 16-bit scale and 4-bit zero
    /// per group of 128 are 1/26 of a byte a value, a 16-bit scale per group of 32 (Kimi's
    /// INT4 experts) 1/16, and 1/32 lies between the common group sizes.
    pub fn bytes(self) -> f64 {
        match self {
            Precision::Bf16 | Precision::Fp16 => 2.0,
            Precision::Fp8 | Precision::Int8 | Precision::W8a16 => 1.0,
            Precision::Fp4 | Precision::Int4 | Precision::W4a8 | Precision::W4a16 => {
                0.5 + 1.0 / 32.0
            }
        }
    }

    /// Whether only the weights are stored in this format, the products running in 16 bits:
    /// no format for a KV cache, whose values are products' inputs.
    pub fn weight_only(self) -> bool {
        matches!(self, Precision::W4a16 | Precision::W8a16)
    }

    /// A KV cache's format from its name: a format that stores values, not a scheme that
    /// says what weights multiply in (`w4a8`, `w4a16`), which is refused with the formats a
    /// cache takes.
    ///
    /// # Errors
    /// The name is no format, or a weight scheme.
    pub fn kv_from_str(s: &str) -> Result<Precision, String> {
        s.parse::<Precision>()
            .map_err(|_| format!("unknown KV-cache format `{s}`; known: {KV_FORMATS}"))?
            .for_kv()
    }

    /// This format as a KV cache's, or why a weight scheme (`w4a8`, `w4a16`) is none.
    ///
    /// # Errors
    /// The format says what weights multiply in, not how values are stored.
    pub fn for_kv(self) -> Result<Precision, String> {
        if self.weight_only() || self == Precision::W4a8 {
            Err(format!(
                "`{}` is a scheme for weights; a KV cache is stored in {KV_FORMATS}",
                self.name()
            ))
        } else {
            Ok(self)
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
            Precision::W4a8 => "w4a8",
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
    "unknown precision `{0}`; known: bf16, fp16, fp8, int8, fp4, int4, w4a8, and the weight-only w4a16 (awq, gptq) and w8a16"
)]
pub struct UnknownPrecision(pub String);

impl FromStr for Precision {
    type Err = UnknownPrecision;
    /// A format's name in any case, with `_` or spaces for `-` (`fp8_e4m3fn`) and a note in
    /// brackets after it (`FP8 (E4M3)`); or a quantisation scheme as quantisers and engines
    /// name it: `w4a8` (`W4A8_AWQ`); weight-only `w4a16` (`awq`, `gptq`, `int4-awq`, `INT4
    /// (GPTQ)`, `GPTQ 4-bit`) and `w8a16` (`GPTQ (Int8)`, `int8 (weight-only)`, `fp8
    /// (weight-only)`); `nvfp4-awq` is FP4.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        let words = scheme_words(&lower);
        if let Some(scheme) = Precision::in_scheme(&words) {
            return scheme.map_err(|()| UnknownPrecision(s.to_string()));
        }
        let (head, _) = lower.split_once('(').unwrap_or((&lower, ""));
        let cleaned = head.trim().replace([' ', '_'], "-");
        Ok(match cleaned.as_str() {
            "bf16" | "bfloat16" => Precision::Bf16,
            "fp16" | "f16" | "float16" | "half" | "16-bit" => Precision::Fp16,
            "fp8" | "f8" | "float8" | "fp8-e4m3" | "fp8-e4m3fn" | "float8-e4m3fn" | "e4m3"
            | "fp8-e5m2" | "e5m2" | "mxfp8" | "w8a8-fp8" | "fp8-dynamic" => Precision::Fp8,
            "int8" | "i8" | "w8a8" | "w8a8-int8" => Precision::Int8,
            "fp4" | "nvfp4" | "mxfp4" | "e2m1" => Precision::Fp4,
            "int4" | "i4" => Precision::Int4,
            _ => return Err(UnknownPrecision(s.to_string())),
        })
    }
}

/// The words of a format's or a checkpoint's name: split at `-`, `_`, spaces, commas,
/// brackets and slashes, `4 bit` joined as `4bit`.
fn scheme_words(lower: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for w in lower
        .split(['-', '_', ' ', ',', '(', ')', '/'])
        .filter(|w| !w.is_empty())
    {
        match (words.last_mut(), w) {
            (Some(last), "bit") if last == "4" || last == "8" => last.push_str("bit"),
            (Some(last), "only") if last == "weight" => last.push_str("only"),
            _ => words.push(w.to_string()),
        }
    }
    words
}

/// The width a word names, for a scheme: 4- or 8-bit integers, FP8, FP4.
#[derive(Clone, Copy, PartialEq)]
enum Width {
    Int4,
    Eight,
    Fp4,
    Sixteen,
}

fn width_of(word: &str) -> Option<Width> {
    Some(match word {
        "int4" | "i4" | "4bit" | "w4a16" | "uint4" => Width::Int4,
        "int8" | "i8" | "8bit" | "w8a16" | "fp8" | "float8" | "e4m3" => Width::Eight,
        "fp4" | "nvfp4" | "mxfp4" => Width::Fp4,
        "bf16" | "fp16" | "bfloat16" | "float16" | "16bit" => Width::Sixteen,
        _ => return None,
    })
}

impl Precision {
    /// A quantisation scheme named by its `words` ([`scheme_words`]): `None` when they name
    /// none, `Some(Err)` when they name one without a width it can take.
    ///
    /// - `w4a8` (`W4A8_AWQ`, `INT4 (W4A8)`): 4-bit weights multiplied in 8 bits.
    /// - A weight-only scheme (`awq`, `gptq`, `weight-only`, `wo`, `w4a16`, `w8a16`) keeps the
    ///   width it names in 16-bit products: `w4a16` for 4-bit integers (`int4-awq`, `INT4
    ///   (GPTQ)`, `GPTQ 4-bit`, and a bare `awq` or `gptq`, which are 4-bit unless they say
    ///   otherwise), `w8a16` for 8 bits (`GPTQ (Int8)`, `int8 (weight-only)`, `fp8
    ///   (weight-only)`: FP8 weights in 16-bit products stream and multiply alike).
    /// - AWQ beside FP4 (`nvfp4-awq`, ModelOpt's) names how the FP4 scales were chosen: FP4;
    ///   FP4 said to be weight-only is `w4a16`.
    /// - A weight-only word beside 16 bits, or alone (`weight-only`), names no format.
    fn in_scheme(words: &[String]) -> Option<Result<Precision, ()>> {
        let has = |w: &str| words.iter().any(|x| x == w);
        if has("w4a8") {
            return Some(Ok(Precision::W4a8));
        }
        let quantiser = has("awq") || has("gptq");
        let only = has("weightonly") || has("wo") || has("w4a16") || has("w8a16");
        if !(quantiser || only) {
            return None;
        }
        let width = words.iter().find_map(|w| width_of(w));
        Some(match width {
            Some(Width::Int4) => Ok(Precision::W4a16),
            Some(Width::Eight) => Ok(Precision::W8a16),
            Some(Width::Fp4) if only => Ok(Precision::W4a16),
            Some(Width::Fp4) => Ok(Precision::Fp4),
            None if quantiser => Ok(Precision::W4a16),
            Some(Width::Sixteen) | None => Err(()),
        })
    }

    /// The number format a published model name ends with, if any: `DeepSeek-R1-FP4`,
    /// `Llama-3.1-405B-Instruct-FP8`. A name that says its format is that format's checkpoint.
    pub fn in_model_name(name: &str) -> Option<Precision> {
        // `-AWQ`, `-GPTQ-Int4`, `-W8A16-GPTQ`, `-W4A8-AWQ`: a quantised checkpoint, read from
        // the name's own words (not its organisation's).
        let own = name
            .trim()
            .rsplit('/')
            .next()
            .unwrap_or(name)
            .to_ascii_lowercase();
        if let Some(scheme) = Precision::in_scheme(&scheme_words(&own)) {
            return scheme.ok();
        }
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
