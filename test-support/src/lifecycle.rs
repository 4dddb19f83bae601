//! A lifecycle run in a task through the testing kit, and conditions waited for.

use std::time::Duration;

use lifecycle_core::testing::TestRun;
use lifecycle_core::{Lifecycle, LifecycleHandle, Registration, Report};
use tokio::task::JoinHandle;

/// Runs the lifecycle in a task (no signal handlers, no hard exit); returns its handle and the
/// task once it is ready.
///
/// # Panics
///
/// If the lifecycle does not get ready.
pub async fn start(lifecycle: Lifecycle) -> (LifecycleHandle, JoinHandle<Report>) {
    let run = TestRun::run(lifecycle);
    run.ready().await.expect("the lifecycle gets ready");
    (run.handle().clone(), run.into_task())
}

/// Runs a lifecycle of the one component `registration`, as [`start`] does.
///
/// # Panics
///
/// If the lifecycle does not build or does not get ready.
pub async fn start_alone(registration: Registration) -> (LifecycleHandle, JoinHandle<Report>) {
    let lifecycle = Lifecycle::builder()
        .signals([])
        .register(registration)
        .build()
        .expect("a lifecycle of one component builds");
    start(lifecycle).await
}

/// Waits up to 10 s for `condition`, checking it every 5 ms.
///
/// # Panics
///
/// If `condition` is still false after 10 s, naming `what`.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < until,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
