//! One request through the gateway: pick a deployment, try it, fall back on failure before
//! the first byte, then relay the answer.
//!
//! A streamed answer is handed to the client only once its first event is in hand, so every
//! failure up to that point (connection refused, 429, 5xx, no first token in time, a stream
//! that ends early) can still go to the next deployment without the client seeing it. After
//! that the relay runs in its own task; an upstream failure ends the client's stream with an
//! `error` event, never a silent truncation, and a client that leaves cancels the upstream.

use crate::api::{ApiError, ApiRequest, Endpoint};
use crate::emulated::{EmuError, EmuEvent, EmuStream};
use crate::sse::{self, SseReader};
use crate::{Backend, Deployment, Gateway, ModelRoute};
use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_router::Ask;
use tokio::time::timeout;

/// Tokens an emulated provider writes for a chat request that sets no limit (or fewer, where
/// the context leaves less room: the output then ends for its length).
const EMULATED_CHAT_TOKENS: u32 = 128;
/// Stop sequences an emulated provider takes: OpenAI's limit.
const MAX_STOPS: usize = 4;

/// Tokens an emulated provider writes for a completions request that sets no limit:
/// OpenAI's default `max_tokens` on that endpoint, which vLLM keeps.
const EMULATED_COMPLETION_TOKENS: u32 = 16;

/// The words an emulated provider writes, one per token, so that nobody mistakes its output
/// for a model's.
const FILLER: [&str; 12] = [
    "This ",
    "is ",
    "emulated ",
    "output ",
    "from ",
    "Switchyard; ",
    "no ",
    "model ",
    "ran. ",
    "Timing ",
    "is ",
    "predicted. ",
];

enum Relay {
    Emu(EmuStream, EmuFormat),
    /// A provider's stream, its reader, and whether its usage chunk is the gateway's only
    /// (asked for on the client's behalf, not sent on).
    Http(BoxStream<'static, reqwest::Result<Bytes>>, SseReader, bool),
}

enum Started {
    /// A stream whose first events are in hand: framed SSE events from an emulated
    /// provider, data payloads from an HTTP one.
    Stream(Vec<Bytes>, Relay),
    /// A whole answer, its output tokens, its prompt tokens and those found cached where
    /// the provider counted them, and when its tokens came where the gateway saw them
    /// ([`Timed`]).
    Full(
        StatusCode,
        Bytes,
        u64,
        (Option<u64>, Option<u64>),
        Option<Timed>,
    ),
}

/// When a whole answer's tokens came, seen by the gateway (an emulated provider's, whose
/// tokens it makes): its first token after the attempt began, and the time per token after
/// it where there are more. An upstream's whole answer shows neither.
#[derive(Debug, Clone, Copy)]
struct Timed {
    ttft_s: f64,
    tpot_s: Option<f64>,
    /// Prompt tokens the engine found cached, which its first token did not wait for.
    cached: u32,
}

enum Failure {
    /// Worth another deployment.
    Retry(String),
    /// A fault of the moment (a 5xx, a connection or a body that broke): worth another
    /// deployment, and the same one again once every one has been tried.
    Again(String),
    /// The deployment took the request but gave no answer (or first token) within its
    /// time: worth another deployment, as [`Failure::Retry`], and its prompt is charged,
    /// as the deployment worked on it.
    Slow(String),
    /// The provider is over its rate (HTTP 429), with the seconds its `Retry-After` asks:
    /// worth another deployment, and where every one is, the client is told to slow down
    /// rather than that the model is down.
    Busy(String, Option<u64>),
    /// The request's own fault, answered as the upstream answered it.
    Client(StatusCode, Bytes),
    /// The request's own time ran out during an attempt given less than its own limit: not
    /// the deployment's fault, and no time is left to try another.
    Late(String),
    /// A request this deployment cannot serve (an emulated provider asked for log-probabilities,
    /// a prompt longer than its KV cache holds) that another may: tried elsewhere without
    /// blame, and answered with this error if no deployment serves it.
    Unsuitable(ApiError),
}

/// Emulated answers in OpenAI's shapes.
struct EmuFormat {
    id: String,
    created: u64,
    model: String,
    endpoint: Endpoint,
    include_usage: bool,
    prompt_tokens: u32,
    /// Prompt tokens the engine found in its prefix cache.
    cached_tokens: u32,
    output: u32,
    sent: u32,
    limited: bool,
    /// Where a stop sequence cut the text: its length in bytes before the sequence.
    cut: Option<usize>,
    /// Bytes of the filler text written so far, cut or not.
    at: usize,
}

/// Where filler text of `tokens` words first holds one of `stops`: the words written until
/// the first sequence is complete (a model stops at the token that completes one), and the
/// length of the text before it, which is all the client sees. The filler repeats every
/// [`FILLER`]'s length of words, so a sequence that occurs at all is complete within two
/// rounds and as many words more as it could span (its length over the shortest word's, 3
/// bytes).
fn stop_point(stops: &[String], tokens: u32) -> Option<(u32, usize)> {
    let longest = stops.iter().map(String::len).max()?;
    let words = u32::try_from(2 * FILLER.len() + longest.div_ceil(3) + 1)
        .unwrap_or(u32::MAX)
        .min(tokens);
    let mut text = String::new();
    let mut ends = Vec::new();
    for i in 0..words {
        text.push_str(FILLER[i as usize % FILLER.len()]);
        ends.push(text.len());
    }
    let (start, end) = stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()).map(|a| (a, a + s.len())))
        .min_by_key(|&(a, e)| (e, a))?;
    let written = ends.iter().position(|&e| e >= end)? + 1;
    Some((u32::try_from(written).unwrap_or(u32::MAX), start))
}

