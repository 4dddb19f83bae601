//! `LifecycleHandle`: what the rest of a service may read and do while the lifecycle runs.
//!
//! A handle reads the lifecycle's state (the phase, the record, the registry) and writes none
//! of it but the trigger ([`LifecycleHandle::shutdown`]). What else it asks for is a request
//! that another answers: an upgrade, the upgrader; an addition or a removal, the orchestrator
//! (those two methods live in `changes.rs`, with the changes).

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::health::Health;
use crate::lifecycle_state::LifecycleState;
use crate::report::UpgradeReport;
#[cfg(unix)]
use crate::state::ListenerShare;
use crate::state::{ComponentState, Phase, TriggerKind};

/// One component's state and health, from [`LifecycleHandle::check_health`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ComponentStatus {
    /// The registered name.
    pub name: String,
    /// Where it is.
    pub state: ComponentState,
    /// Its answer to [`Component::health`](crate::Component::health) when it is running, or
    /// unhealthy with the state as reason when it is not.
    pub health: Health,
    /// Its [`Component::describe`](crate::Component::describe).
    pub detail: Option<String>,
    /// Whether its health counts toward readiness; see
    /// [`Registration::exclude_from_readiness`](crate::Registration::exclude_from_readiness).
    pub counts_for_readiness: bool,
}

impl ComponentStatus {
    /// Whether this component lets the service be ready: it is healthy, or it does not count
    /// for readiness.
    pub fn allows_readiness(&self) -> bool {
        !self.counts_for_readiness || self.health.is_healthy()
    }
}

/// A cheap, cloneable handle to a [`Lifecycle`](crate::Lifecycle): its phase, its components'
/// health, and a way to ask for the shutdown.
///
/// Get one from [`LifecycleBuilder::handle`](crate::LifecycleBuilder::handle) while wiring
/// `main`, from [`Lifecycle::handle`](crate::Lifecycle::handle), or from
/// [`Context::lifecycle`](crate::Context::lifecycle) inside a component.
#[derive(Clone)]
pub struct LifecycleHandle {
    pub(crate) state: Arc<LifecycleState>,
}

impl LifecycleHandle {
    /// Asks for a graceful shutdown, as SIGTERM would, giving `reason` for the report.
    ///
    /// Safe to call from anywhere, any number of times: only the first trigger counts.
    pub fn shutdown(&self, reason: impl Into<String>) {
        self.state.trigger(TriggerKind::Requested, reason);
    }

    /// Asks for an in-place upgrade, as the upgrade signal (SIGHUP by default) would: the
    /// program is started again and takes the listening sockets over once ready (see
    /// `Upgrade`, feature `upgrade`). The outcome is logged and in the [report](crate::Report).
    ///
    /// Returns `false` when no upgrader runs (none registered, or the shutdown has begun). A
    /// request while an upgrade is in progress is taken, then refused and logged.
    pub fn upgrade(&self) -> bool {
        self.state.request_upgrade(None)
    }

    /// Asks for an in-place upgrade, as [`upgrade`](Self::upgrade) does, and waits for its
    /// outcome: whether the new process took over, or why not (a request while another upgrade
    /// is in progress, or as PID 1, is refused). `None` when no upgrader runs, or when the
    /// shutdown began before the request was taken up.
    ///
    /// # Cancellation safety
    ///
    /// Dropping the future does not withdraw the request: the upgrade goes on.
    pub async fn upgrade_and_wait(&self) -> Option<UpgradeReport> {
        let (outcome, receiver) = tokio::sync::oneshot::channel();
        if !self.state.request_upgrade(Some(outcome)) {
            return None;
        }
        receiver.await.ok()
    }

    /// Whether the listening sockets were handed to a new process that now accepts on them.
    /// See [`listener_share`](Self::listener_share) for what it means for one socket.
    pub fn handed_over(&self) -> bool {
        self.state.handed_over()
    }

    /// Who else may accept on the listening socket `socket`, now: nobody; a socket manager or
    /// the other side of an in-place upgrade under way; or the new process it was handed to.
    /// A server asks before it accepts, when the shutdown begins and at its stop, and closes
    /// for good (a filter, the backlog taken) only a socket it holds alone.
    ///
    /// A socket neither inherited ([`sockets`](crate::sockets)) nor handed on by an `Upgrade`
    /// is this process's alone.
    #[cfg(unix)]
    pub fn listener_share(&self, socket: std::os::fd::BorrowedFd<'_>) -> ListenerShare {
        crate::sockets::sockets().share(socket, self.state.handed_over())
    }

