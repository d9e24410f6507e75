//! The planner on the example scenario and on small scenarios that isolate one behaviour.

use switchyard_perf::{Catalog, Params};
use switchyard_planner::{plan, Candidate, Plan, PlanError, PlanFile, WhatIf};

const EXAMPLE: &str = include_str!("../../../scenarios/plan-750mw.toml");

fn run(text: &str, what_if: &WhatIf) -> Result<Plan, PlanError> {
    let cat = Catalog::builtin().expect("catalog");
    let file = PlanFile::parse(text, "test.toml")?;
    plan(&file, text, "test.toml", &cat, &Params::default(), what_if)
}

/// Two GPU providers and one class, small enough to plan in a blink.
fn small(price_b: f64, demand: f64, n1: f64, mw_b: f64) -> String {
    format!(
        r#"
[rules]
n_minus_1 = {n1}
confirm_s = 10
confirm_replicas = 8
[[phase]]
name = "p1"
[[provider]]
name = "a"
systems = ["h100-sxm"]
mw = [5.0]
rent_usd_per_chip_hour = 2.0
[[provider]]
name = "b"
systems = ["h100-sxm"]
mw = [{mw_b}]
rent_usd_per_chip_hour = {price_b}
[[class]]
name = "chat"
model = "llama-3.1-8b"
isl = 1000
osl = 200
ttft_ms = 2000
tpot_ms = 50
demand_tok_s = [{demand}]
"#
    )
}

fn capacity_of(p: &Plan, provider: &str) -> f64 {
    p.phases[0]
        .buys
        .iter()
        .filter(|b| p.options[b.option].provider == provider)
        .map(|b| p.options[b.option].capacity_tok_s * f64::from(b.replicas))
        .sum()
}

#[test]
fn the_example_plans_every_phase_and_simulation_confirms_targets_and_n_minus_1() {
    let p = run(EXAMPLE, &WhatIf::default()).expect("plans");
    assert_eq!(p.phases.len(), 3);
    for ph in &p.phases {
        assert!(ph.infeasible.is_none(), "{}: {:?}", ph.phase, ph.infeasible);
        for c in &ph.classes {
            assert!(
                c.capacity_tok_s >= c.demand_tok_s,
                "{} {}",
                ph.phase,
                c.class
            );
            assert!(
                c.confirmed,
                "{} {}: simulated TTFT {:?} TPOT {:?}",
                ph.phase, c.class, c.sim_ttft_s, c.sim_tpot_s
            );
            assert!(c.sim_ttft_s.is_some() && c.sim_tpot_s.is_some());
        }
        for n in &ph.n_minus_1 {
            for (class, share, ok) in &n.classes {
                assert!(
                    *share >= p.rules.n_minus_1 - 1e-9,
                    "{} without {}: {class} {share}",
                    ph.phase,
                    n.lost
                );
                assert!(
                    ok,
                    "{} without {}: {class} fails in simulation",
                    ph.phase, n.lost
                );
            }
        }
        for u in &ph.providers {
            assert!(
                u.mw_used <= u.mw_available + 1e-9,
                "{} {}",
                ph.phase,
                u.provider
            );
        }
        // The take-or-pay tranche is used.
        let cerebras = ph
            .providers
            .iter()
            .find(|u| u.provider == "cerebras")
            .expect("cerebras");
        assert!(
            cerebras.mw_used > 0.99 * cerebras.mw_available,
            "{}",
            cerebras.mw_used
        );
    }
    assert!(p.simulations > 0);
    // Each phase's new systems are those beyond the most an earlier phase installed, and
    // the buys' shares of systems add up to the systems of their kind not kept idle.
    let mut most: std::collections::BTreeMap<(String, String), u32> = Default::default();
    for ph in &p.phases {
        for u in &ph.providers {
            for (s, n) in &u.systems {
                let had = most
                    .get(&(u.provider.clone(), s.clone()))
                    .copied()
                    .unwrap_or(0);
                let new = u
                    .new_systems
                    .iter()
                    .find(|(x, _)| x == s)
                    .map_or(0, |x| x.1);
                assert_eq!(
                    new,
                    n.saturating_sub(had),
                    "{} {} {s}",
                    ph.phase,
                    u.provider
                );
                most.insert((u.provider.clone(), s.clone()), had.max(*n));
                let shares: f64 = ph
                    .buys
                    .iter()
                    .filter(|b| {
                        let o = &p.options[b.option];
                        o.provider == u.provider && &o.system == s
                    })
                    .map(|b| b.system_share)
                    .sum();
                let idle: u32 = ph
                    .kept_idle
                    .iter()
                    .filter(|k| k.provider == u.provider && &k.system == s)
                    .map(|k| k.systems)
                    .sum();
                let busy = f64::from(n - idle);
                assert!(
                    shares <= busy + 1e-9 && shares > busy - 1.0,
                    "{shares} of {n}"
                );
            }
        }
    }
    assert!(p.phases[1..]
        .iter()
        .any(|ph| ph.providers.iter().any(|u| u.new_systems != u.systems)));
    assert!(p.what_if.is_empty());
    // The same scenario gives the same plan.
    let again = run(EXAMPLE, &WhatIf::default()).expect("plans");
    assert_eq!(format!("{:?}", p.phases), format!("{:?}", again.phases));
}

#[test]
fn more_demand_never_lowers_capacity() {
    let mut last = (0.0, 0.0);
    for x in [0.5, 1.0, 2.0] {
        let p = run(
            EXAMPLE,
            &WhatIf {
                demand_x: Some(x),
                ..WhatIf::default()
            },
        )
        .expect("plans");
        let ph = &p.phases[2];
        if ph.infeasible.is_some() {
            // Past what the power allows the plan says so, and never shrinks.
            assert!(x > 1.0, "x {x}: {:?}", ph.infeasible);
            break;
        }
        let cap: f64 = ph.classes.iter().map(|c| c.capacity_tok_s).sum();
        let mw: f64 = ph.providers.iter().map(|u| u.mw_used).sum();
        assert!(
            cap >= last.0 && mw >= last.1 - 1e-6,
            "x {x}: capacity {cap} MW {mw} after {last:?}"
        );
        last = (cap, mw);
    }
}

#[test]
fn a_cheaper_provider_never_loses_share() {
    let mut last = 0.0;
    for price in [4.0, 3.0, 2.0, 1.5, 1.0] {
        let p = run(&small(price, 200_000.0, 0.0, 5.0), &WhatIf::default()).expect("plans");
        assert!(p.phases[0].infeasible.is_none());
        let b = capacity_of(&p, "b");
        let total = b + capacity_of(&p, "a");
        let share = b / total;
        assert!(
            share >= last - 1e-9,
            "price {price}: share {share} after {last}"
        );
        last = share;
    }
    assert!(
        last > 0.5,
        "the cheaper provider ends up with most of it: {last}"
    );
}

#[test]
fn losing_a_provider_replans_or_says_what_breaks() {
    // Enough power elsewhere: a plan without it.
    let p = run(
        &small(2.0, 100_000.0, 0.0, 5.0),
        &WhatIf {
            lose: Some("b".into()),
            ..WhatIf::default()
        },
    )
    .expect("plans");
    assert!(p.phases[0].infeasible.is_none());
    assert_eq!(p.what_if, ["without b"]);
    assert_eq!(capacity_of(&p, "b"), 0.0);
    assert!(capacity_of(&p, "a") >= 100_000.0);
    // Not enough: the phase says how much power is missing.
    let p = run(
        &small(2.0, 1.0e10, 0.0, 50.0),
        &WhatIf {
            lose: Some("b".into()),
            ..WhatIf::default()
        },
    )
    .expect("plans");
    let why = p.phases[0].infeasible.as_deref().expect("infeasible");
    assert!(
        why.contains("not enough power")
            && why.contains("short by")
            && why.ends_with("(planned without `b`, as --lose asks)"),
        "{why}"
    );
    // An unknown provider is the user's mistake.
    let e = run(
        &small(2.0, 1.0, 0.0, 5.0),
        &WhatIf {
            lose: Some("zz".into()),
            ..WhatIf::default()
        },
    )
    .expect_err("unknown");
    assert!(e.to_string().contains("no provider named `zz`"), "{e}");
}

/// Where each provider's megawatts bind, what they carry is told in whole systems: whole
/// replicas of a provider's options, not its power times a rate.
#[test]
fn power_short_where_needed_counts_whole_systems() {
    let text = one_phase(
        "max_share = 1.0\nn_minus_1 = 0.0\nmw_is = \"facility\"\nconfirm_s = 10\nconfirm_replicas = 8",
        &format!(
            "{}{}",
            provider("a", "h200", 0.05, ""),
            provider("b", "b200", 0.02, "")
        ),
        "llama-3.1-8b",
        "isl = 1000\nosl = 200\nttft_ms = 2000\ntpot_ms = 50\npercentile = 0.5",
        200_000.0,
    );
    let p = run(&text, &WhatIf::default()).expect("plans");
    let why = p.phases[0].infeasible.as_deref().expect("infeasible");
    assert!(why.contains("where it is needed"), "{why}");
    for name in ["a", "b"] {
        let said: f64 = why
            .split(&format!("`{name}` "))
            .nth(1)
            .and_then(|r| r.split([',', ' ']).next())
            .and_then(|n| n.parse().ok())
            .expect("a figure");
        // Some option of the provider carries that in whole replicas.
        let whole = p.options.iter().filter(|o| o.provider == name).any(|o| {
            let n = said / o.capacity_tok_s;
            n >= 1.0 && (n - n.round()).abs() * o.capacity_tok_s < 1.0
        });
        assert!(whole, "{name}: {said} in {why}");
    }
}

