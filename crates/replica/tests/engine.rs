//! The replica engine against a step-time source whose every step takes one second, so
//! that times count steps, and against the performance model.

use proptest::prelude::*;
use switchyard_perf::{Batch, Catalog, Deployment, Layout, Params, Precision};
use switchyard_replica::{
    EngineConfig, Event, Physics, Prefix, Refusal, Replica, Request, StepTime,
};

#[derive(Debug, Clone, Default)]
struct Unit;

impl StepTime for Unit {
    fn step_time(&self, _: &Batch) -> f64 {
        1.0
    }
}

fn config(max_batch: u32, budget: u32, blocks: u32) -> EngineConfig {
    EngineConfig {
        max_batch,
        token_budget: budget,
        block_tokens: 16,
        kv_blocks: blocks,
        groups: 1,
        window: 0,
        global_share: 1.0,
        context: u32::MAX,
    }
}

/// Runs the engine until idle; returns (time, event) pairs with time counted in steps.
fn run<S: StepTime>(r: &mut Replica<S>) -> Vec<(f64, Event)> {
    let mut t = 0.0;
    let mut out = Vec::new();
    loop {
        let mut ev = Vec::new();
        let Some(dt) = r.start_step(&mut |e| ev.push(e)) else {
            break;
        };
        out.extend(ev.into_iter().map(|e| (t, e)));
        t += dt;
        r.finish_step(&mut |e| out.push((t, e)));
    }
    out
}

fn time_of(events: &[(f64, Event)], want: Event) -> f64 {
    events
        .iter()
        .find(|(_, e)| *e == want)
        .map(|(t, _)| *t)
        .expect("event present")
}

#[test]
fn a_lone_request_takes_one_prefill_step_then_one_step_per_token() {
    let mut r = Replica::new(Unit, config(8, 8192, 1000));
    r.submit(Request {
        id: 7,
        prompt: 100,
        output: 5,
    })
    .expect("fits");
    let ev = run(&mut r);
    assert_eq!(time_of(&ev, Event::Scheduled(7)), 0.0);
    assert_eq!(time_of(&ev, Event::FirstToken(7)), 1.0);
    assert_eq!(time_of(&ev, Event::Finished(7)), 5.0);
    let tokens = ev.iter().filter(|(_, e)| *e == Event::Token(7)).count();
    assert_eq!(tokens, 4);
    assert_eq!(r.used_blocks(), 0);
    assert_eq!(r.counters().tokens_out, 5);
}

#[test]
fn long_prompts_are_prefilled_in_chunks_of_the_budget() {
    let mut r = Replica::new(Unit, config(8, 1000, 10_000));
    r.submit(Request {
        id: 1,
        prompt: 2500,
        output: 1,
    })
    .expect("fits");
    let ev = run(&mut r);
    // 1000 + 1000 + 500 tokens: the first token comes out of the third step.
    assert_eq!(time_of(&ev, Event::FirstToken(1)), 3.0);
    assert_eq!(time_of(&ev, Event::Finished(1)), 3.0);
}

#[test]
fn decoding_sequences_share_steps_with_a_new_prompt() {
    /// Records the batch of every step.
    #[derive(Debug)]
    struct Spy<'a>(&'a std::cell::RefCell<Vec<Batch>>);
    impl StepTime for Spy<'_> {
        fn step_time(&self, b: &Batch) -> f64 {
            self.0.borrow_mut().push(*b);
            1.0
        }
    }
    let seen = std::cell::RefCell::new(Vec::new());
    let mut r = Replica::new(Spy(&seen), config(8, 8192, 10_000));
    r.submit(Request {
        id: 1,
        prompt: 10,
        output: 10,
    })
    .expect("fits");
    let mut sink = |_| {};
    r.start_step(&mut sink);
    r.finish_step(&mut sink);
    r.submit(Request {
        id: 2,
        prompt: 300,
        output: 2,
    })
    .expect("fits");
    r.start_step(&mut sink);
    let shapes = seen.borrow();
    assert_eq!(shapes[0].prefill_tokens, 10);
    assert_eq!((shapes[0].prefill_seqs, shapes[1].prefill_seqs), (1, 1));
    assert_eq!(shapes[0].decode_seqs, 0);
    assert_eq!(shapes[1].decode_seqs, 1);
    assert_eq!(shapes[1].prefill_tokens, 300);
    assert!((shapes[1].decode_ctx - 10.0).abs() < 1e-9);
    assert!((shapes[1].prefill_ctx - 150.0).abs() < 1e-9);
}

