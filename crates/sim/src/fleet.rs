//! The discrete-event loop: arrivals, routing, replica steps and failures in virtual time.
//!
//! Events sit in one binary heap ordered by time and then by insertion, so ties resolve the
//! same way every run. Only the next arrival is ever queued, each replica has at most one step
//! in flight, and a request's state is freed when it ends: memory grows with the fleet and the
//! requests in flight, not with the length of the run.
//!
//! Requests reach providers through the shared router exactly as the gateway sends them: the
//! router picks a provider from what it has observed; inside a provider the pool's balancer
//! sends the request to the replica with the fewest requests (a provider's own load
//! balancer). A request whose provider fails before its first token is retried on another
//! provider, up to the attempt limit; one that fails after its first token has reached the
//! client ends as failed, as a broken stream would.
//!
//! A disaggregated provider has two pools: a request's prompt runs on a replica of its
//! prefill pool, which produces the first token; its KV cache then moves, in the time the
//! performance model gives, to the decode replica with the fewest requests, which produces
//! the rest. The first token reaches the client with the cache, so a request lost during the
//! move has sent nothing and is retried. Outages and slow-downs of the provider hit both
//! pools; a replica failure names a decode replica.

use crate::scenario::{Failure, Scenario};
use crate::stats::{Bin, FailureCount, Group, Histogram, Little, Record, Summary};
use crate::workload::{Arrival, Workload, PREFIX_BLOCK_TOKENS};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use switchyard_perf::{Deployment, Params};
use switchyard_replica::{EngineConfig, Event, Physics, Prefix, Replica, Request};
use switchyard_router::{Ask, Router, Sent};

/// Options of a run that are not part of the scenario.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Time bins in the report's time series (about; the run may overrun its horizon).
    pub bins: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { bins: 120 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Arrival,
    Step {
        pool: u32,
        slot: u32,
        epoch: u32,
    },
    /// Request `k`'s KV cache reaches its provider's decode pool.
    Transfer(u32),
    FailureStart(u32),
    FailureEnd(u32),
}

/// A scheduled event. Times are non-negative, and the bit patterns of non-negative doubles
/// order as the numbers do, so the heap compares two integers instead of two floats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ev {
    key: (u64, u64),
    kind: Kind,
}

impl Ev {
    fn t(&self) -> f64 {
        f64::from_bits(self.key.0)
    }
}

impl PartialOrd for Ev {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ev {
    /// Reversed, so that the max-heap yields the earliest event first (ties: first pushed).
    fn cmp(&self, o: &Self) -> Ordering {
        o.key.cmp(&self.key)
    }
}

/// Index of the replica with the fewest requests among those up: a segment tree over
/// (requests, index), so a pick and an update cost O(log n) on a thousand-replica pool.
#[derive(Debug, Clone)]
struct LoadTree {
    size: usize,
    nodes: Vec<(u32, u32)>,
}

impl LoadTree {
    const DOWN: u32 = u32::MAX;

    fn new(n: usize) -> Self {
        let size = n.next_power_of_two().max(1);
        let mut nodes = vec![(Self::DOWN, u32::MAX); 2 * size];
        for i in 0..n {
            nodes[size + i] = (0, i as u32);
        }
        let mut t = LoadTree { size, nodes };
        for k in (1..size).rev() {
            t.nodes[k] = t.nodes[2 * k].min(t.nodes[2 * k + 1]);
        }
        t
    }

    fn set(&mut self, i: usize, v: u32) {
        let mut k = self.size + i;
        // Most steps leave a replica's request count as it was.
        if self.nodes[k].0 == v {
            return;
        }
        self.nodes[k].0 = v;
        while k > 1 {
            k /= 2;
            self.nodes[k] = self.nodes[2 * k].min(self.nodes[2 * k + 1]);
        }
    }

    fn best(&self) -> Option<usize> {
        let (v, i) = self.nodes[1];
        (v != Self::DOWN).then_some(i as usize)
    }
}

#[derive(Debug)]
struct Slot<'a> {
    engine: Replica<Physics<'a>>,
    up: bool,
    /// Replica failures under way on this slot.
    failures: u32,
    busy: bool,
    epoch: u32,
    step_s: f64,
    busy_s: f64,
}

#[derive(Debug)]
struct Pool<'a> {
    slots: Vec<Slot<'a>>,
    tree: LoadTree,
    /// Outages under way on this pool; the provider refuses connections while any is.
    outages: u32,
    slow: f64,
    /// Slow-downs under way (failure index, factor); their product slows the pool.
    slows: Vec<(usize, f64)>,
    preemptions: u64,
}

impl<'a> Pool<'a> {
    /// The replica up for a prompt of `prompt` tokens that begins with `prefix`: the one
    /// with the fewest tokens to get through before it is done with it, the fewer requests
    /// among equals ([`Replica::balance_key`]).
    fn prefix_aware(&self, prefix: &Prefix, prompt: u32) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.up)
            .min_by_key(|(i, s)| (s.engine.balance_key(prefix, prompt), *i))
            .map(|(i, _)| i)
    }

    /// The pool as one deployment of all its replicas, for its power and cost.
    fn deployment(&self) -> Deployment<'a> {
        let mut d = self.slots[0].engine.physics().deployment.clone();
        d.layout.dp = self.slots.len() as u32;
        d
    }
}

#[derive(Debug, Clone, Copy)]
struct Req {
    id: u64,
    a: Arrival,
    attempts: u32,
    tried: u64,
    provider: u32,
    slot: u32,
    dispatched_at: f64,
    /// What the router expected of its provider when it was sent.
    sent: Sent,
    queue_s: Option<f64>,
    first_at: Option<f64>,
    fallback: bool,
    /// Whether `slot` is a replica of a disaggregated provider's prefill pool.
    in_prefill: bool,
    /// Prompt tokens its replica found published, which it did not prefill.
    cached: u32,
}

impl Req {
    /// Time per output token after the first, for a request whose last token came at `now`.
    fn tpot_at(&self, now: f64) -> Option<f64> {
        self.first_at
            .filter(|_| self.a.output > 1)
            .map(|f| (now - f) / f64::from(self.a.output - 1))
    }
}

