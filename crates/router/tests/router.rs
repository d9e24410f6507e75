//! Routing policies and passive health.

use switchyard_router::{
    Ask, Health, Policy, Router, Sent, Target, UNSTATED_TPOT_S, UNSTATED_TTFT_S,
};

fn target(name: &str, f: impl FnOnce(&mut Target)) -> Target {
    let mut t = Target::named(name);
    f(&mut t);
    t
}

/// A target that states no prediction: a typical cloud's figures until observed.
fn unstated(name: &str) -> Target {
    target(name, |t| {
        t.ttft_s = UNSTATED_TTFT_S;
        t.tpot_s = UNSTATED_TPOT_S;
        t.capacity = 64.0;
    })
}

fn three() -> Vec<Target> {
    vec![
        target("a", |_| {}),
        target("b", |_| {}),
        target("c", |_| {}),
    ]
}

#[test]
fn policies_parse_by_name_and_unknown_names_list_the_known() {
    for p in Policy::ALL {
        assert_eq!(p.name().parse::<Policy>().expect("parses"), p);
    }
    let err = "fastest".parse::<Policy>().expect_err("unknown");
    assert!(err.to_string().contains("least-outstanding"));
}

#[test]
fn round_robin_cycles_and_skips_excluded_targets() {
    let mut r = Router::new(Policy::RoundRobin, three(), Health::default(), 1);
    let picks: Vec<usize> = (0..6)
        .map(|_| r.pick(0.0, &Ask::default()).expect("a target"))
        .collect();
    assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    let ask = Ask {
        exclude: &[0, 1],
        ..Ask::default()
    };
    assert_eq!(r.pick(0.0, &ask), Some(2));
    let all = Ask {
        exclude: &[0, 1, 2],
        ..Ask::default()
    };
    assert_eq!(r.pick(0.0, &all), None);
    // A retry takes no turn: with `a` failing every first try, requests still start on
    // `a`, `b`, `c` in turn, not all on `a`.
    let mut r = Router::new(Policy::RoundRobin, three(), Health::default(), 1);
    let mut first = Vec::new();
    for _ in 0..3 {
        let i = r.pick(0.0, &Ask::default()).expect("a target");
        first.push(i);
        if i == 0 {
            let retry = Ask {
                exclude: &[0],
                ..Ask::default()
            };
            assert_eq!(r.pick(0.0, &retry), Some(1));
        }
    }
    assert_eq!(first, [0, 1, 2]);
}

/// Each class takes its own turns: a class served by two targets splits its requests
/// evenly, however another class served by one of them interleaves with it.
#[test]
fn round_robin_turns_are_each_classs_own() {
    let targets = vec![
        target("gold-only", |t| t.classes = vec!["gold".into()]),
        target("any", |_| {}),
    ];
    let mut r = Router::new(Policy::RoundRobin, targets, Health::default(), 1);
    let mut gold = [0; 2];
    for _ in 0..100 {
        for class in ["gold", "silver"] {
            let ask = Ask {
                class: Some(class),
                ..Ask::default()
            };
            let i = r.pick(0.0, &ask).expect("a target");
            if class == "gold" {
                gold[i] += 1;
            }
        }
    }
    assert_eq!(gold, [50, 50]);
}

/// A class that no target names takes turns of its own too: one whose TPOT target only one
/// target meets, sent between its requests, does not take their turns.
#[test]
fn round_robin_turns_are_a_classs_own_whatever_narrows_another() {
    let targets = vec![
        target("fast", |t| t.tpot_s = 0.005),
        target("slow", |t| t.tpot_s = 0.05),
    ];
    let mut r = Router::new(Policy::RoundRobin, targets, Health::default(), 1);
    let mut loose = [0; 2];
    for _ in 0..100 {
        let tight = Ask {
            class: Some("tight"),
            tpot_target_s: Some(0.015),
            ..Ask::default()
        };
        assert_eq!(r.pick(0.0, &tight), Some(0));
        let i = r
            .pick(
                0.0,
                &Ask {
                    class: Some("loose"),
                    ..Ask::default()
                },
            )
            .expect("a target");
        loose[i] += 1;
    }
    assert_eq!(loose, [50, 50]);
}

