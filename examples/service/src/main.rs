//! The example service: one ordinary `main` that wires an HTTP server, a database pool, its
//! schema and a job worker into a lifecycle and returns the shutdown report. It is the model to
//! copy.
//!
//! Run it with `cargo run --release -p example-service` (SQLite by default, no server needed),
//! then `curl localhost:8080/work?ms=100` or `curl -d '{"ms": 500}' -H 'content-type:
//! application/json' localhost:8080/jobs`, and stop it with Ctrl-C or SIGTERM: the log shows
//! readiness withdrawn, the drain delay, the server and the job worker stopping before the pool
//! (the job in hand finished or handed back), and the report.
//!
//! Flags (each also read from the environment variable shown):
//! `--listen` (`LISTEN_ADDR`), `--database-url` (`DATABASE_URL`, SQLite, PostgreSQL or
//! MySQL/MariaDB),
//! `--drain-delay` (`DRAIN_DELAY`), `--shutdown-budget` (`SHUTDOWN_BUDGET`), `--grace-period`
//! (`TERMINATION_GRACE_PERIOD`: refuse to start when the shutdown could not fit in it),
//! `--redis-url` (`REDIS_URL`: the job queue in Redis instead of the SQL database),
//! `--job-queue` (`JOB_QUEUE`), `--job-lease` (`JOB_LEASE`), `--max-deliveries` (`MAX_DELIVERIES`),
//! `--amqp-url` (`AMQP_URL`) and `--nats-url` (`NATS_URL`: events through RabbitMQ or NATS
//! JetStream, see `POST /events`),
//! `--report-json PATH` (write the report there on exit), `--in-place-upgrade`
//! (`IN_PLACE_UPGRADE`: SIGHUP upgrades the service in place; refused as PID 1 of a container),
//! `--pid-file PATH` (`PID_FILE`: the serving process's PID, rewritten at each upgrade; implies
//! `--in-place-upgrade`), `--upgrade-timeout` (`UPGRADE_TIMEOUT`), `--start-timeout`
//! (`START_TIMEOUT`: each backend's connect at start), `--listen-unix PATH` (`LISTEN_UNIX`: HTTP on a Unix socket too),
//! `--tls-cert PATH` and `--tls-key PATH` (`TLS_CERT`, `TLS_KEY`: serve TLS),
//! `--admin-listen` (`ADMIN_LISTEN`: serve `/metrics`, `/livez` and `/readyz?verbose` on this
//! address, up to the last stop).
//!
//! The same port answers gRPC (h2c, or h2 over TLS): `grpc.health.v1.Health` (`Check`,
//! `Watch`), following the lifecycle, and `example.v1.Example` (`proto/example.proto`).

mod admin;
mod events;
mod grpc;
mod jobs;
mod migrations;
mod routes;
mod tenants;
mod tls;
mod upgrade;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use lifecycle_core::{exit_code, Lifecycle, Registration, Report};
use lifecycle_db::{Job, JobWorker, RedisClient, RedisJobQueue, SqlJobQueue, SqlPool};
use lifecycle_http::{HealthRoutes, HttpServer};
use lifecycle_mq::{AmqpConsumer, AmqpPublisher, NatsConsumer, NatsPublisher};
use sqlx::Any;

use crate::events::{EventStore, Events, Names, Topology};
use crate::jobs::Jobs;
use crate::migrations::Migrations;
use crate::routes::AppState;

