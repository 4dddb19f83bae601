//! `JobWorker` on `SqlJobQueue`: the job in hand finishes or is handed back, a dead worker's job
//! is taken up again, and across random shutdowns and a kill no job is lost.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{postgres_url, queue_name, server_available, start, Runs, POSTGRES};
use lifecycle_core::{Lifecycle, Outcome, Registration};
use lifecycle_db::{JobState, JobWorker, SqlJobQueue, SqlPool};
use rand::{Rng, SeedableRng};
use sqlx::Any;
use tokio::time::Instant;

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}?mode=rwc", dir.path().join("jobs.db").display())
}

const LEASE: Duration = Duration::from_millis(200);

/// A lifecycle with the pool and `workers` workers on `queue`.
fn lifecycle(
    url: &str,
    queue: &str,
    workers: usize,
    runs: &Runs,
    stop_timeout: Duration,
) -> (Lifecycle, SqlJobQueue) {
    sqlx::any::install_default_drivers();
    let db = SqlPool::<Any>::new(url).unwrap();
    let jobs = SqlJobQueue::new(db.pool().clone(), queue);
    let mut builder = Lifecycle::builder()
        .signals([])
        .register(Registration::new("db", db));
    for w in 0..workers {
        let worker = JobWorker::new(jobs.clone(), runs.sleeper())
            .lease(LEASE)
            .poll_interval(Duration::from_millis(10));
        builder = builder.register(
            Registration::new(format!("worker{w}"), worker)
                .depends_on("db")
                .stop_timeout(stop_timeout),
        );
    }
    (builder.build().unwrap(), jobs)
}

