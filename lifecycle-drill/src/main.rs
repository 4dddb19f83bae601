//! `lifecycle-drill`: a shutdown drill for any HTTP service, for a CI job.
//!
//! It starts the service command, waits for `/readyz`, drives load (keep-alive HTTP/1.1
//! clients, HTTP/2 streams on one h2c connection, one server-sent-events client), sends SIGTERM
//! after `--signal-after`, and records every request's outcome: succeeded, refused after the
//! listener closed (fine: a load balancer retries those), or dropped (sent on an open
//! connection and reset or left without a response: lost). It prints a summary, writes it as
//! JSON with `--json`, and exits 1 when a request was dropped, the service exited non-zero, or
//! it overran `--budget`.
//!
//! ```text
//! cargo run --release -p lifecycle-drill -- --url http://127.0.0.1:8080 --signal-after 3s \
//!     --json drill.json -- target/release/example-service --drain-delay 1s
//! ```

mod load;
mod outcome;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

use crate::load::Load;
use crate::outcome::{Counters, Summary};

/// Drills a service's graceful shutdown under load.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Where the service listens, e.g. http://127.0.0.1:8080.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The path the load requests.
    #[arg(long, default_value = "/work?ms=20")]
    path: String,
    /// Keep-alive HTTP/1.1 clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Concurrent HTTP/2 streams on one connection (0 for none).
    #[arg(long, default_value_t = 8)]
    h2_streams: usize,
    /// The server-sent-events path (empty for none).
    #[arg(long, default_value = "/sse")]
    sse_path: String,
    /// How long to load the service before SIGTERM.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    signal_after: Duration,
    /// The most the service may take from SIGTERM to exit; past it, it is killed.
    #[arg(long, default_value = "25s", value_parser = humantime::parse_duration)]
    budget: Duration,
    /// The service's own report (JSON), read after it exits and included.
    #[arg(long)]
    report_file: Option<PathBuf>,
    /// Write the summary as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The service command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

fn since(signal: Instant, at: Option<Instant>) -> Option<f64> {
    at.map(|at| at.saturating_duration_since(signal).as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let Some(addr) = args
        .url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .and_then(|a| a.parse::<SocketAddr>().ok())
    else {
        eprintln!("lifecycle-drill: --url must be http://IP:PORT");
        return ExitCode::from(2);
    };
    let mut service = match tokio::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(error) => {
            eprintln!("lifecycle-drill: cannot start {}: {error}", args.command[0]);
            return ExitCode::from(2);
        }
    };
    let load = Arc::new(Load {
        addr,
        path: args.path.clone(),
        counters: Counters::default(),
        signalled: false.into(),
        done: false.into(),
    });
    if !load::wait_ready(&load, Duration::from_secs(60)).await {
        eprintln!(
            "lifecycle-drill: the service did not become ready at {}/readyz",
            args.url
        );
        return ExitCode::FAILURE;
    }

    let mut tasks: Vec<_> = (0..args.clients)
        .map(|_| tokio::spawn(load::http1_client(load.clone())))
        .collect();
    if args.h2_streams > 0 {
        tasks.push(tokio::spawn(load::http2_streams(
            load.clone(),
            args.h2_streams,
        )));
    }
    let sse = (!args.sse_path.is_empty())
        .then(|| tokio::spawn(load::sse_client(load.clone(), args.sse_path.clone())));
    let readiness = tokio::spawn(load::readiness_off(load.clone()));
    let progress = tokio::spawn(progress(load.clone()));

    tokio::time::sleep(args.signal_after).await;
    let signal = Instant::now();
    load.signalled.store(true, Ordering::Relaxed);
    let pid = service.id().map(|pid| pid.to_string()).unwrap_or_default();
    let _ = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await;

    let (exit_code, exited_at, overran) =
        match tokio::time::timeout(args.budget + Duration::from_secs(1), service.wait()).await {
            Ok(Ok(status)) => (status.code(), Some(Instant::now()), false),
            Ok(Err(_)) | Err(_) => {
                let _ = service.kill().await;
                (None, None, true)
            }
        };
    load.done.store(true, Ordering::Relaxed);
    progress.abort();
    eprintln!();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    let sse_stream = match sse {
        Some(sse) => tokio::time::timeout(Duration::from_secs(5), sse)
            .await
            .map_or_else(
                |_| "still open".to_owned(),
                |r| r.unwrap_or_else(|e| e.to_string()),
            ),
        None => "not used".to_owned(),
    };
    let readiness_off = if readiness.is_finished() {
        readiness.await.ok()
    } else {
        readiness.abort();
        None
    };

    let counters = &load.counters;
    let dropped = Counters::get(&counters.dropped);
    let service_report = args
        .report_file
        .as_ref()
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| serde_json::from_str(&text).ok());
    let summary = Summary {
        requests_sent: Counters::get(&counters.sent),
        succeeded: Counters::get(&counters.succeeded),
        non_2xx: Counters::get(&counters.non_2xx),
        refused_after_listener_closed: Counters::get(&counters.refused),
        dropped,
        drop_errors: counters
            .drop_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        sse_stream,
        signal_to_readiness_off_ms: since(signal, readiness_off),
        signal_to_listener_closed_ms: since(
            signal,
            *counters
                .listener_closed
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        ),
        signal_to_exit_ms: since(signal, exited_at),
        exit_code,
        overran_budget: overran,
        service_report,
        passed: dropped == 0 && !overran && exit_code == Some(0),
    };
    print!("{summary}");
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&summary).expect("a summary serialises");
        if let Err(error) = std::fs::write(path, json) {
            eprintln!("lifecycle-drill: cannot write {}: {error}", path.display());
        }
    }
    if summary.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A progress line on stderr while the drill runs.
async fn progress(load: Arc<Load>) {
    let started = Instant::now();
    loop {
        let c = &load.counters;
        eprint!(
            "\r{:>6.1}s  sent {}  ok {}  refused {}  dropped {}{}   ",
            started.elapsed().as_secs_f64(),
            Counters::get(&c.sent),
            Counters::get(&c.succeeded),
            Counters::get(&c.refused),
            Counters::get(&c.dropped),
            if load.signalled.load(Ordering::Relaxed) {
                "  (SIGTERM sent)"
            } else {
                ""
            }
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
