//! A job worker's metrics as an exporter sees them, and its `JobStats`, checked against what
//! happened to each job: one done, one failed for good (dead), one that panicked (dead too),
//! one taken back from a dead worker and done, one cut off and handed back at the shutdown. On
//! SQLite, so it needs no server.

use std::time::Duration;

use lifecycle_core::testing::TestRun;
use lifecycle_core::{BoxError, Lifecycle, Registration};
use lifecycle_db::{Job, JobQueue, JobState, JobWorker, SqlJobQueue, SqlPool};
use metrics::{SharedString, Unit};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::{CompositeKey, MetricKind};
use sqlx::Any;

type Snapshot = Vec<(CompositeKey, Option<Unit>, Option<SharedString>, DebugValue)>;

/// Sums the counters (or counts the histogram samples) named `name` with these labels.
fn value(snapshot: &Snapshot, kind: MetricKind, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut total = 0.0;
    for (key, _, _, value) in snapshot {
        let matches = key.kind() == kind
            && key.key().name() == name
            && labels
                .iter()
                .all(|(k, v)| key.key().labels().any(|l| l.key() == *k && l.value() == *v));
        if matches {
            total += match value {
                DebugValue::Counter(n) => *n as f64,
                DebugValue::Histogram(samples) => samples.len() as f64,
                DebugValue::Gauge(g) => g.into_inner(),
            };
        }
    }
    total
}

/// `ms` = 1 fails, 2 panics; otherwise sleeps `ms` milliseconds.
async fn handler(job: Job<u64>) -> Result<(), BoxError> {
    if job.payload == 1 {
        return Err("the job fails".into());
    }
    if job.payload == 2 {
        panic!("the job panics");
    }
    tokio::time::sleep(Duration::from_millis(job.payload)).await;
    Ok(())
}

// On a current-thread runtime, so the recorder set for this thread sees all the test
// records and nothing of the other tests in the binary.
#[tokio::test]
async fn job_metrics_say_what_happened_to_each_job() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _recorder = metrics::set_default_local_recorder(&recorder);
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("jobs.db").display());

    // Before the worker: four jobs, one of them claimed by a worker that then died.
    let db = SqlPool::<Any>::new(&url).unwrap();
    let pool = db.pool().clone();
    let queue = SqlJobQueue::new(pool.clone(), "metrics");
    let setup = TestRun::start(
        Lifecycle::builder()
            .signals([])
            .register(Registration::new("store", db)),
    )
    .unwrap();
    setup.ready().await.unwrap();
    queue.prepare("setup").await.unwrap();
    let dead = queue.enqueue(&0u64).await.unwrap();
    assert_eq!(
        queue
            .claim("dead", Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap()
            .id,
        dead
    );
    sqlx::query("UPDATE lifecycle_jobs SET lease_until = 0 WHERE id = $1")
        .bind(dead)
        .execute(&pool)
        .await
        .unwrap();
    let done = queue.enqueue(&0u64).await.unwrap();
    let failed = queue.enqueue(&1u64).await.unwrap();
    let panicked = queue.enqueue(&2u64).await.unwrap();
    let long = queue.enqueue(&60_000u64).await.unwrap();
    setup.request("set up");
    setup.finish().await.assert_exit_code(0);

    let db = SqlPool::<Any>::new(&url).unwrap();
    let queue = SqlJobQueue::new(db.pool().clone(), "metrics");
    let worker = JobWorker::new(queue.clone(), handler)
        .max_attempts(1)
        .concurrency(5)
        .poll_interval(Duration::from_millis(10));
    let run = TestRun::start(
        Lifecycle::builder()
            .signals([])
            .register(Registration::new("store", db))
            .register(
                Registration::new("mailer", worker.clone())
                    .depends_on("store")
                    .stop_timeout(Duration::from_secs(1)),
            ),
    )
    .unwrap();
    run.ready().await.unwrap();
    // Until three have ended and the long one is in hand.
    let states = || async {
        let mut states = Vec::new();
        for id in [dead, done, failed, panicked, long] {
            states.push(queue.state(id).await.unwrap());
        }
        states
    };
    let expected = [
        Some(JobState::Done),
        Some(JobState::Done),
        Some(JobState::Failed),
        Some(JobState::Failed),
        Some(JobState::Running),
    ];
    for _ in 0..500 {
        if states().await == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(states().await, expected);
    run.request("deploy");
    run.finish().await.assert_exit_code(0);
    let snapshot = snapshotter.snapshot().into_vec();
    let queue = SqlJobQueue::new(sqlx::AnyPool::connect(&url).await.unwrap(), "metrics");
    let mailer = [("component", "mailer")];

    for (id, state) in [
        (dead, JobState::Done),
        (done, JobState::Done),
        (failed, JobState::Failed),
        (panicked, JobState::Failed),
        (long, JobState::Queued),
    ] {
        assert_eq!(queue.state(id).await.unwrap(), Some(state), "job {id}");
    }
    let counter =
        |name: &str, labels: &[(&str, &str)]| value(&snapshot, MetricKind::Counter, name, labels);
    assert_eq!(counter("jobs_claimed_total", &mailer), 5.0);
    assert_eq!(counter("jobs_reclaimed_total", &mailer), 1.0);
    let ended = |outcome| {
        counter(
            "jobs_ended_total",
            &[("component", "mailer"), ("outcome", outcome)],
        )
    };
    // The failing and the panicking job have one attempt (`max_attempts(1)`): their failure is
    // their last, so they are dead, not failed (to be tried again); the long one was cut off at
    // the stop, none was handed back without running.
    assert_eq!(
        (
            ended("done"),
            ended("failed"),
            ended("dead"),
            ended("cut"),
            ended("handed_back")
        ),
        (2.0, 0.0, 2.0, 1.0, 0.0)
    );
    assert_eq!(counter("jobs_late_total", &mailer), 0.0);
    let run_times = |outcome| {
        value(
            &snapshot,
            MetricKind::Histogram,
            "job_run_duration_seconds",
            &[("component", "mailer"), ("outcome", outcome)],
        )
    };
    assert_eq!(
        (run_times("done"), run_times("dead"), run_times("cut")),
        (2.0, 2.0, 1.0)
    );

    // The stats say what the metrics say, under the same names as a consumer's, plus the
    // panic (counted in `dead` too).
    let stats = worker.stats();
    assert_eq!(
        (
            stats.claimed,
            stats.done,
            stats.failed,
            stats.dead,
            stats.panicked
        ),
        (5, 2, 0, 2, 1),
        "{stats:?}"
    );
    assert_eq!(
        (
            stats.handed_back,
            stats.cut,
            stats.settle_failed,
            stats.late,
            stats.reclaimed
        ),
        (0, 1, 0, 0, 1),
        "{stats:?}"
    );
}
