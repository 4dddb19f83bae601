//! `SqlJobQueue`: a job queue in a SQL table, with leases, for workers that finish or hand back.

use std::time::Duration;

use lifecycle_core::{async_trait, BoxError};
use sqlx::{AnyPool, Row};

use super::dialect::{Dialect, Kind, MYSQL_CLAIM};
use crate::jobs::{Job, JobQueue, JobState};

/// A job queue kept in the `lifecycle_jobs` table of a PostgreSQL, SQLite or MySQL/MariaDB
/// database, for [`JobWorker`](crate::JobWorker)s.
///
/// It runs on the pool the service already has: sqlx's typed pools (`PgPool`, `SqlitePool`,
/// `MySqlPool`, with this crate's features `postgres`, `sqlite`, `mysql`) or an `AnyPool`, so a
/// service that uses `query!` needs no second pool. Each database gets statements in its own
/// SQL.
///
/// A worker *claims* a job atomically (PostgreSQL: `FOR UPDATE SKIP LOCKED`; MySQL 8 and
/// MariaDB 10.6+: `SELECT ... FOR UPDATE SKIP LOCKED` and the update in one transaction;
/// SQLite: one `UPDATE ... RETURNING`, SQLite serialising writers) and holds a *lease* on it,
/// which it renews
/// while it works. A job is then completed, failed (queued again until it has failed
/// `max_attempts` times), or *handed back*: queued again without counting the attempt, as when
/// a shutdown cuts it off. A job whose lease expires (its worker was killed) is reclaimed the
/// same way by the workers, which look for expired leases periodically (and at their start), or
/// by [`JobQueue::reclaim_expired`]. So a job is never lost, and runs twice only if it was
/// interrupted.
///
/// Its own methods are the service's side: [`create_table`](Self::create_table),
/// [`enqueue`](Self::enqueue), and [`state`](Self::state), [`error`](Self::error) and
/// [`counts`](Self::counts) to look at jobs. The worker's side (claim, renew, complete, fail,
/// hand back, reclaim expired leases) is the [`JobQueue`] trait's only, as on every queue:
/// bring the trait into scope to call it by hand (a tool, a test).
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
    pool: Pools,
    queue: String,
    dialect: Option<&'static Dialect>,
    max_deliveries: u32,
}

/// A pool a [`SqlJobQueue`] can run on: sqlx's `AnyPool`, or its typed pools with this
/// crate's features (`PgPool` with `postgres`, `SqlitePool` with `sqlite`, `MySqlPool` with
/// `mysql`). Made with `From`, so [`SqlJobQueue::new`] takes any of them.
///
/// # Examples
///
/// ```no_run
/// use lifecycle_db::{SqlJobQueue, SqlPool};
///
/// # fn wire() -> Result<(), lifecycle_db::DbError> {
/// // The pool the service's `query!` calls use is the queue's too.
/// let db = SqlPool::<sqlx::Postgres>::new("postgres://app@db/app")?;
/// let queue = SqlJobQueue::new(db.pool().clone(), "emails");
/// # drop(queue);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SqlQueuePool(Pools);

#[derive(Debug, Clone)]
enum Pools {
    Any(AnyPool),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
    #[cfg(feature = "mysql")]
    MySql(sqlx::MySqlPool),
}

impl From<AnyPool> for SqlQueuePool {
    fn from(pool: AnyPool) -> Self {
        SqlQueuePool(Pools::Any(pool))
    }
}

#[cfg(feature = "postgres")]
impl From<sqlx::PgPool> for SqlQueuePool {
    fn from(pool: sqlx::PgPool) -> Self {
        SqlQueuePool(Pools::Postgres(pool))
    }
}

#[cfg(feature = "sqlite")]
impl From<sqlx::SqlitePool> for SqlQueuePool {
    fn from(pool: sqlx::SqlitePool) -> Self {
        SqlQueuePool(Pools::Sqlite(pool))
    }
}

#[cfg(feature = "mysql")]
impl From<sqlx::MySqlPool> for SqlQueuePool {
    fn from(pool: sqlx::MySqlPool) -> Self {
        SqlQueuePool(Pools::MySql(pool))
    }
}

/// Runs `$body` with `$pool` bound to the concrete pool, whichever it is: the same statements
/// and bindings, compiled for each database type.
macro_rules! on_pool {
    ($pools:expr, $pool:ident => $body:expr) => {
        match $pools {
            Pools::Any($pool) => $body,
            #[cfg(feature = "postgres")]
            Pools::Postgres($pool) => $body,
            #[cfg(feature = "sqlite")]
            Pools::Sqlite($pool) => $body,
            #[cfg(feature = "mysql")]
            Pools::MySql($pool) => $body,
        }
    };
}

