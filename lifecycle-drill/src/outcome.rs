//! What happened to the requests, counted as they end, and the drill's summary.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

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

/// The drill's result, as printed and written as JSON.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    pub(crate) requests_sent: u64,
    pub(crate) succeeded: u64,
    pub(crate) non_2xx: u64,
    pub(crate) refused_after_listener_closed: u64,
    pub(crate) dropped: u64,
    pub(crate) drop_errors: Vec<String>,
    pub(crate) sse_stream: String,
    pub(crate) signal_to_readiness_off_ms: Option<f64>,
    pub(crate) signal_to_listener_closed_ms: Option<f64>,
    pub(crate) signal_to_exit_ms: Option<f64>,
    pub(crate) exit_code: Option<i32>,
    pub(crate) overran_budget: bool,
    pub(crate) service_report: Option<serde_json::Value>,
    pub(crate) passed: bool,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} ms"));
        writeln!(
            f,
            "lifecycle-drill: {}",
            if self.passed { "PASSED" } else { "FAILED" }
        )?;
        writeln!(f, "  requests sent        {}", self.requests_sent)?;
        writeln!(f, "  succeeded            {}", self.succeeded)?;
        writeln!(f, "  non-2xx              {}", self.non_2xx)?;
        writeln!(
            f,
            "  refused (closed)     {}",
            self.refused_after_listener_closed
        )?;
        writeln!(f, "  dropped              {}", self.dropped)?;
        for error in &self.drop_errors {
            writeln!(f, "    {error}")?;
        }
        writeln!(f, "  SSE stream           {}", self.sse_stream)?;
        writeln!(
            f,
            "  signal -> ready off  {}",
            ms(self.signal_to_readiness_off_ms)
        )?;
        writeln!(
            f,
            "  signal -> closed     {}",
            ms(self.signal_to_listener_closed_ms)
        )?;
        writeln!(f, "  signal -> exit       {}", ms(self.signal_to_exit_ms))?;
        let code = self.exit_code.map_or("-".to_owned(), |c| c.to_string());
        writeln!(
            f,
            "  exit code            {code}{}",
            if self.overran_budget {
                " (overran the budget: killed)"
            } else {
                ""
            }
        )
    }
}
