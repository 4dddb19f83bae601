//! Database and Redis components for [`lifecycle_core`] that close cleanly and never hang a
//! shutdown, and job queues whose workers finish or hand back the jobs in hand.
//!
//! - [`SqlPool`]: a sqlx pool (PostgreSQL, SQLite, MySQL/MariaDB through this crate's features
//!   `postgres`, `sqlite`, `mysql`) that connects with retry at start, pings for health, and at
//!   its stop turn (after everything using it) closes within its stop timeout, reporting
//!   connections that never came back.
//! - [`JobWorker`] on a [`SqlJobQueue`] (PostgreSQL, SQLite, MySQL/MariaDB, on the service's own
//!   pool) or a [`RedisJobQueue`] (a reliable queue): takes jobs with a lease and, at its stop
//!   turn, finishes the jobs in hand or hands them back.
//! - [`RedisClient`] and [`RedisSubscriber`] (feature `redis`): a shared Redis connection plus
//!   dedicated ones for blocking commands, and a pub/sub subscriber; at the stop every command
//!   resolves, and no connection, reconnect loop or task is left, even with Redis down.
//!
//! Every backend is a feature, none on by default (`postgres`, `sqlite`, `mysql`, `redis`):
//! enable the ones the service uses, and nothing else is built. sqlx comes only with a SQL
//! backend: a Redis-only service (`default-features = false, features = ["redis"]`) builds
//! no sqlx at all.
//!
//! # Examples
//!
//! A pool, the service's table of emails to send, and a worker that sends them:
//!
//! ```no_run
//! use lifecycle_core::{Lifecycle, Registration};
//! use lifecycle_db::{Job, JobWorker, SqlJobQueue, SqlPool};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Email {
//!     to: String,
//! }
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let db = SqlPool::<sqlx::Postgres>::new("postgres://app@db/app")?;
//! let queue = SqlJobQueue::new(db.pool().clone(), "emails");
//! let sender = JobWorker::new(queue.clone(), |job: Job<Email>| async move {
//!     // Idempotent: a job may run more than once (see below).
//!     println!("sending to {} (delivery {})", job.payload.to, job.deliveries);
//!     Ok(())
//! });
//! let report = Lifecycle::builder()
//!     .register(Registration::new("db", db))
//!     .register(Registration::new("emails", sender).depends_on("db"))
//!     .build()?
//!     .run()
//!     .await;
//! # drop(report);
//! # Ok(())
//! # }
//! ```
//!
//! # Delivery: at least once
//!
//! A job enqueued is run to an end (done, or failed after its attempts or its deliveries) **at
//! least once**, as long as the store keeps its data (a Redis without persistence that
//! restarts loses its queue). It may run **more than once**, in part or in full, when:
//!
//! - its worker's lease expired while the job was still running: the process was killed
//!   (SIGKILL, OOM, a node lost) or hung, or it could not renew the lease in time. Another
//!   worker takes the job up after the lease; the first worker's end, if it ever comes, is not
//!   recorded, and is logged and counted ([`JobStats::late`]).
//! - the process died between the handler's work and the acknowledgement (the `complete`
//!   that records it): the work is done, the queue does not know it.
//! - the stop timeout came first: the job is handed back, its handler cut off wherever it was,
//!   and the job starts again from the beginning elsewhere (uncounted as an attempt).
//! - its handler failed, panicked, or ran past the worker's
//!   [`max_run_time`](JobWorker::max_run_time) and was cut off: it is retried, up to the
//!   worker's `max_attempts`, and then failed for good (the dead letter) with the reason. A
//!   panic is caught: it fails the job, never the worker.
//!
//! So make handlers idempotent: use [`Job::id`](Job) as an idempotency key (a unique row
//! written in the same transaction as the work, or a key the downstream API deduplicates on),
//! and look at [`Job::deliveries`]: above 1, the job may have run before. A job whose lease
//! expires [`max_deliveries`](SqlJobQueue::max_deliveries) times (one that kills its worker
//! every time) is failed with that reason instead of looping for ever.
//!
//! What the tests show, on SQLite, PostgreSQL, MariaDB and Redis (`tests/it/jobs.rs`): across
//! repeated stops that cut jobs off and a kill, every job ends done, and jobs run more than once
//! only as often as runs were interrupted; a killed worker's job comes back after its lease; a
//! job in hand at the stop is finished or handed back; a late end changes nothing; a job that
//! panics, or runs past its maximum run time, is failed after its attempts while the worker
//! goes on with the others. On Redis,
//! racing sweeps and late acknowledgements never put a job in the queue twice
//! (`tests/it/redis_queue.rs`). Order is not guaranteed: jobs are taken oldest first, but a
//! reclaimed or retried job runs after newer ones.
//!
//! # Counts and metrics
//!
//! A [`JobWorker`] records what became of the jobs it took, once the queue has recorded it, in
//! two forms written from one place: through the `metrics` facade, labelled with its
//! component's name (the full list is in `lifecycle_core`'s "Metrics" table), and in its
//! [`JobStats`] ([`JobWorker::stats`]). An end the queue refused (the lease had been lost) is
//! counted late instead, one it could not be told of `settle_failed`. Every
//! work source of the workspace counts the same outcomes under the same names, so a dashboard
//! reads jobs and messages alike (`lifecycle-mq`'s consumers are the other, with their
//! `ConsumerStats`):
//!
//! | outcome | what happened | jobs: metric, [`JobStats`] field | messages (`lifecycle-mq`): metric, `ConsumerStats` field |
//! |---|---|---|---|
//! | taken | a job claimed (a message received), every delivery | `jobs_claimed_total`, `claimed` | `messages_received_total`, `received` |
//! | `done` | the handler succeeded: completed | `jobs_ended_total{outcome="done"}`, `done` | `messages_ended_total{outcome="done"}`, `done` |
//! | `failed` | a failed attempt (an error, a panic, a run past [`max_run_time`](JobWorker::max_run_time)), queued to be tried again | `…{outcome="failed"}`, `failed` | `…{outcome="failed"}`, `failed` |
//! | `dead` | the same at its last attempt, or a payload that does not decode: failed for good (the dead letter) | `…{outcome="dead"}`, `dead` | `…{outcome="dead"}`, `dead` |
//! | `handed_back` | claimed as the stop came and never run: handed back | `…{outcome="handed_back"}`, `handed_back` | `…{outcome="handed_back"}`, `handed_back` |
//! | `cut` | still running at the stop deadline: cut off and handed back | `…{outcome="cut"}`, `cut` | `…{outcome="cut"}`, `cut` |
//!
//! The taken counter keeps each crate's word (a job is claimed, a message received): the
//! metric names are what dashboards already query, so they stay, and the stats fields follow
//! them; the row above is the mapping. Messages have one outcome more, `rejected` (the handler
//! refused it for good), which a job handler cannot answer. Both count `panicked` (handler runs
//! that panicked, each also `failed` or `dead`) and `settle_failed` (ends the queue or broker
//! could not be told of) in their stats. `job_run_duration_seconds{outcome}` times each job by
//! the same outcomes; `jobs_reclaimed_total` and `jobs_late_total` (`JobStats::reclaimed`,
//! `JobStats::late`) count what a worker took back from dead workers and the ends that came
//! after the lease was lost.
//!
//! # Secrets
//!
//! Credentials never leave: wherever a component names its server (logs, errors, the report,
//! health reasons and so `/readyz?verbose`), the URL is shown without its user information and
//! with secret query parameters (`password`, `sslpassword`, `pass`, ...) masked as `***`, and a
//! driver's message that echoes a secret has it masked too: the rules of
//! [`lifecycle_core::Redacted`], which every crate of the workspace names its servers through.

// Docs built without a backend's feature name its types without linking them.
#![cfg_attr(
    not(all(
        feature = "redis",
        any(feature = "postgres", feature = "sqlite", feature = "mysql")
    )),
    allow(rustdoc::broken_intra_doc_links)
)]

mod error;
mod jobs;
#[cfg(feature = "redis")]
mod redis;
// sqlx is built only for a SQL backend: any of the three features turns the SQL module on.
#[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
mod sql;
#[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
mod unused_secrets;

pub use error::DbError;
pub use jobs::{Job, JobQueue, JobState, JobStats, JobWorker};
#[cfg(feature = "redis")]
pub use redis::{RedisClient, RedisConnection, RedisJobQueue, RedisSubscriber};
#[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
pub use sql::{SqlJobQueue, SqlPool, SqlQueuePool};

/// How much of a start's or stop's time a component keeps back from what it waits for, to
/// report its own error or hand its work back before the lifecycle cuts it off: a quarter of
/// the time left, at most this ([`lifecycle_core::Context::give_up_at`]).
const GIVE_UP_RESERVE: std::time::Duration = std::time::Duration::from_millis(250);
