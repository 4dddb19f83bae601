//! `Connection`: what the backend-neutral consumer and publisher need of a broker's connection
//! (is it up, close it), and connecting to a broker at a start, retried until shortly before
//! the start timeout.

use std::future::Future;
use std::time::Duration;

use lifecycle_core::{retry_until, Context, Redacted};
use tokio::time::Instant;

use crate::error::MqError;
use crate::stop::StepFailed;

/// One run's connection to a broker (with its channel, for AMQP).
pub(crate) trait Connection: Send + Sync + 'static {
    /// Whether the connection is up now.
    fn connected(&self) -> bool;

    /// Closes the connection, after the broker has processed what was sent on it (acks
    /// included), by `limit`; whatever happens, nothing of it is left running afterwards.
    fn close(self, limit: Instant) -> impl Future<Output = Result<(), StepFailed>> + Send;
}

/// Runs `attempt` (connecting and whatever the component needs on the connection) until it
/// succeeds, each attempt cut off after `connect_timeout`, until shortly before the start
/// timeout; then fails with [`MqError::Unreachable`], naming `target` and `queue`.
pub(crate) async fn connect_until<T, Fut>(
    ctx: &Context,
    (target, queue): (&Redacted, &str),
    connect_timeout: Duration,
    mut attempt: impl FnMut() -> Fut,
) -> Result<T, MqError>
where
    Fut: Future<Output = Result<T, String>>,
{
    let give_up: Instant = ctx.give_up_at(crate::stop::GIVE_UP_RESERVE, Duration::from_secs(30));
    retry_until(target, give_up, || {
        let attempt = attempt();
        async move {
            match tokio::time::timeout(connect_timeout, attempt).await {
                Ok(result) => result.map_err(|error| target.scrub(error)),
                Err(_) => Err("connecting timed out".to_owned()),
            }
        }
    })
    .await
    .map_err(|gave_up| MqError::Unreachable {
        target: target.to_string(),
        queue: queue.to_owned(),
        attempts: gave_up.attempts,
        waited: gave_up.waited,
        last_error: gave_up.last_error,
    })
}
