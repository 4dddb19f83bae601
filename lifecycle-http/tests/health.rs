//! `/readyz?verbose`, where enabled, lists each component's state, health and counters.

mod common;

use std::time::Duration;

use common::{start_custom, verbose_router, H1};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_readiness_lists_components_and_counters() {
    let server = start_custom(
        Duration::from_millis(500),
        Duration::from_secs(5),
        verbose_router,
        |s| s,
    )
    .await;
    let mut conn = H1::connect(server.addr).await.unwrap();
    let ready: serde_json::Value =
        serde_json::from_slice(&conn.get("/readyz?verbose").await.unwrap().body).unwrap();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["phase"], "ready");
    let http = &ready["components"][0];
    assert_eq!(
        (
            http["name"].as_str(),
            http["state"].as_str(),
            http["healthy"].as_bool()
        ),
        (Some("http"), Some("running"), Some(true))
    );
    let detail = http["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("1 connections open, 1 requests in flight"),
        "{detail}"
    );

    server.handle.shutdown("deploy");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut conn = H1::connect(server.addr).await.unwrap();
    let answer = conn.get("/readyz?verbose").await.unwrap();
    assert_eq!(answer.status, 503);
    let draining: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(
        (draining["ready"].as_bool(), draining["phase"].as_str()),
        (Some(false), Some("draining"))
    );
    let mut conn = H1::connect(server.addr).await.unwrap();
    assert_eq!(conn.get("/readyz").await.unwrap().body, "draining\n");
    server.report.await.unwrap();
}
