//! The deployment matrix: the example service run as each shipped deployment runs it (plain
//! bind; systemd socket activation, with a parent holding the socket; a notify socket with the
//! watchdog; PID 1 of a PID namespace; in-place upgrades with and without a drain delay, with a
//! failing, a slow and an interrupted new process; a Unix socket; a blocked stdout), with each
//! trigger it sees. Each test checks that the service keeps serving, answers the connects it
//! should, and that its report tells the truth.

#![cfg(target_os = "linux")]

use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lifecycle_test_support::free_addr;
use lifecycle_tests::deployment::{exchange, get, get_unix, signal_pid, Deployment, Service};

const START: Duration = Duration::from_secs(20);
const EXIT: Duration = Duration::from_secs(20);

/// Clients that each make one request per connection, back to back, counting the failures,
/// until stopped.
struct Probes {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Vec<String>>>,
}

impl Probes {
    fn start(
        clients: usize,
        request: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) -> Probes {
        let request = Arc::new(request);
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let threads = (0..clients)
            .map(|_| {
                let (request, stop, ok, failed) =
                    (request.clone(), stop.clone(), ok.clone(), failed.clone());
                std::thread::spawn(move || {
                    let mut errors = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        match request() {
                            Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(error) => {
                                if errors.len() < 5 {
                                    errors.push(error);
                                }
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    errors
                })
            })
            .collect();
        Probes {
            stop,
            ok,
            failed,
            threads,
        }
    }

    /// `GET path` on `addr` must answer 200.
    fn http(clients: usize, addr: SocketAddr, path: &'static str) -> Probes {
        Probes::start(clients, move || match get(addr, path) {
            Some(200) => Ok(()),
            other => Err(format!("GET {path}: {other:?}")),
        })
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops them; (succeeded, failed, a few errors).
    fn stop(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let errors = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().expect("a probe thread"))
            .collect();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            errors,
        )
    }
}

/// Waits until `what` holds.
fn wait_until(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let until = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < until, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts that `pid` exits with status 0 within [`EXIT`], showing the deployment's log if not.
#[track_caller]
fn assert_exits_0(service: &mut Service, pid: u32, deployment: &Deployment) {
    assert_eq!(
        service.wait_exit(pid, EXIT),
        Some(0),
        "{}",
        deployment.log()
    );
}

/// Waits until the PID file names a process other than `old`.
fn new_pid(service: &Service, old: u32) -> u32 {
    let mut new = None;
    wait_until(Duration::from_secs(30), "a new process took over", || {
        new = service.pid_in("pid").filter(|&p| p != old);
        new.is_some()
    });
    new.expect("checked")
}

/// Whether this test may make a PID namespace (root, `unshare`); in CI it must.
fn can_unshare() -> bool {
    let ok = rustix::process::geteuid().is_root()
        && std::process::Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "true"])
            .status()
            .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the PID 1 cases: they need root and unshare"
        );
        eprintln!("SKIPPED: PID 1 cases need root and unshare");
    }
    ok
}

#[test]
fn plain_bind_a_sigterm_exits_0_and_later_connects_are_refused() {
    let deployment = Deployment::new();
    let mut service = deployment.start();
    service.wait_ready(START);
    let pid = service.first_pid();
    assert!(signal_pid(pid, "TERM"));
    assert_exits_0(&mut service, pid, &deployment);
    assert_eq!(deployment.report()["trigger"]["kind"], "signal");
    let refused = TcpStream::connect(deployment.addr()).map_err(|e| e.kind());
    assert_eq!(
        refused.err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "nothing listens after the exit"
    );
}

/// PITFALLS 46: a graceful stop under socket activation left a SYN-dropping filter on the
/// socket systemd still holds, so the next start never accepted a connection.
#[test]
fn socket_activation_a_sigterm_leaves_the_socket_to_the_next_start() {
    let deployment = Deployment::new().socket_activated("http");
    let mut service = deployment.start();
    service.wait_ready(START);
    let pid = service.first_pid();
    assert!(signal_pid(pid, "TERM"));
    assert_exits_0(&mut service, pid, &deployment);

    // Between two runs a connect waits in the queue of the socket systemd holds...
    let waiting = TcpStream::connect_timeout(&deployment.addr(), Duration::from_secs(2))
        .expect("a connect during the restart is queued, not dropped");
    let answered = std::thread::spawn(move || exchange(waiting, "/readyz"));
    // ... and the next run answers it, and everything after it.
    let mut next = deployment.start();
    next.wait_ready(START);
    assert_eq!(
        answered.join().unwrap(),
        Some(200),
        "the queued connect is answered"
    );
    assert_eq!(get(deployment.addr(), "/work?ms=1"), Some(200));
    let pid = next.first_pid();
    assert_eq!(next.terminate(pid, EXIT), Some(0));
}

