//! The replica engine: one model replica serving requests with continuous batching.
//!
//! The engine is a state machine with no clock. Its driver calls [`Replica::start_step`],
//! which plans the next batch and returns how long that step takes, waits that long (in
//! virtual time in the simulator, on the wall clock in the gateway's emulated provider), then
//! calls [`Replica::finish_step`], which advances every sequence in the batch and reports
//! tokens and completions. Step times come only from the performance model through
//! [`StepTime`]; the engine itself holds no latency formula.
//!
//! Scheduling follows the continuous-batching engines in use today (Orca, OSDI 2022; vLLM,
//! SOSP 2023; Sarathi-Serve's chunked prefill, OSDI 2024): every step, running sequences go
//! first, each decoding one token or taking the next chunk of its prompt within a per-step
//! token budget; waiting requests are admitted in arrival order while the batch, the budget
//! and the KV cache allow, a request only when its whole prompt fits. The KV cache is paged in
//! fixed-size blocks; when a running sequence needs a block and none is free, the most
//! recently admitted sequence is preempted and later recomputed from its prompt and the
//! tokens it had produced (vLLM's recompute policy). With expert parallelism the replica's
//! groups each serve their own sequences (attention data parallelism), so the cache is one
//! pool of blocks per group: a request joins the group with the most free blocks, and a
//! sequence that needs a block takes it from its own group, preempting only there. A prompt
//! chunk that rides a decode step through a pipeline comes out of its last stage after the
//! step ([`StepTime::prompt_lag`]): its sequence sits out the steps until then, while the
//! others go on decoding.
//!
//! A request may name its prompt's prefix as a chain of block hashes ([`Prefix`], as the
//! Mooncake traces give them), and the engine caches prefixes as vLLM's automatic prefix
//! caching and SGLang's radix cache do: each block of a prompt is published under its hash
//! as its chunk is prefilled, and a prompt that begins with published blocks shares them,
//! needing room and a pass only for the rest. A block held by no running sequence stays
//! cached in the free pool until a sequence needs the room, the least recently used first
//! and a prompt's tail before its beginning.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use switchyard_perf::{Batch, Deployment, Params};

/// The source of step times. The performance model implements it through [`Physics`];
/// tests may supply their own.
pub trait StepTime {
    /// Seconds one step of `batch` takes.
    fn step_time(&self, batch: &Batch) -> f64;

    /// Seconds after the end of a step of `batch` that its prompt chunks are done (a
    /// pipeline's later stages still work on them); their sequences wait that long before
    /// their next chunk or their token. None by default.
    fn prompt_lag(&self, _batch: &Batch) -> f64 {
        0.0
    }
}

/// The performance model as a step-time source: a one-replica deployment and its parameters.
#[derive(Debug, Clone)]
pub struct Physics<'a> {
    /// One replica of the deployment (its `dp` is ignored).
    pub deployment: Deployment<'a>,
    /// The model's parameters.
    pub params: &'a Params,
}

impl StepTime for Physics<'_> {
    fn step_time(&self, batch: &Batch) -> f64 {
        self.deployment.step_time(self.params, batch)
    }

    fn prompt_lag(&self, batch: &Batch) -> f64 {
        self.deployment.prompt_lag(self.params, batch)
    }
}

/// Engine limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineConfig {
    /// Most sequences running at once, over all groups.
    pub max_batch: u32,
    /// Most tokens (prompt chunks plus one per decoding sequence) in one step.
    pub token_budget: u32,
    /// Tokens per KV-cache block.
    pub block_tokens: u32,
    /// KV-cache blocks the replica holds, over all its groups.
    pub kv_blocks: u32,
    /// Groups that each keep their own sequences' KV in an equal share of the blocks: the
    /// expert-parallel groups (0 is read as 1).
    pub groups: u32,
    /// Window of the model's local attention layers, in tokens (0: every layer is global).
    /// A block holds `block_tokens` tokens of every layer; past the window, a local layer
    /// keeps no more, so a sequence's blocks grow only by its global layers' share.
    pub window: u32,
    /// Share of a token's KV cache held by global layers (1 without local layers).
    pub global_share: f64,
    /// Longest request the model accepts, prompt plus output tokens, as a serving engine
    /// refuses a longer one ([`EngineConfig::longest_request`]).
    pub context: u32,
}