impl EmuFormat {
    /// The next word's text as the client sees it: nothing past a stop sequence.
    fn piece(&mut self) -> &'static str {
        let word = FILLER[self.sent as usize % FILLER.len()];
        let start = self.at;
        self.at += word.len();
        match self.cut {
            // The filler is ASCII, so every byte offset is a character boundary.
            Some(c) => &word[..c.saturating_sub(start).min(word.len())],
            None => word,
        }
    }

    /// The next token's chunk; `None` for a token past a stop sequence's start, which sends
    /// nothing (the first chunk, which carries the role, is always sent).
    fn chunk(&mut self) -> Option<Bytes> {
        let word = self.piece();
        if word.is_empty() && self.sent > 0 {
            self.sent += 1;
            return None;
        }
        let v = match self.endpoint {
            Endpoint::Chat => {
                let delta = if self.sent == 0 {
                    json!({"role": "assistant", "content": word})
                } else {
                    json!({"content": word})
                };
                json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                       "model": self.model, "choices": [{"index": 0, "delta": delta, "finish_reason": null}]})
            }
            Endpoint::Completions => {
                json!({"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                       "choices": [{"index": 0, "text": word, "finish_reason": null, "logprobs": null}]})
            }
        };
        self.sent += 1;
        Some(sse::event(v.to_string().as_bytes()))
    }

    fn finish_reason(&self) -> &'static str {
        if self.cut.is_some() {
            "stop"
        } else if self.limited {
            "length"
        } else {
            "stop"
        }
    }

    /// OpenAI's usage object, with the prompt tokens served from the prefix cache as
    /// `prompt_tokens_details.cached_tokens` (as OpenAI and vLLM report them).
    fn usage(&self) -> Value {
        json!({"prompt_tokens": self.prompt_tokens, "completion_tokens": self.sent,
               "total_tokens": self.prompt_tokens + self.sent,
               "prompt_tokens_details": {"cached_tokens": self.cached_tokens}})
    }

    fn ending(&self) -> Vec<Bytes> {
        let fin = match self.endpoint {
            Endpoint::Chat => {
                json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": [{"index": 0, "delta": {}, "finish_reason": self.finish_reason()}]})
            }
            Endpoint::Completions => {
                json!({"id": self.id, "object": "text_completion", "created": self.created,
                "model": self.model, "choices": [{"index": 0, "text": "", "finish_reason": self.finish_reason(), "logprobs": null}]})
            }
        };
        let mut out = vec![sse::event(fin.to_string().as_bytes())];
        if self.include_usage {
            let object = match self.endpoint {
                Endpoint::Chat => "chat.completion.chunk",
                Endpoint::Completions => "text_completion",
            };
            let u = json!({"id": self.id, "object": object, "created": self.created, "model": self.model,
                           "choices": [], "usage": self.usage()});
            out.push(sse::event(u.to_string().as_bytes()));
        }
        out.push(Bytes::from_static(sse::DONE));
        out
    }

    fn full(&mut self) -> Bytes {
        let mut text = String::new();
        for _ in 0..self.output {
            text.push_str(self.piece());
            self.sent += 1;
        }
        let v = match self.endpoint {
            Endpoint::Chat => {
                json!({"id": self.id, "object": "chat.completion", "created": self.created,
                "model": self.model, "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                "finish_reason": self.finish_reason(), "logprobs": null}], "usage": self.usage()})
            }
            Endpoint::Completions => {
                json!({"id": self.id, "object": "text_completion", "created": self.created,
                "model": self.model, "choices": [{"index": 0, "text": text, "finish_reason": self.finish_reason(),
                "logprobs": null}], "usage": self.usage()})
            }
        };
        Bytes::from(v.to_string())
    }
}

/// An emulated answer's length: the tokens asked for, whether reaching them ends it for its
/// length, and the field a prompt that does not fit is blamed on.
struct Sized {
    asked: u32,
    limited: bool,
    prompt_param: &'static str,
}

/// What an emulated provider would write for `req`, or why it cannot serve it: a feature
/// only a model gives, or a request past what its KV cache holds. Known before the request
/// is sent, so that another deployment takes it without this one counting an attempt.
fn sized(
    pool: &crate::emulated::EmuPool,
    max_context: Option<u32>,
    ep: Endpoint,
    req: &ApiRequest,
) -> Result<Sized, ApiError> {
    if req.n > 1 {
        return Err(ApiError::invalid(
            "Emulated providers answer with one choice; `n` must be 1.",
            Some("n"),
        ));
    }
    if req.prompts > 1 {
        return Err(ApiError::invalid(
            "Emulated providers answer one prompt a request; send a batch's prompts one by one.",
            Some("prompt"),
        ));
    }
    // OpenAI's own limit, which also bounds the search for them.
    if req.stop.len() > MAX_STOPS {
        return Err(ApiError::invalid(
            format!("Emulated providers take at most {MAX_STOPS} stop sequences, as OpenAI does."),
            Some("stop"),
        ));
    }
    if let Some((field, what)) = req.needs_model {
        return Err(ApiError::invalid(
            format!("Emulated providers write filler text and cannot give {what}; leave `{field}` unset, or serve this model from a real provider."),
            Some(field),
        ));
    }
    let prompt_param = ep.prompt_field();
    // As vLLM does, a request with no limit writes at most what its context leaves: what
    // the engine's KV cache holds, or the deployment's `max_context` where that is less.
    let longest = pool.longest_request().min(max_context.unwrap_or(u32::MAX));
    let room = longest.saturating_sub(req.prompt_tokens);
    // Completions' default is a limit the answer runs into; chat's is the length of an
    // answer that ends of itself, unless its context ends it first.
    let (asked, limited) = match (req.max_tokens, ep) {
        (Some(m), _) => (m, true),
        (None, Endpoint::Completions) => (EMULATED_COMPLETION_TOKENS.min(room), true),
        (None, Endpoint::Chat) => (EMULATED_CHAT_TOKENS.min(room), room < EMULATED_CHAT_TOKENS),
    };
    // The output the client asked for, none where it asked for none.
    if room == 0 || asked > room {
        return Err(ApiError::context_too_long(
            &req.model,
            longest,
            (u64::from(req.prompt_tokens), prompt_param),
            (u64::from(req.max_tokens.unwrap_or(0)), req.max_tokens_param),
        ));
    }
    Ok(Sized {
        asked,
        limited,
        prompt_param,
    })
}

/// Notes that `provider` refused the request as one it cannot serve: the first refusal is
/// kept to answer with, and every one is counted and named.
fn refused(
    unsuitable: &mut (Option<ApiError>, usize),
    why: &mut Vec<String>,
    provider: &str,
    e: ApiError,
) {
    why.push(format!("{provider}: {}", e.message));
    unsuitable.1 += 1;
    unsuitable.0.get_or_insert(e);
}

fn error_event(message: &str, code: &str) -> Bytes {
    let v =
        json!({"error": {"message": message, "type": "api_error", "param": null, "code": code}});
    sse::event(v.to_string().as_bytes())
}

/// Whether a streamed chunk carries output: in one of its choices, a completion's text or
/// anything in a chat delta but its role (content as a string or an array of parts,
/// reasoning under any of the names servers give it, tool and function calls, a refusal).
/// Role-only, empty, finish and usage chunks do not.
fn carries_output(v: &Value) -> bool {
    outputs(v) > 0
}

/// The choices of a chunk that carry output.
fn outputs(v: &Value) -> u64 {
    let filled = |x: &Value| match x {
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => false,
    };
    v["choices"].as_array().map_or(0, |cs| {
        cs.iter()
            .filter(|c| {
                filled(&c["text"])
                    || c["delta"]
                        .as_object()
                        .is_some_and(|d| d.iter().any(|(k, x)| k != "role" && filled(x)))
            })
            .count() as u64
    })
}

/// One data payload of a provider's stream, read once.
enum Event {
    /// `[DONE]`.
    Done,
    /// An error event (see [`sse::is_error_object`]), with the provider's message.
    Error(String),
    /// Not a JSON object (text, a number, null): no chunk a client's SDK can read.
    Malformed,
    /// A chunk.
    Chunk(Value),
}

/// Reads one data payload of a provider's stream.
fn read_event(p: &[u8]) -> Event {
    if p == b"[DONE]" {
        return Event::Done;
    }
    match serde_json::from_slice::<Value>(p) {
        Ok(v) if !v.is_object() => Event::Malformed,
        Ok(v) if sse::is_error_object(&v) => Event::Error(
            v["error"]["message"]
                .as_str()
                .or(v["error"].as_str())
                .unwrap_or("no message")
                .to_string(),
        ),
        Ok(v) => Event::Chunk(v),
        Err(_) => Event::Malformed,
    }
}

/// Whether a chunk ends one of its choices (a finish reason).
fn finishes(v: &Value) -> bool {
    v["choices"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| !c["finish_reason"].is_null()))
}

/// Output tokens of a whole answer by its text, at four characters a token (more for other
/// scripts than Latin, [`crate::api::quarters`]): in every choice a completion's text or
/// everything in the message but its role (content as a string or as parts, reasoning
/// under any name, a refusal), tool and function calls by their JSON.
fn answer_tokens(v: &Value) -> u64 {
    answer_quarters(v, "message").div_ceil(4) as u64
}

/// Quarters of a token of output in an answer's choices: each one's completion text and
/// everything in its `part` (`message`, or a stream chunk's `delta`) but the role.
fn answer_quarters(v: &Value, part: &str) -> usize {
    fn chars(x: &Value) -> usize {
        match x {
            Value::String(s) => crate::api::quarters(s),
            // Content parts count their text; anything else in a list, its own.
            Value::Array(a) => a
                .iter()
                .map(|e| e.get("text").map_or_else(|| chars(e), chars))
                .sum(),
            Value::Object(_) => x.to_string().chars().count(),
            _ => 0,
        }
    }
    v["choices"].as_array().map_or(0, |cs| {
        cs.iter()
            .map(|c| {
                chars(&c["text"])
                    + c[part].as_object().map_or(0, |m| {
                        m.iter()
                            .filter(|(k, _)| k.as_str() != "role")
                            .map(|(_, x)| chars(x))
                            .sum()
                    })
            })
            .sum()
    })
}

