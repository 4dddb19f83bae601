//! Components added and removed while the lifecycle runs (`LifecycleHandle::add`, `remove`):
//! they follow the registered components' rules (order, policies, readiness, health, report),
//! and changes are refused once the shutdown has begun. All on tokio's paused clock.

use crate::common;

use std::time::Duration;

use common::{builder, secs, Act, Event, Log, Probe};
use lifecycle_core::testing::TestRun;
use lifecycle_core::{
    exit_code, BuildError, ChangeError, ComponentState, OnFailure, Outcome, Phase, Registration,
    TriggerKind, Worker,
};

fn idle() -> impl lifecycle_core::Component {
    Worker::new(|ctx| async move {
        ctx.token().cancelled().await;
        Ok::<_, std::io::Error>(())
    })
}

fn state(run: &TestRun, name: &str) -> Option<ComponentState> {
    run.handle()
        .states()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, s)| s)
}

#[tokio::test(start_paused = true)]
async fn an_added_component_starts_after_its_dependencies_and_stops_before_them() {
    let log = Log::default();
    let run = TestRun::start(
        builder()
            .register(Registration::new(
                "db",
                Probe::new("db", &log).stop(Act::ms(300)),
            ))
            .register(Registration::new(
                "cache",
                Probe::new("cache", &log).stop(Act::ms(100)),
            )),
    )
    .unwrap();
    run.ready().await.unwrap();
    tokio::time::sleep(secs(1)).await;

    let tenant = |name: &str| Probe::new(name, &log).stop(Act::secs(1));
    run.add(Registration::new("tenant-a", tenant("tenant-a")).depends_on("db"))
        .await
        .unwrap();
    run.add(
        Registration::new("tenant-b", tenant("tenant-b"))
            .depends_on("db")
            .depends_on("cache"),
    )
    .await
    .unwrap();
    // A child of an added component.
    run.add(Registration::new("tenant-b-feed", tenant("tenant-b-feed")).depends_on("tenant-b"))
        .await
        .unwrap();
    // Independent of everything: stops concurrently with the first stops.
    run.add(Registration::new("plugin", tenant("plugin")))
        .await
        .unwrap();
    assert_eq!(state(&run, "tenant-b-feed"), Some(ComponentState::Running));
    assert!(run.handle().is_ready().await);

    run.request("test over");
    let timeline = run.finish().await;
    timeline
        .assert_exit_code(exit_code::SUCCESS)
        .assert_started_before("db", "tenant-a")
        .assert_started_before("cache", "tenant-b")
        .assert_started_before("tenant-b", "tenant-b-feed")
        .assert_stopped_before("tenant-a", "db")
        .assert_stopped_before("tenant-b", "db")
        .assert_stopped_before("tenant-b", "cache")
        .assert_stopped_before("tenant-b-feed", "tenant-b");
    let report = timeline.report();
    assert_eq!(
        report.component("tenant-b").unwrap().dependencies,
        ["db", "cache"]
    );
    // Independent branches stop concurrently: the leaves begin together at the trigger...
    let began = |name: &str| log.once(name, Event::StopBegan).unwrap();
    assert_eq!(began("tenant-a"), began("plugin"));
    assert_eq!(began("tenant-a"), began("tenant-b-feed"));
    // ...and the shutdown takes the longest chain (1 s + 1 s + 300 ms), not the sum.
    assert_eq!(
        began("db") - began("tenant-a"),
        Duration::from_secs(2),
        "{report}"
    );
    assert_eq!(report.components.len(), 6);
    assert!(report.components.iter().all(|c| !c.removed));
}