#[test]
fn the_batch_limit_queues_the_rest() {
    let mut r = Replica::new(Unit, config(2, 8192, 10_000));
    for id in 0..3 {
        r.submit(Request {
            id,
            prompt: 16,
            output: 4,
        })
        .expect("fits");
    }
    let ev = run(&mut r);
    assert_eq!(time_of(&ev, Event::Scheduled(0)), 0.0);
    assert_eq!(time_of(&ev, Event::Scheduled(1)), 0.0);
    // The third waits until the first two finish after four steps.
    assert_eq!(time_of(&ev, Event::Scheduled(2)), 4.0);
    assert_eq!(time_of(&ev, Event::Finished(2)), 8.0);
}

#[test]
fn a_full_cache_preempts_the_latest_and_recomputes_it() {
    // 8 blocks of 16 tokens: two sequences of 48 prompt tokens (3 blocks each) grow until
    // they need 9 blocks between them.
    let mut r = Replica::new(Unit, config(8, 8192, 8));
    for id in 0..2 {
        r.submit(Request {
            id,
            prompt: 48,
            output: 60,
        })
        .expect("fits");
    }
    let ev = run(&mut r);
    let preempted: Vec<u64> = ev
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Preempted(id) => Some(*id),
            _ => None,
        })
        .collect();
    assert!(!preempted.is_empty());
    assert_eq!(preempted[0], 1, "the latest admitted goes first");
    for id in 0..2 {
        let firsts = ev
            .iter()
            .filter(|(_, e)| *e == Event::FirstToken(id))
            .count();
        let tokens = ev.iter().filter(|(_, e)| *e == Event::Token(id)).count();
        assert_eq!((firsts, tokens), (1, 59), "request {id}");
    }
    assert_eq!(r.counters().preemptions, preempted.len() as u64);
    assert_eq!(r.used_blocks(), 0);
    assert_eq!(r.outstanding(), 0);
}

#[test]
fn a_request_larger_than_the_cache_is_refused() {
    let mut r = Replica::new(Unit, config(8, 8192, 4));
    let err = r
        .submit(Request {
            id: 1,
            prompt: 60,
            output: 10,
        })
        .expect_err("too long");
    assert_eq!(
        err,
        Refusal::TooLong {
            needed: 5,
            capacity: 4
        }
    );
}

#[test]
fn drain_and_cancel_free_everything() {
    let mut r = Replica::new(Unit, config(1, 8192, 100));
    for id in 0..3 {
        r.submit(Request {
            id,
            prompt: 20,
            output: 5,
        })
        .expect("fits");
    }
    let mut sink = |_| {};
    r.start_step(&mut sink);
    assert!(r.cancel(2));
    assert!(!r.cancel(2));
    assert_eq!(r.drain(), vec![0, 1]);
    assert_eq!(r.used_blocks(), 0);
    assert!(!r.in_step());
    assert_eq!(r.start_step(&mut sink), None);
}

/// Step times are the model's: a prompt's step is its prefill, the next a decode step. An
/// RDU's sockets each hold sequences of their own and each prefills its own prompts, so a
/// prompt the size of the engine's chunk is one step on a 16-socket replica, as the model
/// prices it, not sixteen steps of a sixteenth of the budget.
#[test]
fn step_times_come_from_the_performance_model() {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    for (system, tp, prompt) in [("h100-sxm", 1, 1000), ("sn40l", 16, p.token_budget)] {
        let d = Deployment::new(
            cat.model("llama-3.1-8b").expect("model"),
            cat.system(system).expect("system"),
            Layout::replica(tp, 1),
            Precision::Bf16,
        )
        .expect("deployment");
        let cfg = EngineConfig::for_deployment(&d, &p);
        assert!(cfg.kv_blocks > 1000);
        let mut r = Replica::new(
            Physics {
                deployment: d.clone(),
                params: &p,
            },
            cfg,
        );
        r.submit(Request {
            id: 0,
            prompt,
            output: 3,
        })
        .expect("fits");
        let mut sink = |_| {};
        let t = r.start_step(&mut sink).expect("a step");
        let whole = d.prefill(&p, f64::from(prompt));
        assert!(
            (t - whole).abs() < 1e-12,
            "{system}: first step {t} s, the prompt {whole} s"
        );
        r.finish_step(&mut sink);
        let t = r.start_step(&mut sink).expect("a step");
        let ctx = f64::from(prompt);
        assert!(
            (t - d.decode_step(&p, 1.0, ctx).time).abs() < 1e-12,
            "{system}"
        );
    }
}

