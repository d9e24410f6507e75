//! The gateway in process: configuration errors, the SSE reader, emulated timing against the
//! performance model, injected faults, and class routing.

use futures_util::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_gateway::sse::SseReader;
use switchyard_gateway::{serve, Config, Gateway};
use switchyard_perf::{best_deployment, Catalog, Objective, Params, Query};

fn statics() -> (&'static Catalog, &'static Params) {
    (
        Box::leak(Box::new(Catalog::builtin().expect("catalog"))),
        Box::leak(Box::new(Params::default())),
    )
}

/// Starts a gateway on a free port; returns its base URL.
async fn start(text: &str) -> (String, Arc<Gateway>) {
    let (cat, params) = statics();
    let cfg = Config::parse(text, "test.toml").expect("config");
    let gw = Gateway::new(&cfg, text, "test.toml", cat, params).expect("gateway");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(serve(l, Arc::clone(&gw), std::future::pending()));
    (format!("http://{addr}/v1"), gw)
}

/// The gateway's `/health` report.
async fn health(url: &str) -> serde_json::Value {
    let body = reqwest::get(url.replace("/v1", "/health"))
        .await
        .expect("health")
        .text()
        .await
        .expect("body");
    serde_json::from_str(&body).expect("json")
}

/// A two-token chat request for `model` carrying one extra header.
async fn chat_with_header(
    client: &reqwest::Client,
    url: &str,
    model: &str,
    (name, value): (&str, &str),
) -> reqwest::Response {
    client
        .post(format!("{url}/chat/completions"))
        .header(name, value)
        .body(format!(
            r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}],"max_tokens":2}}"#
        ))
        .send()
        .await
        .expect("sent")
}

fn emulated(name: &str, system: &str, faults: &str) -> String {
    format!(
        "[[provider]]\nname = \"{name}\"\nkind = \"emulated\"\nsystem = \"{system}\"\nchips = 1\n[provider.faults]\n{faults}\n"
    )
}

fn model(name: &str, deployments: &[(&str, &str)]) -> String {
    let mut s = format!("[[model]]\nname = \"{name}\"\npolicy = \"priority\"\n");
    for (p, extra) in deployments {
        s += &format!("[[model.deployment]]\nprovider = \"{p}\"\nupstream_model = \"llama-3.1-8b\"\n{extra}\n");
    }
    s
}

#[test]
fn the_builtin_configuration_parses_and_bad_ones_name_line_and_field() {
    Config::builtin().expect("built-in parses");
    let check = |text: &str, needles: &[&str]| {
        let e = Config::parse(text, "g.toml").expect_err("bad").to_string();
        for n in needles {
            assert!(e.contains(n), "`{n}` missing from {e}");
        }
    };
    let ok = format!(
        "{}{}",
        emulated("a", "h100-sxm", ""),
        model("m", &[("a", "")])
    );
    Config::parse(&ok, "g.toml").expect("good");
    check(
        &ok.replace("chips = 1\n", "chips = 1\nprefill_chips = 1\n"),
        &["g.toml", "field `prefill_chips`", "needs prefill_replicas"],
    );
    check(
        &ok.replace("chips = 1\n", "chips = 1\nprefill_replicas = 0\n"),
        &["g.toml", "field `prefill_replicas`", "at least 1"],
    );
    check(
        &ok.replace("kind = \"emulated\"", "kind = \"grpc\""),
        &["g.toml", "line 3", "field `kind`", "grpc"],
    );
    check(
        &ok.replace("provider = \"a\"\nupstream", "provider = \"b\"\nupstream"),
        &["line 12", "no provider named `b`"],
    );
    // Two deployments of one model on one provider could not be told apart.
    check(
        &format!(
            "{}{}",
            emulated("a", "h100-sxm", ""),
            model("m", &[("a", ""), ("a", "weight = 2")])
        ),
        &[
            "line 16",
            "field `deployment.provider`",
            "a second deployment of `llama-3.1-8b` on `a`",
        ],
    );
    // Values that would leave the gateway refusing or timing out every request, or routing
    // by a NaN, are named with their line.
    for (from, to, needles) in [
        (
            "chips = 1\n",
            "chips = 1\nreplicas = 0\n",
            ["line 6", "field `replicas`"],
        ),
        (
            "upstream_model = \"llama-3.1-8b\"\n",
            "upstream_model = \"llama-3.1-8b\"\nweight = -5\n",
            ["line 14", "field `deployment.weight`"],
        ),
        (
            "upstream_model = \"llama-3.1-8b\"\n",
            "upstream_model = \"llama-3.1-8b\"\nusd_per_mtok = nan\n",
            ["line 14", "field `deployment.usd_per_mtok`"],
        ),
        (
            "upstream_model = \"llama-3.1-8b\"\n",
            "upstream_model = \"llama-3.1-8b\"\nmax_context = 0\n",
            ["line 14", "field `deployment.max_context`"],
        ),
        (
            "[provider.faults]\n",
            "[provider.faults]\noutage_start_s = 60\noutage_end_s = 30\n",
            ["line 8", "field `faults.outage_end_s`"],
        ),
        // A field of the other kind of provider, or an empty name, would be read by nothing.
        (
            "chips = 1\n",
            "chips = 1\nbase_url = \"http://x/v1\"\n",
            ["line 6", "field `base_url`"],
        ),
        (
            "kind = \"emulated\"\nsystem = \"h100-sxm\"\nchips = 1\n[provider.faults]\n",
            "kind = \"openai\"\nbase_url = \"http://x/v1\"\n[provider.faults]\nerror_rate = 0.5\n",
            ["field `faults`", "applies to `emulated` providers"],
        ),
        (
            "upstream_model = \"llama-3.1-8b\"\n",
            "upstream_model = \"\"\n",
            ["line 13", "field `deployment.upstream_model`"],
        ),
        (
            "upstream_model = \"llama-3.1-8b\"\n",
            "upstream_model = \"llama-3.1-8b\"\nclasses = [\"\"]\n",
            ["line 14", "field `deployment.classes`"],
        ),
        // An empty list would read as none and take every class; an empty name names nothing.
        (
            "upstream_model = \"llama-3.1-8b\"\n",
            "upstream_model = \"llama-3.1-8b\"\nclasses = []\n",
            ["line 14", "would take every class"],
        ),
        (
            "name = \"m\"\n",
            "name = \"\"\n",
            ["field `name`", "clients ask for a model by it"],
        ),
        (
            "name = \"a\"\n",
            "name = \"\"\n",
            ["field `name`", "name the provider by it"],
        ),
    ] {
        check(&ok.replace(from, to), &needles);
    }
    for (table, needles) in [
        (
            "[timeouts]\nfirst_token_ms = 0\n",
            ["line 2", "timeouts.first_token_ms"],
        ),
        (
            "[timeouts]\ntotal_ms = 1000\nattempt_ms = 2000\n",
            ["line 3", "timeouts.attempt_ms"],
        ),
        (
            "[server]\nmax_body_bytes = 0\n",
            ["line 2", "server.max_body_bytes"],
        ),
        (
            "[retries]\nmax_attempts = 0\n",
            ["line 2", "retries.max_attempts"],
        ),
        (
            "[health]\ncooldown_s = -1.0\n",
            ["line 2", "health.cooldown_s"],
        ),
    ] {
        check(&format!("{table}{ok}"), &needles);
    }
    check(
        &ok.replace("chips = 1", "chips = \"one\""),
        &["line 5", "chips"],
    );
    check(
        &ok.replace(
            "[provider.faults]\n",
            "[provider.faults]\nerror_rate = 2.0\n",
        ),
        &["faults.error_rate"],
    );
    check(
        "[[provider]]\nname = \"x\"\nkind = \"openai\"\n[[model]]\nname = \"m\"\n[[model.deployment]]\nprovider = \"x\"\n",
        &["line 1", "base_url"],
    );
    // A field of a model's second deployment is found in that deployment's table, not the
    // first's; a field of an inline table on its own line.
    let two = format!(
        "{}{}{}",
        emulated("a", "h100-sxm", ""),
        emulated("b", "h100-sxm", ""),
        model("m", &[("a", "weight = 1"), ("b", "weight = -1")])
    );
    check(&two, &["line 25", "field `deployment.weight`"]);
    check(
        &two.replace("provider = \"b\"\nupstream", "provider = \"zz\"\nupstream"),
        &["line 23", "no provider named `zz`"],
    );
    check(
        &ok.replace(
            "[provider.faults]\n",
            "faults = { spike_rate = 0.5, error_rate = 2.0 }\n",
        ),
        &["line 6", "field `faults.error_rate`"],
    );
    check(
        &format!("{}\n", model("m", &[("a", "")])),
        &["g.toml", "no [[provider]]"],
    );
    check(
        &format!("[server]\nlisten = \"localhost:99999\"\n{ok}"),
        &["line 2", "field `server.listen`", "localhost:99999"],
    );
    // A whole request's limit alone shortens the first token's default to it; written
    // longer, the first token's limit contradicts it.
    let c = Config::parse(&format!("[timeouts]\ntotal_ms = 2000\n{ok}"), "g.toml")
        .expect("a total alone");
    assert_eq!(c.timeouts.first_token_ms, 2000);
    check(
        &format!("[timeouts]\ntotal_ms = 2000\nfirst_token_ms = 3000\n{ok}"),
        &["timeouts.first_token_ms", "at most `total_ms`"],
    );
}

#[test]
fn the_sse_reader_handles_split_lines_comments_and_multi_line_data() {
    let mut r = SseReader::default();
    let mut got = Vec::new();
    for part in [
        &b"data: {\"a\""[..],
        b":1}\r",
        b"\n\r\n: keep-alive\n\ndata: x\ndata: y\n",
        b"\ndata: [DONE]\n\n",
    ] {
        got.extend(r.feed(part));
    }
    let got: Vec<String> = got
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert_eq!(got, vec!["{\"a\":1}", "x\ny", "[DONE]"]);
    // A byte order mark at the start of a stream is dropped, even split over chunks; one
    // later is data.
    let mut r = SseReader::default();
    let mut got = r.feed(b"\xEF\xBB");
    got.extend(r.feed(b"\xBFdata: a\n\n\xEF\xBB\xBFdata: b\n\ndata: c\n\n"));
    assert_eq!(got, vec![&b"a"[..], b"c"]);
    // An event of empty data is not dispatched.
    assert_eq!(
        SseReader::default().feed(b"data:\n\ndata: x\n\n"),
        vec![&b"x"[..]]
    );
    // An error event is an error object or message, beside choices too (OpenRouter's
    // mid-stream error), or a choice finished for an error; `"error": false` is no error.
    use switchyard_gateway::sse::is_error;
    for (payload, error) in [
        (r#"{"error":{"message":"x"}}"#, true),
        (r#"{ "error" : "overloaded" }"#, true),
        (
            r#"{"error":{"code":"server_error"},"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}"#,
            true,
        ),
        (
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"error"}]}"#,
            true,
        ),
        (
            r#"{"choices":[{"index":0,"delta":{"content":"a"}}],"error":false}"#,
            false,
        ),
        (r#"{"choices":[],"usage":{"prompt_tokens":1}}"#, false),
        (r#"{"error":null,"choices":[]}"#, false),
    ] {
        assert_eq!(is_error(payload.as_bytes()), error, "{payload}");
    }
}

/// The replica the gateway emulates for Llama 3.1 8B on one H100.
fn one_h100_8b() -> switchyard_perf::Deployment<'static> {
    let (cat, p) = statics();
    let q = Query {
        chips: Some(1),
        ..Query::new(
            cat.model("llama-3.1-8b").expect("model"),
            cat.system("h100-sxm").expect("system"),
            f64::from(p.default_isl),
            f64::from(p.default_osl),
        )
    };
    best_deployment(&q, p, Objective::Throughput).expect("deployment")
}

