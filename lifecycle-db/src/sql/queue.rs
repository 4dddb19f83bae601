//! `SqlJobQueue`: a job queue in a SQL table, with leases, for workers that finish or hand back.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lifecycle_core::{async_trait, BoxError};
use sqlx::{AnyPool, Row};

use crate::jobs::{Job, JobQueue, JobState};

/// A job queue kept in the `lifecycle_jobs` table of a PostgreSQL or SQLite database, for
/// [`JobWorker`](crate::JobWorker)s.
///
/// A worker *claims* a job atomically (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite: one
/// `UPDATE ... RETURNING`, SQLite serialising writers) and holds a *lease* on it, which it renews
/// while it works. A job is then completed, failed (queued again until it has failed
/// `max_attempts` times), or *handed back*: queued again without counting the attempt, as when
/// a shutdown cuts it off. A job whose lease expires (its worker was killed) is reclaimed the
/// same way by the next worker that starts, or by [`reclaim_expired`](Self::reclaim_expired).
/// So a job is never lost, and runs twice only if it was interrupted.
///
/// Cloning is cheap: clones share the pool.
#[derive(Debug, Clone)]
pub struct SqlJobQueue {
    pool: AnyPool,
    queue: String,
    postgres: bool,
}

impl SqlJobQueue {
    /// The queue named `queue` in the database of `pool`, a PostgreSQL or SQLite pool of
    /// sqlx's `Any` driver.
    pub fn new(pool: AnyPool, queue: impl Into<String>) -> Self {
        let postgres = pool
            .connect_options()
            .database_url
            .scheme()
            .starts_with("postgres");
        SqlJobQueue {
            pool,
            queue: queue.into(),
            postgres,
        }
    }

    /// Creates the table and its index if they do not exist.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn create_table(&self) -> Result<(), sqlx::Error> {
        let create = if self.postgres {
            CREATE_POSTGRES
        } else {
            CREATE_SQLITE
        };
        sqlx::query(create).execute(&self.pool).await?;
        sqlx::query(
            "CREATE INDEX IF NOT EXISTS lifecycle_jobs_claim ON lifecycle_jobs (queue, state, id)",
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Adds a job; returns its id.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn enqueue(&self, payload: &str) -> Result<i64, sqlx::Error> {
        sqlx::query("INSERT INTO lifecycle_jobs (queue, payload, state, attempts) VALUES ($1, $2, 'queued', 0) RETURNING id")
            .bind(&self.queue)
            .bind(payload)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)
    }

    /// Takes the oldest queued job for `worker`, leased for `lease`; `None` when the queue is
    /// empty.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn claim(&self, worker: &str, lease: Duration) -> Result<Option<Job>, sqlx::Error> {
        let claim = if self.postgres {
            CLAIM_POSTGRES
        } else {
            CLAIM_SQLITE
        };
        let row = sqlx::query(claim)
            .bind(worker)
            .bind(now_ms() + millis(lease))
            .bind(&self.queue)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(Job {
                id: row.try_get(0)?,
                payload: row.try_get(1)?,
                attempts: row.try_get(2)?,
            })
        })
        .transpose()
    }

    /// Extends `worker`'s lease on job `id` to `lease` from now; returns whether it still holds
    /// the job.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn renew(&self, id: i64, worker: &str, lease: Duration) -> Result<bool, sqlx::Error> {
        let done = sqlx::query("UPDATE lifecycle_jobs SET lease_until = $1 WHERE id = $2 AND worker = $3 AND state = 'running'")
            .bind(now_ms() + millis(lease))
            .bind(id)
            .bind(worker)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks job `id` done, if `worker` still holds it; returns whether it did (`false`: the
    /// lease expired and the job was taken back, and nothing was changed).
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn complete(&self, id: i64, worker: &str) -> Result<bool, sqlx::Error> {
        let done = sqlx::query("UPDATE lifecycle_jobs SET state = 'done', worker = NULL, lease_until = NULL WHERE id = $1 AND worker = $2 AND state = 'running'")
            .bind(id)
            .bind(worker)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a failure of job `id`, if `worker` still holds it: queued again, or failed for
    /// good once it has been tried `max_attempts` times. Returns whether `worker` held it.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn fail(
        &self,
        id: i64,
        worker: &str,
        error: &str,
        max_attempts: i64,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE lifecycle_jobs SET state = CASE WHEN attempts >= $1 THEN 'failed' ELSE 'queued' END,
                worker = NULL, lease_until = NULL, error = $2
             WHERE id = $3 AND worker = $4 AND state = 'running'",
        )
        .bind(max_attempts)
        .bind(error)
        .bind(id)
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Hands job `id` back to the queue without counting the attempt, if `worker` still holds
    /// it: a shutdown interrupted it, it did not fail. Returns whether `worker` held it.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn hand_back(&self, id: i64, worker: &str) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE lifecycle_jobs SET state = 'queued', worker = NULL, lease_until = NULL, attempts = attempts - 1
             WHERE id = $1 AND worker = $2 AND state = 'running'",
        )
        .bind(id)
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Queues again the jobs whose lease has expired (their worker died), without counting the
    /// interrupted attempt; returns how many.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn reclaim_expired(&self) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE lifecycle_jobs SET state = 'queued', worker = NULL, lease_until = NULL, attempts = attempts - 1
             WHERE queue = $1 AND state = 'running' AND lease_until < $2",
        )
        .bind(&self.queue)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Where job `id` is; `None` if there is no such job.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn state(&self, id: i64) -> Result<Option<JobState>, sqlx::Error> {
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM lifecycle_jobs WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(state.as_deref().map(JobState::parse))
    }

    /// How many jobs of this queue are in each state: (queued, running, done, failed).
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn counts(&self) -> Result<(i64, i64, i64, i64), sqlx::Error> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) FROM lifecycle_jobs WHERE queue = $1 GROUP BY state",
        )
        .bind(&self.queue)
        .fetch_all(&self.pool)
        .await?;
        let mut counts = (0, 0, 0, 0);
        for row in rows {
            let (state, n): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
            match state.as_str() {
                "queued" => counts.0 = n,
                "running" => counts.1 = n,
                "done" => counts.2 = n,
                _ => counts.3 += n,
            }
        }
        Ok(counts)
    }
}

