//! Client keys: who may call the gateway, which public models each key may use, and how many
//! requests and tokens per minute it may spend.
//!
//! With no `[[key]]` in the configuration the gateway is open, as a local development server
//! is. With keys, every request must carry `Authorization: Bearer <key>`; the secrets come from
//! environment variables so that configuration files hold none. Each limit is a bucket that
//! holds a minute's allowance and refills continuously, so a key may burst up to its
//! per-minute limit and then spends at its average rate. Requests are charged as they arrive,
//! before their body is read ([`Key::arrive`]). Tokens (prompt and output) are held when a
//! request is admitted, once its body says what it asks: its prompt and `max_tokens` as far as
//! they are known ([`Key::admit`]), and a key in debt is refused; when
//! the request ends the hold is given back and what it spent is charged. A burst of requests
//! that each ask more than is left is so refused after the first, and a key overshoots its
//! limit by at most one request's tokens beyond what it holds.

use crate::api::ApiError;
use metrics::Counter;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One client key.
#[derive(Debug)]
pub struct Key {
    /// Its name, for errors and metrics; never the secret.
    pub name: String,
    /// The public models it may call; empty: all.
    pub models: BTreeSet<String>,
    /// Requests per minute, if limited.
    pub requests_per_minute: Option<f64>,
    /// Tokens (prompt and output) per minute, if limited.
    pub tokens_per_minute: Option<f64>,
    requests: Mutex<Bucket>,
    tokens: Mutex<Bucket>,
    accepted: Counter,
    limited: Counter,
    tokens_in: Counter,
    tokens_out: Counter,
}

/// An allowance that refills at `per_minute / 60` a second up to `per_minute`.
#[derive(Debug)]
struct Bucket {
    level: f64,
    at: Instant,
}

impl Bucket {
    fn full(per_minute: Option<f64>) -> Mutex<Self> {
        Mutex::new(Bucket {
            level: per_minute.unwrap_or(0.0),
            at: Instant::now(),
        })
    }

    /// Refills for the time since the last look, then takes `amount` if the level is at
    /// least `need`; otherwise says in how many whole seconds it will be.
    fn take(&mut self, per_minute: f64, now: Instant, need: f64, amount: f64) -> Result<(), u64> {
        let per_s = per_minute / 60.0;
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + elapsed * per_s).min(per_minute);
        self.at = now;
        if self.level >= need {
            self.level -= amount;
            Ok(())
        } else {
            Err(((need - self.level) / per_s).ceil().max(1.0) as u64)
        }
    }
}

fn lock(m: &Mutex<Bucket>) -> std::sync::MutexGuard<'_, Bucket> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Which of a key's limits refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
}

impl Key {
    /// A key named `name` that may call `models` (empty: all) at up to `requests_per_minute`
    /// requests and `tokens_per_minute` tokens.
    pub fn new(
        name: &str,
        models: BTreeSet<String>,
        requests_per_minute: Option<f64>,
        tokens_per_minute: Option<f64>,
    ) -> Self {
        Key {
            name: name.to_string(),
            models,
            requests_per_minute,
            tokens_per_minute,
            requests: Bucket::full(requests_per_minute),
            tokens: Bucket::full(tokens_per_minute),
            accepted: crate::metrics::key_requests(name, "admitted"),
            limited: crate::metrics::key_requests(name, "rate_limited"),
            tokens_in: crate::metrics::key_tokens(name, "input"),
            tokens_out: crate::metrics::key_tokens(name, "output"),
        }
    }

    /// Whether the key may call `model`.
    pub fn allows(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.contains(model)
    }

    /// Charges the tokens of a request that ended at `now`.
    pub fn charge(&self, input: u64, output: u64, now: Instant) {
        self.tokens_in.increment(input);
        self.tokens_out.increment(output);
        if let Some(tpm) = self.tokens_per_minute {
            // Counts come from providers' usage too: no sum of two may overflow.
            let spent = input.saturating_add(output) as f64;
            // Taking with no threshold always succeeds and may leave the bucket in debt.
            let _ = lock(&self.tokens).take(tpm, now, f64::NEG_INFINITY, spent);
        }
    }
}

/// Tokens held against a key's allowance for a request in flight; given back when dropped,
/// as the request ends (what it spent is charged then, by [`Key::charge`]).
#[derive(Debug)]
pub struct Held {
    key: Arc<Key>,
    tokens: f64,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(tpm) = self.key.tokens_per_minute {
            let mut b = lock(&self.key.tokens);
            b.level = (b.level + self.tokens).min(tpm);
        }
    }
}

impl Key {
    /// Counts a request refused outright, as too large for the key's whole minute.
    pub(crate) fn refused_too_large(&self) {
        self.limited.increment(1);
    }

    /// Takes one request from the key's allowance at `now`, as the request arrives: every
    /// request the key sends counts, whatever its body turns out to ask. Otherwise the
    /// whole seconds until it would take one.
    pub fn arrive(&self, now: Instant) -> Result<(), (Limit, u64)> {
        if let Some(rpm) = self.requests_per_minute {
            lock(&self.requests)
                .take(rpm, now, 1.0, 1.0)
                .map_err(|s| (Limit::Requests, s))
                .inspect_err(|_| self.limited.increment(1))?;
        }
        Ok(())
    }

    /// Admits a request that arrived ([`Key::arrive`]) and may spend `tokens` (its prompt
    /// and the output it may ask), once its body says so: the key must owe no tokens, and
    /// `tokens` are held against its allowance until the request ends. Otherwise the whole
    /// seconds until it would admit.
    pub fn admit(self: &Arc<Self>, tokens: u64, now: Instant) -> Result<Held, (Limit, u64)> {
        let Some(tpm) = self.tokens_per_minute else {
            self.accepted.increment(1);
            return Ok(Held {
                key: Arc::clone(self),
                tokens: 0.0,
            });
        };
        let amount = tokens as f64;
        lock(&self.tokens)
            .take(tpm, now, 0.0, amount)
            .map_err(|s| (Limit::Tokens, s))
            .inspect_err(|_| self.limited.increment(1))?;
        self.accepted.increment(1);
        Ok(Held {
            key: Arc::clone(self),
            tokens: amount,
        })
    }
}

/// Every key, by secret. Its `Debug` output names the keys and never shows a secret.
#[derive(Default)]
pub struct Keys {
    by_secret: HashMap<String, Arc<Key>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.by_secret.values().map(|k| k.name.as_str()).collect();
        names.sort_unstable();
        f.debug_struct("Keys").field("names", &names).finish()
    }
}

impl Keys {
    /// Adds `key` under `secret`.
    pub fn insert(&mut self, secret: String, key: Key) {
        self.by_secret.insert(secret, Arc::new(key));
    }

    /// Whether any key is configured; without keys the gateway is open.
    pub fn enabled(&self) -> bool {
        !self.by_secret.is_empty()
    }

    /// The key a request presents in its `Authorization` header value.
    ///
    /// # Errors
    /// A 401 in OpenAI's shape when the header is missing, not a bearer token, or unknown.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Arc<Key>, ApiError> {
        // The scheme name is case-insensitive (RFC 9110, section 11.1).
        authorization
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .and_then(|(_, secret)| self.by_secret.get(secret.trim()))
            .cloned()
            .ok_or_else(ApiError::unauthorized)
    }
}
