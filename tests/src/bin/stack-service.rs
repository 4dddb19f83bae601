//! The whole stack as a user deploys it, for the fault matrix in `tests/tests/`: an HTTP server,
//! a PostgreSQL pool, a Redis client, a job worker on a PostgreSQL job queue and a Redis
//! subscriber, wired as an ordinary `main` would wire them, plus flags that inject faults.
//!
//! ```text
//! cargo run -p lifecycle-tests --bin stack-service -- \
//!     --database-url 'postgres://postgres@127.0.0.1:5432/test?application_name=stack-demo' \
//!     --redis-url redis://127.0.0.1:6379/ --name stack-demo --report-file report.json
//! ```
//!
//! Routes: `GET /work?ms=N` (a Redis command, a query on the pool, then N ms of wait),
//! `POST /jobs?ms=N` (queues a job that takes N ms; answers its id), `/livez`, `/readyz`.
//! Once every component has started it prints `ready <address>` on stdout, and once every
//! component has stopped, `stopped requests=N force_closed=M` (the server's `HttpStats`), then
//! waits `--linger` before it exits.
//!
//! The dependencies: `http` → `db`, `redis`, `schema`, `warmup`; `worker` → `schema` → `db`;
//! `subscriber` → `redis`; `warmup` → `db`, `redis`. Fault flags: `--hang-stop COMPONENT`
//! (its stop never returns), `--slow-start MS` (the warm-up takes that long, so a signal can
//! come during start-up), `--leak-connection` (a task keeps a pool connection for ever).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use lifecycle_core::testing::Fault;
use lifecycle_core::{
    async_trait, exit_code, BoxError, Component, Context, Lifecycle, Registration, Report,
};
use lifecycle_db::{
    Job, JobWorker, RedisClient, RedisConnection, RedisSubscriber, SqlJobQueue, SqlPool,
};
use lifecycle_http::{health_routes, HttpServer};
use serde_json::json;
use sqlx::{Any, AnyPool};

/// Command-line flags.
#[derive(Debug, Parser)]
struct Args {
    /// The address to serve HTTP on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The PostgreSQL database; give it an `application_name` of its own to find its sessions.
    #[arg(long)]
    database_url: String,
    /// The Redis server, for the client and the subscriber.
    #[arg(long)]
    redis_url: String,
    /// The Redis client's name (`CLIENT SETNAME`), also the prefix of its keys.
    #[arg(long)]
    name: String,
    /// The job queue's name in the `lifecycle_jobs` table.
    #[arg(long, default_value = "stack")]
    queue: String,
    /// The Redis channel the subscriber listens on.
    #[arg(long, default_value = "stack")]
    channel: String,
    /// How long to keep serving after the signal, readiness withdrawn.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    drain_delay: Duration,
    /// The most the whole shutdown may take.
    #[arg(long, default_value = "12s", value_parser = humantime::parse_duration)]
    shutdown_budget: Duration,
    /// A killed worker's job is taken up again this long after its last renewal.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    job_lease: Duration,
    /// Write the report there as JSON at every exit, forced ones included.
    #[arg(long)]
    report_file: Option<PathBuf>,
    /// Fault: the stop of this component never returns (it is cut off at its stop timeout).
    #[arg(long)]
    hang_stop: Vec<String>,
    /// Fault: the warm-up takes this many milliseconds, so start-up is slow.
    #[arg(long, default_value_t = 0)]
    slow_start: u64,
    /// Fault: once ready, a task takes a connection from the pool and never gives it back (a
    /// handler's bug, say).
    #[arg(long)]
    leak_connection: bool,
    /// Once every component has stopped, print `stopped` and wait this long before exiting,
    /// so a test can check that the stops themselves closed every session and connection
    /// (after the exit the kernel would close them anyway).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    linger: Duration,
}

/// Ends the process before anything started, for configuration errors.
fn refuse(message: impl std::fmt::Display) -> ! {
    eprintln!("stack-service: {message}");
    std::process::exit(exit_code::FAILURE)
}

