//! `SqlJobQueue`, what only SQL can show: leases are measured on the database's clock, not on
//! each worker's (PostgreSQL), and tables of earlier versions are brought up to date (SQLite).

use crate::common;

use std::time::Duration;

use common::{mariadb_url, postgres_url, server_available, unique, MARIADB, POSTGRES};
use lifecycle_db::{JobQueue, SqlJobQueue};

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
    if !server_available("PostgreSQL", POSTGRES) {
        return;
    }
    sqlx::any::install_default_drivers();
    let name = unique("db-clock");
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

/// A table made by an earlier version, without the `deliveries` column, gets it: its jobs are
/// claimed as before, counting deliveries from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_from_before_deliveries_were_counted_gets_the_column() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query(
        "CREATE TABLE lifecycle_jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, payload TEXT NOT NULL,
            state TEXT NOT NULL, attempts BIGINT NOT NULL DEFAULT 0, worker TEXT,
            lease_until BIGINT, error TEXT)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO lifecycle_jobs (queue, payload, state, attempts) VALUES ('old', '300', 'queued', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();

    let queue = SqlJobQueue::new(pool.clone(), "old");
    queue.create_table().await.unwrap();
    queue.create_table().await.unwrap();
    let job = queue
        .claim("worker", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (job.payload.as_str(), job.attempts, job.deliveries),
        ("300", 1, 1)
    );
    pool.close().await;
}

/// Creates a database nobody has used, on the server of `admin_url`; returns its name.
async fn fresh_database(admin_url: &str) -> String {
    let name = unique("fresh").replace('-', "_");
    let admin = sqlx::AnyPool::connect(admin_url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    name
}

async fn drop_database(admin_url: &str, name: &str) {
    let admin = sqlx::AnyPool::connect(admin_url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
}

/// Eight replicas starting at once on a new database each create the table: every one
/// succeeds (PostgreSQL's `CREATE TABLE IF NOT EXISTS` alone fails for all but one of a
/// concurrent few, on the row type it creates) and the table is whole.
async fn replicas_create_the_table_together(admin_url: &str, url_of: impl Fn(&str) -> String) {
    sqlx::any::install_default_drivers();
    let database = fresh_database(admin_url).await;
    let url = url_of(&database);
    // Connected first, so the creates start as close together as replicas' can.
    let together = std::sync::Arc::new(tokio::sync::Barrier::new(8));
    let creates = (0..8).map(|i| {
        let (url, together) = (url.clone(), together.clone());
        tokio::spawn(async move {
            let pool = sqlx::AnyPool::connect(&url).await.unwrap();
            let queue = SqlJobQueue::new(pool.clone(), format!("replica-{i}"));
            together.wait().await;
            let created = queue.create_table().await;
            let enqueued = queue.enqueue("x").await;
            pool.close().await;
            (created, enqueued)
        })
    });
    let results = futures::future::join_all(creates).await;
    drop_database(admin_url, &database).await;
    for result in results {
        let (created, enqueued) = result.unwrap();
        created.expect("every replica creates the table");
        enqueued.expect("and enqueues into it");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_on_a_new_postgresql_database_all_create_the_table() {
    if !server_available("PostgreSQL", POSTGRES) {
        return;
    }
    replicas_create_the_table_together(&postgres_url("lifecycle-fresh-admin"), |database| {
        format!("postgres://postgres@{POSTGRES}/{database}?application_name=lifecycle-fresh")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_on_a_new_mariadb_database_all_create_the_table() {
    if !server_available("MariaDB", MARIADB) {
        return;
    }
    replicas_create_the_table_together(&mariadb_url("test"), mariadb_url).await;
}
