//! Long-lived responses: SSE and WebSockets end cleanly at the stop turn; a body that ignores
//! the shutdown is cut off at the stop timeout and counted.

mod common;

use std::time::{Duration, Instant};

use common::{start, H1};
use futures::{SinkExt, StreamExt};
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