/// Streams a chat completion of `n` tokens from model `m`; returns when each content token
/// arrived (seconds from the request) and whether the stream ended with `[DONE]`.
async fn token_times(url: &str, n: u32) -> (Vec<f64>, bool) {
    let t0 = Instant::now();
    let resp = reqwest::Client::new()
        .post(format!("{url}/chat/completions"))
        .body(format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"max_tokens":{n},"stream":true}}"#
        ))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut reader = SseReader::default();
    let (mut times, mut done) = (Vec::new(), false);
    while let Some(chunk) = stream.next().await {
        for payload in reader.feed(&chunk.expect("chunk")) {
            if payload.as_ref() == b"[DONE]" {
                done = true;
            } else if payload.windows(9).any(|w| w == b"\"content\"") {
                times.push(t0.elapsed().as_secs_f64());
            }
        }
    }
    (times, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulated_tokens_come_at_the_pace_the_performance_model_predicts() {
    let text = format!(
        "{}{}",
        emulated("gpu", "h100-sxm", ""),
        model("m", &[("gpu", "")])
    );
    let (url, _gw) = start(&text).await;
    let (_, p) = statics();
    let d = one_h100_8b();
    let n = 60u32;
    let (times, _) = token_times(&url, n).await;
    assert_eq!(times.len(), n as usize);
    let (first, last) = (times[0], times[times.len() - 1]);
    // Predicted: n − 1 decode steps of a batch of one at growing context.
    let predicted: f64 = (1..n)
        .map(|k| d.decode_step(p, 1.0, 4.0 + f64::from(k)).time)
        .sum();
    let measured = last - first;
    assert!(
        (measured - predicted).abs() / predicted < 0.15,
        "decode took {measured:.4} s, predicted {predicted:.4} s"
    );
    assert!(
        first < 0.05 + d.prefill(p, 4.0) * 2.0,
        "first token after {first:.4} s"
    );
}

/// A wafer's sub-millisecond steps each send their token at its own time: the median gap
/// between tokens is a step, not the few microseconds between two tokens sent together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_millisecond_steps_send_their_tokens_one_by_one() {
    let text = format!(
        "{}{}",
        emulated("wafer", "cs3", ""),
        model("m", &[("wafer", "")])
    );
    let (url, _gw) = start(&text).await;
    let (cat, p) = statics();
    let q = Query::new(
        cat.model("llama-3.1-8b").expect("model"),
        cat.system("cs3").expect("system"),
        f64::from(p.default_isl),
        f64::from(p.default_osl),
    );
    let d = best_deployment(&q, p, Objective::Throughput).expect("deployment");
    let step = d.decode_step(p, 1.0, 100.0).time;
    assert!(step < 1e-3, "a sub-millisecond step: {step}");
    let (times, _) = token_times(&url, 400).await;
    let mut gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_by(f64::total_cmp);
    let median = gaps[gaps.len() / 2];
    // Loose, for a busy machine: sent in pairs, the median is some microseconds.
    assert!(
        median > 0.3 * step,
        "median gap {median} s against a step of {step} s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_faults_fail_over_and_name_what_was_tried() {
    let text = format!(
        "{}{}{}",
        emulated("broken", "h100-sxm", "error_rate = 1.0"),
        emulated("down", "h100-sxm", "outage_start_s = 0.0"),
        model("m", &[("broken", "priority = 0"), ("down", "priority = 1")])
    );
    let (url, _gw) = start(&text).await;
    let ask = || async {
        reqwest::Client::new()
            .post(format!("{url}/chat/completions"))
            .body(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":3}"#)
            .send()
            .await
            .expect("sent")
    };
    let r = ask().await;
    assert_eq!(r.status(), 503);
    let retry = |r: &reqwest::Response| -> u64 {
        r.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .expect("retry-after")
    };
    // Nothing ejected yet: try again at once.
    assert_eq!(retry(&r), 1);
    assert_eq!(health(&url).await["status"], "ok");
    let body = r.text().await.expect("body");
    assert!(body.contains("all_deployments_failed"), "{body}");
    assert!(
        body.contains("broken: emulated provider error")
            && body.contains("down: emulated provider unavailable"),
        "{body}"
    );
    // Ejected after three failures in a row: try again when the first is back, within the
    // 30 s cooldown.
    let mut last = 0;
    for _ in 0..3 {
        let r = ask().await;
        assert_eq!(r.status(), 503);
        last = retry(&r);
    }
    assert!((20..=30).contains(&last), "{last}");
    // With every deployment of the model ejected, the health report says the gateway
    // cannot serve it.
    let h = health(&url).await;
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["unavailable"][0], "m", "{h}");
}

/// An injected error stands for a 5xx: tried again, as a real provider's 500 is, so a lone
/// deployment failing half its requests answers most of them within three attempts (seven
/// in eight), not half.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_error_is_tried_again_as_a_5xx_is() {
    let text = format!(
        "[health]\neject_after = 1000\n{}{}",
        emulated("flaky", "h100-sxm", "error_rate = 0.5\nseed = 7"),
        model("m", &[("flaky", "")])
    );
    let (url, _gw) = start(&text).await;
    let client = reqwest::Client::new();
    let mut ok = 0;
    for _ in 0..60 {
        let r = client
            .post(format!("{url}/chat/completions"))
            .body(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#)
            .send()
            .await
            .expect("sent");
        if r.status() == 200 {
            ok += 1;
        }
    }
    // Seven in eight of 60 is 52.5; half would be 30.
    assert!(ok >= 42, "{ok} of 60 answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_header_routes_to_the_deployments_that_take_the_class() {
    let text = format!(
        "{}{}{}",
        emulated("wafer", "h100-sxm", ""),
        emulated("gpu", "h100-sxm", ""),
        model(
            "m",
            &[
                ("wafer", "priority = 1\nclasses = [\"interactive\"]"),
                ("gpu", "priority = 0\nclasses = [\"batch\"]")
            ]
        )
    );
    let (url, _gw) = start(&text).await;
    let client = reqwest::Client::new();
    for class in ["interactive", "interactive", "batch"] {
        let r = chat_with_header(&client, &url, "m", ("x-switchyard-class", class)).await;
        assert_eq!(r.status(), 200);
    }
    let health = client
        .get(url.replace("/v1", "/health"))
        .send()
        .await
        .expect("health")
        .text()
        .await
        .expect("body");
    let health: serde_json::Value = serde_json::from_str(&health).expect("json");
    let deps = health["models"]["m"].as_array().expect("deployments");
    assert_eq!(deps[0]["provider"], "wafer");
    assert_eq!(deps[0]["requests"], 2, "{health}");
    assert_eq!(deps[1]["requests"], 1, "{health}");
    // A class no deployment takes is the client's to change: 400 naming the classes
    // served, not 503 as if the model were down.
    let (status, body) = chat_json(
        &url,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "class_not_served", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("without a class") && m.contains("batch")),
        "{body}"
    );
}

/// Serves `app` on a loopback port as an upstream; its `/v1` base URL.
async fn serve_upstream(app: axum::Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{addr}/v1")
}

/// An OpenAI-compatible upstream that answers with the request body it received, as the
/// content of a chat completion, so a test can see what the gateway forwarded.
async fn echo_upstream() -> String {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(|body: String| async move {
            let v = serde_json::json!({"id": "echo", "object": "chat.completion", "created": 0, "model": "echo",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": body}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}});
            axum::Json(v)
        }),
    );
    serve_upstream(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_field_reaches_the_upstream_as_sent() {
    let up = echo_upstream().await;
    let text = format!(
        "[[provider]]\nname = \"up\"\nkind = \"openai\"\nbase_url = \"{up}\"\n[[model]]\nname = \"public\"\n[[model.deployment]]\nprovider = \"up\"\nupstream_model = \"private-name\"\n"
    );
    let (url, _gw) = start(&text).await;
    let sent = serde_json::json!({
        "model": "public",
        "messages": [{"role": "user", "content": "weather?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "response_format": {"type": "json_object"},
        "stop": ["\n\n", "END"],
        "n": 2,
        "max_completion_tokens": 77,
        "temperature": 0.3,
        "a_field_from_the_future": {"x": [1, 2, 3]}
    });
    let r = reqwest::Client::new()
        .post(format!("{url}/chat/completions"))
        .body(sent.to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    let reply: serde_json::Value =
        serde_json::from_str(&r.text().await.expect("body")).expect("json");
    let got: serde_json::Value = serde_json::from_str(
        reply["choices"][0]["message"]["content"]
            .as_str()
            .expect("echo"),
    )
    .expect("echoed json");
    let mut want = sent.clone();
    want["model"] = serde_json::json!("private-name");
    assert_eq!(got, want);
    // A body rebuilt to rename the model keeps every object's keys in the client's order: a
    // schema's properties are generated in that order (reasoning before the answer).
    let body = r#"{"model":"public","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{"type":"object","properties":{"reasoning":{"type":"string"},"answer":{"type":"string"}}}}}}"#;
    let (_, reply) = chat_json(&url, body).await;
    let echoed = reply["choices"][0]["message"]["content"]
        .as_str()
        .expect("echo");
    assert!(
        echoed.find("reasoning").expect("reasoning") < echoed.find("answer").expect("answer"),
        "{echoed}"
    );
    // A base URL with a query (Azure's api-version) keeps it after the endpoint's path.
    let text = format!(
        "[[provider]]\nname = \"up\"\nkind = \"openai\"\nbase_url = \"{up}?api-version=2024-06-01\"\n[[model]]\nname = \"public\"\n[[model.deployment]]\nprovider = \"up\"\n"
    );
    let (url, _gw) = start(&text).await;
    let (status, body) = chat_json(
        &url,
        r#"{"model":"public","messages":[{"role":"user","content":"x"}]}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_stops_retries_from_multiplying_an_outage() {
    // No budget beyond the single token the bucket starts with.
    let text = format!(
        "[retries]\nmax_attempts = 3\nbudget_ratio = 0.0\nmin_per_s = 0.0\n[health]\neject_after = 1000\n{}{}{}",
        emulated("broken", "h100-sxm", "error_rate = 1.0"),
        emulated("fine", "h100-sxm", ""),
        model("m", &[("broken", "priority = 0"), ("fine", "priority = 1")])
    );
    let (url, _gw) = start(&text).await;
    let client = reqwest::Client::new();
    let send = || {
        client
            .post(format!("{url}/chat/completions"))
            .body(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#)
            .send()
    };
    let first = send().await.expect("sent");
    assert_eq!(first.status(), 200, "the one retry in the bucket is spent");
    let second = send().await.expect("sent");
    assert_eq!(second.status(), 503);
    let body = second.text().await.expect("body");
    assert!(body.contains("retry budget exhausted"), "{body}");
}

/// A first-token or time-per-token header prefers the deployments expected to meet it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latency_header_prefers_deployments_expected_to_meet_it() {
    for (header, slow, fast, asked, bad) in [
        (
            "x-switchyard-ttft-ms",
            "ttft_ms = 900",
            "ttft_ms = 50",
            "100",
            "soon",
        ),
        (
            "x-switchyard-tpot-ms",
            "tpot_ms = 90",
            "tpot_ms = 5",
            "20",
            "-3",
        ),
    ] {
        let text = format!(
            "{}{}{}",
            emulated("a", "h100-sxm", ""),
            emulated("b", "h100-sxm", ""),
            model(
                "m",
                &[
                    ("a", &format!("priority = 0\n{slow}")),
                    ("b", &format!("priority = 1\n{fast}"))
                ]
            )
        );
        let (url, _gw) = start(&text).await;
        let client = reqwest::Client::new();
        let r = chat_with_header(&client, &url, "m", (header, asked)).await;
        assert_eq!(r.status(), 200, "{header}");
        let refused = chat_with_header(&client, &url, "m", (header, bad)).await;
        assert_eq!(refused.status(), 400, "{header}");
        let h = health(&url).await;
        assert_eq!(h["models"]["m"][1]["requests"], 1, "{header}: {h}");
        assert_eq!(h["models"]["m"][0]["requests"], 0, "{header}: {h}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_before_the_first_byte_frees_its_slot() {
    let text = format!(
        "{}{}",
        emulated("slow", "h100-sxm", "spike_rate = 1.0\nspike_ms = 1500"),
        model("m", &[("slow", "")])
    );
    let (url, _gw) = start(&text).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .expect("client");
    for stream in [false, true] {
        let r = client
            .post(format!("{url}/chat/completions"))
            .body(format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"max_tokens":2,"stream":{stream}}}"#
            ))
            .send()
            .await;
        assert!(r.is_err(), "the client gives up first");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let health = health(&url).await;
    assert_eq!(health["models"]["m"][0]["requests"], 2, "{health}");
    assert_eq!(health["models"]["m"][0]["in_flight"], 0, "{health}");
    assert_eq!(health["models"]["m"][0]["failures"], 0, "{health}");
}

/// A 429 answer's `Retry-After` seconds and its JSON body.
async fn refused(r: reqwest::Response) -> (u64, serde_json::Value) {
    assert_eq!(r.status(), 429);
    let wait = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("retry-after");
    let body = serde_json::from_str(&r.text().await.expect("body")).expect("json");
    (wait, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_keys_authenticate_limit_models_and_rate() {
    // Each nextest test runs in its own process, so these variables are this test's alone.
    std::env::set_var("SWITCHYARD_TEST_KEY_A", "secret-a");
    std::env::set_var("SWITCHYARD_TEST_KEY_B", "secret-b");
    let keys = "[[key]]\nname = \"team-a\"\nkey_env = \"SWITCHYARD_TEST_KEY_A\"\nrequests_per_minute = 2\n\
                [[key]]\nname = \"team-b\"\nkey_env = \"SWITCHYARD_TEST_KEY_B\"\nmodels = [\"small\"]\n";
    let text = format!(
        "{}{}{}{keys}",
        emulated("gpu", "h100-sxm", ""),
        model("small", &[("gpu", "")]),
        model("big", &[("gpu", "")])
    );
    // A key's empty list of models would admit every one: refused, naming the field.
    let (cat, params) = statics();
    let empty = text.replace("models = [\"small\"]", "models = []");
    let cfg = Config::parse(&empty, "k.toml").expect("parses");
    let err = Gateway::new(&cfg, &empty, "k.toml", cat, params)
        .expect_err("an empty list refused")
        .to_string();
    assert!(
        err.contains("field `models`") && err.contains("leave it out"),
        "{err}"
    );
    let (url, gw) = start(&text).await;
    assert!(gw.requires_keys());
    let debug = format!("{gw:?}");
    assert!(
        debug.contains("team-a") && !debug.contains("secret-a"),
        "{debug}"
    );
    let client = reqwest::Client::new();
    let ask = |key: Option<&'static str>, model: &'static str| {
        let mut r = client.post(format!("{url}/chat/completions")).body(format!(
            r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}],"max_tokens":2}}"#
        ));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send()
    };
    // No key, or an unknown one: 401 in OpenAI's shape.
    for key in [None, Some("secret-c")] {
        let r = ask(key, "small").await.expect("sent");
        assert_eq!(r.status(), 401);
        let body: serde_json::Value =
            serde_json::from_str(&r.text().await.expect("body")).expect("json");
        assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
    }
    // The scheme name is case-insensitive.
    let r = chat_with_header(&client, &url, "small", ("authorization", "bearer secret-b")).await;
    assert_eq!(r.status(), 200);
    // team-b may use `small` only; `big` is answered as a model it cannot see.
    assert_eq!(
        ask(Some("secret-b"), "small").await.expect("sent").status(),
        200
    );
    let r = ask(Some("secret-b"), "big").await.expect("sent");
    assert_eq!(r.status(), 404);
    let body: serde_json::Value =
        serde_json::from_str(&r.text().await.expect("body")).expect("json");
    assert_eq!(body["error"]["code"], "model_not_found", "{body}");
    let listed: serde_json::Value = client
        .get(format!("{url}/models"))
        .bearer_auth("secret-b")
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .map(|t| serde_json::from_str(&t).expect("json"))
        .expect("body");
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, vec!["small"]);
    // team-a may send two requests a minute: the third is refused with a retry time.
    for _ in 0..2 {
        assert_eq!(
            ask(Some("secret-a"), "big").await.expect("sent").status(),
            200
        );
    }
    let (wait, body) = refused(ask(Some("secret-a"), "big").await.expect("sent")).await;
    assert!((1..=30).contains(&wait), "{wait}");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("team-a")),
        "{body}"
    );
    // team-b has no rate limit, so it is unaffected by team-a's.
    assert_eq!(
        ask(Some("secret-b"), "small").await.expect("sent").status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_tokens_per_minute_waits_until_the_debt_is_repaid() {
    std::env::set_var("SWITCHYARD_TEST_KEY_T", "secret-t");
    let keys =
        "[[key]]\nname = \"thrifty\"\nkey_env = \"SWITCHYARD_TEST_KEY_T\"\ntokens_per_minute = 60\n";
    let text = format!(
        "{}{}{keys}",
        emulated("gpu", "h100-sxm", ""),
        model("m", &[("gpu", "")])
    );
    let (url, _gw) = start(&text).await;
    let client = reqwest::Client::new();
    let ask = |stream: bool| {
        client
            .post(format!("{url}/chat/completions"))
            .bearer_auth("secret-t")
            .body(format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"max_tokens":40,"stream":{stream}}}"#
            ))
            .send()
    };
    // A request asking more than the whole minute allows is refused at once, as too large,
    // with no wait that would admit it, and spends nothing.
    let too_large = || async {
        let r = client
            .post(format!("{url}/chat/completions"))
            .bearer_auth("secret-t")
            .body(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":200}"#)
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status(), 429);
        assert!(r.headers().get("retry-after").is_none());
        let body: serde_json::Value =
            serde_json::from_str(&r.text().await.expect("body")).expect("json");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("Request too large")),
            "{body}"
        );
    };
    too_large().await;
    // So is a batch of prompts whose answers together ask more: each prompt gets its own.
    let r = client
        .post(format!("{url}/completions"))
        .bearer_auth("secret-t")
        .body(r#"{"model":"m","prompt":["hi","there"],"max_tokens":40}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_none());
    // The first request is admitted with a full minute's allowance and spends 40 output
    // tokens and its prompt; a streamed one is charged the same way when its stream ends.
    let r = ask(true).await.expect("sent");
    assert_eq!(r.status(), 200);
    let body = r.text().await.expect("stream");
    assert!(body.contains("[DONE]"), "{body}");
    let r = ask(false).await.expect("sent");
    assert_eq!(r.status(), 200);
    // Now in debt: refused as a token limit, with the seconds until it is repaid.
    let (wait, body) = refused(ask(false).await.expect("sent")).await;
    assert!(wait >= 1, "{wait}");
    assert_eq!(body["error"]["type"], "tokens", "{body}");
    // In debt, a request larger than the whole minute is still told so, with no wait that
    // would admit it.
    too_large().await;
    // Each request counts once, admitted or limited: two admitted, four refused.
    let line = |outcome: &str| {
        format!(r#"switchyard_key_requests_total{{key="thrifty",outcome="{outcome}"}}"#)
    };
    assert_eq!(metric(&url, &line("admitted")).await, Some(2.0));
    assert_eq!(metric(&url, &line("rate_limited")).await, Some(4.0));
}

/// A burst of requests is held to the tokens per minute as it arrives, not as it ends: each
/// holds its prompt and `max_tokens` while it runs, so thirty at once of 100 tokens each on
/// a key of 1,000 a minute admit ten or eleven, where all thirty once ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_held_to_the_tokens_per_minute_as_it_arrives() {
    std::env::set_var("SWITCHYARD_TEST_KEY_B", "secret-b");
    let keys =
        "[[key]]\nname = \"bursty\"\nkey_env = \"SWITCHYARD_TEST_KEY_B\"\ntokens_per_minute = 1000\n";
    let text = format!(
        "{}{}{keys}",
        emulated("gpu", "h100-sxm", ""),
        model("m", &[("gpu", "")])
    );
    let (url, _gw) = start(&text).await;
    let client = reqwest::Client::new();
    let asks = (0..30).map(|_| {
        client
            .post(format!("{url}/chat/completions"))
            .bearer_auth("secret-b")
            .body(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":100}"#)
            .send()
    });
    let statuses: Vec<u16> = futures_util::future::join_all(asks)
        .await
        .into_iter()
        .map(|r| r.expect("sent").status().as_u16())
        .collect();
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    assert!((9..=11).contains(&ok) && ok + limited == 30, "{statuses:?}");
}

/// Each request is charged its tokens at the prices of the deployment that served it, whole
/// or streamed, to its key and to the deployment; a key that has spent its dollars a day is
/// refused as OpenAI refuses an exhausted quota, until the refill has paid it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_charged_at_the_deployments_prices_and_refused_past_its_dollars_a_day() {
    std::env::set_var("SWITCHYARD_TEST_KEY_RICH", "secret-rich");
    std::env::set_var("SWITCHYARD_TEST_KEY_POOR", "secret-poor");
    // A dollar for each output token and half a dollar for each prompt token: the sums are
    // exact in any float.
    let prices = "usd_per_mtok = 1000000\ninput_usd_per_mtok = 500000";
    let keys = "[[key]]\nname = \"rich\"\nkey_env = \"SWITCHYARD_TEST_KEY_RICH\"\nusd_per_day = 1000000\n\
                [[key]]\nname = \"poor\"\nkey_env = \"SWITCHYARD_TEST_KEY_POOR\"\nusd_per_day = 30\n";
    let text = format!(
        "{}{}{keys}",
        emulated("gpu", "h100-sxm", ""),
        model("spender", &[("gpu", prices)])
    );
    let (url, _gw) = start(&text).await;
    let client = reqwest::Client::new();
    let ask = |secret: &'static str, stream: bool| {
        client
            .post(format!("{url}/chat/completions"))
            .bearer_auth(secret)
            .body(format!(
                r#"{{"model":"spender","messages":[{{"role":"user","content":"hi"}}],"max_tokens":20,"stream":{stream},"stream_options":{}}}"#,
                if stream { r#"{"include_usage":true}"# } else { "null" }
            ))
            .send()
    };
    let cost = |usage: &serde_json::Value| {
        let n = |f: &str| usage[f].as_f64().expect("count");
        n("prompt_tokens") * 0.5 + n("completion_tokens")
    };
    // A whole answer and a stream, each charged what its usage says at those prices.
    let r = ask("secret-rich", false).await.expect("sent");
    assert_eq!(r.status(), 200);
    let body: serde_json::Value =
        serde_json::from_str(&r.text().await.expect("body")).expect("json");
    let whole = cost(&body["usage"]);
    let r = ask("secret-rich", true).await.expect("sent");
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("stream");
    let usage = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .find(|c| c["usage"].is_object())
        .map(|c| c["usage"].clone())
        .expect("usage chunk");
    let streamed = cost(&usage);
    assert!(whole >= 20.0 && streamed >= 20.0, "{whole} {streamed}");
    let spent = metric(&url, r#"switchyard_key_spend_usd{key="rich"}"#).await;
    assert_eq!(spent, Some(whole + streamed));
    // A request that may cost more than the poor key's whole day ($30; 100 output tokens
    // at $1) is refused at once, with no wait that would admit it, and spends nothing.
    let r = client
        .post(format!("{url}/chat/completions"))
        .bearer_auth("secret-poor")
        .body(r#"{"model":"spender","messages":[{"role":"user","content":"hi"}],"max_tokens":100}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_none());
    let body: serde_json::Value =
        serde_json::from_str(&r.text().await.expect("body")).expect("json");
    assert_eq!(body["error"]["code"], "insufficient_quota", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Request too costly") && m.contains("$30 a day")),
        "{body}"
    );
    // The poor key's first request is admitted with its day's $30, the second with what is
    // left, and together they spend more than the day; then it is in debt, and refused
    // until a day's refill has paid back what it owes.
    let mut paid = 0.0;
    for _ in 0..2 {
        let r = ask("secret-poor", false).await.expect("sent");
        assert_eq!(r.status(), 200);
        let body: serde_json::Value =
            serde_json::from_str(&r.text().await.expect("body")).expect("json");
        paid += cost(&body["usage"]);
    }
    let owed = paid - 30.0;
    assert!(owed > 0.0, "{paid}");
    let (wait, body) = refused(ask("secret-poor", true).await.expect("sent")).await;
    assert_eq!(body["error"]["code"], "insufficient_quota", "{body}");
    assert_eq!(body["error"]["type"], "insufficient_quota", "{body}");
    // The refill is $30 a day, so the debt takes owed / 30 days (less the moments since).
    let days = wait as f64 / 86_400.0;
    assert!((days - owed / 30.0).abs() < 0.001, "{wait} s for ${owed}");
    // Every request at the deployment's prices, whichever key sent it.
    let deployment = metric(
        &url,
        r#"switchyard_spend_usd{model="spender",provider="gpu"}"#,
    )
    .await;
    assert_eq!(deployment, Some(whole + streamed + paid));
    // Refused for its dollars, not its rate.
    for (outcome, n) in [("insufficient_quota", 2.0), ("rate_limited", 0.0)] {
        let line = format!(r#"switchyard_key_requests_total{{key="poor",outcome="{outcome}"}}"#);
        assert_eq!(metric(&url, &line).await, Some(n), "{outcome}");
    }
}

/// A key's dollars are held while its requests run, as its tokens are: of five requests at
/// once that each may cost $24 (20 output tokens at $1, a prompt at $0.50 a token), a key of
/// $30 a day admits two, the second taking it into debt, and refuses the rest at once.
/// A whole answer cut off by the request's `total_ms`, and one whose client leaves, are
/// charged their prompt (and what was made by then, where the gateway saw it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_dollars_are_held_while_it_runs_and_cut_off_answers_are_charged() {
    std::env::set_var("SWITCHYARD_TEST_KEY_HELD", "secret-held");
    std::env::set_var("SWITCHYARD_TEST_KEY_LATE", "secret-late");
    let prices = "usd_per_mtok = 1000000\ninput_usd_per_mtok = 500000";
    let keys = "[[key]]\nname = \"held\"\nkey_env = \"SWITCHYARD_TEST_KEY_HELD\"\nusd_per_day = 30\n\
                [[key]]\nname = \"late\"\nkey_env = \"SWITCHYARD_TEST_KEY_LATE\"\nusd_per_day = 1000000\n";
    let text = format!(
        "[timeouts]\ntotal_ms = 400\n{}{}{keys}",
        emulated("gpu", "h100-sxm", ""),
        model("holder", &[("gpu", prices)])
    );
    let (url, _gw) = start(&text).await;
    let client = reqwest::Client::new();
    let ask = |secret: &'static str, max_tokens: u32| {
        client
            .post(format!("{url}/chat/completions"))
            .bearer_auth(secret)
            .body(format!(
                r#"{{"model":"holder","messages":[{{"role":"user","content":"hi"}}],"max_tokens":{max_tokens}}}"#
            ))
            .send()
    };
    let statuses: Vec<u16> = futures_util::future::join_all((0..5).map(|_| ask("secret-held", 20)))
        .await
        .into_iter()
        .map(|r| r.expect("sent").status().as_u16())
        .collect();
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    assert_eq!(ok, 2, "{statuses:?}");
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 429),
        "{statuses:?}"
    );
    // An answer of 4,000 tokens cannot come whole within 400 ms: a 504, charged its prompt
    // and the tokens decoded by then.
    let r = ask("secret-late", 4000).await.expect("sent");
    assert_eq!(r.status(), 504);
    let late = metric(&url, r#"switchyard_key_spend_usd{key="late"}"#)
        .await
        .expect("charged");
    assert!(late > 20.0, "{late}");
    // A client that leaves before its answer is whole is charged its prompt and the tokens
    // made by then.
    let made = r#"switchyard_key_tokens_total{key="late",type="output"}"#;
    let made_before = metric(&url, made).await.expect("counted");
    let gone = tokio::time::timeout(Duration::from_millis(100), ask("secret-late", 4000)).await;
    assert!(gone.is_err(), "the answer came in 100 ms");
    let mut after = late;
    for _ in 0..100 {
        after = metric(&url, r#"switchyard_key_spend_usd{key="late"}"#)
            .await
            .expect("charged");
        if after > late {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let made = metric(&url, made).await.expect("counted") - made_before;
    assert!(made > 0.0 && made < 4000.0, "{made}");
    let prompt = after - late - made;
    assert!(
        prompt > 0.0 && prompt < 20.0,
        "{late} then {after}, {made} made"
    );
}

/// A whole answer an OpenAI-compatible upstream does not give within the request's
/// `total_ms` is charged its prompt: the upstream worked on it, and bills for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstreams_unanswered_prompt_is_charged() {
    use axum::routing::post;
    std::env::set_var("SWITCHYARD_TEST_KEY_SLOW", "secret-slow");
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(|| async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            "{}"
        }),
    );
    let up = serve_upstream(app).await;
    let text = format!(
        "[timeouts]\ntotal_ms = 300\n[[provider]]\nname = \"slow\"\nkind = \"openai\"\nbase_url = \"{up}\"\n\
         [[model]]\nname = \"m\"\n[[model.deployment]]\nprovider = \"slow\"\nusd_per_mtok = 1000\ninput_usd_per_mtok = 1000000\n\
         [[key]]\nname = \"slowpoke\"\nkey_env = \"SWITCHYARD_TEST_KEY_SLOW\"\nusd_per_day = 1000\n"
    );
    let (url, _gw) = start(&text).await;
    let r = reqwest::Client::new()
        .post(format!("{url}/chat/completions"))
        .bearer_auth("secret-slow")
        .body(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 504);
    let prompt = metric(
        &url,
        r#"switchyard_key_tokens_total{key="slowpoke",type="input"}"#,
    )
    .await
    .expect("counted");
    let spent = metric(&url, r#"switchyard_key_spend_usd{key="slowpoke"}"#)
        .await
        .expect("charged");
    assert!(
        prompt > 0.0 && (spent - prompt).abs() < 1e-9,
        "{prompt} {spent}"
    );
}

/// A stream from a provider that sends no usage, several tokens to a chunk, is counted at
/// four characters a token, not a token a chunk; one whose usage says it found prompt tokens
/// cached is charged those at the cached price, and the metrics count them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_without_usage_count_their_text_and_cached_prompts_cost_less() {
    use axum::response::IntoResponse;
    use axum::routing::post;
    std::env::set_var("SWITCHYARD_TEST_KEY_TEXT", "secret-text");
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(|body: String| async move {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
                format!(
                    "data: {}\n\n",
                    serde_json::json!({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "up",
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
                )
            };
            // Ten chunks of 40 characters: 100 tokens at four characters a token.
            let mut out = String::new();
            for _ in 0..10 {
                out += &chunk(serde_json::json!({"content": "x".repeat(40)}), serde_json::Value::Null);
            }
            out += &chunk(serde_json::json!({}), serde_json::json!("stop"));
            if v["stream_options"]["include_usage"] == true {
                out += &format!(
                    "data: {}\n\n",
                    serde_json::json!({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "up", "choices": [],
                        "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100,
                                  "prompt_tokens_details": {"cached_tokens": 800}}})
                );
            }
            out += "data: [DONE]\n\n";
            ([("content-type", "text/event-stream")], out).into_response()
        }),
    );
    let up = serve_upstream(app).await;
    // A dollar a thousand prompt tokens, a tenth of that cached, a dollar a thousand output.
    let deployment =
        "usd_per_mtok = 1000\ninput_usd_per_mtok = 1000\ncached_input_usd_per_mtok = 100\n";
    let text = format!(
        "[[provider]]\nname = \"silent\"\nkind = \"openai\"\nbase_url = \"{up}\"\nstream_usage = false\n\
         [[provider]]\nname = \"telling\"\nkind = \"openai\"\nbase_url = \"{up}\"\n\
         [[model]]\nname = \"silent-m\"\n[[model.deployment]]\nprovider = \"silent\"\n{deployment}\
         [[model]]\nname = \"telling-m\"\n[[model.deployment]]\nprovider = \"telling\"\n{deployment}\
         [[key]]\nname = \"texts\"\nkey_env = \"SWITCHYARD_TEST_KEY_TEXT\"\nusd_per_day = 1000\n"
    );
    let (url, _gw) = start(&text).await;
    for m in ["silent-m", "telling-m"] {
        let r = reqwest::Client::new()
            .post(format!("{url}/chat/completions"))
            .bearer_auth("secret-text")
            .body(format!(
                r#"{{"model":"{m}","messages":[{{"role":"user","content":"hi"}}],"stream":true}}"#
            ))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status(), 200);
        assert!(r.text().await.expect("stream").contains("[DONE]"));
    }
    let out = metric(
        &url,
        r#"switchyard_tokens_total{model="silent-m",provider="silent",type="output"}"#,
    )
    .await;
    assert_eq!(out, Some(100.0));
    // 200 prompt tokens at $0.001, 800 cached at $0.0001 and 100 output at $0.001.
    let spent = metric(
        &url,
        r#"switchyard_spend_usd{model="telling-m",provider="telling"}"#,
    )
    .await
    .expect("priced");
    assert!((spent - 0.38).abs() < 1e-9, "{spent}");
    let cached = metric(
        &url,
        r#"switchyard_tokens_total{model="telling-m",provider="telling",type="cached"}"#,
    )
    .await;
    assert_eq!(cached, Some(800.0));
}

