//! Planning scenarios: phases, providers with the power and systems they offer, traffic
//! classes with demand and latency targets, and the diversification rules, in TOML.

use crate::PlanError;
use serde::Deserialize;
use std::ops::Range;
use toml::Spanned;

/// A planning scenario as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    /// Name for reports.
    #[serde(default)]
    pub name: Option<String>,
    /// Rules every plan must keep.
    #[serde(default)]
    pub rules: Rules,
    /// The phases, in order.
    // Missing, it is refused below with what to add, not as a field missing from line 1.
    #[serde(rename = "phase", default)]
    pub phases: Vec<Spanned<Phase>>,
    /// The providers.
    // Missing, it is refused below with what to add, not as a field missing from line 1.
    #[serde(rename = "provider", default)]
    pub providers: Vec<Spanned<ProviderSpec>>,
    /// The traffic classes.
    // Missing, it is refused below with what to add, not as a field missing from line 1.
    #[serde(rename = "class", default)]
    pub classes: Vec<Spanned<ClassSpec>>,
}

/// The longest confirming simulation a scenario may ask for, in simulated seconds: ten
/// minutes of peak traffic, where a few minutes settle any percentile the rules judge.
pub const MAX_CONFIRM_S: f64 = 600.0;

/// The most replicas a confirming simulation may run a class on: a fleet that large already
/// smooths its bursts as the plan's does.
pub const MAX_CONFIRM_REPLICAS: u32 = 2000;

/// `[rules]`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rules {
    /// Largest share of any class's demand one provider may carry.
    pub max_share: f64,
    /// Losing any one provider keeps at least this share of every class's demand within
    /// target ("N-1").
    pub n_minus_1: f64,
    /// Replicas are planned to run at most at this share of their capacity at target, so
    /// that bursts queue little.
    pub headroom: f64,
    /// A simulated percentile within its target times (1 + tolerance) confirms the plan.
    pub tolerance: f64,
    /// Whether providers' megawatts are `it` load or `facility` power, unless a provider says.
    pub mw_is: MwIs,
    /// Seconds of peak traffic each confirming simulation replays (at most
    /// `MAX_CONFIRM_S`).
    pub confirm_s: f64,
    /// Most replicas a confirming simulation runs per class (at most
    /// `MAX_CONFIRM_REPLICAS`); larger fleets are simulated scaled down, pools and demand
    /// alike.
    pub confirm_replicas: u32,
    /// Systems bought in one phase stay in the next: each phase keeps at least as many of
    /// each system from each provider as the phase before.
    pub keep_installed: bool,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            max_share: 1.0,
            n_minus_1: 0.0,
            headroom: 0.8,
            tolerance: 0.1,
            mw_is: MwIs::Facility,
            confirm_s: 60.0,
            confirm_replicas: 48,
            keep_installed: true,
        }
    }
}

/// What a megawatt figure measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MwIs {
    /// The chips' and hosts' own power.
    It,
    /// IT power times the facility's PUE.
    Facility,
}

/// `[[phase]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// Name, such as a year.
    pub name: String,
    /// When it starts, for reports: free text (`2027 H1`), or a calendar date, as text
    /// (`"2027-07-01"`) or a TOML date (`2027-07-01`), that must be a real one and written
    /// `YYYY-MM-DD`.
    #[serde(default, deserialize_with = "text_or_date")]
    pub date: Option<String>,
}

/// `[[provider]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    /// Name.
    pub name: String,
    /// Catalog systems it offers.
    pub systems: Vec<String>,
    /// Megawatts available in each phase.
    pub mw: Vec<f64>,
    /// Megawatts contracted in each phase that must be used (take-or-pay); default none.
    #[serde(default)]
    pub committed_mw: Option<Vec<f64>>,
    /// What `mw` measures (default: the rules').
    #[serde(default)]
    pub mw_is: Option<MwIs>,
    /// Facility PUE (default: the performance model's).
    #[serde(default)]
    pub pue: Option<f64>,
    /// Price per system, replacing the catalog's: purchase with a life, or rent per chip-hour.
    #[serde(default)]
    pub capex_usd_per_system: Option<f64>,
    /// Years to amortise `capex_usd_per_system` over.
    #[serde(default)]
    pub life_years: Option<f64>,
    /// Rent per chip-hour, USD.
    #[serde(default)]
    pub rent_usd_per_chip_hour: Option<f64>,
    /// This provider's own cap on any class's share (default: the rules').
    #[serde(default)]
    pub max_share: Option<f64>,
}