const CREATE_POSTGRES: &str = "CREATE TABLE IF NOT EXISTS lifecycle_jobs (
    id BIGSERIAL PRIMARY KEY, queue TEXT NOT NULL, payload TEXT NOT NULL, state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0, worker TEXT, lease_until BIGINT, error TEXT)";

const CREATE_SQLITE: &str = "CREATE TABLE IF NOT EXISTS lifecycle_jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, payload TEXT NOT NULL,
    state TEXT NOT NULL, attempts BIGINT NOT NULL DEFAULT 0, worker TEXT, lease_until BIGINT,
    error TEXT)";

// Placeholders appear in numeric order: SQLite numbers `$N` parameters by first appearance.
const CLAIM_POSTGRES: &str = "UPDATE lifecycle_jobs
    SET state = 'running', worker = $1, lease_until = $2, attempts = attempts + 1
    WHERE id = (SELECT id FROM lifecycle_jobs WHERE queue = $3 AND state = 'queued'
                ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING id, payload, attempts";

// SQLite runs one writer at a time, so the same statement without row locks is atomic.
const CLAIM_SQLITE: &str = "UPDATE lifecycle_jobs
    SET state = 'running', worker = $1, lease_until = $2, attempts = attempts + 1
    WHERE id = (SELECT id FROM lifecycle_jobs WHERE queue = $3 AND state = 'queued'
                ORDER BY id LIMIT 1)
    RETURNING id, payload, attempts";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait]
impl JobQueue for SqlJobQueue {
    async fn prepare(&self, _worker: &str) -> Result<(), BoxError> {
        Ok(self.create_table().await?)
    }

    async fn claim(&self, worker: &str, lease: Duration) -> Result<Option<Job>, BoxError> {
        Ok(SqlJobQueue::claim(self, worker, lease).await?)
    }

    async fn renew(&self, id: i64, worker: &str, lease: Duration) -> Result<bool, BoxError> {
        Ok(SqlJobQueue::renew(self, id, worker, lease).await?)
    }

    async fn complete(&self, id: i64, worker: &str) -> Result<bool, BoxError> {
        Ok(SqlJobQueue::complete(self, id, worker).await?)
    }

    async fn fail(
        &self,
        id: i64,
        worker: &str,
        error: &str,
        max_attempts: i64,
    ) -> Result<bool, BoxError> {
        Ok(SqlJobQueue::fail(self, id, worker, error, max_attempts).await?)
    }

    async fn hand_back(&self, id: i64, worker: &str) -> Result<bool, BoxError> {
        Ok(SqlJobQueue::hand_back(self, id, worker).await?)
    }

    async fn reclaim_expired(&self) -> Result<u64, BoxError> {
        Ok(SqlJobQueue::reclaim_expired(self).await?)
    }
}
