//! `RedisJobQueue`'s moves against the machine's Redis: every move of an id between the queue
//! and a worker's processing list is conditional and atomic, so a sweep, a late `complete` or
//! `fail` of a swept job, a repeated hand-back, or two sweepers racing never put an id in the
//! queue twice, nor mark done a job another worker runs.

#![cfg(feature = "redis")]

use crate::common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{redis_admin, redis_url, server_available, start, unique, REDIS};
use lifecycle_core::{Lifecycle, LifecycleHandle, Registration, Report};
use lifecycle_db::{JobQueue, JobState, RedisClient, RedisJobQueue};
use rand::{Rng, SeedableRng};
use redis::AsyncCommands;
use tokio::task::JoinHandle;

const LEASE: Duration = Duration::from_secs(30);

/// A started client and a queue on it; the test ends it with `end`.
struct Fixture {
    name: String,
    queue: RedisJobQueue,
    handle: LifecycleHandle,
    run: JoinHandle<Report>,
}

impl Fixture {
    async fn new(test: &str) -> Option<Fixture> {
        if !server_available("Redis", REDIS) {
            return None;
        }
        let name = unique(test);
        let redis = RedisClient::new(&redis_url()).unwrap();
        let queue = RedisJobQueue::new(redis.clone(), &name);
        let (handle, run) = start(
            Lifecycle::builder()
                .signals([])
                .register(Registration::new("redis", redis))
                .build()
                .unwrap(),
        )
        .await;
        Some(Fixture {
            name,
            queue,
            handle,
            run,
        })
    }

    /// The ids waiting in the queue, in order.
    async fn waiting(&self) -> Vec<i64> {
        redis_admin()
            .await
            .lrange(format!("lifecycle:{}:queue", self.name), 0, -1)
            .await
            .unwrap()
    }

    /// Every id in the queue or in a processing list, with the list it is in; an id twice means
    /// two workers could run it at once.
    async fn placements(&self) -> Vec<(String, i64)> {
        let mut admin = redis_admin().await;
        let mut lists: Vec<String> = admin
            .keys(format!("lifecycle:{}:processing:*", self.name))
            .await
            .unwrap();
        lists.push(format!("lifecycle:{}:queue", self.name));
        let mut placed = Vec::new();
        for list in lists {
            let ids: Vec<i64> = admin.lrange(&list, 0, -1).await.unwrap();
            placed.extend(ids.into_iter().map(|id| (list.clone(), id)));
        }
        placed
    }

    /// At one instant (a script runs atomically): every id in the queue or a processing list,
    /// with its list, and how many jobs are done. Fails if a job in a list is marked done: it
    /// waits or runs, so no one may have completed it.
    async fn snapshot(&self) -> (Vec<(String, i64)>, usize) {
        let script = redis::Script::new(
            r"
            local prefix = ARGV[1]
            local placed = {}
            local lists = redis.call('KEYS', prefix .. ':processing:*')
            table.insert(lists, prefix .. ':queue')
            for _, list in ipairs(lists) do
                for _, id in ipairs(redis.call('LRANGE', list, 0, -1)) do
                    local state = redis.call('HGET', prefix .. ':job:' .. id, 'state')
                    table.insert(placed, list .. ' ' .. id .. ' ' .. tostring(state))
                end
            end
            local done = 0
            for _, job in ipairs(redis.call('KEYS', prefix .. ':job:*')) do
                if redis.call('HGET', job, 'state') == 'done' then done = done + 1 end
            end
            return {placed, done}
            ",
        );
        let (placed, done): (Vec<String>, usize) = script
            .arg(format!("lifecycle:{}", self.name))
            .invoke_async(&mut redis_admin().await)
            .await
            .unwrap();
        let placements = placed
            .iter()
            .map(|entry| {
                let mut parts = entry.split(' ');
                let (list, id, state) = (
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                );
                assert_ne!(state, "done", "job {id} is done, yet in {list}");
                (list.to_owned(), id.parse().unwrap())
            })
            .collect();
        (placements, done)
    }

    /// Ends `worker`'s lease at once, as if it had been dead for a lease.
    async fn expire(&self, worker: &str) {
        let _: () = redis_admin()
            .await
            .del(format!("lifecycle:{}:heartbeat:{worker}", self.name))
            .await
            .unwrap();
    }

    async fn claim(&self, worker: &str) -> i64 {
        self.queue.claim(worker, LEASE).await.unwrap().unwrap().id
    }

    async fn state(&self, id: i64) -> Option<JobState> {
        self.queue.state(id).await.unwrap()
    }

    async fn end(self) {
        let mut admin = redis_admin().await;
        let keys: Vec<String> = admin
            .keys(format!("lifecycle:{}:*", self.name))
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = admin.del(keys).await.unwrap();
        }
        self.handle.shutdown("test over");
        let report = self.run.await.unwrap();
        assert_eq!(report.exit_code(), 0, "{report}");
    }
}

