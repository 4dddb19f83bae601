//! The state shared by the orchestrator, handles, contexts and the watchdog thread.
//!
//! Everything here is behind a std `Mutex` or is itself thread-safe, because the watchdog and
//! signal threads read and write it without an async runtime.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard, OnceLock};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::changes::Change;
use crate::health_cache::HealthCache;
use crate::record::Record;
use crate::registry::Registry;
use crate::report::Report;
use crate::report::UpgradeReport;
use crate::state::{Phase, TriggerKind};

/// A request for an in-place upgrade, with where to send its outcome if the caller waits.
pub(crate) type UpgradeRequest = Option<tokio::sync::oneshot::Sender<UpgradeReport>>;

#[derive(Debug)]
pub(crate) struct Shared {
    /// Written by the orchestrator only.
    pub(crate) phase: watch::Sender<Phase>,
    /// Cancelled at the trigger, by [`trigger`](Self::trigger) only: the "shutdown requested"
    /// notice, and the root token a user may supply.
    pub(crate) shutdown_requested: CancellationToken,
    record: Mutex<Record>,
    registry: Mutex<Registry>,
    /// Told of every trigger, so the deadline is armed even if the runtime is stuck.
    watchdog: OnceLock<mpsc::Sender<crate::watchdog::Event>>,
    pub(crate) health: HealthCache,
    /// Where [`LifecycleHandle::upgrade`](crate::LifecycleHandle::upgrade) sends its request:
    /// the running upgrader's channel, if one runs.
    pub(crate) upgrader: Mutex<Option<tokio::sync::mpsc::UnboundedSender<UpgradeRequest>>>,
    /// Set once the listening sockets belong to a new process that accepts on them.
    handed_over: AtomicBool,
    /// Where handles send their additions and removals; the orchestrator, the only one to act
    /// on them, takes the receiver when the run begins.
    pub(crate) changes: tokio::sync::mpsc::UnboundedSender<Change>,
    changes_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Change>>>,
}

impl Shared {
    pub(crate) fn new(shutdown_requested: CancellationToken) -> Self {
        let (changes, changes_rx) = tokio::sync::mpsc::unbounded_channel();
        Shared {
            changes,
            changes_rx: Mutex::new(Some(changes_rx)),
            phase: watch::Sender::new(Phase::Starting),
            shutdown_requested,
            record: Mutex::new(Record::default()),
            registry: Mutex::new(Registry::default()),
            watchdog: OnceLock::new(),
            health: HealthCache::new(),
            upgrader: Mutex::new(None),
            handed_over: AtomicBool::new(false),
        }
    }

    /// The receiver of the handles' changes, for the orchestrator of the one run.
    pub(crate) fn take_changes(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Change>> {
        self.changes_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Locks the record. Never held across an `.await`.
    pub(crate) fn record(&self) -> MutexGuard<'_, Record> {
        // A panic while the lock was held cannot leave the record half-written in a way that
        // matters more than losing the report, so poisoning is ignored.
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Locks the registry. Never held across an `.await`; when both are needed, taken after
    /// the record.
    pub(crate) fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The report of the lifecycle as it ended.
    pub(crate) fn report(&self) -> Report {
        let record = self.record();
        record.report(&self.registry())
    }

    /// The report as it stands, components still running shown as cut off by `cut_by`.
    pub(crate) fn snapshot(&self, exit_code: i32, cut_by: &str) -> Report {
        let record = self.record();
        record.snapshot(exit_code, cut_by, &self.registry())
    }

    pub(crate) fn set_watchdog(&self, events: mpsc::Sender<crate::watchdog::Event>) {
        let _ = self.watchdog.set(events);
    }

    /// Notes that a new process now accepts on the listening sockets.
    #[cfg_attr(not(all(unix, feature = "upgrade")), allow(dead_code))]
    pub(crate) fn hand_over(&self) {
        self.handed_over.store(true, Ordering::SeqCst);
    }

    pub(crate) fn handed_over(&self) -> bool {
        self.handed_over.load(Ordering::SeqCst)
    }

    /// Asks the running upgrader, if any, for an upgrade; returns whether one took the request.
    pub(crate) fn request_upgrade(&self, request: UpgradeRequest) -> bool {
        let upgrader = self.upgrader.lock().unwrap_or_else(|e| e.into_inner());
        upgrader.as_ref().is_some_and(|tx| tx.send(request).is_ok())
    }

    /// Starts the shutdown, unless one has already started; returns whether this call did.
    pub(crate) fn trigger(&self, kind: TriggerKind, detail: impl Into<String>) -> bool {
        let first = self.record().triggered(kind, detail.into());
        self.shutdown_requested.cancel();
        if let Some(watchdog) = self.watchdog.get() {
            let _ = watchdog.send(crate::watchdog::Event::Triggered);
        }
        first
    }
}