impl EngineConfig {
    /// Block size: the performance model's ([`switchyard_perf::KV_BLOCK_TOKENS`]), so that
    /// what it says fits is what the engine admits.
    pub const BLOCK_TOKENS: u32 = switchyard_perf::KV_BLOCK_TOKENS;
    /// Limits for one replica of `d`: the KV cache is what the performance model says fits
    /// after the weights; the batch limit is the engine's, whatever the pipeline depth.
    pub fn for_deployment(d: &Deployment<'_>, p: &Params) -> Self {
        let kv_tokens = d.memory(p).kv_tokens_per_replica;
        let blocks = (kv_tokens / f64::from(Self::BLOCK_TOKENS)).floor();
        // Saturating float-to-int conversion; a replica never needs more than 2^32 blocks.
        let kv_blocks = blocks.clamp(0.0, f64::from(u32::MAX)) as u32;
        let layers = f64::from(d.model.layers.max(1));
        let global = d.model.global_layers().min(layers);
        let local = global < layers;
        EngineConfig {
            max_batch: p.max_batch.max(1).saturating_mul(d.layout.ep.max(1)),
            // Each group that holds sequences of its own (an expert-parallel group, an RDU's
            // socket) prefills its own prompts: a budget each, as the model prices a chunk.
            token_budget: p.token_budget.max(1).saturating_mul(d.kv_groups()),
            block_tokens: Self::BLOCK_TOKENS,
            kv_blocks,
            groups: d.kv_groups(),
            window: if local {
                d.model.sliding_window.unwrap_or(0)
            } else {
                0
            },
            global_share: if local { global / layers } else { 1.0 },
            context: u32::try_from(d.model.max_context).unwrap_or(u32::MAX),
        }
    }

    /// Longest request the replica serves, prompt plus output tokens: what its KV cache
    /// holds ([`EngineConfig::max_context`]), within the model's context.
    pub fn longest_request(&self) -> u32 {
        self.max_context().min(self.context)
    }

    /// Longest request, prompt plus output tokens, the KV cache can hold.
    pub fn max_context(&self) -> u32 {
        let room = self.seq_blocks().saturating_mul(self.block_tokens);
        if !self.windowed() || room <= self.window {
            return room;
        }
        // Past the window only the global layers' share grows.
        let beyond = f64::from(room - self.window) / self.global_share.max(1e-9);
        (f64::from(self.window) + beyond)
            .floor()
            .min(f64::from(u32::MAX)) as u32
    }

    /// Whether some layers attend only within a window.
    fn windowed(&self) -> bool {
        self.window > 0 && self.global_share < 1.0
    }

    /// Full-context token equivalents of `tokens` tokens of context: each global layer holds
    /// all of them, each local layer at most its window (as the performance model's
    /// `Model::kv_bytes` counts them).
    fn kv_units(&self, tokens: u32) -> u32 {
        if !self.windowed() || tokens <= self.window {
            return tokens;
        }
        let g = self.global_share.clamp(0.0, 1.0);
        let units = g * f64::from(tokens) + (1.0 - g) * f64::from(self.window);
        units.ceil().min(f64::from(u32::MAX)) as u32
    }

    /// Groups, at least one.
    pub fn group_count(&self) -> u32 {
        self.groups.max(1)
    }

    /// Blocks of each group's pool; one sequence holds at most this many.
    pub fn group_blocks(&self) -> u32 {
        self.kv_blocks / self.group_count()
    }

    fn seq_blocks(&self) -> u32 {
        self.group_blocks()
    }

    /// Blocks that `tokens` tokens of context occupy.
    pub fn blocks_for(&self, tokens: u32) -> u32 {
        self.kv_units(tokens).div_ceil(self.block_tokens.max(1))
    }
}

/// A request as the engine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// The caller's handle for the request; events carry it back.
    pub id: u64,
    /// Prompt tokens.
    pub prompt: u32,
    /// Output tokens to produce (at least one).
    pub output: u32,
}

/// A prompt's prefix as a chain of block hashes: hash `k` stands for the prompt's tokens
/// `k * block_tokens` up to the next block's start (the last may be shorter), and equal
/// hashes at the same place mean equal tokens up to the end of that block, as a radix cache
/// keys them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix {
    /// The block hashes, first block first.
    pub hashes: Arc<[u64]>,
    /// Tokens each hash stands for (512 in the Mooncake traces).
    pub block_tokens: u32,
}

/// One published prefix block of a group's KV cache.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Engine blocks it holds.
    blocks: u32,
    /// Prompt tokens it holds (its hash's block, or the part of it a prompt reached).
    tokens: u32,
    /// Running sequences that share it; with none it is evictable, its blocks free.
    refs: u32,
    /// When it last became evictable, its key in [`PrefixCache::idle`].
    since: u64,
}

