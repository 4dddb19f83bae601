//! Database and Redis components for [`lifecycle_core`] that close cleanly and never hang a
//! shutdown.
//!
//! - [`SqlPool`]: a sqlx pool (PostgreSQL, SQLite, MySQL/MariaDB through sqlx's features) that
//!   connects with retry at start, pings for health, and at its stop turn (after everything
//!   using it) closes within its stop timeout, reporting connections that never came back.
//! - [`JobWorker`] on a [`SqlJobQueue`] (PostgreSQL or SQLite) or a [`RedisJobQueue`] (a
//!   reliable queue): takes jobs with a lease and, at its stop turn, finishes the job in hand or
//!   hands it back; a job is never lost.
//! - [`RedisClient`] and [`RedisSubscriber`] (feature `redis`, on by default): a shared Redis
//!   connection plus dedicated ones for blocking commands, and a pub/sub subscriber; at the stop
//!   every command resolves, and no connection, reconnect loop or task is left, even with Redis
//!   down.
//!
//! Credentials never leave: wherever a component names its server (logs, errors, the report,
//! health reasons and so `/readyz?verbose`), the URL is shown without its user information and
//! with secret query parameters (`password`, `sslpassword`, `pass`, ...) masked as `***`, and a
//! driver's message that echoes a secret has it masked too.

mod deadline;
mod error;
mod jobs;
mod redact;
#[cfg(feature = "redis")]
mod redis;
mod sql;

pub use error::DbError;
pub use jobs::{Job, JobQueue, JobState, JobWorker};
#[cfg(feature = "redis")]
pub use redis::{RedisClient, RedisClientOptions, RedisConnection, RedisJobQueue, RedisSubscriber};
pub use sql::{SqlJobQueue, SqlPool, SqlQueuePool};
