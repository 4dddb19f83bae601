//! The shutdown path: readiness first, the drain delay, then stops in reverse dependency order,
//! each token cancelled at its own turn. All on tokio's paused clock.

use crate::common;

use std::time::Duration;

use common::{builder, request_when_ready, secs, shutdown_when_ready, Act, Event, Log, Probe};
use lifecycle_core::{exit_code, Outcome, Phase, Registration, TriggerKind};
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn readiness_off_then_drain_then_reverse_order() {
    let log = Log::default();
    let lifecycle = builder()
        .drain_delay(secs(5))
        .register(Registration::new(
            "db",
            Probe::new("db", &log).stop(Act::ms(300)),
        ))
        .register(
            Registration::new("api", Probe::new("api", &log).stop(Act::ms(200))).depends_on("db"),
        )
        .register(
            Registration::new("http", Probe::new("http", &log).stop(Act::ms(100)))
                .depends_on("api"),
        )
        .build()
        .unwrap();

    // Record every phase change with its time.
    let mut phases = lifecycle.handle().watch_phase();
    let phase_log = tokio::spawn(async move {
        let mut seen = vec![(*phases.borrow_and_update(), Instant::now())];
        while seen.last().unwrap().0 != Phase::Stopped && phases.changed().await.is_ok() {
            seen.push((*phases.borrow_and_update(), Instant::now()));
        }
        seen
    });
    assert_eq!(lifecycle.handle().phase(), Phase::Starting);
    shutdown_when_ready(&lifecycle, secs(1));
    let report = lifecycle.run().await;
    let phases = phase_log.await.unwrap();

    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
    assert_eq!(report.trigger.kind, TriggerKind::Requested);
    assert_eq!(report.trigger.detail, "test over");
    let names: Vec<Phase> = phases.iter().map(|(p, _)| *p).collect();
    // The observer first runs once start-up is over (every start here is instant).
    assert_eq!(
        names,
        [
            Phase::Ready,
            Phase::Draining,
            Phase::Stopping,
            Phase::Stopped
        ]
    );

    // Readiness is withdrawn at the trigger, and nothing stops during the drain delay.
    let draining_at = phases[1].1;
    assert_eq!(log.order(Event::StartBegan), ["db", "api", "http"]);
    assert_eq!(log.order(Event::StopBegan), ["http", "api", "db"]);
    let first_stop = log.once("http", Event::StopBegan).unwrap();
    assert_eq!(first_stop - draining_at, secs(5));
    assert_eq!(report.drain_delay_ms, 5000.0);

    // Each stop begins when its dependent's ended, and each token is cancelled at its own
    // turn, not at the trigger.
    for (dependent, dependency) in [("http", "api"), ("api", "db")] {
        let ended = log.once(dependent, Event::StopEnded).unwrap();
        assert_eq!(log.once(dependency, Event::StopBegan).unwrap(), ended);
        assert!(log.once(dependency, Event::TokenCancelled).unwrap() >= ended);
    }
    for name in ["http", "api", "db"] {
        let c = report.component(name).unwrap();
        assert_eq!(c.outcome, Outcome::Stopped);
        assert!(c.error.is_none());
    }
    // The whole stop phase is the chain's length: 100 + 200 + 300 ms.
    let db = report.component("db").unwrap();
    let http = report.component("http").unwrap();
    assert_eq!(
        db.stop_ended_ms.unwrap() - http.stop_began_ms.unwrap(),
        600.0
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_notice_comes_before_the_component_token() {
    let log = Log::default();
    let lifecycle = builder()
        .drain_delay(secs(2))
        .register(Registration::new("db", Probe::new("db", &log)))
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let notice = tokio::spawn({
        let handle = handle.clone();
        async move {
            handle.shutdown_requested().await;
            Instant::now()
        }
    });
    shutdown_when_ready(&lifecycle, secs(1));
    let report = lifecycle.run().await;
    assert_eq!(report.exit_code(), 0);
    let notice = notice.await.unwrap();
    assert_eq!(
        log.once("db", Event::TokenCancelled).unwrap() - notice,
        secs(2)
    );
}

#[tokio::test(start_paused = true)]
async fn independent_branches_stop_concurrently() {
    let log = Log::default();
    let lifecycle = builder()
        .register(Registration::new(
            "db",
            Probe::new("db", &log).stop(Act::secs(3)),
        ))
        .register(
            Registration::new("http", Probe::new("http", &log).stop(Act::secs(1))).depends_on("db"),
        )
        .register(Registration::new(
            "redis",
            Probe::new("redis", &log).stop(Act::secs(2)),
        ))
        .register(
            Registration::new("worker", Probe::new("worker", &log).stop(Act::secs(2)))
                .depends_on("redis"),
        )
        .build()
        .unwrap();
    shutdown_when_ready(&lifecycle, secs(1));
    let began = Instant::now();
    let report = lifecycle.run().await;
    assert_eq!(report.exit_code(), 0);
    // Longest chain: worker 2 s + redis 2 s = 4 s, not the 8 s sum.
    let stop_phase = began.elapsed() - secs(1);
    assert_eq!(stop_phase, secs(4));
    assert_eq!(
        log.once("http", Event::StopBegan),
        log.once("worker", Event::StopBegan)
    );
}

#[tokio::test(start_paused = true)]
async fn diamond_stops_the_shared_dependency_last() {
    let log = Log::default();
    let report = request_when_ready(
        builder()
            .register(
                Registration::new("a", Probe::new("a", &log))
                    .depends_on("b")
                    .depends_on("c"),
            )
            .register(
                Registration::new("b", Probe::new("b", &log).stop(Act::ms(50))).depends_on("d"),
            )
            .register(
                Registration::new("c", Probe::new("c", &log).stop(Act::ms(80))).depends_on("d"),
            )
            .register(Registration::new("d", Probe::new("d", &log))),
        secs(1),
    )
    .await;
    assert_eq!(report.exit_code(), 0);
    let stops = log.order(Event::StopBegan);
    assert_eq!(stops.first().unwrap(), "a");
    assert_eq!(stops.last().unwrap(), "d");
    assert_eq!(
        log.once("d", Event::StopBegan),
        log.once("c", Event::StopEnded)
    );
    assert_eq!(log.times("d", Event::StopBegan).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn independent_components_start_concurrently() {
    let log = Log::default();
    let lifecycle = builder()
        .register(Registration::new(
            "db",
            Probe::new("db", &log).start(Act::secs(2)),
        ))
        .register(Registration::new(
            "redis",
            Probe::new("redis", &log).start(Act::secs(3)),
        ))
        .register(
            Registration::new("http", Probe::new("http", &log))
                .depends_on("db")
                .depends_on("redis"),
        )
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let began = Instant::now();
    shutdown_when_ready(&lifecycle, Duration::ZERO);
    let report = lifecycle.run().await;
    assert_eq!(report.exit_code(), 0);
    assert_eq!(
        log.once("http", Event::StartBegan).unwrap() - began,
        secs(3)
    );
    assert_eq!(handle.phase(), Phase::Stopped);
}

#[tokio::test(start_paused = true)]
async fn cancelling_the_supplied_token_triggers_the_shutdown() {
    let log = Log::default();
    let token = lifecycle_core::CancellationToken::new();
    let lifecycle = builder()
        .shutdown_token(token.clone())
        .register(Registration::new("db", Probe::new("db", &log)))
        .build()
        .unwrap();
    let mut phase = lifecycle.handle().watch_phase();
    tokio::spawn(async move {
        phase.wait_for(|p| p.is_ready()).await.unwrap();
        token.cancel();
    });
    let report = lifecycle.run().await;
    assert_eq!(report.exit_code(), 0);
    assert_eq!(report.trigger.kind, TriggerKind::Requested);
    assert_eq!(report.trigger.detail, "shutdown token cancelled");
    assert_eq!(report.component("db").unwrap().outcome, Outcome::Stopped);
}

#[tokio::test(start_paused = true)]
async fn liveness_holds_until_stopped() {
    let log = Log::default();
    let lifecycle = builder()
        .drain_delay(secs(1))
        .register(Registration::new(
            "db",
            Probe::new("db", &log).stop(Act::secs(1)),
        ))
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    assert!(!handle.phase().is_ready() && handle.phase().is_live());
    let mut phase = handle.watch_phase();
    let live_while = tokio::spawn(async move {
        let mut seen = Vec::new();
        loop {
            let p = *phase.borrow_and_update();
            seen.push((p.is_ready(), p.is_live()));
            if p == Phase::Stopped || phase.changed().await.is_err() {
                return seen;
            }
        }
    });
    shutdown_when_ready(&lifecycle, secs(1));
    let report = lifecycle.run().await;
    drop(handle);
    assert_eq!(report.exit_code(), 0);
    let seen = live_while.await.unwrap();
    // ready, draining, stopping, stopped
    assert_eq!(
        seen,
        [(true, true), (false, true), (false, true), (false, false)]
    );
}

/// Records the deadline its start and stop were given.
struct DeadlineProbe(std::sync::Arc<std::sync::Mutex<Vec<Duration>>>);

#[lifecycle_core::async_trait]
impl lifecycle_core::Component for DeadlineProbe {
    async fn start(&self, ctx: &lifecycle_core::Context) -> Result<(), lifecycle_core::BoxError> {
        self.0
            .lock()
            .unwrap()
            .push(ctx.deadline().unwrap() - Instant::now());
        Ok(())
    }

    async fn stop(&self, ctx: &lifecycle_core::Context) -> Result<(), lifecycle_core::BoxError> {
        self.0
            .lock()
            .unwrap()
            .push(ctx.deadline().unwrap() - Instant::now());
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn start_and_stop_know_their_deadline() {
    let seen = std::sync::Arc::default();
    let lifecycle = builder()
        .shutdown_budget(secs(20))
        .drain_delay(secs(12))
        .register(
            Registration::new("db", DeadlineProbe(std::sync::Arc::clone(&seen)))
                .start_timeout(secs(7))
                .stop_timeout(secs(8)),
        )
        .build()
        .unwrap();
    shutdown_when_ready(&lifecycle, secs(1));
    assert_eq!(lifecycle.run().await.exit_code(), 0);
    // The stop gets what is left of the budget after the drain (8 s), less the margin kept
    // for returning the report before the watchdog's hard deadline (500 ms).
    assert_eq!(
        *seen.lock().unwrap(),
        [secs(7), secs(8) - Duration::from_millis(500)]
    );
}

#[tokio::test(start_paused = true)]
async fn an_unbounded_budget_is_accepted() {
    let log = Log::default();
    let lifecycle = builder()
        .shutdown_budget(Duration::MAX)
        .register(Registration::new("db", Probe::new("db", &log)))
        .build()
        .unwrap();
    shutdown_when_ready(&lifecycle, secs(1));
    assert_eq!(lifecycle.run().await.exit_code(), 0);
}

/// A component registered with `stops_last` is depended on by every other: it starts before
/// all of them and stops only once all have stopped, whatever was registered after it.
#[tokio::test(start_paused = true)]
async fn stops_last_starts_first_and_stops_after_everything() {
    let log = Log::default();
    let lifecycle = builder()
        .register(Registration::new("admin", Probe::new("admin", &log)).stops_last())
        .register(Registration::new(
            "db",
            Probe::new("db", &log)
                .start(Act::ms(100))
                .stop(Act::ms(300)),
        ))
        .register(
            Registration::new("http", Probe::new("http", &log).stop(Act::ms(100))).depends_on("db"),
        )
        .register(Registration::new(
            "worker",
            Probe::new("worker", &log).stop(Act::ms(50)),
        ))
        .build()
        .unwrap();
    shutdown_when_ready(&lifecycle, secs(1));
    let report = lifecycle.run().await;

    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
    let admin_started = log.once("admin", Event::StartEnded).unwrap();
    for name in ["db", "http", "worker"] {
        assert!(log.once(name, Event::StartBegan).unwrap() >= admin_started);
    }
    let admin_stop = log.once("admin", Event::StopBegan).unwrap();
    for name in ["db", "http", "worker"] {
        assert!(
            log.once(name, Event::StopEnded).unwrap() <= admin_stop,
            "{name}"
        );
    }
    assert_eq!(log.order(Event::StopBegan).last().unwrap(), "admin");
    // The other dependencies still order the rest: http before db.
    assert!(
        log.once("http", Event::StopEnded).unwrap() <= log.once("db", Event::StopBegan).unwrap()
    );
    assert_eq!(
        report.component("http").unwrap().dependencies,
        ["db", "admin"]
    );
}