async fn wait_for_state(queue: &SqlJobQueue, id: i64, state: JobState) {
    let until = Instant::now() + Duration::from_secs(10);
    while queue.state(id).await.unwrap() != Some(state) {
        assert!(Instant::now() < until, "job {id} never reached {state:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_in_hand_finishes_when_the_stop_timeout_allows() {
    let dir = tempfile::tempdir().unwrap();
    let runs = Runs::default();
    let (lifecycle, queue) = lifecycle(
        &sqlite_url(&dir),
        "finish",
        1,
        &runs,
        Duration::from_secs(3),
    );
    let (handle, run) = start(lifecycle).await;
    let id = queue.enqueue("300").await.unwrap();
    wait_for_state(&queue, id, JobState::Running).await;
    handle.shutdown("deploy");
    let report = run.await.unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    let db = SqlPool::<Any>::new(&sqlite_url(&dir)).unwrap();
    let queue = SqlJobQueue::new(db.pool().clone(), "finish");
    assert_eq!(queue.state(id).await.unwrap(), Some(JobState::Done));
    assert_eq!(runs.get(id), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_longer_than_the_stop_timeout_is_handed_back_without_counting() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let runs = Runs::default();
    let (lifecycle, queue) = lifecycle(&url, "hand-back", 1, &runs, Duration::from_secs(1));
    let (handle, run) = start(lifecycle).await;
    let id = queue.enqueue("10000").await.unwrap();
    wait_for_state(&queue, id, JobState::Running).await;
    let began = Instant::now();
    handle.shutdown("deploy");
    let report = run.await.unwrap();
    assert!(
        began.elapsed() < Duration::from_millis(1100),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(
        report.component("worker0").unwrap().outcome,
        Outcome::Stopped,
        "{report}"
    );
    assert_eq!(report.exit_code(), 0);
    assert_eq!(runs.get(id), (1, 0));

    // Queued again, its attempt not counted: the next worker takes it as a first attempt.
    let db = SqlPool::<Any>::new(&url).unwrap();
    let queue = SqlJobQueue::new(db.pool().clone(), "hand-back");
    assert_eq!(queue.state(id).await.unwrap(), Some(JobState::Queued));
    let job = queue
        .claim("inspector", Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((job.id, job.attempts), (id, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_of_a_dead_worker_is_taken_up_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    sqlx::any::install_default_drivers();
    let db = SqlPool::<Any>::new(&url).unwrap();
    let queue = SqlJobQueue::new(db.pool().clone(), "dead");
    queue.create_table().await.unwrap();
    let id = queue.enqueue("10").await.unwrap();
    // A worker claims it with a short lease and dies.
    let claimed = queue
        .claim("dead-worker", Duration::from_millis(50))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, id);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let runs = Runs::default();
    let (lifecycle, queue) = lifecycle(&url, "dead", 1, &runs, Duration::from_secs(1));
    let (handle, run) = start(lifecycle).await;
    wait_for_state(&queue, id, JobState::Done).await;
    handle.shutdown("test over");
    assert_eq!(run.await.unwrap().exit_code(), 0);
    assert_eq!(runs.get(id), (1, 1));
    let job_attempts: i64 = sqlx::query_scalar("SELECT attempts FROM lifecycle_jobs WHERE id = $1")
        .bind(id)
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(job_attempts, 1, "the interrupted attempt is not counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_is_retried_then_marked_failed() {
    let dir = tempfile::tempdir().unwrap();
    sqlx::any::install_default_drivers();
    let db = SqlPool::<Any>::new(&sqlite_url(&dir)).unwrap();
    let queue = SqlJobQueue::new(db.pool().clone(), "failing");
    let tries = Arc::new(Mutex::new(0));
    let worker = {
        let tries = tries.clone();
        JobWorker::new(queue.clone(), move |_job| {
            *tries.lock().unwrap() += 1;
            async { Err::<(), _>("no such mailbox".into()) }
        })
        .poll_interval(Duration::from_millis(10))
    };
    let (handle, run) = start(
        Lifecycle::builder()
            .signals([])
            .register(Registration::new("db", db))
            .register(Registration::new("worker", worker).depends_on("db"))
            .build()
            .unwrap(),
    )
    .await;
    let id = queue.enqueue("x").await.unwrap();
    wait_for_state(&queue, id, JobState::Failed).await;
    handle.shutdown("test over");
    run.await.unwrap();
    assert_eq!(*tries.lock().unwrap(), 3);
}

/// Many jobs, random shutdowns (some cutting jobs off), one kill, then a run to the end: every
/// job is done, and jobs ran twice only as often as runs were interrupted.
fn no_job_is_lost(url: String, jobs: usize, seed: u64) {
    let queue_name = queue_name("no-loss");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let runs = Runs::default();
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };

    let ids: Vec<i64> = runtime().block_on(async {
        let (lifecycle, queue) = lifecycle(&url, &queue_name, 0, &runs, Duration::from_secs(1));
        let (handle, run) = start(lifecycle).await;
        queue.create_table().await.unwrap();
        let mut ids = Vec::new();
        for _ in 0..jobs {
            ids.push(
                queue
                    .enqueue(&rng.random_range(0..20u32).to_string())
                    .await
                    .unwrap(),
            );
        }
        handle.shutdown("enqueued");
        run.await.unwrap();
        ids
    });

    // Jobs whose run ended without being recorded (a kill, or a stop cut off before the
    // worker could record the end): their lease expires and the test takes them back itself,
    // counting them, before the next workers start.
    let mut lost_acks = 0;
    for cycle in 0..7 {
        let runtime = runtime();
        let (run_for, stop_timeout) = (rng.random_range(50..300), rng.random_range(10..100));
        let kill = cycle == 3;
        runtime.block_on(async {
            let (lifecycle, queue) = lifecycle(
                &url,
                &queue_name,
                4,
                &runs,
                Duration::from_millis(stop_timeout),
            );
            tokio::time::sleep(LEASE).await;
            queue.create_table().await.unwrap();
            lost_acks += queue.reclaim_expired().await.unwrap();
            let (handle, run) = start(lifecycle).await;
            tokio::time::sleep(Duration::from_millis(run_for)).await;
            if kill {
                runs.wait_in_progress().await;
            } else {
                handle.shutdown("deploy");
                let report = run.await.unwrap();
                // A stop too short even to hand the job back times out; the job's lease then
                // expires and it is taken up again. Nothing else may go wrong.
                let wrong = report
                    .components
                    .iter()
                    .any(|c| !matches!(c.outcome, Outcome::Stopped | Outcome::TimedOut));
                assert!(!wrong, "cycle {cycle}: {report}");
            }
        });
        // A kill: every task of the process ends where it is, leases and all.
        runtime.shutdown_background();
    }

    runtime().block_on(async {
        let (lifecycle, queue) = lifecycle(&url, &queue_name, 4, &runs, Duration::from_secs(1));
        tokio::time::sleep(LEASE).await;
        lost_acks += queue.reclaim_expired().await.unwrap();
        let (handle, run) = start(lifecycle).await;
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let (queued, running, done, failed) = queue.counts().await.unwrap();
            assert_eq!(failed, 0);
            if done == jobs as i64 {
                break;
            }
            assert!(
                Instant::now() < until,
                "stuck: {queued} queued, {running} running, {done} done"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        handle.shutdown("all done");
        run.await.unwrap();
    });

    let (mut duplicates, mut interrupted) = (0, lost_acks as u32);
    for id in &ids {
        let (began, finished) = runs.get(*id);
        assert!(finished >= 1, "job {id} never finished");
        duplicates += began - 1;
        interrupted += began - finished;
    }
    assert!(
        duplicates <= interrupted,
        "{duplicates} duplicate runs but only {interrupted} interrupted"
    );
    assert!(
        interrupted > 0,
        "the shutdowns and the kill interrupted no job: the test saw nothing"
    );
}

#[test]
fn no_job_is_lost_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    no_job_is_lost(sqlite_url(&dir), 1000, 1);
}

#[test]
fn no_job_is_lost_on_postgres() {
    let up = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(server_available("PostgreSQL", POSTGRES));
    if up {
        no_job_is_lost(postgres_url("lifecycle-jobs"), 1000, 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_takes_up_the_job_of_a_worker_that_died_after_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    sqlx::any::install_default_drivers();
    let db = SqlPool::<Any>::new(&url).unwrap();
    let other = SqlJobQueue::new(db.pool().clone(), "died-later");
    other.create_table().await.unwrap();
    let id = other.enqueue("10").await.unwrap();
    // Another worker holds it with a lease that outlives our worker's start, then dies.
    let claimed_at = Instant::now();
    assert!(other
        .claim("doomed", Duration::from_millis(300))
        .await
        .unwrap()
        .is_some());

    let runs = Runs::default();
    let (lifecycle, queue) = lifecycle(&url, "died-later", 1, &runs, Duration::from_secs(1));
    let (handle, run) = start(lifecycle).await;
    wait_for_state(&queue, id, JobState::Done).await;
    assert!(
        claimed_at.elapsed() >= Duration::from_millis(300),
        "taken only once the lease expired"
    );
    handle.shutdown("test over");
    run.await.unwrap();
    assert_eq!(runs.get(id), (1, 1));
}
