//! The spend file: what is left of each key's dollars a day, kept across restarts.
//!
//! Without it a restart refills every key, so a key that has spent its day could spend it
//! again by waiting for a deploy. The file is JSON ([`SpendState`]), names keys by name and
//! never by secret, and is replaced whole: written beside itself, flushed to disk and
//! renamed over, so a crash mid-write leaves the last good copy. A file that cannot be read
//! stops the gateway at start rather than refill every key unseen; a missing one is a first
//! start. One gateway at a time holds a file: a second is refused at start, since two
//! writers would each overwrite the other's spending.

use crate::keys::{KeySpend, Keys, SpendState};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch now.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The most dollars a key may have left or owe in the file, as `usd_per_day` allows.
const MOST_USD: f64 = 1e12;

/// The spend file of a gateway.
#[derive(Debug)]
pub(crate) struct SpendFile {
    /// The file written, a link's target where the configuration names a link.
    path: PathBuf,
    /// Held open, and locked, for as long as the gateway runs.
    _lock: std::fs::File,
    state: std::sync::Mutex<Saved>,
}

/// What the last save wrote.
#[derive(Debug, Default)]
struct Saved {
    /// [`Keys::charges`] then; `None` before the first save.
    charges: Option<u64>,
    /// Keys the file names that this configuration has not (or not with dollars): kept,
    /// refilling at their own rate, until full, so that a key left out of one run does not
    /// come back with its debt forgotten.
    others: BTreeMap<String, KeySpend>,
    /// When `others` were last refilled.
    others_at: f64,
    /// The last save is done: the process is ending, and no save may start a file it
    /// would not finish.
    closed: bool,
}

/// When [`SpendFile::save`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Save {
    /// Where keys were charged since the last save.
    IfCharged,
    /// Whatever was charged.
    Now,
    /// Now, and never again: the process ends.
    Last,
}

impl SpendFile {
    /// Locks `path` for this gateway and reads it into `keys`, if it exists.
    ///
    /// # Errors
    /// What is wrong with the file: held by another gateway, unreadable or read-only, not
    /// JSON of a [`SpendState`] (with the line and column), or a sum out of range.
    pub(crate) fn open(path: &Path, keys: &Keys) -> Result<Self, String> {
        let path = resolve(path);
        let shown = path.display();
        let lock = lock(&path).map_err(|e| format!("{shown}: {e}"))?;
        let mut saved = Saved {
            others_at: unix_now(),
            ..Saved::default()
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let meta = std::fs::metadata(&path).map_err(|e| format!("{shown}: {e}"))?;
                if meta.permissions().readonly() {
                    return Err(format!(
                        "{shown}: is read-only, so the keys' spending could not be kept"
                    ));
                }
                let state = parse(&text).map_err(|e| format!("{shown}: {e}"))?;
                keys.restore_spend(&state, Instant::now(), saved.others_at);
                let mine = keys.spend_state(Instant::now(), saved.others_at);
                saved.others = state
                    .keys
                    .into_iter()
                    .filter(|(name, _)| !mine.keys.contains_key(name))
                    .collect();
                saved.others_at = state.saved_at_unix_s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{shown}: cannot be read: {e}")),
        }
        Ok(SpendFile {
            path,
            _lock: lock,
            state: std::sync::Mutex::new(saved),
        })
    }

    /// Writes what is left of every key's dollars, as `when` says; after the last save,
    /// nothing. Returns whether it wrote.
    ///
    /// # Errors
    /// The file or its temporary neighbour could not be written, flushed or renamed (the
    /// neighbour is then removed).
    pub(crate) fn save(&self, keys: &Keys, when: Save) -> std::io::Result<bool> {
        let mut saved = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let charges = keys.charges();
        if saved.closed || (when == Save::IfCharged && saved.charges == Some(charges)) {
            return Ok(false);
        }
        saved.closed = when == Save::Last;
        let now = unix_now();
        let mut state = keys.spend_state(Instant::now(), now);
        // Keys of other runs refill at their own rate; full, they are as a new key is, and
        // are dropped.
        let elapsed = (now - saved.others_at).max(0.0);
        saved.others_at = now;
        saved.others.retain(|_, k| {
            k.usd_left = crate::keys::refilled(k.usd_left, elapsed, k.usd_per_day);
            k.usd_left < k.usd_per_day
        });
        for (name, k) in &saved.others {
            state.keys.entry(name.clone()).or_insert(*k);
        }
        let mut text = serde_json::to_string_pretty(&state).map_err(std::io::Error::other)?;
        text.push('\n');
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(format!(".{}.tmp", std::process::id()));
        let tmp = PathBuf::from(tmp);
        write_over(&tmp, &self.path, text.as_bytes()).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
        saved.charges = Some(charges);
        Ok(true)
    }

