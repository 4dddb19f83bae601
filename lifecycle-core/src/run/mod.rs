//! `Run`: the orchestrator of one [`Lifecycle::run`](crate::Lifecycle::run), given a [`Plan`],
//! and what it remembers across the phases. The phases themselves are in `start_up.rs`,
//! `supervise.rs`, `drain.rs` and `shut_down.rs`; the handles' additions and removals in
//! `changes.rs`.
//!
//! The orchestrator decides; the [`Record`] records. Every change of a component's state goes
//! through the record's methods (and the registry's), from this task only. The orchestrator
//! also keeps its own view of each component ([`Member`]: its current context, its restarts,
//! its removal), which nobody else reads, and it grows its plan (registrations and graph) as
//! components are added.

mod changes;
mod drain;
mod shut_down;
mod start_up;
mod supervise;

use std::collections::HashMap;
use std::sync::MutexGuard;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::changes::{Change, ChangeError};
use crate::component_error::ComponentError;
use crate::context::{Context, Failure};
use crate::graph::Graph;
use crate::guarded::Fault;
use crate::handle::LifecycleHandle;
use crate::lifecycle_state::LifecycleState;
use crate::record::Record;
use crate::registration::Registration;
use crate::state::Outcome;

/// How a restart (a task of its own) ended: when its start began, if it got that far, and how
/// the start went.
struct RestartEnded {
    component: usize,
    start_began: Option<Instant>,
    result: Result<(), Fault>,
}

/// The orchestrator's own view of one component.
#[derive(Default)]
struct Member {
    /// The context of its current run, from the start to the end of the stop.
    context: Option<Context>,
    /// How many times it has been restarted.
    restarts: u32,
    /// A failure of a restarted run that came while its start was still in progress.
    failed_while_restarting: Option<Failure>,
    /// Whether it is being removed (asked for, or a component depending on one that is).
    removing: bool,
    /// While it is being removed: how many of the components depending on it have yet to stop.
    dependents_left: usize,
    /// Its removal's turn came while it was starting or restarting: taken once that ends.
    turn_pending: bool,
}

/// How one stop ended, and whether the budget (rather than its own timeout) cut it.
type Stopped = (usize, Result<(), Fault>, bool);

/// What a run is given: the registered components and their graph, taken from the
/// [`Lifecycle`](crate::Lifecycle), which the run does not otherwise know.
pub(crate) struct Plan {
    pub(crate) registrations: Vec<Registration>,
    pub(crate) graph: Graph,
}

pub(crate) struct Run {
    /// The lifecycle's handle: its state (record, registry, trigger), and what each
    /// component's context gets.
    handle: LifecycleHandle,
    /// Every component, those added while running included, by index (the record's too).
    registrations: Vec<Registration>,
    graph: Graph,
    /// The components registered as `stops_last`, on which every added component depends.
    last: Vec<usize>,
    /// Each name in use (not removed) and its component.
    names: HashMap<String, usize>,
    /// The handles' additions and removals.
    changes: mpsc::UnboundedReceiver<Change>,
    /// The starts of added components in progress.
    adding: FuturesUnordered<BoxFuture<'static, (usize, Result<(), Fault>)>>,
    /// Whoever waits for an added component's start.
    added_waiters: HashMap<usize, oneshot::Sender<Result<(), ChangeError>>>,
    /// The stops of removed components in progress.
    removals: FuturesUnordered<BoxFuture<'static, Stopped>>,
    /// Whoever waits for a removed component's stop.
    removal_waiters: HashMap<usize, Vec<oneshot::Sender<Result<Outcome, ChangeError>>>>,
    shutdown: CancellationToken,
    members: Vec<Member>,
    failures_tx: mpsc::UnboundedSender<Failure>,
    failures: mpsc::UnboundedReceiver<Failure>,
    restarts_tx: mpsc::UnboundedSender<RestartEnded>,
    restarts_done: mpsc::UnboundedReceiver<RestartEnded>,
}