/// Long prompts queue for a target's prefill rate: the latency policy sends some of a burst
/// of them to a slower target rather than all to the faster one, whose KV cache holds them
/// all; counted in requests alone, the queue looks empty. Once the queue drains, the faster
/// target is first again.
#[test]
fn the_latency_policy_sees_long_prompts_queue() {
    let targets = |rates: (f64, f64)| {
        vec![
            target("fast", |t| {
                t.ttft_s = 0.5;
                t.tpot_s = 0.01;
                t.capacity = 64.0;
                t.prefill_tok_s = rates.0;
            }),
            target("slow", |t| {
                t.ttft_s = 1.5;
                t.tpot_s = 0.02;
                t.capacity = 16.0;
                t.prefill_tok_s = rates.1;
            }),
        ]
    };
    let ask = Ask {
        prompt_tokens: Some(10_000),
        output_tokens: Some(10),
        ..Ask::default()
    };
    let burst = |r: &mut Router| {
        let mut counts = [0; 2];
        for _ in 0..10 {
            let i = r.pick(0.0, &ask).expect("a target");
            r.dispatched_prompt(i, 0.0, 10_000);
            counts[i] += 1;
        }
        counts
    };
    let mut queued = Router::new(
        Policy::Latency,
        targets((20_000.0, 7_000.0)),
        Health::default(),
        1,
    );
    let counts = burst(&mut queued);
    assert!(counts[1] >= 2 && counts[0] > counts[1], "{counts:?}");
    // Ten seconds on, both queues have drained.
    assert_eq!(queued.pick(10.0, &ask), Some(0));
    // Without prefill rates, the queue is counted in requests and every one goes to the
    // faster target.
    let mut counted = Router::new(Policy::Latency, targets((0.0, 0.0)), Health::default(), 1);
    assert_eq!(burst(&mut counted), [10, 0]);
}

#[test]
fn least_outstanding_weighs_load_by_capacity() {
    let targets = vec![
        target("small", |t| t.capacity = 2.0),
        target("big", |t| t.capacity = 20.0),
    ];
    let mut r = Router::new(Policy::LeastOutstanding, targets, Health::default(), 1);
    let mut counts = [0; 2];
    for _ in 0..22 {
        let i = r.pick(0.0, &Ask::default()).expect("a target");
        r.dispatched(i);
        counts[i] += 1;
    }
    assert_eq!(counts, [2, 20]);
}

#[test]
fn latency_prefers_the_fast_target_until_its_queue_costs_more() {
    let targets = vec![
        target("wafer", |t| {
            t.ttft_s = 0.2;
            t.tpot_s = 0.002;
            t.capacity = 4.0;
        }),
        target("gpu", |t| {
            t.ttft_s = 0.5;
            t.tpot_s = 0.02;
            t.capacity = 64.0;
        }),
    ];
    let mut r = Router::new(Policy::Latency, targets, Health::default(), 1);
    let ask = Ask {
        output_tokens: Some(200),
        ..Ask::default()
    };
    let mut picks = Vec::new();
    for _ in 0..40 {
        let i = r.pick(0.0, &ask).expect("a target");
        r.dispatched(i);
        picks.push(i);
    }
    // wafer: 0.6 s per request, gpu 4.5 s: the wafer takes requests until its queue of
    // excess requests makes it slower than an idle GPU slot.
    assert_eq!(picks[0], 0);
    assert!(picks.contains(&1));
    let wafer = picks.iter().filter(|&&i| i == 0).count();
    assert!((20..=40).contains(&wafer), "wafer took {wafer}");
    // Observed latency replaces the prediction: a wafer seen to be slow loses its lead.
    let mut r2 = Router::new(Policy::Latency, r.targets().to_vec(), Health::default(), 1);
    for _ in 0..50 {
        r2.first_token(0, 0.0, 10.0, Sent::default());
    }
    assert_eq!(r2.pick(0.0, &ask), Some(1));
}

/// A fast wafer pool of `wafer_capacity` requests beside a slower GPU pool of 64.
fn wafer_and_gpu(wafer_capacity: f64) -> Vec<Target> {
    vec![
        target("wafer", |t| {
            t.ttft_s = 0.005;
            t.tpot_s = 0.002;
            t.capacity = wafer_capacity;
        }),
        target("gpu", |t| {
            t.ttft_s = 0.025;
            t.tpot_s = 0.022;
            t.capacity = 64.0;
        }),
    ]
}

/// A target's tokens slow as its batch fills by as much as its prediction at capacity says:
/// at 80% of their capacities, a pool whose full batch makes its tokens ten times as slow as
/// alone (B200's at Llama 8B, 5 ms to 50) is slower than one they slow six-fold (H100's, 8
/// to 50) at half, though faster idle; a router that took every target as twice as slow full
/// as idle kept sending the B200s more than they could serve within the H100s' TPOT.
#[test]
fn latency_counts_how_much_a_full_batch_slows_each_target() {
    let pool = |name: &str, idle: f64| {
        target(name, |t| {
            t.ttft_s = 0.05;
            t.tpot_s = idle;
            t.tpot_full_s = 0.05;
            t.capacity = 100.0;
        })
    };
    let mut r = Router::new(
        Policy::Latency,
        vec![pool("b200", 0.005), pool("h100", 0.008)],
        Health::default(),
        1,
    );
    let ask = Ask {
        output_tokens: Some(250),
        ..Ask::default()
    };
    assert_eq!(r.pick(0.0, &ask), Some(0), "idle, the faster");
    for _ in 0..80 {
        r.dispatched(0);
    }
    for _ in 0..50 {
        r.dispatched(1);
    }
    assert_eq!(r.pick(0.0, &ask), Some(1));
    let (b200, h100) = (
        r.expected_latency(0, 250.0, 0.0, None),
        r.expected_latency(1, 250.0, 0.0, None),
    );
    // 250 tokens at 5 + 0.8 x 45 ms and at 8 + 0.5 x 42 ms, after 0.05 s x (1 + load).
    assert!((b200 - (0.09 + 250.0 * 0.041)).abs() < 1e-9, "{b200}");
    assert!((h100 - (0.075 + 250.0 * 0.029)).abs() < 1e-9, "{h100}");
    // Past capacity, a request waits a life at full for each capacity's worth ahead of it.
    for _ in 0..70 {
        r.dispatched(0);
    }
    let b200 = r.expected_latency(0, 250.0, 0.0, None);
    assert!((b200 - (0.125 + 250.0 * 0.05 * 1.5)).abs() < 1e-9, "{b200}");
}