/// A model with sliding-window layers holds in the engine what the performance model
/// says it holds: past the window only the global layers' share grows, in both.
#[test]
fn a_windowed_model_holds_what_the_performance_model_says() {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let d = Deployment::new(
        cat.model("gemma-3-27b").expect("model"),
        cat.system("h100-sxm").expect("system"),
        Layout::replica(1, 1),
        Precision::Bf16,
    )
    .expect("deployment");
    let cfg = EngineConfig::for_deployment(&d, &p);
    assert!(cfg.window > 0 && cfg.global_share < 0.5, "{cfg:?}");
    // The longest request the engine takes is the longest the model fits, within a block
    // (16 tokens of every layer, which past the window are 16 / global share tokens).
    let longest = f64::from(cfg.max_context());
    let slack = 2.0 * 16.0 / cfg.global_share;
    assert!(d.max_sequences(&p, longest - slack) >= 1.0, "{longest}");
    assert!(d.max_sequences(&p, longest + slack) < 1.0, "{longest}");
    assert!(longest > 2.0 * d.memory(&p).kv_tokens_per_replica);
    // Requests of 20,000 tokens: as many are admitted at once as the model says fit.
    let ctx = 20_000u32;
    let fits = d.max_sequences(&p, f64::from(ctx));
    // A budget that takes every prompt at once, so only the blocks limit admission.
    let wide = EngineConfig {
        token_budget: 1 << 30,
        ..cfg
    };
    let mut r = Replica::new(Unit, wide);
    for id in 0..(fits as u64 + 5) {
        r.submit(Request {
            id,
            prompt: ctx - 1,
            output: 1,
        })
        .expect("fits alone");
    }
    let mut sink = |_| {};
    r.start_step(&mut sink).expect("a step");
    let admitted = r.running() as f64;
    assert!((admitted - fits).abs() <= 1.0, "{admitted} against {fits}");
}

/// The longest request the estimate says fits is, to the token, the longest the engine
/// admits: both count the cache in whole blocks, per group where groups keep their own.
#[test]
fn the_estimate_and_the_engine_agree_on_the_longest_request() {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    for (model, system, layout, precision) in [
        ("llama-3.1-70b", "h100-sxm", "tp4", Precision::Bf16),
        ("llama-3.1-8b", "a100-sxm", "tp1", Precision::Fp8),
        ("deepseek-r1", "h200", "ep8", Precision::Fp8),
        ("llama-3.1-70b", "cs3", "tp1-pp4", Precision::Bf16),
    ] {
        let d = Deployment::new(
            cat.model(model).expect("model"),
            cat.system(system).expect("system"),
            layout.parse().expect("layout"),
            precision,
        )
        .expect("deployment");
        let cfg = EngineConfig::for_deployment(&d, &p);
        let longest = cfg.max_context();
        assert!(longest > 1000, "{model} on {system}: {longest}");
        // The capacity the estimate states is the engine's blocks, every group's.
        assert_eq!(
            d.kv_tokens_in_blocks(&p),
            f64::from(cfg.kv_blocks / cfg.groups * cfg.groups * cfg.block_tokens),
            "{model} on {system}"
        );
        let at = |tokens: u32| d.max_sequences(&p, f64::from(tokens));
        assert!(at(longest) >= 1.0, "{model} on {system}: {longest}");
        assert!(at(longest + 1) < 1.0, "{model} on {system}: {longest}");
        // The model's own context limit aside, which the engine also enforces.
        let cfg = EngineConfig {
            context: u32::MAX,
            ..cfg
        };
        let mut r = Replica::new(Unit, cfg);
        assert!(
            r.submit(ask(1, longest - 1, 1)).is_ok(),
            "{model} on {system}"
        );
        assert!(
            matches!(r.submit(ask(2, longest, 1)), Err(Refusal::TooLong { .. })),
            "{model} on {system}"
        );
    }
}