#[test]
fn an_infeasible_rule_is_named() {
    // One provider with power, the other with none: N-1 at 50% cannot hold.
    let p = run(&small(2.0, 100_000.0, 0.5, 0.0), &WhatIf::default()).expect("plans");
    let why = p.phases[0].infeasible.as_deref().expect("infeasible");
    assert!(why.contains("N-1"), "{why}");
    // A shortfall of a few kilowatts is told in kilowatts' worth of digits, not as 0.0 MW.
    let p = run(
        &small(2.0, 100_000.0, 0.0, 0.02).replace("mw = [5.0]", "mw = [0.02]"),
        &WhatIf::default(),
    )
    .expect("plans");
    let why = p.phases[0].infeasible.as_deref().expect("infeasible");
    assert!(
        why.contains("not enough power") && !why.contains(" 0.0 MW"),
        "{why}"
    );
    // A provider's own cap on its share is named with the rule it tightens.
    let text = small(2.0, 100_000.0, 0.0, 5.0)
        .replace(
            "mw = [5.0]\nrent_usd_per_chip_hour = 2.0\n",
            "mw = [0.01]\nrent_usd_per_chip_hour = 2.0\n",
        )
        .replace(
            "rent_usd_per_chip_hour = 2\n[[class]]",
            "rent_usd_per_chip_hour = 2\nmax_share = 0.0\n[[class]]",
        );
    let p = run(&text, &WhatIf::default()).expect("plans");
    let why = p.phases[0].infeasible.as_deref().expect("infeasible");
    assert!(
        why.contains("largest-share") && why.contains("`b` 0%"),
        "{why}"
    );
    // ... and in the rules the report states.
    assert_eq!(p.rules.own_text(), "provider b: largest share 0%");
    // Caps on the shares of the only providers that can serve a class that leave part of it
    // to none are named with the caps, not as the rules' 100%.
    let capped = small(2.0, 100_000.0, 0.0, 5.0)
        .replace("tpot_ms = 50\n", "tpot_ms = 50\nmax_share = 0.4\n");
    let p = run(&capped, &WhatIf::default()).expect("plans");
    let why = p.phases[0].infeasible.as_deref().expect("infeasible");
    assert!(
        why.contains("at most `a` 40%, `b` 40% of its demand, 80% together"),
        "{why}"
    );
    // A provider with no power in the phase is no second provider.
    let p = run(
        &small(2.0, 100_000.0, 0.0, 0.0)
            .replace("tpot_ms = 50\n", "tpot_ms = 50\nmax_share = 0.75\n"),
        &WhatIf::default(),
    )
    .expect("plans");
    let why = p.phases[0].infeasible.as_deref().expect("infeasible");
    assert!(
        why.contains("only `a` offers") && why.contains("(`b` too little)"),
        "{why}"
    );
    // Why one phase of a scenario of two providers and one class cannot be planned.
    let why_not = |rules: &str,
                   (a, b): ((&str, &str, &str), (&str, &str)),
                   model: &str,
                   class: &str,
                   demand: f64| {
        let providers = format!(
            "{}{}",
            provider(a.0, a.1, 1.0, a.2),
            provider(b.0, b.1, 1.0, "")
        );
        let p = run(
            &one_phase(rules, &providers, model, class, demand),
            &WhatIf::default(),
        )
        .expect("plans");
        p.phases[0].infeasible.clone().expect("infeasible")
    };
    // Power too little for one of a provider's systems is no power: it is named with what a
    // step of its takes, and not counted among what is on offer.
    let why = why_not(
        "",
        (
            ("a", "groq-lpu", "rent_usd_per_chip_hour = 1.0"),
            ("b", "b200"),
        ),
        "llama-3.1-405b",
        "isl = 1000\nosl = 200\nttft_ms = 5000\ntpot_ms = 100",
        1.0e6,
    );
    assert!(
        why.contains("offer 1.00 MW (`a` offers 1.00 MW, less than the"),
        "{why}"
    );
    // A provider whose system cannot serve a class is told with why, where another can.
    let why = why_not(
        "max_share = 0.75",
        (("cer", "cs3", ""), ("gpu", "h200")),
        "llama-3.1-70b",
        "isl = 1000\nosl = 200\nttft_ms = 2000\ntpot_ms = 40",
        1.0e4,
    );
    assert!(
        why.contains("only `gpu` offers") && why.contains("(the others: cer cs3 for c: no price"),
        "{why}"
    );
    // One provider under N-1 and a largest share below 1: both rules ask for a second, and
    // a commitment of all its power is no obstacle once they are gone.
    let one = one_phase(
        "n_minus_1 = 0.5\nmax_share = 0.75\nconfirm_s = 2",
        &provider(
            "w",
            "cs3",
            250.0,
            "committed_mw = [250.0]\ncapex_usd_per_system = 2500000.0",
        ),
        "gpt-oss-120b",
        "isl = 4000\nosl = 800\nttft_ms = 1000\ntpot_ms = 6.5\npercentile = 0.99",
        4.0e7,
    );
    let p = run(&one, &WhatIf::default()).expect("plans");
    let why = p.phases[0].infeasible.as_deref().expect("infeasible");
    assert!(
        why.contains("only `w` offers")
            && why.contains("the N-1 rule and the largest-share rule (`w` 75%) ask for another"),
        "{why}"
    );
    let p = run(
        &one.replace(
            "n_minus_1 = 0.5\nmax_share = 0.75",
            "n_minus_1 = 0.0\nmax_share = 1.0",
        ),
        &WhatIf::default(),
    )
    .expect("plans");
    let u = &p.phases[0].providers[0];
    assert!(u.mw_used >= 249.0 && u.mw_used <= 250.0, "{u:?}");
    // A target nothing can meet names the class.
    let text = small(2.0, 100_000.0, 0.0, 5.0).replace("tpot_ms = 50", "tpot_ms = 0.5");
    let p = run(&text, &WhatIf::default()).expect("plans");
    let why = p.phases[0].infeasible.as_deref().expect("infeasible");
    assert!(
        why.contains("class `chat`") && why.contains("TPOT"),
        "{why}"
    );
    assert!(!p.rejected.is_empty());
}

