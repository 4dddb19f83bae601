//! `PrivateRedis`: a `redis-server` of the test's own, on a free port, that it may kill.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// Whether `redis-server` can be run here. When it cannot: with `CI` set the test fails;
/// elsewhere it says so and returns `false`, and the test returns.
///
/// # Panics
///
/// When it cannot be run and `CI` is set.
pub fn redis_server_installed() -> bool {
    let installed = std::process::Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !installed {
        assert!(
            std::env::var("CI").is_err(),
            "redis-server is not installed; CI needs it"
        );
        eprintln!("SKIPPED: redis-server is not installed (outside CI)");
    }
    installed
}

/// A Redis server only this test uses (no persistence), killed when dropped. Never kill the
/// machine's shared Redis: kill this one.
#[derive(Debug)]
pub struct PrivateRedis {
    port: u16,
    server: Option<Child>,
}

impl PrivateRedis {
    /// Starts one on a free port and waits until it answers.
    ///
    /// # Panics
    ///
    /// When it does not answer within 5 s.
    pub async fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut redis = PrivateRedis { port, server: None };
        redis.restart().await;
        redis
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills it (SIGKILL): every connection to it drops at once, as when its host dies.
    pub async fn kill(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill().await;
        }
    }

    /// Starts it again on the same port (after [`kill`](Self::kill)), empty.
    ///
    /// # Panics
    ///
    /// When it does not answer within 5 s.
    pub async fn restart(&mut self) {
        self.kill().await;
        let server = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server");
        self.server = Some(server);
        let client = redis::Client::open(self.url()).expect("a Redis URL");
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(mut connection) = client.get_multiplexed_async_connection().await {
                if redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
                    .is_ok()
                {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < until,
                "redis-server on port {} did not answer",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
