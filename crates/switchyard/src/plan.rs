//! `switchyard plan`: reads a planning scenario, plans every phase, confirms it by
//! simulation, prints the plan and writes its JSON and HTML.

use crate::input::{read_text, Kind};
use crate::UsageError;
use anyhow::{Context, Result};
use std::path::PathBuf;
use switchyard_perf::{Catalog, Params};
use switchyard_planner::{plan as run_plan, report, MwIs, Plan, PlanFile, WhatIf};

const DEFAULT_SCENARIO: &str = include_str!("../../../scenarios/plan-750mw.toml");

/// Arguments of `plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Planning scenario (TOML); without it, the built-in 750 MW scenario.
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Plan without this provider.
    #[arg(long, value_name = "PROVIDER")]
    lose: Option<String>,
    /// Multiply every class's demand.
    #[arg(long, value_name = "FACTOR", allow_negative_numbers = true)]
    demand_x: Option<f64>,
    /// Read every provider's megawatts as IT load or facility power.
    #[arg(long, value_name = "it|facility")]
    mw_is: Option<String>,
    /// Cost every catalog system on one basis: `rent`, the published hourly rate; `owned`,
    /// the purchase over its life plus electricity [default: the rent where one is
    /// published, else the purchase]; a provider's own price in the scenario stands.
    #[arg(long, value_enum)]
    cost: Option<crate::predict::CostBasisArg>,
    /// Folder for plan.json and plan.html.
    #[arg(long, value_name = "DIR", default_value = "plan-out")]
    out: PathBuf,
    /// Print the JSON instead of the tables.
    #[arg(long)]
    json: bool,
}

/// Runs `plan`.
pub fn plan(cat: &Catalog, params: &Params, a: &PlanArgs) -> Result<()> {
    let (text, origin) = match &a.scenario {
        Some(p) => (read_text(p, Kind::Settings)?, p.display().to_string()),
        None => (
            DEFAULT_SCENARIO.to_string(),
            "the built-in scenario (scenarios/plan-750mw.toml in the source)".to_string(),
        ),
    };
    let mw_is = match a.mw_is.as_deref() {
        None => None,
        Some("it") => Some(MwIs::It),
        Some("facility") => Some(MwIs::Facility),
        Some(other) => {
            return Err(
                UsageError(format!("--mw-is takes `it` or `facility`, not `{other}`")).into(),
            )
        }
    };
    // A million times either way is far past any forecast's error; beyond it demand rounds
    // to no replica, or to more than any catalog holds.
    if let Some(x) = a.demand_x {
        if !(1e-6..=1e6).contains(&x) {
            return Err(UsageError(format!(
                "--demand-x must be a factor from 0.000001 to 1,000,000, not {x}"
            ))
            .into());
        }
    }
    let file = PlanFile::parse(&text, &origin).map_err(|e| UsageError(e.to_string()))?;
    let what_if = WhatIf {
        lose: a.lose.clone(),
        demand_x: a.demand_x,
        mw_is,
        cost: a.cost.map(|c| match c {
            crate::predict::CostBasisArg::Rent => switchyard_perf::CostBasis::Rent,
            crate::predict::CostBasisArg::Owned => switchyard_perf::CostBasis::Owned,
        }),
    };
    // The folder first: a plan takes seconds, and a file in its place would waste them.
    crate::make_out_dir(&a.out, "plan.json and plan.html")?;
    let p = run_plan(&file, &text, &origin, cat, params, &what_if)
        .map_err(|e| UsageError(e.to_string()))?;
    let json = serde_json::to_string_pretty(&p)?;
    let json_path = a.out.join("plan.json");
    std::fs::write(&json_path, format!("{json}\n"))
        .with_context(|| format!("writing {}", json_path.display()))?;
    let html_path = a.out.join("plan.html");
    std::fs::write(&html_path, report::html(&p))
        .with_context(|| format!("writing {}", html_path.display()))?;
    if a.json {
        out!("{json}");
    } else {
        print_plan(&p);
        out!("");
        out!("plan JSON:   {}", json_path.display());
        out!("HTML report: {}", html_path.display());
    }
    // A plan that does not hold fails the command, so that a script can tell it from one
    // that does; its files are written all the same.
    let unmet = unmet(&p);
    if unmet.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "the plan does not hold: {}",
            unmet.join("; ")
        ))
    }
}

/// What a plan leaves unmet: phases without a plan, classes their simulation did not
/// confirm, and losses of a provider the rest would not ride out.
fn unmet(p: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    for ph in &p.phases {
        if ph.infeasible.is_some() {
            out.push(format!("phase {} has no plan", ph.phase));
            continue;
        }
        for c in ph.classes.iter().filter(|c| !c.confirmed) {
            out.push(format!(
                "phase {}: class `{}` not confirmed by simulation ({})",
                ph.phase,
                c.class,
                c.unconfirmed.as_deref().unwrap_or("no reason given")
            ));
        }
        for n in &ph.n_minus_1 {
            for (c, _, _) in n.classes.iter().filter(|(_, _, ok)| !ok) {
                out.push(format!(
                    "phase {}: class `{c}` fails without `{}`",
                    ph.phase, n.lost
                ));
            }
        }
    }
    out
}