/// Command-line flags; each can also come from the environment variable shown.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The address to serve HTTP on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The database: SQLite (the default, a file next to where it runs), PostgreSQL or
    /// MySQL/MariaDB.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://example-service.db?mode=rwc"
    )]
    database_url: String,
    /// Redis, for the job queue; without it the jobs live in the SQL database.
    #[arg(long, env = "REDIS_URL")]
    redis_url: Option<String>,
    /// The job queue's name, so that several services can share a database or a Redis.
    #[arg(long, env = "JOB_QUEUE", default_value = "default")]
    job_queue: String,
    /// How long to keep serving after the signal, readiness withdrawn, before stopping.
    #[arg(long, env = "DRAIN_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
    drain_delay: Duration,
    /// The most the whole shutdown may take.
    #[arg(long, env = "SHUTDOWN_BUDGET", default_value = "25s", value_parser = humantime::parse_duration)]
    shutdown_budget: Duration,
    /// The orchestrator's grace period before SIGKILL (Kubernetes'
    /// terminationGracePeriodSeconds); the service refuses to start if its shutdown cannot fit.
    #[arg(long, env = "TERMINATION_GRACE_PERIOD", value_parser = humantime::parse_duration)]
    grace_period: Option<Duration>,
    /// How long a job stays claimed without renewal: a killed instance's job is taken up again
    /// after it.
    #[arg(long, env = "JOB_LEASE", default_value = "30s", value_parser = humantime::parse_duration)]
    job_lease: Duration,
    /// The most deliveries an event or a job gets: one whose work fails that often ends `dead`.
    #[arg(long, env = "MAX_DELIVERIES", default_value_t = 5)]
    max_deliveries: u32,
    /// RabbitMQ, for events (`POST /events`): a publisher, and a consumer that does their work.
    #[arg(long, env = "AMQP_URL")]
    amqp_url: Option<String>,
    /// NATS with JetStream, for events, as `--amqp-url`; a killed instance's events are taken up
    /// again after `--job-lease`.
    #[arg(long, env = "NATS_URL")]
    nats_url: Option<String>,
    /// Write the shutdown report as JSON to this file on exit, forced exits included
    /// (atomically: a reader never sees half a report).
    #[arg(long)]
    report_json: Option<PathBuf>,
    #[command(flatten)]
    tls: tls::TlsArgs,
    /// Write the serving process's PID here once ready (rewritten at each in-place upgrade,
    /// removed at the exit); implies --in-place-upgrade.
    #[arg(long, env = "PID_FILE")]
    pid_file: Option<PathBuf>,
    /// SIGHUP upgrades the service in place: the binary at the same path is started again,
    /// takes the sockets over once ready, and this process exits. Refused (logged, the service
    /// keeps serving) as PID 1 of a container, whose exit would end the new process. Without
    /// it, SIGHUP's default applies (PID 1 of a container ignores it).
    #[arg(long, env = "IN_PLACE_UPGRADE")]
    in_place_upgrade: bool,
    /// How long a new process of an in-place upgrade has to become ready before it is
    /// stopped and the upgrade counts as failed.
    #[arg(long, env = "UPGRADE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    upgrade_timeout: Duration,
    /// How long each backend (database, Redis, brokers) may take to connect at start before
    /// the start fails and the service exits.
    #[arg(long, env = "START_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    start_timeout: Duration,
    /// Do not serve: ask the running service whose admin listener is at this address for an
    /// in-place upgrade, wait for the outcome, print it, and exit 0 if the new process took
    /// over, 1 if not (systemd's `ExecReload=`).
    #[arg(long)]
    request_upgrade: Option<SocketAddr>,
    /// Serve HTTP on this Unix domain socket too (handed over at an upgrade like the TCP one).
    #[arg(long, env = "LISTEN_UNIX")]
    listen_unix: Option<PathBuf>,
    /// Serve `/metrics` (Prometheus), `/livez` and `/readyz?verbose` on this address too.
    #[arg(long, env = "ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
}

/// The Unix socket listener at `path` (Unix only).
#[cfg(unix)]
fn unix_listener(
    sockets: &upgrade::Sockets,
    path: &std::path::Path,
) -> Result<std::os::unix::net::UnixListener, lifecycle_core::BoxError> {
    sockets.unix_listener("http-unix", path)
}

#[cfg(not(unix))]
fn unix_listener(
    _: &upgrade::Sockets,
    _: &std::path::Path,
) -> Result<std::convert::Infallible, lifecycle_core::BoxError> {
    Err("--listen-unix needs Unix".into())
}

/// Ends the process before anything started, for configuration errors.
fn refuse(message: impl std::fmt::Display) -> ! {
    eprintln!("example-service: {message}");
    std::process::exit(exit_code::FAILURE)
}

