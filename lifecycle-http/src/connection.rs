//! Serving a connection until its close: HTTP/2 told to go away when the drain begins, HTTP/1
//! closed at the stop turn once nothing is left to write.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use lifecycle_core::Context;
use tokio::sync::OwnedSemaphorePermit;

use crate::activity::Activity;
use crate::io::ConnIo;
use crate::metrics::Closed;
use crate::request_service::RequestService;
use crate::requests::Summary;
use crate::serving::Serving;
use crate::shutdown_signal::ShutdownSignal;
use crate::stats::ConnectionGuard;
use crate::stream::{Handshake, Stream};
use crate::watchers::Watchers;

/// How long, after the stop turn, an HTTP/1 connection with no request in progress may still
/// take to deliver one before it is closed: long enough for a request already on the wire to
/// arrive, short enough that a client sending a head slowly cannot hold the stop (hyper alone
/// would wait for it until the header read timeout).
const GRACE: Duration = Duration::from_millis(100);

/// hyper's executor for HTTP/2 streams, spawning them as the component's tracked tasks so none
/// outlives the server's stop, each with the server's [`ShutdownSignal`] as its current one.
#[derive(Debug, Clone)]
pub(crate) struct TrackedExecutor {
    ctx: Context,
    signal: ShutdownSignal,
}

impl<F> hyper::rt::Executor<F> for TrackedExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        // hyper calls the service for a stream's request in the connection's task, which names
        // the request there, and spawns the stream right after: the stream's task takes the
        // name with it.
        let serving = Serving::scope(self.signal.clone(), Serving::request(), future);
        self.ctx.spawn(serving);
    }
}

/// The connection settings of one run of the server.
pub(crate) type ConnBuilder = auto::Builder<TrackedExecutor>;

pub(crate) fn builder(
    ctx: &Context,
    signal: ShutdownSignal,
    max_header_size: usize,
) -> ConnBuilder {
    let mut builder = auto::Builder::new(TrackedExecutor {
        ctx: ctx.clone(),
        signal,
    });
    // No hyper header read timeout: it arms a timer for every request. `serve_connection`
    // enforces it per connection instead (`Activity::idle_for`).
    builder
        .http1()
        .header_read_timeout(None)
        .max_buf_size(max_header_size.max(8192));
    // No HTTP/2 keep-alive pings either: with them hyper locks a mutex, reads the clock and
    // resets a timer for every frame (3-5% of gRPC throughput). A client that vanished is found
    // by the kernel instead (`vanished_peer_timeout`: TCP keep-alive and the user timeout).
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(max_header_size).unwrap_or(u32::MAX))
        .enable_connect_protocol();
    builder
}

/// The settings of every connection of one run of the server: its limits (header read
/// timeout, connection cap, the kernel's vanished-peer timeout), what it goes through before
/// HTTP (the handshake), and whether requests get the client's address.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionSettings {
    pub(crate) header_read_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) handshake: Handshake,
    /// Whether requests get the client's address (`ConnectInfo`).
    pub(crate) connect_info: bool,
    /// How long a TCP client may not answer before the kernel gives up on it.
    pub(crate) vanished_peer_timeout: Option<Duration>,
}

/// Serves one connection (after its TLS handshake, if any) and closes it gracefully; see
/// [`drive`].
pub(crate) async fn serve_connection(
    stream: Stream,
    permit: Option<OwnedSemaphorePermit>,
    builder: Arc<ConnBuilder>,
    service: RequestService,
    ctx: Context,
    guard: ConnectionGuard,
    settings: ConnectionSettings,
) {
    // The handshake runs in the connection's tracked task: at the stop turn it goes on (or
    // is cut at the stop timeout), and the connection is then served as any other at the
    // stop turn; a client that began none by then is closed after the grace.
    let stopping = service.activity().flags().stopping();
    let stream = match settings.handshake.accept(stream, stopping, GRACE).await {
        Ok(stream) => stream,
        Err(error) => {
            tracing::debug!(%error, "handshake failed");
            guard.closed(false, service.activity().is_draining());
            return;
        }
    };
    let header_read_timeout = settings.header_read_timeout;
    let activity = service.activity().clone();
    // The socket holds a tracking token: if the connection is upgraded, the stop waits for
    // the upgraded socket (a WebSocket) to close too.
    let io = ConnIo::new(stream, activity.clone(), ctx.track(), permit);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let conn = pin!(conn);
    // Handlers of HTTP/1 requests run in this task: the signal is theirs (`ShutdownSignal`'s
    // extractor), with no extension inserted per request.
    let signal = activity.signal().clone();
    let result = Serving::scope(
        signal,
        Summary::default(),
        drive(conn, &activity, header_read_timeout),
    )
    .await;
    let http2 = activity.busy().is_http2();
    match result {
        Err(error) if vanished(&*error) => {
            tracing::debug!(%error, "the client vanished: connection closed");
            guard.ended(http2, Closed::Vanished);
        }
        Err(error) => {
            tracing::trace!(%error, "connection ended with an error");
            guard.closed(http2, activity.is_draining());
        }
        Ok(()) => guard.closed(http2, activity.is_draining()),
    }
}

/// Whether a connection's error is the kernel giving up on a client that stopped answering
/// (`ETIMEDOUT`: the keep-alive probes or the user timeout ran out), wherever in the chain.
fn vanished(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = error.source();
    }
    false
}

type Conn<'a, 'b> =
    Pin<&'a mut auto::UpgradeableConnection<'b, TokioIo<ConnIo>, RequestService, TrackedExecutor>>;
type ConnResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// What ended a connection's serving before the drain.
enum Turn {
    /// The connection closed.
    Ended(ConnResult),
    /// The drain began.
    Drain,
    /// The stop turn came (without a drain: a restart or a rollback).
    Stop,
    /// The connection was not busy for the header read timeout.
    Idle,
}

/// Runs a connection to its end:
///
/// - Before the drain, a connection that has not been busy for `header_read_timeout` is closed
///   (an HTTP/2 one with a GOAWAY).
/// - When the drain begins, an HTTP/2 connection gets the graceful GOAWAY
///   (last stream id 2^31-1, a PING, then the final GOAWAY after the round trip); hyper
///   closes it once the streams opened before the final GOAWAY are done and sent, however
///   long the round trip: never cut here, only by the stop timeout. HTTP/1 responses carry
///   `Connection: close` ([`RequestService`]).
/// - At the stop turn, an HTTP/1 connection with no request in progress gets
///   [`GRACE`] for one already on the wire, then hyper's graceful shutdown (which flushes
///   what it holds), and is closed once it is no longer busy: no request in progress and no
///   bytes waiting to be written. A connection still silent, or still sending a head, closes
///   within two grace periods.
async fn drive(
    mut conn: Conn<'_, '_>,
    activity: &Activity,
    header_read_timeout: Duration,
) -> ConnResult {
    let flags = activity.flags();
    // Serving. The stop turn normally comes after the drain, but a stop outside a shutdown
    // (a restart, or a rollback) comes without one. Written out rather than with `select!`,
    // whose bookkeeping ran at every wake-up of the task, that is for every request: the
    // connection first, then the watchers, only once one of them fired (`Watchers`).
    let (mut drain, mut stop) = (pin!(flags.draining()), pin!(flags.stopping()));
    let mut idle = pin!(activity.busy().idle_for(header_read_timeout));
    let watchers = Watchers::new();
    let turn = poll_fn(|cx| {
        if let Poll::Ready(result) = conn.as_mut().poll(cx) {
            return Poll::Ready(Turn::Ended(result));
        }
        watchers.poll(cx, |cx| {
            if drain.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Turn::Drain);
            }
            if stop.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Turn::Stop);
            }
            if idle.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Turn::Idle);
            }
            Poll::Pending
        })
    })
    .await;
    let draining = match turn {
        Turn::Ended(result) => return result,
        Turn::Drain => true,
        Turn::Stop => false,
        Turn::Idle => {
            if !activity.busy().is_http2() {
                tracing::trace!("closing a connection that sent no request head in time");
                return Ok(());
            }
            tracing::trace!("closing an idle HTTP/2 connection");
            return going_away(conn, activity, header_read_timeout).await;
        }
    };
    // Draining: until the stop turn, or until the client turns out to speak HTTP/2.
    if draining {
        loop {
            if activity.busy().is_http2() {
                return going_away(conn, activity, header_read_timeout).await;
            }
            tokio::select! {
                biased;
                polled = until_http2(conn.as_mut(), activity) => match polled {
                    Some(result) => return result,
                    None => continue,
                },
                () = flags.stopping() => break,
                () = activity.busy().idle_for(header_read_timeout) => return Ok(()),
            }
        }
    }
    // The stop turn.
    if !activity.busy().is_busy() {
        // A request may be on its way (the client reused the connection, or just opened it):
        // closing now would drop it. Serve what arrives in the grace period; the response says
        // `Connection: close`.
        tokio::select! {
            biased;
            polled = until_http2(conn.as_mut(), activity) => if let Some(result) = polled {
                return result;
            },
            () = tokio::time::sleep(GRACE) => {}
        }
    }
    if activity.busy().is_http2() {
        return going_away(conn, activity, header_read_timeout).await;
    }
    conn.as_mut().graceful_shutdown();
    loop {
        tokio::select! {
            biased;
            result = conn.as_mut() => return result,
            () = tokio::time::sleep(GRACE) => if !activity.busy().is_busy() {
                tracing::trace!("closing a connection with no request in progress");
                return Ok(());
            },
        }
    }
}

/// Tells an HTTP/2 connection to go away (the graceful GOAWAY, a PING, then the final GOAWAY
/// once the PING is answered) and serves it until hyper closes it, when its streams are done
/// and sent. Its streams are never cut here, however slow the client reads or the round trip
/// is: a client taking a large response slowly may send nothing for a long time (its window
/// full, its socket unread, the PING stuck behind the data); a client that vanished is found
/// by the kernel (`vanished_peer_timeout`). Only a connection with nothing in progress whose
/// client sent nothing, not even the PING's answer, for `limit` after the GOAWAY is closed
/// here.
async fn going_away(mut conn: Conn<'_, '_>, activity: &Activity, limit: Duration) -> ConnResult {
    conn.as_mut().graceful_shutdown();
    loop {
        let reads = activity.busy().reads();
        tokio::select! {
            biased;
            result = conn.as_mut() => return result,
            () = tokio::time::sleep(limit) => {}
        }
        if activity.busy().reads() == reads && !activity.busy().is_busy() {
            tracing::trace!("closing an HTTP/2 connection whose client never answered the GOAWAY");
            return Ok(());
        }
    }
}

/// Polls the connection; `None` once the client has turned out to speak HTTP/2 (the preface
/// came), so the caller can send it the GOAWAY.
async fn until_http2(mut conn: Conn<'_, '_>, activity: &Activity) -> Option<ConnResult> {
    poll_fn(|cx| match conn.as_mut().poll(cx) {
        Poll::Ready(result) => Poll::Ready(Some(result)),
        Poll::Pending if activity.busy().is_http2() => Poll::Ready(None),
        Poll::Pending => Poll::Pending,
    })
    .await
}