/// The (prompt, completion) token counts of a provider's `usage` object, if it has one.
fn usage_of(v: &Value) -> Option<(Option<u64>, u64)> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    Some((
        u["prompt_tokens"].as_u64(),
        u["completion_tokens"].as_u64()?,
    ))
}

/// The prompt tokens a provider's `usage` says it found in its prefix cache
/// (`prompt_tokens_details.cached_tokens`, as OpenAI, vLLM and SGLang report them).
fn cached_of(v: &Value) -> Option<u64> {
    v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64()
}

// The request's parts as the handler holds them; a struct to carry them would only be
// unpacked again here.
#[allow(clippy::too_many_arguments)]
async fn attempt(
    gw: &Gateway,
    d: &Deployment,
    ep: Endpoint,
    req: &ApiRequest,
    raw: &Bytes,
    seq: u64,
    emu: Option<Sized>,
    deadline: Instant,
    made: &std::sync::atomic::AtomicU64,
) -> Result<Started, Failure> {
    // `total_ms` bounds the whole request, every attempt in it: what an attempt may take is
    // what is left of it.
    let t0 = Instant::now();
    let total = deadline.saturating_duration_since(t0);
    let first = Duration::from_millis(gw.timeouts.first_token_ms).min(total);
    // A whole answer's attempt: its own limit where one is set, within the request's.
    let whole = gw
        .timeouts
        .attempt_ms
        .map_or(total, |ms| Duration::from_millis(ms).min(total));
    // A limit cut short by the request's deadline fires on the request, not the deployment:
    // the attempt is not blamed.
    let timed_out = |limit: Duration, own: u64, what: &str| {
        let message = format!("{what} within {} ms", limit.as_millis());
        // Its own limit, as the request's allows it at the most; cut to less than half of
        // that, the deadline, not the deployment, decided.
        let own = own.min(gw.timeouts.total_ms);
        if limit.as_secs_f64() < 0.5 * own as f64 / 1000.0 {
            Failure::Late(format!("{message} (all the request's total_ms left)"))
        } else {
            Failure::Slow(message)
        }
    };
    let first_own = gw.timeouts.first_token_ms;
    // A whole answer that never comes is the deployment's failure, whether its limit is its
    // own (`attempt_ms`) or the request's: a provider that hangs must be ejected. (The
    // client is told its request timed out, 504, when the request's time is gone.)
    let whole_own = gw.timeouts.attempt_ms.unwrap_or(gw.timeouts.total_ms);
    let late = || timed_out(whole, whole_own, "no whole answer");
    match &d.backend {
        Backend::Emulated(pool) => {
            // Sized before the request was sent (see `handle`).
            let Sized {
                asked,
                limited,
                prompt_param,
            } = match emu {
                Some(s) => s,
                None => sized(pool, d.max_context, ep, req).map_err(Failure::Unsuitable)?,
            };
            let stop = stop_point(&req.stop, asked);
            let output = stop.map_or(asked, |(n, _)| n);
            // A stream's first token may take `first_token_ms` beyond its prompt's own pass,
            // which is the prompt's length and no fault of the deployment (a 100k-token
            // prompt takes half a minute on eight GPUs); a whole answer has its own limit
            // from the start, as with any provider.
            let (limit, own, what) = if req.stream {
                let pass_ms = (pool.prompt_s(req.prompt_tokens) * 1000.0).ceil();
                let own = first_own.saturating_add(pass_ms.min(u64::MAX as f64) as u64);
                (Duration::from_millis(own).min(total), own, "no first token")
            } else {
                (whole, whole_own, "no whole answer")
            };
            // One deadline covers admission (where an injected spike waits) and the first
            // token, as it would for a real provider.
            let started = timeout(limit, async {
                let prefix = pool
                    .caches_prefixes()
                    .then(|| crate::emulated::prompt_prefix(&req.body, req.prompt_tokens))
                    .flatten();
                let mut s = pool.submit(req.prompt_tokens, output, prefix).await?;
                let e = s.next().await;
                Ok::<_, EmuError>((s, e))
            })
            .await;
            let mut s = match started {
                Err(_) => return Err(timed_out(limit, own, what)),
                Ok(Err(EmuError::TooLong(m))) => {
                    return Err(Failure::Unsuitable(ApiError {
                        code: Some("context_length_exceeded"),
                        ..ApiError::invalid(
                            format!("The request is too long for this deployment's KV cache: {m}."),
                            Some(prompt_param),
                        )
                    }))
                }
                // An injected error stands for a 5xx: a fault of the moment, tried again
                // as one is.
                Ok(Err(e @ EmuError::Injected)) => return Err(Failure::Again(e.to_string())),
                Ok(Err(other)) => return Err(Failure::Retry(other.to_string())),
                Ok(Ok((_, None))) => return Err(Failure::Retry("the replica stopped".into())),
                Ok(Ok((s, Some(_)))) => s,
            };
            let ttft_s = t0.elapsed().as_secs_f64();
            let mut fmt = EmuFormat {
                id: format!(
                    "{}-emu-{seq}",
                    if ep == Endpoint::Chat {
                        "chatcmpl"
                    } else {
                        "cmpl"
                    }
                ),
                created: gw.created_unix + gw.started.elapsed().as_secs(),
                model: req.model.clone(),
                endpoint: ep,
                include_usage: req.include_usage,
                prompt_tokens: req.prompt_tokens,
                cached_tokens: s.cached_tokens().min(req.prompt_tokens),
                output,
                sent: 0,
                limited,
                cut: stop.map(|(_, c)| c),
                at: 0,
            };
            if req.stream {
                let first: Vec<Bytes> = fmt.chunk().into_iter().collect();
                return Ok(Started::Stream(first, Relay::Emu(s, fmt)));
            }
            // Tokens decoded are counted where the caller sees them, should it be dropped.
            let rest = async {
                while let Some(e) = s.next().await {
                    match e {
                        EmuEvent::Done => return true,
                        EmuEvent::Token => {
                            made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
                false
            };
            let left = whole.saturating_sub(t0.elapsed());
            let ended = timeout(left, rest).await;
            let decoded = made.load(std::sync::atomic::Ordering::Relaxed);
            match ended {
                Ok(true) => Ok(Started::Full(
                    StatusCode::OK,
                    fmt.full(),
                    u64::from(output),
                    (None, None),
                    Some(Timed {
                        ttft_s,
                        tpot_s: (output > 1).then(|| {
                            (t0.elapsed().as_secs_f64() - ttft_s) / f64::from(output - 1)
                        }),
                        cached: fmt.cached_tokens,
                    }),
                )),
                Ok(false) => Err(Failure::Retry("the replica stopped".into())),
                // A replica still decoding when the request's own time ran out was answering
                // (the answer asked for is longer than the time allowed): not its fault.
                Err(_) if decoded > 0 && gw.timeouts.attempt_ms.is_none() => {
                    Err(Failure::Late(format!(
                        "no whole answer within {} ms: {decoded} of {output} tokens decoded in the request's total_ms",
                        whole.as_millis()
                    )))
                }
                Err(_) => Err(late()),
            }
        }
        Backend::OpenAi {
            chat_url,
            completions_url,
            api_key,
            stream_usage,
        } => {
            // A stream whose client asked no usage chunk asks the provider for one all the
            // same, to count its tokens as the provider does; the client is not sent it.
            let hide_usage = *stream_usage && req.stream && !req.include_usage;
            // The client's bytes go on unchanged unless the provider knows the model by
            // another name, or is asked for usage.
            let bytes = if d.upstream_model == req.model && !hide_usage {
                raw.clone()
            } else {
                let mut body = req.body.clone();
                body["model"] = Value::String(d.upstream_model.clone());
                if hide_usage {
                    match body
                        .get_mut("stream_options")
                        .and_then(Value::as_object_mut)
                    {
                        Some(o) => {
                            o.insert("include_usage".into(), Value::Bool(true));
                        }
                        None => body["stream_options"] = json!({"include_usage": true}),
                    }
                }
                Bytes::from(body.to_string())
            };
            let url = match ep {
                Endpoint::Chat => chat_url.clone(),
                Endpoint::Completions => completions_url.clone(),
            };
            let mut rb = gw
                .client
                .post(url)
                .header(header::CONTENT_TYPE, "application/json")
                .body(bytes);
            if let Some(k) = api_key {
                rb = rb.bearer_auth(k);
            }
            let (wait, own) = if req.stream {
                (first, first_own)
            } else {
                (whole, whole_own)
            };
            let resp = match timeout(wait, rb.send()).await {
                Err(_) => return Err(timed_out(wait, own, "no response")),
                Ok(Err(e)) => return Err(Failure::Again(without_url(&e))),
                Ok(Ok(r)) => r,
            };
            let status =
                StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            if status == StatusCode::TOO_MANY_REQUESTS {
                let after = resp
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry_after_s(v, std::time::SystemTime::now()));
                return Err(Failure::Busy("HTTP 429".into(), after));
            }
            // A 408 is the provider's own timeout, a failure of the moment as a 5xx is (the
            // OpenAI SDK retries both).
            if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
                return Err(Failure::Again(format!("HTTP {}", status.as_u16())));
            }
            // The gateway's own credentials or model name refused: the deployment is
            // misconfigured, not the client's request, so another deployment is tried and the
            // client is never told its key is wrong.
            let misconfigured = match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    Some("the provider refused this gateway's credentials")
                }
                // The gateway's account with the provider is out of credit, not the client's.
                StatusCode::PAYMENT_REQUIRED => {
                    Some("the provider wants payment on this gateway's account")
                }
                StatusCode::NOT_FOUND => Some("the provider does not serve this model at this URL"),
                _ => None,
            };
            if let Some(why) = misconfigured {
                return Err(Failure::Retry(format!("HTTP {}: {why}", status.as_u16())));
            }
            if !status.is_success() {
                // The body of a refusal is small and read within a first-token allowance from
                // its headers, inside the request's time: a provider that stalls it has
                // failed, not left the client waiting without end.
                let left = first.min(total.saturating_sub(t0.elapsed()));
                return match timeout(left, resp.bytes()).await {
                    Ok(Ok(b)) => Err(Failure::Client(status, b)),
                    Ok(Err(e)) => Err(Failure::Retry(without_url(&e))),
                    Err(_) => Err(Failure::Retry(format!(
                        "HTTP {} with a body not sent within {} ms",
                        status.as_u16(),
                        left.as_millis()
                    ))),
                };
            }
            if !req.stream {
                let left = wait.saturating_sub(t0.elapsed());
                let b = match timeout(left, resp.bytes()).await {
                    Ok(Ok(b)) => b,
                    Ok(Err(e)) => return Err(Failure::Retry(without_url(&e))),
                    Err(_) => return Err(late()),
                };
                // An answer that is no JSON object (an ingress's HTML page at a wrong URL)
                // would reach the client as JSON and break its SDK: the deployment failed.
                let Some(v) = serde_json::from_slice::<Value>(&b)
                    .ok()
                    .filter(Value::is_object)
                else {
                    return Err(Failure::Retry(format!(
                        "HTTP {} with a body that is not a JSON object",
                        status.as_u16()
                    )));
                };
                // An error object sent with a success status is the deployment's failure,
                // not an answer.
                if sse::is_error_object(&v) {
                    return Err(Failure::Retry(format!(
                        "HTTP {} with an error object for a body",
                        status.as_u16()
                    )));
                }
                // Nor is an object without choices (a framework's `{"detail": ...}`): the
                // client's SDK would take it for an answer with nothing in it.
                if !v.get("choices").is_some_and(Value::is_array) {
                    return Err(Failure::Retry(format!(
                        "HTTP {} with a body that has no choices",
                        status.as_u16()
                    )));
                }
                // The provider's counts where it gives them, each on its own; without one,
                // the answer's text (or the prompt) at four characters a token.
                let counted = (v["usage"]["prompt_tokens"].as_u64(), cached_of(&v));
                let tokens = usage_of(&v).map_or_else(|| answer_tokens(&v), |u| u.1);
                // An answer without usage, or with part of it, gets the gateway's count of
                // what is missing, as SDK code reads all three.
                let complete = ["prompt_tokens", "completion_tokens", "total_tokens"]
                    .iter()
                    .all(|k| v["usage"][k].is_u64());
                let b = if complete {
                    b
                } else {
                    let mut v = v;
                    let prompt = counted.0.unwrap_or(u64::from(req.prompt_tokens));
                    v["usage"] = json!({"prompt_tokens": prompt, "completion_tokens": tokens, "total_tokens": prompt.saturating_add(tokens)});
                    Bytes::from(v.to_string())
                };
                return Ok(Started::Full(status, b, tokens, counted, None));
            }
            let mut stream = resp.bytes_stream().boxed();
            let mut reader = SseReader::default();
            // The stream starts for the client with its first token, not with its first
            // event: a provider that sends the role chunk and then stalls is retried like
            // one that sends nothing. The events before it are held and go out with it.
            let mut held: Vec<Bytes> = Vec::new();
            loop {
                let left = first.saturating_sub(t0.elapsed());
                match timeout(left, stream.next()).await {
                    Err(_) => return Err(timed_out(first, first_own, "no first token")),
                    Ok(None) => {
                        return Err(Failure::Retry(
                            "the stream ended before its first token".into(),
                        ))
                    }
                    Ok(Some(Err(e))) => return Err(Failure::Retry(without_url(&e))),
                    Ok(Some(Ok(chunk))) => {
                        // Nothing has gone to the client until this chunk's events are
                        // all read: an error event among them is the deployment's failure,
                        // worth another, and so is an event that is not JSON, which would
                        // break the client's SDK. Output, or the end of an answer with none
                        // (a stop at once), means the provider has answered.
                        let mut answered = false;
                        for p in reader.feed(&chunk) {
                            answered |= match read_event(&p) {
                                Event::Error(_) => {
                                    return Err(Failure::Retry(
                                        "the stream sent an error event before its first token"
                                            .into(),
                                    ))
                                }
                                Event::Malformed => {
                                    return Err(Failure::Retry(
                                        "the stream sent an event that is not a JSON object".into(),
                                    ))
                                }
                                Event::Done => true,
                                Event::Chunk(v) => carries_output(&v) || finishes(&v),
                            };
                            held.push(p);
                        }
                        if reader.overflowed() {
                            return Err(Failure::Retry(format!(
                                "the stream sent an event of over {} bytes",
                                sse::MAX_EVENT_BYTES
                            )));
                        }
                        if answered {
                            return Ok(Started::Stream(
                                held,
                                Relay::Http(stream, reader, hide_usage),
                            ));
                        }
                    }
                }
            }
        }
    }
}

