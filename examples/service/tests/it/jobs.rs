//! The job no-loss test through the HTTP API of the real binary, with the jobs in SQLite,
//! PostgreSQL, MariaDB or Redis: jobs queued with `POST /jobs`, the service stopped with
//! SIGTERM at random moments and once killed with SIGKILL, then run to the end: every job is
//! done, and jobs ran twice only as often as a kill interrupted them. And two containers that
//! are both PID 1: the second takes up the job the first was killed with. And poison jobs: one
//! that fails and one that panics every time end `dead` after `--max-deliveries` runs, while
//! the good ones are done and the service stays ready.

use crate::common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    create, free_addr, query, request, server_available, signal, start, start_command, wait,
    wait_done, Service, BIN, MARIADB, POSTGRES, REDIS,
};

/// Jobs in hand (running) right now: in the SQL table, or in the Redis queue's processing lists.
fn running(db: &str, queue: &str, redis: bool) -> i64 {
    match redis {
        false => {
            query(
                db,
                "SELECT COUNT(*), 0 FROM lifecycle_jobs WHERE state = 'running' AND queue = $1",
                queue.to_owned(),
            )[0]
            .0
        }
        true => tokio::runtime::Runtime::new().unwrap().block_on(async {
            let mut redis = redis::Client::open(REDIS_URL)
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let lists: Vec<String> = redis::cmd("KEYS")
                .arg(format!("lifecycle:{queue}:processing:*"))
                .query_async(&mut redis)
                .await
                .unwrap();
            let mut count = 0;
            for list in lists {
                let len: i64 = redis::cmd("LLEN")
                    .arg(list)
                    .query_async(&mut redis)
                    .await
                    .unwrap();
                count += len;
            }
            count
        }),
    }
}

const REDIS_URL: &str = "redis://127.0.0.1:6379/";

#[test]
fn no_job_is_lost_across_sigterms_and_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("jobs.db").display());
    no_job_is_lost(&db, "default", false);
}

#[test]
fn no_job_is_lost_across_sigterms_and_a_sigkill_on_postgres() {
    if server_available("PostgreSQL", POSTGRES) {
        let queue = format!("example-test-{}", std::process::id());
        no_job_is_lost(
            "postgres://postgres@127.0.0.1:5432/test?application_name=example-jobs",
            &queue,
            false,
        );
    }
}

#[test]
fn no_job_is_lost_across_sigterms_and_a_sigkill_on_mariadb() {
    if server_available("MariaDB", MARIADB) {
        let queue = format!("example-test-{}", std::process::id());
        no_job_is_lost("mysql://root@127.0.0.1:3306/test", &queue, false);
    }
}

#[test]
fn no_job_is_lost_across_sigterms_and_a_sigkill_with_jobs_in_redis() {
    if server_available("Redis", REDIS) {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}?mode=rwc", dir.path().join("jobs.db").display());
        no_job_is_lost(&db, &format!("example-test-{}", std::process::id()), true);
    }
}

/// The jobs in hand at a kill, counted once the store has done what the killed process had
/// sent: a claim in flight at the kill still commits a moment after the process is reaped (the
/// database finishes a statement whose client is gone), and counted too early it showed up at
/// the next stop as a job a graceful stop had left running.
fn running_after_kill(db: &str, queue: &str, redis: bool) -> i64 {
    let mut last = running(db, queue, redis);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = running(db, queue, redis);
        if now == last {
            return now;
        }
        last = now;
    }
}

