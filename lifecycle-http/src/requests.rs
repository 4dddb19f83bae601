//! The requests a stop may wait for, named as the report's `held_by` names them: `GET /work
//! (running 12.3s, HTTP/1.1)`.
//!
//! A request is listed the first time its handler or its response body makes it wait, with
//! the time of that moment, and unlisted when it ends: a request answered at its first poll,
//! as most are, is never listed, reads no clock and takes no lock. What every request costs is
//! keeping its method and path (a reference count) until it ends.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use axum::http::uri::PathAndQuery;
use axum::http::{Method, Request, Version};
use tokio::time::Instant;

/// The server's requests that have waited, by the order they first did: the oldest first.
#[derive(Debug, Default)]
pub(crate) struct Requests {
    next: AtomicU64,
    listed: Mutex<BTreeMap<u64, Listed>>,
    /// Connections upgraded (`101 Switching Protocols`: a WebSocket) and still open.
    upgraded: AtomicUsize,
}

/// What names a request: kept from its dispatch, listed only if it waits.
#[derive(Debug)]
pub(crate) struct Summary {
    method: Method,
    path: Option<PathAndQuery>,
    version: Version,
}

#[derive(Debug)]
struct Listed {
    summary: Summary,
    since: Instant,
}

impl Summary {
    pub(crate) fn of<B>(request: &Request<B>) -> Self {
        Summary {
            method: request.method().clone(),
            path: request.uri().path_and_query().cloned(),
            version: request.version(),
        }
    }
}

impl Requests {
    /// Lists a request that waits; its key, to [`end`](Self::end) it with.
    pub(crate) fn list(&self, summary: Summary) -> u64 {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let listed = Listed {
            summary,
            since: Instant::now(),
        };
        self.lock().insert(key, listed);
        key
    }

    /// A listed request ended.
    pub(crate) fn end(&self, key: u64) {
        self.lock().remove(&key);
    }

    pub(crate) fn upgraded(&self) {
        self.upgraded.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn upgraded_closed(&self) {
        self.upgraded.fetch_sub(1, Ordering::Relaxed);
    }

    /// The listed requests, the oldest first (the path without its query, which may hold
    /// secrets); then, of the `in_flight` requests, those not listed (answered at once, their
    /// bytes still being written), and the upgraded connections still open.
    pub(crate) fn held_by(&self, in_flight: usize) -> Vec<String> {
        let now = Instant::now();
        let listed = self.lock();
        let mut held: Vec<String> = listed
            .values()
            .map(|l| {
                let path = l.summary.path.as_ref().map_or("/", PathAndQuery::path);
                let age = lifecycle_core::held_by::age(now.saturating_duration_since(l.since));
                format!(
                    "{} {path} (running {age}, {:?})",
                    l.summary.method, l.summary.version
                )
            })
            .collect();
        let unlisted = in_flight.saturating_sub(listed.len());
        drop(listed);
        if unlisted > 0 {
            held.push(format!("{unlisted} other requests in flight"));
        }
        let upgraded = self.upgraded.load(Ordering::Relaxed);
        if upgraded > 0 {
            held.push(format!("{upgraded} upgraded connections (WebSocket) open"));
        }
        held
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Listed>> {
        self.listed.lock().unwrap_or_else(|e| e.into_inner())
    }
}
