//! The emulated provider: the simulator's replica engine driven by the wall clock.
//!
//! Each replica is a task that asks the engine for its next step, sleeps for the step's
//! duration (as the performance model predicts it), and hands the tokens of the finished step
//! to the requests' streams. Deadlines accumulate from the previous step's deadline rather
//! than from when the task woke, so timer slack does not add up over a long generation.
//! Faults (an error rate, latency spikes, an outage window) make it fail on purpose.

use crate::config::Faults;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_replica::{EngineConfig, Event, Physics, Replica, Request};
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

struct Shared {
    engine: Replica<Physics<'static>>,
    streams: HashMap<u64, mpsc::UnboundedSender<EmuEvent>>,
    next_id: u64,
}

struct EmuReplica {
    state: Mutex<Shared>,
    wake: Notify,
}

/// A pool of emulated replicas of one model on one system.
pub struct EmuPool {
    replicas: Vec<Arc<EmuReplica>>,
    faults: Faults,
    started: Instant,
    draws: Mutex<u64>,
}

impl std::fmt::Debug for EmuPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmuPool")
            .field("replicas", &self.replicas.len())
            .field("faults", &self.faults)
            .finish()
    }
}

/// The tokens of one emulated request as they come. Dropping it cancels the request.
#[derive(Debug)]
pub struct EmuStream {
    rx: mpsc::UnboundedReceiver<EmuEvent>,
    replica: Arc<EmuReplica>,
    id: u64,
    done: bool,
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
}

impl Drop for EmuStream {
    fn drop(&mut self) {
        if !self.done {
            if let Ok(mut s) = self.replica.state.lock() {
                s.engine.cancel(self.id);
                s.streams.remove(&self.id);
            }
        }
    }
}

impl EmuPool {
    /// Starts `replicas` replica tasks on the current tokio runtime.
    pub fn start(
        physics: Physics<'static>,
        config: EngineConfig,
        replicas: u32,
        faults: Faults,
    ) -> Arc<Self> {
        let pool = Arc::new(EmuPool {
            replicas: (0..replicas.max(1))
                .map(|_| {
                    Arc::new(EmuReplica {
                        state: Mutex::new(Shared {
                            engine: Replica::new(physics.clone(), config),
                            streams: HashMap::new(),
                            next_id: 0,
                        }),
                        wake: Notify::new(),
                    })
                })
                .collect(),
            faults,
            started: Instant::now(),
            draws: Mutex::new(0x5EED),
        });
        for r in &pool.replicas {
            tokio::spawn(drive(Arc::clone(r)));
        }
        pool
    }

    /// A uniform draw in [0, 1) for fault injection (SplitMix64; repeatable per process).
    fn draw(&self) -> f64 {
        let mut g = self
            .draws
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        switchyard_router::unit(switchyard_router::splitmix64(&mut g))
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

    /// Starts a request of `prompt` tokens asking for `output` tokens on the least-loaded
    /// replica.
    ///
    /// # Errors
    /// An injected fault, the outage window, or a request too long for the KV cache.
    pub async fn submit(&self, prompt: u32, output: u32) -> Result<EmuStream, EmuError> {
        if self.in_outage() {
            return Err(EmuError::Outage);
        }
        if self.faults.error_rate > 0.0 && self.draw() < self.faults.error_rate {
            return Err(EmuError::Injected);
        }
        if self.faults.spike_rate > 0.0 && self.draw() < self.faults.spike_rate {
            tokio::time::sleep(Duration::from_millis(self.faults.spike_ms)).await;
        }
        let replica = self
            .replicas
            .iter()
            .min_by_key(|r| {
                r.state
                    .lock()
                    .map(|s| s.engine.outstanding())
                    .unwrap_or(usize::MAX)
            })
            .cloned()
            .ok_or(EmuError::Outage)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let id = {
            let mut s = replica
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let id = s.next_id;
            s.next_id += 1;
            s.engine
                .submit(Request { id, prompt, output })
                .map_err(|e| EmuError::TooLong(e.to_string()))?;
            s.streams.insert(id, tx);
            id
        };
        replica.wake.notify_one();
        Ok(EmuStream {
            rx,
            replica,
            id,
            done: false,
        })
    }
}

/// One replica's clock: plan a step, sleep its predicted duration, deliver its tokens. The
/// task lives as long as the runtime that serves the gateway.
async fn drive(r: Arc<EmuReplica>) {
    let mut deadline = Instant::now();
    loop {
        let step = {
            let mut s = r
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            s.engine.start_step(&mut |_| {})
        };
        let Some(dt) = step else {
            r.wake.notified().await;
            deadline = Instant::now();
            continue;
        };
        // Keep to the schedule unless far behind it (a stalled runtime), then restart it.
        deadline =
            deadline.max(Instant::now() - Duration::from_millis(5)) + Duration::from_secs_f64(dt);
        tokio::time::sleep_until(deadline).await;
        let mut s = r
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Shared {
            engine, streams, ..
        } = &mut *s;
        engine.finish_step(&mut |e| match e {
            Event::FirstToken(id) | Event::Token(id) => {
                if let Some(tx) = streams.get(&id) {
                    let _ = tx.send(EmuEvent::Token);
                }
            }
            Event::Finished(id) => {
                if let Some(tx) = streams.remove(&id) {
                    let _ = tx.send(EmuEvent::Done);
                }
            }
            Event::Scheduled(_) | Event::Preempted(_) => {}
        });
    }
}
