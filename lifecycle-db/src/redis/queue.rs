//! `RedisJobQueue`: the reliable-queue pattern on Redis, for workers that finish or hand back.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use lifecycle_core::{async_trait, BoxError};
use redis::{AsyncCommands, Direction, RedisResult, Script};

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
/// reclaims do not count as attempts. Every claim counts as a delivery ([`Job::deliveries`]);
/// a dead worker's job that has had [`max_deliveries`](Self::max_deliveries) is failed, with
/// the reason, instead of queued again.
///
/// Every move of an id out of a processing list (complete, fail, hand back, sweep) is one Lua
/// script, atomic on the server and conditional on the id still being in that worker's list.
/// A claim is two steps (a blocking `BLMOVE` cannot run in a script): if the second fails after
/// `BLMOVE` moved the id (a connection reset, a script error), the id is put back at once, or
/// else by the worker's next claim, which queues again any id in its processing list that the
/// worker was not given.
/// So an id is never in the queue twice, two workers sweeping the same dead worker requeue each
/// of its jobs once, and a worker whose lease expired cannot complete, fail or hand back the job
/// it lost: the call returns `false` and changes nothing, while the job runs elsewhere.
///
/// Keys live under `lifecycle:{queue}:`: `queue` (ids waiting), `processing:{worker}`,
/// `heartbeat:{worker}`, `workers` (a set), `job:{id}` (a hash: payload, state, attempts,
/// worker, error) and `next_id`. The scripts name job hashes themselves, which a standalone
/// server (or a primary with replicas) allows and Redis Cluster does not.
///
/// # Examples
///
/// ```no_run
/// use lifecycle_core::{Lifecycle, Registration};
/// use lifecycle_db::{Job, JobWorker, RedisClient, RedisJobQueue};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisClient::new("redis://127.0.0.1:6379/")?;
/// let queue = RedisJobQueue::new(redis.clone(), "emails");
/// let worker = JobWorker::new(queue, |job: Job<String>| async move {
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
    /// The ids each worker of this process was given by a claim and has not ended yet: any
    /// other id in its processing list was left there by a claim that failed half-way.
    held: Arc<Mutex<HashMap<String, HashSet<i64>>>>,
    max_deliveries: u32,
}

impl RedisJobQueue {
    /// The queue named `queue` on the Redis of `client`.
    pub fn new(client: RedisClient, queue: &str) -> Self {
        RedisJobQueue {
            client,
            prefix: format!("lifecycle:{queue}"),
            blocking: Arc::default(),
            held: Arc::default(),
            max_deliveries: 10,
        }
    }

    /// How many deliveries a job gets before the sweep of a dead worker that held it fails it
    /// for good instead of queueing it again (default 10): a job that kills or hangs its worker
    /// every time ends as a dead letter, with the reason as its error, instead of looping. A job
    /// has had at least 1 delivery once claimed, so 0 acts as 1.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use lifecycle_db::{RedisClient, RedisJobQueue};
    ///
    /// # fn main() -> Result<(), lifecycle_db::DbError> {
    /// let redis = RedisClient::new("redis://127.0.0.1:6379/")?;
    /// let queue = RedisJobQueue::new(redis, "emails").max_deliveries(5);
    /// # drop(queue);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn max_deliveries(mut self, deliveries: u32) -> Self {
        self.max_deliveries = deliveries;
        self
    }

    /// Why job `id` last failed: its handler's error, or that it was delivered too many times;
    /// `None` if it never failed or does not exist.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn error(&self, id: i64) -> RedisResult<Option<String>> {
        self.client
            .connection()
            .hget(self.job_key(id), "error")
            .await
    }

    fn key(&self, part: &str) -> String {
        format!("{}:{part}", self.prefix)
    }

    fn job_key(&self, id: i64) -> String {
        format!("{}:job:{id}", self.prefix)
    }

    /// Adds a job whose payload is `payload`, stored as JSON, for a worker whose handler takes
    /// a `Job<T>`; returns its id.
    ///
    /// # Errors
    ///
    /// A Redis error, or a client error when the payload does not serialize.
    pub async fn enqueue<T: serde::Serialize + ?Sized>(&self, payload: &T) -> RedisResult<i64> {
        let payload = serde_json::to_string(payload).map_err(|e| {
            redis::RedisError::from((
                redis::ErrorKind::Client,
                "the job's payload does not serialize",
                e.to_string(),
            ))
        })?;
        let payload = payload.as_str();
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

    fn processing(&self, worker: &str) -> String {
        self.key(&format!("processing:{worker}"))
    }

    fn heartbeat(&self, worker: &str) -> String {
        self.key(&format!("heartbeat:{worker}"))
    }

    /// The ids `worker` holds, as far as this process knows.
    fn held(&self, worker: &str) -> Vec<i64> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.get(worker)
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Records that `worker` holds job `id` (`true`) or no longer does (`false`).
    fn hold(&self, worker: &str, id: i64, holds: bool) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if holds {
            held.entry(worker.to_owned()).or_default().insert(id);
        } else if let Some(ids) = held.get_mut(worker) {
            ids.remove(&id);
            if ids.is_empty() {
                held.remove(worker);
            }
        }
    }
}

