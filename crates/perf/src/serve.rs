//! From step times to serving figures: time to first token, per-user speed and throughput
//! at a concurrency under continuous batching, the best throughput under a latency limit,
//! and energy and cost per token.

use crate::{Bound, Deployment, Params, Prompts, Speculative, StepPart};
use serde::Serialize;

/// The deployment serving a steady load of `concurrency` requests in flight, each with
/// `isl` prompt tokens and `osl` output tokens, in a closed loop or arriving at random
/// ([`Arrivals`]); by Little's law, the request rate times a request's life.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Operating {
    /// Requests in flight across the whole deployment, those waiting included.
    pub concurrency: f64,
    /// Of those, the requests holding a place in a replica's batch; the rest wait for one.
    pub running: f64,
    /// Time to first token in seconds.
    pub ttft_s: f64,
    /// Time per output token in seconds, including the decode steps slowed by other
    /// requests' prefill chunks.
    pub tpot_s: f64,
    /// Output tokens per second seen by one user.
    pub user_tok_s: f64,
    /// Output tokens per second of the whole deployment.
    pub throughput_tok_s: f64,
    /// What bounds the decode step.
    pub bound: Bound,
}

/// What a pool's tokens cost ([`Deployment::pool_prices`]), in USD per million.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PoolPrices {
    /// Of an output token with its share of the prompts' work: the pool's cost over its
    /// output at the peak.
    pub usd_per_mtok: f64,
    /// Of a prompt token: the prompts' share of the pool's cost (their passes' share of a
    /// replica's time, or the prefill pool's cost) over the prompt tokens.
    pub input_usd_per_mtok: f64,
    /// Of an output token alone, the rest of the cost: with the prompt tokens at
    /// `input_usd_per_mtok`, a request of the lengths priced costs what `usd_per_mtok`
    /// charges its output.
    pub output_usd_per_mtok: f64,
}

/// Mean wait in an M/D/1 queue, in seconds, for a server busy a share `rho` of its time
/// with each job taking `service_s`: rho/(2(1-rho)) services (Pollaczek-Khinchine with zero
/// service variance; Kleinrock, Queueing Systems vol. 1, 1975, eq. 5.73).
pub(crate) fn md1_wait(service_s: f64, rho: f64) -> f64 {
    service_s * rho / (2.0 * (1.0 - rho))
}

/// Mean wait in an M/D/c queue, in seconds: `servers` alike, each busy a share `rho` of its
/// time, jobs of `service_s` going to whichever is free (a pool of prefill replicas behind a
/// least-loaded router). Half the M/M/c wait, Erlang's C(c, c·rho)·service/(c(1−rho)): the
/// (1 + Cs²)/2 scaling of the M/M/c wait to service of coefficient of variation Cs, here 0
/// (Cosmetatos 1976; Tijms, A First Course in Stochastic Models, 2003, eq. 5.4.5). With one
/// server it is [`md1_wait`] exactly.
pub(crate) fn mdc_wait(service_s: f64, rho: f64, servers: u32) -> f64 {
    let c = f64::from(servers.max(1));
    let a = c * rho;
    // Erlang's B by its recursion, then C from B.
    let mut b = 1.0;
    for k in 1..=servers.max(1) {
        b = a * b / (f64::from(k) + a * b);
    }
    let erlang_c = c * b / (c - a * (1.0 - b));
    0.5 * erlang_c * service_s / (c * (1.0 - rho))
}

/// The busiest the servers of an M/D/c queue may be for its mean wait to stay within `slack`
/// services: the inverse of [`mdc_wait`] in `rho`, by bisection (the wait grows with
/// `rho`); with one server, 2·slack/(1 + 2·slack).
pub(crate) fn mdc_max_busy(slack: f64, servers: u32) -> f64 {
    let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if mdc_wait(1.0, mid, servers) <= slack {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

impl Operating {
    /// Whether the time per output token and the time to first token are within their limits
    /// (none: no limit).
    pub fn within(&self, tpot_limit: Option<f64>, ttft_limit: Option<f64>) -> bool {
        tpot_limit.is_none_or(|l| self.tpot_s <= l) && ttft_limit.is_none_or(|l| self.ttft_s <= l)
    }
}

/// How the requests of an operating point arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrivals {
    /// A closed loop: each request leaves its place to the next (a benchmark tool's
    /// concurrency, a batch job, MLPerf's offline scenario).
    Closed,
    /// At random, a Poisson stream (users; MLPerf's server scenario): prompts bunch up and
    /// wait for one another.
    Random,
}

impl Arrivals {
    /// Under a limit on the time to first token the load is a stream of users, whom the
    /// limit promises a first token; without one, a closed loop.
    pub fn under(ttft_limit: Option<f64>) -> Self {
        if ttft_limit.is_some() {
            Arrivals::Random
        } else {
            Arrivals::Closed
        }
    }
}

/// The work of one engine step of one replica under continuous batching: every running
/// sequence past its prompt decodes one token, and prompt chunks ride along.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Batch {
    /// Sequences decoding one token each.
    pub decode_seqs: u32,
    /// Mean context length of the decoding sequences, in tokens.
    pub decode_ctx: f64,
    /// Prompt tokens prefilled in this step, over all sequences.
    pub prefill_tokens: u32,
    /// Mean context position of those prompt tokens.
    pub prefill_ctx: f64,
    /// Prompts those tokens come from (0 is read as 1).
    pub prefill_seqs: u32,
    /// Tokens of the largest prompt chunk (0 is read as all of them).
    pub prefill_longest: u32,
}