#[tokio::main]
async fn main() -> Report {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    sqlx::any::install_default_drivers();

    let db = SqlPool::<Any>::new(&args.database_url).unwrap_or_else(|e| refuse(e));
    let pool = db.pool().clone();
    let leaked = pool.clone();
    let redis = RedisClient::new(&args.redis_url)
        .unwrap_or_else(|e| refuse(e))
        .client_name(&args.name);
    let queue = SqlJobQueue::new(pool.clone(), &*args.queue);

    // Each message counts itself in Redis, through the client: the subscriber needs it.
    let messages = (redis.connection(), format!("{}:messages", args.name));
    let subscriber = RedisSubscriber::new(&args.redis_url, move |_message| {
        let (mut connection, key) = messages.clone();
        async move {
            let counted = redis::pipe()
                .cmd("INCR")
                .arg(&key)
                .cmd("EXPIRE")
                .arg(&key)
                .arg(600)
                .query_async::<(i64, i64)>(&mut connection)
                .await;
            if let Err(error) = counted {
                tracing::warn!(%error, "could not count a message");
            }
        }
    })
    .unwrap_or_else(|e| refuse(e))
    .channel(&args.channel);

    // The work of a job: N ms, then a query, as a job that writes its result would.
    let job_pool = pool.clone();
    let worker = JobWorker::new(queue.clone(), move |job: Job| {
        let pool = job_pool.clone();
        async move {
            let ms: u64 = job.payload.parse()?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            sqlx::query("SELECT $1").bind(job.id).execute(&pool).await?;
            Ok(())
        }
    })
    .lease(args.job_lease)
    .poll_interval(Duration::from_millis(50));

    let builder = Lifecycle::builder()
        .drain_delay(args.drain_delay)
        .shutdown_budget(args.shutdown_budget);
    let builder = match &args.report_file {
        Some(path) => builder.report_file(path),
        None => builder,
    };
    let state = AppState {
        pool: pool.clone(),
        redis: redis.connection(),
        hits: format!("{}:hits", args.name),
        queue: queue.clone(),
    };
    let router = Router::new()
        .route("/work", get(work))
        .route("/jobs", post(enqueue))
        .with_state(state)
        .merge(health_routes(builder.handle()));
    let http = HttpServer::bind(args.listen, router);
    let local_addr = http.local_addr();
    let stats = http.stats();

    let mut builder = builder
        .register(Registration::new("db", db).stop_timeout(Duration::from_secs(2)))
        .register(Registration::new("redis", redis.clone()).stop_timeout(Duration::from_secs(1)))
        .register(
            Registration::new("schema", Schema(queue))
                .depends_on("db")
                .stop_timeout(Duration::from_secs(1)),
        )
        .register(
            Registration::new(
                "warmup",
                Warmup {
                    pool,
                    redis: redis.connection(),
                    takes: Duration::from_millis(args.slow_start),
                },
            )
            .depends_on("db")
            .depends_on("redis")
            .stop_timeout(Duration::from_secs(1)),
        )
        .register(
            Registration::new("subscriber", subscriber)
                .depends_on("redis")
                .stop_timeout(Duration::from_secs(2)),
        )
        .register(
            Registration::new("worker", worker)
                .depends_on("schema")
                .depends_on("db")
                .stop_timeout(Duration::from_secs(1)),
        )
        .register(
            Registration::new("http", http)
                .depends_on("db")
                .depends_on("redis")
                .depends_on("schema")
                .depends_on("warmup")
                .stop_timeout(Duration::from_secs(3)),
        );
    for name in &args.hang_stop {
        builder = builder.inject_fault(name, Fault::StopHangs);
    }
    let lifecycle = builder
        .build()
        .unwrap_or_else(|e| refuse(format_args!("invalid configuration: {e}")));

    // Tests wait for this line before they load the service.
    let mut phase = lifecycle.handle().watch_phase();
    let leak = args.leak_connection.then_some(leaked);
    tokio::spawn(async move {
        if phase.wait_for(|p| p.is_ready()).await.is_ok() {
            if let Some(pool) = leak {
                let connection = pool.acquire().await;
                tokio::spawn(async move {
                    let _held = connection;
                    std::future::pending::<()>().await;
                });
            }
            match local_addr.get() {
                Some(addr) => println!("ready {addr}"),
                None => println!("ready"),
            }
        }
    });
    let report = lifecycle.run().await;
    // The server's own count, for tests to hold against what their clients saw.
    println!(
        "stopped requests={} force_closed={}",
        stats.requests(),
        stats.force_closed()
    );
    tokio::time::sleep(args.linger).await;
    report
}

