//! HTTP: the routes, body limits, and the listener.

use crate::api::{ApiError, Endpoint};
use crate::keys::{Key, Limit};
use crate::proxy;
use crate::Gateway;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;

/// The header a request may use to name its traffic class.
pub const CLASS_HEADER: &str = "x-switchyard-class";
/// The header a request may use to ask for a time to first token, in milliseconds.
pub const TTFT_HEADER: &str = "x-switchyard-ttft-ms";
/// The header a request may use to ask for a time per output token, in milliseconds.
pub const TPOT_HEADER: &str = "x-switchyard-tpot-ms";

async fn read_body(gw: &Gateway, body: Body) -> Result<bytes::Bytes, ApiError> {
    let limit = std::time::Duration::from_millis(gw.timeouts.body_ms);
    match tokio::time::timeout(limit, axum::body::to_bytes(body, gw.max_body)).await {
        Ok(Ok(b)) => Ok(b),
        // Over the limit, or a body that could not be read (a chunk of a broken size).
        Ok(Err(e)) => {
            let inner = e.into_inner();
            if inner.is::<http_body_util::LengthLimitError>() {
                Err(ApiError::too_large(gw.max_body))
            } else {
                Err(ApiError::invalid(
                    format!("The request body could not be read: {inner}."),
                    None,
                ))
            }
        }
        Err(_) => Err(ApiError::body_timeout(gw.timeouts.body_ms)),
    }
}

fn class_of(h: &HeaderMap) -> Option<String> {
    h.get(CLASS_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The latency target a request asks for in header `name`, in seconds.
fn target_of(h: &HeaderMap, name: &str) -> Result<Option<f64>, ApiError> {
    let Some(v) = h.get(name) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|ms| *ms > 0.0 && ms.is_finite())
        .map(|ms| Some(ms / 1000.0))
        .ok_or_else(|| {
            ApiError::invalid(
                format!("The `{name}` header must be a positive number of milliseconds."),
                None,
            )
        })
}

/// The client key a request presents, when the gateway has keys; `Ok(None)` when it is open.
fn key_of(gw: &Gateway, h: &HeaderMap) -> Result<Option<Arc<Key>>, ApiError> {
    if !gw.keys.enabled() {
        return Ok(None);
    }
    let auth = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    gw.keys.authenticate(auth).map(Some).inspect_err(|_| {
        crate::metrics::unanswered("-", "unauthorized");
    })
}

/// The 429 for a key over one of its limits, with the seconds until it would admit; `model`
/// labels the metric (`-` before the request's body is read).
pub(crate) fn over_limit(key: &Key, (limit, wait_s): (Limit, u64), model: &str) -> Response {
    crate::metrics::unanswered(
        model,
        match limit {
            Limit::Dollars => "insufficient_quota",
            Limit::Requests | Limit::Tokens => "rate_limited",
        },
    );
    let mut r = match limit {
        Limit::Requests => {
            ApiError::rate_limited(&key.name, "requests", key.requests_per_minute, wait_s)
        }
        Limit::Tokens => ApiError::rate_limited(&key.name, "tokens", key.tokens_per_minute, wait_s),
        Limit::Dollars => ApiError::insufficient_quota(&key.name, key.usd_per_day, wait_s),
    }
    .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(wait_s));
    r
}

