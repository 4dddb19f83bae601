//! Failures that come after the trigger, or where nobody was looking: each shows in the report,
//! in the component's health and in the exit code.

use crate::common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{builder, request_when_ready, secs, shutdown_when_ready, Log, Probe};
use lifecycle_core::{
    async_trait, exit_code, BoxError, Component, ComponentState, Context, Health, OnFailure,
    Outcome, Phase, Registration, TriggerKind, Worker,
};

/// A worker that waits for the shutdown to be requested (before its own stop turn), then does
/// what `then` says.
fn fails_in_the_drain(then: &'static str) -> impl Component {
    Worker::new(move |ctx| async move {
        ctx.lifecycle().shutdown_requested().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        match then {
            "error" => Err(std::io::Error::other("lost the broker")),
            _ => panic!("bug in the drain"),
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_worker_failing_in_the_drain_delay_is_reported() {
    let lifecycle = builder()
        .drain_delay(secs(1))
        .register(Registration::new("consumer", fails_in_the_drain("error")))
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    shutdown_when_ready(&lifecycle, secs(1));
    let health = tokio::spawn(async move {
        handle
            .watch_phase()
            .wait_for(|p| *p == Phase::Draining)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        handle.check_health().await
    });
    let report = lifecycle.run().await;
    assert_eq!(report.exit_code(), exit_code::FAILURE, "{report}");
    assert_eq!(report.trigger.kind, TriggerKind::Requested);
    let consumer = report.component("consumer").unwrap();
    assert_eq!(consumer.outcome, Outcome::Failed);
    assert_eq!(
        consumer.error.as_deref(),
        Some("failed at run time: lost the broker")
    );
    let health = health.await.unwrap();
    assert_eq!(health[0].state, ComponentState::Running);
    assert_eq!(
        health[0].health,
        Health::unhealthy("failed at run time: lost the broker")
    );
}

#[tokio::test(start_paused = true)]
async fn a_worker_panicking_in_the_drain_delay_is_reported() {
    let report = request_when_ready(
        builder()
            .drain_delay(secs(1))
            .register(Registration::new("consumer", fails_in_the_drain("panic"))),
        secs(1),
    )
    .await;
    assert_eq!(report.exit_code(), exit_code::FAILURE, "{report}");
    let consumer = report.component("consumer").unwrap();
    assert_eq!(consumer.outcome, Outcome::Failed);
    assert_eq!(
        consumer.error.as_deref(),
        Some("failed at run time: panicked: bug in the drain")
    );
}

#[tokio::test(start_paused = true)]
async fn a_worker_failing_in_its_own_stop_is_reported() {
    let log = Log::default();
    let flusher = Worker::new(|ctx| async move {
        ctx.token().cancelled().await;
        Err::<(), _>(std::io::Error::other("flush failed"))
    });
    let report = request_when_ready(
        builder()
            .register(Registration::new("db", Probe::new("db", &log)))
            .register(Registration::new("flusher", flusher).depends_on("db")),
        secs(1),
    )
    .await;
    assert_eq!(report.exit_code(), exit_code::FAILURE, "{report}");
    let flusher = report.component("flusher").unwrap();
    assert_eq!(flusher.outcome, Outcome::Failed);
    assert_eq!(
        flusher.error.as_deref(),
        Some("failed at run time: flush failed")
    );
    assert_eq!(report.component("db").unwrap().outcome, Outcome::Stopped);
}

#[tokio::test(start_paused = true)]
async fn a_worker_returning_before_its_stop_turn_is_a_failure() {
    let lifecycle = builder()
        .register(Registration::new(
            "worker",
            Worker::new(|_ctx| async {
                tokio::time::sleep(secs(2)).await;
                Ok::<_, std::io::Error>(())
            }),
        ))
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let report = tokio::time::timeout(secs(60), lifecycle.run())
        .await
        .expect("the early return triggers the shutdown");
    assert_eq!(report.trigger.kind, TriggerKind::ComponentFailed);
    assert_eq!(
        report.trigger.detail,
        "worker: returned before its stop turn"
    );
    assert_eq!(report.exit_code(), exit_code::FAILURE);
    assert_eq!(handle.states()[0].1, ComponentState::Done(Outcome::Failed));
}

/// Spawns a task at start that panics after a second, like a server's accept loop with a bug.
struct PanickingTask;

#[async_trait]
impl Component for PanickingTask {
    async fn start(&self, ctx: &Context) -> Result<(), BoxError> {
        ctx.spawn(async {
            tokio::time::sleep(secs(1)).await;
            panic!("accept loop bug");
        });
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_a_tracked_task_is_a_failure() {
    let lifecycle = builder()
        .register(Registration::new("http", PanickingTask))
        .build()
        .unwrap();
    let report = tokio::time::timeout(secs(60), lifecycle.run())
        .await
        .expect("the panic triggers the shutdown");
    assert_eq!(report.trigger.kind, TriggerKind::ComponentFailed);
    assert_eq!(
        report.trigger.detail,
        "http: a task panicked: accept loop bug"
    );
    assert_eq!(report.component("http").unwrap().outcome, Outcome::Failed);
    assert_eq!(report.exit_code(), exit_code::FAILURE);
}

/// Each start gets a run number; the second start fails. Records which runs were stopped.
#[derive(Default, Clone)]
struct SecondStartFails {
    starts: Arc<AtomicU32>,
    stopped_runs: Arc<Mutex<Vec<u32>>>,
}

#[async_trait]
impl Component for SecondStartFails {
    async fn start(&self, ctx: &Context) -> Result<(), BoxError> {
        let run = self.starts.fetch_add(1, Ordering::SeqCst);
        if run == 1 {
            return Err("the port is still in use".into());
        }
        if run == 0 {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(secs(1)).await;
                ctx.report_failure("crashed");
            });
        }
        Ok(())
    }

    async fn stop(&self, _ctx: &Context) -> Result<(), BoxError> {
        // The run being stopped is the latest that started.
        let run = self.starts.load(Ordering::SeqCst) - 1;
        self.stopped_runs.lock().unwrap().push(run);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_restart_whose_start_failed_is_never_stopped() {
    let component = SecondStartFails::default();
    let lifecycle = builder()
        .register(
            Registration::new("server", component.clone()).on_failure(OnFailure::Restart {
                max_restarts: 3,
                initial_backoff: secs(1),
                max_backoff: secs(1),
            }),
        )
        .build()
        .unwrap();
    // Run 0 fails at 1 s and is stopped; run 1 starts at 2 s and fails to start; run 2 starts
    // at 3 s and runs until the shutdown.
    let handle = lifecycle.handle();
    tokio::spawn(async move {
        tokio::time::sleep(secs(10)).await;
        handle.shutdown("test over");
    });
    let report = lifecycle.run().await;
    assert_eq!(component.starts.load(Ordering::SeqCst), 3);
    assert_eq!(*component.stopped_runs.lock().unwrap(), [0, 2]);
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
}

#[tokio::test(start_paused = true)]
async fn a_restart_that_fails_to_start_with_no_restarts_left_is_not_stopped() {
    let component = SecondStartFails::default();
    let lifecycle = builder()
        .register(Registration::new("server", component.clone()).on_failure(OnFailure::restart(1)))
        .build()
        .unwrap();
    let report = tokio::time::timeout(secs(60), lifecycle.run())
        .await
        .expect("the failed restart shuts down");
    assert_eq!(report.trigger.kind, TriggerKind::ComponentFailed);
    assert_eq!(*component.stopped_runs.lock().unwrap(), [0]);
    let server = report.component("server").unwrap();
    assert_eq!(server.outcome, Outcome::Failed);
    assert_eq!(
        server.error.as_deref(),
        Some("failed at run time (after 1 restarts): start failed: the port is still in use")
    );
}

/// A start that blocks its thread for 10 s, then says it started.
struct StartBlocksItsThread(Arc<AtomicU32>);

#[async_trait]
impl Component for StartBlocksItsThread {
    async fn start(&self, _ctx: &Context) -> Result<(), BoxError> {
        // On the paused clock, advancing time models a blocking call that returns late.
        tokio::time::advance(secs(10)).await;
        Ok(())
    }

    async fn stop(&self, _ctx: &Context) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_start_that_blocks_past_its_timeout_has_not_started() {
    let stops = Arc::new(AtomicU32::new(0));
    let lifecycle = builder()
        .register(
            Registration::new("migrations", StartBlocksItsThread(stops.clone()))
                .start_timeout(secs(2)),
        )
        .build()
        .unwrap();
    let report = lifecycle.run().await;
    assert_eq!(report.trigger.kind, TriggerKind::StartFailed);
    let migrations = report.component("migrations").unwrap();
    assert_eq!(migrations.outcome, Outcome::TimedOut);
    assert!(
        migrations
            .error
            .as_deref()
            .unwrap()
            .ends_with("it blocked its thread"),
        "{report}"
    );
    assert_eq!(stops.load(Ordering::SeqCst), 0, "never stopped");
    assert_eq!(report.exit_code(), exit_code::FAILURE);
}

#[tokio::test(start_paused = true)]
async fn the_report_file_is_written_at_the_end() {
    let dir = std::env::temp_dir().join(format!("lifecycle-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("report.json");
    let log = Log::default();
    let report = request_when_ready(
        builder()
            .report_file(&path)
            .register(Registration::new("db", Probe::new("db", &log))),
        secs(1),
    )
    .await;
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let expected: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(written, expected);
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left");
    std::fs::remove_dir_all(&dir).unwrap();
}
