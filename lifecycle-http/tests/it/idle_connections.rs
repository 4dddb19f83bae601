//! Connections that send nothing, or too little, cannot hold the stop open.

use crate::harness;

use std::time::{Duration, Instant};

use harness::{start, H1};
use lifecycle_core::Outcome;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_silent_and_slowloris_connections_do_not_delay_the_stop() {
    let server = start(Duration::ZERO, Duration::from_secs(5)).await;

    // One keep-alive connection that made a request and went idle.
    let mut idle = H1::connect(server.addr).await.unwrap();
    assert_eq!(idle.get("/work").await.unwrap().status, 200);
    // Twenty that never send a byte.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // Ten slowloris clients, one header byte every 100 ms.
    let slowloris: Vec<_> = (0..10)
        .map(|_| {
            let addr = server.addr;
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                for byte in b"GET /work HTTP/1.1\r\nHost: slow\r\nX-Padding: "
                    .iter()
                    .cycle()
                {
                    if stream.write_all(&[*byte]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.stats.open_connections(), 31);

    let signal_at = Instant::now();
    server.handle.shutdown("deploy");
    let report = server.report.await.unwrap();
    assert!(
        signal_at.elapsed() < Duration::from_secs(1),
        "stopped after {:?}",
        signal_at.elapsed()
    );
    let http = report.component("http").unwrap();
    assert_eq!(http.outcome, Outcome::Stopped, "{report}");
    assert_eq!(server.stats.open_connections(), 0);
    assert_eq!(server.stats.force_closed(), 0);

    // Every silent socket sees an orderly close (EOF), not a reset.
    for mut stream in silent {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf))
            .await
            .unwrap();
        assert_eq!(read.unwrap(), 0);
    }
    assert!(
        idle.closed.await.unwrap().is_ok(),
        "the idle connection closed cleanly"
    );
    for client in slowloris {
        tokio::time::timeout(Duration::from_secs(1), client)
            .await
            .unwrap()
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_read_timeout_closes_slow_and_idle_connections() {
    let server = harness::start_with(
        Duration::ZERO,
        Duration::from_secs(5),
        Duration::from_millis(300),
    )
    .await;

    // A slowloris client: a byte every 50 ms never makes a head in 300 ms.
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    let began = Instant::now();
    let writer = tokio::spawn(async move {
        for byte in b"GET /work HTTP/1.1\r\nHost: slow\r\nX-Padding: "
            .iter()
            .cycle()
        {
            if slow.write_all(&[*byte]).await.is_err() {
                return slow;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        unreachable!()
    });
    let mut slow = tokio::time::timeout(Duration::from_secs(3), writer)
        .await
        .expect("cut off")
        .unwrap();
    let mut buf = [0u8; 64];
    let _ = slow.read(&mut buf).await;
    let cut_after = began.elapsed();
    assert!(
        cut_after >= Duration::from_millis(250) && cut_after < Duration::from_secs(1),
        "{cut_after:?}"
    );

    // A keep-alive connection that goes quiet after a request is closed after the same time,
    // and a busy one is not: a request longer than the timeout completes.
    let mut idle = H1::connect(server.addr).await.unwrap();
    assert_eq!(
        idle.get("/work?ms=600").await.unwrap().status,
        200,
        "busy for longer than the timeout"
    );
    let quiet = Instant::now();
    assert!(idle.closed.await.unwrap().is_ok());
    assert!(
        quiet.elapsed() >= Duration::from_millis(250) && quiet.elapsed() < Duration::from_secs(1)
    );

    server.handle.shutdown("test over");
    let report = server.report.await.unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
}
