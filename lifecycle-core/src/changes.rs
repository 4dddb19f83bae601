//! Components added and removed while the lifecycle runs: what a handle asks for.
//!
//! [`LifecycleHandle::add`] and [`LifecycleHandle::remove`] send a [`Change`] to the
//! orchestrator through the lifecycle's [`Mailbox`] and await its answer, or the typed
//! [`ChangeError`] it refused the change with. The orchestrator's side (validating, starting,
//! stopping) is in `run/changes.rs`. Changes are taken up from ready to the trigger; after
//! it, they are refused.

use std::sync::Mutex;

use tokio::sync::{mpsc, oneshot};

use crate::error::BuildError;
use crate::handle::LifecycleHandle;
use crate::lifecycle_state::LifecycleState;
use crate::registration::Registration;
use crate::state::Outcome;

/// A change a handle asks the orchestrator for, with where to send the answer.
pub(crate) enum Change {
    /// Add this component and start it.
    Add(Registration, oneshot::Sender<Result<(), ChangeError>>),
    /// Stop the component of this name, and those depending on it, and remove them.
    Remove(String, oneshot::Sender<Result<Outcome, ChangeError>>),
}

impl Change {
    /// Answers that the shutdown has begun.
    pub(crate) fn refuse(self) {
        match self {
            Change::Add(registration, reply) => {
                let _ = reply.send(Err(ChangeError::ShuttingDown {
                    component: registration.name,
                }));
            }
            Change::Remove(component, reply) => {
                let _ = reply.send(Err(ChangeError::ShuttingDown { component }));
            }
        }
    }
}

/// Where the handles' changes wait for the orchestrator: its one run takes the receiver.
pub(crate) struct Mailbox {
    sender: mpsc::UnboundedSender<Change>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Change>>>,
}

impl Mailbox {
    pub(crate) fn new() -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Mailbox {
            sender,
            receiver: Mutex::new(Some(receiver)),
        }
    }
}

/// The mailbox `state` holds (as `Any`: see `LifecycleState`'s `changes`).
fn mailbox(state: &LifecycleState) -> &Mailbox {
    state
        .changes()
        .downcast_ref()
        .expect("a lifecycle's changes are a `Mailbox`")
}

/// The receiver of the handles' changes, for the orchestrator of the one run.
pub(crate) fn take_receiver(state: &LifecycleState) -> Option<mpsc::UnboundedReceiver<Change>> {
    mailbox(state)
        .receiver
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
}

