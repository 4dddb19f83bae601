//! The testing kit as an adopter uses it: a service's builder run by `TestRun`, triggered every
//! way, with faults injected by name and assertions on the timeline.

use std::time::Duration;

use lifecycle_core::testing::{Fault, NotReady, TestRun};
use lifecycle_core::{
    exit_code, LifecycleBuilder, OnFailure, Outcome, Phase, Registration, Signal, TriggerKind,
    Worker,
};

/// A service's wiring: `http` and `mailer` use `db`; a drain delay of 5 s.
fn service() -> LifecycleBuilder {
    let idle = || {
        Worker::new(|ctx| async move {
            ctx.token().cancelled().await;
            Ok::<_, std::io::Error>(())
        })
    };
    lifecycle_core::Lifecycle::builder()
        .drain_delay(Duration::from_secs(5))
        .register(Registration::new("db", idle()))
        .register(Registration::new("mailer", idle()).depends_on("db"))
        .register(Registration::new("http", idle()).depends_on("db"))
}

#[tokio::test(start_paused = true)]
async fn a_signal_drains_then_stops_in_reverse_order() {
    let run = TestRun::start(service()).unwrap();
    run.ready().await.unwrap();
    run.signal(Signal::Terminate);
    let timeline = run.finish().await;
    timeline
        .assert_exit_code(exit_code::SUCCESS)
        .assert_readiness_off_before_any_stop()
        .assert_stopped_before("http", "db")
        .assert_stopped_before("mailer", "db");
    assert_eq!(timeline.report().trigger.kind, TriggerKind::Signal);
    assert_eq!(timeline.report().trigger.detail, "SIGTERM");
    let draining = timeline.entered(Phase::Draining).unwrap();
    let stopping = timeline.entered(Phase::Stopping).unwrap();
    assert_eq!(
        stopping - draining,
        5000.0,
        "the drain delay, on the paused clock"
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_is_reported_with_its_reason() {
    let run = TestRun::start(service()).unwrap();
    run.ready().await.unwrap();
    run.request("deploy 42");
    let timeline = run.finish().await;
    assert_eq!(timeline.report().trigger.kind, TriggerKind::Requested);
    assert_eq!(timeline.report().trigger.detail, "deploy 42");
}

#[tokio::test(start_paused = true)]
async fn a_component_failure_triggers_the_shutdown() {
    let run = TestRun::start(service()).unwrap();
    run.ready().await.unwrap();
    run.fail("mailer", "smtp unreachable");
    let timeline = run.finish().await;
    timeline
        .assert_outcome("mailer", Outcome::Failed)
        .assert_outcome("db", Outcome::Stopped)
        .assert_exit_code(exit_code::FAILURE);
    assert_eq!(timeline.report().trigger.detail, "mailer: smtp unreachable");
}

#[tokio::test(start_paused = true)]
async fn a_second_signal_gives_the_forced_exit_report() {
    let run = TestRun::start(service().inject_fault("http", Fault::StopHangs)).unwrap();
    run.ready().await.unwrap();
    run.signal(Signal::Terminate);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let timeline = run.second_signal(Signal::Terminate);
    timeline.assert_exit_code(exit_code::FORCED);
    let http = timeline.component("http");
    assert_eq!(http.outcome, Outcome::TimedOut);
    assert_eq!(
        http.error.as_deref(),
        Some("cut off by forced exit: second signal (SIGTERM)")
    );
}

#[tokio::test(start_paused = true)]
async fn each_start_fault_rolls_back_and_is_never_stopped() {
    for (fault, outcome) in [
        (Fault::StartFails, Outcome::Failed),
        (Fault::StartPanics, Outcome::Panicked),
        (Fault::StartHangs, Outcome::TimedOut),
    ] {
        let run = TestRun::start(service().inject_fault("db", fault)).unwrap();
        let not_ready: NotReady = run.ready().await.unwrap_err();
        assert!(
            matches!(not_ready.phase, Phase::Stopping | Phase::Stopped),
            "{not_ready}"
        );
        run.finish()
            .await
            .assert_outcome("db", outcome)
            .assert_never_stopped("db")
            .assert_never_started("http")
            .assert_never_started("mailer")
            .assert_exit_code(exit_code::FAILURE);
    }
}

#[tokio::test(start_paused = true)]
async fn each_stop_fault_is_reported_and_the_dependencies_still_stop() {
    for (fault, outcome) in [
        (Fault::StopFails, Outcome::Failed),
        (Fault::StopPanics, Outcome::Panicked),
        (Fault::StopHangs, Outcome::TimedOut),
    ] {
        let run = TestRun::start(service().inject_fault("http", fault)).unwrap();
        run.ready().await.unwrap();
        run.signal(Signal::Terminate);
        run.finish()
            .await
            .assert_outcome("http", outcome)
            .assert_outcome("db", Outcome::Stopped)
            .assert_stopped_before("http", "db")
            .assert_exit_code(exit_code::FAILURE);
    }
}

#[tokio::test(start_paused = true)]
async fn a_fault_at_run_time_meets_the_restart_policy() {
    let builder = service()
        .register(
            Registration::new(
                "cache",
                Worker::new(|ctx| async move {
                    ctx.token().cancelled().await;
                    Ok::<_, std::io::Error>(())
                }),
            )
            .on_failure(OnFailure::restart(2)),
        )
        .inject_fault("cache", Fault::FailsAfter(Duration::from_secs(1)));
    let run = TestRun::start(builder).unwrap();
    run.ready().await.unwrap();
    // Three runs fail a second after their start (backoffs 100 ms and 200 ms): no restart left.
    let timeline = tokio::time::timeout(Duration::from_secs(60), run.finish())
        .await
        .expect("the exhausted restarts shut down");
    timeline
        .assert_outcome("cache", Outcome::Failed)
        .assert_exit_code(exit_code::FAILURE);
    assert_eq!(
        timeline.report().trigger.detail,
        "cache: injected fault: FailsAfter(1s) (after 2 restarts)"
    );
}

#[test]
#[should_panic(expected = "`db` did not stop before `http` began to")]
fn a_wrong_order_assertion_fails() {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(async {
            let run = TestRun::start(service()).unwrap();
            run.ready().await.unwrap();
            run.request("test over");
            run.finish().await.assert_stopped_before("db", "http");
        });
}

#[test]
#[should_panic(expected = "exit code 0, expected 1")]
fn a_wrong_exit_code_assertion_fails() {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(async {
            let run = TestRun::start(service()).unwrap();
            run.ready().await.unwrap();
            run.request("test over");
            run.finish().await.assert_exit_code(exit_code::FAILURE);
        });
}

#[test]
#[should_panic(expected = "inject_fault: no component named `dbb`")]
fn a_fault_for_an_unknown_component_is_refused() {
    let _ = service().inject_fault("dbb", Fault::StopHangs);
}
