//! In-place upgrades of the real binary: under keep-alive load, three SIGHUP upgrades in a row
//! fail and refuse no request, each old process exiting 0 with its report; a new binary that
//! exits at start leaves the old one serving; a second SIGHUP during an upgrade is refused; a
//! SIGTERM during an upgrade ends both processes.
//!
//! Each test runs a copy of the binary from a directory of its own, so that it can put another
//! "binary" (a shell script) at that path, as a deploy would. The test process is a child
//! subreaper, so the processes an upgrade starts become its children when their parent exits,
//! and their exit codes can be read.

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::process::{Pid, WaitOptions};

use crate::common::{free_addr, get, BIN};

/// A service started from its own directory, with its PID file, report and log there.
struct Service {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    first: Option<Child>,
}

impl Service {
    fn start() -> Service {
        Service::start_with(&[])
    }

    /// Starts it with these environment variables added.
    fn start_with(env: &[(&str, &Path)]) -> Service {
        rustix::process::set_child_subreaper(Some(rustix::process::getpid())).unwrap();
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let program = dir.path().join("example-service");
        if std::fs::hard_link(BIN, &program).is_err() {
            std::fs::copy(BIN, &program).unwrap();
        }
        let addr = free_addr();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new(&program)
            .current_dir(dir.path())
            .args(["--listen", &addr.to_string(), "--drain-delay", "300ms"])
            .args(["--pid-file", "pid", "--report-json", "report.json"])
            .env("DATABASE_URL", "sqlite://service.db?mode=rwc")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let service = Service {
            dir,
            addr,
            first: Some(child),
        };
        let until = Instant::now() + Duration::from_secs(20);
        while service.pid().is_none() || !ready(addr) {
            assert!(Instant::now() < until, "the service did not become ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        service
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The PID in the PID file: the serving process.
    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.path("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Puts a shell script at the binary's path, as a deploy puts a new binary there.
    fn replace_binary(&self, script: &str) {
        let tmp = self.path("next");
        std::fs::write(&tmp, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::rename(&tmp, self.path("example-service")).unwrap();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("log")).unwrap_or_default()
    }

    fn report(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.path("report.json")).unwrap()).unwrap()
    }

    /// Waits until the PID file names another process than `old`, and returns it.
    fn wait_for_new_pid(&self, old: u32) -> u32 {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            match self.pid() {
                Some(pid) if pid != old => return pid,
                _ => {}
            }
            assert!(Instant::now() < until, "no new process took over");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for `pid`, the first process or one adopted since, to exit; its exit code.
    fn wait_exit(&mut self, pid: u32) -> Option<i32> {
        if let Some(first) = self.first.as_mut().filter(|c| c.id() == pid) {
            let status = first.wait().unwrap();
            self.first = None;
            return status.code();
        }
        let until = Instant::now() + Duration::from_secs(30);
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
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            let _ = rustix::process::waitpid(Pid::from_raw(pid as i32), WaitOptions::empty());
        }
        if let Some(first) = &mut self.first {
            let _ = first.kill();
            let _ = first.wait();
        }
    }
}

fn signal(pid: u32, name: &str) {
    assert!(Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

/// Whether `GET /readyz` at `addr` answers 200.
fn ready(addr: SocketAddr) -> bool {
    get(addr, "/readyz") == Some(200)
}

/// Counts of a load run.
#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
}

/// Clients that each send requests one after another on a keep-alive connection, and open a
/// new one when the server closes it (`Connection: close`), until `stop`.
fn load(
    addr: SocketAddr,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> (Arc<Counts>, Vec<std::thread::JoinHandle<()>>) {
    let counts = Arc::new(Counts::default());
    let threads = (0..clients)
        .map(|_| {
            let (counts, stop) = (counts.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut conn: Option<BufReader<TcpStream>> = None;
                while !stop.load(Ordering::Relaxed) {
                    let reader = match &mut conn {
                        Some(reader) => reader,
                        None => match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                            Ok(stream) => {
                                stream
                                    .set_read_timeout(Some(Duration::from_secs(10)))
                                    .unwrap();
                                conn.insert(BufReader::new(stream))
                            }
                            Err(error) => {
                                if error.kind() == std::io::ErrorKind::ConnectionRefused {
                                    counts.refused.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    counts.failed.fetch_add(1, Ordering::Relaxed);
                                }
                                eprintln!("connect failed: {error}");
                                std::thread::sleep(Duration::from_millis(10));
                                continue;
                            }
                        },
                    };
                    match exchange(reader) {
                        Ok(keep) => {
                            counts.ok.fetch_add(1, Ordering::Relaxed);
                            if !keep {
                                conn = None;
                            }
                        }
                        Err(error) => {
                            eprintln!("request failed: {error}");
                            counts.failed.fetch_add(1, Ordering::Relaxed);
                            conn = None;
                        }
                    }
                }
            })
        })
        .collect();
    (counts, threads)
}

/// One request and its whole response; whether the connection stays open.
fn exchange(reader: &mut BufReader<TcpStream>) -> std::io::Result<bool> {
    reader
        .get_mut()
        .write_all(b"GET /work?ms=2 HTTP/1.1\r\nHost: t\r\n\r\n")?;
    let mut status = String::new();
    reader.read_line(&mut status)?;
    if !status.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!("status line {status:?}")));
    }
    let (mut length, mut keep) = (0, true);
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let header = header.trim_end().to_ascii_lowercase();
        if header.is_empty() {
            break;
        }
        if let Some(value) = header.strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        if header == "connection: close" {
            keep = false;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(keep)
}