#[tokio::test(start_paused = true)]
async fn an_invalid_addition_is_a_typed_error_and_starts_nothing() {
    let log = Log::default();
    let run = TestRun::start(builder().register(Registration::new("db", Probe::new("db", &log))))
        .unwrap();
    run.ready().await.unwrap();
    let probe = |name: &str| Probe::new(name, &log);

    let missing = run
        .add(Registration::new("t1", probe("t1")).depends_on("cache"))
        .await
        .unwrap_err();
    assert!(
        matches!(&missing, ChangeError::Invalid(BuildError::MissingDependency { component, dependency })
            if component == "t1" && dependency == "cache"),
        "{missing:?}"
    );
    let cycle = run
        .add(Registration::new("t2", probe("t2")).depends_on("t2"))
        .await
        .unwrap_err();
    assert_eq!(cycle.to_string(), "dependency cycle: t2 -> t2");
    let duplicate = run
        .add(Registration::new("db", probe("db2")))
        .await
        .unwrap_err();
    assert!(matches!(
        duplicate,
        ChangeError::Invalid(BuildError::DuplicateName { .. })
    ));
    let zero = run
        .add(Registration::new("t3", probe("t3")).stop_timeout(Duration::ZERO))
        .await
        .unwrap_err();
    assert!(matches!(
        zero,
        ChangeError::Invalid(BuildError::ZeroTimeout { phase: "stop", .. })
    ));
    let last = run
        .add(Registration::new("t4", probe("t4")).stops_last())
        .await
        .unwrap_err();
    assert!(matches!(last, ChangeError::StopsLast { .. }));
    // A dependency whose own addition is still starting is not running yet.
    let slow = run.handle().clone();
    let slow_log = log.clone();
    let parent = tokio::spawn(async move {
        slow.add(Registration::new(
            "parent",
            Probe::new("parent", &slow_log).start(Act::secs(1)),
        ))
        .await
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let early = run
        .add(Registration::new("child", probe("child")).depends_on("parent"))
        .await
        .unwrap_err();
    assert!(matches!(early, ChangeError::DependencyNotRunning { .. }));
    parent.await.unwrap().unwrap();
    run.add(Registration::new("child", probe("child")).depends_on("parent"))
        .await
        .unwrap();

    for refused in ["t1", "t2", "db2", "t3", "t4"] {
        assert!(log.once(refused, Event::StartBegan).is_none(), "{refused}");
    }
    let names: Vec<String> = run.handle().states().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["db", "parent", "child"]);
    run.request("test over");
    let timeline = run.finish().await;
    timeline.assert_exit_code(exit_code::SUCCESS);
    assert_eq!(timeline.report().components.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn an_added_component_follows_its_failure_policy() {
    let log = Log::default();
    let run = TestRun::start(builder().register(Registration::new("db", idle()))).unwrap();
    run.ready().await.unwrap();
    run.add(
        Registration::new("restarts", Probe::new("restarts", &log))
            .depends_on("db")
            .on_failure(OnFailure::restart(2)),
    )
    .await
    .unwrap();
    run.add(
        Registration::new("ignored", Probe::new("ignored", &log))
            .depends_on("db")
            .on_failure(OnFailure::Ignore),
    )
    .await
    .unwrap();
    run.add(Registration::new("fatal", Probe::new("fatal", &log)).depends_on("db"))
        .await
        .unwrap();

    run.fail("restarts", "lost its connection");
    tokio::time::sleep(secs(1)).await;
    assert_eq!(log.times("restarts", Event::StartBegan).len(), 2);
    assert_eq!(state(&run, "restarts"), Some(ComponentState::Running));

    run.fail("ignored", "a hiccup");
    tokio::time::sleep(secs(1)).await;
    assert_eq!(state(&run, "ignored"), Some(ComponentState::Running));
    assert_eq!(run.handle().phase(), Phase::Ready);

    run.fail("fatal", "broken");
    let timeline = run.finish().await;
    let report = timeline.report();
    assert_eq!(report.trigger.kind, TriggerKind::ComponentFailed);
    assert!(
        report.trigger.detail.starts_with("fatal: broken"),
        "{report}"
    );
    timeline
        .assert_outcome("fatal", Outcome::Failed)
        .assert_outcome("restarts", Outcome::Stopped)
        .assert_outcome("ignored", Outcome::Stopped)
        .assert_stopped_before("restarts", "db")
        .assert_exit_code(exit_code::FAILURE);
}

#[tokio::test(start_paused = true)]
async fn a_failed_start_of_an_addition_is_reported_and_the_service_runs_on() {
    let log = Log::default();
    let run = TestRun::start(builder().register(Registration::new("db", idle()))).unwrap();
    run.ready().await.unwrap();
    let failed = run
        .add(Registration::new("t", Probe::new("t", &log).start(Act::Fail)).depends_on("db"))
        .await
        .unwrap_err();
    assert!(
        matches!(&failed, ChangeError::StartFailed { component, outcome: Outcome::Failed, .. } if component == "t"),
        "{failed:?}"
    );
    let hung = run
        .add(Registration::new("h", Probe::new("h", &log).start(Act::Hang)).start_timeout(secs(2)))
        .await
        .unwrap_err();
    assert!(matches!(
        hung,
        ChangeError::StartFailed {
            outcome: Outcome::TimedOut,
            ..
        }
    ));
    assert_eq!(run.handle().phase(), Phase::Ready);
    assert!(run.handle().is_ready().await);
    // The name is free again.
    run.add(Registration::new("t", Probe::new("t", &log)).depends_on("db"))
        .await
        .unwrap();

    run.request("test over");
    let timeline = run.finish().await;
    let report = timeline.report();
    let first = &report.components[1];
    assert_eq!((first.name.as_str(), first.outcome), ("t", Outcome::Failed));
    assert!(first.removed && first.stop_began_ms.is_none(), "{report}");
    timeline
        .assert_outcome("h", Outcome::TimedOut)
        .assert_outcome("t", Outcome::Stopped)
        .assert_exit_code(exit_code::FAILURE);
}

#[tokio::test(start_paused = true)]
async fn changes_are_refused_once_the_shutdown_has_begun() {
    let log = Log::default();
    let run = TestRun::start(builder().drain_delay(secs(5)).register(Registration::new(
        "db",
        Probe::new("db", &log).stop(Act::secs(2)),
    )))
    .unwrap();
    run.ready().await.unwrap();
    run.add(Registration::new("t", Probe::new("t", &log)).depends_on("db"))
        .await
        .unwrap();
    let handle = run.handle().clone();
    run.request("deploy");

    // During the drain.
    tokio::time::sleep(secs(1)).await;
    assert_eq!(handle.phase(), Phase::Draining);
    let refused = handle
        .add(Registration::new("late", Probe::new("late", &log)))
        .await
        .unwrap_err();
    assert!(matches!(&refused, ChangeError::ShuttingDown { component } if component == "late"));
    assert!(matches!(
        handle.remove("t").await,
        Err(ChangeError::ShuttingDown { .. })
    ));
    // During the stops.
    tokio::time::sleep(secs(5)).await;
    assert_eq!(handle.phase(), Phase::Stopping);
    assert!(matches!(
        handle.add(Registration::new("later", idle())).await,
        Err(ChangeError::ShuttingDown { .. })
    ));

    let timeline = run.finish().await;
    // After the end.
    assert!(matches!(
        handle.add(Registration::new("last", idle())).await,
        Err(ChangeError::ShuttingDown { .. })
    ));
    assert!(log.once("late", Event::StartBegan).is_none());
    timeline
        .assert_exit_code(exit_code::SUCCESS)
        .assert_outcome("t", Outcome::Stopped)
        .assert_stopped_before("t", "db");
    assert_eq!(timeline.report().components.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn additions_asked_for_during_start_up_wait_for_ready() {
    let log = Log::default();
    let lifecycle = builder()
        .register(Registration::new(
            "db",
            Probe::new("db", &log).start(Act::secs(3)),
        ))
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let added = tokio::spawn({
        let log = log.clone();
        let handle = handle.clone();
        async move {
            handle
                .add(Registration::new("t", Probe::new("t", &log)).depends_on("db"))
                .await
        }
    });
    let run = TestRun::run(lifecycle);
    added.await.unwrap().unwrap();
    assert!(log.once("db", Event::StartEnded) <= log.once("t", Event::StartBegan));
    run.request("test over");
    run.finish().await.assert_started_before("db", "t");
}

#[tokio::test(start_paused = true)]
async fn removing_a_parent_stops_its_children_first() {
    let log = Log::default();
    let run = TestRun::start(builder().register(Registration::new("db", Probe::new("db", &log))))
        .unwrap();
    run.ready().await.unwrap();
    run.add(
        Registration::new("plugin", Probe::new("plugin", &log).stop(Act::ms(50))).depends_on("db"),
    )
    .await
    .unwrap();
    for child in ["plugin-a", "plugin-b"] {
        run.add(
            Registration::new(child, Probe::new(child, &log).stop(Act::ms(200)))
                .depends_on("plugin"),
        )
        .await
        .unwrap();
    }
    run.add(
        Registration::new(
            "plugin-a-x",
            Probe::new("plugin-a-x", &log).stop(Act::ms(100)),
        )
        .depends_on("plugin-a"),
    )
    .await
    .unwrap();
    tokio::time::sleep(secs(1)).await;

    // Two callers remove the same component: both wait for the one stop.
    let again = {
        let handle = run.handle().clone();
        tokio::spawn(async move { handle.remove("plugin").await })
    };
    assert_eq!(run.remove("plugin").await.unwrap(), Outcome::Stopped);
    assert_eq!(again.await.unwrap().unwrap(), Outcome::Stopped);
    let stopped = |name: &str| log.once(name, Event::StopEnded).unwrap();
    let began = |name: &str| log.once(name, Event::StopBegan).unwrap();
    assert!(stopped("plugin-a-x") <= began("plugin-a"));
    assert!(stopped("plugin-a") <= began("plugin") && stopped("plugin-b") <= began("plugin"));
    assert_eq!(
        began("plugin-a-x"),
        began("plugin-b"),
        "the leaves stop together"
    );
    assert_eq!(
        began("plugin") - began("plugin-a-x"),
        Duration::from_millis(300)
    );
    let names: Vec<String> = run.handle().states().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["db"]);
    assert!(matches!(
        run.remove("plugin").await,
        Err(ChangeError::NotFound { .. })
    ));
    assert_eq!(state(&run, "db"), Some(ComponentState::Running));

    tokio::time::sleep(secs(1)).await;
    run.request("test over");
    let timeline = run.finish().await;
    timeline.assert_exit_code(exit_code::SUCCESS);
    for name in ["plugin", "plugin-a", "plugin-b", "plugin-a-x"] {
        timeline
            .assert_removed(name)
            .assert_outcome(name, Outcome::Stopped)
            .assert_stopped_before(name, "db");
    }
    let report = timeline.report();
    let plugin = report.component("plugin").unwrap();
    assert_eq!(
        plugin.stop_ended_ms.unwrap() - plugin.stop_began_ms.unwrap(),
        50.0
    );
    assert!(report.to_string().contains("plugin (removed)"), "{report}");
    assert!(report.to_json().contains("\"removed\":true"));
}

#[tokio::test(start_paused = true)]
async fn a_removal_under_way_at_the_trigger_holds_its_dependencies() {
    let log = Log::default();
    let run = TestRun::start(builder().register(Registration::new("db", Probe::new("db", &log))))
        .unwrap();
    run.ready().await.unwrap();
    run.add(Registration::new("t", Probe::new("t", &log).stop(Act::secs(2))).depends_on("db"))
        .await
        .unwrap();
    let removal = {
        let handle = run.handle().clone();
        tokio::spawn(async move { handle.remove("t").await })
    };
    tokio::time::sleep(secs(1)).await;
    run.request("deploy");
    assert_eq!(removal.await.unwrap().unwrap(), Outcome::Stopped);
    let timeline = run.finish().await;
    timeline
        .assert_stopped_before("t", "db")
        .assert_outcome("t", Outcome::Stopped)
        .assert_exit_code(exit_code::SUCCESS);
    assert!(timeline.component("t").removed);
}

#[tokio::test(start_paused = true)]
async fn removal_under_load_keeps_every_order() {
    let log = Log::default();
    let run = TestRun::start(builder().register(Registration::new(
        "db",
        Probe::new("db", &log).stop(Act::ms(10)),
    )))
    .unwrap();
    run.ready().await.unwrap();
    // 200 tenants, each with a feed depending on it; half removed while the other half and
    // new ones are added, all at once.
    let add_pair = |handle: lifecycle_core::LifecycleHandle, i: usize, log: Log| async move {
        let (tenant, feed) = (format!("tenant-{i}"), format!("feed-{i}"));
        handle
            .add(
                Registration::new(&tenant, Probe::new(&tenant, &log).stop(Act::ms(30)))
                    .depends_on("db"),
            )
            .await
            .unwrap();
        handle
            .add(
                Registration::new(&feed, Probe::new(&feed, &log).stop(Act::ms(20)))
                    .depends_on(&tenant),
            )
            .await
            .unwrap();
    };
    futures::future::join_all((0..100).map(|i| add_pair(run.handle().clone(), i, log.clone())))
        .await;
    let removals = (0..50).map(|i| {
        let handle = run.handle().clone();
        async move { handle.remove(&format!("tenant-{i}")).await }
    });
    let additions = (100..200).map(|i| add_pair(run.handle().clone(), i, log.clone()));
    let (removed, ()) = tokio::join!(futures::future::join_all(removals), async {
        futures::future::join_all(additions).await;
    });
    assert!(removed.iter().all(|r| matches!(r, Ok(Outcome::Stopped))));
    assert_eq!(run.handle().states().len(), 1 + 2 * 150);
    assert!(run.handle().is_ready().await);

    run.request("test over");
    let timeline = run.finish().await;
    timeline.assert_exit_code(exit_code::SUCCESS);
    assert_eq!(timeline.report().components.len(), 1 + 2 * 200);
    for i in 0..200 {
        let (tenant, feed) = (format!("tenant-{i}"), format!("feed-{i}"));
        timeline
            .assert_started_before("db", &tenant)
            .assert_started_before(&tenant, &feed)
            .assert_stopped_before(&feed, &tenant)
            .assert_stopped_before(&tenant, "db")
            .assert_outcome(&feed, Outcome::Stopped);
        assert_eq!(timeline.component(&tenant).removed, i < 50, "{tenant}");
    }
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_components_added_at_run_time() {
    let run = TestRun::start(builder().register(Registration::new("db", idle()))).unwrap();
    run.ready().await.unwrap();
    let additions = (0..10_000).map(|i| {
        let handle = run.handle().clone();
        async move {
            handle
                .add(Registration::new(format!("c{i}"), idle()).depends_on("db"))
                .await
        }
    });
    let results = futures::future::join_all(additions).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(run.handle().states().len(), 10_001);
    assert!(run.handle().is_ready().await);
    for i in (0..10_000).step_by(2) {
        // Not awaited one by one: sent together, they stop concurrently.
        let handle = run.handle().clone();
        tokio::spawn(async move { handle.remove(&format!("c{i}")).await.unwrap() });
    }
    tokio::time::sleep(secs(1)).await;
    assert_eq!(run.handle().states().len(), 5_001);

    run.request("test over");
    let timeline = run.finish().await;
    timeline.assert_exit_code(exit_code::SUCCESS);
    let report = timeline.report();
    assert_eq!(report.components.len(), 10_001);
    let db_stop = report.component("db").unwrap().stop_began_ms.unwrap();
    assert!(report
        .components
        .iter()
        .skip(1)
        .all(|c| c.outcome == Outcome::Stopped && c.stop_ended_ms.unwrap() <= db_stop));
}

#[tokio::test(start_paused = true)]
async fn added_components_show_in_health_and_held_by() {
    let run = TestRun::start(builder().register(Registration::new("db", idle()))).unwrap();
    run.ready().await.unwrap();
    let busy = Worker::new(|ctx| async move {
        let token = ctx.token().clone();
        ctx.spawn_named("job 42", async move { token.cancelled().await });
        ctx.token().cancelled().await;
        Ok::<_, std::io::Error>(())
    });
    run.add(Registration::new("tenant", busy).depends_on("db"))
        .await
        .unwrap();
    run.add(
        Registration::new("optional", Probe::new("optional", &Log::default()))
            .exclude_from_readiness(),
    )
    .await
    .unwrap();
    let statuses = run.handle().check_health().await;
    let tenant = statuses.iter().find(|s| s.name == "tenant").unwrap();
    assert_eq!(tenant.state, ComponentState::Running);
    assert!(tenant.health.is_healthy() && tenant.counts_for_readiness);
    let optional = statuses.iter().find(|s| s.name == "optional").unwrap();
    assert!(!optional.counts_for_readiness);
    let held = run.handle().held_by();
    assert!(
        held.iter()
            .any(|(name, items)| name == "tenant" && items.iter().any(|i| i.contains("job 42"))),
        "{held:?}"
    );
    // A starting addition does not hold readiness back.
    let handle = run.handle().clone();
    let slow = tokio::spawn(async move {
        handle
            .add(Registration::new(
                "slow",
                Probe::new("slow", &Log::default()).start(Act::secs(5)),
            ))
            .await
    });
    tokio::time::sleep(secs(1)).await;
    assert_eq!(state(&run, "slow"), Some(ComponentState::Starting));
    assert!(run.handle().is_ready().await);
    slow.await.unwrap().unwrap();
    run.remove("tenant").await.unwrap();
    let held = run.handle().held_by();
    assert!(held.iter().all(|(name, _)| name != "tenant"), "{held:?}");
    assert!(run
        .handle()
        .check_health()
        .await
        .iter()
        .all(|s| s.name != "tenant"));
    run.request("test over");
    run.finish().await.assert_exit_code(exit_code::SUCCESS);
}

#[tokio::test(start_paused = true)]
async fn an_addition_past_the_checked_bound_is_cut_by_the_budget() {
    let log = Log::default();
    // The build checks 1 s of stops against a 5 s budget; the addition's 10 s is not checked.
    let run = TestRun::start(
        builder()
            .shutdown_budget(secs(5))
            .register(Registration::new("db", Probe::new("db", &log)).stop_timeout(secs(1))),
    )
    .unwrap();
    run.ready().await.unwrap();
    run.add(
        Registration::new("slow", Probe::new("slow", &log).stop(Act::Hang))
            .depends_on("db")
            .stop_timeout(secs(10)),
    )
    .await
    .unwrap();
    run.request("deploy");
    let timeline = run.finish().await;
    let report = timeline.report();
    let slow = report.component("slow").unwrap();
    // Cut at the budget less the report's margin (a tenth of it), not at its own 10 s.
    assert_eq!(
        slow.stop_ended_ms.unwrap() - slow.stop_began_ms.unwrap(),
        4500.0,
        "{report}"
    );
    timeline
        .assert_outcome("slow", Outcome::TimedOut)
        .assert_outcome("db", Outcome::TimedOut)
        .assert_exit_code(exit_code::DEADLINE);
}

#[tokio::test(start_paused = true)]
async fn removing_a_restarting_component_waits_for_its_restart_then_stops_it() {
    let log = Log::default();
    let run = TestRun::start(builder().register(Registration::new("db", idle()))).unwrap();
    run.ready().await.unwrap();
    run.add(
        Registration::new("flaky", Probe::new("flaky", &log))
            .depends_on("db")
            .on_failure(OnFailure::Restart {
                max_restarts: 3,
                initial_backoff: secs(2),
                max_backoff: secs(2),
            }),
    )
    .await
    .unwrap();
    run.fail("flaky", "lost its connection");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(state(&run, "flaky"), Some(ComponentState::Restarting));
    assert_eq!(run.remove("flaky").await.unwrap(), Outcome::Stopped);
    // The failed run was stopped by the restart, the restarted one by the removal.
    assert_eq!(log.times("flaky", Event::StartBegan).len(), 2);
    assert_eq!(log.times("flaky", Event::StopEnded).len(), 2);
    assert_eq!(run.handle().states().len(), 1);
    run.request("test over");
    run.finish()
        .await
        .assert_removed("flaky")
        .assert_exit_code(exit_code::SUCCESS);
}