    /// What each running or stopping component is waiting for right now, as its stop would
    /// report it if cut off ([`Component::held_by`](crate::Component::held_by) and its named
    /// tasks); components with nothing in progress are left out.
    pub fn held_by(&self) -> Vec<(String, Vec<String>)> {
        // The components are asked outside the locks: their answer is their own code.
        let live: Vec<_> = {
            let record = self.state.record();
            let registry = self.state.registry();
            record
                .components()
                .iter()
                .enumerate()
                .filter(|&(i, c)| !c.removed() && record.is_live(i))
                .map(|(i, c)| {
                    (
                        c.name().to_owned(),
                        registry.component(i).clone(),
                        registry.tasks(i).cloned(),
                    )
                })
                .collect()
        };
        live.into_iter()
            .map(|(name, component, tasks)| {
                (name, crate::registry::held_by(&*component, tasks.as_ref()))
            })
            .filter(|(_, held)| !held.is_empty())
            .collect()
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.state.phase()
    }

    /// A receiver that sees every phase change, for code that must react at once (a readiness
    /// endpoint, an sd_notify bridge).
    pub fn watch_phase(&self) -> watch::Receiver<Phase> {
        self.state.watch_phase()
    }

    /// Completes when the shutdown has been triggered (before any component's stop turn).
    ///
    /// Long-lived work that should wind down early (a streaming response, a long poll) waits on
    /// this; a component's own [`Context::token`](crate::Context::token) is cancelled later, at
    /// its stop turn.
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe.
    pub fn shutdown_requested(&self) -> WaitForCancellationFuture<'_> {
        self.state.shutdown_token().cancelled()
    }

    /// The token cancelled when the shutdown is triggered; see
    /// [`shutdown_requested`](Self::shutdown_requested).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.state.shutdown_token().clone()
    }

    /// Each component's state, in registration order then in the order components were
    /// [added](Self::add), without calling any health check. Removed components are left out
    /// (the [report](crate::Report) keeps them).
    pub fn states(&self) -> Vec<(String, ComponentState)> {
        let record = self.state.record();
        record
            .components()
            .iter()
            .filter(|s| !s.removed())
            .map(|s| (s.name().to_owned(), s.state()))
            .collect()
    }

    /// Each component's state and health, in registration order then in the order components
    /// were [added](Self::add); removed ones are left out. A component added while the
    /// lifecycle runs holds readiness back only once it has started: a starting one shows as
    /// `starting`, without counting for readiness.
    ///
    /// Calls [`Component::health`](crate::Component::health) on every running component,
    /// concurrently, unless the answers of a check younger than the
    /// [health cache's time to live](crate::LifecycleBuilder::health_cache) are at hand;
    /// concurrent callers share one check. A panicking check reads as unhealthy, and so does a
    /// component whose run has failed (during the drain, say). Bound the call with a timeout
    /// where a check could hang.
    pub async fn check_health(&self) -> Vec<ComponentStatus> {
        let components: Vec<_> = {
            let record = self.state.record();
            let registry = self.state.registry();
            record
                .components()
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    (
                        s.name().to_owned(),
                        s.state(),
                        registry.component(i).clone(),
                        (registry.counts_for_readiness(i), s.removed()),
                        record.error(i).map(|e| e.render()),
                    )
                })
                .collect()
        };
        let running: Vec<_> = components
            .iter()
            .map(|(_, state, component, (_, removed), failure)| {
                (
                    *state == ComponentState::Running && failure.is_none() && !removed,
                    component.clone(),
                )
            })
            .collect();
        // Removed components are asked nothing but keep their place, so the health cache's
        // answers, one per component ever known, stay in step.
        let answers = self.state.check_health(&running).await;
        components
            .into_iter()
            .zip(answers)
            .filter(|((_, _, _, (_, removed), _), _)| !removed)
            .map(
                |((name, state, component, (readiness, _), failure), answer)| {
                    let health = match (answer, failure) {
                        (Some(health), _) => health,
                        (None, Some(failure)) => Health::unhealthy(failure),
                        (None, None) => Health::unhealthy(state.as_str()),
                    };
                    ComponentStatus {
                        name,
                        state,
                        health,
                        detail: component.describe(),
                        // Only an addition's start runs while the phase is ready.
                        counts_for_readiness: readiness && state != ComponentState::Starting,
                    }
                },
            )
            .collect()
    }

    /// Whether the service should get traffic: the phase is [`Phase::Ready`] and every
    /// component that [counts for readiness](crate::Registration::exclude_from_readiness) is
    /// healthy; or the listening sockets were handed to the new process of an in-place
    /// upgrade, which is ready and serves on them (an upgrade is not a drain: the instance's
    /// readiness never dips). Answers at once, without health checks, when not ready.
    pub async fn is_ready(&self) -> bool {
        if self.state.handed_over() {
            return true;
        }
        self.phase().is_ready()
            && self
                .check_health()
                .await
                .iter()
                .all(ComponentStatus::allows_readiness)
    }
}

impl std::fmt::Debug for LifecycleHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LifecycleHandle")
            .field("phase", &self.phase())
            .field(
                "shutdown_requested",
                &self.state.shutdown_token().is_cancelled(),
            )
            .finish()
    }
}
