//! A connection leaked by the service's own code: the pool's stop reports it and the shutdown
//! goes on, and every session but the leaked one is closed by the stop.

use std::time::Duration;

use lifecycle_core::Outcome;
use lifecycle_tests::{held, servers_available, Load, StackConfig};

const BIN: &str = env!("CARGO_BIN_EXE_stack-service");

/// sqlx's `Pool::close` closes idle connections only once it holds every permit, that is once
/// every checked-out connection has come back; with one connection leaked it never does. The
/// stop gives up at its timeout (`db` failed, "timed out with 1 connections still checked out")
/// and, because `SqlPool` closes the idle connections itself first, only the leaked session is
/// left (before that fix: 5 or 6 after a load of 4 clients).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaked_connection_is_the_only_session_left_after_the_stops() {
    if !servers_available().await {
        return;
    }
    let config = StackConfig::new(BIN).args(&["--drain-delay", "100ms", "--leak-connection"]);
    let mut stack = config.start().await;
    // Several connections in the pool, one of them leaked.
    let load = Load::start(stack.addr(), "/work?ms=20", 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(held(&stack).await.pg_sessions > 1);

    stack.signal("TERM");
    load.until_refused(Duration::from_secs(10))
        .await
        .assert_none_lost();
    stack.wait_stopped(Duration::from_secs(10)).await;
    let left = held(&stack).await.pg_sessions;
    let status = stack.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(1), "{}", stack.log());
    let report = stack.report().expect("a report");
    let db = report.component("db").unwrap();
    assert_eq!(db.outcome, Outcome::Failed);
    assert!(db
        .error
        .as_deref()
        .is_some_and(|e| e.contains("timed out with 1 connections still checked out")));
    assert_eq!(left, 1, "sessions left once every component had stopped");
}
