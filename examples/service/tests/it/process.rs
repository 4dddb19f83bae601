//! The real `example-service` binary as a child process: health endpoints across SIGTERM, the
//! report file, the grace-period refusal, and systemd socket activation with notifications.

use std::io::{BufReader, Read};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, free_addr, get, Service, BIN};

#[test]
fn health_endpoints_across_sigterm_and_the_report_file() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let report_path = dir.path().join("report.json");
    let mut service = common::spawn(
        &[
            "--listen",
            &addr.to_string(),
            "--drain-delay",
            "1s",
            "--report-json",
            report_path.to_str().unwrap(),
        ],
        dir.path(),
    );
    common::wait_ready(addr);
    assert_eq!(get(addr, "/work?ms=10"), Some(200));
    assert_eq!(get(addr, "/livez"), Some(200));

    let signalled = Instant::now();
    common::signal(&service, "TERM");
    // Readiness goes off at once; liveness and the work endpoint keep answering while draining.
    let mut readyz_503_after = None;
    let mut livez = Vec::new();
    while signalled.elapsed() < Duration::from_millis(800) {
        if readyz_503_after.is_none() && get(addr, "/readyz") == Some(503) {
            readyz_503_after = Some(signalled.elapsed());
        }
        livez.push(get(addr, "/livez"));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(readyz_503_after.expect("readyz turned 503") < Duration::from_millis(200));
    assert!(livez.iter().all(|s| *s == Some(200)), "{livez:?}");
    assert_eq!(
        get(addr, "/work"),
        Some(200),
        "still serving during the drain delay"
    );

    let status = common::wait(&mut service);
    assert_eq!(status, Some(0));
    assert_eq!(get(addr, "/livez"), None, "refused once exited");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(report["exit_code"], 0);
    assert_eq!(report["trigger"]["kind"], "signal");
    assert_eq!(report["trigger"]["detail"], "SIGTERM");
    assert_eq!(report["drain_delay_ms"], 1000.0);
    let outcomes: Vec<(&str, &str)> = report["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        outcomes,
        // No `upgrade`: in-place upgrades are on only when asked for (`--in-place-upgrade`).
        [
            ("db", "stopped"),
            ("migrations", "stopped"),
            ("jobs", "stopped"),
            ("http", "stopped")
        ]
    );
    let stop = |name: &str, field: &str| {
        report["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()[field]
            .as_f64()
            .unwrap()
    };
    assert!(
        stop("http", "stop_ended_ms") <= stop("db", "stop_began_ms"),
        "the pool closes after the server"
    );
}

#[test]
fn refuses_to_start_when_the_shutdown_cannot_fit_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let mut service = common::spawn(
        &[
            "--listen",
            &free_addr().to_string(),
            "--drain-delay",
            "20s",
            "--shutdown-budget",
            "40s",
            "--grace-period",
            "30s",
        ],
        dir.path(),
    );
    let status = common::wait(&mut service);
    assert_eq!(status, Some(1));
    let mut stderr = String::new();
    service
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains("more than the grace period of 30s"),
        "{stderr}"
    );
    assert!(
        stderr.contains(" -> migrations -> db"),
        "names the chain: {stderr}"
    );
}

#[test]
fn socket_activation_and_notifications_under_systemd() {
    if Command::new("systemd-socket-activate")
        .arg("--help")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("CI").is_err(),
            "systemd-socket-activate is needed in CI"
        );
        eprintln!("SKIPPED: systemd-socket-activate is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let addr = free_addr();
    let child = Command::new("systemd-socket-activate")
        .args([
            "-l",
            &addr.to_string(),
            "-E",
            "NOTIFY_SOCKET",
            "-E",
            "DATABASE_URL",
            "-E",
            "RUST_LOG",
            BIN,
        ])
        .env("NOTIFY_SOCKET", &notify_path)
        .env(
            "DATABASE_URL",
            format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("service.db").display()
            ),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut service = Service(child);
    // systemd-socket-activate listens first and starts the service on the first connection,
    // handing over the socket: that connection is served by the service itself.
    let until = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < until, "the socket never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut buf = [0u8; 512];
    let n = notify.recv(&mut buf).expect("a notification");
    let ready = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert_eq!(
        get(addr, "/work"),
        Some(200),
        "served on the inherited socket"
    );

    common::signal(&service, "TERM");
    let n = notify.recv(&mut buf).expect("a notification");
    let stopping = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping}");
    assert!(
        stopping
            .lines()
            .any(|l| l == "EXTEND_TIMEOUT_USEC=25000000"),
        "{stopping}"
    );
    let status = common::wait(&mut service);
    let mut stderr = String::new();
    BufReader::new(service.0.stderr.take().unwrap())
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status, Some(0), "{stderr}");
}