#[test]
fn expert_parallel_groups_each_hold_their_own_sequences() {
    let cat = Catalog::builtin().expect("catalog");
    let p = Params::default();
    let d = Deployment::new(
        cat.model("deepseek-r1").expect("model"),
        cat.system("h200").expect("system"),
        "ep8".parse().expect("layout"),
        Precision::Fp8,
    )
    .expect("deployment");
    let cfg = EngineConfig::for_deployment(&d, &p);
    // A sequence's KV lives in one of the eight groups: the longest request is an eighth of
    // the replica's cache, and one just past it is refused.
    assert_eq!(cfg.group_blocks(), cfg.kv_blocks / 8);
    assert_eq!(cfg.max_context(), cfg.kv_blocks / 8 * cfg.block_tokens);
    // Each group schedules its own: the batch limit and the tokens a step takes are eight
    // groups' worth.
    assert_eq!(cfg.max_batch, p.max_batch * 8);
    assert_eq!(cfg.token_budget, p.token_budget * 8);
    let mut r = Replica::new(
        Physics {
            deployment: d.clone(),
            params: &p,
        },
        cfg,
    );
    let longest = cfg.max_context();
    assert!(r
        .submit(Request {
            id: 0,
            prompt: longest - 1,
            output: 1
        })
        .is_ok());
    assert!(matches!(
        r.submit(Request {
            id: 1,
            prompt: longest,
            output: 1
        }),
        Err(Refusal::TooLong { .. })
    ));
    // Eight prompts in one step spread over the groups: faster than one prompt as long.
    let mut r = Replica::new(
        Physics {
            deployment: d.clone(),
            params: &p,
        },
        cfg,
    );
    for id in 0..8 {
        r.submit(Request {
            id,
            prompt: 512,
            output: 2,
        })
        .expect("fits");
    }
    let t = r.start_step(&mut |_| {}).expect("a step");
    assert!(
        t < d.prefill(&p, 4096.0) * 0.8,
        "{t} against {}",
        d.prefill(&p, 4096.0)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Whatever the load and cache size, every request gets exactly one first token,
    /// output − 1 further tokens and one completion, and the cache ends empty.
    #[test]
    fn every_request_completes_exactly_once(
        reqs in prop::collection::vec((1u32..400, 1u32..80), 1..40),
        blocks in 60u32..400,
        batch in 1u32..16,
        budget in 64u32..1024,
    ) {
        let mut r = Replica::new(Unit, config(batch, budget, blocks));
        let mut accepted = Vec::new();
        for (id, (prompt, output)) in reqs.iter().enumerate() {
            let req = Request { id: id as u64, prompt: *prompt, output: *output };
            if r.submit(req).is_ok() {
                accepted.push(req);
            }
        }
        let ev = run(&mut r);
        for req in &accepted {
            let count = |want: Event| ev.iter().filter(|(_, e)| *e == want).count();
            prop_assert_eq!(count(Event::FirstToken(req.id)), 1);
            prop_assert_eq!(count(Event::Token(req.id)), req.output as usize - 1);
            prop_assert_eq!(count(Event::Finished(req.id)), 1);
            prop_assert_eq!(count(Event::Scheduled(req.id)), 1);
        }
        prop_assert_eq!(r.used_blocks(), 0);
        prop_assert_eq!(r.outstanding(), 0);
    }
}

#[test]
fn each_group_admits_into_and_preempts_from_its_own_pool() {
    // Two groups of four 16-token blocks.
    let cfg = EngineConfig {
        groups: 2,
        ..config(16, 10_000, 8)
    };
    // Requests of 30 prompt tokens take two blocks each: they alternate between the groups,
    // a, c in the first and b, d in the second.
    let mut r = Replica::new(Unit, cfg);
    for id in 0..4 {
        r.submit(Request {
            id,
            prompt: 30,
            output: 10,
        })
        .expect("fits");
    }
    let events = run(&mut r);
    // The third decode needs a third block: the first group gives it up from its own latest
    // sequence (c = 2), not from the latest overall (d = 3).
    let first = events
        .iter()
        .find_map(|(_, e)| match e {
            Event::Preempted(id) => Some(*id),
            _ => None,
        })
        .expect("a preemption");
    assert_eq!(first, 2, "{events:?}");
    let finished = events
        .iter()
        .filter(|(_, e)| matches!(e, Event::Finished(_)))
        .count();
    assert_eq!(finished, 4);
    assert_eq!(r.used_blocks(), 0);

    // Free blocks split over the groups do not admit a request that no one group can hold.
    let mut r = Replica::new(Unit, cfg);
    for (id, prompt) in [(0, 40), (1, 40), (2, 20)] {
        r.submit(Request {
            id,
            prompt,
            output: 1,
        })
        .expect("fits");
    }
    let mut first_step = Vec::new();
    r.start_step(&mut |e| first_step.push(e)).expect("a step");
    assert_eq!(first_step, vec![Event::Scheduled(0), Event::Scheduled(1)]);
    assert_eq!(r.used_blocks(), 6);
    assert_eq!(r.waiting(), 1);
}

#[derive(Debug, Clone, Default)]
struct Recording(std::rc::Rc<std::cell::RefCell<Vec<Batch>>>);

impl StepTime for Recording {
    fn step_time(&self, b: &Batch) -> f64 {
        self.0.borrow_mut().push(*b);
        1.0
    }
}

#[test]
fn a_prefilled_request_decodes_from_its_first_step() {
    let steps = Recording::default();
    let mut r = Replica::new(steps.clone(), config(16, 10_000, 64));
    r.submit_prefilled(Request {
        id: 7,
        prompt: 100,
        output: 4,
    })
    .expect("fits");
    let events = run(&mut r);
    // No prompt pass: three decode steps at the prompt's context, making tokens 2 to 4.
    let seen = steps.0.borrow();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen
        .iter()
        .all(|b| b.prefill_tokens == 0 && b.decode_seqs == 1));
    assert!((seen[0].decode_ctx - 100.0).abs() < 1e-9);
    let kinds: Vec<Event> = events.iter().map(|(_, e)| *e).collect();
    assert_eq!(
        kinds,
        vec![
            Event::Token(7),
            Event::Token(7),
            Event::Token(7),
            Event::Finished(7)
        ]
    );
    assert_eq!(r.used_blocks(), 0);
}

