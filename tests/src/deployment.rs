//! The example service run as its shipped deployments run it: from a directory of its own (so a
//! test can put a "new binary" at its path, as a deploy does), on a socket bound by a parent
//! that keeps holding it (systemd socket activation), with a notify socket and a watchdog
//! (systemd `Type=notify`), as PID 1 of a PID namespace (a container), with its stdout going
//! to a pipe nobody reads (a blocked log driver).
//!
//! The test process is a child subreaper, so the processes an in-place upgrade starts become
//! its children when their parent exits, and their exit codes can be read.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;

use lifecycle_test_support::free_addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};
use rustix::process::{Pid, WaitOptions};

/// The example service's binary, built by `cargo test --workspace` next to this test binary,
/// or the one `EXAMPLE_SERVICE_BIN` names.
///
/// # Panics
///
/// When it has not been built (`cargo build -p example-service`).
pub fn example_service() -> PathBuf {
    // Another build may stand in (an older one, to see a test fail without the fix).
    if let Some(bin) = std::env::var_os("EXAMPLE_SERVICE_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test> → target/<profile>/example-service
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("a target directory")
        .join("example-service");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p example-service` (cargo test --workspace does)",
        bin.display()
    );
    bin
}

/// How a deployment starts the service.
#[derive(Debug)]
pub struct Deployment {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// A listening socket the test holds, passed as systemd passes one (`LISTEN_FDS`).
    activation: Option<(TcpListener, String)>,
    pid1: bool,
    stdout_unread: bool,
}

impl Deployment {
    /// The service on a free port, with a drain delay of 0 s, its report in `report.json`, a
    /// SQLite database, and its log in `log`, all in a directory of its own.
    pub fn new() -> Deployment {
        rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
            .expect("becoming a child subreaper");
        let dir = tempfile::tempdir().expect("a directory");
        let program = dir.path().join("example-service");
        if std::fs::hard_link(example_service(), &program).is_err() {
            std::fs::copy(example_service(), &program).expect("copying the binary");
        }
        let addr = free_addr();
        Deployment {
            dir,
            addr,
            args: vec![
                "--listen".into(),
                addr.to_string(),
                "--report-json".into(),
                "report.json".into(),
            ],
            env: vec![
                ("DATABASE_URL".into(), "sqlite://service.db?mode=rwc".into()),
                ("RUST_LOG".into(), "info".into()),
                ("NO_COLOR".into(), "1".into()),
            ],
            activation: None,
            pid1: false,
            stdout_unread: false,
        }
    }

    /// Adds command-line arguments.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Passes the service a listening socket the test binds and keeps, named `name`, as
    /// systemd's socket activation does.
    pub fn socket_activated(mut self, name: &str) -> Self {
        let listener = TcpListener::bind(self.addr).expect("binding the activation socket");
        self.activation = Some((listener, name.into()));
        self
    }

    /// Runs the service as PID 1 of a PID namespace of its own (`unshare`), as in a container.
    pub fn pid1(mut self) -> Self {
        self.pid1 = true;
        self
    }

    /// Sends the service's stdout to a pipe nobody reads, as a blocked log driver would.
    pub fn stdout_unread(mut self) -> Self {
        self.stdout_unread = true;
        self
    }

    /// The address the service listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A path in the service's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts the service (again, on the same directory and socket).
    pub fn start(&self) -> Service {
        let program = self.path("example-service");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("log"))
            .expect("the log file");
        let mut command = if self.pid1 {
            let mut unshare = Command::new("unshare");
            unshare
                .args(["--pid", "--fork", "--mount-proc"])
                .arg(&program);
            unshare
        } else if self.activation.is_some() || self.env.iter().any(|(k, _)| k == "WATCHDOG_USEC") {
            // systemd sets LISTEN_PID and WATCHDOG_PID to the service's PID, which only the
            // process itself knows before it runs: a shell that execs keeps its PID.
            let mut shell = Command::new("/bin/sh");
            shell
                .arg("-c")
                .arg(concat!(
                    "LISTEN_PID=$$; WATCHDOG_PID=$$; export LISTEN_PID WATCHDOG_PID; ",
                    r#"exec "$0" "$@""#
                ))
                .arg(&program);
            shell
        } else {
            Command::new(&program)
        };
        command
            .current_dir(self.dir.path())
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stderr(log.try_clone().expect("the log file"));
        let mut unread = None;
        if self.stdout_unread {
            let (reader, writer) = std::io::pipe().expect("a pipe");
            command.stdout(writer);
            unread = Some(reader);
        } else {
            command.stdout(log);
        }
        if let Some((listener, name)) = &self.activation {
            command
                .env("LISTEN_FDS", "1")
                .env("LISTEN_FDNAMES", name)
                .fd_mappings(vec![FdMapping {
                    parent_fd: OwnedFd::from(listener.try_clone().expect("a copy of the socket")),
                    child_fd: 3,
                }])
                .expect("mapping the socket");
        }
        let child = command.spawn().expect("starting the service");
        Service {
            dir: self.dir.path().to_owned(),
            addr: self.addr,
            launcher: Some(child),
            pid1: self.pid1,
            _unread: unread,
        }
    }

    /// Puts a shell script at the binary's path, as a deploy puts a new binary there; `$REAL`
    /// in it is the real binary.
    pub fn replace_binary(&self, script: &str) {
        let real = self.path("example-service.real");
        if !real.exists() {
            std::fs::hard_link(self.path("example-service"), &real).expect("keeping the binary");
        }
        let script = script.replace("$REAL", &real.display().to_string());
        let tmp = self.path("next");
        std::fs::write(&tmp, format!("#!/bin/sh\n{script}\n")).expect("writing the script");
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("making it executable");
        std::fs::rename(&tmp, self.path("example-service")).expect("replacing the binary");
    }

    /// Puts the real binary back at its path.
    pub fn restore_binary(&self) {
        let real = self.path("example-service.real");
        std::fs::rename(&real, self.path("example-service")).expect("restoring the binary");
    }

    /// What the service and its successors logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("log")).unwrap_or_default()
    }

    /// The last report written, as JSON.
    pub fn report(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.path("report.json")).expect("a report");
        serde_json::from_str(&text).expect("a JSON report")
    }
}

impl Default for Deployment {
    fn default() -> Self {
        Deployment::new()
    }
}

/// A started service: the process the test started (or, as PID 1, the one `unshare` forked).
#[derive(Debug)]
pub struct Service {
    dir: PathBuf,
    addr: SocketAddr,
    launcher: Option<Child>,
    pid1: bool,
    _unread: Option<std::io::PipeReader>,
}

impl Service {
    /// The PID of the first process, as this test's PID namespace sees it.
    pub fn first_pid(&self) -> u32 {
        let launcher = self.launcher.as_ref().expect("the process").id();
        if !self.pid1 {
            return launcher;
        }
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pid) = first_child(launcher) {
                return pid;
            }
            assert!(Instant::now() < until, "unshare started no process");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The PID in the PID file `name` (relative to the service's directory).
    pub fn pid_in(&self, name: &str) -> Option<u32> {
        std::fs::read_to_string(self.dir.join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&self, within: Duration) {
        let until = Instant::now() + within;
        while get(self.addr, "/readyz") != Some(200) {
            assert!(Instant::now() < until, "the service did not become ready");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for `pid` (the first process, or one adopted since) to exit; its exit code.
    pub fn wait_exit(&mut self, pid: u32, within: Duration) -> Option<i32> {
        let until = Instant::now() + within;
        if let Some(launcher) = self.launcher.as_mut() {
            if launcher.id() == pid || self.pid1 {
                loop {
                    if let Some(status) = launcher.try_wait().expect("waiting") {
                        self.launcher = None;
                        return status.code();
                    }
                    assert!(Instant::now() < until, "process {pid} did not exit");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        loop {
            let waited = rustix::process::waitpid(Pid::from_raw(pid as i32), WaitOptions::NOHANG)
                .unwrap_or_else(|e| panic!("waiting for {pid}: {e}"));
            if let Some((_, status)) = waited {
                return status.exit_status();
            }
            assert!(Instant::now() < until, "process {pid} did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM to `pid` and waits for its exit; its exit code.
    pub fn terminate(&mut self, pid: u32, within: Duration) -> Option<i32> {
        assert!(signal_pid(pid, "TERM"), "no process {pid} to stop");
        self.wait_exit(pid, within)
    }

    /// Whether `pid` still runs (and is not a zombie).
    pub fn runs(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.split(") ").nth(1).is_some_and(|s| s.starts_with('Z')))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let (true, Some(launcher)) = (self.pid1, &self.launcher) {
            if let Some(pid) = first_child(launcher.id()) {
                signal_pid(pid, "KILL");
            }
        }
        if let Some(launcher) = &mut self.launcher {
            let _ = launcher.kill();
            let _ = launcher.wait();
        }
    }
}

/// The first child of `pid`: for `unshare --fork`, the namespace's PID 1.
fn first_child(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Sends the signal named `name` (`TERM`, `HUP`) to `pid`.
pub fn signal_pid(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `GET path` on a new connection (`Connection: close`); the status, or `None` when the
/// connect or the exchange failed within 5 s.
pub fn get(addr: SocketAddr, path: &str) -> Option<u16> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    exchange(stream, path)
}

/// `GET path` on `stream`, which may still be waiting in a backlog; the status.
pub fn exchange(mut stream: TcpStream, path: &str) -> Option<u16> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.get(9..12)?.parse().ok()
}

/// `GET path` over the Unix socket at `path`; the status.
pub fn get_unix(socket: &Path, path: &str) -> Option<u16> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.get(9..12)?.parse().ok()
}
