//! `SqlPool` against the real PostgreSQL and MariaDB servers of the machine, and SQLite: it
//! closes after its dependents, never waits forever, and leaves no session behind.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    free_addr, mariadb_url, postgres_url, server_available, start, start_alone, start_error, Proxy,
    MARIADB, POSTGRES,
};
use lifecycle_core::{exit_code, Lifecycle, Outcome, Registration, Report, Worker};
use lifecycle_db::SqlPool;
use sqlx::pool::PoolOptions;
use sqlx::{Any, Postgres, Sqlite};
use tokio::time::Instant;

/// Runs the lifecycle and asks for the shutdown once it is ready.
async fn run_until_ready(lifecycle: Lifecycle) -> Report {
    let run = lifecycle_core::testing::TestRun::run(lifecycle);
    // A start that fails ends the run without it getting ready: its report tells.
    let _ = run.ready().await;
    run.request("test over");
    tokio::time::timeout(Duration::from_secs(30), run.finish())
        .await
        .expect("the shutdown is bounded")
        .into_report()
}

/// Sessions on the PostgreSQL server whose application name is `app`, by state.
async fn pg_sessions(app: &str) -> Vec<String> {
    let admin = SqlPool::<Postgres>::new(&postgres_url("lifecycle-admin")).unwrap();
    let states: Vec<(Option<String>,)> =
        sqlx::query_as("SELECT state FROM pg_stat_activity WHERE application_name = $1")
            .bind(app)
            .fetch_all(admin.pool())
            .await
            .unwrap();
    admin.pool().close().await;
    states
        .into_iter()
        .map(|(s,)| s.unwrap_or_default())
        .collect()
}

