//! `switchyard serve` as a user runs it: real processes over loopback, the official OpenAI
//! SDK, and providers that are down, slow, failing or dying mid-stream.

use super::temp_file;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A gateway process, killed when dropped.
struct Gateway {
    child: Child,
    addr: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `switchyard serve` on a free port and waits for its address line.
fn start(config: Option<&PathBuf>) -> Gateway {
    start_with_env(config, &[])
}

/// As [`start`], with extra environment variables for the gateway process.
fn start_with_env(config: Option<&PathBuf>, env: &[(&str, &str)]) -> Gateway {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.envs(env.iter().copied());
    cmd.args(["serve", "--listen", "127.0.0.1:0"]);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("gateway starts");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("address line");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split("/v1").next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    Gateway { child, addr }
}

/// One HTTP/1.1 request; returns the status and the raw response body bytes as text.
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

fn chat(model: &str, stream: bool, max_tokens: u32) -> String {
    format!(
        r#"{{"model":"{model}","messages":[{{"role":"user","content":"hello"}}],"max_tokens":{max_tokens},"stream":{stream}}}"#
    )
}

/// A stream of `max_tokens` from Llama 3.1 70B through the gateway at `addr`, read until its
/// first three events: the connection, and the bytes read.
fn stream_begun(addr: &str, max_tokens: u32) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let body = chat("llama-3.1-70b", true, max_tokens);
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let start_t = Instant::now();
    while String::from_utf8_lossy(&seen).matches("data: ").count() < 3 {
        let n = s.read(&mut buf).expect("read");
        assert!(
            n > 0,
            "stream ended early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
        assert!(start_t.elapsed() < Duration::from_secs(20));
    }
    (s, seen)
}

fn python() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let py = root.join(".venv/bin/python");
    assert!(
        py.exists(),
        "the OpenAI SDK tests need {}: run .ci/run, or `python3 -m venv .venv && .venv/bin/pip install openai==3.57.0`",
        py.display()
    );
    py
}

#[test]
fn the_official_openai_sdk_works_unchanged() {
    let gw = start(None);
    run_sdk_checks(&gw, &[]);
}

/// Runs `openai_sdk.py` against `gw` with `args` after the base URL; fails the test with the
/// script's output if any check fails.
fn run_sdk_checks(gw: &Gateway, args: &[&str]) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/cli/openai_sdk.py");
    let o = Command::new(python())
        .arg(script)
        .arg(format!("http://{}/v1", gw.addr))
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn the_openai_sdk_meets_client_keys_as_typed_errors() {
    let config = format!(
        "{}\n[[key]]\nname = \"team-a\"\nkey_env = \"SWITCHYARD_SDK_KEY\"\nmodels = [\"llama-3.1-8b\"]\nrequests_per_minute = 2\n",
        include_str!("../../../gateway/src/default.toml")
    );
    let path = temp_file("keys.toml", &config);
    let gw = start_with_env(Some(&path), &[("SWITCHYARD_SDK_KEY", "sk-team-a")]);
    run_sdk_checks(&gw, &["keys"]);
}

#[test]
fn errors_have_the_openai_shape_and_status() {
    let gw = start(None);
    let (s, b) = http(&gw.addr, "POST", "/v1/chat/completions", "{\"model\":");
    assert_eq!(s, 400, "{b}");
    assert!(
        b.contains("\"type\":\"invalid_request_error\"") && b.contains("not valid JSON"),
        "{b}"
    );
    let (s, b) = http(
        &gw.addr,
        "POST",
        "/v1/chat/completions",
        r#"{"messages":[]}"#,
    );
    assert_eq!(s, 400);
    assert!(b.contains("\"param\":\"model\""), "{b}");
    let (s, b) = http(
        &gw.addr,
        "POST",
        "/v1/chat/completions",
        &chat("llama-3.1-8b", false, 0),
    );
    assert_eq!(s, 400);
    assert!(b.contains("\"param\":\"max_tokens\""), "{b}");
    let (s, b) = http(
        &gw.addr,
        "POST",
        "/v1/chat/completions",
        &chat("gpt-17", false, 5),
    );
    assert_eq!(s, 404);
    assert!(b.contains("model_not_found"), "{b}");
    // A body declared over the 4 MiB limit is refused from its headers alone, before the
    // client has sent it (so no unread bytes can reset the connection under the answer).
    let mut raw = TcpStream::connect(&gw.addr).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        raw,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        5 << 20
    )
    .expect("send");
    let mut answer = String::new();
    let _ = raw.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("request_too_large"), "{answer}");
    // A body over the limit without a declared length (chunked) is cut off while reading.
    let mut raw = TcpStream::connect(&gw.addr).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        raw,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let chunk = "x".repeat(1 << 20);
    for _ in 0..5 {
        if write!(raw, "{:x}\r\n{chunk}\r\n", chunk.len()).is_err() {
            break;
        }
    }
    let mut answer = String::new();
    let _ = raw.read_to_string(&mut answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 413"),
        "{answer}"
    );
    let (s, b) = http(&gw.addr, "GET", "/v2/nothing", "");
    assert_eq!(s, 404);
    assert!(b.contains("\"error\""), "{b}");
    let (s, b) = http(&gw.addr, "GET", "/health", "");
    assert_eq!(s, 200);
    assert!(b.contains("cerebras-cs3"), "{b}");
}

