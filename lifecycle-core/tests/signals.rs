//! Real signals sent to a child process running a lifecycle: SIGTERM and SIGINT take the
//! graceful path, a second signal forces the exit, a signal during start-up rolls back, and a
//! runtime that cannot finish (a `spawn_blocking` that never returns, a blocked thread) still
//! exits by the deadline.
//!
//! The test binary is its own child: run with `LIFECYCLE_SIGNAL_CHILD` set, it is a small
//! service (`child_main`) instead of the tests. It has no libtest harness (`harness = false` in
//! Cargo.toml) so that its `main` can be the child's; libtest-mimic runs the tests.

#![cfg(unix)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;
use lifecycle_core::{
    async_trait, exit_code, BoxError, Component, Context, Lifecycle, Phase, Registration, Report,
};

/// Set in the child's environment.
const CHILD: &str = "LIFECYCLE_SIGNAL_CHILD";

fn main() -> std::process::ExitCode {
    if std::env::var_os(CHILD).is_some() {
        return std::process::Termination::report(child_main());
    }
    let tests: [(&str, fn()); 9] = [
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
            "a_forced_exit_writes_the_report_file",
            a_forced_exit_writes_the_report_file,
        ),
        (
            "a_budget_cut_still_ends_through_run_with_the_full_report",
            a_budget_cut_still_ends_through_run_with_the_full_report,
        ),
        (
            "a_requested_shutdown_arms_the_deadline_even_if_the_runtime_is_stuck",
            a_requested_shutdown_arms_the_deadline_even_if_the_runtime_is_stuck,
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
    // libtest-mimic gives the usual `cargo test` interface and output (filters, `test result:`
    // line), which a `harness = false` test otherwise lacks.
    let trials = tests
        .into_iter()
        .map(|(name, test)| {
            libtest_mimic::Trial::test(name, move || {
                test();
                Ok(())
            })
        })
        .collect();
    let mut args = libtest_mimic::Arguments::from_args();
    // Each test waits mostly on its child: run them all at once.
    args.test_threads.get_or_insert(9);
    libtest_mimic::run(&args, trials).exit_code()
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

/// A fresh path for a report file, in a directory of its own.
fn report_path(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lifecycle-signals-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("report.json")
}

fn read_report(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("the report file");
    let entries = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
    assert_eq!(entries, 1, "no temporary file left beside the report");
    serde_json::from_str(&text).unwrap()
}

fn a_forced_exit_writes_the_report_file() {
    let path = report_path("forced");
    let mut child = Service::spawn(&["--stop-hangs", "--report-file", path.to_str().unwrap()]);
    child.expect_line("starting");
    child.expect_line("ready");
    child.signal("TERM");
    std::thread::sleep(Duration::from_millis(500));
    child.signal("TERM");
    let (code, _) = child.exit(Duration::from_secs(5));
    assert_eq!(code, exit_code::FORCED);
    let report = read_report(&path);
    assert_eq!(report["exit_code"], exit_code::FORCED);
    assert_eq!(outcome(&report, "worker"), "timed_out");
    assert_eq!(outcome(&report, "http"), "stopped");
}

fn a_budget_cut_still_ends_through_run_with_the_full_report() {
    // Every stop hangs until its timeout, a third of the budget, along a chain of three: the
    // last one is cut by the budget in the process, before the watchdog's hard deadline.
    let path = report_path("budget");
    let mut child = Service::spawn(&[
        "--all-stops-hang",
        "--budget-ms",
        "1500",
        "--report-file",
        path.to_str().unwrap(),
    ]);
    child.expect_line("starting");
    child.expect_line("ready");
    child.signal("TERM");
    let (code, took) = child.exit(Duration::from_secs(10));
    assert_eq!(code, exit_code::DEADLINE);
    assert!(took < Duration::from_millis(1500), "{took:?}");
    let stderr = child.stderr();
    assert!(!stderr.contains("forced exit"), "{stderr}");
    let report = child.report();
    assert_eq!(report["exit_code"], exit_code::DEADLINE);
    for name in ["http", "slow", "worker", "db"] {
        assert_eq!(outcome(&report, name), "timed_out", "{name}");
        assert!(
            !report_text(&report, name).contains("forced exit"),
            "{report}"
        );
    }
    assert_eq!(read_report(&path), report);
}

fn report_text(report: &serde_json::Value, name: &str) -> String {
    report["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()["error"]
        .to_string()
}

fn a_requested_shutdown_arms_the_deadline_even_if_the_runtime_is_stuck() {
    // Once ready, a task blocks the only runtime thread; then a plain thread asks for the
    // shutdown. The orchestrator never sees it, but the watchdog does.
    let mut child = Service::spawn(&["--wedge-when-ready", "--budget-ms", "1500"]);
    child.expect_line("starting");
    child.expect_line("ready");
    let (code, took) = child.exit(Duration::from_secs(10));
    assert_eq!(code, exit_code::DEADLINE);
    assert!(took < Duration::from_secs(5), "{took:?}");
    let stderr = child.stderr();
    assert!(
        stderr.contains("lifecycle: forced exit: shutdown budget of 1.5s exhausted"),
        "{stderr}"
    );
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
    /// Every component's stop hangs (until its timeout).
    #[arg(long)]
    all_stops_hang: bool,
    /// Once ready, block the only runtime thread, then ask for the shutdown from a plain
    /// thread.
    #[arg(long)]
    wedge_when_ready: bool,
    /// Have the lifecycle write its report here.
    #[arg(long)]
    report_file: Option<std::path::PathBuf>,
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
    let runtime = if args.wedge || args.wedge_when_ready {
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
        let idle = || Scripted {
            start: Duration::ZERO,
            stop_hangs: args.all_stops_hang,
            stop_blocks: false,
        };
        let slow = Scripted {
            start: Duration::from_millis(args.slow_start.unwrap_or(0)),
            stop_hangs: args.all_stops_hang,
            stop_blocks: false,
        };
        let worker = Scripted {
            start: Duration::ZERO,
            stop_hangs: args.stop_hangs || args.all_stops_hang,
            stop_blocks: args.wedge,
        };
        let stop_timeout = Duration::from_millis(args.budget_ms / 3);
        let mut builder = Lifecycle::builder();
        if let Some(path) = &args.report_file {
            builder = builder.report_file(path);
        }
        let lifecycle = builder
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
        let handle = lifecycle.handle();
        let mut phase = handle.watch_phase();
        let wedge = args.wedge_when_ready;
        tokio::spawn(async move {
            if phase.wait_for(|p| *p == Phase::Ready).await.is_ok() {
                say("ready");
                if wedge {
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_millis(200));
                        handle.shutdown("asked while the runtime is stuck");
                    });
                    std::thread::sleep(Duration::from_secs(600));
                }
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