/// A group's published prefix blocks, by hash. Blocks shared by running sequences are in
/// use; the others sit in the group's free blocks and go, least recently released first,
/// when the free blocks no longer hold them.
#[derive(Debug, Clone, Default)]
struct PrefixCache {
    entries: HashMap<u64, Entry>,
    /// Evictable entries, least recently released first.
    idle: BTreeMap<u64, u64>,
    /// Engine blocks of the evictable entries.
    idle_blocks: u32,
    clock: u64,
}

impl PrefixCache {
    /// How many of `hashes`, from the first, are published; the prompt tokens they hold;
    /// and the blocks of those already in use, which a sequence sharing them takes no room
    /// for (the others it takes out of the free blocks).
    fn found(&self, hashes: &[u64]) -> (usize, u64, u32) {
        let (mut n, mut tokens, mut in_use) = (0, 0, 0);
        for h in hashes {
            let Some(e) = self.entries.get(h) else { break };
            n += 1;
            tokens += u64::from(e.tokens);
            if e.refs > 0 {
                in_use += e.blocks;
            }
        }
        (n, tokens, in_use)
    }

    /// A running sequence shares the published block `hash`: returns its blocks, and
    /// whether they were free (an evictable block now in use again).
    fn share(&mut self, hash: u64) -> Option<(u32, bool)> {
        let e = self.entries.get_mut(&hash)?;
        let was_idle = e.refs == 0;
        if was_idle {
            self.idle.remove(&e.since);
            self.idle_blocks -= e.blocks;
        }
        e.refs += 1;
        Some((e.blocks, was_idle))
    }

    /// Publishes `hash`, holding `tokens` prompt tokens in `blocks` blocks, shared by the one
    /// sequence that made it.
    fn publish(&mut self, hash: u64, tokens: u32, blocks: u32) {
        self.entries.insert(
            hash,
            Entry {
                blocks,
                tokens,
                refs: 1,
                since: 0,
            },
        );
    }

    /// A running sequence no longer shares the blocks of `hashes`: returns the blocks that
    /// became free. The tail goes first, so that it is the first to go: a prefix cut short
    /// still serves its beginning (vLLM frees a sequence's blocks so too).
    fn release_all(&mut self, hashes: &[u64]) -> u32 {
        hashes.iter().rev().map(|&h| self.release(h)).sum()
    }

    /// A running sequence no longer shares `hash`: returns the blocks that became free.
    fn release(&mut self, hash: u64) -> u32 {
        let Some(e) = self.entries.get_mut(&hash) else {
            return 0;
        };
        e.refs = e.refs.saturating_sub(1);
        if e.refs > 0 {
            return 0;
        }
        self.clock += 1;
        e.since = self.clock;
        self.idle.insert(self.clock, hash);
        self.idle_blocks += e.blocks;
        e.blocks
    }

    /// Drops evictable entries, least recently released first, until they hold at most
    /// `room` blocks.
    fn trim(&mut self, room: u32) {
        while self.idle_blocks > room {
            let Some((_, h)) = self.idle.pop_first() else {
                break;
            };
            if let Some(e) = self.entries.remove(&h) {
                self.idle_blocks -= e.blocks;
            }
        }
    }
}

/// What happened to a request during a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The request entered a batch for the first time (its queueing ends).
    Scheduled(u64),
    /// The first output token is out.
    FirstToken(u64),
    /// A later output token is out.
    Token(u64),
    /// The last token is out; the request left the engine.
    Finished(u64),
    /// The request lost its KV cache to make room and went back to the queue.
    Preempted(u64),
    /// A request that names its prefix was admitted sharing this many tokens of its prompt
    /// already published (see [`Replica::submit_prefixed`]), which it does not prefill.
    Cached(u64, u32),
}

/// Why the engine refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Prompt plus output needs more KV blocks than one group of the replica has.
    TooLong {
        /// Blocks the request would need.
        needed: u32,
        /// Blocks one sequence may hold (the whole cache, or one expert-parallel group's share).
        capacity: u32,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::TooLong { needed, capacity } => write!(
                f,
                "the request needs {needed} KV blocks and one sequence may hold {capacity}"
            ),
        }
    }
}

/// One sequence in the engine.
#[derive(Debug, Clone, Copy)]
struct Seq {
    id: u64,
    prompt: u32,
    output: u32,
    /// Tokens to prefill before decoding: the prompt, plus produced tokens after preemption.
    target: u32,
    /// Tokens whose KV is in the cache.
    kv: u32,
    /// Output tokens produced so far.
    generated: u32,
    /// KV blocks held.
    blocks: u32,
    /// The group whose pool holds its blocks (set at admission).
    group: usize,
    /// Tokens this sequence processes in the current step (0: not in the step).
    chunk: u32,
    /// Seconds still to wait for its last prompt chunk to leave a pipeline (see
    /// [`StepTime::prompt_lag`]), out of the steps; it joins none meanwhile, and where that
    /// chunk ended its (re)fill its token comes out when the wait ends.
    hold: f64,
    scheduled: bool,
    /// Leading hashes of its prefix whose published blocks it shares.
    held: u32,
    /// Blocks of those (not among `blocks`, which are its own).
    shared: u32,
}