/// The seconds a `Retry-After` value asks for at `now`: a count of seconds, or an HTTP date
/// (RFC 9110, section 10.2.3), a date past being none.
fn retry_after_s(v: &str, now: std::time::SystemTime) -> Option<u64> {
    let v = v.trim();
    v.parse::<u64>().ok().or_else(|| {
        let at = httpdate::parse_http_date(v).ok()?;
        Some(
            at.duration_since(now)
                .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0)),
        )
    })
}

/// A reqwest error without the URL (which may carry a key in its query).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "connection failed"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "broken response body"
    } else {
        "request failed"
    };
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut last = None;
    while let Some(s) = src {
        last = Some(s.to_string());
        src = s.source();
    }
    match last {
        Some(l) => format!("{kind}: {l}"),
        None => kind.to_string(),
    }
}

/// The latency targets a request asks for in headers, in seconds.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Targets {
    pub(crate) ttft: Option<f64>,
    pub(crate) tpot: Option<f64>,
}

/// Handles one completion request.
pub(crate) async fn handle(
    gw: Arc<Gateway>,
    ep: Endpoint,
    key: Option<Arc<crate::keys::Key>>,
    class: Option<String>,
    targets: Targets,
    body: Bytes,
) -> Response {
    let t_start = Instant::now();
    let req = match crate::api::parse(ep, &body) {
        Ok(r) => r,
        Err(e) => {
            // Under the model the body names where the gateway serves it (one label per
            // served model, however many names clients send), else `-`.
            let named = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("model")?.as_str().map(str::to_string))
                .filter(|m| gw.models.contains_key(m));
            crate::metrics::unanswered(named.as_deref().unwrap_or("-"), "client_error");
            return e.into_response();
        }
    };
    // A model the key may not use is answered as OpenAI answers one the caller cannot see.
    let route = gw
        .models
        .get(&req.model)
        .filter(|_| key.as_ref().is_none_or(|k| k.allows(&req.model)));
    let Some(route) = route else {
        // Under one label: a label per name a client sends would grow without bound.
        crate::metrics::unanswered(crate::metrics::UNKNOWN_MODEL, "client_error");
        return ApiError::model_not_found(&req.model).into_response();
    };
    // A class no deployment takes is the client's (or the configuration's) to change, not
    // an outage to retry. The longest request the deployments that take it hold, where each
    // states one.
    let limit = {
        let router = route.router();
        let targets = router.targets();
        if !targets.iter().any(|t| t.takes(class.as_deref())) {
            let mut served: Vec<&str> = targets
                .iter()
                .flat_map(|t| t.classes.iter().map(String::as_str))
                .collect();
            served.sort_unstable();
            served.dedup();
            crate::metrics::unanswered(&req.model, "client_error");
            return ApiError::class_not_served(&req.model, class.as_deref(), &served)
                .into_response();
        }
        targets
            .iter()
            .filter(|t| t.takes(class.as_deref()))
            .map(|t| t.max_context)
            .try_fold(0u32, |m, c| c.map(|c| m.max(c)))
    };
    // A request longer than every deployment of its class holds is the client's to shorten:
    // refused at once, it counts against no provider.
    if let Some(limit) = limit {
        let prompt = u64::from(req.prompt_tokens);
        let asked = u64::from(req.max_tokens.unwrap_or(0));
        if prompt + asked > u64::from(limit) {
            crate::metrics::unanswered(&req.model, "client_error");
            return ApiError::context_too_long(
                &req.model,
                limit,
                (prompt, ep.prompt_field()),
                (asked, req.max_tokens_param),
            )
            .into_response();
        }
    }
    // The request is admitted against its key's allowances, and the tokens it may spend are
    // held while it runs.
    let held = match &key {
        Some(k) => {
            let tokens = req.tokens_asked();
            // More than the whole minute allows is never admitted: refused at once, not
            // let into a minute's debt.
            if let Some(tpm) = k.tokens_per_minute.filter(|&tpm| tokens as f64 > tpm) {
                k.refused_too_large();
                crate::metrics::unanswered(&req.model, "rate_limited");
                return ApiError::request_too_large(&k.name, tokens, tpm).into_response();
            }
            // The dollars it may spend, at the dearest deployment of the model.
            let prompt = u64::from(req.prompt_tokens);
            let usd = route
                .deployments
                .iter()
                .map(|d| d.prices.cost(prompt, 0, tokens - prompt))
                .fold(0.0, f64::max);
            // Nor one that may cost more than the key's whole day: admitted, it could spend
            // its day many times over, as a request may ask for a whole context.
            if let Some(per_day) = k.usd_per_day.filter(|&d| usd > d) {
                k.refused_too_costly();
                crate::metrics::unanswered(&req.model, "insufficient_quota");
                return ApiError::request_too_costly(&k.name, &req.model, usd, per_day)
                    .into_response();
            }
            match k.admit((tokens, usd), Instant::now()) {
                Ok(h) => Some(h),
                Err(refusal) => return crate::server::over_limit(k, refusal, &req.model),
            }
        }
        None => None,
    };
    if let Ok(mut b) = gw.budget.lock() {
        b.deposit();
    }
    let seq = gw.started.elapsed().as_nanos() as u64;
    let mut tried: Vec<usize> = Vec::new();
    let mut why: Vec<String> = Vec::new();
    // The first refusal of a deployment that cannot serve the request, and how many refused.
    let mut unsuitable: (Option<ApiError>, usize) = (None, 0);
    // The deployment whose failure the next attempt retries: a retry spends from the budget
    // and counts a fallback on it. A move past a refusal retries nothing.
    let mut last_failed: Option<usize> = None;
    // Attempts a deployment took on; those that refused the request as unsuitable are not
    // among them. Every pass excludes the deployments tried, so the loop ends.
    let mut attempts = 0u32;
    let mut late = false;
    // Deployments that failed for a fault of the moment since every one was last tried, and
    // those this request has counted a failure against.
    let mut failed_here: Vec<usize> = Vec::new();
    let mut struck: Vec<usize> = Vec::new();
    // Attempts refused as over the provider's rate, and the shortest wait they asked for.
    let mut busy: (u32, Option<u64>) = (0, None);
    let deadline = t_start + Duration::from_millis(gw.timeouts.total_ms);
    while attempts < gw.max_attempts {
        if Instant::now() >= deadline {
            why.push(format!(
                "no time left of the request's {} ms (timeouts.total_ms)",
                gw.timeouts.total_ms
            ));
            break;
        }
        let ask = Ask {
            class: class.as_deref(),
            output_tokens: req.max_tokens,
            exclude: &tried,
            ttft_target_s: targets.ttft,
            tpot_target_s: targets.tpot,
            prompt_tokens: Some(req.prompt_tokens),
            again: &failed_here,
        };
        let picked = route.router().pick(gw.now_s(), &ask);
        let Some(i) = picked else {
            // Every deployment has been tried: those that failed for a fault of the moment
            // (not a rate limit, not a refusal of the request) are tried again while
            // attempts remain, as a client's own retries would (one deployment and
            // `max_attempts = 3` is three tries).
            if failed_here.is_empty() {
                break;
            }
            tried.retain(|t| !failed_here.contains(t));
            failed_here.clear();
            continue;
        };
        // Every deployment is ejected and this one's cool-down ends first (panic routing):
        // one try, lest each request ask every provider that is down, `max_attempts` in all.
        // Not where one that is not ejected failed this request and may be tried again.
        let panic = {
            let (r, now) = (route.router(), gw.now_s());
            (0..route.deployments.len()).all(|j| r.is_ejected(j, now))
        };
        let d = &route.deployments[i];
        // A deployment that cannot serve the request says so before it is sent: no
        // attempt, no budget, nothing counted against it.
        let emu = match &d.backend {
            Backend::Emulated(pool) => match sized(pool, d.max_context, ep, &req) {
                Ok(s) => Some(s),
                Err(e) => {
                    tried.push(i);
                    refused(&mut unsuitable, &mut why, &d.provider, e);
                    continue;
                }
            },
            Backend::OpenAi { .. } => None,
        };
        // A retry spends from the budget only when there is somewhere to send it.
        if let Some(prev) = last_failed.take() {
            if !gw.budget.lock().map(|mut b| b.withdraw()).unwrap_or(false) {
                why.push("retry budget exhausted".into());
                break;
            }
            // Retried elsewhere: a fallback from the one that failed, not a try again.
            if prev != i {
                route.deployments[prev].labels.fallback();
            }
        }
        let ahead = route
            .router()
            .dispatched_prompt(i, gw.now_s(), req.prompt_tokens);
        tried.push(i);
        d.labels.started();
        // The deployment's figures (its TTFT, its requests' durations) are its own, from
        // this attempt: a fallback's are not charged the time the failed one took.
        let t0 = Instant::now();
        // If the client leaves while the attempt is under way, the handler is dropped here;
        // the guard then returns the in-flight slot.
        let mut guard = InFlight {
            route,
            i,
            armed: true,
            since: t0,
            key: key.as_deref(),
            prompt_tokens: req.prompt_tokens,
            made: std::sync::atomic::AtomicU64::new(0),
        };
        // A provider over its rate is failed over as any other failure; it is counted so
        // that, where every provider is, the client is told to slow down.
        let outcome = attempt(&gw, d, ep, &req, &body, seq, emu, deadline, &guard.made).await;
        let rate_limited = if let Err(Failure::Busy(_, after)) = &outcome {
            busy.0 += 1;
            // One that asked no time rests a second, and the client is told no longer: told
            // another's 10 s, it waited ten times what the gateway did.
            let a = after.unwrap_or(1);
            busy.1 = Some(busy.1.map_or(a, |b: u64| b.min(a)));
            // The provider asked for a pause (for its `Retry-After`, else a second): the
            // next requests go elsewhere meanwhile, as LiteLLM's cool-down sends them.
            #[allow(clippy::cast_precision_loss)]
            route
                .router()
                .rest(i, gw.now_s(), after.map_or(1.0, |a| a as f64));
            true
        } else {
            false
        };
        let slow = matches!(outcome, Err(Failure::Slow(_)));
        // A fault of the moment: the deployment may be tried again in this request.
        if matches!(outcome, Err(Failure::Again(_))) {
            failed_here.push(i);
        }
        match outcome {
            Ok(Started::Full(status, bytes, tokens, counted, timed)) => {
                guard.armed = false;
                match timed {
                    // Tokens the gateway saw come are told as a stream's are, to the router
                    // and the TTFT and TPOT histograms.
                    Some(Timed {
                        ttft_s,
                        tpot_s,
                        cached,
                    }) => {
                        let mut r = route.router();
                        r.first_token(i, gw.now_s(), ttft_s, ahead.prefilled(cached));
                        r.succeeded(i, gw.now_s(), tpot_s);
                        drop(r);
                        d.labels.ttft(ttft_s);
                        if let Some(t) = tpot_s {
                            d.labels.tpot(t);
                        }
                    }
                    // An upstream's whole answer says nothing about when its first token was
                    // ready, so it does not feed the router's TTFT average, but its time per
                    // token does.
                    None => route.router().answered(
                        i,
                        gw.now_s(),
                        t0.elapsed().as_secs_f64(),
                        tokens,
                        ahead,
                    ),
                }
                d.labels.ended();
                let prompt = counted.0.unwrap_or(u64::from(req.prompt_tokens));
                d.labels
                    .finished("ok", t0.elapsed().as_secs_f64(), prompt, tokens);
                // No more found cached than the prompt holds, whatever a provider says.
                let cached = timed
                    .map_or(counted.1.unwrap_or(0), |t| u64::from(t.cached))
                    .min(prompt);
                charge(d, key.as_deref(), (prompt, cached), tokens);
                return (status, [(header::CONTENT_TYPE, "application/json")], bytes)
                    .into_response();
            }
            Ok(Started::Stream(first, relay)) => {
                // From here the relay owns the slot and ends it.
                guard.armed = false;
                let ttft = t0.elapsed().as_secs_f64();
                let cached = match &relay {
                    Relay::Emu(_, fmt) => fmt.cached_tokens,
                    Relay::Http(..) => 0,
                };
                route
                    .router()
                    .first_token(i, gw.now_s(), ttft, ahead.prefilled(cached));
                d.labels.ttft(ttft);
                let relayer = Relayer::new(
                    Arc::clone(&gw),
                    req.model.clone(),
                    i,
                    relay,
                    first,
                    (t_start, t0),
                    (
                        req.prompt_tokens,
                        req.include_usage,
                        req.prompts.max(1) as usize * req.n.max(1) as usize,
                    ),
                    key.clone(),
                    held,
                );
                // The relay runs inside the response body: each chunk the client's
                // connection asks for pulls the next from the provider, with no task or
                // channel between them, and a client that leaves drops the relay.
                let body =
                    Body::from_stream(futures_util::stream::unfold(relayer, |mut r| async move {
                        r.next()
                            .await
                            .map(|b| (Ok::<_, std::convert::Infallible>(b), r))
                    }));
                return Response::builder()
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, "text/event-stream")
                    .header(header::CACHE_CONTROL, "no-cache")
                    .body(body)
                    .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
            }
            Err(Failure::Client(status, bytes)) => {
                guard.armed = false;
                route.router().abandoned(i);
                d.labels.ended();
                d.labels
                    .finished("client_error", t0.elapsed().as_secs_f64(), 0, 0);
                // A refusal in OpenAI's shape goes on as the provider wrote it, with the
                // fields of that shape it left out added (a `type`, and `param` and `code`
                // as null), so that a client reads every refusal alike; any other (a
                // framework's `{"detail": ...}`, a page, a message alone as
                // `{"error": "..."}`) is put in that shape.
                let Some(v) = openai_error(&bytes) else {
                    return ApiError::upstream_refused(status, &bytes).into_response();
                };
                return (status, axum::Json(v)).into_response();
            }
            Err(Failure::Unsuitable(e)) => {
                guard.armed = false;
                route.router().abandoned(i);
                d.labels.ended();
                refused(&mut unsuitable, &mut why, &d.provider, e);
            }
            Err(Failure::Late(reason)) => {
                guard.armed = false;
                // The output tokens it made by then, where the gateway saw them.
                let decoded = guard.made.load(std::sync::atomic::Ordering::Relaxed);
                route.router().abandoned(i);
                d.labels.ended();
                // The deployment took the prompt and made what it made by then: charged as
                // a stream cut short is.
                let prompt = u64::from(req.prompt_tokens);
                d.labels
                    .finished("timed_out", t0.elapsed().as_secs_f64(), prompt, decoded);
                charge(d, key.as_deref(), (prompt, 0), decoded);
                why.push(format!("{}: {reason}", d.provider));
                late = true;
                break;
            }
            Err(
                Failure::Retry(reason)
                | Failure::Again(reason)
                | Failure::Busy(reason, _)
                | Failure::Slow(reason),
            ) => {
                guard.armed = false;
                if slow {
                    charge(d, key.as_deref(), (u64::from(req.prompt_tokens), 0), 0);
                }
                // One strike against a deployment per request: its tries again within the
                // same request are not more evidence that it is down, but they end its
                // request all the same. A 429 is none: the provider is up and said how long
                // to rest it, which the rest above keeps; two short ones ejected it for the
                // whole cool-down.
                let ejected = if rate_limited || struck.contains(&i) {
                    route.router().abandoned(i);
                    false
                } else {
                    struck.push(i);
                    route.router().failed(i, gw.now_s())
                };
                d.labels.ended();
                d.labels.error(ejected);
                tracing::warn!(model = %req.model, provider = %d.provider, reason = %reason, "deployment failed; trying the next");
                why.push(format!("{}: {reason}", d.provider));
                attempts += 1;
                last_failed = Some(i);
                if panic {
                    break;
                }
            }
        }
    }
    // Refused by every deployment tried for what the request asks, not for a fault: the
    // client's to change, answered with the first refusal.
    if let (Some(e), n) = unsuitable {
        if n == tried.len() {
            crate::metrics::unanswered(&req.model, "client_error");
            return e.into_response();
        }
    }
    // The request's time ran out: a timeout, not a failure of the model, whether the last
    // attempt was at fault or not.
    if late || Instant::now() >= deadline {
        // A late attempt counted its deployment's `timed_out` above.
        if !late {
            crate::metrics::unanswered(&req.model, "timed_out");
        }
        return ApiError::timed_out(&route.name, &why).into_response();
    }
    // Every provider tried is over its rate, or none was tried for resting at its own
    // request: the client is to slow down, for as long as the soonest of them asked.
    let resting = route.router().rest_left(gw.now_s(), class.as_deref());
    if (attempts > 0 && busy.0 == attempts) || (attempts == 0 && resting.is_some()) {
        crate::metrics::unanswered(&req.model, "rate_limited");
        let asked = busy.1.or(resting.map(|s| s.ceil() as u64));
        let wait = asked.unwrap_or(1).clamp(1, gw.retry_after_s);
        let mut r = ApiError::providers_busy(&route.name, &why, wait).into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(wait));
        return r;
    }
    crate::metrics::unanswered(&req.model, "failed");
    let mut r = ApiError::all_failed(&route.name, &why).into_response();
    // When the first ejected deployment is tried again, else a second: the failures were
    // of the moment.
    let wait = route
        .router()
        .back_in(gw.now_s())
        .map_or(1, |s| (s.ceil() as u64).clamp(1, gw.retry_after_s));
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(wait));
    r
}