/// Asserts that no id is in two places (the queue twice, or the queue and a processing list).
fn assert_each_id_once(placements: &[(String, i64)]) {
    let mut seen = HashMap::new();
    for (list, id) in placements {
        if let Some(other) = seen.insert(*id, list) {
            panic!("job {id} is in {other} and in {list}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweepers_racing_requeue_each_of_a_dead_workers_jobs_once() {
    let Some(f) = Fixture::new("sweepers").await else {
        return;
    };
    let mut ids = Vec::new();
    for _ in 0..20 {
        let id = f.queue.enqueue("x").await.unwrap();
        assert_eq!(f.claim("dead").await, id);
        ids.push(id);
    }
    f.expire("dead").await;

    // Each worker sweeps at its start: several start at once.
    let sweeps = futures::future::join_all((0..8).map(|_| f.queue.reclaim_expired())).await;
    let reclaimed: u64 = sweeps.into_iter().map(Result::unwrap).sum();
    assert_eq!(reclaimed, 20, "each job is taken back by one sweeper");
    let mut waiting = f.waiting().await;
    waiting.sort_unstable();
    assert_eq!(waiting, ids);
    assert_each_id_once(&f.placements().await);
    f.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_complete_of_a_swept_job_does_not_mark_done_the_job_another_worker_runs() {
    let Some(f) = Fixture::new("late-complete").await else {
        return;
    };
    let id = f.queue.enqueue("x").await.unwrap();
    assert_eq!(f.claim("slow").await, id);
    f.expire("slow").await;
    assert_eq!(f.queue.reclaim_expired().await.unwrap(), 1);
    assert_eq!(f.claim("other").await, id);

    // The slow worker finishes after all: told it no longer held the job, it changes nothing.
    assert!(!f.queue.complete(id, "slow").await.unwrap());
    assert_eq!(f.state(id).await, Some(JobState::Running));
    assert_each_id_once(&f.placements().await);

    assert!(f.queue.complete(id, "other").await.unwrap());
    assert_eq!(f.state(id).await, Some(JobState::Done));
    assert!(f.placements().await.is_empty());
    f.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_fail_of_a_swept_job_does_not_queue_it_again() {
    let Some(f) = Fixture::new("late-fail").await else {
        return;
    };
    let id = f.queue.enqueue("x").await.unwrap();
    assert_eq!(f.claim("slow").await, id);
    f.expire("slow").await;
    assert_eq!(f.queue.reclaim_expired().await.unwrap(), 1);
    assert_eq!(f.claim("other").await, id);

    assert!(!f.queue.fail(id, "slow", "timed out", 3).await.unwrap());
    assert_eq!(f.state(id).await, Some(JobState::Running));
    assert!(f.waiting().await.is_empty(), "{:?}", f.waiting().await);
    assert_each_id_once(&f.placements().await);
    f.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_hand_back_of_a_swept_job_does_not_queue_it_again() {
    let Some(f) = Fixture::new("late-hand-back").await else {
        return;
    };
    let id = f.queue.enqueue("x").await.unwrap();
    assert_eq!(f.claim("slow").await, id);
    f.expire("slow").await;
    assert_eq!(f.queue.reclaim_expired().await.unwrap(), 1);

    // Handed back after the sweep, while queued; then again once another worker has it.
    assert!(!f.queue.hand_back(id, "slow").await.unwrap());
    assert_eq!(f.waiting().await, [id]);
    assert_eq!(f.claim("other").await, id);
    assert!(!f.queue.hand_back(id, "slow").await.unwrap());
    assert_eq!(f.state(id).await, Some(JobState::Running));
    assert_each_id_once(&f.placements().await);
    f.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_handed_back_twice_is_queued_once() {
    let Some(f) = Fixture::new("hand-back-twice").await else {
        return;
    };
    let id = f.queue.enqueue("x").await.unwrap();
    assert_eq!(f.claim("w").await, id);
    assert!(f.queue.hand_back(id, "w").await.unwrap());
    assert!(!f.queue.hand_back(id, "w").await.unwrap());
    assert_eq!(f.waiting().await, [id]);
    let job = f.queue.claim("w", LEASE).await.unwrap().unwrap();
    assert_eq!(
        (job.id, job.attempts),
        (id, 1),
        "hand-backs are not attempts"
    );
    f.end().await;
}

/// PITFALLS 55: the claim's script fails after `BLMOVE` moved the id into the worker's
/// processing list (here a job hash whose `attempts` is not a number makes `HINCRBY` fail; a
/// connection reset or a NOPERM would do the same): the claim fails, and the id is back in the
/// queue at once, not stranded in the list of a worker that lives on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_script_fails_puts_the_id_back() {
    let Some(f) = Fixture::new("half-claim").await else {
        return;
    };
    let id = f.queue.enqueue("x").await.unwrap();
    let job = format!("lifecycle:{}:job:{id}", f.name);
    let _: () = redis_admin()
        .await
        .hset(&job, "attempts", "not a number")
        .await
        .unwrap();
    assert!(f.queue.claim("w", LEASE).await.is_err(), "the script fails");
    assert_eq!(f.waiting().await, [id], "the id is back in the queue");
    assert_eq!(f.placements().await.len(), 1, "and nowhere else");
    assert_eq!(f.state(id).await, Some(JobState::Queued));

    let _: () = redis_admin().await.hset(&job, "attempts", 0).await.unwrap();
    let job = f.queue.claim("w", LEASE).await.unwrap().unwrap();
    assert_eq!((job.id, job.attempts, job.deliveries), (id, 1, 1));
    f.end().await;
}

/// If the id could not be put back at once either (the connection was gone), the worker's next
/// claim takes back what its processing list holds and never started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_claim_takes_back_an_id_a_failed_claim_left_behind() {
    let Some(f) = Fixture::new("half-claim-later").await else {
        return;
    };
    let id = f.queue.enqueue("x").await.unwrap();
    // As `BLMOVE` left it, with neither the claim's script nor the put-back run.
    let _: () = redis_admin()
        .await
        .lmove(
            format!("lifecycle:{}:queue", f.name),
            format!("lifecycle:{}:processing:w", f.name),
            redis::Direction::Right,
            redis::Direction::Left,
        )
        .await
        .unwrap();
    assert_eq!(f.waiting().await, Vec::<i64>::new());
    let job = f.queue.claim("w", LEASE).await.unwrap().unwrap();
    assert_eq!((job.id, job.deliveries), (id, 1));
    assert_each_id_once(&f.placements().await);
    assert!(f.queue.complete(id, "w").await.unwrap());
    assert_eq!(f.placements().await, []);
    f.end().await;
}

/// Workers that finish, fail, hand back or die at random, sweepers that run at random, and
/// dead workers that come back and complete their swept jobs late, all at once: no job is lost,
/// no id is ever in two places, and a job is marked done only by the worker that holds it, so
/// it runs more than once only if a lease of it expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_workers_sweepers_and_kills_lose_nothing_and_duplicate_nothing() {
    let Some(f) = Fixture::new("random").await else {
        return;
    };
    let f = Arc::new(f);
    let jobs = 300;
    let mut ids = Vec::new();
    for _ in 0..jobs {
        ids.push(f.queue.enqueue("x").await.unwrap());
    }
    // Per job: how many times a handler ran it, how many of its leases expired, and how many
    // times it was completed (by a worker that held it).
    let runs = Arc::new(Mutex::new(HashMap::<i64, (u32, u32, u32)>::new()));
    let over = Arc::new(AtomicBool::new(false));

    let mut tasks = Vec::new();
    for w in 0..4u64 {
        let (f, runs, over) = (f.clone(), runs.clone(), over.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(w);
            let mut incarnation = 0;
            while !over.load(Ordering::SeqCst) {
                let worker = format!("w{w}-{incarnation}");
                let Some(job) = f.queue.claim(&worker, LEASE).await.unwrap() else {
                    continue;
                };
                runs.lock().unwrap().entry(job.id).or_default().0 += 1;
                tokio::task::yield_now().await;
                match rng.random_range(0..10) {
                    0 => {
                        // Killed: its lease expires, and a sweeper takes the job back. Some
                        // come back to life and report late.
                        runs.lock().unwrap().entry(job.id).or_default().1 += 1;
                        f.expire(&worker).await;
                        if rng.random_bool(0.5) {
                            tokio::task::yield_now().await;
                            if f.queue.complete(job.id, &worker).await.unwrap() {
                                runs.lock().unwrap().entry(job.id).or_default().2 += 1;
                            }
                        }
                        incarnation += 1;
                    }
                    1 => {
                        assert!(f.queue.hand_back(job.id, &worker).await.unwrap());
                    }
                    2 => {
                        assert!(f.queue.fail(job.id, &worker, "flaky", 1000).await.unwrap());
                    }
                    _ => {
                        // A live worker holds its job: its end always counts.
                        assert!(f.queue.complete(job.id, &worker).await.unwrap());
                        runs.lock().unwrap().entry(job.id).or_default().2 += 1;
                    }
                }
            }
        }));
    }
    for s in 0..2u64 {
        let (f, over) = (f.clone(), over.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(100 + s);
            while !over.load(Ordering::SeqCst) {
                f.queue.reclaim_expired().await.unwrap();
                for _ in 0..rng.random_range(0..3) {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }

    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (placements, done) = f.snapshot().await;
        assert_each_id_once(&placements);
        if done == jobs {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{done} of {jobs} done; {} placed",
            placements.len()
        );
    }
    over.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
    assert!(
        f.placements().await.is_empty(),
        "{:?}",
        f.placements().await
    );
    let runs = runs.lock().unwrap().clone();
    let mut expired_total = 0;
    for id in &ids {
        let (ran, expired, completed) = runs.get(id).copied().unwrap_or_default();
        assert!(ran >= 1, "job {id} never ran");
        assert_eq!(completed, 1, "job {id} completed {completed} times");
        expired_total += expired;
    }
    assert!(expired_total > 0, "no lease expired: the test saw nothing");
    let distinct: HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), jobs);
    Arc::into_inner(f).unwrap().end().await;
}