/// An emulated provider's configuration with `faults`.
fn upstream(name: &str, faults: &str) -> PathBuf {
    temp_file(
        &format!("{name}.toml"),
        &format!(
            r#"
[[provider]]
name = "{name}"
kind = "emulated"
system = "h100-sxm"
chips = 1
[provider.faults]
{faults}
[[model]]
name = "llama-3.1-8b"
[[model.deployment]]
provider = "{name}"
"#
        ),
    )
}

/// A port nothing listens on.
fn dead_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = l.local_addr().expect("addr").to_string();
    drop(l);
    a
}

#[test]
fn every_request_succeeds_while_a_healthy_provider_remains() {
    let ok = start(Some(&upstream("ok", "")));
    let errors = start(Some(&upstream("errors", "error_rate = 1.0")));
    let slow = start(Some(&upstream("slow", "spike_rate = 1.0\nspike_ms = 5000")));
    let dead = dead_addr();
    // Priority order puts every broken provider before the healthy one.
    let front = temp_file(
        "front.toml",
        &format!(
            r#"
[timeouts]
first_token_ms = 800
attempt_ms = 800
total_ms = 4000
[retries]
max_attempts = 4
[[provider]]
name = "dead"
kind = "openai"
base_url = "http://{dead}/v1"
[[provider]]
name = "slow"
kind = "openai"
base_url = "http://{slow}/v1"
[[provider]]
name = "errors"
kind = "openai"
base_url = "http://{errors}/v1"
[[provider]]
name = "ok"
kind = "openai"
base_url = "http://{ok}/v1"
[[model]]
name = "m"
policy = "priority"
[[model.deployment]]
provider = "dead"
upstream_model = "llama-3.1-8b"
priority = 0
[[model.deployment]]
provider = "slow"
upstream_model = "llama-3.1-8b"
priority = 1
[[model.deployment]]
provider = "errors"
upstream_model = "llama-3.1-8b"
priority = 2
[[model.deployment]]
provider = "ok"
upstream_model = "llama-3.1-8b"
priority = 3
"#,
            slow = slow.addr,
            errors = errors.addr,
            ok = ok.addr
        ),
    );
    let gw = start(Some(&front));
    for k in 0..8 {
        let stream = k % 2 == 0;
        let (s, b) = http(
            &gw.addr,
            "POST",
            "/v1/chat/completions",
            &chat("m", stream, 6),
        );
        assert_eq!(s, 200, "request {k}: {b}");
        if stream {
            assert!(
                b.contains("[DONE]") && !b.contains("\"error\""),
                "request {k}: {b}"
            );
        } else {
            assert!(b.contains("\"chat.completion\""), "request {k}: {b}");
        }
    }
    let (_, health) = http(&gw.addr, "GET", "/health", "");
    let health: serde_json::Value = serde_json::from_str(&health).expect("health is JSON");
    let deps = health["models"]["m"].as_array().expect("deployments");
    for d in deps {
        let failures = d["failures"].as_u64().expect("failures");
        match d["provider"].as_str().expect("provider") {
            "ok" => assert_eq!(failures, 0, "{health}"),
            _ => assert!(failures > 0, "{health}"),
        }
    }
    let (_, metrics) = http(&gw.addr, "GET", "/metrics", "");
    assert!(metrics.contains("switchyard_fallbacks_total"), "{metrics}");
    assert!(
        metrics.contains("gen_ai_server_time_to_first_token_seconds_bucket"),
        "{metrics}"
    );
    assert!(metrics.contains("switchyard_ejections_total"), "{metrics}");
}

