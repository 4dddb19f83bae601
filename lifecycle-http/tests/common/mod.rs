//! A lifecycle with one HTTP server on a free loopback port, a test router, and raw clients
//! that see exactly what happens on the wire.

#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocketUpgrade};
use axum::extract::Query;
use axum::http::{Request, Response, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Extension, Router};
use futures::stream::{self, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use lifecycle_core::{Lifecycle, LifecycleHandle, Phase, Registration, Report};
use lifecycle_http::{health_routes, HttpServer, HttpStats, ShutdownSignal};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// `GET /work?ms=N`: waits N ms, answers `done`.
async fn work(Query(params): Query<std::collections::HashMap<String, u64>>) -> &'static str {
    tokio::time::sleep(Duration::from_millis(
        params.get("ms").copied().unwrap_or(0),
    ))
    .await;
    "done"
}

/// `GET /sse`: an event stream with no events, ended by the server's stop turn.
async fn sse(Extension(shutdown): Extension<ShutdownSignal>) -> impl IntoResponse {
    let events = stream::pending::<Result<Event, Infallible>>()
        .take_until(shutdown.token().clone().cancelled_owned());
    let bye = stream::once(async { Ok(Event::default().event("shutdown").data("bye")) });
    Sse::new(events.chain(bye))
}

/// `GET /stream`: an endless body that ignores the shutdown, one chunk every 10 ms.
async fn endless() -> Body {
    let chunks = stream::unfold((), |()| async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Some((Ok::<_, Infallible>(Bytes::from_static(b"chunk\n")), ()))
    });
    Body::from_stream(chunks)
}

/// `GET /ws`: a WebSocket that echoes until the server's stop turn, then closes with 1001. The
/// server's stop waits for it (axum runs it in a task of its own, so it holds a tracking guard).
async fn ws(
    upgrade: WebSocketUpgrade,
    Extension(shutdown): Extension<ShutdownSignal>,
) -> Response<Body> {
    let tracked = shutdown.track();
    upgrade.on_upgrade(move |mut socket| async move {
        let _tracked = tracked;
        loop {
            tokio::select! {
                () = shutdown.stopping() => {
                    let frame = CloseFrame { code: close_code::AWAY, reason: "server stopping".into() };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    // Wait for the client's close reply, briefly.
                    let _ = tokio::time::timeout(Duration::from_secs(1), socket.recv()).await;
                    return;
                }
                message = socket.recv() => match message {
                    Some(Ok(Message::Text(text))) => { let _ = socket.send(Message::Text(text)).await; }
                    Some(Ok(_)) => {}
                    _ => return,
                },
            }
        }
    })
}

pub fn router(handle: LifecycleHandle) -> Router {
    Router::new()
        .route("/work", get(work))
        .route("/sse", get(sse))
        .route("/stream", get(endless))
        .route("/ws", get(ws))
        .merge(health_routes(handle))
}

/// A running lifecycle with the server registered as `http`.
pub struct Running {
    pub addr: SocketAddr,
    pub handle: LifecycleHandle,
    pub stats: HttpStats,
    pub report: JoinHandle<Report>,
}

/// Starts the server with this drain delay and stop timeout, and waits until it is ready.
pub async fn start(drain_delay: Duration, stop_timeout: Duration) -> Running {
    start_with(drain_delay, stop_timeout, Duration::from_secs(10)).await
}

/// [`start`] with a header read timeout.
pub async fn start_with(
    drain_delay: Duration,
    stop_timeout: Duration,
    header_read_timeout: Duration,
) -> Running {
    let builder = Lifecycle::builder().signals([]).drain_delay(drain_delay);
    let handle = builder.handle();
    let server = HttpServer::bind("127.0.0.1:0".parse().unwrap(), router(handle.clone()))
        .header_read_timeout(header_read_timeout);
    let (stats, local_addr) = (server.stats(), server.local_addr());
    let lifecycle = builder
        .register(Registration::new("http", server).stop_timeout(stop_timeout))
        .build()
        .unwrap();
    let report = tokio::spawn(lifecycle.run());
    let mut phase = handle.watch_phase();
    tokio::time::timeout(
        Duration::from_secs(10),
        phase.wait_for(|p| *p == Phase::Ready),
    )
    .await
    .expect("ready in time")
    .unwrap();
    Running {
        addr: local_addr.get().unwrap(),
        handle,
        stats,
        report,
    }
}

/// An HTTP/1.1 connection of our own, so a test knows which requests went over which socket.
pub struct H1 {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    pub closed: JoinHandle<Result<(), hyper::Error>>,
}

/// What a request on an open connection came to.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub connection_close: bool,
    pub body: Bytes,
}

impl H1 {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        Ok(H1 {
            sender,
            closed: tokio::spawn(conn),
        })
    }

    /// Sends `GET path` and reads the whole answer. An error here means the request was sent on
    /// an open connection and got no response: a dropped request.
    pub async fn get(&mut self, path: &str) -> Result<Answer, hyper::Error> {
        self.sender.ready().await?;
        let request = Request::get(path)
            .header("host", "test")
            .body(Empty::new())
            .unwrap();
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let connection_close = response
            .headers()
            .get("connection")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            connection_close,
            body,
        })
    }

    /// Whether the connection can take another request.
    pub fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }
}
