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
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_router::Ask;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Tokens an emulated provider writes when the request sets no limit.
const EMULATED_DEFAULT_TOKENS: u32 = 128;

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
    Http(BoxStream<'static, reqwest::Result<Bytes>>, SseReader),
}

enum Started {
    /// A stream whose first events are in hand.
    Stream(Vec<Bytes>, Relay),
    /// A whole answer.
    Full(StatusCode, Bytes, u64),
}

enum Failure {
    /// Worth another deployment.
    Retry(String),
    /// The request's own fault, answered as the upstream answered it.
    Client(StatusCode, Bytes),
}

/// Emulated answers in OpenAI's shapes.
struct EmuFormat {
    id: String,
    created: u64,
    model: String,
    endpoint: Endpoint,
    include_usage: bool,
    prompt_tokens: u32,
    output: u32,
    sent: u32,
    limited: bool,
}

impl EmuFormat {
    fn word(&self) -> &'static str {
        FILLER[self.sent as usize % FILLER.len()]
    }

    fn chunk(&mut self) -> Bytes {
        let word = self.word();
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
        sse::event(v.to_string().as_bytes())
    }

    fn finish_reason(&self) -> &'static str {
        if self.limited {
            "length"
        } else {
            "stop"
        }
    }

    fn usage(&self) -> Value {
        json!({"prompt_tokens": self.prompt_tokens, "completion_tokens": self.sent,
               "total_tokens": self.prompt_tokens + self.sent})
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
        let text: String = (0..self.output)
            .map(|i| FILLER[i as usize % FILLER.len()])
            .collect();
        self.sent = self.output;
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

fn error_event(message: &str) -> Bytes {
    let v = json!({"error": {"message": message, "type": "api_error", "param": null, "code": "upstream_failed"}});
    sse::event(v.to_string().as_bytes())
}

fn client_error(e: &ApiError) -> Failure {
    Failure::Client(e.status, Bytes::from(e.body().to_string()))
}

async fn attempt(
    gw: &Gateway,
    d: &Deployment,
    ep: Endpoint,
    req: &ApiRequest,
    seq: u64,
) -> Result<Started, Failure> {
    let first = Duration::from_millis(gw.timeouts.first_token_ms);
    let total = Duration::from_millis(gw.timeouts.total_ms);
    match &d.backend {
        Backend::Emulated(pool) => {
            if req.n > 1 {
                return Err(client_error(&ApiError::invalid(
                    "Emulated providers answer with one choice; `n` must be 1.",
                    Some("n"),
                )));
            }
            let output = req.max_tokens.unwrap_or(EMULATED_DEFAULT_TOKENS);
            let mut s = pool
                .submit(req.prompt_tokens, output)
                .await
                .map_err(|e| match e {
                    EmuError::TooLong(m) => client_error(&ApiError::invalid(
                        format!("The request is too long for this model's context: {m}."),
                        Some("messages"),
                    )),
                    other => Failure::Retry(other.to_string()),
                })?;
            match timeout(first, s.next()).await {
                Err(_) => {
                    return Err(Failure::Retry(format!(
                        "no first token within {} ms",
                        first.as_millis()
                    )))
                }
                Ok(None) => return Err(Failure::Retry("the replica stopped".into())),
                Ok(Some(_)) => {}
            }
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
                output,
                sent: 0,
                limited: req.max_tokens.is_some(),
            };
            if req.stream {
                let mut events = vec![fmt.chunk()];
                if output == 1 {
                    let _ = s.next().await;
                    events.extend(fmt.ending());
                }
                return Ok(Started::Stream(events, Relay::Emu(s, fmt)));
            }
            let rest = async {
                while let Some(e) = s.next().await {
                    if e == EmuEvent::Done {
                        return true;
                    }
                }
                false
            };
            match timeout(total, rest).await {
                Ok(true) => Ok(Started::Full(StatusCode::OK, fmt.full(), u64::from(output))),
                Ok(false) => Err(Failure::Retry("the replica stopped".into())),
                Err(_) => Err(Failure::Retry(format!(
                    "not done within {} ms",
                    total.as_millis()
                ))),
            }
        }
        Backend::OpenAi { base_url, api_key } => {
            let mut body = req.body.clone();
            body["model"] = Value::String(d.upstream_model.clone());
            let mut rb = gw
                .client
                .post(format!("{base_url}{}", ep.path()))
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
            if let Some(k) = api_key {
                rb = rb.bearer_auth(k);
            }
            let wait = if req.stream { first } else { total };
            let t0 = Instant::now();
            let resp = match timeout(wait, rb.send()).await {
                Err(_) => {
                    return Err(Failure::Retry(format!(
                        "no response within {} ms",
                        wait.as_millis()
                    )))
                }
                Ok(Err(e)) => return Err(Failure::Retry(without_url(&e))),
                Ok(Ok(r)) => r,
            };
            let status =
                StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                return Err(Failure::Retry(format!("HTTP {}", status.as_u16())));
            }
            if !status.is_success() {
                let b = resp.bytes().await.unwrap_or_default();
                return Err(Failure::Client(status, b));
            }
            if !req.stream {
                let left = total.saturating_sub(t0.elapsed());
                let b = match timeout(left, resp.bytes()).await {
                    Ok(Ok(b)) => b,
                    Ok(Err(e)) => return Err(Failure::Retry(without_url(&e))),
                    Err(_) => {
                        return Err(Failure::Retry(format!(
                            "not done within {} ms",
                            total.as_millis()
                        )))
                    }
                };
                let tokens = serde_json::from_slice::<Value>(&b)
                    .ok()
                    .and_then(|v| v["usage"]["completion_tokens"].as_u64())
                    .unwrap_or(0);
                return Ok(Started::Full(status, b, tokens));
            }
            let mut stream = resp.bytes_stream().boxed();
            let mut reader = SseReader::default();
            loop {
                let left = first.saturating_sub(t0.elapsed());
                match timeout(left, stream.next()).await {
                    Err(_) => {
                        return Err(Failure::Retry(format!(
                            "no first token within {} ms",
                            first.as_millis()
                        )))
                    }
                    Ok(None) => {
                        return Err(Failure::Retry(
                            "the stream ended before its first event".into(),
                        ))
                    }
                    Ok(Some(Err(e))) => return Err(Failure::Retry(without_url(&e))),
                    Ok(Some(Ok(chunk))) => {
                        let payloads = reader.feed(&chunk);
                        if payloads.is_empty() {
                            continue;
                        }
                        if payloads[0].starts_with(b"{\"error\"") {
                            return Err(Failure::Retry(
                                "the stream began with an error event".into(),
                            ));
                        }
                        let events = payloads.iter().map(|p| sse::event(p)).collect();
                        return Ok(Started::Stream(events, Relay::Http(stream, reader)));
                    }
                }
            }
        }
    }
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