impl Seq {
    fn decoding(&self) -> bool {
        self.kv >= self.target
    }
}

/// Counters since the engine was made.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    /// Steps run.
    pub steps: u64,
    /// Seconds spent in steps.
    pub busy_s: f64,
    /// Preemptions.
    pub preemptions: u64,
    /// Output tokens produced.
    pub tokens_out: u64,
    /// Prompt tokens prefilled, including recomputation.
    pub tokens_prefilled: u64,
    /// Prompt tokens found in the prefix cache at admission, not prefilled.
    pub tokens_cached: u64,
}

/// One replica: a queue, a running batch and a paged KV cache.
#[derive(Debug, Clone)]
pub struct Replica<S> {
    physics: S,
    config: EngineConfig,
    waiting: VecDeque<Seq>,
    running: Vec<Seq>,
    /// Free blocks of each group's pool.
    free_blocks: Vec<u32>,
    /// Each group's cache of prompts' prefixes, held in its free blocks.
    caches: Vec<PrefixCache>,
    /// The prefix of each request in the engine that named one.
    prefixes: HashMap<u64, Prefix>,
    /// Tokens the waiting requests have still to put in the KV cache.
    queued_tokens: u64,
    in_step: bool,
    step_s: f64,
    /// Seconds past the step under way that its prompt chunks are done.
    step_lag: f64,
    counters: Counters,
}

impl<S: StepTime> Replica<S> {
    /// An idle replica.
    pub fn new(physics: S, config: EngineConfig) -> Self {
        Replica {
            physics,
            config,
            waiting: VecDeque::new(),
            running: Vec::new(),
            free_blocks: vec![config.group_blocks(); config.group_count() as usize],
            caches: vec![PrefixCache::default(); config.group_count() as usize],
            prefixes: HashMap::new(),
            queued_tokens: 0,
            in_step: false,
            step_s: 0.0,
            step_lag: 0.0,
            counters: Counters::default(),
        }
    }

    /// The engine limits.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The step-time source.
    pub fn physics(&self) -> &S {
        &self.physics
    }

    /// Queues a request; it joins the next step that has room.
    ///
    /// # Errors
    /// [`Refusal::TooLong`] when the request could never fit in the KV cache.
    pub fn submit(&mut self, r: Request) -> Result<(), Refusal> {
        let needed = self
            .config
            .blocks_for(r.prompt.max(1).saturating_add(r.output.max(1)));
        if needed > self.config.seq_blocks() {
            return Err(Refusal::TooLong {
                needed,
                capacity: self.config.seq_blocks(),
            });
        }
        let prompt = r.prompt.max(1);
        self.queued_tokens += u64::from(prompt);
        self.waiting.push_back(Seq {
            id: r.id,
            prompt,
            output: r.output.max(1),
            target: prompt,
            kv: 0,
            generated: 0,
            blocks: 0,
            group: 0,
            chunk: 0,
            hold: 0.0,
            scheduled: false,
            held: 0,
            shared: 0,
        });
        Ok(())
    }

    /// Queues a request whose prompt begins with `prefix`: at admission it shares the
    /// blocks of it that are published, which it does not prefill (the last prompt token it
    /// always does, for its logits), and once its prompt is prefilled it publishes the rest.
    ///
    /// # Errors
    /// [`Refusal::TooLong`] when the request could never fit in the KV cache.
    pub fn submit_prefixed(&mut self, r: Request, prefix: Prefix) -> Result<(), Refusal> {
        self.submit(r)?;
        if !prefix.hashes.is_empty() && prefix.block_tokens > 0 {
            self.prefixes.insert(r.id, prefix);
        }
        Ok(())
    }

    /// Queues a request whose prompt was prefilled elsewhere and whose first output token is
    /// out (disaggregated serving): its KV cache arrives with it, so it takes the prompt's
    /// blocks at admission and decodes from its first step, producing the request's second
    /// token onwards (a request of one output token is done where it was prefilled and is
    /// not sent here). If it is later preempted, it is recomputed here like any other.
    ///
    /// # Errors
    /// [`Refusal::TooLong`] when the request could never fit in the KV cache.
    pub fn submit_prefilled(&mut self, r: Request) -> Result<(), Refusal> {
        self.submit_prefilled_prefixed(r, None)
    }

