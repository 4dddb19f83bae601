//! Bytes, not chunks: a response is in progress until its last byte has been written to the
//! socket, so neither the stop turn nor the header read timeout cuts it. Slow readers over
//! HTTP/1.1 and HTTP/2, one-chunk and streaming bodies.

use crate::harness;

use std::time::Duration;

use axum::body::Bytes;
use axum::http::Request;
use harness::{read_slowly, slow_reader, start_with, BIG};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lifecycle_core::exit_code;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const SECONDS_10: Duration = Duration::from_secs(10);

/// About 2 s for a [`BIG`] body.
const RATE: usize = 12 * 1024 * 1024;

/// Sends `GET path` on a slow-reader connection and reads the whole answer slowly, the
/// shutdown beginning (drain delay 0) 300 ms into the transfer when `shutdown` is set.
async fn h1_read_slowly(path: &str, shutdown: bool, header_read_timeout: Duration) -> Vec<u8> {
    let server = start_with(Duration::ZERO, Duration::from_secs(20), header_read_timeout).await;
    let mut stream = slow_reader(server.addr).await;
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let reader = tokio::spawn(async move { read_slowly(&mut stream, RATE).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    if shutdown {
        server.handle.shutdown("deploy");
    }
    let raw = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("the transfer ends")
        .unwrap();
    if !shutdown {
        server.handle.shutdown("test over");
    }
    let report = server.report.await.unwrap();
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
    assert_eq!(server.stats.force_closed(), 0);
    raw
}

fn split_head(raw: &[u8]) -> (String, &[u8]) {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    (
        String::from_utf8_lossy(&raw[..end]).into_owned(),
        &raw[end + 4..],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_chunk_body_read_slowly_arrives_whole_across_the_stop_over_http1() {
    let raw = h1_read_slowly("/big", true, Duration::from_secs(10)).await;
    let (head, body) = split_head(&raw);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        harness::raw_header(&head, "content-length"),
        Some(BIG.to_string().as_str())
    );
    assert_eq!(body.len(), BIG, "bytes of the body that arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_body_read_slowly_arrives_whole_across_the_stop_over_http1() {
    let raw = h1_read_slowly("/big-stream", true, Duration::from_secs(10)).await;
    let (head, body) = split_head(&raw);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        harness::raw_header(&head, "content-length"),
        Some(BIG.to_string().as_str())
    );
    assert_eq!(body.len(), BIG, "bytes of the body that arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_read_timeout_does_not_cut_a_response_being_written() {
    // The response takes about 2 s to read, four times the header read timeout.
    let raw = h1_read_slowly("/big", false, Duration::from_millis(500)).await;
    let (_, body) = split_head(&raw);
    assert_eq!(body.len(), BIG, "bytes of the body that arrived");
}

/// Reads `path` over HTTP/2 with the default 64 KiB flow-control windows, slowly; the shutdown
/// begins 300 ms in when `shutdown` is set.
/// An HTTP/2 client on `stream` with the protocol's smallest windows (64 KiB), so that a body
/// the client does not read is held back by flow control.
async fn h2_small_windows<T>(stream: T) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .adaptive_window(false)
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn h2_read_slowly(
    path: &'static str,
    shutdown: bool,
    header_read_timeout: Duration,
) -> usize {
    let server = start_with(Duration::ZERO, Duration::from_secs(20), header_read_timeout).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let mut sender = h2_small_windows(stream).await;
    let reader = tokio::spawn(async move {
        let request = Request::get(format!("http://test{path}"))
            .body(Empty::new())
            .unwrap();
        let mut body = sender.send_request(request).await?.into_body();
        let started = tokio::time::Instant::now();
        let mut read = 0;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                read += data.len();
            }
            let due = started + Duration::from_secs_f64(read as f64 / RATE as f64);
            tokio::time::sleep_until(due).await;
        }
        Ok::<_, hyper::Error>(read)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    if shutdown {
        server.handle.shutdown("deploy");
    }
    let read = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("the transfer ends")
        .unwrap()
        .expect("the body arrives without an error");
    if !shutdown {
        server.handle.shutdown("test over");
    }
    let report = server.report.await.unwrap();
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
    assert_eq!(server.stats.force_closed(), 0);
    read
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_chunk_body_read_slowly_arrives_whole_across_the_stop_over_http2() {
    assert_eq!(h2_read_slowly("/big", true, SECONDS_10).await, BIG);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_body_read_slowly_arrives_whole_across_the_stop_over_http2() {
    assert_eq!(h2_read_slowly("/big-stream", true, SECONDS_10).await, BIG);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_read_timeout_does_not_cut_a_response_being_sent_over_http2() {
    // hyper holds the body's data under flow control, four times the timeout.
    let read = h2_read_slowly("/big", false, Duration::from_millis(500)).await;
    assert_eq!(read, BIG);
}

/// A client socket whose reads can be paused, as a client that stops reading (a paused
/// download, a busy event loop): nothing it is sent is read, not even a PING.
struct Pausable {
    inner: TcpStream,
    paused: std::sync::Arc<std::sync::atomic::AtomicBool>,
    waker: std::sync::Arc<std::sync::Mutex<Option<std::task::Waker>>>,
}

impl tokio::io::AsyncRead for Pausable {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.paused.load(std::sync::atomic::Ordering::SeqCst) {
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            return std::task::Poll::Pending;
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Pausable {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// PITFALLS 53: a live HTTP/2 client that stops reading during the drain (so it sends nothing,
/// not even the answer to the GOAWAY's PING) for several header read timeouts, then reads on,
/// gets its whole body: a connection with a response in progress is never cut as if its client
/// had vanished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_pauses_reading_in_the_drain_gets_its_whole_body() {
    let server = start_with(
        Duration::from_secs(4),
        Duration::from_secs(20),
        Duration::from_millis(500),
    )
    .await;
    let paused = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let waker = std::sync::Arc::new(std::sync::Mutex::new(None::<std::task::Waker>));
    let stream = Pausable {
        inner: slow_reader(server.addr).await,
        paused: paused.clone(),
        waker: waker.clone(),
    };
    let mut sender = h2_small_windows(stream).await;
    let request = Request::get("http://test/big").body(Empty::new()).unwrap();
    let mut body = sender.send_request(request).await.unwrap().into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    // The client stops reading; the drain begins (GOAWAY, PING), unread, for six timeouts.
    paused.store(true, std::sync::atomic::Ordering::SeqCst);
    server.handle.shutdown("deploy");
    tokio::time::sleep(Duration::from_secs(3)).await;
    paused.store(false, std::sync::atomic::Ordering::SeqCst);
    if let Some(waker) = waker.lock().unwrap().take() {
        waker.wake();
    }
    let rest = tokio::time::timeout(Duration::from_secs(20), body.collect())
        .await
        .expect("the transfer ends")
        .expect("the body arrives without an error")
        .to_bytes();
    assert_eq!(first.len() + rest.len(), BIG);
    let report = server.report.await.unwrap();
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
    assert_eq!(server.stats.force_closed(), 0);
}
