//! Tenants added and removed while the service runs (`PUT` and `DELETE /tenants/{name}`), on
//! the real binary: the answers, `/readyz?verbose`, refusal once SIGTERM came, and the report
//! (a removed tenant too, each stopped before the database).

use crate::common;

use std::time::{Duration, Instant};

use common::{request, signal, start, wait};

#[test]
fn tenants_come_and_go_and_the_shutdown_orders_them() {
    let dir = tempfile::tempdir().unwrap();
    let addr = common::free_addr();
    let report_path = dir.path().join("report.json");
    let db = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("service.db").display()
    );
    let mut service = start(
        addr,
        &db,
        &[
            "--drain-delay",
            "2s",
            "--report-json",
            report_path.to_str().unwrap(),
        ],
    );

    let call = |method: &str, path: &str| request(addr, method, path, "").unwrap();
    assert_eq!(call("PUT", "/tenants/acme").0, 201);
    assert_eq!(call("PUT", "/tenants/globex").0, 201);
    assert_eq!(call("PUT", "/tenants/acme").0, 409, "a duplicate");
    assert_eq!(call("PUT", "/tenants/Not%20Valid").0, 400);
    let (status, verbose) = call("GET", "/readyz?verbose");
    assert_eq!(status, 200, "{verbose}");
    assert!(
        verbose.contains("tenant-acme") && verbose.contains("tenant-globex"),
        "{verbose}"
    );

    let (status, body) = call("DELETE", "/tenants/acme");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"outcome\":\"stopped\""), "{body}");
    assert_eq!(call("DELETE", "/tenants/acme").0, 404);
    assert_eq!(call("DELETE", "/tenants/initech").0, 404);
    assert!(!call("GET", "/readyz?verbose").1.contains("tenant-acme"));
    // The name is free again.
    assert_eq!(call("PUT", "/tenants/acme").0, 201);
    assert_eq!(call("DELETE", "/tenants/acme").0, 200);

    signal(&service, "TERM");
    // During the drain delay the server still answers, and refuses changes.
    let until = Instant::now() + Duration::from_secs(1);
    while call("GET", "/readyz").0 != 503 {
        assert!(Instant::now() < until, "readiness not withdrawn");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(call("PUT", "/tenants/late").0, 503);
    assert_eq!(call("DELETE", "/tenants/globex").0, 503);
    assert_eq!(wait(&mut service), Some(0));

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let components = report["components"].as_array().unwrap();
    let find = |name: &str| {
        components
            .iter()
            .filter(|c| c["name"] == name)
            .collect::<Vec<_>>()
    };
    let db = find("db")[0];
    let acme = find("tenant-acme");
    assert_eq!(acme.len(), 2, "added twice, removed twice: {report}");
    for tenant in acme.iter().chain(&find("tenant-globex")) {
        assert_eq!(tenant["outcome"], "stopped", "{report}");
        assert_eq!(tenant["dependencies"][0], "db");
        assert!(tenant["stop_ended_ms"].as_f64() <= db["stop_began_ms"].as_f64());
    }
    assert!(acme.iter().all(|t| t["removed"] == true));
    assert!(find("tenant-globex")[0].get("removed").is_none());
    assert!(find("tenant-late").is_empty());
}