#[test]
fn a_prefilled_request_takes_the_block_its_first_decode_writes() {
    let mut r = Replica::new(Unit, config(16, 10_000, 64));
    // 32 tokens fill two 16-token blocks exactly; the first decode writes the 33rd.
    r.submit_prefilled(Request {
        id: 1,
        prompt: 32,
        output: 3,
    })
    .expect("fits");
    r.start_step(&mut |_| {}).expect("a step");
    assert_eq!(r.used_blocks(), 3);
}

/// Each group schedules within its own share of a step's tokens: one group's long prompt
/// takes its share, and the prompts of the other groups run beside it in the same step.
#[test]
fn each_group_keeps_its_share_of_a_steps_tokens() {
    let cfg = EngineConfig {
        groups: 4,
        ..config(64, 400, 4000)
    };
    let mut r = Replica::new(Unit, cfg);
    r.submit(Request {
        id: 0,
        prompt: 1000,
        output: 2,
    })
    .expect("fits");
    for id in 1..4 {
        r.submit(Request {
            id,
            prompt: 50,
            output: 2,
        })
        .expect("fits");
    }
    r.start_step(&mut |_| {}).expect("a step");
    r.finish_step(&mut |_| {});
    // A quarter of 400 for the long prompt's group, and the three short prompts whole.
    assert_eq!(r.counters().tokens_prefilled, 100 + 3 * 50);
}

/// Steps of one second whose prompt chunks, beside decodes, come out of a pipeline
/// `lag` seconds after the step ends.
struct Lagging {
    lag: f64,
}

impl StepTime for Lagging {
    fn step_time(&self, _: &Batch) -> f64 {
        1.0
    }

    fn prompt_lag(&self, b: &Batch) -> f64 {
        if b.decode_seqs > 0 {
            self.lag
        } else {
            0.0
        }
    }
}

#[test]
fn a_chunk_that_lags_its_step_holds_its_sequence_back() {
    let mut r = Replica::new(Lagging { lag: 2.5 }, config(8, 1000, 10_000));
    let ask = |id, prompt, output| Request { id, prompt, output };
    r.submit(ask(1, 10, 10)).expect("fits");
    // The first step prefills request 1 alone; request 2 joins the next beside its decode.
    let mut ev = Vec::new();
    let first = r.start_step(&mut |e| ev.push(e)).expect("a step");
    r.finish_step(&mut |e| ev.push(e));
    r.submit(ask(2, 1500, 2)).expect("fits");
    let rest = run(&mut r);
    let at = |e| first + time_of(&rest, e);
    let first_token = at(Event::FirstToken(2));
    // Two chunks of 1000 and 500 tokens, each a step plus a lag of 2.5 s that ends on the
    // first step boundary at or after it: 1 + (1 + 3) + (1 + 3).
    assert_eq!(first_token, 9.0, "{rest:?}");
    // Request 1 decodes every step meanwhile: its tokens never wait for the lagging chunk.
    let decoded_by_9 = rest
        .iter()
        .filter(|(t, e)| first + t <= 9.0 && matches!(e, Event::Token(1)))
        .count();
    assert_eq!(decoded_by_9, 8);
}

#[test]
fn a_chunk_lagging_with_nothing_else_to_run_waits_out_its_lag() {
    let mut r = Replica::new(Lagging { lag: 2.5 }, config(8, 1000, 10_000));
    r.submit(Request {
        id: 1,
        prompt: 10,
        output: 3,
    })
    .expect("fits");
    let mut ev = Vec::new();
    let first = r.start_step(&mut |e| ev.push(e)).expect("a step");
    r.finish_step(&mut |e| ev.push(e));
    r.submit(Request {
        id: 2,
        prompt: 100,
        output: 1,
    })
    .expect("fits");
    let rest = run(&mut r);
    // Request 2 rides step 2 beside request 1's decode (ends at 2), request 1 finishes in
    // step 3 (ends at 3), and with nothing left to run the engine waits the last 0.5 s.
    assert_eq!(first + time_of(&rest, Event::Finished(1)), 3.0);
    assert_eq!(first + time_of(&rest, Event::FirstToken(2)), 4.5);
    assert_eq!(r.running(), 0);
}

