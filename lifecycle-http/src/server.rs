//! `HttpServer`: the component.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use lifecycle_core::{async_trait, BoxError, Component, Context};

use crate::accept::{accept_loop, Serving};
use crate::activity::Activity;
use crate::connection::{builder, ConnectionSettings};
use crate::error::HttpError;
use crate::listener::{Listen, StdListener};
use crate::request_service::RequestService;
use crate::requests::Requests;
use crate::service::IntoRouter;
use crate::shutdown_flags::ShutdownFlags;
use crate::shutdown_signal::ShutdownSignal;
use crate::stats::HttpStats;
use crate::stream::Handshake;
#[cfg(feature = "tls")]
use crate::tls::TlsConfig;

/// An HTTP server component: serves an axum [`Router`] over HTTP/1.1 and HTTP/2 (h2c, by prior
/// knowledge) on one port, and drains without dropping a request.
///
/// - **Start** binds the address (a port in use fails the start, so the lifecycle rolls back)
///   or takes the given listener, then accepts in a tracked task.
/// - **Drain delay** (readiness already withdrawn): it keeps serving. Every HTTP/1 response
///   carries `Connection: close` so keep-alive clients reconnect through the load balancer
///   (except a `101 Switching Protocols`, which keeps its `Connection: upgrade`: WebSockets
///   still open). HTTP/2 connections, including new ones, get the graceful GOAWAY at once
///   (last stream id 2^31-1, then the final GOAWAY after a PING round trip), so h2 and gRPC
///   clients open their next streams elsewhere; the streams they opened before the final
///   GOAWAY complete, and then hyper closes the connection, however slow the round trip or the
///   client's reading (a large body goes to hyper in pieces, so it counts as in progress while
///   flow control holds it). A connection with nothing in progress whose client sent nothing,
///   not even the PING's answer, for the header read timeout after the GOAWAY is closed; a
///   client that vanished is found by the kernel ([`vanished_peer_timeout`](Self::vanished_peer_timeout)).
/// - **Stop turn**: the server takes the connections still in the accept backlog and closes
///   the listener (later connects are refused), if it holds the socket alone: a socket systemd
///   holds too (socket activation), or shared with the other side of an in-place upgrade, keeps
///   its backlog for that process, and only this server's descriptor is closed (see
///   [`ListenerShare`](lifecycle_core::ListenerShare); on such a socket the server also accepts
///   only once the lifecycle is ready, and at an upgrade's hand-off it stops accepting at once); HTTP/1 connections with nothing in progress,
///   including ones that never sent a byte, close at once; HTTP/1 requests in progress finish
///   with `Connection: close`; handlers of long-lived responses see their [`ShutdownSignal`]
///   fire. Whatever is left when the stop timeout runs out is cut off and counted
///   ([`HttpStats::force_closed`]).
///
/// A request is in progress until its response's last byte has been written to the socket,
/// not only handed to hyper: a large body read by a slow client is neither closed as idle at
/// the stop turn nor cut by the header read timeout. Upgraded connections (WebSockets) are
/// tracked: the stop waits for them to close (end them on [`ShutdownSignal::stopping`]).
///
/// Besides an axum [`Router`], it serves any tower service ([`AnyService`](crate::AnyService)),
/// hyper service ([`HyperService`](crate::HyperService)) or, with the `grpc` feature, tonic
/// `Routes` ([`IntoRouter`]), and, with [`connect_info`](Self::connect_info), handlers can
/// extract the client's address with axum's `ConnectInfo<SocketAddr>`.
/// With the `tls` feature it terminates TLS (the `tls` setter); [`bind_unix`](Self::bind_unix)
/// listens on a Unix domain socket.
///
/// # Configuration
///
/// The server is its own consuming builder: a constructor says where the socket comes from
/// and what to serve ([`bind`](Self::bind), [`bind_unix`](Self::bind_unix),
/// [`from_listener`](Self::from_listener), [`from_unix_listener`](Self::from_unix_listener),
/// [`from_systemd`](Self::from_systemd)), then setters change the defaults (the type is
/// `#[must_use]`, so a setter's result cannot be dropped by mistake).
/// Settings out of range fail the server's start with [`HttpError::InvalidSetting`].
///
/// Limits, on by default as a public server needs:
///
/// | Setting | Default |
/// |---|---|
/// | [`header_read_timeout`](Self::header_read_timeout) | 10 s ([`DEFAULT_HEADER_READ_TIMEOUT`](Self::DEFAULT_HEADER_READ_TIMEOUT)): slow clients cannot hold a connection |
/// | [`body_read_timeout`](Self::body_read_timeout) | 30 s without data ([`DEFAULT_BODY_READ_TIMEOUT`](Self::DEFAULT_BODY_READ_TIMEOUT)), then `408 Request Timeout` |
/// | [`max_header_size`](Self::max_header_size) | 64 KiB ([`DEFAULT_MAX_HEADER_SIZE`](Self::DEFAULT_MAX_HEADER_SIZE)) |
/// | [`max_connections`](Self::max_connections) | 10 000 ([`DEFAULT_MAX_CONNECTIONS`](Self::DEFAULT_MAX_CONNECTIONS)); more wait in the listen backlog |
/// | [`vanished_peer_timeout`](Self::vanished_peer_timeout) | 60 s ([`DEFAULT_VANISHED_PEER_TIMEOUT`](Self::DEFAULT_VANISHED_PEER_TIMEOUT)) |
/// | [`connect_info`](Self::connect_info) | off |
/// | `tls` (feature `tls`) | none: plain HTTP/1.1 and h2c |
///
/// Bodies are limited by axum's `DefaultBodyLimit` (2 MB).
///
/// # Examples
///
/// ```no_run
/// use axum::{routing::get, Router};
/// use lifecycle_core::{Lifecycle, Registration, Report};
/// use lifecycle_http::{health_routes, HttpServer};
/// use std::time::Duration;
///
/// #[tokio::main]
/// async fn main() -> Report {
///     let builder = Lifecycle::builder().drain_delay(Duration::from_secs(5));
///     let router = Router::new()
///         .route("/", get(|| async { "hello" }))
///         .merge(health_routes(builder.handle()));
///     let server = HttpServer::bind("127.0.0.1:8080".parse().unwrap(), router);
///     builder
///         .register(Registration::new("http", server).stop_timeout(Duration::from_secs(10)))
///         .build()
///         .expect("valid configuration")
///         .run()
///         .await
/// }
/// ```
#[must_use = "a server serves nothing until it is registered: pass it to `Registration::new`"]
pub struct HttpServer {
    listen: Listen,
    router: Router,
    #[cfg(feature = "tls")]
    tls: Option<TlsConfig>,
    header_read_timeout: Duration,
    body_read_timeout: Option<Duration>,
    max_header_size: usize,
    max_connections: usize,
    connect_info: bool,
    vanished_peer_timeout: Option<Duration>,
    stats: HttpStats,
    /// The requests in flight that waited, for `held_by`.
    requests: Arc<Requests>,
    local_addr: Arc<Mutex<Option<SocketAddr>>>,
}

