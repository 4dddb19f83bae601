//! `ShutdownFlags`: the server's two moments of the shutdown (the drain has begun, the stop
//! turn has come) as flags that connections can read on every request and every wake-up
//! without taking a lock. Not the lifecycle's `Phase`: only these two moments, per server.
//!
//! A `CancellationToken` answers `is_cancelled` under a mutex shared by every clone, and its
//! `cancelled()` future locks the token's `Notify` each time it is polled again: a connection
//! task is woken for every request, so those locks were taken per request, by every connection,
//! on one mutex per token. Here a watcher task turns each token's cancellation into a flag, set
//! before it wakes the waiters of a `Notify` of the flag's own; a connection registers with that
//! `Notify` once and afterwards reads the flag only.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::futures::Notified;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The shutdown flags of one run of the server: `draining` from the trigger, `stopping` from
/// the server's stop turn.
#[derive(Debug, Default)]
pub(crate) struct ShutdownFlags {
    draining: Flag,
    stopping: Flag,
}

/// One flag, and the `Notify` woken once it is set (one each, so that a waiter is never woken
/// for the other flag).
#[derive(Debug, Default)]
struct Flag {
    set: AtomicBool,
    changed: Notify,
}

impl Flag {
    fn set(&self) {
        // The flag first: a connection woken by the notification must see it.
        self.set.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }

    fn reached(&self) -> Reached<'_> {
        Reached::new(&self.set, &self.changed)
    }
}

impl ShutdownFlags {
    /// The flags, and the watcher to run as a task of the component: it sets `draining` when
    /// `requested` is cancelled and `stopping` when `stopping` is, and ends at the latter.
    pub(crate) fn watch(
        requested: CancellationToken,
        stopping: CancellationToken,
    ) -> (Arc<Self>, impl Future<Output = ()> + Send + 'static) {
        let flags = Arc::new(ShutdownFlags::default());
        let watcher = {
            let flags = flags.clone();
            async move {
                tokio::select! {
                    biased;
                    () = stopping.cancelled() => if requested.is_cancelled() {
                        // A shutdown with no drain delay: both came before this task ran, and
                        // responses at the stop turn must still ask HTTP/1 clients to close.
                        flags.draining.set();
                    },
                    () = requested.cancelled() => {
                        flags.draining.set();
                        stopping.cancelled().await;
                    }
                }
                flags.stopping.set();
            }
        };
        (flags, watcher)
    }

    /// Whether the drain has begun.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.set.load(Ordering::Acquire)
    }

    /// Completes once the drain has begun.
    pub(crate) fn draining(&self) -> Reached<'_> {
        self.draining.reached()
    }

    /// Completes once the stop turn has come.
    pub(crate) fn stopping(&self) -> Reached<'_> {
        self.stopping.reached()
    }
}

pin_project_lite::pin_project! {
    /// Completes when its flag is set. It registers the task's waker with the `Notify` on its
    /// first poll only and afterwards reads the flag, which is enough because a task's waker
    /// wakes the same task for its whole life (`select!` passes it on unchanged).
    pub(crate) struct Reached<'a> {
        flag: &'a AtomicBool,
        changed: &'a Notify,
        #[pin]
        notified: Notified<'a>,
        registered: bool,
    }
}

impl<'a> Reached<'a> {
    fn new(flag: &'a AtomicBool, changed: &'a Notify) -> Self {
        Reached {
            flag,
            changed,
            notified: changed.notified(),
            registered: false,
        }
    }
}

impl Future for Reached<'_> {
    type Output = ();

    /// Inlined: polled whenever a connection's watchers fired (`Watchers`), and at every
    /// wake-up of a draining connection's task; once registered, it reads the flag only.
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.flag.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if self.registered {
            return Poll::Pending;
        }
        self.register(cx)
    }
}

impl Reached<'_> {
    /// The first poll: registers the task's waker with the `Notify`.
    #[cold]
    fn register(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        // A notification since the future was made counts: poll until registered.
        while this.notified.as_mut().poll(cx).is_ready() {
            // Notified: normally the flag is set, but a notification from before the future
            // was made may have been the one of an earlier moment.
            if this.flag.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            this.notified.set(this.changed.notified());
        }
        *this.registered = true;
        if this.flag.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_when_the_tokens_are_cancelled_and_the_watcher_ends() {
        let (requested, stopping) = (CancellationToken::new(), CancellationToken::new());
        let (flags, watcher) = ShutdownFlags::watch(requested.clone(), stopping.clone());
        let watcher = tokio::spawn(watcher);
        let wait = |stop: bool| {
            let flags = flags.clone();
            tokio::spawn(async move {
                if stop {
                    flags.stopping().await;
                } else {
                    flags.draining().await;
                }
            })
        };
        let (draining, stopped) = (wait(false), wait(true));
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!draining.is_finished() && !stopped.is_finished());
        assert!(!flags.is_draining());

        requested.cancel();
        draining.await.unwrap();
        assert!(flags.is_draining());
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!stopped.is_finished(), "woken by the drain, not the stop");

        stopping.cancel();
        stopped.await.unwrap();
        watcher.await.unwrap();
        // Once reached, at once.
        flags.draining().await;
        flags.stopping().await;
    }

    #[tokio::test]
    async fn a_stop_without_a_drain_ends_the_watcher() {
        let (requested, stopping) = (CancellationToken::new(), CancellationToken::new());
        let (flags, watcher) = ShutdownFlags::watch(requested, stopping.clone());
        let watcher = tokio::spawn(watcher);
        stopping.cancel();
        flags.stopping().await;
        watcher.await.unwrap();
        assert!(!flags.is_draining());
    }
}