/// A request in flight on deployment `i` whose outcome is not known yet. Dropped armed (the
/// client left mid-attempt), it tells the router and the in-flight gauge the request is gone.
struct InFlight<'g> {
    route: &'g ModelRoute,
    i: usize,
    armed: bool,
    /// When the request arrived, for its duration.
    since: Instant,
    /// The client key its tokens are charged to, and its prompt's tokens, which the
    /// deployment took whether or not its answer is read.
    key: Option<&'g crate::keys::Key>,
    prompt_tokens: u32,
    /// Output tokens the attempt saw made (an emulated engine's whole answer), charged too.
    made: std::sync::atomic::AtomicU64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.route.router().abandoned(self.i);
            if let Some(d) = self.route.deployments.get(self.i) {
                d.labels.ended();
                let prompt = u64::from(self.prompt_tokens);
                let made = self.made.load(std::sync::atomic::Ordering::Relaxed);
                d.labels.finished(
                    "cancelled",
                    self.since.elapsed().as_secs_f64(),
                    prompt,
                    made,
                );
                charge(d, self.key, (prompt, 0), made);
            }
        }
    }
}

/// Charges `prompt` tokens (`.1` of them found cached, which its metrics count) and `output`
/// tokens at deployment `d`'s prices to it and to the client `key`, if any: once a request's
/// attempt on it ends, however it ends.
fn charge(d: &Deployment, key: Option<&crate::keys::Key>, prompt: (u64, u64), output: u64) {
    d.labels.cached(prompt.1);
    let usd = d.prices.cost(prompt.0, prompt.1, output);
    d.labels.spent(usd);
    if let Some(k) = key {
        k.charge(prompt.0, output, usd, Instant::now());
    }
}