/// What is learned under a burst is taken back to an idle target's: once the burst has
/// drained, the fast target wins again, where learned as measured its slow answers would
/// have kept every request on the slower target (which, never asked, never showed it).
#[test]
fn latency_learns_an_idle_targets_speed_from_answers_under_load() {
    let mut targets = wafer_and_gpu(4.0);
    // A full batch makes the wafer's tokens three times as slow.
    targets[0].tpot_full_s = 0.006;
    let mut r = Router::new(Policy::Latency, targets, Health::default(), 1);
    // A burst of 32 on the wafer: 8 times its capacity, its first tokens up to 9 times as
    // slow; a running request's tokens no slower than a full batch makes them, however many
    // wait for a place.
    for _ in 0..32 {
        r.dispatched(0);
    }
    for k in 0..32 {
        // The other requests in flight beside the one answering; the first four were sent
        // within its capacity, the rest waited for a place.
        let load = (f64::from(31 - k) / 4.0).min(1.0) * 2.0;
        let sent = Sent {
            queued_s: 0.0,
            load: f64::from(k.min(31)) / 4.0,
            prompt_tokens: 0,
        };
        r.first_token(
            0,
            1.0,
            0.005 * (1.0 + sent.load) + 0.1 * f64::from(k / 4),
            sent,
        );
        r.succeeded(0, 1.0, Some(0.002 * (1.0 + load)));
    }
    let learned = r.observed(0).ttft_s.expect("learned");
    assert!((learned - 0.005).abs() < 1e-9, "{learned}");
    let learned = r.observed(0).tpot_s.expect("learned");
    assert!((learned - 0.002).abs() < 1e-9, "{learned}");
    let ask = Ask {
        output_tokens: Some(200),
        ..Ask::default()
    };
    assert_eq!(r.pick(1.0, &ask), Some(0));
    // A lone request is its target's time itself; and the prompts the router expected ahead
    // of it are the queue's, not the target's.
    let mut lone = Router::new(Policy::Latency, r.targets().to_vec(), Health::default(), 1);
    lone.dispatched(0);
    lone.first_token(
        0,
        0.0,
        0.5,
        Sent {
            queued_s: 0.4,
            load: 0.0,
            prompt_tokens: 0,
        },
    );
    let learned = lone.observed(0).ttft_s.expect("learned");
    assert!((learned - 0.1).abs() < 1e-9, "{learned}");
}

/// A first token is expected to take as much longer as its prompt is than the one its
/// target's TTFT is for: after a 125,000-token prompt took 0.6 s on the wafer (its 5 ms for
/// 1,024 tokens, 122 times over), the next one goes there again, not to the GPU, whose 25 ms
/// for 1,024 tokens is three seconds for it; a short prompt is expected at the TTFT stated.
#[test]
fn a_long_prompt_is_expected_to_take_as_much_longer() {
    let targets: Vec<Target> = wafer_and_gpu(16.0)
        .into_iter()
        .map(|mut t| {
            t.ttft_prompt_tokens = 1024.0;
            t
        })
        .collect();
    let mut r = Router::new(Policy::Latency, targets, Health::default(), 1);
    let long = Ask {
        output_tokens: Some(5),
        prompt_tokens: Some(125_000),
        ..Ask::default()
    };
    for _ in 0..3 {
        let i = r.pick(0.0, &long).expect("a target");
        assert_eq!(i, 0, "{:?}", r.observed(0));
        let sent = r.dispatched_prompt(i, 0.0, 125_000);
        r.first_token(i, 0.0, 0.6, sent);
        r.succeeded(i, 0.0, Some(0.002));
    }
    // What it learned is the wafer's for the prompt its TTFT is for.
    let learned = r.observed(0).ttft_s.expect("learned");
    assert!(
        (learned - 0.6 * 1024.0 / 125_000.0).abs() < 1e-3,
        "{learned}"
    );
    let scale = 125_000.0 / 1024.0;
    let gpu = r.expected_ttft(1, 0.0, Some(125_000), 256.0);
    assert!((gpu - 0.025 * scale).abs() < 1e-9, "{gpu}");
    assert!((r.expected_ttft(1, 0.0, Some(100), 256.0) - 0.025).abs() < 1e-12);
    assert!((r.expected_ttft(1, 0.0, None, 256.0) - 0.025).abs() < 1e-12);
}