// Every move of an id between the queue and a processing list is one script, which Redis runs
// atomically, and is conditional on the id being where the mover thinks it is: a worker moves
// an id out of its processing list only if `LREM` found it there. So an id is always in exactly
// one list (or none, once done or failed), however sweeps, late acknowledgements and hand-backs
// interleave. Job hashes are named from `ARGV` inside the scripts, which standalone Redis allows
// (Redis Cluster would not: the queue is for a standalone server or a primary with replicas).

/// After `BLMOVE` put the id in the worker's processing list: marks the job running, counts
/// the attempt and the delivery, and returns `{attempts, payload, deliveries}`; nil if a sweep
/// took the id back in between. Redis does not undo the writes of a script that fails half-way,
/// so the job is marked running last: a failed `TAKE` leaves it `queued`.
/// KEYS: processing, job. ARGV: id, worker.
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if not redis.call('LPOS', KEYS[1], ARGV[1]) then return false end
        local attempts = redis.call('HINCRBY', KEYS[2], 'attempts', 1)
        local deliveries = redis.call('HINCRBY', KEYS[2], 'deliveries', 1)
        redis.call('HSET', KEYS[2], 'state', 'running', 'worker', ARGV[2])
        return {attempts, redis.call('HGET', KEYS[2], 'payload'), deliveries}
        ",
    )
});

/// Before a claim: registers the worker, extends its heartbeat, and queues again, uncounted,
/// every id in its processing list that it does not hold (one a claim moved there with
/// `BLMOVE` and then failed to take, its `TAKE` or its reply lost, and failed to put back);
/// returns how many.
/// KEYS: workers, heartbeat, processing, queue. ARGV: worker, lease in ms, job key prefix,
/// then the ids the worker holds.
static PREPARE_CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        redis.call('SADD', KEYS[1], ARGV[1])
        redis.call('SET', KEYS[2], 1, 'PX', ARGV[2])
        local held = {}
        for i = 4, #ARGV do held[ARGV[i]] = true end
        local back = 0
        for _, id in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
            if not held[id] then
                local job = ARGV[3] .. id
                redis.call('LREM', KEYS[3], 1, id)
                if redis.call('HGET', job, 'state') == 'running' then
                    redis.call('HINCRBY', job, 'attempts', -1)
                end
                redis.call('HSET', job, 'state', 'queued')
                redis.call('HDEL', job, 'worker')
                redis.call('RPUSH', KEYS[4], id)
                back = back + 1
            end
        end
        return back
        ",
    )
});

/// Extends the worker's heartbeat; returns 1 if the job is still in its processing list.
/// KEYS: heartbeat, processing. ARGV: lease in ms, id.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        redis.call('SET', KEYS[1], 1, 'PX', ARGV[1])
        if redis.call('LPOS', KEYS[2], ARGV[2]) then return 1 end
        return 0
        ",
    )
});

