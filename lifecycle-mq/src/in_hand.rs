//! `MessagesInHand`: the messages whose handlers are running or settling, so that a stop can
//! wait for them, and cut off and hand back those still running at its deadline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;

/// The handlers in progress of one run of a consumer, each with what settles its message (a
/// lapin `Acker`, a JetStream message).
///
/// A message is settled exactly once, by whoever takes its settle handle out: the handler's
/// task when the handler returns ([`finish`](Self::finish)), or the stop when it cuts the
/// handler off ([`cut_all`](Self::cut_all)). A second settlement (an ack after a nack) would be
/// a protocol error that closes an AMQP channel, and an ack after a hand-back would ack a
/// message that the broker may already have given to another consumer.
///
/// An entry stays until its task has settled the message ([`settled`](Self::settled)), so
/// that the stop can also cut off a settlement the broker does not answer.
pub(crate) struct MessagesInHand<T> {
    entries: Mutex<State<T>>,
    permits: Arc<Semaphore>,
    concurrency: u32,
}

struct State<T> {
    next: u64,
    running: HashMap<u64, Entry<T>>,
}

struct Entry<T> {
    /// `None` once the handler returned and its task is settling the message.
    settle: Option<T>,
    abort: Option<AbortHandle>,
}

/// A handler's place among the running ones: its id, and a permit of the concurrency limit
/// that it holds until its message is settled.
pub(crate) struct HandlerPermit {
    pub(crate) id: u64,
    _permit: OwnedSemaphorePermit,
}

/// What [`MessagesInHand::cut_all`] cut off.
pub(crate) struct Cut<T> {
    /// The messages of handlers that were still running, to hand back.
    pub(crate) unsettled: Vec<T>,
    /// Settlements that were under way (the handler had returned) but not answered.
    pub(crate) settling: usize,
}

impl<T> MessagesInHand<T> {
    /// Room for `concurrency` handlers at once.
    pub(crate) fn new(concurrency: u32) -> Self {
        MessagesInHand {
            entries: Mutex::new(State {
                next: 0,
                running: HashMap::new(),
            }),
            permits: Arc::new(Semaphore::new(concurrency as usize)),
            concurrency,
        }
    }

    /// Waits for room for one more handler.
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe: nothing is taken until it returns.
    pub(crate) async fn room(&self) -> OwnedSemaphorePermit {
        self.permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// Records a handler about to start on a message settled through `settle`.
    pub(crate) fn start(&self, permit: OwnedSemaphorePermit, settle: T) -> HandlerPermit {
        let mut state = self.lock();
        let id = state.next;
        state.next += 1;
        state.running.insert(
            id,
            Entry {
                settle: Some(settle),
                abort: None,
            },
        );
        HandlerPermit {
            id,
            _permit: permit,
        }
    }

    /// Gives the stop a way to cut off the task running handler `id`.
    pub(crate) fn set_abort(&self, id: u64, abort: AbortHandle) {
        if let Some(entry) = self.lock().running.get_mut(&id) {
            entry.abort = Some(abort);
        }
    }

    /// The handler `id` returned: what settles its message, unless the stop cut it off and
    /// settled it already.
    pub(crate) fn finish(&self, id: u64) -> Option<T> {
        self.lock()
            .running
            .get_mut(&id)
            .and_then(|entry| entry.settle.take())
    }

    /// The message of `permit` is settled (or could not be): its entry and permit go.
    pub(crate) fn settled(&self, permit: HandlerPermit) {
        self.lock().running.remove(&permit.id);
    }

    /// The number of handlers running or settling.
    pub(crate) fn len(&self) -> usize {
        self.lock().running.len()
    }

    /// Waits until no handler is running and every settlement has been made (each handler holds
    /// its permit until its message is settled).
    pub(crate) async fn idle(&self) {
        let all = self
            .permits
            .acquire_many(self.concurrency)
            .await
            .expect("the semaphore is never closed");
        drop(all);
    }

    /// Cuts off every handler and settlement still under way and returns the messages to hand
    /// back: those of handlers still running.
    pub(crate) fn cut_all(&self) -> Cut<T> {
        let running = std::mem::take(&mut self.lock().running);
        let mut cut = Cut {
            unsettled: Vec::new(),
            settling: 0,
        };
        for entry in running.into_values() {
            if let Some(abort) = entry.abort {
                abort.abort();
            }
            match entry.settle {
                Some(settle) => cut.unsettled.push(settle),
                None => cut.settling += 1,
            }
        }
        cut
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::MessagesInHand;

    #[tokio::test]
    async fn a_message_is_settled_by_its_handler_or_by_the_stop_never_both() {
        let in_hand = MessagesInHand::new(3);
        let a = in_hand.start(in_hand.room().await, "a");
        let b = in_hand.start(in_hand.room().await, "b");
        let c = in_hand.start(in_hand.room().await, "c");
        assert_eq!(in_hand.finish(a.id), Some("a"));
        in_hand.settled(a);
        // c's handler returned, and its settlement is under way when the stop cuts.
        assert_eq!(in_hand.finish(c.id), Some("c"));
        let cut = in_hand.cut_all();
        assert_eq!((cut.unsettled, cut.settling), (vec!["b"], 1));
        // The handler of b returns after the stop took it over: it must not settle it again.
        assert_eq!(in_hand.finish(b.id), None);
        assert_eq!(in_hand.len(), 0);
        drop((b, c));
        in_hand.idle().await;
    }
}
