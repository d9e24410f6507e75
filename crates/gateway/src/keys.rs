//! Client keys: who may call the gateway, which public models each key may use, and how many
//! requests and tokens a minute and dollars a day it may spend.
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
//!
//! Dollars are a third allowance, a day's (LiteLLM's `max_budget` over a `budget_duration`,
//! refilled continuously rather than reset), held and charged as tokens are: a request holds
//! what its prompt and `max_tokens` would cost at the dearest deployment of its model while
//! it runs, and is charged its tokens at the prices of the deployment that served it when it
//! ends. A key that owes dollars is refused (OpenAI's `insufficient_quota`) until the refill
//! has paid them back, and a request that may cost more than the whole day is refused
//! outright; the key overshoots its day by at most one request's cost beyond what its
//! requests hold (a request without `max_tokens` holds its prompt's). The minute allowances
//! live in memory; what is left of each key's dollars can be kept in a file across restarts
//! ([`Keys::spend_state`], [`Keys::restore_spend`]).

use crate::api::ApiError;
use metrics::{Counter, Gauge};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Dollars per day, if limited.
    pub usd_per_day: Option<f64>,
    requests: Mutex<Bucket>,
    tokens: Mutex<Bucket>,
    dollars: Mutex<Bucket>,
    /// Bumped whenever the key is charged dollars, so that a saver writes only changes.
    charges: AtomicU64,
    accepted: Counter,
    limited: Counter,
    quota_refused: Counter,
    tokens_in: Counter,
    tokens_out: Counter,
    spent: Gauge,
}

/// Seconds in the window of the dollar allowance.
pub(crate) const DAY_S: f64 = 86_400.0;

/// Dollars a key has left `elapsed_s` seconds after it had `usd_left`, refilling at
/// `per_day` a day up to a whole day's: what a spend file's keys regain while unseen.
pub(crate) fn refilled(usd_left: f64, elapsed_s: f64, per_day: f64) -> f64 {
    (usd_left + elapsed_s * per_day / DAY_S).min(per_day)
}

/// An allowance for a window of time, which refills continuously at the allowance over
/// the window, up to the allowance.
#[derive(Debug)]
struct Bucket {
    level: f64,
    at: Instant,
    /// Taken by requests in flight, which give it back as they end ([`Held`]).
    held: f64,
}

impl Bucket {
    fn full(allowance: Option<f64>) -> Mutex<Self> {
        Mutex::new(Bucket {
            level: allowance.unwrap_or(0.0),
            at: Instant::now(),
            held: 0.0,
        })
    }

    /// Refills `allowance` a `window_s` seconds for the time since the last look, then takes
    /// `amount` if the level is at least `need`; otherwise says in how many whole seconds it
    /// will be.
    fn take(
        &mut self,
        (allowance, window_s): (f64, f64),
        now: Instant,
        need: f64,
        amount: f64,
    ) -> Result<(), u64> {
        let per_s = allowance / window_s;
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + elapsed * per_s).min(allowance);
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
    /// Dollars per day.
    Dollars,
}

/// What a key may spend, each `None` where it is not limited.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allowance {
    /// Requests per minute.
    pub requests_per_minute: Option<f64>,
    /// Prompt and output tokens per minute.
    pub tokens_per_minute: Option<f64>,
    /// Dollars per day.
    pub usd_per_day: Option<f64>,
}

impl Key {
    /// A key named `name` that may call `models` (empty: all) within `allowance`.
    pub fn new(name: &str, models: BTreeSet<String>, allowance: Allowance) -> Self {
        Key {
            name: name.to_string(),
            models,
            requests_per_minute: allowance.requests_per_minute,
            tokens_per_minute: allowance.tokens_per_minute,
            usd_per_day: allowance.usd_per_day,
            requests: Bucket::full(allowance.requests_per_minute),
            tokens: Bucket::full(allowance.tokens_per_minute),
            dollars: Bucket::full(allowance.usd_per_day),
            charges: AtomicU64::new(0),
            accepted: crate::metrics::key_requests(name, "admitted"),
            limited: crate::metrics::key_requests(name, "rate_limited"),
            quota_refused: crate::metrics::key_requests(name, "insufficient_quota"),
            tokens_in: crate::metrics::key_tokens(name, "input"),
            tokens_out: crate::metrics::key_tokens(name, "output"),
            spent: crate::metrics::key_spend(name),
        }
    }

    /// Whether the key may call `model`.
    pub fn allows(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.contains(model)
    }

