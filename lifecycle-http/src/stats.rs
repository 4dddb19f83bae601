//! Counters of what the server is doing, for the report, health endpoints and tests.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::metrics::{Closed, HttpMetrics};

/// Live counters of an [`HttpServer`](crate::HttpServer): cheap to clone and to read at any
/// time, including after the server has stopped.
///
/// What is open right now (connections, requests in flight) is a `usize`, as a count of
/// things in memory; what has happened since the server was created (requests, force-closed
/// and vanished connections, times the limit was reached) is a `u64`, as every work source's
/// counters in the workspace.
///
/// Only a server makes them ([`HttpServer::stats`](crate::HttpServer::stats)): a set of
/// counters no server updates would read zero forever.
#[derive(Debug, Clone)]
pub struct HttpStats(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    open_connections: AtomicUsize,
    /// Requests received; those in flight are these less the ended ones. Two counters
    /// rather than a count in flight beside the total: one atomic add per request each way.
    requests: AtomicU64,
    ended: AtomicU64,
    force_closed: AtomicU64,
    vanished: AtomicU64,
    limit_reached: AtomicU64,
    /// Set at the first start: the counters are also exported through the `metrics` facade.
    metrics: OnceLock<HttpMetrics>,
}

impl HttpStats {
    /// The counters of a new server, all zero.
    pub(crate) fn new() -> Self {
        HttpStats(Arc::default())
    }

    /// Connections open right now, being served over HTTP (an upgraded connection, a
    /// WebSocket say, is no longer counted here, but still counts against
    /// [`max_connections`](crate::HttpServer::max_connections) and is still waited for by the
    /// stop).
    pub fn open_connections(&self) -> usize {
        self.0.open_connections.load(Ordering::Relaxed)
    }

    /// Requests in progress right now: from dispatch until hyper has taken the last chunk of
    /// their response body. (The connection stays busy, and is not closed as idle, until those
    /// bytes have been written to the socket.)
    pub fn in_flight(&self) -> usize {
        // The ended count first: a request counted there was counted as received before.
        let ended = self.0.ended.load(Ordering::Acquire);
        let received = self.0.requests.load(Ordering::Acquire);
        received.saturating_sub(ended) as usize
    }

    /// Requests received since the server was created.
    pub fn requests(&self) -> u64 {
        self.0.requests.load(Ordering::Relaxed)
    }

    /// Connections cut off because they were still open when the stop timeout ran out.
    pub fn force_closed(&self) -> u64 {
        self.0.force_closed.load(Ordering::Relaxed)
    }

    /// Connections closed because their client vanished without a word (no FIN, no reset: a
    /// phone that lost its network, a crashed host), found by the TCP keep-alive or the user
    /// timeout ([`vanished_peer_timeout`](crate::HttpServer::vanished_peer_timeout)).
    pub fn vanished(&self) -> u64 {
        self.0.vanished.load(Ordering::Relaxed)
    }

    /// How many times the server stopped accepting because
    /// [`max_connections`](crate::HttpServer::max_connections) connections were open; new
    /// connections then wait in the listen backlog until one closes.
    pub fn connection_limit_reached(&self) -> u64 {
        self.0.limit_reached.load(Ordering::Relaxed)
    }

    /// Exports the counters as the metrics of the server named `server`, from now on (the
    /// first call wins: a restarted server keeps its handles).
    pub(crate) fn export(&self, server: &str) {
        self.0.metrics.get_or_init(|| {
            HttpMetrics::register(server, self.open_connections(), self.in_flight())
        });
    }

    pub(crate) fn reached_connection_limit(&self) -> u64 {
        if let Some(metrics) = self.0.metrics.get() {
            metrics.limit_reached.increment(1);
        }
        self.0.limit_reached.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn connection(&self) -> ConnectionGuard {
        self.0.open_connections.fetch_add(1, Ordering::Relaxed);
        if let Some(metrics) = self.0.metrics.get() {
            metrics.open.increment(1.0);
        }
        ConnectionGuard {
            stats: self.clone(),
            closed: false,
        }
    }

    pub(crate) fn request_began(&self) {
        self.0.requests.fetch_add(1, Ordering::Release);
        if let Some(metrics) = self.0.metrics.get() {
            metrics.requests.increment(1);
            metrics.in_progress.increment(1.0);
        }
    }

    pub(crate) fn request_ended(&self) {
        self.0.ended.fetch_add(1, Ordering::Release);
        if let Some(metrics) = self.0.metrics.get() {
            metrics.in_progress.decrement(1.0);
        }
    }
}

/// Counts a connection as open until dropped; a connection dropped before
/// [`closed`](Self::closed) was called was cut off (its task aborted).
#[derive(Debug)]
pub(crate) struct ConnectionGuard {
    stats: HttpStats,
    closed: bool,
}

impl ConnectionGuard {
    /// The connection closed gracefully, over HTTP/2 or not, before the drain or after it
    /// began.
    pub(crate) fn closed(self, http2: bool, draining: bool) {
        let how = if draining {
            Closed::Drained
        } else {
            Closed::Served
        };
        self.ended(http2, how);
    }

    /// The connection ended as `how`.
    pub(crate) fn ended(mut self, http2: bool, how: Closed) {
        self.closed = true;
        if matches!(how, Closed::Vanished) {
            self.stats.0.vanished.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(metrics) = self.stats.0.metrics.get() {
            metrics.closed(http2, how);
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let counters = &self.stats.0;
        counters.open_connections.fetch_sub(1, Ordering::Relaxed);
        if !self.closed {
            counters.force_closed.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(metrics) = counters.metrics.get() {
            metrics.open.decrement(1.0);
            if !self.closed {
                metrics.force_closed.increment(1);
            }
        }
    }
}
