//! `Lifecycle`: runs the registered components from start-up to a reported exit.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::builder::{LifecycleBuilder, OnFailure, Registration};
use crate::component::Component;
use crate::context::{Context, Failure};
use crate::graph::Graph;
use crate::handle::{ComponentState, LifecycleHandle, Phase};
use crate::report::{exit_code, Outcome, Report, TriggerKind};
use crate::shared::{Shared, Slot};
use crate::signals::Signal;
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
    pub(crate) critical_path: Vec<String>,
    pub(crate) critical_path_time: Duration,
    pub(crate) shared: Arc<Shared>,
}

impl Lifecycle {
    /// A builder with no components, no drain delay, a 25 s shutdown budget, and SIGTERM and
    /// SIGINT as triggers.
    pub fn builder() -> LifecycleBuilder {
        LifecycleBuilder::new()
    }

    /// A handle to read the phase and health and to ask for the shutdown.
    pub fn handle(&self) -> LifecycleHandle {
        LifecycleHandle {
            shared: self.shared.clone(),
        }
    }

    /// The chain of components whose stop timeouts add up to the most, in stop order; a
    /// shutdown can take no longer than the drain delay plus their sum.
    pub fn critical_path(&self) -> &[String] {
        &self.critical_path
    }

    /// The longest a shutdown can take: the drain delay plus the stop timeouts along the
    /// [critical path](Self::critical_path). Never more than the shutdown budget.
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
    /// start-up rolls the start-up back. Return the report from `main` (see [`Report`]) so the
    /// deadline stays enforced while the runtime shuts down.
    ///
    /// # Cancellation safety
    ///
    /// Not cancel-safe: dropping the future abandons the components where they are. Trigger the
    /// shutdown through the [handle](Self::handle) instead.
    pub async fn run(self) -> Report {
        let began = Instant::now();
        self.shared.record().began = Some(began);
        let watchdog =
            match Watchdog::start(self.shared.clone(), self.shutdown_budget, &self.signals) {
                Ok(watchdog) => Some(watchdog),
                Err(error) => {
                    self.shared.trigger(
                        TriggerKind::StartFailed,
                        format!("installing signal handlers failed: {error}"),
                    );
                    None
                }
            };

        #[cfg(unix)]
        let notifier = crate::systemd::wanted()
            .then(|| tokio::spawn(crate::systemd::notify(self.handle(), self.shutdown_budget)));

        let (failures_tx, failures) = mpsc::unbounded_channel();
        let (restarts_tx, restarts_done) = mpsc::unbounded_channel();
        let n = self.graph.len();
        let mut run = Run {
            shutdown: self.shared.shutdown_requested.clone(),
            contexts: vec![None; n],
            runtime_errors: vec![None; n],
            restarts: vec![0; n],
            failed_while_restarting: (0..n).map(|_| None).collect(),
            lifecycle: &self,
            failures_tx,
            failures,
            restarts_tx,
            restarts_done,
        };

        let started = run.start_all().await;
        if started {
            self.shared.phase.send_replace(Phase::Ready);
            tracing::info!(components = n, "ready");
            run.supervise().await;
        }
        // The shutdown token may have been cancelled from outside; that is a request too.
        self.shared
            .trigger(TriggerKind::Requested, "shutdown token cancelled");
        if let Some(watchdog) = &watchdog {
            watchdog.triggered();
        }
        let (trigger, triggered_at) = self.shared.record().trigger.clone().expect("triggered");
        tracing::info!(kind = ?trigger.kind, detail = %trigger.detail, "shutdown triggered");
        let deadline = triggered_at
            .checked_add(self.shutdown_budget)
            .unwrap_or_else(|| triggered_at + crate::watchdog::NO_DEADLINE);

        if started {
            self.shared.phase.send_replace(Phase::Draining);
            self.shared.record().drain_delay = self.drain_delay;
            tracing::info!(drain_delay = ?self.drain_delay, "readiness withdrawn, draining");
            // Even a zero sleep waits for the timer's next tick (a millisecond).
            if !self.drain_delay.is_zero() {
                tokio::time::sleep(self.drain_delay).await;
            }
        }

        self.shared.phase.send_replace(Phase::Stopping);
        let budget_exhausted = run.stop_all(deadline).await;
        self.shared.phase.send_replace(Phase::Stopped);
        #[cfg(unix)]
        if let Some(notifier) = notifier {
            // It ends as soon as it sees the stopped phase.
            let _ = tokio::time::timeout(Duration::from_millis(100), notifier).await;
        }

        let failed = matches!(
            trigger.kind,
            TriggerKind::StartFailed | TriggerKind::ComponentFailed
        ) || self.shared.record().slots.iter().any(|s| {
            matches!(
                s.state,
                ComponentState::Done(Outcome::Failed | Outcome::TimedOut | Outcome::Panicked)
            )
        });
        let code = if budget_exhausted {
            exit_code::DEADLINE
        } else if failed {
            exit_code::FAILURE
        } else {
            exit_code::SUCCESS
        };
        let mut report = self.shared.snapshot(code, "still running at exit");
        tracing::info!(exit_code = code, total_ms = report.total_ms, report = %report.to_json(), "exit");
        report.watchdog = watchdog;
        report
    }
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

/// The resolution of tokio's timer, as slack when checking elapsed time against a timeout.
const TIMER_TICK: Duration = Duration::from_millis(2);

/// How long a stop that timed out waits for its aborted tasks to end.
const ABORT_GRACE: Duration = Duration::from_millis(100);

/// How a start or stop ended, when not cleanly: the outcome and the error text.
type Fault = (Outcome, String);

/// The state of one `run`: each component's current context, and what the orchestrator must
/// remember across phases.
struct Run<'a> {
    lifecycle: &'a Lifecycle,
    shutdown: tokio_util::sync::CancellationToken,
    /// The context of each component's current run, from its start to its stop.
    contexts: Vec<Option<Context>>,
    /// A run-time failure that ends a component's run, reported as its outcome.
    runtime_errors: Vec<Option<String>>,
    /// How many times each component has been restarted.
    restarts: Vec<u32>,
    /// A failure of a restarted run that came while its start was still in progress.
    failed_while_restarting: Vec<Option<Failure>>,
    failures_tx: mpsc::UnboundedSender<Failure>,
    failures: mpsc::UnboundedReceiver<Failure>,
    /// Restarts run as tasks of their own, which report here how they ended.
    restarts_tx: mpsc::UnboundedSender<(usize, Result<(), Fault>)>,
    restarts_done: mpsc::UnboundedReceiver<(usize, Result<(), Fault>)>,
}