/// A provider's refusal `body` in OpenAI's shape, an `error` object with a string `message`,
/// completed with the fields it leaves out: `type` (`invalid_request_error`, as OpenAI
/// types a refused request), `param` and `code` (null). `None` for any other body.
fn openai_error(body: &[u8]) -> Option<Value> {
    let mut v: Value = serde_json::from_slice(body).ok()?;
    let e = v.get_mut("error")?.as_object_mut()?;
    if !e.get("message").is_some_and(Value::is_string) {
        return None;
    }
    e.entry("type")
        .or_insert_with(|| Value::from("invalid_request_error"));
    e.entry("param").or_insert(Value::Null);
    e.entry("code").or_insert(Value::Null);
    Some(v)
}

/// A started stream, relayed chunk by chunk to the client, with its accounting.
struct Relayer {
    gw: Arc<Gateway>,
    model: String,
    i: usize,
    relay: Relay,
    queue: VecDeque<Bytes>,
    /// When the request arrived (its `total_ms` runs from then) and when this attempt
    /// began (the deployment's durations run from then).
    t_start: Instant,
    attempt_at: Instant,
    first_at: Instant,
    prompt_tokens: u32,
    /// Whether the client asked for a usage chunk (`stream_options.include_usage`), which
    /// the gateway writes where the provider sent none.
    client_usage: bool,
    /// The identity of the provider's chunks (`id`, `object`, `created`, `model`), for
    /// that usage chunk.
    shape: Option<Value>,
    /// Chunks' choices with output, and that output's length in quarters of a token.
    tokens: u64,
    quarters: usize,
    /// The provider's own count, (prompt, output), from a usage chunk.
    usage: Option<(Option<u64>, u64)>,
    /// Prompt tokens the provider found in its prefix cache.
    cached: u64,
    finished: bool,
    /// The choices seen (by index) and those a `finish_reason` has ended: the answer is
    /// whole when every choice seen has ended, `choices_asked` of them at least.
    choices: (BTreeSet<u64>, BTreeSet<u64>),
    /// Choices the client asked for: `n` for each prompt of a batch.
    choices_asked: usize,
    /// The client key the stream's tokens are charged to, if any.
    key: Option<Arc<crate::keys::Key>>,
    /// The tokens held against that key while the stream runs, given back when it is
    /// dropped (after `finish` has charged what it spent).
    _held: Option<crate::keys::Held>,
}

