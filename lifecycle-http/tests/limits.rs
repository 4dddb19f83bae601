//! Limits on by default, as a public server needs: connections beyond the cap wait in the
//! backlog.

mod common;

use std::time::{Duration, Instant};

use common::{start_configured, H1};
use lifecycle_core::exit_code;

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