#[test]
fn admin_listener_serves_metrics_through_the_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, admin) = (free_addr(), free_addr());
    let report_path = dir.path().join("report.json");
    let mut service = common::spawn(
        &[
            "--listen",
            &addr.to_string(),
            "--admin-listen",
            &admin.to_string(),
            "--drain-delay",
            "1s",
            "--report-json",
            report_path.to_str().unwrap(),
        ],
        dir.path(),
    );
    common::wait_ready(addr);
    for _ in 0..3 {
        assert_eq!(get(addr, "/work?ms=1"), Some(200));
    }
    let (status, metrics) =
        common::request(admin, "GET", "/metrics", "").expect("the admin port answers");
    assert_eq!(status, 200, "{metrics}");
    assert!(
        metrics.contains("lifecycle_phase{phase=\"ready\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("http_requests_total{server=\"http\"}"),
        "{metrics}"
    );
    let verbose = common::request(admin, "GET", "/readyz?verbose", "")
        .map(|(_, body)| body)
        .unwrap();
    assert!(verbose.contains("\"name\":\"db\""), "{verbose}");
    // The public port does not serve the metrics.
    assert_eq!(get(addr, "/metrics"), Some(404));

    common::signal(&service, "TERM");
    std::thread::sleep(Duration::from_millis(300));
    let draining = common::request(admin, "GET", "/metrics", "")
        .map(|(_, body)| body)
        .expect("served during the drain");
    assert!(
        draining.contains("lifecycle_phase{phase=\"draining\"} 1"),
        "{draining}"
    );
    assert_eq!(get(admin, "/readyz"), Some(503));
    assert_eq!(get(admin, "/livez"), Some(200));

    let status = common::wait(&mut service);
    assert_eq!(status, Some(0));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let component = |name: &str| {
        report["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(component("admin")["outcome"], "stopped");
    assert!(
        component("db")["stop_ended_ms"].as_f64() <= component("admin")["stop_began_ms"].as_f64(),
        "the admin server stops last"
    );
}

/// A stop cut short by a second signal: the forced exit's report file names what held it, the
/// request in flight (without its query) and the job in hand, and how long each had run.
#[test]
fn a_forced_exit_report_says_what_held_the_stop() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let report_path = dir.path().join("report.json");
    let mut service = common::spawn(
        &[
            "--listen",
            &addr.to_string(),
            "--report-json",
            report_path.to_str().unwrap(),
        ],
        dir.path(),
    );
    common::wait_ready(addr);
    let slow = std::thread::spawn(move || get(addr, "/work?ms=60000"));
    let job = common::create(addr, "/jobs", r#"{"ms": 60000}"#);
    std::thread::sleep(Duration::from_millis(300));
    common::signal(&service, "TERM");
    std::thread::sleep(Duration::from_millis(500));
    common::signal(&service, "TERM");
    assert_eq!(common::wait(&mut service), Some(130));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let http = report["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "http")
        .unwrap();
    assert_eq!(http["outcome"], "timed_out", "{report}");
    let held = http["held_by"][0].as_str().unwrap_or_default();
    assert!(held.starts_with("GET /work (running "), "{report}");
    assert!(held.ends_with(", HTTP/1.1)"), "{report}");
    let jobs = report["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "jobs")
        .unwrap();
    let held = jobs["held_by"][0].as_str().unwrap_or_default();
    assert!(
        held.starts_with(&format!("job {job}, delivery 1, running ")),
        "{report}"
    );
    assert_eq!(slow.join().unwrap(), None, "the request was cut off");
}