/// A step takes a second per thousand prompt tokens it prefills, and a tenth of a second.
#[derive(Debug, Clone, Default)]
struct PerToken;

impl StepTime for PerToken {
    fn step_time(&self, b: &Batch) -> f64 {
        0.1 + f64::from(b.prefill_tokens) / 1000.0
    }
}

fn prefix(hashes: &[u64]) -> Prefix {
    Prefix {
        hashes: hashes.into(),
        block_tokens: 512,
    }
}

fn ask(id: u64, prompt: u32, output: u32) -> Request {
    Request { id, prompt, output }
}

/// A prompt that begins with blocks an ended request left cached prefills only the rest,
/// its first token the sooner; the last prompt token is always computed.
#[test]
fn a_cached_prefix_is_not_prefilled_again() {
    let mut warm = Replica::new(PerToken, config(8, 8192, 10_000));
    warm.submit_prefixed(ask(1, 1024, 4), prefix(&[7, 8]))
        .expect("fits");
    run(&mut warm);
    assert_eq!(warm.counters().tokens_prefilled, 1024);
    // What a balancer sees of it: the prefix held, and nothing in hand.
    assert_eq!(warm.cached_tokens(&prefix(&[7, 8, 9]), 1500), 1024);
    assert_eq!(warm.cached_tokens(&prefix(&[7, 8]), 1024), 1023);
    assert_eq!(warm.cached_tokens(&prefix(&[6, 8]), 1024), 0);
    assert_eq!(warm.backlog_tokens(), 0);
    warm.submit_prefixed(ask(2, 1500, 4), prefix(&[7, 8, 9]))
        .expect("fits");
    assert_eq!(warm.backlog_tokens(), 1500);
    let ev = run(&mut warm);
    assert_eq!(warm.backlog_tokens(), 0);
    assert_eq!(warm.counters().tokens_cached, 1024);
    assert_eq!(warm.counters().tokens_prefilled, 1024 + 476);
    let mut cold = Replica::new(PerToken, config(8, 8192, 10_000));
    cold.submit_prefixed(ask(2, 1500, 4), prefix(&[7, 8, 9]))
        .expect("fits");
    let cold_ev = run(&mut cold);
    let (hot, not) = (
        time_of(&ev, Event::FirstToken(2)),
        time_of(&cold_ev, Event::FirstToken(2)),
    );
    assert!(
        (hot - 0.576).abs() < 1e-9 && (not - 1.6).abs() < 1e-9,
        "{hot} {not}"
    );
    // Another chain (a different first block) finds nothing; the same prompt again finds
    // all but its last token.
    warm.submit_prefixed(ask(3, 1024, 1), prefix(&[6, 8]))
        .expect("fits");
    run(&mut warm);
    assert_eq!(warm.counters().tokens_cached, 1024);
    warm.submit_prefixed(ask(4, 1024, 1), prefix(&[7, 8]))
        .expect("fits");
    run(&mut warm);
    assert_eq!(warm.counters().tokens_cached, 1024 + 1023);
    // A request without a prefix neither finds nor leaves one.
    warm.submit(ask(5, 1024, 1)).expect("fits");
    run(&mut warm);
    assert_eq!(warm.counters().tokens_cached, 2047);
}

/// Cached prefixes live in free blocks: a running request that needs them takes them, the
/// least recently used first, and a failed replica loses them all.
#[test]
fn cached_prefixes_give_way_to_running_requests() {
    // 100 blocks of 16 tokens; a 512-token prefix block holds 32 of them.
    let fresh = || {
        let mut r = Replica::new(PerToken, config(8, 8192, 100));
        r.submit_prefixed(ask(1, 512, 1), prefix(&[1]))
            .expect("fits");
        r.submit_prefixed(ask(2, 512, 1), prefix(&[2]))
            .expect("fits");
        run(&mut r);
        // Prefix 1 used again, so prefix 2 is the older.
        r.submit_prefixed(ask(3, 512, 1), prefix(&[1]))
            .expect("fits");
        run(&mut r);
        assert_eq!(r.counters().tokens_cached, 511);
        r
    };
    // Another prompt of 1,000 tokens takes 63 of the 100 blocks: the 37 left hold one
    // cached prefix block but not two, and the older goes.
    let mut r = fresh();
    r.submit(ask(4, 1000, 2)).expect("fits");
    let mut ev = Vec::new();
    r.start_step(&mut |e| ev.push(e)).expect("a step");
    r.submit_prefixed(ask(5, 513, 1), prefix(&[1, 9]))
        .expect("fits");
    r.submit_prefixed(ask(6, 513, 1), prefix(&[2, 9]))
        .expect("fits");
    r.finish_step(&mut |e| ev.push(e));
    run(&mut r);
    assert_eq!(r.counters().tokens_cached, 511 + 512);
    let mut r = fresh();
    r.drain();
    r.submit_prefixed(ask(7, 513, 1), prefix(&[1, 9]))
        .expect("fits");
    run(&mut r);
    assert_eq!(r.counters().tokens_cached, 511);
}

