//! Server-sent events: reading an upstream's `data:` payloads and writing ours.
//!
//! The reader follows the event-stream rules of the HTML standard that OpenAI-compatible
//! servers use: a leading byte order mark is dropped; lines end in LF, CR or CRLF; `data:` lines of one event join with newlines; a
//! blank line ends the event; lines starting with `:` are comments (keep-alives).

use bytes::{Bytes, BytesMut};

/// Splits a byte stream into the data payloads of its events.
#[derive(Debug, Default)]
pub struct SseReader {
    buf: BytesMut,
    /// Bytes at the start of `buf` already looked through for a line's end, and found
    /// without one: a long line that comes in many chunks is read once, not once a chunk.
    scanned: usize,
    data: Vec<u8>,
    has_data: bool,
    /// Whether the stream's start has been looked at for a byte order mark.
    started: bool,
    /// Whether an event grew past [`MAX_EVENT_BYTES`]; the reader then reads no more.
    overflow: bool,
}

/// The largest event the reader holds, in bytes: a chunk of an answer is a few hundred, and
/// a stream that never ends its event would otherwise grow without bound.
pub const MAX_EVENT_BYTES: usize = 16 << 20;

/// UTF-8's byte order mark, which a stream may start with and the standard drops.
const BOM: &[u8] = b"\xEF\xBB\xBF";

impl SseReader {
    /// Feeds bytes; returns the payloads of the events they complete.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Bytes> {
        if self.overflow {
            return Vec::new();
        }
        self.buf.extend_from_slice(chunk);
        // One byte order mark at the very start of the stream is dropped, whatever chunks
        // it comes in (the HTML standard's event-stream parsing).
        if !self.started {
            if self.buf.len() < BOM.len() && BOM.starts_with(&self.buf) {
                return Vec::new();
            }
            if self.buf.starts_with(BOM) {
                let _ = self.buf.split_to(BOM.len());
            }
            self.started = true;
        }
        let mut out = Vec::new();
        loop {
            let Some(end) = self.buf[self.scanned..]
                .iter()
                .position(|&b| b == b'\n' || b == b'\r')
                .map(|p| p + self.scanned)
            else {
                self.scanned = self.buf.len();
                break;
            };
            // A CR at the very end may be the first half of a CRLF: wait for more.
            if self.buf[end] == b'\r' && end + 1 == self.buf.len() {
                self.scanned = end;
                break;
            }
            self.scanned = 0;
            let skip = if self.buf[end] == b'\r' && self.buf.get(end + 1) == Some(&b'\n') {
                2
            } else {
                1
            };
            let line = self.buf.split_to(end + skip);
            let line = &line[..end];
            if line.is_empty() {
                // An event of empty data (a keep-alive written `data:`) is not dispatched,
                // as the HTML standard has it.
                if self.has_data && !self.data.is_empty() {
                    out.push(Bytes::from(std::mem::take(&mut self.data)));
                }
                self.data.clear();
                self.has_data = false;
            } else if let Some(rest) = line.strip_prefix(b"data:") {
                let rest = rest.strip_prefix(b" ").unwrap_or(rest);
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(rest);
                self.has_data = true;
            }
            // Other fields (event, id, retry) and comments carry nothing we forward.
        }
        if self.buf.len() + self.data.len() > MAX_EVENT_BYTES {
            self.overflow = true;
            self.buf = BytesMut::new();
            self.data = Vec::new();
        }
        out
    }

    /// Whether an event grew past [`MAX_EVENT_BYTES`]: the stream is broken, and nothing
    /// more is read from it.
    pub fn overflowed(&self) -> bool {
        self.overflow
    }
}

/// One SSE event carrying `payload`: a `data:` line for each of its lines, as the reader
/// joined them, so that a payload an upstream split over lines reaches the client whole.
pub fn event(payload: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(payload.len() + 8);
    for line in payload.split(|&c| c == b'\n') {
        b.extend_from_slice(b"data: ");
        b.extend_from_slice(line);
        b.push(b'\n');
    }
    b.push(b'\n');
    Bytes::from(b)
}

/// Whether a payload is an error event: an object whose `error` is an object or a message
/// (however spaced, and beside choices too, as OpenRouter sends one mid-stream), or whose
/// choice finished for an `error`; a chunk that carries `"error": false` is a chunk.
pub fn is_error(payload: &[u8]) -> bool {
    payload.iter().find(|c| !c.is_ascii_whitespace()) == Some(&b'{')
        && serde_json::from_slice::<serde_json::Value>(payload).is_ok_and(|v| is_error_object(&v))
}

/// Whether a JSON body is an error object (see [`is_error`]).
pub fn is_error_object(v: &serde_json::Value) -> bool {
    let error = match v.get("error") {
        Some(serde_json::Value::Object(_)) => true,
        Some(serde_json::Value::String(s)) => !s.is_empty(),
        _ => false,
    };
    error
        || v["choices"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["finish_reason"] == "error"))
}

/// The end-of-stream marker OpenAI clients wait for.
pub const DONE: &[u8] = b"data: [DONE]\n\n";