impl Run<'_> {
    fn slot<R>(&self, i: usize, f: impl FnOnce(&mut Slot) -> R) -> R {
        f(&mut self.lifecycle.shared.record().slots[i])
    }

    fn name(&self, i: usize) -> &str {
        &self.lifecycle.registrations[i].name
    }

    /// A fresh context for component `i`, recorded as its current one.
    fn new_context(&mut self, i: usize) -> Context {
        let ctx = Context::new(
            self.slot(i, |s| s.name.clone()),
            i,
            self.failures_tx.clone(),
            self.lifecycle.handle(),
        );
        self.contexts[i] = Some(ctx.clone());
        ctx
    }

    /// Starts every component in dependency order, independent ones concurrently; returns
    /// whether all started before any trigger. Otherwise the starts still running are abandoned.
    async fn start_all(&mut self) -> bool {
        let graph = &self.lifecycle.graph;
        let mut waiting_on: Vec<usize> = graph.dependencies.iter().map(Vec::len).collect();
        let mut starting = FuturesUnordered::new();
        let mut started = 0;
        for i in (0..graph.len()).filter(|&i| waiting_on[i] == 0) {
            starting.push(self.launch_start(i));
        }
        while started < graph.len() {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                Some(failure) = self.failures.recv() => self.failed_at_run_time(failure, false),
                Some((i, result)) = starting.next() => {
                    let now = Instant::now();
                    match result {
                        Ok(()) => {
                            self.slot(i, |s| { s.state = ComponentState::Running; s.start_ended = Some(now) });
                            tracing::info!(component = self.name(i), "started");
                            started += 1;
                            for &d in &graph.dependents[i] {
                                waiting_on[d] -= 1;
                                if waiting_on[d] == 0 {
                                    starting.push(self.launch_start(d));
                                }
                            }
                        }
                        Err((outcome, error)) => {
                            tracing::error!(component = self.name(i), %error, "start failed");
                            self.abandon(i, outcome, error.clone());
                            self.lifecycle.shared.trigger(
                                TriggerKind::StartFailed,
                                format!("{}: {error}", self.name(i)),
                            );
                        }
                    }
                }
            }
        }
        if started == graph.len() && !self.shutdown.is_cancelled() {
            return true;
        }
        drop(starting);
        for i in 0..graph.len() {
            if self.slot(i, |s| s.state) == ComponentState::Starting {
                tracing::warn!(component = self.name(i), "start abandoned");
                self.abandon(
                    i,
                    Outcome::NotStarted,
                    "start abandoned: the shutdown began".into(),
                );
            }
        }
        false
    }

    fn launch_start(
        &mut self,
        i: usize,
    ) -> impl std::future::Future<Output = (usize, Result<(), Fault>)> {
        let ctx = self.new_context(i);
        self.slot(i, |s| {
            s.state = ComponentState::Starting;
            s.start_began = Some(Instant::now());
        });
        tracing::info!(component = self.name(i), "starting");
        let component = self.lifecycle.registrations[i].component.clone();
        let timeout = self.lifecycle.registrations[i].start_timeout;
        async move { (i, start(&*component, &ctx, timeout).await) }
    }

    /// Ends a component's current run that did not get to start: cancels its context and
    /// aborts its tasks, without calling its stop.
    fn abandon(&mut self, i: usize, outcome: Outcome, error: String) {
        if let Some(ctx) = self.contexts[i].take() {
            ctx.token().cancel();
            ctx.tasks().abort_all();
        }
        let now = Instant::now();
        self.slot(i, |s| {
            s.state = ComponentState::Done(outcome);
            s.start_ended.get_or_insert(now);
            s.error = Some(error);
        });
    }

    /// Waits for the trigger, meanwhile applying each component's failure policy.
    async fn supervise(&mut self) {
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return,
                Some(failure) = self.failures.recv() => self.failed_at_run_time(failure, true),
                Some((i, result)) = self.restarts_done.recv() => self.restart_ended(i, result),
            }
        }
    }

    /// Applies component `failure.component`'s policy to a failure of its current run.
    /// Without `may_restart` (during start-up) every failure but an ignored one rolls back.
    fn failed_at_run_time(&mut self, failure: Failure, may_restart: bool) {
        let i = failure.component;
        let current = self.contexts[i]
            .as_ref()
            .is_some_and(|ctx| ctx.token() == &failure.token);
        if !current || self.shutdown.is_cancelled() {
            return;
        }
        if self.slot(i, |s| s.state) == ComponentState::Restarting {
            // The restarted run failed before its start returned; handled once it has.
            self.failed_while_restarting[i] = Some(failure);
            return;
        }
        let name = self.name(i).to_owned();
        let error = failure.error;
        match self.lifecycle.registrations[i].on_failure {
            OnFailure::Ignore => {
                tracing::warn!(component = %name, %error, "failed at run time; ignored by policy");
            }
            OnFailure::Restart {
                max_restarts,
                initial_backoff,
                max_backoff,
            } if may_restart && self.restarts[i] < max_restarts => {
                self.restarts[i] += 1;
                let attempt = self.restarts[i];
                let backoff = initial_backoff
                    .saturating_mul(1 << (attempt - 1).min(20))
                    .min(max_backoff);
                tracing::warn!(component = %name, %error, attempt, ?backoff, "failed at run time; restarting");
                self.launch_restart(i, backoff);
            }
            ref policy => {
                let detail = match policy {
                    OnFailure::Restart { max_restarts, .. } if may_restart => {
                        format!("{error} (after {max_restarts} restarts)")
                    }
                    _ => error,
                };
                tracing::error!(component = %name, error = %detail, "failed at run time");
                self.runtime_errors[i] = Some(format!("failed at run time: {detail}"));
                self.lifecycle
                    .shared
                    .trigger(TriggerKind::ComponentFailed, format!("{name}: {detail}"));
            }
        }
    }

    /// Spawns a task that stops component `i`'s failed run, waits `backoff` and starts it
    /// again; the shutdown abandons the wait and the start. The task reports on
    /// `restarts_done`.
    fn launch_restart(&mut self, i: usize, backoff: Duration) {
        let old = self.contexts[i]
            .take()
            .expect("a running component has a context");
        let new = self.new_context(i);
        self.slot(i, |s| s.state = ComponentState::Restarting);
        let registration = &self.lifecycle.registrations[i];
        let (component, start_timeout, stop_timeout) = (
            registration.component.clone(),
            registration.start_timeout,
            registration.stop_timeout,
        );
        let (shutdown, shared, done) = (
            self.shutdown.clone(),
            self.lifecycle.shared.clone(),
            self.restarts_tx.clone(),
        );
        tokio::spawn(async move {
            let _ = stop(&*component, &old, stop_timeout).await;
            let abandoned = || {
                (
                    Outcome::Failed,
                    "restart abandoned: the shutdown began".to_owned(),
                )
            };
            let result = if shutdown
                .run_until_cancelled(tokio::time::sleep(backoff))
                .await
                .is_none()
            {
                Err(abandoned())
            } else {
                shared.record().slots[i].start_began = Some(Instant::now());
                shutdown
                    .run_until_cancelled(start(&*component, &new, start_timeout))
                    .await
                    .unwrap_or_else(|| Err(abandoned()))
            };
            let _ = done.send((i, result));
        });
    }

    /// Records how a restart ended. After the trigger, a failed restart leaves the component
    /// down; before it, it counts as another run-time failure.
    fn restart_ended(&mut self, i: usize, result: Result<(), Fault>) {
        let now = Instant::now();
        let pending_failure = self.failed_while_restarting[i].take();
        match result {
            Ok(()) => {
                self.slot(i, |s| {
                    s.state = ComponentState::Running;
                    s.start_ended = Some(now);
                });
                tracing::info!(component = self.name(i), "restarted");
                if let Some(failure) = pending_failure {
                    self.failed_at_run_time(failure, true);
                }
            }
            Err((_, error)) if self.shutdown.is_cancelled() => {
                let error = self.runtime_errors[i].take().unwrap_or(error);
                self.abandon(i, Outcome::Failed, error);
            }
            Err((_, error)) => {
                let token = self.contexts[i]
                    .as_ref()
                    .expect("restarting")
                    .token()
                    .clone();
                self.slot(i, |s| {
                    s.state = ComponentState::Running;
                    s.start_ended = Some(now);
                });
                self.failed_at_run_time(
                    Failure {
                        component: i,
                        token,
                        error,
                    },
                    true,
                );
            }
        }
    }

    /// Stops the running components, each once every component depending on it has finished,
    /// independent ones concurrently, each under min(its stop timeout, the time left before
    /// `deadline`). Returns whether the budget ran out.
    async fn stop_all(&mut self, deadline: Instant) -> bool {
        let graph = &self.lifecycle.graph;
        let mut waiting_on: Vec<usize> = graph.dependents.iter().map(Vec::len).collect();
        let mut ready: Vec<usize> = (0..graph.len()).filter(|&i| waiting_on[i] == 0).collect();
        let mut stopping = FuturesUnordered::new();
        // Components whose turn came while a restart of theirs was still stopping or starting.
        let mut turn_came = vec![false; graph.len()];
        let mut awaiting_restart = 0;
        let mut budget_exhausted = false;
        loop {
            // Components that are not running have nothing to stop: they finish at once, which
            // still releases their dependencies in order.
            while let Some(i) = ready.pop() {
                match self.launch_stop(i, deadline) {
                    Turn::Stop(stop) => stopping.push(stop),
                    Turn::Restarting => {
                        turn_came[i] = true;
                        awaiting_restart += 1;
                    }
                    Turn::BudgetExhausted => {
                        budget_exhausted = true;
                        release(graph, i, &mut waiting_on, &mut ready);
                    }
                    Turn::NotRunning => release(graph, i, &mut waiting_on, &mut ready),
                }
            }
            if stopping.is_empty() && awaiting_restart == 0 {
                break;
            }
            tokio::select! {
                Some((i, result)) = self.restarts_done.recv() => {
                    self.restart_ended(i, result);
                    if std::mem::take(&mut turn_came[i]) {
                        awaiting_restart -= 1;
                        ready.push(i);
                    }
                }
                Some((i, outcome, error, cut_by_budget)) = stopping.next() => {
                    budget_exhausted |= cut_by_budget;
                    self.stop_ended(i, outcome, error);
                    release(graph, i, &mut waiting_on, &mut ready);
                }
            }
        }
        budget_exhausted
    }

    fn stop_ended(&mut self, i: usize, outcome: Outcome, error: Option<String>) {
        let (outcome, error) = match (outcome, self.runtime_errors[i].take()) {
            (Outcome::Stopped, Some(runtime_error)) => (Outcome::Failed, Some(runtime_error)),
            (outcome, _) => (outcome, error),
        };
        let now = Instant::now();
        self.slot(i, |s| {
            s.state = ComponentState::Done(outcome);
            s.stop_ended = Some(now);
            s.error = error.clone();
        });
        match &error {
            None => tracing::info!(component = self.name(i), %outcome, "stopped"),
            Some(error) => tracing::warn!(component = self.name(i), %outcome, %error, "stopped"),
        }
    }

    /// Begins component `i`'s stop if it is running and time is left.
    fn launch_stop(
        &mut self,
        i: usize,
        deadline: Instant,
    ) -> Turn<impl std::future::Future<Output = (usize, Outcome, Option<String>, bool)>> {
        match self.slot(i, |s| s.state) {
            ComponentState::Running => {}
            ComponentState::Restarting => return Turn::Restarting,
            _ => return Turn::NotRunning,
        }
        let ctx = self.contexts[i]
            .take()
            .expect("a running component has a context");
        let now = Instant::now();
        if now >= deadline {
            ctx.token().cancel();
            let aborted = ctx.tasks().abort_all();
            self.slot(i, |s| {
                s.state = ComponentState::Done(Outcome::TimedOut);
                s.error = Some(format!(
                    "shutdown budget exhausted before its stop turn; {aborted} tasks aborted"
                ));
            });
            tracing::error!(
                component = self.name(i),
                "shutdown budget exhausted before its stop turn"
            );
            return Turn::BudgetExhausted;
        }
        let own_timeout = self.lifecycle.registrations[i].stop_timeout;
        let limit = own_timeout.min(deadline - now);
        self.slot(i, |s| {
            s.state = ComponentState::Stopping;
            s.stop_began = Some(now);
        });
        tracing::info!(component = self.name(i), "stopping");
        let component = self.lifecycle.registrations[i].component.clone();
        Turn::Stop(async move {
            let (outcome, error) = match stop(&*component, &ctx, limit).await {
                Ok(()) => (Outcome::Stopped, None),
                Err((outcome, error)) => (outcome, Some(error)),
            };
            let cut_by_budget = outcome == Outcome::TimedOut && limit < own_timeout;
            (i, outcome, error, cut_by_budget)
        })
    }
}

