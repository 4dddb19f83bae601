//! `SqlJobQueue` on PostgreSQL, what only SQL can show: leases are measured on the database's
//! clock, not on each worker's.

mod common;

use std::time::Duration;

use common::{postgres_url, queue_name, server_available, POSTGRES};
use lifecycle_db::SqlJobQueue;

/// A PostgreSQL session whose `now()` runs an hour ahead: a schema with its own `now`, searched
/// before `pg_catalog` (PostgreSQL searches `pg_catalog` first only when it is not listed).
async fn an_hour_ahead() -> sqlx::AnyPool {
    let admin = sqlx::AnyPool::connect(&postgres_url("lifecycle-skew-admin"))
        .await
        .unwrap();
    sqlx::query("CREATE SCHEMA IF NOT EXISTS lifecycle_skew")
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query(
        "CREATE OR REPLACE FUNCTION lifecycle_skew.now() RETURNS timestamptz LANGUAGE sql STABLE
         AS $$ SELECT pg_catalog.now() + interval '1 hour' $$",
    )
    .execute(&admin)
    .await
    .unwrap();
    admin.close().await;
    let url = format!(
        "{}&options=-c%20search_path%3Dlifecycle_skew%2Cpublic%2Cpg_catalog",
        postgres_url("lifecycle-skew")
    );
    let skewed = sqlx::AnyPool::connect(&url).await.unwrap();
    let ahead: bool = sqlx::query_scalar("SELECT now() > pg_catalog.now() + interval '59 minutes'")
        .fetch_one(&skewed)
        .await
        .unwrap();
    assert!(
        ahead,
        "the session's clock is not ahead: the test would see nothing"
    );
    skewed
}

/// A lease taken for 10 minutes is expired for a database whose clock says an hour has
/// passed, whatever the clock of the worker that reclaims: the database decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_measured_on_the_database_clock() {
    if !server_available("PostgreSQL", POSTGRES).await {
        return;
    }
    sqlx::any::install_default_drivers();
    let name = queue_name("db-clock");
    let pool = sqlx::AnyPool::connect(&postgres_url("lifecycle-clock"))
        .await
        .unwrap();
    let queue = SqlJobQueue::new(pool.clone(), name.as_str());
    queue.create_table().await.unwrap();
    let id = queue.enqueue("x").await.unwrap();
    let job = queue
        .claim("worker", Duration::from_secs(600))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.id, id);
    // On the worker's own database session, 10 minutes is 10 minutes.
    assert_eq!(queue.reclaim_expired().await.unwrap(), 0);

    let later = SqlJobQueue::new(an_hour_ahead().await, name.as_str());
    assert_eq!(
        later.reclaim_expired().await.unwrap(),
        1,
        "the lease was measured on the worker's clock, not the database's"
    );
    pool.close().await;
}
