//! The accept loop, one for every transport (TCP, Unix sockets, TLS over either): the
//! connection limit, the connection-error filter, and what happens to the listening socket at
//! the end, decided per socket by who else holds it ([`ListenerShare`]).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lifecycle_core::{Context, ListenerShare, Phase};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::connection::{serve_connection, ConnBuilder, ConnectionSettings};
use crate::listener::{KeptListener, Listener, StdListener};
use crate::request_service::RequestService;
use crate::stats::HttpStats;
use crate::stream::Stream;

/// At the stop turn, while connections keep arriving, the accept loop keeps taking them from
/// the backlog until none has come for this long, so that one whose handshake the kernel was
/// completing is served rather than reset when the listener closes...
const BACKLOG_QUIET: Duration = Duration::from_millis(5);

/// ... but not for longer than this, if clients keep connecting.
const BACKLOG_LIMIT: Duration = Duration::from_millis(200);

/// What the accept loop serves its connections with.
pub(crate) struct Serving {
    pub(crate) ctx: Context,
    pub(crate) builder: Arc<ConnBuilder>,
    pub(crate) service: RequestService,
    pub(crate) stats: HttpStats,
    pub(crate) settings: ConnectionSettings,
}

impl Serving {
    fn serve(
        &self,
        stream: Stream,
        peer: Option<SocketAddr>,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        if let Stream::Tcp(tcp) = &stream {
            let _ = tcp.set_nodelay(true);
            if let Some(timeout) = self.settings.vanished_peer_timeout {
                find_vanished_peers(tcp, timeout);
            }
        }
        let peer = peer.filter(|_| self.settings.connect_info);
        let guard = self.stats.connection();
        self.ctx.spawn(serve_connection(
            stream,
            permit,
            self.builder.clone(),
            self.service.for_connection(peer),
            self.ctx.clone(),
            guard,
            self.settings.clone(),
        ));
    }
}

