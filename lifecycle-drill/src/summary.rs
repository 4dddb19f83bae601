//! The drill's result: the counts, the times from the signal, how the service ended, and the
//! verdict.

use std::fmt;
use std::time::Instant;

use serde::Serialize;

use crate::counters::Counters;
use crate::load::Observed;

/// What a drill saw: every request's outcome, the times from the signal, and how the service
/// ended.
///
/// It prints as the table the `lifecycle-drill` binary shows, and serialises (serde) to the
/// JSON object its `--json` writes, with these field names.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Summary {
    /// Requests sent, counting the server-sent-events request.
    pub requests_sent: u64,
    /// Requests answered 2xx with their whole body.
    pub succeeded: u64,
    /// Requests answered with another status, their body read whole. They do not fail the
    /// drill: the service answered.
    pub non_2xx: u64,
    /// Connections refused (and HTTP/2 streams refused after GOAWAY), mostly after the
    /// listener closed. Nothing was sent on them, so a load balancer retries them elsewhere:
    /// they do not fail the drill.
    pub refused_after_listener_closed: u64,
    /// Requests sent on an open connection that got no whole response: reset, closed, or cut
    /// off mid-body. Any of them fails the drill.
    pub dropped: u64,
    /// The errors of the first ten dropped requests.
    pub drop_errors: Vec<String>,
    /// What became of the server-sent-events stream: `ended cleanly after N bytes`, `cut off:
    /// ...`, `still open`, `not used`, ...
    pub sse_stream: String,
    /// Milliseconds from the signal until the readiness path first stopped answering 2xx;
    /// `None` if it never did while the drill watched.
    pub signal_to_readiness_off_ms: Option<f64>,
    /// Milliseconds from the signal until a connect was first refused: the listener had
    /// closed. `None` if no client saw it closed.
    pub signal_to_listener_closed_ms: Option<f64>,
    /// Milliseconds from the signal until the service had stopped (the process exited, or the
    /// in-process service's stop completed); `None` if it overran the budget.
    pub signal_to_exit_ms: Option<f64>,
    /// The service's exit code; `None` when it was killed, by the signal or by the drill past
    /// the budget.
    pub exit_code: Option<i32>,
    /// Whether the service was still running after the budget (plus a second): a process is
    /// then killed.
    pub overran_budget: bool,
    /// The service's own report (JSON), read from the report file or given by the in-process
    /// service, if any.
    pub service_report: Option<serde_json::Value>,
    /// Whether the drill passed: no request dropped, exit code 0, within the budget.
    pub passed: bool,
}

/// How the service ended, as its runner saw it.
#[derive(Debug)]
pub(crate) struct Exited {
    pub(crate) code: Option<i32>,
    /// When it had stopped; `None` if it overran the budget.
    pub(crate) at: Option<Instant>,
    pub(crate) overran: bool,
    pub(crate) report: Option<serde_json::Value>,
}

impl Summary {
    pub(crate) fn new(
        counters: &Counters,
        observed: Observed,
        signal: Instant,
        exited: Exited,
    ) -> Self {
        let since = |at: Option<Instant>| {
            at.map(|at| at.saturating_duration_since(signal).as_secs_f64() * 1e3)
        };
        let dropped = Counters::get(&counters.dropped);
        let listener_closed = *counters
            .listener_closed
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Self {
            requests_sent: Counters::get(&counters.sent),
            succeeded: Counters::get(&counters.succeeded),
            non_2xx: Counters::get(&counters.non_2xx),
            refused_after_listener_closed: Counters::get(&counters.refused),
            dropped,
            drop_errors: counters
                .drop_errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            sse_stream: observed.sse_stream,
            signal_to_readiness_off_ms: since(observed.readiness_off),
            signal_to_listener_closed_ms: since(listener_closed),
            signal_to_exit_ms: since(exited.at),
            exit_code: exited.code,
            overran_budget: exited.overran,
            service_report: exited.report,
            passed: dropped == 0 && !exited.overran && exited.code == Some(0),
        }
    }

    /// Whether the drill passed: no request dropped, exit code 0, within the budget.
    pub fn passed(&self) -> bool {
        self.passed
    }

    /// Panics with this summary unless the drill passed: the assertion for a test.
    ///
    /// # Panics
    ///
    /// When a request was dropped, the exit code was not 0, or the service overran the
    /// budget; the message is the summary's table.
    #[track_caller]
    pub fn assert_passed(&self) {
        assert!(self.passed, "{self}");
    }

    /// The summary as pretty-printed JSON, the object the binary's `--json` writes.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a summary always serialises")
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
                " (overran the budget)"
            } else {
                ""
            }
        )
    }
}
