//! `SqlJobQueue`: a job queue in a SQL table, with leases, for workers that finish or hand back.

use std::time::Duration;

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
/// same way by the workers, which look for expired leases periodically (and at their start), or
/// by [`reclaim_expired`](Self::reclaim_expired). So a job is never lost, and runs twice only if
/// it was interrupted.
///
/// Leases are measured on the database's clock (`now()`), never on a worker's, so workers whose
/// clocks disagree cannot take each other's jobs early. (SQLite's clock is the host's: the
/// processes sharing a SQLite file share that clock.)
///
/// Every claim is a *delivery*, counted in [`Job::deliveries`]. A job whose lease expires once
/// it has been delivered [`max_deliveries`](Self::max_deliveries) times (a job that kills or
/// hangs its worker every time) is not queued again but *failed*, with the reason as its
/// error: a dead letter, instead of a loop for ever.
///
/// Cloning is cheap: clones share the pool.
#[derive(Debug, Clone)]
pub struct SqlJobQueue {
    pool: AnyPool,
    queue: String,
    dialect: &'static Dialect,
    max_deliveries: i64,
}

/// The statements that differ between PostgreSQL and SQLite.
#[derive(Debug)]
struct Dialect {
    create: &'static str,
    add_deliveries: &'static str,
    has_deliveries: Option<&'static str>,
    claim: &'static str,
    renew: &'static str,
    reclaim: &'static str,
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
            dialect: if postgres { &POSTGRES } else { &SQLITE },
            max_deliveries: 10,
        }
    }

    /// How many deliveries a job gets before a lease of it that expires fails it for good
    /// instead of queueing it again (default 10). Hand-backs at a shutdown count as deliveries
    /// too, but only an expired lease fails a job: one that is handed back many times still
    /// runs.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use lifecycle_db::SqlJobQueue;
    ///
    /// # fn wire(pool: sqlx::AnyPool) {
    /// let queue = SqlJobQueue::new(pool, "emails").max_deliveries(5);
    /// # drop(queue);
    /// # }
    /// ```
    #[must_use]
    pub fn max_deliveries(mut self, deliveries: i64) -> Self {
        self.max_deliveries = deliveries;
        self
    }

    /// Creates the table and its index if they do not exist.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn create_table(&self) -> Result<(), sqlx::Error> {
        sqlx::query(self.dialect.create).execute(&self.pool).await?;
        // Tables made before deliveries were counted get the column.
        let missing = match self.dialect.has_deliveries {
            Some(check) => {
                sqlx::query_scalar::<_, i64>(check)
                    .fetch_one(&self.pool)
                    .await?
                    == 0
            }
            None => true,
        };
        if missing {
            sqlx::query(self.dialect.add_deliveries)
                .execute(&self.pool)
                .await?;
        }
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
        let row = sqlx::query(self.dialect.claim)
            .bind(worker)
            .bind(millis(lease))
            .bind(&self.queue)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(Job {
                id: row.try_get(0)?,
                payload: row.try_get(1)?,
                attempts: row.try_get(2)?,
                deliveries: row.try_get(3)?,
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
        let done = sqlx::query(self.dialect.renew)
            .bind(millis(lease))
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
    /// interrupted attempt, or fails them, with the reason, once they have had
    /// [`max_deliveries`](Self::max_deliveries); returns how many.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn reclaim_expired(&self) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(self.dialect.reclaim)
            .bind(self.max_deliveries)
            .bind(&self.queue)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Why job `id` last failed, as recorded: its handler's error, or that its lease expired
    /// after its last delivery; `None` if it never failed or does not exist.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn error(&self, id: i64) -> Result<Option<String>, sqlx::Error> {
        let error: Option<Option<String>> =
            sqlx::query_scalar("SELECT error FROM lifecycle_jobs WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(error.flatten())
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

// The database's clock in milliseconds since the epoch, in each dialect.
macro_rules! now_postgres {
    () => {
        "(EXTRACT(EPOCH FROM now()) * 1000)::BIGINT"
    };
}
macro_rules! now_sqlite {
    () => {
        "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
    };
}

// Placeholders appear in numeric order: SQLite numbers `$N` parameters by first appearance.
macro_rules! claim {
    ($now:expr, $lock:expr) => {
        concat!(
            "UPDATE lifecycle_jobs
             SET state = 'running', worker = $1, lease_until = ",
            $now,
            " + $2,
                 attempts = attempts + 1, deliveries = deliveries + 1
             WHERE id = (SELECT id FROM lifecycle_jobs WHERE queue = $3 AND state = 'queued'
                         ORDER BY id LIMIT 1",
            $lock,
            ")
             RETURNING id, payload, attempts, deliveries"
        )
    };
}
macro_rules! renew {
    ($now:expr) => {
        concat!(
            "UPDATE lifecycle_jobs SET lease_until = ",
            $now,
            " + $1 WHERE id = $2 AND worker = $3 AND state = 'running'"
        )
    };
}
macro_rules! reclaim {
    ($now:expr) => {
        concat!(
            "UPDATE lifecycle_jobs
             SET state = CASE WHEN deliveries >= $1 THEN 'failed' ELSE 'queued' END,
                 error = CASE WHEN deliveries >= $1
                     THEN 'its lease expired after its delivery ' || deliveries
                          || ' of ' || $1 || ': its worker died or hung every time'
                     ELSE error END,
                 worker = NULL, lease_until = NULL, attempts = attempts - 1
             WHERE queue = $2 AND state = 'running' AND lease_until < ",
            $now
        )
    };
}

static POSTGRES: Dialect = Dialect {
    create: "CREATE TABLE IF NOT EXISTS lifecycle_jobs (
        id BIGSERIAL PRIMARY KEY, queue TEXT NOT NULL, payload TEXT NOT NULL, state TEXT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0, worker TEXT, lease_until BIGINT, error TEXT,
        deliveries BIGINT NOT NULL DEFAULT 0)",
    add_deliveries:
        "ALTER TABLE lifecycle_jobs ADD COLUMN IF NOT EXISTS deliveries BIGINT NOT NULL DEFAULT 0",
    has_deliveries: None,
    // Concurrent claims skip the rows others are taking instead of waiting for them.
    claim: claim!(now_postgres!(), " FOR UPDATE SKIP LOCKED"),
    renew: renew!(now_postgres!()),
    reclaim: reclaim!(now_postgres!()),
};

static SQLITE: Dialect = Dialect {
    create: "CREATE TABLE IF NOT EXISTS lifecycle_jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, payload TEXT NOT NULL,
        state TEXT NOT NULL, attempts BIGINT NOT NULL DEFAULT 0, worker TEXT, lease_until BIGINT,
        error TEXT, deliveries BIGINT NOT NULL DEFAULT 0)",
    add_deliveries: "ALTER TABLE lifecycle_jobs ADD COLUMN deliveries BIGINT NOT NULL DEFAULT 0",
    has_deliveries: Some(
        "SELECT COUNT(*) FROM pragma_table_info('lifecycle_jobs') WHERE name = 'deliveries'",
    ),
    // SQLite runs one writer at a time, so the same statement without row locks is atomic.
    claim: claim!(now_sqlite!(), ""),
    renew: renew!(now_sqlite!()),
    reclaim: reclaim!(now_sqlite!()),
};

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
