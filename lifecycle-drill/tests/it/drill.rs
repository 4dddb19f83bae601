//! The drill run on real services: the example service passes it with nothing dropped; a
//! service without graceful shutdown fails it, its dropped requests counted.

use std::path::PathBuf;
use std::process::Command;

const DRILL: &str = env!("CARGO_BIN_EXE_lifecycle-drill");
const NAIVE: &str = env!("CARGO_BIN_EXE_drill-naive-service");

/// The example service, built beside this test by `cargo test --workspace`.
fn example_service() -> PathBuf {
    let profile_dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let binary = profile_dir.join("example-service");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo test --workspace` (or build example-service)",
        binary.display()
    );
    binary
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn drill(port: u16, json: &std::path::Path, service: &[&str]) -> (Option<i32>, serde_json::Value) {
    let output = Command::new(DRILL)
        .args([
            "--url",
            &format!("http://127.0.0.1:{port}"),
            "--signal-after",
            "1500ms",
            "--budget",
            "10s",
            "--clients",
            "16",
        ])
        .args(["--json", json.to_str().unwrap()])
        .arg("--")
        .args(service)
        .output()
        .unwrap();
    let summary =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap_or_else(|e| {
            panic!(
                "no summary ({e}); stdout: {}",
                String::from_utf8_lossy(&output.stdout)
            )
        });
    (output.status.code(), summary)
}

#[test]
fn the_example_service_passes_the_drill() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let service = example_service();
    let db = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("service.db").display()
    );
    let report = dir.path().join("report.json");
    let (code, summary) = drill(
        port,
        &dir.path().join("drill.json"),
        &[
            service.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--drain-delay",
            "500ms",
            "--database-url",
            &db,
            "--report-json",
            report.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "{summary:#}");
    assert_eq!(summary["dropped"], 0);
    assert!(summary["succeeded"].as_u64().unwrap() > 100, "{summary:#}");
    assert!(
        summary["refused_after_listener_closed"].as_u64().unwrap() > 0,
        "clients ran until the listener closed"
    );
    assert!(
        summary["signal_to_readiness_off_ms"].as_f64().unwrap() < 200.0,
        "{summary:#}"
    );
    assert!(
        summary["signal_to_listener_closed_ms"].as_f64().unwrap() >= 450.0,
        "served through the drain delay"
    );
    assert_eq!(summary["exit_code"], 0);
    assert!(
        summary["sse_stream"]
            .as_str()
            .unwrap()
            .starts_with("ended cleanly"),
        "{summary:#}"
    );
}

#[test]
fn a_service_without_graceful_shutdown_fails_the_drill() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (code, summary) = drill(
        port,
        &dir.path().join("drill.json"),
        &[NAIVE, &format!("127.0.0.1:{port}")],
    );
    assert_eq!(code, Some(1), "{summary:#}");
    assert!(
        summary["dropped"].as_u64().unwrap() > 0,
        "requests in flight at the kill are dropped: {summary:#}"
    );
    assert_eq!(
        summary["exit_code"],
        serde_json::Value::Null,
        "killed by the signal, no exit code"
    );
    assert_eq!(summary["passed"], false);
}