/// What a component's stop turn calls for.
enum Turn<F> {
    /// Wait for this stop.
    Stop(F),
    /// Wait for its restart to end, then take the turn again.
    Restarting,
    /// Nothing: it is not running.
    NotRunning,
    /// Nothing: the budget ran out before its turn, so it was cut off without a stop.
    BudgetExhausted,
}

/// Marks component `i` as stopped for its dependencies, queueing those with no dependent left.
fn release(graph: &Graph, i: usize, waiting_on: &mut [usize], ready: &mut Vec<usize>) {
    for &d in &graph.dependencies[i] {
        waiting_on[d] -= 1;
        if waiting_on[d] == 0 {
            ready.push(d);
        }
    }
}

/// Runs `component.start` under `timeout`, catching a panic.
async fn start(component: &dyn Component, ctx: &Context, timeout: Duration) -> Result<(), Fault> {
    ctx.set_deadline(Instant::now() + timeout);
    match tokio::time::timeout(
        timeout,
        AssertUnwindSafe(component.start(ctx)).catch_unwind(),
    )
    .await
    {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(error))) => Err((Outcome::Failed, format!("start failed: {error}"))),
        Ok(Err(panic)) => Err((
            Outcome::Panicked,
            format!("start panicked: {}", crate::panic_message(&*panic)),
        )),
        Err(_) => Err((
            Outcome::TimedOut,
            format!("start timed out after {timeout:?}"),
        )),
    }
}