/// Blocks are published once a prompt is prefilled, not when its request ends: a prompt
/// that arrives while the first is still decoding shares them, and holds no copy of its
/// own; a request whose client left leaves what it published cached.
#[test]
fn a_prefix_is_shared_while_its_request_still_runs() {
    let mut r = Replica::new(PerToken, config(8, 8192, 10_000));
    r.submit_prefixed(ask(1, 1024, 100), prefix(&[7, 8]))
        .expect("fits");
    let mut ev = Vec::new();
    r.start_step(&mut |e| ev.push(e)).expect("a step");
    r.finish_step(&mut |e| ev.push(e));
    // Prefilled: its 1,024 tokens in 64 blocks, published.
    assert_eq!(r.used_blocks(), 64);
    r.submit_prefixed(ask(2, 1500, 100), prefix(&[7, 8, 9]))
        .expect("fits");
    r.start_step(&mut |e| ev.push(e)).expect("a step");
    r.finish_step(&mut |e| ev.push(e));
    assert_eq!(r.counters().tokens_cached, 1024);
    assert_eq!(r.counters().tokens_prefilled, 1024 + 476);
    // The shared 64, a block for the first's next token, and the second's own 30 for the
    // 476 tokens past them.
    assert_eq!(r.used_blocks(), 64 + 1 + 30);
    r.cancel(1);
    r.cancel(2);
    assert_eq!(r.used_blocks(), 0);
    r.submit_prefixed(ask(3, 1500, 1), prefix(&[7, 8, 9]))
        .expect("fits");
    run(&mut r);
    assert_eq!(r.counters().tokens_cached, 1024 + 1499);
}

