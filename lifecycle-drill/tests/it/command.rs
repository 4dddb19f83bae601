//! The drill as a library call against a service command, signalled for real: a graceful
//! service passes; one without graceful shutdown (`drill-naive-service`) fails, its dropped
//! requests counted; a command that cannot start, exits before it is ready, or never becomes
//! ready is an error.
//!
//! The graceful service is this test binary run again with [`SERVE_AT`] set: the test
//! [`graceful_service_process`] then serves until SIGTERM instead of returning at once.

#![cfg(unix)]

use crate::support;
use lifecycle_test_support::free_addr;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lifecycle_drill::{Drill, DrillError};
use support::{Service, Stop};

const NAIVE: &str = env!("CARGO_BIN_EXE_drill-naive-service");
/// Where the graceful service process listens; unset in a normal test run.
const SERVE_AT: &str = "LIFECYCLE_DRILL_TEST_SERVE_AT";
/// When set, it stops on its own this many milliseconds after it started, without a signal.
const EXIT_AFTER_MS: &str = "LIFECYCLE_DRILL_TEST_EXIT_AFTER_MS";
/// Where it writes its report once stopped.
const REPORT_TO: &str = "LIFECYCLE_DRILL_TEST_REPORT_TO";

/// Not a test of its own: the body of the graceful service process the tests below start.
/// It serves at `SERVE_AT` until SIGTERM (or for `EXIT_AFTER_MS`), stops gracefully, writes a
/// report and exits 0.
#[test]
fn graceful_service_process() {
    let Ok(addr) = std::env::var(SERVE_AT) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut sigterm =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
        let service = Service::start(
            listener,
            Stop::Graceful {
                drain: Duration::from_millis(200),
            },
        );
        match std::env::var(EXIT_AFTER_MS) {
            Ok(ms) => tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await,
            Err(_) => {
                sigterm.recv().await;
            }
        }
        service.stop().await;
    });
    if let Ok(path) = std::env::var(REPORT_TO) {
        std::fs::write(path, r#"{"stopped": "gracefully"}"#).unwrap();
    }
}

fn graceful_service(addr: &str, report: &Path) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "command::graceful_service_process",
            "--exact",
            "--test-threads=1",
        ])
        .env(SERVE_AT, addr)
        .env(REPORT_TO, report);
    command
}

/// A short drill: a few clients, HTTP/2 too, no SSE (neither service has it).
fn drill(addr: &str) -> Drill {
    Drill::new()
        .url(format!("http://{addr}"))
        .path("/work")
        .clients(4)
        .h2_streams(2)
        .no_sse()
        .signal_after(Duration::from_millis(500))
        .budget(Duration::from_secs(3))
        .ready_timeout(Duration::from_secs(10))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_command_passes_and_its_report_is_included() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let addr = free_addr().to_string();
    let summary = drill(&addr)
        .report_file(&report)
        .run_command(graceful_service(&addr, &report))
        .await
        .unwrap();
    eprintln!("{summary}");
    summary.assert_passed();
    assert!(summary.succeeded > 50, "{summary}");
    assert!(
        summary.refused_after_listener_closed > 0,
        "the clients ran until the listener closed: {summary}"
    );
    assert!(
        summary.signal_to_listener_closed_ms.unwrap() >= 190.0,
        "served through the drain delay: {summary}"
    );
    assert_eq!(summary.exit_code, Some(0));
    assert_eq!(
        summary.service_report.as_ref().unwrap()["stopped"],
        "gracefully",
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_without_graceful_shutdown_fails_with_its_drops_counted() {
    let addr = free_addr().to_string();
    let mut naive = Command::new(NAIVE);
    naive.arg(&addr);
    let summary = drill(&addr).run_command(naive).await.unwrap();
    eprintln!("{summary}");
    assert!(!summary.passed(), "{summary}");
    assert!(
        summary.dropped > 0,
        "requests in flight at the kill are dropped: {summary}"
    );
    assert_eq!(
        summary.exit_code, None,
        "killed by the signal, no exit code"
    );
    assert!(!summary.overran_budget);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_exits_on_its_own_before_the_signal_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr().to_string();
    let mut early = graceful_service(&addr, &dir.path().join("report.json"));
    early.env(EXIT_AFTER_MS, "100");
    let error = drill(&addr).run_command(early).await.unwrap_err();
    assert!(
        matches!(&error, DrillError::ExitedBeforeSignal { status, .. } if status.success()),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_command_that_cannot_start_is_an_error() {
    let missing = Command::new("/nonexistent/lifecycle-drill-test-service");
    let error = drill(&free_addr().to_string())
        .run_command(missing)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, DrillError::Start { program, .. } if program == "/nonexistent/lifecycle-drill-test-service"),
        "{error:?}"
    );
    assert!(
        std::error::Error::source(&error).is_some(),
        "keeps the OS error"
    );
}

#[tokio::test]
async fn a_command_that_exits_before_it_is_ready_is_an_error_at_once() {
    let mut broken = Command::new("sh");
    broken.args(["-c", "exit 3"]);
    let started = Instant::now();
    let error = drill(&free_addr().to_string())
        .run_command(broken)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, DrillError::ExitedBeforeReady { program, status } if program == "sh" && status.code() == Some(3)),
        "{error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "did not wait for the ready timeout"
    );
}

#[tokio::test]
async fn a_command_that_never_becomes_ready_is_an_error_and_is_killed() {
    let addr = free_addr().to_string();
    // Runs, but never listens.
    let mut silent = Command::new("sleep");
    silent.arg("30");
    let started = Instant::now();
    let error = drill(&addr)
        .ready_timeout(Duration::from_millis(300))
        .run_command(silent)
        .await
        .unwrap_err();
    assert!(matches!(error, DrillError::NotReady { .. }), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}
