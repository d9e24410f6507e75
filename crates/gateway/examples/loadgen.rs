//! A closed-loop load generator for gateway benchmarks: `concurrency` clients each send a
//! chat completion, read the whole answer (every chunk of a stream), and send the next, for
//! `seconds` after a warm-up. Prints one JSON line: requests per second and latency
//! percentiles in milliseconds.
//!
//! `loadgen URL CONCURRENCY SECONDS [stream]`

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: loadgen URL CONCURRENCY SECONDS [stream]");
        std::process::exit(2);
    }
    let url = args[1].clone();
    let conc: usize = args[2].parse().unwrap_or(1);
    let secs: f64 = args[3].parse().unwrap_or(5.0);
    let stream = args.get(4).is_some_and(|a| a == "stream");
    let body = format!(
        r#"{{"model":"mock","messages":[{{"role":"user","content":"hello"}}],"max_tokens":8,"stream":{stream}}}"#
    );
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(conc * 2)
        .build()
        .unwrap_or_default();
    let warm = Duration::from_secs_f64((secs / 5.0).min(1.0));
    let start = Instant::now();
    let end = start + warm + Duration::from_secs_f64(secs);
    let lat = Arc::new(Mutex::new(Vec::<f64>::new()));
    let errors = Arc::new(Mutex::new(0u64));
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (client, url, body, lat, errors) = (
            client.clone(),
            url.clone(),
            body.clone(),
            Arc::clone(&lat),
            Arc::clone(&errors),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let t = Instant::now();
                let ok = match client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    _ => false,
                };
                let dt = t.elapsed().as_secs_f64() * 1000.0;
                if t >= start + warm {
                    if ok {
                        if let Ok(mut l) = lat.lock() {
                            l.push(dt);
                        }
                    } else if let Ok(mut e) = errors.lock() {
                        *e += 1;
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut l = lat.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort_by(f64::total_cmp);
    let q = |p: f64| {
        if l.is_empty() {
            f64::NAN
        } else {
            l[((p * l.len() as f64).ceil() as usize).clamp(1, l.len()) - 1]
        }
    };
    let errors = errors.lock().map(|e| *e).unwrap_or(0);
    println!(
        "{{\"concurrency\":{conc},\"stream\":{stream},\"requests\":{},\"errors\":{errors},\"rate\":{:.1},\"p50_ms\":{:.3},\"p99_ms\":{:.3}}}",
        l.len(),
        l.len() as f64 / secs,
        q(0.5),
        q(0.99)
    );
}