impl Deployment<'_> {
    /// Time of one engine step of one replica, composed from the two primitives: a step with
    /// only prompt tokens is a prefill of those prompts; a step that decodes also carries its
    /// prompt chunks at the chunked-prefill cost per token, as in
    /// [`Deployment::at_concurrency`].
    pub fn step_time(&self, p: &Params, b: &Batch) -> f64 {
        match (b.decode_seqs, b.prefill_tokens) {
            (0, 0) => 0.0,
            (0, n) => {
                let ctx = if b.prefill_ctx > 0.0 {
                    b.prefill_ctx
                } else {
                    f64::from(n) / 2.0
                };
                let longest = match b.prefill_longest {
                    0 => n,
                    l => l.min(n),
                };
                self.prefill_prompts(
                    p,
                    &Prompts {
                        tokens: f64::from(n),
                        ctx,
                        count: b.prefill_seqs.max(1),
                        longest: f64::from(longest),
                    },
                )
            }
            (s, n) => {
                // Each prompt's chunk is whole in one expert-parallel group: the busiest
                // group runs an even share of the chunks' tokens or the longest chunk.
                let tokens = f64::from(n);
                let longest = match b.prefill_longest {
                    0 => tokens,
                    l => f64::from(l.min(n)),
                };
                let seqs = f64::from(b.prefill_seqs.clamp(1, self.layout.ep.max(1)));
                let busiest = (tokens / seqs).max(longest).min(tokens);
                let prompts = if n == 0 {
                    0.0
                } else {
                    tokens * self.prefill_token_cost_in(p, 2.0 * b.prefill_ctx, tokens / busiest)
                };
                self.decode_step(p, f64::from(s), b.decode_ctx).time
                    + prompts
                    + self.chunk_experts(p, f64::from(s), f64::from(n))
            }
        }
    }

    /// Seconds after the end of step `b` (one that decodes) that the prompt chunks riding it
    /// come out of a GPU pipeline's last stage.
    ///
    /// The step charges every sequence the chunks' share of the replica's work
    /// ([`Deployment::prefill_token_cost`], all the stages working at once), which is what
    /// they take from the others. The chunks themselves pass the `pp` stages together, one
    /// stage after another, each stage holding a share of the layers on its own `tp` chips,
    /// as prompts alone do ([`Deployment::prefill_prompts`]): they come out `pp − 1` shares
    /// later, and each one's next chunk or first token waits for them. A wafer streams a
    /// prompt's tokens through its stages and an LPU's or RDU's prompt is timed as it passes
    /// them, so neither lags.
    pub fn prompt_lag(&self, p: &Params, b: &Batch) -> f64 {
        if b.decode_seqs == 0 {
            return 0.0;
        }
        self.chunk_lag(p, f64::from(b.prefill_tokens), 2.0 * b.prefill_ctx)
    }

    /// The lag of [`Deployment::prompt_lag`] for `tokens` prompt tokens of prompts of `isl`
    /// tokens riding decode steps: none but on a GPU pipeline.
    fn chunk_lag(&self, p: &Params, tokens: f64, isl: f64) -> f64 {
        if tokens <= 0.0 || self.system.kind != crate::SystemKind::Gpu {
            return 0.0;
        }
        let stages = f64::from(self.layout.pp.max(1)) - 1.0;
        stages * tokens * self.prefill_token_cost(p, isl)
    }

    /// Steady state at `concurrency` requests in flight (spread evenly over the replicas;
    /// with fewer requests than replicas, the others stand idle).
    ///
    /// Continuous batching with chunked prefill: every step decodes one token for each of
    /// the `c` requests of a replica, and each request needs `isl` prompt tokens of prefill
    /// per `osl` output tokens, so a step also carries c·isl/osl prompt tokens from the
    /// others (Agrawal et al., Sarathi-Serve, <https://arxiv.org/abs/2403.02310>).
    ///
    /// A replica runs at most the requests its KV cache holds and its engine batches
    /// ([`Deployment::max_sequences`], [`Deployment::batch_limit`]); the rest of a closed
    /// loop wait for a place, which adds to their time to first token: by Little's law, with
    /// `r` running and `c` in the loop, `(c − r)` waits of `osl · t / r` each, `t` being the
    /// replica's time per token it yields.
    pub fn at_concurrency(&self, p: &Params, concurrency: f64, isl: f64, osl: f64) -> Operating {
        self.operating(p, concurrency, isl, osl, Arrivals::Closed)
    }

    /// As [`Self::at_concurrency`], the requests arriving as `arrivals` say.
    ///
    /// Arriving at random (a Poisson stream at the operating point's rate), a prompt also
    /// waits for the prompts that came just before it, which a closed loop spaces out: with
    /// the replica spending a share rho of its time on prompts, the mean wait of an M/D/1
    /// queue is rho/(2(1−rho)) of a prompt's own work (Pollaczek-Khinchine; Kleinrock,
    /// Queueing Systems vol. 1, eq. 5.73). The requests in flight are then more than those
    /// running, by the rate times that wait (Little's law).
    pub fn operating(
        &self,
        p: &Params,
        concurrency: f64,
        isl: f64,
        osl: f64,
        arrivals: Arrivals,
    ) -> Operating {
        // Speculation yields tokens after the first, which the prompt's pass makes, and never
        // more a step than there are left: with outputs of a token or two it only drafts.
        if let Some(s) = self.speculative {
            let most = osl.max(1.0) - 1.0;
            if s.tokens_per_step > most.max(1.0) {
                let capped = (most > 1.0).then_some(Speculative {
                    tokens_per_step: most,
                    ..s
                });
                return self.clone().with_speculative(capped).operating(
                    p,
                    concurrency,
                    isl,
                    osl,
                    arrivals,
                );
            }
        }
        let asked = self.asked_per_replica(concurrency);
        // Replicas with a request: every one, or as many as there are requests.
        let busy = concurrency / asked;
        let osl = osl.max(1.0);
        let c = self.running_per_replica(p, concurrency, isl, osl);
        let step = self.decode_step(p, c, self.decode_ctx(isl, osl));
        let others = (c - 1.0).max(0.0);
        // A prompt's work spread over its request's steps: its chunks' cost, and the experts
        // they reach beyond the decoding tokens' (a mixture of experts on GPUs), which each
        // chunk's step streams whole, not spread.
        let own_prompt = self.own_prompt(p, c, isl, osl) + self.prompt_experts(p, c, isl) / osl;
        let prompt_share = others * own_prompt;
        let tpot = step.time + prompt_share;
        // A running request's first token comes a step and its own prompt's chunks
        // ([`Self::own_chunks`], its whole prompt) after it finds a place: the step it rides
        // carries the others' chunks already. Never sooner than its pass alone; and a
        // speculative step (drafting and verifying), of which `tpot` is a token's share,
        // yields the prompt only its one token. Alone, a prompt is one pass.
        // Then, by Little's law, the replica's `c` running requests are its request rate
        // times a request's life, the first token and `osl − 1` more at `tpot`: the replica
        // yields a token every `life / osl · 1/c`, which pays for every prompt it serves (a
        // lone long prompt is not free throughput), and the figures hold together whatever
        // the lengths (one output token, a prompt all the work).
        // On a GPU pipeline the prompt's chunks also come out of the last stage `pp − 1`
        // shares after the step that carries them, and each next chunk, and the first token,
        // waits for them ([`Deployment::prompt_lag`]): the whole prompt passes every stage
        // in turn, so its chunks take as long as a pass of all the stages, not a share of
        // the replica. Left out, a pipeline's first token came no later under any load.
        let alone = self.prompt_alone(p, isl);
        let lag = self.chunk_lag(p, isl, isl);
        let ttft = if others > 0.0 {
            let steps = self.prompt_steps(p, c, isl, osl);
            (steps * tpot * self.tokens_per_step() + self.own_chunks(p, c, isl) + lag).max(alone)
        } else {
            alone
        };
        let per_token = (ttft + (osl - 1.0) * tpot) / osl;
        // A place frees every osl·per_token/c; each waiting request waits out its turn.
        let wait = (asked - c) * osl * per_token / c;
        // Requests a second of the deployment.
        let rate = c * busy / per_token / osl;
        let queued = match arrivals {
            Arrivals::Closed => 0.0,
            Arrivals::Random => {
                // Arriving at random, the requests spread over every replica, which a load
                // lighter than one a replica leaves idle part of the time. A prompt waits
                // for those that came just before it (M/D/1). The replica spends the share
                // rho of its time on prompts that their chunks cost in its steps (`rate x
                // isl x cost`, below one at any load a closed loop holds); a prompt ahead
                // holds a stage for its pass less what a one-token pass costs (the weight
                // stream and the fixed overheads, which the steps pay anyway), over the
                // pipeline's stages, each of which takes the next prompt as it hands one on.
                // And it waits for a place, the replica's places each held for a request's
                // life (M/D/c): a place busy all the time is a queue without end.
                let dp = f64::from(self.layout.dp);
                let rho = rate / dp * osl * own_prompt;
                let job = (alone - self.prefill(p, 1.0)).max(0.0) / f64::from(self.layout.pp);
                // Whole places: a share of one holds no request.
                let places = self.places(p, isl, osl).floor().max(1.0);
                let life = ttft + (osl - 1.0) * tpot;
                let busy_places = rate / dp * life / places;
                if busy_places >= 1.0 - 1e-9 {
                    f64::INFINITY
                } else {
                    md1_wait(job, rho.min(0.999)) + mdc_wait(life, busy_places, places as u32)
                }
            }
        };
        Operating {
            concurrency: asked * busy + rate * queued,
            running: c * busy,
            ttft_s: ttft + wait + queued,
            tpot_s: tpot,
            user_tok_s: 1.0 / tpot,
            throughput_tok_s: c * busy / per_token,
            bound: step.bound,
        }
    }

    /// Requests each replica is asked to serve at `concurrency` in flight: an even share, and
    /// at least one.
    fn asked_per_replica(&self, concurrency: f64) -> f64 {
        (concurrency / f64::from(self.layout.dp)).max(1.0)
    }

    /// Requests each replica runs at `concurrency` in flight: its share, as far as its KV
    /// cache and its engine's batch hold them (the rest wait; see [`Self::at_concurrency`]).
    fn running_per_replica(&self, p: &Params, concurrency: f64, isl: f64, osl: f64) -> f64 {
        self.asked_per_replica(concurrency)
            .min(self.places(p, isl, osl))
    }

    /// Requests one replica runs at once: what its KV cache holds and its engine batches.
    fn places(&self, p: &Params, isl: f64, osl: f64) -> f64 {
        self.max_sequences(p, self.kv_ctx(isl, osl.max(1.0)))
            .min(self.batch_limit(p))
            .max(1.0)
    }

    /// Where a user's time per output token goes at `concurrency` in flight: the decode
    /// step's parts ([`Deployment::step_parts`]) and the other requests' prompts that ride in
    /// its steps (chunked prefill); they add up to [`Self::at_concurrency`]'s TPOT.
    pub fn tpot_parts(&self, p: &Params, concurrency: f64, isl: f64, osl: f64) -> Vec<StepPart> {
        let osl = osl.max(1.0);
        let c = self.running_per_replica(p, concurrency, isl, osl);
        let mut parts = self.step_parts(p, c, self.decode_ctx(isl, osl));
        let others = (c - 1.0).max(0.0);
        let prompts = others * self.own_prompt(p, c, isl, osl);
        if prompts > 0.0 {
            parts.push(StepPart::new("other requests' prompts", prompts));
        }
        let experts = others * self.prompt_experts(p, c, isl) / osl;
        if experts > 0.0 {
            parts.push(StepPart::new(
                "experts other requests' prompts reach",
                experts,
            ));
        }
        parts
    }

    /// A request's prompt work spread over its output tokens: what each other request in
    /// flight adds to a step (chunked prefill), with `running` requests a replica. With
    /// expert parallelism a step's prompts fill as many groups as there are of them
    /// (`running` requests each start one every `osl` tokens), and the step waits for the
    /// busiest ([`Deployment::prefill_token_cost_in`]).
    fn own_prompt(&self, p: &Params, running: f64, isl: f64, osl: f64) -> f64 {
        let osl = osl.max(1.0);
        let prompts = running * self.tokens_per_step() / osl;
        isl / osl * self.prefill_token_cost_in(p, isl, prompts)
    }

    /// Time of a lone prompt of `isl` tokens on an idle replica: one pass, or where it is
    /// longer than an engine's step takes ([`Params::token_budget`]), passes of chunks that
    /// each pay the pass's fixed costs (its weight stream, launches and overheads) again.
    pub fn prompt_alone(&self, p: &Params, isl: f64) -> f64 {
        let passes = (isl / f64::from(p.token_budget.max(1))).ceil().max(1.0);
        self.prefill(p, isl) + (passes - 1.0) * self.prefill(p, 1.0)
    }

    /// Steps a prompt of `isl` tokens rides beside `running` sequences a replica, each to
    /// give `osl` tokens: its engine's step carries [`Params::token_budget`] tokens (each
    /// expert-parallel group's engine its own), one of them each decoding sequence's, and
    /// the prompt's chunks the rest, as vLLM schedules them. A request spends its prompt's
    /// `s` steps prefilling and `osl` decoding, so `running · osl / (osl + s)` decode at
    /// once: the steps are the fewest `s` whose room, the budget less those, holds the
    /// prompt in `s` chunks (a token a step at the least). With the default budget of
    /// 8,192 a prompt of up to 6,144 tokens rides one step; with a budget of 64 a 1,024-token
    /// prompt beside 64 requests rides about a hundred, which the simulator showed and the
    /// estimate did not.
    fn prompt_steps(&self, p: &Params, running: f64, isl: f64, osl: f64) -> f64 {
        let budget = f64::from(p.token_budget.max(1));
        let per_group = running / f64::from(self.kv_groups());
        let osl = osl.max(1.0);
        let held = |s: f64| s * (budget - per_group * osl / (osl + s)).max(1.0) >= isl;
        let most = isl.ceil().max(1.0);
        if held(1.0) {
            return 1.0;
        }
        if !held(most) {
            return most;
        }
        // The room grows with the steps (fewer decode at once), so the least that holds
        // is found by halving.
        let (mut lo, mut hi) = (1.0_f64, most);
        while hi - lo > 1.0 {
            let mid = ((lo + hi) / 2.0).floor();
            if held(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi
    }

    /// What a request's own prompt adds to the steps that carry its chunks, beside
    /// `running` requests a replica: its whole prompt at the chunked-prefill cost, in one
    /// expert-parallel group (others' prompts run in the others at the same time), and the
    /// experts its chunks reach that the decoding tokens do not.
    fn own_chunks(&self, p: &Params, running: f64, isl: f64) -> f64 {
        isl * self.prefill_token_cost_in(p, isl, 1.0) + self.prompt_experts(p, running, isl)
    }

    /// The highest throughput whose time per output token stays within `tpot_limit` (none:
    /// no limit), searching concurrencies up to what the KV cache and the engine's batch
    /// limit allow. When no load meets the limit, the lightest load (one request per replica).
    pub fn max_throughput(
        &self,
        p: &Params,
        isl: f64,
        osl: f64,
        tpot_limit: Option<f64>,
    ) -> Operating {
        self.peak_within(p, isl, osl, tpot_limit, None).0
    }

    /// The highest throughput within both limits and `true`; when even the lightest load
    /// the search tries misses them, that load and `false`.
    pub fn peak_within(
        &self,
        p: &Params,
        isl: f64,
        osl: f64,
        tpot_limit: Option<f64>,
        ttft_limit: Option<f64>,
    ) -> (Operating, bool) {
        match self.max_throughput_within(p, isl, osl, tpot_limit, ttft_limit) {
            Some(op) => (op, true),
            None => {
                let arrivals = Arrivals::under(ttft_limit);
                let lightest = self.loads(p, isl, osl, arrivals).next().map(|(_, op)| op);
                (
                    lightest.unwrap_or_else(|| {
                        self.operating(p, f64::from(self.layout.dp), isl, osl, arrivals)
                    }),
                    false,
                )
            }
        }
    }

    /// The highest output throughput of the deployment's replicas as a decode pool beside a
    /// separate prefill pool: their steps carry no prompts, so they carry more than
    /// [`Self::max_throughput`], which has each replica also run its requests' prompts.
    pub fn decode_peak(&self, p: &Params, isl: f64, osl: f64) -> f64 {
        self.decode_loads(p, isl, osl)
            .map(|(c, step)| c / step)
            .fold(0.0, f64::max)
            * f64::from(self.layout.dp)
    }

    /// One replica's decode steps with no prompt in them, at every load the searches try
    /// ([`Self::replica_loads`]): the requests decoding and the step's time.
    pub(crate) fn decode_loads<'s>(
        &'s self,
        p: &'s Params,
        isl: f64,
        osl: f64,
    ) -> impl Iterator<Item = (f64, f64)> + 's {
        let osl = osl.max(1.0);
        let ctx = self.decode_ctx(isl, osl);
        self.replica_loads(p, self.kv_ctx(isl, osl))
            .map(move |c| (c, self.decode_step(p, c, ctx).time))
    }

    /// The highest throughput at which both the time per output token and the time to first
    /// token stay within their limits (none: no limit), or `None` when even one request per
    /// replica misses them; under a TTFT limit the requests arrive at random, else in a
    /// closed loop ([`Arrivals::under`]). Concurrency is searched in steps of a quarter up to
    /// what the KV cache and the engine's batch limit allow, then to the request where a
    /// limit binds.
    pub fn max_throughput_within(
        &self,
        p: &Params,
        isl: f64,
        osl: f64,
        tpot_limit: Option<f64>,
        ttft_limit: Option<f64>,
    ) -> Option<Operating> {
        // A request of one output token has no time per output token to keep within a
        // limit: its time is its first token's.
        let tpot_limit = tpot_limit.filter(|_| osl > 1.0);
        let dp = f64::from(self.layout.dp);
        let arrivals = Arrivals::under(ttft_limit);
        // The best so far and its requests running a replica.
        let mut best: Option<(Operating, f64)> = None;
        // The next load tried after the best so far, where that one missed the limits.
        let mut beyond = None;
        for (c, op) in self.loads(p, isl, osl, arrivals) {
            if op.within(tpot_limit, ttft_limit) {
                if best.is_none_or(|(b, _)| op.throughput_tok_s > b.throughput_tok_s) {
                    best = Some((op, c));
                    beyond = None;
                }
            } else if beyond.is_none() && best.is_some_and(|(_, b)| c > b) {
                beyond = Some(c);
            }
        }
        // The steps of a quarter pass over loads within the limits (91 requests a replica
        // where 75 were found, 12% more throughput): between the best and the next load,
        // which missed them, the limit is found by bisection, the times growing with the
        // load.
        // In a closed loop the load is whole requests, and the last that meets the limits is
        // found. Arriving at random, where a replica's places are few, the load that binds
        // lies between whole requests: it is found to a fiftieth of a request or 2%.
        let close_enough = |lo: f64| match arrivals {
            Arrivals::Closed => 1.0,
            Arrivals::Random => 0.02_f64.max(0.02 * lo),
        };
        if let (Some(mut hi), Some((_, mut lo))) = (beyond, best) {
            while hi - lo > close_enough(lo) {
                let mid = match arrivals {
                    Arrivals::Closed => ((lo + hi) / 2.0).floor(),
                    Arrivals::Random => (lo + hi) / 2.0,
                };
                let op = self.operating(p, mid * dp, isl, osl, arrivals);
                if op.within(tpot_limit, ttft_limit) {
                    lo = mid;
                    if best.is_none_or(|(b, _)| op.throughput_tok_s > b.throughput_tok_s) {
                        best = Some((op, mid));
                    }
                } else {
                    hi = mid;
                }
            }
        }
        best.map(|(op, _)| op)
    }

    /// The deployment at every load the searches try, the requests arriving as `arrivals`
    /// say, with the requests running a replica: from one request per replica, in steps of
    /// a quarter (rounded up), to what the KV cache and the engine's batch limit allow.
    /// Arriving at random they may be fewer: one running a replica keeps it busy all the
    /// time, which where prompts are most of the work is a queue at its limit, so lighter
    /// loads come first, a replica idle part of the time.
    pub fn loads<'s>(
        &'s self,
        p: &'s Params,
        isl: f64,
        osl: f64,
        arrivals: Arrivals,
    ) -> impl Iterator<Item = (f64, Operating)> + 's {
        let dp = f64::from(self.layout.dp);
        let lighter: &[f64] = match arrivals {
            Arrivals::Closed => &[],
            Arrivals::Random => &[0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7],
        };
        lighter
            .iter()
            .copied()
            .chain(self.replica_loads(p, self.kv_ctx(isl, osl.max(1.0))))
            .map(move |c| (c, self.operating(p, c * dp, isl, osl, arrivals)))
    }

    /// The requests in flight on one replica that the searches try: from one, in steps of
    /// a quarter (rounded up), to what the KV cache holds at `ctx` tokens a sequence and the
    /// engine's batch limit allows.
    pub fn replica_loads(&self, p: &Params, ctx: f64) -> impl Iterator<Item = f64> {
        let cap = self.max_sequences(p, ctx).min(self.batch_limit(p)).max(1.0);
        std::iter::successors(Some(1.0_f64), move |&c| {
            (c < cap).then(|| (c * 1.25).ceil().min(cap))
        })
    }

    /// What a router is told of one replica before it has observed anything: time to first
    /// token of a lone `isl`-token prompt (and the prompt tokens a second that makes), time
    /// per output token of a lone request, and the requests in flight at the peak throughput
    /// under `tpot_limit` (at least one) with their time per token.
    ///
    /// As a `decode_only` replica, beside a separate prefill pool, its peak is that of steps
    /// that carry no prompts. Rated as a replica that also runs its prompts, a decode pool
    /// whose tokens came at 25 ms under a 40 ms target was held full at half its load, its
    /// first tokens expected seconds late, and requests went to a slower replica beside it.
    pub fn router_priors(
        &self,
        p: &Params,
        isl: f64,
        osl: f64,
        tpot_limit: Option<f64>,
        decode_only: bool,
    ) -> RouterPriors {
        let ttft_s = self.prompt_alone(p, isl);
        let tpot_s = self.at_concurrency(p, 1.0, isl, osl).tpot_s;
        let (concurrency, tpot_full_s) = if decode_only {
            self.decode_loads(p, isl, osl)
                .filter(|&(_, step)| tpot_limit.is_none_or(|l| step <= l))
                .max_by(|a, b| (a.0 / a.1).total_cmp(&(b.0 / b.1)))
                .unwrap_or((1.0, tpot_s))
        } else {
            let full = self.max_throughput(p, isl, osl, tpot_limit);
            (full.concurrency, full.tpot_s)
        };
        RouterPriors {
            ttft_s,
            prefill_tok_s: prompt_rate(isl, ttft_s),
            tpot_s,
            tpot_full_s: tpot_full_s.max(tpot_s),
            concurrency: concurrency.max(1.0),
        }
    }

    /// What a router is told of a disaggregated provider's prompts, run on `replicas` of
    /// this deployment as its prefill pool: the first token of a lone `isl`-token prompt,
    /// its pass and its KV cache's move to the decode pool (within the scale-up domain when
    /// `same_domain`), and the prompt tokens a second the pool prefills.
    pub fn prefill_pool_priors(
        &self,
        p: &Params,
        isl: f64,
        replicas: u32,
        same_domain: bool,
    ) -> (f64, f64) {
        let own = self.prefill(p, isl);
        (
            own + self.kv_send_s(p, isl, same_domain),
            prompt_rate(isl, own) * f64::from(replicas),
        )
    }

    /// What tokens cost on a pool of `replicas` replicas of this deployment at its peak
    /// throughput within `tpot_limit` (`isl`-token prompts, `osl`-token answers), from its
    /// system's rent or purchase and power ([`Deployment::economics`]). Where its prompts run
    /// on a pool of their own (`prefill`: that pool's deployment and replicas), every token
    /// passes through both and the prices cover both. `None` where a system has no price.
    /// The simulator's cost policy and an emulated provider's prices both come from here.
    pub fn pool_prices(
        &self,
        p: &Params,
        (isl, osl): (f64, f64),
        tpot_limit: Option<f64>,
        replicas: u32,
        prefill: Option<(&Deployment<'_>, u32)>,
    ) -> Option<PoolPrices> {
        let mut pool = self.clone();
        pool.layout.dp = replicas;
        let op = pool.max_throughput(p, isl, osl, tpot_limit);
        let own = pool.economics(p, &op, 1.0).usd_per_mtok?;
        let (blended, prompt_share) = match prefill {
            // The share of a replica's time its prompts take: each request's prompt as the
            // chunks the peak's steps carry cost it (the whole replica at work on them, as
            // the operating point counts them), at the requests a second the peak serves
            // each replica. Counted as a lone prompt's pass, which a pipeline's stages take
            // one after another while each works on other requests, a two-stage pool's
            // prompts took all of its time and its output was priced at nothing.
            None => {
                let per_replica_s = op.throughput_tok_s / osl.max(1.0) / f64::from(replicas.max(1));
                let running = op.running / f64::from(replicas.max(1));
                let prompts = per_replica_s * osl.max(1.0) * self.own_prompt(p, running, isl, osl);
                (own, prompts.clamp(0.0, 1.0))
            }
            Some((pd, n)) => {
                let mut pre = pd.clone();
                pre.layout.dp = n;
                let theirs = pre.economics_at(p, op.throughput_tok_s, 1.0).usd_per_mtok?;
                (own + theirs, theirs / (own + theirs))
            }
        };
        Some(PoolPrices {
            usd_per_mtok: blended,
            input_usd_per_mtok: blended * prompt_share * osl / isl.max(1.0),
            output_usd_per_mtok: blended * (1.0 - prompt_share),
        })
    }

    /// Power drawn by the deployment's chips at full load, in W, from the system's published
    /// power (or its chips' power with host overhead).
    pub fn full_power_w(&self, p: &Params) -> Option<f64> {
        let s = self.system;
        let per_chip = match (s.system_power_kw, s.chip_power_w) {
            (Some(kw), _) => kw * 1000.0 / f64::from(s.chips_per_system),
            (None, Some(w)) => w * p.host_overhead,
            (None, None) => return None,
        };
        Some(per_chip * f64::from(self.layout.chips()))
    }

    /// Energy and cost of serving at `op`, where `utilisation` is the fraction of the
    /// deployment's peak throughput in use (power scales linearly from idle to full).
    pub fn economics(&self, p: &Params, op: &Operating, utilisation: f64) -> Economics {
        self.economics_at(p, op.throughput_tok_s, utilisation)
    }

    /// Energy and cost of producing `throughput_tok_s` output tokens per second at
    /// `utilisation`, the share of full power above idle the chips draw; the simulator calls
    /// this with the throughput it measured and, as `utilisation`, the share of the pool's
    /// peak throughput in use (no more than its busy time), or a prefill pool's busy time.
    pub fn economics_at(&self, p: &Params, throughput_tok_s: f64, utilisation: f64) -> Economics {
        let u = utilisation.clamp(0.0, 1.0);
        let power = self
            .full_power_w(p)
            .map(|w| w * (p.idle_power_frac + (1.0 - p.idle_power_frac) * u));
        let facility_w = power.map(|w| w * p.pue);
        let joules = facility_w.map(|w| w / throughput_tok_s);
        let chips = f64::from(self.layout.chips());
        let energy_per_hour = facility_w.map(|w| w / 1000.0 * p.usd_per_kwh);
        // A published rental rate already pays the provider's power; an owned system pays
        // its purchase over its life plus the electricity it draws.
        let priced = self.system.price.as_ref().and_then(|pr| {
            pr.rent_usd_per_chip_hour
                .map(|r| (r * chips, CostBasis::Rent))
                .or_else(|| {
                    pr.capex_usd_per_system.map(|c| {
                        let life = pr.life_years.unwrap_or(p.life_years);
                        let capital =
                            c / f64::from(self.system.chips_per_system) * chips / (life * 8760.0);
                        (capital + energy_per_hour.unwrap_or(0.0), CostBasis::Owned)
                    })
                })
        });
        let usd_per_hour = priced.map(|(h, _)| h);
        Economics {
            power_w: power,
            joules_per_token: joules,
            usd_per_hour,
            usd_per_mtok: usd_per_hour.map(|h| h / (throughput_tok_s * 3600.0) * 1e6),
            cost_basis: priced.map(|(_, b)| b),
        }
    }
}

