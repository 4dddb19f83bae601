//! The waker a connection's watchers (the drain's flag, the stop turn's, the idle timer) are
//! registered with. It notes that one of them fired before it wakes the connection's task, so
//! the task polls them only then, not at each of its wake-ups (two or three per request).
//! Polled at every wake-up, the three cost about 120 instructions and 18 L1 data misses per
//! request (BENCHMARKS section 9), the largest part of what lifecycle-http added to a request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// A connection's watchers' waker, and whether one of them fired since they were last polled.
#[derive(Debug)]
pub(crate) struct Watchers {
    waker: Waker,
    fired: Arc<Fired>,
}

#[derive(Debug)]
struct Fired {
    fired: AtomicBool,
    /// The connection's task, as of the watchers' last poll. A connection runs as one task,
    /// whose wakers all wake it, so this one is not refreshed at every poll.
    task: Mutex<Option<Waker>>,
}

impl Wake for Fired {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        // Woken outside the lock: rare (a watcher fired), and no executor's wake can then
        // meet the lock held.
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(task) = task {
            task.wake();
        }
    }
}

impl Watchers {
    pub(crate) fn new() -> Self {
        let fired = Arc::new(Fired {
            // The first poll registers the watchers.
            fired: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        Watchers {
            waker: Waker::from(fired.clone()),
            fired,
        }
    }

    /// `poll` (of the watchers) if one of them fired since the last call, or on the first:
    /// with a context whose waker notes the firing, then wakes `cx`'s task. `Pending`
    /// otherwise. Inlined: the connection's task calls it at every wake-up.
    #[inline]
    pub(crate) fn poll<T>(
        &self,
        cx: &Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        if !self.fired.fired.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        self.poll_fired(cx, poll)
    }

    #[cold]
    fn poll_fired<T>(
        &self,
        cx: &Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        // Cleared before the poll: a watcher that fires during it wakes the task again.
        self.fired.fired.store(false, Ordering::Release);
        {
            let mut task = self
                .fired
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !task.as_ref().is_some_and(|task| task.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        poll(&mut Context::from_waker(&self.waker))
    }
}

#[cfg(test)]
mod tests {
    use std::future::{poll_fn, Future};
    use std::pin::pin;
    use std::time::Duration;

    use tokio::sync::Notify;

    use super::*;

    /// A watcher that fires between the task's wake-ups is polled at the next one, and one
    /// that has not fired is not polled at all.
    #[tokio::test(start_paused = true)]
    async fn polls_the_watchers_only_after_one_fired() {
        let notify = Arc::new(Notify::new());
        let watchers = Watchers::new();
        let mut polls = 0;
        let mut notified = pin!(notify.notified());
        let mut woken = pin!(tokio::time::sleep(Duration::from_millis(20)));
        let fire = tokio::spawn({
            let notify = notify.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                notify.notify_waiters();
            }
        });
        poll_fn(|cx| {
            // The task is also woken by something else (a request) before the watcher fires.
            let _ = woken.as_mut().poll(cx);
            watchers.poll(cx, |cx| {
                polls += 1;
                notified.as_mut().poll(cx)
            })
        })
        .await;
        fire.await.unwrap();
        // The first poll registered it; the wake-up by the timer did not poll it; its firing
        // did, and ended the wait.
        assert_eq!(polls, 2);
    }
}