/// Targets that say nothing of how their first tokens grow with the prompt (an upstream's):
/// the router learns it from their answers, so a long prompt goes to the one whose first
/// token grows least with it, and a short one to the one quickest to start.
#[test]
fn an_upstreams_first_tokens_growth_with_its_prompts_is_learned() {
    let mut r = Router::new(
        Policy::Latency,
        vec![unstated("steep"), unstated("flat")],
        Health::default(),
        1,
    );
    // "steep" starts in 0.1 s and adds 20 µs a prompt token; "flat" takes 0.6 s whatever
    // the prompt. Prompts of one length teach no slope.
    let ttft = |i: usize, n: u32| {
        if i == 0 {
            0.1 + 2e-5 * f64::from(n)
        } else {
            0.6
        }
    };
    for k in 0..40 {
        for i in 0..2 {
            let n = 20_000;
            let sent = r.dispatched_prompt(i, f64::from(k), n);
            r.first_token(i, f64::from(k), ttft(i, n), sent);
            r.succeeded(i, f64::from(k), Some(0.01));
        }
    }
    assert_eq!(r.observed(0).ttft_s_per_prompt_token(), None);
    for k in 40..80 {
        for i in 0..2 {
            let n = if k % 2 == 0 { 1_000 } else { 40_000 };
            let sent = r.dispatched_prompt(i, f64::from(k), n);
            r.first_token(i, f64::from(k), ttft(i, n), sent);
            r.succeeded(i, f64::from(k), Some(0.01));
        }
    }
    let slope = r.observed(0).ttft_s_per_prompt_token().expect("a slope");
    assert!((slope - 2e-5).abs() < 2e-6, "{slope}");
    // A flat target's slope is none to speak of.
    let flat = r
        .observed(1)
        .ttft_s_per_prompt_token()
        .expect("spread seen");
    assert!(flat.abs() < 1e-9, "{flat}");
    let now = 80.0;
    let long = r.expected_ttft(0, now, Some(100_000), 100.0);
    assert!((long - ttft(0, 100_000)).abs() < 0.15, "{long}");
    let short = r.expected_ttft(0, now, Some(500), 100.0);
    assert!((short - ttft(0, 500)).abs() < 0.05, "{short}");
    let ask = |n: u32| Ask {
        output_tokens: Some(5),
        prompt_tokens: Some(n),
        ..Ask::default()
    };
    assert_eq!(r.pick(now, &ask(100_000)), Some(1));
    assert_eq!(r.pick(now, &ask(500)), Some(0));
    // A slope fades with what was learned: ten minutes on, a long prompt is expected to
    // start nearly as soon as a short one, as the prediction, which knows no lengths, says.
    let later = |n| r.expected_ttft(0, now + 600.0, Some(n), 100.0);
    assert!(later(100_000) - later(500) < 0.01, "{}", later(100_000));
}

/// What was learned fades back to the prediction as it ages: a target seen slow, which the
/// latency policy then passes over and so never sees again, is tried again a few minutes
/// on (and learned anew from its answer).
#[test]
fn what_is_learned_fades_back_to_the_prediction() {
    let targets = wafer_and_gpu(16.0);
    let mut r = Router::new(Policy::Latency, targets, Health::default(), 1);
    for _ in 0..20 {
        r.dispatched(0);
        r.first_token(0, 0.0, 1.0, Sent::default());
        r.succeeded(0, 0.0, Some(0.1));
    }
    let ask = Ask {
        output_tokens: Some(200),
        ..Ask::default()
    };
    assert_eq!(r.pick(1.0, &ask), Some(1));
    assert_eq!(r.pick(300.0, &ask), Some(0));
    // What it learned stays as it was, for the record; only the expectation fades.
    assert!(r.observed(0).tpot_s.is_some_and(|t| t > 0.09));
    // A target that states no prediction fades back to the best it has been, not to a
    // typical cloud's: seen fast, then slow for a while, it is tried again beside one that
    // beats the typical but not its best.
    let mut r = Router::new(
        Policy::Latency,
        vec![unstated("a"), unstated("b")],
        Health::default(),
        1,
    );
    let teach = |r: &mut Router, i: usize, now: f64, ttft: f64, tpot: f64| {
        for _ in 0..30 {
            r.dispatched(i);
            r.first_token(i, now, ttft, Sent::default());
            r.succeeded(i, now, Some(tpot));
        }
    };
    teach(&mut r, 0, 0.0, 0.05, 0.001);
    teach(&mut r, 0, 10.0, 3.0, 0.5);
    teach(&mut r, 1, 20.0, 0.25, 0.01);
    assert_eq!(r.pick(20.0, &ask), Some(1));
    teach(&mut r, 1, 200.0, 0.25, 0.01);
    assert_eq!(r.pick(200.0, &ask), Some(0));
}

