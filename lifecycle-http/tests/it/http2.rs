//! HTTP/2 (h2c by prior knowledge): streams open at the stop turn finish after GOAWAY.

use crate::harness;

use std::time::Duration;

use axum::body::Bytes;
use axum::http::Request;
use harness::start;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lifecycle_core::{exit_code, Outcome};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_in_flight_at_goaway_complete_and_none_hang() {
    let server = start(Duration::ZERO, Duration::from_secs(5)).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);

    let streams: Vec<_> = (0..20)
        .map(|_| {
            let mut sender = sender.clone();
            tokio::spawn(async move {
                let request = Request::get("http://test/work?ms=400")
                    .body(Empty::new())
                    .unwrap();
                let response = sender.send_request(request).await?;
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                Ok::<_, hyper::Error>((status, body))
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.stats.in_flight(), 20);
    server.handle.shutdown("deploy");

    for stream in streams {
        let (status, body) = tokio::time::timeout(Duration::from_secs(5), stream)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!((status.as_u16(), &body[..]), (200, &b"done"[..]));
    }
    // After GOAWAY the connection ends, and new streams are refused rather than left hanging.
    let mut late = sender.clone();
    let refused = tokio::time::timeout(
        Duration::from_secs(2),
        late.send_request(Request::get("http://test/work").body(Empty::new()).unwrap()),
    )
    .await
    .unwrap();
    assert!(refused.is_err());
    tokio::time::timeout(Duration::from_secs(2), conn)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let report = server.report.await.unwrap();
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
    assert_eq!(report.component("http").unwrap().outcome, Outcome::Stopped);
}
