//! The emulated provider: the simulator's replica engine driven by the wall clock.
//!
//! Each replica is a task that asks the engine for its next step, sleeps for the step's
//! duration (as the performance model predicts it), and hands the tokens of the finished step
//! to the requests' streams. Deadlines accumulate from the previous step's deadline rather
//! than from when the task woke, so timer slack does not add up over a long generation, and
//! steps shorter than a few milliseconds sleep on a finer clock than tokio's (see `clock`), so
//! their tokens do not leave in pairs.
//! Faults (an error rate, latency spikes, an outage window) make it fail on purpose.
//!
//! A disaggregated pool runs each prompt on a prefill replica; after the KV transfer time the
//! performance model gives, the request moves, its stream with it, to the decode replica with
//! the fewest requests, as in the simulator. Its first token, made by the prefill pass,
//! reaches the client with the cache (as engines that stream from the decode side deliver
//! it), so its time to first token includes the transfer, as the performance model counts it.
//!
//! A prompt's text is hashed in blocks ([`prompt_prefix`]), so that a replica's prefix cache
//! serves again what a conversation's earlier turns left there, and a prompt goes to the
//! replica with the fewest tokens to get through before it is done with it, as in the
//! simulator.

use crate::config::Faults;
use serde_json::Value;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_perf::Batch;
use switchyard_replica::{EngineConfig, Event, Physics, Prefix, Replica, Request, StepTime};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

/// What a request's stream receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmuEvent {
    /// One output token.
    Token,
    /// The last token was sent.
    Done,
}

/// Why an emulated request did not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmuError {
    /// The injected error rate struck.
    #[error("emulated provider error (injected fault)")]
    Injected,
    /// The provider is in its outage window.
    #[error("emulated provider unavailable (outage window)")]
    Outage,
    /// The request can never fit in a replica's KV cache.
    #[error("{0}")]
    TooLong(String),
}

/// Where a request is served: the replica and its id there (it changes when the request
/// moves from a prefill replica to a decode replica).
type Location = Arc<Mutex<Place>>;

/// A request's replica and id there, and whether its client has gone.
#[derive(Debug)]
struct Place {
    replica: Arc<EmuReplica>,
    id: u64,
    cancelled: bool,
}

/// A request's stream, and what a prefill replica needs to hand it on.
struct Stream {
    tx: mpsc::UnboundedSender<EmuEvent>,
    /// Prompt tokens its engine found published, shared with its [`EmuStream`].
    cached: Arc<AtomicU32>,
    /// Prompt and output tokens, and the stream's location, for a request that moves to a
    /// decode replica after its first token.
    handoff: Option<(u32, u32, Location)>,
}

struct Shared {
    engine: Replica<Physics<'static>>,
    streams: HashMap<u64, Stream>,
    next_id: u64,
}

struct EmuReplica {
    state: Mutex<Shared>,
    wake: Notify,
    /// For a prefill replica: where its requests decode.
    decode: Option<Arc<DecodeStage>>,
}

impl EmuReplica {
    /// The replica's state; a lock poisoned by a panicking holder is taken over, since the
    /// engine's state is only changed through its own methods.
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Shared {
    /// A new request id on this replica.
    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}

/// The decode replicas of a disaggregated pool, and how long a prompt's KV cache takes to
/// reach them.
struct DecodeStage {
    replicas: Vec<Arc<EmuReplica>>,
    /// A prefill replica's physics, which times the transfer.
    prefill: Physics<'static>,
    same_domain: bool,
}

/// The prefill pool of a disaggregated emulated provider.
#[derive(Debug, Clone)]
pub struct PrefillSpec {
    /// One prefill replica.
    pub physics: Physics<'static>,
    /// Its engine limits.
    pub config: EngineConfig,
    /// Prefill replicas.
    pub replicas: u32,
    /// Whether both pools share one scale-up domain (the KV cache crosses the fabric, not
    /// the network).
    pub same_domain: bool,
}

/// A pool of emulated replicas of one model on one system.
pub struct EmuPool {
    replicas: Vec<Arc<EmuReplica>>,
    /// Prefill replicas, when the pool is disaggregated; requests start there.
    prefill: Vec<Arc<EmuReplica>>,
    /// One replica's layout, such as `tp1-pp2`, for the health report.
    layout: String,
    /// See [`EmuPool::longest_request`].
    longest: u32,
    /// A replica where prompts run (the prefill pool's, when there is one), and the most
    /// prompt tokens its engine takes a step.
    prompts: (Physics<'static>, u32),
    faults: Faults,
    started: Instant,
    draws: Mutex<u64>,
    /// Whether its engines cache prompts' prefixes.
    prefix_caching: bool,
}

impl std::fmt::Debug for EmuPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmuPool")
            .field("replicas", &self.replicas.len())
            .field("prefill", &self.prefill.len())
            .field("faults", &self.faults)
            .finish()
    }
}

