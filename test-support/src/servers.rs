//! The real servers the tests talk to: their addresses, URLs, and whether they answer.
//!
//! `.ci/run` starts any that does not answer; in CI (`CI` set) a test that needs a missing
//! server fails, loudly, and never skips.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use rand::Rng;

/// PostgreSQL (trust authentication; databases `test`, `root`, `postgres`).
pub const POSTGRES: &str = "127.0.0.1:5432";
/// MariaDB (`root` with no password; database `test`).
pub const MARIADB: &str = "127.0.0.1:3306";
/// Redis.
pub const REDIS: &str = "127.0.0.1:6379";
/// RabbitMQ (`guest`/`guest`).
pub const RABBITMQ: &str = "127.0.0.1:5672";
/// NATS with JetStream.
pub const NATS: &str = "127.0.0.1:4222";

/// Whether the server at `addr` answers within 2 s. When it does not: in CI (`CI` set) the
/// test fails, loudly; elsewhere it says so and the caller returns early.
///
/// Blocking, and called once as a test begins.
pub fn server_available(name: &str, addr: &str) -> bool {
    let up = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr: SocketAddr| {
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
        });
    if !up {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is not reachable at {addr}; CI needs it (see .ci/run)"
        );
        eprintln!("SKIPPED: {name} is not reachable at {addr} (outside CI)");
    }
    up
}

/// A PostgreSQL URL whose sessions carry `app` as their `application_name`.
pub fn postgres_url(app: &str) -> String {
    format!("postgres://postgres@{POSTGRES}/test?application_name={app}")
}

/// A MariaDB URL for `database`.
pub fn mariadb_url(database: &str) -> String {
    format!("mysql://root@{MARIADB}/{database}")
}

/// The Redis URL.
pub fn redis_url() -> String {
    format!("redis://{REDIS}/")
}

/// The RabbitMQ URL (default virtual host).
pub fn amqp_url() -> String {
    format!("amqp://guest:guest@{RABBITMQ}/%2f")
}

/// The NATS URL.
pub fn nats_url() -> String {
    format!("nats://{NATS}")
}

/// A unique name (a queue, a table's rows, a stream), so tests sharing a server do not meet.
pub fn unique(test: &str) -> String {
    format!(
        "{test}-{}-{}",
        std::process::id(),
        rand::rng().random::<u32>()
    )
}