/// Statistics of one (provider, class) cell.
#[derive(Debug, Clone, Default)]
struct Cell {
    completed: u64,
    failed: u64,
    good: u64,
    /// Requests of a class with a target, completed or failed.
    judged: u64,
    fallbacks_in: u64,
    queue: Histogram,
    ttft: Histogram,
    tpot: Histogram,
    e2e: Histogram,
    prompt_tokens: u64,
    output_tokens: u64,
    /// Prompt tokens of completed requests their replicas found cached.
    cached_tokens: u64,
}

impl Cell {
    fn merge(&mut self, o: &Cell) {
        self.completed += o.completed;
        self.failed += o.failed;
        self.good += o.good;
        self.judged += o.judged;
        self.fallbacks_in += o.fallbacks_in;
        self.queue.merge(&o.queue);
        self.ttft.merge(&o.ttft);
        self.tpot.merge(&o.tpot);
        self.e2e.merge(&o.e2e);
        self.prompt_tokens += o.prompt_tokens;
        self.output_tokens += o.output_tokens;
        self.cached_tokens += o.cached_tokens;
    }

    fn group(&self, name: &str, duration: f64) -> Group {
        let requests = self.completed + self.failed;
        Group {
            name: name.to_string(),
            requests,
            completed: self.completed,
            failed: self.failed,
            // Of the requests whose class sets a target; without one, none is judged.
            goodput: (self.judged > 0).then(|| self.good as f64 / self.judged as f64),
            fallbacks_in: self.fallbacks_in,
            queue_s: self.queue.summary(),
            ttft_s: self.ttft.summary(),
            tpot_s: self.tpot.summary(),
            e2e_s: self.e2e.summary(),
            prompt_tokens: self.prompt_tokens,
            output_tokens: self.output_tokens,
            throughput_tok_s: if duration > 0.0 {
                self.output_tokens as f64 / duration
            } else {
                0.0
            },
            utilization: None,
            load: None,
            preemptions: None,
            prefix_hit: None,
            joules_per_token: None,
            usd_per_mtok: None,
        }
    }
}

/// The most time bins a run keeps; past it they merge in pairs into bins twice as wide.
const MAX_BINS: usize = 1000;

pub mod reason {
    //! Reasons a request fails, as they appear in reports, for callers that tell them apart.
    /// No provider takes the request's class.
    pub const NO_PROVIDER: &str = "no provider takes its class";
    /// Every provider tried was down.
    pub const DOWN: &str = "every provider tried was down";
    /// A provider failed mid-stream.
    pub const MID_STREAM: &str = "provider failed after the first token";
    /// The request is longer than the model's context: refused as an engine refuses it,
    /// however much capacity there is.
    pub const PAST_CONTEXT: &str = "prompt and output exceed the model's context";
    /// The request fits the model's context but not one replica's KV cache.
    pub const PAST_KV: &str = "prompt and output exceed what a replica's KV cache holds";
}

/// Latency histograms of the run, for charts: TTFT and end-to-end per provider.
#[derive(Debug, Clone, Default)]
pub struct Distributions {
    /// Per provider, in scenario order: time to first token.
    pub ttft: Vec<Histogram>,
    /// Per provider: end-to-end latency.
    pub e2e: Vec<Histogram>,
    /// Per provider: time per output token.
    pub tpot: Vec<Histogram>,
    /// Per class: time to first token.
    pub class_ttft: Vec<Histogram>,
    /// Per class: time per output token.
    pub class_tpot: Vec<Histogram>,
}