/// An upgrade under socket activation, then a stop: the socket systemd holds still serves the
/// next start.
#[test]
fn socket_activation_an_upgrade_then_a_stop_leave_the_socket_to_the_next_start() {
    let deployment = Deployment::new()
        .socket_activated("http")
        .args(&["--pid-file", "pid"]);
    let mut service = deployment.start();
    service.wait_ready(START);
    let old = service.first_pid();
    assert!(signal_pid(old, "HUP"));
    let new = new_pid(&service, old);
    assert_exits_0(&mut service, old, &deployment);
    assert_eq!(deployment.report()["upgrades"][0]["succeeded"], true);
    assert_eq!(get(deployment.addr(), "/readyz"), Some(200));
    assert!(signal_pid(new, "TERM"));
    assert_exits_0(&mut service, new, &deployment);

    let waiting = TcpStream::connect_timeout(&deployment.addr(), Duration::from_secs(2))
        .expect("a connect between two runs is queued");
    let answered = std::thread::spawn(move || exchange(waiting, "/readyz"));
    let mut next = deployment.start();
    next.wait_ready(START);
    assert_eq!(answered.join().unwrap(), Some(200));
    let pid = next.first_pid();
    assert_eq!(next.terminate(pid, EXIT), Some(0));
}

/// Reads notifications from the service's notify socket.
struct Notifications(UnixDatagram);

impl Notifications {
    fn bind(path: &Path) -> Notifications {
        let socket = UnixDatagram::bind(path).expect("a notify socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Notifications(socket)
    }

    fn next(&self) -> String {
        let mut buf = [0u8; 1024];
        let n = self.0.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// The messages up to and including the first that satisfies `last`.
    fn until(&self, last: impl Fn(&str) -> bool) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let message = self.next();
            let done = last(&message);
            seen.push(message);
            if done {
                return seen;
            }
        }
    }
}

fn has_line(message: &str, line: &str) -> bool {
    message.lines().any(|l| l == line)
}

/// PITFALLS 47: after an upgrade the new process inherited `WATCHDOG_PID` of the old one and
/// never pinged; systemd killed the service `WatchdogSec` after every reload. And the reload
/// follows `Type=notify-reload`: `RELOADING=1` with `MONOTONIC_USEC`, then `READY=1` with the
/// new `MAINPID` once the hand-off is accepted.
#[test]
fn under_the_systemd_watchdog_the_new_process_pings_and_the_reload_completes() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify");
    let notify = Notifications::bind(&notify_path);
    let deployment = Deployment::new()
        .args(&["--pid-file", "pid"])
        .env("NOTIFY_SOCKET", notify_path.display().to_string())
        .env("WATCHDOG_USEC", "400000");
    let mut service = deployment.start();
    let ready = notify.until(|m| has_line(m, "READY=1"));
    assert!(ready.iter().all(|m| !m.contains("RELOADING")), "{ready:?}");
    let old = service.first_pid();
    notify.until(|m| has_line(m, "WATCHDOG=1"));

    assert!(signal_pid(old, "HUP"));
    let reload = notify.until(|m| has_line(m, "READY=1"));
    let reloading = reload
        .iter()
        .position(|m| has_line(m, "RELOADING=1") && m.contains("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no RELOADING=1 with MONOTONIC_USEC: {reload:?}"));
    let new = new_pid(&service, old);
    let done = reload.last().unwrap();
    assert!(
        has_line(done, &format!("MAINPID={new}")),
        "READY=1 comes with the new MAINPID: {reload:?}"
    );
    assert!(reloading < reload.len() - 1);
    assert_exits_0(&mut service, old, &deployment);

    // Only the new process is left: its pings keep the unit alive.
    let after: Vec<String> = (0..6).map(|_| notify.next()).collect();
    let pings = after.iter().filter(|m| has_line(m, "WATCHDOG=1")).count();
    assert!(pings >= 4, "the new process pings the watchdog: {after:?}");
    assert!(
        after.iter().all(|m| !m.contains("STOPPING=1")),
        "the old process's shutdown is not the unit's: {after:?}"
    );
    assert!(signal_pid(new, "TERM"));
    assert!(notify.until(|m| has_line(m, "STOPPING=1")).last().is_some());
    assert_eq!(service.wait_exit(new, EXIT), Some(0));
}

