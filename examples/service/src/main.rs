//! The example service: one ordinary `main` that registers its parts with a lifecycle and
//! returns the shutdown report.
//!
//! Run it with `cargo run --release -p example-service`, then press Ctrl-C (or send SIGTERM):
//! the log shows readiness withdrawn, the drain delay, and each part stopping after the parts
//! that use it, then the report. Flags: `--drain-delay 2s`, `--shutdown-budget 25s`,
//! `--report-json report.json`.
//!
//! This first version wires a job store and two workers; the HTTP server and database pool
//! join it as their crates land.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use lifecycle_core::{Lifecycle, Registration, Report, Worker};

/// Command-line flags; each can also come from the environment variable shown.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// How long to keep serving after the signal, readiness withdrawn, before stopping.
    #[arg(long, env = "DRAIN_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
    drain_delay: Duration,
    /// The most the whole shutdown may take.
    #[arg(long, env = "SHUTDOWN_BUDGET", default_value = "25s", value_parser = humantime::parse_duration)]
    shutdown_budget: Duration,
    /// Write the shutdown report as JSON to this file on exit.
    #[arg(long)]
    report_json: Option<PathBuf>,
}

/// A stand-in for a database: a queue of jobs shared by the producer and the consumer.
type Jobs = Arc<Mutex<VecDeque<u64>>>;

#[tokio::main]
async fn main() -> Report {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let jobs: Jobs = Arc::default();

    // Enqueues a job every 100 ms until its stop turn.
    let producer = {
        let jobs = jobs.clone();
        Worker::new(move |ctx| {
            let jobs = jobs.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                let mut next = 0;
                while ctx.token().run_until_cancelled(tick.tick()).await.is_some() {
                    jobs.lock().unwrap().push_back(next);
                    next += 1;
                }
                Ok::<_, std::io::Error>(())
            }
        })
    };
    // Takes jobs one at a time; checks its token only between jobs, so a job in hand finishes.
    let consumer = {
        let jobs = jobs.clone();
        Worker::new(move |ctx| {
            let jobs = jobs.clone();
            async move {
                while !ctx.token().is_cancelled() {
                    let job = jobs.lock().unwrap().pop_front();
                    match job {
                        Some(job) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            tracing::debug!(job, "job done");
                        }
                        None => {
                            let _ = ctx
                                .token()
                                .run_until_cancelled(tokio::time::sleep(Duration::from_millis(20)))
                                .await;
                        }
                    }
                }
                Ok::<_, std::io::Error>(())
            }
        })
    };
    let store = Worker::new(|ctx| async move {
        ctx.token().cancelled().await;
        Ok::<_, std::io::Error>(())
    });

    let lifecycle = match Lifecycle::builder()
        .drain_delay(args.drain_delay)
        .shutdown_budget(args.shutdown_budget)
        .register(Registration::new("store", store))
        .register(Registration::new("producer", producer).depends_on("store"))
        .register(Registration::new("consumer", consumer).depends_on("store"))
        .build()
    {
        Ok(lifecycle) => lifecycle,
        Err(error) => {
            eprintln!("example-service: invalid configuration: {error}");
            std::process::exit(lifecycle_core::exit_code::FAILURE);
        }
    };
    tracing::info!(
        start_order = ?lifecycle.start_order(),
        shutdown_bound = ?lifecycle.shutdown_bound(),
        critical_path = ?lifecycle.critical_path(),
        "starting"
    );

    let report = lifecycle.run().await;
    eprintln!("{report}");
    if let Some(path) = &args.report_json {
        if let Err(error) = std::fs::write(path, report.to_json()) {
            tracing::error!(path = %path.display(), %error, "could not write the report");
        }
    }
    tracing::info!(left = jobs.lock().unwrap().len(), "jobs left in the queue");
    report
}
