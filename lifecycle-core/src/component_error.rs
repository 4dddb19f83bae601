//! `ComponentError`: what went wrong with one component, with its source chain kept.

use std::fmt;
use std::time::Duration;

use crate::error::BoxError;

/// What went wrong with a component's start, run or stop.
///
/// It keeps the component's own error as its [`source`](std::error::Error::source), so a chain
/// reporter shows each cause once. [`ComponentReport::error`](crate::ComponentReport::error)
/// holds it rendered with [`render`](Self::render).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ComponentError {
    /// `start` returned an error.
    #[error("start failed")]
    StartFailed(#[source] BoxError),
    /// `start` overran its timeout.
    #[error("start timed out after {0:?}")]
    StartTimedOut(Duration),
    /// `start` returned, but only after its timeout: it blocked its thread, so the timer could
    /// not fire.
    #[error("start took {took:?}, over its {limit:?} limit: it blocked its thread")]
    StartBlocked {
        /// How long it took.
        took: Duration,
        /// Its start timeout.
        limit: Duration,
    },
    /// `start` panicked.
    #[error("start panicked: {0}")]
    StartPanicked(String),
    /// The shutdown began while `start` was still running.
    #[error("start abandoned: the shutdown began")]
    StartAbandoned,
    /// The component reported a failure while running (a [`Worker`](crate::Worker) returned an
    /// error or panicked, a tracked task panicked, or it called
    /// [`Context::report_failure`](crate::Context::report_failure)).
    #[error("failed at run time")]
    FailedAtRunTime(#[source] BoxError),
    /// It failed at run time and its restart policy had no restarts left.
    #[error("failed at run time (after {restarts} restarts)")]
    RestartsExhausted {
        /// How many restarts it had.
        restarts: u32,
        /// The last failure.
        #[source]
        source: BoxError,
    },
    /// The shutdown began while a restart was waiting for its backoff or starting.
    #[error("restart abandoned: the shutdown began")]
    RestartAbandoned,
    /// `stop` returned an error.
    #[error("stop failed")]
    StopFailed(#[source] BoxError),
    /// `stop`, with the wait for the component's tasks, overran its limit (its stop timeout, or
    /// what was left of the shutdown budget).
    #[error("stop timed out after {limit:?}; {aborted} tasks aborted")]
    StopTimedOut {
        /// The limit it had.
        limit: Duration,
        /// Its tasks that were still running and were aborted.
        aborted: usize,
        /// What it was still waiting for ([`Component::held_by`](crate::Component::held_by)).
        held_by: Vec<String>,
    },
    /// `stop` returned, but only after its limit: it blocked its thread.
    #[error("stop took {took:?}, over its {limit:?} limit: it blocked its thread")]
    StopBlocked {
        /// How long it took.
        took: Duration,
        /// The limit it had.
        limit: Duration,
    },
    /// `stop` panicked.
    #[error("stop panicked: {0}")]
    StopPanicked(String),
    /// The shutdown budget ran out before its stop turn came.
    #[error("shutdown budget exhausted before its stop turn; {aborted} tasks aborted")]
    BudgetExhausted {
        /// Its tasks that were still running and were aborted.
        aborted: usize,
        /// What it was still waiting for ([`Component::held_by`](crate::Component::held_by)).
        held_by: Vec<String>,
    },
}

impl ComponentError {
    /// What the component was still waiting for when it was cut off; empty for other errors.
    pub fn held_by(&self) -> &[String] {
        match self {
            ComponentError::StopTimedOut { held_by, .. }
            | ComponentError::BudgetExhausted { held_by, .. } => held_by,
            _ => &[],
        }
    }

    /// The error and its sources on one line, each once: `start failed: connecting to
    /// 127.0.0.1:5432: connection refused`.
    pub fn render(&self) -> String {
        render_chain(self)
    }
}

/// Renders an error and its sources on one line, separated by `": "`, skipping a source whose
/// text its parent already ends with (errors that print their source and also return it).
pub(crate) fn render_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.ends_with(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

/// A caught panic's message, as an error a component can report.
#[derive(Debug)]
pub(crate) struct Panicked(pub(crate) String);

impl fmt::Display for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "panicked: {}", self.0)
    }
}

impl std::error::Error for Panicked {}

/// A tracked task's panic, reported as a failure of its component.
#[derive(Debug, thiserror::Error)]
#[error("a task panicked: {0}")]
pub(crate) struct TaskPanicked(pub(crate) String);

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("connecting to db")]
    struct Connect(#[source] std::io::Error);

    #[test]
    fn the_chain_is_rendered_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = ComponentError::StartFailed(Box::new(Connect(io)));
        assert_eq!(error.render(), "start failed: connecting to db: refused");
    }

    #[test]
    fn a_source_its_parent_already_prints_is_not_repeated() {
        #[derive(Debug, thiserror::Error)]
        #[error("binding failed: {0}")]
        struct Bind(#[source] std::io::Error);
        let io = std::io::Error::other("address in use");
        let error = ComponentError::StartFailed(Box::new(Bind(io)));
        assert_eq!(
            error.render(),
            "start failed: binding failed: address in use"
        );
    }
}
