//! `RedisJobQueue`: the reliable-queue pattern on Redis, for workers that finish or hand back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lifecycle_core::{async_trait, BoxError};
use redis::{AsyncCommands, Direction, RedisResult};

use super::{RedisClient, RedisConnection};
use crate::jobs::{Job, JobQueue, JobState};

/// The longest a claim waits on an empty queue (`BLMOVE`'s server-side timeout), which bounds
/// how long a worker's stop can wait for its claim to return.
const CLAIM_WAIT: Duration = Duration::from_millis(500);

/// A job queue on Redis with the reliable-queue pattern (redis.io, `LMOVE`), for
/// [`JobWorker`](crate::JobWorker)s (feature `redis`).
///
/// Job ids wait in a list; a worker takes one with `BLMOVE` into a processing list of its own,
/// on a dedicated connection so the blocking command never stalls the shared one, and removes
/// it from there when the job is done, failed or handed back. Each worker keeps a heartbeat key
/// alive for its lease; when a worker dies its heartbeat expires, and the next worker to start
/// (or one that is idle) moves its processing list back into the queue. Hand-backs and such
/// reclaims do not count as attempts.
///
/// Keys live under `lifecycle:{queue}:`: `queue` (ids waiting), `processing:{worker}`,
/// `heartbeat:{worker}`, `workers` (a set), `job:{id}` (a hash: payload, state, attempts,
/// error) and `next_id`.
///
/// # Examples
///
/// ```no_run
/// use lifecycle_core::{Lifecycle, Registration};
/// use lifecycle_db::{JobWorker, RedisClient, RedisJobQueue};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisClient::new("redis://127.0.0.1:6379/")?;
/// let queue = RedisJobQueue::new(redis.clone(), "emails");
/// let worker = JobWorker::new(queue, |job| async move {
///     println!("sending {}", job.payload);
///     Ok(())
/// });
/// let lifecycle = Lifecycle::builder()
///     .register(Registration::new("redis", redis))
///     .register(Registration::new("emails", worker).depends_on("redis"))
///     .build()?;
/// # drop(lifecycle);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisJobQueue {
    client: RedisClient,
    prefix: String,
    /// Each worker's dedicated connection for its blocking claims.
    blocking: Arc<Mutex<HashMap<String, RedisConnection>>>,
}

impl RedisJobQueue {
    /// The queue named `queue` on the Redis of `client`.
    pub fn new(client: RedisClient, queue: &str) -> Self {
        RedisJobQueue {
            client,
            prefix: format!("lifecycle:{queue}"),
            blocking: Arc::default(),
        }
    }

    fn key(&self, part: &str) -> String {
        format!("{}:{part}", self.prefix)
    }

    fn job_key(&self, id: i64) -> String {
        format!("{}:job:{id}", self.prefix)
    }

    /// Adds a job; returns its id.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn enqueue(&self, payload: &str) -> RedisResult<i64> {
        let mut redis = self.client.connection();
        let id: i64 = redis.incr(self.key("next_id"), 1).await?;
        redis::pipe()
            .atomic()
            .hset_multiple(
                self.job_key(id),
                &[("payload", payload), ("state", "queued"), ("attempts", "0")],
            )
            .ignore()
            .lpush(self.key("queue"), id)
            .ignore()
            .query_async::<()>(&mut redis)
            .await?;
        Ok(id)
    }

    /// Where job `id` is; `None` if there is no such job.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn state(&self, id: i64) -> RedisResult<Option<JobState>> {
        let state: Option<String> = self
            .client
            .connection()
            .hget(self.job_key(id), "state")
            .await?;
        Ok(state.as_deref().map(JobState::parse))
    }

    /// Moves job `id` from `worker`'s processing list back to the queue, uncounted.
    async fn requeue(&self, id: i64, worker: &str, from: &str) -> RedisResult<()> {
        redis::pipe()
            .atomic()
            .lrem(from, 1, id)
            .ignore()
            .rpush(self.key("queue"), id)
            .ignore()
            .hincr(self.job_key(id), "attempts", -1)
            .ignore()
            .hset(self.job_key(id), "state", "queued")
            .ignore()
            .query_async::<()>(&mut self.client.connection())
            .await?;
        tracing::trace!(job = id, worker, "job queued again");
        Ok(())
    }
}