struct Sim<'s, 'a, F> {
    scn: &'s Scenario<'a>,
    /// Whether the trace names prompts' prefixes, so that reports give a share found cached.
    prefixed: bool,
    params: &'a Params,
    now: f64,
    seq: u64,
    heap: BinaryHeap<Ev>,
    /// One pool per provider, in scenario order, then the prefill pools of disaggregated
    /// providers.
    pools: Vec<Pool<'a>>,
    /// The provider of each pool.
    owner: Vec<usize>,
    /// The prefill pool of each provider, if it has one.
    prefill_of: Vec<Option<usize>>,
    router: Router,
    reqs: Vec<Req>,
    free: Vec<u32>,
    events: Vec<Event>,
    exclude: Vec<usize>,
    cells: Vec<Cell>,
    unrouted: Vec<Cell>,
    /// Each failure's window: start, end, the requests arriving in it, and the output
    /// tokens the fleet made within it.
    windows: Vec<(f64, f64, Cell, u64)>,
    /// Requests arriving after the warm-up, when the scenario sets one.
    steady: Option<(f64, Cell)>,
    failures: BTreeMap<(usize, &'static str), u64>,
    in_system: u64,
    area: f64,
    last_t: f64,
    sojourn: f64,
    arrivals: u64,
    ended: u64,
    bin_s: f64,
    bins: Vec<Bin>,
    end_t: f64,
    sink: F,
}

/// Runs a scenario. Each request's outcome goes to `sink` when it ends, in order of ending;
/// `progress` is called now and then with the share of arrivals produced (0 to 1).
pub fn simulate<'a, F: FnMut(&Record<'_>)>(
    scn: &Scenario<'a>,
    params: &'a Params,
    opts: RunOptions,
    sink: F,
    progress: &mut dyn FnMut(f64),
) -> (Summary, Distributions) {
    let mut workload = Workload::new(scn.workload.clone(), scn.trace.clone(), scn.seed);
    let expected = workload.expected_requests();
    let horizon = workload.horizon().unwrap_or(60.0).max(1e-3);
    let pool = |deployment: &Deployment<'a>, replicas: u32, engine| Pool {
        slots: (0..replicas)
            .map(|_| Slot {
                engine: Replica::new(
                    Physics {
                        deployment: deployment.clone(),
                        params,
                    },
                    engine,
                ),
                up: true,
                failures: 0,
                busy: false,
                epoch: 0,
                step_s: 0.0,
                busy_s: 0.0,
            })
            .collect(),
        tree: LoadTree::new(replicas as usize),
        outages: 0,
        slow: 1.0,
        slows: Vec::new(),
        preemptions: 0,
    };
    let np = scn.providers.len();
    let mut pools: Vec<Pool<'a>> = scn
        .providers
        .iter()
        .map(|p| pool(&p.deployment, p.replicas, p.engine))
        .collect();
    let mut owner: Vec<usize> = (0..np).collect();
    let mut prefill_of = vec![None; np];
    for (i, p) in scn.providers.iter().enumerate() {
        if let Some(pp) = &p.prefill {
            prefill_of[i] = Some(pools.len());
            owner.push(i);
            pools.push(pool(&pp.deployment, pp.replicas, pp.engine));
        }
    }
    let router = Router::new(
        scn.policy,
        scn.providers.iter().map(|p| p.target.clone()).collect(),
        scn.health,
        scn.seed,
    );
    let nc = scn.classes.len();
    let mut sim = Sim {
        scn,
        prefixed: scn.trace.iter().any(|r| r.prefix.is_some()),
        params,
        now: 0.0,
        seq: 0,
        heap: BinaryHeap::new(),
        pools,
        owner,
        prefill_of,
        router,
        reqs: Vec::new(),
        free: Vec::new(),
        events: Vec::new(),
        exclude: Vec::new(),
        cells: vec![Cell::default(); scn.providers.len() * nc],
        unrouted: vec![Cell::default(); nc],
        windows: scn
            .failures
            .iter()
            .map(|f| {
                let (a, b) = match *f {
                    Failure::Outage { start, end, .. } | Failure::Slowdown { start, end, .. } => {
                        (start, end)
                    }
                    Failure::Replica { start, end, .. } => (start, end.unwrap_or(f64::INFINITY)),
                };
                (a, b, Cell::default(), 0)
            })
            .collect(),
        steady: scn.warmup_s.map(|w| (w, Cell::default())),
        failures: BTreeMap::new(),
        in_system: 0,
        area: 0.0,
        last_t: 0.0,
        sojourn: 0.0,
        arrivals: 0,
        ended: 0,
        bin_s: horizon / opts.bins.max(1) as f64,
        bins: Vec::new(),
        end_t: 0.0,
        sink,
    };
    for (i, f) in scn.failures.iter().enumerate() {
        let (start, end) = match *f {
            Failure::Outage { start, end, .. } | Failure::Slowdown { start, end, .. } => {
                (start, Some(end))
            }
            Failure::Replica { start, end, .. } => (start, end),
        };
        sim.push(start, Kind::FailureStart(i as u32));
        if let Some(e) = end {
            sim.push(e, Kind::FailureEnd(i as u32));
        }
    }
    let mut next = workload.next();
    if let Some(a) = next {
        sim.push(a.at, Kind::Arrival);
    }
    let step = expected.map_or(u64::MAX, |n| (n / 100).max(1));
    while let Some(ev) = sim.heap.pop() {
        // Failure events after the last request add nothing to the run.
        if next.is_none() && sim.in_system == 0 && !matches!(ev.kind, Kind::Step { .. }) {
            continue;
        }
        sim.advance(ev.t());
        match ev.kind {
            Kind::Arrival => {
                if let Some(a) = next.take() {
                    sim.arrive(a);
                    if sim.arrivals.is_multiple_of(step) {
                        if let Some(n) = expected {
                            progress(sim.arrivals as f64 / n.max(1) as f64);
                        }
                    }
                }
                next = workload.next();
                if let Some(a) = next {
                    sim.push(a.at.max(sim.now), Kind::Arrival);
                }
            }
            Kind::Step { pool, slot, epoch } => sim.step_done(pool as usize, slot as usize, epoch),
            Kind::Transfer(k) => sim.transferred(k),
            Kind::FailureStart(i) => sim.failure(i as usize, true),
            Kind::FailureEnd(i) => sim.failure(i as usize, false),
        }
    }
    progress(1.0);
    sim.finish()
}

impl<'a, F: FnMut(&Record<'_>)> Sim<'_, 'a, F> {
    /// What provider `p` draws serving nothing: facility watts (`None` without a power
    /// figure) and USD an hour (`None` without a price).
    fn idle_draw(&self, p: usize) -> (Option<f64>, Option<f64>) {
        let idle: Vec<switchyard_perf::Economics> = self
            .pools_of(p)
            .map(|q| &self.pools[q])
            .filter(|q| !q.slots.is_empty())
            .map(|q| q.deployment().economics_at(self.params, 1.0, 0.0))
            .collect();
        (
            idle.iter()
                .map(|e| e.power_w.map(|w| w * self.params.pue))
                .sum(),
            idle.iter().map(|e| e.usd_per_hour).sum(),
        )
    }

    /// Provider `p`'s pools: its own, then its prefill pool if it has one.
    fn pools_of(&self, p: usize) -> impl Iterator<Item = usize> + use<F> {
        [Some(p), self.prefill_of[p]].into_iter().flatten()
    }

    fn push(&mut self, t: f64, kind: Kind) {
        self.seq += 1;
        self.heap.push(Ev {
            key: (t.max(0.0).to_bits(), self.seq),
            kind,
        });
    }

    /// Moves the clock to `t`, integrating requests in the system and closing time bins.
    fn advance(&mut self, t: f64) {
        let t = t.max(self.now);
        self.area += self.in_system as f64 * (t - self.last_t);
        self.last_t = t;
        self.now = t;
        // A run that overruns its horizon many times (arrivals all at once, a drain far
        // longer than the arrivals) keeps its bins few: past a cap, they pair up into bins
        // twice as wide.
        while t >= self.bin_s * MAX_BINS as f64 {
            self.widen_bins();
        }
        while (self.bins.len() as f64) * self.bin_s <= t {
            if let Some(b) = self.bins.last_mut() {
                b.queued = self
                    .pools
                    .iter()
                    .flat_map(|p| &p.slots)
                    .map(|s| s.engine.waiting() as u64)
                    .sum();
                b.in_system = self.in_system;
            }
            let start_s = self.bins.len() as f64 * self.bin_s;
            self.bins.push(Bin {
                start_s,
                arrivals: 0,
                completed: 0,
                failed: 0,
                tokens: vec![0; self.scn.providers.len()],
                queued: 0,
                in_system: 0,
                mean_ttft_s: None,
                fallbacks: vec![0; self.scn.providers.len()],
                ttft_sum: 0.0,
            });
        }
    }