/// A key with dollars to spend must find a price at every deployment it may reach; an
/// emulated pool's own cost is one, where its system has a price.
#[test]
fn a_key_with_dollars_needs_a_price_wherever_it_may_go() {
    let (cat, params) = statics();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _g = rt.enter();
    std::env::set_var("SWITCHYARD_TEST_KEY_D", "secret-d");
    let build = |text: &str| {
        let cfg = Config::parse(text, "g.toml").expect("parses");
        Gateway::new(&cfg, text, "g.toml", cat, params)
    };
    let key = "[[key]]\nname = \"k\"\nkey_env = \"SWITCHYARD_TEST_KEY_D\"\nusd_per_day = 5\n";
    // No price for a CS-3 is public: its pool has none, and the key is refused at the line
    // of its dollars, naming the deployment.
    let wafer = format!(
        "{}{}{}{key}",
        emulated("wafer", "cs3", ""),
        emulated("gpu", "h100-sxm", ""),
        model("m", &[("gpu", ""), ("wafer", "")])
    );
    let e = build(&wafer).expect_err("refused").to_string();
    for n in [
        "g.toml",
        "line 29",
        "usd_per_day",
        "model `m` on provider `wafer`",
        "usd_per_mtok",
    ] {
        assert!(e.contains(n), "`{n}` missing from {e}");
    }
    // Priced there, or left out of the key's models, it is served.
    build(&wafer.replace(
        "provider = \"wafer\"\nupstream_model = \"llama-3.1-8b\"\n",
        "provider = \"wafer\"\nupstream_model = \"llama-3.1-8b\"\nusd_per_mtok = 0.6\n",
    ))
    .expect("priced");
    let gpu_only = format!(
        "{}{}{}{}",
        emulated("wafer", "cs3", ""),
        emulated("gpu", "h100-sxm", ""),
        model("m", &[("gpu", "")]),
        model("w", &[("wafer", "")])
    );
    build(&format!(
        "{gpu_only}{}",
        key.replace("usd_per_day", "models = [\"m\"]\nusd_per_day")
    ))
    .expect("the key cannot reach the wafer");
    // An H100 pool's own cost is its price.
    let r = build(&format!("{gpu_only}{key}"))
        .map(|_| ())
        .expect_err("refused")
        .to_string();
    assert!(r.contains("model `w` on provider `wafer`"), "{r}");
    // Dollars from a cent to a trillion a day.
    for bad in ["0", "0.001", "-1", "nan", "inf", "1e13"] {
        let text = format!(
            "{}{}{}",
            emulated("gpu", "h100-sxm", ""),
            model("m", &[("gpu", "")]),
            key.replace("usd_per_day = 5", &format!("usd_per_day = {bad}"))
        );
        let e = build(&text).map(|_| ()).expect_err("refused").to_string();
        assert!(
            e.contains("usd_per_day") && e.contains("from 0.01"),
            "{bad}: {e}"
        );
    }
    // A cached price needs the input price it is apart from, and is no more than it; no
    // price is past a dollar a token.
    for (prices, needle) in [
        (
            "cached_input_usd_per_mtok = 1",
            "give input_usd_per_mtok too",
        ),
        (
            "input_usd_per_mtok = 1\ncached_input_usd_per_mtok = 5",
            "at most input_usd_per_mtok (1)",
        ),
        ("usd_per_mtok = 1e308", "at most 1000000"),
    ] {
        let text = format!(
            "{}{}",
            emulated("gpu", "h100-sxm", ""),
            model("m", &[("gpu", prices)])
        );
        let e = match Config::parse(&text, "g.toml") {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{prices}: accepted"),
        };
        assert!(e.contains(needle), "{prices}: {e}");
    }
}

#[test]
fn a_key_without_its_secret_or_with_a_bad_rate_names_the_line_and_field() {
    let (cat, params) = statics();
    let base = format!(
        "{}{}",
        emulated("gpu", "h100-sxm", ""),
        model("m", &[("gpu", "")])
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _g = rt.enter();
    let check = |keys: &str, needles: &[&str]| {
        let text = format!("{base}{keys}");
        let cfg = Config::parse(&text, "g.toml").expect("parses");
        let e = Gateway::new(&cfg, &text, "g.toml", cat, params)
            .expect_err("refused")
            .to_string();
        for n in needles {
            assert!(e.contains(n), "`{n}` missing from {e}");
        }
    };
    check(
        "[[key]]\nname = \"k\"\nkey_env = \"SWITCHYARD_TEST_UNSET_VARIABLE\"\n",
        &[
            "g.toml",
            "line 17",
            "key_env",
            "SWITCHYARD_TEST_UNSET_VARIABLE",
        ],
    );
    std::env::set_var("SWITCHYARD_TEST_KEY_EMPTY", " ");
    check(
        "[[key]]\nname = \"k\"\nkey_env = \"SWITCHYARD_TEST_KEY_EMPTY\"\n",
        &["line 17", "key_env", "is set but empty"],
    );
    std::env::set_var("SWITCHYARD_TEST_KEY_C", "secret-c");
    check(
        "[[key]]\nname = \"k\"\nkey_env = \"SWITCHYARD_TEST_KEY_C\"\nrequests_per_minute = 0\n",
        &["line 18", "requests_per_minute"],
    );
    check(
        "[[key]]\nname = \"k\"\nkey_env = \"SWITCHYARD_TEST_KEY_C\"\ntokens_per_minute = 0.5\n",
        &["line 18", "tokens_per_minute"],
    );
    check(
        "[[key]]\nname = \"k\"\nkey_env = \"SWITCHYARD_TEST_KEY_C\"\nmodels = [\"other\"]\n",
        &["line 18", "models", "other"],
    );
}

/// `/health` shows what the router expects of an emulated pool: its time per token idle and
/// at capacity, the requests it holds before they queue, whether its prompts run on a pool
/// of their own (whose first tokens do not wait for the requests decoding), and its price.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_shows_what_the_router_expects_of_an_emulated_pool() {
    let text = format!(
        "{}{}{}",
        emulated("agg", "h100-sxm", ""),
        emulated("split", "h100-sxm", "").replace("chips = 1", "chips = 1\nprefill_replicas = 1"),
        model("m", &[("agg", ""), ("split", "")])
    );
    let (url, _gw) = start(&text).await;
    let h = health(&url).await;
    for (k, split) in [(0, false), (1, true)] {
        let d = &h["models"]["m"][k];
        assert_eq!(d["disaggregated"], split, "{d}");
        let (idle, full) = (
            d["tpot_ms"].as_f64().expect("tpot"),
            d["tpot_full_ms"].as_f64().expect("tpot at capacity"),
        );
        assert!(idle > 0.0 && full > 2.0 * idle, "{d}");
        assert!(d["capacity"].as_f64().expect("capacity") > 1.0, "{d}");
        // Its own cost, from the H100's rent at the pool's peak, a few cents to a few
        // dollars a million output tokens for an 8B model, and
        // its prompts' share of it by the prompt token, and nothing for those its engines
        // find cached, which cost them no work.
        let usd = d["usd_per_mtok"].as_f64().expect("priced");
        assert!((0.01..5.0).contains(&usd), "{d}");
        let input = d["input_usd_per_mtok"].as_f64().expect("prompts priced");
        assert!(input > 0.0, "{d}");
        assert_eq!(d["cached_input_usd_per_mtok"], 0.0, "{d}");
    }
}

/// A conversation's second turn, sent to an emulated pool of two engines, goes to the engine
/// that served its first and finds the first turn's text in its prefix cache, which `/health`
/// counts; a request whose text shares nothing finds nothing, and a provider with
/// `prefix_caching = false` finds nothing at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emulated_pool_serves_a_conversations_earlier_turns_from_its_prefix_cache() {
    for caching in [true, false] {
        let text = format!(
            "{}{}",
            emulated("gpu", "h100-sxm", "").replace(
                "chips = 1",
                &format!("chips = 1\nreplicas = 2\nprefix_caching = {caching}")
            ),
            model("m", &[("gpu", "")])
        );
        let (url, _gw) = start(&text).await;
        let client = reqwest::Client::new();
        let system =
            serde_json::json!({"role": "system", "content": "Answer briefly. ".repeat(300)});
        let user = |s: &str| serde_json::json!({"role": "user", "content": s});
        let send = |messages: Vec<serde_json::Value>| {
            let client = client.clone();
            let url = url.clone();
            async move {
                let body = serde_json::json!({"model": "m", "max_tokens": 2, "messages": messages});
                let r = client
                    .post(format!("{url}/chat/completions"))
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .expect("sent");
                assert_eq!(r.status(), 200);
                let v: serde_json::Value =
                    serde_json::from_str(&r.text().await.expect("body")).expect("json");
                v["usage"]["prompt_tokens_details"]["cached_tokens"]
                    .as_u64()
                    .expect("cached tokens in the usage")
            }
        };
        let tokens = |h: &serde_json::Value| {
            let d = &h["models"]["m"][0];
            (
                d["prompt_tokens_cached"].as_u64().expect("cached"),
                d["prompt_tokens_prefilled"].as_u64().expect("prefilled"),
            )
        };
        assert_eq!(
            send(vec![user(&"Something else entirely. ".repeat(300))]).await,
            0
        );
        assert_eq!(tokens(&health(&url).await).0, 0);
        assert_eq!(
            send(vec![system.clone(), user("What is a wafer?")]).await,
            0
        );
        assert_eq!(tokens(&health(&url).await).0, 0);
        let told = send(vec![
            system,
            user("What is a wafer?"),
            serde_json::json!({"role": "assistant", "content": "A disc of silicon."}),
            user("And a reticle?"),
        ])
        .await;
        // The first turn's 4,800 characters of system prompt are 1,200 tokens or so, found
        // at what its text's blocks are of the counted tokens; the answer's usage tells the
        // client as many as /health counts.
        let (cached, prefilled) = tokens(&health(&url).await);
        assert_eq!(told, cached);
        if caching {
            assert!(cached >= 1_000, "cached {cached}, prefilled {prefilled}");
            let counted = metric(
                &url,
                r#"switchyard_tokens_total{model="m",provider="gpu",type="cached"}"#,
            )
            .await;
            assert_eq!(counted, Some(cached as f64));
        } else {
            assert_eq!(cached, 0, "prefilled {prefilled}");
        }
    }
    // Only an emulated provider has engines to cache in.
    let text = format!(
        "[[provider]]\nname = \"up\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nprefix_caching = false\n{}",
        model("m", &[("up", "")])
    );
    let e = Config::parse(&text, "g.toml")
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("prefix_caching") && e.contains("emulated"),
        "{e}"
    );
}

