//! Giving up in time: shortly before the lifecycle would cut a start or stop off, and after
//! retrying a connection until then.
//!
//! The same two helpers as `lifecycle-db`'s, copied rather than shared: they are crate-private
//! there, and a public "retry" API in `lifecycle-core` is not this crate's to add.

use std::time::Duration;

use lifecycle_core::Context;
use tokio::time::Instant;

use crate::error::MqError;

/// The moment to give up at so what follows (handing messages back, closing) still fits: a
/// quarter of the time left, at most 500 ms, before the lifecycle's deadline; `fallback` from
/// now outside a start or stop.
pub(crate) fn give_up_at(ctx: &Context, fallback: Duration) -> Instant {
    let now = Instant::now();
    match ctx.deadline() {
        Some(deadline) if deadline > now => {
            let left = deadline - now;
            deadline - (left / 4).min(Duration::from_millis(500))
        }
        Some(deadline) => deadline,
        None => now + fallback,
    }
}

/// The longest wait between connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Runs `attempt` until it succeeds, waiting 50 ms after the first failure and doubling up to
/// 2 s, each attempt cut off at `give_up`; past it, fails with [`MqError::Unreachable`] naming
/// `target`, `queue` and the last error.
pub(crate) async fn retry_until<T, E, Fut>(
    target: &str,
    queue: &str,
    give_up: Instant,
    mut attempt: impl FnMut() -> Fut,
) -> Result<T, MqError>
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
            Ok(Err(error)) => error.to_string(),
            Err(_) => "connecting timed out".to_owned(),
        };
        if Instant::now() + backoff >= give_up {
            break error;
        }
        tracing::debug!(target_mq = %target, %queue, %error, ?backoff, "connection attempt failed");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    };
    Err(MqError::Unreachable {
        target: target.to_owned(),
        queue: queue.to_owned(),
        attempts,
        waited: began.elapsed(),
        last_error,
    })
}

/// Runs one step of a stop under `limit`, turning a timeout into an error message.
pub(crate) async fn step<T, E: std::fmt::Display>(
    limit: Instant,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout_at(limit, fut).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("no answer before the stop deadline".to_owned()),
    }
}
