//! `LifecycleState`: the state of one lifecycle that outlives any one task, shared by the
//! orchestrator, the handles (and so the components' contexts), the upgrader and the watchdog
//! thread. Who writes what:
//!
//! - the phase: the orchestrator only ([`enter_phase`](LifecycleState::enter_phase));
//! - the [trigger](Trigger): anyone, the first one counts ([`trigger`](LifecycleState::trigger));
//! - the [record](Record) and the [registry](Registry): the orchestrator only, and the builder
//!   before the run; everyone else reads;
//! - the upgrades' outcomes and the hand-over: the upgrader only
//!   ([`upgrade_ended`](LifecycleState::upgrade_ended), [`hand_over`](LifecycleState::hand_over));
//! - the health cache: whoever checks health, through [`check_health`](LifecycleState::check_health);
//! - the requests (additions and removals, upgrades): handles send, the orchestrator and the
//!   upgrader answer.
//!
//! Everything here is behind a std `Mutex` or is itself thread-safe, because the watchdog and
//! signal threads read and write it without an async runtime. A lock is never held across an
//! `.await`; the record's is taken before the registry's.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::health_cache::HealthCache;
use crate::inspect::Inspect;
use crate::record::Record;
use crate::registry::Registry;
use crate::report::{Report, TriggerReport, UpgradeReport};
use crate::state::{Phase, TriggerKind};
use crate::trigger::Trigger;

/// A request for an in-place upgrade, with where to send its outcome if the caller waits.
pub(crate) type UpgradeRequest = Option<tokio::sync::oneshot::Sender<UpgradeReport>>;

/// See the [module docs](self).
pub(crate) struct LifecycleState {
    phase: watch::Sender<Phase>,
    trigger: Trigger,
    record: Mutex<Record>,
    registry: Mutex<Registry>,
    health: HealthCache,
    /// Where [`LifecycleHandle::upgrade`](crate::LifecycleHandle::upgrade) sends its request:
    /// the running upgrader's channel, if one runs.
    upgrader: Mutex<Option<tokio::sync::mpsc::UnboundedSender<UpgradeRequest>>>,
    /// The in-place upgrades attempted, in order.
    upgrades: Mutex<Vec<UpgradeReport>>,
    /// Set once the listening sockets belong to a new process that accepts on them.
    handed_over: AtomicBool,
    /// The handles' additions and removals on their way to the orchestrator: a
    /// `changes::Mailbox`, read only through `changes.rs`. Held as `Any` because a change
    /// carries a `Component`, whose `Context` holds a handle, which holds this state: naming
    /// the mailbox's type here would tie the modules in a circle.
    changes: Box<dyn Any + Send + Sync>,
}

impl LifecycleState {
    /// The state of a lifecycle not yet run, with `shutdown_token` cancelled at its trigger and
    /// `changes` the mailbox of its additions and removals.
    pub(crate) fn new(
        shutdown_token: CancellationToken,
        changes: Box<dyn Any + Send + Sync>,
    ) -> Self {
        LifecycleState {
            phase: watch::Sender::new(Phase::Starting),
            trigger: Trigger::new(shutdown_token),
            record: Mutex::new(Record::default()),
            registry: Mutex::new(Registry::default()),
            health: HealthCache::new(),
            upgrader: Mutex::new(None),
            upgrades: Mutex::new(Vec::new()),
            handed_over: AtomicBool::new(false),
            changes,
        }
    }

    /// The lifecycle entered `phase` (the orchestrator's call): recorded, then published to
    /// whoever watches.
    pub(crate) fn enter_phase(&self, phase: Phase) {
        let triggered_at = self.trigger.first().map(|(_, at)| at);
        self.record().entered(phase, triggered_at);
        self.phase.send_replace(phase);
    }

    pub(crate) fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    pub(crate) fn watch_phase(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Starts the shutdown, unless one has already started; returns whether this call did.
    pub(crate) fn trigger(&self, kind: TriggerKind, detail: impl Into<String>) -> bool {
        self.trigger.pull(kind, detail.into())
    }

    /// The first trigger and when it came, once there was one.
    pub(crate) fn first_trigger(&self) -> Option<(TriggerReport, Instant)> {
        self.trigger.first()
    }

    /// The token cancelled at the trigger.
    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        self.trigger.token()
    }