/// Jobs queued through the API of the service on `db` (its jobs in the SQL queue `queue`, or in
/// Redis), the service stopped with SIGTERM at chosen moments and once killed, then run to the
/// end.
fn no_job_is_lost(db: &str, queue: &str, redis: bool) {
    let redis_queue = redis.then_some(queue);
    let addr = free_addr();
    // A lease of 3 s, not 1 s: on a loaded machine a job's renewal can come late enough for a
    // 1 s lease to expire and the job to run twice with no kill involved, which the count of
    // duplicates below would blame on the kill.
    let mut extra: Vec<&str> = vec!["--job-queue", queue, "--job-lease", "3s"];
    if redis {
        extra.extend(["--redis-url", REDIS_URL]);
    }

    let mut service = start(addr, db, &extra);
    let jobs = 400;
    let mut ids = Vec::new();
    for i in 0..jobs {
        ids.push(create(
            addr,
            "/jobs",
            &format!("{{\"ms\": {}}}", (i * 7) % 40),
        ));
    }

    let mut interrupted_by_kills = 0;
    for (cycle, run_ms) in [150u64, 90, 230, 60, 180, 120].into_iter().enumerate() {
        std::thread::sleep(Duration::from_millis(run_ms));
        if cycle == 3 {
            signal(&service, "KILL");
            wait(&mut service);
            // Every job in hand at the kill was interrupted.
            interrupted_by_kills += running_after_kill(db, queue, redis);
        } else {
            signal(&service, "TERM");
            assert_eq!(
                wait(&mut service),
                Some(0),
                "cycle {cycle}: a graceful stop exits 0"
            );
            // A graceful stop leaves no job of its own running; only the kill's jobs may still be
            // waiting for their lease to expire.
            let running = running(db, queue, redis);
            assert!(
                running <= interrupted_by_kills,
                "cycle {cycle}: {running} jobs left running"
            );
        }
        service = start(addr, db, &extra);
    }

    // Run to the end; the killed instance's jobs come back once their lease expires.
    let until = Instant::now() + Duration::from_secs(60);
    for id in &ids {
        wait_done(addr, &format!("/jobs/{id}"), until);
    }
    signal(&service, "TERM");
    assert_eq!(wait(&mut service), Some(0));

    // The runs of this test's jobs (a shared PostgreSQL holds other runs' too).
    let first = ids.iter().min().unwrap();
    let runs: Vec<(i64, i64)> = query(
        db,
        "SELECT job_id, COUNT(*) FROM job_runs WHERE job_id >= $1 GROUP BY job_id",
        *first,
    )
    .into_iter()
    .filter(|(id, _)| ids.contains(id))
    .collect();
    assert_eq!(runs.len() as i64, jobs, "every job ran");
    let duplicates: i64 = runs.iter().map(|(_, n)| n - 1).sum();
    assert!(
        duplicates <= interrupted_by_kills,
        "{duplicates} duplicate runs, {interrupted_by_kills} jobs interrupted by the kill"
    );
    if let Some(queue) = redis_queue {
        delete_redis_queue(queue);
    }
}

/// Whether this machine can run a process as PID 1 of its own PID namespace, as every
/// exec-form container is (`unshare`, as root). In CI it must.
fn pid_namespaces_available() -> bool {
    let works = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !works {
        assert!(
            std::env::var("CI").is_err(),
            "`unshare --pid --fork --mount-proc` does not work here; CI needs it (run as root)"
        );
        eprintln!("SKIPPED: cannot make PID namespaces (not root?), outside CI");
    }
    works
}

/// The service as PID 1 of a PID namespace of its own, like a container; killing the returned
/// `unshare` kills the service too (`--kill-child`).
fn start_as_pid_1(addr: SocketAddr, db: &str, extra: &[&str]) -> Service {
    let mut command = Command::new("unshare");
    command
        .args(["--pid", "--fork", "--mount-proc", "--kill-child", BIN])
        .args(["--listen", &addr.to_string(), "--job-lease", "1s"]);
    start_command(command, addr, db, extra)
}