/// Targets that state no prediction and answer whole (not streamed): the latency policy
/// still spreads requests by load, and learns from the answers' times which is slower.
#[test]
fn latency_learns_from_whole_answers_and_spreads_unstated_targets() {
    let mut r = Router::new(
        Policy::Latency,
        vec![unstated("a"), unstated("b")],
        Health::default(),
        1,
    );
    let mut counts = [0; 2];
    for _ in 0..40 {
        let i = r.pick(0.0, &Ask::default()).expect("a target");
        r.dispatched(i);
        counts[i] += 1;
    }
    assert_eq!(counts, [20, 20]);
    // `a` answers 100 tokens in 3 s, `b` in 0.3 s: once seen, `b` takes the new requests.
    for _ in 0..20 {
        r.answered(0, 0.0, 3.0, 100, Sent::default());
        r.answered(1, 0.0, 0.3, 100, Sent::default());
    }
    let picks: Vec<usize> = (0..10)
        .map(|_| {
            let i = r.pick(0.0, &Ask::default()).expect("a target");
            r.dispatched(i);
            i
        })
        .collect();
    assert!(picks.iter().all(|&i| i == 1), "{picks:?}");
    assert_eq!(r.observed(0).outstanding, 0);
    // What is learnt is a time per token past the expected first token, not the whole
    // answer's time spread over its tokens: a target of short, quick answers is not taken
    // for slower than one of long answers. An answer of unknown length teaches nothing.
    let mut r = Router::new(
        Policy::Latency,
        vec![unstated("short"), unstated("long")],
        Health::default(),
        1,
    );
    for _ in 0..20 {
        r.dispatched(0);
        r.answered(0, 0.0, 0.6, 10, Sent::default());
        r.dispatched(1);
        r.answered(1, 0.0, 2.5, 100, Sent::default());
    }
    let before = r.observed(1).tpot_s;
    r.dispatched(1);
    r.answered(1, 0.0, 30.0, 0, Sent::default());
    // Nor does one of a single token, which has no time after its first.
    r.dispatched(1);
    r.answered(1, 0.0, 30.0, 1, Sent::default());
    assert_eq!(r.observed(1).tpot_s, before);
    let tpot = |i: usize| r.observed(i).tpot_s.expect("learnt");
    assert!(tpot(0) < tpot(1), "{} against {}", tpot(0), tpot(1));
    assert!((tpot(1) - 2.0 / 99.0).abs() < 1e-3, "{}", tpot(1));
    // A long prompt's whole answer is taken past the first token expected of its length:
    // 131,000 tokens at 50 ms a thousand, then 6 tokens at 2 ms, teach 2 ms a token.
    let mut long = Router::new(
        Policy::Latency,
        vec![target("w", |t| {
            t.ttft_s = 0.05;
            t.tpot_s = 0.002;
            t.capacity = 16.0;
            t.ttft_prompt_tokens = 1000.0;
        })],
        Health::default(),
        1,
    );
    let sent = long.dispatched_prompt(0, 0.0, 131_000);
    long.answered(0, 0.0, 0.05 * 131.0 + 6.0 * 0.002, 7, sent);
    let learnt = long.observed(0).tpot_s.expect("learnt");
    assert!((learnt - 0.002).abs() < 2e-4, "{learnt}");
    assert_eq!(r.pick(0.0, &Ask::default()), Some(0));
}

#[test]
fn weighted_draws_follow_the_weights_and_repeat_for_a_seed() {
    let targets = vec![
        target("a", |t| t.weight = 3.0),
        target("b", |t| t.weight = 1.0),
    ];
    let draw = |seed| {
        let mut r = Router::new(Policy::Weighted, targets.clone(), Health::default(), seed);
        (0..20_000)
            .map(|_| r.pick(0.0, &Ask::default()).expect("a target"))
            .collect::<Vec<_>>()
    };
    let a = draw(7);
    assert_eq!(a, draw(7));
    assert_ne!(a, draw(8));
    let share = a.iter().filter(|&&i| i == 0).count() as f64 / a.len() as f64;
    assert!((share - 0.75).abs() < 0.01, "share {share}");
}

#[test]
fn cost_takes_the_cheapest_with_room_then_spills() {
    let targets = vec![
        target("dear", |t| {
            t.usd_per_mtok = 2.0;
            t.capacity = 10.0;
        }),
        target("cheap", |t| {
            t.usd_per_mtok = 0.5;
            t.capacity = 3.0;
        }),
    ];
    let mut r = Router::new(Policy::Cost, targets, Health::default(), 1);
    let mut picks = Vec::new();
    for _ in 0..5 {
        let i = r.pick(0.0, &Ask::default()).expect("a target");
        r.dispatched(i);
        picks.push(i);
    }
    assert_eq!(picks, vec![1, 1, 1, 0, 0]);
}

