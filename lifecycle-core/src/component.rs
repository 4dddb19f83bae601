//! The `Component` trait: one part of a service with a start and a stop.

use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;

use crate::context::Context;
use crate::error::BoxError;
use crate::health::Health;
use crate::inspect::Inspect;

/// One part of a service (an HTTP server, a database pool, a background worker) that the
/// [`Lifecycle`](crate::Lifecycle) starts in dependency order and stops in reverse.
///
/// Methods take `&self` because the lifecycle shares the component with health checks while it
/// runs; keep what `start` creates (a join handle, a listener) behind a lock inside it.
///
/// Around each call the lifecycle does the parts every component needs, so `stop` only has to
/// do what is particular to it:
///
/// - each start gets a fresh [`Context`] whose [token](Context::token) is cancelled when this
///   component's stop turn comes, and whose [`spawn`](Context::spawn) tracks tasks;
/// - `start` and `stop` run under their timeouts, and a panic in either is caught and reported;
/// - after `stop` returns, the lifecycle waits for the component's tracked tasks, still under
///   the stop timeout, and aborts those left when it runs out.
///
/// # Examples
///
/// ```
/// use lifecycle_core::{async_trait, BoxError, Component, Context};
/// use std::sync::Mutex;
///
/// /// Flushes a buffer on a timer until its stop turn, then once more.
/// struct Flusher {
///     buffer: std::sync::Arc<Mutex<Vec<String>>>,
/// }
///
/// #[async_trait]
/// impl Component for Flusher {
///     async fn start(&self, ctx: &Context) -> Result<(), BoxError> {
///         let (token, buffer) = (ctx.token().clone(), self.buffer.clone());
///         ctx.spawn(async move {
///             let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
///             while token.run_until_cancelled(tick.tick()).await.is_some() {
///                 buffer.lock().unwrap().clear();
///             }
///         });
///         Ok(())
///     }
///
///     async fn stop(&self, _ctx: &Context) -> Result<(), BoxError> {
///         self.buffer.lock().unwrap().clear();
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait Component: Send + Sync + 'static {
    /// Brings the component up: connect, bind, spawn its tasks through `ctx`.
    ///
    /// Returns once the component can serve its dependents; long-running work belongs in
    /// tasks spawned with [`Context::spawn`], not in this future.
    ///
    /// # Errors
    ///
    /// An error (like a timeout or a panic) fails the start-up: the components already started
    /// are stopped in reverse order and the lifecycle exits with a non-zero code.
    ///
    /// # Cancellation safety
    ///
    /// The future is dropped when the start times out or the start-up is abandoned (another
    /// component failed, or a signal arrived); the component is then not stopped, but its
    /// context is cancelled and its tracked tasks are aborted.
    async fn start(&self, ctx: &Context) -> Result<(), BoxError>;

    /// Brings the component down, once every component that depends on it has stopped.
    ///
    /// The [context token](Context::token) is already cancelled when this is called. The
    /// default does nothing more, which suits components whose tasks end on that token.
    ///
    /// # Errors
    ///
    /// An error is reported as this component's outcome; the shutdown goes on either way.
    ///
    /// # Cancellation safety
    ///
    /// The future is dropped when the stop timeout (or the shutdown budget) runs out.
    async fn stop(&self, ctx: &Context) -> Result<(), BoxError> {
        let _ = ctx;
        Ok(())
    }

    /// Reports whether the component can do its work right now, for readiness checks.
    ///
    /// Called only while the component runs, possibly concurrently with itself; keep it cheap
    /// (a ping, not a query). The default is always healthy.
    async fn health(&self) -> Health {
        Health::Healthy
    }

    /// A short account of what the component is doing (`"3 connections open, 1 request in
    /// flight"`), shown next to its health by verbose readiness endpoints. Called at any
    /// time, even before start and after stop; the default says nothing.
    fn describe(&self) -> Option<String> {
        None
    }

    /// What this component is still waiting for, one short line per thing in progress, the
    /// oldest first: a request (`GET /work (running 12.3s, HTTP/1.1)`), a job, a message. The
    /// lifecycle asks when its stop overruns its timeout or is cut off by the shutdown
    /// budget, and at a forced exit (a second signal, the deadline), and writes the answer, with
    /// the component's named tasks still running ([`Context::spawn_named`]), in the report's
    /// `held_by` and the log line of the timeout; [`LifecycleHandle::held_by`] asks while the
    /// service runs. It is asked rarely, so it may allocate; it must not block, as it may run on
    /// the watchdog's thread while the runtime is stuck. The report keeps the first
    /// [`HELD_BY_LIMIT`](crate::held_by::HELD_BY_LIMIT) items and counts the rest. Default:
    /// nothing.
    ///
    /// [`LifecycleHandle::held_by`]: crate::LifecycleHandle::held_by
    fn held_by(&self) -> Vec<String> {
        Vec::new()
    }
}

/// How the handles and the record see a registered component (see [`Inspect`]).
impl Inspect for Arc<dyn Component> {
    fn health(&self) -> BoxFuture<'_, Health> {
        Component::health(&**self)
    }

    fn held_by(&self) -> Vec<String> {
        Component::held_by(&**self)
    }

    fn describe(&self) -> Option<String> {
        Component::describe(&**self)
    }
}