#[test]
fn bad_scenarios_name_the_line_and_field() {
    let check = |text: &str, needles: &[&str]| {
        let e = run(text, &WhatIf::default()).expect_err("bad").to_string();
        for n in needles {
            assert!(e.contains(n), "`{n}` missing from {e}");
        }
    };
    let good = small(2.0, 1000.0, 0.0, 5.0);
    run(&good, &WhatIf::default()).expect("good");
    check(
        &good.replace("mw = [5.0]", "mw = [5.0, 6.0]"),
        &[
            "test.toml",
            "line 11",
            "field `mw`",
            "2 values for 1 phases",
        ],
    );
    check(
        &good.replace(
            "systems = [\"h100-sxm\"]\nmw = [5.0]",
            "systems = [\"h900\"]\nmw = [5.0]",
        ),
        &["line 10", "field `systems`", "h900"],
    );
    check(
        &good.replace("isl = 1000", "isl = \"long\""),
        &["line 21", "isl"],
    );
    check(
        &good.replace("model = \"llama-3.1-8b\"", "model = \"llama-9\""),
        &["line 20", "field `model`", "llama-9"],
    );
    check(
        &good.replace("[rules]", "[rules]\nspeed = 3"),
        &["line 3", "speed"],
    );
    check(
        &good.replace(
            "systems = [\"h100-sxm\"]\nmw = [5.0]",
            "systems = [\"h100-sxm\", \"h100\"]\nmw = [5.0]",
        ),
        &[
            "line 10",
            "field `systems`",
            "lists `h100-sxm` twice (the second time as `h100`)",
        ],
    );
    check(
        &good.replace("name = \"b\"", "name = \" \""),
        &["line 14", "field `name`", "empty name"],
    );
    let dated = good.replace(
        "name = \"p1\"\n",
        "name = \"p1\"\ndate = \"2027-07-01\"\n[[phase]]\nname = \"p2\"\ndate = \"2027-01-01\"\n",
    )
    .replace("mw = [5.0]", "mw = [5.0, 5.0]")
    .replace("demand_tok_s = [1000]", "demand_tok_s = [1000, 1000]");
    check(
        &dated,
        &[
            "line 11",
            "field `date`",
            "phase `p2` starts 2027-01-01 before phase `p1`",
        ],
    );
    check(
        &dated.replace("\"2027-01-01\"", "\"2027-1-1\""),
        &["line 11", "field `date`", "not written YYYY-MM-DD"],
    );
    // A TOML date reads as its text.
    run(
        &dated
            .replace("\"2027-01-01\"", "2028-01-01")
            .replace("mw = [5]", "mw = [5, 5]"),
        &WhatIf::default(),
    )
    .expect("a TOML date");
    check(
        &good.replace("isl = 1000\nosl = 200\n", ""),
        &["line 18", "isl", "or a `workload`"],
    );
    // A life spreads a purchase: beside rent, or on a system the catalog rents out, it
    // would change nothing.
    check(
        &good.replace(
            "rent_usd_per_chip_hour = 2.0",
            "rent_usd_per_chip_hour = 2.0\nlife_years = 3.0",
        ),
        &["line 13", "field `life_years`", "rent has none"],
    );
    check(
        &good.replace("rent_usd_per_chip_hour = 2.0", "life_years = 3.0"),
        &["line 12", "field `life_years`", "give capex_usd_per_system"],
    );
    // A table the file lacks is named, with what it holds, not blamed on line 1.
    let no_class = good[..good.find("[[class]]").expect("a class")].to_string();
    check(&no_class, &["no [[class]] table", "at least one"]);
    // Demand beyond any fleet would overflow the replica counts: refused with its line.
    check(
        &good.replace("demand_tok_s = [1000]", "demand_tok_s = [1e13]"),
        &["line 25", "field `demand_tok_s`", "beyond any fleet"],
    );
    let e = run(
        &good,
        &WhatIf {
            demand_x: Some(1e9),
            ..WhatIf::default()
        },
    )
    .expect_err("too much")
    .to_string();
    assert!(e.contains("at --demand-x 1000000000"), "{e}");
    check(
        &good.replace("isl = 1000\n", "workload = \"mlperf-llama2-70b\"\n"),
        &[
            "line 21",
            "field `workload`",
            "runs `llama-2-70b`, not `llama-3.1-8b`",
        ],
    );
    check(
        &good.replace("isl = 1000\n", "workload = \"mlperf-none\"\n"),
        &[
            "line 21",
            "field `workload`",
            "unknown workload `mlperf-none`",
        ],
    );
    check(
        &good.replace("osl = 200\n", "osl = 200\nosl_cv = -1\n"),
        &["line 23", "field `osl_cv`", "from 0"],
    );
    // A target that is not a number is named, not planned against.
    check(
        &good.replace("ttft_ms = 2000", "ttft_ms = nan"),
        &["line 23", "field `ttft_ms`"],
    );
    check(
        &good.replace("tpot_ms = 50", "tpot_ms = -1"),
        &["line 24", "field `tpot_ms`"],
    );
    // The field at fault is the one blamed.
    check(
        &good.replace("isl = 1000", "isl = 0"),
        &["line 21", "field `isl`", "at least 1 token"],
    );
    check(
        &good.replace("name = \"b\"", "name = \"a\""),
        &["line 14", "field `name`", "[[provider]]", "`a`"],
    );
    check(
        &good.replace(
            "rent_usd_per_chip_hour = 2.0",
            "rent_usd_per_chip_hour = 2.0\nmax_share = 1.5",
        ),
        &["line 13", "field `max_share`"],
    );
    // No provider may carry any of a class: no plan could hold, in the rules or a class's.
    check(
        &good.replace("tpot_ms = 50", "tpot_ms = 50\nmax_share = 0"),
        &["field `max_share`", "class `chat`", "above 0"],
    );
    check(
        &good.replace("[rules]\n", "[rules]\nmax_share = 0.0\n"),
        &["field `rules.max_share`", "above 0"],
    );
    // One purchase price for systems of different sizes.
    check(
        &good
            .replace(
                "systems = [\"h100-sxm\"]\nmw = [5.0]",
                "systems = [\"h100-sxm\", \"gb200\"]\nmw = [5.0]",
            )
            .replace(
                "rent_usd_per_chip_hour = 2.0\n",
                "capex_usd_per_system = 300000.0\n",
            ),
        &[
            "field `capex_usd_per_system`",
            "`h100-sxm` (8 chips)",
            "`gb200` (72 chips)",
        ],
    );
    // Two prices for one provider, one of which would be ignored.
    check(
        &good.replace(
            "rent_usd_per_chip_hour = 2.0",
            "rent_usd_per_chip_hour = 2.0\ncapex_usd_per_system = 250000.0",
        ),
        &["line 12", "field `rent_usd_per_chip_hour`", "not both"],
    );
    // Confirming simulations that would run for days are refused with their field.
    check(
        &good.replace("confirm_s = 10", "confirm_s = 100000000"),
        &["line 4", "field `rules.confirm_s`", "at most 600"],
    );
    check(
        &good.replace("confirm_replicas = 8", "confirm_replicas = 4000000000"),
        &["line 5", "field `rules.confirm_replicas`", "2000"],
    );
    // A class longer than its model's context is refused: no engine would serve it.
    check(
        &good.replace("isl = 1000", "isl = 200000"),
        &["line 21", "field `isl`", "131072-token context"],
    );
    // A date written as one must be a real one; other free text is a label.
    check(
        &good.replace("name = \"p1\"", "name = \"p1\"\ndate = \"2026-13-45\""),
        &["line 8", "field `date`", "month"],
    );
    check(
        &good.replace("name = \"p1\"", "name = \"p1\"\ndate = \"2027-02-29\""),
        &["line 8", "field `date`", "day"],
    );
    for date in ["2028-02-29", "2027 H1"] {
        run(
            &good.replace(
                "name = \"p1\"",
                &format!("name = \"p1\"\ndate = \"{date}\""),
            ),
            &WhatIf::default(),
        )
        .expect(date);
    }
}

/// Spread outputs keep longer contexts in the batch: the same class with its outputs spread
/// (cv 1.5) gets less from each replica than with outputs all alike, and the confirming
/// simulation draws spread outputs too and still meets the targets.
#[test]
fn spread_outputs_cost_capacity() {
    let good = small(2.0, 200_000.0, 0.0, 5.0);
    let spread = good.replace("osl = 200\n", "osl = 200\nosl_cv = 1.5\n");
    let a = run(&good, &WhatIf::default()).expect("plans");
    let b = run(&spread, &WhatIf::default()).expect("plans");
    let per_replica = |p: &Plan| {
        p.options
            .iter()
            .filter(|o| !o.disaggregated)
            .map(|o| o.capacity_tok_s)
            .fold(0.0_f64, f64::max)
    };
    assert!(
        per_replica(&b) < per_replica(&a),
        "{} against {}",
        per_replica(&b),
        per_replica(&a)
    );
    for ph in &b.phases {
        assert!(ph.infeasible.is_none(), "{:?}", ph.infeasible);
    }
}

#[test]
fn a_class_may_take_its_lengths_from_a_benchmark_workload() {
    let good = small(2.0, 1000.0, 0.0, 5.0);
    let by_workload = good
        .replace(
            "model = \"llama-3.1-8b\"",
            "model = \"meta-llama/Llama-3.1-8B-Instruct\"",
        )
        .replace(
            "isl = 1000\nosl = 200\n",
            "workload = \"mlperf-llama3.1-8b\"\n",
        );
    let stated = good
        .replace("isl = 1000", "isl = 871")
        .replace("osl = 200", "osl = 82\nosl_cv = 0.448");
    let a = run(&by_workload, &WhatIf::default()).expect("plans");
    let b = run(&stated, &WhatIf::default()).expect("plans");
    // The workload's means (870.7 in, 81.6 out, rounded) plan exactly as the same numbers do.
    assert_eq!(format!("{:?}", a.phases), format!("{:?}", b.phases));
    let c = run(&good, &WhatIf::default()).expect("plans");
    assert_ne!(format!("{:?}", a.phases), format!("{:?}", c.phases));
}

#[test]
fn systems_bought_in_one_phase_stay_in_the_next() {
    let text = |keep: bool| {
        format!(
            r#"
[rules]
keep_installed = {keep}
confirm_s = 5
confirm_replicas = 4
[[phase]]
name = "big"
[[phase]]
name = "small"
[[provider]]
name = "a"
systems = ["h100-sxm"]
mw = [5.0, 5.0]
rent_usd_per_chip_hour = 2.0
[[class]]
name = "chat"
model = "llama-3.1-8b"
isl = 1000
osl = 200
ttft_ms = 2000
tpot_ms = 50
demand_tok_s = [400000.0, 100000.0]
"#
        )
    };
    let systems = |p: &Plan, k: usize| -> u32 {
        p.phases[k].providers[0]
            .systems
            .iter()
            .map(|(_, n)| n)
            .sum()
    };
    let kept = run(&text(true), &WhatIf::default()).expect("plans");
    assert!(
        systems(&kept, 1) >= systems(&kept, 0),
        "{} then {}",
        systems(&kept, 0),
        systems(&kept, 1)
    );
    let free = run(&text(false), &WhatIf::default()).expect("plans");
    assert!(
        systems(&free, 1) < systems(&free, 0),
        "without the rule the fleet shrinks with demand"
    );
}

#[test]
fn long_prompts_under_a_tight_tpot_buy_disaggregated_units_that_simulation_confirms() {
    let text = r#"
[rules]
n_minus_1 = 0.0
confirm_s = 20
confirm_replicas = 8
[[phase]]
name = "p1"
[[provider]]
name = "a"
systems = ["h100-sxm"]
mw = [20.0]
rent_usd_per_chip_hour = 2.0
[[class]]
name = "rag"
model = "llama-3.1-70b"
isl = 8192
osl = 512
ttft_ms = 4000
tpot_ms = 22
percentile = 0.5
demand_tok_s = [100000.0]
"#;
    let p = run(text, &WhatIf::default()).expect("plans");
    let offered: Vec<_> = p.options.iter().filter(|o| o.disaggregated).collect();
    assert!(!offered.is_empty(), "{:?}", p.options);
    let joint = p
        .options
        .iter()
        .find(|o| !o.disaggregated)
        .expect("an aggregated option");
    // Each option's requests in flight are those of its rate by Little's law, from arrival
    // through the first token to the last: the balancer of the confirming simulation weighs
    // providers by them, and a disaggregated unit's decode load alone would misstate it.
    for o in &p.options {
        let rate = o.capacity_tok_s / 512.0;
        let in_flight = rate * (o.ttft_s + 511.0 * o.tpot_s);
        assert!(
            (o.concurrency / in_flight - 1.0).abs() < 0.02,
            "{o:?}: {in_flight} in flight"
        );
    }
    let split = offered[0];
    // The split carries more per dollar here, so the plan buys it, and the simulation of the
    // units (their prefill pools included) meets the targets.
    assert!(
        split.capacity_tok_s / split.usd_per_hour > joint.capacity_tok_s / joint.usd_per_hour,
        "{split:?} against {joint:?}"
    );
    let ph = &p.phases[0];
    assert!(ph.infeasible.is_none(), "{:?}", ph.infeasible);
    // Most of it: a few whole replicas may top the units up more cheaply than one more
    // unit of 64 chips would.
    let carried = |disaggregated: bool| -> f64 {
        ph.buys
            .iter()
            .filter(|b| p.options[b.option].disaggregated == disaggregated)
            .map(|b| p.options[b.option].capacity_tok_s * f64::from(b.replicas))
            .sum()
    };
    assert!(carried(true) > 4.0 * carried(false), "{:?}", ph.buys);
    let c = &ph.classes[0];
    assert!(c.confirmed, "{c:?}");
    assert!(c.sim_tpot_s.is_some_and(|t| t <= 0.022 * 1.1), "{c:?}");
}

