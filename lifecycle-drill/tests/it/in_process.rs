//! The drill as a library call against a service in the test's own process: a graceful
//! service passes; one that drops its connections, exits non-zero, or never stops fails; one
//! that never becomes ready is an error.

use crate::support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lifecycle_drill::{Drill, DrillError, ServiceExit};
use support::{Service, Stop};

async fn start(stop: Stop) -> (SocketAddr, Service) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    (
        listener.local_addr().unwrap(),
        Service::start(listener, stop),
    )
}

/// A short drill: a few clients, HTTP/2 too, no SSE (the service has none).
fn drill(addr: SocketAddr) -> Drill {
    Drill::new()
        .addr(addr)
        .path("/work")
        .clients(4)
        .h2_streams(2)
        .no_sse()
        .signal_after(Duration::from_millis(400))
        .budget(Duration::from_secs(3))
        .ready_timeout(Duration::from_secs(5))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_service_passes_with_nothing_dropped() {
    let (addr, service) = start(Stop::Graceful {
        drain: Duration::from_millis(200),
    })
    .await;
    let summary = drill(addr)
        .run_in_process(move || async move {
            service.stop().await;
            ServiceExit::new(0).report_json(r#"{"stopped": "gracefully"}"#)
        })
        .await
        .unwrap();
    eprintln!("{summary}");
    summary.assert_passed();
    assert_eq!(summary.dropped, 0, "{summary}");
    assert!(summary.succeeded > 50, "{summary}");
    assert!(
        summary.refused_after_listener_closed > 0,
        "the clients ran until the listener closed: {summary}"
    );
    assert!(
        summary.signal_to_readiness_off_ms.unwrap() < 150.0,
        "{summary}"
    );
    assert!(
        summary.signal_to_listener_closed_ms.unwrap() >= 190.0,
        "served through the drain delay: {summary}"
    );
    assert_eq!(summary.exit_code, Some(0));
    assert_eq!(
        summary.service_report.as_ref().unwrap()["stopped"],
        "gracefully"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_drops_its_connections_fails_with_them_counted() {
    let (addr, service) = start(Stop::Abrupt).await;
    let summary = drill(addr)
        .run_in_process(move || service.stop())
        .await
        .unwrap();
    eprintln!("{summary}");
    assert!(!summary.passed(), "{summary}");
    assert!(
        summary.dropped > 0,
        "requests in flight at the stop are dropped: {summary}"
    );
    assert!(!summary.drop_errors.is_empty(), "{summary}");
    assert_eq!(
        summary.exit_code,
        Some(0),
        "the stop itself returned: only the drops fail it"
    );
    let panic = std::panic::catch_unwind(|| summary.assert_passed()).unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(
        message.starts_with("lifecycle-drill: FAILED") && message.contains("dropped"),
        "the panic shows the summary: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_zero_exit_code_fails_the_drill() {
    let (addr, service) = start(Stop::Graceful {
        drain: Duration::ZERO,
    })
    .await;
    let summary = drill(addr)
        .run_in_process(move || async move {
            service.stop().await;
            1
        })
        .await
        .unwrap();
    assert_eq!(summary.dropped, 0, "{summary}");
    assert_eq!(summary.exit_code, Some(1));
    assert!(!summary.passed(), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_never_stops_overruns_the_budget() {
    let (addr, service) = start(Stop::Graceful {
        drain: Duration::ZERO,
    })
    .await;
    let started = Instant::now();
    let summary = drill(addr)
        .signal_after(Duration::from_millis(100))
        .budget(Duration::from_millis(100))
        .run_in_process(std::future::pending::<()>)
        .await
        .unwrap();
    service.abort();
    assert!(summary.overran_budget, "{summary}");
    assert_eq!(summary.exit_code, None);
    assert_eq!(summary.signal_to_exit_ms, None);
    assert!(!summary.passed(), "{summary}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "gave up after the budget and its second of slack: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_never_becomes_ready_is_an_error_and_is_not_stopped() {
    // A port nobody listens on.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let stopped = Arc::new(AtomicBool::new(false));
    let flag = stopped.clone();
    let error = drill(addr)
        .ready_timeout(Duration::from_millis(300))
        .run_in_process(move || async move { flag.store(true, Ordering::Relaxed) })
        .await
        .unwrap_err();
    assert!(
        matches!(&error, DrillError::NotReady { addr: a, path, .. } if *a == addr && path == "/readyz"),
        "{error:?}"
    );
    assert!(!stopped.load(Ordering::Relaxed), "stop was called");
}

#[tokio::test]
async fn bad_configuration_is_an_error_not_a_panic() {
    let stop = || async {};
    let bad_url = Drill::new()
        .url("http://localhost:8080")
        .run_in_process(stop)
        .await
        .unwrap_err();
    assert!(
        matches!(&bad_url, DrillError::BadUrl { url } if url == "http://localhost:8080"),
        "{bad_url:?}"
    );
    // https needs the CA that signed the service's certificate.
    let no_ca = Drill::new()
        .url("https://127.0.0.1:8080")
        .run_in_process(stop)
        .await
        .unwrap_err();
    assert!(matches!(&no_ca, DrillError::NoCaCert { .. }), "{no_ca:?}");
    let bad_ca = Drill::new()
        .url("https://127.0.0.1:8080")
        .ca_cert("/nonexistent/ca.pem")
        .run_in_process(stop)
        .await
        .unwrap_err();
    assert!(matches!(&bad_ca, DrillError::BadTls { .. }), "{bad_ca:?}");
    let bad_path = Drill::new()
        .path("work")
        .run_in_process(stop)
        .await
        .unwrap_err();
    assert_eq!(
        bad_path.to_string(),
        r#"the path "work" is not a request path starting with '/'"#
    );
    let bad_sse = Drill::new()
        .sse_path("/a b")
        .run_in_process(stop)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &bad_sse,
            DrillError::BadPath {
                what: "SSE path",
                ..
            }
        ),
        "{bad_sse:?}"
    );
    let bad_body = Drill::new()
        .post_json("{\"ms\": ")
        .run_in_process(stop)
        .await
        .unwrap_err();
    assert!(
        matches!(&bad_body, DrillError::BadBody { .. }),
        "{bad_body:?}"
    );
}
