//! HTTP/2 drains early, like HTTP/1: the graceful GOAWAY (last stream id 2^31-1, then a PING,
//! then the final GOAWAY) goes out when the drain begins; streams opened before the final
//! GOAWAY complete; idle connections close after the final GOAWAY, never silently, even when
//! the round trip is slower than the server's close grace; a client that never answers the
//! GOAWAY's PING (it vanished) cannot hold the connection. Seen frame by frame by a raw client.

use crate::harness;

use std::time::{Duration, Instant};

use harness::{start, start_with, DelayProxy, Frame, RawH2};
use lifecycle_core::exit_code;

const MAX_STREAM_ID: u32 = 0x7fff_ffff;

fn ends_stream(id: u32) -> impl FnMut(&Frame) -> bool {
    move |f| {
        f.stream == id
            && (f.kind == Frame::DATA || f.kind == Frame::HEADERS)
            && f.flags & Frame::END_STREAM != 0
    }
}

fn is_goaway(f: &Frame) -> bool {
    f.kind == Frame::GOAWAY
}

fn is_ping(f: &Frame) -> bool {
    f.kind == Frame::PING && f.flags & Frame::ACK == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_graceful_goaway_goes_out_when_the_drain_begins() {
    let server = start(Duration::from_millis(2000), Duration::from_secs(5)).await;
    let mut h2 = RawH2::connect(server.addr).await;
    h2.get(1, "/work").await;
    h2.until(ends_stream(1)).await.expect("stream 1 answered");

    let signal_at = Instant::now();
    server.handle.shutdown("deploy");
    let (first, _) = tokio::time::timeout(Duration::from_secs(1), h2.until(is_goaway))
        .await
        .expect("a GOAWAY within 1 s of the signal, during the drain delay")
        .expect("a GOAWAY, not a close");
    assert_eq!(first.last_stream_id(), MAX_STREAM_ID, "the graceful GOAWAY");

    // The server still serves: a stream opened before the final GOAWAY completes.
    h2.get(3, "/work?ms=300").await;
    let (ping, _) = h2.until(is_ping).await.expect("the shutdown PING");
    h2.send(Frame::PING, Frame::ACK, 0, &ping.payload).await;
    let (last, mut frames) = h2.until(is_goaway).await.expect("the final GOAWAY");
    assert_eq!(last.last_stream_id(), 3, "the final GOAWAY");
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(3), h2.read())
        .await
        .expect("the connection closes")
    {
        frames.push(frame);
    }
    let headers = frames
        .iter()
        .find(|f| f.stream == 3 && f.kind == Frame::HEADERS)
        .expect("stream 3 answered");
    assert_eq!(headers.payload[0], 0x88, ":status 200");
    assert!(frames.iter().any(ends_stream(3)), "stream 3 complete");
    assert!(
        signal_at.elapsed() < Duration::from_millis(1900),
        "an idle h2 connection closes once told, before the stop turn ({:?})",
        signal_at.elapsed()
    );
    let report = server.report.await.unwrap();
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_behind_a_slow_round_trip_gets_the_final_goaway_before_the_close() {
    let server = start(Duration::ZERO, Duration::from_secs(5)).await;
    let proxy = DelayProxy::start(server.addr, Duration::from_millis(300)).await;
    let mut h2 = RawH2::connect(proxy.addr).await;
    h2.get(1, "/work").await;
    h2.until(ends_stream(1)).await.expect("stream 1 answered");

    server.handle.shutdown("deploy");
    let (first, _) = h2
        .until(is_goaway)
        .await
        .expect("a GOAWAY, not a silent close");
    assert_eq!(first.last_stream_id(), MAX_STREAM_ID, "the graceful GOAWAY");
    let (ping, _) = h2.until(is_ping).await.expect("the shutdown PING");
    h2.send(Frame::PING, Frame::ACK, 0, &ping.payload).await;
    let (last, _) = h2
        .until(is_goaway)
        .await
        .expect("the final GOAWAY before the close");
    assert_eq!(last.last_stream_id(), 1);
    let rest = tokio::time::timeout(Duration::from_secs(3), h2.until(|_| false))
        .await
        .expect("the connection closes after the final GOAWAY");
    assert!(rest.is_none());
    let report = server.report.await.unwrap();
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
    assert_eq!(server.stats.force_closed(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_opened_during_the_drain_gets_the_graceful_goaway_and_is_served() {
    let server = start(Duration::from_millis(2000), Duration::from_secs(5)).await;
    server.handle.shutdown("deploy");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut h2 = RawH2::connect(server.addr).await;
    // A request sent with the preface, before any GOAWAY can have arrived.
    h2.get(1, "/work?ms=100").await;
    let (first, _) = tokio::time::timeout(Duration::from_secs(1), h2.until(is_goaway))
        .await
        .expect("a GOAWAY at once, not at the stop turn")
        .expect("a GOAWAY, not a close");
    assert_eq!(first.last_stream_id(), MAX_STREAM_ID, "the graceful GOAWAY");
    let (ping, _) = h2.until(is_ping).await.expect("the shutdown PING");
    h2.send(Frame::PING, Frame::ACK, 0, &ping.payload).await;
    let (last, mut frames) = h2.until(is_goaway).await.expect("the final GOAWAY");
    assert_eq!(last.last_stream_id(), 1);
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(3), h2.read())
        .await
        .expect("the connection closes")
    {
        frames.push(frame);
    }
    assert!(frames.iter().any(ends_stream(1)), "stream 1 complete");
    let report = server.report.await.unwrap();
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_answers_the_goaway_ping_is_closed_after_the_header_read_timeout() {
    let header_read_timeout = Duration::from_millis(300);
    let server = start_with(
        Duration::from_secs(4),
        Duration::from_secs(5),
        header_read_timeout,
    )
    .await;
    let mut h2 = RawH2::connect(server.addr).await;
    h2.get(1, "/work").await;
    h2.until(ends_stream(1)).await.expect("stream 1 answered");

    let signal_at = Instant::now();
    server.handle.shutdown("deploy");
    h2.until(is_goaway).await.expect("the graceful GOAWAY");
    h2.until(is_ping).await.expect("the shutdown PING");
    // The client has vanished: it answers nothing.
    let rest = tokio::time::timeout(Duration::from_secs(3), h2.until(|_| false))
        .await
        .expect("the connection closes during the drain delay, not at the stop timeout");
    assert!(rest.is_none());
    let closed_after = signal_at.elapsed();
    assert!(
        closed_after >= header_read_timeout,
        "not before the header read timeout ({closed_after:?})"
    );
    let report = server.report.await.unwrap();
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
    assert_eq!(server.stats.force_closed(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_whose_client_never_answers_the_ping_is_closed_before_any_shutdown() {
    let header_read_timeout = Duration::from_millis(300);
    let server = start_with(Duration::ZERO, Duration::from_secs(5), header_read_timeout).await;
    let mut h2 = RawH2::connect(server.addr).await;
    h2.get(1, "/work").await;
    h2.until(ends_stream(1)).await.expect("stream 1 answered");

    // Idle: the server sends the graceful GOAWAY and its PING, which the client never answers.
    let (first, _) = h2
        .until(is_goaway)
        .await
        .expect("a GOAWAY for the idle connection");
    assert_eq!(first.last_stream_id(), MAX_STREAM_ID);
    h2.until(is_ping).await.expect("the PING");
    let rest = tokio::time::timeout(Duration::from_secs(3), h2.until(|_| false))
        .await
        .expect("the connection closes, not held by the unanswered PING");
    assert!(rest.is_none());
    assert_eq!(server.stats.open_connections(), 0);

    server.handle.shutdown("test over");
    let report = server.report.await.unwrap();
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
}