/// What the handlers share.
#[derive(Debug, Clone)]
struct AppState {
    pool: AnyPool,
    redis: RedisConnection,
    hits: String,
    queue: SqlJobQueue,
}

#[derive(Debug, serde::Deserialize)]
struct Ms {
    #[serde(default)]
    ms: u64,
}

/// `GET /work?ms=N`: a Redis command, a query, then N ms of wait.
async fn work(State(state): State<AppState>, Query(Ms { ms }): Query<Ms>) -> Response {
    let mut redis = state.redis.clone();
    let hits = redis::pipe()
        .cmd("INCR")
        .arg(&state.hits)
        .cmd("EXPIRE")
        .arg(&state.hits)
        .arg(600)
        .query_async::<(i64, i64)>(&mut redis)
        .await;
    let hits = match hits {
        Ok((hits, _)) => hits,
        Err(error) => return failure("redis", error),
    };
    if let Err(error) = select_one(&state.pool).await {
        return failure("database", error);
    }
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Json(json!({ "hits": hits, "ms": ms })).into_response()
}

/// `SELECT 1`, tried a second time if the first attempt fails: the query is idempotent, and a
/// session the server ended (a restart, `pg_terminate_backend`) fails the query that was on it;
/// the pool replaces the session for the retry.
async fn select_one(pool: &AnyPool) -> Result<(), sqlx::Error> {
    match sqlx::query("SELECT 1").execute(pool).await {
        Ok(_) => Ok(()),
        Err(sqlx::Error::PoolClosed) => Err(sqlx::Error::PoolClosed),
        Err(error) => {
            tracing::warn!(%error, "query failed, retrying once");
            sqlx::query("SELECT 1").execute(pool).await.map(drop)
        }
    }
}

/// `POST /jobs?ms=N`: queues a job that takes N ms; answers `{"id": ...}`.
async fn enqueue(State(state): State<AppState>, Query(Ms { ms }): Query<Ms>) -> Response {
    match state.queue.enqueue(&ms.to_string()).await {
        Ok(id) => (StatusCode::CREATED, Json(json!({ "id": id }))).into_response(),
        Err(error) => failure("job queue", error),
    }
}

fn failure(what: &str, error: impl std::fmt::Display) -> Response {
    tracing::error!(%error, "{what} call failed");
    (StatusCode::INTERNAL_SERVER_ERROR, format!("{what} error\n")).into_response()
}

/// Creates the job queue's table before anything uses it.
#[derive(Debug)]
struct Schema(SqlJobQueue);

#[async_trait]
impl Component for Schema {
    async fn start(&self, _ctx: &Context) -> Result<(), BoxError> {
        Ok(self.0.create_table().await?)
    }
}

/// A warm-up before the server takes traffic (a cache filled from the database and Redis); with
/// `--slow-start` it takes that long, so that a signal can arrive during start-up.
#[derive(Debug)]
struct Warmup {
    pool: AnyPool,
    redis: RedisConnection,
    takes: Duration,
}

#[async_trait]
impl Component for Warmup {
    async fn start(&self, _ctx: &Context) -> Result<(), BoxError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        redis::cmd("PING")
            .query_async::<String>(&mut self.redis.clone())
            .await?;
        tokio::time::sleep(self.takes).await;
        Ok(())
    }
}
