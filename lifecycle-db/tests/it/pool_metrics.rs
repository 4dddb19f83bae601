//! A pool's metrics as an exporter sees them: connections in use sampled while it runs, and
//! those still in use at its stop turn (held by something that did not depend on the pool).
//! On SQLite, so it needs no server.

use std::time::Duration;

use lifecycle_core::testing::TestRun;
use lifecycle_core::{Lifecycle, Outcome, Registration};
use lifecycle_db::SqlPool;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use sqlx::Any;

fn gauge(snapshotter: &Snapshotter, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .find(|(key, _, _, _)| {
            key.key().name() == name
                && labels
                    .iter()
                    .all(|(k, v)| key.key().labels().any(|l| l.key() == *k && l.value() == *v))
        })
        .and_then(|(_, _, _, value)| match value {
            DebugValue::Gauge(g) => Some(g.into_inner()),
            _ => None,
        })
}

// On a current-thread runtime, so the recorder set for this thread sees all the test
// records and nothing of the other tests in the binary.
#[tokio::test]
async fn pool_metrics_show_connections_in_use_and_those_left_at_the_stop() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _recorder = metrics::set_default_local_recorder(&recorder);
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("pool.db").display());
    let db = SqlPool::<Any>::new(&url).unwrap();
    let pool = db.pool().clone();
    let run = TestRun::start(
        Lifecycle::builder()
            .signals([])
            .register(Registration::new("store", db)),
    )
    .unwrap();
    run.ready().await.unwrap();

    // A connection held by code that does not depend on the pool.
    let held = pool.acquire().await.unwrap();
    let in_use = [("component", "store"), ("state", "in_use")];
    let mut seen = None;
    for _ in 0..30 {
        seen = gauge(&snapshotter, "db_pool_connections", &in_use);
        if seen == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, Some(1.0), "sampled while running");

    run.request("deploy");
    let timeline = run.finish().await;
    let report = timeline.report();
    assert_eq!(
        report.component("store").unwrap().outcome,
        Outcome::Failed,
        "{report}"
    );
    assert_eq!(
        gauge(
            &snapshotter,
            "db_pool_connections_in_use_at_stop",
            &[("component", "store")]
        ),
        Some(1.0)
    );
    drop(held);
}
