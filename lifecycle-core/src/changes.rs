//! Components added and removed while the lifecycle runs.
//!
//! A [`LifecycleHandle`](crate::LifecycleHandle) sends a [`Change`] to the orchestrator and
//! awaits its answer; the orchestrator, still the record's only writer, validates it against
//! the components it knows, grows its graph and the record, and starts or stops the component
//! with the rules every component follows. Changes are taken up from ready to the trigger;
//! after it, they are refused.

use std::sync::Arc;

use futures::FutureExt;
use std::sync::Mutex;

use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::component_error::ComponentError;
use crate::error::BuildError;
use crate::guarded::{self, Fault};
use crate::handle::LifecycleHandle;
use crate::lifecycle_state::LifecycleState;
use crate::record::ComponentRecord;
use crate::registration::Registration;
use crate::run::{Member, Run};
use crate::state::{ComponentState, Outcome};

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

impl Run<'_> {
    /// Takes up a change asked for by a handle, between ready and the trigger.
    pub(crate) fn change(&mut self, change: Change) {
        match change {
            Change::Add(registration, reply) => self.add(registration, reply),
            Change::Remove(name, reply) => self.remove(&name, reply),
        }
    }

    /// Validates `registration` against the running components, then records it and starts it.
    fn add(&mut self, registration: Registration, reply: oneshot::Sender<Result<(), ChangeError>>) {
        let dependencies = match self.admit(&registration) {
            Ok(dependencies) => dependencies,
            Err(error) => {
                tracing::warn!(component = %registration.name, %error, "addition refused");
                let _ = reply.send(Err(error));
                return;
            }
        };
        let i = self.registrations.len();
        let names = dependencies
            .iter()
            .map(|&d| self.registrations[d].name.clone())
            .collect();
        for &d in &dependencies {
            self.graph.dependents[d].push(i);
        }
        self.graph.dependencies.push(dependencies);
        self.graph.dependents.push(Vec::new());
        self.record()
            .added(ComponentRecord::new(&registration.name, names));
        self.state().registry().registered(
            Arc::new(registration.component.clone()),
            registration.readiness,
        );
        self.names.insert(registration.name.clone(), i);
        self.members.push(Member::default());
        self.registrations.push(registration);
        self.added_waiters.insert(i, reply);
        tracing::info!(component = self.name(i), "added");
        let start = self.launch_start(i).boxed();
        self.adding.push(start);
    }

    /// The indices of `registration`'s dependencies (the `stops_last` components included), or
    /// why it cannot be added.
    fn admit(&self, registration: &Registration) -> Result<Vec<usize>, ChangeError> {
        let name = &registration.name;
        if registration.stops_last {
            return Err(ChangeError::StopsLast {
                component: name.clone(),
            });
        }
        if self.names.contains_key(name) {
            return Err(BuildError::DuplicateName { name: name.clone() }.into());
        }
        registration.check()?;
        let mut dependencies = Vec::with_capacity(registration.depends_on.len());
        for dependency in &registration.depends_on {
            if dependency == name {
                return Err(BuildError::Cycle {
                    path: vec![name.clone(), name.clone()],
                }
                .into());
            }
            let Some(&d) = self.names.get(dependency) else {
                return Err(BuildError::MissingDependency {
                    component: name.clone(),
                    dependency: dependency.clone(),
                }
                .into());
            };
            let running = matches!(
                self.record().state(d),
                ComponentState::Running | ComponentState::Restarting
            );
            if !running || self.members[d].removing {
                return Err(ChangeError::DependencyNotRunning {
                    component: name.clone(),
                    dependency: dependency.clone(),
                });
            }
            if !dependencies.contains(&d) {
                dependencies.push(d);
            }
        }
        for &d in &self.last {
            if !dependencies.contains(&d) {
                dependencies.push(d);
            }
        }
        Ok(dependencies)
    }

    /// Records how an added component's start ended and answers whoever added it. A start
    /// that did not complete leaves the component in the report, never stopped, its name free.
    pub(crate) fn added_start_ended(&mut self, i: usize, result: Result<(), Fault>) {
        let reply = self.added_waiters.remove(&i);
        match result {
            Ok(()) => {
                self.started(i);
                tracing::info!(component = self.name(i), "started");
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(()));
                }
                if std::mem::take(&mut self.members[i].turn_pending) {
                    self.removal_turn(i);
                }
            }
            Err((outcome, error)) => {
                let rendered = error.render();
                tracing::error!(component = self.name(i), error = %rendered, "start of an added component failed");
                self.abandon(i, outcome, error);
                if let Some(reply) = reply {
                    let _ = reply.send(Err(ChangeError::StartFailed {
                        component: self.name(i).to_owned(),
                        outcome,
                        error: rendered,
                    }));
                }
                self.removal_finished(i, outcome);
            }
        }
    }

    /// At the trigger: the starts of added components still running are abandoned, as the
    /// start-up's are, and their callers told the shutdown has begun.
    pub(crate) fn abandon_additions(&mut self) {
        self.adding = Default::default();
        let waiting: Vec<_> = self.added_waiters.drain().collect();
        for (i, reply) in waiting {
            tracing::warn!(component = self.name(i), "start abandoned");
            self.abandon(i, Outcome::NotStarted, ComponentError::StartAbandoned);
            let _ = reply.send(Err(ChangeError::ShuttingDown {
                component: self.name(i).to_owned(),
            }));
            self.removal_finished(i, Outcome::NotStarted);
        }
    }

    /// Stops the component named `name` and every component depending on it, dependents
    /// first, then answers with its outcome. A removal of a component already being removed
    /// waits for the same stop.
    fn remove(&mut self, name: &str, reply: oneshot::Sender<Result<Outcome, ChangeError>>) {
        let Some(&root) = self.names.get(name) else {
            let _ = reply.send(Err(ChangeError::NotFound {
                component: name.to_owned(),
            }));
            return;
        };
        self.removal_waiters.entry(root).or_default().push(reply);
        if self.members[root].removing {
            return;
        }
        tracing::info!(component = name, "removing");
        // The component and its dependents, transitively: their stops follow the shutdown's
        // order, on this part of the graph.
        self.members[root].removing = true;
        let mut removed = vec![root];
        let mut next = 0;
        while let Some(&c) = removed.get(next) {
            next += 1;
            for k in 0..self.graph.dependents[c].len() {
                let d = self.graph.dependents[c][k];
                if !self.members[d].removing && !self.is_done(d) {
                    self.members[d].removing = true;
                    removed.push(d);
                }
            }
        }
        for &c in &removed {
            let left = self.graph.dependents[c]
                .iter()
                .filter(|&&d| !self.is_done(d))
                .count();
            self.members[c].dependents_left = left;
        }
        for &c in &removed {
            if self.members[c].dependents_left == 0 {
                self.removal_turn(c);
            }
        }
    }

    fn is_done(&self, i: usize) -> bool {
        matches!(self.record().state(i), ComponentState::Done(_))
    }

    /// Component `i`'s turn in a removal: every component depending on it has stopped.
    fn removal_turn(&mut self, i: usize) {
        let state = self.record().state(i);
        match state {
            ComponentState::Running => {
                let ctx = self.members[i]
                    .context
                    .clone()
                    .expect("a running component has a context");
                self.record().stopping(i);
                tracing::info!(component = self.name(i), "stopping");
                let registration = &self.registrations[i];
                let (component, limit) =
                    (registration.component.clone(), registration.stop_timeout);
                let span = tracing::info_span!("stop", component = self.name(i), removed = true);
                self.removals.push(
                    async move { (i, guarded::stop(&*component, &ctx, limit).await, false) }
                        .instrument(span)
                        .boxed(),
                );
            }
            ComponentState::Done(outcome) => self.removal_finished(i, outcome),
            // Its start or restart is under way: its turn is taken once that ends.
            _ => self.members[i].turn_pending = true,
        }
    }

    /// A removal's stop ended.
    pub(crate) fn removal_stopped(&mut self, i: usize, result: Result<(), Fault>) {
        let outcome = self.stop_ended(i, result);
        self.removal_finished(i, outcome);
    }

    /// Component `i`, added or removed, has ended for good: it leaves the names (for another
    /// to take), health and readiness (the report keeps it), whoever removed it is answered,
    /// and before the trigger its dependencies being removed take their turn once none of
    /// their dependents is left. After the trigger the shutdown orders what is left.
    pub(crate) fn removal_finished(&mut self, i: usize, outcome: Outcome) {
        if self.names.get(self.name(i)) == Some(&i) {
            let name = self.name(i).to_owned();
            self.names.remove(&name);
        }
        self.record().removed(i);
        for reply in self.removal_waiters.remove(&i).unwrap_or_default() {
            let _ = reply.send(Ok(outcome));
        }
        if !self.members[i].removing || self.shutdown.is_cancelled() {
            return;
        }
        for k in 0..self.graph.dependencies[i].len() {
            let d = self.graph.dependencies[i][k];
            if self.members[d].removing && !self.is_done(d) {
                let member = &mut self.members[d];
                member.dependents_left = member.dependents_left.saturating_sub(1);
                if member.dependents_left == 0 {
                    self.removal_turn(d);
                }
            }
        }
    }

    /// Takes a removal's pending turn, if its restart has ended (before the trigger).
    pub(crate) fn restart_settled(&mut self, i: usize) {
        if self.members[i].turn_pending
            && !self.shutdown.is_cancelled()
            && self.record().state(i) != ComponentState::Restarting
        {
            self.members[i].turn_pending = false;
            self.removal_turn(i);
        }
    }
}
