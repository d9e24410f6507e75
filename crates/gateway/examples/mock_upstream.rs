//! A zero-delay OpenAI-compatible upstream for gateway benchmarks: answers every chat or
//! completion request at once, with a fixed JSON body or a fixed stream of eight token
//! chunks, so that what a benchmark measures is the gateway in front of it.
//!
//! `cargo run --release -p switchyard-gateway --example mock_upstream -- 127.0.0.1:9100`

#![allow(clippy::print_stdout)]

use axum::body::Bytes;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

const FULL: &str = r#"{"id":"chatcmpl-mock","object":"chat.completion","created":0,"model":"mock","choices":[{"index":0,"message":{"role":"assistant","content":"one two three four five six seven eight"},"finish_reason":"stop","logprobs":null}],"usage":{"prompt_tokens":8,"completion_tokens":8,"total_tokens":16}}"#;

fn stream_body() -> String {
    let mut s = String::new();
    for w in [
        "one", "two", "three", "four", "five", "six", "seven", "eight",
    ] {
        s += &format!(
            "data: {{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"mock\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{w} \"}},\"finish_reason\":null}}]}}\n\n"
        );
    }
    s += "data: {\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"mock\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
    s
}

async fn complete(body: Bytes) -> Response {
    let streaming = body.windows(13).any(|w| w == b"\"stream\":true")
        || body.windows(14).any(|w| w == b"\"stream\": true");
    if streaming {
        ([(header::CONTENT_TYPE, "text/event-stream")], stream_body()).into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/json")], FULL).into_response()
    }
}

async fn info() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"object":"list","data":[{"id":"mock","object":"model","created":0,"owned_by":"mock"}]}"#,
    )
        .into_response()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9100".into());
    let app = Router::new()
        .route("/v1/chat/completions", post(complete))
        .route("/v1/completions", post(complete))
        .route("/chat/completions", post(complete))
        .fallback(get(info));
    let l = tokio::net::TcpListener::bind(&addr).await?;
    use axum::serve::ListenerExt;
    let l = l.tap_io(|t| {
        let _ = t.set_nodelay(true);
    });
    println!("mock upstream on http://{addr}");
    axum::serve(l, app).await
}
