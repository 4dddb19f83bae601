//! What the tests that run the real binary share: starting it, talking HTTP/1.1 to it,
//! signalling it, and reading its database.

// Each test crate uses its own part of this module, which is `pub` for them.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_example-service");

/// The running binary; killed if the test ends before it exits.
pub struct Service(pub Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub use lifecycle_test_support::free_addr;
pub use lifecycle_test_support::servers::{
    server_available, MARIADB, NATS, POSTGRES, RABBITMQ, REDIS,
};

/// The binary started with `args` on a SQLite database in `dir`, its stderr piped (some tests
/// read what it logged); not waited for.
pub fn spawn(args: &[&str], dir: &std::path::Path) -> Service {
    let child = Command::new(BIN)
        .args(args)
        .env(
            "DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.join("service.db").display()),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Service(child)
}

/// One HTTP/1.1 request on a fresh connection; the status and the body.
pub fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
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

/// `GET path` on a fresh connection: the status code, or `None` if refused.
pub fn get(addr: SocketAddr, path: &str) -> Option<u16> {
    request(addr, "GET", path, "").map(|(status, _)| status)
}

/// Waits until `GET /readyz` answers 200; generous, for a debug build on a loaded machine.
pub fn wait_ready(addr: SocketAddr) {
    let until = Instant::now() + Duration::from_secs(60);
    while get(addr, "/readyz") != Some(200) {
        assert!(Instant::now() < until, "the service did not become ready");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `POST path` with `body`, which must answer `201 {"id": ...}`; the id.
pub fn create(addr: SocketAddr, path: &str, body: &str) -> i64 {
    let (status, answer) = request(addr, "POST", path, body).unwrap();
    assert_eq!(status, 201, "{answer}");
    serde_json::from_str::<serde_json::Value>(&answer).unwrap()["id"]
        .as_i64()
        .unwrap()
}

/// The binary on `addr` with its database at `db`, a one-second job lease (through the
/// environment, so `--job-lease` in `extra` overrides it) and `extra` arguments, once ready.
pub fn start(addr: SocketAddr, db: &str, extra: &[&str]) -> Service {
    let mut command = Command::new(BIN);
    command
        .args(["--listen", &addr.to_string()])
        .env("JOB_LEASE", "1s");
    start_command(command, addr, db, extra)
}

/// `command` (the binary, or a wrapper that runs it) with the arguments of [`start`], once
/// ready.
pub fn start_command(mut command: Command, addr: SocketAddr, db: &str, extra: &[&str]) -> Service {
    let child = command
        .args(extra)
        .env("DATABASE_URL", db)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let service = Service(child);
    wait_ready(addr);
    service
}

pub fn signal(service: &Service, name: &str) {
    assert!(Command::new("kill")
        .args([&format!("-{name}"), &service.0.id().to_string()])
        .status()
        .unwrap()
        .success());
}

/// The exit code, waiting up to 20 s.
pub fn wait(service: &mut Service) -> Option<i32> {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = service.0.try_wait().unwrap() {
            return status.code();
        }
        assert!(Instant::now() < until, "the service did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `GET path` answers a body containing `"state":"done"`, up to `until`.
pub fn wait_done(addr: SocketAddr, path: &str, until: Instant) {
    loop {
        let (status, body) = request(addr, "GET", path, "").unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        if body.contains("\"state\":\"done\"") {
            return;
        }
        assert!(Instant::now() < until, "{path}: {body}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads the service's database directly: `sql`, with `bind` as `$1` (`?` on MySQL).
pub fn query<T>(db: &str, sql: &'static str, bind: T) -> Vec<(i64, i64)>
where
    T: for<'q> sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any> + Send + 'static,
{
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(db).await.unwrap();
        let sql = if db.starts_with("mysql") {
            sqlx::AssertSqlSafe(sql.replace("$1", "?"))
        } else {
            sqlx::AssertSqlSafe(sql.to_owned())
        };
        let rows = sqlx::query_as(sql)
            .bind(bind)
            .fetch_all(&pool)
            .await
            .unwrap();
        pool.close().await;
        rows
    })
}