impl HttpServer {
    /// The default time a client has to send a request head.
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// The default time a handler waits for more of a request body.
    pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
    /// The default limit on the size of a request head.
    pub const DEFAULT_MAX_HEADER_SIZE: usize = 64 * 1024;
    /// The default limit on open connections.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
    /// The default time after which a TCP client that stopped answering is given up on.
    pub const DEFAULT_VANISHED_PEER_TIMEOUT: Duration = Duration::from_secs(60);

    /// A server that binds `addr` when it starts, with the [defaults](Self#configuration).
    /// Port 0 picks a free port; see [`local_addr`](Self::local_addr).
    pub fn bind(addr: SocketAddr, service: impl IntoRouter) -> Self {
        Self::new(Listen::Bind(addr), service.into_router())
    }

    /// A server on the Unix domain socket `path`, with the [defaults](Self#configuration),
    /// bound when it starts (a socket file left by
    /// a process that died is replaced; one a live server answers on fails the start) and
    /// removed when it stops. Requests carry no `ConnectInfo<SocketAddr>`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use axum::{routing::get, Router};
    /// use lifecycle_http::HttpServer;
    ///
    /// let router = Router::new().route("/", get(|| async { "hello" }));
    /// let server = HttpServer::bind_unix("/run/my-service/http.sock", router);
    /// ```
    #[cfg(unix)]
    pub fn bind_unix(path: impl Into<std::path::PathBuf>, service: impl IntoRouter) -> Self {
        Self::new(Listen::Unix(path.into()), service.into_router())
    }

