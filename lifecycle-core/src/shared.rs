//! The state shared by the orchestrator, handles, contexts and the watchdog thread.
//!
//! Everything here is behind a std `Mutex` or is itself thread-safe, because the watchdog and
//! signal threads read and write it without an async runtime.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::component::Component;
use crate::handle::{ComponentState, Phase};
use crate::report::{ComponentReport, Outcome, Report, TriggerKind, TriggerReport};

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) phase: watch::Sender<Phase>,
    /// Cancelled at the trigger: the "shutdown requested" notice, and the root token a user
    /// may supply.
    pub(crate) shutdown_requested: CancellationToken,
    record: Mutex<Record>,
}

/// What the report is made from, kept up to date as the lifecycle runs.
#[derive(Debug, Default)]
pub(crate) struct Record {
    pub(crate) began: Option<Instant>,
    pub(crate) trigger: Option<(TriggerReport, Instant)>,
    /// The drain delay as applied: zero until the drain begins, and when it is skipped.
    pub(crate) drain_delay: Duration,
    pub(crate) slots: Vec<Slot>,
}

/// One component as the lifecycle sees it.
pub(crate) struct Slot {
    pub(crate) name: Arc<str>,
    pub(crate) dependencies: Vec<String>,
    pub(crate) component: Arc<dyn Component>,
    pub(crate) state: ComponentState,
    pub(crate) start_began: Option<Instant>,
    pub(crate) start_ended: Option<Instant>,
    pub(crate) stop_began: Option<Instant>,
    pub(crate) stop_ended: Option<Instant>,
    pub(crate) error: Option<String>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("name", &self.name)
            .field("state", &self.state)
            .finish()
    }
}

impl Shared {
    pub(crate) fn new(shutdown_requested: CancellationToken) -> Self {
        Shared {
            phase: watch::Sender::new(Phase::Starting),
            shutdown_requested,
            record: Mutex::new(Record::default()),
        }
    }

    /// Locks the record. Never held across an `.await`.
    pub(crate) fn record(&self) -> MutexGuard<'_, Record> {
        // A panic while the lock was held cannot leave the record half-written in a way that
        // matters more than losing the report, so poisoning is ignored.
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the shutdown, unless one has already started; returns whether this call did.
    pub(crate) fn trigger(&self, kind: TriggerKind, detail: impl Into<String>) -> bool {
        let first = {
            let mut record = self.record();
            let first = record.trigger.is_none();
            if first {
                record.trigger = Some((
                    TriggerReport {
                        kind,
                        detail: detail.into(),
                    },
                    Instant::now(),
                ));
            }
            first
        };
        self.shutdown_requested.cancel();
        first
    }

    /// A report of the record as it stands, with components still running or stopping shown
    /// as cut off by `cut_by` (used when the process must end now).
    pub(crate) fn snapshot(&self, exit_code: i32, cut_by: &str) -> Report {
        let now = Instant::now();
        let record = self.record();
        let began = record.began.unwrap_or(now);
        let ms = |t: Option<Instant>| t.map(|t| millis(t.saturating_duration_since(began)));
        let components = record
            .slots
            .iter()
            .map(|slot| {
                let (outcome, error) = match slot.state {
                    ComponentState::Done(outcome) => (outcome, slot.error.clone()),
                    ComponentState::Pending | ComponentState::Starting => {
                        (Outcome::NotStarted, slot.error.clone())
                    }
                    ComponentState::Running
                    | ComponentState::Restarting
                    | ComponentState::Stopping => (Outcome::TimedOut, Some(cut_by.to_owned())),
                };
                ComponentReport {
                    name: slot.name.to_string(),
                    dependencies: slot.dependencies.clone(),
                    outcome,
                    start_began_ms: ms(slot.start_began),
                    start_ended_ms: ms(slot.start_ended),
                    stop_began_ms: ms(slot.stop_began),
                    stop_ended_ms: ms(slot.stop_ended),
                    error,
                }
            })
            .collect();
        let trigger = record
            .trigger
            .as_ref()
            .map(|(t, _)| t.clone())
            .unwrap_or(TriggerReport {
                kind: TriggerKind::Requested,
                detail: "no trigger".into(),
            });
        Report {
            trigger,
            exit_code,
            total_ms: millis(now.saturating_duration_since(began)),
            drain_delay_ms: millis(record.drain_delay),
            components,
            watchdog: None,
        }
    }
}

/// Milliseconds with microsecond precision, as the report shows them.
fn millis(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1e3
}
