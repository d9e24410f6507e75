//! A fine sleep for emulated steps shorter than a few milliseconds.
//!
//! Tokio's timer ticks in whole milliseconds, so a task that sleeps for a wafer-scale step of
//! 0.54 ms wakes a millisecond late; the deadlines, kept from step to step, make up the time,
//! and the tokens of two steps go out together. The mean pace is right, but a benchmark's
//! median inter-token latency reads 0.01 ms. Here a few threads each keep their pending
//! deadlines in a heap and wait for the earliest on an OS timer (a futex wait, good to tens of
//! microseconds), then wake the task that set it; deadlines go to the threads in turn, so a
//! large pool of fast replicas does not queue behind one.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Steps at least this long sleep on tokio's timer: a millisecond late is a small share of
/// them, and the thread is spared their wake-ups.
pub(crate) const FINE_BELOW: Duration = Duration::from_millis(5);

/// A deadline and the task waiting for it.
struct Entry {
    at: Instant,
    seq: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    /// The earliest deadline first out of a max-heap.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// One timer thread: wakes each entry it is sent at its deadline.
fn run(rx: mpsc::Receiver<Entry>) {
    let mut heap: BinaryHeap<Entry> = BinaryHeap::new();
    loop {
        while heap.peek().is_some_and(|e| e.at <= Instant::now()) {
            if let Some(e) = heap.pop() {
                // A task that stopped waiting has dropped its receiver.
                let _ = e.wake.send(());
            }
        }
        // Measured after the wake-ups, so their time is not slept again.
        let next = match heap.peek() {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(e) => rx.recv_timeout(e.at.saturating_duration_since(Instant::now())),
        };
        match next {
            Ok(e) => heap.push(e),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// The timer threads' inboxes, started on first use: up to four, one a core.
fn inboxes() -> &'static [Mutex<Sender<Entry>>] {
    static INBOXES: OnceLock<Vec<Mutex<Sender<Entry>>>> = OnceLock::new();
    INBOXES.get_or_init(|| {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        (0..n)
            .filter_map(|i| {
                let (tx, rx) = mpsc::channel::<Entry>();
                std::thread::Builder::new()
                    .name(format!("switchyard-clock-{i}"))
                    .spawn(move || run(rx))
                    .ok()
                    .map(|_| Mutex::new(tx))
            })
            .collect()
    })
}

/// Sleeps until `deadline`, to within tens of microseconds; on tokio's timer if the thread
/// could not be started.
pub(crate) async fn sleep_until(deadline: tokio::time::Instant) {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let at = deadline.into_std();
    if at <= Instant::now() {
        return;
    }
    let (wake, woken) = oneshot::channel();
    let entry = Entry {
        at,
        seq: SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        wake,
    };
    let all = inboxes();
    let sent = all
        .get(entry.seq as usize % all.len().max(1))
        .and_then(|m| m.lock().ok())
        .is_some_and(|tx| tx.send(entry).is_ok());
    if !sent || woken.await.is_err() {
        tokio::time::sleep_until(deadline).await;
    }
}