/// Two prompts alike admitted together both prefill in full; the second to publish shares
/// the first's blocks and gives up its copy.
#[test]
fn prompts_alike_prefilled_together_keep_one_copy() {
    let mut r = Replica::new(PerToken, config(8, 8192, 10_000));
    for id in [1, 2] {
        r.submit_prefixed(ask(id, 1024, 100), prefix(&[7, 8]))
            .expect("fits");
    }
    let mut ev = Vec::new();
    r.start_step(&mut |e| ev.push(e)).expect("a step");
    // Each took its own 64 blocks for the prompt.
    assert_eq!(r.used_blocks(), 128);
    r.finish_step(&mut |e| ev.push(e));
    assert_eq!(r.counters().tokens_cached, 0);
    r.start_step(&mut |e| ev.push(e)).expect("a step");
    r.finish_step(&mut |e| ev.push(e));
    // One shared copy of 64 blocks and a block each for their tokens.
    assert_eq!(r.used_blocks(), 64 + 2);
    run(&mut r);
    assert_eq!(r.used_blocks(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Prompts that share prefixes, in a cache small enough to preempt and evict, some of
    /// them cancelled on the way: every request not cancelled completes exactly once, no
    /// prompt token is both found and prefilled beyond what recomputation adds, and the
    /// cache ends with no block in use.
    #[test]
    fn shared_prefixes_keep_the_cache_whole(
        reqs in prop::collection::vec((1u32..600, 1u32..40, 0u64..3, 0u8..12), 1..30),
        blocks in 80u32..400,
        batch in 1u32..12,
        budget in 64u32..1024,
    ) {
        let mut r = Replica::new(Unit, config(batch, budget, blocks));
        let mut accepted = Vec::new();
        for (id, &(prompt, output, root, cancel)) in reqs.iter().enumerate() {
            let req = Request { id: id as u64, prompt, output };
            // Prompts of one root are prefixes of one another: blocks of 64 tokens.
            let hashes: Vec<u64> = (0..u64::from(prompt.div_ceil(64))).map(|k| root * 1000 + k).collect();
            let px = Prefix { hashes: hashes.into(), block_tokens: 64 };
            if r.submit_prefixed(req, px).is_ok() {
                accepted.push((req, cancel));
            }
        }
        let mut ev = Vec::new();
        let mut step = 0u8;
        while r.start_step(&mut |e| ev.push(e)).is_some() {
            r.finish_step(&mut |e| ev.push(e));
            step = step.saturating_add(1);
            for (req, cancel) in &accepted {
                if *cancel == step {
                    r.cancel(req.id);
                }
            }
            prop_assert!(r.used_blocks() <= blocks);
        }
        for (req, cancel) in &accepted {
            let finished = ev.iter().filter(|e| **e == Event::Finished(req.id)).count();
            prop_assert!(finished <= 1);
            if *cancel == 0 || *cancel > step {
                prop_assert_eq!(finished, 1);
            }
        }
        prop_assert_eq!(r.used_blocks(), 0);
        prop_assert_eq!(r.outstanding(), 0);
        prop_assert_eq!(r.backlog_tokens(), 0);
    }
}

/// A prompt that shares blocks already in use needs room only for the rest: with 100
/// blocks, a second prompt of 69 blocks, 64 of them shared with the one running, joins it
/// in the 35 blocks left.
#[test]
fn sharing_blocks_in_use_needs_room_only_for_the_rest() {
    let mut r = Replica::new(PerToken, config(8, 8192, 100));
    r.submit_prefixed(ask(1, 1024, 50), prefix(&[7, 8]))
        .expect("fits");
    let mut ev = Vec::new();
    r.start_step(&mut |e| ev.push(e)).expect("a step");
    r.finish_step(&mut |e| ev.push(e));
    r.submit_prefixed(ask(2, 1100, 50), prefix(&[7, 8, 9]))
        .expect("fits");
    r.start_step(&mut |e| ev.push(e)).expect("a step");
    assert_eq!(r.running(), 2);
    assert_eq!(r.used_blocks(), 64 + 1 + 5);
}

/// A released prompt's blocks go tail first, so a prefix cut short for room still serves its
/// beginning; and a block is published as soon as a chunk completes it.
#[test]
fn a_prefix_loses_its_tail_first_and_is_published_chunk_by_chunk() {
    let mut r = Replica::new(PerToken, config(8, 8192, 100));
    r.submit_prefixed(ask(1, 1536, 1), prefix(&[1, 2, 3]))
        .expect("fits");
    run(&mut r);
    // 35 blocks for another prompt leave room for two of the three cached 32-block entries.
    r.submit(ask(2, 560, 1)).expect("fits");
    run(&mut r);
    r.submit_prefixed(ask(3, 1025, 1), prefix(&[1, 2, 4]))
        .expect("fits");
    run(&mut r);
    assert_eq!(r.counters().tokens_cached, 1024);
    // Chunks of 512 tokens: the first block of a long prompt is there after its first step.
    let mut r = Replica::new(PerToken, config(8, 512, 1000));
    r.submit_prefixed(ask(1, 2048, 1), prefix(&[1, 2, 3, 4]))
        .expect("fits");
    let mut ev = Vec::new();
    r.start_step(&mut |e| ev.push(e)).expect("a step");
    r.finish_step(&mut |e| ev.push(e));
    r.submit_prefixed(ask(2, 1000, 1), prefix(&[1, 5]))
        .expect("fits");
    assert_eq!(r.cached_tokens(&prefix(&[1, 5]), 1000), 512);
    run(&mut r);
    assert_eq!(r.counters().tokens_cached, 512);
}

/// Requests prefilled elsewhere with one prefix share its blocks where they decode: the
/// second holds only the block its next token writes into; none counts as found cached,
/// its prompt's pass having been elsewhere.
#[test]
fn prefilled_requests_alike_share_their_prefix_where_they_decode() {
    let mut r = Replica::new(PerToken, config(8, 8192, 10_000));
    r.submit_prefilled_prefixed(ask(1, 1024, 10), Some(prefix(&[7, 8])))
        .expect("fits");
    let mut ev = Vec::new();
    r.start_step(&mut |e| ev.push(e)).expect("a step");
    r.finish_step(&mut |e| ev.push(e));
    assert_eq!(r.used_blocks(), 65);
    r.submit_prefilled_prefixed(ask(2, 1024, 10), Some(prefix(&[7, 8])))
        .expect("fits");
    r.start_step(&mut |e| ev.push(e)).expect("a step");
    assert_eq!(r.used_blocks(), 64 + 1 + 1);
    r.finish_step(&mut |e| ev.push(e));
    run(&mut r);
    assert_eq!(r.counters().tokens_cached, 0);
    assert_eq!(r.used_blocks(), 0);
}
