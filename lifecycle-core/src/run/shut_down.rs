//! The stops, in reverse dependency order: a component's turn comes once every component that
//! depends on it has finished; independent ones stop concurrently, each under min(its stop
//! timeout, the budget left).

use std::future::Future;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::time::Instant;
use tracing::Instrument;

use super::{Run, Stopped};
use crate::component_error::ComponentError;
use crate::graph::Graph;
use crate::guarded::{self, Fault};
use crate::state::{ComponentState, Outcome};

/// What a component's stop turn calls for.
enum Turn<F> {
    /// Wait for this stop.
    Stop(F),
    /// Wait for its restart, or its removal's stop, to end, then take the turn again.
    Busy,
    /// Nothing: it is not running.
    NotRunning,
    /// Nothing: the budget ran out before its turn, so it was cut off without a stop.
    BudgetExhausted,
}

impl Run {
    /// Stops the running components, each once every component depending on it has finished,
    /// independent ones concurrently, each under min(its stop timeout, the time left before
    /// `deadline`). Records whether the budget ran out.
    pub(crate) async fn stop_all(&mut self, deadline: Instant) {
        let count = self.graph.len();
        let mut waiting_on: Vec<usize> = self.graph.dependents.iter().map(Vec::len).collect();
        let mut ready: Vec<usize> = (0..count).filter(|&i| waiting_on[i] == 0).collect();
        let mut stopping = FuturesUnordered::new();
        // Components whose turn came while a restart of theirs was still stopping or starting,
        // or while their removal's stop was still running.
        let mut turn_came = vec![false; count];
        let mut awaiting_restart = 0;
        loop {
            // Components that are not running have nothing to stop: they finish at once, which
            // still releases their dependencies in order.
            while let Some(i) = ready.pop() {
                match self.launch_stop(i, deadline) {
                    Turn::Stop(stop) => stopping.push(stop),
                    Turn::Busy => {
                        turn_came[i] = true;
                        awaiting_restart += 1;
                    }
                    Turn::BudgetExhausted | Turn::NotRunning => {
                        release(&self.graph, i, &mut waiting_on, &mut ready);
                    }
                }
            }
            if stopping.is_empty() && awaiting_restart == 0 {
                break;
            }
            tokio::select! {
                Some(failure) = self.failures.recv() => self.failed_during_shutdown(failure),
                Some(ended) = self.restarts_done.recv() => {
                    let i = ended.component;
                    self.restart_ended(ended);
                    if std::mem::take(&mut turn_came[i]) {
                        awaiting_restart -= 1;
                        ready.push(i);
                    }
                }
                Some((i, result, cut_by_budget)) = stopping.next() => {
                    if cut_by_budget {
                        self.record().budget_exhausted();
                    }
                    let outcome = self.stop_ended(i, result);
                    if self.members[i].removing {
                        // Its removal, asked for before the trigger, ends with this stop.
                        self.removal_finished(i, outcome);
                    }
                    release(&self.graph, i, &mut waiting_on, &mut ready);
                }
                Some(change) = self.changes.recv() => change.refuse(),
                Some((i, result, _)) = self.removals.next() => {
                    // A removal under way at the trigger: its dependencies wait for it.
                    self.removal_stopped(i, result);
                    if std::mem::take(&mut turn_came[i]) {
                        awaiting_restart -= 1;
                        release(&self.graph, i, &mut waiting_on, &mut ready);
                    }
                }
            }
        }
    }

    /// Records how component `i`'s stop ended, and returns its outcome.
    pub(crate) fn stop_ended(&mut self, i: usize, result: Result<(), Fault>) -> Outcome {
        // A failure its tasks reported while stopping is already in the channel: they report
        // before they end, and the stop waited for them.
        self.take_reported_failures();
        self.members[i].context = None;
        let mut record = self.record();
        let outcome = record.stopped(i, result);
        let error = record.error(i).map(|e| (e.render(), e.held_by().to_vec()));
        drop(record);
        match error {
            None => tracing::info!(component = self.name(i), %outcome, "stopped"),
            Some((error, held_by)) if !held_by.is_empty() => {
                tracing::warn!(component = self.name(i), %outcome, %error, ?held_by, "stopped");
            }
            Some((error, _)) => {
                tracing::warn!(component = self.name(i), %outcome, %error, "stopped");
            }
        }
        outcome
    }

    /// Begins component `i`'s stop if it is running and time is left.
    fn launch_stop(&mut self, i: usize, deadline: Instant) -> Turn<impl Future<Output = Stopped>> {
        match self.record().state(i) {
            ComponentState::Running => {}
            // Only a removal's stop can be running before the component's turn.
            ComponentState::Restarting | ComponentState::Stopping => return Turn::Busy,
            _ => return Turn::NotRunning,
        }
        let ctx = self.members[i]
            .context
            .clone()
            .expect("a running component has a context");
        let now = Instant::now();
        if now >= deadline {
            self.members[i].context = None;
            let component = &*self.registrations[i].component;
            let held_by = crate::held_by::collect(component.held_by(), ctx.tasks().named_running());
            let aborted = guarded::abandon(&ctx);
            tracing::error!(
                component = self.name(i),
                ?held_by,
                "shutdown budget exhausted before its stop turn"
            );
            let mut record = self.record();
            record.budget_exhausted();
            record.cut_off(i, ComponentError::BudgetExhausted { aborted, held_by });
            drop(record);
            return Turn::BudgetExhausted;
        }
        let own_timeout = self.registrations[i].stop_timeout;
        let limit = own_timeout.min(deadline - now);
        self.record().stopping(i);
        tracing::info!(component = self.name(i), "stopping");
        let component = self.registrations[i].component.clone();
        // Under the shutdown's span: the stops of one shutdown show as one trace.
        let span = tracing::info_span!(
            "stop",
            component = self.name(i),
            limit_ms = limit.as_millis(),
            outcome = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        Turn::Stop(
            async move {
                let result = guarded::stop(&*component, &ctx, limit).await;
                let span = tracing::Span::current();
                match &result {
                    Ok(()) => span.record("outcome", "stopped"),
                    Err((outcome, error)) => span
                        .record("outcome", outcome.as_str())
                        .record("error", error.render()),
                };
                let cut_by_budget =
                    matches!(result, Err((Outcome::TimedOut, _))) && limit < own_timeout;
                (i, result, cut_by_budget)
            }
            .instrument(span),
        )
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
