//! The whole stack under the fault matrix of issue 12: SIGTERM under load, SIGTERM during
//! start-up, a second SIGTERM, PostgreSQL's sessions killed during the drain, Redis killed at
//! the stop turn, a hung component, and SIGKILL then a restart.
//!
//! Each test runs the real `stack-service` binary against the machine's PostgreSQL and Redis
//! (a private `redis-server` where Redis must die), loads it with keep-alive clients, queues
//! jobs, injects its fault, and then checks what a deployment cares about: no request that
//! reached the service failed or went unanswered, no job lost, no PostgreSQL session or Redis
//! connection of the service left once it exited, and a report (file and exit code) that says
//! what happened. Each also checks that its counters can see what they count (sessions while
//! the service runs, a job in hand, dropped requests when the process is killed).

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use lifecycle_core::{Outcome, Report, TriggerKind};
use lifecycle_tests::{
    assert_nothing_left, assert_released, enqueue, held, redis_server_installed, servers_available,
    terminate_sessions, JobCounts, Jobs, Load, PrivateRedis, ServerCounts, Stack, StackConfig,
};

const BIN: &str = env!("CARGO_BIN_EXE_stack-service");

/// The service's components, in registration order.
const COMPONENTS: [&str; 7] = [
    "db",
    "redis",
    "schema",
    "warmup",
    "subscriber",
    "worker",
    "http",
];

/// Each component's outcome, in registration order.
fn outcomes(report: &Report) -> Vec<(&str, Outcome)> {
    report
        .components
        .iter()
        .map(|c| (c.name.as_str(), c.outcome))
        .collect()
}

