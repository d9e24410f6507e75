//! The HTML report of a plan: megawatts by provider over the phases, capacity against
//! demand, cost and energy per token, the purchases, and the N-1 table.

use crate::{Candidate, Plan};
use switchyard_report::{escape, page, stacked_bars, table, Axis, Section, Series, Table};

/// One figure of a class in a phase, charted over the phases.
type ClassFigure = fn(&crate::ClassOutcome) -> f64;

/// One series per name, its points the phases in order: `value(phase, index of the name)`.
fn over_phases<P>(phases: &[P], names: &[String], value: impl Fn(&P, usize) -> f64) -> Vec<Series> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| Series {
            name: name.clone(),
            points: phases
                .iter()
                .enumerate()
                .map(|(j, ph)| (j as f64, value(ph, i)))
                .collect(),
        })
        .collect()
}

/// The whole report page.
pub fn html(p: &Plan) -> String {
    let phases: Vec<&crate::PhasePlan> = p
        .phases
        .iter()
        .filter(|ph| ph.infeasible.is_none())
        .collect();
    let cats: Vec<String> = phases.iter().map(|ph| ph.phase.clone()).collect();
    let mut sections = Vec::new();
    let mut notes = String::new();
    for ph in p.phases.iter().filter(|ph| ph.infeasible.is_some()) {
        notes += &format!(
            "<p><strong>No plan for {}</strong>: {}</p>",
            escape(&ph.phase),
            escape(ph.infeasible.as_deref().unwrap_or(""))
        );
    }
    if !notes.is_empty() {
        sections.push(Section {
            heading: "Infeasible phases".into(),
            html: notes,
        });
    }
    if !phases.is_empty() {
        let providers: Vec<String> = phases[0]
            .providers
            .iter()
            .map(|u| u.provider.clone())
            .collect();
        let mw = over_phases(&phases, &providers, |ph, i| ph.providers[i].mw_used);
        let classes: Vec<String> = phases[0].classes.iter().map(|c| c.class.clone()).collect();
        let per_class = |f: &dyn Fn(&crate::ClassOutcome) -> f64| -> Vec<Series> {
            over_phases(&phases, &classes, |ph, i| f(&ph.classes[i]))
        };
        let mut charts = stacked_bars(
            "Megawatts used by provider",
            &cats,
            &Axis::linear("MW"),
            &mw,
        );
        let by_class: [(&str, &str, ClassFigure); 2] = [
            ("Peak demand by class (output tokens/s)", "tokens/s", |c| {
                c.demand_tok_s
            }),
            (
                "Planned capacity within target by class (output tokens/s)",
                "tokens/s",
                |c| c.capacity_tok_s,
            ),
        ];
        for (title, unit, f) in by_class {
            charts += &stacked_bars(title, &cats, &Axis::linear(unit), &per_class(&f));
        }
        // The fleet's cost a token is the phase's whole cost, idle kept systems included,
        // over the tokens of every class.
        let all = ["all classes".to_string()];
        let cost = over_phases(&phases, &all, |ph, _| ph.usd_per_mtok().unwrap_or(0.0));
        charts += &stacked_bars(
            "Cost per million output tokens, all classes, idle kept systems included (USD)",
            &cats,
            &Axis::linear("USD per million tokens"),
            &cost,
        );
        // A rate per token does not add up over classes: the fleet's energy a token is their
        // mean weighted by the tokens each class is served.
        let energy = over_phases(&phases, &all, |ph, _| {
            let served: f64 = ph.classes.iter().map(|c| c.demand_tok_s).sum();
            let weighted: f64 = ph
                .classes
                .iter()
                .map(|c| c.joules_per_token.unwrap_or(0.0) * c.demand_tok_s)
                .sum();
            if served > 0.0 {
                weighted / served
            } else {
                0.0
            }
        });
        charts += &stacked_bars(
            "Energy per output token, all classes (J)",
            &cats,
            &Axis::linear("joules per token"),
            &energy,
        );
        sections.push(Section {
            heading: "Over the phases".into(),
            html: charts,
        });
    }
    for ph in &phases {
        let mut html = table(&Table {
            headers: ["provider", "MW used", "MW available", "systems"]
                .map(String::from)
                .to_vec(),
            rows: ph
                .providers
                .iter()
                .map(|u| {
                    vec![
                        u.provider.clone(),
                        crate::megawatts(u.mw_used),
                        crate::megawatts(u.mw_available),
                        u.systems_text("×"),
                    ]
                })
                .collect(),
        });
        html += &table(&Table {
            headers: [
                "class",
                "demand tok/s",
                "capacity tok/s",
                "surplus %",
                "replicas",
                "target at",
                "sim TTFT ms",
                "sim TPOT ms",
                "goodput %",
                "confirmed",
                "$/Mtok",
                "J/token",
            ]
            .map(String::from)
            .to_vec(),
            rows: ph
                .classes
                .iter()
                .map(|c| {
                    let ms = |v: Option<f64>| {
                        v.map_or_else(|| "–".into(), |x| format!("{:.1}", x * 1000.0))
                    };
                    let (usd, joules) = c.per_token_text();
                    vec![
                        c.class.clone(),
                        format!("{:.0}", c.demand_tok_s),
                        format!("{:.0}", c.capacity_tok_s),
                        c.surplus
                            .map_or_else(|| "-".into(), |x| format!("{:.1}", x * 100.0)),
                        c.replicas.to_string(),
                        crate::percentile_name(c.percentile),
                        ms(c.sim_ttft_s),
                        ms(c.sim_tpot_s),
                        c.sim_goodput
                            .map_or_else(|| "–".into(), |g| format!("{:.1}", g * 100.0)),
                        if c.confirmed {
                            "yes".into()
                        } else {
                            "NO".into()
                        },
                        usd,
                        joules,
                    ]
                })
                .collect(),
        });
        html += &table(&Table {
            headers: [
                "provider",
                "systems",
                "system",
                "layout",
                "class",
                "replicas (units)",
                "chips each",
                "$/h each",
            ]
            .map(String::from)
            .to_vec(),
            rows: ph
                .buys
                .iter()
                .map(|b| {
                    let o = &p.options[b.option];
                    vec![
                        o.provider.clone(),
                        b.systems_text(),
                        o.system.clone(),
                        o.layout.clone(),
                        o.class.clone(),
                        if o.disaggregated {
                            format!("{} units", b.replicas)
                        } else {
                            b.replicas.to_string()
                        },
                        o.chips.to_string(),
                        usd_each(o),
                    ]
                })
                // Systems kept from an earlier phase that no replica uses.
                .chain(ph.kept_idle.iter().map(|k| {
                    vec![
                        k.provider.clone(),
                        k.systems.to_string(),
                        k.system.clone(),
                        "kept, idle".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        format!("{:.2} in all", k.usd_per_hour),
                    ]
                }))
                .collect(),
        });
        html += &format!("<p>Cost: {}.</p>", escape(&ph.cost_text(&p.options)));
        let mut headers = vec!["without".to_string()];
        headers.extend(
            ph.n_minus_1
                .first()
                .map(|n| {
                    n.classes
                        .iter()
                        .map(|(c, _, _)| c.clone())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        );
        html += "<p>N-1: share of each class the remaining providers serve within target, and whether the simulation of the rest at the N-1 share of demand meets the targets.</p>";
        html += &table(&Table {
            headers,
            rows: ph
                .n_minus_1
                .iter()
                .map(|n| {
                    let mut row = vec![n.lost.clone()];
                    row.extend(n.classes.iter().map(|(_, s, ok)| {
                        format!(
                            "{} {}",
                            crate::served_percent(*s),
                            if *ok { "ok" } else { "FAILS" }
                        )
                    }));
                    row
                })
                .collect(),
        });
        sections.push(Section {
            heading: format!("Phase {}", ph.phase),
            html,
        });
    }
    if !p.rejected.is_empty() {
        sections.push(Section {
            heading: "Options that cannot serve a class".into(),
            html: format!(
                "<ul>{}</ul>",
                p.rejected
                    .iter()
                    .map(|r| format!("<li>{}</li>", escape(r)))
                    .collect::<String>()
            ),
        });
    }
    let subtitle = format!(
        "no provider need carry over {:.0}% of a class, N-1 keeps {:.0}% of each class, capacity counts each replica at {:.0}% of its peak{}; {} confirming simulations",
        p.rules.max_share * 100.0,
        p.rules.n_minus_1 * 100.0,
        p.rules.headroom * 100.0,
        match p.rules.own_text() {
            t if t.is_empty() => t,
            t => format!(" (own rules: {t})"),
        },
        p.simulations
    );
    let subtitle = if p.what_if.is_empty() {
        subtitle
    } else {
        format!("what if: {}; {subtitle}", p.what_if.join(", "))
    };
    page(
        &format!("Switchyard capacity plan: {}", p.scenario),
        &subtitle,
        &sections,
    )
}

/// What one replica or unit of option `o` costs an hour, and on which basis (`rent` or
/// `owned`: a provider's systems without a published rate are costed as bought).
pub fn usd_each(o: &Candidate) -> String {
    match o.cost_basis {
        Some(b) => format!("{:.2} {}", o.usd_per_hour, b.name()),
        None => format!("{:.2}", o.usd_per_hour),
    }
}
