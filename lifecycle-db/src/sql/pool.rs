//! `SqlPool`: a sqlx pool as a component.

use std::time::Duration;

use lifecycle_core::{async_trait, retry_until, BoxError, Component, Context, Health, Redacted};
use sqlx::pool::PoolOptions;
use sqlx::{ConnectOptions, Connection, Database, Pool};
use tokio::time::Instant;

use crate::error::DbError;
use crate::sql::metrics::{PoolMetrics, SAMPLE_EVERY};
use crate::sql::sqlite_sidecars;
use crate::unused_secrets::without_unused_secrets;
use crate::GIVE_UP_RESERVE;

/// How long the health ping may take.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// A sqlx connection pool as a lifecycle component, for any database sqlx supports (features
/// `postgres`, `sqlite`, `mysql`).
///
/// The pool exists as soon as the component does, so it can be cloned into router state while
/// `main` is being wired; no connection is made until the start.
///
/// - **Start** connects, retrying with backoff until shortly before the start timeout, and
///   fails with an error that names the server and the last connection error (not a bare pool
///   timeout).
/// - **Health** acquires a connection and pings it.
/// - **Stop** runs after every component that depends on the pool has stopped, so their
///   transactions have committed. Connections still in use at that moment belong to something
///   that uses the pool without depending on it (a missing `depends_on`): the stop logs how
///   many, and the likely cause, since that user's queries fail with `PoolClosed` from then on.
///   It closes the pool: waiting and later `acquire` calls fail at once with `PoolClosed`, idle
///   connections close, and it waits for checked-out ones to come back and close (for SQLite,
///   it then makes sure the `-wal` and `-shm` files are gone). If some never do (a leak, a
///   stuck query, a dead server) it gives up shortly before the stop timeout with
///   [`DbError::CloseTimedOut`], saying how many, and the shutdown goes on.
///
/// # Examples
///
/// ```
/// use lifecycle_core::{Lifecycle, Registration};
/// use lifecycle_db::SqlPool;
/// use sqlx::Sqlite;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let db = SqlPool::<Sqlite>::new("sqlite::memory:")?;
/// let pool = db.pool().clone(); // for the router's state, before anything runs
/// let lifecycle = Lifecycle::builder().register(Registration::new("db", db)).build()?;
/// # drop((pool, lifecycle));
/// # Ok(())
/// # }
/// ```
pub struct SqlPool<DB: Database> {
    pool: Pool<DB>,
    connect: <DB::Connection as Connection>::Options,
    target: Redacted,
}

impl<DB: Database> SqlPool<DB> {
    /// A pool for `url` with sqlx's default pool options.
    ///
    /// # Errors
    ///
    /// [`DbError::InvalidUrl`] when the URL does not parse for this database.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as sqlx's lazy pools need one.
    pub fn new(url: &str) -> Result<Self, DbError> {
        Self::with_options(PoolOptions::new(), url)
    }

    /// A pool for `url` with these pool options (size, acquire timeout, ...).
    ///
    /// # Errors
    ///
    /// [`DbError::InvalidUrl`] when the URL does not parse for this database.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as sqlx's lazy pools need one.
    pub fn with_options(options: PoolOptions<DB>, url: &str) -> Result<Self, DbError> {
        let target = Redacted::new(url);
        let (url, dropped) = without_unused_secrets(url);
        for key in dropped {
            tracing::warn!(target_db = %target, parameter = %key,
                "ignoring a secret query parameter that this database's driver does not read");
        }
        let connect: <DB::Connection as Connection>::Options =
            url.parse().map_err(|e: sqlx::Error| DbError::InvalidUrl {
                target: target.to_string(),
                message: target.scrub(e),
            })?;
        Ok(SqlPool {
            pool: options.connect_lazy_with(connect.clone()),
            connect,
            target,
        })
    }

    /// The pool: clone it into whatever needs the database. Clones share the pool.
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// Connects once, retrying with backoff, to prove the server is there.
    async fn reach(&self, give_up: Instant) -> Result<(), DbError> {
        retry_until(&self.target, give_up, || async {
            let connection = self
                .connect
                .connect()
                .await
                .map_err(|e| self.target.scrub(e))?;
            // The probe is not kept: the pool opens its own connections.
            let _ = tokio::time::timeout_at(give_up, connection.close()).await;
            Ok::<_, String>(())
        })
        .await
        .map_err(|gave_up| DbError::unreachable(&self.target, gave_up))
    }
}