/// `[[class]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassSpec {
    /// Name.
    pub name: String,
    /// Catalog model it uses.
    pub model: String,
    /// Prompt tokens per request (default: the workload's mean).
    #[serde(default)]
    pub isl: Option<u32>,
    /// Output tokens per request (default: the workload's mean).
    #[serde(default)]
    pub osl: Option<u32>,
    /// Spread of the output lengths, their standard deviation over their mean (default: the
    /// workload's, else 0: every output `osl` tokens).
    #[serde(default)]
    pub osl_cv: Option<f64>,
    /// A benchmark workload of the catalog (`switchyard catalog workloads`) whose mean lengths
    /// (and output spread) stand for this class's requests where `isl`, `osl` (or `osl_cv`)
    /// is not given.
    #[serde(default)]
    pub workload: Option<String>,
    /// Time-to-first-token target, ms.
    pub ttft_ms: f64,
    /// Time-per-output-token target, ms.
    pub tpot_ms: f64,
    /// The share of requests that must meet both targets (0.9 for p90).
    #[serde(default = "p90")]
    pub percentile: f64,
    /// Output tokens per second at peak, per phase.
    pub demand_tok_s: Vec<f64>,
    /// This class's own N-1 share, in place of the rules' (0 for a class that only one
    /// provider's systems can serve, such as one whose TPOT only wafer-scale meets).
    #[serde(default)]
    pub n_minus_1: Option<f64>,
    /// This class's own cap on the share of its demand one provider carries, in place of
    /// the rules' and the providers'.
    #[serde(default)]
    pub max_share: Option<f64>,
}

fn p90() -> f64 {
    0.9
}

/// A phase's date as text, whether the file writes it as a string or as a TOML date.
fn text_or_date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Date(toml::value::Datetime),
    }
    Ok(Some(match Raw::deserialize(d)? {
        Raw::Text(t) => t,
        Raw::Date(t) => t.to_string(),
    }))
}

/// Why `text`, written as a calendar date (`YYYY-MM-DD`), is none; `None` when it is one or
/// is free text of another shape (`2027 H1`). Empty text, and three numbers joined by
/// dashes but not padded (`2026-1-1`), are refused: they order as no date does.
fn bad_iso_date(text: &str) -> Option<&'static str> {
    if text.trim().is_empty() {
        return Some("is empty: leave `date` out, or give one");
    }
    let parts: Vec<&str> = text.trim().split('-').collect();
    let [y, m, d] = parts[..] else { return None };
    let num = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<u32>().ok())?
    };
    let (Some(y), Some(m), Some(d)) = (num(y), num(m), num(d)) else {
        return None;
    };
    if parts[0].len() != 4 || parts[1].len() != 2 || parts[2].len() != 2 {
        return Some("is not written YYYY-MM-DD (four digits, two and two)");
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Some("has no month 1 to 12"),
    };
    (d == 0 || d > days).then_some("has no such day in its month")
}

/// Changes asked for on the command line.
#[derive(Debug, Clone, Default)]
pub struct WhatIf {
    /// Plan without this provider.
    pub lose: Option<String>,
    /// Multiply every demand.
    pub demand_x: Option<f64>,
    /// Read every provider's megawatts this way.
    pub mw_is: Option<MwIs>,
    /// Cost every system the scenario does not price itself on this basis: rented at its
    /// published hourly rate, or owned (its purchase over its life plus electricity). A
    /// system without a price of that basis is left without one.
    pub cost: Option<switchyard_perf::CostBasis>,
}