#[test]
fn priority_respects_classes_and_falls_back_in_order() {
    let targets = vec![
        target("gpu", |t| t.priority = 1),
        target("wafer", |t| {
            t.priority = 0;
            t.classes = vec!["interactive".into()];
        }),
    ];
    let mut r = Router::new(Policy::Priority, targets, Health::default(), 1);
    let interactive = Ask {
        class: Some("interactive"),
        ..Ask::default()
    };
    let batch = Ask {
        class: Some("batch"),
        ..Ask::default()
    };
    assert_eq!(r.pick(0.0, &interactive), Some(1));
    assert_eq!(r.pick(0.0, &batch), Some(0));
    // The preferred target failed for this request: the next in order takes it.
    let retry = Ask {
        exclude: &[1],
        ..interactive
    };
    assert_eq!(r.pick(0.0, &retry), Some(0));
}

#[test]
fn failures_eject_for_the_cooldown_and_panic_routing_keeps_answering() {
    let health = Health {
        eject_after: 3,
        cooldown_s: 30.0,
    };
    let mut r = Router::new(Policy::Priority, three(), health, 1);
    for k in 0..3 {
        r.dispatched(0);
        let ejected = r.failed(0, 10.0);
        assert_eq!(ejected, k == 2);
    }
    assert!(r.is_ejected(0, 39.9));
    assert!(!r.is_ejected(0, 40.0));
    assert_eq!(r.pick(20.0, &Ask::default()), Some(1));
    assert_eq!(r.pick(40.0, &Ask::default()), Some(0));
    assert_eq!(r.observed(0).ejections, 1);
    assert_eq!(r.observed(0).outstanding, 0);
    // A success in between resets the run of failures.
    r.dispatched(1);
    r.failed(1, 50.0);
    r.dispatched(1);
    r.failed(1, 50.0);
    r.dispatched(1);
    r.succeeded(1, 50.0, Some(0.01));
    r.dispatched(1);
    assert!(!r.failed(1, 50.0));
    // With every target ejected, the one back soonest still gets the request.
    for (i, t) in [(0, 100.0), (1, 101.0), (2, 102.0)] {
        for _ in 0..3 {
            r.dispatched(i);
            r.failed(i, t);
        }
    }
    assert_eq!(r.pick(110.0, &Ask::default()), Some(0));
    // An answer to a request sent before the failures proves little; one to the request
    // panic routing sent ends the ejection, the target answering again.
    r.dispatched(1);
    r.dispatched(0);
    r.succeeded(1, 110.5, None);
    assert!(r.is_ejected(1, 111.0));
    r.succeeded(0, 111.0, None);
    assert!(!r.is_ejected(0, 111.0) && r.is_ejected(2, 111.0));
    assert_eq!(r.pick(111.0, &Ask::default()), Some(0));
}

/// A retry after a healthy target's fault of the moment goes back to it, not to one cooling
/// down: the caller names it to try again, and the ejected one is neither asked nor its
/// cool-down restarted.
#[test]
fn a_retry_prefers_a_target_in_service_to_an_ejected_one() {
    let health = Health {
        eject_after: 3,
        cooldown_s: 60.0,
    };
    let mut r = Router::new(
        Policy::Priority,
        vec![target("a", |_| {}), target("b", |t| t.priority = 1)],
        health,
        1,
    );
    for _ in 0..3 {
        r.dispatched(0);
        r.failed(0, 10.0);
    }
    assert!(r.is_ejected(0, 20.0));
    assert_eq!(r.pick(20.0, &Ask::default()), Some(1));
    r.dispatched(1);
    r.failed(1, 20.0);
    // Without b to try again, panic routing wakes a; with it, the caller is told to retry b.
    let tried = [1];
    let woken = Ask {
        exclude: &tried,
        ..Ask::default()
    };
    let retry = Ask {
        exclude: &tried,
        again: &tried,
        ..Ask::default()
    };
    assert_eq!(r.pick(20.0, &retry), None);
    assert_eq!(r.observed(0).requests, 3);
    assert_eq!(r.pick(20.0, &woken), Some(0));
}

/// What is learned from answers that come steadily is their average, whatever the
/// prediction it fades towards between them: a target answering every two seconds in one
/// second is expected to take one second, not less.
#[test]
fn steady_answers_are_learned_as_they_come() {
    let mut r = Router::new(
        Policy::Latency,
        vec![unstated("slow")],
        Health::default(),
        1,
    );
    for k in 0..60 {
        let now = 2.0 * f64::from(k);
        let sent = r.dispatched_prompt(0, now, 100);
        r.first_token(0, now + 1.0, 1.0, sent);
        r.succeeded(0, now + 1.0, Some(0.03));
    }
    let ttft = r.observed(0).ttft_s.expect("learned");
    let tpot = r.observed(0).tpot_s.expect("learned");
    assert!((ttft - 1.0).abs() < 0.005, "{ttft}");
    assert!((tpot - 0.03).abs() < 0.0002, "{tpot}");
}