impl SqlJobQueue {
    /// The queue named `queue` in the database of `pool`: a `PgPool`, `SqlitePool`,
    /// `MySqlPool` or `AnyPool`, the one the service already uses.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use lifecycle_db::SqlJobQueue;
    ///
    /// # async fn wire() -> Result<(), sqlx::Error> {
    /// let pool = sqlx::SqlitePool::connect("sqlite://jobs.db?mode=rwc").await?;
    /// let queue = SqlJobQueue::new(pool.clone(), "emails");
    /// queue.create_table().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(pool: impl Into<SqlQueuePool>, queue: impl Into<String>) -> Self {
        let SqlQueuePool(pool) = pool.into();
        let dialect = match &pool {
            Pools::Any(any) => Dialect::for_scheme(any.connect_options().database_url.scheme()),
            #[cfg(feature = "postgres")]
            Pools::Postgres(_) => Some(&super::dialect::POSTGRES),
            #[cfg(feature = "sqlite")]
            Pools::Sqlite(_) => Some(&super::dialect::SQLITE),
            #[cfg(feature = "mysql")]
            Pools::MySql(_) => Some(&super::dialect::MYSQL),
        };
        SqlJobQueue {
            pool,
            queue: queue.into(),
            dialect,
            max_deliveries: 10,
        }
    }

    /// How many deliveries a job gets before a lease of it that expires fails it for good
    /// instead of queueing it again (default 10). A job has had at least 1 delivery once claimed, so 0
    /// acts as 1. Hand-backs at a shutdown count as deliveries
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
    pub fn max_deliveries(mut self, deliveries: u32) -> Self {
        self.max_deliveries = deliveries;
        self
    }

    /// The statements for this database, or a configuration error for a database the queue
    /// does not speak (only an `AnyPool` with a driver other than sqlx's three can be one).
    fn dialect(&self) -> Result<&'static Dialect, sqlx::Error> {
        self.dialect.ok_or_else(|| {
            sqlx::Error::Configuration(
                "lifecycle-db's SqlJobQueue supports PostgreSQL, SQLite and MySQL/MariaDB only"
                    .into(),
            )
        })
    }

    /// Creates the table and its index if they do not exist (and adds the columns of newer
    /// versions to an older table). Safe to call from several replicas at once: on PostgreSQL
    /// the creation holds an advisory lock of its own for its transaction.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn create_table(&self) -> Result<(), sqlx::Error> {
        let dialect = self.dialect()?;
        // One transaction, under the dialect's lock where it has one: replicas starting
        // together on a new database all create the table at once.
        on_pool!(&self.pool, pool => {
            let mut tx = pool.begin().await?;
            if let Some(lock) = dialect.create_lock {
                sqlx::query(lock).execute(&mut *tx).await?;
            }
            sqlx::query(dialect.create).execute(&mut *tx).await?;
            let has: i64 = sqlx::query_scalar(dialect.has_deliveries)
                .fetch_one(&mut *tx)
                .await?;
            if has == 0 {
                sqlx::query(dialect.add_deliveries).execute(&mut *tx).await?;
            }
            if let Some(index) = dialect.create_index {
                sqlx::query(index).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Adds a job whose payload is `payload`, stored as JSON, for a worker whose handler takes
    /// a `Job<T>`; returns its id.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn wire(queue: lifecycle_db::SqlJobQueue) -> Result<(), sqlx::Error> {
    /// #[derive(serde::Serialize)]
    /// struct Email<'a> {
    ///     to: &'a str,
    /// }
    ///
    /// let id = queue.enqueue(&Email { to: "ada@example.com" }).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// A database error, or [`sqlx::Error::Encode`] when the payload does not serialize.
    pub async fn enqueue<T: serde::Serialize + ?Sized>(
        &self,
        payload: &T,
    ) -> Result<i64, sqlx::Error> {
        let payload = serde_json::to_string(payload).map_err(|e| sqlx::Error::Encode(e.into()))?;
        let payload = payload.as_str();
        let dialect = self.dialect()?;
        let insert = sqlx::query(dialect.enqueue).bind(&self.queue).bind(payload);
        match &self.pool {
            Pools::Any(pool) if dialect.kind == Kind::MySql => insert
                .execute(pool)
                .await?
                .last_insert_id()
                .ok_or_else(|| sqlx::Error::Protocol("no id for the new job".into())),
            Pools::Any(pool) => insert.fetch_one(pool).await?.try_get(0),
            #[cfg(feature = "postgres")]
            Pools::Postgres(pool) => {
                let insert = sqlx::query(dialect.enqueue).bind(&self.queue).bind(payload);
                insert.fetch_one(pool).await?.try_get(0)
            }
            #[cfg(feature = "sqlite")]
            Pools::Sqlite(pool) => {
                let insert = sqlx::query(dialect.enqueue).bind(&self.queue).bind(payload);
                insert.fetch_one(pool).await?.try_get(0)
            }
            #[cfg(feature = "mysql")]
            Pools::MySql(pool) => {
                let insert = sqlx::query(dialect.enqueue).bind(&self.queue).bind(payload);
                let id = insert.execute(pool).await?.last_insert_id();
                i64::try_from(id).map_err(|e| sqlx::Error::Decode(e.into()))
            }
        }
    }

    /// Why job `id` last failed, as recorded: its handler's error, or that its lease expired
    /// after its last delivery; `None` if it never failed or does not exist.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn error(&self, id: i64) -> Result<Option<String>, sqlx::Error> {
        let dialect = self.dialect()?;
        let error: Option<Option<String>> = on_pool!(&self.pool, pool =>
            sqlx::query_scalar(dialect.error).bind(id).fetch_optional(pool).await?);
        Ok(error.flatten())
    }

    /// Where job `id` is; `None` if there is no such job.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn state(&self, id: i64) -> Result<Option<JobState>, sqlx::Error> {
        let dialect = self.dialect()?;
        let state: Option<String> = on_pool!(&self.pool, pool =>
            sqlx::query_scalar(dialect.state).bind(id).fetch_optional(pool).await?);
        Ok(state.as_deref().map(JobState::parse))
    }

    /// How many jobs of this queue are in each state: (queued, running, done, failed).
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn counts(&self) -> Result<(i64, i64, i64, i64), sqlx::Error> {
        let dialect = self.dialect()?;
        let rows: Vec<(String, i64)> = on_pool!(&self.pool, pool => {
            let rows = sqlx::query(dialect.counts).bind(&self.queue).fetch_all(pool).await?;
            rows.iter()
                .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                .collect::<Result<_, sqlx::Error>>()?
        });
        let mut counts = (0, 0, 0, 0);
        for (state, n) in rows {
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

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait]
impl JobQueue for SqlJobQueue {
    async fn prepare(&self, _worker: &str) -> Result<(), BoxError> {
        Ok(self.create_table().await?)
    }

    async fn claim(&self, worker: &str, lease: Duration) -> Result<Option<Job>, BoxError> {
        let dialect = self.dialect()?;
        on_pool!(&self.pool, pool => {
            let row = if dialect.kind == Kind::MySql {
                // READ COMMITTED: InnoDB then locks only the row it takes, not the gaps around
                // it, which would hold up inserts and updates of other jobs (and other queues).
                let mut connection = pool.acquire().await?;
                sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
                    .execute(&mut *connection)
                    .await?;
                let mut tx = sqlx::Connection::begin(&mut *connection).await?;
                let id: Option<i64> = sqlx::query_scalar(MYSQL_CLAIM.select)
                    .bind(&self.queue)
                    .fetch_optional(&mut *tx)
                    .await?;
                let row = match id {
                    Some(id) => {
                        sqlx::query(MYSQL_CLAIM.take)
                            .bind(worker)
                            .bind(millis(lease))
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                        Some(sqlx::query(MYSQL_CLAIM.read).bind(id).fetch_one(&mut *tx).await?)
                    }
                    None => None,
                };
                tx.commit().await?;
                row
            } else {
                sqlx::query(dialect.claim)
                    .bind(worker)
                    .bind(millis(lease))
                    .bind(&self.queue)
                    .fetch_optional(pool)
                    .await?
            };
            row.map(|row| {
                Ok(Job {
                    id: row.try_get(0)?,
                    payload: row.try_get(1)?,
                    attempts: row.try_get(2)?,
                    deliveries: row.try_get(3)?,
                })
            })
            .transpose()
        })
    }

    async fn renew(&self, id: i64, worker: &str, lease: Duration) -> Result<bool, BoxError> {
        let dialect = self.dialect()?;
        let done = on_pool!(&self.pool, pool => sqlx::query(dialect.renew)
            .bind(millis(lease))
            .bind(id)
            .bind(worker)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(done == 1)
    }

    async fn complete(&self, id: i64, worker: &str) -> Result<bool, BoxError> {
        let dialect = self.dialect()?;
        let done = on_pool!(&self.pool, pool => sqlx::query(dialect.complete)
            .bind(id)
            .bind(worker)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(done == 1)
    }

    async fn fail(
        &self,
        id: i64,
        worker: &str,
        error: &str,
        max_attempts: u32,
    ) -> Result<bool, BoxError> {
        let dialect = self.dialect()?;
        let done = on_pool!(&self.pool, pool => sqlx::query(dialect.fail)
            .bind(i64::from(max_attempts))
            .bind(error)
            .bind(id)
            .bind(worker)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(done == 1)
    }

    async fn hand_back(&self, id: i64, worker: &str) -> Result<bool, BoxError> {
        let dialect = self.dialect()?;
        let done = on_pool!(&self.pool, pool => sqlx::query(dialect.hand_back)
            .bind(id)
            .bind(worker)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(done == 1)
    }

    async fn reclaim_expired(&self) -> Result<u64, BoxError> {
        let dialect = self.dialect()?;
        let max = i64::from(self.max_deliveries);
        Ok(on_pool!(&self.pool, pool => {
            let reclaim = sqlx::query(dialect.reclaim).bind(max).bind(max);
            // MySQL's statement names the maximum three times, with `?` each.
            let reclaim = if dialect.kind == Kind::MySql { reclaim.bind(max) } else { reclaim };
            reclaim.bind(&self.queue).execute(pool).await?.rows_affected()
        }))
    }
}