/// PITFALLS 48: as PID 1 of a container, SIGHUP handed over and exited, and the kernel killed
/// the new process with the namespace. The upgrade is refused; the service keeps serving.
#[test]
fn as_pid_1_a_sighup_is_refused_and_the_service_keeps_serving() {
    if !can_unshare() {
        return;
    }
    let deployment = Deployment::new().pid1().args(&["--in-place-upgrade"]);
    let mut service = deployment.start();
    service.wait_ready(START);
    let pid = service.first_pid();
    assert!(signal_pid(pid, "HUP"));
    wait_until(Duration::from_secs(10), "the refusal is logged", || {
        deployment.log().contains("upgrade refused")
    });
    assert_eq!(
        get(deployment.addr(), "/readyz"),
        Some(200),
        "still serving"
    );
    assert!(Service::runs(pid), "PID 1 is still there");
    assert!(signal_pid(pid, "TERM"));
    assert_exits_0(&mut service, pid, &deployment);
    let report = deployment.report();
    assert_eq!(report["trigger"]["kind"], "signal", "{report}");
    assert_eq!(report["upgrades"][0]["refused"], true, "{report}");
    assert_eq!(report["upgrades"][0]["succeeded"], false, "{report}");
}

/// Without `--in-place-upgrade` nothing handles SIGHUP, and PID 1 ignores a signal it has no
/// handler for: the container goes on.
#[test]
fn as_pid_1_without_upgrades_a_sighup_changes_nothing() {
    if !can_unshare() {
        return;
    }
    let deployment = Deployment::new().pid1();
    let mut service = deployment.start();
    service.wait_ready(START);
    let pid = service.first_pid();
    assert!(signal_pid(pid, "HUP"));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(deployment.addr(), "/readyz"), Some(200));
    assert!(signal_pid(pid, "TERM"));
    assert_exits_0(&mut service, pid, &deployment);
    let report = deployment.report();
    assert!(report.get("upgrades").is_none(), "no upgrade: {report}");
}

/// PITFALLS 49: an upgrade drained like a SIGTERM, and the probes on the shared ports answered
/// 503 for the drain delay. The instance stays ready throughout.
#[test]
fn an_upgrade_with_a_drain_delay_never_withdraws_readiness() {
    let admin = free_addr();
    let deployment = Deployment::new().args(&[
        "--pid-file",
        "pid",
        "--drain-delay",
        "3s",
        "--admin-listen",
        &admin.to_string(),
    ]);
    let mut service = deployment.start();
    service.wait_ready(START);
    let probes = [
        Probes::http(2, deployment.addr(), "/readyz"),
        Probes::http(2, admin, "/readyz"),
    ];
    std::thread::sleep(Duration::from_millis(200));
    let old = service.first_pid();
    assert!(signal_pid(old, "HUP"));
    let new = new_pid(&service, old);
    let began = Instant::now();
    assert_exits_0(&mut service, old, &deployment);
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "the old process did not wait the drain delay: an upgrade is not a drain"
    );
    std::thread::sleep(Duration::from_millis(300));
    for probes in probes {
        let (ok, failed, errors) = probes.stop();
        assert_eq!(failed, 0, "{ok} ready, {failed} not: {errors:?}");
        assert!(ok > 10);
    }
    let report = deployment.report();
    assert_eq!(report["trigger"]["kind"], "upgrade", "{report}");
    assert_eq!(report["exit_code"], 0);
    assert_eq!(service.terminate(new, EXIT), Some(0));
}

