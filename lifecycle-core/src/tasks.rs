//! The tasks a component spawns: tracked so stop can wait for them, abortable when it cannot.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;

/// A [`TaskTracker`] that also keeps an abort handle per live task.
///
/// `TaskTracker` can wait for its tasks but not cancel them; the abort handles let the stop
/// deadline end tasks that ignore their token. Handles of finished tasks are pruned as new
/// tasks are spawned, so a component that spawns a task per request keeps a bounded list.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrackedTasks {
    tracker: TaskTracker,
    live: Arc<Mutex<Live>>,
}

#[derive(Debug, Default)]
struct Live {
    handles: Vec<AbortHandle>,
    /// The length after the last prune; the next prune waits until the list doubles, which
    /// keeps spawning amortised O(1).
    pruned_len: usize,
    /// The tasks spawned with a name, and since when: what a stop that overran waits for.
    named: Vec<(Arc<str>, Instant, AbortHandle)>,
    /// What this run's stop gave up on at its deadline (jobs, messages handed back unfinished).
    gave_up_on: Vec<String>,
}

impl TrackedTasks {
    /// Spawns `future`, known by `name` (if any) to [`named_running`](Self::named_running).
    pub(crate) fn spawn<F>(&self, name: Option<Arc<str>>, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handle = self.tracker.spawn(future);
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(name) = name {
            live.named.retain(|(_, _, h)| !h.is_finished());
            live.named
                .push((name, Instant::now(), handle.abort_handle()));
        }
        if live.handles.len() >= 2 * live.pruned_len.max(16) {
            live.handles.retain(|h| !h.is_finished());
            live.pruned_len = live.handles.len();
        }
        live.handles.push(handle.abort_handle());
        handle
    }

    /// The named tasks still running, the oldest first: `task "flush" (running 12.3s)`.
    pub(crate) fn named_running(&self) -> Vec<String> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        live.named
            .iter()
            .filter(|(_, _, handle)| !handle.is_finished())
            .map(|(name, since, _)| {
                let age = now.saturating_duration_since(*since);
                format!("task {name:?} (running {})", crate::held_by::age(age))
            })
            .collect()
    }

    /// Notes what the run's stop gave up on at its deadline.
    pub(crate) fn gave_up_on(&self, what: String) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.gave_up_on.push(what);
    }

    /// What the run's stop gave up on, as noted.
    pub(crate) fn given_up(&self) -> Vec<String> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.gave_up_on.clone()
    }

    /// A token that counts as a running task until dropped: waited for like one, but it cannot
    /// be aborted.
    pub(crate) fn token(&self) -> TaskTrackerToken {
        self.tracker.token()
    }

    /// The number of tasks still running.
    pub(crate) fn len(&self) -> usize {
        self.tracker.len()
    }

    /// Takes no more tasks and waits until every tracked task has ended.
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe: dropping the future leaves the tasks running.
    pub(crate) async fn close_and_wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Takes no more tasks and aborts the running ones; returns how many were running.
    pub(crate) fn abort_all(&self) -> usize {
        self.tracker.close();
        let handles = {
            let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
            live.named.clear();
            std::mem::take(&mut live.handles)
        };
        handles
            .into_iter()
            .filter(|h| !h.is_finished())
            .inspect(AbortHandle::abort)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn abort_counts_only_live_tasks() {
        let tasks = TrackedTasks::default();
        tasks.spawn(None, async {});
        tasks.spawn(None, std::future::pending::<()>());
        tokio::task::yield_now().await;
        assert_eq!(tasks.abort_all(), 1);
        tokio::time::timeout(Duration::from_secs(1), tasks.close_and_wait())
            .await
            .expect("aborted tasks end");
    }

    #[tokio::test(start_paused = true)]
    async fn finished_handles_are_pruned() {
        let tasks = TrackedTasks::default();
        for _ in 0..10_000 {
            tasks.spawn(None, async {});
            tokio::task::yield_now().await;
        }
        let kept = tasks.live.lock().unwrap().handles.len();
        assert!(kept <= 64, "kept {kept} handles of finished tasks");
    }
}
