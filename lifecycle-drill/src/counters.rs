//! What happened to the requests, counted by the load tasks as each request ends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Counters shared by every load task.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) sent: AtomicU64,
    pub(crate) succeeded: AtomicU64,
    pub(crate) non_2xx: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) dropped: AtomicU64,
    /// The first few errors of dropped requests, for the summary.
    pub(crate) drop_errors: Mutex<Vec<String>>,
    /// When a connect was first refused after the signal: the listener had closed.
    pub(crate) listener_closed: Mutex<Option<Instant>>,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// A request sent on an open connection that got no response.
    pub(crate) fn dropped(&self, error: String) {
        Self::add(&self.dropped);
        let mut errors = self.drop_errors.lock().unwrap_or_else(|e| e.into_inner());
        if errors.len() < 10 {
            errors.push(error);
        }
    }

    /// A connect refused; after the signal, the first marks the listener closed.
    pub(crate) fn refused(&self, signalled: bool) {
        Self::add(&self.refused);
        if signalled {
            self.listener_closed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(Instant::now);
        }
    }
}