/// PITFALLS 46, the upgrade side: a new process whose start failed after its admin server
/// started closed that shared socket for good (its stop's filter), and the old process's admin
/// port, with the Kubernetes probes, never accepted again, even across a later upgrade.
#[test]
fn a_failed_upgrade_leaves_the_admin_port_serving() {
    let admin = free_addr();
    let deployment =
        Deployment::new().args(&["--pid-file", "pid", "--admin-listen", &admin.to_string()]);
    let mut service = deployment.start();
    service.wait_ready(START);
    let old = service.first_pid();
    // A new version whose NATS is down: its admin server starts, then its start fails.
    deployment.replace_binary(r#"exec "$REAL" "$@" --nats-url nats://127.0.0.1:1"#);
    assert!(signal_pid(old, "HUP"));
    wait_until(Duration::from_secs(20), "the upgrade failed", || {
        deployment.log().contains("upgrade failed")
    });
    for _ in 0..5 {
        assert_eq!(get(admin, "/readyz"), Some(200), "the admin port serves");
        assert_eq!(get(deployment.addr(), "/readyz"), Some(200));
    }
    assert_eq!(
        service.pid_in("pid"),
        Some(old),
        "the PID file names the old process"
    );

    deployment.restore_binary();
    assert!(signal_pid(old, "HUP"));
    let new = new_pid(&service, old);
    assert_exits_0(&mut service, old, &deployment);
    let report = deployment.report();
    assert_eq!(report["upgrades"][0]["succeeded"], false, "{report}");
    assert_eq!(report["upgrades"][1]["succeeded"], true, "{report}");
    assert_eq!(
        get(admin, "/readyz"),
        Some(200),
        "the new process's admin port"
    );
    assert_eq!(service.terminate(new, EXIT), Some(0));
}

/// PITFALLS 50: a new process that accepted on the shared sockets before it was ready was
/// SIGKILLed at the ready timeout with what it had accepted. Now it accepts nothing until it is
/// ready, and is stopped with SIGTERM: no connect to the shared ports fails meanwhile.
#[test]
fn a_new_process_too_slow_to_be_ready_takes_no_connection() {
    let admin = free_addr();
    let deployment = Deployment::new().args(&[
        "--pid-file",
        "pid",
        "--admin-listen",
        &admin.to_string(),
        "--upgrade-timeout",
        "2s",
    ]);
    let mut service = deployment.start();
    service.wait_ready(START);
    // Its admin server starts first; its Redis accepts the connection and never answers, so
    // it is never ready.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let redis = format!("redis://{}", silent.local_addr().unwrap());
    deployment.replace_binary(&format!(r#"exec "$REAL" "$@" --redis-url {redis}"#));
    let probes = [
        Probes::http(3, admin, "/livez"),
        Probes::http(3, deployment.addr(), "/work?ms=20"),
    ];
    std::thread::sleep(Duration::from_millis(200));
    let old = service.first_pid();
    assert!(signal_pid(old, "HUP"));
    wait_until(Duration::from_secs(20), "the upgrade failed", || {
        deployment.log().contains("upgrade failed")
    });
    std::thread::sleep(Duration::from_millis(200));
    for probes in probes {
        let (ok, failed, errors) = probes.stop();
        assert_eq!(failed, 0, "{ok} served: {errors:?}");
    }
    assert!(
        deployment.log().contains("not ready within 2s: stopped"),
        "{}",
        deployment.log()
    );
    assert_eq!(service.terminate(old, EXIT), Some(0));
    let report = deployment.report();
    let upgrade = &report["upgrades"][0];
    assert_eq!(upgrade["succeeded"], false, "{report}");
    let successor = upgrade["pid"].as_u64().unwrap() as u32;
    assert!(!Service::runs(successor), "the new process is gone");
}

/// A Unix-socket listener is handed over like a TCP one: requests on it never fail across an
/// upgrade, and the last process removes its path.
#[test]
fn a_unix_socket_is_handed_over_and_removed_at_the_last_stop() {
    let dir = tempfile::tempdir().unwrap();
    let socket: PathBuf = dir.path().join("http.sock");
    let deployment = Deployment::new().args(&[
        "--pid-file",
        "pid",
        "--listen-unix",
        socket.to_str().unwrap(),
    ]);
    let mut service = deployment.start();
    service.wait_ready(START);
    let path = socket.clone();
    let probes = Probes::start(3, move || match get_unix(&path, "/work?ms=5") {
        Some(200) => Ok(()),
        other => Err(format!("{other:?}")),
    });
    wait_until(
        Duration::from_secs(5),
        "requests on the Unix socket",
        || probes.ok() > 10,
    );
    let old = service.first_pid();
    assert!(signal_pid(old, "HUP"));
    let new = new_pid(&service, old);
    assert_exits_0(&mut service, old, &deployment);
    let before = probes.ok();
    wait_until(Duration::from_secs(5), "the new process serves it", || {
        probes.ok() > before + 10
    });
    let (ok, failed, errors) = probes.stop();
    assert_eq!(failed, 0, "{ok} served: {errors:?}");
    assert!(signal_pid(new, "TERM"));
    assert_exits_0(&mut service, new, &deployment);
    assert!(
        !socket.exists(),
        "the last process removes the socket's path"
    );
    assert_eq!(
        service.pid_in("pid"),
        None,
        "the PID file is removed at the exit"
    );
}

/// An inherited socket the new version no longer listens on is closed, so connects to it are
/// refused rather than queued for ever.
#[test]
fn an_inherited_socket_nobody_takes_is_closed() {
    let admin = free_addr();
    let deployment = Deployment::new()
        .args(&["--pid-file", "pid"])
        .env("ADMIN_LISTEN", admin.to_string());
    let mut service = deployment.start();
    service.wait_ready(START);
    // The new version has no admin listener.
    deployment.replace_binary(r#"unset ADMIN_LISTEN; exec "$REAL" "$@""#);
    let old = service.first_pid();
    assert!(signal_pid(old, "HUP"));
    let new = new_pid(&service, old);
    assert_exits_0(&mut service, old, &deployment);
    let refused = TcpStream::connect(admin).map_err(|e| e.kind());
    assert_eq!(
        refused.err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "the admin socket was closed"
    );
    assert_eq!(service.terminate(new, EXIT), Some(0));
}

/// A SIGTERM during an upgrade stops both processes, and the report says the upgrade failed.
#[test]
fn a_sigterm_during_an_upgrade_ends_both_processes() {
    let deployment = Deployment::new().args(&["--pid-file", "pid"]);
    let mut service = deployment.start();
    service.wait_ready(START);
    deployment.replace_binary(r#"sleep 2; exec "$REAL" "$@""#);
    let old = service.first_pid();
    assert!(signal_pid(old, "HUP"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(signal_pid(old, "TERM"));
    assert_exits_0(&mut service, old, &deployment);
    let report = deployment.report();
    assert_eq!(report["trigger"]["kind"], "signal", "{report}");
    let upgrade = &report["upgrades"][0];
    assert_eq!(upgrade["succeeded"], false, "{report}");
    let new = upgrade["pid"].as_u64().unwrap() as u32;
    assert!(!Service::runs(new), "the new process {new} is gone");
    assert!(
        get(deployment.addr(), "/readyz").is_none(),
        "nothing serves"
    );
}

/// PITFALLS 51: with stdout going to a pipe nobody reads, the watchdog thread blocked on its
/// first log line and never armed the deadline or heard the second signal. It acts first now:
/// the second SIGTERM ends the process, with its report file.
#[test]
fn with_a_blocked_stdout_a_second_sigterm_still_ends_the_process() {
    let deployment = Deployment::new().stdout_unread().env("RUST_LOG", "trace");
    let mut service = deployment.start();
    service.wait_ready(START);
    // Traffic until the log pipe is full and requests stall behind it.
    let addr = deployment.addr();
    let fill = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if get(addr, "/work?ms=1").is_none() {
                return true;
            }
        }
        false
    });
    assert!(fill.join().unwrap(), "the log pipe never filled");
    let pid = service.first_pid();
    assert!(signal_pid(pid, "TERM"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(signal_pid(pid, "TERM"));
    assert_eq!(
        service.wait_exit(pid, Duration::from_secs(10)),
        Some(130),
        "the second signal forces the exit"
    );
    let report = deployment.report();
    assert_eq!(report["exit_code"], 130, "{report}");
}

/// Whoever triggers an upgrade learns whether it succeeded: the reload command the systemd
/// unit runs (`--request-upgrade`, `POST /upgrade` on the admin listener) waits for the outcome
/// and exits 0 only when the new process took over.
#[test]
fn the_reload_command_waits_for_the_outcome_and_fails_when_the_upgrade_fails() {
    let admin = free_addr();
    let deployment =
        Deployment::new().args(&["--pid-file", "pid", "--admin-listen", &admin.to_string()]);
    let mut service = deployment.start();
    service.wait_ready(START);
    let reload = || {
        std::process::Command::new(lifecycle_tests::deployment::example_service())
            .args(["--request-upgrade", &admin.to_string()])
            .output()
            .expect("running the reload command")
    };
    let old = service.first_pid();
    deployment.replace_binary("exit 3");
    let failed = reload();
    let printed = String::from_utf8_lossy(&failed.stdout);
    assert_eq!(failed.status.code(), Some(1), "{printed}");
    assert!(printed.contains(r#""succeeded":false"#), "{printed}");
    assert!(printed.contains(r#""exit_code":3"#), "{printed}");
    assert_eq!(service.pid_in("pid"), Some(old));

    deployment.restore_binary();
    let done = reload();
    let printed = String::from_utf8_lossy(&done.stdout);
    assert_eq!(done.status.code(), Some(0), "{printed}");
    let new = service.pid_in("pid").expect("a PID file");
    assert_ne!(new, old);
    assert!(printed.contains(&format!(r#""pid":{new}"#)), "{printed}");
    assert_exits_0(&mut service, old, &deployment);
    assert_eq!(service.terminate(new, EXIT), Some(0));
}
