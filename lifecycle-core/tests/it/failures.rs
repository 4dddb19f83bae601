//! What goes wrong, and what the lifecycle does about it: failed, hung and panicking starts
//! and stops, run-time failures under each policy, and the shutdown budget. On tokio's paused
//! clock.

use crate::common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{builder, request_when_ready, secs, shutdown_when_ready, Act, Event, Log, Probe};
use lifecycle_core::{
    async_trait, exit_code, BoxError, Component, Context, Lifecycle, OnFailure, Outcome,
    Registration, TriggerKind, Worker,
};
use tokio::time::Instant;

/// A chain `a <- b <- c <- d` where `c` starts with `act`.
fn chain_with_start(log: &Log, act: Act) -> Lifecycle {
    builder()
        .register(Registration::new("a", Probe::new("a", log)))
        .register(Registration::new("b", Probe::new("b", log)).depends_on("a"))
        .register(
            Registration::new("c", Probe::new("c", log).start(act))
                .depends_on("b")
                .start_timeout(secs(10)),
        )
        .register(Registration::new("d", Probe::new("d", log)).depends_on("c"))
        .build()
        .unwrap()
}

fn assert_rolled_back(log: &Log, report: &lifecycle_core::Report, c: Outcome) {
    assert_eq!(log.order(Event::StopBegan), ["b", "a"], "{report}");
    assert_eq!(log.times("d", Event::StartBegan), []);
    assert_eq!(report.component("c").unwrap().outcome, c);
    assert_eq!(report.component("c").unwrap().stop_began_ms, None);
    assert_eq!(report.component("d").unwrap().outcome, Outcome::NotStarted);
    for name in ["a", "b"] {
        assert_eq!(
            report.component(name).unwrap().outcome,
            Outcome::Stopped,
            "{report}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn failed_start_rolls_back_what_started() {
    let log = Log::default();
    let report = chain_with_start(&log, Act::Fail).run().await;
    assert_rolled_back(&log, &report, Outcome::Failed);
    assert_eq!(report.exit_code(), exit_code::FAILURE);
    assert_eq!(report.trigger.kind, TriggerKind::StartFailed);
    assert_eq!(
        report.trigger.detail,
        "c: start failed: scripted start error"
    );
}

#[tokio::test(start_paused = true)]
async fn panicking_start_rolls_back() {
    let log = Log::default();
    let report = chain_with_start(&log, Act::Panic).run().await;
    assert_rolled_back(&log, &report, Outcome::Panicked);
    assert_eq!(report.exit_code(), exit_code::FAILURE);
    assert_eq!(
        report.component("c").unwrap().error.as_deref(),
        Some("start panicked: scripted start panic")
    );
}

#[tokio::test(start_paused = true)]
async fn start_timeout_rolls_back() {
    let log = Log::default();
    let began = Instant::now();
    let report = chain_with_start(&log, Act::Hang).run().await;
    assert_rolled_back(&log, &report, Outcome::TimedOut);
    assert_eq!(report.exit_code(), exit_code::FAILURE);
    assert_eq!(
        report.component("c").unwrap().error.as_deref(),
        Some("start timed out after 10s")
    );
    assert_eq!(log.once("b", Event::StopBegan).unwrap() - began, secs(10));
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_startup_abandons_the_start_in_progress() {
    let log = Log::default();
    let lifecycle = chain_with_start(&log, Act::secs(5));
    let handle = lifecycle.handle();
    let trigger_at = Instant::now() + secs(1);
    tokio::spawn(async move {
        tokio::time::sleep_until(trigger_at).await;
        handle.shutdown("deploy cancelled");
    });
    let report = lifecycle.run().await;
    assert_rolled_back(&log, &report, Outcome::NotStarted);
    // An operator's shutdown is not a failure; the drain delay is skipped, readiness never came.
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
    assert_eq!(report.drain_delay_ms, 0.0);
    assert_eq!(log.once("b", Event::StopBegan), Some(trigger_at));
    assert!(log
        .events()
        .iter()
        .all(|(_, e, t)| *e != Event::StartEnded || *t < trigger_at));
}

#[tokio::test(start_paused = true)]
async fn hung_stop_times_out_and_its_dependencies_still_stop() {
    let log = Log::default();
    let report = request_when_ready(
        builder()
            .register(Registration::new("db", Probe::new("db", &log)))
            .register(
                Registration::new("worker", Probe::new("worker", &log).stop(Act::Hang))
                    .depends_on("db")
                    .stop_timeout(secs(3)),
            ),
        secs(1),
    )
    .await;
    let worker = report.component("worker").unwrap();
    assert_eq!(worker.outcome, Outcome::TimedOut);
    assert_eq!(
        worker.stop_ended_ms.unwrap() - worker.stop_began_ms.unwrap(),
        3000.0
    );
    assert!(
        worker
            .error
            .as_deref()
            .unwrap()
            .starts_with("stop timed out after 3s"),
        "{report}"
    );
    assert_eq!(report.component("db").unwrap().outcome, Outcome::Stopped);
    assert_eq!(
        log.once("db", Event::StopBegan).unwrap() - log.once("worker", Event::StopBegan).unwrap(),
        secs(3)
    );
    assert_eq!(report.exit_code(), exit_code::FAILURE);
}

#[tokio::test(start_paused = true)]
async fn panicking_stop_is_reported_and_the_chain_goes_on() {
    let log = Log::default();
    let report = request_when_ready(
        builder()
            .register(Registration::new("c", Probe::new("c", &log)))
            .register(
                Registration::new("b", Probe::new("b", &log).stop(Act::Panic)).depends_on("c"),
            )
            .register(Registration::new("a", Probe::new("a", &log)).depends_on("b")),
        secs(1),
    )
    .await;
    assert_eq!(log.order(Event::StopBegan), ["a", "b", "c"]);
    let b = report.component("b").unwrap();
    assert_eq!(b.outcome, Outcome::Panicked);
    assert_eq!(
        b.error.as_deref(),
        Some("stop panicked: scripted stop panic")
    );
    assert_eq!(report.component("c").unwrap().outcome, Outcome::Stopped);
    assert_eq!(log.times("c", Event::StopEnded).len(), 1);
    assert_eq!(report.exit_code(), exit_code::FAILURE);
}

#[tokio::test(start_paused = true)]
async fn failing_stop_is_reported() {
    let log = Log::default();
    let report = request_when_ready(
        builder().register(Registration::new(
            "a",
            Probe::new("a", &log).stop(Act::Fail),
        )),
        Duration::ZERO,
    )
    .await;
    let a = report.component("a").unwrap();
    assert_eq!(
        (a.outcome, a.error.as_deref()),
        (Outcome::Failed, Some("stop failed: scripted stop error"))
    );
    assert_eq!(report.exit_code(), exit_code::FAILURE);
}

/// Spawns a task that ignores its token, so only the abort at the deadline ends it.
struct Stubborn(Arc<AtomicU32>);

#[async_trait]
impl Component for Stubborn {
    async fn start(&self, ctx: &Context) -> Result<(), BoxError> {
        for _ in 0..3 {
            let ended = self.0.clone();
            ctx.spawn(async move {
                let _count_on_drop = DropCounter(ended);
                std::future::pending::<()>().await;
            });
        }
        Ok(())
    }
}

struct DropCounter(Arc<AtomicU32>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn tasks_left_at_the_stop_timeout_are_aborted_and_counted() {
    let ended = Arc::new(AtomicU32::new(0));
    let report = request_when_ready(
        builder()
            .register(Registration::new("stubborn", Stubborn(ended.clone())).stop_timeout(secs(2))),
        Duration::ZERO,
    )
    .await;
    let stubborn = report.component("stubborn").unwrap();
    assert_eq!(stubborn.outcome, Outcome::TimedOut);
    assert_eq!(
        stubborn.error.as_deref(),
        Some("stop timed out after 2s; 3 tasks aborted")
    );
    tokio::task::yield_now().await;
    assert_eq!(
        ended.load(Ordering::SeqCst),
        3,
        "every stubborn task was dropped"
    );
}

/// A worker that fails at run time after `after`, the first `failures` times it runs.
fn flaky_worker(failures: u32, after: Duration, runs: Arc<AtomicU32>) -> impl Component {
    Worker::new(move |ctx: Context| {
        let run = runs.fetch_add(1, Ordering::SeqCst);
        async move {
            if run < failures {
                tokio::time::sleep(after).await;
                return Err(format!("lost connection (run {run})"));
            }
            ctx.token().cancelled().await;
            Ok(())
        }
    })
}

#[tokio::test(start_paused = true)]
async fn run_time_failure_shuts_everything_down_by_default() {
    let log = Log::default();
    let runs = Arc::new(AtomicU32::new(0));
    let lifecycle = builder()
        .register(Registration::new("db", Probe::new("db", &log)))
        .register(Registration::new("worker", flaky_worker(1, secs(2), runs)).depends_on("db"))
        .build()
        .unwrap();
    let report = lifecycle.run().await;
    assert_eq!(report.trigger.kind, TriggerKind::ComponentFailed);
    assert_eq!(report.trigger.detail, "worker: lost connection (run 0)");
    assert_eq!(report.exit_code(), exit_code::FAILURE);
    let worker = report.component("worker").unwrap();
    assert_eq!(worker.outcome, Outcome::Failed);
    assert_eq!(
        worker.error.as_deref(),
        Some("failed at run time: lost connection (run 0)")
    );
    assert_eq!(report.component("db").unwrap().outcome, Outcome::Stopped);
}

#[tokio::test(start_paused = true)]
async fn panicking_worker_is_a_run_time_failure() {
    let lifecycle = builder()
        .register(Registration::new(
            "worker",
            Worker::new(|_ctx| async {
                tokio::time::sleep(secs(1)).await;
                panic!("index out of bounds");
                #[allow(unreachable_code)]
                Ok::<_, std::io::Error>(())
            }),
        ))
        .build()
        .unwrap();
    let report = lifecycle.run().await;
    assert_eq!(
        report.trigger.detail,
        "worker: panicked: index out of bounds"
    );
    assert_eq!(report.exit_code(), exit_code::FAILURE);
}

#[tokio::test(start_paused = true)]
async fn restart_policy_restarts_with_backoff() {
    let runs = Arc::new(AtomicU32::new(0));
    let policy = OnFailure::Restart {
        max_restarts: 3,
        initial_backoff: secs(1),
        max_backoff: secs(10),
    };
    let lifecycle = builder()
        .register(
            Registration::new("worker", flaky_worker(2, secs(1), runs.clone())).on_failure(policy),
        )
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let began = Instant::now();
    // Run 0 fails at 1 s, backoff 1 s; run 1 starts at 2 s, fails at 3 s, backoff 2 s; run 2
    // starts at 5 s and keeps running.
    let watcher = tokio::spawn(async move {
        tokio::time::sleep_until(began + Duration::from_millis(5500)).await;
        let states = handle.states();
        handle.shutdown("test over");
        states
    });
    let report = lifecycle.run().await;
    assert_eq!(
        watcher.await.unwrap()[0].1,
        lifecycle_core::ComponentState::Running
    );
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
    let worker = report.component("worker").unwrap();
    assert_eq!(worker.outcome, Outcome::Stopped);
    assert_eq!(worker.start_began_ms, Some(5000.0));
}

#[tokio::test(start_paused = true)]
async fn too_many_restarts_shut_down() {
    let runs = Arc::new(AtomicU32::new(0));
    let lifecycle = builder()
        .register(
            Registration::new("worker", flaky_worker(u32::MAX, secs(1), runs.clone()))
                .on_failure(OnFailure::restart(2)),
        )
        .build()
        .unwrap();
    let report = lifecycle.run().await;
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(report.trigger.kind, TriggerKind::ComponentFailed);
    assert_eq!(
        report.trigger.detail,
        "worker: lost connection (run 2) (after 2 restarts)"
    );
    assert_eq!(report.exit_code(), exit_code::FAILURE);
}

#[tokio::test(start_paused = true)]
async fn ignore_policy_keeps_running() {
    let runs = Arc::new(AtomicU32::new(0));
    let lifecycle = builder()
        .register(
            Registration::new("worker", flaky_worker(1, secs(1), runs.clone()))
                .on_failure(OnFailure::Ignore),
        )
        .build()
        .unwrap();
    shutdown_when_ready(&lifecycle, secs(10));
    let began = Instant::now();
    let report = lifecycle.run().await;
    assert_eq!(began.elapsed(), secs(10));
    assert_eq!(report.trigger.kind, TriggerKind::Requested);
    assert_eq!(report.exit_code(), exit_code::SUCCESS);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// Fails at run time 100 ms after each start; its stop hangs until the stop timeout.
struct CrashLooping;

#[async_trait]
impl Component for CrashLooping {
    async fn start(&self, ctx: &Context) -> Result<(), BoxError> {
        let ctx = ctx.clone();
        ctx.clone().spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            ctx.report_failure("crashed");
        });
        Ok(())
    }

    async fn stop(&self, _ctx: &Context) -> Result<(), BoxError> {
        std::future::pending().await
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_a_restart_waits_for_it_without_holding_other_branches() {
    let log = Log::default();
    let lifecycle = builder()
        .register(Registration::new("db", Probe::new("db", &log)).stop_timeout(secs(1)))
        .register(
            Registration::new("looping", CrashLooping)
                .depends_on("db")
                .stop_timeout(secs(5))
                .on_failure(OnFailure::restart(5)),
        )
        .register(Registration::new("cache", Probe::new("cache", &log)))
        .register(
            Registration::new("http", Probe::new("http", &log).stop(Act::secs(1)))
                .depends_on("cache"),
        )
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let began = Instant::now();
    tokio::spawn(async move {
        // The failure comes at 0.1 s; the restart's stop of the failed run hangs until 5.1 s.
        tokio::time::sleep(Duration::from_millis(500)).await;
        handle.shutdown("deploy");
    });
    let report = lifecycle.run().await;
    // The other branch stopped at once; db waited for the restart's stop to give up.
    assert_eq!(
        log.once("http", Event::StopBegan).unwrap() - began,
        Duration::from_millis(500)
    );
    assert_eq!(
        log.once("cache", Event::StopBegan).unwrap() - began,
        Duration::from_millis(1500)
    );
    assert_eq!(
        log.once("db", Event::StopBegan).unwrap() - began,
        Duration::from_millis(5100)
    );
    let looping = report.component("looping").unwrap();
    assert_eq!(looping.outcome, Outcome::Failed, "{report}");
    assert_eq!(
        looping.error.as_deref(),
        Some("restart abandoned: the shutdown began")
    );
    assert_eq!(report.exit_code(), exit_code::FAILURE);
}

/// A stop that blocks its thread for 10 s: tokio's timer cannot cut it, but time passes.
struct BlocksItsThread;

#[async_trait]
impl Component for BlocksItsThread {
    async fn start(&self, _ctx: &Context) -> Result<(), BoxError> {
        Ok(())
    }

    async fn stop(&self, _ctx: &Context) -> Result<(), BoxError> {
        // On the paused clock, advancing time models a blocking call that returns late.
        tokio::time::advance(secs(10)).await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn exhausted_budget_cuts_the_rest_with_the_deadline_code() {
    let log = Log::default();
    let report = request_when_ready(
        builder()
            .shutdown_budget(secs(3))
            .register(Registration::new("db", Probe::new("db", &log)).stop_timeout(secs(1)))
            .register(
                Registration::new("blocking", BlocksItsThread)
                    .depends_on("db")
                    .stop_timeout(secs(2)),
            ),
        secs(1),
    )
    .await;
    assert_eq!(report.exit_code(), exit_code::DEADLINE, "{report}");
    let blocking = report.component("blocking").unwrap();
    assert_eq!(blocking.outcome, Outcome::TimedOut);
    assert!(
        blocking
            .error
            .as_deref()
            .unwrap()
            .ends_with("it blocked its thread"),
        "{report}"
    );
    let db = report.component("db").unwrap();
    assert_eq!(db.outcome, Outcome::TimedOut);
    assert!(
        db.error
            .as_deref()
            .unwrap()
            .starts_with("shutdown budget exhausted"),
        "{report}"
    );
    assert_eq!(log.times("db", Event::StopBegan), []);
}

/// A component whose stop never ends while it holds `items`: what its `held_by` says.
struct Holding(Vec<String>);

#[async_trait]
impl Component for Holding {
    async fn start(&self, _: &Context) -> Result<(), BoxError> {
        Ok(())
    }

    async fn stop(&self, _: &Context) -> Result<(), BoxError> {
        std::future::pending().await
    }

    fn held_by(&self) -> Vec<String> {
        self.0.clone()
    }
}

#[tokio::test(start_paused = true)]
async fn a_stop_cut_at_its_timeout_says_what_held_it() {
    let held = vec!["job 7 (running 3.0s)".to_owned()];
    let lifecycle = builder()
        .register(Registration::new("jobs", Holding(held.clone())).stop_timeout(secs(2)))
        .build()
        .unwrap();
    shutdown_when_ready(&lifecycle, secs(1));
    let report = lifecycle.run().await;
    let jobs = report.component("jobs").unwrap();
    assert_eq!(jobs.outcome, Outcome::TimedOut);
    assert_eq!(jobs.held_by, held);
    assert!(report
        .to_json()
        .contains(r#""held_by":["job 7 (running 3.0s)"]"#));
    assert!(
        report
            .to_string()
            .contains("  held by: job 7 (running 3.0s)"),
        "{report}"
    );
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_things_in_progress_make_a_short_report() {
    let held: Vec<String> = (0..10_000).map(|i| format!("request {i}")).collect();
    let lifecycle = builder()
        .register(Registration::new("http", Holding(held)).stop_timeout(secs(1)))
        .build()
        .unwrap();
    shutdown_when_ready(&lifecycle, secs(1));
    let report = lifecycle.run().await;
    let http = &report.component("http").unwrap().held_by;
    assert_eq!(http.len(), lifecycle_core::held_by::HELD_BY_LIMIT + 1);
    assert_eq!(http[0], "request 0");
    assert_eq!(http.last().unwrap(), "and 9990 more");
}

#[tokio::test(start_paused = true)]
async fn a_worker_cut_off_names_its_function_and_its_named_tasks() {
    let worker = Worker::new(|ctx: Context| async move {
        ctx.spawn_named("flush", std::future::pending::<()>());
        std::future::pending::<Result<(), BoxError>>().await
    });
    let lifecycle = builder()
        .register(Registration::new("pusher", worker).stop_timeout(secs(2)))
        .build()
        .unwrap();
    shutdown_when_ready(&lifecycle, secs(3));
    let report = lifecycle.run().await;
    let pusher = report.component("pusher").unwrap();
    assert_eq!(pusher.outcome, Outcome::TimedOut);
    assert_eq!(
        pusher.held_by,
        [
            r#"task "pusher" (running 5.0s)"#,
            r#"task "flush" (running 5.0s)"#
        ],
        "{report}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_component_the_budget_cuts_off_before_its_turn_says_what_held_it() {
    let report = request_when_ready(
        builder()
            .shutdown_budget(secs(3))
            .register(
                Registration::new("db", Holding(vec!["connection 1".into()])).stop_timeout(secs(1)),
            )
            .register(
                Registration::new("blocking", BlocksItsThread)
                    .depends_on("db")
                    .stop_timeout(secs(2)),
            ),
        secs(1),
    )
    .await;
    let db = report.component("db").unwrap();
    assert!(db
        .error
        .as_deref()
        .unwrap()
        .starts_with("shutdown budget exhausted"));
    assert_eq!(db.held_by, ["connection 1"], "{report}");
}

#[tokio::test(start_paused = true)]
async fn the_handle_says_what_each_component_holds_while_it_runs() {
    let lifecycle = builder()
        .register(Registration::new("jobs", Holding(vec!["job 1".into()])))
        .register(Registration::new("idle", Holding(vec![])))
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());
    let mut phase = handle.watch_phase();
    phase
        .wait_for(|p| *p == lifecycle_core::Phase::Ready)
        .await
        .unwrap();
    assert_eq!(
        handle.held_by(),
        [("jobs".to_owned(), vec!["job 1".to_owned()])]
    );
    handle.shutdown("test over");
    let report = run.await.unwrap();
    assert_eq!(report.component("jobs").unwrap().held_by.len(), 1);
}
