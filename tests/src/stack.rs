//! `Stack`: the service binary as a child process, and `StackConfig`, how to run it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use lifecycle_core::Report;
use lifecycle_test_support::{free_addr, servers};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// How long an instance waits between the end of its stops and its exit: the time tests have
/// to see that the stops closed everything. Three seconds, because a client that connects as
/// the listener closes waits for TCP's one-second SYN retransmit before it is refused.
const LINGER: Duration = Duration::from_secs(3);

/// How to run the service: its binary, its Redis, its job queue and its flags.
///
/// Each [`spawn`](Self::spawn) makes an instance with names of its own (the PostgreSQL
/// `application_name`, the Redis client name and channel), so its sessions and connections can
/// be told apart from everyone else's; instances spawned from one config (or its clones) share
/// the job queue, as replicas of one service do.
#[derive(Debug, Clone)]
#[must_use = "a config does nothing until `spawn` or `start`"]
pub struct StackConfig {
    bin: PathBuf,
    redis_url: String,
    queue: String,
    args: Vec<String>,
}

impl StackConfig {
    /// The service at `bin` (`env!("CARGO_BIN_EXE_stack-service")`), on the shared Redis, with
    /// a job queue no other test uses and the binary's defaults otherwise (drain delay 500 ms,
    /// job lease 1 s).
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        StackConfig {
            bin: bin.into(),
            redis_url: servers::redis_url(),
            queue: servers::unique("stack"),
            args: Vec::new(),
        }
    }

    /// Uses the Redis server at `url` instead of the shared one.
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.redis_url = url.into();
        self
    }

    /// Adds flags (`--drain-delay 1s`, `--hang-stop worker`, ...).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// The job queue's name.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Starts an instance without waiting for it to be ready.
    ///
    /// # Panics
    ///
    /// When the binary cannot be started.
    pub async fn spawn(&self) -> Stack {
        let name = servers::unique("stack");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let addr = free_addr();
        let log = std::fs::File::create(dir.path().join("stderr.log")).expect("a log file");
        let report = dir.path().join("report.json");
        let mut child = Command::new(&self.bin)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--database-url")
            .arg(servers::postgres_url(&name))
            .args(["--redis-url", &self.redis_url, "--name", &name])
            .args(["--queue", &self.queue, "--channel", &name])
            .arg("--report-file")
            .arg(&report)
            .args(["--linger", &format!("{}ms", LINGER.as_millis())])
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("STACK_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()));
        let pid = child.id().expect("a running child");
        let (send, lines) = mpsc::unbounded_channel();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        Stack {
            child,
            pid,
            addr,
            name,
            redis_url: self.redis_url.clone(),
            dir,
            lines,
        }
    }

    /// Starts an instance and waits (up to 20 s) until it prints that it is ready.
    ///
    /// # Panics
    ///
    /// When it exits or is not ready in time, with its log.
    pub async fn start(&self) -> Stack {
        let mut stack = self.spawn().await;
        stack.wait_ready(Duration::from_secs(20)).await;
        stack
    }
}

/// What the service's HTTP server counted, from its `HttpStats`, as it printed them once
/// stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerCounts {
    /// Requests it received.
    pub requests: u64,
    /// Connections it cut off at its stop timeout.
    pub force_closed: u64,
}

/// One running instance of the service, killed (SIGKILL) if still running when dropped.
///
/// Its stderr goes to a file (`RUST_LOG` for it is `STACK_LOG`, default `info`), shown when an
/// assertion of the fixture fails, or at drop with `STACK_SHOW_LOG` set.
#[derive(Debug)]
pub struct Stack {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    name: String,
    redis_url: String,
    dir: tempfile::TempDir,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Stack {
    /// The address it serves HTTP on (chosen before it started, so known even if it never
    /// listens).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its own name: its sessions' PostgreSQL `application_name`, its Redis client name, and
    /// the channel its subscriber listens on.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Redis server it uses.
    pub fn redis_url(&self) -> &str {
        &self.redis_url
    }

    /// Where it writes its report.
    pub fn report_path(&self) -> PathBuf {
        self.dir.path().join("report.json")
    }

    /// Waits until it prints `ready`.
    ///
    /// # Panics
    ///
    /// When it exits first or does not get there `within`, with its log.
    pub async fn wait_ready(&mut self, within: Duration) {
        self.wait_line("ready", within).await;
    }

    /// Waits until it prints `stopped`: every component has stopped, and the process lingers
    /// before it exits. Returns the server's counters.
    ///
    /// # Panics
    ///
    /// When it exits first or does not get there `within`, with its log.
    pub async fn wait_stopped(&mut self, within: Duration) -> ServerCounts {
        let line = self.wait_line("stopped", within).await;
        let field = |name: &str| {
            line.split(' ')
                .find_map(|field| field.strip_prefix(name)?.strip_prefix('='))
                .and_then(|value| value.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in `{line}`"))
        };
        ServerCounts {
            requests: field("requests"),
            force_closed: field("force_closed"),
        }
    }

    async fn wait_line(&mut self, prefix: &str, within: Duration) -> String {
        let seen = tokio::time::timeout(within, async {
            while let Some(line) = self.lines.recv().await {
                if line.starts_with(prefix) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match seen {
            Ok(Some(line)) => line,
            _ => panic!(
                "the service did not print `{prefix}` within {within:?}:\n{}",
                self.log()
            ),
        }
    }

    /// Whether it is still running (not exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends it a signal (`"TERM"`, `"KILL"`, ...).
    ///
    /// # Panics
    ///
    /// When `kill` fails (the process has been reaped already).
    pub fn signal(&self, signal: &str) {
        let sent = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .is_ok_and(|status| status.success());
        assert!(sent, "could not send SIG{signal} to the service");
    }

    /// Waits for it to exit.
    ///
    /// # Panics
    ///
    /// When it is still running after `within`, with its log.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => status.expect("waiting for the service"),
            Err(_) => panic!(
                "the service did not exit within {within:?}:\n{}",
                self.log()
            ),
        }
    }

    /// The report it wrote, if it wrote one.
    ///
    /// # Panics
    ///
    /// When the file is there but not a report.
    pub fn report(&self) -> Option<Report> {
        let text = std::fs::read_to_string(self.report_path()).ok()?;
        Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("not a report ({e}): {text}")))
    }

    /// What it logged on stderr so far.
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("stderr.log"))
    }
}

impl Drop for Stack {
    /// With `STACK_SHOW_LOG` set, prints the instance's log (a test shows it anyway when it
    /// fails), to see what a passing run did.
    fn drop(&mut self) {
        if std::env::var_os("STACK_SHOW_LOG").is_some() {
            eprintln!("---- {} ----\n{}", self.name, self.log());
        }
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