    /// Doubles the bins' width, each pair of bins merged into one.
    fn widen_bins(&mut self) {
        self.bin_s *= 2.0;
        let old = std::mem::take(&mut self.bins);
        let mut it = old.into_iter();
        while let Some(mut a) = it.next() {
            if let Some(b) = it.next() {
                a.arrivals += b.arrivals;
                a.completed += b.completed;
                a.failed += b.failed;
                for (x, y) in a.tokens.iter_mut().zip(&b.tokens) {
                    *x += y;
                }
                for (x, y) in a.fallbacks.iter_mut().zip(&b.fallbacks) {
                    *x += y;
                }
                a.ttft_sum += b.ttft_sum;
                // Counts at the end of the bin are the later one's.
                a.queued = b.queued;
                a.in_system = b.in_system;
            }
            self.bins.push(a);
        }
    }

    fn bin(&mut self) -> &mut Bin {
        let i = ((self.now / self.bin_s) as usize).min(self.bins.len().saturating_sub(1));
        &mut self.bins[i]
    }

    fn arrive(&mut self, a: Arrival) {
        // A request that states a `max_tokens` stops there, as an engine stops it.
        let a = Arrival {
            output: self.scn.max_tokens.cap(a.output),
            ..a
        };
        let id = self.arrivals;
        self.arrivals += 1;
        self.in_system += 1;
        self.bin().arrivals += 1;
        let r = Req {
            id,
            a,
            attempts: 0,
            tried: 0,
            provider: u32::MAX,
            slot: u32::MAX,
            dispatched_at: self.now,
            sent: Sent::default(),
            queue_s: None,
            first_at: None,
            fallback: false,
            in_prefill: false,
            cached: 0,
        };
        let k = match self.free.pop() {
            Some(k) => {
                self.reqs[k as usize] = r;
                k
            }
            None => {
                self.reqs.push(r);
                (self.reqs.len() - 1) as u32
            }
        };
        self.dispatch(k);
    }

    /// Routes request `k` to a provider and a replica, retrying on providers that are down.
    fn dispatch(&mut self, k: u32) {
        loop {
            let r = self.reqs[k as usize];
            self.exclude.clear();
            self.exclude
                .extend((0..self.pools.len()).filter(|&i| i < 64 && r.tried & (1 << i) != 0));
            let class = &self.scn.classes[r.a.class];
            // A class asks for its TTFT and TPOT targets, as a gateway request can with
            // headers.
            let ask = Ask {
                class: Some(class.name.as_str()),
                output_tokens: self.scn.max_tokens.of(r.a.output),
                exclude: &self.exclude,
                ttft_target_s: class.ttft_s,
                tpot_target_s: class.tpot_s,
                prompt_tokens: Some(r.a.prompt),
                again: &[],
            };
            let Some(p) = self.router.pick(self.now, &ask) else {
                // A class some provider serves, whose request none of them can hold, is too
                // long rather than unserved: past the context of every model that serves it,
                // or within one but past what its replicas' KV caches hold.
                let contexts: Vec<u32> = self
                    .router
                    .targets()
                    .iter()
                    .zip(&self.scn.providers)
                    .filter(|(t, _)| t.takes(Some(class.name.as_str())))
                    .map(|(_, p)| p.engine.context)
                    .collect();
                let asked = u64::from(r.a.prompt)
                    + u64::from(self.scn.max_tokens.of(r.a.output).unwrap_or(1));
                let why = if r.attempts > 0 {
                    reason::DOWN
                } else if contexts.is_empty() {
                    reason::NO_PROVIDER
                } else if contexts.iter().all(|&c| asked > u64::from(c)) {
                    reason::PAST_CONTEXT
                } else {
                    reason::PAST_KV
                };
                self.end(k, Some(why));
                return;
            };
            // An engine decodes no further than the longest request it holds, the model's
            // context or its KV cache's room for one sequence (vLLM's `max_model_len`), and
            // refuses a prompt that leaves no room for a token: the router has already
            // passed over a provider too short for what the request states, which leaves
            // those that state no `max_tokens`.
            let engine = &self.scn.providers[p].engine;
            let context = engine.longest_request();
            if self.reqs[k as usize].a.prompt >= context {
                let why = if self.reqs[k as usize].a.prompt >= engine.context {
                    reason::PAST_CONTEXT
                } else {
                    reason::PAST_KV
                };
                self.end(k, Some(why));
                return;
            }
            let ahead = self
                .router
                .dispatched_prompt(p, self.now, self.reqs[k as usize].a.prompt);
            let r = &mut self.reqs[k as usize];
            r.sent = ahead;
            r.a.output = r.a.output.min(context - r.a.prompt);
            r.attempts += 1;
            r.tried |= 1u64 << p.min(63);
            r.provider = p as u32;
            r.dispatched_at = self.now;
            r.fallback = r.attempts > 1;
            r.cached = 0;
            // A disaggregated provider takes the prompt on its prefill pool, for the first
            // token only (the router sent it here knowing the whole request fits where it
            // will decode).
            let (q, output) = match self.prefill_of[p] {
                Some(q) => (q, 1),
                None => (p, r.a.output),
            };
            // A disaggregated provider with no decode replica up refuses the request too: its
            // prompt would produce a first token with nowhere to decode the rest.
            let refuses =
                self.pools[p].outages > 0 || (q != p && self.pools[p].tree.best().is_none());
            // Where its prompt runs, a replica finds what it cached of the prompt's prefix.
            let prefix = prefix_of(self.scn, p, &r.a);
            let pool = &mut self.pools[q];
            let slot = match &prefix {
                _ if refuses => None,
                Some(px) => pool.prefix_aware(px, r.a.prompt),
                None => pool.tree.best(),
            };
            let Some(s) = slot else {
                // Connection refused: the gateway sees it at once and falls back.
                self.router.failed(p, self.now);
                if self.reqs[k as usize].attempts >= self.scn.max_attempts {
                    self.end(k, Some(reason::DOWN));
                    return;
                }
                continue;
            };
            let req = Request {
                id: u64::from(k),
                prompt: r.a.prompt,
                output,
            };
            r.slot = s as u32;
            r.in_prefill = q != p;
            let submitted = match prefix {
                Some(px) => pool.slots[s].engine.submit_prefixed(req, px),
                None => pool.slots[s].engine.submit(req),
            };
            if submitted.is_err() {
                self.router.abandoned(p);
                self.end(k, Some(reason::PAST_KV));
                return;
            }
            let n = pool.slots[s].engine.outstanding() as u32;
            pool.tree.set(s, n);
            if !pool.slots[s].busy {
                self.start(q, s);
            }
            return;
        }
    }

