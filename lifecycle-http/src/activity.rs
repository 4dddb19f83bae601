//! What a connection is doing: how many requests it has in progress, whether a response's bytes
//! are still waiting to be written, whether it has done anything lately, and whether it speaks
//! HTTP/2. The stop turn and the header read timeout both ask it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use crate::requests::Requests;
use crate::serving::Serving;
use crate::shutdown_flags::ShutdownFlags;
use crate::shutdown_signal::ShutdownSignal;
use crate::stats::HttpStats;

/// A connection's activity, shared by its requests (through their guards), its socket
/// ([`ConnIo`](crate::io::ConnIo)) and its task.
///
/// It also holds what every request of the connection needs (the server's counters, the
/// handlers' [`ShutdownSignal`], the body read timeout), so that a request clones one `Arc`,
/// this one, rather than one per thing.
#[derive(Debug)]
pub(crate) struct Activity {
    stats: HttpStats,
    requests: Arc<Requests>,
    signal: ShutdownSignal,
    flags: Arc<ShutdownFlags>,
    body_read_timeout: Option<Duration>,
    busy: Busy,
    /// Set at a `101 Switching Protocols`: the socket lives on as an upgraded connection.
    upgraded: AtomicBool,
}

/// Whether a connection is busy, and since when it has not been.
#[derive(Debug, Default)]
pub(crate) struct Busy {
    /// Requests in progress (the low 32 bits) and a count of the moments the connection
    /// stopped being busy (the high 32 bits, wrapping): one atomic add per request each way,
    /// and no clock read, which cost more than the rest of the counting together.
    state: AtomicU64,
    /// Whether the socket's last write returned `Pending`: bytes of a response (whose body
    /// hyper may already have dropped) still sit in hyper's buffer.
    write_blocked: AtomicBool,
    /// Whether the client sent the HTTP/2 preface.
    http2: AtomicBool,
    /// How many reads from the socket returned bytes: whether the client is still there.
    reads: AtomicU64,
}

/// One request in progress, in [`Activity::state`].
const IN_PROGRESS: u64 = 1;
/// One moment the connection stopped being busy, in [`Activity::state`].
const WENT_IDLE: u64 = 1 << 32;
/// How many checks [`Activity::idle_for`] makes per period.
const IDLE_CHECKS: u32 = 4;

impl Activity {
    pub(crate) fn new(
        stats: HttpStats,
        requests: Arc<Requests>,
        signal: ShutdownSignal,
        flags: Arc<ShutdownFlags>,
        body_read_timeout: Option<Duration>,
    ) -> Arc<Self> {
        Arc::new(Activity {
            stats,
            requests,
            signal,
            flags,
            body_read_timeout,
            busy: Busy::default(),
            upgraded: AtomicBool::new(false),
        })
    }

    /// Counts a request as in progress, for the connection and the server, until the guard
    /// is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> InProgress {
        self.busy.state.fetch_add(IN_PROGRESS, Ordering::AcqRel);
        self.stats.request_began();
        InProgress {
            activity: self.clone(),
            listed: None,
        }
    }

    /// The connection was upgraded (`101 Switching Protocols`): counted among the upgraded
    /// connections until its socket closes.
    pub(crate) fn upgraded(&self) {
        if !self.upgraded.swap(true, Ordering::Relaxed) {
            self.requests.upgraded();
        }
    }

    /// The connection's socket closed.
    pub(crate) fn socket_closed(&self) {
        if self.upgraded.load(Ordering::Relaxed) {
            self.requests.upgraded_closed();
        }
    }

    /// A fresh activity for a new connection of the same server.
    pub(crate) fn for_connection(&self) -> Arc<Self> {
        Activity::new(
            self.stats.clone(),
            self.requests.clone(),
            self.signal.clone(),
            self.flags.clone(),
            self.body_read_timeout,
        )
    }

    /// The handlers' shutdown signal.
    pub(crate) fn signal(&self) -> &ShutdownSignal {
        &self.signal
    }

    /// How long a handler waits for more of a request body before the body fails.
    pub(crate) fn body_read_timeout(&self) -> Option<Duration> {
        self.body_read_timeout
    }

    /// The server's shutdown flags (the drain has begun, the stop turn has come), for the
    /// connection's task.
    pub(crate) fn flags(&self) -> &ShutdownFlags {
        &self.flags
    }

    /// Whether the service's shutdown has begun.
    pub(crate) fn is_draining(&self) -> bool {
        self.flags.is_draining()
    }

    /// The connection's busy state.
    pub(crate) fn busy(&self) -> &Busy {
        &self.busy
    }
}

impl Busy {
    /// Whether a request is in progress (its response may still be streaming) or the bytes of
    /// one are still waiting to be written: closing now would cut a response.
    pub(crate) fn is_busy(&self) -> bool {
        self.state.load(Ordering::Acquire) & (WENT_IDLE - 1) > 0
            || self.write_blocked.load(Ordering::Acquire)
    }

    /// Records whether the socket's writes are blocked; called on changes only.
    pub(crate) fn set_write_blocked(&self, blocked: bool) {
        self.write_blocked.store(blocked, Ordering::Release);
        if !blocked {
            self.state.fetch_add(WENT_IDLE, Ordering::AcqRel);
        }
    }

    /// Records that the client sent the HTTP/2 preface.
    pub(crate) fn set_http2(&self) {
        self.http2.store(true, Ordering::Release);
    }