    /// The file, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// The file a configured path names: a symbolic link's target, through every link of a
/// chain, so that a link into a persistent volume is written through rather than replaced by
/// a file of its own, and is locked where its target is.
fn resolve(path: &Path) -> PathBuf {
    // As many links as Linux follows in one path before it gives up (ELOOP).
    const MOST_LINKS: usize = 40;
    let mut at = path.to_path_buf();
    for _ in 0..MOST_LINKS {
        let is_link = std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink());
        if !is_link {
            break;
        }
        // The target of a link to a file yet to be made, relative to the link's directory.
        match std::fs::read_link(&at) {
            Ok(t) if t.is_relative() => at = at.parent().unwrap_or(Path::new("")).join(t),
            Ok(t) => at = t,
            Err(_) => break,
        }
    }
    at
}

/// Takes the lock beside `path` (`<path>.lock`, kept), which the operating system gives
/// back when the process ends, however it ends.
fn lock(path: &Path) -> Result<std::fs::File, String> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&name)
        .map_err(|e| {
            format!(
                "its lock file {} cannot be made (the directory must exist and be writable): {e}",
                Path::new(&name).display()
            )
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(
            "another gateway keeps its keys' spending in this file; give each gateway its own"
                .into(),
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot be locked: {e}")),
    }
}

/// Writes `bytes` to `tmp`, with the permissions of `path` where it exists, flushes them to
/// disk and renames `tmp` over `path`, then flushes the directory's entry.
fn write_over(tmp: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::File::create(tmp)?;
    if let Ok(meta) = std::fs::metadata(path) {
        f.set_permissions(meta.permissions())?;
        // The file keeps its owner where the process may give it (root saving a service
        // user's file); otherwise that user could not read it back.
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt as _;
            let _ = std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid()));
        }
    }
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(tmp, path)?;
    // The rename is durable once the directory is; where a directory cannot be opened to
    // flush it (not every system allows it), the file's own flush stands.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads a spend file's text.
///
/// # Errors
/// Not JSON of a [`SpendState`], with the line and column; a key named twice; a time or sum
/// out of range.
fn parse(text: &str) -> Result<SpendState, String> {
    let state: SpendState = serde_json::from_str(text).map_err(|e| {
        // serde_json ends its message with the position, which is put first here.
        let message = e.to_string();
        let message = message
            .rfind(" at line ")
            .map_or(message.as_str(), |at| &message[..at])
            .replace(
                "struct SpendState",
                "an object of `saved_at_unix_s` and `keys`",
            )
            .replace(
                "struct KeySpend",
                "an object of `usd_left` and `usd_per_day`",
            );
        format!("line {}, column {}: {message}", e.line(), e.column())
    })?;
    if !state.saved_at_unix_s.is_finite() || state.saved_at_unix_s < 0.0 {
        return Err("field `saved_at_unix_s` must be a number of seconds from 0".into());
    }
    for (name, k) in &state.keys {
        if !(-MOST_USD..=MOST_USD).contains(&k.usd_left) {
            return Err(format!(
                "key `{name}`, field `usd_left` must be from -10^12 to 10^12 dollars"
            ));
        }
        if !(0.01..=MOST_USD).contains(&k.usd_per_day) {
            return Err(format!(
                "key `{name}`, field `usd_per_day` must be from 0.01 to 10^12 dollars"
            ));
        }
    }
    Ok(state)
}
