//! The SQL backend: the sqlx pool component and the job queue in a SQL table.

mod dialect;
mod metrics;
mod pool;
mod queue;
mod sqlite_sidecars;

pub use pool::SqlPool;
pub use queue::{SqlJobQueue, SqlQueuePool};