impl Run {
    /// The orchestrator of `plan`, for the lifecycle of `handle`.
    pub(crate) fn new(plan: Plan, handle: LifecycleHandle) -> Self {
        let Plan {
            registrations,
            graph,
        } = plan;
        let (failures_tx, failures) = mpsc::unbounded_channel();
        let (restarts_tx, restarts_done) = mpsc::unbounded_channel();
        // Only one run takes the changes; a channel with no sender stands in otherwise.
        let changes = crate::changes::take_receiver(&handle.state)
            .unwrap_or_else(|| mpsc::unbounded_channel().1);
        let names = registrations
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.clone(), i))
            .collect();
        let last = (0..registrations.len())
            .filter(|&i| registrations[i].stops_last)
            .collect();
        Run {
            shutdown: handle.state.shutdown_token().clone(),
            handle,
            members: (0..graph.len()).map(|_| Member::default()).collect(),
            registrations,
            graph,
            last,
            names,
            changes,
            adding: FuturesUnordered::new(),
            added_waiters: HashMap::new(),
            removals: FuturesUnordered::new(),
            removal_waiters: HashMap::new(),
            failures_tx,
            failures,
            restarts_tx,
            restarts_done,
        }
    }

    pub(crate) fn record(&self) -> MutexGuard<'_, Record> {
        self.handle.state.record()
    }

    /// Component `i` started (or restarted): recorded, and its tasks are what the handles and
    /// the watchdog ask about from now on.
    pub(crate) fn started(&mut self, i: usize) {
        let tasks = self.members[i].context.as_ref().map(|c| c.tasks().clone());
        self.record().started(i);
        self.state().registry().started(i, tasks);
    }

    pub(crate) fn state(&self) -> &LifecycleState {
        &self.handle.state
    }

    /// How many components the orchestrator knows, those added and removed included.
    pub(crate) fn component_count(&self) -> usize {
        self.registrations.len()
    }

    pub(crate) fn name(&self, i: usize) -> &str {
        &self.registrations[i].name
    }

    /// A fresh context for component `i`, recorded as its current one.
    pub(crate) fn new_context(&mut self, i: usize) -> Context {
        let ctx = Context::new(
            self.name(i).into(),
            i,
            self.failures_tx.clone(),
            self.handle.clone(),
        );
        self.members[i].context = Some(ctx.clone());
        ctx
    }

    /// Ends component `i`'s current run without calling its stop, as one whose start did not
    /// complete: cancels its context and aborts its tasks.
    pub(crate) fn abandon(&mut self, i: usize, outcome: Outcome, error: ComponentError) {
        if let Some(ctx) = self.members[i].context.take() {
            crate::guarded::abandon(&ctx);
        }
        self.record().ended(i, outcome, error);
    }

    /// The failure, if it is one of component `i`'s current run (not a late one of a run that
    /// was restarted or has ended).
    pub(crate) fn is_current(&self, failure: &Failure) -> bool {
        self.members[failure.component]
            .context
            .as_ref()
            .is_some_and(|ctx| ctx.token() == &failure.token)
    }

    /// A failure reported once the shutdown has begun: no policy applies, it is recorded as the
    /// component's outcome.
    pub(crate) fn failed_during_shutdown(&mut self, failure: Failure) {
        if !self.is_current(&failure) {
            return;
        }
        let i = failure.component;
        let error = ComponentError::FailedAtRunTime(failure.error);
        tracing::error!(component = self.name(i), error = %error.render(), "failed during the shutdown");
        self.record().failed(i, error);
    }

    /// Records the failures already reported, as [`failed_during_shutdown`] does.
    ///
    /// [`failed_during_shutdown`]: Self::failed_during_shutdown
    pub(crate) fn take_reported_failures(&mut self) {
        while let Ok(failure) = self.failures.try_recv() {
            self.failed_during_shutdown(failure);
        }
    }
}