/// A wafer replica of more wafers than the fewest that fit holds more sequences' KV caches
/// beside the same weights: the planner weighs such replicas too, and buys them where they
/// carry more a wafer.
#[test]
fn wafer_replicas_larger_than_the_fewest_are_options() {
    let text = r#"
[[phase]]
name = "y1"
[[provider]]
name = "cerebras"
systems = ["cs3"]
mw = [100.0]
capex_usd_per_system = 2500000.0
[[class]]
name = "chat"
model = "llama-3.3-70b"
isl = 1500
osl = 400
ttft_ms = 2000
tpot_ms = 40
demand_tok_s = [1.0e6]
"#;
    let p = run(text, &WhatIf::default()).expect("plans");
    let aggregated: Vec<&Candidate> = p.options.iter().filter(|o| !o.disaggregated).collect();
    let per_wafer = |o: &Candidate| o.capacity_tok_s / f64::from(o.chips);
    let fewest = aggregated
        .iter()
        .min_by_key(|o| o.chips)
        .expect("an option");
    assert_eq!(fewest.chips, 4);
    let best = aggregated
        .iter()
        .max_by(|a, b| per_wafer(a).total_cmp(&per_wafer(b)))
        .expect("an option");
    assert!(best.chips > 4, "{}", best.layout);
    assert!(per_wafer(best) > 3.0 * per_wafer(fewest));
    // What is bought carries at least what the best aggregated replica carries a wafer.
    let bought: u32 = p.phases[0].buys.iter().map(|b| b.systems).sum();
    assert!(
        f64::from(bought) * per_wafer(best) >= 1.0e6 * 0.99,
        "{bought} wafers"
    );
    assert!(
        f64::from(bought) <= 1.0e6 / per_wafer(best) * 1.05 + 16.0,
        "{bought} wafers"
    );
}

/// The verdicts on what cannot serve a class hold of the plan: a wafer system whose fewest
/// wafers miss a TTFT target, where more wafers meet it, is not listed as missing it; and a
/// power shortfall counts only the power of providers that can serve.
#[test]
fn what_cannot_serve_is_told_of_the_plan_as_made() {
    let long = r#"
[rules]
confirm_s = 10
[[phase]]
name = "p1"
[[provider]]
name = "cerebras"
systems = ["cs3"]
mw = [50.0]
capex_usd_per_system = 2500000.0
[[class]]
name = "long"
model = "llama-3.3-70b"
isl = 32000
osl = 200
ttft_ms = 100
tpot_ms = 50
percentile = 0.5
demand_tok_s = [1.0e5]
"#;
    let p = run(long, &WhatIf::default()).expect("plans");
    assert!(p.phases[0].infeasible.is_none());
    assert!(
        p.rejected.iter().all(|r| !r.contains("misses the targets")),
        "{:?}",
        p.rejected
    );
    let short = r#"
[rules]
confirm_s = 5
[[phase]]
name = "p1"
[[provider]]
name = "wafer"
systems = ["cs3"]
mw = [1.0]
capex_usd_per_system = 2500000.0
[[provider]]
name = "gpu"
systems = ["h200"]
mw = [1000.0]
[[class]]
name = "fast"
model = "llama-3.1-8b"
isl = 1000
osl = 200
ttft_ms = 1000
tpot_ms = 3
percentile = 0.5
demand_tok_s = [5.0e6]
"#;
    let p = run(short, &WhatIf::default()).expect("plans");
    let why = p.phases[0].infeasible.as_deref().expect("infeasible");
    assert!(
        why.contains("offer 1.00 MW") && why.contains("short by"),
        "{why}"
    );
    // A GPU replica of the fewest chips that misses is told with how close the fastest
    // layout of a whole system comes: eight chips of tensor parallelism cut Llama 3.1 8B's
    // lone token on H200 well below a single chip's.
    let p = run(
        &short.replace("tpot_ms = 3", "tpot_ms = 1"),
        &WhatIf::default(),
    )
    .expect("plans");
    let told = p
        .rejected
        .iter()
        .find(|r| r.starts_with("gpu h200 for fast: misses the targets even alone"))
        .unwrap_or_else(|| panic!("{:?}", p.rejected));
    // The TPOTs told, the fewest chips' first, the whole system's last.
    let tpots: Vec<f64> = told
        .split("TPOT of ")
        .skip(1)
        .filter_map(|t| t.split(' ').next()?.parse().ok())
        .collect();
    assert!(told.contains("tp1-pp1 on 1 chip takes"), "{told}");
    assert!(told.contains("tp8-pp1 on 8 chips"), "{told}");
    assert!(
        tpots.len() == 2 && tpots[1] < tpots[0] && tpots[1] > 1.0,
        "{told}"
    );
}

/// Systems kept from an earlier phase are kept, not rounded up into more: when demand falls,
/// a phase holds what it had, and runs what the demand needs on it.
#[test]
fn falling_demand_keeps_what_was_installed_without_buying_more() {
    // With and without a cap on each provider's share, which counts what stands, not what
    // demand needs: the systems kept may stand as surplus.
    for share in ["1.0", "0.75"] {
        let text = FALLING.replace(
            "n_minus_1 = 0.5",
            &format!("n_minus_1 = 0.5\nmax_share = {share}"),
        );
        falls_and_keeps(&text);
    }
}

const FALLING: &str = r#"
[rules]
n_minus_1 = 0.5
confirm_s = 5
[[phase]]
name = "y1"
[[phase]]
name = "y2"
[[provider]]
name = "a"
systems = ["h100-sxm"]
mw = [50.0, 50.0]
[[provider]]
name = "b"
systems = ["h200"]
mw = [50.0, 50.0]
[[class]]
name = "chat"
model = "llama-3.1-8b"
isl = 1000
osl = 200
ttft_ms = 1000
tpot_ms = 30
percentile = 0.99
demand_tok_s = [1.0e6, 1.0e4]
"#;

fn falls_and_keeps(text: &str) {
    let p = run(text, &WhatIf::default()).expect("plans");
    assert!(p.phases.iter().all(|ph| ph.infeasible.is_none()), "{text}");
    // The systems each provider holds, and those its replicas occupy.
    let held = |k: usize| -> Vec<u32> {
        p.phases[k]
            .providers
            .iter()
            .map(|u| u.systems.iter().map(|s| s.1).sum())
            .collect()
    };
    let occupied = |k: usize| -> Vec<u32> {
        ["a", "b"]
            .iter()
            .map(|name| {
                p.phases[k]
                    .buys
                    .iter()
                    .filter(|b| p.options[b.option].provider == *name)
                    .map(|b| b.systems)
                    .sum()
            })
            .collect()
    };
    assert_eq!(held(1), held(0));
    // A hundredth of the demand runs on fewer of them; the rest stand idle.
    assert!(
        occupied(1).iter().sum::<u32>() < occupied(0).iter().sum::<u32>(),
        "{:?} then {:?}",
        occupied(0),
        occupied(1)
    );
    // The idle ones are listed, and with the classes' charges they make the phase's cost.
    let ph = &p.phases[1];
    let idle: u32 = ph.kept_idle.iter().map(|k| k.systems).sum();
    assert_eq!(
        idle,
        held(1).iter().sum::<u32>() - occupied(1).iter().sum::<u32>()
    );
    let charged: f64 = ph
        .classes
        .iter()
        .map(|c| c.usd_per_mtok.unwrap_or(0.0) * c.demand_tok_s * 3600.0 / 1e6)
        .sum::<f64>()
        + ph.kept_idle.iter().map(|k| k.usd_per_hour).sum::<f64>();
    assert!(
        (charged / ph.usd_per_hour - 1.0).abs() < 1e-6,
        "{charged} against {}",
        ph.usd_per_hour
    );
    // The fleet's cost a token counts the idle systems: above the classes' own.
    let served: f64 = ph.classes.iter().map(|c| c.demand_tok_s).sum();
    let classes_own: f64 = ph
        .classes
        .iter()
        .map(|c| c.usd_per_mtok.unwrap_or(0.0) * c.demand_tok_s)
        .sum::<f64>()
        / served;
    let fleet = ph.usd_per_mtok().expect("demand");
    assert!(
        fleet > classes_own * 1.01
            && (fleet * served * 3600.0 / 1e6 / ph.usd_per_hour - 1.0).abs() < 1e-9,
        "{fleet} against the classes' {classes_own}"
    );
    assert!(
        ph.cost_text(&p.options).contains("for idle kept systems"),
        "{}",
        ph.cost_text(&p.options)
    );
}

/// A one-phase scenario of `rules` (lines of `[rules]`), `providers` (whole
/// `[[provider]]` tables) and one class on `model` with its lengths and targets (`class`,
/// lines of `[[class]]`) at `demand` tokens a second.
fn one_phase(rules: &str, providers: &str, model: &str, class: &str, demand: f64) -> String {
    format!(
        "[rules]\n{rules}\n[[phase]]\nname = \"p1\"\n{providers}\n[[class]]\nname = \"c\"\nmodel = \"{model}\"\n{class}\ndemand_tok_s = [{demand:?}]\n"
    )
}

/// A provider table for one phase.
fn provider(name: &str, system: &str, mw: f64, extra: &str) -> String {
    provider_in(name, system, &[mw], extra)
}

