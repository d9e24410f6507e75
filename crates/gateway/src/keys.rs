//! Client keys: who may call the gateway, which public models each key may use, and how many
//! requests per minute it may send.
//!
//! With no `[[key]]` in the configuration the gateway is open, as a local development server
//! is. With keys, every request must carry `Authorization: Bearer <key>`; the secrets come from
//! environment variables so that configuration files hold none. Each key's request rate is a
//! token bucket that holds a minute's allowance and refills continuously, so a key may burst up
//! to its per-minute limit and then sends at its average rate.

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
    bucket: Mutex<Bucket>,
    accepted: Counter,
    limited: Counter,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Key {
    /// A key named `name` that may call `models` (empty: all) at up to `requests_per_minute`.
    pub fn new(name: &str, models: BTreeSet<String>, requests_per_minute: Option<f64>) -> Self {
        Key {
            name: name.to_string(),
            models,
            requests_per_minute,
            bucket: Mutex::new(Bucket {
                tokens: requests_per_minute.unwrap_or(0.0),
                at: Instant::now(),
            }),
            accepted: crate::metrics::key_requests(name, "accepted"),
            limited: crate::metrics::key_requests(name, "rate_limited"),
        }
    }

    /// Whether the key may call `model`.
    pub fn allows(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.contains(model)
    }

    /// Takes one request from the key's allowance at `now`, or says in how many whole seconds
    /// one will be available.
    pub fn admit(&self, now: Instant) -> Result<(), u64> {
        let Some(rpm) = self.requests_per_minute else {
            self.accepted.increment(1);
            return Ok(());
        };
        let per_s = rpm / 60.0;
        let mut b = self
            .bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * per_s).min(rpm);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            self.accepted.increment(1);
            Ok(())
        } else {
            self.limited.increment(1);
            Err(((1.0 - b.tokens) / per_s).ceil().max(1.0) as u64)
        }
    }
}

/// Every key, by secret.
#[derive(Debug, Default)]
pub struct Keys {
    by_secret: HashMap<String, Arc<Key>>,
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
        authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .and_then(|secret| self.by_secret.get(secret.trim()))
            .cloned()
            .ok_or_else(ApiError::unauthorized)
    }
}
