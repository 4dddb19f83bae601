//! The `JobQueue` contract, one set of tests for every queue (`SqlJobQueue` on SQLite and
//! PostgreSQL, `RedisJobQueue`) against the machine's servers: the job in hand finishes or is
//! handed back uncounted, a dead worker's job is taken up again, a failing job ends failed, and
//! across random shutdowns and a kill no job is lost.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{mariadb_url, postgres_url, server_available, start, unique, Runs, MARIADB, POSTGRES};
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

    /// Adds a job of `ms` milliseconds (the payload the test handlers take).
    async fn enqueue(queue: &Self::Queue, ms: u64) -> i64;

    /// Adds a job with this payload.
    async fn enqueue_json<T: serde::Serialize + Sync + ?Sized>(
        queue: &Self::Queue,
        payload: &T,
    ) -> i64;

    async fn state(queue: &Self::Queue, id: i64) -> Option<JobState>;

    /// Why job `id` failed, as recorded.
    async fn error(queue: &Self::Queue, id: i64) -> Option<String>;

    /// Ends the lease on job `id` of the queue `name` at once, as if its worker had been dead
    /// for a lease.
    async fn expire_lease(&self, name: &str, id: i64);

    /// Removes what the queue `name` left on the server.
    async fn clean(&self, _name: &str) {}
}