/// A server's chips that a small model's best layout splits into several replicas all serve:
/// each runs as an engine of its own, and `/health` says how many and of which layout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chips_a_layout_splits_run_as_several_engines() {
    let text = format!(
        "{}{}{}{}",
        emulated("gpu", "h100-sxm", "").replace("chips = 1", "chips = 16\nreplicas = 2"),
        emulated("few", "h200", "").replace("chips = 1", "replicas = 3"),
        model("m", &[("gpu", "")]),
        model("n", &[("few", "")])
    );
    let (url, _gw) = start(&text).await;
    let h = health(&url).await;
    // Without `chips`, each replica is one engine.
    let few = &h["models"]["n"][0];
    assert_eq!(few["engines"], 3, "{few}");
    let dep = &h["models"]["m"][0];
    let engines = dep["engines"].as_u64().expect("engines");
    let layout: switchyard_perf::Layout = dep["layout"]
        .as_str()
        .expect("layout")
        .parse()
        .expect("a layout");
    assert_eq!(layout.dp, 1, "{dep}");
    assert!(engines > 2, "16 chips of an 8B model split: {dep}");
    assert_eq!(engines * u64::from(layout.chips()), 2 * 16, "{dep}");
    // The router expects prompts to drain at every engine's prefill rate together: three
    // H200 engines prefill three times what one does.
    let rate = |d: &serde_json::Value| d["prefill_tok_s"].as_f64().expect("a prefill rate");
    let one = format!(
        "{}{}",
        emulated("one", "h200", ""),
        model("n", &[("one", "")])
    );
    let (url1, _gw1) = start(&one).await;
    let single = rate(&health(&url1).await["models"]["n"][0]);
    assert!(single > 0.0);
    assert!((rate(few) / single - 3.0).abs() < 0.01, "{few}: {single}");
    // A layout given keeps the chips one replica: eight H200s as one tp8 engine.
    let whole = format!(
        "{}{}",
        emulated("wide", "h200", "").replace("chips = 1", "chips = 8\nlayout = \"tp8\""),
        model("w", &[("wide", "")])
    );
    let (url8, _gw8) = start(&whole).await;
    let dep = &health(&url8).await["models"]["w"][0];
    assert_eq!(
        (&dep["engines"], &dep["layout"]),
        (&serde_json::json!(1), &serde_json::json!("tp8-pp1")),
        "{dep}"
    );
}

