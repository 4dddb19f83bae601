//! What a connection is doing: how many requests it has in progress, and since when it has had
//! none. The stop turn and the header read timeout both ask it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// A connection's activity, shared by its requests (through their guards) and its task.
#[derive(Debug)]
pub(crate) struct Activity {
    in_progress: AtomicUsize,
    opened: Instant,
    /// When the last request in progress ended, in milliseconds since `opened`.
    idle_since_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Activity {
            in_progress: AtomicUsize::new(0),
            opened: Instant::now(),
            idle_since_ms: AtomicU64::new(0),
        })
    }

    /// Counts a request as in progress until the guard is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> InProgress {
        self.in_progress.fetch_add(1, Ordering::AcqRel);
        InProgress(self.clone())
    }

    /// Whether a request is in progress (its response may still be streaming).
    pub(crate) fn is_busy(&self) -> bool {
        self.in_progress.load(Ordering::Acquire) > 0
    }

    /// Completes once the connection has had no request in progress for `limit`: a client
    /// that does not send a complete request head in that time, from connecting or from its
    /// last response, is too slow or gone.
    ///
    /// One timer per connection, reset only when it fires, rather than hyper's header read
    /// timeout, which arms a timer for every request and costs a few percent of throughput.
    pub(crate) async fn idle_for(&self, limit: Duration) {
        loop {
            if self.is_busy() {
                tokio::time::sleep(limit).await;
                continue;
            }
            let since =
                self.opened + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
            if since.elapsed() >= limit && !self.is_busy() {
                return;
            }
            tokio::time::sleep_until(since + limit).await;
        }
    }
}

/// A request in progress on its connection.
#[derive(Debug)]
pub(crate) struct InProgress(Arc<Activity>);

impl Drop for InProgress {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.in_progress.fetch_sub(1, Ordering::AcqRel) == 1 {
            let idle_since =
                u64::try_from(activity.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
            activity.idle_since_ms.store(idle_since, Ordering::Release);
        }
    }
}