/// The tokens of one emulated request as they come. Dropping it cancels the request.
#[derive(Debug)]
pub struct EmuStream {
    rx: mpsc::UnboundedReceiver<EmuEvent>,
    at: Location,
    done: bool,
    cached: Arc<AtomicU32>,
}

impl std::fmt::Debug for EmuReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmuReplica")
    }
}

impl EmuStream {
    /// The next event; `None` if the replica went away.
    pub async fn next(&mut self) -> Option<EmuEvent> {
        let e = self.rx.recv().await;
        if e == Some(EmuEvent::Done) {
            self.done = true;
        }
        e
    }

    /// Prompt tokens its engine found in its prefix cache, which it did not prefill (known
    /// by its first token).
    pub fn cached_tokens(&self) -> u32 {
        self.cached.load(Ordering::Relaxed)
    }
}

impl Drop for EmuStream {
    fn drop(&mut self) {
        if !self.done {
            // Marked first, so that a hand-off under way sees the client gone and goes no
            // further; the lock order is always the place, then a replica.
            let (replica, id) = match self.at.lock() {
                Ok(mut at) => {
                    at.cancelled = true;
                    (Arc::clone(&at.replica), at.id)
                }
                Err(_) => return,
            };
            let mut s = replica.lock();
            s.engine.cancel(id);
            s.streams.remove(&id);
        }
    }
}

/// Replicas running `config` on `physics`, each with its clock task; `decode` for prefill
/// replicas.
fn spawn_replicas(
    physics: &Physics<'static>,
    config: EngineConfig,
    n: u32,
    decode: Option<&Arc<DecodeStage>>,
) -> Vec<Arc<EmuReplica>> {
    (0..n.max(1))
        .map(|_| {
            let r = Arc::new(EmuReplica {
                state: Mutex::new(Shared {
                    engine: Replica::new(physics.clone(), config),
                    streams: HashMap::new(),
                    next_id: 0,
                }),
                wake: Notify::new(),
                decode: decode.cloned(),
            });
            tokio::spawn(drive(Arc::clone(&r)));
            r
        })
        .collect()
}

/// Tokens a prefix block of a prompt stands for: vLLM's KV-cache block.
const PREFIX_BLOCK_TOKENS: u32 = 16;

/// A prompt's prefix as a chain of hashes of its text as sent, in blocks of 64 bytes (16
/// tokens, vLLM's KV-cache block, at the four bytes a token the gateway counts prompts by):
/// a chat request's tools and then its messages one after another (a list of text parts
/// as one string, joined by line breaks), or a completion's prompt. Each hash covers its
/// block and every block before it, so two prompts share a run of hashes exactly as far as
/// their texts agree, block for block. The last, partial block
/// is left out, as an engine caches only full blocks. A block stands for the tokens its
/// bytes are of the request's `prompt_tokens`, rounded down: the text as sent carries its
/// framing (keys, quotes), which the count leaves out, and a block counted at 16 tokens
/// called a new last message cached. `None` for a batch of prompts, or a prompt shorter
/// than a block.
pub fn prompt_prefix(body: &Value, prompt_tokens: u32) -> Option<Prefix> {
    let mut text = Vec::new();
    match (body.get("messages"), body.get("prompt")) {
        (Some(Value::Array(messages)), _) => {
            // Chat templates put the tools first, ahead of the conversation.
            if let Some(tools) = body.get("tools") {
                serde_json::to_writer(&mut text, tools).ok()?;
            }
            for m in messages {
                match as_one_text(m) {
                    Some(m) => serde_json::to_writer(&mut text, &m).ok()?,
                    None => serde_json::to_writer(&mut text, m).ok()?,
                }
            }
        }
        (_, Some(Value::Array(batch))) if batch.len() > 1 && !batch[0].is_number() => return None,
        (_, Some(prompt)) => serde_json::to_writer(&mut text, prompt).ok()?,
        _ => return None,
    }
    let block_bytes = 4 * PREFIX_BLOCK_TOKENS as usize;
    let block_tokens =
        (u64::from(prompt_tokens) * block_bytes as u64 / text.len().max(1) as u64).max(1);
    let mut chain = 0u64;
    let hashes: Vec<u64> = text
        .chunks_exact(block_bytes)
        .map(|block| {
            let mut h = DefaultHasher::new();
            chain.hash(&mut h);
            block.hash(&mut h);
            chain = h.finish();
            chain
        })
        .collect();
    (!hashes.is_empty()).then(|| Prefix {
        hashes: hashes.into(),
        block_tokens: block_tokens.min(u64::from(PREFIX_BLOCK_TOKENS)) as u32,
    })
}

