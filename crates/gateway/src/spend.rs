//! The spend file: what is left of each key's dollars a day, kept across restarts.
//!
//! Without it a restart refills every key, so a key that has spent its day could spend it
//! again by waiting for a deploy. The file is JSON ([`SpendState`]), names keys by name and
//! never by secret, and is replaced whole: written beside itself and renamed over, so a
//! crash mid-write leaves the last good copy. A file that cannot be read stops the gateway
//! at start rather than refill every key unseen; a missing one is a first start.

use crate::keys::{Keys, SpendState};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch now.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The spend file of a gateway and the charges it last saved.
#[derive(Debug)]
pub(crate) struct SpendFile {
    path: PathBuf,
    /// [`Keys::charges`] at the last save; the mutex also keeps two saves from interleaving.
    saved: std::sync::Mutex<Option<u64>>,
}

impl SpendFile {
    /// Reads `path` into `keys`, if it exists.
    ///
    /// # Errors
    /// What is wrong with the file: unreadable, not JSON of a [`SpendState`] (with the line
    /// and column), or a sum that is not a finite number.
    pub(crate) fn open(path: &Path, keys: &Keys) -> Result<Self, String> {
        let shown = path.display();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let state: SpendState = serde_json::from_str(&text).map_err(|e| {
                    format!("{shown}: line {}, column {}: {e}", e.line(), e.column())
                })?;
                if !state.saved_at_unix_s.is_finite() {
                    return Err(format!(
                        "{shown}: field `saved_at_unix_s` must be a finite number of seconds"
                    ));
                }
                if let Some((name, _)) = state.keys.iter().find(|(_, k)| !k.usd_left.is_finite()) {
                    return Err(format!(
                        "{shown}: key `{name}`, field `usd_left` must be a finite number of dollars"
                    ));
                }
                keys.restore_spend(&state, Instant::now(), unix_now());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{shown}: cannot be read: {e}")),
        }
        Ok(SpendFile {
            path: path.to_path_buf(),
            saved: std::sync::Mutex::new(None),
        })
    }

    /// Writes what is left of every key's dollars, unless nothing was charged since the last
    /// save and `always` is false. Returns whether it wrote.
    ///
    /// # Errors
    /// The file or its temporary neighbour could not be written or renamed.
    pub(crate) fn save(&self, keys: &Keys, always: bool) -> std::io::Result<bool> {
        let mut saved = self
            .saved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let charges = keys.charges();
        if !always && *saved == Some(charges) {
            return Ok(false);
        }
        let state = keys.spend_state(Instant::now(), unix_now());
        let mut text = serde_json::to_string_pretty(&state).map_err(std::io::Error::other)?;
        text.push('\n');
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.path)?;
        *saved = Some(charges);
        Ok(true)
    }

    /// The file, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}