    /// Request `k`'s KV cache has reached its provider's decode pool: it joins the replica
    /// with the fewest requests there, its first token reaching the client; or, with the pool
    /// down, it is lost before any token has reached the client, and retried.
    fn transferred(&mut self, k: u32) {
        let r = self.reqs[k as usize];
        let p = r.provider as usize;
        // Its decode replica shares what it holds of the prompt's prefix: the one that holds
        // most for its load, as where prompts run.
        let prefix = prefix_of(self.scn, p, &r.a);
        let pool = &mut self.pools[p];
        let slot = match &prefix {
            _ if pool.outages > 0 => None,
            Some(px) => pool.prefix_aware(px, r.a.prompt),
            None => pool.tree.best(),
        };
        let Some(s) = slot else {
            self.lost(k, true);
            return;
        };
        let req = Request {
            id: u64::from(k),
            prompt: r.a.prompt,
            output: r.a.output,
        };
        if pool.slots[s]
            .engine
            .submit_prefilled_prefixed(req, prefix)
            .is_err()
        {
            self.router.abandoned(p);
            self.end(k, Some(reason::PAST_KV));
            return;
        }
        self.reqs[k as usize].slot = s as u32;
        self.reqs[k as usize].in_prefill = false;
        let n = pool.slots[s].engine.outstanding() as u32;
        pool.tree.set(s, n);
        let idle = !pool.slots[s].busy;
        // The first token arrives with the cache.
        self.first_token(p, k);
        if idle {
            self.start(p, s);
        }
    }

    /// `c` as a report's group named `name` over `duration` seconds, with the share of its
    /// completed requests' prompt tokens their replicas found cached where the trace names
    /// prompts' prefixes.
    fn group_of(&self, c: &Cell, name: &str, duration: f64) -> Group {
        let mut g = c.group(name, duration);
        if c.prompt_tokens > 0 && self.prefixed {
            g.prefix_hit = Some(c.cached_tokens as f64 / c.prompt_tokens as f64);
        }
        g
    }

    /// Request `k`'s first token reaches its client from provider `p`.
    fn first_token(&mut self, p: usize, k: u32) {
        let r = &mut self.reqs[k as usize];
        r.first_at = Some(self.now);
        let seen = self.now - r.dispatched_at;
        self.router
            .first_token(p, self.now, seen, r.sent.prefilled(r.cached));
    }

    fn start(&mut self, p: usize, s: usize) {
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        let pool = &mut self.pools[p];
        let slot = &mut pool.slots[s];
        let dt = slot.engine.start_step(&mut |e| events.push(e));
        match dt {
            Some(dt) => {
                let dt = dt * pool.slow;
                slot.busy = true;
                slot.step_s = dt;
                let epoch = slot.epoch;
                self.push(
                    self.now + dt,
                    Kind::Step {
                        pool: p as u32,
                        slot: s as u32,
                        epoch,
                    },
                );
            }
            None => slot.busy = false,
        }
        self.handle(p, &events);
        self.events = events;
    }

    fn step_done(&mut self, p: usize, s: usize, epoch: u32) {
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        let pool = &mut self.pools[p];
        let slot = &mut pool.slots[s];
        if slot.epoch != epoch || !slot.up {
            self.events = events;
            return;
        }
        slot.busy = false;
        slot.busy_s += slot.step_s;
        let before = slot.engine.counters().tokens_out;
        slot.engine.finish_step(&mut |e| {
            if !matches!(e, Event::Token(_)) {
                events.push(e);
            }
        });
        let made = slot.engine.counters().tokens_out - before;
        let n = slot.engine.outstanding() as u32;
        pool.tree.set(s, n);
        let owner = self.owner[p];
        self.bin().tokens[owner] += made;
        let now = self.now;
        for (a, b, _, window_made) in &mut self.windows {
            if now >= *a && now < *b {
                *window_made += made;
            }
        }
        self.handle(p, &events);
        self.events = events;
        self.start(p, s);
    }

    /// Events of pool `q`'s replicas.
    fn handle(&mut self, q: usize, events: &[Event]) {
        let p = self.owner[q];
        for &e in events {
            match e {
                Event::Scheduled(k) => {
                    let r = &mut self.reqs[k as usize];
                    if r.queue_s.is_none() {
                        r.queue_s = Some(self.now - r.a.at);
                    }
                }
                // A prompt that moves on to a decode pool reaches its client with its cache
                // (see `transferred`), as engines that stream from the decode side deliver it
                // and as the performance model's disaggregated TTFT counts it.
                Event::FirstToken(k) if q != p && self.reqs[k as usize].a.output > 1 => {}
                Event::FirstToken(k) => self.first_token(p, k as u32),
                Event::Finished(k) if q != p && self.reqs[k as usize].a.output > 1 => {
                    // The prompt is done: its KV cache leaves for the decode pool.
                    let prompt = f64::from(self.reqs[k as usize].a.prompt);
                    let send = self.scn.providers[p].prefill.as_ref().map_or(0.0, |pp| {
                        pp.deployment.kv_send_s(self.params, prompt, pp.same_domain)
                    });
                    self.push(self.now + send, Kind::Transfer(k as u32));
                }
                Event::Finished(k) => {
                    let tpot = self.reqs[k as usize].tpot_at(self.now);
                    self.router.succeeded(p, self.now, tpot);
                    self.end(k as u32, None);
                }
                Event::Preempted(_) => self.pools[q].preemptions += 1,
                Event::Cached(k, n) => self.reqs[k as usize].cached = n,
                Event::Token(_) => {}
            }
        }
    }

