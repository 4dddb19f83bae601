//! Supervision, from ready to the trigger: each run-time failure meets its component's
//! [`OnFailure`] policy; restarts run as tasks of their own.

use std::time::Duration;

use futures::StreamExt;

use tokio::time::Instant;

use super::{RestartEnded, Run};
use crate::component_error::ComponentError;
use crate::context::Failure;
use crate::error::BoxError;
use crate::guarded;
use crate::registration::OnFailure;
use crate::state::{ComponentState, Outcome, TriggerKind};

impl Run {
    /// Waits for the trigger, meanwhile applying each component's failure policy and taking
    /// up the components added and removed through handles.
    pub(crate) async fn supervise(&mut self) {
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => {
                    self.abandon_additions();
                    return;
                }
                Some(failure) = self.failures.recv() => self.failed_at_run_time(failure, true),
                Some(ended) = self.restarts_done.recv() => {
                    let i = ended.component;
                    self.restart_ended(ended);
                    self.restart_settled(i);
                }
                Some((i, result)) = self.adding.next() => self.added_start_ended(i, result),
                Some((i, result, _)) = self.removals.next() => self.removal_stopped(i, result),
                Some(change) = self.changes.recv() => self.change(change),
            }
        }
    }

    /// Handles a failure of a component's current run: after the trigger it is recorded; before
    /// it, the component's policy applies. Without `may_restart` (during start-up) every
    /// failure but an ignored one rolls back.
    pub(crate) fn failed_at_run_time(&mut self, failure: Failure, may_restart: bool) {
        // Once the shutdown has begun, or the component is being removed, no policy applies.
        if self.shutdown.is_cancelled() || self.members[failure.component].removing {
            return self.failed_during_shutdown(failure);
        }
        if !self.is_current(&failure) {
            return;
        }
        let i = failure.component;
        if self.record().state(i) == ComponentState::Restarting {
            // The restarted run failed before its start returned; handled once it has.
            self.members[i].failed_while_restarting = Some(failure);
            return;
        }
        self.apply_policy(i, failure.error, may_restart);
    }

    /// Applies component `i`'s policy to a failure of its current run, whether that run is
    /// still going or its (re)start failed.
    fn apply_policy(&mut self, i: usize, error: BoxError, may_restart: bool) {
        let name = self.name(i).to_owned();
        let rendered = crate::component_error::render_chain(&*error);
        match self.registrations[i].on_failure {
            OnFailure::Ignore => {
                tracing::warn!(component = %name, error = %rendered, "failed at run time; ignored by policy");
            }
            OnFailure::Restart {
                max_restarts,
                initial_backoff,
                max_backoff,
            } if may_restart && self.members[i].restarts < max_restarts => {
                self.members[i].restarts += 1;
                let attempt = self.members[i].restarts;
                let backoff = initial_backoff
                    .saturating_mul(1 << (attempt - 1).min(20))
                    .min(max_backoff);
                tracing::warn!(component = %name, error = %rendered, attempt, ?backoff, "failed at run time; restarting");
                self.launch_restart(i, backoff);
            }
            ref policy => {
                let (error, detail) = match policy {
                    OnFailure::Restart { max_restarts, .. } if may_restart => (
                        ComponentError::RestartsExhausted {
                            restarts: *max_restarts,
                            source: error,
                        },
                        format!("{rendered} (after {max_restarts} restarts)"),
                    ),
                    _ => (ComponentError::FailedAtRunTime(error), rendered),
                };
                tracing::error!(component = %name, error = %detail, "failed at run time");
                if self.members[i].context.is_some() {
                    // Still running: the failure is its outcome once it has stopped in turn.
                    self.record().failed(i, error);
                } else {
                    // Its restart did not start: there is no run left to stop.
                    self.record().ended(i, Outcome::Failed, error);
                }
                self.state()
                    .trigger(TriggerKind::ComponentFailed, format!("{name}: {detail}"));
            }
        }
    }

    /// Spawns a task that stops component `i`'s failed run (if it has one running), waits
    /// `backoff` and starts it again; the shutdown abandons the wait and the start. The task
    /// reports on `restarts_done`.
    fn launch_restart(&mut self, i: usize, backoff: Duration) {
        let old = self.members[i].context.take();
        let new = self.new_context(i);
        self.record().restarting(i);
        let registration = &self.registrations[i];
        let (component, start_timeout, stop_timeout) = (
            registration.component.clone(),
            registration.start_timeout,
            registration.stop_timeout,
        );
        let (shutdown, done) = (self.shutdown.clone(), self.restarts_tx.clone());
        tokio::spawn(async move {
            if let Some(old) = old {
                let _ = guarded::stop(&*component, &old, stop_timeout).await;
            }
            let abandoned = || (Outcome::Failed, ComponentError::RestartAbandoned);
            let (start_began, result) = if shutdown
                .run_until_cancelled(tokio::time::sleep(backoff))
                .await
                .is_none()
            {
                (None, Err(abandoned()))
            } else {
                let began = Instant::now();
                let result = shutdown
                    .run_until_cancelled(guarded::start(&*component, &new, start_timeout))
                    .await
                    .unwrap_or_else(|| Err(abandoned()));
                (Some(began), result)
            };
            let _ = done.send(RestartEnded {
                component: i,
                start_began,
                result,
            });
        });
    }

    /// Records how a restart ended. A restart that did not start is never stopped: after the
    /// trigger it leaves the component down; before it, it is another run-time failure.
    pub(super) fn restart_ended(&mut self, ended: RestartEnded) {
        let i = ended.component;
        let pending_failure = self.members[i].failed_while_restarting.take();
        if let Some(began) = ended.start_began {
            self.record().starting(i, began);
        }
        match ended.result {
            Ok(()) => {
                self.started(i);
                tracing::info!(component = self.name(i), "restarted");
                if let Some(failure) = pending_failure {
                    self.failed_at_run_time(failure, true);
                }
            }
            Err((outcome, error)) if self.shutdown.is_cancelled() => {
                self.abandon(i, outcome, error);
            }
            Err((_, error)) => {
                tracing::warn!(component = self.name(i), error = %error.render(), "restart failed to start");
                if let Some(ctx) = self.members[i].context.take() {
                    guarded::abandon(&ctx);
                }
                self.apply_policy(i, Box::new(error), true);
            }
        }
    }
}