    /// Records that a read from the socket returned bytes. The socket's owner is the only
    /// writer, so a load and a store do: no locked add on every read.
    pub(crate) fn record_read(&self) {
        let reads = self.reads.load(Ordering::Relaxed);
        self.reads.store(reads.wrapping_add(1), Ordering::Relaxed);
    }

    /// How many reads from the socket have returned bytes so far.
    pub(crate) fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Whether the client sent the HTTP/2 preface.
    pub(crate) fn is_http2(&self) -> bool {
        self.http2.load(Ordering::Acquire)
    }

    /// Completes once the connection has not been busy for `limit`: a client that does not
    /// send a complete request head in that time, from connecting or from the moment its last
    /// response was written, is too slow or gone.
    ///
    /// One timer per connection, rather than hyper's header read timeout, which arms a timer
    /// for every request and costs a few percent of throughput. The timer checks a quarter of
    /// `limit` at a time whether the connection has been busy since the last check, so it
    /// completes between `limit` and 1.25 × `limit` after the connection went idle.
    pub(crate) fn idle_for(&self, limit: Duration) -> IdleFor<'_> {
        let check = (limit / IDLE_CHECKS).max(Duration::from_millis(1));
        IdleFor {
            busy: self,
            check,
            seen: self.went_idle(),
            quiet: 0,
            sleep: tokio::time::sleep(check),
            registered: false,
        }
    }

    /// How many times the connection stopped being busy (wrapping).
    fn went_idle(&self) -> u64 {
        self.state.load(Ordering::Acquire) >> 32
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Busy::idle_for`], polled whenever a connection's watchers fired
    /// (`Watchers`) and at every wake-up of a draining connection's task. Once its timer is
    /// registered, a poll only asks the timer whether it has elapsed: polling a `Sleep` again
    /// would register the waker again, and the waker it is polled with wakes the same task for
    /// the connection's whole life, so once is enough.
    pub(crate) struct IdleFor<'a> {
        busy: &'a Busy,
        check: Duration,
        seen: u64,
        quiet: u32,
        #[pin]
        sleep: tokio::time::Sleep,
        registered: bool,
    }
}

impl Future for IdleFor<'_> {
    type Output = ();

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if self.registered && !self.sleep.is_elapsed() {
            return Poll::Pending;
        }
        self.check(cx)
    }
}

impl IdleFor<'_> {
    /// A check, at the end of each quarter of the limit (and the first poll).
    #[cold]
    fn check(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let mut this = self.project();
        loop {
            if !*this.registered {
                *this.registered = true;
                if this.sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            let went_idle = this.busy.went_idle();
            if this.busy.is_busy() || went_idle != *this.seen {
                *this.seen = went_idle;
                *this.quiet = 0;
            } else {
                *this.quiet += 1;
                if *this.quiet >= IDLE_CHECKS {
                    return Poll::Ready(());
                }
            }
            this.sleep
                .as_mut()
                .reset(tokio::time::Instant::now() + *this.check);
            *this.registered = false;
        }
    }
}

/// A request in progress on its connection.
#[derive(Debug)]
pub(crate) struct InProgress {
    activity: Arc<Activity>,
    /// Its key among the listed requests, once it waited.
    listed: Option<u64>,
}

impl InProgress {
    /// The connection's activity.
    pub(crate) fn activity(&self) -> &Activity {
        &self.activity
    }

    /// The request's handler or body made it wait: it is listed (once) among the requests a
    /// stop may wait for.
    pub(crate) fn waits(&mut self) {
        if self.listed.is_none() {
            // Polled in the task serving the request, whose name it holds (`Serving`).
            self.listed = Some(self.activity.requests.list(Serving::request()));
        }
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        let activity = &self.activity;
        if let Some(key) = self.listed {
            activity.requests.end(key);
        }
        activity.stats.request_ended();
        // One fewer in progress, one more end: both halves in one add (wrapping).
        activity
            .busy
            .state
            .fetch_add(WENT_IDLE.wrapping_sub(IN_PROGRESS), Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn idle_for_completes_between_one_and_one_and_a_quarter_periods_after_the_last_activity()
    {
        let limit = Duration::from_millis(400);
        let started = Instant::now();
        let activity = Arc::new(Busy::default());
        activity.idle_for(limit).await;
        assert_eq!(started.elapsed(), limit, "idle from the start");

        let started = Instant::now();
        let idle = tokio::spawn({
            let activity = activity.clone();
            async move { activity.idle_for(limit).await }
        });
        // Busy from 50 ms to 350 ms, then a write blocked until 600 ms.
        tokio::time::sleep(Duration::from_millis(50)).await;
        activity.state.fetch_add(IN_PROGRESS, Ordering::AcqRel);
        tokio::time::sleep(Duration::from_millis(300)).await;
        activity.set_write_blocked(true);
        activity
            .state
            .fetch_add(WENT_IDLE.wrapping_sub(IN_PROGRESS), Ordering::AcqRel);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(activity.is_busy());
        activity.set_write_blocked(false);
        assert!(!activity.is_busy());
        idle.await.unwrap();
        let after_idle = started.elapsed() - Duration::from_millis(600);
        assert!(
            after_idle >= limit && after_idle <= limit * 5 / 4,
            "{after_idle:?}"
        );
    }
}