/// A provider table with megawatts `mw` per phase.
fn provider_in(name: &str, system: &str, mw: &[f64], extra: &str) -> String {
    format!("[[provider]]\nname = \"{name}\"\nsystems = [\"{system}\"]\nmw = {mw:?}\n{extra}\n")
}

/// `[[phase]]` tables of these names.
fn phases(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("[[phase]]\nname = \"{n}\"\n"))
        .collect()
}

/// A `[[class]]` of Llama 3.1 8B: its prompt and output lengths, its TTFT and TPOT targets
/// in ms, its demand per phase, and `extra` lines.
fn class_8b(
    name: &str,
    (isl, osl): (u32, u32),
    (ttft_ms, tpot_ms): (f64, f64),
    demand: &[f64],
    extra: &str,
) -> String {
    format!(
        "[[class]]\nname = \"{name}\"\nmodel = \"llama-3.1-8b\"\nisl = {isl}\nosl = {osl}\nttft_ms = {ttft_ms}\ntpot_ms = {tpot_ms}\ndemand_tok_s = {demand:?}\n{extra}\n"
    )
}

/// The whole systems a phase buys.
fn systems_bought(p: &Plan) -> u32 {
    p.phases[0].buys.iter().map(|b| b.systems).sum()
}

/// The power a provider's systems draw is that of the whole systems bought, and it stays
/// within the provider's megawatts even where a replica takes part of a rack and the
/// provider's power binds.
#[test]
fn whole_racks_stay_within_the_power_on_offer() {
    let text = |mw: f64| {
        one_phase(
            "confirm_s = 2\nconfirm_replicas = 4",
            &format!(
                "{}{}",
                provider("racks", "gb300", mw, "rent_usd_per_chip_hour = 1.0"),
                provider("other", "h100-sxm", 1000.0, "rent_usd_per_chip_hour = 10.0")
            ),
            "llama-3.1-8b",
            "isl = 1000\nosl = 200\nttft_ms = 2000\ntpot_ms = 50",
            5.0e7,
        )
    };
    // A first plan for one rack's megawatts.
    let first = run(&text(2.0), &WhatIf::default()).expect("plans");
    let o = first.phases[0]
        .buys
        .iter()
        .map(|b| &first.options[b.option])
        .find(|o| o.provider == "racks")
        .expect("racks bought");
    assert!(
        o.systems.fract() > 0.0,
        "a replica takes part of a rack: {o:?}"
    );
    let rack = o.mw / o.systems;
    // Power for thirty racks and a half: the cheap racks take all of it, and replicas that
    // fill the half rack would need the whole of the thirty-first.
    let p = run(&text(30.5 * rack), &WhatIf::default()).expect("plans");
    let ph = &p.phases[0];
    assert!(ph.infeasible.is_none(), "{:?}", ph.infeasible);
    let u = &ph.providers[0];
    let racks: u32 = u.systems.iter().map(|(_, n)| n).sum();
    assert!(racks >= 29, "{u:?}");
    assert!(
        (u.mw_used - f64::from(racks) * rack).abs() < 1e-9 * u.mw_used,
        "{u:?}"
    );
    assert!(u.mw_used <= u.mw_available, "{u:?}");
}

/// Rounding a fraction of a coarse unit up to a whole one is not taken where a whole smaller
/// unit meets the demand for less: six tenths of a 32-wafer disaggregated unit would be
/// bought whole, where one 16-wafer replica carries the demand at half the systems; and
/// where holding a unit down brings a coarser one still, that is held down too.
#[test]
fn rounding_up_takes_the_cheaper_whole_unit() {
    let wafers = provider("cb", "cs3", 5.0, "capex_usd_per_system = 2500000.0");
    for (class, demand, most) in [
        (
            "isl = 20000\nosl = 2000\nosl_cv = 2.0\nttft_ms = 5000\ntpot_ms = 20\npercentile = 0.9",
            2.0e4,
            16,
        ),
        // A thousand tokens a second of 32k prompts take one 5-wafer replica, not 20
        // wafers; sixteen thousand a 20-wafer replica and a 10-wafer one, not four tenths
        // of a 40-wafer one bought whole.
        (
            "isl = 32000\nosl = 1000\nttft_ms = 3000\ntpot_ms = 20\npercentile = 0.99",
            1.0e3,
            5,
        ),
        (
            "isl = 32000\nosl = 1000\nttft_ms = 3000\ntpot_ms = 20\npercentile = 0.99",
            1.6e4,
            30,
        ),
    ] {
        let text = one_phase(
            "max_share = 1.0\nconfirm_s = 5",
            &wafers,
            "llama-3.1-70b",
            class,
            demand,
        );
        let p = run(&text, &WhatIf::default()).expect("plans");
        let ph = &p.phases[0];
        assert!(ph.infeasible.is_none(), "{:?}", ph.infeasible);
        let systems = systems_bought(&p);
        assert!(
            systems <= most,
            "{demand}: {systems} systems: {:?}",
            ph.buys
        );
        assert!(ph.classes[0].capacity_tok_s >= demand);
    }
    // With little more power than those 30 wafers draw (0.76 MW), they are still planned: no margin
    // of a whole coarse replica is held back before rounding.
    let text = one_phase(
        "max_share = 1.0\nconfirm_s = 5",
        &provider("cb", "cs3", 0.8, "capex_usd_per_system = 2500000.0"),
        "llama-3.1-70b",
        "isl = 32000\nosl = 1000\nttft_ms = 3000\ntpot_ms = 20\npercentile = 0.99",
        1.6e4,
    );
    let p = run(&text, &WhatIf::default()).expect("plans");
    assert!(
        p.phases[0].infeasible.is_none(),
        "{:?}",
        p.phases[0].infeasible
    );
    assert!(systems_bought(&p) <= 30, "{:?}", p.phases[0].buys);
}

/// Whole racks are what the power limit and a commitment count: three GB300 racks that
/// fit in 0.5 MW are planned there (not refused for the rack rounding adds to the linear
/// plan's share), and a commitment of 0.4 MW buys the third rack.
#[test]
fn whole_racks_fit_the_power_and_meet_a_commitment() {
    let text = |mw: f64, extra: &str, demand: f64| {
        one_phase(
            "max_share = 1.0\nconfirm_s = 5\nconfirm_replicas = 12",
            &provider("nv", "gb300", mw, extra),
            "llama-3.3-70b",
            "isl = 1500\nosl = 400\nttft_ms = 2000\ntpot_ms = 40\npercentile = 0.99",
            demand,
        )
    };
    let p = run(&text(0.5, "", 1.2e5), &WhatIf::default()).expect("plans");
    let ph = &p.phases[0];
    assert!(ph.infeasible.is_none(), "{:?}", ph.infeasible);
    let u = &ph.providers[0];
    assert!(u.mw_used <= u.mw_available, "{u:?}");
    let p = run(
        &text(0.6, "committed_mw = [0.4]", 5.0e4),
        &WhatIf::default(),
    )
    .expect("plans");
    let u = &p.phases[0].providers[0];
    assert!(u.mw_used >= 0.4 && u.mw_used <= 0.6, "{u:?}");
}

/// A class whose drawn outputs sometimes run past what a replica holds is confirmed on its
/// latencies: those requests are refused as any engine refuses them, whatever the capacity.
#[test]
fn requests_longer_than_a_replica_holds_do_not_unconfirm_a_plan() {
    let text = one_phase(
        "max_share = 1.0\nconfirm_s = 60",
        &provider("gpu", "h200", 10.0, "rent_usd_per_chip_hour = 3.0"),
        "llama-3.1-8b",
        "isl = 100000\nosl = 2000\nosl_cv = 1.5\nttft_ms = 30000\ntpot_ms = 100\npercentile = 0.5",
        2.0e4,
    );
    let p = run(&text, &WhatIf::default()).expect("plans");
    let c = &p.phases[0].classes[0];
    assert!(c.confirmed, "{c:?}");
}

/// A p99 TTFT target is met at the tail, not on average: replicas are loaded only until
/// their mean TTFT leaves room for the queue's tail, so the confirming simulation holds the
/// percentile.
#[test]
fn a_p99_ttft_target_holds_in_the_confirming_simulation() {
    let text = one_phase(
        "n_minus_1 = 0.0\nconfirm_s = 10\nconfirm_replicas = 16",
        &provider("b", "b200", 10.0, ""),
        "llama-3.3-70b",
        "isl = 8000\nosl = 400\nttft_ms = 600\ntpot_ms = 40\npercentile = 0.99",
        20_000.0,
    );
    let p = run(&text, &WhatIf::default()).expect("plans");
    let ph = &p.phases[0];
    assert!(ph.infeasible.is_none(), "{:?}", ph.infeasible);
    let c = &ph.classes[0];
    assert!(c.confirmed, "{c:?}");
    assert!(c.sim_ttft_s.is_some_and(|t| t <= 0.600), "{c:?}");
    // Each option offered runs at a mean TTFT well inside the target.
    for o in &p.options {
        assert!(o.ttft_s <= 0.600 * 0.5, "{o:?}");
    }
}