/// Accepts connections until the component's token is cancelled, up to `max_connections` at a
/// time (beyond, new ones wait in the listen backlog). On a socket another process holds too,
/// it accepts only once the lifecycle is ready, and stops at once when the socket is handed to
/// the new process of an upgrade. At the end:
///
/// - a restart gives the listener back to `kept` (if it was handed over) for the next run;
/// - a socket this process holds alone is closed for good: new connects refused (a socket
///   filter; a Unix socket's path removed), what is left in the backlog served, then closed;
/// - a socket another process holds (systemd, the other side of an upgrade) keeps its backlog
///   and options: only this process's descriptor is closed.
pub(crate) async fn accept_loop(listener: Listener, kept: Option<KeptListener>, serving: Serving) {
    let ctx = &serving.ctx;
    if listener.share(ctx) == ListenerShare::Shared && !ready(ctx).await {
        tracing::debug!(
            component = ctx.name(),
            "not ready: nothing accepted on a shared socket"
        );
        return;
    }
    let limit = serving.settings.max_connections;
    let permits = Arc::new(Semaphore::new(limit.min(Semaphore::MAX_PERMITS)));
    let shutdown = ctx.lifecycle().shutdown_token();
    let mut watch_hand_over = true;
    'accepting: loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if serving.stats.reached_connection_limit() == 1 {
                    tracing::warn!(
                        component = ctx.name(),
                        max_connections = limit,
                        "connection limit reached: new connections wait in the backlog"
                    );
                }
                tokio::select! {
                    biased;
                    () = ctx.token().cancelled() => break 'accepting,
                    permit = permits.clone().acquire_owned() => {
                        permit.expect("the semaphore is never closed")
                    }
                }
            }
        };
        loop {
            tokio::select! {
                biased;
                () = ctx.token().cancelled() => break 'accepting,
                // An upgrade's hand-off triggers the shutdown: from then on the new process
                // accepts on the socket, and this one takes nothing more.
                () = shutdown.cancelled(), if watch_hand_over => {
                    watch_hand_over = false;
                    if listener.share(ctx) == ListenerShare::HandedOver {
                        tracing::debug!(component = ctx.name(), "handed over: accepting no more");
                        break 'accepting;
                    }
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        serving.serve(stream, peer, Some(permit));
                        break;
                    }
                    Err(error) if is_connection_error(&error) => {}
                    Err(error) => {
                        // Out of file descriptors, say: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
    }
    let share = listener.share(ctx);
    let listener = match listener.into_std() {
        Ok(listener) => listener,
        Err(error) => {
            tracing::warn!(%error, "the listener could not be kept or drained");
            return;
        }
    };
    if let Some(kept) = kept {
        if !shutdown.is_cancelled() {
            // A restart: connections wait in the backlog for the next run.
            *kept.lock().unwrap_or_else(|e| e.into_inner()) = Some(listener);
            return;
        }
    }
    if share != ListenerShare::Alone {
        // The socket, its backlog and its options are another process's too: close only this
        // descriptor (a filter would stop that process's accepts, for good).
        drop(listener);
        tracing::debug!(component = ctx.name(), ?share, "listener released");
        return;
    }
    drain_backlog(&listener, &serving, &permits).await;
    drop(listener);
    tracing::debug!(component = ctx.name(), "listener closed");
}

/// Waits until the lifecycle has started; whether it became ready (rather than rolling back,
/// or this run ending).
async fn ready(ctx: &Context) -> bool {
    let mut phase = ctx.lifecycle().watch_phase();
    tokio::select! {
        biased;
        () = ctx.token().cancelled() => false,
        now = phase.wait_for(|p| *p != Phase::Starting) => now.is_ok_and(|p| *p == Phase::Ready),
    }
}

/// Takes every connection left in the backlog of a socket this process is about to close for
/// good, even beyond the connection limit (one more served connection is better than a
/// reset), after refusing new ones. And waits for a quiet moment, within a bound: closing
/// while connections keep coming would reset those whose handshake the kernel is completing
/// (the load balancer stopped sending during the drain delay, so this is usually one quiet
/// period).
async fn drain_backlog(listener: &StdListener, serving: &Serving, permits: &Arc<Semaphore>) {
    listener.refuse_new_connections();
    let limit = Instant::now() + BACKLOG_LIMIT;
    let mut last_arrival = Instant::now();
    loop {
        match listener.accept_now() {
            Ok((stream, peer)) => {
                last_arrival = Instant::now();
                serving.serve(stream, peer, permits.clone().try_acquire_owned().ok());
            }
            Err(error) if is_connection_error(&error) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                let now = Instant::now();
                if now >= limit || now >= last_arrival + BACKLOG_QUIET {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed while draining the backlog");
                break;
            }
        }
    }
}

/// Makes the kernel find a client that vanished (no FIN, no reset) within `timeout`, however
/// the connection is used, at no cost per request: TCP keep-alive probes after half of it
/// without traffic, three more a sixth apart (a silent connection: an idle keep-alive, a gRPC
/// `Watch`), and the user timeout for data the client does not acknowledge (a stream the server
/// writes to: SSE). The next read or write then fails with `ETIMEDOUT`, and the connection
/// closes (counted as `vanished`). Best effort: an option the platform lacks is skipped.
fn find_vanished_peers(tcp: &tokio::net::TcpStream, timeout: Duration) {
    // The kernel counts these in whole seconds.
    let second = Duration::from_secs(1);
    let socket = socket2::SockRef::from(tcp);
    let keepalive = socket2::TcpKeepalive::new().with_time((timeout / 2).max(second));
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "freebsd"
    ))]
    let keepalive = keepalive
        .with_interval((timeout / 6).max(second))
        .with_retries(3);
    if let Err(error) = socket.set_tcp_keepalive(&keepalive) {
        tracing::debug!(%error, "TCP keep-alive cannot be set");
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(error) = socket.set_tcp_user_timeout(Some(timeout)) {
        tracing::debug!(%error, "the TCP user timeout cannot be set");
    }
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
