//! `ConsumerStats`: what a consumer did with its messages.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counts of what a consumer did with the messages it received, since it was created (over all
/// its runs, restarts included), named for the outcomes every work source of the workspace
/// counts (see the crate documentation's "Counts and metrics"): a message received ends
/// `done`, `failed`, `dead`, `handed_back`, `cut` or `rejected`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerStats {
    /// Messages received from the broker.
    pub received: u64,
    /// Messages whose handler returned [`Ack::Done`](crate::Ack::Done) and that were acked.
    pub done: u64,
    /// Failed deliveries: messages handed back, to be delivered again, because their handler
    /// asked for it ([`Ack::Requeue`](crate::Ack::Requeue)), failed or panicked, before their
    /// last delivery.
    pub failed: u64,
    /// Messages rejected by their handler ([`Ack::Reject`](crate::Ack::Reject)).
    pub rejected: u64,
    /// Poison messages: messages whose handler failed (an error, a panic or
    /// [`Ack::Requeue`](crate::Ack::Requeue)) at their last allowed delivery, rejected to the
    /// broker's dead letter (see the crate documentation).
    pub dead: u64,
    /// Handler runs that panicked (each a failed delivery, counted in `failed` or `dead` too).
    pub panicked: u64,
    /// Messages received but not yet started at a stop, handed back to the broker unprocessed.
    pub handed_back: u64,
    /// Messages whose handler was cut off at a stop's deadline, handed back unacknowledged.
    pub cut: u64,
    /// Settlements (acks, nacks) the broker could not be told of because the connection was
    /// gone; the broker delivers those messages again.
    pub settle_failed: u64,
}

/// The live counters behind [`ConsumerStats`]; each is only ever added to.
#[derive(Debug, Default)]
#[cfg_attr(not(any(feature = "amqp", feature = "nats")), allow(dead_code))]
pub(crate) struct Counters {
    pub(crate) received: AtomicU64,
    pub(crate) done: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) dead: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) handed_back: AtomicU64,
    pub(crate) cut: AtomicU64,
    pub(crate) settle_failed: AtomicU64,
}

#[cfg_attr(not(any(feature = "amqp", feature = "nats")), allow(dead_code))]
impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> ConsumerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ConsumerStats {
            received: get(&self.received),
            done: get(&self.done),
            failed: get(&self.failed),
            rejected: get(&self.rejected),
            dead: get(&self.dead),
            panicked: get(&self.panicked),
            handed_back: get(&self.handed_back),
            cut: get(&self.cut),
            settle_failed: get(&self.settle_failed),
        }
    }
}
