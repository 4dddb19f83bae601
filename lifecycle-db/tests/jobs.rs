//! The `JobQueue` contract, one set of tests for every queue (`SqlJobQueue` on SQLite and
//! PostgreSQL, `RedisJobQueue`) against the machine's servers: the job in hand finishes or is
//! handed back uncounted, a dead worker's job is taken up again, a failing job ends failed, and
//! across random shutdowns and a kill no job is lost.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{postgres_url, queue_name, server_available, start, Runs, POSTGRES};
use lifecycle_core::{async_trait, Lifecycle, LifecycleHandle, Outcome, Registration, Report};
use lifecycle_db::{JobQueue, JobState, JobWorker, SqlJobQueue, SqlPool};
use rand::{Rng, SeedableRng};
use sqlx::Any;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Where a test's jobs live: a store component (a pool, a client) and a queue on it.
#[async_trait]
trait Backend: Send + Sync + 'static {
    type Queue: JobQueue + Clone;

    /// Whether the server is there; in CI a missing one fails the test.
    async fn available(&self) -> bool;

    /// The store's component and the queue `name` on it. Nothing connects before the start.
    fn open(&self, name: &str) -> (Registration, Self::Queue);

    async fn enqueue(queue: &Self::Queue, payload: &str) -> i64;

    async fn state(queue: &Self::Queue, id: i64) -> Option<JobState>;

    /// Removes what the queue `name` left on the server.
    async fn clean(&self, _name: &str) {}
}

struct Sqlite(tempfile::TempDir);

impl Sqlite {
    fn new() -> Self {
        Sqlite(tempfile::tempdir().unwrap())
    }
}

struct Postgres;

fn sql_open(url: &str, name: &str) -> (Registration, SqlJobQueue) {
    sqlx::any::install_default_drivers();
    let db = SqlPool::<Any>::new(url).unwrap();
    let queue = SqlJobQueue::new(db.pool().clone(), name);
    (Registration::new("store", db), queue)
}

#[async_trait]
impl Backend for Sqlite {
    type Queue = SqlJobQueue;

    async fn available(&self) -> bool {
        true
    }

    fn open(&self, name: &str) -> (Registration, SqlJobQueue) {
        let url = format!(
            "sqlite://{}?mode=rwc",
            self.0.path().join("jobs.db").display()
        );
        sql_open(&url, name)
    }

    async fn enqueue(queue: &SqlJobQueue, payload: &str) -> i64 {
        queue.enqueue(payload).await.unwrap()
    }

    async fn state(queue: &SqlJobQueue, id: i64) -> Option<JobState> {
        queue.state(id).await.unwrap()
    }
}

#[async_trait]
impl Backend for Postgres {
    type Queue = SqlJobQueue;

    async fn available(&self) -> bool {
        server_available("PostgreSQL", POSTGRES).await
    }

    fn open(&self, name: &str) -> (Registration, SqlJobQueue) {
        sql_open(&postgres_url("lifecycle-jobs"), name)
    }

    async fn enqueue(queue: &SqlJobQueue, payload: &str) -> i64 {
        queue.enqueue(payload).await.unwrap()
    }

    async fn state(queue: &SqlJobQueue, id: i64) -> Option<JobState> {
        queue.state(id).await.unwrap()
    }
}

#[cfg(feature = "redis")]
struct Redis;

#[cfg(feature = "redis")]
#[async_trait]
impl Backend for Redis {
    type Queue = lifecycle_db::RedisJobQueue;

    async fn available(&self) -> bool {
        server_available("Redis", common::REDIS).await
    }

    fn open(&self, name: &str) -> (Registration, Self::Queue) {
        let redis = lifecycle_db::RedisClient::new(&common::redis_url()).unwrap();
        let queue = lifecycle_db::RedisJobQueue::new(redis.clone(), name);
        (Registration::new("store", redis), queue)
    }

    async fn enqueue(queue: &Self::Queue, payload: &str) -> i64 {
        queue.enqueue(payload).await.unwrap()
    }

    async fn state(queue: &Self::Queue, id: i64) -> Option<JobState> {
        queue.state(id).await.unwrap()
    }

    async fn clean(&self, name: &str) {
        use redis::AsyncCommands;
        let mut admin = common::redis_admin().await;
        let keys: Vec<String> = admin.keys(format!("lifecycle:{name}:*")).await.unwrap();
        if !keys.is_empty() {
            let _: () = admin.del(keys).await.unwrap();
        }
    }
}

const LEASE: Duration = Duration::from_millis(300);

/// A lifecycle with the store and `workers` workers on the queue `name`, each running `handler`.
fn lifecycle<B: Backend, H, Fut>(
    backend: &B,
    name: &str,
    workers: usize,
    handler: H,
    stop_timeout: Duration,
) -> (Lifecycle, B::Queue)
where
    H: Fn(lifecycle_db::Job) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), lifecycle_core::BoxError>> + Send + 'static,
{
    let (store, queue) = backend.open(name);
    let mut builder = Lifecycle::builder().signals([]).register(store);
    for w in 0..workers {
        let worker = JobWorker::new(queue.clone(), handler.clone())
            .lease(LEASE)
            .poll_interval(Duration::from_millis(10));
        builder = builder.register(
            Registration::new(format!("worker{w}"), worker)
                .depends_on("store")
                .stop_timeout(stop_timeout),
        );
    }
    (builder.build().unwrap(), queue)
}

