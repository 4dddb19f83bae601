//! Real signals sent to a child process running a lifecycle: SIGTERM and SIGINT take the
//! graceful path, a second signal forces the exit, a signal during start-up rolls back, and a
//! runtime that cannot finish (a `spawn_blocking` that never returns, a blocked thread) still
//! exits by the deadline.
//!
//! The test binary is its own child: run with `LIFECYCLE_SIGNAL_CHILD` set, it is a small
//! service (`child_main`) instead of the tests. It has no libtest harness (`harness = false` in
//! Cargo.toml) so that its `main` can be the child's.

#![cfg(unix)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;
use lifecycle_core::{
    async_trait, exit_code, BoxError, Component, Context, Lifecycle, Phase, Registration, Report,
    Worker,
};

/// Set in the child's environment.
const CHILD: &str = "LIFECYCLE_SIGNAL_CHILD";

fn main() -> std::process::ExitCode {
    if std::env::var_os(CHILD).is_some() {
        return std::process::Termination::report(child_main());
    }
    let tests: [(&str, fn()); 6] = [
        (
            "sigterm_takes_the_graceful_path",
            sigterm_takes_the_graceful_path,
        ),
        (
            "sigint_takes_the_graceful_path",
            sigint_takes_the_graceful_path,
        ),
        (
            "a_second_sigterm_forces_the_exit",
            a_second_sigterm_forces_the_exit,
        ),
        (
            "a_signal_during_start_up_rolls_back",
            a_signal_during_start_up_rolls_back,
        ),
        (
            "a_spawn_blocking_that_never_returns_cannot_hold_the_exit_past_the_deadline",
            a_spawn_blocking_that_never_returns_cannot_hold_the_exit_past_the_deadline,
        ),
        (
            "a_wedged_runtime_still_exits_at_the_deadline",
            a_wedged_runtime_still_exits_at_the_deadline,
        ),
    ];
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut failed = 0;
    // Run concurrently: each test waits mostly on its child.
    let runs: Vec<_> = tests
        .into_iter()
        .filter(|(name, _)| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str())))
        .map(|(name, test)| (name, std::thread::spawn(test)))
        .collect();
    println!("running {} tests", runs.len());
    for (name, run) in runs {
        let ok = run.join().is_ok();
        failed += usize::from(!ok);
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
    }
    if failed == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        println!("{failed} failed");
        std::process::ExitCode::FAILURE
    }
}

/// The child, killed if the test ends first, and its stdout lines as they come.
struct Service {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg("--")
            .args(args)
            .env(CHILD, "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        Service { child, lines }
    }

    fn expect_line(&self, expected: &str) {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(20))
            .expect("a line from the child");
        assert_eq!(line, expected);
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the exit; the code and how long it took.
    fn exit(&mut self, within: Duration) -> (i32, Duration) {
        let began = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (
                    status.code().expect("exited, not killed by a signal"),
                    began.elapsed(),
                );
            }
            assert!(
                began.elapsed() < within,
                "the child did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn report(&self) -> serde_json::Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(5))
            .expect("the report");
        serde_json::from_str(&line).unwrap()
    }

    fn stderr(&mut self) -> String {
        let mut text = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    }
}

fn outcome<'a>(report: &'a serde_json::Value, name: &str) -> &'a str {
    report["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()["outcome"]
        .as_str()
        .unwrap()
}

