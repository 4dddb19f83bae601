//! Registry scale: how `build()`, the start-up and the shutdown grow with the number of
//! components, from 1k to 100k no-op components, in three shapes: no dependencies, a sparse
//! random graph (each component depends on 0 to 2 random earlier ones) and a single chain.
//!
//! Run it with:
//!
//! ```text
//! cargo bench -p lifecycle-core --bench registry_scale
//! ```
//!
//! Each size runs `REPS` times (default 11) and the table shows the medians, in milliseconds
//! and in nanoseconds per component: a per-component cost that stays about the same from 1k to
//! 100k means linear growth. `SIZES` (default `1000,10000,100000`) and `REPS` can be set in the
//! environment. Timed separately:
//!
//! - build: [`LifecycleBuilder::build`](lifecycle_core::LifecycleBuilder::build) alone, on a
//!   builder whose registrations are already made (validation, the graph, its critical path);
//! - start-up: from calling [`Lifecycle::run`] to another task seeing [`Phase::Ready`];
//! - shutdown: from that task calling
//!   [`LifecycleHandle::shutdown`](lifecycle_core::LifecycleHandle::shutdown) to `run`
//!   returning its report.
//!
//! Then the same sizes added at run time: a lifecycle with one component (`db`) is ready, a
//! task sends N additions at once through
//! [`LifecycleHandle::add`](lifecycle_core::LifecycleHandle::add), each a no-op component that
//! depends on `db`, and awaits them all ("add": from the first call to the last answer, every
//! component started); then the shutdown, timed as above, stops the N before `db`.
//!
//! The lifecycle runs as a service runs it: awaited on the main thread of a multi-thread
//! runtime, with the trigger sent from a worker thread.

use std::time::{Duration, Instant};

use lifecycle_core::{
    async_trait, BoxError, Component, Context, Lifecycle, LifecycleBuilder, Outcome, Phase,
    Registration,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A component whose start and stop do nothing.
#[derive(Debug)]
struct Noop;

#[async_trait]
impl Component for Noop {
    async fn start(&self, _ctx: &Context) -> Result<(), BoxError> {
        Ok(())
    }

    async fn stop(&self, _ctx: &Context) -> Result<(), BoxError> {
        Ok(())
    }
}

/// The dependency structure of a run.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// No dependencies: everything starts and stops at once.
    Flat,
    /// Each component depends on 0 to 2 distinct random earlier ones.
    Sparse,
    /// Each component depends on the one before: the deepest graph, started and stopped one
    /// component at a time, in memory order.
    Chain,
}

impl Shape {
    fn as_str(self) -> &'static str {
        match self {
            Shape::Flat => "no deps",
            Shape::Sparse => "0-2 deps",
            Shape::Chain => "chain",
        }
    }
}

/// A builder with `n` no-op components registered, ready for `build()`.
fn builder(n: usize, shape: Shape) -> LifecycleBuilder {
    let mut rng = StdRng::seed_from_u64(n as u64);
    let name = |i: usize| format!("c{i}");
    // The budget must cover the longest chain of stop timeouts, which build() checks; n of them
    // covers any chain.
    let budget = Registration::DEFAULT_STOP_TIMEOUT * u32::try_from(n).expect("a sane size");
    let mut builder = Lifecycle::builder().signals([]).shutdown_budget(budget);
    for i in 0..n {
        let mut registration = Registration::new(name(i), Noop);
        match shape {
            Shape::Flat => {}
            Shape::Sparse => {
                let k = rng.random_range(0..=2.min(i));
                for d in rand::seq::index::sample(&mut rng, i, k) {
                    registration = registration.depends_on(name(d));
                }
            }
            Shape::Chain if i > 0 => registration = registration.depends_on(name(i - 1)),
            Shape::Chain => {}
        }
        builder = builder.register(registration);
    }
    builder
}

/// The three timings of one run.
#[derive(Debug, Clone, Copy)]
struct Sample {
    build: Duration,
    start_up: Duration,
    shutdown: Duration,
}

fn run_once(runtime: &tokio::runtime::Runtime, n: usize, shape: Shape) -> Sample {
    let builder = builder(n, shape);
    let began = Instant::now();
    let lifecycle = builder.build().expect("a valid configuration");
    let build = began.elapsed();

    let (sample, report) = runtime.block_on(async move {
        let handle = lifecycle.handle();
        let trigger = tokio::spawn(async move {
            let mut phase = handle.watch_phase();
            let ready = phase
                .wait_for(|p| *p != Phase::Starting)
                .await
                .is_ok_and(|p| *p == Phase::Ready);
            assert!(ready, "the start-up failed");
            let triggered = Instant::now();
            handle.shutdown("bench");
            triggered
        });
        let began = Instant::now();
        let report = lifecycle.run().await;
        let returned = Instant::now();
        let triggered = trigger.await.expect("the trigger task does not panic");
        let sample = Sample {
            build,
            start_up: triggered - began,
            shutdown: returned - triggered,
        };
        (sample, report)
    });
    assert_eq!(report.exit_code(), 0);
    assert!(report
        .components
        .iter()
        .all(|c| c.outcome == Outcome::Stopped));
    // Dropping the report disarms its watchdog, outside the timings.
    drop(report);
    sample
}