#[tokio::main]
async fn main() -> Report {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    if let Some(admin) = args.request_upgrade {
        std::process::exit(upgrade::request(admin));
    }
    sqlx::any::install_default_drivers();

    let db = SqlPool::<Any>::new(&args.database_url).unwrap_or_else(|e| refuse(e));
    let mut builder = Lifecycle::builder()
        .drain_delay(args.drain_delay)
        .shutdown_budget(args.shutdown_budget);
    if let Some(path) = &args.report_json {
        builder = builder.report_file(path);
    }
    // The listening sockets are inherited (systemd socket activation, or the process this one
    // upgrades) or bound; SIGHUP hands them to a new process of the binary. HTTP first, so
    // that a socket systemd passed without a name goes to it.
    let upgrades = args.in_place_upgrade || args.pid_file.is_some();
    let sockets = upgrade::Sockets::new(upgrades, args.pid_file.clone(), args.upgrade_timeout)
        .unwrap_or_else(|e| refuse(e));
    let listener = sockets
        .listener("http", args.listen)
        .unwrap_or_else(|e| refuse(e));
    let builder =
        admin::register(builder, &sockets, args.admin_listen).unwrap_or_else(|e| refuse(e));
    let pool = db.pool().clone();
    let sql_jobs = SqlJobQueue::new(pool.clone(), &*args.job_queue);
    let redis = args
        .redis_url
        .as_deref()
        .map(|url| RedisClient::new(url).unwrap_or_else(|e| refuse(e)));
    let jobs = match &redis {
        Some(redis) => Jobs::Redis(RedisJobQueue::new(redis.clone(), &args.job_queue)),
        None => Jobs::Sql(sql_jobs.clone()),
    };
    // The work of an event is a job's; each broker given brings a publisher for `POST /events`
    // and a consumer (every replica shares the broker's queue).
    let mysql = args.database_url.starts_with("mysql") || args.database_url.starts_with("mariadb");
    let names = Names::new(&args.job_queue);
    let store = EventStore::new(pool.clone(), mysql);
    let amqp = args.amqp_url.as_deref().map(|url| {
        let store = store.clone();
        let consumer = AmqpConsumer::new(url, &names.amqp_queue, move |message| {
            events::consume(store.clone(), message)
        });
        let consumer = consumer.max_deliveries(args.max_deliveries);
        (AmqpPublisher::new(url), consumer.prefetch(8).concurrency(4))
    });
    let nats = args.nats_url.as_deref().map(|url| {
        let store = store.clone();
        let consumer = NatsConsumer::new(url, &names.nats_stream, &names.nats_consumer, {
            move |message| events::consume(store.clone(), message)
        });
        let consumer = consumer.prefetch(8).concurrency(4).ack_wait(args.job_lease);
        let consumer = consumer.max_deliveries(args.max_deliveries);
        (NatsPublisher::new(url), consumer)
    });
    let state = AppState {
        pool: pool.clone(),
        jobs: jobs.clone(),
        events: Events {
            store,
            names: names.clone(),
            amqp: amqp.as_ref().map(|(publisher, _)| publisher.handle()),
            nats: nats.as_ref().map(|(publisher, _)| publisher.handle()),
        },
        tenants: tenants::Tenants {
            lifecycle: builder.handle(),
            pool: pool.clone(),
        },
    };
    // The example shows each component's details at `/readyz?verbose`; a service open to the
    // internet would keep them off, or serve them on an internal address.
    let health = HealthRoutes::new(builder.handle()).verbose(true).router();
    let router = routes::router(state)
        .merge(health)
        .merge(grpc::routes(builder.handle()));
    let migrations = Migrations {
        pool: pool.clone(),
        jobs: sql_jobs,
        events: Topology {
            names,
            amqp_url: args.amqp_url.clone(),
            nats_url: args.nats_url.clone(),
        },
    };
    // The work of a job: record the run, wait the job's milliseconds, mark the run finished.
    // (sqlx's `Any` passes SQL through as written: MySQL's placeholders are `?`.)
    let (record_run, finish_run) = if mysql {
        (
            "INSERT INTO job_runs (job_id, finished) VALUES (?, 0)",
            "UPDATE job_runs SET finished = 1 WHERE job_id = ? AND finished = 0",
        )
    } else {
        (
            "INSERT INTO job_runs (job_id, finished) VALUES ($1, 0)",
            "UPDATE job_runs SET finished = 1 WHERE job_id = $1 AND finished = 0",
        )
    };
    let work = move |job: Job<jobs::Work>| {
        let pool = pool.clone();
        async move {
            let ms = job.payload.ms();
            sqlx::query(record_run).bind(job.id).execute(&pool).await?;
            job.payload.fail_if_asked(job.id)?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            sqlx::query(finish_run).bind(job.id).execute(&pool).await?;
            Ok(())
        }
    };
    let attempts = args.max_deliveries;
    let worker = match jobs {
        Jobs::Sql(queue) => JobWorker::new(queue, work)
            .lease(args.job_lease)
            .max_attempts(attempts),
        Jobs::Redis(queue) => JobWorker::new(queue, work)
            .lease(args.job_lease)
            .max_attempts(attempts),
    };
    let unix = args.listen_unix.as_deref().map(|path| {
        let listener = unix_listener(&sockets, path).unwrap_or_else(|e| refuse(e));
        HttpServer::from_unix_listener(listener, router.clone())
    });
    let http = HttpServer::from_listener(listener, router);
    // TLS certificates are re-read on SIGHUP, unless SIGHUP is the in-place upgrade.
    let http = args
        .tls
        .apply(http, !sockets.upgrades())
        .unwrap_or_else(|e| refuse(e));
    let builder = sockets.register(builder);

    // The worker and the server use Redis when the jobs live there: they stop before it.
    let mut jobs_registration = Registration::new("jobs", worker)
        .depends_on("migrations")
        .stop_timeout(Duration::from_secs(8));
    let mut http_registration = Registration::new("http", http)
        .depends_on("migrations")
        .stop_timeout(Duration::from_secs(8));
    let mut builder = builder
        .register(
            Registration::new("db", db)
                .start_timeout(args.start_timeout)
                .stop_timeout(Duration::from_secs(5)),
        )
        .register(
            Registration::new("migrations", migrations)
                .depends_on("db")
                .stop_timeout(Duration::from_secs(1)),
        );
    if let Some(redis) = redis {
        builder = builder.register(
            Registration::new("redis", redis)
                .start_timeout(args.start_timeout)
                .stop_timeout(Duration::from_secs(2)),
        );
        jobs_registration = jobs_registration.depends_on("redis");
        http_registration = http_registration.depends_on("redis");
    }
    // A consumer stops before the pool it records in; the server before the publisher it
    // publishes with.
    let consumers = [
        amqp.map(|(p, c)| {
            (
                "amqp",
                Registration::new("amqp", p),
                Registration::new("amqp-consumer", c),
            )
        }),
        nats.map(|(p, c)| {
            (
                "nats",
                Registration::new("nats", p),
                Registration::new("nats-consumer", c),
            )
        }),
    ];
    for (publisher_name, publisher, consumer) in consumers.into_iter().flatten() {
        builder = builder
            .register(
                publisher
                    .start_timeout(args.start_timeout)
                    .stop_timeout(Duration::from_secs(2)),
            )
            .register(
                consumer
                    .depends_on("migrations")
                    .start_timeout(args.start_timeout)
                    .stop_timeout(Duration::from_secs(8)),
            );
        http_registration = http_registration.depends_on(publisher_name);
    }
    if let Some(unix) = unix {
        builder = builder.register(
            Registration::new("http-unix", unix)
                .depends_on("migrations")
                .stop_timeout(Duration::from_secs(8)),
        );
    }
    let lifecycle = builder
        .register(jobs_registration)
        .register(http_registration)
        .build()
        .unwrap_or_else(|e| refuse(format_args!("invalid configuration: {e}")));
    if let Some(grace) = args.grace_period {
        if lifecycle.shutdown_bound() > grace {
            refuse(format_args!(
                "the shutdown may take {:?} (drain delay {:?} + stops along {}), more than the grace period of {grace:?}",
                lifecycle.shutdown_bound(),
                args.drain_delay,
                lifecycle.critical_path().join(" -> "),
            ));
        }
    }
    tracing::info!(
        start_order = ?lifecycle.start_order(),
        shutdown_bound = ?lifecycle.shutdown_bound(),
        critical_path = ?lifecycle.critical_path(),
        listen = %args.listen,
        "starting"
    );

    // Returned from `main`, the report prints as a table on stderr; the file, if asked for,
    // is written at every exit, forced ones included.
    lifecycle.run().await
}