/// Replicas of different classes share a rack: three small classes on GB300 NVL72 buy one
/// rack between them, not a rack each, and fit a provider whose power holds one rack.
#[test]
fn classes_share_whole_racks() {
    let classes = |mw: f64| {
        let mut text = format!(
            "[rules]\nconfirm_s = 10\nconfirm_replicas = 16\n[[phase]]\nname = \"p1\"\n{}",
            provider("b", "gb300", mw, "")
        );
        for (name, model) in [
            ("c1", "llama-3.3-70b"),
            ("c2", "gpt-oss-120b"),
            ("c3", "llama-3.1-8b"),
        ] {
            text += &format!(
                "[[class]]\nname = \"{name}\"\nmodel = \"{model}\"\nisl = 1500\nosl = 400\nttft_ms = 2000\ntpot_ms = 40\ndemand_tok_s = [5000.0]\n"
            );
        }
        text
    };
    let p = run(&classes(5.0), &WhatIf::default()).expect("plans");
    let ph = &p.phases[0];
    assert!(ph.infeasible.is_none(), "{:?}", ph.infeasible);
    let racks: u32 = ph.providers[0].systems.iter().map(|(_, n)| n).sum();
    assert_eq!(racks, 1, "{:?}", ph.providers);
    // The plan's cost is one rack's, shared by the classes in proportion.
    let rack = p
        .options
        .iter()
        .find(|o| o.system == "gb300")
        .expect("an option");
    let per_rack = rack.usd_per_hour / rack.systems;
    assert!(
        (ph.usd_per_hour - per_rack).abs() < 1e-6 * per_rack,
        "{} against {per_rack}",
        ph.usd_per_hour
    );
    let classes_usd: f64 = ph
        .classes
        .iter()
        .map(|c| c.usd_per_mtok.unwrap_or(0.0) * c.demand_tok_s * 3600.0 / 1e6)
        .sum();
    assert!(
        (classes_usd - ph.usd_per_hour).abs() < 1e-6 * per_rack,
        "{classes_usd}"
    );
    // A provider with the power of one rack (0.149 MW) holds the three classes.
    let p = run(&classes(0.2), &WhatIf::default()).expect("plans");
    assert!(
        p.phases[0].infeasible.is_none(),
        "{:?}",
        p.phases[0].infeasible
    );
}

/// One phase of `rules`, two providers and a Llama 3.1 8B class (1,000 in, 200 out, TTFT
/// within 2 s, TPOT 50 ms, and `extra` lines) at `demand`.
fn eight_b(rules: &str, providers: [String; 2], extra: &str, demand: f64) -> String {
    one_phase(
        rules,
        &providers.concat(),
        "llama-3.1-8b",
        &format!("isl = 1000\nosl = 200\nttft_ms = 2000\ntpot_ms = 50{extra}"),
        demand,
    )
}

/// Power committed where none of a provider's systems can serve is a commitment the plan
/// cannot keep: the phase says so, naming the provider, rather than leave it unspent.
#[test]
fn a_commitment_nothing_can_use_is_told() {
    let text = eight_b(
        "n_minus_1 = 0.0\nconfirm_s = 10\nconfirm_replicas = 8",
        [
            provider("a", "h100-sxm", 5.0, "rent_usd_per_chip_hour = 2.0"),
            provider("c", "wse2-chip", 5.0, "committed_mw = [5.0]"),
        ],
        "",
        10_000.0,
    );
    let p = run(&text, &WhatIf::default()).expect("plans");
    let why = p.phases[0].infeasible.as_deref().expect("infeasible");
    assert!(
        why.contains("provider `c` commits 5.00 MW") && why.contains("rejected"),
        "{why}"
    );
}

/// Where the power on offer would do in all but each provider's own megawatts bind (the
/// efficient systems' provider is small), the reason names each provider's most, not the
/// rounding of whole replicas.
#[test]
fn power_short_where_it_is_needed_is_told_per_provider() {
    let text = |demand: f64| {
        eight_b(
            "n_minus_1 = 0.0\nmax_share = 1.0\nconfirm_s = 10\nconfirm_replicas = 8",
            [
                provider("fast", "b200", 1.0, ""),
                provider("slow", "a100-sxm", 1.0, ""),
            ],
            "\npercentile = 0.5",
            demand,
        )
    };
    let small = run(&text(1000.0), &WhatIf::default()).expect("plans");
    let per_mw = |system: &str| {
        small
            .options
            .iter()
            .filter(|o| o.system == system)
            .map(|o| o.capacity_tok_s / o.mw)
            .fold(0.0, f64::max)
    };
    let (fast, slow) = (per_mw("b200"), per_mw("a100-sxm"));
    assert!(fast > 1.5 * slow, "{fast} against {slow}");
    // Demand the fast provider's power would carry one and a half times over: under two
    // megawatts at its efficiency, beyond both providers' own.
    let demand = 1.5 * fast;
    assert!(demand > fast + slow);
    let p = run(&text(demand), &WhatIf::default()).expect("plans");
    let why = p.phases[0].infeasible.as_deref().expect("infeasible");
    assert!(
        why.contains("where it is needed") && why.contains("`fast`") && why.contains("`slow`"),
        "{why}"
    );
}

/// A demand that would take more replicas than a count holds (100,000-token prompts for one
/// token each, a tenth of a token a second a replica) is refused, not clamped into a plan
/// below its demand.
#[test]
fn a_demand_beyond_any_fleet_is_refused() {
    let text = one_phase(
        "n_minus_1 = 0.0",
        &provider("a", "h100-sxm", 1.0e12, "rent_usd_per_chip_hour = 1.0"),
        "llama-3.1-8b",
        "isl = 100000\nosl = 1\nttft_ms = 60000\ntpot_ms = 1000\npercentile = 0.5",
        1.0e10,
    );
    let e = run(&text, &WhatIf::default())
        .expect_err("refused")
        .to_string();
    assert!(e.contains("beyond any fleet"), "{e}");
}

/// A phase that asks what the one before it asked has that plan at least: the systems kept
/// from it fill a provider's power to the last system, and rounding the next plan's
/// replicas up must not put them out of reach.
#[test]
fn a_phase_like_the_one_before_is_planned_too() {
    let text = format!(
        "[rules]\nn_minus_1 = 0.0\nconfirm_s = 5\nconfirm_replicas = 4\n{}{}{}{}{}",
        phases(&["y1", "y2"]),
        provider_in(
            "cheap",
            "h100-sxm",
            &[1.0, 1.0],
            "rent_usd_per_chip_hour = 1.0"
        ),
        provider_in(
            "dear",
            "h200",
            &[100.0, 100.0],
            "rent_usd_per_chip_hour = 10.0"
        ),
        class_8b("chat", (1000, 200), (2000.0, 50.0), &[3.0e6, 3.0e6], ""),
        class_8b("long", (7000, 300), (3000.0, 40.0), &[1.0e6, 1.0e6], ""),
    );
    // And with all of the cheap provider's power committed, take-or-pay, as the phase
    // before's plan used it.
    let committed = text.replace(
        "mw = [1.0, 1.0]\n",
        "mw = [1.0, 1.0]\ncommitted_mw = [1.0, 1.0]\n",
    );
    for text in [text.as_str(), committed.as_str()] {
        let p = run(text, &WhatIf::default()).expect("plans");
        for ph in &p.phases {
            assert!(ph.infeasible.is_none(), "{:?}", ph.infeasible);
            // The cheap provider is filled.
            assert!(ph.providers[0].mw_used > 0.95, "{:?}", ph.providers[0]);
        }
        assert!(p.phases[1].usd_per_hour <= p.phases[0].usd_per_hour * (1.0 + 1e-9));
    }
}

/// A class of very little demand is still confirmed by simulation: its run lasts long
/// enough for some requests to arrive (40 tok/s of 200-token answers is one a fifth of a
/// second, four within a five-second run less its warm-up).
#[test]
fn a_class_of_little_demand_is_confirmed_on_enough_requests() {
    let text = one_phase(
        "n_minus_1 = 0.0\nconfirm_s = 5",
        &provider("a", "h100-sxm", 1.0, "rent_usd_per_chip_hour = 2.0"),
        "llama-3.1-8b",
        "isl = 1000\nosl = 200\nttft_ms = 2000\ntpot_ms = 50\npercentile = 0.99",
        40.0,
    );
    let p = run(&text, &WhatIf::default()).expect("plans");
    let c = &p.phases[0].classes[0];
    assert!(c.confirmed && c.sim_ttft_s.is_some(), "{c:?}");
}

/// A class only one provider's systems can serve (a TPOT only wafer-scale meets) is named
/// when the N-1 and largest-share rules ask for a second provider, and may rest on that one
/// provider by its own `n_minus_1` and `max_share`, the rules holding for the rest.
#[test]
fn a_class_only_one_provider_serves_is_named_and_may_rest_on_it() {
    let class = |name: &str, tpot_ms: f64, own: &str| {
        class_8b(
            name,
            (1000, 200),
            (1000.0, tpot_ms),
            &[1.0e5],
            &format!("percentile = 0.5\n{own}"),
        )
    };
    let text = |own: &str| {
        format!(
            "[rules]\nn_minus_1 = 0.5\nmax_share = 0.75\nconfirm_s = 5\nconfirm_replicas = 8\n{}{}{}{}{}",
            phases(&["p1"]),
            provider("wafer", "cs3", 5.0, "capex_usd_per_system = 2500000.0"),
            provider("gpu", "h100-sxm", 50.0, "rent_usd_per_chip_hour = 2.0"),
            class("fast", 3.0, own),
            class("chat", 50.0, "")
        )
    };
    let p = run(&text(""), &WhatIf::default()).expect("plans");
    let why = p.phases[0].infeasible.as_deref().expect("infeasible");
    assert!(
        why.contains("class `fast`: only `wafer`") && why.contains("N-1 rule"),
        "{why}"
    );
    let p = run(
        &text("n_minus_1 = 0.0\nmax_share = 1.0"),
        &WhatIf::default(),
    )
    .expect("plans");
    let ph = &p.phases[0];
    assert!(ph.infeasible.is_none(), "{:?}", ph.infeasible);
    // The report's rules say which class has its own.
    assert_eq!(p.rules.own_text(), "class fast: N-1 0%, largest share 100%");
    // The chat class still rides out the loss of either provider.
    let chat: Vec<f64> = ph
        .n_minus_1
        .iter()
        .map(|n| n.classes.iter().find(|c| c.0 == "chat").expect("chat").1)
        .collect();
    assert!(chat.iter().all(|&s| s >= 0.5 - 1e-9), "{chat:?}");
}