    /// Has `listener` (the watchdog thread) told of every trigger from now on.
    pub(crate) fn tell_of_triggers(&self, listener: impl Fn() + Send + Sync + 'static) {
        self.trigger.tell(listener);
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

    /// The report of the lifecycle as it ended, with the exit code its record calls for.
    pub(crate) fn report(&self) -> Report {
        let trigger = self.trigger.first().map(|(trigger, _)| trigger);
        let record = self.record();
        let code = record.exit_code(trigger.as_ref().map(|t| t.kind));
        record.snapshot(
            code,
            "still running at exit",
            &self.registry(),
            trigger,
            self.upgrades(),
        )
    }

    /// The report as it stands, components still running shown as cut off by `cut_by` (when
    /// the process must end now).
    pub(crate) fn snapshot(&self, exit_code: i32, cut_by: &str) -> Report {
        let trigger = self.trigger.first().map(|(trigger, _)| trigger);
        let record = self.record();
        record.snapshot(
            exit_code,
            cut_by,
            &self.registry(),
            trigger,
            self.upgrades(),
        )
    }

    /// Reuses the health answers for `ttl` (set once, when the lifecycle is built).
    pub(crate) fn cache_health_for(&self, ttl: Duration) {
        self.health.set_ttl(ttl);
    }

    /// The health of each component marked running, `None` for the others, through the cache.
    pub(crate) async fn check_health(
        &self,
        components: &[(bool, Arc<dyn Inspect>)],
    ) -> Vec<Option<Health>> {
        self.health.get(components).await
    }

    /// An upgrader runs and takes requests on `requests` (the upgrader's call).
    #[cfg_attr(not(all(unix, feature = "upgrade")), allow(dead_code))]
    pub(crate) fn upgrades_taken_on(
        &self,
        requests: Option<tokio::sync::mpsc::UnboundedSender<UpgradeRequest>>,
    ) {
        *self.upgrader.lock().unwrap_or_else(|e| e.into_inner()) = requests;
    }

    /// Asks the running upgrader, if any, for an upgrade; returns whether one took the request.
    pub(crate) fn request_upgrade(&self, request: UpgradeRequest) -> bool {
        let upgrader = self.upgrader.lock().unwrap_or_else(|e| e.into_inner());
        upgrader.as_ref().is_some_and(|tx| tx.send(request).is_ok())
    }

    /// An in-place upgrade attempt ended (the upgrader's call).
    #[cfg_attr(not(all(unix, feature = "upgrade")), allow(dead_code))]
    pub(crate) fn upgrade_ended(&self, upgrade: UpgradeReport) {
        crate::telemetry::upgrade_ended(match (upgrade.succeeded, upgrade.refused) {
            (true, _) => "succeeded",
            (false, true) => "refused",
            (false, false) => "failed",
        });
        self.upgrades
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(upgrade);
    }

    fn upgrades(&self) -> Vec<UpgradeReport> {
        self.upgrades
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Notes that a new process now accepts on the listening sockets (the upgrader's call).
    #[cfg_attr(not(all(unix, feature = "upgrade")), allow(dead_code))]
    pub(crate) fn hand_over(&self) {
        self.handed_over.store(true, Ordering::SeqCst);
    }

    pub(crate) fn handed_over(&self) -> bool {
        self.handed_over.load(Ordering::SeqCst)
    }

    /// The mailbox of additions and removals, for `changes.rs` to read as its own type.
    pub(crate) fn changes(&self) -> &(dyn Any + Send + Sync) {
        &*self.changes
    }
}

impl std::fmt::Debug for LifecycleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LifecycleState")
            .field("phase", &self.phase())
            .field("trigger", &self.trigger)
            .field("handed_over", &self.handed_over())
            .finish_non_exhaustive()
    }
}