/// Handles one completion request.
pub(crate) async fn handle(
    gw: Arc<Gateway>,
    ep: Endpoint,
    class: Option<String>,
    body: Bytes,
) -> Response {
    let t_start = Instant::now();
    let req = match crate::api::parse(ep, &body) {
        Ok(r) => r,
        Err(e) => {
            crate::metrics::unanswered("-", "client_error");
            return e.into_response();
        }
    };
    let Some(route) = gw.models.get(&req.model) else {
        crate::metrics::unanswered(&req.model, "client_error");
        return ApiError::model_not_found(&req.model).into_response();
    };
    if let Ok(mut b) = gw.budget.lock() {
        b.deposit();
    }
    let seq = gw.started.elapsed().as_nanos() as u64;
    let mut tried: Vec<usize> = Vec::new();
    let mut why: Vec<String> = Vec::new();
    while (tried.len() as u32) < gw.max_attempts {
        if !tried.is_empty() && !gw.budget.lock().map(|mut b| b.withdraw()).unwrap_or(false) {
            why.push("retry budget exhausted".into());
            break;
        }
        let pick = {
            let mut r = route
                .router
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let ask = Ask {
                class: class.as_deref(),
                output_tokens: req.max_tokens,
                exclude: &tried,
            };
            let i = r.pick(gw.now_s(), &ask);
            if let Some(i) = i {
                r.dispatched(i);
            }
            i
        };
        let Some(i) = pick else {
            break;
        };
        if let Some(&prev) = tried.last() {
            route.deployments[prev].labels.fallback();
        }
        tried.push(i);
        let d = &route.deployments[i];
        d.labels.started();
        let t0 = Instant::now();
        match attempt(&gw, d, ep, &req, seq).await {
            Ok(Started::Full(status, bytes, tokens)) => {
                let elapsed = t0.elapsed().as_secs_f64();
                let mut r = route
                    .router
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                r.first_token(i, elapsed);
                r.succeeded(i, None);
                drop(r);
                d.labels.ended();
                d.labels.finished(
                    "ok",
                    t_start.elapsed().as_secs_f64(),
                    u64::from(req.prompt_tokens),
                    tokens,
                );
                return (status, [(header::CONTENT_TYPE, "application/json")], bytes)
                    .into_response();
            }
            Ok(Started::Stream(first, relay)) => {
                let ttft = t0.elapsed().as_secs_f64();
                route
                    .router
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .first_token(i, ttft);
                d.labels.ttft(ttft);
                let (tx, rx) = mpsc::channel::<Bytes>(64);
                tokio::spawn(pump(
                    Arc::clone(&gw),
                    req.model.clone(),
                    i,
                    relay,
                    first,
                    tx,
                    t0,
                    t_start,
                    req.prompt_tokens,
                ));
                let body =
                    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
                        rx.recv()
                            .await
                            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
                    }));
                return Response::builder()
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, "text/event-stream")
                    .header(header::CACHE_CONTROL, "no-cache")
                    .body(body)
                    .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
            }
            Err(Failure::Client(status, bytes)) => {
                route
                    .router
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .abandoned(i);
                d.labels.ended();
                d.labels
                    .finished("client_error", t_start.elapsed().as_secs_f64(), 0, 0);
                return (status, [(header::CONTENT_TYPE, "application/json")], bytes)
                    .into_response();
            }
            Err(Failure::Retry(reason)) => {
                let ejected = route
                    .router
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .failed(i, gw.now_s());
                d.labels.ended();
                d.labels.error(ejected);
                tracing::warn!(model = %req.model, provider = %d.provider, reason = %reason, "deployment failed; trying the next");
                why.push(format!("{}: {reason}", d.provider));
            }
        }
    }
    crate::metrics::unanswered(&req.model, "failed");
    ApiError::all_failed(&route.name, &why).into_response()
}

