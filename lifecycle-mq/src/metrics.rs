//! A consumer's metrics through the `metrics` facade, with handles registered once per start,
//! and `Tally`, which records each outcome in both the metrics and the `ConsumerStats`. The
//! names and labels are listed in `lifecycle_core`'s "Metrics" table and in this crate's
//! "Counts and metrics"; the outcomes are those every work source counts (`lifecycle-db`'s
//! `jobs_ended_total` has the same, and no `rejected`).

use std::sync::Arc;

use metrics::Counter;

use crate::stats::Counters;

/// How a message received ended, for `messages_ended_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The handler answered `Ack::Done`: acked.
    Done,
    /// The handler failed, panicked or asked for it back, before its last delivery: handed
    /// back, to be delivered again.
    Failed,
    /// The same at its last delivery: rejected to the broker's dead letter.
    Dead,
    /// The handler answered `Ack::Reject`.
    Rejected,
    /// Received and never started at the stop: handed back.
    HandedBack,
    /// Its handler was running at the stop deadline: cut off and handed back.
    Cut,
}

/// The `outcome` labels, indexed by `Ended as usize`.
const OUTCOMES: [&str; 6] = ["done", "failed", "dead", "rejected", "handed_back", "cut"];

/// The metric handles of one consumer, labelled with its component's name.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerMetrics {
    received: Counter,
    /// Indexed by `Ended as usize`.
    ended: [Counter; 6],
    settle_failed: Counter,
}

impl ConsumerMetrics {
    pub(crate) fn register(component: &str) -> Self {
        let component = component.to_owned();
        ConsumerMetrics {
            received: metrics::counter!(
                "messages_received_total",
                "component" => component.clone()
            ),
            ended: OUTCOMES.map(|outcome| {
                metrics::counter!(
                    "messages_ended_total",
                    "component" => component.clone(),
                    "outcome" => outcome
                )
            }),
            settle_failed: metrics::counter!(
                "messages_settle_failed_total",
                "component" => component.clone()
            ),
        }
    }

    /// A message was received from the broker (every delivery, a redelivery too).
    pub(crate) fn received(&self) {
        self.received.increment(1);
    }

    /// `count` messages ended as `how`.
    pub(crate) fn ended(&self, how: Ended, count: u64) {
        self.ended[how as usize].increment(count);
    }

    /// The broker could not be told how a message ended (the connection was gone).
    pub(crate) fn settle_failed(&self) {
        self.settle_failed.increment(1);
    }
}

/// What a consumer's run records, in one place: its [`Counters`] (the consumer's
/// [`ConsumerStats`](crate::ConsumerStats), over all its runs) and its metrics.
#[derive(Debug, Clone)]
pub(crate) struct Tally {
    pub(crate) counters: Arc<Counters>,
    pub(crate) metrics: ConsumerMetrics,
}

impl Tally {
    /// A message was received.
    pub(crate) fn received(&self) {
        Counters::add(&self.counters.received, 1);
        self.metrics.received();
    }

    /// `count` messages ended as `how`, and the broker was told.
    pub(crate) fn ended(&self, how: Ended, count: u64) {
        let counter = match how {
            Ended::Done => &self.counters.done,
            Ended::Failed => &self.counters.failed,
            Ended::Dead => &self.counters.dead,
            Ended::Rejected => &self.counters.rejected,
            Ended::HandedBack => &self.counters.handed_back,
            Ended::Cut => &self.counters.cut,
        };
        Counters::add(counter, count);
        self.metrics.ended(how, count);
    }

    /// A handler panicked.
    pub(crate) fn panicked(&self) {
        Counters::add(&self.counters.panicked, 1);
    }

    /// The broker could not be told how a message ended.
    pub(crate) fn settle_failed(&self) {
        Counters::add(&self.counters.settle_failed, 1);
        self.metrics.settle_failed();
    }
}
