//! Accepting connections and serving each until its close, gracefully at the stop turn.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use lifecycle_core::Context;
use tokio::net::{TcpListener, TcpStream};

use crate::drain::Drain;
use crate::stats::{ConnectionGuard, HttpStats};

/// How long, after the stop turn, a connection with no request in progress may still take to
/// deliver one before it is closed: long enough for a request already on the wire to arrive,
/// short enough that a client sending a head slowly cannot hold the stop (hyper alone would
/// wait for it until the header read timeout).
const GRACE: Duration = Duration::from_millis(100);

/// hyper's executor for HTTP/2 streams, spawning them as the component's tracked tasks so none
/// outlives the server's stop.
#[derive(Debug, Clone)]
pub(crate) struct TrackedExecutor(pub(crate) Context);

impl<F> hyper::rt::Executor<F> for TrackedExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        self.0.spawn(future);
    }
}

/// The service connections run: the user's router behind the drain layer.
pub(crate) type Service = Drain<axum::Router>;

/// The connection settings of one run of the server.
pub(crate) type ConnBuilder = auto::Builder<TrackedExecutor>;

pub(crate) fn builder(ctx: &Context, max_header_size: usize) -> ConnBuilder {
    let mut builder = auto::Builder::new(TrackedExecutor(ctx.clone()));
    // No hyper header read timeout: it arms a timer for every request. `serve_connection`
    // enforces it per connection instead (`Activity::idle_for`).
    builder
        .http1()
        .header_read_timeout(None)
        .max_buf_size(max_header_size.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(max_header_size).unwrap_or(u32::MAX))
        .enable_connect_protocol();
    builder
}

/// Accepts connections until the component's token is cancelled, then takes the connections
/// already waiting in the backlog and closes the listener, so later connects are refused
/// rather than reset or left hanging.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    ctx: Context,
    builder: Arc<ConnBuilder>,
    service: Service,
    stats: HttpStats,
    header_read_timeout: Duration,
) {
    let serve = |stream: TcpStream| {
        let _ = stream.set_nodelay(true);
        let guard = stats.connection();
        ctx.spawn(serve_connection(
            stream,
            builder.clone(),
            service.for_connection(),
            ctx.clone(),
            guard,
            header_read_timeout,
        ));
    };
    loop {
        tokio::select! {
            biased;
            () = ctx.token().cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => serve(stream),
                Err(error) if is_connection_error(&error) => {}
                Err(error) => {
                    // Out of file descriptors, say: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    while let Some(Ok((stream, _))) = listener.accept().now_or_never() {
        serve(stream);
    }
    tracing::debug!("listener closed");
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serves one connection; at the stop turn, asks it to close gracefully: a request in progress
/// finishes with `Connection: close`, HTTP/2 gets GOAWAY and its open streams finish, and a
/// connection with no request in progress (idle, silent, or still sending a head) closes
/// within two [`GRACE`] periods.
async fn serve_connection(
    stream: TcpStream,
    builder: Arc<ConnBuilder>,
    service: Service,
    ctx: Context,
    guard: ConnectionGuard,
    header_read_timeout: Duration,
) {
    let conn = builder.serve_connection_with_upgrades(
        TokioIo::new(stream),
        TowerToHyperService::new(service.clone()),
    );
    let mut conn = std::pin::pin!(conn);
    let activity = service.activity();
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = activity.idle_for(header_read_timeout) => {
            tracing::trace!("closing a connection that sent no request head in time");
            Ok(())
        }
        () = ctx.token().cancelled() => 'stopping: {
            if !activity.is_busy() {
                // A request may be on its way (the client reused the connection, or just
                // opened it): closing now would drop it. Serve what arrives in the grace
                // period; the response says `Connection: close`.
                tokio::select! {
                    result = conn.as_mut() => break 'stopping result,
                    () = tokio::time::sleep(GRACE) => {}
                }
            }
            conn.as_mut().graceful_shutdown();
            loop {
                tokio::select! {
                    result = conn.as_mut() => break 'stopping result,
                    () = tokio::time::sleep(GRACE) => if !activity.is_busy() {
                        tracing::trace!("closing a connection with no request in progress");
                        break 'stopping Ok(());
                    },
                }
            }
        }
    };
    if let Err(error) = result {
        tracing::trace!(%error, "connection ended with an error");
    }
    guard.closed();
}
