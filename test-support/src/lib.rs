//! What the workspace's tests share, so no crate's tests copy it.
//!
//! - [`servers`]: the real servers on this machine (PostgreSQL, MariaDB, Redis, RabbitMQ,
//!   NATS), their URLs, a unique name per test, and [`server_available`], which fails the
//!   test in CI (`CI` set) when a server does not answer, and skips it elsewhere.
//! - [`free_addr`]: a port nobody listens on now, outside the kernel's range for port 0.
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
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::sync::Mutex;

use rand::Rng;

/// The lowest port [`free_addr`] hands out.
const LOWEST_PORT: u16 = 10_000;

/// A free TCP address on loopback: a port nobody listens on now, below the range the kernel
/// picks from for port 0 and for outgoing connections, and one this process has not handed
/// out before.
///
/// A port from the kernel's own range (bind to port 0, release) can be taken before the
/// test's service binds it: by the next bind to port 0 (two tests starting together once got
/// the same one, one service could not bind it and both tests talked to the other's service;
/// CI, 2026-12-06) or as the local port of any outgoing connection. Below that range only
/// another `free_addr` could take it, and this process never hands one out twice.
pub fn free_addr() -> SocketAddr {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let ports = free_addr_ports();
    let span = ports.end - ports.start;
    // Test processes running at once (each with its own record) start apart.
    let first = rand::rng().random_range(0..span);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for step in 0..span {
        let port = ports.start + (first + step) % span;
        if handed_out.contains(&port) {
            continue;
        }
        if let Ok(listener) = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            handed_out.insert(port);
            return listener.local_addr().expect("a bound listener's address");
        }
    }
    panic!("no free port in {ports:?}");
}

/// The ports [`free_addr`] hands out: from 10000 up to the kernel's range for port 0 and
/// outgoing connections (Linux's default where it cannot be read), and at least 1000 of them.
fn free_addr_ports() -> Range<u16> {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768);
    LOWEST_PORT..ephemeral_start.max(LOWEST_PORT + 1_000)
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

    /// Nothing the kernel picks (a bind to port 0, an outgoing connection's local port) can
    /// take a port it handed out.
    #[test]
    fn free_addr_stays_below_the_kernels_own_ports() {
        let ports = super::free_addr_ports();
        for _ in 0..200 {
            let port = super::free_addr().port();
            assert!(ports.contains(&port), "{port} not in {ports:?}");
        }
    }
}
