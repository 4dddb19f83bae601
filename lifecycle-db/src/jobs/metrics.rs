//! A job worker's metrics through the `metrics` facade, with handles registered once per
//! start. The names and labels are listed in `lifecycle_core`'s "Metrics" table.

use std::time::Duration;

use metrics::{Counter, Histogram};

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

/// The metric handles of one worker, labelled with its component's name.
#[derive(Debug, Clone)]
pub(super) struct JobMetrics {
    claimed: Counter,
    reclaimed: Counter,
    late: Counter,
    /// Indexed by `Ended as usize`.
    ended: [Counter; 5],
    run_time: [Histogram; 5],
}

impl JobMetrics {
    pub(super) fn register(component: &str) -> Self {
        let component = component.to_owned();
        let outcomes = OUTCOMES;
        JobMetrics {
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
    }

    /// `count` jobs of dead or hung workers were taken back by this one.
    pub(super) fn reclaimed(&self, count: u64) {
        self.reclaimed.increment(count);
    }

    /// A job ended after its lease had expired: its end was not recorded.
    pub(super) fn late(&self) {
        self.late.increment(1);
    }

    /// A job in hand ended as `how`, after running for `took` (`None`: it never ran).
    pub(super) fn ended(&self, how: Ended, took: Option<Duration>) {
        self.ended[how as usize].increment(1);
        if let Some(took) = took {
            self.run_time[how as usize].record(took.as_secs_f64());
        }
    }
}
