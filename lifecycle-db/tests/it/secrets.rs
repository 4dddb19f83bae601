//! No credential leaves: for each form a database or Redis URL can carry a secret in (the user
//! information, `?password=`, `?sslpassword=`, `?pass=`), against the machine's servers, the
//! secret appears in no log line, error, report or health output (`/readyz?verbose` shows
//! `check_health` and each component's health).

use crate::common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{server_available, MARIADB, POSTGRES};
use lifecycle_core::{Component, Lifecycle, Phase, Registration};
use lifecycle_db::SqlPool;

/// Everything logged by any test of this file, at debug level and above, from every crate.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_ansi(false)
            .with_writer(move || Capture(writer.clone()))
            .init();
        logs
    })
    .clone()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A secret no other test uses, so that the shared log tells whose it is.
fn secret(case: &str) -> String {
    format!("s3cr3t-{case}-{}", std::process::id())
}

/// Runs a component made by `make` through a lifecycle (its start, its health while running,
/// its stop, or its failed start) and asserts that `secret` shows nowhere while `host` (the
/// server, which the output names) does.
async fn assert_never_shown<C: Component + std::fmt::Debug>(
    make: impl Fn() -> C,
    secret: &str,
    host: &str,
) {
    let logs = captured_logs();
    let mut shown = Vec::new();
    let component = make();
    shown.push(format!("{component:?}"));
    // What `/readyz?verbose` shows of a component that cannot reach its server.
    shown.push(format!("{:?}", component.health().await));

    let lifecycle = Lifecycle::builder()
        .signals([])
        .register(Registration::new("store", make()).start_timeout(Duration::from_secs(2)))
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());
    let _ = handle
        .watch_phase()
        .wait_for(|phase| *phase != Phase::Starting)
        .await;
    if handle.phase().is_ready() {
        shown.push(format!("{:?}", handle.check_health().await));
        handle.shutdown("checked");
    }
    let report = run.await.unwrap();
    shown.push(report.to_string());
    shown.push(report.to_json());
    shown.push(String::from_utf8_lossy(&logs.lock().unwrap()).into_owned());

    for text in &shown {
        assert!(!text.contains(secret), "the secret is shown: {text}");
    }
    let all = shown.concat();
    assert!(
        all.contains(host),
        "the server is named nowhere: the test saw nothing"
    );
}

async fn sql<DB: sqlx::Database>(url: String, secret: &str, host: &str) {
    assert_never_shown(|| SqlPool::<DB>::new(&url).unwrap(), secret, host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_password_in_the_query() {
    if !server_available("PostgreSQL", POSTGRES) {
        return;
    }
    let secret = secret("pg-query");
    let url = format!("postgres://{POSTGRES}/test?user=postgres&password={secret}");
    sql::<sqlx::Postgres>(url, &secret, POSTGRES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_password_in_the_user_information() {
    if !server_available("PostgreSQL", POSTGRES) {
        return;
    }
    let secret = secret("pg-userinfo");
    let url = format!("postgres://postgres:{secret}@{POSTGRES}/test");
    sql::<sqlx::Postgres>(url, &secret, POSTGRES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_ssl_key_password_in_the_query() {
    if !server_available("PostgreSQL", POSTGRES) {
        return;
    }
    let secret = secret("pg-sslpassword");
    let url = format!("postgres://postgres@{POSTGRES}/test?sslpassword={secret}");
    sql::<sqlx::Postgres>(url, &secret, POSTGRES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_password_through_the_any_driver() {
    if !server_available("PostgreSQL", POSTGRES) {
        return;
    }
    sqlx::any::install_default_drivers();
    let secret = secret("pg-any");
    let url = format!("postgres://{POSTGRES}/test?user=postgres&password={secret}");
    sql::<sqlx::Any>(url, &secret, POSTGRES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_wrong_password_in_the_user_information() {
    if !server_available("MariaDB", MARIADB) {
        return;
    }
    let secret = secret("mysql-userinfo");
    let url = format!("mysql://root:{secret}@{MARIADB}/test");
    sql::<sqlx::MySql>(url, &secret, MARIADB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_password_in_the_query() {
    if !server_available("MariaDB", MARIADB) {
        return;
    }
    let secret = secret("mysql-query");
    let url = format!("mysql://root@{MARIADB}/test?password={secret}");
    sql::<sqlx::MySql>(url, &secret, MARIADB).await;
}

#[cfg(feature = "redis")]
mod redis_urls {
    use super::*;
    use common::REDIS;
    use lifecycle_db::{RedisClient, RedisSubscriber};

    async fn client(url: String, secret: &str) {
        assert_never_shown(|| RedisClient::new(&url).unwrap(), secret, REDIS).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_password_in_the_user_information() {
        if !server_available("Redis", REDIS) {
            return;
        }
        let secret = secret("redis-userinfo");
        client(format!("redis://:{secret}@{REDIS}/"), &secret).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_user_and_password_in_the_user_information() {
        if !server_available("Redis", REDIS) {
            return;
        }
        let secret = secret("redis-user");
        client(format!("redis://default:{secret}@{REDIS}/0"), &secret).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_pass_in_the_query() {
        if !server_available("Redis", REDIS) {
            return;
        }
        let secret = secret("redis-query");
        client(format!("redis://{REDIS}/0?pass={secret}"), &secret).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_subscriber_password_in_the_user_information() {
        if !server_available("Redis", REDIS) {
            return;
        }
        let secret = secret("redis-subscriber");
        let url = format!("redis://:{secret}@{REDIS}/");
        assert_never_shown(
            || {
                RedisSubscriber::new(&url, |_message| async {})
                    .unwrap()
                    .channel("lifecycle-secrets")
            },
            &secret,
            REDIS,
        )
        .await;
    }
}

/// A Redis server of this test's own that requires `password`, on a Unix socket in `dir`; it
/// is killed when dropped.
#[cfg(feature = "redis")]
struct PasswordRedis {
    child: std::process::Child,
    socket: std::path::PathBuf,
}

#[cfg(feature = "redis")]
impl PasswordRedis {
    async fn start(dir: &std::path::Path, password: &str) -> PasswordRedis {
        let socket = dir.join("redis.sock");
        let child = std::process::Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&socket)
            .args(["--requirepass", password])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server, which the tests need, is installed");
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(
                tokio::time::Instant::now() < until,
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        PasswordRedis { child, socket }
    }
}

#[cfg(feature = "redis")]
impl Drop for PasswordRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `redis+unix://...?pass=` against a server that requires that password: the client connects
/// with it, and shows it nowhere.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unix_socket_pass_in_the_query() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret("redis-unix");
    let server = PasswordRedis::start(dir.path(), &secret).await;
    let url = format!("redis+unix://{}?pass={secret}", server.socket.display());
    let socket = server.socket.display().to_string();
    assert_never_shown(
        || lifecycle_db::RedisClient::new(&url).unwrap(),
        &secret,
        &socket,
    )
    .await;
    let logs = String::from_utf8_lossy(&captured_logs().lock().unwrap()).into_owned();
    assert!(
        logs.lines()
            .any(|line| line.contains("redis reachable") && line.contains(&socket)),
        "the client never connected with the password"
    );
}
