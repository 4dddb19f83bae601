//! `Worker`: a component made from a run-until-cancelled function.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use async_trait::async_trait;
use futures::FutureExt;

use crate::component::Component;
use crate::component_error::Panicked;
use crate::context::Context;
use crate::error::BoxError;

/// A component made from an async function that runs until its token is cancelled: a queue
/// consumer, a cache refresher, a metrics pusher.
///
/// Start spawns the function as a tracked task and returns at once. The function gets the
/// component's [`Context`]: it should return soon after [`Context::token`] is cancelled (at its
/// stop turn), and can spawn sub-tasks with [`Context::spawn`] (or [`Context::spawn_named`],
/// which a stop that overruns names in the report's `held_by`), which stop waits for too. An
/// error it returns, or a panic, before its stop turn is a run-time failure handled by the
/// component's [`OnFailure`](crate::OnFailure) policy; a restart calls the function again.
/// Returning `Ok` before the stop turn is a failure too (a worker runs until it is told to
/// stop; one-shot work belongs in a component's start). An error or a panic after the
/// shutdown has begun is reported as the component's outcome.
///
/// # Examples
///
/// ```
/// use lifecycle_core::{Lifecycle, Registration, Worker};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let ticker = Worker::new(|ctx| async move {
///     let mut tick = tokio::time::interval(Duration::from_secs(1));
///     while ctx.token().run_until_cancelled(tick.tick()).await.is_some() {
///         // Do one unit of work; the loop ends between units, never inside one.
///     }
///     Ok::<_, std::io::Error>(())
/// });
/// let lifecycle = Lifecycle::builder()
///     .signals([])
///     .register(Registration::new("ticker", ticker))
///     .build()
///     .unwrap();
/// lifecycle.handle().shutdown("example over");
/// let report = lifecycle.run().await;
/// assert_eq!(report.exit_code(), 0);
/// # }
/// ```
pub struct Worker<F> {
    run: F,
}

impl<F, Fut, E> Worker<F>
where
    F: Fn(Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxError>,
{
    /// A worker that runs `run` from its start until its stop turn.
    pub fn new(run: F) -> Self {
        Worker { run }
    }
}

#[async_trait]
impl<F, Fut, E> Component for Worker<F>
where
    F: Fn(Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxError>,
{
    async fn start(&self, ctx: &Context) -> Result<(), BoxError> {
        let run = AssertUnwindSafe((self.run)(ctx.clone())).catch_unwind();
        let ctx = ctx.clone();
        // Named, so that a stop it overruns says the function itself still runs.
        ctx.clone().spawn_named(ctx.name().to_owned(), async move {
            match run.await {
                Ok(Ok(())) if ctx.token().is_cancelled() => {}
                Ok(Ok(())) => ctx.report_failure(ReturnedEarly),
                Ok(Err(error)) => ctx.report_failure(error),
                Err(panic) => ctx.report_failure(Panicked(crate::panic_message(&*panic))),
            }
        });
        Ok(())
    }
}

impl<F> std::fmt::Debug for Worker<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").finish_non_exhaustive()
    }
}

/// The failure of a worker whose function returned before its stop turn.
#[derive(Debug, thiserror::Error)]
#[error("returned before its stop turn")]
struct ReturnedEarly;
