//! Reading the user's files: whole, as UTF-8 text, and no larger than their kind allows.
//!
//! A size limit keeps a mistaken path (`/dev/zero`, a disk image, a log that grew for a
//! year) from filling memory before any parser can object; the limits sit far above any
//! real file of the kind, so they never refuse one. A stream (a pipe, `/dev/stdin`, a
//! device) has no size to check first and is read to at most 256 MiB: a larger trace is
//! given as a file.

use crate::UsageError;
use std::io::Read as _;
use std::path::Path;

/// The most read from a stream (a pipe, a device) of any kind.
const STREAM_LIMIT: u64 = 256 << 20;

/// What a file is for, which sets the most it may hold.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    /// A TOML file of settings: a catalog, parameters, a scenario, a gateway configuration.
    Settings,
    /// A CSV of published measurements.
    Points,
    /// A request trace.
    Trace,
}

impl Kind {
    const fn limit(self) -> u64 {
        match self {
            Self::Settings => 64 << 20,
            Self::Points => 256 << 20,
            // A week of a public production trace (tens of millions of requests) is a few
            // hundred MB.
            Self::Trace => 4 << 30,
        }
    }

    const fn noun(self) -> &'static str {
        match self {
            Self::Settings => "settings file",
            Self::Points => "measurements file",
            Self::Trace => "trace",
        }
    }
}

/// The text of the file at `path`. A file that cannot be read, is larger than its kind allows
/// or is not UTF-8 is the user's to fix: the message names the file (and, for a byte that is
/// not UTF-8, its line).
pub(crate) fn read_text(path: &Path, kind: Kind) -> anyhow::Result<String> {
    let usage = |e: String| anyhow::Error::new(UsageError(format!("{}: {e}", path.display())));
    let file = std::fs::File::open(path).map_err(|e| usage(e.to_string()))?;
    // A file's size is known before a byte is read; a stream's (a pipe, a device) is not,
    // and it is read to at most a quarter of a gibibyte, so that a mistaken device costs
    // no more memory than that.
    let limit = match file.metadata() {
        Ok(m) if m.is_file() && m.len() > kind.limit() => {
            return Err(usage(format!(
                "{} MiB, more than the {} MiB a {} may hold; is this the file you meant?",
                m.len().div_ceil(1 << 20),
                kind.limit() >> 20,
                kind.noun()
            )));
        }
        Ok(m) if m.is_file() => kind.limit(),
        _ => kind.limit().min(STREAM_LIMIT),
    };
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| usage(e.to_string()))?;
    if bytes.len() as u64 > limit {
        let most = if limit < kind.limit() {
            "the most read from a stream".to_string()
        } else {
            format!("the most a {} may hold", kind.noun())
        };
        return Err(usage(format!(
            "larger than {} MiB, {most}; is this the file you meant?",
            limit >> 20
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..at].iter().filter(|b| **b == b'\n').count();
        usage(format!(
            "line {line}: not UTF-8 text (byte {:#04x}); save the file as UTF-8",
            e.as_bytes()[at]
        ))
    })
}