impl WhatIf {
    /// Each change in words, for reports.
    #[must_use]
    pub fn words(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(p) = &self.lose {
            out.push(format!("without {p}"));
        }
        if let Some(x) = self.demand_x {
            out.push(format!("demand x {x}"));
        }
        match self.mw_is {
            Some(MwIs::It) => out.push("MW as IT power".into()),
            Some(MwIs::Facility) => out.push("MW as facility power".into()),
            None => {}
        }
        match self.cost {
            Some(switchyard_perf::CostBasis::Rent) => out.push("catalog systems rented".into()),
            Some(switchyard_perf::CostBasis::Owned) => out.push("catalog systems owned".into()),
            None => {}
        }
        out
    }
}

/// The line where `field` is set inside the table at `span`, or the table's first line.
pub(crate) fn line_of_field(text: &str, span: &Range<usize>, field: &str) -> usize {
    switchyard_catalog::line_at(
        text,
        switchyard_catalog::field_offset(text, span.clone(), field),
    )
}

/// A field, its value if set, the test it must pass, and what the test asks, in words.
type Check = (&'static str, Option<f64>, fn(f64) -> bool, &'static str);

impl PlanFile {
    /// Parses and checks a scenario; `origin` names the file in errors.
    ///
    /// # Errors
    /// [`PlanError::Scenario`] naming the line and field.
    pub fn parse(text: &str, origin: &str) -> Result<Self, PlanError> {
        let f: PlanFile = toml::from_str(text).map_err(|e| PlanError::Scenario {
            origin: origin.to_string(),
            message: switchyard_catalog::toml_error_line(text, &e),
        })?;
        let err = |span: &Range<usize>, field: &str, m: String| PlanError::Scenario {
            origin: origin.to_string(),
            message: format!(
                "line {}, field `{field}`: {m}",
                line_of_field(text, span, field)
            ),
        };
        // A table the file lacks has no line: the message says what to add.
        for (table, count, what) in [
            (
                "phase",
                f.phases.len(),
                "a period with its own megawatts and demand",
            ),
            (
                "provider",
                f.providers.len(),
                "who offers which systems and megawatts",
            ),
            (
                "class",
                f.classes.len(),
                "traffic with its model, targets and demand",
            ),
        ] {
            if count == 0 {
                return Err(PlanError::Scenario {
                    origin: origin.to_string(),
                    message: format!(
                        "no [[{table}]] table: a scenario needs at least one ({what})"
                    ),
                });
            }
        }
        let n = f.phases.len();
        // The calendar date of the latest phase before, to hold the phases in order.
        let mut last: Option<(&str, &str)> = None;
        for ph in &f.phases {
            if let Some(d) = &ph.get_ref().date {
                if let Some(why) = bad_iso_date(d) {
                    return Err(err(
                        &ph.span(),
                        "date",
                        format!("phase `{}`: `{d}` {why}", ph.get_ref().name),
                    ));
                }
                // Zero-padded calendar dates sort as text; free text has no order.
                if d.trim().len() == 10 && d.trim().as_bytes()[4] == b'-' {
                    if let Some((name, before)) = last {
                        if d.trim() < before {
                            return Err(err(
                                &ph.span(),
                                "date",
                                format!(
                                    "phase `{}` starts {} before phase `{name}` ({before}), which comes first: phases are listed in order",
                                    ph.get_ref().name,
                                    d.trim()
                                ),
                            ));
                        }
                    }
                    last = Some((&ph.get_ref().name, d.trim()));
                }
            }
        }
        for p in &f.providers {
            let s = p.get_ref();
            if s.mw.len() != n {
                return Err(err(
                    &p.span(),
                    "mw",
                    format!(
                        "provider `{}` gives {} values for {n} phases",
                        s.name,
                        s.mw.len()
                    ),
                ));
            }
            if s.mw.iter().any(|m| !m.is_finite() || *m < 0.0) {
                return Err(err(
                    &p.span(),
                    "mw",
                    format!(
                        "provider `{}`: megawatts must be finite and non-negative",
                        s.name
                    ),
                ));
            }
            if let Some(c) = &s.committed_mw {
                if c.len() != n
                    || c.iter()
                        .zip(&s.mw)
                        .any(|(c, m)| !c.is_finite() || *c < 0.0 || c > m)
                {
                    return Err(err(&p.span(), "committed_mw", format!("provider `{}`: one value per phase, each between 0 and that phase's `mw`", s.name)));
                }
            }
            if s.systems.is_empty() {
                return Err(err(
                    &p.span(),
                    "systems",
                    format!("provider `{}` offers no system", s.name),
                ));
            }

            // Overrides of the catalog's prices and the facility's PUE hold to the ranges the
            // catalog and the parameters file hold them to: a negative price would make buying
            // more cheaper, a zero life an infinite cost, a PUE under 1 free power.
            let checks: [Check; 5] = [
                (
                    "max_share",
                    s.max_share,
                    |v| (0.0..=1.0).contains(&v),
                    "a share between 0 and 1",
                ),
                ("pue", s.pue, |v| (1.0..=10.0).contains(&v), "from 1 to 10"),
                (
                    "capex_usd_per_system",
                    s.capex_usd_per_system,
                    |v| v >= 0.0 && v.is_finite(),
                    "a finite price, 0 or more",
                ),
                (
                    "rent_usd_per_chip_hour",
                    s.rent_usd_per_chip_hour,
                    |v| v >= 0.0 && v.is_finite(),
                    "a finite price, 0 or more",
                ),
                (
                    "life_years",
                    s.life_years,
                    |v| v > 0.0 && v.is_finite(),
                    "a finite number of years above 0",
                ),
            ];
            for (field, v, ok, says) in checks {
                if v.is_some_and(|v| !ok(v)) {
                    return Err(err(
                        &p.span(),
                        field,
                        format!("provider `{}`: must be {says}", s.name),
                    ));
                }
            }
            // Rent replaces the purchase whenever both are known: one given beside the
            // other would be ignored.
            if s.capex_usd_per_system.is_some() && s.rent_usd_per_chip_hour.is_some() {
                return Err(err(
                    &p.span(),
                    "rent_usd_per_chip_hour",
                    format!(
                        "provider `{}`: give capex_usd_per_system (bought) or rent_usd_per_chip_hour (rented), not both",
                        s.name
                    ),
                ));
            }
            if s.life_years.is_some() && s.rent_usd_per_chip_hour.is_some() {
                return Err(err(
                    &p.span(),
                    "life_years",
                    format!(
                        "provider `{}`: life_years spreads a purchase over its life; rent has none",
                        s.name
                    ),
                ));
            }
        }
        for c in &f.classes {
            let s = c.get_ref();
            if s.demand_tok_s.len() != n {
                return Err(err(
                    &c.span(),
                    "demand_tok_s",
                    format!(
                        "class `{}` gives {} values for {n} phases",
                        s.name,
                        s.demand_tok_s.len()
                    ),
                ));
            }
            if s.demand_tok_s.iter().any(|d| !d.is_finite() || *d < 0.0) {
                return Err(err(
                    &c.span(),
                    "demand_tok_s",
                    format!("class `{}`: demand must be finite and non-negative", s.name),
                ));
            }
            if !(s.percentile > 0.0 && s.percentile < 1.0) {
                return Err(err(
                    &c.span(),
                    "percentile",
                    format!("class `{}`: a share between 0 and 1, such as 0.9", s.name),
                ));
            }
            for (field, v, least) in [
                ("n_minus_1", s.n_minus_1, 0.0),
                ("max_share", s.max_share, f64::MIN_POSITIVE),
            ] {
                if v.is_some_and(|v| !(least..=1.0).contains(&v)) {
                    let says = if least > 0.0 {
                        "above 0 and at most 1"
                    } else {
                        "between 0 and 1"
                    };
                    return Err(err(
                        &c.span(),
                        field,
                        format!("class `{}`: a share {says}", s.name),
                    ));
                }
            }
            if s.osl_cv
                .is_some_and(|v| !switchyard_catalog::OSL_CV_RANGE.contains(&v))
            {
                return Err(err(
                    &c.span(),
                    "osl_cv",
                    format!(
                        "class `{}`: a spread from 0 (outputs all alike) to {}",
                        s.name,
                        switchyard_catalog::OSL_CV_RANGE.end()
                    ),
                ));
            }
            if (s.isl.is_none() || s.osl.is_none()) && s.workload.is_none() {
                return Err(err(
                    &c.span(),
                    "isl",
                    format!("class `{}`: give `isl` and `osl`, or a `workload`", s.name),
                ));
            }
            for (field, v) in [("ttft_ms", s.ttft_ms), ("tpot_ms", s.tpot_ms)] {
                if !(v > 0.0 && v.is_finite()) {
                    return Err(err(
                        &c.span(),
                        field,
                        format!(
                            "class `{}`: a finite number of milliseconds above 0",
                            s.name
                        ),
                    ));
                }
            }
            for (field, v) in [("isl", s.isl), ("osl", s.osl)] {
                if v == Some(0) {
                    return Err(err(
                        &c.span(),
                        field,
                        format!("class `{}`: at least 1 token", s.name),
                    ));
                }
            }
        }
        // Reports, `--lose` and the confirming simulation find entries by name.
        let names = [
            (
                "phase",
                f.phases
                    .iter()
                    .map(|p| (p.span(), &p.get_ref().name))
                    .collect::<Vec<_>>(),
            ),
            (
                "provider",
                f.providers
                    .iter()
                    .map(|p| (p.span(), &p.get_ref().name))
                    .collect(),
            ),
            (
                "class",
                f.classes
                    .iter()
                    .map(|c| (c.span(), &c.get_ref().name))
                    .collect(),
            ),
        ];
        for (what, list) in &names {
            for (i, (span, name)) in list.iter().enumerate() {
                if name.trim().is_empty() {
                    return Err(err(
                        span,
                        "name",
                        format!("a [[{what}]] entry has an empty name: reports and `--lose` find it by name"),
                    ));
                }
                if list[..i].iter().any(|(_, n)| n == name) {
                    return Err(err(
                        span,
                        "name",
                        format!("two of the [[{what}]] entries are named `{name}`"),
                    ));
                }
            }
        }
        let r = f.rules;
        // No provider may carry any of a class at a share of none: no plan, ever.
        if !(r.max_share > 0.0 && r.max_share <= 1.0) {
            return Err(err(
                &(0..0),
                "rules.max_share",
                "a share above 0 and at most 1".into(),
            ));
        }
        if !(0.0..=1.0).contains(&r.n_minus_1) {
            return Err(err(
                &(0..0),
                "rules.n_minus_1",
                "a share between 0 and 1".into(),
            ));
        }
        // A confirming simulation's time grows with its replicas and seconds, and several
        // run a phase: past these a plan would take hours.
        if !(1..=MAX_CONFIRM_REPLICAS).contains(&r.confirm_replicas) {
            return Err(err(
                &(0..0),
                "rules.confirm_replicas",
                format!("from 1 to {MAX_CONFIRM_REPLICAS} replicas a simulated class"),
            ));
        }
        if !(r.headroom > 0.0 && r.headroom <= 1.0) {
            return Err(err(
                &(0..0),
                "rules.headroom",
                "a share above 0 and at most 1".into(),
            ));
        }
        if !(r.confirm_s > 0.0 && r.confirm_s <= MAX_CONFIRM_S) {
            return Err(err(
                &(0..0),
                "rules.confirm_s",
                format!("simulated seconds above 0 and at most {MAX_CONFIRM_S}"),
            ));
        }
        if !(r.tolerance >= 0.0 && r.tolerance.is_finite()) {
            return Err(err(
                &(0..0),
                "rules.tolerance",
                "a finite share, 0 or more".into(),
            ));
        }
        Ok(f)
    }
}