impl Relayer {
    #[allow(clippy::too_many_arguments)]
    fn new(
        gw: Arc<Gateway>,
        model: String,
        i: usize,
        relay: Relay,
        first: Vec<Bytes>,
        (t_start, attempt_at): (Instant, Instant),
        (prompt_tokens, client_usage, choices_asked): (u32, bool, usize),
        key: Option<Arc<crate::keys::Key>>,
        held: Option<crate::keys::Held>,
    ) -> Self {
        let http = matches!(relay, Relay::Http(..));
        let cached = match &relay {
            Relay::Emu(_, fmt) => u64::from(fmt.cached_tokens),
            Relay::Http(..) => 0,
        };
        let mut r = Relayer {
            gw,
            model,
            i,
            relay,
            queue: VecDeque::new(),
            t_start,
            attempt_at,
            first_at: Instant::now(),
            prompt_tokens,
            client_usage,
            shape: None,
            choices_asked,
            tokens: 0,
            quarters: 0,
            usage: None,
            cached,
            finished: false,
            choices: (BTreeSet::new(), BTreeSet::new()),
            key,
            _held: held,
        };
        if http {
            r.absorb(first);
        } else {
            r.tokens = first.len() as u64;
            r.queue.extend(first);
        }
        r
    }

    /// Output and prompt tokens: the provider's count where it sent one, else the gateway's:
    /// a token for each choice of a chunk with output, or the output's characters at four a
    /// token where that is more (a provider that sends several tokens a chunk), and its
    /// estimate of the prompt.
    fn counts(&self) -> (u64, u64) {
        match self.usage {
            Some((prompt, output)) => (output, prompt.unwrap_or(u64::from(self.prompt_tokens))),
            None => (
                self.tokens.max(self.quarters.div_ceil(4) as u64),
                u64::from(self.prompt_tokens),
            ),
        }
    }

    fn deployment(&self) -> Option<(&ModelRoute, &Deployment)> {
        let route = self.gw.models.get(&self.model)?;
        Some((route, route.deployments.get(self.i)?))
    }

    /// Charges the stream's tokens to its client key and its deployment, at the
    /// deployment's prices.
    fn charge(&self, prompt: u64, tokens: u64) {
        match self.deployment() {
            Some((_, d)) => charge(d, self.key.as_deref(), (prompt, self.cached), tokens),
            None => {
                if let Some(k) = &self.key {
                    k.charge(prompt, tokens, 0.0, Instant::now());
                }
            }
        }
    }

    /// Whether every choice seen has finished, as many as were asked for having been seen.
    fn answered(&self) -> bool {
        let (seen, ended) = &self.choices;
        seen.len() >= self.choices_asked.max(1) && seen == ended
    }

