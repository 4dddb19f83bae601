//! The service's schema, created at start-up before anything that uses it starts.

use lifecycle_core::{async_trait, BoxError, Component, Context};
use lifecycle_db::{JobQueue, SqlJobQueue};
use sqlx::AnyPool;

use crate::events::{EventStore, Topology};

/// Creates the tables the service needs, and the queue or stream its events go through. A
/// component of its own so that the workers, the consumers and the HTTP server, which depend on
/// it, start only once the schema is there.
#[derive(Debug)]
pub(crate) struct Migrations {
    pub(crate) pool: AnyPool,
    /// The SQL job queue's table is created even when jobs live in Redis: it costs nothing.
    pub(crate) jobs: SqlJobQueue,
    pub(crate) events: Topology,
}

#[async_trait]
impl Component for Migrations {
    async fn start(&self, _ctx: &Context) -> Result<(), BoxError> {
        self.jobs.prepare("migrations").await?;
        // One row per job run, as the work a job does: it shows runs that did not finish.
        sqlx::query("CREATE TABLE IF NOT EXISTS job_runs (job_id BIGINT NOT NULL, finished BIGINT NOT NULL)")
            .execute(&self.pool)
            .await?;
        sqlx::query(EventStore::CREATE_TABLE)
            .execute(&self.pool)
            .await?;
        self.events.declare().await
    }
}