async fn completions(gw: Arc<Gateway>, ep: Endpoint, req: Request) -> Response {
    // A declared length over the limit is refused before any of the body is read.
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > gw.max_body as u64) {
        return ApiError::too_large(gw.max_body).into_response();
    }
    if let Some(encoding) = req
        .headers()
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim())
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("identity"))
    {
        return ApiError::unsupported_encoding(encoding).into_response();
    }
    // The key is known, and charged a request of its rate, before the body is read; its
    // tokens are held once the body says what the request asks (a request too large for
    // the key's whole minute is refused outright, without a wait to retry after).
    let key = match key_of(&gw, req.headers()) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    if let Some(k) = &key {
        if let Err(refusal) = k.arrive(Instant::now()) {
            return over_limit(k, refusal, "-");
        }
    }
    let class = class_of(req.headers());
    let targets = match (
        target_of(req.headers(), TTFT_HEADER),
        target_of(req.headers(), TPOT_HEADER),
    ) {
        (Ok(ttft), Ok(tpot)) => proxy::Targets { ttft, tpot },
        (Err(e), _) | (_, Err(e)) => return e.into_response(),
    };
    match read_body(&gw, req.into_body()).await {
        Ok(b) => proxy::handle(gw, ep, key, class, targets, b).await,
        Err(e) => e.into_response(),
    }
}

async fn chat(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    completions(gw, Endpoint::Chat, req).await
}

async fn legacy(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    completions(gw, Endpoint::Completions, req).await
}

/// A model as `/v1/models` describes it.
fn model_object(gw: &Gateway, id: &str) -> serde_json::Value {
    json!({"id": id, "object": "model", "created": gw.created_unix, "owned_by": "switchyard"})
}

async fn models(State(gw): State<Arc<Gateway>>, h: HeaderMap) -> Response {
    // Listing the models spends none of a key's request rate, but needs a key all the same.
    let key = match key_of(&gw, &h) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let data: Vec<_> = gw
        .models
        .keys()
        .filter(|m| key.as_ref().is_none_or(|k| k.allows(m)))
        .map(|m| model_object(&gw, m))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// `GET /v1/models/{id}`: one model, as the list shows it; an id may hold slashes
/// (`meta-llama/Llama-3.1-8B-Instruct`) and percent-escapes. The id is read from the path
/// here, after the key is checked, so that one that is not UTF-8 is answered as any unknown
/// model is.
async fn model(State(gw): State<Arc<Gateway>>, uri: axum::http::Uri, h: HeaderMap) -> Response {
    let key = match key_of(&gw, &h) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let path = uri.path();
    let raw = path
        .strip_prefix("/v1/models/")
        .or_else(|| path.strip_prefix("/models/"))
        .unwrap_or_default();
    let id = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_or_else(|_| raw.to_string(), |id| id.into_owned());
    if gw.models.contains_key(&id) && key.as_ref().is_none_or(|k| k.allows(&id)) {
        axum::Json(model_object(&gw, &id)).into_response()
    } else {
        ApiError::model_not_found(&id).into_response()
    }
}

async fn health(State(gw): State<Arc<Gateway>>) -> Response {
    let now = gw.now_s();
    // Models every deployment of which is ejected: the gateway answers them 503 until one
    // is back.
    let mut down = Vec::new();
    let models: serde_json::Map<String, serde_json::Value> = gw
        .models
        .values()
        .map(|m| {
            let r = m.router();
            if (0..m.deployments.len()).all(|i| r.is_ejected(i, now)) {
                down.push(m.name.clone());
            }
            let deps: Vec<_> = m
                .deployments
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let o = r.observed(i);
                    let ms = |s: f64| (s * 1e5).round() / 100.0;
                    // What the router learned of it, taken back to idle (before it fades).
                    let mut j = json!({"provider": d.provider, "upstream_model": d.upstream_model, "ejected": r.is_ejected(i, now),
                           "in_flight": o.outstanding, "requests": o.requests, "failures": o.failures,
                           "learned_ttft_ms": o.ttft_s.map(ms), "learned_tpot_ms": o.tpot_s.map(ms),
                           "tpot_spread_ms": o.tpot_s.map(|_| ms(o.tpot_dev_s)),
                           "usd_per_mtok": d.prices.output, "input_usd_per_mtok": d.prices.input,
                           "cached_input_usd_per_mtok": d.prices.cached_input});
                    // An upstream's first tokens' growth with their prompts, as learned
                    // (an emulated pool's is its prediction's).
                    if !matches!(d.backend, crate::Backend::Emulated(_)) {
                        j["learned_ttft_ms_per_1k_prompt_tokens"] =
                            json!(o.ttft_s_per_prompt_token().map(|s| ms(s * 1000.0)));
                    }
                    if let crate::Backend::Emulated(pool) = &d.backend {
                        let (engines, prefill, layout) = pool.engines();
                        j["engines"] = json!(engines);
                        j["prefill_engines"] = json!(prefill);
                        j["layout"] = json!(layout);
                        j["longest_request"] = json!(pool.longest_request());
                        // Prompt tokens found in the engines' prefix caches and prefilled.
                        let (cached, prefilled) = pool.prompt_tokens();
                        j["prompt_tokens_cached"] = json!(cached);
                        j["prompt_tokens_prefilled"] = json!(prefilled);
                        // The rate its queued prompts drain at, its time per token idle and
                        // full, and the requests it holds before they queue, as the router
                        // expects them.
                        let t = &r.targets()[i];
                        j["prefill_tok_s"] = json!(t.prefill_tok_s.round());
                        j["tpot_ms"] = json!(ms(t.tpot_s));
                        j["tpot_full_ms"] = json!(ms(t.tpot_full_s));
                        j["capacity"] = json!(t.capacity.round());
                        j["disaggregated"] = json!(t.disaggregated);
                    }
                    j
                })
                .collect();
            (m.name.clone(), json!(deps))
        })
        .collect();
    // The gateway itself is up either way (200): "degraded" names what it cannot serve.
    let status = if down.is_empty() { "ok" } else { "degraded" };
    axum::Json(json!({"status": status, "unavailable": down, "models": models})).into_response()
}

