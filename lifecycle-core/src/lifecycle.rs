//! `Lifecycle`: runs the registered components from start-up to a reported exit, phase after
//! phase: start-up (`start_up.rs`), supervision (`supervise.rs`), drain (`drain.rs`) and
//! stops (`shut_down.rs`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use crate::graph::Graph;
use crate::handle::LifecycleHandle;
use crate::lifecycle_state::LifecycleState;
use crate::registration::Registration;
use crate::report::{ArmedDeadline, Report};
use crate::run::{Plan, Run};
use crate::signals::Signal;
use crate::state::{Phase, TriggerKind};
use crate::watchdog::Watchdog;

/// A validated set of components, ready to run.
///
/// [`run`](Self::run) starts the components in dependency order, waits for the shutdown
/// trigger (a signal, [`LifecycleHandle::shutdown`], or a component failing), withdraws
/// readiness, waits the drain delay, stops the components in reverse dependency order under
/// their timeouts and the shutdown budget, and returns the [`Report`].
///
/// # Examples
///
/// ```
/// use lifecycle_core::{Lifecycle, Registration, Worker};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let idle = || Worker::new(|ctx| async move {
///     ctx.token().cancelled().await;
///     Ok::<_, std::io::Error>(())
/// });
/// let lifecycle = Lifecycle::builder()
///     .drain_delay(Duration::from_secs(5))
///     .register(Registration::new("db", idle()))
///     .register(Registration::new("http", idle()).depends_on("db"))
///     .build()
///     .expect("a valid configuration");
///
/// // A real service waits for SIGTERM; here a task asks for the shutdown.
/// let handle = lifecycle.handle();
/// tokio::spawn(async move { handle.shutdown("demo") });
/// let report = lifecycle.run().await;
///
/// assert_eq!(report.exit_code(), 0);
/// let (db, http) = (report.component("db").unwrap(), report.component("http").unwrap());
/// assert!(http.stop_ended_ms <= db.stop_began_ms);
/// # }
/// ```
#[must_use = "a lifecycle does nothing until `run` is awaited"]
pub struct Lifecycle {
    pub(crate) registrations: Vec<Registration>,
    pub(crate) graph: Graph,
    pub(crate) drain_delay: Duration,
    pub(crate) shutdown_budget: Duration,
    pub(crate) signals: Vec<Signal>,
    pub(crate) report_file: Option<PathBuf>,
    /// Whether the watchdog thread runs (always, outside the testing kit).
    pub(crate) hard_deadline: bool,
    pub(crate) critical_path: Vec<String>,
    pub(crate) critical_path_time: Duration,
    pub(crate) state: Arc<LifecycleState>,
}

impl Lifecycle {
    /// A handle to read the phase and health and to ask for the shutdown.
    pub fn handle(&self) -> LifecycleHandle {
        LifecycleHandle {
            state: self.state.clone(),
        }
    }

    /// The chain of components whose stop timeouts add up to the most, in stop order; a
    /// shutdown can take no longer than the drain delay plus their sum.
    pub fn critical_path(&self) -> &[String] {
        &self.critical_path
    }

    /// The longest a shutdown can take: the drain delay plus the stop timeouts along the
    /// [critical path](Self::critical_path). Never more than the shutdown budget.
    ///
    /// It covers the components registered before [`run`](Self::run); a component
    /// [added](LifecycleHandle::add) later can lengthen the longest chain beyond it, and then
    /// the budget cuts the stops that would run past it.
    pub fn shutdown_bound(&self) -> Duration {
        self.drain_delay.saturating_add(self.critical_path_time)
    }

    /// The components' names in a valid start order (each after its dependencies).
    pub fn start_order(&self) -> Vec<&str> {
        self.graph
            .topological_order
            .iter()
            .map(|&i| self.registrations[i].name.as_str())
            .collect()
    }

