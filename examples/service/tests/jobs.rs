//! The job no-loss test through the HTTP API of the real binary: jobs queued with
//! `POST /jobs`, the service stopped with SIGTERM at random moments and once killed with
//! SIGKILL, then run to the end: every job is done, and jobs ran twice only as often as a kill
//! interrupted them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_example-service");

struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request on a fresh connection; the status and the body.
fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    Some((
        status,
        response
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_owned(),
    ))
}

fn start(addr: SocketAddr, db: &str) -> Service {
    let child = Command::new(BIN)
        .args(["--listen", &addr.to_string(), "--job-lease", "1s"])
        .env("DATABASE_URL", db)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let service = Service(child);
    let until = Instant::now() + Duration::from_secs(20);
    while request(addr, "GET", "/readyz", "").map(|r| r.0) != Some(200) {
        assert!(Instant::now() < until, "the service did not become ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    service
}

fn signal(service: &Service, name: &str) {
    assert!(Command::new("kill")
        .args([&format!("-{name}"), &service.0.id().to_string()])
        .status()
        .unwrap()
        .success());
}

fn wait(service: &mut Service) -> Option<i32> {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = service.0.try_wait().unwrap() {
            return status.code();
        }
        assert!(Instant::now() < until, "the service did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads the service's SQLite database directly.
fn query(db: &str, sql: &'static str) -> Vec<(i64, i64)> {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let pool = sqlx::SqlitePool::connect(db).await.unwrap();
        let rows = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
        pool.close().await;
        rows
    })
}

#[test]
fn no_job_is_lost_across_sigterms_and_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("jobs.db").display());
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();

    let mut service = start(addr, &db);
    let jobs = 400;
    let mut ids = Vec::new();
    for i in 0..jobs {
        let (status, body) = request(
            addr,
            "POST",
            "/jobs",
            &format!("{{\"ms\": {}}}", (i * 7) % 40),
        )
        .unwrap();
        assert_eq!(status, 201, "{body}");
        ids.push(body);
    }

    let mut interrupted_by_kills = 0;
    for (cycle, run_ms) in [150u64, 90, 230, 60, 180, 120].into_iter().enumerate() {
        std::thread::sleep(Duration::from_millis(run_ms));
        if cycle == 3 {
            signal(&service, "KILL");
            wait(&mut service);
            // Every job in hand at the kill was interrupted.
            let running = query(
                &db,
                "SELECT COUNT(*), 0 FROM lifecycle_jobs WHERE state = 'running'",
            );
            interrupted_by_kills += running[0].0;
        } else {
            signal(&service, "TERM");
            assert_eq!(
                wait(&mut service),
                Some(0),
                "cycle {cycle}: a graceful stop exits 0"
            );
            let running = query(
                &db,
                "SELECT COUNT(*), 0 FROM lifecycle_jobs WHERE state = 'running'",
            );
            // A graceful stop leaves no job of its own running; only the kill's jobs may still be
            // waiting for their lease to expire.
            assert!(
                running[0].0 <= interrupted_by_kills,
                "cycle {cycle}: {} jobs left running",
                running[0].0
            );
        }
        service = start(addr, &db);
    }

    // Run to the end; the killed instance's jobs come back once their lease expires.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let done = query(
            &db,
            "SELECT COUNT(*), 0 FROM lifecycle_jobs WHERE state = 'done'",
        )[0]
        .0;
        if done == jobs {
            break;
        }
        assert!(Instant::now() < until, "only {done} of {jobs} jobs done");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, body) = request(addr, "GET", &format!("/jobs/{}", 1), "").unwrap();
    assert_eq!(
        (status, body.contains("\"state\":\"done\"")),
        (200, true),
        "{body}"
    );
    signal(&service, "TERM");
    assert_eq!(wait(&mut service), Some(0));

    let runs = query(&db, "SELECT job_id, COUNT(*) FROM job_runs GROUP BY job_id");
    assert_eq!(runs.len() as i64, jobs, "every job ran");
    let duplicates: i64 = runs.iter().map(|(_, n)| n - 1).sum();
    assert!(
        duplicates <= interrupted_by_kills,
        "{duplicates} duplicate runs, {interrupted_by_kills} jobs interrupted by the kill"
    );
}
