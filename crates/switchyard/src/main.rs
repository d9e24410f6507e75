//! The `switchyard` command line: the only place that reads files and prints.

#![allow(clippy::print_stdout, clippy::print_stderr, clippy::print_literal)]

/// Prints a line to standard output. Once a reader has closed the pipe (`switchyard compare
/// | head`) nothing more is printed, and the command runs on to its own exit status (a plan
/// that does not hold still exits 1).
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if !crate::STDOUT_CLOSED.load(std::sync::atomic::Ordering::Relaxed) {
            if let Err(e) = writeln!(std::io::stdout(), $($t)*) {
                crate::stdout_failed(e);
            }
        }
    }};
}

/// Prints to standard error, a closed one being no reason to panic (`eprint!` would).
macro_rules! err {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($t)*);
    }};
}

/// Whether standard output's reader has gone (see `out!`).
static STDOUT_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The first failure to write to standard output other than a closed pipe (a full disk),
/// which fails the command: its output is not whole.
static STDOUT_ERROR: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Standard output failed with `e`: a reader that went away (`head`) ends the output
/// quietly; anything else is remembered, the output stopped, and the command fails.
fn stdout_failed(e: std::io::Error) {
    if e.kind() != std::io::ErrorKind::BrokenPipe {
        let _ = STDOUT_ERROR.set(e.to_string());
    }
    STDOUT_CLOSED.store(true, std::sync::atomic::Ordering::Relaxed);
}

mod input;
mod plan;
mod predict;
mod serve;
mod simulate;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Serve, predict, simulate and plan LLM inference across wafer-scale and GPU fleets.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about)]
struct Cli {
    /// A TOML file of extra `[[system]]`, `[[model]]` and `[[workload]]` entries (same id
    /// replaces built-in); give it again for more files, read in order, a later file's entry
    /// replacing an earlier one's of the same id.
    #[arg(long, global = true, value_name = "FILE")]
    catalog: Vec<std::path::PathBuf>,
    /// A TOML file of model parameters (efficiencies, latencies) that replace the calibrated
    /// defaults, as `switchyard calibrate` writes.
    #[arg(long, global = true, value_name = "FILE")]
    params: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Predict how one model runs on one system.
    Estimate(predict::EstimateArgs),
    /// Every system side by side for one model, each at its best layout.
    Compare(predict::CompareArgs),
    /// Predict published measurements and report the error.
    Validate(predict::ValidateArgs),
    /// Fit the model's efficiencies and latencies to measurements, and write them as a
    /// parameters file for --params.
    Calibrate(predict::CalibrateArgs),
    /// List the catalog with sources.
    Catalog(predict::CatalogArgs),
    /// Simulate a fleet under a workload: trace replay, routing, failures.
    Simulate(simulate::SimulateArgs),
    /// Serve the OpenAI-compatible gateway over real and emulated providers.
    Serve(serve::ServeArgs),
    /// Plan phased capacity across providers, robust to losing any one.
    Plan(plan::PlanArgs),
}

/// An error that is the user's to fix: printed as one line, exit status 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Creates the folder an `--out` names; a path that is a file, or where no folder can be
/// made (no permission, a read-only place), is the user's to change (status 2, named).
pub(crate) fn make_out_dir(dir: &std::path::Path, holds: &str) -> anyhow::Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(UsageError(format!(
            "--out {}: is a file; give a folder for {holds}",
            dir.display()
        ))
        .into());
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        UsageError(format!(
            "--out {}: cannot create the folder ({e}); give one where {holds} can be written",
            dir.display()
        ))
        .into()
    })
}

/// `--params` given more than once, before or after the command: clap keeps the last one and
/// drops the others without a word, so the user is told instead (parameters files do not
/// add up, unlike `--catalog` files).
fn given_twice() -> Option<&'static str> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    ["--params"].into_iter().find(|flag| {
        let prefix = format!("{flag}=");
        args.iter()
            .filter(|a| a.as_str() == *flag || a.starts_with(&prefix))
            .count()
            > 1
    })
}

fn main() -> ExitCode {
    if let Some(flag) = given_twice() {
        err!("error: {flag} is given more than once; give it once (one file: put every value in it)\n");
        return ExitCode::from(2);
    }
    // A mistake on the command line is one line, as every other error is: clap's own
    // message, without the usage and the tip to try --help after it.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and the version are not errors, and a bare command shows its help.
        Err(e)
            if !e.use_stderr()
                || e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            e.exit()
        }
        Err(e) => {
            let text = e.render().to_string();
            let said: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.is_empty())
                .collect();
            // Lines after one ending in `:` continue it; others (a tip) are their own clause.
            let mut line = String::new();
            for l in said {
                if !line.is_empty() {
                    line.push_str(if line.ends_with(':') { " " } else { "; " });
                }
                line.push_str(l);
            }
            err!("{line} (see --help)\n");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .with_target(false)
        .init();
    let result = predict::load_catalog(&cli.catalog).and_then(|cat| {
        let p = predict::load_params(cli.params.as_deref())?;
        match cli.command {
            Command::Estimate(a) => predict::estimate(&cat, &p, &a),
            Command::Compare(a) => predict::compare(&cat, &p, &a),
            Command::Validate(a) => predict::validate(&cat, &p, &a),
            Command::Calibrate(a) => predict::calibrate(
                &cat,
                &p,
                &a,
                cli.catalog
                    .iter()
                    .map(|f| ("--catalog", f.as_path()))
                    .chain(cli.params.as_deref().map(|f| ("--params", f)))
                    .collect(),
            ),
            Command::Catalog(a) => predict::catalog(&cat, &p, &a),
            Command::Simulate(a) => simulate::simulate(&cat, &p, &a),
            Command::Serve(a) => serve::serve(cat, p, &a),
            Command::Plan(a) => plan::plan(&cat, &p, &a),
        }
    });
    // Whatever standard output still holds, and whether any of it was lost.
    if let Err(e) = std::io::Write::flush(&mut std::io::stdout()) {
        stdout_failed(e);
    }
    let result = match (result, STDOUT_ERROR.get()) {
        (Ok(()), Some(e)) => Err(anyhow::anyhow!("writing to standard output: {e}")),
        (r, _) => r,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<UsageError>().is_some() => {
            err!("error: {e}\n");
            ExitCode::from(2)
        }
        Err(e) => {
            err!("error: {e:#}\n");
            ExitCode::FAILURE
        }
    }
}