    /// A server on a socket that is already bound and listening, with the
    /// [defaults](Self#configuration).
    ///
    /// The server owns the socket: it closes it when it stops during the service's shutdown,
    /// so that later connects are refused rather than left waiting in a backlog nobody
    /// accepts, unless another process holds it too (one inherited through
    /// `lifecycle_core::sockets` or handed on by an `Upgrade`): then it closes only its own
    /// descriptor. A server restarted by its [`OnFailure`](lifecycle_core::OnFailure) policy
    /// listens on it again (it is kept open across a restart); a start after the shutdown
    /// fails with [`HttpError::ListenerClosed`].
    pub fn from_listener(listener: std::net::TcpListener, service: impl IntoRouter) -> Self {
        Self::new(
            Listen::bound(StdListener::Tcp(listener)),
            service.into_router(),
        )
    }

    /// A server on a Unix domain socket that is already bound and listening (from
    /// `Upgrade::unix_listener`, say), owned as with [`from_listener`](Self::from_listener).
    /// At the stop its path is removed only if no other process holds the socket.
    #[cfg(unix)]
    pub fn from_unix_listener(
        listener: std::os::unix::net::UnixListener,
        service: impl IntoRouter,
    ) -> Self {
        Self::new(
            Listen::bound(StdListener::Unix(listener)),
            service.into_router(),
        )
    }

    /// A server, with the [defaults](Self#configuration), on the first socket passed by
    /// systemd socket activation (`LISTEN_FDS`), so
    /// that during a restart the kernel queues connections instead of refusing them: systemd
    /// keeps the socket, so the server's stop closes only its own descriptor, and connections
    /// made before the next start wait in the socket's queue for it.
    ///
    /// # Errors
    ///
    /// [`HttpError::NoInheritedSocket`] when systemd passed no TCP socket.
    pub fn from_systemd(service: impl IntoRouter) -> Result<Self, HttpError> {
        Ok(Self::new(Listen::from_systemd()?, service.into_router()))
    }

    fn new(listen: Listen, router: Router) -> Self {
        HttpServer {
            listen,
            router,
            #[cfg(feature = "tls")]
            tls: None,
            header_read_timeout: Self::DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: Some(Self::DEFAULT_BODY_READ_TIMEOUT),
            max_header_size: Self::DEFAULT_MAX_HEADER_SIZE,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            connect_info: false,
            vanished_peer_timeout: Some(Self::DEFAULT_VANISHED_PEER_TIMEOUT),
            stats: HttpStats::new(),
            requests: Arc::default(),
            local_addr: Arc::default(),
        }
    }

