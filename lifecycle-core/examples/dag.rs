//! Shutdown time against the dependency graph: builds a random DAG of components whose start
//! and stop each sleep a random 0-20 ms, runs the real orchestrator, triggers the shutdown as
//! soon as it is ready, and compares the measured shutdown with the DAG's longest stop path
//! (the heaviest chain of stop sleeps, which no dependency-ordered shutdown can beat) and with
//! the serial sum of all stop sleeps (what a serial reverse-order stop, as in uber-go/fx,
//! takes).
//!
//! The target: the shutdown's wall time stays within 5% plus 10 ms of the longest stop path,
//! taken with each stop's measured duration (a tokio sleep overshoots the duration asked for by
//! up to a timer tick, which is not the orchestrator's doing; the nominal figures are printed
//! too).
//!
//! Run it with:
//!
//! ```text
//! cargo run --release -p lifecycle-core --example dag -- --components 50 --seed 1
//! ```
//!
//! The report's JSON goes to stdout and a summary to stderr; `--check` makes the exit code 1
//! when the target is missed (and it is 1 as well when a component did not stop cleanly).
//! `scripts/bench-dag.sh` runs it over several sizes and seeds and prints a table.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use lifecycle_core::{async_trait, BoxError, Component, Context, Lifecycle, Phase, Registration};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Runs a random DAG of sleeping components and times its shutdown.
#[derive(Debug, Parser)]
struct Args {
    /// How many components the DAG has.
    #[arg(long, default_value_t = 50)]
    components: usize,
    /// The seed of the graph and of the sleep durations.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The most dependencies a component has; each gets 0 to this many earlier components.
    #[arg(long, default_value_t = 3)]
    max_deps: usize,
    /// The longest start or stop sleep, in milliseconds.
    #[arg(long, default_value_t = 20)]
    max_sleep_ms: u64,
    /// Exit with code 1 if the shutdown took more than 1.05 × the longest path of the measured
    /// stop times + 10 ms.
    #[arg(long)]
    check: bool,
}

/// Each component's stop timeout: far above any sleep, so none times out.
const STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// The relative and absolute slack the target allows over the longest stop path.
const TOLERANCE: f64 = 0.05;
const SLACK_MS: f64 = 10.0;

/// A component that only sleeps, in start and in stop.
#[derive(Debug)]
struct Sleeper {
    start: Duration,
    stop: Duration,
}

#[async_trait]
impl Component for Sleeper {
    async fn start(&self, _ctx: &Context) -> Result<(), BoxError> {
        tokio::time::sleep(self.start).await;
        Ok(())
    }

    async fn stop(&self, _ctx: &Context) -> Result<(), BoxError> {
        tokio::time::sleep(self.stop).await;
        Ok(())
    }
}

/// One component of the random graph.
#[derive(Debug)]
struct Node {
    deps: Vec<usize>,
    start: Duration,
    stop: Duration,
}

/// A random DAG: each component depends on up to `max_deps` distinct earlier ones, which keeps
/// it acyclic.
fn random_dag(n: usize, seed: u64, max_deps: usize, max_sleep: Duration) -> Vec<Node> {
    let mut rng = StdRng::seed_from_u64(seed);
    let max_sleep_us = u64::try_from(max_sleep.as_micros()).expect("a sleep of sane length");
    let sleep = |rng: &mut StdRng| Duration::from_micros(rng.random_range(0..=max_sleep_us));
    (0..n)
        .map(|i| {
            let k = rng.random_range(0..=max_deps.min(i));
            let deps = rand::seq::index::sample(&mut rng, i, k).into_vec();
            let start = sleep(&mut rng);
            let stop = sleep(&mut rng);
            Node { deps, start, stop }
        })
        .collect()
}

fn name(i: usize) -> String {
    format!("c{i}")
}