/// Runs one statement on the database at `url`, beside the code under test.
async fn sql_execute(url: &str, statement: &'static str, id: i64) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    sqlx::query(statement)
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

const EXPIRE_SQL: &str = "UPDATE lifecycle_jobs SET lease_until = 0 WHERE id = $1";
const EXPIRE_SQL_MYSQL: &str = "UPDATE lifecycle_jobs SET lease_until = 0 WHERE id = ?";

/// A SQL database the queue runs on, each through the pool type a user of it would have:
/// sqlx's `Any` for SQLite (a file of the test's own), the typed `PgPool` and `MySqlPool` for
/// the servers.
enum Sql {
    Sqlite(tempfile::TempDir),
    Postgres,
    MariaDb,
}

impl Sql {
    fn sqlite() -> Self {
        Sql::Sqlite(tempfile::tempdir().unwrap())
    }

    fn sqlite_url(dir: &tempfile::TempDir) -> String {
        format!("sqlite://{}?mode=rwc", dir.path().join("jobs.db").display())
    }
}

/// A pool component of sqlx's database `DB` for `url`, and the queue `name` on its pool.
fn sql_open<DB: sqlx::Database>(url: &str, name: &str) -> (Registration, SqlJobQueue)
where
    sqlx::Pool<DB>: Into<lifecycle_db::SqlQueuePool>,
{
    sqlx::any::install_default_drivers();
    let db = SqlPool::<DB>::new(url).unwrap();
    let queue = SqlJobQueue::new(db.pool().clone(), name);
    (Registration::new("store", db), queue)
}

#[async_trait]
impl Backend for Sql {
    type Queue = SqlJobQueue;

    async fn available(&self) -> bool {
        match self {
            Sql::Sqlite(_) => true,
            Sql::Postgres => server_available("PostgreSQL", POSTGRES),
            Sql::MariaDb => server_available("MariaDB", MARIADB),
        }
    }

    fn open(&self, name: &str) -> (Registration, SqlJobQueue) {
        match self {
            Sql::Sqlite(dir) => sql_open::<Any>(&Sql::sqlite_url(dir), name),
            Sql::Postgres => sql_open::<sqlx::Postgres>(&postgres_url("lifecycle-jobs"), name),
            Sql::MariaDb => sql_open::<sqlx::MySql>(&mariadb_url("test"), name),
        }
    }

    async fn expire_lease(&self, _name: &str, id: i64) {
        match self {
            Sql::Sqlite(dir) => sql_execute(&Sql::sqlite_url(dir), EXPIRE_SQL, id).await,
            Sql::Postgres => {
                sql_execute(&postgres_url("lifecycle-jobs-test"), EXPIRE_SQL, id).await;
            }
            Sql::MariaDb => sql_execute(&mariadb_url("test"), EXPIRE_SQL_MYSQL, id).await,
        }
    }

    async fn enqueue(queue: &SqlJobQueue, ms: u64) -> i64 {
        queue.enqueue(&ms).await.unwrap()
    }

    async fn enqueue_json<T: serde::Serialize + Sync + ?Sized>(
        queue: &SqlJobQueue,
        payload: &T,
    ) -> i64 {
        queue.enqueue(payload).await.unwrap()
    }

    async fn state(queue: &SqlJobQueue, id: i64) -> Option<JobState> {
        queue.state(id).await.unwrap()
    }

    async fn error(queue: &SqlJobQueue, id: i64) -> Option<String> {
        queue.error(id).await.unwrap()
    }
}

#[cfg(feature = "redis")]
struct Redis;

#[cfg(feature = "redis")]
#[async_trait]
impl Backend for Redis {
    type Queue = lifecycle_db::RedisJobQueue;

    async fn available(&self) -> bool {
        server_available("Redis", common::REDIS)
    }

    fn open(&self, name: &str) -> (Registration, Self::Queue) {
        let redis = lifecycle_db::RedisClient::new(&common::redis_url()).unwrap();
        let queue = lifecycle_db::RedisJobQueue::new(redis.clone(), name);
        (Registration::new("store", redis), queue)
    }

    async fn enqueue(queue: &Self::Queue, ms: u64) -> i64 {
        queue.enqueue(&ms).await.unwrap()
    }

    async fn enqueue_json<T: serde::Serialize + Sync + ?Sized>(
        queue: &Self::Queue,
        payload: &T,
    ) -> i64 {
        queue.enqueue(payload).await.unwrap()
    }

    async fn state(queue: &Self::Queue, id: i64) -> Option<JobState> {
        queue.state(id).await.unwrap()
    }

    async fn error(queue: &Self::Queue, id: i64) -> Option<String> {
        queue.error(id).await.unwrap()
    }

    async fn expire_lease(&self, name: &str, id: i64) {
        use redis::AsyncCommands;
        let mut admin = common::redis_admin().await;
        let lists: Vec<String> = admin
            .keys(format!("lifecycle:{name}:processing:*"))
            .await
            .unwrap();
        for list in lists {
            let ids: Vec<i64> = admin.lrange(&list, 0, -1).await.unwrap();
            if ids.contains(&id) {
                let heartbeat = list.replace(":processing:", ":heartbeat:");
                let _: () = admin.del(heartbeat).await.unwrap();
                return;
            }
        }
        panic!("job {id} is in no processing list");
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

/// Long enough that a live worker on a loaded machine (2 cores, every test at once) renews in time.
const LEASE: Duration = Duration::from_secs(1);

/// A lifecycle with the store and `workers` workers on the queue `name`, each running `handler`.
fn lifecycle<B: Backend, H, Fut>(
    backend: &B,
    name: &str,
    workers: usize,
    handler: H,
    stop_timeout: Duration,
) -> (Lifecycle, B::Queue)
where
    H: Fn(lifecycle_db::Job<u64>) -> Fut + Clone + Send + Sync + 'static,
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
    let name = unique("finish");
    let runs = Runs::default();
    let (lifecycle, queue) = lifecycle(&backend, &name, 1, runs.sleeper(), Duration::from_secs(3));
    let (handle, run) = start(lifecycle).await;
    let id = B::enqueue(&queue, 300).await;
    // In the handler, not only claimed: a claim that returns after the stop turn hands back.
    runs.wait_in_progress().await;
    handle.shutdown("deploy");
    let report = run.await.unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    let (queue, handle, run) = store_only(&backend, &name).await;
    assert_eq!(B::state(&queue, id).await, Some(JobState::Done));
    assert_eq!(runs.get(id), (1, 1));
    handle.shutdown("test over");
    let report = run.await.unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    backend.clean(&name).await;
}

async fn a_job_longer_than_the_stop_timeout_is_handed_back_without_counting<B: Backend>(
    backend: B,
) {
    let name = unique("hand-back");
    let runs = Runs::default();
    let (lifecycle, queue) = lifecycle(&backend, &name, 1, runs.sleeper(), Duration::from_secs(1));
    let (handle, run) = start(lifecycle).await;
    let id = B::enqueue(&queue, 10000).await;
    runs.wait_in_progress().await;
    // What the worker holds, named by the job's id and its delivery.
    let held = handle.held_by();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].0, "worker0");
    assert!(
        held[0].1[0].starts_with(&format!("job {id}, delivery 1, running ")),
        "{held:?}"
    );
    let began = Instant::now();
    handle.shutdown("deploy");
    let report = run.await.unwrap();
    // The stop gave up on it at its deadline: the report says so, though the stop ended well.
    let worker = report.component("worker0").unwrap();
    assert_eq!(worker.held_by.len(), 1, "{report}");
    assert!(
        worker.held_by[0].starts_with(&format!("job {id}, delivery 1, running ")),
        "{report}"
    );
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
    let report = run.await.unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    backend.clean(&name).await;
}