/// A message whose content is a list of text parts, with that content as one string: their
/// texts joined by line breaks, as vLLM renders such a list into a chat template, so that
/// the same words sent either way are the same prompt. `None` for any other message.
fn as_one_text(m: &Value) -> Option<Value> {
    let Some(Value::Array(parts)) = m.get("content") else {
        return None;
    };
    let texts: Vec<&str> = parts
        .iter()
        .map(|p| match (p.get("type"), p.get("text")) {
            (Some(Value::String(t)), Some(Value::String(x))) if t == "text" => Some(x.as_str()),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let mut m = m.clone();
    m["content"] = Value::String(texts.join("\n"));
    Some(m)
}

/// The replica with the fewest tokens to get through before it is done with a prompt of
/// `prompt` tokens that begins with `prefix` (its cached prefix counted off), the fewer
/// requests among equals ([`Replica::balance_key`], as in the simulator).
fn by_prefix(
    replicas: &[Arc<EmuReplica>],
    prefix: &Prefix,
    prompt: u32,
) -> Option<Arc<EmuReplica>> {
    replicas
        .iter()
        .min_by_key(|r| r.lock().engine.balance_key(prefix, prompt))
        .cloned()
}

/// The replica with the fewest requests.
fn least_loaded(replicas: &[Arc<EmuReplica>]) -> Option<Arc<EmuReplica>> {
    replicas
        .iter()
        .min_by_key(|r| {
            r.state
                .lock()
                .map(|s| s.engine.outstanding())
                .unwrap_or(usize::MAX)
        })
        .cloned()
}

impl EmuPool {
    /// Starts `replicas` replica tasks on the current tokio runtime, and with `prefill` a
    /// prefill pool before them (disaggregated serving: the replicas then only decode); with
    /// `prefix_caching`, their engines cache prompts' prefixes.
    pub fn start(
        physics: Physics<'static>,
        config: EngineConfig,
        replicas: u32,
        faults: Faults,
        prefill: Option<PrefillSpec>,
        prefix_caching: bool,
    ) -> Arc<Self> {
        let layout = physics.deployment.layout.to_string();
        let longest = prefill.as_ref().map_or(config.longest_request(), |p| {
            config.longest_request().min(p.config.longest_request())
        });
        let replicas = spawn_replicas(&physics, config, replicas, None);
        let prompts = prefill
            .as_ref()
            .map_or((physics, config.token_budget), |p| {
                (p.physics.clone(), p.config.token_budget)
            });
        let prefill = match prefill {
            None => Vec::new(),
            Some(spec) => {
                let stage = Arc::new(DecodeStage {
                    replicas: replicas.clone(),
                    prefill: spec.physics.clone(),
                    same_domain: spec.same_domain,
                });
                spawn_replicas(&spec.physics, spec.config, spec.replicas, Some(&stage))
            }
        };
        Arc::new(EmuPool {
            replicas,
            prefill,
            layout,
            longest,
            prompts,
            faults,
            started: Instant::now(),
            draws: Mutex::new(faults.seed.unwrap_or_else(crate::clock_seed)),
            prefix_caching,
        })
    }

    /// Whether its engines cache prompts' prefixes: without, a request's prefix is not
    /// worth hashing.
    pub fn caches_prefixes(&self) -> bool {
        self.prefix_caching
    }

    /// A uniform draw in [0, 1) for fault injection (SplitMix64; repeatable for a seed).
    fn draw(&self) -> f64 {
        let mut g = self
            .draws
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        switchyard_router::unit(switchyard_router::splitmix64(&mut g))
    }

    /// The engines it runs, decode (or whole-request) and prefill, and one replica's layout.
    pub fn engines(&self) -> (usize, usize, &str) {
        (self.replicas.len(), self.prefill.len(), &self.layout)
    }

    /// Prompt tokens its engines took in where prompts run, found in their prefix caches and
    /// prefilled, since the pool started.
    pub fn prompt_tokens(&self) -> (u64, u64) {
        let first = if self.prefill.is_empty() {
            &self.replicas
        } else {
            &self.prefill
        };
        first.iter().fold((0, 0), |(cached, prefilled), r| {
            let s = r.lock();
            let c = s.engine.counters();
            (cached + c.tokens_cached, prefilled + c.tokens_prefilled)
        })
    }

    /// The longest request, prompt plus output tokens, the pool serves: what one sequence's
    /// KV cache may hold within the model's context, where its prompt runs and where it
    /// decodes.
    pub fn longest_request(&self) -> u32 {
        self.longest
    }

    /// Seconds a prompt of `tokens` tokens takes alone where prompts run, in the chunks its
    /// engine takes a step: what its first token needs at the least, however idle the pool.
    pub fn prompt_s(&self, tokens: u32) -> f64 {
        let (physics, budget) = &self.prompts;
        let budget = (*budget).max(1);
        let (mut done, mut s) = (0u32, 0.0);
        while done < tokens.max(1) {
            let chunk = budget.min(tokens.max(1) - done);
            s += physics.step_time(&Batch {
                prefill_tokens: chunk,
                prefill_ctx: f64::from(done) + f64::from(chunk) / 2.0,
                prefill_seqs: 1,
                prefill_longest: chunk,
                ..Batch::default()
            });
            done += chunk;
        }
        s
    }

    /// Whether the provider is inside its outage window now.
    pub fn in_outage(&self) -> bool {
        let t = self.started.elapsed().as_secs_f64();
        match (self.faults.outage_start_s, self.faults.outage_end_s) {
            (Some(a), Some(b)) => t >= a && t < b,
            (Some(a), None) => t >= a,
            _ => false,
        }
    }

    /// Starts a request of `prompt` tokens asking for `output` tokens: on the replica with
    /// the fewest tokens to get through before it is done with the prompt where it names its
    /// `prefix` ([`prompt_prefix`]), whose prefix cache then serves what it holds of it; on
    /// the least-loaded replica otherwise.
    ///
    /// # Errors
    /// An injected fault, the outage window, or a request too long for the KV cache.
    pub async fn submit(
        &self,
        prompt: u32,
        output: u32,
        prefix: Option<Prefix>,
    ) -> Result<EmuStream, EmuError> {
        if self.in_outage() {
            return Err(EmuError::Outage);
        }
        if self.faults.error_rate > 0.0 && self.draw() < self.faults.error_rate {
            return Err(EmuError::Injected);
        }
        if self.faults.spike_rate > 0.0 && self.draw() < self.faults.spike_rate {
            tokio::time::sleep(Duration::from_millis(self.faults.spike_ms)).await;
        }
        let disaggregated = !self.prefill.is_empty();
        if disaggregated {
            // It must fit where it will decode, not only where its prompt runs.
            let fits = self.replicas.first().is_none_or(|r| {
                prompt.saturating_add(output) <= r.lock().engine.config().max_context()
            });
            if !fits {
                return Err(EmuError::TooLong(format!(
                    "the request needs {} tokens of KV cache on a decode replica",
                    prompt.saturating_add(output)
                )));
            }
        }
        let first = if disaggregated {
            &self.prefill
        } else {
            &self.replicas
        };
        let prefix = prefix.filter(|_| self.prefix_caching);
        let replica = match &prefix {
            Some(px) => by_prefix(first, px, prompt),
            None => least_loaded(first),
        }
        .ok_or(EmuError::Outage)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut s = replica.lock();
        let id = s.fresh_id();
        let at: Location = Arc::new(Mutex::new(Place {
            replica: Arc::clone(&replica),
            id,
            cancelled: false,
        }));
        let (asked, handoff) = if disaggregated {
            (1, Some((prompt, output, Arc::clone(&at))))
        } else {
            (output, None)
        };
        let req = Request {
            id,
            prompt,
            output: asked,
        };
        match prefix {
            Some(px) => s.engine.submit_prefixed(req, px),
            None => s.engine.submit(req),
        }
        .map_err(|e| EmuError::TooLong(e.to_string()))?;
        let cached = Arc::new(AtomicU32::new(0));
        s.streams.insert(
            id,
            Stream {
                tx,
                cached: Arc::clone(&cached),
                handoff,
            },
        );
        drop(s);
        replica.wake.notify_one();
        Ok(EmuStream {
            rx,
            at,
            done: false,
            cached,
        })
    }
}

/// One replica's clock: plan a step, sleep its predicted duration, deliver its tokens. The
/// task lives as long as the runtime that serves the gateway.
async fn drive(r: Arc<EmuReplica>) {
    let mut deadline = Instant::now();
    loop {
        let step = {
            let mut s = r.lock();
            let Shared {
                engine, streams, ..
            } = &mut *s;
            engine.start_step(&mut |e| {
                if let Event::Cached(id, n) = e {
                    if let Some(st) = streams.get(&id) {
                        st.cached.store(n, Ordering::Relaxed);
                    }
                }
            })
        };
        let Some(dt) = step else {
            r.wake.notified().await;
            deadline = Instant::now();
            continue;
        };
        // Keep to the schedule unless far behind it (a stalled runtime), then restart it.
        let dt = Duration::from_secs_f64(dt);
        deadline = deadline.max(Instant::now() - Duration::from_millis(5)) + dt;
        // Steps shorter than a few milliseconds (a wafer's) sleep on a finer clock than
        // tokio's millisecond ticks, so that each token leaves at its own time.
        if dt < crate::clock::FINE_BELOW {
            crate::clock::sleep_until(deadline).await;
        } else {
            tokio::time::sleep_until(deadline).await;
        }
        let mut s = r.lock();
        let Shared {
            engine, streams, ..
        } = &mut *s;
        let mut moving = Vec::new();
        engine.finish_step(&mut |e| match e {
            Event::FirstToken(id) | Event::Token(id) => {
                // A prompt that moves on to a decode replica reaches its client with its cache,
                // as engines that stream from the decode side deliver it: its first token goes
                // out when the hand-off lands.
                let moves = matches!(e, Event::FirstToken(_))
                    && streams.get(&id).is_some_and(|st| {
                        st.handoff
                            .as_ref()
                            .is_some_and(|(_, output, _)| *output > 1)
                    });
                if let Some(st) = streams.get(&id).filter(|_| !moves) {
                    let _ = st.tx.send(EmuEvent::Token);
                }
            }
            Event::Finished(id) => {
                if let Some(st) = streams.remove(&id) {
                    match st.handoff {
                        Some((prompt, output, at)) if output > 1 => {
                            moving.push((st.tx, st.cached, prompt, output, at));
                        }
                        _ => {
                            let _ = st.tx.send(EmuEvent::Done);
                        }
                    }
                }
            }
            Event::Scheduled(_) | Event::Preempted(_) | Event::Cached(..) => {}
        });
        drop(s);
        for (tx, cached, prompt, output, at) in moving {
            match &r.decode {
                Some(stage) => {
                    tokio::spawn(hand_off(
                        Arc::clone(stage),
                        Stream {
                            tx,
                            cached,
                            handoff: None,
                        },
                        prompt,
                        output,
                        at,
                    ));
                }
                // Only prefill replicas hand requests on; anything else ends here.
                None => {
                    let _ = tx.send(EmuEvent::Done);
                }
            }
        }
    }
}

/// Moves a prefilled request to the least-loaded decode replica once its KV cache has
/// crossed over; its stream follows. A stream its client dropped in the meantime goes no
/// further, and one no decode replica can take ends without its last event, as a broken
/// upstream stream would.
async fn hand_off(stage: Arc<DecodeStage>, stream: Stream, prompt: u32, output: u32, at: Location) {
    let send_s = stage.prefill.deployment.kv_send_s(
        stage.prefill.params,
        f64::from(prompt),
        stage.same_domain,
    );
    tokio::time::sleep(Duration::try_from_secs_f64(send_s).unwrap_or(Duration::MAX)).await;
    let Some(replica) = least_loaded(&stage.replicas) else {
        return;
    };
    {
        // The place stays locked until the request is on its decode replica, so a client
        // leaving meanwhile either stops the move here or cancels it there.
        let Ok(mut here) = at.lock() else {
            return;
        };
        if here.cancelled {
            return;
        }
        let mut s = replica.lock();
        let id = s.fresh_id();
        if s.engine
            .submit_prefilled(Request { id, prompt, output })
            .is_err()
        {
            return;
        }
        // The first token, made on the prefill replica, arrives with the cache.
        let _ = stream.tx.send(EmuEvent::Token);
        s.streams.insert(id, stream);
        here.replica = Arc::clone(&replica);
        here.id = id;
    }
    replica.wake.notify_one();
}

#[cfg(test)]
mod tests {
    use super::{prompt_prefix, EmuEvent, EmuPool, EmuStream, PrefillSpec};
    use crate::config::Faults;
    use serde_json::json;
    use switchyard_perf::{Catalog, Layout, Params, Precision};
    use switchyard_replica::{EngineConfig, Physics};

    /// One replica of Llama 3.1 8B on an H100, and its engine limits.
    fn h100() -> (Physics<'static>, EngineConfig) {
        let cat: &'static Catalog = Box::leak(Box::new(Catalog::builtin().expect("catalog")));
        let params: &'static Params = Box::leak(Box::new(Params::default()));
        let physics = Physics {
            deployment: switchyard_perf::Deployment::new(
                cat.model("llama-3.1-8b").expect("model"),
                cat.system("h100-sxm").expect("system"),
                Layout::replica(1, 1),
                Precision::Bf16,
            )
            .expect("deployment"),
            params,
        };
        let config = EngineConfig::for_deployment(&physics.deployment, params);
        (physics, config)
    }

    async fn drain(mut s: EmuStream) -> u32 {
        let mut tokens = 0;
        while let Some(e) = s.next().await {
            match e {
                EmuEvent::Token => tokens += 1,
                EmuEvent::Done => break,
            }
        }
        tokens
    }

    /// Two chats share hashes as far as their texts agree, block for block; a batch of
    /// prompts, or a prompt shorter than a block, names none.
    #[test]
    fn prompts_share_prefix_hashes_as_far_as_their_texts_agree() {
        let system = "You are a careful assistant. ".repeat(40);
        let first = json!({"messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": "What is a wafer?"}]});
        let second = json!({"messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": "What is a wafer?"},
            {"role": "assistant", "content": "A disc of silicon."},
            {"role": "user", "content": "And a reticle?"}]});
        let a = prompt_prefix(&first, u32::MAX).expect("a prefix");
        let b = prompt_prefix(&second, u32::MAX).expect("a prefix");
        assert_eq!(a.block_tokens, 16);
        let shared = a
            .hashes
            .iter()
            .zip(b.hashes.iter())
            .take_while(|(x, y)| x == y);
        // The first chat's text is whole blocks but for its last; the second goes on.
        assert_eq!(shared.count(), a.hashes.len());
        assert!(b.hashes.len() > a.hashes.len());
        let other = json!({"messages": [{"role": "system", "content": format!("!{system}")}]});
        let c = prompt_prefix(&other, u32::MAX).expect("a prefix");
        assert_ne!(c.hashes[0], a.hashes[0]);
        // Tools come first: the same tools before a new conversation share their blocks.
        let tools = json!([{"type": "function", "function": {"name": "lookup", "description": "d".repeat(300)}}]);
        let with = |content: &str| {
            prompt_prefix(
                &json!({"tools": tools, "messages": [{"role": "user", "content": content}]}),
                u32::MAX,
            )
            .expect("a prefix")
        };
        let (x, y) = (with("first question"), with("second question"));
        assert_eq!(x.hashes[..4], y.hashes[..4]);
        // The same words as a string or as a list of text parts are the same prompt; an
        // image among the parts makes another.
        let parts = json!({"messages": [
            {"role": "system", "content": [{"type": "text", "text": system}]},
            {"role": "user", "content": [{"type": "text", "text": "What is a wafer?"}]}]});
        assert_eq!(
            prompt_prefix(&parts, u32::MAX).expect("a prefix").hashes,
            a.hashes
        );
        let image = json!({"messages": [
            {"role": "system", "content": [{"type": "text", "text": system},
                {"type": "image_url", "image_url": {"url": "data:,"}}]}]});
        assert_ne!(
            prompt_prefix(&image, u32::MAX).expect("a prefix").hashes[0],
            a.hashes[0]
        );
        assert!(prompt_prefix(&json!({"prompt": ["one", "two"]}), 2).is_none());
        assert!(prompt_prefix(&json!({"prompt": "short"}), 2).is_none());
        assert!(prompt_prefix(&json!({"prompt": system}), u32::MAX).is_some());
        // A block stands for its share of the prompt's counted tokens, rounded down: 6,402
        // bytes counted as 800 tokens make 7 a block.
        let dense = prompt_prefix(&json!({"prompt": "x".repeat(6400)}), 800).expect("a prefix");
        assert_eq!((dense.hashes.len(), dense.block_tokens), (100, 7));
    }

    /// A conversation's next turn goes to the replica that served its first, though the
    /// other is as idle by then (and first in line), and prefills only what that one does
    /// not hold.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_conversations_next_turn_finds_its_first_cached() {
        let (physics, config) = h100();
        let pool = EmuPool::start(physics, config, 2, Faults::default(), None, true);
        let turn = |n: usize| {
            let mut messages = vec![json!({"role": "system", "content": "y".repeat(8000)})];
            messages
                .extend((0..n).map(|k| json!({"role": "user", "content": format!("turn {k}")})));
            prompt_prefix(&json!({ "messages": messages }), u32::MAX)
        };
        let counters = |i: usize| pool.replicas[i].lock().engine.counters().to_owned();
        // A long answer keeps replica 0 busy while the first turn goes to replica 1.
        let mut long = pool.submit(1000, 20_000, None).await.expect("starts");
        assert_eq!(long.next().await, Some(EmuEvent::Token));
        assert_eq!(
            drain(pool.submit(2010, 2, turn(1)).await.expect("starts")).await,
            2
        );
        assert_eq!(counters(1).tokens_prefilled, 2010);
        drop(long);
        for _ in 0..100 {
            if pool.replicas[0].lock().engine.outstanding() == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(pool.replicas[0].lock().engine.outstanding(), 0);
        assert_eq!(
            drain(pool.submit(2020, 2, turn(2)).await.expect("starts")).await,
            2
        );
        let (zero, one) = (counters(0), counters(1));
        // All of the first turn's prompt, its last block as far as that prompt reached.
        assert_eq!(one.tokens_cached, 2010, "{one:?}");
        assert_eq!(one.tokens_prefilled, 2010 + 2020 - 2010);
        assert_eq!((zero.tokens_cached, zero.tokens_prefilled), (0, 1000));
    }

    /// A disaggregated pool of one prefill and one decode replica of Llama 3.1 8B on an H100.
    fn split() -> std::sync::Arc<EmuPool> {
        let (physics, config) = h100();
        EmuPool::start(
            physics.clone(),
            config,
            1,
            Faults::default(),
            Some(PrefillSpec {
                physics,
                config,
                replicas: 1,
                same_domain: true,
            }),
            true,
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_prompt_runs_on_the_prefill_replica_and_the_rest_on_the_decode_replica() {
        let pool = split();
        let s = pool.submit(500, 5, None).await.expect("starts");
        assert_eq!(drain(s).await, 5);
        let pre = pool.prefill[0].lock().engine.counters().to_owned();
        let dec = pool.replicas[0].lock().engine.counters().to_owned();
        assert_eq!((pre.tokens_prefilled, pre.tokens_out), (500, 1));
        assert_eq!((dec.tokens_prefilled, dec.tokens_out), (0, 4));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_leaves_during_the_move_costs_the_decode_replica_nothing_more() {
        let pool = split();
        let mut s = pool.submit(4000, 200, None).await.expect("starts");
        assert_eq!(s.next().await, Some(EmuEvent::Token));
        drop(s);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let decode = pool.replicas[0].lock();
        assert_eq!(decode.engine.outstanding(), 0);
        assert!(decode.engine.counters().tokens_out < 199);
    }
}