/// `n` components added while the lifecycle runs: how long the additions and then the shutdown
/// took.
fn run_added(runtime: &tokio::runtime::Runtime, n: usize) -> (Duration, Duration) {
    let lifecycle = Lifecycle::builder()
        .signals([])
        .register(Registration::new("db", Noop))
        .build()
        .expect("a valid configuration");
    let (times, report) = runtime.block_on(async move {
        let handle = lifecycle.handle();
        let driver = tokio::spawn(async move {
            let mut phase = handle.watch_phase();
            let ready = phase
                .wait_for(|p| *p != Phase::Starting)
                .await
                .is_ok_and(|p| *p == Phase::Ready);
            assert!(ready, "the start-up failed");
            let began = Instant::now();
            let additions = (0..n).map(|i| {
                let handle = handle.clone();
                async move {
                    handle
                        .add(Registration::new(format!("c{i}"), Noop).depends_on("db"))
                        .await
                }
            });
            let added = futures::future::join_all(additions).await;
            let add = began.elapsed();
            assert!(added.iter().all(Result::is_ok), "an addition failed");
            let triggered = Instant::now();
            handle.shutdown("bench");
            (add, triggered)
        });
        let report = lifecycle.run().await;
        let returned = Instant::now();
        let (add, triggered) = driver.await.expect("the driver does not panic");
        ((add, returned - triggered), report)
    });
    assert_eq!(report.exit_code(), 0);
    assert_eq!(report.components.len(), n + 1);
    assert!(report
        .components
        .iter()
        .all(|c| c.outcome == Outcome::Stopped));
    drop(report);
    times
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn main() {
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(11);
    let sizes: Vec<usize> = std::env::var("SIZES")
        .unwrap_or_else(|_| "1000,10000,100000".into())
        .split(',')
        .map(|size| {
            size.trim()
                .parse()
                .expect("SIZES is a comma-separated list of numbers")
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    println!(
        "registry_scale: median of {reps} runs; {} worker threads",
        std::thread::available_parallelism().map_or(1, usize::from)
    );

    // A warm-up, so the first timed run does not pay for thread start-up and first allocations.
    run_once(&runtime, 1_000, Shape::Sparse);
    // What a run costs whatever its size, which the per-component figures of small sizes
    // include.
    let single: Vec<Sample> = (0..reps)
        .map(|_| run_once(&runtime, 1, Shape::Flat))
        .collect();
    println!(
        "fixed cost (1 component): build {:.3} ms, start-up {:.3} ms, shutdown {:.3} ms",
        median(single.iter().map(|s| s.build).collect()).as_secs_f64() * 1e3,
        median(single.iter().map(|s| s.start_up).collect()).as_secs_f64() * 1e3,
        median(single.iter().map(|s| s.shutdown).collect()).as_secs_f64() * 1e3,
    );

    println!(
        "{:<9} {:>10} | {:>9} {:>8} | {:>11} {:>8} | {:>11} {:>8}",
        "shape",
        "components",
        "build ms",
        "ns/comp",
        "start-up ms",
        "ns/comp",
        "shutdown ms",
        "ns/comp"
    );
    for shape in [Shape::Flat, Shape::Sparse, Shape::Chain] {
        for &n in &sizes {
            let samples: Vec<Sample> = (0..reps).map(|_| run_once(&runtime, n, shape)).collect();
            let cells = [
                median(samples.iter().map(|s| s.build).collect()),
                median(samples.iter().map(|s| s.start_up).collect()),
                median(samples.iter().map(|s| s.shutdown).collect()),
            ]
            .map(|d| (d.as_secs_f64() * 1e3, d.as_secs_f64() * 1e9 / n as f64));
            println!(
                "{:<9} {:>10} | {:>9.2} {:>8.0} | {:>11.2} {:>8.0} | {:>11.2} {:>8.0}",
                shape.as_str(),
                n,
                cells[0].0,
                cells[0].1,
                cells[1].0,
                cells[1].1,
                cells[2].0,
                cells[2].1
            );
        }
    }
    for &n in &sizes {
        let samples: Vec<(Duration, Duration)> =
            (0..reps).map(|_| run_added(&runtime, n)).collect();
        let cells = [
            median(samples.iter().map(|s| s.0).collect()),
            median(samples.iter().map(|s| s.1).collect()),
        ]
        .map(|d| (d.as_secs_f64() * 1e3, d.as_secs_f64() * 1e9 / n as f64));
        println!(
            "{:<9} {:>10} | {:>9} {:>8} | {:>11.2} {:>8.0} | {:>11.2} {:>8.0}",
            "added", n, "-", "-", cells[0].0, cells[0].1, cells[1].0, cells[1].1
        );
    }
}
