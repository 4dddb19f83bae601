//! The plain state types: where the lifecycle is ([`Phase`]), where one component is
//! ([`ComponentState`]) and how it ended ([`Outcome`]), what started the shutdown
//! ([`TriggerKind`]), and who shares a listening socket ([`ListenerShare`]).
//!
//! They are values only, and this module imports nothing of the crate's, so every other
//! module may use them.

use serde::{Deserialize, Serialize};

/// Where the lifecycle as a whole is; readiness and liveness follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// Components are starting; not ready yet.
    Starting,
    /// Every component has started; ready for traffic.
    Ready,
    /// The shutdown was triggered: not ready, but still serving during the drain delay.
    Draining,
    /// Components are stopping in reverse dependency order.
    Stopping,
    /// Every component has stopped or been cut off; the process is about to exit.
    Stopped,
}

impl Phase {
    /// Whether traffic should be routed here (`/readyz`): only in [`Phase::Ready`].
    pub fn is_ready(self) -> bool {
        self == Phase::Ready
    }

    /// Whether the process should be left alive (`/livez`): until [`Phase::Stopped`], draining
    /// included, so that an orchestrator does not restart an instance that is shutting down.
    pub fn is_live(self) -> bool {
        self != Phase::Stopped
    }

    /// The lower-case name, as shown by health endpoints.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Ready => "ready",
            Phase::Draining => "draining",
            Phase::Stopping => "stopping",
            Phase::Stopped => "stopped",
        }
    }
}

/// Where one component is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ComponentState {
    /// Waiting for its dependencies to start.
    Pending,
    /// Its start is running.
    Starting,
    /// Started and serving.
    Running,
    /// Failed at run time; being stopped and started again under its restart policy.
    Restarting,
    /// Its stop is running.
    Stopping,
    /// Finished, with this outcome.
    Done(Outcome),
}

impl ComponentState {
    /// The lower-case name, as shown by health endpoints (`done` states show their outcome).
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentState::Pending => "pending",
            ComponentState::Starting => "starting",
            ComponentState::Running => "running",
            ComponentState::Restarting => "restarting",
            ComponentState::Stopping => "stopping",
            ComponentState::Done(outcome) => outcome.as_str(),
        }
    }
}

/// How a component's lifecycle ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// Started and stopped cleanly.
    Stopped,
    /// Its start or stop returned an error, or it failed at run time.
    Failed,
    /// Its start or stop overran its timeout or the shutdown budget.
    TimedOut,
    /// Its start or stop panicked.
    Panicked,
    /// It never started: the start-up ended before its turn, or its start was abandoned.
    NotStarted,
}

impl Outcome {
    /// The name used in JSON and in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Stopped => "stopped",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed_out",
            Outcome::Panicked => "panicked",
            Outcome::NotStarted => "not_started",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kinds of [`TriggerReport`](crate::TriggerReport).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TriggerKind {
    /// A signal (SIGTERM, SIGINT, Ctrl-C).
    Signal,
    /// [`LifecycleHandle::shutdown`](crate::LifecycleHandle::shutdown), or the shutdown token
    /// cancelled from outside.
    Requested,
    /// A component failed at run time and its policy was to shut down.
    ComponentFailed,
    /// A component failed to start (error, timeout or panic).
    StartFailed,
    /// An in-place upgrade: a new process took the listening sockets over and is ready.
    Upgrade,
}

impl TriggerKind {
    /// The name used in JSON, the table and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Signal => "signal",
            TriggerKind::Requested => "requested",
            TriggerKind::ComponentFailed => "component_failed",
            TriggerKind::StartFailed => "start_failed",
            TriggerKind::Upgrade => "upgrade",
        }
    }
}

/// Who may accept on a listening socket besides this process, as
/// [`LifecycleHandle::listener_share`](crate::LifecycleHandle::listener_share) says at the
/// moment of asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListenerShare {
    /// Only this process: at its stop a server may refuse new handshakes, take what is left in
    /// the backlog and close the socket.
    Alone,
    /// Another process holds it too: a socket manager (systemd socket activation), or the
    /// other side of an in-place upgrade under way. A server accepts on it only once the
    /// lifecycle is ready, and at its stop closes only its own descriptor: the connections
    /// waiting in the backlog are the other process's to answer.
    Shared,
    /// Handed to the new process of an in-place upgrade, which accepts on it now: a server stops
    /// accepting on it at once and closes only its own descriptor.
    HandedOver,
}