    /// Charges the tokens of a request that ended at `now`, and the dollars they cost.
    pub fn charge(&self, input: u64, output: u64, usd: f64, now: Instant) {
        self.tokens_in.increment(input);
        self.tokens_out.increment(output);
        // Counts come from providers' usage too: no sum of two may overflow.
        let spent = input.saturating_add(output) as f64;
        // Taking with no threshold always succeeds and may leave a bucket in debt.
        if let Some(tpm) = self.tokens_per_minute {
            let _ = lock(&self.tokens).take((tpm, 60.0), now, f64::NEG_INFINITY, spent);
        }
        if usd > 0.0 {
            self.spent.increment(usd);
            if let Some(per_day) = self.usd_per_day {
                let _ = lock(&self.dollars).take((per_day, DAY_S), now, f64::NEG_INFINITY, usd);
                self.charges.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Tokens held against a key's allowance for a request in flight; given back when dropped,
/// as the request ends (what it spent is charged then, by [`Key::charge`]).
#[derive(Debug)]
pub struct Held {
    key: Arc<Key>,
    tokens: f64,
    usd: f64,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(tpm) = self.key.tokens_per_minute {
            let mut b = lock(&self.key.tokens);
            b.level = (b.level + self.tokens).min(tpm);
        }
        if let Some(per_day) = self.key.usd_per_day {
            let mut b = lock(&self.key.dollars);
            b.level = (b.level + self.usd).min(per_day);
            b.held -= self.usd;
        }
    }
}

impl Key {
    /// Counts a request refused outright, as too large for the key's whole minute.
    pub(crate) fn refused_too_large(&self) {
        self.limited.increment(1);
    }

    /// Counts a request refused outright, as dearer than the key's whole day.
    pub(crate) fn refused_too_costly(&self) {
        self.quota_refused.increment(1);
    }

    /// Takes one request from the key's allowance at `now`, as the request arrives: every
    /// request the key sends counts, whatever its body turns out to ask. Otherwise the
    /// whole seconds until it would take one.
    pub fn arrive(&self, now: Instant) -> Result<(), (Limit, u64)> {
        if let Some(rpm) = self.requests_per_minute {
            lock(&self.requests)
                .take((rpm, 60.0), now, 1.0, 1.0)
                .map_err(|s| (Limit::Requests, s))
                .inspect_err(|_| self.limited.increment(1))?;
        }
        Ok(())
    }

    /// Admits a request that arrived ([`Key::arrive`]) and may spend `tokens` (its prompt
    /// and the output it may ask) costing up to `usd`, once its body says so: the key must
    /// owe no tokens and no dollars, and both are held against its allowances until the
    /// request ends. Otherwise the whole seconds until it would admit.
    pub fn admit(
        self: &Arc<Self>,
        (tokens, usd): (u64, f64),
        now: Instant,
    ) -> Result<Held, (Limit, u64)> {
        let mut held = Held {
            key: Arc::clone(self),
            tokens: 0.0,
            usd: 0.0,
        };
        if let Some(tpm) = self.tokens_per_minute {
            let amount = tokens as f64;
            lock(&self.tokens)
                .take((tpm, 60.0), now, 0.0, amount)
                .map_err(|s| (Limit::Tokens, s))
                .inspect_err(|_| self.limited.increment(1))?;
            held.tokens = amount;
        }
        // Refused for its dollars, the request gives its tokens back as `held` drops.
        if let Some(per_day) = self.usd_per_day {
            let mut b = lock(&self.dollars);
            b.take((per_day, DAY_S), now, 0.0, usd)
                .map_err(|s| (Limit::Dollars, s))
                .inspect_err(|_| self.quota_refused.increment(1))?;
            b.held += usd;
            held.usd = usd;
        }
        self.accepted.increment(1);
        Ok(held)
    }
}

/// What is left of each key's dollars at a moment, as a spend file keeps it: by key name
/// (never its secret), what the key may still spend, negative for a debt. Dollars held by
/// requests in flight count as left, as those requests end unanswered with a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpendState {
    /// Seconds since the Unix epoch when it was taken.
    pub saved_at_unix_s: f64,
    /// By key name, each once.
    #[serde(deserialize_with = "each_once")]
    pub keys: BTreeMap<String, KeySpend>,
}

/// A map of keys read from JSON that refuses a key named twice, where a plain map would keep
/// the last silently.
fn each_once<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, KeySpend>, D::Error> {
    struct Once;
    impl<'de> serde::de::Visitor<'de> for Once {
        type Value = BTreeMap<String, KeySpend>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object of key names")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((name, k)) = m.next_entry::<String, KeySpend>()? {
                if out.contains_key(&name) {
                    return Err(serde::de::Error::custom(format!(
                        "key `{name}` is named twice"
                    )));
                }
                out.insert(name, k);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Once)
}

/// One key's dollars in a [`SpendState`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpend {
    /// Dollars left of its day's allowance; negative: owed.
    pub usd_left: f64,
    /// Its allowance when saved, at which a key no longer configured keeps refilling.
    pub usd_per_day: f64,
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

    /// Charges in dollars so far, over all keys: unchanged, nothing new to save.
    pub fn charges(&self) -> u64 {
        self.by_secret
            .values()
            .map(|k| k.charges.load(Ordering::Relaxed))
            .sum()
    }

    /// What is left of each key's dollars at `now`, which is `unix_s` seconds since the
    /// epoch; keys without a dollar allowance are left out.
    pub fn spend_state(&self, now: Instant, unix_s: f64) -> SpendState {
        let keys = self
            .by_secret
            .values()
            .filter_map(|k| {
                let per_day = k.usd_per_day?;
                let mut b = lock(&k.dollars);
                // Brings the refill up to `now`; taking nothing always succeeds.
                let _ = b.take((per_day, DAY_S), now, f64::NEG_INFINITY, 0.0);
                let usd_left = (b.level + b.held).min(per_day);
                Some((
                    k.name.clone(),
                    KeySpend {
                        usd_left,
                        usd_per_day: per_day,
                    },
                ))
            })
            .collect();
        SpendState {
            saved_at_unix_s: unix_s,
            keys,
        }
    }

    /// Sets each key's dollars to what `state` left it, refilled for the time from when it
    /// was saved to `unix_s` (at the key's allowance now, up to it). Keys `state` does not
    /// name start full; names no key (with dollars) has are left to the caller, which the
    /// spend file keeps for a later run.
    pub fn restore_spend(&self, state: &SpendState, now: Instant, unix_s: f64) {
        let elapsed = (unix_s - state.saved_at_unix_s).max(0.0);
        for k in self.by_secret.values() {
            let (Some(per_day), Some(saved)) = (k.usd_per_day, state.keys.get(&k.name)) else {
                continue;
            };
            let mut b = lock(&k.dollars);
            b.level = refilled(saved.usd_left, elapsed, per_day);
            b.at = now;
        }
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