fn time(report: &serde_json::Value, name: &str, field: &str) -> f64 {
    report["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()[field]
        .as_f64()
        .unwrap()
}

fn graceful(signal: &str) {
    let mut child = Service::spawn(&[]);
    child.expect_line("starting");
    child.expect_line("ready");
    child.signal(signal);
    let (code, _) = child.exit(Duration::from_secs(10));
    assert_eq!(code, exit_code::SUCCESS);
    let report = child.report();
    assert_eq!(report["trigger"]["kind"], "signal");
    assert_eq!(report["trigger"]["detail"], signal_name(signal));
    for name in ["db", "slow", "worker", "http"] {
        assert_eq!(outcome(&report, name), "stopped");
    }
    // Reverse dependency order: http, then slow and worker, then db.
    for (dependent, dependency) in [
        ("http", "slow"),
        ("http", "worker"),
        ("slow", "db"),
        ("worker", "db"),
    ] {
        assert!(
            time(&report, dependent, "stop_ended_ms") <= time(&report, dependency, "stop_began_ms")
        );
    }
}

fn signal_name(signal: &str) -> String {
    format!("SIG{signal}")
}

fn sigterm_takes_the_graceful_path() {
    graceful("TERM");
}

fn sigint_takes_the_graceful_path() {
    graceful("INT");
}

fn a_second_sigterm_forces_the_exit() {
    let mut child = Service::spawn(&["--stop-hangs"]);
    child.expect_line("starting");
    child.expect_line("ready");
    child.signal("TERM");
    std::thread::sleep(Duration::from_millis(500));
    child.signal("TERM");
    let (code, took) = child.exit(Duration::from_secs(5));
    assert_eq!(code, exit_code::FORCED);
    assert!(took < Duration::from_secs(1), "forced exit took {took:?}");
    let stderr = child.stderr();
    assert!(
        stderr.contains("lifecycle: forced exit: second signal (SIGTERM)"),
        "{stderr}"
    );
    // The partial report names the component still stopping.
    assert!(stderr.contains("worker"), "{stderr}");
}

fn a_signal_during_start_up_rolls_back() {
    let mut child = Service::spawn(&["--slow-start", "10000"]);
    child.expect_line("starting");
    std::thread::sleep(Duration::from_millis(300));
    child.signal("TERM");
    let (code, took) = child.exit(Duration::from_secs(5));
    assert_eq!(code, exit_code::SUCCESS);
    assert!(took < Duration::from_secs(2), "{took:?}");
    let report = child.report();
    assert_eq!(outcome(&report, "slow"), "not_started");
    assert_eq!(outcome(&report, "http"), "not_started");
    assert_eq!(
        report["components"][3]["start_began_ms"],
        serde_json::Value::Null,
        "nothing starts after the signal"
    );
    assert_eq!(outcome(&report, "db"), "stopped");
    assert_eq!(outcome(&report, "worker"), "stopped");
}

fn a_spawn_blocking_that_never_returns_cannot_hold_the_exit_past_the_deadline() {
    let mut child = Service::spawn(&["--blocking-forever", "--budget-ms", "1500"]);
    child.expect_line("starting");
    child.expect_line("ready");
    child.signal("TERM");
    let (code, took) = child.exit(Duration::from_secs(10));
    // The shutdown itself was clean, but the runtime could not shut down: the deadline ended
    // the process, with its distinct code.
    assert_eq!(code, exit_code::DEADLINE);
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    let report = child.report();
    assert_eq!(report["exit_code"], 0, "the report of the shutdown itself");
    assert!(child
        .stderr()
        .contains("lifecycle: forced exit: shutdown budget of 1.5s exhausted"));
}

fn a_wedged_runtime_still_exits_at_the_deadline() {
    let mut child = Service::spawn(&["--wedge", "--budget-ms", "1500"]);
    child.expect_line("starting");
    child.expect_line("ready");
    child.signal("TERM");
    let (code, took) = child.exit(Duration::from_secs(10));
    assert_eq!(code, exit_code::DEADLINE);
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    let stderr = child.stderr();
    assert!(
        stderr.contains("lifecycle: forced exit: shutdown budget of 1.5s exhausted"),
        "{stderr}"
    );
    assert!(
        stderr.contains("worker"),
        "the partial report names the stuck component: {stderr}"
    );
}

// The child.

#[derive(Debug, Parser)]
struct Args {
    /// The start of `slow` sleeps this long.
    #[arg(long)]
    slow_start: Option<u64>,
    /// The stop of `worker` never returns.
    #[arg(long)]
    stop_hangs: bool,
    /// Leave a `spawn_blocking` task that never returns, so the runtime cannot shut down.
    #[arg(long)]
    blocking_forever: bool,
    /// Run on one thread and block it in `worker`'s stop, wedging the runtime.
    #[arg(long)]
    wedge: bool,
    /// The shutdown budget.
    #[arg(long, default_value_t = 30_000)]
    budget_ms: u64,
}

/// A component whose start and stop misbehave as asked.
struct Scripted {
    start: Duration,
    stop_hangs: bool,
    stop_blocks: bool,
}

#[async_trait]
impl Component for Scripted {
    async fn start(&self, _ctx: &Context) -> Result<(), BoxError> {
        tokio::time::sleep(self.start).await;
        Ok(())
    }

    async fn stop(&self, _ctx: &Context) -> Result<(), BoxError> {
        if self.stop_blocks {
            std::thread::sleep(Duration::from_secs(600));
        }
        if self.stop_hangs {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

fn say(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// The child's `main`: a lifecycle misbehaving as its arguments ask.
fn child_main() -> Report {
    // Invoked as `<test binary> -- <flags>`.
    let flags = std::env::args().skip_while(|a| a != "--").skip(1);
    let args = Args::parse_from(std::iter::once("signal-child".to_owned()).chain(flags));
    let runtime = if args.wedge {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    }
    .expect("a runtime");
    let report = runtime.block_on(async {
        if args.blocking_forever {
            tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_secs(3600)));
        }
        let idle = || {
            Worker::new(|ctx| async move {
                ctx.token().cancelled().await;
                Ok::<_, std::io::Error>(())
            })
        };
        let slow = Scripted {
            start: Duration::from_millis(args.slow_start.unwrap_or(0)),
            stop_hangs: false,
            stop_blocks: false,
        };
        let worker = Scripted {
            start: Duration::ZERO,
            stop_hangs: args.stop_hangs,
            stop_blocks: args.wedge,
        };
        let stop_timeout = Duration::from_millis(args.budget_ms / 3);
        let lifecycle = Lifecycle::builder()
            .shutdown_budget(Duration::from_millis(args.budget_ms))
            .register(Registration::new("db", idle()).stop_timeout(stop_timeout))
            .register(
                Registration::new("slow", slow)
                    .depends_on("db")
                    .stop_timeout(stop_timeout),
            )
            .register(
                Registration::new("worker", worker)
                    .depends_on("db")
                    .stop_timeout(stop_timeout),
            )
            .register(
                Registration::new("http", idle())
                    .depends_on("slow")
                    .depends_on("worker")
                    .stop_timeout(stop_timeout),
            )
            .build()
            .expect("a valid configuration");
        let mut phase = lifecycle.handle().watch_phase();
        tokio::spawn(async move {
            if phase.wait_for(|p| *p == Phase::Ready).await.is_ok() {
                say("ready");
            }
        });
        say("starting");
        lifecycle.run().await
    });
    say(&report.to_json());
    // The runtime goes before the report, which keeps the deadline armed meanwhile.
    drop(runtime);
    report
}
