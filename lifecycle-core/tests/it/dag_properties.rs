//! Property tests on random dependency graphs with random start and stop durations, failures,
//! panics and hangs, on tokio's paused clock.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Act, Event, Log, Probe};
use lifecycle_core::{Lifecycle, Outcome, Phase, Registration, Report};
use proptest::prelude::*;

const TIMEOUT: Duration = Duration::from_millis(50);

/// A component of a random graph: its dependencies (indices of earlier components, so the
/// graph is acyclic) and what its start and stop do.
#[derive(Debug, Clone)]
struct Node {
    deps: Vec<usize>,
    start: Act,
    stop: Act,
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        12 => (0u64..20).prop_map(Act::ms),
        1 => Just(Act::Fail),
        1 => Just(Act::Panic),
        1 => Just(Act::Hang),
    ]
}

fn graph() -> impl Strategy<Value = Vec<Node>> {
    (1usize..12).prop_flat_map(|n| {
        (0..n)
            .map(|i| {
                let deps = proptest::collection::vec(0..i.max(1), 0..=i.min(3))
                    .prop_map(move |d| if i == 0 { vec![] } else { d });
                // Start failures are rarer than stop failures so most runs get to a full stop.
                let start = prop_oneof![30 => (0u64..20).prop_map(Act::ms), 1 => act()];
                (deps, start, act()).prop_map(|(deps, start, stop)| Node { deps, start, stop })
            })
            .collect::<Vec<_>>()
    })
}

fn name(i: usize) -> String {
    format!("c{i}")
}

fn run(nodes: &[Node]) -> (Log, Report) {
    let log = Log::default();
    let mut builder = Lifecycle::builder()
        .signals([])
        .shutdown_budget(Duration::from_secs(60));
    for (i, node) in nodes.iter().enumerate() {
        let probe = Probe::new(&name(i), &log).start(node.start).stop(node.stop);
        let mut registration = Registration::new(name(i), probe)
            .start_timeout(TIMEOUT)
            .stop_timeout(TIMEOUT);
        for &d in &node.deps {
            registration = registration.depends_on(name(d));
        }
        builder = builder.register(registration);
    }
    let lifecycle = builder.build().expect("a DAG of earlier indices is valid");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let report = runtime.block_on(async move {
        let handle = lifecycle.handle();
        let mut phase = handle.watch_phase();
        tokio::spawn(async move {
            if phase.wait_for(|p| *p == Phase::Ready).await.is_ok() {
                handle.shutdown("property test");
            }
        });
        lifecycle.run().await
    });
    (log, report)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn orders_and_outcomes_hold_on_random_graphs(nodes in graph()) {
        let (log, report) = run(&nodes);
        let c = |i: usize| report.component(&name(i)).unwrap();
        let mut dependents: HashMap<usize, Vec<usize>> = HashMap::new();
        for (a, node) in nodes.iter().enumerate() {
            for &b in &node.deps {
                dependents.entry(b).or_default().push(a);
            }
        }

        for (a, node) in nodes.iter().enumerate() {
            let started = log.once(&name(a), Event::StartEnded).is_some();
            let stops = log.times(&name(a), Event::StopBegan).len();
            // Started components are stopped exactly once; the others never.
            prop_assert_eq!(stops, usize::from(started), "{} in\n{}", name(a), report);
            if !started {
                prop_assert_ne!(c(a).outcome, Outcome::Stopped);
            }
            for &b in &node.deps {
                // A starts only after B's start ended...
                if let Some(a_began) = c(a).start_began_ms {
                    prop_assert!(c(b).start_ended_ms.unwrap() <= a_began, "{} before {}", name(b), name(a));
                    prop_assert_eq!(c(b).outcome == Outcome::NotStarted, false);
                }
                // ...and B's stop begins only after A's stop ended or was cut off.
                if let (Some(a_ended), Some(b_began)) = (c(a).stop_ended_ms, c(b).stop_began_ms) {
                    prop_assert!(a_ended <= b_began, "{} stopped before {}", name(b), name(a));
                }
            }
        }

        // No needless waiting: each stop begins exactly when the last of its dependents (through
        // components with nothing to stop) is done, so independent branches overlap and the stop
        // phase lasts as long as its longest chain.
        let Some(phase_start) = nodes.iter().enumerate().filter_map(|(i, _)| c(i).stop_began_ms).reduce(f64::min) else {
            return Ok(());
        };
        let mut done = vec![0.0f64; nodes.len()];
        for i in (0..nodes.len()).rev() {
            let turn = dependents.get(&i).into_iter().flatten().map(|&d| done[d]).fold(phase_start, f64::max);
            done[i] = match (c(i).stop_began_ms, c(i).stop_ended_ms) {
                (Some(began), Some(ended)) => {
                    prop_assert!((began - turn).abs() < 1e-6, "{} began at {} instead of {}\n{}", name(i), began, turn, report);
                    ended
                }
                _ => turn,
            };
        }
        let longest = done.iter().copied().fold(phase_start, f64::max);
        let last_stop = nodes.iter().enumerate().filter_map(|(i, _)| c(i).stop_ended_ms).fold(phase_start, f64::max);
        prop_assert!((last_stop - longest).abs() < 1e-6);

        // The exit code says whether anything went wrong.
        let clean = report.components.iter().all(|c| c.outcome == Outcome::Stopped);
        prop_assert_eq!(report.exit_code() == 0, clean, "{}", report);
    }
}
