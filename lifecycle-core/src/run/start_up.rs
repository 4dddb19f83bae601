//! The start-up: components start in dependency order, independent ones concurrently; a
//! failure, or the shutdown, ends it and abandons the starts still running.

use std::future::Future;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::time::Instant;
use tracing::Instrument;

use super::Run;
use crate::component_error::ComponentError;
use crate::guarded::{self, Fault};
use crate::state::{ComponentState, Outcome, TriggerKind};

impl Run {
    /// Starts every component in dependency order, independent ones concurrently; returns
    /// whether all started before any trigger. Otherwise the starts still running are abandoned.
    pub(crate) async fn start_all(&mut self) -> bool {
        let count = self.graph.len();
        let mut waiting_on: Vec<usize> = self.graph.dependencies.iter().map(Vec::len).collect();
        let mut starting = FuturesUnordered::new();
        let mut started = 0;
        for i in (0..count).filter(|&i| waiting_on[i] == 0) {
            starting.push(self.launch_start(i));
        }
        while started < count {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                Some(failure) = self.failures.recv() => self.failed_at_run_time(failure, false),
                Some((i, result)) = starting.next() => match result {
                    Ok(()) => {
                        self.started(i);
                        tracing::info!(component = self.name(i), "started");
                        started += 1;
                        for k in 0..self.graph.dependents[i].len() {
                            let d = self.graph.dependents[i][k];
                            waiting_on[d] -= 1;
                            if waiting_on[d] == 0 {
                                starting.push(self.launch_start(d));
                            }
                        }
                    }
                    Err((outcome, error)) => {
                        let detail = format!("{}: {}", self.name(i), error.render());
                        tracing::error!(component = self.name(i), error = %error.render(), "start failed");
                        self.abandon(i, outcome, error);
                        self.state().trigger(TriggerKind::StartFailed, detail);
                    }
                },
            }
        }
        if started == count && !self.shutdown.is_cancelled() {
            return true;
        }
        drop(starting);
        for i in 0..count {
            if self.record().state(i) == ComponentState::Starting {
                tracing::warn!(component = self.name(i), "start abandoned");
                self.abandon(i, Outcome::NotStarted, ComponentError::StartAbandoned);
            }
        }
        false
    }

    pub(crate) fn launch_start(
        &mut self,
        i: usize,
    ) -> impl Future<Output = (usize, Result<(), Fault>)> {
        let ctx = self.new_context(i);
        self.record().starting(i, Instant::now());
        tracing::info!(component = self.name(i), "starting");
        let component = self.registrations[i].component.clone();
        let timeout = self.registrations[i].start_timeout;
        let span = tracing::info_span!("start", component = self.name(i));
        async move { (i, guarded::start(&*component, &ctx, timeout).await) }.instrument(span)
    }
}
