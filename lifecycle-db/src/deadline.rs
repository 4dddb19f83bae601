//! Giving up in time: shortly before the lifecycle would cut a start or stop off, and after
//! retrying a connection until then.

use std::time::Duration;

use lifecycle_core::Context;
use tokio::time::Instant;

use crate::error::DbError;
use crate::redact::Redacted;

/// The moment to give up at so what follows (reporting an error, handing a job back) still fits:
/// a quarter of the time left, at most 250 ms, before the lifecycle's deadline; `fallback` from
/// now outside a start or stop.
pub(crate) fn give_up_at(ctx: &Context, fallback: Duration) -> Instant {
    let now = Instant::now();
    match ctx.deadline() {
        Some(deadline) => {
            let left = deadline.saturating_duration_since(now);
            deadline - (left / 4).min(Duration::from_millis(250))
        }
        None => now + fallback,
    }
}

/// The longest wait between connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Runs `attempt` until it succeeds, waiting 50 ms after the first failure and doubling up to
/// 2 s, each attempt cut off at `give_up`; past it, fails with [`DbError::Unreachable`] naming
/// `target` and the last error, scrubbed of the URL's secrets (a driver may echo them).
pub(crate) async fn retry_until<T, E, Fut>(
    target: &Redacted,
    give_up: Instant,
    mut attempt: impl FnMut() -> Fut,
) -> Result<T, DbError>
where
    E: std::fmt::Display,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let began = Instant::now();
    let mut backoff = Duration::from_millis(50);
    let mut attempts = 0;
    let last_error = loop {
        attempts += 1;
        let error = match tokio::time::timeout_at(give_up, attempt()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => target.scrub(error),
            Err(_) => "connecting timed out".to_owned(),
        };
        if Instant::now() + backoff >= give_up {
            break error;
        }
        tracing::debug!(target_db = %target, %error, ?backoff, "connection attempt failed");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    };
    Err(DbError::Unreachable {
        target: target.to_string(),
        attempts,
        waited: began.elapsed(),
        last_error,
    })
}