/// Marks the job done if it is in the worker's processing list; returns 1 if so.
/// KEYS: processing, job. ARGV: id.
static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
        redis.call('HSET', KEYS[2], 'state', 'done')
        redis.call('HDEL', KEYS[2], 'worker')
        return 1
        ",
    )
});

/// Records a failure of the job if it is in the worker's processing list: queued again, or
/// failed for good once it has had `max` attempts; returns 1 if it was there.
/// KEYS: processing, job, queue. ARGV: id, error, max.
static FAIL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
        redis.call('HSET', KEYS[2], 'error', ARGV[2])
        redis.call('HDEL', KEYS[2], 'worker')
        if tonumber(redis.call('HGET', KEYS[2], 'attempts')) >= tonumber(ARGV[3]) then
            redis.call('HSET', KEYS[2], 'state', 'failed')
        else
            redis.call('HSET', KEYS[2], 'state', 'queued')
            redis.call('RPUSH', KEYS[3], ARGV[1])
        end
        return 1
        ",
    )
});

/// Queues the job again, uncounted, if it is in the worker's processing list; returns 1 if so.
/// An attempt is given back only if one was counted (the job is `running`: a worker that died
/// between `BLMOVE` and `TAKE` never counted one).
/// KEYS: processing, job, queue. ARGV: id.
static HAND_BACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
        if redis.call('HGET', KEYS[2], 'state') == 'running' then
            redis.call('HINCRBY', KEYS[2], 'attempts', -1)
        end
        redis.call('HSET', KEYS[2], 'state', 'queued')
        redis.call('HDEL', KEYS[2], 'worker')
        redis.call('RPUSH', KEYS[3], ARGV[1])
        return 1
        ",
    )
});