/// Prompt tokens a second of an `isl`-token prompt prefilled in `seconds`.
fn prompt_rate(isl: f64, seconds: f64) -> f64 {
    isl.max(1.0) / seconds.max(1e-12)
}

/// A deployment's predicted latency and capacity, as [`Deployment::router_priors`] gives them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RouterPriors {
    /// Time to first token of a lone request, seconds.
    pub ttft_s: f64,
    /// Prompt tokens a second one replica prefills, one prompt after another.
    pub prefill_tok_s: f64,
    /// Time per output token of a lone request, seconds.
    pub tpot_s: f64,
    /// Time per output token at the peak throughput under the TPOT limit, seconds.
    pub tpot_full_s: f64,
    /// Requests in flight at the peak throughput under the TPOT limit.
    pub concurrency: f64,
}

/// Energy and money per token.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Economics {
    /// IT power of the deployment's chips at this load, in W.
    pub power_w: Option<f64>,
    /// Facility energy (IT power times PUE) per output token, in J.
    pub joules_per_token: Option<f64>,
    /// Cost in USD per hour: the published rent, or the amortised purchase plus electricity
    /// (see [`CostBasis`]).
    pub usd_per_hour: Option<f64>,
    /// USD per million output tokens.
    pub usd_per_mtok: Option<f64>,
    /// What the cost is based on, when the system has a price.
    pub cost_basis: Option<CostBasis>,
}

