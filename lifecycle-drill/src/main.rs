//! `lifecycle-drill`: a shutdown drill for any HTTP service, for a CI job; a command line over
//! [`lifecycle_drill::Drill::run_command`].
//!
//! It starts the service command, waits for `/readyz`, drives load (keep-alive HTTP/1.1
//! clients, HTTP/2 streams on one h2c connection, one server-sent-events client), sends SIGTERM
//! after `--signal-after`, and records every request's outcome: succeeded, refused after the
//! listener closed (fine: a load balancer retries those), or dropped (sent on an open
//! connection and reset or left without a response: lost). It prints a summary, writes it as
//! JSON with `--json`, and exits 1 when a request was dropped, the service exited non-zero, or
//! it overran `--budget` (or never became ready), and 2 when it could not start the drill.
//!
//! ```text
//! cargo run --release -p lifecycle-drill -- --url http://127.0.0.1:8080 --signal-after 3s \
//!     --json drill.json -- target/release/example-service --drain-delay 1s
//! ```

use std::error::Error as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use lifecycle_drill::{Drill, DrillError};

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
    /// POST this JSON body to the path instead of GETting it.
    #[arg(long)]
    post_json: Option<String>,
    /// Keep-alive HTTP/1.1 clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Concurrent HTTP/2 streams on one connection (0 for none).
    #[arg(long, default_value_t = 8)]
    h2_streams: usize,
    /// Concurrent gRPC unary calls (0 for none), four per HTTP/2 connection, each with an empty
    /// request message.
    #[arg(long, default_value_t = 0)]
    grpc_streams: usize,
    /// The gRPC method the calls go to.
    #[arg(long, default_value = "/grpc.health.v1.Health/Check")]
    grpc_path: String,
    /// The CA certificate (PEM) of an https:// service.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// The server name TLS asks for and checks.
    #[arg(long, default_value = "localhost")]
    server_name: String,
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
    /// Load a service that is already running (or a load balancer) for --signal-after, then
    /// stop and report, with no command and no signal: the rolling-restart script's load.
    #[arg(long)]
    load_only: bool,
    /// The service command and its arguments.
    #[arg(last = true, required_unless_present = "load_only")]
    command: Vec<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mut drill = Drill::new()
        .url(args.url)
        .path(args.path)
        .clients(args.clients)
        .h2_streams(args.h2_streams)
        .grpc(args.grpc_path, args.grpc_streams)
        .server_name(args.server_name)
        .signal_after(args.signal_after)
        .budget(args.budget)
        .progress(true);
    drill = if args.sse_path.is_empty() {
        drill.no_sse()
    } else {
        drill.sse_path(args.sse_path)
    };
    if let Some(body) = args.post_json {
        drill = drill.post_json(body);
    }
    if let Some(ca) = args.ca_cert {
        drill = drill.ca_cert(ca);
    }
    if let Some(path) = args.report_file {
        drill = drill.report_file(path);
    }
    let result = if args.load_only {
        drill.run_in_process(|| async {}).await
    } else {
        let mut command = std::process::Command::new(&args.command[0]);
        command.args(&args.command[1..]);
        drill.run_command(command).await
    };
    let summary = match result {
        Ok(summary) => summary,
        Err(error) => {
            let mut message = format!("lifecycle-drill: {error}");
            let mut source = error.source();
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("{message}");
            return match error {
                // The drill could not start: a usage error.
                DrillError::BadUrl { .. }
                | DrillError::BadPath { .. }
                | DrillError::BadTls { .. }
                | DrillError::NoCaCert { .. }
                | DrillError::Start { .. } => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            };
        }
    };
    print!("{summary}");
    if let Some(path) = &args.json {
        if let Err(error) = std::fs::write(path, summary.to_json()) {
            eprintln!("lifecycle-drill: cannot write {}: {error}", path.display());
        }
    }
    if summary.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
