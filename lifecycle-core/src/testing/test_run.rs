//! `TestRun`: a service's real lifecycle, run inside a test and triggered by it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use super::fault::Observed;
use super::Timeline;
use crate::builder::LifecycleBuilder;
use crate::changes::ChangeError;
use crate::context::Context;
use crate::error::{BoxError, BuildError};
use crate::handle::LifecycleHandle;
use crate::lifecycle::Lifecycle;
use crate::registration::Registration;
use crate::report::{exit_code, Report};
use crate::signals::Signal;
use crate::state::{Outcome, Phase, TriggerKind};

/// A lifecycle running in a test: the service's own [`LifecycleBuilder`], run without touching
/// the process's signals or its exit, and triggered by the test as a signal, a second signal, a
/// request or a component failure would.
///
/// It runs on whatever clock the test has: on tokio's paused clock
/// (`#[tokio::test(start_paused = true)]`) timeouts, drain delays and budgets pass at once and
/// the [`Timeline`] shows exact times.
///
/// # Examples
///
/// ```
/// use lifecycle_core::testing::{Fault, TestRun};
/// use lifecycle_core::{exit_code, Lifecycle, Outcome, Registration, Signal, Worker};
/// use std::time::Duration;
///
/// // The service's wiring, as its `main` does it.
/// fn service() -> lifecycle_core::LifecycleBuilder {
///     let idle = || Worker::new(|ctx| async move {
///         ctx.token().cancelled().await;
///         Ok::<_, std::io::Error>(())
///     });
///     Lifecycle::builder()
///         .drain_delay(Duration::from_secs(5))
///         .register(Registration::new("db", idle()))
///         .register(Registration::new("http", idle()).depends_on("db"))
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// // SIGTERM with a stop that hangs: the hang is cut, the database still closes after it.
/// let run = TestRun::start(service().inject_fault("http", Fault::StopHangs)).unwrap();
/// run.ready().await.unwrap();
/// run.signal(Signal::Terminate);
/// let timeline = run.finish().await;
/// timeline
///     .assert_readiness_off_before_any_stop()
///     .assert_stopped_before("http", "db")
///     .assert_outcome("http", Outcome::TimedOut)
///     .assert_exit_code(exit_code::FAILURE);
/// # }
/// ```
#[derive(Debug)]
#[must_use = "a test run ends with `finish`, which returns its timeline"]
pub struct TestRun {
    handle: LifecycleHandle,
    run: JoinHandle<Report>,
    contexts: Mutex<HashMap<String, Arc<Mutex<Option<Context>>>>>,
}

/// Why [`TestRun::ready`] did not see the lifecycle ready: it ended its start-up in another
/// phase (a start failed, or the shutdown came first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the lifecycle did not get ready: it went to {phase:?}")]
#[non_exhaustive]
pub struct NotReady {
    /// The phase it went to instead.
    pub phase: Phase,
}

impl TestRun {
    /// Builds `builder` and starts running it in a task, with no signal handlers and no hard
    /// deadline thread (a forced exit would end the test process): the shutdown budget is
    /// still applied to the stops.
    ///
    /// # Errors
    ///
    /// The [`BuildError`] of an invalid configuration.
    ///
    /// # Panics
    ///
    /// Panics when called outside a tokio runtime.
    pub fn start(builder: LifecycleBuilder) -> Result<Self, BuildError> {
        let mut contexts = HashMap::new();
        let builder = builder
            .signals([])
            .without_hard_deadline()
            .map_components(|name, inner| {
                let current = Arc::new(Mutex::new(None));
                contexts.insert(name.to_owned(), current.clone());
                Arc::new(Observed { inner, current })
            });
        let lifecycle = builder.build()?;
        let handle = lifecycle.handle();
        Ok(TestRun {
            handle,
            run: tokio::spawn(lifecycle.run()),
            contexts: Mutex::new(contexts),
        })
    }

    /// Runs a lifecycle that is already built, for tests that build it themselves, as
    /// [`start`](Self::start) does (no signal handlers, no hard exit). Its components are not
    /// wrapped, so [`fail`](Self::fail) is not available: use `start` for that.
    ///
    /// # Panics
    ///
    /// Panics when called outside a tokio runtime.
    pub fn run(mut lifecycle: Lifecycle) -> Self {
        lifecycle.hard_deadline = false;
        lifecycle.signals.clear();
        let handle = lifecycle.handle();
        TestRun {
            handle,
            run: tokio::spawn(lifecycle.run()),
            contexts: Mutex::default(),
        }
    }

    /// The task that runs the lifecycle, for tests that await its report themselves.
    pub fn into_task(self) -> JoinHandle<Report> {
        self.run
    }

    /// The lifecycle's handle: its phase, health and states.
    pub fn handle(&self) -> &LifecycleHandle {
        &self.handle
    }