    /// [`Replica::submit_prefilled`] for a request whose prompt begins with `prefix`: at
    /// admission it shares the blocks of it already published here, holding no copy of its
    /// own for them, and publishes the rest of its cache, as a prefilled sequence holds it
    /// whole (its prompt's pass was elsewhere, so nothing is counted as found cached).
    ///
    /// # Errors
    /// [`Refusal::TooLong`] when the request could never fit in the KV cache.
    pub fn submit_prefilled_prefixed(
        &mut self,
        r: Request,
        prefix: Option<Prefix>,
    ) -> Result<(), Refusal> {
        match prefix {
            Some(p) => self.submit_prefixed(r, p)?,
            None => self.submit(r)?,
        }
        if let Some(s) = self.waiting.back_mut() {
            self.queued_tokens -= u64::from(s.target);
            s.kv = s.target;
            s.generated = 1;
            // Its queueing was counted where it was prefilled.
            s.scheduled = true;
        }
        Ok(())
    }

    /// Whether a step is under way (between `start_step` and `finish_step`).
    pub fn in_step(&self) -> bool {
        self.in_step
    }

    /// Requests waiting for a first step or re-admission.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Requests in the running batch.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Requests in the engine, waiting or running.
    pub fn outstanding(&self) -> usize {
        self.waiting.len() + self.running.len()
    }

    /// KV blocks in use.
    pub fn used_blocks(&self) -> u32 {
        let pools = self.config.group_blocks() * self.config.group_count();
        pools - self.free_blocks.iter().sum::<u32>()
    }

    /// Tokens the engine holds or has yet to take in: the KV cache in use (in whole blocks)
    /// and what the waiting requests have still to prefill. A balancer weighs a replica's
    /// load by it against the prompt tokens a request would prefill there.
    pub fn backlog_tokens(&self) -> u64 {
        u64::from(self.used_blocks()) * u64::from(self.config.block_tokens) + self.queued_tokens
    }

    /// Tokens of a `prompt`-token prompt that begins with `prefix` this replica has published
    /// (in whichever group holds most), as admission would find them were the request
    /// admitted at once: the last prompt token is never among them.
    pub fn cached_tokens(&self, prefix: &Prefix, prompt: u32) -> u32 {
        let tokens = self
            .caches
            .iter()
            .map(|c| c.found(&prefix.hashes).1)
            .max()
            .unwrap_or(0);
        tokens.min(u64::from(prompt.saturating_sub(1))) as u32
    }

    /// Tokens the replica has to get through before it is done with a prompt of `prompt`
    /// tokens that begins with `prefix`: its backlog ([`Replica::backlog_tokens`]) and what
    /// it would prefill of the prompt, all but what its prefix cache holds. A balancer that
    /// sends each prompt where this is least weighs a replica's cached prefix against its
    /// load, as KV-cache-aware balancers do (NVIDIA Dynamo's KV router, llm-d's prefix-cache
    /// scorer): sent to the least loaded, a conversation's next turn finds its earlier turns
    /// only on the replica that served them.
    pub fn tokens_before_done(&self, prefix: &Prefix, prompt: u32) -> u64 {
        let own = prompt.max(1) - self.cached_tokens(prefix, prompt.max(1));
        u64::from(own) + self.backlog_tokens()
    }

    /// What a balancer sends a prompt of `prompt` tokens beginning with `prefix` to the
    /// replica with the least of: [`Replica::tokens_before_done`], the fewer requests
    /// among equals. The simulator's pools and the emulated provider's choose by it alike.
    pub fn balance_key(&self, prefix: &Prefix, prompt: u32) -> (u64, usize) {
        (self.tokens_before_done(prefix, prompt), self.outstanding())
    }

