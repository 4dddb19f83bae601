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
use axum::Router;
use futures::stream::{self, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use lifecycle_core::testing::TestRun;
use lifecycle_core::{Lifecycle, LifecycleHandle, Registration, Report};
use lifecycle_http::{health_routes, HealthRoutes, HttpServer, HttpStats, ShutdownSignal};
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
async fn sse(shutdown: ShutdownSignal) -> impl IntoResponse {
    let events = stream::pending::<Result<Event, Infallible>>()
        .take_until(shutdown.token().cancelled_owned());
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
async fn ws(upgrade: WebSocketUpgrade, shutdown: ShutdownSignal) -> Response<Body> {
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

/// The size of the bodies of `GET /big` and `GET /big-stream`.
pub const BIG: usize = 24 * 1024 * 1024;

/// `GET /big`: one [`BIG`]-byte `Bytes` body, handed to hyper in one piece.
async fn big() -> Bytes {
    static BODY: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    BODY.get_or_init(|| Bytes::from(vec![b'x'; BIG])).clone()
}

/// `GET /big-stream`: a [`BIG`]-byte streaming body, in 4 MiB chunks that are always ready
/// (large, so that the last one takes a slow reader a while), which says it has ended with its
/// last chunk, as a body of known length does: hyper drops it with the last chunk.
async fn big_stream() -> Body {
    let chunk = Bytes::from(vec![b'y'; 4 * 1024 * 1024]);
    Body::new(Chunks(vec![chunk; BIG / (4 * 1024 * 1024)].into()))
}

/// A streaming body of chunks, one per poll, at its end as soon as the last is taken.
struct Chunks(std::collections::VecDeque<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|c| Ok(http_body::Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.0.iter().map(|c| c.len() as u64).sum())
    }
}

/// `POST /upload`: reads the whole body, answers its length.
async fn upload(body: Bytes) -> String {
    format!("got {}", body.len())
}

/// The test routes and the health endpoints (without details, the default).
pub fn router(handle: LifecycleHandle) -> Router {
    routes().merge(health_routes(handle))
}

/// The test routes and the health endpoints with `/readyz?verbose` details.
pub fn verbose_router(handle: LifecycleHandle) -> Router {
    routes().merge(HealthRoutes::new(handle).verbose(true).router())
}

/// `GET /ws-untracked`: a WebSocket whose handler takes no tracking guard; at the stop turn it
/// waits 300 ms, then closes with 1001. The server's stop must wait for it all the same.
async fn ws_untracked(upgrade: WebSocketUpgrade, shutdown: ShutdownSignal) -> Response<Body> {
    upgrade.on_upgrade(move |mut socket| async move {
        shutdown.stopping().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let frame = CloseFrame {
            code: close_code::AWAY,
            reason: "server stopping".into(),
        };
        let _ = socket.send(Message::Close(Some(frame))).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), socket.recv()).await;
    })
}

fn routes() -> Router {
    Router::new()
        .route("/work", get(work))
        .route("/big", get(big))
        .route("/big-stream", get(big_stream))
        .route("/upload", axum::routing::post(upload))
        .route("/sse", get(sse))
        .route("/stream", get(endless))
        .route("/ws", get(ws))
        .route("/ws-untracked", get(ws_untracked))
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
    start_configured(drain_delay, stop_timeout, |server| {
        server.header_read_timeout(header_read_timeout)
    })
    .await
}

/// [`start`] with the server configured by `configure`.
pub async fn start_configured(
    drain_delay: Duration,
    stop_timeout: Duration,
    configure: impl FnOnce(HttpServer) -> HttpServer,
) -> Running {
    start_custom(drain_delay, stop_timeout, router, configure).await
}

/// [`start`] with the routes made by `router` and the server configured by `configure`.
pub async fn start_custom(
    drain_delay: Duration,
    stop_timeout: Duration,
    router: fn(LifecycleHandle) -> Router,
    configure: impl FnOnce(HttpServer) -> HttpServer,
) -> Running {
    let builder = Lifecycle::builder().signals([]).drain_delay(drain_delay);
    let handle = builder.handle();
    let server = configure(HttpServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        router(handle.clone()),
    ));
    let (stats, local_addr) = (server.stats(), server.local_addr());
    let run = TestRun::start(
        builder.register(Registration::new("http", server).stop_timeout(stop_timeout)),
    )
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), run.ready())
        .await
        .expect("ready in time")
        .unwrap();
    let report = run.into_task();
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

