//! A job worker's metrics through the `metrics` facade, with handles registered once per
//! start. The names and labels are listed in `lifecycle_core`'s "Metrics" table.

use std::time::Duration;

use metrics::{Counter, Histogram};

/// How a job in hand ended, for `jobs_ended_total{outcome}` and
/// `job_run_duration_seconds{outcome}`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ended {
    /// The handler succeeded.
    Done,
    /// The handler failed, panicked, or the payload did not deserialize.
    Failed,
    /// Still running shortly before the stop deadline: handed back to the queue.
    HandedBack,
}

/// The metric handles of one worker, labelled with its component's name.
#[derive(Debug, Clone)]
pub(crate) struct JobMetrics {
    claimed: Counter,
    reclaimed: Counter,
    late: Counter,
    /// Indexed by `Ended as usize`.
    ended: [Counter; 3],
    run_time: [Histogram; 3],
}

impl JobMetrics {
    pub(crate) fn register(component: &str) -> Self {
        let component = component.to_owned();
        let outcomes = ["done", "failed", "handed_back"];
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
    pub(crate) fn claimed(&self) {
        self.claimed.increment(1);
    }

    /// `count` jobs of dead or hung workers were taken back by this one.
    pub(crate) fn reclaimed(&self, count: u64) {
        self.reclaimed.increment(count);
    }

    /// A job ended after its lease had expired: its end was not recorded.
    pub(crate) fn late(&self) {
        self.late.increment(1);
    }

    /// A job in hand ended as `how`, after running for `took`.
    pub(crate) fn ended(&self, how: Ended, took: Duration) {
        self.ended[how as usize].increment(1);
        self.run_time[how as usize].record(took.as_secs_f64());
    }
}