/// The store alone, started, for a test to look at or act on the queue `name` itself.
async fn store_only<B: Backend>(
    backend: &B,
    name: &str,
) -> (B::Queue, LifecycleHandle, JoinHandle<Report>) {
    let (store, queue) = backend.open(name);
    let (handle, run) = start(
        Lifecycle::builder()
            .signals([])
            .register(store)
            .build()
            .unwrap(),
    )
    .await;
    queue.prepare("test").await.unwrap();
    (queue, handle, run)
}

async fn wait_for_state<B: Backend>(queue: &B::Queue, id: i64, state: JobState) {
    let until = Instant::now() + Duration::from_secs(10);
    while B::state(queue, id).await != Some(state) {
        assert!(Instant::now() < until, "job {id} never reached {state:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn the_job_in_hand_finishes_when_the_stop_timeout_allows<B: Backend>(backend: B) {
    let name = queue_name("finish");
    let runs = Runs::default();
    let (lifecycle, queue) = lifecycle(&backend, &name, 1, runs.sleeper(), Duration::from_secs(3));
    let (handle, run) = start(lifecycle).await;
    let id = B::enqueue(&queue, "300").await;
    // In the handler, not only claimed: a claim that returns after the stop turn hands back.
    runs.wait_in_progress().await;
    handle.shutdown("deploy");
    let report = run.await.unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    let (queue, handle, run) = store_only(&backend, &name).await;
    assert_eq!(B::state(&queue, id).await, Some(JobState::Done));
    assert_eq!(runs.get(id), (1, 1));
    handle.shutdown("test over");
    run.await.unwrap();
    backend.clean(&name).await;
}

async fn a_job_longer_than_the_stop_timeout_is_handed_back_without_counting<B: Backend>(
    backend: B,
) {
    let name = queue_name("hand-back");
    let runs = Runs::default();
    let (lifecycle, queue) = lifecycle(&backend, &name, 1, runs.sleeper(), Duration::from_secs(1));
    let (handle, run) = start(lifecycle).await;
    let id = B::enqueue(&queue, "10000").await;
    runs.wait_in_progress().await;
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

    // Queued again, its attempt not counted: the next claim takes it as a first attempt.
    let (queue, handle, run) = store_only(&backend, &name).await;
    assert_eq!(B::state(&queue, id).await, Some(JobState::Queued));
    let job = queue
        .claim("inspector", Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((job.id, job.attempts), (id, 1));
    handle.shutdown("test over");
    run.await.unwrap();
    backend.clean(&name).await;
}

async fn the_job_of_a_dead_worker_is_taken_up_at_the_next_start<B: Backend>(backend: B) {
    let name = queue_name("dead");
    let (queue, handle, run) = store_only(&backend, &name).await;
    let id = B::enqueue(&queue, "10").await;
    // A worker claims it with a short lease and dies.
    let claimed = queue
        .claim("dead-worker", Duration::from_millis(50))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, id);
    handle.shutdown("claimed");
    run.await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let runs = Runs::default();
    let (lifecycle, queue) = lifecycle(&backend, &name, 1, runs.sleeper(), Duration::from_secs(1));
    let (handle, run) = start(lifecycle).await;
    wait_for_state::<B>(&queue, id, JobState::Done).await;
    handle.shutdown("test over");
    assert_eq!(run.await.unwrap().exit_code(), 0);
    assert_eq!(runs.get(id), (1, 1));
    assert_eq!(
        runs.attempts(id),
        1,
        "the interrupted attempt is not counted"
    );
    backend.clean(&name).await;
}

async fn an_idle_worker_takes_up_the_job_of_a_worker_that_died_after_it_started<B: Backend>(
    backend: B,
) {
    let name = queue_name("died-later");
    let (queue, handle, run) = store_only(&backend, &name).await;
    let id = B::enqueue(&queue, "10").await;
    // Another worker holds it with a lease that outlives our worker's start, then dies.
    let claimed_at = Instant::now();
    assert!(queue
        .claim("doomed", Duration::from_millis(300))
        .await
        .unwrap()
        .is_some());
    handle.shutdown("claimed");
    run.await.unwrap();

    let runs = Runs::default();
    let (lifecycle, queue) = lifecycle(&backend, &name, 1, runs.sleeper(), Duration::from_secs(1));
    let (handle, run) = start(lifecycle).await;
    wait_for_state::<B>(&queue, id, JobState::Done).await;
    assert!(
        claimed_at.elapsed() >= Duration::from_millis(300),
        "taken only once the lease expired"
    );
    handle.shutdown("test over");
    run.await.unwrap();
    assert_eq!(runs.get(id), (1, 1));
    backend.clean(&name).await;
}

async fn a_failing_job_is_retried_then_marked_failed<B: Backend>(backend: B) {
    let name = queue_name("failing");
    let tries = Arc::new(Mutex::new(0));
    let handler = {
        let tries = tries.clone();
        move |_job| {
            *tries.lock().unwrap() += 1;
            async { Err::<(), _>("no such mailbox".into()) }
        }
    };
    let (lifecycle, queue) = lifecycle(&backend, &name, 1, handler, Duration::from_secs(1));
    let (handle, run) = start(lifecycle).await;
    let id = B::enqueue(&queue, "x").await;
    wait_for_state::<B>(&queue, id, JobState::Failed).await;
    handle.shutdown("test over");
    run.await.unwrap();
    assert_eq!(*tries.lock().unwrap(), 3);
    backend.clean(&name).await;
}

/// Takes back, and counts, the jobs of the previous run's workers once their lease expired,
/// before new workers start (which would take them back uncounted).
async fn reclaim_before_start<B: Backend>(backend: &B, name: &str) -> u64 {
    tokio::time::sleep(LEASE).await;
    let (queue, handle, run) = store_only(backend, name).await;
    let reclaimed = queue.reclaim_expired().await.unwrap();
    handle.shutdown("reclaimed");
    run.await.unwrap();
    reclaimed
}

/// Many jobs, random shutdowns (some cutting jobs off), one kill, then a run to the end: every
/// job is done, and jobs ran twice only as often as runs were interrupted.
fn no_job_is_lost<B: Backend>(backend: B, seed: u64) {
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    if !runtime().block_on(backend.available()) {
        return;
    }
    let name = queue_name("no-loss");
    let jobs = 1000;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let runs = Runs::default();
    let ids: Vec<i64> = runtime().block_on(async {
        let (queue, handle, run) = store_only(&backend, &name).await;
        let mut ids = Vec::new();
        for _ in 0..jobs {
            ids.push(B::enqueue(&queue, &rng.random_range(0..20u32).to_string()).await);
        }
        handle.shutdown("enqueued");
        run.await.unwrap();
        ids
    });

    // Jobs whose run ended unrecorded (a kill, or a stop cut off before the worker could
    // record the end) are taken back by the test itself, and counted, once their lease expired.
    let mut lost_acks = 0;
    for cycle in 0..7 {
        let runtime = runtime();
        let (run_for, stop_timeout) = (rng.random_range(50..300), rng.random_range(10..100));
        let kill = cycle == 3;
        runtime.block_on(async {
            lost_acks += reclaim_before_start(&backend, &name).await;
            let (lifecycle, _) = lifecycle(
                &backend,
                &name,
                4,
                runs.sleeper(),
                Duration::from_millis(stop_timeout),
            );
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
        lost_acks += reclaim_before_start(&backend, &name).await;
        let (lifecycle, queue) =
            lifecycle(&backend, &name, 4, runs.sleeper(), Duration::from_secs(1));
        let (handle, run) = start(lifecycle).await;
        let until = Instant::now() + Duration::from_secs(60);
        for id in &ids {
            loop {
                let state = B::state(&queue, *id).await;
                if state == Some(JobState::Done) {
                    break;
                }
                assert!(Instant::now() < until, "job {id} is {state:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        handle.shutdown("all done");
        run.await.unwrap();
        backend.clean(&name).await;
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

/// The contract's tests for one backend, in a module named after it.
macro_rules! contract {
    ($module:ident, $backend:expr, $seed:expr) => {
        mod $module {
            use super::*;

            async fn backend() -> Option<impl Backend> {
                let backend = $backend;
                backend.available().await.then_some(backend)
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn the_job_in_hand_finishes_when_the_stop_timeout_allows() {
                if let Some(backend) = backend().await {
                    super::the_job_in_hand_finishes_when_the_stop_timeout_allows(backend).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_job_longer_than_the_stop_timeout_is_handed_back_without_counting() {
                if let Some(backend) = backend().await {
                    super::a_job_longer_than_the_stop_timeout_is_handed_back_without_counting(
                        backend,
                    )
                    .await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn the_job_of_a_dead_worker_is_taken_up_at_the_next_start() {
                if let Some(backend) = backend().await {
                    super::the_job_of_a_dead_worker_is_taken_up_at_the_next_start(backend).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_idle_worker_takes_up_the_job_of_a_worker_that_died_after_it_started() {
                if let Some(backend) = backend().await {
                    super::an_idle_worker_takes_up_the_job_of_a_worker_that_died_after_it_started(
                        backend,
                    )
                    .await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_failing_job_is_retried_then_marked_failed() {
                if let Some(backend) = backend().await {
                    super::a_failing_job_is_retried_then_marked_failed(backend).await;
                }
            }

            #[test]
            fn no_job_is_lost() {
                super::no_job_is_lost($backend, $seed);
            }
        }
    };
}

contract!(sqlite, Sqlite::new(), 1);
contract!(postgres, Postgres, 2);
#[cfg(feature = "redis")]
contract!(redis_queue, Redis, 3);
