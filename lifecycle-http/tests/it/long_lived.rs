//! Long-lived responses: SSE and WebSockets end cleanly at the stop turn; a body that ignores
//! the shutdown is cut off at the stop timeout and counted.

use crate::harness;

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use harness::{start, H1};
use lifecycle_core::{exit_code, Outcome};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_sse_stream_ends_cleanly_at_the_stop_turn() {
    let server = start(Duration::ZERO, Duration::from_secs(5)).await;
    let mut conn = H1::connect(server.addr).await.unwrap();
    let sse = tokio::spawn(async move { conn.get("/sse").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let signal_at = Instant::now();
    server.handle.shutdown("deploy");
    let answer = tokio::time::timeout(Duration::from_secs(1), sse)
        .await
        .unwrap()
        .unwrap()
        .expect("the stream ends cleanly");
    assert!(signal_at.elapsed() < Duration::from_secs(1));
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "event: shutdown\ndata: bye\n\n");
    let report = server.report.await.unwrap();
    assert_eq!(
        report.component("http").unwrap().outcome,
        Outcome::Stopped,
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_gets_a_going_away_close_frame() {
    let server = start(Duration::ZERO, Duration::from_secs(5)).await;
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr))
        .await
        .unwrap();
    socket.send(Message::text("ping")).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), Message::text("ping"));
    server.handle.shutdown("deploy");
    let close = tokio::time::timeout(Duration::from_secs(2), socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Message::Close(Some(frame)) = close else {
        panic!("expected a close frame, got {close:?}")
    };
    assert_eq!(frame.code, CloseCode::Away);
    // The server waits for the close handshake: its stop lasts until we answer.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = socket.close(None).await;
    let report = server.report.await.unwrap();
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
    let http = report.component("http").unwrap();
    let stop_ms = http.stop_ended_ms.unwrap() - http.stop_began_ms.unwrap();
    assert!(
        stop_ms >= 250.0,
        "the stop did not wait for the WebSocket ({stop_ms} ms)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_download_is_force_closed_at_the_stop_timeout_and_counted() {
    let server = start(Duration::ZERO, Duration::from_millis(700)).await;
    let mut conn = H1::connect(server.addr).await.unwrap();
    let download = tokio::spawn(async move { conn.get("/stream").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let signal_at = Instant::now();
    server.handle.shutdown("deploy");
    let report = server.report.await.unwrap();
    let stopped_after = signal_at.elapsed();
    assert!(
        stopped_after >= Duration::from_millis(700) && stopped_after < Duration::from_secs(2),
        "{stopped_after:?}"
    );
    let http = report.component("http").unwrap();
    assert_eq!(http.outcome, Outcome::TimedOut, "{report}");
    assert!(
        http.error.as_deref().unwrap().contains("tasks aborted"),
        "{report}"
    );
    assert_eq!(report.exit_code(), exit_code::FAILURE);
    assert_eq!(server.stats.force_closed(), 1);
    assert!(
        download.await.unwrap().is_err(),
        "the client sees the download cut off"
    );
}

/// `GET path` over HTTP/2 (h2c) on `stream`; the response body, being read in a task of its
/// own.
async fn h2_get(
    stream: tokio::net::TcpStream,
    path: &str,
) -> tokio::task::JoinHandle<Result<http_body_util::Collected<axum::body::Bytes>, hyper::Error>> {
    use http_body_util::{BodyExt, Empty};
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake::<_, _, Empty<axum::body::Bytes>>(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = axum::http::Request::get(format!("http://test{path}"))
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    tokio::spawn(response.into_body().collect())
}

/// The `held_by` of the server in the report of a run.
async fn held_by(server: harness::Running) -> Vec<String> {
    let report = server.report.await.unwrap();
    let http = report.component("http").unwrap();
    assert_eq!(http.outcome, Outcome::TimedOut, "{report}");
    http.held_by.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_held_by_an_http1_request_names_it_without_its_query() {
    let server = start(Duration::ZERO, Duration::from_millis(500)).await;
    let mut conn = H1::connect(server.addr).await.unwrap();
    let _request = tokio::spawn(async move { conn.get("/work?ms=60000&secret=123").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let now = server.handle.held_by();
    assert_eq!(now.len(), 1, "{now:?}");
    assert!(now[0].1[0].starts_with("GET /work (running "), "{now:?}");
    server.handle.shutdown("deploy");
    let held = held_by(server).await;
    assert_eq!(held.len(), 1, "{held:?}");
    assert!(held[0].starts_with("GET /work (running "), "{held:?}");
    assert!(held[0].ends_with(", HTTP/1.1)"), "{held:?}");
    assert!(!held[0].contains("secret"), "{held:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_held_by_an_http2_stream_names_it() {
    let server = start(Duration::ZERO, Duration::from_millis(500)).await;
    let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let _body = h2_get(stream, "/stream").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.handle.shutdown("deploy");
    let held = held_by(server).await;
    assert_eq!(held.len(), 1, "{held:?}");
    assert!(held[0].starts_with("GET /stream (running "), "{held:?}");
    assert!(held[0].ends_with(", HTTP/2.0)"), "{held:?}");
}

/// Several streams at once on one HTTP/2 connection: each is named for its own request, not
/// the connection's latest (each stream's task holds its own name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_held_by_several_http2_streams_of_one_connection_names_each() {
    use http_body_util::{BodyExt, Empty};
    let server = start(Duration::ZERO, Duration::from_millis(500)).await;
    let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake::<_, _, Empty<axum::body::Bytes>>(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut requests = Vec::new();
    for path in ["/stream", "/work?ms=60000", "/stream"] {
        let mut sender = sender.clone();
        requests.push(tokio::spawn(async move {
            let request = axum::http::Request::get(format!("http://test{path}"))
                .body(Empty::new())
                .unwrap();
            let response = sender.send_request(request).await?;
            response.into_body().collect().await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.handle.shutdown("deploy");
    let mut held = held_by(server).await;
    held.sort();
    assert_eq!(held.len(), 3, "{held:?}");
    assert!(held[0].starts_with("GET /stream (running "), "{held:?}");
    assert!(held[1].starts_with("GET /stream (running "), "{held:?}");
    assert!(held[2].starts_with("GET /work (running "), "{held:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_held_by_a_websocket_counts_it() {
    let server = start(Duration::ZERO, Duration::from_millis(500)).await;
    // The handler closes only a while after the stop turn, and waits for the client's reply.
    let (_socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws-untracked", server.addr))
            .await
            .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.handle.shutdown("deploy");
    let held = held_by(server).await;
    assert_eq!(held, ["1 upgraded connections (WebSocket) open"]);
}

/// Drops the packets a client sends from `port` (no FIN, no reset: it vanished) until dropped.
struct Vanished(u16);

impl Vanished {
    /// Whether this test may drop packets (root, `iptables`); in CI it must.
    fn possible() -> bool {
        let ok = std::process::Command::new("iptables")
            .args(["-L", "INPUT", "-n"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the vanished-peer test: it needs root and iptables"
            );
            eprintln!("SKIPPED: dropping a client's packets needs root and iptables");
        }
        ok
    }

    fn drop_packets_from(port: u16) -> Vanished {
        Vanished::rule("-I", port);
        Vanished(port)
    }

    fn rule(action: &str, port: u16) {
        let status = std::process::Command::new("iptables")
            .args([action, "INPUT", "-p", "tcp", "-s", "127.0.0.1"])
            .args(["--sport", &port.to_string(), "-j", "DROP"])
            .status()
            .unwrap();
        assert!(status.success(), "iptables {action}");
    }
}

impl Drop for Vanished {
    fn drop(&mut self) {
        Vanished::rule("-D", self.0);
    }
}

/// PITFALLS 52: two HTTP/2 clients hold a long stream each, one the server writes to and one
/// it stays silent on, and then vanish. Both connections are found dead and closed within the
/// server's `vanished_peer_timeout`, and counted as vanished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_http2_clients_holding_streams_are_closed() {
    if !Vanished::possible() {
        return;
    }
    let server = harness::start_configured(Duration::ZERO, Duration::from_secs(5), |server| {
        server.vanished_peer_timeout(Duration::from_secs(3))
    })
    .await;
    let mut vanished = Vec::new();
    let mut bodies = Vec::new();
    for path in ["/stream", "/sse"] {
        let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let port = stream.local_addr().unwrap().port();
        bodies.push(h2_get(stream, path).await);
        vanished.push(port);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.stats.open_connections(), 2);
    let _dropped: Vec<Vanished> = vanished
        .into_iter()
        .map(Vanished::drop_packets_from)
        .collect();
    let began = Instant::now();
    while server.stats.vanished() < 2 {
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "{} of 2 vanished clients found",
            server.stats.vanished()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("both vanished clients closed after {:?}", began.elapsed());
    assert_eq!(server.stats.open_connections(), 0);
    server.handle.shutdown("test over");
    let report = server.report.await.unwrap();
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
}