/// The cost policy ranks a request's prompt and output together at each target's prices:
/// long prompts go where prompt tokens are cheap, short ones where output is.
#[test]
fn cost_counts_the_prompt_at_its_own_price() {
    let mut r = Router::new(
        Policy::Cost,
        vec![
            target("cheap-output", |t| {
                t.usd_per_mtok = 1.0;
                t.input_usd_per_mtok = 10.0;
                t.capacity = 10.0;
            }),
            target("cheap-input", |t| {
                t.usd_per_mtok = 2.0;
                t.input_usd_per_mtok = 0.1;
                t.capacity = 10.0;
            }),
        ],
        Health::default(),
        1,
    );
    let ask = |prompt: u32| Ask {
        output_tokens: Some(10),
        prompt_tokens: Some(prompt),
        ..Ask::default()
    };
    assert_eq!(r.pick(0.0, &ask(2000)), Some(1));
    assert_eq!(r.pick(0.0, &ask(0)), Some(0));
}

/// A TTFT or TPOT target prefers the targets expected to meet it; one nobody can meet
/// leaves the policy to choose.
#[test]
fn a_latency_target_prefers_targets_expected_to_meet_it() {
    let ttft = |s: f64| Ask {
        ttft_target_s: Some(s),
        ..Ask::default()
    };
    let tpot = |s: f64| Ask {
        tpot_target_s: Some(s),
        ..Ask::default()
    };
    for (set, asked, impossible) in [
        (
            (|t: &mut Target, v: f64| t.ttft_s = v) as fn(&mut Target, f64),
            ttft(0.5),
            ttft(0.01),
        ),
        (
            |t: &mut Target, v: f64| t.tpot_s = v / 10.0,
            tpot(0.05),
            tpot(0.001),
        ),
    ] {
        let targets = vec![
            target("cheap-slow", |t| {
                t.usd_per_mtok = 0.2;
                t.capacity = 100.0;
                set(t, 2.0);
            }),
            target("dear-fast", |t| {
                t.usd_per_mtok = 1.0;
                t.capacity = 100.0;
                set(t, 0.2);
            }),
        ];
        let mut r = Router::new(Policy::Cost, targets, Health::default(), 1);
        assert_eq!(r.pick(0.0, &Ask::default()), Some(0));
        assert_eq!(r.pick(0.0, &asked), Some(1));
        assert_eq!(r.pick(0.0, &impossible), Some(0));
    }
}

/// Answers that spread widely about their mean are taken to miss a TPOT target the mean
/// alone keeps; steady answers of the same mean are not; the spread fades as what was
/// learned does.
#[test]
fn a_tpot_target_counts_how_widely_a_targets_answers_spread() {
    let ask = Ask {
        tpot_target_s: Some(0.05),
        ..Ask::default()
    };
    let learned = |answers: &[f64]| {
        let targets = vec![
            target("cheap", |t| {
                t.usd_per_mtok = 0.5;
                t.capacity = 100.0;
                t.tpot_s = 0.04;
            }),
            target("dear", |t| {
                t.usd_per_mtok = 2.0;
                t.capacity = 100.0;
                t.tpot_s = 0.01;
            }),
        ];
        let mut r = Router::new(Policy::Cost, targets, Health::default(), 1);
        for (k, &x) in answers.iter().enumerate() {
            r.dispatched(0);
            r.succeeded(0, k as f64 * 0.01, Some(x));
        }
        r
    };
    let mut steady = learned(&[0.04; 40]);
    assert_eq!(steady.pick(0.4, &ask), Some(0));
    assert_eq!(steady.observed(0).tpot_dev_s, 0.0);
    let spread: Vec<f64> = (0..40)
        .map(|k| if k % 2 == 0 { 0.025 } else { 0.055 })
        .collect();
    let mut wide = learned(&spread);
    let mean = wide.observed(0).tpot_s.expect("learned");
    assert!((mean - 0.04).abs() < 0.003, "mean {mean}");
    assert!(wide.observed(0).tpot_dev_s > 0.01);
    assert_eq!(wide.pick(0.4, &ask), Some(1));
    assert_eq!(wide.pick(0.4, &Ask::default()), Some(0));
    assert_eq!(wide.pick(600.0, &ask), Some(0));
}

#[test]
fn failures_while_ejected_do_not_count_towards_the_next_ejection() {
    let mut r = Router::new(Policy::Priority, three(), Health::default(), 1);
    for _ in 0..3 {
        r.dispatched(0);
        r.failed(0, 0.0);
    }
    assert!(r.is_ejected(0, 1.0));
    // Requests that were in flight fail during the cool-down.
    for _ in 0..5 {
        r.dispatched(0);
        assert!(!r.failed(0, 5.0));
    }
    // Back after the cool-down, one failure is not yet three in a row.
    r.dispatched(0);
    assert!(!r.failed(0, 31.0));
    assert!(!r.is_ejected(0, 31.0));
    assert_eq!(r.observed(0).ejections, 1);
}

#[test]
fn a_request_too_long_for_a_target_goes_where_it_fits() {
    let targets = vec![
        target("wafer", |t| {
            t.priority = 0;
            t.max_context = Some(8_000);
        }),
        target("gpu", |t| t.priority = 1),
    ];
    let mut r = Router::new(Policy::Priority, targets, Health::default(), 1);
    let short = Ask {
        prompt_tokens: Some(1_000),
        output_tokens: Some(500),
        ..Ask::default()
    };
    let long = Ask {
        prompt_tokens: Some(30_000),
        output_tokens: Some(500),
        ..Ask::default()
    };
    assert_eq!(r.pick(0.0, &short), Some(0));
    assert_eq!(r.pick(0.0, &long), Some(1));
    let only_wafer = Ask {
        exclude: &[1],
        ..long
    };
    assert_eq!(r.pick(0.0, &only_wafer), None);
}