// The handle's side of a change lives with the changes, so that the handle (which every
// component's context holds) need not know registrations.
impl LifecycleHandle {
    /// Adds a component while the lifecycle runs, and waits for its start: a consumer per
    /// tenant, a connection per configured upstream, a plugin loaded from configuration.
    ///
    /// The component follows every rule a registered one does: it starts once its
    /// dependencies run, under its start timeout; its [`OnFailure`](crate::OnFailure) policy
    /// applies to its failures; it counts for readiness (once started) unless
    /// [excluded](crate::Registration::exclude_from_readiness), shows in
    /// [`check_health`](Self::check_health), [`states`](Self::states), [`held_by`](Self::held_by),
    /// the metrics and the [report](crate::Report); at the shutdown it stops before its
    /// dependencies, concurrently with what is independent of it, under min(its stop timeout,
    /// the budget left). It also depends on every
    /// [`stops_last`](crate::Registration::stops_last) component, as registered ones do.
    ///
    /// Its dependencies must be running: await the addition of a dependency before adding what
    /// depends on it. A component that depends on another is that one's child: removing or
    /// stopping the parent stops the child first.
    ///
    /// **The shutdown bound.** [`LifecycleBuilder::build`](crate::LifecycleBuilder::build)
    /// checks the budget against the components known then. An addition is not checked: one
    /// that lengthens the longest chain of stop timeouts can make the shutdown need more than
    /// [`Lifecycle::shutdown_bound`](crate::Lifecycle::shutdown_bound). The budget still holds:
    /// stops that would run past it are cut (and the exit code says so), and the watchdog ends
    /// the process at the budget. Give added components stop timeouts that fit in what the
    /// chain they join leaves of the budget.
    ///
    /// Additions asked for during start-up are taken up once the lifecycle is ready.
    /// Concurrent calls are safe; each is validated against the components known when the
    /// orchestrator takes it up.
    ///
    /// # Errors
    ///
    /// Nothing starts when the addition is refused: [`ChangeError::Invalid`] for a name in use,
    /// a dependency no component has, a dependency on itself (a cycle), a zero timeout or no
    /// restarts; [`ChangeError::DependencyNotRunning`], [`ChangeError::StopsLast`], and
    /// [`ChangeError::ShuttingDown`] once the shutdown has begun (during the drain and the
    /// stops, or when the lifecycle has ended). [`ChangeError::StartFailed`] when its start
    /// failed, timed out or panicked: the component is in the report with that outcome (and
    /// the exit code counts it, as any failure), never stopped, and the service runs on.
    ///
    /// # Cancellation safety
    ///
    /// Dropping the future does not withdraw the addition once sent: the component still
    /// starts.
    ///
    /// # Examples
    ///
    /// ```
    /// use lifecycle_core::{ChangeError, ComponentState, Lifecycle, Registration, Worker};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let idle = || Worker::new(|ctx| async move {
    ///     ctx.token().cancelled().await;
    ///     Ok::<_, std::io::Error>(())
    /// });
    /// let lifecycle = Lifecycle::builder()
    ///     .signals([])
    ///     .register(Registration::new("db", idle()))
    ///     .build()
    ///     .unwrap();
    /// let handle = lifecycle.handle();
    /// let run = tokio::spawn(lifecycle.run());
    ///
    /// handle.add(Registration::new("tenant-a", idle()).depends_on("db")).await.unwrap();
    /// assert!(handle.states().contains(&("tenant-a".into(), ComponentState::Running)));
    ///
    /// let missing = handle.add(Registration::new("tenant-b", idle()).depends_on("cache")).await;
    /// assert!(matches!(missing, Err(ChangeError::Invalid(_))));
    ///
    /// handle.shutdown("demo");
    /// let report = run.await.unwrap();
    /// let (db, tenant) = (report.component("db").unwrap(), report.component("tenant-a").unwrap());
    /// assert!(tenant.stop_ended_ms <= db.stop_began_ms);
    /// # }
    /// ```
    pub async fn add(&self, registration: Registration) -> Result<(), ChangeError> {
        let component = registration.name.clone();
        let (reply, answer) = tokio::sync::oneshot::channel();
        if mailbox(&self.state)
            .sender
            .send(Change::Add(registration, reply))
            .is_err()
        {
            return Err(ChangeError::ShuttingDown { component });
        }
        answer
            .await
            .unwrap_or(Err(ChangeError::ShuttingDown { component }))
    }

