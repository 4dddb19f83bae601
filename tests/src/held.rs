//! What an instance holds on the servers: PostgreSQL sessions and Redis connections.

use std::time::Duration;

use lifecycle_test_support::servers;
use sqlx::{Connection, PgConnection};

use crate::stack::Stack;

/// What one instance of the service holds on the servers right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Held {
    /// Rows of `pg_stat_activity` with its `application_name`.
    pub pg_sessions: i64,
    /// Connections in Redis' `CLIENT LIST` with its client name (the client's shared and
    /// dedicated connections).
    pub redis_clients: usize,
    /// Subscribers to its channel (`PUBSUB NUMSUB`): its subscriber's connection, which
    /// carries no name (`RedisSubscriber` has no client-name option).
    pub subscribers: i64,
}

/// What `stack` holds on the servers now.
///
/// # Panics
///
/// When a server cannot be asked.
pub async fn held(stack: &Stack) -> Held {
    let pg_sessions =
        sqlx::query_scalar("SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = $1")
            .bind(stack.name())
            .fetch_one(&mut admin().await)
            .await
            .expect("pg_stat_activity");
    let mut redis = redis::Client::open(stack.redis_url())
        .expect("a Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis");
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut redis)
        .await
        .expect("CLIENT LIST");
    let name = format!("name={}", stack.name());
    let redis_clients = list
        .lines()
        .filter(|line| line.split(' ').any(|field| field == name))
        .count();
    let (_, subscribers): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(stack.name())
        .query_async(&mut redis)
        .await
        .expect("PUBSUB NUMSUB");
    Held {
        pg_sessions,
        redis_clients,
        subscribers,
    }
}

/// Asserts that `stack`, whose components have all stopped
/// ([`Stack::wait_stopped`]) but which has not exited yet, holds nothing on the servers: its
/// stops closed every session and connection, not the kernel at its exit. The servers get
/// 300 ms to notice the closes.
///
/// # Panics
///
/// When it still holds something, or has exited already (the check would prove nothing).
pub async fn assert_released(stack: &mut Stack) {
    let until = tokio::time::Instant::now() + Duration::from_millis(300);
    let mut first = None;
    loop {
        let now = held(stack).await;
        first.get_or_insert_with(|| format!("{now:?}"));
        if now == Held::default() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "still held once every component had stopped: {now:?}\n{}",
            stack.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        stack.is_running(),
        "checked after the exit, not after the stops: raise the linger (first seen: {first:?})\n{}",
        stack.log()
    );
}

/// Asserts that `stack` holds nothing on the servers, allowing the servers 3 s to notice
/// connections that closed (a killed process's are closed by the kernel).
///
/// # Panics
///
/// When it still holds something after 3 s.
pub async fn assert_nothing_left(stack: &Stack) {
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let now = held(stack).await;
        if now == Held::default() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "left on the servers after exit: {now:?}\n{}",
            stack.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ends every PostgreSQL session of the instance named `name` (`pg_terminate_backend`), as a
/// database restart or failover would; returns how many.
///
/// # Panics
///
/// When PostgreSQL cannot be asked.
pub async fn terminate_sessions(name: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(name)
    .fetch_one(&mut admin().await)
    .await
    .expect("pg_terminate_backend")
}

/// A connection to PostgreSQL of the test's own.
async fn admin() -> PgConnection {
    PgConnection::connect(&servers::postgres_url("stack-test-admin"))
        .await
        .expect("PostgreSQL")
}