/// A target past its capacity makes a new request wait for a place before its first token:
/// a wafer pool holding four requests with forty in flight, its tokens half a millisecond
/// each, is expected to start one in about 1.4 s, past a 1 s target, and the request goes to
/// the GPU pool, though the wafer would still finish it sooner. Counted only in the time to
/// the last token, the wafer pool kept every request while its first tokens waited seconds.
#[test]
fn a_target_past_capacity_waits_for_a_place_before_its_first_token() {
    let targets = vec![
        target("wafer", |t| {
            t.ttft_s = 0.005;
            t.tpot_s = 0.0005;
            t.tpot_full_s = 0.0006;
            t.capacity = 4.0;
        }),
        target("gpu", |t| {
            t.ttft_s = 0.025;
            t.tpot_s = 0.022;
            t.capacity = 64.0;
        }),
    ];
    let mut r = Router::new(Policy::Latency, targets, Health::default(), 1);
    for _ in 0..40 {
        r.dispatched(0);
    }
    let wafer = r.expected_ttft(0, 0.0, None, 256.0);
    // 5 ms x 11, then nine capacities' worth of lives of 256 tokens at 0.6 ms.
    assert!(
        (wafer - (0.055 + 9.0 * 256.0 * 0.0006)).abs() < 1e-9,
        "{wafer}"
    );
    let ask = Ask {
        output_tokens: Some(256),
        ..Ask::default()
    };
    assert_eq!(
        r.pick(0.0, &ask),
        Some(0),
        "the last token sooner on the wafer"
    );
    let urgent = Ask {
        ttft_target_s: Some(1.0),
        ..ask
    };
    assert_eq!(r.pick(0.0, &urgent), Some(1));
}

/// Where every target is ejected, a request panic routing sent that fails starts its
/// target's cool-down again, so the next goes to another: one that has recovered is found
/// within a request or two, and back in service once it answers. Kept at the target whose
/// cool-down ended first, every request went to one that still failed.
#[test]
fn a_failed_panic_try_sends_the_next_to_another_ejected_target() {
    let health = Health {
        eject_after: 1,
        cooldown_s: 20.0,
    };
    let mut r = Router::new(Policy::Priority, three(), health, 1);
    for (i, t) in [(0, 0.0), (1, 1.0), (2, 2.0)] {
        r.dispatched(i);
        assert!(r.failed(i, t));
    }
    assert_eq!(r.pick(5.0, &Ask::default()), Some(0));
    r.dispatched(0);
    assert!(!r.failed(0, 5.5));
    assert!(r.is_ejected(0, 21.0), "its cool-down starts again");
    assert_eq!(r.pick(6.0, &Ask::default()), Some(1));
    r.dispatched(1);
    r.succeeded(1, 6.5, None);
    assert!(!r.is_ejected(1, 7.0));
    assert_eq!(r.pick(7.0, &Ask::default()), Some(1));
    assert_eq!(r.observed(0).ejections, 1);
}

/// A disaggregated target's first token waits for the prompts ahead of it on its prefill
/// pool, not for the requests decoding: its expected TTFT does not stretch with their load,
/// where an aggregated one's does, and what it learns of it is not shrunk by that load.
#[test]
fn a_disaggregated_targets_first_token_does_not_stretch_with_its_decode_load() {
    let pool = |name: &str, disaggregated: bool| {
        target(name, |t| {
            t.ttft_s = 0.06;
            t.tpot_s = 0.01;
            t.capacity = 100.0;
            t.disaggregated = disaggregated;
        })
    };
    let mut r = Router::new(
        Policy::Latency,
        vec![pool("agg", false), pool("split", true)],
        Health::default(),
        1,
    );
    for _ in 0..80 {
        r.dispatched(0);
        r.dispatched(1);
    }
    let agg = r.expected_ttft(0, 0.0, None, 200.0);
    let split = r.expected_ttft(1, 0.0, None, 200.0);
    assert!((agg - 0.06 * 1.8).abs() < 1e-12, "{agg}");
    assert!((split - 0.06).abs() < 1e-12, "{split}");
    let urgent = Ask {
        ttft_target_s: Some(0.1),
        ..Ask::default()
    };
    assert_eq!(r.pick(0.0, &urgent), Some(1));
    // A first token of 64 ms under that load teaches 64 ms of it.
    let sent = Sent {
        load: 0.8,
        ..Sent::default()
    };
    r.first_token(1, 0.0, 0.064, sent);
    let learned = r.observed(1).ttft_s.expect("learned");
    assert!((learned - 0.064).abs() < 1e-12, "{learned}");
}