    /// Queues an HTTP provider's data payloads, noticing the end and error events.
    fn absorb(&mut self, payloads: Vec<Bytes>) {
        // The provider's usage chunk was asked for the gateway's count, not the client's.
        let hide_usage = matches!(self.relay, Relay::Http(_, _, true));
        for p in payloads {
            if self.finished {
                return;
            }
            // The client gets one error event, the gateway's, in OpenAI's shape, with the
            // provider's message in it; an event that is not a JSON object is not passed on.
            let mut v = match read_event(&p) {
                Event::Done => {
                    self.queue.push_back(Bytes::from_static(sse::DONE));
                    self.finish(Ended::Done);
                    continue;
                }
                Event::Error(message) => {
                    self.finish(Ended::Failed(format!(
                        "the provider sent an error event: {message}"
                    )));
                    continue;
                }
                Event::Malformed => {
                    self.finish(Ended::Failed(
                        "the provider sent an event that is not a JSON object".into(),
                    ));
                    continue;
                }
                Event::Chunk(v) => v,
            };
            // Each choice with output in a chunk counts a token, and its characters are
            // kept (a provider may send several tokens in one, which its usage chunk then
            // corrects); role, finish and usage chunks count none.
            let (outputs, usage) = (outputs(&v), usage_of(&v));
            let output = outputs > 0;
            self.tokens += outputs;
            self.quarters += answer_quarters(&v, "delta");
            if let Some(u) = usage {
                self.usage = Some(u);
                if let Some(c) = cached_of(&v) {
                    // No more found cached than the prompt holds, whatever a provider says.
                    self.cached = c.min(u.0.unwrap_or(u64::from(self.prompt_tokens)));
                }
            }
            if self.shape.is_none() {
                let mut shape = serde_json::Map::new();
                for k in ["id", "object", "created", "model"] {
                    if let Some(x) = v.get(k) {
                        shape.insert(k.into(), x.clone());
                    }
                }
                self.shape = Some(Value::Object(shape));
            }
            for c in v["choices"].as_array().into_iter().flatten() {
                let i = c["index"].as_u64().unwrap_or(0);
                self.choices.0.insert(i);
                if !c["finish_reason"].is_null() {
                    self.choices.1.insert(i);
                }
            }
            // A usage the client did not ask for is the gateway's: a chunk of usage alone is
            // dropped, one with more in it loses its usage.
            if hide_usage && usage.is_some() {
                if output || finishes(&v) {
                    if let Some(o) = v.as_object_mut() {
                        o.remove("usage");
                    }
                    self.queue.push_back(sse::event(v.to_string().as_bytes()));
                }
            } else {
                self.queue.push_back(sse::event(&p));
            }
        }
    }

    /// The next bytes for the client, or `None` at the end.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(b) = self.queue.pop_front() {
                return Some(b);
            }
            if self.finished {
                return None;
            }
            // The whole request's limit, from when it arrived, its earlier attempts included,
            // and the longest a stream may go silent (`stall_ms`), past which the deployment
            // has stalled: a provider that hangs after its first token is its failure, where
            // the request's own limit is not.
            let total = Duration::from_millis(self.gw.timeouts.total_ms);
            let gap = Duration::from_millis(self.gw.timeouts.stall_ms);
            let left = total.saturating_sub(self.t_start.elapsed());
            let wait = left.min(gap);
            let expired = || {
                if gap < left {
                    Ended::Failed(format!("no output for {} ms", gap.as_millis()))
                } else {
                    Ended::Late(format!(
                        "not done within the request's {} ms",
                        total.as_millis()
                    ))
                }
            };
            match &mut self.relay {
                Relay::Emu(s, fmt) => match timeout(wait, s.next()).await {
                    Ok(Some(EmuEvent::Token)) => {
                        self.tokens += 1;
                        self.queue.extend(fmt.chunk());
                    }
                    Ok(Some(EmuEvent::Done)) => {
                        self.queue.extend(fmt.ending());
                        self.finish(Ended::Done);
                    }
                    Ok(None) => self.finish(Ended::Failed("the replica stopped".into())),
                    Err(_) => self.finish(expired()),
                },
                Relay::Http(stream, reader, _) => match timeout(wait, stream.next()).await {
                    Ok(Some(Ok(chunk))) => {
                        let payloads = reader.feed(&chunk);
                        let overflowed = reader.overflowed();
                        self.absorb(payloads);
                        if overflowed && !self.finished {
                            self.finish(Ended::Failed(format!(
                                "the provider sent an event of over {} bytes",
                                sse::MAX_EVENT_BYTES
                            )));
                        }
                    }
                    // An answer that has finished is whole without the `[DONE]` some servers
                    // leave out, and whatever breaks after it (a connection cut before the
                    // body's last chunk): the client gets it, and the deployment is not
                    // blamed.
                    Ok(None | Some(Err(_))) if self.answered() => {
                        self.queue.push_back(Bytes::from_static(sse::DONE));
                        self.finish(Ended::Done);
                    }
                    Ok(Some(Err(e))) => self.finish(Ended::Failed(without_url(&e))),
                    Ok(None) => self.finish(Ended::Failed(
                        "the provider closed the stream before [DONE]".into(),
                    )),
                    Err(_) => self.finish(expired()),
                },
            }
        }
    }

    /// Ends the stream: records the outcome, and unless it is done queues the error event
    /// that tells the client its stream broke.
    fn finish(&mut self, outcome: Ended) {
        self.finished = true;
        let elapsed = self.attempt_at.elapsed().as_secs_f64();
        let (tokens, prompt) = self.counts();
        self.charge(prompt, tokens);
        // A client that asked for a usage chunk gets one, the gateway's count, where the
        // provider sent none: before the `[DONE]` that ends the stream.
        if matches!(outcome, Ended::Done)
            && self.client_usage
            && self.usage.is_none()
            && matches!(self.relay, Relay::Http(..))
        {
            let mut v = self.shape.clone().unwrap_or_else(|| json!({}));
            v["choices"] = json!([]);
            v["usage"] = json!({"prompt_tokens": prompt, "completion_tokens": tokens, "total_tokens": prompt + tokens});
            let chunk = sse::event(v.to_string().as_bytes());
            let at = self
                .queue
                .iter()
                .rposition(|b| b.as_ref() == sse::DONE)
                .unwrap_or(self.queue.len());
            self.queue.insert(at, chunk);
        }
        let now = self.gw.now_s();
        let Some((route, d)) = self.deployment() else {
            return;
        };
        let mut r = route.router();
        let event = match outcome {
            Ended::Done => {
                let tpot = (tokens > 1)
                    .then(|| self.first_at.elapsed().as_secs_f64() / (tokens - 1) as f64);
                r.succeeded(self.i, now, tpot);
                drop(r);
                if let Some(t) = tpot {
                    d.labels.tpot(t);
                }
                d.labels.finished("ok", elapsed, prompt, tokens);
                None
            }
            Ended::Failed(why) => {
                let ejected = r.failed(self.i, now);
                drop(r);
                d.labels.error(ejected);
                tracing::warn!(model = %self.model, provider = %d.provider, reason = %why, "stream failed after its first token");
                d.labels.finished("failed", elapsed, prompt, tokens);
                Some(error_event(
                    &format!("{} failed mid-stream: {why}", d.provider),
                    "upstream_failed",
                ))
            }
            // The gateway's own limit on the request, which a long answer from a healthy
            // deployment reaches: nothing to hold against the deployment.
            Ended::Late(why) => {
                r.abandoned(self.i);
                drop(r);
                tracing::warn!(model = %self.model, provider = %d.provider, reason = %why, "stream cut by the request's limit");
                d.labels.finished("timed_out", elapsed, prompt, tokens);
                Some(error_event(
                    &format!("the stream from {} was cut: {why}", d.provider),
                    "timeout",
                ))
            }
        };
        d.labels.ended();
        self.queue.extend(event);
    }
}

/// How a stream that reached its client ended.
enum Ended {
    /// With the provider's end.
    Done,
    /// The deployment failed it.
    Failed(String),
    /// The request's `total_ms` ran out first.
    Late(String),
}

impl Drop for Relayer {
    /// A stream dropped before its end: the client went away.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let (tokens, prompt) = self.counts();
        self.charge(prompt, tokens);
        let elapsed = self.attempt_at.elapsed().as_secs_f64();
        if let Some((route, d)) = self.deployment() {
            route.router().abandoned(self.i);
            d.labels.finished("cancelled", elapsed, prompt, tokens);
            d.labels.ended();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::retry_after_s;
    use std::time::{Duration, SystemTime};

    #[test]
    fn retry_after_is_read_as_seconds_or_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(retry_after_s(" 7 ", now), Some(7));
        // Wed, 21 Oct 2015 07:28:00 GMT is 1,445,412,480 s after the epoch.
        assert_eq!(
            retry_after_s("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(30)
        );
        assert_eq!(retry_after_s("Wed, 21 Oct 2015 07:27:00 GMT", now), Some(0));
        assert_eq!(retry_after_s("soon", now), None);
    }
}