    /// Counters since the engine was made.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Plans the next step and returns its duration in seconds, or `None` when there is
    /// nothing to do. Preemptions decided while planning are reported to `sink` at once.
    /// Calling it again before [`Replica::finish_step`] returns `None`.
    pub fn start_step(&mut self, sink: &mut impl FnMut(Event)) -> Option<f64> {
        if self.in_step {
            return None;
        }
        // Each group schedules its own sequences within its share of the step's tokens, as
        // each expert-parallel rank's scheduler does: one group's long prompt does not take
        // the others' budget.
        let groups = self.free_blocks.len().max(1);
        let share = (self.config.token_budget / groups as u32).max(1);
        let mut budgets = vec![share; groups];
        let mut preempted = false;
        let mut i = 0;
        while i < self.running.len() {
            let s = self.running[i];
            if s.hold > 0.0 {
                i += 1;
                continue;
            }
            let budget = budgets[s.group];
            let want = if s.decoding() {
                1
            } else {
                (s.target - s.kv).min(budget)
            };
            if want == 0 || want > budget {
                i += 1;
                continue;
            }
            let need = self
                .config
                .blocks_for(s.kv + want)
                .saturating_sub(s.blocks + s.shared);
            let g = s.group;
            // Free blocks of its group by preempting that group's latest admitted sequences
            // until this sequence's next tokens fit, preempting itself if it is the last.
            let mut gone = false;
            while need > self.free_blocks[g] {
                let Some(j) = self.running.iter().rposition(|v| v.group == g) else {
                    break;
                };
                let victim = self.running.remove(j);
                preempted = true;
                self.requeue(victim, sink);
                if j == i {
                    gone = true;
                    break;
                }
            }
            if gone {
                // The next sequence has moved into place `i`.
                continue;
            }
            let s = &mut self.running[i];
            s.blocks += need;
            self.free_blocks[g] -= need;
            s.chunk = want;
            budgets[g] -= want;
            i += 1;
        }
        // The blocks the running sequences took are no longer free to hold cached prefixes.
        for (cache, &free) in self.caches.iter_mut().zip(&self.free_blocks) {
            cache.trim(free);
        }
        let per_group = (self.config.max_batch as usize).div_ceil(groups);
        // Sequences running in each group (one group: the batch limit above is its own).
        let mut in_group = (groups > 1).then(|| {
            let mut n = vec![0usize; groups];
            for s in &self.running {
                n[s.group] += 1;
            }
            n
        });
        // Admit waiting requests in order, unless this step had to preempt: admitting
        // would only take the blocks back from the sequences that just lost theirs.
        // An empty batch admits regardless, or the engine would stall with work queued.
        while (!preempted || self.running.is_empty())
            && budgets.iter().any(|&b| b > 0)
            && self.running.len() < self.config.max_batch as usize
        {
            let Some(front) = self.waiting.front() else {
                break;
            };
            let want_in = |budget: u32| {
                if front.decoding() {
                    1
                } else {
                    front.target.min(budget)
                }
            };
            // The whole prompt's blocks are taken at admission (as vLLM's block manager
            // does), so a long prompt admitted in chunks cannot be starved of the blocks for
            // its later chunks by requests admitted after it. A request that arrives prefilled
            // also takes the block its first decode writes into.
            let need_of = |want: u32| {
                self.config
                    .blocks_for(front.kv + want)
                    .max(self.config.blocks_for(front.target))
            };
            // What it would share of its prompt already in use in each group takes no room.
            let in_use = |g: usize| match self.prefixes.get(&front.id) {
                Some(p) => self.caches[g].found(&p.hashes).2,
                None => 0,
            };
            // The most a group's budget could make it need.
            let need = need_of(want_in(share));
            // The group with the most free blocks, the first of equals, among those with room
            // in their own batch and tokens left in their own budget (each group is an engine
            // with an equal share of the limits).
            let Some((g, _)) = self
                .free_blocks
                .iter()
                .enumerate()
                .filter(|(g, f)| {
                    **f >= need.saturating_sub(in_use(*g))
                        && budgets[*g] > 0
                        && in_group.as_ref().is_none_or(|n| n[*g] < per_group)
                })
                .max_by_key(|(g, f)| (**f, std::cmp::Reverse(*g)))
            else {
                break;
            };
            let need = need_of(want_in(budgets[g]));
            let Some(mut s) = self.waiting.pop_front() else {
                break;
            };
            self.queued_tokens -= u64::from(s.target - s.kv);
            // It shares what is published of its prompt, without blocks of its own for it
            // (blocks that sat free are in use again), and, unless its cache arrived with it
            // (disaggregated serving), without a pass.
            if !self.prefixes.is_empty() {
                if let Some(p) = self.prefixes.get(&s.id) {
                    let cache = &mut self.caches[g];
                    let (n, tokens, _) = cache.found(&p.hashes);
                    for &h in &p.hashes[..n] {
                        if let Some((b, was_free)) = cache.share(h) {
                            s.shared += b;
                            if was_free {
                                self.free_blocks[g] -= b;
                            }
                        }
                    }
                    s.held = n as u32;
                    if !s.decoding() {
                        let found = tokens.min(u64::from(s.prompt - 1)) as u32;
                        s.kv = found;
                        self.counters.tokens_cached += u64::from(found);
                        sink(Event::Cached(s.id, found));
                    }
                }
            }
            let need = need.saturating_sub(s.shared);
            let want = if s.decoding() {
                1
            } else {
                (s.target - s.kv).min(budgets[g])
            };
            if let Some(n) = in_group.as_mut() {
                n[g] += 1;
            }
            s.blocks = need;
            s.group = g;
            s.chunk = want;
            self.free_blocks[g] -= need;
            self.caches[g].trim(self.free_blocks[g]);
            // A cache that arrived whole is published at once.
            if s.decoding() && !self.prefixes.is_empty() {
                if let Some(p) = self.prefixes.get(&s.id) {
                    let (taken, given) = publish(&mut self.caches[g], &self.config, p, &mut s);
                    self.free_blocks[g] = self.free_blocks[g] + given - taken;
                }
            }
            budgets[g] -= want;
            if !s.scheduled {
                s.scheduled = true;
                sink(Event::Scheduled(s.id));
            }
            self.running.push(s);
        }
        let mut batch = Batch::default();
        let (mut decode_ctx, mut prefill_pos) = (0.0, 0.0);
        for s in self.running.iter().filter(|s| s.chunk > 0) {
            if s.decoding() {
                batch.decode_seqs += 1;
                decode_ctx += f64::from(s.kv);
            } else {
                batch.prefill_tokens += s.chunk;
                batch.prefill_seqs += 1;
                batch.prefill_longest = batch.prefill_longest.max(s.chunk);
                prefill_pos += f64::from(s.chunk) * (f64::from(s.kv) + f64::from(s.chunk) / 2.0);
            }
        }
        if batch.decode_seqs == 0 && batch.prefill_tokens == 0 {
            // Only chunks still in a pipeline: the replica waits for the first to come out.
            let wait = self
                .running
                .iter()
                .map(|s| s.hold)
                .filter(|&h| h > 0.0)
                .min_by(f64::total_cmp)?;
            self.in_step = true;
            self.step_s = wait;
            self.step_lag = 0.0;
            return Some(wait);
        }
        if batch.decode_seqs > 0 {
            batch.decode_ctx = decode_ctx / f64::from(batch.decode_seqs);
        }
        if batch.prefill_tokens > 0 {
            batch.prefill_ctx = prefill_pos / f64::from(batch.prefill_tokens);
        }
        let t = self.physics.step_time(&batch).max(0.0);
        self.step_lag = self.physics.prompt_lag(&batch).max(0.0);
        self.in_step = true;
        self.step_s = t;
        Some(t)
    }