    /// Runs the lifecycle to its end and reports what happened.
    ///
    /// Signal handlers are installed first, before any component starts, so a signal during
    /// start-up rolls the start-up back. On Unix, sockets inherited through `LISTEN_FDS` that
    /// nothing took through [`sockets`](crate::sockets) or `Upgrade` by then are closed, so a
    /// socket this version no longer serves refuses connects instead of queueing them. Return the report from `main` (see [`Report`]) so the
    /// deadline stays enforced while the runtime shuts down.
    ///
    /// # Cancellation safety
    ///
    /// Not cancel-safe: dropping the future abandons the components where they are. Trigger the
    /// shutdown through the [handle](Self::handle) instead.
    pub async fn run(mut self) -> Report {
        self.state.record().began();
        #[cfg(unix)]
        {
            // Every listener was taken while `main` wired the components: an inherited socket
            // nobody took (one the new version no longer serves) would queue connections that
            // nobody accepts.
            let closed = crate::sockets::sockets().close_unclaimed();
            if !closed.is_empty() {
                tracing::info!(?closed, "inherited sockets nobody listens on closed");
            }
        }
        let watchdog = self.arm_watchdog();
        #[cfg(unix)]
        let notifier = crate::systemd::wanted()
            .then(|| tokio::spawn(crate::systemd::notify(self.handle(), self.shutdown_budget)));

        // The orchestrator owns the components from here: it grows the list when one is added.
        let plan = Plan {
            registrations: std::mem::take(&mut self.registrations),
            graph: std::mem::take(&mut self.graph),
        };
        let mut run = Run::new(plan, self.handle());
        let started = run.start_all().await;
        if started {
            self.enter(Phase::Ready);
            tracing::info!(components = run.component_count(), "ready");
            run.supervise().await;
        }
        let (deadline, span) = self.triggered();
        async {
            if started {
                self.enter(Phase::Draining);
                // An upgrade is not a drain: the new process already serves on the sockets,
                // so the instance stays ready and nothing waits for a load balancer.
                let delay = if self.state.handed_over() {
                    Duration::ZERO
                } else {
                    self.drain_delay
                };
                self.state.record().drain_began(delay);
                tracing::info!(drain_delay = ?delay, "readiness withdrawn, draining");
                run.drain(delay).await;
            }
            self.enter(Phase::Stopping);
            run.stop_all(deadline).await;
            #[cfg(feature = "upgrade")]
            crate::upgrade::pid_file::remove_after_stops();
            self.enter(Phase::Stopped);
        }
        .instrument(span.clone())
        .await;
        #[cfg(unix)]
        if let Some(notifier) = notifier {
            // It ends as soon as it sees the stopped phase.
            let _ = tokio::time::timeout(Duration::from_millis(100), notifier).await;
        }

        let mut report = self.state.report();
        span.record("exit_code", report.exit_code);
        tracing::info!(exit_code = report.exit_code, total_ms = report.total_ms, report = %report.to_json(), "exit");
        if let Some(path) = &self.report_file {
            if let Err(error) = report.write_to(path) {
                tracing::error!(path = %path.display(), %error, "writing the report failed");
            }
        }
        report.deadline = watchdog.map(ArmedDeadline::new);
        report
    }

    /// Starts the watchdog, which installs the signal handlers; a failure to install them ends
    /// the start-up before anything starts.
    fn arm_watchdog(&self) -> Option<Watchdog> {
        if !self.hard_deadline {
            return None;
        }
        match Watchdog::start(
            self.state.clone(),
            self.shutdown_budget,
            &self.signals,
            self.report_file.clone(),
        ) {
            Ok(watchdog) => Some(watchdog),
            Err(error) => {
                self.state.trigger(
                    TriggerKind::StartFailed,
                    format!("installing signal handlers failed: {error}"),
                );
                None
            }
        }
    }

    /// Notes the trigger (the shutdown token may have been cancelled from outside, which is a
    /// request too) and returns the deadline of the stops, the budget from the trigger less a
    /// margin so that the run still returns its report before the watchdog's hard deadline,
    /// and the span the shutdown runs in.
    fn triggered(&self) -> (Instant, tracing::Span) {
        self.state
            .trigger(TriggerKind::Requested, "shutdown token cancelled");
        let (trigger, triggered_at) = self.state.first_trigger().expect("triggered");
        tracing::info!(kind = ?trigger.kind, detail = %trigger.detail, "shutdown triggered");
        let span = tracing::info_span!(
            "shutdown",
            trigger = trigger.kind.as_str(),
            detail = %trigger.detail,
            drain_delay_ms = self.drain_delay.as_millis(),
            budget_ms = self.shutdown_budget.as_millis(),
            exit_code = tracing::field::Empty,
        );
        let budget = self.shutdown_budget - report_margin(self.shutdown_budget);
        let deadline = triggered_at
            .checked_add(budget)
            .unwrap_or_else(|| triggered_at + crate::watchdog::NO_DEADLINE);
        (deadline, span)
    }

    fn enter(&self, phase: Phase) {
        self.state.enter_phase(phase);
    }
}

/// How much earlier than the watchdog's hard deadline the stops are cut, so that the run can
/// still end through [`Lifecycle::run`] with the full report: a tenth of the budget, at most
/// 500 ms.
fn report_margin(budget: Duration) -> Duration {
    (budget / 10).min(Duration::from_millis(500))
}

impl std::fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifecycle")
            .field("components", &self.start_order())
            .field("drain_delay", &self.drain_delay)
            .field("shutdown_budget", &self.shutdown_budget)
            .field("critical_path", &self.critical_path)
            .field("phase", &self.handle().phase())
            .finish()
    }
}