/// Pools too large to run are refused with their field, not left to exhaust memory.
#[test]
fn emulated_pools_have_a_size_limit() {
    let (cat, params) = statics();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _g = rt.enter();
    let base = format!(
        "{}{}",
        emulated("gpu", "h200", ""),
        model("m", &[("gpu", "")])
    );
    let refuse = |text: &str, needles: &[&str]| {
        let e = match Config::parse(text, "g.toml") {
            Err(e) => e.to_string(),
            Ok(cfg) => Gateway::new(&cfg, text, "g.toml", cat, params)
                .expect_err("refused")
                .to_string(),
        };
        for n in needles {
            assert!(e.contains(n), "`{n}` missing from {e}");
        }
    };
    refuse(
        &base.replace("chips = 1", "chips = 60000\nreplicas = 1000"),
        &["field `chips`", "10000"],
    );
    refuse(&base.replace("chips = 1", "chips = 0"), &["field `chips`"]);
    refuse(
        &base.replace("chips = 1", "chips = 1\nreplicas = 20000"),
        &["field `replicas`", "10000"],
    );
    // So is a prefill pool whose chips the layout splits into many engines.
    refuse(
        &base.replace(
            "chips = 1",
            "chips = 1\nprefill_replicas = 10000\nprefill_chips = 72",
        ),
        &["field `prefill_chips`", "prefill engines", "10000"],
    );
    // A layout is one replica's split, and one the chips can host.
    refuse(
        &base.replace("chips = 1", "chips = 8\nlayout = \"tp2-dp4\""),
        &["line 6", "field `layout`", "`replicas = 4`"],
    );
    refuse(
        &base.replace("chips = 1", "layout = \"tp3\""),
        &["field `layout`"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_may_speak_http2_without_tls() {
    let text = format!(
        "{}{}",
        emulated("gpu", "h100-sxm", ""),
        model("m", &[("gpu", "")])
    );
    let (url, _gw) = start(&text).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    // Two streams on one connection, the second started while the first is under way.
    let ask = || {
        client
            .post(format!("{url}/chat/completions"))
            .body(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":4,"stream":true}"#)
            .send()
    };
    let (a, b) = tokio::join!(ask(), ask());
    for r in [a.expect("sent"), b.expect("sent")] {
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 200);
        assert!(r.text().await.expect("body").contains("[DONE]"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disaggregated_emulated_provider_prefills_then_decodes_elsewhere_at_the_predicted_pace() {
    let text = format!(
        "[[provider]]\nname = \"pd\"\nkind = \"emulated\"\nsystem = \"h100-sxm\"\nchips = 1\nprefill_replicas = 1\nprefill_chips = 1\n{}",
        model("m", &[("pd", "")])
    );
    let (url, _gw) = start(&text).await;
    let (_, p) = statics();
    let d = one_h100_8b();
    let n = 40u32;
    let (times, done) = token_times(&url, n).await;
    // Every token arrives, the first from the prefill replica and the rest from a decode
    // replica, at the pace of decode steps that carry no prompt.
    assert!(done);
    assert_eq!(times.len(), n as usize);
    let predicted: f64 = (1..n)
        .map(|k| d.decode_step(p, 1.0, 4.0 + f64::from(k)).time)
        .sum();
    let measured = times[times.len() - 1] - times[0];
    assert!(
        (measured - predicted).abs() / predicted < 0.2,
        "decode took {measured:.4} s, predicted {predicted:.4} s"
    );
}

/// POSTs `body` to `path` and returns the status and the JSON answer.
/// A chat request's status and JSON answer.
async fn chat_json(url: &str, body: &str) -> (u16, serde_json::Value) {
    post_json(url, "/chat/completions", body).await
}

async fn post_json(url: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("sent");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// A request longer than any deployment holds is the client's error, answered at once
/// with OpenAI's `context_length_exceeded`, and counts against no provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_context_are_refused_without_blaming_a_provider() {
    let text = format!(
        "{}{}",
        emulated("gpu", "h200", ""),
        model("m", &[("gpu", "")])
    );
    let (url, _gw) = start(&text).await;
    // llama-3.1-8b accepts 131,072 tokens; 600,000 characters are about 150,000.
    let long = "x".repeat(600_000);
    for _ in 0..4 {
        let (status, body) = chat_json(
            &url,
            &format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{long}"}}]}}"#),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "context_length_exceeded", "{body}");
        assert_eq!(body["error"]["param"], "messages", "{body}");
    }
    // The output's field is named as the client spelled it.
    for field in ["max_tokens", "max_completion_tokens"] {
        let (status, body) = chat_json(
            &url,
            &format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"{field}":2000000}}"#
            ),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["param"], field, "{body}");
    }
    let h = health(&url).await;
    assert_eq!(h["models"]["m"][0]["failures"], 0, "{h}");
    assert_eq!(h["models"]["m"][0]["ejected"], false, "{h}");
    // The limit is that of the deployments that take the request's class: a long context
    // elsewhere, for another class, does not make it a failure to retry.
    let text = format!(
        "{}{}{}",
        emulated("gpu", "h200", ""),
        emulated("small", "h200", ""),
        model(
            "m",
            &[
                ("gpu", "classes = [\"interactive\"]"),
                ("small", "max_context = 1000")
            ]
        )
    );
    let (url, _gw) = start(&text).await;
    let (status, body) = chat_json(
        &url,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5000}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "context_length_exceeded", "{body}");
    // The message counts the prompt and the output asked for apart, as vLLM's does.
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(
            "here is 1000 tokens; the request needs 5006 (6 in `messages`, 5000 in `max_tokens`)"
        ),
        "{body}"
    );
    // An answer with no `max_tokens` stops where a deployment's `max_context` ends, not
    // where its engine's KV cache would.
    let text = format!(
        "{}{}",
        emulated("gpu", "h200", ""),
        model("m", &[("gpu", "max_context = 10")])
    );
    let (url, _gw) = start(&text).await;
    for path in ["/chat/completions", "/completions"] {
        let body = if path == "/completions" {
            r#"{"model":"m","prompt":"hi"}"#
        } else {
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#
        };
        let (status, v) = post_json(&url, path, body).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["usage"]["total_tokens"], 10, "{v}");
        assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
    }
}

/// Request bodies are checked as OpenAI checks them, and a prompt of token ids counts a
/// token an id.
#[test]
fn request_fields_are_checked_and_token_ids_counted() {
    use switchyard_gateway::api::{parse, Endpoint};
    let chat = |extra: &str, message: &str| {
        parse(
            Endpoint::Chat,
            format!(r#"{{"model":"m","messages":[{message}]{extra}}}"#).as_bytes(),
        )
    };
    let ok = r#"{"role":"user","content":"hi"}"#;
    chat("", ok).expect("a plain message");
    chat("", r#"{"role":"assistant","content":null,"tool_calls":[]}"#).expect("tool calls");
    for image in [r#"{"url":"data:,"}"#, r#""https://example.com/a.png""#] {
        chat(
            "",
            &format!(r#"{{"role":"user","content":[{{"type":"image_url","image_url":{image}}}]}}"#),
        )
        .expect("an image part, as OpenAI or as vLLM takes it");
    }
    for (extra, message, param) in [
        (
            "",
            r#"{"role":"wizard","content":"hi"}"#,
            "messages[0].role",
        ),
        ("", r#"{"role":"user","content":42}"#, "messages[0].content"),
        ("", r#"{"role":"user"}"#, "messages[0].content"),
        ("", r#""hi""#, "messages[0]"),
        (r#","temperature":"hot""#, ok, "temperature"),
        ("", r#"{"role":"assistant"}"#, "messages[0].content"),
        (
            "",
            r#"{"role":"tool","content":"x"}"#,
            "messages[0].tool_call_id",
        ),
        ("", r#"{"role":"user","content":[]}"#, "messages[0].content"),
        (
            "",
            r#"{"role":"user","content":[5]}"#,
            "messages[0].content[0]",
        ),
        (
            "",
            r#"{"role":"user","content":[{"type":"text"}]}"#,
            "messages[0].content[0].text",
        ),
        (
            "",
            r#"{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{}}]}"#,
            "messages[0].content[1].image_url.url",
        ),
        (
            "",
            r#"{"role":"user","content":[{"type":"image_url"}]}"#,
            "messages[0].content[0].image_url.url",
        ),
        (
            "",
            r#"{"role":"user","content":"hi","name":5}"#,
            "messages[0].name",
        ),
        (r#","seed":"x""#, ok, "seed"),
        (r#","user":5"#, ok, "user"),
        (r#","parallel_tool_calls":"x""#, ok, "parallel_tool_calls"),
        (r#","logit_bias":{"abc":1}"#, ok, "logit_bias"),
        (r#","tool_choice":"auto""#, ok, "tool_choice"),
    ] {
        let e = chat(extra, message).expect_err("refused");
        assert_eq!(e.status, 400);
        assert_eq!(e.param.as_deref(), Some(param), "{}", e.message);
    }
    let completion = |prompt: &str| {
        parse(
            Endpoint::Completions,
            format!(r#"{{"model":"m","prompt":{prompt}}}"#).as_bytes(),
        )
    };
    // An image counts as OpenAI counts a high-detail one, not as its base64 text.
    let data = "A".repeat(3_000_000);
    let image = chat(
        "",
        &format!(
            r#"{{"role":"user","content":[{{"type":"text","text":"what is this?"}},{{"type":"image_url","image_url":{{"url":"data:image/png;base64,{data}"}}}}]}}"#
        ),
    )
    .expect("an image part");
    assert!(
        (765..800).contains(&image.prompt_tokens),
        "{}",
        image.prompt_tokens
    );
    // A text part counts as the same text given as a string.
    let as_part = chat(
        "",
        r#"{"role":"user","content":[{"type":"text","text":"what is this? it is the same"}]}"#,
    )
    .expect("a text part");
    let as_string = chat(
        "",
        r#"{"role":"user","content":"what is this? it is the same"}"#,
    )
    .expect("a string");
    assert_eq!(as_part.prompt_tokens, as_string.prompt_tokens);
    // Tool schemas are prompt the model reads: 40,000 characters of them count as about
    // 10,000 tokens, not as nothing.
    let plain = chat("", r#"{"role":"user","content":"hi"}"#).expect("plain");
    let described = "d".repeat(40_000);
    let tooled = chat(
        &format!(
            r#","tools":[{{"type":"function","function":{{"name":"f","description":"{described}","parameters":{{"type":"object"}}}}}}]"#
        ),
        r#"{"role":"user","content":"hi"}"#,
    )
    .expect("a request with tools");
    let added = tooled.prompt_tokens - plain.prompt_tokens;
    assert!((10_000..10_100).contains(&added), "{added}");
    let ids: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
    let one = completion(&format!("[{}]", ids.join(","))).expect("token ids");
    assert_eq!((one.prompts, one.prompt_tokens), (1, 1000));
    let two = completion("[[1,2,3],[4,5,6,7]]").expect("a batch of ids");
    assert_eq!((two.prompts, two.prompt_tokens), (2, 7));
    // What a request may spend: each prompt's answers, `best_of` of them where more, and a
    // count too large for a u64 held at its most, not wrapped to a small one.
    let asks = |extra: &str| {
        parse(
            Endpoint::Completions,
            format!(r#"{{"model":"m","prompt":[[1],[2],[3],[4]]{extra}}}"#).as_bytes(),
        )
        .expect("parses")
        .tokens_asked()
    };
    assert_eq!(asks(r#","max_tokens":10,"n":2"#), 4 + 4 * 2 * 10);
    assert_eq!(asks(r#","max_tokens":10,"best_of":3"#), 4 + 4 * 3 * 10);
    assert_eq!(asks(r#","max_tokens":2147483648,"n":2147483648"#), u64::MAX);
    let texts = completion(r#"["abcdefgh","abcd"]"#).expect("a batch of texts");
    assert_eq!((texts.prompts, texts.prompt_tokens), (2, 3));
    // Four Latin characters a token; two of another alphabet; one CJK character or emoji.
    for (text, tokens) in [
        ("abcdefgh", 2),
        ("café crème", 3),
        ("привет мир", 5),
        ("今天天气很好", 6),
        ("😀😀😀", 3),
    ] {
        let t = completion(&format!("\"{text}\"")).expect("a prompt");
        assert_eq!(t.prompt_tokens, tokens, "{text}");
    }
    for bad in ["[]", "[1,\"a\"]", "[[]]", "{}", "7"] {
        let e = completion(bad).expect_err(bad);
        assert_eq!(e.param.as_deref(), Some("prompt"), "{bad}");
    }
}

/// An emulated provider answers one prompt a request: a batch is refused as `n` > 1 is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emulated_provider_refuses_a_batch_of_prompts() {
    let text = format!(
        "{}{}",
        emulated("gpu", "h100-sxm", ""),
        model("m", &[("gpu", "")])
    );
    let (url, _gw) = start(&text).await;
    let (status, body) = post_json(
        &url,
        "/completions",
        r#"{"model":"m","prompt":["a","b"],"max_tokens":2}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "prompt", "{body}");
}

/// A known path asked with the wrong method answers 405 with OpenAI's error object and the
/// methods it takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_method_gets_an_error_object() {
    let text = format!(
        "{}{}",
        emulated("gpu", "h100-sxm", ""),
        model("m", &[("gpu", "")])
    );
    let (url, _gw) = start(&text).await;
    let client = reqwest::Client::new();
    for (method, path, allow) in [
        (reqwest::Method::GET, "/chat/completions", "POST"),
        (reqwest::Method::DELETE, "/models", "GET"),
    ] {
        let r = client
            .request(method, format!("{url}{path}"))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status(), 405);
        let allowed = r
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(allowed.contains(allow), "{allowed}");
        let body: serde_json::Value =
            serde_json::from_str(&r.text().await.expect("body")).expect("json");
        assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
    }
    // The same endpoints answer without `/v1`, for clients whose base URL is the root.
    let root = url.trim_end_matches("/v1");
    assert_ne!(root, url);
    let (status, body) = chat_json(
        root,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let text = client
        .get(format!("{root}/models/m"))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("body");
    let models: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(models["id"], "m", "{models}");
}

/// A gateway of one emulated H100 with `timeouts` (lines of `[timeouts]`), and a bare TCP
/// connection to it: its stream, its address, and the gateway.
async fn raw_connection(timeouts: &str) -> (tokio::net::TcpStream, String, Arc<Gateway>) {
    let text = format!(
        "[timeouts]\n{timeouts}\n{}{}",
        emulated("gpu", "h100-sxm", ""),
        model("m", &[("gpu", "")])
    );
    let (url, gw) = start(&text).await;
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .to_string();
    let s = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    (s, addr, gw)
}

/// A client that stalls halfway through its request body is answered 408 once the body's
/// time is up, rather than holding its connection open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_times_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut s, addr, _gw) = raw_connection("body_ms = 200").await;
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"model\":",
    )
    .await
    .expect("write");
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut answer))
        .await
        .expect("answered before the test's own limit")
        .expect("read");
    let head = String::from_utf8_lossy(&answer[..n]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(head.contains("request_timeout"), "{head}");
    // A chunked body with a chunk size that is no number is broken, not too large.
    let mut s = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
    )
    .await
    .expect("write");
    let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut answer))
        .await
        .expect("answered before the test's own limit")
        .expect("read");
    let head = String::from_utf8_lossy(&answer[..n]);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(head.contains("invalid_request_error"), "{head}");
}

/// A prompt of `n` token ids for `/completions`.
fn ids(n: u32) -> String {
    let v: Vec<String> = (0..n).map(|i| (i % 1000).to_string()).collect();
    format!("[{}]", v.join(","))
}

/// A request that one deployment's KV cache cannot hold goes to another without blaming the
/// first, and a request that sets no limit writes what its context leaves, as vLLM does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_too_long_for_one_deployment_goes_to_another() {
    let text = "[[provider]]\nname = \"wafer\"\nkind = \"emulated\"\nsystem = \"cs3\"\n\
        [[provider]]\nname = \"gpu\"\nkind = \"emulated\"\nsystem = \"h200\"\n\
        [[model]]\nname = \"m\"\npolicy = \"priority\"\n\
        [[model.deployment]]\nprovider = \"wafer\"\nupstream_model = \"llama-3.1-70b\"\npriority = 0\n\
        [[model.deployment]]\nprovider = \"gpu\"\nupstream_model = \"llama-3.1-70b\"\npriority = 1\n";
    let (url, _gw) = start(text).await;
    let h = health(&url).await;
    let wafer = h["models"]["m"][0]["longest_request"]
        .as_u64()
        .expect("longest") as u32;
    let gpu = h["models"]["m"][1]["longest_request"]
        .as_u64()
        .expect("longest") as u32;
    assert!(wafer + 1000 < gpu, "{h}");
    // No limit: the wafer writes the 10 tokens its cache leaves, and says the output ended
    // for its length.
    let (status, body) = post_json(
        &url,
        "/completions",
        &format!(r#"{{"model":"m","prompt":{}}}"#, ids(wafer - 10)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 10, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "length", "{body}");
    // A limit the wafer cannot hold: the GPU serves it.
    let (status, body) = post_json(
        &url,
        "/completions",
        &format!(
            r#"{{"model":"m","prompt":{},"max_tokens":100}}"#,
            ids(wafer - 10)
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 100, "{body}");
    let h = health(&url).await;
    let deps = &h["models"]["m"];
    assert_eq!(deps[0]["failures"], 0, "{h}");
    assert_eq!(deps[0]["ejected"], false, "{h}");
    assert_eq!(deps[1]["requests"], 1, "{h}");
    // Completions without a limit write OpenAI's default of 16.
    let (_, body) = post_json(&url, "/completions", r#"{"model":"m","prompt":"hi"}"#).await;
    assert_eq!(body["usage"]["completion_tokens"], 16, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "length", "{body}");
}

/// Text of a chat answer, streamed or whole, with its finish reason and usage.
async fn chat_text(url: &str, extra: &str, stream: bool) -> (String, String, u64) {
    let options = if stream {
        r#","stream_options":{"include_usage":true}"#
    } else {
        ""
    };
    let body = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"stream":{stream}{options}{extra}}}"#
    );
    if !stream {
        let (status, v) = chat_json(url, &body).await;
        assert_eq!(status, 200, "{v}");
        return (
            v["choices"][0]["message"]["content"]
                .as_str()
                .expect("text")
                .to_string(),
            v["choices"][0]["finish_reason"]
                .as_str()
                .expect("finish")
                .to_string(),
            v["usage"]["completion_tokens"].as_u64().expect("usage"),
        );
    }
    let r = reqwest::Client::new()
        .post(format!("{url}/chat/completions"))
        .body(body)
        .send()
        .await
        .expect("sent");
    let (mut text, mut finish, mut used) = (String::new(), String::new(), 0);
    let mut reader = SseReader::default();
    let mut bytes = r.bytes_stream();
    while let Some(Ok(chunk)) = bytes.next().await {
        for p in reader.feed(&chunk) {
            if p.as_ref() == b"[DONE]" {
                continue;
            }
            let v: serde_json::Value = serde_json::from_slice(&p).expect("json");
            if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
                text.push_str(c);
            }
            if let Some(f) = v["choices"][0]["finish_reason"].as_str() {
                finish = f.to_string();
            }
            if let Some(u) = v["usage"]["completion_tokens"].as_u64() {
                used = u;
            }
        }
    }
    (text, finish, used)
}

/// An emulated provider stops where a stop sequence begins, streamed or not, having written
/// the tokens up to the one that completes it; a feature only a model can give is refused,
/// and out-of-range sampling values are refused for every provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulated_answers_honour_stop_and_refuse_what_needs_a_model() {
    let text = format!(
        "{}{}",
        emulated("gpu", "h100-sxm", ""),
        model("m", &[("gpu", "")])
    );
    let (url, _gw) = start(&text).await;
    for stream in [false, true] {
        let (text, finish, used) = chat_text(
            &url,
            r#","stop":["nothing here","output"],"max_tokens":50"#,
            stream,
        )
        .await;
        assert_eq!(text, "This is emulated ", "stream {stream}");
        assert_eq!(finish, "stop", "stream {stream}");
        assert_eq!(used, 4, "stream {stream}");
        let (text, finish, used) = chat_text(&url, r#","max_tokens":3"#, stream).await;
        assert_eq!(text, "This is emulated ", "stream {stream}");
        assert_eq!((finish.as_str(), used), ("length", 3), "stream {stream}");
    }
    for (extra, param) in [
        (r#","logprobs":true"#, "logprobs"),
        (
            r#","response_format":{"type":"json_object"}"#,
            "response_format",
        ),
        (r#","tools":[],"tool_choice":"required""#, "tools"),
        (r#","tool_choice":"required""#, "tool_choice"),
        (
            r#","functions":[{"name":"f","parameters":{}}],"function_call":{"name":"f"}"#,
            "function_call",
        ),
        (r#","stop":["a","b","c","d","e"]"#, "stop"),
        (r#","temperature":5"#, "temperature"),
        (r#","stop":5"#, "stop"),
        (r#","tools":"x""#, "tools"),
        (r#","tools":[{"type":"function"}]"#, "tools[0].function"),
        (
            r#","tools":[{"type":"function","function":{"name":"f"}},{"type":"web"}]"#,
            "tools[1].type",
        ),
        (
            r#","tools":[{"type":"function","function":{"parameters":{}}}]"#,
            "tools[0].function.name",
        ),
        (r#","tools":[1]"#, "tools[0]"),
        (
            r#","tools":[{"type":"function","function":{"name":"f","parameters":"x"}}]"#,
            "tools[0].function.parameters",
        ),
        (
            r#","tools":[{"type":"function","function":{"name":"get weather!"}}]"#,
            "tools[0].function.name",
        ),
        (
            r#","tools":[{"type":"function","function":{"name":5}}]"#,
            "tools[0].function.name",
        ),
        (
            r#","tools":[{"type":"function","function":{"name":"f","strict":"yes"}}]"#,
            "tools[0].function.strict",
        ),
        (r#","max_tokens":99999999999"#, "max_tokens"),
        (
            r#","stream_options":{"include_usage":true}"#,
            "stream_options",
        ),
        (r#","logit_bias":{"42":500}"#, "logit_bias"),
    ] {
        let (status, body) = chat_json(
            &url,
            &format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}]{extra}}}"#),
        )
        .await;
        assert_eq!(status, 400, "{extra}: {body}");
        assert_eq!(body["error"]["param"], param, "{extra}: {body}");
    }
    let h = health(&url).await;
    assert_eq!(h["models"]["m"][0]["failures"], 0, "{h}");
}

/// An upstream that streams a role chunk, `n` content chunks, a finish chunk and a usage
/// chunk that counts `usage` tokens (its `choices` null, as some servers send it); and
/// answers 401 for any model called `locked`.
async fn streaming_upstream(n: usize, usage: u64) -> String {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move |body: String| async move {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if v["model"] == "locked" {
                return (
                    StatusCode::UNAUTHORIZED,
                    r#"{"error":{"message":"bad key","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
                )
                    .into_response();
            }
            let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
                format!(
                    "data: {}\n\n",
                    serde_json::json!({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "up",
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
                )
            };
            let mut out = chunk(serde_json::json!({"role": "assistant", "content": ""}), serde_json::Value::Null);
            for _ in 0..n {
                out += &chunk(serde_json::json!({"content": "ab"}), serde_json::Value::Null);
            }
            out += &chunk(serde_json::json!({}), serde_json::json!("stop"));
            // As OpenAI's API, a usage chunk only where the request asks for one.
            if v["stream_options"]["include_usage"] == true {
                out += &format!(
                    "data: {}\n\n",
                    serde_json::json!({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "up", "choices": [],
                        "usage": {"prompt_tokens": 7, "completion_tokens": usage, "total_tokens": 7 + usage}})
                );
            }
            out += "data: [DONE]\n\n";
            ([("content-type", "text/event-stream")], out).into_response()
        }),
    );
    serve_upstream(app).await
}

/// An upstream's first tokens that take longer the longer the prompt are learned so: the
/// health report shows the milliseconds a thousand prompt tokens add, which the latency
/// policy expects of a long prompt there; an emulated pool, whose growth its prediction
/// gives, shows none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstreams_first_token_growth_with_the_prompt_is_learned() {
    use axum::response::IntoResponse;
    use axum::routing::post;
    // 5 ms, and 20 ms more for each 4,000 bytes of request (some 1,000 tokens).
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(|body: String| async move {
            let ms = 5 + body.len() as u64 * 20 / 4000;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
                format!(
                    "data: {}\n\n",
                    serde_json::json!({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "up",
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
                )
            };
            let out = chunk(serde_json::json!({"role": "assistant", "content": "ab"}), serde_json::Value::Null)
                + &chunk(serde_json::json!({}), serde_json::json!("stop"))
                + "data: [DONE]\n\n";
            ([("content-type", "text/event-stream")], out).into_response()
        }),
    );
    let up = serve_upstream(app).await;
    let (url, _gw) = start(&upstream_then_gpu(&up, "up")).await;
    let h = health(&url).await;
    assert_eq!(
        h["models"]["m"][1]["learned_ttft_ms_per_1k_prompt_tokens"],
        serde_json::Value::Null,
        "{h}"
    );
    assert!(
        h["models"]["m"][0]
            .get("learned_ttft_ms_per_1k_prompt_tokens")
            .is_none(),
        "{h}"
    );
    for k in 0..24 {
        let words = if k % 2 == 0 { 250 } else { 2500 };
        let body = serde_json::json!({"model": "m", "stream": true, "max_tokens": 2,
            "messages": [{"role": "user", "content": "abc ".repeat(words * 4)}]});
        let (status, _) = post_json(&url, "/chat/completions", &body.to_string()).await;
        assert_eq!(status, 200);
    }
    let h = health(&url).await;
    let per_1k = h["models"]["m"][1]["learned_ttft_ms_per_1k_prompt_tokens"]
        .as_f64()
        .expect("learned");
    assert!((10.0..40.0).contains(&per_1k), "{h}");
}

/// The value of the metric line that starts with `prefix`.
async fn metric(url: &str, prefix: &str) -> Option<f64> {
    let text = reqwest::get(url.replace("/v1", "/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Tokens streamed from an OpenAI-compatible provider are its usage chunk's count, not the
/// chunks relayed; a provider that refuses the gateway's credentials is failed over, and
/// the client is never told its own key is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_usage_counts_and_refused_credentials_fail_over() {
    let up = streaming_upstream(3, 5).await;
    let text = format!(
        "[[provider]]\nname = \"up\"\nkind = \"openai\"\nbase_url = \"{up}\"\n\
         [[model]]\nname = \"counted\"\n[[model.deployment]]\nprovider = \"up\"\n\
         [[model]]\nname = \"locked-first\"\npolicy = \"priority\"\n\
         [[model.deployment]]\nprovider = \"up\"\nupstream_model = \"locked\"\npriority = 0\n\
         [[model.deployment]]\nprovider = \"up\"\nupstream_model = \"open\"\npriority = 1\n\
         [[model]]\nname = \"locked-only\"\n[[model.deployment]]\nprovider = \"up\"\nupstream_model = \"locked\"\n"
    );
    let (url, _gw) = start(&text).await;
    let stream = |model: &str| {
        format!(
            r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}],"stream":true,"stream_options":{{"include_usage":true}}}}"#
        )
    };
    let r = reqwest::Client::new()
        .post(format!("{url}/chat/completions"))
        .body(stream("counted"))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    r.text().await.expect("stream");
    let out = metric(
        &url,
        r#"switchyard_tokens_total{model="counted",provider="up",type="output"}"#,
    )
    .await;
    assert_eq!(out, Some(5.0));
    let input = metric(
        &url,
        r#"switchyard_tokens_total{model="counted",provider="up",type="input"}"#,
    )
    .await;
    assert_eq!(input, Some(7.0));
    // A client that asks for no usage chunk gets none, but its tokens are still the
    // provider's count, which the gateway asked for on its behalf.
    let plain = r#"{"model":"counted","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let r = reqwest::Client::new()
        .post(format!("{url}/chat/completions"))
        .body(plain)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    let body = r.text().await.expect("stream");
    assert!(!body.contains("usage") && body.contains("[DONE]"), "{body}");
    let out = metric(
        &url,
        r#"switchyard_tokens_total{model="counted",provider="up",type="output"}"#,
    )
    .await;
    assert_eq!(out, Some(10.0));
    let r = reqwest::Client::new()
        .post(format!("{url}/chat/completions"))
        .body(stream("locked-first"))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    let (status, body) = chat_json(
        &url,
        r#"{"model":"locked-only","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("credentials")),
        "{body}"
    );
}

/// One model can be looked up by its id, slashes and all, and every metric has its help.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_is_retrieved_by_id_and_metrics_have_help() {
    let text = format!(
        "{}{}",
        emulated("gpu", "h100-sxm", ""),
        model("org/m", &[("gpu", "")])
    );
    let (url, _gw) = start(&text).await;
    let got: serde_json::Value = serde_json::from_str(
        &reqwest::get(format!("{url}/models/org/m"))
            .await
            .expect("get")
            .text()
            .await
            .expect("body"),
    )
    .expect("json");
    assert_eq!(got["id"], "org/m", "{got}");
    assert_eq!(got["object"], "model", "{got}");
    // Percent-escapes are read, and an id that is not UTF-8 is an unknown model.
    let status = |path: &'static str| {
        let url = url.clone();
        async move {
            reqwest::get(format!("{url}/models/{path}"))
                .await
                .expect("get")
                .status()
        }
    };
    assert_eq!(status("org%2Fm").await, 200);
    assert_eq!(status("%ff%fe").await, 404);
    let r = reqwest::get(format!("{url}/models/nope"))
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = serde_json::from_str(&r.text().await.expect("body")).expect("json");
    assert_eq!(v["error"]["code"], "model_not_found", "{v}");
    chat_with_header(&reqwest::Client::new(), &url, "org/m", ("x-a", "b")).await;
    // A model the gateway does not serve is counted under one label, not its own name.
    chat_with_header(
        &reqwest::Client::new(),
        &url,
        "no-such-model-77",
        ("x-a", "b"),
    )
    .await;
    let text = reqwest::get(url.replace("/v1", "/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    for name in [
        "gen_ai_server_time_to_first_token_seconds",
        "switchyard_requests_total",
        "switchyard_tokens_total",
    ] {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no help: {text}"
        );
    }
    assert!(!text.contains("no-such-model-77"), "{text}");
    assert!(text.contains("model=\"unknown\""), "{text}");
}

/// A request an emulated deployment refuses for a feature only a model gives goes to a real
/// one, even where the gateway makes one attempt: the refusal was no attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_for_a_feature_is_no_attempt() {
    let up = echo_upstream().await;
    let text = format!(
        "[retries]\nmax_attempts = 1\n{}[[provider]]\nname = \"up\"\nkind = \"openai\"\nbase_url = \"{up}\"\n[[model]]\nname = \"m\"\npolicy = \"priority\"\n[[model.deployment]]\nprovider = \"gpu\"\nupstream_model = \"llama-3.1-8b\"\npriority = 0\n[[model.deployment]]\nprovider = \"up\"\npriority = 1\n",
        emulated("gpu", "h100-sxm", "")
    );
    let (url, _gw) = start(&text).await;
    let (status, body) = chat_json(
        &url,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"logprobs":true}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], "echo", "{body}");
    let h = health(&url).await;
    // Refused before it was sent: nothing counted against the emulated deployment.
    assert_eq!(h["models"]["m"][0]["failures"], 0, "{h}");
    assert_eq!(h["models"]["m"][0]["requests"], 0, "{h}");
    assert_eq!(h["models"]["m"][1]["requests"], 1, "{h}");
}

/// A retry spends from the retry budget even when a refusal stands between the failed
/// deployment and the next: with the budget spent, a failure is answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_between_a_failure_and_a_retry_does_not_spare_the_budget() {
    let up = echo_upstream().await;
    // A port nothing listens on: connections are refused.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let text = format!(
        "[retries]\nbudget_ratio = 0.0\nmin_per_s = 0.0\n\
         [[provider]]\nname = \"dead\"\nkind = \"openai\"\nbase_url = \"http://{dead}/v1\"\n\
         {}[[provider]]\nname = \"up\"\nkind = \"openai\"\nbase_url = \"{up}\"\n\
         [[model]]\nname = \"m\"\npolicy = \"priority\"\n\
         [[model.deployment]]\nprovider = \"dead\"\npriority = 0\n\
         [[model.deployment]]\nprovider = \"gpu\"\nupstream_model = \"llama-3.1-8b\"\npriority = 1\n\
         [[model.deployment]]\nprovider = \"up\"\npriority = 2\n",
        emulated("gpu", "h100-sxm", "")
    );
    let (url, _gw) = start(&text).await;
    let ask = || {
        chat_json(
            &url,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"logprobs":true}"#,
        )
    };
    // The bucket's one starting token pays the first retry; the second has none.
    let (status, body) = ask().await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = ask().await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("retry budget exhausted")),
        "{body}"
    );
}

/// Reads `s` into `answer` until the gateway closes it, or `None` after ten seconds: an
/// open connection would leave the read waiting.
async fn until_closed(s: &mut tokio::net::TcpStream, answer: &mut [u8]) -> Option<usize> {
    use tokio::io::AsyncReadExt;
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut total = 0;
        loop {
            match s.read(&mut answer[total..]).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    })
    .await
    .ok()
}

/// A client that trickles its request headers, sends nothing at all, or sends no further
/// request on a kept-alive connection, has its connection closed after `timeouts.header_ms`,
/// rather than holding it for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_that_never_end_close_the_connection() {
    use tokio::io::AsyncWriteExt;
    let (mut s, addr, _gw) = raw_connection("header_ms = 200").await;
    s.write_all(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    let mut answer = vec![0u8; 4096];
    // Closed (or answered) well before the test's own limit.
    let read = until_closed(&mut s, &mut answer).await;
    assert!(read.is_some(), "the connection stayed open");
    // So does a kept-alive connection that sends nothing after its answer: an idle client
    // holds no connection for ever either.
    let mut s = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    s.write_all(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let read = until_closed(&mut s, &mut answer).await;
    let total = read.expect("the idle connection stayed open");
    let got = String::from_utf8_lossy(&answer[..total]);
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    // A connection that never sends a byte is closed too: idle sockets would otherwise hold
    // the gateway's descriptors until it can accept no one.
    let mut s = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    assert_eq!(
        until_closed(&mut s, &mut answer).await,
        Some(0),
        "the silent connection stayed open"
    );
    // Nor does one that sends part of the HTTP/2 preface, the whole of it, or the whole
    // of it and its settings, and then nothing: it never answers the server's pings.
    let settings: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
    for sent in [
        b"PRI * HTTP/2.0\r\n".to_vec(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".as_slice(), settings].concat(),
    ] {
        let mut s = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        s.write_all(&sent).await.expect("write");
        assert!(
            until_closed(&mut s, &mut answer).await.is_some(),
            "{} bytes of HTTP/2 and then silence kept the connection open",
            sent.len()
        );
    }
}

/// The whole body of a streamed chat request for `model` saying "hi".
async fn streamed_text(url: &str, model: &str) -> String {
    posted_text(
        url,
        &format!(
            r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}],"stream":true}}"#
        ),
    )
    .await
}

/// The whole text of the answer to a chat request of `body`.
async fn posted_text(url: &str, body: &str) -> String {
    reqwest::Client::new()
        .post(format!("{url}/chat/completions"))
        .body(body.to_string())
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("body")
}

/// Model `m` tried first on upstream `up` as `upstream_model`, then on an emulated H100.
fn upstream_then_gpu(up: &str, upstream_model: &str) -> String {
    format!(
        "[[provider]]\nname = \"up\"\nkind = \"openai\"\nbase_url = \"{up}\"\n{}{}\
         [[model.deployment]]\nprovider = \"up\"\nupstream_model = \"{upstream_model}\"\npriority = 0\n",
        emulated("gpu", "h100-sxm", ""),
        model("m", &[("gpu", "priority = 1")]),
    )
}

/// An upstream that misbehaves by model name: `role-then-stall` streams the role chunk and
/// then nothing, `one-then-stall` the role chunk and one token; `slow` answers whole after 1.5 s; `busy` is over its rate (429, retry
/// after 7 s), `busy-now` too, for no time, and `busy-bare` without a `Retry-After`; `reasons` streams reasoning after 100 ms and its answer 600 ms later; `plain`
/// answers 12 characters whole, with no usage; `refuses` a refusal of 22, with none; `html`
/// a web page with status 200; `error-200` an error object with status 200; `flaky` fails
/// every other request (503), the first included;
/// `stalled-refusal` a 400 whose body stalls; `unprocessable` a 422 in another framework's
/// shape; `bare-413` a 413 in OpenAI's shape with only a message; `spaced-error` streams an error event written
/// `{ "error"`; `no-done` streams an answer that finishes without `[DONE]`; `split-lines`
/// one whose token event comes over two `data:` lines; `error-false` chunks that carry
/// `"error": false`; `two-choices-cut` two choices, the second cut off; `timeout-408` a
/// 408; `not-json` streams an event that is not JSON before its first token, and
/// `not-json-after` one after its first token in the same read, and `not-json-mid` and
/// `error-mid` a number for a chunk and an error event in a later read; each sends an empty
/// event too, a keep-alive; `usage-partial` answers whole with a usage of its output alone,
/// `usage-prompt` with one of its prompt alone;
/// `no-choices` answers 200 with an object without choices, `payment` 402;
/// `finished-then-cut` streams a finished answer and breaks the connection;
/// `huge-event` streams an event that grows by a mebibyte every 20 ms and never ends.
async fn misbehaving_upstream() -> String {
    use axum::response::IntoResponse;
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(|body: String| async move {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if v["model"] == "busy" || v["model"] == "busy-now" {
                let after = if v["model"] == "busy" { "7" } else { "0" };
                return (
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", after)],
                    r#"{"error":{"message":"slow down","type":"rate_limit_error","param":null,"code":null}}"#,
                )
                    .into_response();
            }
            if v["model"] == "refuses" {
                return axum::Json(serde_json::json!({"id": "x", "object": "chat.completion", "created": 0, "model": "refuses",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "refusal": "I can't help with that"}, "finish_reason": "stop"}]}))
                    .into_response();
            }
            if v["model"] == "html" {
                return (
                    [("content-type", "text/html")],
                    "<html>oops</html>",
                )
                    .into_response();
            }
            if v["model"] == "usage-prompt" {
                return axum::Json(serde_json::json!({"id": "x", "object": "chat.completion", "created": 0, "model": "usage-prompt",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "abcdefgh"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 11}}))
                    .into_response();
            }
            if v["model"] == "usage-partial" {
                return axum::Json(serde_json::json!({"id": "x", "object": "chat.completion", "created": 0, "model": "usage-partial",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "abc"}, "finish_reason": "stop"}],
                    "usage": {"completion_tokens": 3}}))
                    .into_response();
            }
            if v["model"] == "plain" {
                return axum::Json(serde_json::json!({"id": "x", "object": "chat.completion", "created": 0, "model": "plain",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "abcdefghijkl"}, "finish_reason": "stop"}]}))
                    .into_response();
            }
            if v["model"] == "flaky" {
                // Every other request fails, starting with the first.
                static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
                if CALLS
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                    .is_multiple_of(2)
                {
                    return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "busy").into_response();
                }
                return axum::Json(serde_json::json!({"id": "x", "object": "chat.completion", "created": 0, "model": "flaky",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}))
                    .into_response();
            }
            if v["model"] == "busy-bare" {
                return (
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    r#"{"error":{"message":"slow down","type":"rate_limit_error","param":null,"code":null}}"#,
                )
                    .into_response();
            }
            if v["model"] == "no-choices" {
                return axum::Json(serde_json::json!({"detail": "something odd"})).into_response();
            }
            if v["model"] == "payment" {
                return (
                    axum::http::StatusCode::PAYMENT_REQUIRED,
                    axum::Json(serde_json::json!({"error": {"message": "out of credit", "type": "billing", "param": null, "code": null}})),
                )
                    .into_response();
            }
            if v["model"] == "timeout-408" {
                return (axum::http::StatusCode::REQUEST_TIMEOUT, "timed out").into_response();
            }
            if v["model"] == "error-200" {
                return axum::Json(serde_json::json!({"error": {"message": "overloaded", "type": "server_error", "param": null, "code": null}}))
                    .into_response();
            }
            if v["model"] == "bare-413" {
                return (
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    axum::Json(serde_json::json!({"error": {"message": "too big"}})),
                )
                    .into_response();
            }
            if v["model"] == "unprocessable" {
                return (
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    axum::Json(serde_json::json!({"detail": "unprocessable"})),
                )
                    .into_response();
            }
            if v["model"] == "stalled-refusal" {
                // A 400 that promises 100 bytes, sends 16 and then nothing.
                let body = futures_util::stream::once(async {
                    Ok::<_, std::convert::Infallible>(bytes::Bytes::from_static(b"{\"error\": {\"mes"))
                })
                .chain(futures_util::stream::pending());
                return (
                    axum::http::StatusCode::BAD_REQUEST,
                    [("content-type", "application/json"), ("content-length", "100")],
                    axum::body::Body::from_stream(body),
                )
                    .into_response();
            }
            if v["model"] == "slow" {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                return axum::Json(serde_json::json!({"id": "x", "object": "chat.completion", "created": 0, "model": "slow",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "late"}, "finish_reason": "stop"}]}))
                    .into_response();
            }
            let chunk = |delta: serde_json::Value| {
                format!(
                    "data: {}\n\n",
                    serde_json::json!({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "up",
                        "choices": [{"index": 0, "delta": delta, "finish_reason": null}]})
                )
            };
            let role = chunk(serde_json::json!({"role": "assistant", "content": ""}));
            let model = v["model"].as_str().unwrap_or("");
            if ["not-json", "not-json-after", "not-json-mid", "error-mid"].contains(&model) {
                let token = chunk(serde_json::json!({"content": "ab"}));
                let bad = match model {
                    "error-mid" => "data: {\"error\":{\"message\":\"overloaded mid\",\"type\":\"server_error\"}}\n\n",
                    // JSON, but no object: no chunk either.
                    "not-json-mid" => "data: 42\n\n",
                    _ => "data: {not json\n\n",
                };
                // An empty event, a keep-alive, is no fault.
                let parts = match model {
                    "not-json" => vec![format!("data:\n\n{role}{bad}{token}data: [DONE]\n\n")],
                    "not-json-after" => vec![format!("{role}{token}{bad}{token}data: [DONE]\n\n")],
                    // The fault comes after the first token has gone to the client.
                    _ => vec![format!("{role}data:\n\n{token}"), format!("{bad}{token}data: [DONE]\n\n")],
                };
                let body = futures_util::stream::iter(parts.into_iter().enumerate()).then(|(i, text)| async move {
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Ok::<_, std::convert::Infallible>(bytes::Bytes::from(text))
                });
                return (
                    [("content-type", "text/event-stream")],
                    axum::body::Body::from_stream(body),
                )
                    .into_response();
            }
            if v["model"] == "spaced-error" {
                let body = "data: { \"error\": {\"message\": \"busy\", \"type\": \"server_error\"}}\n\n";
                return ([("content-type", "text/event-stream")], body).into_response();
            }
            if v["model"] == "error-false" || v["model"] == "two-choices-cut" {
                // Chunks that carry `"error": false` beside their choices; or two choices of
                // which the first finishes and the second is cut off.
                let chunk = |i: u64, delta: serde_json::Value, finish: serde_json::Value| {
                    format!(
                        "data: {}\n\n",
                        serde_json::json!({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "up",
                            "choices": [{"index": i, "delta": delta, "finish_reason": finish}], "error": false})
                    )
                };
                let body = if v["model"] == "error-false" {
                    format!(
                        "{}{}data: [DONE]\n\n",
                        chunk(0, serde_json::json!({"content": "ab"}), serde_json::Value::Null),
                        chunk(0, serde_json::json!({}), serde_json::json!("stop"))
                    )
                } else {
                    format!(
                        "{}{}{}",
                        chunk(0, serde_json::json!({"content": "ab"}), serde_json::Value::Null),
                        chunk(0, serde_json::json!({}), serde_json::json!("stop")),
                        chunk(1, serde_json::json!({"content": "c"}), serde_json::Value::Null)
                    )
                };
                return ([("content-type", "text/event-stream")], body).into_response();
            }
            if v["model"] == "no-done" || v["model"] == "split-lines" {
                // An answer that finishes and closes without `[DONE]`; or one whose token
                // event is split over two `data:` lines.
                let token = serde_json::json!({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "up",
                    "choices": [{"index": 0, "delta": {"content": "ab"}, "finish_reason": null}]})
                .to_string();
                let token = if v["model"] == "split-lines" {
                    let (a, b) = token.split_at(token.find("\"choices\"").unwrap_or(0));
                    format!("data: {a}\ndata: {b}\n\n")
                } else {
                    format!("data: {token}\n\n")
                };
                let stop = serde_json::json!({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "up",
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
                let end = if v["model"] == "no-done" { "" } else { "data: [DONE]\n\n" };
                let body = format!("{role}{token}data: {stop}\n\n{end}");
                return ([("content-type", "text/event-stream")], body).into_response();
            }
            if v["model"] == "finished-then-cut" || v["model"] == "huge-event" {
                // An answer that finishes, after which the connection breaks before the
                // body's end; or an event that never ends, a mebibyte at a time.
                let token = chunk(serde_json::json!({"content": "ab"}));
                let stop = serde_json::json!({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "up",
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
                let parts: Vec<Result<bytes::Bytes, std::io::Error>> = if v["model"] == "huge-event" {
                    std::iter::once(Ok(bytes::Bytes::from(format!("{role}data: {{\"x\": \""))))
                        .chain((0..20).map(|_| Ok(bytes::Bytes::from(vec![b'a'; 1 << 20]))))
                        .collect()
                } else {
                    vec![
                        Ok(bytes::Bytes::from(format!("{role}{token}data: {stop}\n\n"))),
                        Err(std::io::Error::other("cut")),
                    ]
                };
                let body = futures_util::stream::iter(parts).then(|p| async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    p
                });
                return (
                    [("content-type", "text/event-stream")],
                    axum::body::Body::from_stream(body),
                )
                    .into_response();
            }
            if v["model"] == "reasons" {
                // Reasoning soon, under the name newer vLLM gives it; its answer late.
                let parts = [
                    (100, role),
                    (0, chunk(serde_json::json!({"reasoning": "think "}))),
                    (600, chunk(serde_json::json!({"content": "ok"}))),
                    (0, "data: [DONE]\n\n".to_string()),
                ];
                let body = futures_util::stream::iter(parts).then(|(ms, text)| async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok::<_, std::convert::Infallible>(bytes::Bytes::from(text))
                });
                return (
                    [("content-type", "text/event-stream")],
                    axum::body::Body::from_stream(body),
                )
                    .into_response();
            }
            // The role chunk, with a first token where the model is `one-then-stall`, and then
            // nothing.
            let first = if v["model"] == "one-then-stall" {
                format!("{role}{}", chunk(serde_json::json!({"content": "ab"})))
            } else {
                role
            };
            let body = futures_util::stream::once(async move {
                Ok::<_, std::convert::Infallible>(bytes::Bytes::from(first))
            })
            .chain(futures_util::stream::pending());
            (
                [("content-type", "text/event-stream")],
                axum::body::Body::from_stream(body),
            )
                .into_response()
        }),
    );
    serve_upstream(app).await
}