/// One phase and one class of gpt-oss-120b over the providers given as (name, system, MW).
fn offers(providers: &[(&str, &str, f64)]) -> String {
    let mut text = String::from(
        "[rules]\nn_minus_1 = 0.0\nmax_share = 1.0\nconfirm_s = 5\n[[phase]]\nname = \"p\"\n",
    );
    for (name, system, mw) in providers {
        text +=
            &format!("[[provider]]\nname = \"{name}\"\nsystems = [\"{system}\"]\nmw = [{mw}]\n");
    }
    text + "[[class]]\nname = \"c\"\nmodel = \"gpt-oss-120b\"\nisl = 1500\nosl = 400\nttft_ms = 2000\ntpot_ms = 60\npercentile = 0.99\ndemand_tok_s = [30000.0]\n"
}

#[test]
fn a_provider_more_on_offer_never_raises_the_cost() {
    // A second B200 provider beside the first once made rounding buy a whole B200 server
    // ($53.52/h) where two H100 replicas on one server ($31.92/h) carry the demand.
    let without = offers(&[("p0", "b200", 0.05), ("p2", "h100-sxm", 0.05)]);
    let with = offers(&[
        ("p0", "b200", 0.05),
        ("p1", "b200", 0.05),
        ("p2", "h100-sxm", 0.05),
    ]);
    let usd = |text: &str| {
        let p = run(text, &WhatIf::default()).expect("plans");
        assert!(
            p.phases[0].infeasible.is_none(),
            "{:?}",
            p.phases[0].infeasible
        );
        p.phases[0].usd_per_hour
    };
    let (a, b) = (usd(&without), usd(&with));
    assert!(
        b <= a * (1.0 + 1e-9),
        "with p1 {b:.2} $/h, without {a:.2} $/h"
    );
    assert!(
        (a - 31.92).abs() < 0.01,
        "two H100 replicas on one server: {a:.2} $/h"
    );
}

#[test]
fn a_provider_not_yet_online_leaves_a_phase_planned() {
    // A provider of no power in the first phase once sent the rounding of that phase astray
    // and the phase was reported as having no plan, naming a rule that did not bind.
    let text = r#"
[rules]
max_share = 0.75
confirm_s = 5
[[phase]]
name = "2026"
[[phase]]
name = "2027"
[[provider]]
name = "late"
systems = ["mi300x"]
mw = [0.0, 0.5]
[[provider]]
name = "amd"
systems = ["mi355x"]
mw = [0.05, 0.05]
[[provider]]
name = "cloud"
systems = ["b200"]
mw = [0.5, 0.5]
[[class]]
name = "c"
model = "llama-3.3-70b"
isl = 1500
osl = 400
ttft_ms = 2000
tpot_ms = 20
percentile = 0.99
demand_tok_s = [15000.0, 15000.0]
"#;
    let p = run(text, &WhatIf::default()).expect("plans");
    for ph in &p.phases {
        assert!(ph.infeasible.is_none(), "{}: {:?}", ph.phase, ph.infeasible);
        let carried: f64 = ph
            .buys
            .iter()
            .map(|b| p.options[b.option].capacity_tok_s * f64::from(b.replicas))
            .sum();
        assert!(carried >= 15000.0, "{}: {carried} tok/s", ph.phase);
    }
}

#[test]
fn a_demand_of_a_thousandth_of_a_token_a_second_still_buys_replicas() {
    // Rounding up with a tolerance once rounded a relaxation's 1e-8 replicas to none: a
    // plan of nothing, neither meeting its demand nor riding out a loss.
    let p = run(&small(2.0, 1e-3, 0.5, 5.0), &WhatIf::default()).expect("plans");
    let ph = &p.phases[0];
    assert!(ph.infeasible.is_none(), "{:?}", ph.infeasible);
    for provider in ["a", "b"] {
        assert!(
            capacity_of(&p, provider) > 1e-3,
            "{provider} carries nothing"
        );
    }
    assert!(ph.classes.iter().all(|c| c.confirmed), "{:?}", ph.classes);
}

#[test]
fn a_life_alone_spreads_the_catalogs_purchase_price() {
    // MI355X has a purchase price in the catalog and no rent: a shorter life costs more an
    // hour.
    let text = |life: &str| {
        small(2.0, 5000.0, 0.0, 5.0).replace(
            "systems = [\"h100-sxm\"]\nmw = [5.0]\nrent_usd_per_chip_hour = 2.0",
            &format!("systems = [\"mi355x\"]\nmw = [5.0]\n{life}"),
        )
    };
    let usd = |life: &str| {
        let p = run(&text(life), &WhatIf::default()).expect("plans");
        p.options
            .iter()
            .find(|o| o.provider == "a")
            .map(|o| o.usd_per_hour)
            .expect("an option of a")
    };
    let (five, one) = (usd(""), usd("life_years = 1.0"));
    assert!(
        one > 2.0 * five,
        "1 year {one:.2} $/h, the catalog's life {five:.2} $/h"
    );
}

/// A take-or-pay commitment holds in every phase that makes it, a repeated one as much as a
/// rising one (a second phase like the first once used none of it), and where whole systems
/// can meet it on a rack-scale system, the plan uses the rack (a rack committed whole was
/// left idle for cheaper servers elsewhere).
#[test]
fn a_commitment_is_used_in_every_phase_that_makes_it() {
    let repeated = r#"
[rules]
confirm_s = 3
keep_installed = false
[[phase]]
name = "y1"
[[phase]]
name = "y2"
[[provider]]
name = "a"
systems = ["mi300x"]
mw = [0.6, 0.6]
[[provider]]
name = "b"
systems = ["mi300x"]
mw = [0.1, 0.1]
committed_mw = [0.09, 0.09]
[[class]]
name = "c0"
model = "gpt-oss-120b"
isl = 500
osl = 400
ttft_ms = 1000
tpot_ms = 40
percentile = 0.99
demand_tok_s = [2000.0, 2000.0]
"#;
    let used = |p: &Plan, k: usize, name: &str| {
        p.phases[k]
            .providers
            .iter()
            .find(|u| u.provider == name)
            .map_or(0.0, |u| u.mw_used)
    };
    let p = run(repeated, &WhatIf::default()).expect("plans");
    for k in 0..2 {
        assert!(
            p.phases[k].infeasible.is_none(),
            "{:?}",
            p.phases[k].infeasible
        );
        assert!(
            used(&p, k, "b") >= 0.08,
            "phase {k}: {} MW of 0.09",
            used(&p, k, "b")
        );
    }
    let rack = r#"
[rules]
confirm_s = 3
mw_is = "it"
[[phase]]
name = "p0"
[[provider]]
name = "rack"
systems = ["gb200"]
mw = [0.12]
committed_mw = [0.12]
[[provider]]
name = "other"
systems = ["mi300x"]
mw = [0.6]
[[class]]
name = "c0"
model = "gpt-oss-120b"
isl = 500
osl = 400
ttft_ms = 1000
tpot_ms = 60
percentile = 0.99
demand_tok_s = [2000.0]
[[class]]
name = "c1"
model = "gpt-oss-120b"
isl = 1500
osl = 200
ttft_ms = 2000
tpot_ms = 25
percentile = 0.99
demand_tok_s = [3000.0]
"#;
    let p = run(rack, &WhatIf::default()).expect("plans");
    assert!(
        p.phases[0].infeasible.is_none(),
        "{:?}",
        p.phases[0].infeasible
    );
    assert!(
        used(&p, 0, "rack") >= 0.11,
        "{} MW of 0.12",
        used(&p, 0, "rack")
    );
    // A commitment of less than two servers where no class asks anything is met by buying
    // a server's worth of replicas (it once had no plan: the search bought nothing).
    let idle = repeated
        .replace(
            "mw = [0.1, 0.1]\ncommitted_mw = [0.09, 0.09]",
            "mw = [0.02, 0.02]\ncommitted_mw = [0.018, 0.018]",
        )
        .replace(
            "demand_tok_s = [2000.0, 2000.0]",
            "demand_tok_s = [0.0, 0.0]",
        );
    let p = run(&idle, &WhatIf::default()).expect("plans");
    for k in 0..2 {
        assert!(
            p.phases[k].infeasible.is_none(),
            "{:?}",
            p.phases[k].infeasible
        );
        assert!(
            used(&p, k, "b") >= 0.011,
            "phase {k}: {} MW",
            used(&p, k, "b")
        );
    }
}

/// The confirming simulation checks the plan's split of the traffic: where a fast pool kept
/// at one replica stands beside slower ones that carry most of the capacity, the class's
/// simulated percentiles are the slower pools' too, not the fast pool's alone (which a
/// balancer sending it nearly every request made them: p99 TPOT 4.7 ms where the pools
/// carrying most of the plan take 28 ms a token and more).
#[test]
fn the_confirming_simulation_follows_the_plans_split() {
    let text = r#"
[rules]
max_share = 0.6
n_minus_1 = 0.4
headroom = 0.8
tolerance = 0.1
confirm_s = 20
confirm_replicas = 24
[[phase]]
name = "p1"
[[provider]]
name = "cer"
systems = ["cs3"]
mw = [100.0]
capex_usd_per_system = 2500000.0
life_years = 5.0
[[provider]]
name = "amd"
systems = ["mi355x"]
mw = [100.0]
[[class]]
name = "chat"
model = "llama-3.3-70b"
isl = 1500
osl = 400
ttft_ms = 1000
tpot_ms = 40
percentile = 0.99
demand_tok_s = [1.0e6]
"#;
    let p = run(text, &WhatIf::default()).expect("plans");
    let ph = &p.phases[0];
    let c = &ph.classes[0];
    // The capacity each pool carries in the plan, and its predicted time per token.
    let pools: Vec<(f64, f64)> = ph
        .buys
        .iter()
        .map(|b| {
            let o = &p.options[b.option];
            (o.capacity_tok_s * f64::from(b.replicas), o.tpot_s)
        })
        .collect();
    let total: f64 = pools.iter().map(|(cap, _)| cap).sum();
    // Pools beyond the percentile's tail: their latencies must show in it.
    let slowest = pools
        .iter()
        .filter(|(cap, _)| *cap > 0.05 * total)
        .map(|(_, tpot)| *tpot)
        .fold(0.0, f64::max);
    let sim = c.sim_tpot_s.expect("simulated");
    assert!(
        slowest > 0.02 && sim > 0.5 * slowest,
        "simulated p99 TPOT {sim} s against the slowest large pool's {slowest} s: {pools:?}"
    );
}

