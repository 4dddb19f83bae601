//! `ConsumerStats`: what a consumer did with its messages.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counts of what a consumer did with the messages it received, since it was created (over all
/// its runs, restarts included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerStats {
    /// Messages received from the broker.
    pub received: u64,
    /// Messages whose handler returned [`Ack::Done`](crate::Ack::Done) and that were acked.
    pub acked: u64,
    /// Messages handed back because their handler asked for it, failed or panicked, before
    /// their last delivery.
    pub requeued: u64,
    /// Messages rejected by their handler ([`Ack::Reject`](crate::Ack::Reject)).
    pub rejected: u64,
    /// Poison messages: messages whose handler failed (an error, a panic or
    /// [`Ack::Requeue`](crate::Ack::Requeue)) at their last allowed delivery, rejected to the
    /// broker's dead letter (see the crate documentation).
    pub dead: u64,
    /// Handler runs that panicked (each a failed delivery, counted in `requeued` or `dead` too).
    pub panicked: u64,
    /// Messages received but not yet started at a stop, handed back to the broker unprocessed.
    pub returned_at_stop: u64,
    /// Messages whose handler was cut off at a stop's deadline, handed back unacknowledged.
    pub cut_at_stop: u64,
    /// Settlements (acks, nacks) the broker could not be told of because the connection was
    /// gone; the broker delivers those messages again.
    pub settle_failed: u64,
}

/// The live counters behind [`ConsumerStats`]; each is only ever added to.
#[derive(Debug, Default)]
#[cfg_attr(not(any(feature = "amqp", feature = "nats")), allow(dead_code))]
pub(crate) struct Counters {
    pub(crate) received: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) requeued: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) dead: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) returned_at_stop: AtomicU64,
    pub(crate) cut_at_stop: AtomicU64,
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
            acked: get(&self.acked),
            requeued: get(&self.requeued),
            rejected: get(&self.rejected),
            dead: get(&self.dead),
            panicked: get(&self.panicked),
            returned_at_stop: get(&self.returned_at_stop),
            cut_at_stop: get(&self.cut_at_stop),
            settle_failed: get(&self.settle_failed),
        }
    }
}
