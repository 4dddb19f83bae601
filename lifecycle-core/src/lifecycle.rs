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
        self.drain_delay + self.critical_path_time
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

        let (failures_tx, failures) = mpsc::unbounded_channel();
        let mut run = Run {
            shutdown: self.shared.shutdown_requested.clone(),
            contexts: vec![None; self.graph.len()],
            runtime_errors: vec![None; self.graph.len()],
            restarts: vec![0; self.graph.len()],
            lifecycle: &self,
            failures_tx,
            failures,
        };

        let started = run.start_all().await;
        let mut restarting = FuturesUnordered::new();
        if started {
            self.shared.phase.send_replace(Phase::Ready);
            tracing::info!(components = self.graph.len(), "ready");
            run.supervise(&mut restarting).await;
        }
        // The shutdown token may have been cancelled from outside; that is a request too.
        self.shared
            .trigger(TriggerKind::Requested, "shutdown token cancelled");
        if let Some(watchdog) = &watchdog {
            watchdog.triggered();
        }
        let (trigger, triggered_at) = self.shared.record().trigger.clone().expect("triggered");
        tracing::info!(kind = ?trigger.kind, detail = %trigger.detail, "shutdown triggered");
        let deadline = triggered_at + self.shutdown_budget;

        if started {
            self.shared.phase.send_replace(Phase::Draining);
            self.shared.record().drain_delay = self.drain_delay;
            tracing::info!(drain_delay = ?self.drain_delay, "readiness withdrawn, draining");
            let drain = tokio::time::sleep(self.drain_delay);
            let finish_restarts = async {
                while let Some((i, result)) = restarting.next().await {
                    run.restart_ended(i, result, None);
                }
            };
            futures::join!(drain, finish_restarts);
        }

        self.shared.phase.send_replace(Phase::Stopping);
        let budget_exhausted = run.stop_all(deadline).await;
        self.shared.phase.send_replace(Phase::Stopped);

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
    restarts: Vec<u32>,
    failures_tx: mpsc::UnboundedSender<Failure>,
    failures: mpsc::UnboundedReceiver<Failure>,
}

