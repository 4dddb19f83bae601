//! What a connection is doing: how many requests it has in progress, whether a response's bytes
//! are still waiting to be written, since when it has had neither, and whether it speaks
//! HTTP/2. The stop turn and the header read timeout both ask it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::phase::Phases;
use crate::shutdown_signal::ShutdownSignal;
use crate::stats::HttpStats;

/// A connection's activity, shared by its requests (through their guards), its socket
/// ([`ConnIo`](crate::io::ConnIo)) and its task.
///
/// It also holds what every request of the connection needs (the server's counters, the
/// handlers' [`ShutdownSignal`], the body read timeout), so that a request clones one `Arc`,
/// this one, rather than one per thing.
#[derive(Debug)]
pub(crate) struct Activity {
    stats: HttpStats,
    signal: ShutdownSignal,
    phases: Arc<Phases>,
    body_read_timeout: Option<Duration>,
    in_progress: AtomicUsize,
    /// Whether the socket's last write returned `Pending`: bytes of a response (whose body
    /// hyper may already have dropped) still sit in hyper's buffer.
    write_blocked: AtomicBool,
    /// Whether the client sent the HTTP/2 preface.
    http2: AtomicBool,
    opened: Instant,
    /// When the connection last stopped being busy, in milliseconds since `opened`.
    idle_since_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new(
        stats: HttpStats,
        signal: ShutdownSignal,
        phases: Arc<Phases>,
        body_read_timeout: Option<Duration>,
    ) -> Arc<Self> {
        Arc::new(Activity {
            stats,
            signal,
            phases,
            body_read_timeout,
            in_progress: AtomicUsize::new(0),
            write_blocked: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            opened: Instant::now(),
            idle_since_ms: AtomicU64::new(0),
        })
    }

    /// Counts a request as in progress, for the connection and the server, until the guard
    /// is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> InProgress {
        self.in_progress.fetch_add(1, Ordering::AcqRel);
        self.stats.request_began();
        InProgress(self.clone())
    }

    /// A fresh activity for a new connection of the same server.
    pub(crate) fn for_connection(&self) -> Arc<Self> {
        Activity::new(
            self.stats.clone(),
            self.signal.clone(),
            self.phases.clone(),
            self.body_read_timeout,
        )
    }

    /// The handlers' shutdown signal.
    pub(crate) fn signal(&self) -> &ShutdownSignal {
        &self.signal
    }

    /// How long a handler waits for more of a request body before the body fails.
    pub(crate) fn body_read_timeout(&self) -> Option<Duration> {
        self.body_read_timeout
    }

    /// The server's phases, for the connection's task.
    pub(crate) fn phases(&self) -> &Phases {
        &self.phases
    }

    /// Whether the service's shutdown has begun.
    pub(crate) fn is_draining(&self) -> bool {
        self.phases.is_draining()
    }

    /// Whether a request is in progress (its response may still be streaming) or the bytes of
    /// one are still waiting to be written: closing now would cut a response.
    pub(crate) fn is_busy(&self) -> bool {
        self.in_progress.load(Ordering::Acquire) > 0 || self.write_blocked.load(Ordering::Acquire)
    }

    /// Records whether the socket's writes are blocked; called on changes only.
    pub(crate) fn set_write_blocked(&self, blocked: bool) {
        self.write_blocked.store(blocked, Ordering::Release);
        if !blocked && self.in_progress.load(Ordering::Acquire) == 0 {
            self.became_idle();
        }
    }

    /// Records that the client sent the HTTP/2 preface.
    pub(crate) fn set_http2(&self) {
        self.http2.store(true, Ordering::Release);
    }

    /// Whether the client sent the HTTP/2 preface.
    pub(crate) fn is_http2(&self) -> bool {
        self.http2.load(Ordering::Acquire)
    }

    fn became_idle(&self) {
        let idle_since = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.idle_since_ms.store(idle_since, Ordering::Release);
    }

    /// Completes once the connection has not been busy for `limit`: a client that does not
    /// send a complete request head in that time, from connecting or from the moment its last
    /// response was written, is too slow or gone.
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

impl InProgress {
    /// The connection's activity.
    pub(crate) fn activity(&self) -> &Activity {
        &self.0
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.stats.request_ended();
        if activity.in_progress.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity.became_idle();
        }
    }
}