/// A provider that streams its role chunk and then stalls has sent no first token: it is
/// failed over like one that sends nothing. And `total_ms` bounds the whole request, not
/// each attempt: three slow deployments do not make the client wait three times over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_token_is_output_and_total_ms_bounds_every_attempt_together() {
    let bad = misbehaving_upstream().await;
    let good = streaming_upstream(2, 2).await;
    let text = format!(
        "[timeouts]\nfirst_token_ms = 300\ntotal_ms = 1000\n\
         [[provider]]\nname = \"bad\"\nkind = \"openai\"\nbase_url = \"{bad}\"\n\
         [[provider]]\nname = \"bad2\"\nkind = \"openai\"\nbase_url = \"{bad}\"\n\
         [[provider]]\nname = \"bad3\"\nkind = \"openai\"\nbase_url = \"{bad}\"\n\
         [[provider]]\nname = \"good\"\nkind = \"openai\"\nbase_url = \"{good}\"\n\
         [[model]]\nname = \"stalls\"\npolicy = \"priority\"\n\
         [[model.deployment]]\nprovider = \"bad\"\nupstream_model = \"role-then-stall\"\npriority = 0\n\
         [[model.deployment]]\nprovider = \"good\"\nupstream_model = \"open\"\npriority = 1\n\
         [[model]]\nname = \"thinks\"\npolicy = \"priority\"\n\
         [[model.deployment]]\nprovider = \"bad\"\nupstream_model = \"reasons\"\npriority = 0\n\
         [[model.deployment]]\nprovider = \"good\"\nupstream_model = \"open\"\npriority = 1\n\
         [[model]]\nname = \"slow\"\npolicy = \"round-robin\"\n\
         [[model.deployment]]\nprovider = \"bad\"\n[[model.deployment]]\nprovider = \"bad2\"\n[[model.deployment]]\nprovider = \"bad3\"\n"
    );
    let (url, _gw) = start(&text).await;
    let r = reqwest::Client::new()
        .post(format!("{url}/chat/completions"))
        .body(r#"{"model":"stalls","messages":[{"role":"user","content":"hi"}],"stream":true}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(5), r.text())
        .await
        .expect("the stream ends")
        .expect("body");
    assert!(body.contains("\"ab\"") && body.contains("[DONE]"), "{body}");
    // Reasoning is output, whatever the server calls it: the stream starts with it and is
    // not failed over while the answer is still to come.
    let r = reqwest::Client::new()
        .post(format!("{url}/chat/completions"))
        .body(r#"{"model":"thinks","messages":[{"role":"user","content":"hi"}],"stream":true}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    let body = r.text().await.expect("body");
    assert!(
        body.contains("think") && body.contains("\"ok\"") && !body.contains("\"ab\""),
        "{body}"
    );
    let t = Instant::now();
    let (status, body) = chat_json(
        &url,
        r#"{"model":"slow","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    let took = t.elapsed().as_secs_f64();
    // A whole answer with no attempt limit of its own has the request's: past it, the
    // request has timed out (504), no deployment having failed.
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "timeout", "{body}");
    // The deployment that had the request's whole time and sent nothing is blamed: one that
    // hangs is ejected in the end, whatever its answers' kind.
    let h = health(&url).await;
    let failures: u64 = h["models"]["slow"]
        .as_array()
        .expect("deployments")
        .iter()
        .filter_map(|d| d["failures"].as_u64())
        .sum();
    assert_eq!(failures, 1, "{h}");
    assert!(
        took < 1.4,
        "{took} s for a request of total_ms 1000: {body}"
    );
}

/// An attempt that the request's own deadline cuts short is not the deployment's failure:
/// a healthy deployment tried with too little of `total_ms` left is not ejected for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_cut_short_by_the_requests_deadline_is_not_blamed() {
    let up = misbehaving_upstream().await;
    let text = format!(
        "[timeouts]\nfirst_token_ms = 950\ntotal_ms = 1000\n\
         [[provider]]\nname = \"up\"\nkind = \"openai\"\nbase_url = \"{up}\"\n\
         [[model]]\nname = \"m\"\npolicy = \"priority\"\n\
         [[model.deployment]]\nprovider = \"up\"\nupstream_model = \"role-then-stall\"\npriority = 0\n\
         [[model.deployment]]\nprovider = \"up\"\nupstream_model = \"reasons\"\npriority = 1\n"
    );
    let (url, _gw) = start(&text).await;
    for _ in 0..3 {
        let (status, body) = chat_json(
            &url,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
        )
        .await;
        // The request ran out of its time on the second: a timeout, not an outage.
        assert_eq!(status, 504, "{body}");
    }
    let h = health(&url).await;
    let deps = h["models"]["m"].as_array().expect("deployments");
    assert_eq!(deps[0]["failures"], 3, "{h}");
    assert_eq!(deps[1]["failures"], 0, "{h}");
}

