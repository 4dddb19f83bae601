//! Giving up in time: shortly before the lifecycle would cut a start or stop off
//! ([`Context::give_up_at`]), and after retrying a connection until then ([`retry_until`]).

use std::fmt;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::context::Context;

/// The first wait between two attempts of [`retry_until`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// The longest wait between two attempts of [`retry_until`].
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl Context {
    /// The moment a start or stop should give up on what it waits for, so that what it does
    /// next (report its own error, hand work back, close a connection) still fits before
    /// [`deadline`](Self::deadline): a quarter of the time left, at most `reserve`, before the
    /// deadline. Outside a start or stop (no deadline), `fallback` from now.
    ///
    /// A component that gives up at this moment fails with an error that says what it was
    /// waiting for, instead of being cut off by the lifecycle with a bare timeout.
    ///
    /// # Examples
    ///
    /// A stop that waits for its work until it must give up, then hands the rest back:
    ///
    /// ```
    /// use lifecycle_core::{async_trait, BoxError, Component, Context};
    /// use std::time::Duration;
    ///
    /// #[derive(Debug)]
    /// struct Consumer;
    ///
    /// #[async_trait]
    /// impl Component for Consumer {
    ///     async fn start(&self, _ctx: &Context) -> Result<(), BoxError> {
    ///         Ok(())
    ///     }
    ///
    ///     async fn stop(&self, ctx: &Context) -> Result<(), BoxError> {
    ///         // With a 10 s stop timeout: 9.5 s from the stop's start (500 ms kept back).
    ///         let give_up = ctx.give_up_at(Duration::from_millis(500), Duration::from_secs(5));
    ///         let work_done = std::future::pending::<()>();
    ///         if tokio::time::timeout_at(give_up, work_done).await.is_err() {
    ///             // Hand the work back here, before the deadline.
    ///             return Err("work still in progress at the stop deadline".into());
    ///         }
    ///         Ok(())
    ///     }
    /// }
    /// ```
    pub fn give_up_at(&self, reserve: Duration, fallback: Duration) -> Instant {
        let now = Instant::now();
        match self.deadline() {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(now);
                deadline - (left / 4).min(reserve)
            }
            None => now + fallback,
        }
    }
}

/// How [`retry_until`] gave up: the attempts it made, how long they took, and the last error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("gave up after {attempts} attempts in {waited:?}: {last_error}")]
#[non_exhaustive]
pub struct GaveUp {
    /// How many attempts were made.
    pub attempts: u32,
    /// How long they took.
    pub waited: Duration,
    /// The error of the last attempt, or that it timed out.
    pub last_error: String,
}

/// Runs `attempt` until it succeeds, waiting 50 ms after the first failure and doubling up to
/// 2 s, each attempt cut off at `give_up`; past it, fails with [`GaveUp`]. `server` names what
/// is being reached in the debug log of each failed attempt.
///
/// This is the connect-with-backoff loop of the adapters' starts: a server that is not up yet
/// (a database still starting beside the service) is retried until shortly before the start
/// timeout ([`Context::give_up_at`]), and the error then names the server and why.
///
/// Each attempt's error is logged and kept as text: when it may echo a secret (a driver quoting
/// its URL), scrub it in `attempt` ([`Redacted::scrub`](crate::Redacted::scrub)), and pass the
/// [`Redacted`](crate::Redacted) URL as `server`.
///
/// # Errors
///
/// [`GaveUp`] when no attempt succeeded before `give_up`.
///
/// # Examples
///
/// On a paused clock, a server that answers at the third attempt:
///
/// ```
/// use lifecycle_core::{retry_until, Redacted};
/// use std::time::Duration;
/// use tokio::time::Instant;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let server = Redacted::new("postgres://app:s3cret@db/app");
/// let mut attempts = 0;
/// let give_up = Instant::now() + Duration::from_secs(5);
/// let connected = retry_until(&server, give_up, || {
///     attempts += 1;
///     let answer = if attempts < 3 { Err("connection refused") } else { Ok("connected") };
///     async move { answer }
/// })
/// .await;
/// assert_eq!(connected, Ok("connected"));
///
/// // One that never answers: the error says how long it was tried.
/// let never = retry_until(&server, Instant::now() + Duration::from_secs(1), || async {
///     Err::<(), _>("connection refused")
/// })
/// .await
/// .unwrap_err();
/// assert_eq!(never.last_error, "connection refused");
/// assert!(never.waited <= Duration::from_secs(1));
/// # }
/// ```
pub async fn retry_until<T, E, Fut>(
    server: &(impl fmt::Display + ?Sized),
    give_up: Instant,
    mut attempt: impl FnMut() -> Fut,
) -> Result<T, GaveUp>
where
    E: fmt::Display,
    Fut: Future<Output = Result<T, E>>,
{
    let began = Instant::now();
    let mut backoff = FIRST_BACKOFF;
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
        tracing::debug!(%server, %error, ?backoff, "connection attempt failed");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    };
    Err(GaveUp {
        attempts,
        waited: began.elapsed(),
        last_error,
    })
}
