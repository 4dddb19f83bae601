//! What the workspace's tests share, so no crate's tests copy it.
//!
//! - [`servers`]: the real servers on this machine (PostgreSQL, MariaDB, Redis, RabbitMQ,
//!   NATS), their URLs, a unique name per test, and [`server_available`], which fails the
//!   test in CI (`CI` set) when a server does not answer, and skips it elsewhere.
//! - [`free_addr`]: a port nobody listens on now.
//! - [`Proxy`]: a TCP proxy in front of a server that a test can black-hole or cut.
//! - [`start`], [`start_alone`], [`eventually`]: a lifecycle run in a task through the testing
//!   kit, and a condition waited for.
//!
//! Not published: only the workspace's own tests depend on it.

mod lifecycle;
mod proxy;
pub mod servers;

pub use lifecycle::{eventually, start, start_alone};
pub use proxy::Proxy;
pub use servers::{server_available, unique};

use std::net::SocketAddr;

/// A free TCP address on loopback: a port nobody listens on now (bound and released).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
}