/// What the `jobs` component says of itself in `/readyz?verbose`.
fn jobs_detail(addr: SocketAddr) -> String {
    let (_, body) = request(addr, "GET", "/readyz?verbose", "").unwrap();
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    let jobs = health["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "jobs")
        .unwrap_or_else(|| panic!("no jobs component in {body}"));
    jobs["detail"].as_str().unwrap_or_default().to_owned()
}

/// Two replicas that are each PID 1 of their own PID namespace (containers) on one Redis job
/// queue: the first is killed with a job in hand, the second, started after it, takes the job
/// up once its lease expired. Worker identities made from the PID alone were equal, so the
/// second replica kept the first one's heartbeat alive and the job stayed running for ever.
#[test]
fn a_job_of_a_killed_container_is_taken_up_by_the_next_one_with_the_same_pid() {
    if !server_available("Redis", REDIS) || !pid_namespaces_available() {
        return;
    }
    let queue = format!("example-pid1-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let extra = ["--redis-url", REDIS_URL, "--job-queue", &queue];

    let db = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
    let mut first = start_as_pid_1(addr, &db, &extra);
    let first_identity = jobs_detail(addr);
    let id = create(addr, "/jobs", "{\"ms\": 500}");
    let until = Instant::now() + Duration::from_secs(10);
    while !request(addr, "GET", &format!("/jobs/{id}"), "")
        .unwrap()
        .1
        .contains("\"state\":\"running\"")
    {
        assert!(Instant::now() < until, "job {id} never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
    signal(&first, "KILL");
    wait(&mut first);

    let db = format!("sqlite://{}?mode=rwc", dir.path().join("b.db").display());
    let second = start_as_pid_1(addr, &db, &extra);
    // The killed replica's job is taken up.
    wait_done(
        addr,
        &format!("/jobs/{id}"),
        Instant::now() + Duration::from_secs(15),
    );

    // Each replica names itself, with the host it runs on, in /readyz?verbose.
    let second_identity = jobs_detail(addr);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(
        first_identity.contains(host.trim()) && second_identity.contains(host.trim()),
        "{first_identity} / {second_identity}"
    );
    assert_ne!(first_identity, second_identity);
    drop(second);
    delete_redis_queue(&queue);
}

/// Deletes what the Redis job queue `queue` left on the server.
fn delete_redis_queue(queue: &str) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut redis = redis::Client::open(REDIS_URL)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("lifecycle:{queue}:*"))
            .query_async(&mut redis)
            .await
            .unwrap();
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut redis)
            .await
            .unwrap();
    });
}

/// Waits until `GET path` says `"state":"{state}"`, up to `until`.
fn wait_state(addr: SocketAddr, path: &str, state: &str, until: Instant) {
    let expected = format!("\"state\":\"{state}\"");
    loop {
        let (status, body) = request(addr, "GET", path, "").unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        if body.contains(&expected) {
            return;
        }
        assert!(Instant::now() < until, "{path} never {state}: {body}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn poison_jobs_end_dead_after_max_deliveries_and_the_rest_are_done() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("jobs.db").display());
    poison_jobs(&db, &["--job-queue", "poison"]);
}

#[test]
fn poison_jobs_in_redis_end_dead_after_max_deliveries_and_the_rest_are_done() {
    if server_available("Redis", REDIS) {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}?mode=rwc", dir.path().join("jobs.db").display());
        let queue = format!("example-poison-{}", std::process::id());
        poison_jobs(&db, &["--redis-url", REDIS_URL, "--job-queue", &queue]);
    }
}

/// A job whose work fails and one whose work panics, among 20 good ones, on a service started
/// with `--max-deliveries 3`: each poison job runs exactly 3 times and ends `dead`, every good
/// one is done once, and the service is ready throughout and exits 0 at its SIGTERM.
fn poison_jobs(db: &str, extra: &[&str]) {
    let addr = free_addr();
    let mut args = vec!["--max-deliveries", "3"];
    args.extend_from_slice(extra);
    let mut service = start(addr, db, &args);
    let failing = create(addr, "/jobs", r#"{"ms": 1, "fail": "error"}"#);
    let panicking = create(addr, "/jobs", r#"{"ms": 1, "fail": "panic"}"#);
    let good: Vec<i64> = (0..20)
        .map(|_| create(addr, "/jobs", r#"{"ms": 5}"#))
        .collect();

    let until = Instant::now() + Duration::from_secs(30);
    for id in &good {
        wait_done(addr, &format!("/jobs/{id}"), until);
    }
    for id in [failing, panicking] {
        wait_state(addr, &format!("/jobs/{id}"), "dead", until);
    }
    let (status, body) = request(addr, "GET", "/readyz", "").unwrap();
    assert_eq!(status, 200, "the service stays ready: {body}");
    signal(&service, "TERM");
    assert_eq!(wait(&mut service), Some(0), "the worker never failed");

    for id in [failing, panicking] {
        let runs = query(db, "SELECT COUNT(*), 0 FROM job_runs WHERE job_id = $1", id);
        assert_eq!(runs[0].0, 3, "job {id}: one run per delivery, 3 at most");
    }
    for id in good {
        let runs = query(db, "SELECT COUNT(*), 0 FROM job_runs WHERE job_id = $1", id);
        assert_eq!(runs[0].0, 1, "job {id} ran once");
    }
}