    /// Ends the step begun by [`Replica::start_step`]: every sequence in it advances, and
    /// tokens and completions go to `sink` in batch order. Does nothing if no step is under
    /// way.
    pub fn finish_step(&mut self, sink: &mut impl FnMut(Event)) {
        if !self.in_step {
            return;
        }
        self.in_step = false;
        self.counters.steps += 1;
        self.counters.busy_s += self.step_s;
        let groups = self.free_blocks.len();
        let mut freed = vec![0; groups];
        // Blocks that sat free and are shared again, and own blocks a sequence gave up for
        // the same blocks already published, by group.
        let (mut taken, mut given) = (vec![0; groups], vec![0; groups]);
        // Requests that ended sharing published blocks (none, without a prefix in the engine).
        let mut ended = Vec::new();
        let caching = !self.prefixes.is_empty();
        let counters = &mut self.counters;
        let (step_s, lag) = (self.step_s, self.step_lag);
        let (caches, prefixes, config) = (&mut self.caches, &self.prefixes, &self.config);
        // A token for `s`; whether it stays in the engine.
        let mut produce = |s: &mut Seq| {
            s.generated += 1;
            counters.tokens_out += 1;
            if s.generated == 1 {
                sink(Event::FirstToken(s.id));
            } else {
                sink(Event::Token(s.id));
            }
            if s.generated >= s.output {
                sink(Event::Finished(s.id));
                freed[s.group] += s.blocks;
                if caching {
                    ended.push((s.id, s.group, s.held));
                }
                return false;
            }
            true
        };
        let mut prefilled = 0;
        self.running.retain_mut(|s| {
            if s.chunk == 0 {
                if s.hold > 0.0 {
                    // A step's time is never exact in floating point: a wait of the
                    // remaining hold ends it.
                    s.hold -= step_s;
                    if s.hold <= 1e-9 * step_s.max(1e-9) {
                        s.hold = 0.0;
                        if s.decoding() {
                            return produce(s);
                        }
                    }
                }
                return true;
            }
            let chunk = std::mem::take(&mut s.chunk);
            let was_decoding = s.decoding();
            s.kv += chunk;
            if !was_decoding {
                prefilled += u64::from(chunk);
                // Each block of the prompt is published as soon as it is computed.
                if caching {
                    if let Some(p) = prefixes.get(&s.id) {
                        let g = s.group;
                        let (t, gv) = publish(&mut caches[g], config, p, s);
                        taken[g] += t;
                        given[g] += gv;
                    }
                }
                if lag > 0.0 {
                    s.hold = lag;
                    return true;
                }
                if s.kv < s.target {
                    return true;
                }
            }
            // A decode step, or the step that completes a (re)fill, produces one token.
            produce(s)
        });
        self.counters.tokens_prefilled += prefilled;
        for (g, f) in self.free_blocks.iter_mut().enumerate() {
            // What was taken sat among the free blocks, so this stays whole.
            *f = *f + freed[g] + given[g] - taken[g];
        }
        // An ended request's shared blocks are free, and stay cached until needed.
        for (id, g, held) in ended {
            if let Some(p) = self.prefixes.remove(&id) {
                self.free_blocks[g] += self.caches[g].release_all(&p.hashes[..held as usize]);
            }
        }
        for (cache, &free) in self.caches.iter_mut().zip(&self.free_blocks) {
            cache.trim(free);
        }
    }