/// A TCP connection whose receive buffer is small, so the server's writes block as soon as
/// the client stops reading: a slow reader.
pub async fn slow_reader(addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Reads `stream` to its end at about `bytes_per_sec`, and returns everything read.
pub async fn read_slowly(stream: &mut TcpStream, bytes_per_sec: usize) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let started = tokio::time::Instant::now();
    let mut all = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
        let due = started + Duration::from_secs_f64(all.len() as f64 / bytes_per_sec as f64);
        tokio::time::sleep_until(due).await;
    }
}

/// The value of a header in a raw HTTP/1 response head.
pub fn raw_header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// An HTTP/2 frame, as a raw client sees it.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    pub const DATA: u8 = 0;
    pub const HEADERS: u8 = 1;
    pub const SETTINGS: u8 = 4;
    pub const PING: u8 = 6;
    pub const GOAWAY: u8 = 7;
    pub const END_STREAM: u8 = 1;
    pub const ACK: u8 = 1;

    /// A GOAWAY's last stream id.
    pub fn last_stream_id(&self) -> u32 {
        assert_eq!(self.kind, Self::GOAWAY);
        u32::from_be_bytes(self.payload[..4].try_into().unwrap()) & 0x7fff_ffff
    }
}

/// A hand-written HTTP/2 (h2c, prior knowledge) client that shows every frame the server
/// sends, so a test sees GOAWAYs and PINGs and when they come. It answers nothing by itself.
pub struct RawH2 {
    pub stream: TcpStream,
}

impl RawH2 {
    /// Connects and sends the preface and an empty SETTINGS frame.
    pub async fn connect(addr: SocketAddr) -> Self {
        use tokio::io::AsyncWriteExt;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut conn = RawH2 { stream };
        conn.send(Frame::SETTINGS, 0, 0, &[]).await;
        conn
    }

    pub async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut frame = vec![len[1], len[2], len[3], kind, flags];
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        // A write error means the server has closed; the reads tell the test.
        let _ = self.stream.write_all(&frame).await;
    }

    /// Opens stream `id` with `GET path` (HPACK: indexed and literal fields, no Huffman).
    pub async fn get(&mut self, id: u32, path: &str) {
        let mut block = vec![0x82, 0x86]; // :method GET, :scheme http
        block.push(0x04); // :path, literal without indexing
        block.push(u8::try_from(path.len()).unwrap());
        block.extend_from_slice(path.as_bytes());
        block.extend_from_slice(&[0x01, 4]); // :authority
        block.extend_from_slice(b"test");
        // END_HEADERS | END_STREAM
        self.send(Frame::HEADERS, 0x4 | 0x1, id, &block).await;
    }

    /// The next frame, or `None` at the end of the connection (EOF or reset).
    pub async fn read(&mut self) -> Option<Frame> {
        use tokio::io::AsyncReadExt;
        let mut head = [0u8; 9];
        self.stream.read_exact(&mut head).await.ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).await.ok()?;
        Some(Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff,
            payload,
        })
    }

    /// Reads frames until one matches, acknowledging SETTINGS on the way; the frames skipped
    /// are returned too. `None` if the connection ended first.
    pub async fn until(
        &mut self,
        mut wanted: impl FnMut(&Frame) -> bool,
    ) -> Option<(Frame, Vec<Frame>)> {
        let mut skipped = Vec::new();
        loop {
            let frame = self.read().await?;
            if wanted(&frame) {
                return Some((frame, skipped));
            }
            if frame.kind == Frame::SETTINGS && frame.flags & Frame::ACK == 0 {
                self.send(Frame::SETTINGS, Frame::ACK, 0, &[]).await;
            }
            skipped.push(frame);
        }
    }
}

/// A TCP proxy on loopback that delays every byte by `delay` in each direction, standing in
/// for a long round trip. Serves connections until dropped (the task is aborted).
pub struct DelayProxy {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl DelayProxy {
    pub async fn start(upstream: SocketAddr, delay: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(Self::pipe(client_read, server_write, delay));
                tokio::spawn(Self::pipe(server_read, client_write, delay));
            }
        });
        DelayProxy { addr, task }
    }

    async fn pipe(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        delay: Duration,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let writer = tokio::spawn(async move {
            while let Some((due, bytes)) = rx.recv().await {
                tokio::time::sleep_until(due).await;
                let bytes: Vec<u8> = bytes;
                if bytes.is_empty() || to.write_all(&bytes).await.is_err() {
                    break;
                }
            }
            let _ = to.shutdown().await;
        });
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = from.read(&mut buf).await.unwrap_or(0);
            let due = tokio::time::Instant::now() + delay;
            let _ = tx.send((due, buf[..n].to_vec()));
            if n == 0 {
                break;
            }
        }
        let _ = writer.await;
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
