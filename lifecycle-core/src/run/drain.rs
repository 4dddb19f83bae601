//! The drain delay: readiness is already off, everything still runs, and the orchestrator keeps
//! recording what happens (a component failing, a restart ending) until the stops begin.

use std::time::Duration;

use futures::StreamExt;

use super::Run;

impl Run {
    /// Waits `delay`, recording failures and restarts that end meanwhile.
    pub(crate) async fn drain(&mut self, delay: Duration) {
        // Even a zero sleep waits for the timer's next tick (a millisecond).
        if delay.is_zero() {
            return;
        }
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return,
                Some(failure) = self.failures.recv() => self.failed_during_shutdown(failure),
                Some(ended) = self.restarts_done.recv() => self.restart_ended(ended),
                Some(change) = self.changes.recv() => change.refuse(),
                Some((i, result, _)) = self.removals.next() => self.removal_stopped(i, result),
            }
        }
    }
}
