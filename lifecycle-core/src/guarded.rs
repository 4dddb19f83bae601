//! A component's `start` and `stop` as the orchestrator calls them: under a time limit, with
//! panics caught, and a call that blocked its thread past the limit counted as overrunning it.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use tokio::time::Instant;

use crate::component::Component;
use crate::component_error::ComponentError;
use crate::context::Context;
use crate::state::Outcome;

/// How a start or stop ended, when not cleanly.
pub(crate) type Fault = (Outcome, ComponentError);

/// The resolution of tokio's timer, as slack when checking elapsed time against a timeout.
const TIMER_TICK: Duration = Duration::from_millis(2);

/// How long a stop that timed out waits for its aborted tasks to end.
const ABORT_GRACE: Duration = Duration::from_millis(100);

/// Runs `component.start` under `timeout`, catching a panic.
///
/// A start that returns only after its timeout (it blocked its thread, so the timer could not
/// fire) has not started in time either: its caller treats it as not started.
pub(crate) async fn start(
    component: &dyn Component,
    ctx: &Context,
    timeout: Duration,
) -> Result<(), Fault> {
    let began = Instant::now();
    ctx.set_deadline(began + timeout);
    let result = tokio::time::timeout(
        timeout,
        AssertUnwindSafe(component.start(ctx)).catch_unwind(),
    )
    .await;
    let took = began.elapsed();
    match result {
        Ok(_) if took > timeout + TIMER_TICK => Err((
            Outcome::TimedOut,
            ComponentError::StartBlocked {
                took,
                limit: timeout,
            },
        )),
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(error))) => Err((Outcome::Failed, ComponentError::StartFailed(error))),
        Ok(Err(panic)) => Err((
            Outcome::Panicked,
            ComponentError::StartPanicked(crate::panic_message(&*panic)),
        )),
        Err(_) => Err((Outcome::TimedOut, ComponentError::StartTimedOut(timeout))),
    }
}

/// Cancels the context, runs `component.stop` and waits for the component's tasks, all under
/// `limit`; aborts the tasks left when it runs out. A panic in stop is caught.
pub(crate) async fn stop(
    component: &dyn Component,
    ctx: &Context,
    limit: Duration,
) -> Result<(), Fault> {
    // The deadline first: tasks that wake on the token may read it at once.
    let began = Instant::now();
    ctx.set_deadline(began + limit);
    ctx.token().cancel();
    let work = async {
        let stopped = AssertUnwindSafe(component.stop(ctx)).catch_unwind().await;
        ctx.tasks().close_and_wait().await;
        stopped
    };
    let result = tokio::time::timeout(limit, work).await;
    let took = began.elapsed();
    match result {
        // The timer cannot fire while a stop blocks its thread; a stop that returns late
        // anyway still overran. (A timer tick of slack: tokio's timer has millisecond ticks.)
        Ok(_) if took > limit + TIMER_TICK => Err((
            Outcome::TimedOut,
            ComponentError::StopBlocked { took, limit },
        )),
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(error))) => Err((Outcome::Failed, ComponentError::StopFailed(error))),
        Ok(Err(panic)) => Err((
            Outcome::Panicked,
            ComponentError::StopPanicked(crate::panic_message(&*panic)),
        )),
        Err(_) => {
            // Asked before the abort, which ends what it would name.
            let held_by = crate::held_by::collect(component.held_by(), ctx.tasks().named_running());
            let aborted = ctx.tasks().abort_all();
            // Aborted tasks end at their next poll; wait for that briefly, so what they hold
            // (a socket, a pooled connection) is released before the dependencies stop. A task
            // stuck in blocking code is not waited for.
            let _ = tokio::time::timeout(ABORT_GRACE, ctx.tasks().close_and_wait()).await;
            Err((
                Outcome::TimedOut,
                ComponentError::StopTimedOut {
                    limit,
                    aborted,
                    held_by,
                },
            ))
        }
    }
}

/// Ends a run that is not to be stopped (its start did not complete, or the shutdown cut it
/// off): cancels its context and aborts its tasks. Returns how many tasks were running.
pub(crate) fn abandon(ctx: &Context) -> usize {
    ctx.token().cancel();
    ctx.tasks().abort_all()
}
