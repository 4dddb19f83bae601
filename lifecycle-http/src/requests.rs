//! The requests a stop may wait for, named as the report's `held_by` names them: `GET /work
//! (running 12.3s, HTTP/1.1)`.
//!
//! A request is listed the first time its handler or its response body makes it wait, with
//! the time of that moment, and unlisted when it ends: a request answered at its first poll,
//! as most are, is never listed, reads no clock and takes no lock. What every request costs is
//! its name written in place in its task's [`Serving`](crate::serving::Serving): the method,
//! the version and the path's first bytes copied, no reference count, no allocation.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

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

/// The most of a path a name keeps: enough to tell the routes apart.
const PATH_KEPT: usize = 64;

/// What names a request: written at its dispatch, listed only if it waits. The path is kept
/// without its query (which may hold secrets), cut at [`PATH_KEPT`] bytes.
#[derive(Debug, Clone)]
pub(crate) struct Summary {
    method: Method,
    version: Version,
    path: [u8; PATH_KEPT],
    /// How many bytes of `path` are the path's; more than `PATH_KEPT` when it was cut.
    len: usize,
}

impl Default for Summary {
    fn default() -> Self {
        Summary {
            method: Method::GET,
            version: Version::HTTP_11,
            path: [0; PATH_KEPT],
            len: 0,
        }
    }
}

#[derive(Debug)]
struct Listed {
    summary: Summary,
    since: Instant,
}

impl Summary {
    /// Becomes the name of `request`, in place. Inlined: it runs for every request.
    #[inline]
    pub(crate) fn set<B>(&mut self, request: &Request<B>) {
        let path = request.uri().path().as_bytes();
        let kept = path.len().min(PATH_KEPT);
        self.path[..kept].copy_from_slice(&path[..kept]);
        self.len = path.len();
        // The same method as the last request of the task, most often: no clone and no drop.
        if self.method != *request.method() {
            self.method = request.method().clone();
        }
        self.version = request.version();
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kept = &self.path[..self.len.min(PATH_KEPT)];
        // A URI's path is ASCII; lossy only against a bug elsewhere.
        let path = String::from_utf8_lossy(kept);
        let path = if path.is_empty() { "/".into() } else { path };
        let cut = if self.len > PATH_KEPT { "…" } else { "" };
        write!(f, "{} {path}{cut}", self.method)
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
                let age = lifecycle_core::held_by::age(now.saturating_duration_since(l.since));
                format!("{} (running {age}, {:?})", l.summary, l.summary.version)
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

#[cfg(test)]
mod tests {
    use super::{Summary, PATH_KEPT};
    use axum::http::Request;

    fn name(uri: &str) -> String {
        let mut summary = Summary::default();
        summary.set(&Request::post(uri).body(()).unwrap());
        summary.to_string()
    }

    #[test]
    fn a_name_is_the_method_and_the_path_without_its_query() {
        assert_eq!(name("/work?ms=5&token=secret"), "POST /work");
        assert_eq!(name("http://host"), "POST /");
    }

    #[test]
    fn a_long_path_is_cut_and_says_so() {
        let long = format!("/{}", "a".repeat(100));
        assert_eq!(name(&long), format!("POST {}…", &long[..PATH_KEPT]));
        // A shorter name written over a longer one leaves nothing of it.
        let mut summary = Summary::default();
        summary.set(&Request::get(long.as_str()).body(()).unwrap());
        summary.set(&Request::get("/b").body(()).unwrap());
        assert_eq!(summary.to_string(), "GET /b");
        // The method follows each request, not only the first.
        summary.set(&Request::delete("/b").body(()).unwrap());
        assert_eq!(summary.to_string(), "DELETE /b");
    }
}
