//! Upgrades during the drain: a WebSocket handshake keeps `Connection: upgrade`, and the
//! socket is told to go away at the stop turn like one opened before the signal.

use crate::harness;

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use harness::start;
use lifecycle_core::exit_code;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_opened_during_the_drain_delay_works_and_is_told_to_go_away() {
    let server = start(Duration::from_millis(1500), Duration::from_secs(5)).await;
    let signal_at = Instant::now();
    server.handle.shutdown("deploy");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (mut socket, response) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr))
            .await
            .expect("the handshake is accepted during the drain delay");
    assert_eq!(response.status(), 101);
    let connection = response.headers().get("connection").unwrap();
    assert!(
        connection.as_bytes().eq_ignore_ascii_case(b"upgrade"),
        "{connection:?}"
    );
    socket.send(Message::text("ping")).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), Message::text("ping"));

    let close = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Message::Close(Some(frame)) = close else {
        panic!("expected a close frame, got {close:?}")
    };
    assert_eq!(frame.code, CloseCode::Away);
    assert!(
        signal_at.elapsed() >= Duration::from_millis(1400),
        "told to go away at the stop turn, not before ({:?})",
        signal_at.elapsed()
    );
    let _ = socket.close(None).await;
    let report = server.report.await.unwrap();
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stop_waits_for_an_upgraded_connection_whose_handler_takes_no_guard() {
    let server = start(Duration::ZERO, Duration::from_secs(5)).await;
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws-untracked", server.addr))
            .await
            .unwrap();
    server.handle.shutdown("deploy");
    let close = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(close, Message::Close(Some(_))), "{close:?}");
    let _ = socket.close(None).await;
    let report = server.report.await.unwrap();
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
    let http = report.component("http").unwrap();
    let stop_ms = http.stop_ended_ms.unwrap() - http.stop_began_ms.unwrap();
    assert!(
        stop_ms >= 250.0,
        "the stop did not wait for the upgraded connection ({stop_ms} ms)"
    );
}
