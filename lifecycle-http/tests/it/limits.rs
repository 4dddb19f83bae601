//! Limits on by default, as a public server needs: a request body that stops coming fails
//! the request (408) instead of holding the connection; connections beyond the cap wait in the
//! backlog; `/readyz?verbose` details only where the service enables them.

use crate::harness;

use std::time::{Duration, Instant};

use harness::{start, start_configured, H1};
use lifecycle_core::{exit_code, Lifecycle, Outcome, Registration, TriggerKind};
use lifecycle_http::HttpServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_that_stops_coming_is_answered_408_and_the_connection_closed() {
    let server = start_configured(Duration::ZERO, Duration::from_secs(5), |s| {
        s.body_read_timeout(Duration::from_millis(300))
    })
    .await;
    // A whole body is read as usual.
    let mut whole = TcpStream::connect(server.addr).await.unwrap();
    whole
        .write_all(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .unwrap();
    let mut answer = [0u8; 512];
    let n = whole.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("got 5"), "{answer}");

    // A body that stalls after 10 of 100 bytes.
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled
        .write_all(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let sent = Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), stalled.read_to_end(&mut answer))
        .await
        .expect("the stalled upload is answered and closed, not held")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        harness::raw_header(&answer, "connection") == Some("close"),
        "{answer}"
    );
    assert!(
        sent.elapsed() >= Duration::from_millis(250),
        "{:?}",
        sent.elapsed()
    );

    server.handle.shutdown("test over");
    let report = server.report.await.unwrap();
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_in_the_backlog_until_one_closes() {
    let server = start_configured(Duration::ZERO, Duration::from_secs(5), |s| {
        s.max_connections(2)
    })
    .await;
    let mut first = H1::connect(server.addr).await.unwrap();
    let mut second = H1::connect(server.addr).await.unwrap();
    assert_eq!(first.get("/work").await.unwrap().status, 200);
    assert_eq!(second.get("/work").await.unwrap().status, 200);
    assert_eq!(server.stats.open_connections(), 2);

    // The kernel completes the third handshake, but the server does not accept it yet: it is
    // neither served nor closed.
    let addr = server.addr;
    let third = tokio::spawn(async move {
        let mut third = H1::connect(addr).await.unwrap();
        third.get("/work").await.map(|a| (a.status, Instant::now()))
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!third.is_finished(), "the third connection waits");
    assert_eq!(server.stats.open_connections(), 2);
    assert!(server.stats.connection_limit_reached() >= 1);

    let closed_at = Instant::now();
    drop(first);
    let (status, answered_at) = tokio::time::timeout(Duration::from_secs(3), third)
        .await
        .expect("served once a connection closed")
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    assert!(answered_at > closed_at);
    assert_eq!(second.get("/work").await.unwrap().status, 200);

    server.handle.shutdown("test over");
    let report = server.report.await.unwrap();
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_details_are_off_unless_enabled() {
    // `harness::router` merges `health_routes(handle)`, the default.
    let server = start(Duration::ZERO, Duration::from_secs(5)).await;
    let mut conn = H1::connect(server.addr).await.unwrap();
    let answer = conn.get("/readyz?verbose").await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "ready\n", "no details by default");
    server.handle.shutdown("test over");
    let report = server.report.await.unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
}

#[tokio::test]
async fn settings_out_of_range_fail_the_start_with_a_typed_error() {
    let error = start_error(|s| s.max_connections(0)).await;
    assert!(
        error.contains("invalid setting of http: max_connections must be at least 1, not 0"),
        "{error}"
    );
    let error = start_error(|s| s.vanished_peer_timeout(Duration::from_millis(500))).await;
    assert!(
        error.contains(
            "invalid setting of http: vanished_peer_timeout must be at least 1s, not 500ms"
        ),
        "{error}"
    );
}

/// The error a server configured by `configure` fails its start with.
async fn start_error(configure: fn(HttpServer) -> HttpServer) -> String {
    let builder = Lifecycle::builder().signals([]);
    let server = configure(HttpServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        harness::router(builder.handle()),
    ));
    let report = builder
        .register(Registration::new("http", server))
        .build()
        .unwrap()
        .run()
        .await;
    assert_eq!(report.exit_code(), exit_code::FAILURE);
    assert_eq!(report.trigger.kind, TriggerKind::StartFailed);
    let http = report.component("http").unwrap();
    assert_eq!(http.outcome, Outcome::Failed);
    http.error.clone().unwrap()
}