    /// A provider or replica failed under request `k`: retry it elsewhere if no token has
    /// reached the client yet. `blame` tells the router's health check of the failure.
    fn lost(&mut self, k: u32, blame: bool) {
        let r = self.reqs[k as usize];
        // Either way the request leaves the provider's count of those in flight.
        if blame {
            self.router.failed(r.provider as usize, self.now);
        } else {
            self.router.abandoned(r.provider as usize);
        }
        if r.first_at.is_some() {
            self.end(k, Some(reason::MID_STREAM));
        } else if r.attempts >= self.scn.max_attempts {
            self.end(k, Some(reason::DOWN));
        } else {
            let r = &mut self.reqs[k as usize];
            r.queue_s = None;
            self.dispatch(k);
        }
    }

    fn take_down(&mut self, p: usize, s: usize) -> Vec<u64> {
        let slot = &mut self.pools[p].slots[s];
        slot.epoch = slot.epoch.wrapping_add(1);
        slot.busy = false;
        slot.up = false;
        let ids = slot.engine.drain();
        self.pools[p].tree.set(s, LoadTree::DOWN);
        ids
    }

    fn bring_up(&mut self, p: usize, s: usize) {
        let slot = &mut self.pools[p].slots[s];
        slot.up = true;
        let n = slot.engine.outstanding() as u32;
        self.pools[p].tree.set(s, n);
    }

    /// A failure starts or ends. Failures may overlap: a replica is up only when neither an
    /// outage of its provider nor a failure of its own is under way, and a pool's slow-down
    /// is the product of those under way.
    fn failure(&mut self, i: usize, starts: bool) {
        match self.scn.failures[i] {
            Failure::Outage { provider: p, .. } => {
                // The count lives on the provider's own pool; a prefill pool goes with it.
                let pools: Vec<usize> = self.pools_of(p).collect();
                let pool = &mut self.pools[p];
                if starts {
                    pool.outages += 1;
                    if pool.outages == 1 {
                        for &q in &pools {
                            for s in 0..self.pools[q].slots.len() {
                                if self.pools[q].slots[s].failures == 0 {
                                    for k in self.take_down(q, s) {
                                        self.lost(k as u32, true);
                                    }
                                }
                            }
                        }
                    }
                } else {
                    pool.outages = pool.outages.saturating_sub(1);
                    if pool.outages == 0 {
                        for &q in &pools {
                            for s in 0..self.pools[q].slots.len() {
                                if self.pools[q].slots[s].failures == 0 {
                                    self.bring_up(q, s);
                                }
                            }
                        }
                    }
                }
            }
            Failure::Replica {
                provider: p,
                replica: s,
                ..
            } => {
                let outage = self.pools[p].outages > 0;
                let slot = &mut self.pools[p].slots[s];
                if starts {
                    slot.failures += 1;
                    if slot.failures == 1 && !outage {
                        let lost = self.take_down(p, s);
                        // The provider's other replicas still serve: a request that had sent
                        // nothing may be retried there, as a client retries a provider whose
                        // load balancer moves it to a healthy replica.
                        let others = self.pools[p].tree.best().is_some();
                        // One replica going down is one failure to the provider's health
                        // check, however many requests it held: a balancer in front of the
                        // pool sees one sick backend, not a sick provider.
                        for (j, k) in lost.into_iter().enumerate() {
                            if others {
                                self.reqs[k as usize].tried &= !(1u64 << p.min(63));
                            }
                            self.lost(k as u32, j == 0);
                        }
                    }
                } else {
                    slot.failures = slot.failures.saturating_sub(1);
                    if slot.failures == 0 && !outage {
                        self.bring_up(p, s);
                    }
                }
            }
            Failure::Slowdown {
                provider: p,
                factor,
                ..
            } => {
                for q in self.pools_of(p) {
                    let pool = &mut self.pools[q];
                    if starts {
                        pool.slows.push((i, factor));
                    } else {
                        pool.slows.retain(|&(j, _)| j != i);
                    }
                    pool.slow = pool.slows.iter().map(|&(_, f)| f).product();
                }
            }
        }
    }

    /// Request `k` leaves the system, completed (`why` is `None`) or failed.
    fn end(&mut self, k: u32, why: Option<&'static str>) {
        let r = self.reqs[k as usize];
        self.free.push(k);
        self.in_system -= 1;
        self.ended += 1;
        self.end_t = self.now;
        let e2e = self.now - r.a.at;
        self.sojourn += e2e;
        let class = &self.scn.classes[r.a.class];
        let provider = (r.provider != u32::MAX).then_some(r.provider as usize);
        let ttft = r.first_at.map(|f| f - r.a.at);
        let tpot = r.tpot_at(self.now).filter(|_| why.is_none());
        let nc = self.scn.classes.len();
        let judged = u64::from(class.has_target());
        let good = class.has_target() && why.is_none() && class.meets(ttft, tpot);
        let record = |cell: &mut Cell| match why {
            None => {
                cell.completed += 1;
                cell.queue.record(r.queue_s.unwrap_or(0.0));
                if let Some(t) = ttft {
                    cell.ttft.record(t);
                }
                if let Some(t) = tpot {
                    cell.tpot.record(t);
                }
                cell.e2e.record(e2e);
                cell.prompt_tokens += u64::from(r.a.prompt);
                cell.cached_tokens += u64::from(r.cached);
                cell.output_tokens += u64::from(r.a.output);
                cell.good += u64::from(good);
                cell.judged += judged;
                cell.fallbacks_in += u64::from(r.fallback);
            }
            Some(_) => {
                cell.failed += 1;
                cell.judged += judged;
            }
        };
        record(match provider {
            Some(p) => &mut self.cells[p * nc + r.a.class],
            None => &mut self.unrouted[r.a.class],
        });
        for (a, b, cell, _) in &mut self.windows {
            if r.a.at >= *a && r.a.at < *b {
                record(cell);
            }
        }
        if let Some((w, cell)) = &mut self.steady {
            if r.a.at >= *w {
                record(cell);
            }
        }
        match why {
            None => {
                let bin = self.bin();
                bin.completed += 1;
                bin.ttft_sum += ttft.unwrap_or(0.0);
                if let (Some(p), true) = (provider, r.fallback) {
                    bin.fallbacks[p] += 1;
                }
            }
            Some(w) => {
                *self.failures.entry((r.a.class, w)).or_insert(0) += 1;
                self.bin().failed += 1;
            }
        }
        let name = provider.map_or("", |p| self.scn.providers[p].name.as_str());
        let rec = Record {
            id: r.id,
            class: &class.name,
            provider: name,
            // The replica that served it; a request that ended in a prefill pool names none,
            // replica numbers being the provider's decode replicas.
            replica: provider
                .map(|_| r.slot)
                .filter(|&s| s != u32::MAX && !r.in_prefill),
            arrival_s: r.a.at,
            prompt: r.a.prompt,
            cached: r.cached,
            output: r.a.output,
            attempts: r.attempts,
            failure: why,
            queue_s: r.queue_s,
            ttft_s: ttft,
            tpot_s: tpot,
            e2e_s: e2e,
        };
        (self.sink)(&rec);
    }