/// The heaviest chain in stop order (each component before the dependencies it must stop
/// ahead of) under `weight`, and its total in milliseconds.
///
/// A component's stop can begin only once all its dependents have stopped, so with unlimited
/// concurrency it ends at its own weight plus the latest end among its dependents; the
/// shutdown ends at the largest of those.
fn longest_stop_path(nodes: &[Node], weight: impl Fn(usize) -> f64) -> (Vec<usize>, f64) {
    let mut dependents = vec![Vec::new(); nodes.len()];
    for (i, node) in nodes.iter().enumerate() {
        for &d in &node.deps {
            dependents[d].push(i);
        }
    }
    // Dependents have larger indices, so walking down the indices visits them first.
    let mut end = vec![0.0_f64; nodes.len()];
    let mut after = vec![None; nodes.len()];
    for i in (0..nodes.len()).rev() {
        let latest = dependents[i]
            .iter()
            .copied()
            .max_by(|&a, &b| end[a].total_cmp(&end[b]));
        end[i] = weight(i) + latest.map_or(0.0, |j| end[j]);
        after[i] = latest;
    }
    let Some(last) = (0..nodes.len()).max_by(|&a, &b| end[a].total_cmp(&end[b])) else {
        return (Vec::new(), 0.0);
    };
    // Follow the chain back from the component that ends last to the one that stops first.
    let mut path = vec![last];
    while let Some(j) = after[*path.last().expect("not empty")] {
        path.push(j);
    }
    path.reverse();
    (path, end[last])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let n = args.components;
    let nodes = random_dag(
        n,
        args.seed,
        args.max_deps,
        Duration::from_millis(args.max_sleep_ms),
    );

    let mut builder = Lifecycle::builder()
        .signals([])
        // Enough for any chain of stop timeouts, which build() checks.
        .shutdown_budget(STOP_TIMEOUT * u32::try_from(n).expect("a sane size") + STOP_TIMEOUT);
    for (i, node) in nodes.iter().enumerate() {
        let mut registration = Registration::new(
            name(i),
            Sleeper {
                start: node.start,
                stop: node.stop,
            },
        )
        .stop_timeout(STOP_TIMEOUT);
        for &d in &node.deps {
            registration = registration.depends_on(name(d));
        }
        builder = builder.register(registration);
    }
    let lifecycle = builder.build().expect("a valid configuration");

    // Trigger the shutdown the moment the lifecycle is ready, from another task, as a signal
    // would; `triggered` is when the shutdown was asked for.
    let handle = lifecycle.handle();
    let trigger = tokio::spawn(async move {
        let mut phase = handle.watch_phase();
        let ready = phase
            .wait_for(|p| *p != Phase::Starting)
            .await
            .is_ok_and(|p| *p == Phase::Ready);
        let triggered = Instant::now();
        handle.shutdown("dag example");
        ready.then_some(triggered)
    });
    // The report's times count from the start of `run`, a moment after this.
    let run_called = Instant::now();
    let report = lifecycle.run().await;
    let returned = Instant::now();
    let triggered = trigger.await.expect("the trigger task does not panic");

    println!("{}", report.to_json());
    let exit_code = report.exit_code();
    let stop_began = report
        .components
        .iter()
        .filter_map(|c| c.stop_began_ms)
        .fold(f64::INFINITY, f64::min);
    let stop_ended = report
        .components
        .iter()
        .filter_map(|c| c.stop_ended_ms)
        .fold(f64::NEG_INFINITY, f64::max);
    let took: Vec<f64> = report
        .components
        .iter()
        .map(|c| match (c.stop_began_ms, c.stop_ended_ms) {
            (Some(a), Some(b)) => b - a,
            _ => 0.0,
        })
        .collect();
    // Dropping the report disarms its watchdog.
    drop(report);

    let Some(triggered) = triggered else {
        eprintln!("dag: the start-up did not complete (exit code {exit_code})");
        return ExitCode::FAILURE;
    };
    let (path, longest) = longest_stop_path(&nodes, |i| ms(nodes[i].stop));
    let (_, longest_measured) = longest_stop_path(&nodes, |i| took[i]);
    // The floor any tokio program meets: the same chain of sleeps awaited back to back, with
    // no orchestrator. tokio's timer has millisecond ticks, so each sleep overshoots a little.
    let bare = Instant::now();
    for &i in &path {
        tokio::time::sleep(nodes[i].stop).await;
    }
    let bare = ms(bare.elapsed());
    let serial: f64 = nodes.iter().map(|node| ms(node.stop)).sum();
    // The two other strategies, run for real on the same stops: one after another in reverse
    // registration order (uber-go/fx), and all at once (ignoring dependencies: a database pool
    // would close under the requests still using it).
    let serial_run = Instant::now();
    for node in nodes.iter().rev() {
        tokio::time::sleep(node.stop).await;
    }
    let serial_run = ms(serial_run.elapsed());
    let at_once = Instant::now();
    futures::future::join_all(nodes.iter().map(|node| tokio::time::sleep(node.stop))).await;
    let at_once = ms(at_once.elapsed());
    let measured = ms(returned - triggered);
    let span = stop_ended - stop_began;
    let first_stop_after_trigger = stop_began - ms(triggered - run_called);
    // The target compares the shutdown with the longest path of the stops as they actually
    // took: the orchestrator's own cost. The nominal path (the sleeps asked for) is printed
    // too; each tokio sleep overshoots it by up to a timer tick.
    let limit = longest_measured * (1.0 + TOLERANCE) + SLACK_MS;
    let within = measured <= limit;
    let edges: usize = nodes.iter().map(|node| node.deps.len()).sum();

    eprintln!(
        "dag: {n} components, {edges} dependencies, seed {}; the longest stop path has {} \
         components",
        args.seed,
        path.len()
    );
    if path.len() <= 12 {
        let names: Vec<String> = path.iter().map(|&i| name(i)).collect();
        eprintln!("  longest stop path: {}", names.join(" -> "));
    }
    let ratio = measured / longest_measured.max(f64::MIN_POSITIVE);
    let nominal_ratio = measured / longest.max(f64::MIN_POSITIVE);
    for (label, value) in [
        ("longest stop path of the sleeps chosen", longest),
        ("serial sum of the stop sleeps", serial),
        ("measured, trigger to run() returning", measured),
        ("measured, first stop began to last ended", span),
        (
            "from the trigger to the first stop",
            first_stop_after_trigger,
        ),
        ("longest path of the measured stop times", longest_measured),
        ("that path's sleeps back to back, no lifecycle", bare),
        ("serial reverse order (fx), run", serial_run),
        ("all at once, ignoring dependencies, run", at_once),
    ] {
        eprintln!("  {label:<46} {value:9.1} ms");
    }
    eprintln!(
        "  measured / longest measured path: {ratio:.3} (/ nominal path: {nominal_ratio:.3}); \
         limit {limit:.1} ms (+5% +10 ms): {}",
        if within { "within" } else { "MISSED" }
    );
    // One line for scripts.
    eprintln!(
        "summary components={n} seed={} edges={edges} path_len={} longest_ms={longest:.1} \
         serial_ms={serial:.1} measured_ms={measured:.1} span_ms={span:.1} \
         first_stop_ms={first_stop_after_trigger:.1} \
         longest_measured_ms={longest_measured:.1} bare_ms={bare:.1} ratio={ratio:.3} \
         nominal_ratio={nominal_ratio:.3} serial_run_ms={serial_run:.1} at_once_ms={at_once:.1} \
         within={within} \
         exit_code={exit_code}",
        args.seed,
        path.len(),
    );

    if exit_code != 0 || (args.check && !within) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
