//! A job worker's metrics through the `metrics` facade, with handles registered once per
//! start, and its `JobStats` counters, added to where each metric is. The names and labels
//! are listed in `lifecycle_core`'s "Metrics" table.

use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Histogram};

use super::stats::Counters;

/// How a job taken from the queue ended, for `jobs_ended_total{outcome}` and
/// `job_run_duration_seconds{outcome}`: the outcomes every work source counts (a message
/// consumer's `messages_ended_total` has the same, and `rejected`).
#[derive(Debug, Clone, Copy)]
pub(super) enum Ended {
    /// The handler succeeded.
    Done,
    /// The handler failed, panicked, or ran past its maximum run time, and the job is queued
    /// again for another attempt.
    Failed,
    /// The same at its last attempt, or a payload that does not deserialize: failed for good
    /// (the dead letter).
    Dead,
    /// Claimed as the stop turn came and handed back without running.
    HandedBack,
    /// Still running shortly before the stop deadline: cut off and handed back to the queue.
    Cut,
}

/// The `outcome` labels, indexed by `Ended as usize`.
const OUTCOMES: [&str; 5] = ["done", "failed", "dead", "handed_back", "cut"];

/// The metric handles of one worker, labelled with its component's name, and the worker's
/// counters: the one place that records what became of its jobs, so the stats say what the
/// metrics say.
#[derive(Debug, Clone)]
pub(super) struct JobMetrics {
    counts: Arc<Counters>,
    claimed: Counter,
    reclaimed: Counter,
    late: Counter,
    /// Indexed by `Ended as usize`.
    ended: [Counter; 5],
    run_time: [Histogram; 5],
}

impl JobMetrics {
    pub(super) fn register(component: &str, counts: Arc<Counters>) -> Self {
        let component = component.to_owned();
        let outcomes = OUTCOMES;
        JobMetrics {
            counts,
            claimed: metrics::counter!("jobs_claimed_total", "component" => component.clone()),
            reclaimed: metrics::counter!(
                "jobs_reclaimed_total",
                "component" => component.clone()
            ),
            late: metrics::counter!("jobs_late_total", "component" => component.clone()),
            ended: outcomes.map(|outcome| {
                metrics::counter!(
                    "jobs_ended_total",
                    "component" => component.clone(),
                    "outcome" => outcome
                )
            }),
            run_time: outcomes.map(|outcome| {
                metrics::histogram!(
                    "job_run_duration_seconds",
                    "component" => component.clone(),
                    "outcome" => outcome
                )
            }),
        }
    }

    /// A job was claimed (every delivery, a redelivery too).
    pub(super) fn claimed(&self) {
        self.claimed.increment(1);
        Counters::add(&self.counts.claimed, 1);
    }

    /// `count` jobs of dead or hung workers were taken back by this one.
    pub(super) fn reclaimed(&self, count: u64) {
        self.reclaimed.increment(count);
        Counters::add(&self.counts.reclaimed, count);
    }

    /// A job ended after its lease had expired: its end was not recorded.
    pub(super) fn late(&self) {
        self.late.increment(1);
        Counters::add(&self.counts.late, 1);
    }

    /// A job's handler panicked (the attempt is recorded as failed or dead too).
    pub(super) fn panicked(&self) {
        Counters::add(&self.counts.panicked, 1);
    }

    /// The queue could not be told of a job's end (complete, fail, hand back).
    pub(super) fn settle_failed(&self) {
        Counters::add(&self.counts.settle_failed, 1);
    }

    /// A job in hand ended as `how`, recorded by the queue, after running for `took` (`None`:
    /// it never ran).
    pub(super) fn ended(&self, how: Ended, took: Option<Duration>) {
        self.ended[how as usize].increment(1);
        let count = match how {
            Ended::Done => &self.counts.done,
            Ended::Failed => &self.counts.failed,
            Ended::Dead => &self.counts.dead,
            Ended::HandedBack => &self.counts.handed_back,
            Ended::Cut => &self.counts.cut,
        };
        Counters::add(count, 1);
        if let Some(took) = took {
            self.run_time[how as usize].record(took.as_secs_f64());
        }
    }
}