/// If the worker's heartbeat has expired: queues every job of its processing list again,
/// uncounted (or fails it, with the reason, once it has had `max` deliveries), deletes the list
/// and forgets the worker; returns how many jobs, or -1 if the worker is alive. Two sweepers
/// racing: the second finds the list gone.
/// KEYS: heartbeat, processing, queue, workers. ARGV: worker, job key prefix, max.
static SWEEP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
        local ids = redis.call('LRANGE', KEYS[2], 0, -1)
        for _, id in ipairs(ids) do
            local job = ARGV[2] .. id
            if redis.call('HGET', job, 'state') == 'running' then
                redis.call('HINCRBY', job, 'attempts', -1)
            end
            redis.call('HDEL', job, 'worker')
            local deliveries = tonumber(redis.call('HGET', job, 'deliveries') or '0')
            if deliveries >= tonumber(ARGV[3]) then
                redis.call('HSET', job, 'state', 'failed', 'error',
                    'its lease expired after its delivery ' .. deliveries .. ' of ' .. ARGV[3]
                    .. ': its worker died or hung every time')
            else
                redis.call('HSET', job, 'state', 'queued')
                redis.call('RPUSH', KEYS[3], id)
            end
        end
        redis.call('DEL', KEYS[2])
        redis.call('SREM', KEYS[4], ARGV[1])
        return #ids
        ",
    )
});

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
        let mut prepare = PREPARE_CLAIM.key(self.key("workers"));
        prepare
            .key(self.heartbeat(worker))
            .key(self.processing(worker))
            .key(self.key("queue"))
            .arg(worker)
            .arg(millis(lease))
            .arg(self.key("job:"))
            .arg(self.held(worker));
        let put_back: i64 = prepare.invoke_async(&mut redis).await?;
        if put_back > 0 {
            tracing::warn!(
                worker,
                put_back,
                "queued again ids an earlier claim left in this worker's processing list"
            );
        }
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
                self.processing(worker),
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
        // The id is in this worker's processing list now. If taking it fails (the script, the
        // connection, or only its reply), put it back at once; if that fails too, the next
        // claim does (`PREPARE_CLAIM`), since this worker does not hold it.
        let taken: RedisResult<Option<(i64, String, i64)>> = TAKE
            .key(self.processing(worker))
            .key(self.job_key(id))
            .arg(id)
            .arg(worker)
            .invoke_async(&mut redis)
            .await;
        let taken = match taken {
            Ok(taken) => taken,
            Err(error) => {
                match self.put_back(id, worker).await {
                    Ok(_) => tracing::warn!(worker, job = id, %error,
                        "a claim failed after taking the job's id: it was put back"),
                    Err(again) => tracing::warn!(worker, job = id, %error, %again,
                        "a claim failed after taking the job's id, and so did putting it back: the next claim will"),
                }
                return Err(error.into());
            }
        };
        if taken.is_some() {
            self.hold(worker, id, true);
        }
        Ok(taken.map(|(attempts, payload, deliveries)| Job {
            id,
            payload,
            attempts,
            deliveries,
        }))
    }

    async fn renew(&self, id: i64, worker: &str, lease: Duration) -> Result<bool, BoxError> {
        let held: i64 = RENEW
            .key(self.heartbeat(worker))
            .key(self.processing(worker))
            .arg(millis(lease))
            .arg(id)
            .invoke_async(&mut self.client.connection())
            .await?;
        Ok(held == 1)
    }

    async fn complete(&self, id: i64, worker: &str) -> Result<bool, BoxError> {
        let held: RedisResult<i64> = COMPLETE
            .key(self.processing(worker))
            .key(self.job_key(id))
            .arg(id)
            .invoke_async(&mut self.client.connection())
            .await;
        // Forgotten only now (a claim in between must not put back a job still held), and
        // whatever the outcome: if the script failed, the id left in the processing list is
        // queued again by the worker's next claim rather than stranded there.
        self.hold(worker, id, false);
        Ok(held? == 1)
    }

    async fn fail(
        &self,
        id: i64,
        worker: &str,
        error: &str,
        max_attempts: u32,
    ) -> Result<bool, BoxError> {
        let held: RedisResult<i64> = FAIL
            .key(self.processing(worker))
            .key(self.job_key(id))
            .key(self.key("queue"))
            .arg(id)
            .arg(error)
            .arg(max_attempts)
            .invoke_async(&mut self.client.connection())
            .await;
        self.hold(worker, id, false);
        Ok(held? == 1)
    }

    async fn hand_back(&self, id: i64, worker: &str) -> Result<bool, BoxError> {
        let held = self.put_back(id, worker).await;
        self.hold(worker, id, false);
        Ok(held?)
    }

    async fn reclaim_expired(&self) -> Result<u64, BoxError> {
        let mut redis = self.client.connection();
        let workers: Vec<String> = redis.smembers(self.key("workers")).await?;
        let mut reclaimed = 0;
        for worker in workers {
            let swept: i64 = SWEEP
                .key(self.heartbeat(&worker))
                .key(self.processing(&worker))
                .key(self.key("queue"))
                .key(self.key("workers"))
                .arg(&worker)
                .arg(self.key("job:"))
                .arg(self.max_deliveries)
                .invoke_async(&mut redis)
                .await?;
            if swept > 0 {
                tracing::debug!(worker, swept, "took back the jobs of a dead worker");
                reclaimed += swept.unsigned_abs();
            }
        }
        Ok(reclaimed)
    }
}

impl RedisJobQueue {
    /// `HAND_BACK`: queues job `id` again, uncounted, if it is in `worker`'s processing list.
    async fn put_back(&self, id: i64, worker: &str) -> RedisResult<bool> {
        let held: i64 = HAND_BACK
            .key(self.processing(worker))
            .key(self.job_key(id))
            .key(self.key("queue"))
            .arg(id)
            .invoke_async(&mut self.client.connection())
            .await?;
        Ok(held == 1)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl std::fmt::Debug for RedisJobQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisJobQueue")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}