/// How long the stop waits for connections dropped just before it to come back. sqlx returns a
/// dropped connection from a task of its own, after a round trip to the server (a ping, or the
/// rollback of a transaction, or the rest of a query cut off by a dependent's timeout). On a
/// loaded machine that took more than 100 ms, and the stop blamed a missing `depends_on` for
/// connections that were only on their way back. A real leak costs the stop this second once.
const RETURN_GRACE: Duration = Duration::from_secs(1);

impl<DB: Database> SqlPool<DB> {
    /// The connections in use once those on their way back have come back, waiting at most
    /// `grace`.
    async fn in_use_after(&self, grace: Duration) -> u32 {
        let until = Instant::now() + grace;
        loop {
            let in_use = self.pool.size().saturating_sub(self.pool.num_idle() as u32);
            if in_use == 0 || Instant::now() >= until {
                return in_use;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[async_trait]
impl<DB: Database> Component for SqlPool<DB> {
    async fn start(&self, ctx: &Context) -> Result<(), BoxError> {
        self.reach(ctx.give_up_at(GIVE_UP_RESERVE, Duration::from_secs(30)))
            .await?;
        tracing::info!(component = ctx.name(), target_db = %self.target, "database reachable");
        let (metrics, pool, token) = (
            PoolMetrics::register(ctx.name()),
            self.pool.clone(),
            ctx.token().clone(),
        );
        ctx.spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            while token.run_until_cancelled(tick.tick()).await.is_some() {
                metrics.sample(&pool);
            }
        });
        Ok(())
    }

    async fn stop(&self, ctx: &Context) -> Result<(), BoxError> {
        // Everything registered as depending on the pool has stopped by now, so a connection
        // still in use belongs to something that uses the pool without depending on it (or
        // leaked one): its next queries fail with "pool closed". sqlx cannot count those
        // refusals, but the connections held at the stop turn show the mistake; the stop fails
        // with it, so the report and the exit code name it at the first drill.
        let give_up = ctx.give_up_at(GIVE_UP_RESERVE, Duration::from_secs(5));
        let close = async {
            // sqlx closes the idle connections only once every checked-out one is back, so one
            // leaked connection would keep them all open: close the idle ones first.
            for _ in 0..self.pool.num_idle() {
                match self.pool.try_acquire() {
                    Some(idle) => {
                        let _ = idle.close().await;
                    }
                    None => break,
                }
            }
            // Closed from here on: waiting and later acquires fail at once.
            let closing = self.pool.close();
            let in_use = self.in_use_after(RETURN_GRACE).await;
            let metrics = PoolMetrics::register(ctx.name());
            metrics.sample(&self.pool);
            metrics.stopped(in_use);
            if in_use > 0 {
                tracing::warn!(
                    component = ctx.name(),
                    target_db = %self.target,
                    in_use,
                    "connections still in use at the pool's stop turn: a component that uses \
                     the pool lacks depends_on(\"{}\")",
                    ctx.name()
                );
            }
            closing.await;
            sqlite_sidecars::remove_after_close(&self.connect).await;
            in_use
        };
        let Ok(in_use) = tokio::time::timeout_at(give_up, close).await else {
            let checked_out = self.pool.size().saturating_sub(self.pool.num_idle() as u32);
            return Err(DbError::CloseTimedOut {
                target: self.target.to_string(),
                checked_out,
            }
            .into());
        };
        if in_use > 0 {
            return Err(DbError::ClosedUnderUse {
                component: ctx.name().to_owned(),
                target: self.target.to_string(),
                in_use,
            }
            .into());
        }
        Ok(())
    }

    async fn health(&self) -> Health {
        let ping = async {
            let mut connection = self.pool.acquire().await?;
            connection.ping().await
        };
        match tokio::time::timeout(PING_TIMEOUT, ping).await {
            Ok(Ok(())) => Health::Healthy,
            Ok(Err(error)) => {
                Health::unhealthy(format!("{}: {}", self.target, self.target.scrub(error)))
            }
            Err(_) => Health::unhealthy(format!("{}: ping timed out", self.target)),
        }
    }
}

impl<DB: Database> std::fmt::Debug for SqlPool<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlPool")
            .field("target", &self.target)
            .field("size", &self.pool.size())
            .field("idle", &self.pool.num_idle())
            .field("closed", &self.pool.is_closed())
            .finish()
    }
}