/// What a deployment's cost is based on. Systems differ in what is published: a cloud's
/// hourly rate, a purchase price, or both; the rate wins where both are, since it is what a
/// buyer of capacity pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CostBasis {
    /// A published hourly rental rate per chip, which includes the provider's power.
    Rent,
    /// The purchase price over the system's life, plus electricity at the facility's PUE
    /// (left out for a system with no published power figure).
    Owned,
}

impl CostBasis {
    /// The word printed beside a cost.
    pub fn name(self) -> &'static str {
        match self {
            CostBasis::Rent => "rent",
            CostBasis::Owned => "owned",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{md1_wait, mdc_max_busy, mdc_wait};

    #[test]
    fn one_server_is_m_d_1_and_more_servers_wait_less() {
        for rho in [0.1, 0.5, 0.9] {
            assert!((mdc_wait(2.0, rho, 1) - md1_wait(2.0, rho)).abs() < 1e-12);
        }
        // Two servers at half load: Erlang's C is 1/3, the M/M/2 wait 1/3 of a service, and
        // the M/D/2 wait half of it.
        assert!((mdc_wait(1.0, 0.5, 2) - 1.0 / 6.0).abs() < 1e-12);
        // At the same load per server, a pool queues less than one server does.
        assert!(mdc_wait(1.0, 0.9, 10) < 0.2 * mdc_wait(1.0, 0.9, 1));
        // The busiest load for a wait is the inverse of the wait.
        for c in [1, 3, 10] {
            let rho = mdc_max_busy(0.7, c);
            assert!((mdc_wait(1.0, rho, c) - 0.7).abs() < 1e-6, "{c}: {rho}");
        }
        assert!((mdc_max_busy(0.7, 1) - 1.4 / 2.4).abs() < 1e-9);
    }
}