#[test]
fn three_upgrades_under_keep_alive_load_fail_and_refuse_no_request() {
    let mut service = Service::start();
    let stop = Arc::new(AtomicBool::new(false));
    let (counts, clients) = load(service.addr, 4, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    for round in 0..3 {
        let old = service.pid().unwrap();
        let before = counts.ok.load(Ordering::Relaxed);
        signal(old, "HUP");
        let new = service.wait_for_new_pid(old);
        assert_eq!(
            service.wait_exit(old),
            Some(0),
            "round {round}: the old process's exit"
        );
        let report = service.report();
        assert_eq!(
            report["trigger"]["kind"], "upgrade",
            "round {round}: {report}"
        );
        assert_eq!(report["exit_code"], 0);
        assert_eq!(report["upgrades"][0]["succeeded"], true);
        assert_eq!(report["upgrades"][0]["pid"], new);
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            counts.ok.load(Ordering::Relaxed) > before,
            "round {round}: requests were served across the upgrade"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    let (ok, failed, refused) = (
        counts.ok.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed),
        counts.refused.load(Ordering::Relaxed),
    );
    eprintln!("{ok} requests served, {failed} failed, {refused} refused");
    assert_eq!((failed, refused), (0, 0), "{ok} served");
    assert!(ok > 100, "only {ok} requests served");

    let last = service.pid().unwrap();
    signal(last, "TERM");
    assert_eq!(service.wait_exit(last), Some(0));
    assert_eq!(service.report()["trigger"]["kind"], "signal");
}

/// The admin listener's socket is handed over as the HTTP one: the new process does not try to
/// bind an address the old one still holds (which failed the upgrade), and `/metrics` answers
/// from it afterwards.
#[test]
fn the_admin_socket_is_handed_over_with_the_http_one() {
    let admin = free_addr().to_string();
    let mut service = Service::start_with(&[("ADMIN_LISTEN", Path::new(&admin))]);
    let admin: SocketAddr = admin.parse().unwrap();
    assert!(ready(admin), "the admin listener answers /readyz");
    let old = service.pid().unwrap();
    signal(old, "HUP");
    let new = service.wait_for_new_pid(old);
    assert_eq!(service.wait_exit(old), Some(0), "{}", service.log());
    assert_eq!(service.report()["upgrades"][0]["succeeded"], true);
    assert!(ready(admin), "the new process's admin listener answers");
    signal(new, "TERM");
    assert_eq!(service.wait_exit(new), Some(0));
}

#[test]
fn a_new_binary_that_exits_at_start_leaves_the_old_one_serving() {
    let mut service = Service::start();
    let old = service.pid().unwrap();
    service.replace_binary("exit 3");
    signal(old, "HUP");
    let until = Instant::now() + Duration::from_secs(20);
    while !service.log().contains("upgrade failed") {
        assert!(
            Instant::now() < until,
            "no failed upgrade logged:\n{}",
            service.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ready(service.addr), "the old process still serves");
    assert_eq!(service.pid(), Some(old));

    signal(old, "TERM");
    assert_eq!(service.wait_exit(old), Some(0));
    let report = service.report();
    assert_eq!(report["trigger"]["kind"], "signal", "{report}");
    let upgrade = &report["upgrades"][0];
    assert_eq!(upgrade["succeeded"], false, "{report}");
    assert_eq!(upgrade["exit_code"], 3, "{report}");
}

#[test]
fn a_second_trigger_during_an_upgrade_is_refused() {
    let mut service = Service::start();
    let old = service.pid().unwrap();
    // A new binary that takes a while to start: the same one, after a second.
    service.replace_binary(&format!("sleep 1\nexec {BIN} \"$@\""));
    signal(old, "HUP");
    std::thread::sleep(Duration::from_millis(300));
    signal(old, "HUP");
    let new = service.wait_for_new_pid(old);
    assert_eq!(service.wait_exit(old), Some(0));
    assert!(
        service
            .log()
            .contains("upgrade requested while one is in progress: refused"),
        "{}",
        service.log()
    );
    let report = service.report();
    assert_eq!(report["upgrades"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["upgrades"][0]["pid"], new);
    assert!(ready(service.addr));
}

#[test]
fn a_sigterm_during_an_upgrade_ends_both_processes() {
    let mut service = Service::start();
    let old = service.pid().unwrap();
    service.replace_binary(&format!("sleep 3\nexec {BIN} \"$@\""));
    signal(old, "HUP");
    std::thread::sleep(Duration::from_millis(500));
    signal(old, "TERM");
    assert_eq!(service.wait_exit(old), Some(0));
    let report = service.report();
    assert_eq!(report["trigger"]["kind"], "signal", "{report}");
    let upgrade = &report["upgrades"][0];
    assert_eq!(upgrade["succeeded"], false, "{report}");
    let new = upgrade["pid"].as_u64().unwrap();
    // The old process waited for the new one's exit before its own.
    assert!(
        !Path::new(&format!("/proc/{new}")).exists(),
        "the new process {new} is still there"
    );
    assert!(!ready(service.addr), "nothing serves after the shutdown");
}

#[test]
fn under_systemd_the_unit_follows_the_new_process() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let next = |notify: &UnixDatagram| {
        let mut buf = [0u8; 512];
        let n = notify.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    let mut service = Service::start_with(&[("NOTIFY_SOCKET", &notify_path)]);
    let old = service.pid().unwrap();
    assert!(next(&notify).lines().any(|l| l == "READY=1"));

    signal(old, "HUP");
    let new = service.wait_for_new_pid(old);
    let mut seen = Vec::new();
    while !seen.iter().any(|m: &String| m.starts_with("MAINPID=")) {
        seen.push(next(&notify));
    }
    assert!(
        seen.iter().any(|m| m.lines().any(|l| l == "READY=1")),
        "{seen:?}"
    );
    // MAINPID= and READY=1 in one message, from the old process accepting the hand-off.
    assert!(
        seen.iter()
            .any(|m| m.lines().any(|l| l == format!("MAINPID={new}"))),
        "{seen:?}"
    );
    assert_eq!(service.wait_exit(old), Some(0));
    // The old process's shutdown is not the unit's: no STOPPING=1 from it.
    notify
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 512];
    if let Ok(n) = notify.recv(&mut buf) {
        let message = String::from_utf8_lossy(&buf[..n]);
        assert!(!message.contains("STOPPING=1"), "{message}");
    }
    signal(new, "TERM");
    assert_eq!(service.wait_exit(new), Some(0));
}