/// A looser target never costs more: the disaggregated units offered do not shrink with
/// the aggregated replica as the targets loosen. gpt-oss-120b's code traffic on MI355X
/// meets a 7 ms TPOT on eight-chip replicas and 7.25 ms on one; units of at most eight of
/// that one chip bought the looser target at twice the cost of the tighter.
#[test]
fn a_looser_target_costs_no_more() {
    let cost = |tpot_ms: f64| {
        let text = one_phase(
            "max_share = 1.0\nn_minus_1 = 0.0\nconfirm_s = 5\nconfirm_replicas = 12",
            &provider("amd", "mi355x", 10.0, ""),
            "gpt-oss-120b",
            &format!(
                "isl = 4000\nosl = 800\nttft_ms = 1000\ntpot_ms = {tpot_ms}\npercentile = 0.99"
            ),
            1.0e6,
        );
        let p = run(&text, &WhatIf::default()).expect("plans");
        assert!(
            p.phases[0].infeasible.is_none(),
            "{:?}",
            p.phases[0].infeasible
        );
        p.phases[0].usd_per_hour
    };
    let (tight, loose) = (cost(7.0), cost(7.25));
    assert!(
        loose <= tight * 1.001,
        "7.25 ms: ${loose}/h against 7 ms: ${tight}/h"
    );
}

/// A phase's cost is its buys', its idle kept systems' and the chips its replicas leave in
/// the systems they fill in part: one H100 replica of eight in a server pays for the server.
#[test]
fn the_cost_line_says_what_the_buys_leave_out() {
    let p = run(&small(2.0, 1000.0, 0.0, 5.0), &WhatIf::default()).expect("plans");
    let ph = &p.phases[0];
    let bought: f64 = ph
        .buys
        .iter()
        .map(|b| f64::from(b.replicas) * p.options[b.option].usd_per_hour)
        .sum();
    assert!(ph.usd_per_hour > bought, "{} {bought}", ph.usd_per_hour);
    let text = ph.cost_text(&p.options);
    let spare = format!("${:.0} for the chips left over", ph.usd_per_hour - bought);
    assert!(text.contains(&spare), "{text}");
}

/// A class that asks for no tokens has no cost or energy a token, and a share of a class
/// kept reads as no more than it is: 99.5% is not all of it.
#[test]
fn no_demand_has_no_cost_a_token_and_shares_round_down() {
    let p = run(&small(2.0, 0.0, 0.5, 5.0), &WhatIf::default()).expect("plan");
    let c = &p.phases[0].classes[0];
    assert_eq!(c.replicas, 0);
    assert_eq!(c.per_token_text(), ("-".to_string(), "-".to_string()));
    let p = run(&small(2.0, 5000.0, 0.5, 5.0), &WhatIf::default()).expect("plan");
    let (usd, joules) = p.phases[0].classes[0].per_token_text();
    assert!(usd.parse::<f64>().is_ok_and(|x| x > 0.0), "{usd}");
    assert!(joules.parse::<f64>().is_ok_and(|x| x > 0.0), "{joules}");
    use switchyard_planner::served_percent;
    assert_eq!(
        [0.9954, 1.0, 0.29, 0.5, 0.0].map(served_percent),
        ["99%", "100%", "29%", "50%", "0%"]
    );
}

/// A backup pool the rules make carry part of a class, beside committed wafers of hundreds
/// of times the demand, draws a small share of the confirming simulation's requests: the
/// run lasts until it has served some, and the plan is confirmed. A provider that holds
/// nothing of the class is no failure of it when lost.
#[test]
fn a_small_backup_pool_is_simulated_and_an_empty_provider_loses_nothing() {
    let text = |tpot_ms: f64| {
        format!(
            r#"
[rules]
n_minus_1 = 0.5
max_share = 0.75
[[phase]]
name = "p1"
[[provider]]
name = "wafer"
systems = ["cs3"]
mw = [60.0]
committed_mw = [60.0]
capex_usd_per_system = 2500000.0
[[provider]]
name = "amd"
systems = ["mi355x"]
mw = [10.0]
[[provider]]
name = "spare"
systems = ["b200"]
mw = [10.0]
[[class]]
name = "code"
model = "gpt-oss-120b"
isl = 4000
osl = 800
ttft_ms = 1000
tpot_ms = {tpot_ms}
percentile = 0.99
demand_tok_s = [9.0e4]
"#
        )
    };
    let p = run(&text(6.5), &WhatIf::default()).expect("plans");
    let ph = &p.phases[0];
    assert!(capacity_of(&p, "amd") > 0.0 && capacity_of(&p, "spare") == 0.0);
    let c = &ph.classes[0];
    assert!(c.confirmed, "{:?}", c.unconfirmed);
    let spare = ph
        .n_minus_1
        .iter()
        .find(|n| n.lost == "spare")
        .expect("row");
    assert!(spare.classes.iter().all(|(_, _, ok)| *ok));
}

/// `--cost` costs the catalog's systems on one basis, a provider's own price standing: an
/// H100 at its published rent, or at its purchase over five years plus power, which is
/// cheaper by the hour; the report says which.
#[test]
fn one_basis_of_price_for_the_catalogs_systems() {
    let text = small(2.0, 100_000.0, 0.0, 0.0).replace("rent_usd_per_chip_hour = 2.0\n", "");
    let cost = |basis| {
        let p = run(
            &text,
            &WhatIf {
                cost: basis,
                ..WhatIf::default()
            },
        )
        .expect("plans");
        (p.phases[0].usd_per_hour, p.what_if)
    };
    use switchyard_perf::CostBasis;
    let (default, none) = cost(None);
    let (rent, rented) = cost(Some(CostBasis::Rent));
    let (owned, bought) = cost(Some(CostBasis::Owned));
    assert!(none.is_empty());
    assert_eq!(rented, ["catalog systems rented"]);
    assert_eq!(bought, ["catalog systems owned"]);
    // The catalog's H100 has both: rent is charged where both are known.
    assert_eq!(default, rent);
    assert!(owned < rent, "owned {owned} rent {rent}");
}

/// Where what is installed stays, a phase installs no more of a provider than later phases
/// keep offering: an H100 cloud that offers power in the first phase and none in the
/// second is left out of both, not bought in the first and found over its power in the
/// second; a phase short of power says why the earlier one installed less.
#[test]
fn kept_systems_are_planned_with_later_phases_power_in_view() {
    let text = |mw_a: &str, demand: &str| {
        format!(
            r#"
[rules]
n_minus_1 = 0.0
confirm_s = 10
confirm_replicas = 8
[[phase]]
name = "a"
[[phase]]
name = "b"
[[provider]]
name = "hopper"
systems = ["h100-sxm"]
mw = {mw_a}
rent_usd_per_chip_hour = 2.0
[[provider]]
name = "blackwell"
systems = ["b200"]
mw = [10.0, 10.0]
rent_usd_per_chip_hour = 3.0
[[class]]
name = "chat"
model = "llama-3.1-8b"
isl = 1000
osl = 200
ttft_ms = 2000
tpot_ms = 40
demand_tok_s = {demand}
"#
        )
    };
    let p = run(&text("[10.0, 0.0]", "[1.0e6, 1.0e6]"), &WhatIf::default()).expect("plans");
    for ph in &p.phases {
        assert!(ph.infeasible.is_none(), "{}: {:?}", ph.phase, ph.infeasible);
    }
    assert_eq!(capacity_of(&p, "hopper"), 0.0);
    let hopper = &p.phases[0].providers[0];
    assert_eq!(
        (hopper.provider.as_str(), hopper.mw_available),
        ("hopper", 10.0)
    );
    // Without the later phase's power cut, the H100s are cheaper and bought.
    let p = run(&text("[10.0, 10.0]", "[1.0e6, 1.0e6]"), &WhatIf::default()).expect("plans");
    assert!(capacity_of(&p, "hopper") > 0.0);
    // More demand than the power kept through both phases: the first phase says why.
    let p = run(&text("[10.0, 0.0]", "[1.0e8, 1.0]"), &WhatIf::default()).expect("plans");
    let why = p.phases[0].infeasible.as_deref().expect("infeasible");
    assert!(
        why.contains("`hopper` offers 10.0 MW here and 0.000 MW in a later phase"),
        "{why}"
    );
}

/// A class that asks for nothing in a phase costs nothing and has no price a token and no
/// surplus, and a phase that buys nothing costs 0 an hour, not a float sum's -0.
#[test]
fn a_phase_without_demand_costs_nothing_and_prices_no_token() {
    let p = run(&small(2.0, 0.0, 0.0, 5.0), &WhatIf::default()).expect("plans");
    let ph = &p.phases[0];
    assert!(ph.buys.is_empty());
    assert!(ph.usd_per_hour == 0.0 && ph.usd_per_hour.is_sign_positive());
    let c = &ph.classes[0];
    assert_eq!(
        (c.usd_per_mtok, c.joules_per_token, c.surplus),
        (None, None, None)
    );
    assert_eq!(c.per_token_text(), ("-".to_string(), "-".to_string()));
}
