//! A port in use fails the start with a clear error and rolls the start-up back.

use crate::harness;

use lifecycle_core::testing::TestRun;

use std::time::Duration;

use lifecycle_core::{
    exit_code, ComponentState, Lifecycle, Outcome, Registration, TriggerKind, Worker,
};
use lifecycle_http::HttpServer;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_in_use_fails_the_start_and_rolls_back() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let builder = Lifecycle::builder().signals([]);
    let router = harness::router(builder.handle());
    let db = Worker::new(|ctx| async move {
        ctx.token().cancelled().await;
        Ok::<_, std::io::Error>(())
    });
    let report = builder
        .register(Registration::new("db", db))
        .register(Registration::new("http", HttpServer::bind(addr, router)).depends_on("db"))
        .build()
        .unwrap()
        .run()
        .await;
    assert_eq!(report.exit_code(), exit_code::FAILURE);
    assert_eq!(report.trigger.kind, TriggerKind::StartFailed);
    let http = report.component("http").unwrap();
    assert_eq!(http.outcome, Outcome::Failed);
    let error = http.error.as_deref().unwrap();
    assert!(
        error.starts_with(&format!("start failed: binding {addr} failed")),
        "{error}"
    );
    // The OS error is the source, not part of the message: shown once if the report renders
    // the chain of sources, not at all if it renders the message alone.
    assert!(error.matches("in use").count() <= 1, "{error}");
    assert_eq!(report.component("db").unwrap().outcome, Outcome::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_on_a_listener_it_is_given() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let builder = Lifecycle::builder().signals([]);
    let router = harness::router(builder.handle());
    let lifecycle = builder
        .register(Registration::new(
            "http",
            HttpServer::from_listener(listener, router),
        ))
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let run = TestRun::run(lifecycle);
    run.ready().await.unwrap();
    let run = run.into_task();
    let mut conn = harness::H1::connect(addr).await.unwrap();
    assert_eq!(conn.get("/work").await.unwrap().status, 200);
    handle.shutdown("test over");
    let report = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_given_listener_is_closed_at_the_stop_so_connects_are_refused() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let builder = Lifecycle::builder().signals([]);
    let router = harness::router(builder.handle());
    // Something the server depends on, still stopping for a while after the server.
    let db = Worker::new(|ctx| async move {
        ctx.token().cancelled().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok::<_, std::io::Error>(())
    });
    let lifecycle = builder
        .register(Registration::new("db", db))
        .register(
            Registration::new("http", HttpServer::from_listener(listener, router)).depends_on("db"),
        )
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let run = TestRun::run(lifecycle);
    run.ready().await.unwrap();
    let run = run.into_task();
    let mut conn = harness::H1::connect(addr).await.unwrap();
    assert_eq!(conn.get("/work").await.unwrap().status, 200);
    handle.shutdown("deploy");
    let http_done = || {
        handle
            .states()
            .iter()
            .any(|(name, state)| name == "http" && matches!(state, ComponentState::Done(_)))
    };
    while !http_done() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let connect = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr))
        .await
        .expect("the connect is answered at once");
    let error = connect.expect_err("the connect is refused after the server's stop");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
    let report = run.await.unwrap();
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
}
