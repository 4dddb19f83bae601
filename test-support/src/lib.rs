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

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Mutex;

/// A free TCP address on loopback: a port nobody listens on now (bound and released), and one
/// this process has not handed out before.
///
/// The kernel may give a port just released to the next `bind` to port 0: two tests starting
/// together once got the same one, one service could not bind it and both tests talked to
/// the other's service (CI, 2026-12-06).
pub fn free_addr() -> SocketAddr {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port");
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if handed_out.insert(addr.port()) {
            return addr;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    /// The kernel gives ports back to later binds to port 0 all the time (20000 binds here
    /// returned 10695 distinct ports): a few thousand calls would repeat some without the
    /// record of those handed out.
    #[test]
    fn free_addr_never_hands_out_a_port_twice() {
        let ports: Vec<u16> = (0..2000).map(|_| super::free_addr().port()).collect();
        let distinct: HashSet<&u16> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len());
    }
}