    /// Waits until every component has started.
    ///
    /// # Errors
    ///
    /// [`NotReady`] when the start-up ended otherwise (a start failed, or the shutdown came
    /// first).
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe.
    pub async fn ready(&self) -> Result<(), NotReady> {
        let mut phase = self.handle.watch_phase();
        let phase = *phase
            .wait_for(|p| *p != Phase::Starting)
            .await
            .expect("the lifecycle keeps its phase until it is dropped");
        if phase == Phase::Ready {
            Ok(())
        } else {
            Err(NotReady { phase })
        }
    }

    /// Triggers the shutdown as `signal` arriving would.
    pub fn signal(&self, signal: Signal) {
        self.handle
            .state
            .trigger(TriggerKind::Signal, signal.name());
    }

    /// Asks for the shutdown as [`LifecycleHandle::shutdown`] does.
    pub fn request(&self, reason: impl Into<String>) {
        self.handle.shutdown(reason);
    }

    /// Makes the component named `name` report a failure of its current run, as its tasks
    /// would through [`Context::report_failure`]; its [`OnFailure`](crate::OnFailure) policy
    /// applies.
    ///
    /// # Panics
    ///
    /// Panics when no component is registered under `name`, or it has not started yet.
    pub fn fail(&self, name: &str, error: impl Into<BoxError>) {
        let current = self
            .contexts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .unwrap_or_else(|| {
                panic!("TestRun::fail: no component named `{name}` (or the run was not `start`ed)")
            });
        current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .unwrap_or_else(|| panic!("TestRun::fail: `{name}` has not started"))
            .report_failure(error);
    }

    /// Adds a component while the lifecycle runs, as [`LifecycleHandle::add`] does, and waits
    /// for its start; [`fail`](Self::fail) works on it as on a registered one.
    ///
    /// # Errors
    ///
    /// The [`ChangeError`] of [`LifecycleHandle::add`].
    ///
    /// # Examples
    ///
    /// ```
    /// use lifecycle_core::testing::TestRun;
    /// use lifecycle_core::{Lifecycle, Outcome, Registration, Worker};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let idle = || Worker::new(|ctx| async move {
    ///     ctx.token().cancelled().await;
    ///     Ok::<_, std::io::Error>(())
    /// });
    /// let run = TestRun::start(Lifecycle::builder().register(Registration::new("db", idle())))
    ///     .unwrap();
    /// run.ready().await.unwrap();
    /// run.add(Registration::new("tenant-a", idle()).depends_on("db")).await.unwrap();
    /// run.add(Registration::new("tenant-b", idle()).depends_on("db")).await.unwrap();
    /// run.remove("tenant-a").await.unwrap();
    /// run.request("test over");
    /// run.finish()
    ///     .await
    ///     .assert_started_before("db", "tenant-b")
    ///     .assert_stopped_before("tenant-b", "db")
    ///     .assert_removed("tenant-a")
    ///     .assert_outcome("tenant-a", Outcome::Stopped);
    /// # }
    /// ```
    ///
    /// # Cancellation safety
    ///
    /// As [`LifecycleHandle::add`]'s: once sent, the addition goes on.
    pub async fn add(&self, mut registration: Registration) -> Result<(), ChangeError> {
        let current = Arc::new(Mutex::new(None));
        registration.component = Arc::new(Observed {
            inner: registration.component.clone(),
            current: current.clone(),
        });
        let name = registration.name.clone();
        self.handle.add(registration).await?;
        self.contexts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, current);
        Ok(())
    }

    /// Stops and removes the component named `name`, and those depending on it, as
    /// [`LifecycleHandle::remove`] does; returns its stop's outcome.
    ///
    /// # Errors
    ///
    /// The [`ChangeError`] of [`LifecycleHandle::remove`].
    ///
    /// # Cancellation safety
    ///
    /// As [`LifecycleHandle::remove`]'s: once sent, the removal goes on.
    pub async fn remove(&self, name: &str) -> Result<Outcome, ChangeError> {
        self.handle.remove(name).await
    }

    /// Waits for the lifecycle to end and returns what happened.
    ///
    /// # Panics
    ///
    /// Panics when the lifecycle's task panicked (a bug in the lifecycle itself).
    pub async fn finish(self) -> Timeline {
        let report = self.run.await.expect("the lifecycle's task did not panic");
        let record = self.handle.state.record();
        Timeline::new(report, record.phases(), record.steps())
    }

    /// Ends the run as a second signal would in a real process: at once, with the partial
    /// report the forced exit prints and [`exit_code::FORCED`]. What was still running is
    /// abandoned.
    pub fn second_signal(self, signal: Signal) -> Timeline {
        self.run.abort();
        let why = format!("cut off by forced exit: second signal ({})", signal.name());
        let report = self.handle.state.snapshot(exit_code::FORCED, &why);
        let record = self.handle.state.record();
        Timeline::new(report, record.phases(), record.steps())
    }
}