async fn the_job_of_a_dead_worker_is_taken_up_at_the_next_start<B: Backend>(backend: B) {
    let name = unique("dead");
    let (queue, handle, run) = store_only(&backend, &name).await;
    let id = B::enqueue(&queue, 10).await;
    // A worker claims it with a short lease and dies.
    let claimed = queue
        .claim("dead-worker", Duration::from_millis(50))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, id);
    handle.shutdown("claimed");
    let report = run.await.unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
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
    let name = unique("died-later");
    let (queue, handle, run) = store_only(&backend, &name).await;
    let id = B::enqueue(&queue, 10).await;
    // Another worker holds it with a lease that outlives our worker's start, then dies.
    let claimed_at = Instant::now();
    assert!(queue
        .claim("doomed", Duration::from_millis(300))
        .await
        .unwrap()
        .is_some());
    handle.shutdown("claimed");
    let report = run.await.unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");

    let runs = Runs::default();
    let (lifecycle, queue) = lifecycle(&backend, &name, 1, runs.sleeper(), Duration::from_secs(1));
    let (handle, run) = start(lifecycle).await;
    wait_for_state::<B>(&queue, id, JobState::Done).await;
    assert!(
        claimed_at.elapsed() >= Duration::from_millis(300),
        "taken only once the lease expired"
    );
    handle.shutdown("test over");
    let report = run.await.unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(runs.get(id), (1, 1));
    backend.clean(&name).await;
}

async fn a_failing_job_is_retried_then_marked_failed<B: Backend>(backend: B) {
    let name = unique("failing");
    let tries = Arc::new(Mutex::new(0));
    let handler = {
        let tries = tries.clone();
        move |_job: lifecycle_db::Job<u64>| {
            *tries.lock().unwrap() += 1;
            async { Err::<(), _>("no such mailbox".into()) }
        }
    };
    let (lifecycle, queue) = lifecycle(&backend, &name, 1, handler, Duration::from_secs(1));
    let (handle, run) = start(lifecycle).await;
    let id = B::enqueue(&queue, 0).await;
    wait_for_state::<B>(&queue, id, JobState::Failed).await;
    handle.shutdown("test over");
    let report = run.await.unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(*tries.lock().unwrap(), 3);
    backend.clean(&name).await;
}

/// A job whose work panics is a failed attempt like an error: retried, then failed for good
/// with the panic's message, and the worker stays up (the component never fails) and does the
/// 100 other jobs.
async fn a_panicking_job_is_a_failed_attempt_and_the_worker_stays_up<B: Backend>(backend: B) {
    let name = unique("panicking");
    let runs = Runs::default();
    let handler = {
        let runs = runs.clone();
        move |job: lifecycle_db::Job<u64>| {
            runs.begin(&job);
            let runs = runs.clone();
            // In the handler's call, before its future exists.
            assert_ne!(job.payload, 2, "job {} always panics at once", job.id);
            async move {
                if job.payload == 1 {
                    panic!("job {} always panics", job.id);
                }
                runs.finish(job.id);
                Ok(())
            }
        }
    };
    let (lifecycle, queue) = lifecycle(&backend, &name, 1, handler, Duration::from_secs(1));
    let (handle, run) = start(lifecycle).await;
    let poison = B::enqueue(&queue, 1).await;
    let at_once = B::enqueue(&queue, 2).await;
    let mut good = Vec::new();
    for _ in 0..100 {
        good.push(B::enqueue(&queue, 0).await);
    }
    wait_for_state::<B>(&queue, poison, JobState::Failed).await;
    wait_for_state::<B>(&queue, at_once, JobState::Failed).await;
    for id in &good {
        wait_for_state::<B>(&queue, *id, JobState::Done).await;
    }
    assert!(handle.is_ready().await, "the worker stays up");
    let error = B::error(&queue, poison).await.unwrap_or_default();
    let error_at_once = B::error(&queue, at_once).await.unwrap_or_default();
    handle.shutdown("test over");
    let report = run.await.unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(
        report.component("worker0").unwrap().outcome,
        Outcome::Stopped
    );
    assert_eq!(runs.get(poison), (3, 0), "3 attempts, each a panic");
    assert_eq!(runs.get(at_once), (3, 0), "3 attempts, each a panic");
    assert!(
        error_at_once.contains(&format!("job {at_once} always panics at once")),
        "{error_at_once}"
    );
    assert!(
        error.contains(&format!("job {poison} always panics")),
        "{error}"
    );
    for id in good {
        assert_eq!(runs.get(id), (1, 1));
    }
    backend.clean(&name).await;
}