#[async_trait]
impl JobQueue for RedisJobQueue {
    async fn prepare(&self, worker: &str) -> Result<(), BoxError> {
        let _: () = self
            .client
            .connection()
            .sadd(self.key("workers"), worker)
            .await?;
        Ok(())
    }

    async fn claim(&self, worker: &str, lease: Duration) -> Result<Option<Job>, BoxError> {
        let mut redis = self.client.connection();
        redis::pipe()
            .sadd(self.key("workers"), worker)
            .ignore()
            .pset_ex(
                self.key(&format!("heartbeat:{worker}")),
                1,
                lease.as_millis() as u64,
            )
            .ignore()
            .query_async::<()>(&mut redis)
            .await?;
        let taken = self
            .blocking
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(worker);
        let mut blocking = match taken {
            Some(connection) => connection,
            None => self.client.dedicated().await?,
        };
        let id: Option<i64> = blocking
            .blmove(
                self.key("queue"),
                self.key(&format!("processing:{worker}")),
                Direction::Right,
                Direction::Left,
                CLAIM_WAIT.as_secs_f64(),
            )
            .await?;
        self.blocking
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(worker.to_owned(), blocking);
        let Some(id) = id else {
            return Ok(None);
        };
        let (attempts, payload): (i64, String) = redis::pipe()
            .atomic()
            .hset(self.job_key(id), "state", "running")
            .ignore()
            .hincr(self.job_key(id), "attempts", 1)
            .hget(self.job_key(id), "payload")
            .query_async(&mut redis)
            .await?;
        Ok(Some(Job {
            id,
            payload,
            attempts,
        }))
    }

    async fn renew(&self, _id: i64, worker: &str, lease: Duration) -> Result<(), BoxError> {
        let key = self.key(&format!("heartbeat:{worker}"));
        let _: () = self
            .client
            .connection()
            .pset_ex(key, 1, lease.as_millis() as u64)
            .await?;
        Ok(())
    }

    async fn complete(&self, id: i64, worker: &str) -> Result<(), BoxError> {
        redis::pipe()
            .atomic()
            .lrem(self.key(&format!("processing:{worker}")), 1, id)
            .ignore()
            .hset(self.job_key(id), "state", "done")
            .ignore()
            .query_async::<()>(&mut self.client.connection())
            .await?;
        Ok(())
    }

    async fn fail(
        &self,
        id: i64,
        worker: &str,
        error: &str,
        max_attempts: i64,
    ) -> Result<(), BoxError> {
        let mut redis = self.client.connection();
        let processing = self.key(&format!("processing:{worker}"));
        let attempts: i64 = redis.hget(self.job_key(id), "attempts").await?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .lrem(&processing, 1, id)
            .ignore()
            .hset(self.job_key(id), "error", error)
            .ignore();
        if attempts >= max_attempts {
            pipe.hset(self.job_key(id), "state", "failed").ignore();
        } else {
            pipe.rpush(self.key("queue"), id)
                .ignore()
                .hset(self.job_key(id), "state", "queued")
                .ignore();
        }
        pipe.query_async::<()>(&mut redis).await?;
        Ok(())
    }

    async fn hand_back(&self, id: i64, worker: &str) -> Result<(), BoxError> {
        Ok(self
            .requeue(id, worker, &self.key(&format!("processing:{worker}")))
            .await?)
    }

    async fn reclaim_expired(&self) -> Result<u64, BoxError> {
        let mut redis = self.client.connection();
        let workers: Vec<String> = redis.smembers(self.key("workers")).await?;
        let mut reclaimed = 0;
        for worker in workers {
            let alive: bool = redis
                .exists(self.key(&format!("heartbeat:{worker}")))
                .await?;
            if alive {
                continue;
            }
            let processing = self.key(&format!("processing:{worker}"));
            let ids: Vec<i64> = redis.lrange(&processing, 0, -1).await?;
            for id in ids {
                self.requeue(id, &worker, &processing).await?;
                reclaimed += 1;
            }
            let _: () = redis.srem(self.key("workers"), &worker).await?;
        }
        Ok(reclaimed)
    }
}

impl std::fmt::Debug for RedisJobQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisJobQueue")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}