/// Cancels the context, runs `component.stop` and waits for the component's tasks, all under
/// `limit`; aborts the tasks left when it runs out. A panic in stop is caught.
async fn stop(component: &dyn Component, ctx: &Context, limit: Duration) -> Result<(), Fault> {
    // The deadline first: tasks that wake on the token may read it at once.
    let began = Instant::now();
    ctx.set_deadline(began + limit);
    ctx.token().cancel();
    let work = async {
        let stopped = AssertUnwindSafe(component.stop(ctx)).catch_unwind().await;
        ctx.tasks().close_and_wait().await;
        stopped
    };
    let result = tokio::time::timeout(limit, work).await;
    let took = began.elapsed();
    match result {
        // The timer cannot fire while a stop blocks its thread; a stop that returns late
        // anyway still overran. (A timer tick of slack: tokio's timer has millisecond ticks.)
        Ok(_) if took > limit + TIMER_TICK => Err((
            Outcome::TimedOut,
            format!("stop took {took:?}, over its {limit:?} limit: it blocked its thread"),
        )),
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(error))) => Err((Outcome::Failed, format!("stop failed: {error}"))),
        Ok(Err(panic)) => Err((
            Outcome::Panicked,
            format!("stop panicked: {}", crate::panic_message(&*panic)),
        )),
        Err(_) => {
            let aborted = ctx.tasks().abort_all();
            // Aborted tasks end at their next poll; wait for that briefly, so what they hold
            // (a socket, a pooled connection) is released before the dependencies stop. A task
            // stuck in blocking code is not waited for.
            let _ = tokio::time::timeout(ABORT_GRACE, ctx.tasks().close_and_wait()).await;
            Err((
                Outcome::TimedOut,
                format!("stop timed out after {limit:?}; {aborted} tasks aborted"),
            ))
        }
    }
}