/// Waits up to `within` for the sessions of `app` to be gone; returns those left.
async fn pg_sessions_gone(app: &str, within: Duration) -> Vec<String> {
    let until = Instant::now() + within;
    loop {
        let left = pg_sessions(app).await;
        if left.is_empty() || Instant::now() >= until {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closes_after_its_dependents_so_their_transactions_commit() {
    if !server_available("PostgreSQL", POSTGRES) {
        return;
    }
    let app = "lifecycle-ordered-close";
    let db = SqlPool::<Postgres>::new(&postgres_url(app)).unwrap();
    let pool = db.pool().clone();
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS lifecycle_ordered (id BIGSERIAL PRIMARY KEY, note TEXT)",
    )
    .execute(
        &sqlx::PgPool::connect(&postgres_url("lifecycle-admin"))
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    let note = format!("ordered-{}", std::process::id());
    // A worker that, at its stop turn, finishes a transaction that takes 300 ms.
    let worker = {
        let (pool, note) = (pool.clone(), note.clone());
        Worker::new(move |ctx| {
            let (pool, note) = (pool.clone(), note.clone());
            async move {
                ctx.token().cancelled().await;
                let mut tx = pool.begin().await?;
                sqlx::query("INSERT INTO lifecycle_ordered (note) VALUES ($1)")
                    .bind(&note)
                    .execute(&mut *tx)
                    .await?;
                tokio::time::sleep(Duration::from_millis(300)).await;
                tx.commit().await?;
                Ok::<_, sqlx::Error>(())
            }
        })
    };
    let report = run_until_ready(
        Lifecycle::builder()
            .signals([])
            .register(Registration::new("db", db))
            .register(Registration::new("worker", worker).depends_on("db"))
            .build()
            .unwrap(),
    )
    .await;
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
    let (worker, db) = (
        report.component("worker").unwrap(),
        report.component("db").unwrap(),
    );
    assert!(worker.stop_ended_ms <= db.stop_began_ms);
    let check = sqlx::PgPool::connect(&postgres_url("lifecycle-admin"))
        .await
        .unwrap();
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM lifecycle_ordered WHERE note = $1")
        .bind(&note)
        .fetch_one(&check)
        .await
        .unwrap();
    assert_eq!(rows, 1, "the transaction committed before the pool closed");
    assert!(pool.is_closed());
    assert!(matches!(pool.acquire().await, Err(sqlx::Error::PoolClosed)));
    assert_eq!(
        pg_sessions_gone(app, Duration::from_secs(1)).await,
        Vec::<String>::new()
    );
}

/// A dependent cut off at its stop timeout in the middle of a query: sqlx returns the
/// connection only once the server has finished that query (it pings it first), and the pool's
/// stop waits for it rather than blaming a missing `depends_on` (CI, 2026-12-05: the job
/// workers' contract, with 100 ms of patience).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_off_mid_query_by_a_dependents_timeout_is_not_blamed_on_it() {
    if !server_available("PostgreSQL", POSTGRES) {
        return;
    }
    let db = SqlPool::<Postgres>::new(&postgres_url("lifecycle-cut-mid-query")).unwrap();
    let pool = db.pool().clone();
    let querying = Arc::new(tokio::sync::Notify::new());
    let worker = {
        let querying = querying.clone();
        Worker::new(move |_ctx| {
            let (pool, querying) = (pool.clone(), querying.clone());
            async move {
                let mut connection = pool.acquire().await?;
                querying.notify_one();
                // Deaf to its stop: the stop timeout cuts it off 400 ms before the query ends.
                sqlx::query("SELECT pg_sleep(0.5)")
                    .execute(&mut *connection)
                    .await?;
                Ok::<_, sqlx::Error>(())
            }
        })
    };
    let lifecycle = Lifecycle::builder()
        .signals([])
        .register(Registration::new("db", db))
        .register(
            Registration::new("worker", worker)
                .depends_on("db")
                .stop_timeout(Duration::from_millis(100)),
        )
        .build()
        .unwrap();
    let (handle, run) = start(lifecycle).await;
    querying.notified().await;
    handle.shutdown("test over");
    let report = run.await.unwrap();
    let worker = report.component("worker").unwrap();
    assert_eq!(worker.outcome, Outcome::TimedOut, "{report}");
    let db = report.component("db").unwrap();
    assert_eq!(db.outcome, Outcome::Stopped, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaked_connection_is_reported_and_does_not_hold_the_shutdown() {
    if !server_available("PostgreSQL", POSTGRES) {
        return;
    }
    let db = SqlPool::<Postgres>::new(&postgres_url("lifecycle-leak")).unwrap();
    let pool = db.pool().clone();
    let (handle, run) =
        start_alone(Registration::new("db", db).stop_timeout(Duration::from_secs(1))).await;
    let leaked = pool.acquire().await.unwrap();
    let began = Instant::now();
    handle.shutdown("test over");
    let report = run.await.unwrap();
    assert!(
        began.elapsed() < Duration::from_millis(1500),
        "stop took {:?}",
        began.elapsed()
    );
    let db = report.component("db").unwrap();
    assert_eq!(db.outcome, Outcome::Failed, "{report}");
    assert_eq!(
        db.error.as_deref(),
        Some(&*format!(
            "stop failed: closing postgres://{POSTGRES}/test?application_name=lifecycle-leak timed out with 1 connections still checked out"
        ))
    );
    drop(leaked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_and_later_acquires_fail_at_once_after_close() {
    let options = PoolOptions::<Sqlite>::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(30));
    let db = SqlPool::with_options(options, "sqlite::memory:").unwrap();
    let pool = db.pool().clone();
    let (handle, run) =
        start_alone(Registration::new("db", db).stop_timeout(Duration::from_millis(500))).await;
    let held = pool.acquire().await.unwrap();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move {
            let result = pool.acquire().await;
            (result.map(drop), Instant::now())
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let closed_at = Instant::now();
    handle.shutdown("test over");
    let (result, failed_at) = waiter.await.unwrap();
    assert!(matches!(result, Err(sqlx::Error::PoolClosed)), "{result:?}");
    assert!(
        failed_at - closed_at < Duration::from_millis(50),
        "the waiter failed after {:?}",
        failed_at - closed_at
    );
    assert!(matches!(pool.acquire().await, Err(sqlx::Error::PoolClosed)));
    drop(held);
    let report = run.await.unwrap();
    assert_eq!(
        report.component("db").unwrap().outcome,
        Outcome::Stopped,
        "{report}"
    );
}

/// A worker that, at its stop turn, inserts two rows into `table` in one transaction, sleeping
/// `hold` between them, then commits.
fn transaction_worker(
    pool: sqlx::PgPool,
    table: String,
    hold: Duration,
) -> impl lifecycle_core::Component {
    Worker::new(move |ctx| {
        // The table's name is the test's own, not input.
        let (pool, insert) = (pool.clone(), format!("INSERT INTO {table} DEFAULT VALUES"));
        async move {
            ctx.token().cancelled().await;
            let mut tx = pool.begin().await?;
            sqlx::query(sqlx::AssertSqlSafe(insert.as_str()))
                .execute(&mut *tx)
                .await?;
            tokio::time::sleep(hold).await;
            sqlx::query(sqlx::AssertSqlSafe(insert.as_str()))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(())
        }
    })
}

async fn transaction_rows(name: &str, hold: Duration) -> (Report, i64, Vec<String>) {
    let app = format!("lifecycle-tx-{}", hold.as_millis());
    let admin = sqlx::PgPool::connect(&postgres_url("lifecycle-admin"))
        .await
        .unwrap();
    // A table of the test's own: two tests creating one table at once on a new database
    // race on PostgreSQL's catalog ("relation already exists"), `IF NOT EXISTS` or not.
    let table = format!("lifecycle_{name}");
    for statement in [
        format!("DROP TABLE IF EXISTS {table}"),
        format!("CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY)"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&admin)
            .await
            .unwrap();
    }
    let db = SqlPool::<Postgres>::new(&postgres_url(&app)).unwrap();
    let worker = transaction_worker(db.pool().clone(), table.clone(), hold);
    let report = run_until_ready(
        Lifecycle::builder()
            .signals([])
            .register(Registration::new("db", db).stop_timeout(Duration::from_secs(2)))
            .register(
                Registration::new("worker", worker)
                    .depends_on("db")
                    .stop_timeout(Duration::from_millis(500)),
            )
            .build()
            .unwrap(),
    )
    .await;
    let (rows,): (i64,) =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&admin)
            .await
            .unwrap();
    let left = pg_sessions_gone(&app, Duration::from_secs(1)).await;
    (report, rows, left)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_drains_in_time_commits() {
    if !server_available("PostgreSQL", POSTGRES) {
        return;
    }
    let (report, rows, left) = transaction_rows("tx_in_time", Duration::from_millis(100)).await;
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
    assert_eq!(rows, 2);
    assert_eq!(left, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_cut_off_rolls_back_and_leaves_no_session() {
    if !server_available("PostgreSQL", POSTGRES) {
        return;
    }
    let (report, rows, left) = transaction_rows("tx_cut_off", Duration::from_secs(5)).await;
    assert_eq!(
        report.component("worker").unwrap().outcome,
        Outcome::TimedOut,
        "{report}"
    );
    assert_eq!(
        report.component("db").unwrap().outcome,
        Outcome::Stopped,
        "{report}"
    );
    assert_eq!(rows, 0, "no partial rows");
    assert_eq!(
        left,
        Vec::<String>::new(),
        "no session left, idle in transaction or otherwise"
    );
}

/// Runs `runs` lifecycles of a pool on `url` and a dependent that runs 8 `query`s at once,
/// and checks after each stop that `sessions()` reaches 0 within 1 s. On the first run it also
/// checks that the sessions were there to be seen while running: the control.
async fn no_session_left(
    url: &str,
    query: &'static str,
    runs: usize,
    sessions: impl AsyncFn() -> i64,
) {
    sqlx::any::install_default_drivers();
    for run in 0..runs {
        let db = SqlPool::<Any>::with_options(PoolOptions::new().max_connections(5), url).unwrap();
        let pool = db.pool().clone();
        let queries = Worker::new(move |ctx| {
            let pool = pool.clone();
            async move {
                let runs = (0..8).map(|_| sqlx::query(query).execute(&pool));
                futures::future::try_join_all(runs).await?;
                ctx.token().cancelled().await;
                Ok::<_, sqlx::Error>(())
            }
        });
        let lifecycle = Lifecycle::builder()
            .signals([])
            .register(Registration::new("db", db))
            .register(Registration::new("queries", queries).depends_on("db"))
            .build()
            .unwrap();
        let (handle, running) = start(lifecycle).await;
        if run == 0 {
            let until = Instant::now() + Duration::from_secs(5);
            while sessions().await == 0 {
                assert!(
                    Instant::now() < until,
                    "the pool's sessions never showed up"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        handle.shutdown("test over");
        let report = running.await.unwrap();
        assert_eq!(report.exit_code(), 0, "run {run}: {report}");
        let until = Instant::now() + Duration::from_secs(1);
        loop {
            let left = sessions().await;
            if left == 0 {
                break;
            }
            assert!(
                Instant::now() < until,
                "run {run}: {left} sessions left after stop"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_postgres_session_is_left_after_stop_in_repeated_runs() {
    if !server_available("PostgreSQL", POSTGRES) {
        return;
    }
    let app = "lifecycle-sessions";
    no_session_left(
        &postgres_url(app),
        "SELECT pg_sleep(0.01)",
        25,
        async || pg_sessions(app).await.len() as i64,
    )
    .await;
}

/// Sessions on the MariaDB server using the `lifecycle_sessions` database.
async fn mariadb_sessions(admin: &sqlx::MySqlPool) -> i64 {
    let (count,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM information_schema.PROCESSLIST WHERE DB = 'lifecycle_sessions'",
    )
    .fetch_one(admin)
    .await
    .unwrap();
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_mariadb_session_is_left_after_stop_in_repeated_runs() {
    if !server_available("MariaDB", MARIADB) {
        return;
    }
    let admin = sqlx::MySqlPool::connect(&mariadb_url("test"))
        .await
        .unwrap();
    sqlx::query("CREATE DATABASE IF NOT EXISTS lifecycle_sessions")
        .execute(&admin)
        .await
        .unwrap();
    no_session_left(
        &mariadb_url("lifecycle_sessions"),
        "SELECT SLEEP(0.01)",
        15,
        async || mariadb_sessions(&admin).await,
    )
    .await;
}

/// SQLite's sidecar files left after `runs` runs of a pool whose connections come back all at
/// once just as the pool's stop closes it, as they do on a loaded machine when a dependent
/// writing from several connections has just stopped (pitfall 24).
async fn sqlite_sidecars_after_stop<DB: sqlx::Database>(runs: usize) -> Vec<String>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    sqlx::any::install_default_drivers();
    let mut left = Vec::new();
    for run in 0..runs {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("app.db").display());
        let setup = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::raw_sql("PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER)")
            .execute(&setup)
            .await
            .unwrap();
        setup.close().await;
        let db = SqlPool::<DB>::new(&url).unwrap();
        let pool = db.pool().clone();
        let writer = Worker::new(move |ctx| {
            let pool = pool.clone();
            async move {
                ctx.token().cancelled().await;
                let mut connections = Vec::new();
                for _ in 0..4 {
                    let mut connection = pool.acquire().await?;
                    sqlx::raw_sql("INSERT INTO t VALUES (1)")
                        .execute(&mut *connection)
                        .await?;
                    connections.push(connection);
                }
                // Handed back only when the pool closes: each then closes from a task of its
                // own, at the same moment as the others.
                let closed = pool.close_event();
                tokio::spawn(async move {
                    closed.await;
                    drop(connections);
                });
                Ok::<_, sqlx::Error>(())
            }
        });
        let report = run_until_ready(
            Lifecycle::builder()
                .signals([])
                .register(Registration::new("db", db))
                .register(Registration::new("writer", writer).depends_on("db"))
                .build()
                .unwrap(),
        )
        .await;
        assert_eq!(report.exit_code(), 0, "run {run}: {report}");
        for sidecar in ["app.db-wal", "app.db-shm"] {
            if dir.path().join(sidecar).exists() {
                left.push(format!("run {run}: {sidecar}"));
            }
        }
    }
    left
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_leaves_no_wal_files_after_stop() {
    let left = sqlite_sidecars_after_stop::<Sqlite>(30).await;
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// As the example service opens it: through sqlx's `Any` driver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_through_any_leaves_no_wal_files_after_stop() {
    let left = sqlite_sidecars_after_stop::<Any>(30).await;
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_fails_the_start_naming_the_host_in_bounded_time() {
    // A port nobody listens on.
    let port = free_addr().port();
    let db =
        SqlPool::<Postgres>::new(&format!("postgres://app:secret@127.0.0.1:{port}/app")).unwrap();
    let error = start_error(db).await;
    assert!(
        error.starts_with(&format!(
            "start failed: cannot reach postgres://127.0.0.1:{port}/app after "
        )),
        "{error}"
    );
    assert!(
        !error.contains("secret"),
        "credentials stay out of reports: {error}"
    );
    assert!(error.to_lowercase().contains("refused"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_database_fails_the_start_in_bounded_time() {
    if !server_available("PostgreSQL", POSTGRES) {
        return;
    }
    let proxy = Proxy::start(POSTGRES).await;
    proxy.black_hole();
    let db = SqlPool::<Postgres>::new(&format!("postgres://postgres@{}/test", proxy.addr)).unwrap();
    let error = start_error(db).await;
    assert!(
        error.contains(&format!("cannot reach postgres://{}/test", proxy.addr)),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_gone_at_shutdown_cannot_stretch_the_stop() {
    if !server_available("PostgreSQL", POSTGRES) {
        return;
    }
    for cut in [false, true] {
        let proxy = Arc::new(Proxy::start(POSTGRES).await);
        let db =
            SqlPool::<Postgres>::new(&format!("postgres://postgres@{}/test", proxy.addr)).unwrap();
        let pool = db.pool().clone();
        let (handle, run) =
            start_alone(Registration::new("db", db).stop_timeout(Duration::from_secs(1))).await;
        // Idle connections in the pool, and one query stuck in flight.
        sqlx::query("SELECT 1").execute(&pool).await.unwrap();
        let stuck = tokio::spawn({
            let pool = pool.clone();
            async move { sqlx::query("SELECT pg_sleep(30)").execute(&pool).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        if cut {
            proxy.cut();
        } else {
            proxy.black_hole();
        }
        let began = Instant::now();
        handle.shutdown("test over");
        let report = run.await.unwrap();
        assert!(
            began.elapsed() < Duration::from_millis(1500),
            "cut={cut}: stop took {:?}",
            began.elapsed()
        );
        let db = report.component("db").unwrap();
        assert!(
            matches!(db.outcome, Outcome::Stopped | Outcome::Failed),
            "cut={cut}: {report}"
        );
        stuck.abort();
    }
}
