//! The job queue the service uses: in the SQL database, or in Redis when `--redis-url` is given.

use lifecycle_core::BoxError;
use lifecycle_db::{JobState, RedisJobQueue, SqlJobQueue};

/// Where the service's jobs live.
#[derive(Debug, Clone)]
pub(crate) enum Jobs {
    Sql(SqlJobQueue),
    Redis(RedisJobQueue),
}

impl Jobs {
    /// Queues a job of `ms` milliseconds.
    pub(crate) async fn enqueue(&self, ms: u64) -> Result<i64, BoxError> {
        Ok(match self {
            Jobs::Sql(queue) => queue.enqueue(&ms).await?,
            Jobs::Redis(queue) => queue.enqueue(&ms).await?,
        })
    }

    pub(crate) async fn state(&self, id: i64) -> Result<Option<JobState>, BoxError> {
        Ok(match self {
            Jobs::Sql(queue) => queue.state(id).await?,
            Jobs::Redis(queue) => queue.state(id).await?,
        })
    }
}