async fn metrics() -> Response {
    match crate::metrics::handle() {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder unavailable\n",
        )
            .into_response(),
    }
}

async fn wrong_method(req: Request) -> Response {
    ApiError::wrong_method(req.method().as_str(), req.uri().path()).into_response()
}

async fn not_found(req: Request) -> Response {
    ApiError::no_route(req.uri().path()).into_response()
}

/// Every answer carries an `x-request-id`, as OpenAI's do (its SDKs keep it as a response's
/// `_request_id`, for logs and support): the client's own where it sent one of printable
/// ASCII up to 128 bytes, else a new one, unique to this run of the gateway.
async fn request_id(
    State(gw): State<Arc<Gateway>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let theirs = req
        .headers()
        .get("x-request-id")
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.to_str().is_ok())
        .cloned();
    let mut res = next.run(req).await;
    let id = theirs.unwrap_or_else(|| {
        let n = gw
            .answered
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        axum::http::HeaderValue::from_str(&format!("req_{:016x}{n:08x}", gw.id_salt))
            .expect("hex digits are a header value")
    });
    res.headers_mut().insert("x-request-id", id);
    res
}

/// The gateway's routes.
pub fn app(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(legacy))
        .route("/v1/models", get(models))
        .route("/v1/models/{*id}", get(model))
        // The same without `/v1`, for clients whose base URL is the server's root (LiteLLM's
        // proxy answers both).
        .route("/chat/completions", post(chat))
        .route("/completions", post(legacy))
        .route("/models", get(models))
        .route("/models/{*id}", get(model))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::from_fn_with_state(gw.clone(), request_id))
        .with_state(gw)
}