    fn finish(mut self) -> (Summary, Distributions) {
        let end = self.end_t.max(1e-9);
        // Close the last bin's snapshot.
        if let Some(b) = self.bins.last_mut() {
            b.in_system = self.in_system;
        }
        for b in &mut self.bins {
            b.mean_ttft_s = (b.completed > 0).then(|| b.ttft_sum / b.completed as f64);
        }
        let failure_windows = self
            .windows
            .iter()
            .zip(&self.scn.failures)
            .map(|((a, b, cell, made), f)| {
                let (what, p) = match *f {
                    Failure::Outage { provider, .. } => ("outage".to_string(), provider),
                    // Two replicas of one provider failing at once are two windows.
                    Failure::Replica {
                        provider, replica, ..
                    } => (format!("failure of replica {replica}"), provider),
                    Failure::Slowdown { provider, .. } => ("slowdown".to_string(), provider),
                };
                // A window that outlasts the run ends with it; one that starts after the
                // last request left saw none of them.
                let when = if *a >= end {
                    format!("from {a:.0} s, after the run's end at {end:.0} s")
                } else if b.is_finite() && *b < end {
                    format!("{a:.0}-{b:.0} s")
                } else if b.is_finite() {
                    format!("{a:.0}-{b:.0} s, the run ending at {end:.0} s")
                } else {
                    format!("{a:.0} s to the end")
                };
                let name = format!("{what} of {} ({when})", self.scn.providers[p].name);
                let to = b.min(end);
                let mut g = self.group_of(cell, &name, (to - a).max(1e-9));
                // The window's requests stream most of their tokens after it: its tok/s is
                // what the fleet produced within it, each step's tokens counted at its end.
                // Prorated from the time bins, a bin straddling the start of an outage of the
                // only provider put the tokens made before it inside.
                g.throughput_tok_s = if to > *a {
                    *made as f64 / (to - a)
                } else {
                    0.0
                };
                g
            })
            .collect();
        let nc = self.scn.classes.len();
        let np = self.scn.providers.len();
        let mut providers = Vec::new();
        let mut dist = Distributions::default();
        // The lengths each pool's peak throughput is taken at, for its power, where it
        // served nothing.
        let (isl, osl) = self.scn.workload.mean_lengths(&self.scn.trace);
        let (mut fleet_watts, mut fleet_usd_h) = (Some(0.0_f64), Some(0.0_f64));
        for p in 0..np {
            let mut c = Cell::default();
            for k in 0..nc {
                c.merge(&self.cells[p * nc + k]);
            }
            let mut g = self.group_of(&c, &self.scn.providers[p].name, end);
            // A disaggregated provider's figures cover both its pools.
            let own: Vec<&Pool<'a>> = self.pools_of(p).map(|q| &self.pools[q]).collect();
            let busy: f64 = own.iter().flat_map(|q| &q.slots).map(|s| s.busy_s).sum();
            let slots: usize = own.iter().map(|q| q.slots.len()).sum();
            let util = busy / (slots.max(1) as f64 * end);
            g.utilization = Some(util);
            g.preemptions = Some(own.iter().map(|q| q.preemptions).sum());
            g.load = Some(0.0);
            if g.throughput_tok_s > 0.0 {
                let (mut joules, mut usd) = (Some(0.0), Some(0.0));
                for (i, q) in own.iter().enumerate().filter(|(_, q)| !q.slots.is_empty()) {
                    let d = q.deployment();
                    let busy: f64 = q.slots.iter().map(|s| s.busy_s).sum();
                    let busy = busy / (q.slots.len().max(1) as f64 * end);
                    // Power scales from idle to full with the share of the pool's peak
                    // throughput in use, as `estimate` has it: a replica stepping a small
                    // batch all the time is busy, but draws little more than idle power. A
                    // prefill pool's passes are long, compute-bound ones, and its busy time
                    // stands for its load.
                    let u = if i == 0 {
                        // At the mean lengths of the requests this provider served, where
                        // it served any: the workload's mean may owe to requests refused.
                        let (isl, osl) = if g.completed > 0 {
                            let n = g.completed as f64;
                            (
                                g.prompt_tokens as f64 / n,
                                (g.output_tokens as f64 / n).max(1.0),
                            )
                        } else {
                            crate::scenario::within_context(d.model, isl, osl)
                        };
                        // The peak of the engine as the scenario configured it: one that
                        // batches fewer sequences than the physics' engine carries less
                        // (batching one, a pool queued for hours showed a load of 3%).
                        let mut pp = self.params.clone();
                        pp.max_batch = pp.max_batch.min(q.slots[0].engine.config().max_batch);
                        // A decode pool beside a prefill pool runs no prompts.
                        let peak = if own.len() > 1 {
                            d.decode_peak(&pp, isl, osl)
                        } else {
                            d.max_throughput(&pp, isl, osl, None).throughput_tok_s
                        };
                        let load = g.throughput_tok_s / peak.max(f64::MIN_POSITIVE);
                        g.load = Some(load);
                        busy.min(load)
                    } else {
                        busy
                    };
                    let e = d.economics_at(self.params, g.throughput_tok_s, u);
                    joules = joules.zip(e.joules_per_token).map(|(a, b)| a + b);
                    usd = usd.zip(e.usd_per_mtok).map(|(a, b)| a + b);
                }
                g.joules_per_token = joules;
                g.usd_per_mtok = usd;
            }
            // A price the scenario states is what the provider charges, whatever it served.
            if let Some(price) = self.scn.providers[p].usd_per_mtok {
                g.usd_per_mtok = Some(price);
            }
            // The fleet's power and spend an hour: a provider that served draws what its
            // figures per token say; one that served nothing draws idle power and, owned or
            // rented by the hour, costs its hours (priced by the token, nothing).
            let (watts, usd_h) = if g.throughput_tok_s > 0.0 {
                (
                    g.joules_per_token.map(|j| j * g.throughput_tok_s),
                    g.usd_per_mtok
                        .map(|u| u * g.throughput_tok_s * 3600.0 / 1e6),
                )
            } else {
                let (watts, usd_h) = self.idle_draw(p);
                let priced_by_token = self.scn.providers[p].usd_per_mtok.is_some();
                (watts, if priced_by_token { Some(0.0) } else { usd_h })
            };
            fleet_watts = fleet_watts.zip(watts).map(|(a, b)| a + b);
            fleet_usd_h = fleet_usd_h.zip(usd_h).map(|(a, b)| a + b);
            dist.ttft.push(c.ttft.clone());
            dist.e2e.push(c.e2e.clone());
            dist.tpot.push(c.tpot.clone());
            providers.push(g);
        }
        let mut classes = Vec::new();
        let mut fleet = Cell::default();
        for k in 0..nc {
            let mut c = self.unrouted[k].clone();
            for p in 0..np {
                c.merge(&self.cells[p * nc + k]);
            }
            fleet.merge(&c);
            dist.class_ttft.push(c.ttft.clone());
            dist.class_tpot.push(c.tpot.clone());
            classes.push(self.group_of(&c, &self.scn.classes[k].name, end));
        }
        let cells = (0..np)
            .map(|p| {
                (0..nc)
                    .map(|k| {
                        self.group_of(
                            &self.cells[p * nc + k],
                            &format!(
                                "{}/{}",
                                self.scn.providers[p].name, self.scn.classes[k].name
                            ),
                            end,
                        )
                    })
                    .collect()
            })
            .collect();
        let mut fleet_g = self.group_of(&fleet, "fleet", end);
        let busy: f64 = self
            .pools
            .iter()
            .flat_map(|p| &p.slots)
            .map(|s| s.busy_s)
            .sum();
        let slots: usize = self.pools.iter().map(|p| p.slots.len()).sum();
        fleet_g.utilization = Some(busy / (slots.max(1) as f64 * end));
        if fleet_g.throughput_tok_s > 0.0 {
            fleet_g.joules_per_token = fleet_watts.map(|w| w / fleet_g.throughput_tok_s);
            fleet_g.usd_per_mtok =
                fleet_usd_h.map(|h| h / (fleet_g.throughput_tok_s * 3600.0) * 1e6);
        }
        fleet_g.preemptions = Some(self.pools.iter().map(|p| p.preemptions).sum());
        let steps = self
            .pools
            .iter()
            .flat_map(|p| &p.slots)
            .map(|s| s.engine.counters().steps)
            .sum();
        let failures = self
            .failures
            .iter()
            .map(|(&(c, w), &n)| FailureCount {
                class: self.scn.classes[c].name.clone(),
                reason: w.to_string(),
                count: n,
            })
            .collect();
        let summary = Summary {
            scenario: self.scn.name.clone(),
            seed: self.scn.seed,
            policy: self.scn.policy.name().to_string(),
            deployments: self
                .scn
                .providers
                .iter()
                .map(|p| {
                    // The chips a replica takes, which a provider without `chips` leaves to
                    // the best layout for its workload; and the longest request its KV cache
                    // holds, past which requests fail (a pool sized for its mean lengths may
                    // hold few of its longest).
                    let pool = |n: u32, d: &Deployment<'_>, e: &EngineConfig| {
                        format!(
                            "{n} x {} {} on {} x {} ({} weights, {} KV cache; requests of up to {} tokens)",
                            d.model.id,
                            d.layout,
                            d.layout.replica_chips(),
                            d.system.id,
                            d.weights,
                            d.kv,
                            e.longest_request()
                        )
                    };
                    let own = pool(p.replicas, &p.deployment, &p.engine);
                    match &p.prefill {
                        None => format!("{}: {own}", p.name),
                        Some(pp) => format!(
                            "{}: decode {own}; prefill {}",
                            p.name,
                            pool(pp.replicas, &pp.deployment, &pp.engine)
                        ),
                    }
                })
                .collect(),
            targets: self.scn.classes.clone(),
            arrivals: self.arrivals,
            completed: fleet.completed,
            failed: fleet.failed,
            duration_s: end,
            fleet: fleet_g,
            providers,
            classes,
            cells,
            little: Little {
                arrival_rate: self.arrivals as f64 / end,
                mean_in_system: self.area / end,
                mean_time_in_system: if self.ended > 0 {
                    self.sojourn / self.ended as f64
                } else {
                    0.0
                },
            },
            failures,
            failure_windows,
            steady: self.steady.as_ref().map(|(w, cell)| {
                self.group_of(
                    cell,
                    &format!("arriving from {w:.0} s (after warm-up)"),
                    (end - w).max(1e-9),
                )
            }),
            bin_s: self.bin_s,
            bins: self.bins,
            steps,
        };
        (summary, dist)
    }
}

/// The prefix of arrival `a`'s prompt, for provider `p`'s replicas to find cached, where the
/// trace names it and the provider caches prefixes.
fn prefix_of(scn: &Scenario<'_>, p: usize, a: &Arrival) -> Option<Prefix> {
    a.trace_row
        .filter(|_| scn.providers[p].prefix_caching)
        .and_then(|i| scn.trace[i as usize].prefix.clone())
        .map(|hashes| Prefix {
            hashes,
            block_tokens: PREFIX_BLOCK_TOKENS,
        })
}