/// A job still running at its maximum run time is cut off and counted as a failed attempt:
/// retried, then failed for good, saying why; its lease does not keep it running for ever.
async fn a_job_past_its_max_run_time_is_cut_off_as_a_failed_attempt<B: Backend>(backend: B) {
    let name = unique("max-run-time");
    let runs = Runs::default();
    let (store, queue) = backend.open(&name);
    let worker = JobWorker::new(queue.clone(), runs.sleeper())
        .lease(LEASE)
        .poll_interval(Duration::from_millis(10))
        .max_run_time(Duration::from_millis(100));
    let lifecycle = Lifecycle::builder()
        .signals([])
        .register(store)
        .register(Registration::new("worker0", worker).depends_on("store"))
        .build()
        .unwrap();
    let (handle, run) = start(lifecycle).await;
    let slow = B::enqueue(&queue, 600_000).await;
    let quick = B::enqueue(&queue, 0).await;
    wait_for_state::<B>(&queue, slow, JobState::Failed).await;
    wait_for_state::<B>(&queue, quick, JobState::Done).await;
    let error = B::error(&queue, slow).await.unwrap_or_default();
    handle.shutdown("test over");
    let report = run.await.unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(runs.get(slow), (3, 0), "3 attempts, each cut off");
    assert!(error.contains("max run time"), "{error}");
    backend.clean(&name).await;
}

/// Durations that cannot work are refused when the worker starts, with an error naming the
/// setting, instead of a panic in a running worker.
async fn invalid_durations_are_refused_at_the_start<B: Backend>(backend: B) {
    for (setting, lease, max_run_time, max_attempts) in [
        ("lease", Duration::ZERO, None, 3),
        ("max_run_time", LEASE, Some(Duration::ZERO), 3),
        ("max_attempts", LEASE, None, 0),
    ] {
        let name = unique("invalid");
        let (store, queue) = backend.open(&name);
        let mut worker = JobWorker::new(queue, Runs::default().sleeper())
            .lease(lease)
            .max_attempts(max_attempts);
        if let Some(max) = max_run_time {
            worker = worker.max_run_time(max);
        }
        let lifecycle = Lifecycle::builder()
            .signals([])
            .register(store)
            .register(Registration::new("worker0", worker).depends_on("store"))
            .build()
            .unwrap();
        let report = lifecycle.run().await;
        let line = report.component("worker0").unwrap();
        assert_eq!(line.outcome, Outcome::Failed, "{report}");
        let error = line.error.as_deref().unwrap_or_default();
        assert!(error.contains(setting), "{error}");
        backend.clean(&name).await;
    }
}

