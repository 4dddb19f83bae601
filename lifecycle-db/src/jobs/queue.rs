//! `JobQueue`: what a `JobWorker` needs of a queue, and the jobs it hands out.

use std::time::Duration;

use lifecycle_core::{async_trait, BoxError};

/// A job taken from the queue: its payload as a `T` for a [`JobWorker`](crate::JobWorker)'s
/// handler, or as stored (JSON text) between the queue and the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job<T = String> {
    /// The job's id, as [`SqlJobQueue::enqueue`](crate::SqlJobQueue::enqueue) returned it.
    pub id: i64,
    /// What the job is about, as enqueued.
    pub payload: T,
    /// How many times it has been taken and not handed back, this time included: the
    /// attempts counted against the retry limit.
    pub attempts: i64,
    /// How many times it has been delivered to a worker, this time included, whatever became
    /// of the earlier deliveries (a failure, a hand-back at a shutdown, a worker that died).
    /// More than 1: the job may have run before, in part or in full, so the handler should be
    /// idempotent.
    pub deliveries: i64,
}

impl Job {
    /// The same job with its payload deserialized from JSON.
    pub(crate) fn decode<T: serde::de::DeserializeOwned>(
        self,
    ) -> Result<Job<T>, serde_json::Error> {
        Ok(Job {
            id: self.id,
            payload: serde_json::from_str(&self.payload)?,
            attempts: self.attempts,
            deliveries: self.deliveries,
        })
    }
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobState {
    /// Waiting for a worker.
    Queued,
    /// Taken by a worker whose lease has not expired.
    Running,
    /// Finished.
    Done,
    /// Failed as many times as allowed.
    Failed,
}

impl JobState {
    /// The lower-case name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }
}

impl JobState {
    /// The state as stored (`"queued"`, ...).
    // Every backend uses it; a build with no backend (nothing but the worker) does not.
    #[cfg_attr(
        not(any(
            feature = "postgres",
            feature = "sqlite",
            feature = "mysql",
            feature = "redis"
        )),
        allow(dead_code)
    )]
    pub(crate) fn parse(state: &str) -> Self {
        match state {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "done" => JobState::Done,
            _ => JobState::Failed,
        }
    }
}

/// A queue a [`JobWorker`](crate::JobWorker) takes jobs from: [`SqlJobQueue`](crate::SqlJobQueue)
/// (PostgreSQL, SQLite, MySQL/MariaDB) or [`RedisJobQueue`](crate::RedisJobQueue).
///
/// These methods are the worker's side of a queue, and each queue has them here only (its own
/// methods are the service's side: enqueue, look at a job). A service rarely calls them; a tool
/// or a test that does brings the trait into scope (`use lifecycle_db::JobQueue`).
///
/// The contract that keeps jobs from being lost: a claimed job belongs to its worker until the
/// worker completes, fails or hands it back, or until the worker's lease expires, after which
/// [`reclaim_expired`](Self::reclaim_expired) queues it again. Hand-backs and reclaims do not
/// count as attempts.
#[async_trait]
pub trait JobQueue: Send + Sync + std::fmt::Debug + 'static {
    /// Prepares the queue for `worker` (creates its table, registers the worker).
    async fn prepare(&self, worker: &str) -> Result<(), BoxError>;

    /// Takes the next job for `worker`, leased for `lease`; `None` when there is none (a queue
    /// may wait briefly for one first).
    async fn claim(&self, worker: &str, lease: Duration) -> Result<Option<Job>, BoxError>;

    /// Extends `worker`'s lease on job `id`; returns whether `worker` still holds the job
    /// (`false`: its lease expired and the job was taken back, so it may be running elsewhere).
    async fn renew(&self, id: i64, worker: &str, lease: Duration) -> Result<bool, BoxError>;

    /// Marks job `id` done if `worker` still holds it; returns whether it did. `false` means the
    /// job's lease had expired and the job was taken back: nothing was changed, and the job
    /// runs (or ran) again elsewhere.
    async fn complete(&self, id: i64, worker: &str) -> Result<bool, BoxError>;

    /// Records a failure of job `id` if `worker` still holds it: queued again, or failed for
    /// good after `max_attempts`. Returns whether `worker` held it, as
    /// [`complete`](Self::complete) does.
    async fn fail(
        &self,
        id: i64,
        worker: &str,
        error: &str,
        max_attempts: u32,
    ) -> Result<bool, BoxError>;

    /// Queues job `id` again without counting the attempt, if `worker` still holds it; returns
    /// whether it did, as [`complete`](Self::complete) does.
    async fn hand_back(&self, id: i64, worker: &str) -> Result<bool, BoxError>;

    /// Queues again the jobs of workers whose lease expired; returns how many.
    async fn reclaim_expired(&self) -> Result<u64, BoxError>;
}
