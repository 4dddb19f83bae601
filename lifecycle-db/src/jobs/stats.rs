//! `JobStats`: what a worker did with its jobs, counted as `lifecycle-mq` counts messages.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counts of what a [`JobWorker`](crate::JobWorker) did with the jobs it claimed, since it was
/// created (over all its runs, restarts included), named for the outcomes every work source of
/// the workspace counts, as `lifecycle-mq`'s `ConsumerStats` names them (see the crate
/// documentation's "Counts and metrics"): a job claimed ends `done`, `failed`, `dead`,
/// `handed_back` or `cut`.
///
/// They say what the worker's metrics say: each is counted where its metric is. As a consumer
/// counts a message's outcome once the broker took its settlement, a job's outcome is counted
/// once the queue recorded it; an end the queue refused (the lease had been lost) is counted
/// `late` instead, and one it could not be told of `settle_failed`.
///
/// # Examples
///
/// ```no_run
/// use lifecycle_core::{Lifecycle, Registration};
/// use lifecycle_db::{Job, JobWorker, SqlJobQueue};
///
/// # async fn wire(pool: sqlx::AnyPool) -> Result<(), Box<dyn std::error::Error>> {
/// let worker = JobWorker::new(SqlJobQueue::new(pool, "emails"), |_job: Job| async { Ok(()) });
/// // Clones share the counts: register one, read the other.
/// let lifecycle = Lifecycle::builder()
///     .register(Registration::new("emails", worker.clone()))
///     .build()?;
/// let report = lifecycle.run().await;
/// let stats = worker.stats();
/// println!("{} done, {} dead, {} cut at the stop", stats.done, stats.dead, stats.cut);
/// # drop(report);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobStats {
    /// Jobs claimed from the queue, every delivery (`lifecycle-mq`'s `received`; the metric
    /// `jobs_claimed_total`).
    pub claimed: u64,
    /// Jobs whose handler succeeded, recorded as completed.
    pub done: u64,
    /// Failed attempts: jobs whose handler returned an error, panicked or ran past its
    /// `max_run_time`, before their last attempt, queued to be tried again.
    pub failed: u64,
    /// Dead letters: jobs that failed at their last attempt, or whose payload does not decode,
    /// failed for good.
    pub dead: u64,
    /// Handler runs that panicked (each a failed attempt, counted in `failed` or `dead` too).
    pub panicked: u64,
    /// Jobs claimed as the stop came and handed back without running.
    pub handed_back: u64,
    /// Jobs still running at the stop deadline, cut off and handed back.
    pub cut: u64,
    /// Ends (complete, fail, hand back) the queue could not be told of, a database or Redis
    /// error: the job's lease expires and it runs again.
    pub settle_failed: u64,
    /// Ends that came after the job's lease had expired and it had been taken back: not
    /// recorded, and the job runs (or ran) again elsewhere (the metric `jobs_late_total`).
    pub late: u64,
    /// Jobs of dead or hung workers this worker took back to the queue (the metric
    /// `jobs_reclaimed_total`).
    pub reclaimed: u64,
}

/// The live counters behind [`JobStats`]; each is only ever added to, by the worker's
/// `JobMetrics`, where it records the same outcome.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) claimed: AtomicU64,
    pub(super) done: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) dead: AtomicU64,
    pub(super) panicked: AtomicU64,
    pub(super) handed_back: AtomicU64,
    pub(super) cut: AtomicU64,
    pub(super) settle_failed: AtomicU64,
    pub(super) late: AtomicU64,
    pub(super) reclaimed: AtomicU64,
}

impl Counters {
    pub(super) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self) -> JobStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        JobStats {
            claimed: get(&self.claimed),
            done: get(&self.done),
            failed: get(&self.failed),
            dead: get(&self.dead),
            panicked: get(&self.panicked),
            handed_back: get(&self.handed_back),
            cut: get(&self.cut),
            settle_failed: get(&self.settle_failed),
            late: get(&self.late),
            reclaimed: get(&self.reclaimed),
        }
    }
}
