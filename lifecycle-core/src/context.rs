//! `Context`: what a component gets from the lifecycle for one run.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::component_error::TaskPanicked;
use crate::error::BoxError;
use crate::handle::LifecycleHandle;
use crate::tasks::TrackedTasks;

/// What a component gets for one run, from its start to the end of its stop: its name, its
/// cancellation token, a tracked way to spawn tasks and a way to report a run-time failure.
///
/// Cloning is cheap; clones share everything. A restarted component gets a fresh context.
#[derive(Clone)]
pub struct Context {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    name: Arc<str>,
    index: usize,
    token: CancellationToken,
    tasks: TrackedTasks,
    failures: mpsc::UnboundedSender<Failure>,
    lifecycle: LifecycleHandle,
    deadline: Mutex<Option<Instant>>,
}

/// A run-time failure reported by a component's context.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) component: usize,
    /// The token of the context that reported it, to tell a failure of the current run from a
    /// late one of a run that was already restarted or stopped.
    pub(crate) token: CancellationToken,
    pub(crate) error: BoxError,
}

impl Context {
    pub(crate) fn new(
        name: Arc<str>,
        index: usize,
        failures: mpsc::UnboundedSender<Failure>,
        lifecycle: LifecycleHandle,
    ) -> Self {
        Context {
            inner: Arc::new(ContextInner {
                name,
                index,
                token: CancellationToken::new(),
                tasks: TrackedTasks::default(),
                failures,
                lifecycle,
                deadline: Mutex::new(None),
            }),
        }
    }

    /// The name the component was registered under.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// This component's token: cancelled when its stop turn comes, that is after every component
    /// that depends on it has stopped, and never earlier.
    ///
    /// For an earlier notice that the shutdown has begun, use
    /// [`LifecycleHandle::shutdown_requested`] through [`lifecycle`](Self::lifecycle).
    pub fn token(&self) -> &CancellationToken {
        &self.inner.token
    }

    /// Spawns a task that belongs to this component.
    ///
    /// The lifecycle waits for these tasks after [`Component::stop`](crate::Component::stop)
    /// returns, still under the stop timeout, and aborts those left when it runs out, so none
    /// outlives the component. Tasks should end when [`token`](Self::token) is cancelled.
    ///
    /// A task that panics is a failure of the component, reported as by
    /// [`report_failure`](Self::report_failure); the returned handle still sees the panic.
    ///
    /// # Panics
    ///
    /// Panics when called outside a tokio runtime, like [`tokio::spawn`].
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn_as(None, task)
    }

    /// Spawns a task that belongs to this component, as [`spawn`](Self::spawn), known by
    /// `name`: while it runs, a stop that overruns names it (and how long it has run) in the
    /// report's `held_by` ([`Component::held_by`](crate::Component::held_by)).
    ///
    /// # Panics
    ///
    /// Panics when called outside a tokio runtime, like [`tokio::spawn`].
    pub fn spawn_named<F>(&self, name: impl Into<Arc<str>>, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn_as(Some(name.into()), task)
    }

    fn spawn_as<F>(&self, name: Option<Arc<str>>, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        // A combinator rather than an `async` block: the block would hold `task` twice (as its
        // capture and as the awaited future), doubling every task's memory (an HTTP/2 stream's
        // from 416 to 856 bytes), which cost 3-4% of gRPC throughput.
        let ctx = self.clone();
        self.inner.tasks.spawn(
            name,
            AssertUnwindSafe(task).catch_unwind().map(move |result| {
                result.unwrap_or_else(|panic| {
                    ctx.report_failure(TaskPanicked(crate::panic_message(&*panic)));
                    std::panic::resume_unwind(panic)
                })
            }),
        )
    }

    /// A guard that counts as one of this component's tasks until dropped, for work that
    /// another library spawns (axum spawns the task of an upgraded WebSocket itself): stop
    /// waits for it like for a task from [`spawn`](Self::spawn), but cannot abort it, so the
    /// work should end on [`token`](Self::token).
    pub fn track(&self) -> TaskTrackerToken {
        self.inner.tasks.token()
    }

    /// Tells the lifecycle that this stop gave up on `what` at its deadline (a job handed back
    /// unfinished, a message whose handler was cut off): the report lists it in the
    /// component's `held_by`, whatever the stop's outcome, as what made the stop take its
    /// whole time. For components that keep their own deadline (see [`deadline`](Self::deadline))
    /// rather than being cut off by the lifecycle's.
    pub fn gave_up_on(&self, what: impl Into<String>) {
        self.inner.tasks.gave_up_on(what.into());
    }

    /// The number of this component's tracked tasks still running.
    pub fn tasks_running(&self) -> usize {
        self.inner.tasks.len()
    }

    /// Reports that the component failed while running, for its
    /// [`OnFailure`](crate::OnFailure) policy to handle: shut the service down (the default),
    /// restart the component, or ignore it.
    ///
    /// Once the shutdown has begun no policy applies: the failure becomes the component's
    /// outcome in the report (and the exit code says a component failed), whether it comes
    /// during the drain delay or during the component's own stop.
    pub fn report_failure(&self, error: impl Into<BoxError>) {
        // The receiver is gone only after the lifecycle finished; nothing is left to tell.
        let _ = self.inner.failures.send(Failure {
            component: self.inner.index,
            token: self.inner.token.clone(),
            error: error.into(),
        });
    }

    /// The lifecycle this component runs in: its phase, health, and shutdown.
    pub fn lifecycle(&self) -> &LifecycleHandle {
        &self.inner.lifecycle
    }

    /// When the component's current (or latest) start or stop is cut off: its timeout, or for
    /// a stop, the end of the shutdown budget if that comes first. `None` before the first.
    ///
    /// A component that retries or waits uses it to give up on its own a little earlier, with
    /// an error that says what it was waiting for rather than a bare timeout.
    pub fn deadline(&self) -> Option<Instant> {
        *self
            .inner
            .deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_deadline(&self, deadline: Instant) {
        *self
            .inner
            .deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(deadline);
    }

    pub(crate) fn tasks(&self) -> &TrackedTasks {
        &self.inner.tasks
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("name", &self.inner.name)
            .field("cancelled", &self.inner.token.is_cancelled())
            .field("tasks_running", &self.inner.tasks.len())
            .finish()
    }
}
