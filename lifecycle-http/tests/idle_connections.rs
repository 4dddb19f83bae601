//! Connections that send nothing, or too little, cannot hold the stop open.

mod common;

use std::time::{Duration, Instant};

use common::{start, H1};
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