    /// Takes every request out of the engine, as when the replica fails, and returns their
    /// ids: running first, then waiting. The step under way, if any, is abandoned.
    pub fn drain(&mut self) -> Vec<u64> {
        let ids = self
            .running
            .drain(..)
            .chain(self.waiting.drain(..))
            .map(|s| s.id)
            .collect();
        self.free_blocks = vec![self.config.group_blocks(); self.config.group_count() as usize];
        // A failed replica's memory is lost with it.
        self.caches = vec![PrefixCache::default(); self.config.group_count() as usize];
        self.prefixes.clear();
        self.queued_tokens = 0;
        self.in_step = false;
        ids
    }

    /// Removes one request (its client went away). Returns whether it was here.
    pub fn cancel(&mut self, id: u64) -> bool {
        if let Some(i) = self.running.iter().position(|s| s.id == id) {
            let mut s = self.running.remove(i);
            self.free_blocks[s.group] += s.blocks;
            // What it published stays cached.
            self.unshare(&mut s);
            self.prefixes.remove(&id);
            return true;
        }
        self.prefixes.remove(&id);
        if let Some(i) = self.waiting.iter().position(|s| s.id == id) {
            if let Some(s) = self.waiting.remove(i) {
                self.queued_tokens -= u64::from(s.target - s.kv);
            }
            return true;
        }
        false
    }

    /// `s` no longer shares the published blocks it did: those it was the last to share are
    /// free, and stay cached until needed.
    fn unshare(&mut self, s: &mut Seq) {
        if let Some(p) = self.prefixes.get(&s.id) {
            let g = s.group;
            self.free_blocks[g] += self.caches[g].release_all(&p.hashes[..s.held as usize]);
            self.caches[g].trim(self.free_blocks[g]);
        }
        s.held = 0;
        s.shared = 0;
    }

    fn requeue(&mut self, mut s: Seq, sink: &mut impl FnMut(Event)) {
        self.free_blocks[s.group] += s.blocks;
        self.unshare(&mut s);
        self.counters.preemptions += 1;
        s.blocks = 0;
        s.chunk = 0;
        s.hold = 0.0;
        s.kv = 0;
        // Recompute the prompt and every token produced so far; the pass that finishes
        // produces the next token.
        s.target = s.prompt + s.generated;
        sink(Event::Preempted(s.id));
        self.queued_tokens += u64::from(s.target);
        self.waiting.push_front(s);
    }
}

/// Publishes the blocks of `s`'s prompt past those it shares that its cache now holds whole
/// (or to the prompt's end): each goes into `cache` under its hash, shared by `s` and no
/// longer its own; where the same block was published meanwhile (another sequence with the
/// same prefix), `s` shares that one and gives up its own copy. Returns the blocks that sat
/// free and are shared again, and the blocks `s` gave up.
fn publish(cache: &mut PrefixCache, config: &EngineConfig, p: &Prefix, s: &mut Seq) -> (u32, u32) {
    let (mut taken, mut given) = (0, 0);
    let bt = u64::from(p.block_tokens);
    let (prompt, kv) = (u64::from(s.prompt), u64::from(s.kv));
    for &h in &p.hashes[s.held as usize..] {
        let start = u64::from(s.held) * bt;
        let end = (start + bt).min(prompt);
        if start >= prompt || end > kv {
            break;
        }
        let (start, end) = (start as u32, end as u32);
        let own = config
            .blocks_for(end)
            .saturating_sub(config.blocks_for(start))
            .min(s.blocks);
        s.blocks -= own;
        match cache.share(h) {
            Some((b, was_free)) => {
                given += own;
                if was_free {
                    taken += b;
                }
                s.shared += b;
            }
            None => {
                cache.publish(h, end - start, own);
                s.shared += own;
            }
        }
        s.held += 1;
    }
    (taken, given)
}