/// The HTTP/2 connection preface (RFC 9113, section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits until a new connection's first bytes tell HTTP/1 from HTTP/2 (a byte that starts no
/// HTTP/2 preface, the whole preface, or the connection's end), which hyper reads with no
/// timer of its own: a client that sends nothing, or part of the preface, would hold its
/// descriptor for ever.
async fn told_apart(tcp: &tokio::net::TcpStream) -> std::io::Result<()> {
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = tcp.peek(&mut buf).await?;
        if n == 0 || n == buf.len() || !H2_PREFACE.starts_with(&buf[..n]) {
            return Ok(());
        }
        // Part of the preface: the rest is a few packets away, and a peek would return the
        // same bytes at once, so look again shortly.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Serves until `shutdown` resolves, then lets the requests in flight finish. Small streamed
/// writes go out at once (TCP_NODELAY), so no token waits for a delayed acknowledgement; a
/// connection whose request headers do not arrive within `timeouts.header_ms` is closed
/// (axum's own server leaves it open), as is a kept-alive one idle that long: hyper starts
/// the timer when it waits for a request's head, which on a kept-alive connection is as soon
/// as the previous answer is sent. A new connection's first bytes are awaited here for as
/// long, since hyper's timer starts only once they tell HTTP/1 from HTTP/2 (`told_apart`):
/// a client that connects and sends nothing, or part of the HTTP/2 preface, holds no
/// descriptor; an HTTP/2 one that stops answering pings for as long is closed too.
///
/// # Errors
/// The listener failed.
pub async fn serve(
    listener: TcpListener,
    gw: Arc<Gateway>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    let _ = crate::metrics::handle();
    let headers = std::time::Duration::from_millis(gw.timeouts.header_ms);
    let saver = gw
        .spend
        .is_some()
        .then(|| tokio::spawn(save_spend_every(Arc::clone(&gw))));
    let app = app(Arc::clone(&gw));
    // Connections watch `stop_rx`, which the shutdown closes by dropping its sender; each
    // holds a `done` receiver until it ends, so that the shutdown can wait for them all.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let (done_tx, done_rx) = tokio::sync::watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of descriptors or a connection reset before it was taken: the
                // listener is fine; wait a little rather than spin.
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let mut stop = stop_rx.clone();
        let done = done_rx.clone();
        tokio::spawn(async move {
            let arrived = tokio::select! {
                r = tokio::time::timeout(headers, told_apart(&tcp)) => matches!(r, Ok(Ok(()))),
                _ = stop.changed() => false,
            };
            if !arrived {
                drop(done);
                return;
            }
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(headers);
            // An HTTP/2 client that stops answering pings is gone: its connection closes.
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(headers)
                .keep_alive_timeout(headers);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(done);
        });
    }
    // New connections are refused from here, as a load balancer expects of a server that is
    // going away, rather than accepted into a backlog no one will serve.
    drop(listener);
    drop(stop_rx);
    drop(stop_tx);
    drop(done_rx);
    done_tx.closed().await;
    // Every request has ended and been charged: the last word on the keys' dollars, whose
    // failure fails the server, so that a service manager sees the spending lost.
    if let Some(saver) = saver {
        saver.abort();
        let _ = saver.await;
        save_spend_now(&gw, crate::spend::Save::Last).await?;
    }
    Ok(())
}

/// How often the keys' dollars are written while they spend: a crash loses at most this
/// much of their spending.
const SPEND_SAVE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Writes the keys' dollars every [`SPEND_SAVE_EVERY`] when they have been charged since.
async fn save_spend_every(gw: Arc<Gateway>) {
    let mut tick = tokio::time::interval(SPEND_SAVE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // A failure is logged and the next save tries again, since refusing requests for it
        // would stop serving over a full disk.
        let _ = save_spend_now(&gw, crate::spend::Save::IfCharged).await;
    }
}

/// One save of the spend file off the runtime's threads; a failure is logged and returned.
async fn save_spend_now(gw: &Arc<Gateway>, when: crate::spend::Save) -> std::io::Result<()> {
    let g = Arc::clone(gw);
    let saved = tokio::task::spawn_blocking(move || match &g.spend {
        Some(f) => f
            .save(&g.keys, when)
            .map_err(|e| (f.path().display().to_string(), e)),
        None => Ok(false),
    })
    .await
    .map_err(std::io::Error::other)?;
    saved.map(|_| ()).map_err(|(file, e)| {
        tracing::error!(file = %file, error = %e, "the keys' spending could not be saved");
        std::io::Error::new(
            e.kind(),
            format!("the keys' spending could not be saved to {file}: {e}"),
        )
    })
}
