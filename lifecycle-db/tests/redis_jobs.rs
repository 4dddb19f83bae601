//! `JobWorker` on `RedisJobQueue` against the machine's Redis: the job in hand is handed back at
//! the stop timeout, uncounted, and across random shutdowns and a kill no job is lost.

#![cfg(feature = "redis")]

mod common;

use std::time::Duration;

use common::{queue_name, redis_admin, redis_url, server_available, start, Runs, REDIS};
use lifecycle_core::{Lifecycle, Outcome, Registration};
use lifecycle_db::{JobQueue, JobState, JobWorker, RedisClient, RedisJobQueue};
use rand::{Rng, SeedableRng};
use redis::AsyncCommands;
use tokio::time::Instant;

const LEASE: Duration = Duration::from_millis(300);

fn lifecycle(
    queue: &str,
    workers: usize,
    runs: &Runs,
    stop_timeout: Duration,
) -> (Lifecycle, RedisJobQueue) {
    let redis = RedisClient::new(&redis_url()).unwrap();
    let jobs = RedisJobQueue::new(redis.clone(), queue);
    let mut builder = Lifecycle::builder()
        .signals([])
        .register(Registration::new("redis", redis));
    for w in 0..workers {
        let worker = JobWorker::new(jobs.clone(), runs.sleeper())
            .lease(LEASE)
            .poll_interval(Duration::from_millis(10));
        builder = builder.register(
            Registration::new(format!("worker{w}"), worker)
                .depends_on("redis")
                .stop_timeout(stop_timeout),
        );
    }
    (builder.build().unwrap(), jobs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_longer_than_the_stop_timeout_is_handed_back_without_counting() {
    if !server_available("Redis", REDIS).await {
        return;
    }
    let name = queue_name("hand-back");
    let runs = Runs::default();
    let (lifecycle, queue) = lifecycle(&name, 1, &runs, Duration::from_secs(1));
    let (handle, run) = start(lifecycle).await;
    let id = queue.enqueue("10000").await.unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while queue.state(id).await.unwrap() != Some(JobState::Running) {
        assert!(Instant::now() < until, "never claimed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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
    assert_eq!(runs.get(id), (1, 0));

    let mut admin = redis_admin().await;
    let key = format!("lifecycle:{name}:job:{id}");
    let (state, attempts): (String, i64) = (
        admin.hget(&key, "state").await.unwrap(),
        admin.hget(&key, "attempts").await.unwrap(),
    );
    assert_eq!((state.as_str(), attempts), ("queued", 0));
    let waiting: Vec<i64> = admin
        .lrange(format!("lifecycle:{name}:queue"), 0, -1)
        .await
        .unwrap();
    assert_eq!(waiting, [id]);
}

/// Takes back, and counts, the jobs of the previous run's workers once their lease expired,
/// before new workers start (which would take them back uncounted), through a client of its
/// own.
async fn reclaim_before_start(name: &str) -> u64 {
    tokio::time::sleep(LEASE).await;
    let redis = RedisClient::new(&redis_url()).unwrap();
    let (handle, run) = start(
        Lifecycle::builder()
            .signals([])
            .register(Registration::new("redis", redis.clone()))
            .build()
            .unwrap(),
    )
    .await;
    let reclaimed = RedisJobQueue::new(redis, name)
        .reclaim_expired()
        .await
        .unwrap();
    handle.shutdown("reclaimed");
    run.await.unwrap();
    reclaimed
}

/// Many jobs, random shutdowns (some cutting jobs off), one kill, then a run to the end: every
/// job is done, and jobs ran twice only as often as runs were interrupted.
#[test]
fn no_job_is_lost_on_redis() {
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    if !runtime().block_on(server_available("Redis", REDIS)) {
        return;
    }
    let name = queue_name("no-loss");
    let jobs = 1000;
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let runs = Runs::default();
    let ids: Vec<i64> = runtime().block_on(async {
        let (lifecycle, queue) = lifecycle(&name, 0, &runs, Duration::from_secs(1));
        let (handle, run) = start(lifecycle).await;
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

    // Jobs whose run ended unrecorded (a kill, or a stop cut off before the worker could
    // record the end) are taken back by the test itself, and counted, once their lease expired.
    let mut lost_acks = 0;
    for cycle in 0..7 {
        let runtime = runtime();
        let (run_for, stop_timeout) = (rng.random_range(50..300), rng.random_range(10..100));
        let kill = cycle == 3;
        runtime.block_on(async {
            let (lifecycle, _) = lifecycle(&name, 4, &runs, Duration::from_millis(stop_timeout));
            lost_acks += reclaim_before_start(&name).await;
            let (handle, run) = start(lifecycle).await;
            tokio::time::sleep(Duration::from_millis(run_for)).await;
            if kill {
                runs.wait_in_progress().await;
            } else {
                handle.shutdown("deploy");
                let report = run.await.unwrap();
                let wrong = report
                    .components
                    .iter()
                    .any(|c| !matches!(c.outcome, Outcome::Stopped | Outcome::TimedOut));
                assert!(!wrong, "cycle {cycle}: {report}");
            }
        });
        runtime.shutdown_background();
    }

    runtime().block_on(async {
        let (lifecycle, queue) = lifecycle(&name, 4, &runs, Duration::from_secs(1));
        lost_acks += reclaim_before_start(&name).await;
        let (handle, run) = start(lifecycle).await;
        let until = Instant::now() + Duration::from_secs(60);
        for id in &ids {
            while queue.state(*id).await.unwrap() != Some(JobState::Done) {
                assert!(
                    Instant::now() < until,
                    "job {id} is {:?}",
                    queue.state(*id).await.unwrap()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        handle.shutdown("all done");
        run.await.unwrap();
        let mut admin = redis_admin().await;
        let keys: Vec<String> = admin.keys(format!("lifecycle:{name}:*")).await.unwrap();
        let _: () = admin.del(keys).await.unwrap();
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