    /// How long a client has to send a complete request head (default 10 s), from connecting
    /// or from its previous response; a slow or silent client, or a keep-alive connection left
    /// idle, is disconnected after it (an HTTP/2 one with a GOAWAY, and closed if its client
    /// then sends nothing, not even the answer to the GOAWAY's PING, for the same time again). The time a response
    /// takes to be written, however slowly the client reads it, does not count. The server
    /// checks four times per period, so the disconnection may come up to a quarter of the
    /// timeout late.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// How long a handler reading a request body waits for more of it (default 30 s); `None`
    /// waits forever. When the client sends nothing for that long the body fails, so axum's
    /// extractors reject the request, answered `408 Request Timeout` (and, over HTTP/1, the
    /// connection closed after it). The time counts from each piece of the body, so long
    /// uploads and streaming request bodies are fine as long as data keeps coming; the
    /// timer is armed only while a handler waits, so requests without a body cost nothing.
    pub fn body_read_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.body_read_timeout = timeout.into();
        self
    }

    /// The most connections open at once (default 10 000), upgraded ones included; keep it
    /// below the process's file descriptor limit. At the limit the server stops accepting,
    /// so new connections wait in the kernel's listen backlog (rather than being accepted and
    /// closed) until one closes; [`HttpStats::connection_limit_reached`] counts the times.
    /// The connections left in the backlog at the stop turn are served even beyond the limit.
    /// 0 is refused at the start ([`HttpError::InvalidSetting`]).
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// Serves TLS (feature `tls`) with `config`: HTTPS, HTTP/2 and gRPC over TLS on the one
    /// port, the certificate reloaded from its files while the server runs; see
    /// [`TlsConfig`].
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: TlsConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// Gives every request over TCP the client's address as axum's `ConnectInfo<SocketAddr>`
    /// extension (default off: as with axum's `into_make_service_with_connect_info`, it costs
    /// an extension per request). tonic handlers find it in `Request::extensions`. Requests
    /// over a Unix socket carry none.
    ///
    /// # Examples
    ///
    /// ```
    /// use axum::extract::ConnectInfo;
    /// use axum::{routing::get, Router};
    /// use lifecycle_http::HttpServer;
    /// use std::net::SocketAddr;
    ///
    /// let router = Router::new().route(
    ///     "/whoami",
    ///     get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
    /// );
    /// let server = HttpServer::bind("127.0.0.1:0".parse().unwrap(), router).connect_info(true);
    /// ```
    pub fn connect_info(mut self, enabled: bool) -> Self {
        self.connect_info = enabled;
        self
    }

    /// How long a TCP client may stop answering before its connection is closed (default
    /// 60 s; `None` leaves it to the system, which on Linux keeps such a connection for
    /// hours): a client that vanished without a word (a phone that lost its network, a host
    /// that crashed, a firewall that dropped the flow) holds its connection, and any long
    /// stream on it (an SSE stream, a gRPC `Watch`), towards `max_connections` otherwise.
    ///
    /// The kernel does the watching, at no cost per request: TCP keep-alive probes after half
    /// of the timeout without traffic, three more a sixth of it apart, so a silent connection
    /// is found within the timeout; and the TCP user timeout (Linux) closes one whose client
    /// leaves the server's data unacknowledged for as long. Such closes count in
    /// [`HttpStats::vanished`] and as `reason="vanished"` in `http_connections_closed_total`.
    /// A client that is there answers the probes itself (no application traffic), however long
    /// it stays silent or slow. Unix-socket connections are not watched: a peer there cannot
    /// vanish without the kernel knowing.
    ///
    /// # Examples
    ///
    /// ```
    /// use axum::Router;
    /// use lifecycle_http::HttpServer;
    /// use std::time::Duration;
    ///
    /// let server = HttpServer::bind("127.0.0.1:0".parse().unwrap(), Router::new())
    ///     .vanished_peer_timeout(Duration::from_secs(30));
    /// ```
    ///
    /// A timeout shorter than a second is refused at the start
    /// ([`HttpError::InvalidSetting`]): the kernel counts in seconds.
    pub fn vanished_peer_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.vanished_peer_timeout = timeout.into();
        self
    }

    /// The largest request head accepted, in bytes (default 64 KiB).
    pub fn max_header_size(mut self, bytes: usize) -> Self {
        self.max_header_size = bytes;
        self
    }

    /// Refuses settings the server cannot run with, before it binds: no connection allowed at
    /// all, or a vanished-peer timeout the kernel cannot express (it counts in seconds).
    fn check_settings(&self, component: &str) -> Result<(), HttpError> {
        let invalid = |setting, reason: String| HttpError::InvalidSetting {
            component: component.to_owned(),
            setting,
            reason,
        };
        if self.max_connections == 0 {
            return Err(invalid(
                "max_connections",
                "must be at least 1, not 0".into(),
            ));
        }
        if let Some(timeout) = self
            .vanished_peer_timeout
            .filter(|t| *t < Duration::from_secs(1))
        {
            return Err(invalid(
                "vanished_peer_timeout",
                format!("must be at least 1s, not {timeout:?}"),
            ));
        }
        Ok(())
    }

    /// The server's counters; the handle stays valid after the server is registered.
    pub fn stats(&self) -> HttpStats {
        self.stats.clone()
    }

    /// A handle that reads the address the server listens on, once it has started (useful
    /// with port 0).
    pub fn local_addr(&self) -> LocalAddr {
        LocalAddr(self.local_addr.clone())
    }
}

