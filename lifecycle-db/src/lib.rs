//! Database and Redis components for [`lifecycle_core`] that close cleanly and never hang a
//! shutdown.
//!
//! - [`SqlPool`]: a sqlx pool (PostgreSQL, SQLite, MySQL/MariaDB through sqlx's features) that
//!   connects with retry at start, pings for health, and at its stop turn (after everything
//!   using it) closes within its stop timeout, reporting connections that never came back.
//! - [`JobWorker`] on a [`SqlJobQueue`] (PostgreSQL or SQLite): takes jobs with a lease and, at
//!   its stop turn, finishes the job in hand or hands it back; a job is never lost.

mod deadline;
mod error;
mod job_queue;
mod job_worker;
mod sql_pool;

pub use error::DbError;
pub use job_queue::{Job, JobState, SqlJobQueue};
pub use job_worker::JobWorker;
pub use sql_pool::SqlPool;
