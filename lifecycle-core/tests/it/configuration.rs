//! `build()` rejects bad configurations with typed errors before anything runs.

use crate::common;

use std::time::Duration;

use common::{builder, Log, Probe};
use lifecycle_core::{BuildError, OnFailure, Registration};

fn probe(name: &str) -> Registration {
    Registration::new(name, Probe::new(name, &Log::default()))
}

#[test]
fn duplicate_name() {
    let err = builder()
        .register(probe("db"))
        .register(probe("db"))
        .build()
        .unwrap_err();
    assert_eq!(err, BuildError::DuplicateName { name: "db".into() });
}

#[test]
fn missing_dependency() {
    let err = builder()
        .register(probe("http").depends_on("db"))
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        BuildError::MissingDependency {
            component: "http".into(),
            dependency: "db".into()
        }
    );
}

#[test]
fn cycle_names_its_whole_path() {
    let err = builder()
        .register(probe("a").depends_on("b"))
        .register(probe("b").depends_on("c"))
        .register(probe("c").depends_on("a"))
        .build()
        .unwrap_err();
    assert_eq!(err.to_string(), "dependency cycle: a -> b -> c -> a");
}

#[test]
fn self_dependency() {
    let err = builder()
        .register(probe("a").depends_on("a"))
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        BuildError::Cycle {
            path: vec!["a".into(), "a".into()]
        }
    );
}

#[test]
fn zero_timeouts() {
    let err = builder()
        .register(probe("a").start_timeout(Duration::ZERO))
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        BuildError::ZeroTimeout {
            component: "a".into(),
            phase: "start"
        }
    );
    let err = builder()
        .register(probe("a").stop_timeout(Duration::ZERO))
        .build()
        .unwrap_err();
    assert_eq!(err.to_string(), "component `a` has a zero stop timeout");
}

#[test]
fn restart_policy_without_restarts() {
    let err = builder()
        .register(probe("a").on_failure(OnFailure::restart(0)))
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        BuildError::ZeroRestarts {
            component: "a".into()
        }
    );
}

#[test]
fn budget_smaller_than_drain_plus_critical_path_names_the_path() {
    // http -> api -> db is 3 s + 4 s + 5 s; cache beside it is short.
    let err = builder()
        .drain_delay(Duration::from_secs(5))
        .shutdown_budget(Duration::from_secs(16))
        .register(probe("db").stop_timeout(Duration::from_secs(5)))
        .register(probe("cache").stop_timeout(Duration::from_secs(1)))
        .register(
            probe("api")
                .depends_on("db")
                .depends_on("cache")
                .stop_timeout(Duration::from_secs(4)),
        )
        .register(
            probe("http")
                .depends_on("api")
                .stop_timeout(Duration::from_secs(3)),
        )
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        BuildError::BudgetTooSmall {
            budget: Duration::from_secs(16),
            drain_delay: Duration::from_secs(5),
            critical_path: vec!["http".into(), "api".into(), "db".into()],
            critical_path_time: Duration::from_secs(12),
            required: Duration::from_secs(17),
        }
    );
    assert_eq!(
        err.to_string(),
        "shutdown budget 16s is smaller than drain delay 5s + stop timeouts along \
         http -> api -> db (12s) = 17s"
    );
}

#[test]
fn budget_that_fits_exactly_is_accepted() {
    let lifecycle = builder()
        .drain_delay(Duration::from_secs(5))
        .shutdown_budget(Duration::from_secs(17))
        .register(probe("db").stop_timeout(Duration::from_secs(5)))
        .register(
            probe("api")
                .depends_on("db")
                .stop_timeout(Duration::from_secs(4)),
        )
        .register(
            probe("http")
                .depends_on("api")
                .stop_timeout(Duration::from_secs(3)),
        )
        .build()
        .unwrap();
    assert_eq!(lifecycle.shutdown_bound(), Duration::from_secs(17));
    assert_eq!(lifecycle.critical_path(), ["http", "api", "db"]);
}

#[test]
fn diamond_is_accepted() {
    let lifecycle = builder()
        .register(probe("a").depends_on("b").depends_on("c"))
        .register(probe("b").depends_on("d"))
        .register(probe("c").depends_on("d"))
        .register(probe("d"))
        .build()
        .unwrap();
    let order = lifecycle.start_order();
    let pos = |n| order.iter().position(|x| *x == n).unwrap();
    assert!(
        pos("d") < pos("b") && pos("d") < pos("c") && pos("b") < pos("a") && pos("c") < pos("a")
    );
}

#[test]
fn zero_budget_is_rejected_even_without_components() {
    let err = builder()
        .shutdown_budget(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(matches!(err, BuildError::BudgetTooSmall { .. }), "{err}");
}

#[test]
fn stops_last_component_with_a_dependency_of_its_own_is_a_cycle() {
    let err = builder()
        .register(probe("db"))
        .register(probe("admin").depends_on("db").stops_last())
        .build()
        .unwrap_err();
    assert_eq!(err.to_string(), "dependency cycle: db -> admin -> db");
}

#[test]
fn stops_last_component_counts_in_every_chain_of_the_budget() {
    let err = builder()
        .shutdown_budget(Duration::from_secs(6))
        .register(probe("db").stop_timeout(Duration::from_secs(5)))
        .register(
            probe("admin")
                .stop_timeout(Duration::from_secs(2))
                .stops_last(),
        )
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "shutdown budget 6s is smaller than drain delay 0ns + stop timeouts along \
         db -> admin (7s) = 7s"
    );
}
