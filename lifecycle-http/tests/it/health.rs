//! `/readyz?verbose`, where enabled, lists each component's state, health and counters.

use crate::harness;

use std::time::Duration;

use harness::{start_custom, verbose_router, H1};

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

    let mut slow = H1::connect(server.addr).await.unwrap();
    let _slow = tokio::spawn(async move { slow.get("/work?ms=1000").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
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
    // From the trigger on, what each component still waits for: the slow request, and this
    // one, in its handler.
    let held = draining["components"][0]["held_by"].as_array().unwrap();
    assert!(
        held[0].as_str().unwrap().starts_with("GET /work (running "),
        "{draining}"
    );
    assert_eq!(held[1], "1 other requests in flight", "{draining}");
    let mut conn = H1::connect(server.addr).await.unwrap();
    assert_eq!(conn.get("/readyz").await.unwrap().body, "draining\n");
    let report = server.report.await.unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
}

/// Always unhealthy, like a cache server that is down.
struct CacheDown;

#[lifecycle_core::async_trait]
impl lifecycle_core::Component for CacheDown {
    async fn start(&self, _ctx: &lifecycle_core::Context) -> Result<(), lifecycle_core::BoxError> {
        Ok(())
    }

    async fn health(&self) -> lifecycle_core::Health {
        lifecycle_core::Health::unhealthy("cache down")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_left_out_of_readiness_does_not_hold_readyz() {
    use lifecycle_core::testing::TestRun;
    use lifecycle_core::{Lifecycle, Registration};
    use lifecycle_http::{HealthRoutes, HttpServer};

    let builder = Lifecycle::builder().signals([]);
    let handle = builder.handle();
    let server = HttpServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        HealthRoutes::new(handle.clone()).verbose(true).router(),
    );
    let addr = server.local_addr();
    let run = TestRun::start(
        builder
            .register(Registration::new("cache", CacheDown).exclude_from_readiness())
            .register(Registration::new("http", server)),
    )
    .unwrap();
    run.ready().await.unwrap();
    let mut conn = H1::connect(addr.get().unwrap()).await.unwrap();
    assert_eq!(conn.get("/readyz").await.unwrap().body, "ready\n");
    let verbose: serde_json::Value =
        serde_json::from_slice(&conn.get("/readyz?verbose").await.unwrap().body).unwrap();
    assert_eq!(verbose["ready"], true);
    let cache = &verbose["components"][0];
    assert_eq!(
        (
            &cache["healthy"],
            &cache["counts_for_readiness"],
            &cache["reason"]
        ),
        (
            &serde_json::json!(false),
            &serde_json::json!(false),
            &serde_json::json!("cache down")
        )
    );
    run.request("test over");
    run.finish().await.assert_exit_code(0);
}