/// Every component's outcome is `outcome`, except those in `except`.
fn expected(outcome: Outcome, except: &[(&'static str, Outcome)]) -> Vec<(&'static str, Outcome)> {
    COMPONENTS
        .iter()
        .map(|&name| {
            except
                .iter()
                .find(|(n, _)| *n == name)
                .copied()
                .unwrap_or((name, outcome))
        })
        .collect()
}

/// For every dependency edge of components that both stopped: the dependency's stop began only
/// after the dependent's ended.
fn assert_stopped_in_order(report: &Report) {
    for component in &report.components {
        for dependency in &component.dependencies {
            let dependency = report
                .component(dependency)
                .expect("a registered dependency");
            if let (Some(ended), Some(began)) = (component.stop_ended_ms, dependency.stop_began_ms)
            {
                assert!(
                    ended <= began,
                    "{} stopped at {began} ms, before {} was done at {ended} ms",
                    dependency.name,
                    component.name
                );
            }
        }
    }
}

/// The report the service wrote, whose exit code must be the process's.
/// The end of every graceful stop: the server answered all `requests` sent and force-closed
/// nothing, sessions and connections were released before the exit, the exit code is 0, and
/// the report says the signal stopped every component, in dependency order.
async fn assert_stopped_gracefully(stack: &mut Stack, requests: u64) -> Report {
    let server = stack.wait_stopped(Duration::from_secs(10)).await;
    assert_answered_all(server, requests);
    assert_released(stack).await;
    let status = stack.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", stack.log());
    let report = report_of(stack, Some(0));
    assert_signalled(&report);
    assert_eq!(outcomes(&report), expected(Outcome::Stopped, &[]));
    assert_stopped_in_order(&report);
    report
}

fn report_of(stack: &Stack, code: Option<i32>) -> Report {
    let report = stack
        .report()
        .unwrap_or_else(|| panic!("no report file written:\n{}", stack.log()));
    assert_eq!(Some(report.exit_code), code, "{}", stack.log());
    report
}

fn assert_signalled(report: &Report) {
    assert_eq!(report.trigger.kind, TriggerKind::Signal);
    assert_eq!(report.trigger.detail, "SIGTERM");
}

/// The server received exactly the requests the clients got answers to (so none reached it
/// and went unanswered: the connects reset in the listener's backlog as it closed,
/// `LoadReport::unaccepted`, never reached the service), and cut no connection off.
fn assert_answered_all(server: ServerCounts, answered: u64) {
    assert_eq!(
        (server.requests, server.force_closed),
        (answered, 0),
        "(requests received, connections cut off) by the server, against those answered"
    );
}

/// Every job is done or back in the queue: none in hand, none failed.
fn assert_jobs_kept(counts: JobCounts, jobs: usize) {
    assert_eq!(
        (counts.running, counts.failed, counts.total()),
        (0, 0, jobs as i64),
        "jobs lost or left in hand: {counts:?}"
    );
}

/// After a forced exit or a lost session, a job in hand stays leased until its lease (1 s)
/// expires; the next instance's worker queues it again at its start, as this does.
async fn reclaim_left_jobs(jobs: &Jobs) -> JobCounts {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        jobs.reclaim_expired().await;
        let counts = jobs.counts().await;
        if counts.running == 0 || Instant::now() > until {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Jobs enqueued (`jobs` of `ms` each) and four clients on `/work?ms=20`, once `answered` of
/// their requests were answered: the load the faults below meet.
async fn load_up(stack: &Stack, (jobs, ms): (usize, u64), answered: u64) -> Load {
    enqueue(stack.addr(), jobs, ms).await;
    let load = Load::start(stack.addr(), "/work?ms=20", 4);
    wait_answered(&load, answered).await;
    load
}

/// Waits until `load` has had `n` answers.
async fn wait_answered(load: &Load, n: u64) {
    let until = Instant::now() + Duration::from_secs(10);
    while load.report().succeeded < n {
        assert!(
            Instant::now() < until,
            "the load got no answers: {:?}",
            load.report()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until connects to `stack` are refused: its listener has closed, which it does at the
/// server's stop turn.
async fn wait_listener_closed(stack: &Stack) {
    let until = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(stack.addr()).await.is_ok() {
        assert!(Instant::now() < until, "the listener never closed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The service's own check that it is live before the fault: it holds PostgreSQL sessions, a
/// named Redis connection and a subscription, so the counters that must reach zero later can
/// see them.
async fn assert_holds_connections(stack: &Stack) {
    let now = held(stack).await;
    assert!(
        now.pg_sessions >= 1 && now.redis_clients >= 1 && now.subscribers == 1,
        "the counters do not see the running service: {now:?}"
    );
}

async fn redis_connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drops_nothing_and_leaves_nothing() {
    if !servers_available().await {
        return;
    }
    let config = StackConfig::new(BIN).args(&["--drain-delay", "500ms"]);
    let jobs = Jobs::connect(config.queue()).await;
    let mut stack = config.start().await;
    assert_holds_connections(&stack).await;
    // The subscriber is live: a message published now is handled (counted in Redis).
    let mut redis = redis_connection(stack.redis_url()).await;
    let _: i64 = redis::cmd("PUBLISH")
        .arg(stack.name())
        .arg("hello")
        .query_async(&mut redis)
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while redis::cmd("GET")
        .arg(format!("{}:messages", stack.name()))
        .query_async::<Option<i64>>(&mut redis)
        .await
        .unwrap()
        != Some(1)
    {
        assert!(Instant::now() < until, "the subscriber handled no message");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let load = load_up(&stack, (30, 40), 20).await;
    jobs.wait_for(Duration::from_secs(10), |c| c.done >= 3)
        .await;

    let before = load.report().succeeded;
    stack.signal("TERM");
    let answered = load.until_refused(Duration::from_secs(10)).await;
    answered.assert_none_lost();
    assert!(
        answered.succeeded > before,
        "nothing served during the drain: {answered:?}"
    );
    let _ = assert_stopped_gracefully(&mut stack, 30 + answered.succeeded).await;
    assert_jobs_kept(jobs.counts().await, 30);
    assert_nothing_left(&stack).await;
    jobs.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_start_up_rolls_back_and_starts_nothing_more() {
    if !servers_available().await {
        return;
    }
    // The warm-up, which the server waits for, takes 5 s; the worker does not wait for it.
    let config = StackConfig::new(BIN).args(&["--slow-start", "5000"]);
    let jobs = Jobs::connect(config.queue()).await;
    jobs.enqueue(10, 200).await;
    let mut stack = config.spawn().await;
    // The worker has started and holds a job; the server has not started.
    jobs.wait_for(Duration::from_secs(10), |c| c.running == 1)
        .await;
    assert!(held(&stack).await.pg_sessions >= 1);
    assert!(
        tokio::net::TcpStream::connect(stack.addr()).await.is_err(),
        "listening before start-up ended"
    );

    let signalled = Instant::now();
    stack.signal("TERM");
    let server = stack.wait_stopped(Duration::from_secs(10)).await;
    assert_answered_all(server, 0);
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "start-up not abandoned at the signal: stopped after {:?}",
        signalled.elapsed()
    );
    assert_released(&mut stack).await;
    let status = stack.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", stack.log());

    let report = report_of(&stack, Some(0));
    assert_signalled(&report);
    assert_eq!(report.drain_delay_ms, 0.0, "no drain: nothing was ready");
    assert_eq!(
        outcomes(&report),
        expected(
            Outcome::Stopped,
            &[
                ("warmup", Outcome::NotStarted),
                ("http", Outcome::NotStarted)
            ]
        )
    );
    let http = report.component("http").unwrap();
    assert_eq!(
        (http.start_began_ms, http.stop_began_ms),
        (None, None),
        "the server's start never began, so it was not stopped either"
    );
    assert_stopped_in_order(&report);
    assert!(tokio::net::TcpStream::connect(stack.addr()).await.is_err());
    // The job in hand was finished or handed back by the rolled-back worker.
    assert_jobs_kept(jobs.counts().await, 10);
    assert_nothing_left(&stack).await;
    jobs.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_forces_exit_130_with_the_report_written() {
    if !servers_available().await {
        return;
    }
    let config = StackConfig::new(BIN).args(&["--drain-delay", "3s"]);
    let jobs = Jobs::connect(config.queue()).await;
    let mut stack = config.start().await;
    let load = load_up(&stack, (10, 300), 10).await;
    jobs.wait_for(Duration::from_secs(10), |c| c.running == 1)
        .await;

    stack.signal("TERM");
    // Served through the first part of the drain; then the load balancer has taken the
    // instance out and sends nothing more.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = load.report().succeeded;
    let answered = load.stop().await;
    answered.assert_none_lost();
    // The listener was open throughout: every connect was accepted.
    assert_eq!(answered.unaccepted, 0, "{answered:?}");
    assert!(answered.succeeded >= before);

    let second = Instant::now();
    stack.signal("TERM");
    let status = stack.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(130), "{}", stack.log());
    assert!(
        second.elapsed() < Duration::from_secs(1),
        "the second signal did not end the drain at once: {:?}",
        second.elapsed()
    );

    let report = report_of(&stack, Some(130));
    assert_signalled(&report);
    // Cut during the drain: nothing had begun to stop, everything was cut off.
    assert_eq!(outcomes(&report), expected(Outcome::TimedOut, &[]));
    for component in &report.components {
        assert_eq!(component.stop_began_ms, None, "{component:?}");
        assert!(
            component
                .error
                .as_deref()
                .is_some_and(|e| e.contains("second signal (SIGTERM)")),
            "{component:?}"
        );
    }
    // The job in hand when the process ended is still leased to it; it comes back after its
    // lease, and no job is lost.
    assert!(jobs.counts().await.running <= 1);
    assert_jobs_kept(reclaim_left_jobs(&jobs).await, 10);
    assert_nothing_left(&stack).await;
    jobs.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sessions_killed_during_the_drain_fail_nothing() {
    if !servers_available().await {
        return;
    }
    let config = StackConfig::new(BIN).args(&["--drain-delay", "1s"]);
    let jobs = Jobs::connect(config.queue()).await;
    let mut stack = config.start().await;
    let load = load_up(&stack, (20, 50), 20).await;
    jobs.wait_for(Duration::from_secs(10), |c| c.done >= 2)
        .await;

    stack.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // What a PostgreSQL restart or failover does to the service's sessions.
    let killed = terminate_sessions(stack.name()).await;
    assert!(killed >= 1, "no session to kill");
    let at_kill = load.report().succeeded;

    let answered = load.until_refused(Duration::from_secs(10)).await;
    answered.assert_none_lost();
    assert!(
        answered.succeeded > at_kill,
        "nothing served after the sessions were killed: {answered:?}"
    );
    let _ = assert_stopped_gracefully(&mut stack, 20 + answered.succeeded).await;
    // A job whose end could not be written (its session was the one killed) is still leased
    // and comes back after its lease; every other one is done or handed back.
    let counts = jobs.counts().await;
    assert!(counts.running <= 1 && counts.failed == 0, "{counts:?}");
    assert_jobs_kept(reclaim_left_jobs(&jobs).await, 20);
    assert_nothing_left(&stack).await;
    jobs.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_at_the_stop_turn_holds_nothing_up_and_is_not_reconnected() {
    if !servers_available().await || !redis_server_installed() {
        return;
    }
    let mut redis = PrivateRedis::start().await;
    let config = StackConfig::new(BIN)
        .redis_url(redis.url())
        .args(&["--drain-delay", "500ms"]);
    let jobs = Jobs::connect(config.queue()).await;
    let mut stack = config.start().await;
    assert_holds_connections(&stack).await;
    let load = load_up(&stack, (10, 50), 10).await;

    stack.signal("TERM");
    // A request that is still running at the server's stop turn holds the turn of Redis (the
    // server depends on it) until it ends: Redis dies in between.
    // 2.5 s: a connect racing the listener's close waits for TCP's one-second SYN retransmit
    // (lifecycle-http drops new SYNs before its last accepts, so they are refused, not reset),
    // and the listener must be seen closed before this request ends.
    let long = Load::start(stack.addr(), "/work?ms=2500", 1);
    let long = tokio::spawn(long.until_refused(Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answered = load.stop().await;
    answered.assert_none_lost();

    // The listener closes at the server's stop turn, which is also the subscriber's.
    wait_listener_closed(&stack).await;
    assert!(
        !long.is_finished(),
        "the long request ended before the stop turn"
    );
    redis.kill().await;
    // Back at once, empty: any reconnect by the stopping service would show in CLIENT LIST.
    redis.restart().await;

    let long = long.await.unwrap();
    long.assert_none_lost();
    let report =
        assert_stopped_gracefully(&mut stack, 10 + answered.succeeded + long.succeeded).await;
    let http = report.component("http").unwrap();
    assert!(
        // Sent at the signal, it ends 2.5 s later, about 2 s into the server's stop.
        http.stop_ended_ms.unwrap() - http.stop_began_ms.unwrap() > 600.0,
        "the server's stop was not held by the long request: {http:?}"
    );
    assert_jobs_kept(jobs.counts().await, 10);
    assert_nothing_left(&stack).await;
    jobs.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_stop_is_cut_off_and_its_dependencies_still_close() {
    if !servers_available().await {
        return;
    }
    // The worker's stop never returns; its stop timeout is 1 s.
    let config = StackConfig::new(BIN).args(&["--drain-delay", "300ms", "--hang-stop", "worker"]);
    let jobs = Jobs::connect(config.queue()).await;
    let mut stack = config.start().await;
    let load = load_up(&stack, (20, 50), 20).await;
    jobs.wait_for(Duration::from_secs(10), |c| c.done >= 2)
        .await;

    stack.signal("TERM");
    let answered = load.until_refused(Duration::from_secs(10)).await;
    answered.assert_none_lost();
    let server = stack.wait_stopped(Duration::from_secs(10)).await;
    assert_answered_all(server, 20 + answered.succeeded);
    assert_released(&mut stack).await;
    let status = stack.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(1), "a stop timed out: {}", stack.log());

    let report = report_of(&stack, Some(1));
    assert_signalled(&report);
    assert_eq!(
        outcomes(&report),
        expected(Outcome::Stopped, &[("worker", Outcome::TimedOut)])
    );
    let (worker, db) = (
        report.component("worker").unwrap(),
        report.component("db").unwrap(),
    );
    let (began, ended) = (worker.stop_began_ms.unwrap(), worker.stop_ended_ms.unwrap());
    assert!(
        (900.0..2000.0).contains(&(ended - began)),
        "cut off at its 1 s stop timeout: {worker:?}"
    );
    assert!(
        db.stop_began_ms.unwrap() >= ended,
        "the pool closed under the worker"
    );
    assert_stopped_in_order(&report);
    // The worker's own tasks end at its turn even though its stop hook hangs: the job in hand
    // was finished.
    assert_jobs_kept(jobs.counts().await, 20);
    assert_nothing_left(&stack).await;
    jobs.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_then_restart_loses_no_job() {
    if !servers_available().await {
        return;
    }
    let config = StackConfig::new(BIN);
    let jobs = Jobs::connect(config.queue()).await;
    let mut first = config.start().await;
    // The first job takes a second, so it is surely in hand at the kill; ten short ones follow.
    enqueue(first.addr(), 1, 1000).await;
    enqueue(first.addr(), 10, 50).await;
    let load = Load::start(first.addr(), "/work?ms=20", 4);
    wait_answered(&load, 10).await;
    jobs.wait_for(Duration::from_secs(10), |c| c.running == 1)
        .await;

    first.signal("KILL");
    let status = first.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(status.signal(), Some(9));
    // The load's counters see requests cut by a kill: the same counters find none lost in the
    // other tests.
    let cut = load.until_refused(Duration::from_secs(10)).await;
    assert!(
        cut.dropped > 0,
        "no request seen dropped by SIGKILL: {cut:?}"
    );
    assert!(first.report().is_none(), "SIGKILL leaves no report");
    // The kernel closed the killed process's connections; the servers let them go.
    assert_nothing_left(&first).await;
    // Its job in hand is still leased to it.
    assert_eq!(jobs.counts().await.running, 1);

    // The next instance on the same queue takes the job up once its lease expired.
    let mut second = config.start().await;
    let load = Load::start(second.addr(), "/work?ms=20", 4);
    let counts = jobs
        .wait_for(Duration::from_secs(20), |c| c.done == 11)
        .await;
    assert_eq!(counts.total(), 11);
    wait_answered(&load, 10).await;
    second.signal("TERM");
    let answered = load.until_refused(Duration::from_secs(10)).await;
    answered.assert_none_lost();
    let server = second.wait_stopped(Duration::from_secs(10)).await;
    assert_answered_all(server, answered.succeeded);
    assert_released(&mut second).await;
    let status = second.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", second.log());
    let report = report_of(&second, Some(0));
    assert_signalled(&report);
    assert_eq!(outcomes(&report), expected(Outcome::Stopped, &[]));
    assert_nothing_left(&second).await;
    jobs.remove().await;
}