    /// Stops the component named `name` and removes it, waiting for its stop; returns the
    /// stop's outcome. Every component that depends on it (its children) is stopped and
    /// removed first, in reverse dependency order, as the shutdown would.
    ///
    /// Each stop runs under the component's stop timeout; a failure reported meanwhile is its
    /// outcome, no policy applies. Removed components leave health, readiness, `states` and
    /// `held_by`; the [report](crate::Report) keeps them, with their times, marked
    /// [`removed`](crate::ComponentReport::removed). The name is free again for
    /// [`add`](Self::add). Registered components can be removed too.
    ///
    /// Concurrent calls for one component wait for the same stop.
    ///
    /// # Errors
    ///
    /// [`ChangeError::NotFound`] when no component has this name (or it was removed), and
    /// [`ChangeError::ShuttingDown`] once the shutdown has begun: the shutdown stops it.
    ///
    /// # Cancellation safety
    ///
    /// Dropping the future does not withdraw the removal once sent: the component still stops.
    ///
    /// # Examples
    ///
    /// ```
    /// use lifecycle_core::{Lifecycle, Outcome, Registration, Worker};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let idle = || Worker::new(|ctx| async move {
    ///     ctx.token().cancelled().await;
    ///     Ok::<_, std::io::Error>(())
    /// });
    /// let lifecycle = Lifecycle::builder()
    ///     .signals([])
    ///     .register(Registration::new("db", idle()))
    ///     .build()
    ///     .unwrap();
    /// let handle = lifecycle.handle();
    /// let run = tokio::spawn(lifecycle.run());
    ///
    /// handle.add(Registration::new("tenant-a", idle()).depends_on("db")).await.unwrap();
    /// assert_eq!(handle.remove("tenant-a").await.unwrap(), Outcome::Stopped);
    /// assert_eq!(handle.states().len(), 1);
    ///
    /// handle.shutdown("demo");
    /// let report = run.await.unwrap();
    /// assert!(report.component("tenant-a").unwrap().removed);
    /// # }
    /// ```
    pub async fn remove(&self, name: &str) -> Result<Outcome, ChangeError> {
        let component = name.to_owned();
        let (reply, answer) = tokio::sync::oneshot::channel();
        if mailbox(&self.state)
            .sender
            .send(Change::Remove(component.clone(), reply))
            .is_err()
        {
            return Err(ChangeError::ShuttingDown { component });
        }
        answer
            .await
            .unwrap_or(Err(ChangeError::ShuttingDown { component }))
    }
}

/// Why [`LifecycleHandle::add`](crate::LifecycleHandle::add) or
/// [`LifecycleHandle::remove`](crate::LifecycleHandle::remove) did not do what was asked.
///
/// Every variant names the component; an addition refused for any reason started nothing.
///
/// # Examples
///
/// ```
/// use lifecycle_core::{BuildError, ChangeError};
///
/// let error = ChangeError::Invalid(BuildError::MissingDependency {
///     component: "tenant-a".into(),
///     dependency: "db".into(),
/// });
/// assert_eq!(
///     error.to_string(),
///     "component `tenant-a` depends on `db`, which is not registered"
/// );
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChangeError {
    /// The registration is not valid where the lifecycle stands: a name in use, a dependency
    /// on a name no component has, a dependency on itself (a [`BuildError::Cycle`]), a zero
    /// timeout, a restart policy with no restarts.
    #[error(transparent)]
    Invalid(#[from] BuildError),

    /// A dependency is known but not running: still starting (await its addition first), or
    /// being removed.
    #[error("component `{component}` depends on `{dependency}`, which is not running")]
    DependencyNotRunning {
        /// The component that declared the dependency.
        component: String,
        /// The dependency.
        dependency: String,
    },

    /// [`Registration::stops_last`] is for components registered before the run: every
    /// component already running would have to depend on the new one.
    #[error("component `{component}` is marked `stops_last`, which only a registration before `build` can be")]
    StopsLast {
        /// The component.
        component: String,
    },

    /// The component's start failed, timed out or panicked. It is in the report with that
    /// outcome, never stopped, and its name is free again.
    #[error("component `{component}` did not start ({outcome}): {error}")]
    StartFailed {
        /// The component.
        component: String,
        /// How its start ended.
        outcome: Outcome,
        /// What went wrong, rendered.
        error: String,
    },

    /// No running component has this name (never added, or already removed).
    #[error("no component named `{component}` is running")]
    NotFound {
        /// The name asked for.
        component: String,
    },

    /// The shutdown has begun (or the lifecycle has ended): the shutdown stops what runs,
    /// and nothing more is added.
    #[error("component `{component}`: the shutdown has begun")]
    ShuttingDown {
        /// The component.
        component: String,
    },
}
