//! What every stop of this crate shares: when to give up waiting for work in progress, when the
//! closing requests must be answered by, one step under a limit, and the stop's failures.

use std::future::Future;
use std::time::Duration;

use lifecycle_core::{BoxError, Context, Redacted};
use tokio::time::Instant;

use crate::error::MqError;

/// How much of a stop's time is kept back from the wait for work in progress, to hand messages
/// back and close: a quarter of the time left, at most this
/// ([`Context::give_up_at`](lifecycle_core::Context::give_up_at)).
pub(crate) const GIVE_UP_RESERVE: Duration = Duration::from_millis(500);

/// The moment a stop gives up waiting for its work in progress (handlers, publishes).
pub(crate) fn give_up_at(ctx: &Context) -> Instant {
    ctx.give_up_at(GIVE_UP_RESERVE, Duration::from_secs(5))
}

/// The moment the closing requests must be answered by: halfway between `give_up` and the
/// deadline, so that the stop still returns its own error before the lifecycle cuts it off.
pub(crate) fn close_by(ctx: &Context, give_up: Instant) -> Instant {
    let deadline = ctx.deadline().unwrap_or(give_up + Duration::from_secs(2));
    (give_up + deadline.saturating_duration_since(give_up) / 2).max(Instant::now())
}

/// Runs one step of a stop under `limit`, turning a timeout into an error message.
pub(crate) async fn step<T, E: std::fmt::Display>(
    limit: Instant,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout_at(limit, fut).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("no answer before the stop deadline".to_owned()),
    }
}

/// A step of a stop that failed: its name (`"basic.cancel"`) and why.
pub(crate) type StepFailed = (&'static str, String);

/// The failures of one stop, the first of which is its result.
pub(crate) struct StopFailures<'a> {
    target: &'a Redacted,
    queue: &'a str,
    failures: Vec<MqError>,
}

impl<'a> StopFailures<'a> {
    /// None yet, for the stop of what consumes or publishes `queue` on `target`.
    pub(crate) fn new(target: &'a Redacted, queue: &'a str) -> Self {
        StopFailures {
            target,
            queue,
            failures: Vec::new(),
        }
    }

    /// A step failed ([`MqError::StopIncomplete`]).
    pub(crate) fn step_failed(&mut self, (step, reason): StepFailed) {
        self.failures.push(MqError::StopIncomplete {
            target: self.target.to_string(),
            queue: self.queue.to_owned(),
            step,
            reason: self.target.scrub(reason),
        });
    }

    /// `error` happened; `first` puts it before the others, as the stop's result.
    pub(crate) fn push(&mut self, error: MqError, first: bool) {
        if first {
            self.failures.insert(0, error);
        } else {
            self.failures.push(error);
        }
    }

    /// The stop's result: its first failure, the others logged.
    pub(crate) fn into_result(self, ctx: &Context) -> Result<(), BoxError> {
        let mut failures = self.failures.into_iter();
        match failures.next() {
            None => Ok(()),
            Some(first) => {
                for other in failures {
                    tracing::warn!(component = ctx.name(), error = %other, "stop incomplete");
                }
                Err(first.into())
            }
        }
    }
}
