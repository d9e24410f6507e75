//! `switchyard serve`: the OpenAI-compatible gateway.

use crate::input::{read_text, Kind};
use crate::UsageError;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::sync::Arc;
use switchyard_gateway::config::DEFAULT_CONFIG;
use switchyard_gateway::{serve as run_server, Config, Gateway};
use switchyard_perf::{Catalog, Params};

/// Arguments of `serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Gateway configuration (TOML); without it, two emulated providers (CS-3 and H200)
    /// serving llama-3.1-8b and llama-3.1-70b.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on, overriding the configuration (port 0: any free port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Worker threads (default: one per core). With 1 the gateway runs on a single-threaded
    /// runtime, which wakes fastest when it has one core to itself.
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
}

/// Runs `serve` until interrupted.
pub fn serve(cat: Catalog, params: Params, a: &ServeArgs) -> Result<()> {
    let (text, origin) = match &a.config {
        Some(p) => (read_text(p, Kind::Settings)?, p.display().to_string()),
        None => (
            DEFAULT_CONFIG.to_string(),
            "built-in gateway configuration".to_string(),
        ),
    };
    let config = Config::parse(&text, &origin).map_err(|e| UsageError(e.to_string()))?;
    // The gateway lives until the process ends; its emulated providers borrow the catalog.
    let catalog: &'static Catalog = Box::leak(Box::new(cat));
    let params: &'static Params = Box::leak(Box::new(params));
    let rt = match a.workers {
        // Far beyond any core count; more threads only exhaust memory.
        Some(n) if !(1..=1024).contains(&n) => {
            return Err(UsageError("--workers must be from 1 to 1,024".into()).into())
        }
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    }
    .context("starting the runtime")?;
    rt.block_on(async move {
        let gw = Gateway::new(&config, &text, &origin, catalog, params)
            .map_err(|e| UsageError(e.to_string()))?;
        let addr = a
            .listen
            .clone()
            .unwrap_or_else(|| gw.listen_addr().to_string());
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| UsageError(format!("cannot listen on {addr}: {e}")))?;
        let local = listener.local_addr()?;
        out!(
            "switchyard gateway on http://{local}/v1 serving {}",
            gw.model_names().join(", ")
        );
        // The first interrupt or termination (what container runtimes and service managers
        // send) stops taking connections and lets the requests in flight finish; a second
        // one does not wait for them.
        let last = Arc::clone(&gw);
        let shutdown = async move {
            stop_signal().await;
            err!("shutting down: finishing the requests in flight (interrupt again to stop now)\n");
            tokio::spawn(async move {
                stop_signal().await;
                // What was spent so far is kept; the requests cut off now are not charged.
                if let Err(e) = last.save_spend() {
                    err!("the keys' spending could not be saved: {e}\n");
                }
                std::process::exit(130);
            });
        };
        run_server(listener, gw, shutdown).await?;
        Ok(())
    })
}

/// The next SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