/// The address an [`HttpServer`] listens on, known once it has started.
#[derive(Debug, Clone)]
pub struct LocalAddr(Arc<Mutex<Option<SocketAddr>>>);

impl LocalAddr {
    /// The address, or `None` before the server has started.
    pub fn get(&self) -> Option<SocketAddr> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Component for HttpServer {
    async fn start(&self, ctx: &Context) -> Result<(), BoxError> {
        self.check_settings(ctx.name())?;
        self.stats.export(ctx.name());
        let (flags, watcher) =
            ShutdownFlags::watch(ctx.lifecycle().shutdown_token(), ctx.token().clone());
        ctx.spawn(watcher);
        let signal = ShutdownSignal::new(ctx);
        let template = Activity::new(
            self.stats.clone(),
            self.requests.clone(),
            signal.clone(),
            flags,
            self.body_read_timeout,
        );
        let service = RequestService::new(self.router.clone(), template);
        let builder = Arc::new(builder(ctx, signal, self.max_header_size));
        #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
        let mut handshake = Handshake::default();
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            handshake = Handshake::tls(tls);
            ctx.spawn(crate::reload::watch(tls.clone(), ctx.clone()));
        }
        let settings = ConnectionSettings {
            header_read_timeout: self.header_read_timeout,
            max_connections: self.max_connections,
            handshake,
            connect_info: self.connect_info,
            vanished_peer_timeout: self.vanished_peer_timeout,
        };
        let (listener, slot) = self.listen.open().await?;
        let addr = listener.local_addr();
        *self.local_addr.lock().unwrap_or_else(|e| e.into_inner()) = addr;
        let serving = Serving {
            ctx: ctx.clone(),
            builder,
            service,
            stats: self.stats.clone(),
            settings,
        };
        ctx.spawn(accept_loop(listener, slot, serving));
        match (addr, &self.listen) {
            (Some(addr), _) => tracing::info!(component = ctx.name(), %addr, "listening"),
            #[cfg(unix)]
            (None, Listen::Unix(path)) => {
                tracing::info!(component = ctx.name(), path = %path.display(), "listening");
            }
            (None, _) => tracing::info!(component = ctx.name(), "listening on a Unix socket"),
        }
        Ok(())
    }

    // Stop needs nothing of its own: the accept loop and every connection end on the token,
    // and the lifecycle waits for them (they are tracked tasks) under the stop timeout.

    /// The requests in flight that have waited, the oldest first, as `GET /work (running
    /// 12.3s, HTTP/1.1)` (the path without its query); the others in flight (answered at their
    /// first poll, their bytes still being written) counted; and the upgraded connections
    /// (WebSockets) still open.
    fn held_by(&self) -> Vec<String> {
        self.requests.held_by(self.stats.in_flight())
    }

    fn describe(&self) -> Option<String> {
        let stats = &self.stats;
        Some(format!(
            "{} connections open, {} requests in flight, {} served, {} force-closed",
            stats.open_connections(),
            stats.in_flight(),
            stats.requests(),
            stats.force_closed()
        ))
    }
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("listen", &self.listen)
            .field("local_addr", &self.local_addr().get())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}