/// Takes back, and counts, the jobs of the previous run's workers once their lease expired,
/// before new workers start (which would take them back uncounted).
async fn reclaim_before_start<B: Backend>(backend: &B, name: &str) -> u64 {
    tokio::time::sleep(LEASE).await;
    let (queue, handle, run) = store_only(backend, name).await;
    let reclaimed = queue.reclaim_expired().await.unwrap();
    handle.shutdown("reclaimed");
    let report = run.await.unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
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
    let name = unique("no-loss");
    let jobs = 1000;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let runs = Runs::default();
    let ids: Vec<i64> = runtime().block_on(async {
        let (queue, handle, run) = store_only(&backend, &name).await;
        let mut ids = Vec::new();
        for _ in 0..jobs {
            ids.push(B::enqueue(&queue, rng.random_range(0..20)).await);
        }
        handle.shutdown("enqueued");
        let report = run.await.unwrap();
        assert_eq!(report.exit_code(), 0, "{report}");
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
        let report = run.await.unwrap();
        assert_eq!(report.exit_code(), 0, "{report}");
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

/// A job whose lease expired while its handler ran, and which another worker took: when the
/// handler ends, its end is not recorded (the job is the other worker's), and the worker says
/// so, in its log and its `describe` (`/readyz?verbose`), never silently.
async fn a_late_end_is_not_recorded_and_is_counted<B: Backend>(backend: B) {
    let name = unique("late");
    let runs = Runs::default();
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let handler = {
        let (runs, release) = (runs.clone(), release.clone());
        move |job: lifecycle_db::Job<u64>| {
            let (runs, release) = (runs.clone(), release.clone());
            async move {
                runs.begin(&job);
                let _permit = release.acquire().await.unwrap();
                runs.finish(job.id);
                Ok(())
            }
        }
    };
    let (store, queue) = backend.open(&name);
    let worker = JobWorker::new(queue.clone(), handler)
        .lease(Duration::from_secs(30))
        .poll_interval(Duration::from_millis(10));
    let (handle, run) = start(
        Lifecycle::builder()
            .signals([])
            .register(store)
            .register(Registration::new("worker", worker.clone()).depends_on("store"))
            .build()
            .unwrap(),
    )
    .await;
    let id = B::enqueue(&queue, 0).await;
    runs.wait_in_progress().await;
    backend.expire_lease(&name, id).await;
    assert_eq!(queue.reclaim_expired().await.unwrap(), 1);
    let taken = queue.claim("other", LEASE).await.unwrap().unwrap();
    assert_eq!(taken.id, id);

    release.add_permits(1);
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let statuses = handle.check_health().await;
        let detail = statuses
            .iter()
            .find(|s| s.name == "worker")
            .and_then(|s| s.detail.clone())
            .unwrap_or_default();
        if detail.contains("1 ended after their lease expired") {
            assert!(detail.contains("0 jobs done"), "{detail}");
            let stats = worker.stats();
            assert_eq!(
                (stats.late, stats.done, stats.claimed),
                (1, 0, 1),
                "{stats:?}"
            );
            break;
        }
        assert!(
            Instant::now() < until,
            "the late end was not counted: {detail}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(B::state(&queue, id).await, Some(JobState::Running));
    assert!(queue.complete(id, "other").await.unwrap());
    assert_eq!(B::state(&queue, id).await, Some(JobState::Done));
    handle.shutdown("test over");
    let report = run.await.unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    backend.clean(&name).await;
}

/// A worker that is never idle still takes back the jobs of a worker that died: expired
/// leases are reclaimed periodically, not only at the start or when the queue is empty.
async fn expired_leases_are_reclaimed_while_the_worker_is_busy<B: Backend>(backend: B) {
    let name = unique("busy");
    let (queue, handle, run) = store_only(&backend, &name).await;
    let dead = B::enqueue(&queue, 1).await;
    assert_eq!(
        queue
            .claim("dead", Duration::from_millis(500))
            .await
            .unwrap()
            .unwrap()
            .id,
        dead
    );
    let mut others = Vec::new();
    for _ in 0..40 {
        others.push(B::enqueue(&queue, 60).await);
    }
    handle.shutdown("enqueued");
    let report = run.await.unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");

    // One worker, busy for 40 x 60 ms; the dead worker's lease expires 500 ms after its claim.
    let runs = Runs::default();
    let (lifecycle, queue) = lifecycle(&backend, &name, 1, runs.sleeper(), Duration::from_secs(1));
    let (handle, run) = start(lifecycle).await;
    wait_for_state::<B>(&queue, dead, JobState::Done).await;
    let mut waiting = 0;
    for id in &others {
        if B::state(&queue, *id).await == Some(JobState::Queued) {
            waiting += 1;
        }
    }
    assert!(
        waiting > 0,
        "the dead worker's job was taken back only once the queue was empty"
    );
    handle.shutdown("test over");
    let report = run.await.unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    backend.clean(&name).await;
}

/// The most deliveries a job gets by default before it is dead-lettered.
const MAX_DELIVERIES: u32 = 10;

/// A job that kills its process every time it runs is not taken up for ever: each delivery
/// counts, and after the maximum it ends failed, with the reason.
fn a_job_that_kills_its_worker_every_time_ends_failed<B: Backend>(backend: B) {
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
    let name = unique("poison");
    let runs = Runs::default();
    let id = runtime().block_on(async {
        let (queue, handle, run) = store_only(&backend, &name).await;
        let id = B::enqueue(&queue, 100000).await;
        handle.shutdown("enqueued");
        let report = run.await.unwrap();
        assert_eq!(report.exit_code(), 0, "{report}");
        id
    });
    for delivery in 1..=MAX_DELIVERIES + 1 {
        let process = runtime();
        let failed = process.block_on(async {
            // The previous process's lease expires first.
            tokio::time::sleep(LEASE).await;
            let (lifecycle, queue) =
                lifecycle(&backend, &name, 1, runs.sleeper(), Duration::from_secs(1));
            let (_handle, _run) = start(lifecycle).await;
            let until = Instant::now() + Duration::from_secs(10);
            loop {
                if B::state(&queue, id).await == Some(JobState::Failed) {
                    return true;
                }
                if runs.get(id).0 == delivery {
                    return false;
                }
                assert!(Instant::now() < until, "delivery {delivery} never came");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        // The kill: the job in hand ends with the process, unrecorded.
        process.shutdown_background();
        if failed {
            assert_eq!(runs.get(id).0, MAX_DELIVERIES, "runs before it was failed");
            runtime().block_on(async {
                let (queue, handle, run) = store_only(&backend, &name).await;
                assert_eq!(B::state(&queue, id).await, Some(JobState::Failed));
                let error = B::error(&queue, id).await.unwrap_or_default();
                assert!(
                    error.contains("lease expired after its delivery 10 of 10"),
                    "{error}"
                );
                handle.shutdown("checked");
                let report = run.await.unwrap();
                assert_eq!(report.exit_code(), 0, "{report}");
                backend.clean(&name).await;
            });
            return;
        }
    }
    panic!("job {id} ran {} times and was never failed", runs.get(id).0);
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Email {
    to: String,
    retries: u8,
}

/// The handler gets the payload as the type it was enqueued as; a payload that is not one
/// fails its job for good, with the reason, and is not retried.
async fn payloads_are_typed<B: Backend>(backend: B) {
    let name = unique("typed");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler = {
        let seen = seen.clone();
        move |job: lifecycle_db::Job<Email>| {
            seen.lock().unwrap().push(job.payload);
            async { Ok(()) }
        }
    };
    let (store, queue) = backend.open(&name);
    let worker = JobWorker::new(queue.clone(), handler).poll_interval(Duration::from_millis(10));
    let (handle, run) = start(
        Lifecycle::builder()
            .signals([])
            .register(store)
            .register(Registration::new("worker", worker).depends_on("store"))
            .build()
            .unwrap(),
    )
    .await;
    let email = Email {
        to: "ada@example.com".into(),
        retries: 2,
    };
    let good = B::enqueue_json(&queue, &email).await;
    let bad = B::enqueue_json(&queue, &"not an email").await;
    wait_for_state::<B>(&queue, good, JobState::Done).await;
    wait_for_state::<B>(&queue, bad, JobState::Failed).await;
    let error = B::error(&queue, bad).await.unwrap_or_default();
    assert!(error.contains("the payload is not a valid"), "{error}");
    handle.shutdown("test over");
    let report = run.await.unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(*seen.lock().unwrap(), [email]);
    backend.clean(&name).await;
}

/// A worker with a concurrency of 3 holds three jobs at once; at a stop that comes before they
/// finish, each is handed back, and the next run of each tells its handler it is a
/// redelivery (deliveries 2), with the attempt not counted (attempts 1).
async fn a_worker_holds_several_jobs_and_hands_each_back<B: Backend>(backend: B) {
    let name = unique("concurrency");
    let in_hand = Arc::new(Mutex::new((0usize, 0usize)));
    let handler = {
        let in_hand = in_hand.clone();
        move |_job: lifecycle_db::Job<u64>| {
            let in_hand = in_hand.clone();
            async move {
                {
                    let mut in_hand = in_hand.lock().unwrap();
                    in_hand.0 += 1;
                    in_hand.1 = in_hand.1.max(in_hand.0);
                }
                std::future::pending::<()>().await;
                Ok(())
            }
        }
    };
    let (store, queue) = backend.open(&name);
    let worker = JobWorker::new(queue.clone(), handler)
        .lease(LEASE)
        .poll_interval(Duration::from_millis(10))
        .concurrency(3);
    let (handle, run) = start(
        Lifecycle::builder()
            .signals([])
            .register(store)
            .register(
                Registration::new("worker", worker)
                    .depends_on("store")
                    .stop_timeout(Duration::from_secs(1)),
            )
            .build()
            .unwrap(),
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(B::enqueue(&queue, 0).await);
    }
    let until = Instant::now() + Duration::from_secs(10);
    while in_hand.lock().unwrap().0 < 3 {
        assert!(
            Instant::now() < until,
            "{:?} in hand",
            in_hand.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    handle.shutdown("deploy");
    let report = run.await.unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(in_hand.lock().unwrap().1, 3, "at most 3 at once");

    let runs = Runs::default();
    let (lifecycle, queue) = lifecycle(&backend, &name, 1, runs.sleeper(), Duration::from_secs(1));
    let (handle, run) = start(lifecycle).await;
    for id in &ids {
        wait_for_state::<B>(&queue, *id, JobState::Done).await;
    }
    handle.shutdown("test over");
    let report = run.await.unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    let redelivered = ids.iter().filter(|id| runs.deliveries(**id) == 2).count();
    assert_eq!(redelivered, 3, "the three jobs in hand were handed back");
    for id in &ids {
        assert_eq!(runs.attempts(*id), 1, "a hand-back is not an attempt");
    }
    backend.clean(&name).await;
}

/// Every end and every renewal says whether the worker still held the job: after its lease
/// expired and another worker took the job, the first worker's renew, complete, fail and hand
/// back all answer `false` and change nothing.
async fn a_worker_that_lost_its_lease_is_told_so<B: Backend>(backend: B) {
    let name = unique("lost-lease");
    let (queue, handle, run) = store_only(&backend, &name).await;
    let id = B::enqueue(&queue, 0).await;
    assert_eq!(queue.claim("first", LEASE).await.unwrap().unwrap().id, id);
    assert!(queue.renew(id, "first", LEASE).await.unwrap());
    backend.expire_lease(&name, id).await;
    assert_eq!(queue.reclaim_expired().await.unwrap(), 1);
    assert_eq!(queue.claim("second", LEASE).await.unwrap().unwrap().id, id);

    assert!(!queue.renew(id, "first", LEASE).await.unwrap());
    assert!(!queue.complete(id, "first").await.unwrap());
    assert!(!queue.fail(id, "first", "late", 1).await.unwrap());
    assert!(!queue.hand_back(id, "first").await.unwrap());
    assert_eq!(B::state(&queue, id).await, Some(JobState::Running));
    assert!(queue.renew(id, "second", LEASE).await.unwrap());
    assert!(queue.complete(id, "second").await.unwrap());
    assert_eq!(B::state(&queue, id).await, Some(JobState::Done));
    handle.shutdown("test over");
    let report = run.await.unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    backend.clean(&name).await;
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

            contract!(@on_a_backend
                the_job_in_hand_finishes_when_the_stop_timeout_allows,
                a_job_longer_than_the_stop_timeout_is_handed_back_without_counting,
                the_job_of_a_dead_worker_is_taken_up_at_the_next_start,
                an_idle_worker_takes_up_the_job_of_a_worker_that_died_after_it_started,
                a_failing_job_is_retried_then_marked_failed,
                a_panicking_job_is_a_failed_attempt_and_the_worker_stays_up,
                a_job_past_its_max_run_time_is_cut_off_as_a_failed_attempt,
                invalid_durations_are_refused_at_the_start,
                a_late_end_is_not_recorded_and_is_counted,
                expired_leases_are_reclaimed_while_the_worker_is_busy,
                payloads_are_typed,
                a_worker_holds_several_jobs_and_hands_each_back,
                a_worker_that_lost_its_lease_is_told_so,
            );

            #[test]
            fn a_job_that_kills_its_worker_every_time_ends_failed() {
                super::a_job_that_kills_its_worker_every_time_ends_failed($backend);
            }

            #[test]
            fn no_job_is_lost() {
                super::no_job_is_lost($backend, $seed);
            }
        }
    };
    // Each test of the contract that takes the backend: run on it, when its server answers
    // (`available` fails in CI when it does not).
    (@on_a_backend $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                if let Some(backend) = backend().await {
                    super::$test(backend).await;
                }
            }
        )*
    };
}

contract!(sqlite, Sql::sqlite(), 1);
contract!(postgres, Sql::Postgres, 2);
contract!(mariadb, Sql::MariaDb, 4);
#[cfg(feature = "redis")]
contract!(redis_queue, Redis, 3);