#[test]
fn a_provider_dying_mid_stream_reaches_the_client_as_an_error() {
    // Llama 3.1 70B on eight A100s: tens of milliseconds per token, time to kill it.
    let victim_cfg = temp_file(
        "victim.toml",
        r#"
[[provider]]
name = "victim"
kind = "emulated"
system = "a100-sxm"
chips = 8
[[model]]
name = "llama-3.1-70b"
[[model.deployment]]
provider = "victim"
"#,
    );
    let mut victim = start(Some(&victim_cfg));
    let front = temp_file(
        "front-mid.toml",
        &format!(
            r#"
[[provider]]
name = "victim"
kind = "openai"
base_url = "http://{}/v1"
[[model]]
name = "llama-3.1-70b"
[[model.deployment]]
provider = "victim"
"#,
            victim.addr
        ),
    );
    let gw = start(Some(&front));
    let (mut s, seen) = stream_begun(&gw.addr, 2000);
    victim.child.kill().expect("kill the provider");
    let _ = victim.child.wait();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let all = String::from_utf8_lossy(&seen).to_string() + &String::from_utf8_lossy(&rest);
    assert!(all.contains("\"error\""), "no error event: {all}");
    assert!(all.contains("mid-stream"), "{all}");
    assert!(
        !all.contains("[DONE]"),
        "a broken stream must not look complete: {all}"
    );
}

/// The README's configuration in full starts as written, with the two variables it says it
/// needs, and serves both of its deployments.
#[test]
fn the_readmes_full_configuration_starts() {
    let readme = include_str!("../../../../README.md");
    let start_at = readme
        .find("A configuration in full follows.")
        .expect("the section");
    let block = readme[start_at..]
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("its TOML");
    let path = temp_file("readme-gateway.toml", block);
    let gw = start_with_env(
        Some(&path),
        &[("GPU_CLOUD_KEY", "sk-upstream"), ("TEAM_A_KEY", "sk-team")],
    );
    let (status, body) = http(&gw.addr, "GET", "/health", "");
    assert_eq!(status, 200, "{body}");
    let h: serde_json::Value = serde_json::from_str(&body).expect("json");
    let deployments = h["models"]["llama-3.1-70b"].as_array().expect("the model");
    assert_eq!(deployments.len(), 2, "{h}");
}

#[test]
fn a_bad_config_names_the_file_line_and_field() {
    let bad = temp_file(
        "bad-gateway.toml",
        "[[provider]]\nname = \"p\"\nkind = \"grpc\"\n[[model]]\nname = \"m\"\n[[model.deployment]]\nprovider = \"p\"\n",
    );
    let o = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&bad)
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("bad-gateway.toml") && err.contains("line 3") && err.contains("field `kind`"),
        "{err}"
    );
}

#[test]
fn a_worker_count_past_any_machine_is_refused() {
    for n in ["0", "100000"] {
        let o = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["serve", "--listen", "127.0.0.1:0", "--workers", n])
            .output()
            .expect("runs");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{n}: {err}");
        assert!(
            err.contains("--workers must be from 1 to 1,024"),
            "{n}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{n}: {err}");
    }
}

/// SIGTERM, as container runtimes and service managers stop a service, drains as Ctrl-C
/// does: the stream in flight runs to its end, then the gateway exits.
#[cfg(unix)]
#[test]
fn a_termination_signal_lets_the_streams_in_flight_finish() {
    let mut gw = start(None);
    let (mut s, seen) = stream_begun(&gw.addr, 400);
    let pid = gw.child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let all = String::from_utf8_lossy(&seen).to_string() + &String::from_utf8_lossy(&rest);
    assert!(all.contains("[DONE]"), "the stream was cut: {all}");
    assert!(!all.contains("\"error\""), "{all}");
    let status = gw.child.wait().expect("the gateway exits");
    assert!(status.success(), "{status:?}");
}