type RestartFuture = futures::future::BoxFuture<'static, (usize, Result<(), Fault>)>;

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
                Some(failure) = self.failures.recv() => self.failed_at_run_time(failure, None),
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
    async fn supervise(&mut self, restarting: &mut FuturesUnordered<RestartFuture>) {
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return,
                Some(failure) = self.failures.recv() => self.failed_at_run_time(failure, Some(restarting)),
                Some((i, result)) = restarting.next() => self.restart_ended(i, result, Some(restarting)),
            }
        }
    }

    /// Applies component `failure.component`'s policy to a failure of its current run.
    /// `restarting` is `None` during start-up, where every failure rolls the start-up back.
    fn failed_at_run_time(
        &mut self,
        failure: Failure,
        restarting: Option<&mut FuturesUnordered<RestartFuture>>,
    ) {
        let i = failure.component;
        let current = self.contexts[i]
            .as_ref()
            .is_some_and(|ctx| ctx.token() == &failure.token);
        if !current {
            return;
        }
        let name = self.name(i).to_owned();
        let error = failure.error;
        match (&self.lifecycle.registrations[i].on_failure, restarting) {
            (OnFailure::Ignore, _) => {
                tracing::warn!(component = %name, %error, "failed at run time; ignored by policy");
            }
            (
                &OnFailure::Restart {
                    max_restarts,
                    initial_backoff,
                    max_backoff,
                },
                Some(restarting),
            ) if self.restarts[i] < max_restarts => {
                self.restarts[i] += 1;
                let attempt = self.restarts[i];
                let backoff = initial_backoff
                    .saturating_mul(1 << (attempt - 1).min(20))
                    .min(max_backoff);
                tracing::warn!(component = %name, %error, attempt, ?backoff, "failed at run time; restarting");
                restarting.push(self.launch_restart(i, backoff));
            }
            (policy, _) => {
                let detail = match policy {
                    OnFailure::Restart { max_restarts, .. } => {
                        format!("{error} (after {max_restarts} restarts)")
                    }
                    _ => error,
                };
                tracing::error!(component = %name, error = %detail, "failed at run time");
                self.lifecycle
                    .shared
                    .trigger(TriggerKind::ComponentFailed, format!("{name}: {detail}"));
                self.runtime_errors[i] = Some(format!("failed at run time: {detail}"));
            }
        }
    }

    /// Stops component `i`'s failed run, waits `backoff` and starts it again; the shutdown
    /// abandons the wait and the start.
    fn launch_restart(&mut self, i: usize, backoff: Duration) -> RestartFuture {
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
        let (shutdown, shared) = (self.shutdown.clone(), self.lifecycle.shared.clone());
        Box::pin(async move {
            let _ = stop(&*component, &old, stop_timeout).await;
            let abandoned = || {
                (
                    Outcome::Failed,
                    "restart abandoned: the shutdown began".to_owned(),
                )
            };
            if shutdown
                .run_until_cancelled(tokio::time::sleep(backoff))
                .await
                .is_none()
            {
                return (i, Err(abandoned()));
            }
            shared.record().slots[i].start_began = Some(Instant::now());
            let result = match shutdown
                .run_until_cancelled(start(&*component, &new, start_timeout))
                .await
            {
                Some(result) => result,
                None => Err(abandoned()),
            };
            (i, result)
        })
    }

    /// Records how a restart ended; a failed restart counts as another run-time failure.
    fn restart_ended(
        &mut self,
        i: usize,
        result: Result<(), Fault>,
        restarting: Option<&mut FuturesUnordered<RestartFuture>>,
    ) {
        let now = Instant::now();
        match result {
            Ok(()) => {
                self.slot(i, |s| {
                    s.state = ComponentState::Running;
                    s.start_ended = Some(now);
                });
                tracing::info!(component = self.name(i), "restarted");
            }
            Err((_, error)) if restarting.is_none() || self.shutdown.is_cancelled() => {
                self.abandon(i, Outcome::Failed, error);
            }
            Err((_, error)) => {
                let token = self.contexts[i]
                    .as_ref()
                    .expect("restarting")
                    .token()
                    .clone();
                self.slot(i, |s| s.start_ended = Some(now));
                self.failed_at_run_time(
                    Failure {
                        component: i,
                        token,
                        error,
                    },
                    restarting,
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
        let mut budget_exhausted = false;
        loop {
            // Components that are not running have nothing to stop: they finish at once, which
            // still releases their dependencies in order.
            while let Some(i) = ready.pop() {
                match self.launch_stop(i, deadline) {
                    Some(stop) => stopping.push(stop),
                    None => {
                        budget_exhausted |=
                            self.slot(i, |s| s.state) == ComponentState::Done(Outcome::TimedOut);
                        release(graph, i, &mut waiting_on, &mut ready);
                    }
                }
            }
            let Some((i, outcome, error, cut_by_budget)) = stopping.next().await else {
                break;
            };
            budget_exhausted |= cut_by_budget;
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
                Some(error) => {
                    tracing::warn!(component = self.name(i), %outcome, %error, "stopped")
                }
            }
            release(graph, i, &mut waiting_on, &mut ready);
        }
        budget_exhausted
    }

    /// Begins component `i`'s stop if it is running and time is left. Returns `None` when
    /// there is nothing to wait for.
    fn launch_stop(
        &mut self,
        i: usize,
        deadline: Instant,
    ) -> Option<impl std::future::Future<Output = (usize, Outcome, Option<String>, bool)>> {
        if self.slot(i, |s| s.state) != ComponentState::Running {
            return None;
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
            return None;
        }
        let own_timeout = self.lifecycle.registrations[i].stop_timeout;
        let limit = own_timeout.min(deadline - now);
        self.slot(i, |s| {
            s.state = ComponentState::Stopping;
            s.stop_began = Some(now);
        });
        tracing::info!(component = self.name(i), "stopping");
        let component = self.lifecycle.registrations[i].component.clone();
        Some(async move {
            let (outcome, error) = match stop(&*component, &ctx, limit).await {
                Ok(()) => (Outcome::Stopped, None),
                Err((outcome, error)) => (outcome, Some(error)),
            };
            let cut_by_budget = outcome == Outcome::TimedOut && limit < own_timeout;
            (i, outcome, error, cut_by_budget)
        })
    }
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
            format!("start panicked: {}", crate::panic_message(&panic)),
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
    ctx.token().cancel();
    let work = async {
        let stopped = AssertUnwindSafe(component.stop(ctx)).catch_unwind().await;
        ctx.tasks().close_and_wait().await;
        stopped
    };
    match tokio::time::timeout(limit, work).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(error))) => Err((Outcome::Failed, format!("stop failed: {error}"))),
        Ok(Err(panic)) => Err((
            Outcome::Panicked,
            format!("stop panicked: {}", crate::panic_message(&panic)),
        )),
        Err(_) => {
            let aborted = ctx.tasks().abort_all();
            Err((
                Outcome::TimedOut,
                format!("stop timed out after {limit:?}; {aborted} tasks aborted"),
            ))
        }
    }
}