fn print_plan(p: &Plan) {
    out!("{}", p.scenario);
    if !p.what_if.is_empty() {
        out!("what if: {}", p.what_if.join(", "));
    }
    out!(
        "rules: no provider need carry over {:.0}% of a class, N-1 keeps {:.0}% of each class, capacity counts each replica at {:.0}% of its peak{}; {} confirming simulations",
        p.rules.max_share * 100.0,
        p.rules.n_minus_1 * 100.0,
        p.rules.headroom * 100.0,
        match p.rules.own_text() {
            t if t.is_empty() => t,
            t => format!(" (own rules: {t})"),
        },
        p.simulations
    );
    for ph in &p.phases {
        out!("");
        out!("== phase {}", ph.phase);
        if let Some(why) = &ph.infeasible {
            out!("  NO PLAN: {why}");
            continue;
        }
        out!(
            "  {:<16} {:>9} {:>9}  systems",
            "provider",
            "MW used",
            "MW avail"
        );
        for u in &ph.providers {
            out!(
                "  {:<16} {:>9} {:>9}  {}",
                u.provider,
                switchyard_planner::megawatts(u.mw_used),
                switchyard_planner::megawatts(u.mw_available),
                u.systems_text("x")
            );
        }
        out!(
            "  {:<20} {:>11} {:>11} {:>8} {:>8} {:>5} {:>10} {:>10} {:>9} {:>8} {:>7}",
            "class",
            "demand t/s",
            "capacity",
            "surplus",
            "replicas",
            "pct",
            "sim TTFT",
            "sim TPOT",
            "confirmed",
            "$/Mtok",
            "J/tok"
        );
        for c in &ph.classes {
            let ms = |v: Option<f64>, d: usize| {
                v.map_or_else(|| "-".into(), |x| format!("{:.d$} ms", x * 1000.0))
            };
            let (usd, joules) = c.per_token_text();
            out!(
                "  {:<20} {:>11.3e} {:>11.3e} {:>8} {:>8} {:>5} {:>10} {:>10} {:>9} {:>8} {:>7}",
                c.class,
                c.demand_tok_s,
                c.capacity_tok_s,
                c.surplus
                    .map_or_else(|| "-".into(), |x| format!("{:.0}%", x * 100.0)),
                c.replicas,
                switchyard_planner::percentile_name(c.percentile),
                ms(c.sim_ttft_s, 0),
                ms(c.sim_tpot_s, 1),
                if c.confirmed { "yes" } else { "NO" },
                usd,
                joules
            );
        }
        for c in &ph.classes {
            if let Some(why) = &c.unconfirmed {
                out!("  {} not confirmed: {why}", c.class);
            }
        }
        out!("  buys:");
        for b in &ph.buys {
            let o = &p.options[b.option];
            out!(
                "    {:<16} {:>6} x {:<7} {:<6} for {:<20} ({} {} of {} chip{}, ${:.2} an hour each{})",
                o.provider,
                b.systems_text(),
                o.system,
                o.layout,
                o.class,
                b.replicas,
                match (o.disaggregated, b.replicas) {
                    (true, 1) => "unit",
                    (true, _) => "units",
                    (false, 1) => "replica",
                    (false, _) => "replicas",
                },
                o.chips,
                if o.chips == 1 { "" } else { "s" },
                o.usd_per_hour,
                o.cost_basis
                    .map_or_else(String::new, |b| format!(", {}", b.name()))
            );
        }
        // Systems kept from an earlier phase stay, whether or not a replica runs on them.
        for idle in &ph.kept_idle {
            out!(
                "    {:<16} {:>6} x {:<7} kept from an earlier phase, idle (${:.2} an hour, charged to no class)",
                idle.provider,
                idle.systems,
                idle.system,
                idle.usd_per_hour
            );
        }
        out!("  cost: {}", ph.cost_text(&p.options));
        out!("  N-1 (share of each class the rest serves within target; simulated at the N-1 share):");
        for n in &ph.n_minus_1 {
            let cells: Vec<String> = n
                .classes
                .iter()
                .map(|(c, share, ok)| {
                    format!(
                        "{c} {} {}",
                        switchyard_planner::served_percent(*share),
                        if *ok { "ok" } else { "FAILS" }
                    )
                })
                .collect();
            out!("    without {:<16} {}", n.lost, cells.join(", "));
        }
    }
    if !p.rejected.is_empty() {
        out!("");
        out!("options that cannot serve a class:");
        for r in &p.rejected {
            out!("  {r}");
        }
    }
}
