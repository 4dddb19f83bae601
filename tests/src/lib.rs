//! The whole stack under a fault matrix: the `stack-service` binary (an HTTP server, a
//! PostgreSQL pool, a Redis client, a job worker and a subscriber, wired as a user wires them)
//! run as a child process against the machine's real servers, loaded, faulted, and checked
//! for what a deployment cares about: no request that reached it failed, no job lost, no
//! database session or Redis connection left behind, and a report that tells the truth.
//!
//! This library holds the fixture the tests in `tests/` share: [`StackConfig`] and [`Stack`]
//! (the service as a child process), [`Load`] (keep-alive HTTP/1.1 clients that tell dropped
//! requests from refused connects), [`Jobs`] (the service's job queue, read from PostgreSQL),
//! [`held`] (what the service holds on the servers), [`PrivateRedis`] (a Redis a test may kill)
//! and [`servers_available`].
//!
//! # Examples
//!
//! ```no_run
//! use lifecycle_tests::{assert_nothing_left, servers_available, Load, StackConfig};
//! use std::time::Duration;
//!
//! # async fn a_test() {
//! if !servers_available().await {
//!     return; // outside CI only: with CI=true a missing server fails the test
//! }
//! // In an integration test of this package: `env!("CARGO_BIN_EXE_stack-service")`.
//! let mut stack = StackConfig::new("target/debug/stack-service").start().await;
//! let load = Load::start(stack.addr(), "/work?ms=20", 4);
//! stack.signal("TERM");
//! load.until_refused(Duration::from_secs(10)).await.assert_none_lost();
//! assert_eq!(stack.wait_exit(Duration::from_secs(10)).await.code(), Some(0));
//! assert_nothing_left(&stack).await;
//! # }
//! ```

pub mod deployment;
mod held;
mod jobs;
mod load;
mod private_redis;
mod stack;

use lifecycle_test_support::servers;

pub use held::{assert_nothing_left, assert_released, held, terminate_sessions, Held};
pub use jobs::{JobCounts, Jobs};
pub use load::{enqueue, Load, LoadReport};
pub use private_redis::{redis_server_installed, PrivateRedis};
pub use stack::{ServerCounts, Stack, StackConfig};

/// Whether PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) answer. When one does not:
/// with `CI` set the test fails; elsewhere it says so and returns `false`, and the test returns.
pub async fn servers_available() -> bool {
    servers::server_available("PostgreSQL", servers::POSTGRES)
        && servers::server_available("Redis", servers::REDIS)
}