/// Where every deployment is over its rate, the client is told to slow down (429, with the
/// wait the providers asked for), not that the model is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_over_their_rate_answer_429_and_whole_answers_count_their_text() {
    let up = misbehaving_upstream().await;
    let text = format!(
        "[[provider]]\nname = \"up\"\nkind = \"openai\"\nbase_url = \"{up}\"\n\
         [[provider]]\nname = \"up2\"\nkind = \"openai\"\nbase_url = \"{up}\"\n\
         [[model]]\nname = \"busy\"\n[[model.deployment]]\nprovider = \"up\"\n[[model.deployment]]\nprovider = \"up2\"\n"
    );
    let (url, _gw) = start(&text).await;
    let r = reqwest::Client::new()
        .post(format!("{url}/chat/completions"))
        .body(r#"{"model":"busy","messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("7")
    );
    let body: serde_json::Value =
        serde_json::from_str(&r.text().await.expect("body")).expect("json");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    // Both now rest: the next request is told to slow down without either being asked.
    let r = reqwest::Client::new()
        .post(format!("{url}/chat/completions"))
        .body(r#"{"model":"busy","messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 429);
    let wait: u64 = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a retry-after");
    assert!((6..=7).contains(&wait), "{wait}");
    let h = health(&url).await;
    for d in h["models"]["busy"].as_array().expect("deployments") {
        assert_eq!(d["requests"], 1, "{h}");
    }
    // Both answers count as the client's rate limit, not as the model failing.
    let line = |outcome: &str| {
        format!(r#"switchyard_requests_total{{model="busy",provider="none",outcome="{outcome}"}}"#)
    };
    assert_eq!(metric(&url, &line("rate_limited")).await, Some(2.0));
    assert_eq!(metric(&url, &line("failed")).await, None);
    // A deployment that asked for a pause is passed over until it ends: the second request
    // goes straight to the other deployment.
    let (url, _gw) = start(&upstream_then_gpu(&up, "busy")).await;
    let ask = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#;
    assert_eq!(chat_json(&url, ask).await.0, 200);
    assert_eq!(chat_json(&url, ask).await.0, 200);
    let h = health(&url).await;
    assert_eq!(h["models"]["m"][1]["requests"], 1, "{h}");
    assert_eq!(h["models"]["m"][0]["requests"], 2, "{h}");
    // A pause asked for is no ejection, and the model is still served.
    assert_eq!(h["models"]["m"][1]["ejected"], false, "{h}");
    assert_eq!(h["status"], "ok", "{h}");
    // Nor are many: a provider over its rate is up, however often it says so.
    let (url, _gw) = start(&format!(
        "[health]\neject_after = 2\n{}",
        upstream_then_gpu(&up, "busy-now")
    ))
    .await;
    for _ in 0..4 {
        assert_eq!(chat_json(&url, ask).await.0, 200);
    }
    let h = health(&url).await;
    assert_eq!(h["models"]["m"][1]["requests"], 4, "{h}");
    assert_eq!(h["models"]["m"][1]["ejected"], false, "{h}");
    // Beside one that asks 7 s, a 429 that asks no time has the client told a second, as
    // long as the gateway rests it.
    let (url, _gw) = start(&format!(
        "[[provider]]\nname = \"up\"\nkind = \"openai\"\nbase_url = \"{up}\"\n\
         [[provider]]\nname = \"up2\"\nkind = \"openai\"\nbase_url = \"{up}\"\n\
         [[model]]\nname = \"m\"\n[[model.deployment]]\nprovider = \"up\"\nupstream_model = \"busy\"\n\
         [[model.deployment]]\nprovider = \"up2\"\nupstream_model = \"busy-bare\"\n"
    ))
    .await;
    let r = reqwest::Client::new()
        .post(format!("{url}/chat/completions"))
        .body(ask)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    // A 429 that asks no time rests its deployment for a second.
    let (url, _gw) = start(&upstream_then_gpu(&up, "busy-bare")).await;
    assert_eq!(chat_json(&url, ask).await.0, 200);
    assert_eq!(chat_json(&url, ask).await.0, 200);
    assert_eq!(health(&url).await["models"]["m"][1]["requests"], 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(chat_json(&url, ask).await.0, 200);
    assert_eq!(health(&url).await["models"]["m"][1]["requests"], 2);
    // A whole answer without the provider's usage counts its text, four characters a token.
    let text = format!(
        "[[provider]]\nname = \"up\"\nkind = \"openai\"\nbase_url = \"{up}\"\n\
         [[model]]\nname = \"plain\"\n[[model.deployment]]\nprovider = \"up\"\n\
         [[model]]\nname = \"refuses\"\n[[model.deployment]]\nprovider = \"up\"\n"
    );
    let (url, _gw) = start(&text).await;
    let counted = |model: &'static str| {
        let url = url.clone();
        async move {
            let body =
                format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#);
            let (status, answer) = chat_json(&url, &body).await;
            assert_eq!(status, 200);
            // The client gets that count as the answer's usage.
            let u = &answer["usage"];
            assert_eq!(
                u["total_tokens"].as_u64(),
                Some(
                    u["prompt_tokens"].as_u64().unwrap_or(0)
                        + u["completion_tokens"].as_u64().unwrap_or(0)
                ),
                "{answer}"
            );
            assert!(u["prompt_tokens"].as_u64() > Some(0), "{answer}");
            let line = format!(
                r#"switchyard_tokens_total{{model="{model}",provider="up",type="output"}}"#
            );
            metric(&url, &line).await
        }
    };
    assert_eq!(counted("plain").await, Some(3.0));
    let (_, answer) = chat_json(
        &url,
        r#"{"model":"plain","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(answer["usage"]["completion_tokens"], 3, "{answer}");
    // The answer's usage, through a gateway whose one model is the upstream's `name`.
    let usage = |name: &'static str| {
        let up = up.clone();
        async move {
            let text = format!(
                "[[provider]]\nname = \"up\"\nkind = \"openai\"\nbase_url = \"{up}\"\n\
                 [[model]]\nname = \"{name}\"\n[[model.deployment]]\nprovider = \"up\"\n"
            );
            let (url, _gw) = start(&text).await;
            let ask =
                format!(r#"{{"model":"{name}","messages":[{{"role":"user","content":"hi"}}]}}"#);
            chat_json(&url, &ask).await.1["usage"].clone()
        }
    };
    // A usage of the output alone is completed with the prompt's count and the total.
    let u = usage("usage-partial").await;
    assert_eq!(u["completion_tokens"], 3, "{u}");
    assert!(u["prompt_tokens"].as_u64() > Some(0), "{u}");
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(3 + u["prompt_tokens"].as_u64().unwrap_or(0)),
        "{u}"
    );
    // A usage of the prompt alone keeps the provider's count, and the output is counted.
    let u = usage("usage-prompt").await;
    assert_eq!(
        [
            &u["prompt_tokens"],
            &u["completion_tokens"],
            &u["total_tokens"]
        ],
        [11, 2, 13],
        "{u}"
    );
    // A refusal is the answer's text too.
    assert_eq!(counted("refuses").await, Some(6.0));
}

/// Once shutdown begins, new connections are refused while the requests in flight finish:
/// a load balancer sees the server go, rather than a port that takes connections and never
/// answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_refuses_new_connections_and_finishes_the_streams_in_flight() {
    let (cat, params) = statics();
    // 400 tokens from an emulated H100 take seconds: the stream is in flight at shutdown.
    let text = format!(
        "{}{}",
        emulated("w", "h100-sxm", ""),
        model("m", &[("w", "")])
    );
    let cfg = Config::parse(&text, "test.toml").expect("config");
    let gw = Gateway::new(&cfg, &text, "test.toml", cat, params).expect("gateway");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(l, gw, async {
        let _ = stopped.await;
    }));
    let url = format!("http://{addr}/v1");
    let r = reqwest::Client::new()
        .post(format!("{url}/chat/completions"))
        .body(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"max_tokens":400}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    stop.send(()).expect("stop");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "a new connection was accepted after shutdown began"
    );
    // The stream in flight still ends properly, and then the server does.
    let body = r.text().await.expect("body");
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server ends")
        .expect("joined")
        .expect("served");
}

/// An emulated deployment's first token may take `first_token_ms` beyond its prompt's own
/// pass: a long prompt is served, streamed or whole, not failed as the deployment's fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_prompt_is_not_a_late_first_token() {
    let text = format!(
        "[timeouts]\nfirst_token_ms = 100\n{}{}",
        emulated("gpu", "h100-sxm", ""),
        model("m", &[("gpu", "")])
    );
    let (url, _gw) = start(&text).await;
    // About 8,000 tokens at four characters a token: some 0.35 s of prefill on one H100.
    let prompt = "abcd".repeat(8000);
    for stream in [true, false] {
        let (status, body) = post_json(
            &url,
            "/completions",
            &format!(r#"{{"model":"m","prompt":"{prompt}","max_tokens":2,"stream":{stream}}}"#),
        )
        .await;
        assert_eq!(status, 200, "stream {stream}: {body}");
    }
    let h = health(&url).await;
    assert_eq!(h["models"]["m"][0]["failures"], 0, "{h}");
}

/// A stream that goes silent after its first token has stalled: it ends with an error
/// event after `stall_ms`, well within the request's limit, as the deployment's failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_silent_after_its_first_token_fails_its_deployment() {
    let up = misbehaving_upstream().await;
    let text = format!(
        "[timeouts]\nstall_ms = 300\nfirst_token_ms = 5000\ntotal_ms = 10000\n[health]\neject_after = 1\n{}",
        upstream_then_gpu(&up, "one-then-stall")
    );
    let (url, _gw) = start(&text).await;
    // The stalling deployment is the first tried: the emulated one takes priority 1.
    let t = Instant::now();
    let body = streamed_text(&url, "m").await;
    assert!(
        body.contains("\"ab\"") && body.contains("no output for 300 ms"),
        "{body}"
    );
    assert!(t.elapsed().as_secs_f64() < 3.0);
    let h = health(&url).await;
    assert_eq!(h["models"]["m"][1]["ejected"], true, "{h}");
}

/// A stream that outlasts the request's `total_ms` is cut with an error event, and the
/// deployment, which was answering all along, is not blamed for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_by_total_ms_is_not_the_deployments_failure() {
    let text = format!(
        "[timeouts]\nfirst_token_ms = 200\ntotal_ms = 300\n[health]\neject_after = 1\n{}{}",
        emulated("gpu", "h100-sxm", ""),
        model("m", &[("gpu", "")])
    );
    let (url, _gw) = start(&text).await;
    // 2,000 tokens at some 7 ms each: far past 300 ms.
    let r = reqwest::Client::new()
        .post(format!("{url}/chat/completions"))
        .body(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":2000,"stream":true}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    let body = r.text().await.expect("body");
    assert!(
        body.contains("within the request's 300 ms") && !body.contains("[DONE]"),
        "{body}"
    );
    // So is a whole answer that the request's total_ms cuts: a timeout (504), twice, and
    // the deployment still not ejected.
    for _ in 0..2 {
        let (status, body) = chat_json(
            &url,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":2000}"#,
        )
        .await;
        assert_eq!(status, 504, "{body}");
        assert_eq!(body["error"]["code"], "timeout", "{body}");
    }
    let h = health(&url).await;
    let d = &h["models"]["m"][0];
    assert_eq!(d["failures"], 0, "{h}");
    assert_eq!(d["ejected"], false, "{h}");
}

/// A 200 whose body is no JSON object (an ingress's page at a wrong URL) is the deployment's
/// failure: the request goes to the next one, and the client never sees the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_answer_that_is_not_json_fails_over() {
    let (url, _gw) = start(&upstream_then_gpu(&misbehaving_upstream().await, "html")).await;
    let (status, body) = chat_json(
        &url,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion", "{body}");
    let h = health(&url).await;
    assert_eq!(h["models"]["m"][1]["failures"], 1, "{h}");
}

/// What an upstream sends in a shape it should not is still read for what it is: an error
/// object with status 200, an error event however spaced and a refusal whose body stalls fail
/// over; an answer that finishes without `[DONE]` is whole; an event over two `data:` lines
/// reaches the client as one it can parse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_shapes_are_read_for_what_they_are() {
    let up = misbehaving_upstream().await;
    for (upstream, stream) in [
        ("error-200", false),
        ("stalled-refusal", false),
        ("timeout-408", false),
        ("spaced-error", true),
        ("not-json", true),
        ("not-json-after", true),
    ] {
        let text = format!(
            "[timeouts]\nfirst_token_ms = 1000\n{}",
            upstream_then_gpu(&up, upstream)
        );
        let (url, _gw) = start(&text).await;
        let t = Instant::now();
        let r = reqwest::Client::new()
            .post(format!("{url}/chat/completions"))
            .body(format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"max_tokens":2,"stream":{stream}}}"#
            ))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status(), 200, "{upstream}");
        let body = r.text().await.expect("body");
        assert!(t.elapsed().as_secs_f64() < 3.0, "{upstream}: {body}");
        assert!(
            !body.contains("overloaded") && !body.contains("busy"),
            "{upstream}: {body}"
        );
        let h = health(&url).await;
        assert_eq!(h["models"]["m"][1]["failures"], 1, "{upstream}: {h}");
    }
    // A model of one deployment is tried again after a failure of the moment, as
    // `max_attempts` allows: a lone vLLM's passing 503 does not reach the client.
    let text = format!(
        "[[provider]]\nname = \"up\"\nkind = \"openai\"\nbase_url = \"{up}\"\n[[model]]\nname = \"m\"\n[[model.deployment]]\nprovider = \"up\"\nupstream_model = \"flaky\"\n"
    );
    let (url, _gw) = start(&text).await;
    for _ in 0..3 {
        let (status, body) = chat_json(
            &url,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    // Its second try ended its first request on it: nothing is left in flight.
    let h = health(&url).await;
    assert_eq!(h["models"]["m"][0]["in_flight"], 0, "{h}");
    // After its first token, a stream's event that is no JSON object or an error event ends it
    // with one error event, the gateway's, naming the provider's fault; neither is passed on.
    for upstream in ["not-json-mid", "error-mid"] {
        let (url, _gw) = start(&upstream_then_gpu(&up, upstream)).await;
        let body = streamed_text(&url, "m").await;
        assert!(
            !body.contains("data: 42") && !body.contains("server_error"),
            "{upstream}: {body}"
        );
        assert_eq!(body.matches("\"error\"").count(), 1, "{upstream}: {body}");
        assert!(body.contains("upstream_failed"), "{upstream}: {body}");
        assert!(!body.contains("[DONE]"), "{upstream}: {body}");
        if upstream == "error-mid" {
            assert!(body.contains("overloaded mid"), "{body}");
        }
        let h = health(&url).await;
        assert_eq!(h["models"]["m"][1]["failures"], 1, "{upstream}: {h}");
    }
    // The answer through a gateway whose first deployment is the upstream's `name`.
    let answer = |name: &'static str| {
        let up = up.clone();
        async move {
            let (url, _gw) = start(&upstream_then_gpu(&up, name)).await;
            chat_json(
                &url,
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#,
            )
            .await
        }
    };
    // A refusal not in OpenAI's shape reaches the client in it, with the provider's status.
    let (status, body) = answer("unprocessable").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "upstream_refused", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("unprocessable")),
        "{body}"
    );
    // One in OpenAI's shape that leaves fields out reaches the client with them.
    let (status, body) = answer("bare-413").await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["message"], "too big", "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    let e = body["error"].as_object().expect("an object");
    assert!(e["param"].is_null() && e["code"].is_null(), "{body}");
    // A second choice cut off after the first finished is a broken stream, not a whole one.
    let (url, _gw) = start(&upstream_then_gpu(&up, "two-choices-cut")).await;
    let r = reqwest::Client::new()
        .post(format!("{url}/chat/completions"))
        .body(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"n":2,"stream":true}"#)
        .send()
        .await
        .expect("sent");
    let body = r.text().await.expect("body");
    assert!(
        body.contains("upstream_failed") && !body.contains("data: [DONE]"),
        "{body}"
    );
    for upstream in ["no-done", "split-lines", "error-false"] {
        let (url, _gw) = start(&upstream_then_gpu(&up, upstream)).await;
        let body = streamed_text(&url, "m").await;
        assert!(body.ends_with("data: [DONE]\n\n"), "{upstream}: {body}");
        assert!(!body.contains("upstream_failed"), "{upstream}: {body}");
        // Every event is one JSON document or the end marker.
        for event in body.split("\n\n").filter(|e| !e.is_empty()) {
            let data: String = event
                .lines()
                .map(|l| l.strip_prefix("data: ").expect("a data line"))
                .collect::<Vec<_>>()
                .join("\n");
            assert!(
                data == "[DONE]" || serde_json::from_str::<serde_json::Value>(&data).is_ok(),
                "{upstream}: {event}"
            );
        }
        assert!(body.contains("\"ab\""), "{upstream}: {body}");
        let h = health(&url).await;
        assert_eq!(h["models"]["m"][1]["failures"], 0, "{upstream}: {h}");
    }
}

/// What a provider sends that is no answer fails over (a 200 without choices, a 402 about
/// the gateway's own account, an event that never ends); a finished answer whose connection
/// breaks after it is whole; a client that asked for usage gets the gateway's count where
/// the provider's stream has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_answers_fail_over_and_finished_streams_stay_whole() {
    let up = misbehaving_upstream().await;
    let ask = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#;
    for upstream in ["no-choices", "payment"] {
        let (url, _gw) = start(&upstream_then_gpu(&up, upstream)).await;
        let (status, body) = chat_json(&url, ask).await;
        assert_eq!(status, 200, "{upstream}: {body}");
        assert!(body["choices"].is_array(), "{upstream}: {body}");
        let h = health(&url).await;
        assert_eq!(h["models"]["m"][1]["failures"], 1, "{upstream}: {h}");
        assert_eq!(h["models"]["m"][0]["requests"], 1, "{upstream}: {h}");
    }
    let (url, _gw) = start(&upstream_then_gpu(&up, "huge-event")).await;
    let body = streamed_text(&url, "m").await;
    assert!(
        body.ends_with("data: [DONE]\n\n"),
        "{}",
        &body[..body.len().min(300)]
    );
    let h = health(&url).await;
    assert_eq!(h["models"]["m"][1]["failures"], 1, "{h}");
    assert_eq!(h["models"]["m"][0]["requests"], 1, "{h}");
    let (url, _gw) = start(&upstream_then_gpu(&up, "finished-then-cut")).await;
    let body = streamed_text(&url, "m").await;
    assert!(
        body.ends_with("data: [DONE]\n\n") && !body.contains("upstream_failed"),
        "{body}"
    );
    assert!(body.contains("\"ab\""), "{body}");
    let h = health(&url).await;
    assert_eq!(h["models"]["m"][1]["failures"], 0, "{h}");
    // With two choices asked for, one finished is not the whole answer.
    let body = posted_text(
        &url,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"n":2}"#,
    )
    .await;
    assert!(
        body.contains("upstream_failed") && !body.contains("data: [DONE]"),
        "{body}"
    );
    // A stream without the provider's usage, to a client that asked for it.
    let (url, _gw) = start(&upstream_then_gpu(&up, "no-done")).await;
    let body = posted_text(
        &url,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#,
    )
    .await;
    let events: Vec<&str> = body.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.last(), Some(&"data: [DONE]"), "{body}");
    let usage: serde_json::Value =
        serde_json::from_str(events[events.len() - 2].trim_start_matches("data: ")).expect("json");
    assert_eq!(usage["usage"]["completion_tokens"], 1, "{body}");
    assert!(usage["usage"]["prompt_tokens"].as_u64() > Some(0), "{body}");
    assert_eq!(usage["choices"], serde_json::json!([]), "{body}");
    assert_eq!(usage["object"], "chat.completion.chunk", "{body}");
}