fn route_of<'g>(gw: &'g Gateway, model: &str) -> Option<&'g ModelRoute> {
    gw.models.get(model)
}

#[allow(clippy::too_many_arguments)]
async fn pump(
    gw: Arc<Gateway>,
    model: String,
    i: usize,
    relay: Relay,
    first: Vec<Bytes>,
    tx: mpsc::Sender<Bytes>,
    t0: Instant,
    t_start: Instant,
    prompt_tokens: u32,
) {
    let Some(route) = route_of(&gw, &model) else {
        return;
    };
    let d = &route.deployments[i];
    let total = Duration::from_millis(gw.timeouts.total_ms);
    let first_at = Instant::now();
    let mut tokens: u64 = 1;
    let mut outcome: Result<(), String> = Ok(());
    let mut client_gone = false;
    let mut done = first.last().is_some_and(|b| b.as_ref() == sse::DONE);
    for b in first {
        if tx.send(b).await.is_err() {
            client_gone = true;
        }
    }
    match relay {
        Relay::Emu(mut s, mut fmt) => {
            while !client_gone && !done {
                let left = total.saturating_sub(t0.elapsed());
                match timeout(left, s.next()).await {
                    Ok(Some(EmuEvent::Token)) => {
                        tokens += 1;
                        if tx.send(fmt.chunk()).await.is_err() {
                            client_gone = true;
                        }
                    }
                    Ok(Some(EmuEvent::Done)) => {
                        for b in fmt.ending() {
                            if tx.send(b).await.is_err() {
                                client_gone = true;
                            }
                        }
                        done = true;
                    }
                    Ok(None) => outcome = Err("the replica stopped".into()),
                    Err(_) => outcome = Err(format!("not done within {} ms", total.as_millis())),
                }
                if outcome.is_err() {
                    break;
                }
            }
        }
        Relay::Http(mut stream, mut reader) => {
            while !client_gone && !done {
                let left = total.saturating_sub(t0.elapsed());
                match timeout(left, stream.next()).await {
                    Ok(Some(Ok(chunk))) => {
                        for p in reader.feed(&chunk) {
                            if p.as_ref() == b"[DONE]" {
                                done = true;
                            } else if p.starts_with(b"{\"error\"") {
                                outcome = Err("the provider sent an error event".into());
                            } else {
                                tokens += 1;
                            }
                            if tx.send(sse::event(&p)).await.is_err() {
                                client_gone = true;
                                break;
                            }
                        }
                        if outcome.is_err() {
                            break;
                        }
                    }
                    Ok(Some(Err(e))) => {
                        outcome = Err(without_url(&e));
                        break;
                    }
                    Ok(None) => {
                        outcome = Err("the provider closed the stream before [DONE]".into());
                        break;
                    }
                    Err(_) => {
                        outcome = Err(format!("not done within {} ms", total.as_millis()));
                        break;
                    }
                }
            }
        }
    }
    let elapsed = t_start.elapsed().as_secs_f64();
    let lock = || {
        route
            .router
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    if client_gone {
        lock().abandoned(i);
        d.labels
            .finished("cancelled", elapsed, u64::from(prompt_tokens), tokens);
    } else {
        match outcome {
            Ok(()) => {
                let tpot =
                    (tokens > 1).then(|| first_at.elapsed().as_secs_f64() / (tokens - 1) as f64);
                lock().succeeded(i, tpot);
                if let Some(t) = tpot {
                    d.labels.tpot(t);
                }
                d.labels
                    .finished("ok", elapsed, u64::from(prompt_tokens), tokens);
            }
            Err(why) => {
                let ejected = lock().failed(i, gw.now_s());
                d.labels.error(ejected);
                tracing::warn!(model = %model, provider = %d.provider, reason = %why, "stream failed after its first token");
                let _ = tx
                    .send(error_event(&format!(
                        "{} failed mid-stream: {why}",
                        d.provider
                    )))
                    .await;
                d.labels
                    .finished("failed", elapsed, u64::from(prompt_tokens), tokens);
            }
        }
    }
    d.labels.ended();
}
