//! `Trigger`: the start of the shutdown, the one piece of the lifecycle's state with many
//! writers.
//!
//! Whoever sees a reason to shut down pulls it: a handle ([`LifecycleHandle::shutdown`]), the
//! watchdog thread (a signal), the upgrader (the new process took over), the orchestrator (a
//! start failed, a component failed under its policy, or the shutdown token was cancelled from
//! outside) and the testing kit. Only the first pull is kept, with its time; every pull cancels
//! the shutdown token and tells the listener (the watchdog thread), so the deadline is armed
//! even when the runtime is stuck. The orchestrator reads the first trigger to start the
//! shutdown; the report shows it.
//!
//! [`LifecycleHandle::shutdown`]: crate::LifecycleHandle::shutdown

use std::sync::{Mutex, OnceLock};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::report::TriggerReport;
use crate::state::TriggerKind;
use crate::telemetry;

/// The shutdown's trigger: the first reason given, and the token cancelled at it.
pub(crate) struct Trigger {
    /// Cancelled at the first trigger: the "shutdown requested" notice, and the root token a
    /// user may supply (cancelling it from outside is a request too).
    token: CancellationToken,
    /// The first trigger and when it came.
    first: Mutex<Option<(TriggerReport, Instant)>>,
    /// Told of every trigger: the watchdog thread, once it runs.
    listener: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl Trigger {
    pub(crate) fn new(token: CancellationToken) -> Self {
        Trigger {
            token,
            first: Mutex::new(None),
            listener: OnceLock::new(),
        }
    }

    /// Starts the shutdown, unless one has already started; returns whether this call did.
    /// Safe from any thread, any number of times.
    pub(crate) fn pull(&self, kind: TriggerKind, detail: String) -> bool {
        let first = {
            let mut first = self.first.lock().unwrap_or_else(|e| e.into_inner());
            let is_first = first.is_none();
            if is_first {
                *first = Some((TriggerReport { kind, detail }, Instant::now()));
                telemetry::triggered(kind);
            }
            is_first
        };
        self.token.cancel();
        if let Some(listener) = self.listener.get() {
            listener();
        }
        first
    }

    /// The first trigger and when it came, once there was one.
    pub(crate) fn first(&self) -> Option<(TriggerReport, Instant)> {
        self.first.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The token cancelled at the trigger.
    pub(crate) fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Has `listener` told of every trigger from now on (the first listener set stays).
    pub(crate) fn tell(&self, listener: impl Fn() + Send + Sync + 'static) {
        let _ = self.listener.set(Box::new(listener));
    }
}

impl std::fmt::Debug for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trigger")
            .field("first", &self.first())
            .field("cancelled", &self.token.is_cancelled())
            .finish_non_exhaustive()
    }
}