/// Where every deployment is ejected, a request tries only the one whose cool-down ends
/// first, once: providers that are down are not asked `max_attempts` times a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_deployment_ejected_a_request_tries_once() {
    // Ports nothing listens on: connections are refused.
    let dead = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let text = format!(
        "[health]\neject_after = 1\ncooldown_s = 60\n\
         [[provider]]\nname = \"a\"\nkind = \"openai\"\nbase_url = \"http://{}/v1\"\n\
         [[provider]]\nname = \"b\"\nkind = \"openai\"\nbase_url = \"http://{}/v1\"\n\
         [[model]]\nname = \"m\"\n[[model.deployment]]\nprovider = \"a\"\n[[model.deployment]]\nprovider = \"b\"\n",
        dead(),
        dead()
    );
    let (url, _gw) = start(&text).await;
    let ask = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let tries = |h: &serde_json::Value| -> u64 {
        h["models"]["m"]
            .as_array()
            .expect("deployments")
            .iter()
            .map(|d| d["requests"].as_u64().unwrap_or(0))
            .sum()
    };
    assert_eq!(chat_json(&url, ask).await.0, 503);
    let before = tries(&health(&url).await);
    let h = health(&url).await;
    assert!(
        h["models"]["m"]
            .as_array()
            .expect("deployments")
            .iter()
            .all(|d| d["ejected"] == true),
        "{h}"
    );
    for _ in 0..3 {
        assert_eq!(chat_json(&url, ask).await.0, 503);
    }
    assert_eq!(tries(&health(&url).await), before + 3);
}

/// A request refused for its body counts under the model it names where the gateway serves
/// that model, and under `-` where it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_body_counts_under_the_model_it_names() {
    let text = format!(
        "{}{}",
        emulated("gpu", "h100-sxm", ""),
        model("labelled", &[("gpu", "")])
    );
    let (url, _gw) = start(&text).await;
    for name in ["labelled", "no-such-model"] {
        let (status, _) = chat_json(
            &url,
            &format!(
                r#"{{"model":"{name}","messages":[{{"role":"user","content":"hi"}}],"max_tokens":0}}"#
            ),
        )
        .await;
        assert_eq!(status, 400);
    }
    let line = |m: &str| {
        format!(
            r#"switchyard_requests_total{{model="{m}",provider="none",outcome="client_error"}}"#
        )
    };
    assert_eq!(metric(&url, &line("labelled")).await, Some(1.0));
    assert!(metric(&url, &line("no-such-model")).await.is_none());
}

/// Every answer names itself in `x-request-id`, as OpenAI's do, refusals and unknown routes
/// too; each its own, or the client's where it sent one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_a_request_id() {
    let text = format!(
        "{}{}",
        emulated("gpu", "h100-sxm", ""),
        model("m", &[("gpu", "")])
    );
    let (url, _gw) = start(&text).await;
    let client = reqwest::Client::new();
    let id_of = |r: &reqwest::Response| {
        r.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let body = r#"{"model":"m","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut seen = std::collections::HashSet::new();
    for (path, body, status) in [
        ("/chat/completions", body, 200),
        ("/chat/completions", body, 200),
        ("/chat/completions", "{", 400),
        ("/nowhere", body, 404),
    ] {
        let r = client
            .post(format!("{url}{path}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status(), status, "{path} {body}");
        let id = id_of(&r).unwrap_or_else(|| panic!("{path} {body}: no x-request-id"));
        assert!(id.starts_with("req_") && seen.insert(id.clone()), "{id}");
    }
    let r = client
        .post(format!("{url}/chat/completions"))
        .header("content-type", "application/json")
        .header("x-request-id", "mine-42")
        .body(body)
        .send()
        .await
        .expect("sent");
    assert_eq!(id_of(&r).as_deref(), Some("mine-42"));
    // A body in an encoding the gateway does not read is told as such, not as bad JSON.
    let r = client
        .post(format!("{url}/chat/completions"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(vec![0x1f_u8, 0x8b, 8, 0])
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 415);
    let v: serde_json::Value = serde_json::from_str(&r.text().await.expect("body")).expect("json");
    assert_eq!(v["error"]["code"], "unsupported_content_encoding", "{v}");
}

/// An emulated provider's whole (unstreamed) answer feeds the TTFT and TPOT histograms as a
/// stream does: the gateway makes its tokens, so it sees when they come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emulated_whole_answer_is_timed_as_a_stream_is() {
    let text = format!(
        "{}{}",
        emulated("timedgpu", "h100-sxm", ""),
        model("timed-whole", &[("timedgpu", "")])
    );
    let (url, _gw) = start(&text).await;
    for _ in 0..2 {
        let (status, body) = chat_json(
            &url,
            r#"{"model":"timed-whole","max_tokens":4,"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let text = reqwest::get(url.replace("/v1", "/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    for name in [
        "gen_ai_server_time_to_first_token_seconds_count",
        "gen_ai_server_time_per_output_token_seconds_count",
    ] {
        let count = text
            .lines()
            .find(|l| l.starts_with(name) && l.contains("model=\"timed-whole\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok());
        assert_eq!(count, Some(2.0), "{name}: {text}");
    }
}

/// A fresh directory under the system's temporary one for a test's files.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("switchyard-gateway-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// With a spend file, what a key has spent of its day outlives the gateway: a key in debt
/// when the gateway stops is still refused when it starts again, and a key the file does
/// not name starts full. The file names keys, never their secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_spending_is_kept_across_a_restart() {
    std::env::set_var("SWITCHYARD_TEST_KEY_KEPT", "secret-kept");
    std::env::set_var("SWITCHYARD_TEST_KEY_NEW", "secret-new");
    let dir = scratch("kept");
    let file = dir.join("spend.json");
    let prices = "usd_per_mtok = 1000000\ninput_usd_per_mtok = 500000";
    let key = |name: &str, env: &str| {
        format!("[[key]]\nname = \"{name}\"\nkey_env = \"{env}\"\nusd_per_day = 30\n")
    };
    let base = format!(
        "[server]\nspend_file = \"{}\"\n{}{}{}",
        file.display(),
        emulated("gpu", "h100-sxm", ""),
        model("spender", &[("gpu", prices)]),
        key("kept", "SWITCHYARD_TEST_KEY_KEPT"),
    );
    let (cat, params) = statics();
    let run = |text: String| async move {
        let cfg = Config::parse(&text, "test.toml").expect("config");
        let gw = Gateway::new(&cfg, &text, "test.toml", cat, params).expect("gateway");
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/v1", l.local_addr().expect("addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(l, gw, async {
            let _ = stopped.await;
        }));
        (url, stop, server)
    };
    let ask = |url: String, secret: &'static str| async move {
        reqwest::Client::new()
            .post(format!("{url}/chat/completions"))
            .bearer_auth(secret)
            .body(r#"{"model":"spender","messages":[{"role":"user","content":"hi"}],"max_tokens":20}"#)
            .send()
            .await
            .expect("sent")
    };
    // The key's day is $30 and its first two requests cost more: it ends in debt.
    let (url, stop, server) = run(base.clone()).await;
    for _ in 0..2 {
        assert_eq!(ask(url.clone(), "secret-kept").await.status(), 200);
    }
    let (_, body) = refused(ask(url, "secret-kept").await).await;
    assert_eq!(body["error"]["code"], "insufficient_quota", "{body}");
    // Stopped, the gateway writes the debt down.
    stop.send(()).expect("stop");
    server.await.expect("joined").expect("served");
    let text = std::fs::read_to_string(&file).expect("spend file");
    let saved: serde_json::Value = serde_json::from_str(&text).expect("json");
    let left = saved["keys"]["kept"]["usd_left"]
        .as_f64()
        .expect("usd_left");
    assert!(left < 0.0, "{text}");
    assert!(!text.contains("secret"), "{text}");
    // Started again, with a second key: the first is still in debt, the new one is full.
    let again = format!("{base}{}", key("new", "SWITCHYARD_TEST_KEY_NEW"));
    let (url, stop, server) = run(again).await;
    let (wait, body) = refused(ask(url.clone(), "secret-kept").await).await;
    assert_eq!(body["error"]["code"], "insufficient_quota", "{body}");
    // The debt takes its share of a $30 day to repay, less the moments since it was saved.
    let days = wait as f64 / 86_400.0;
    assert!((days - -left / 30.0).abs() < 0.001, "{wait} s for ${left}");
    assert_eq!(ask(url, "secret-new").await.status(), 200);
    stop.send(()).expect("stop");
    server.await.expect("joined").expect("served");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A spend file that cannot be read stops the gateway at start, naming the configuration's
/// field and the file's line, rather than refill every key; so does one that keeps nothing,
/// and one that cannot be written.
#[test]
fn a_bad_spend_file_stops_the_gateway_at_start() {
    let (cat, params) = statics();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _g = rt.enter();
    std::env::set_var("SWITCHYARD_TEST_KEY_SF", "secret-sf");
    let dir = scratch("bad");
    let file = dir.join("spend.json");
    let build = |server: &str, key: &str| {
        let text = format!(
            "[server]\n{server}\n{}{}[[key]]\nname = \"k\"\nkey_env = \"SWITCHYARD_TEST_KEY_SF\"\n{key}\n",
            emulated("gpu", "h100-sxm", ""),
            model("m", &[("gpu", "usd_per_mtok = 1")])
        );
        let cfg = Config::parse(&text, "g.toml").expect("parses");
        Gateway::new(&cfg, &text, "g.toml", cat, params)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let line = format!("spend_file = \"{}\"", file.display());
    let shown = file.display().to_string();
    for (content, needles) in [
        (
            "{\"saved_at_unix_s\": 1,\n \"keys\": {\"k\": ",
            vec!["line 2"],
        ),
        (
            "{\"saved_at_unix_s\": 1, \"keys\": {\"k\": {\"usd_left\": 1, \"usd\": 2}}}",
            vec!["unknown field `usd`"],
        ),
        (
            "{\"saved_at_unix_s\": 1, \"keys\": {\"k\": {\"usd_left\": 1, \"usd_per_day\": 5},\n \"k\": {\"usd_left\": 2, \"usd_per_day\": 5}}}",
            vec!["key `k` is named twice"],
        ),
        (
            "{\"saved_at_unix_s\": 1, \"keys\": {\"k\": {\"usd_left\": -1e20, \"usd_per_day\": 5}}}",
            vec!["`usd_left` must be from -10^12"],
        ),
        ("42", vec!["an object of `saved_at_unix_s` and `keys`"]),
    ] {
        std::fs::write(&file, content).expect("write");
        let e = build(&line, "usd_per_day = 5").expect_err("refused");
        for n in ["g.toml", "line 2", "spend_file", &shown]
            .into_iter()
            .chain(needles)
        {
            assert!(e.contains(n), "`{n}` missing from {e}");
        }
    }
    // A good file is read, and rewritten at start.
    std::fs::write(&file, "{\"saved_at_unix_s\": 1, \"keys\": {}}").expect("write");
    build(&line, "usd_per_day = 5").expect("a good file");
    let now: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("json");
    assert_eq!(now["keys"]["k"]["usd_left"], 5.0, "{now}");
    // No key with dollars: nothing to keep.
    let e = build(&line, "").expect_err("refused");
    assert!(e.contains("spend_file") && e.contains("usd_per_day"), "{e}");
    // A directory that does not exist.
    let nowhere = format!(
        "spend_file = \"{}\"",
        dir.join("no/such/spend.json").display()
    );
    let e = build(&nowhere, "usd_per_day = 5").expect_err("refused");
    assert!(e.contains("cannot be made"), "{e}");
    // No file named at all.
    let e = build("spend_file = \" \"", "usd_per_day = 5").expect_err("refused");
    assert!(e.contains("spend_file") && e.contains("is empty"), "{e}");
    // One gateway at a time: a second on the same file is refused while the first runs,
    // and nothing is left beside the file but its lock.
    let text = format!(
        "[server]\n{line}\n{}{}[[key]]\nname = \"k\"\nkey_env = \"SWITCHYARD_TEST_KEY_SF\"\nusd_per_day = 5\n",
        emulated("gpu", "h100-sxm", ""),
        model("m", &[("gpu", "usd_per_mtok = 1")])
    );
    let cfg = Config::parse(&text, "g.toml").expect("parses");
    let first = Gateway::new(&cfg, &text, "g.toml", cat, params).expect("the first");
    let e = build(&line, "usd_per_day = 5").expect_err("refused");
    assert!(e.contains("another gateway"), "{e}");
    drop(first);
    build(&line, "usd_per_day = 5").expect("the first has stopped");
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["spend.json", "spend.json.lock"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A key that one run of the gateway leaves out keeps its debt in the spend file, refilling
/// at its own rate, and comes back with it; a spend file named by a symbolic link is written
/// through the link; a relative file is found beside the configuration.
#[test]
fn a_spend_file_keeps_keys_left_out_follows_links_and_sits_beside_its_configuration() {
    let (cat, params) = statics();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _g = rt.enter();
    std::env::set_var("SWITCHYARD_TEST_KEY_SA", "secret-sa");
    std::env::set_var("SWITCHYARD_TEST_KEY_SB", "secret-sb");
    let dir = scratch("kept-out");
    std::fs::create_dir_all(dir.join("volume")).expect("volume");
    std::fs::create_dir_all(dir.join("sub")).expect("sub");
    // A chain of two links, the second relative, to a file yet to be made.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("../volume/real.json", dir.join("sub/l1.json")).expect("link");
        std::os::unix::fs::symlink(dir.join("sub/l1.json"), dir.join("link.json")).expect("link");
    }
    let key = |name: &str, env: &str| {
        format!("[[key]]\nname = \"{name}\"\nkey_env = \"{env}\"\nusd_per_day = 10\n")
    };
    let config = dir.join("gateway.toml");
    let run = |keys: &str| {
        let text = format!(
            "[server]\nspend_file = \"link.json\"\n{}{}{keys}",
            emulated("gpu", "h100-sxm", ""),
            model("m", &[("gpu", "usd_per_mtok = 1")])
        );
        std::fs::write(&config, &text).expect("config");
        let origin = config.display().to_string();
        let cfg = Config::parse(&text, &origin).expect("parses");
        Gateway::new(&cfg, &text, &origin, cat, params).expect("gateway")
    };
    let both = format!(
        "{}{}",
        key("a", "SWITCHYARD_TEST_KEY_SA"),
        key("b", "SWITCHYARD_TEST_KEY_SB")
    );
    let real = dir.join("volume/real.json");
    let saved = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(&real).expect("the link's target"))
            .expect("json")
    };
    // b owes $5 (written by hand: a day's $10 spent and $5 more).
    let gw = run(&both);
    drop(gw);
    let mut state = saved();
    state["keys"]["b"]["usd_left"] = serde_json::json!(-5.0);
    std::fs::write(&real, state.to_string()).expect("write");
    // A run without b keeps b's debt, and the link stays a link.
    drop(run(&key("a", "SWITCHYARD_TEST_KEY_SA")));
    let kept = saved();
    let b = kept["keys"]["b"]["usd_left"].as_f64().expect("b kept");
    assert!((-5.0..-4.99).contains(&b), "{kept}");
    assert_eq!(kept["keys"]["b"]["usd_per_day"], 10.0, "{kept}");
    #[cfg(unix)]
    for link in ["link.json", "sub/l1.json"] {
        assert!(
            std::fs::symlink_metadata(dir.join(link))
                .expect("link")
                .file_type()
                .is_symlink(),
            "{link}"
        );
    }
    // b is back in the next run, still in debt.
    let gw = run(&both);
    let back = gw.save_spend().map(|_| saved()).expect("saved");
    let b = back["keys"]["b"]["usd_left"].as_f64().expect("b");
    assert!((-5.0..-4.99).contains(&b), "{back}");
    // That save was the last, as the process ends after it: no other starts a file it would
    // leave half written.
    assert!(!gw.save_spend().expect("nothing to do"));
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The dollars a spend file keeps: what the key may still spend, with what its requests in
/// flight hold counted as unspent (they end unanswered with the gateway), refilled on
/// restore for the time the gateway was down.
#[test]
fn the_spend_state_counts_held_dollars_as_left_and_refills_while_down() {
    use switchyard_gateway::keys::{Allowance, Key, Keys};
    let keys_with = |name: &str| {
        let mut keys = Keys::default();
        keys.insert(
            format!("secret-{name}"),
            Key::new(
                name,
                Default::default(),
                Allowance {
                    usd_per_day: Some(10.0),
                    ..Allowance::default()
                },
            ),
        );
        keys
    };
    let keys = keys_with("state");
    let key = keys
        .authenticate(Some("Bearer secret-state"))
        .expect("known");
    let now = Instant::now();
    let held = key.admit((0, 4.0), now).expect("admitted");
    let state = keys.spend_state(now, 1000.0);
    assert_eq!(state.keys["state"].usd_left, 10.0);
    key.charge(0, 0, 3.0, now);
    drop(held);
    let charged = keys.charges();
    let state = keys.spend_state(now, 1000.0);
    // A moment's refill at most ($10 a day is 0.1 mUSD a second).
    assert!(
        (state.keys["state"].usd_left - 7.0).abs() < 1e-3,
        "{state:?}"
    );
    assert!(charged > 0);
    // Six hours later a quarter of a day's $10 has come back.
    let later = keys_with("state");
    later.restore_spend(&state, Instant::now(), 1000.0 + 6.0 * 3600.0);
    let back = later.spend_state(Instant::now(), 1000.0 + 6.0 * 3600.0);
    assert!((back.keys["state"].usd_left - 9.5).abs() < 1e-3, "{back:?}");
    // Never past the day's allowance.
    later.restore_spend(&state, Instant::now(), 1000.0 + 86_400.0);
    let full = later.spend_state(Instant::now(), 1000.0 + 86_400.0);
    assert_eq!(full.keys["state"].usd_left, 10.0);
}
