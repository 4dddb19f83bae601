//! `Handlers`: what a consumer does once a message is received, whatever the broker: its
//! handler runs in a task of the component and its message is settled as the handler answers;
//! at the stop, the handlers in progress get until shortly before the deadline, and what is
//! left is cut off and handed back. A backend only says how its messages are settled
//! ([`Settle`]).

use std::sync::Arc;

use lifecycle_core::held_by::Holding;
use lifecycle_core::Context;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::error::MqError;
use crate::handler::{self, Handler, Outcome};
use crate::in_hand::MessagesInHand;
use crate::message::{Ack, Message};
use crate::metrics::{Ended, Tally};
use crate::settle::{hand_back_all, Settle};
use crate::stop::StopFailures;

/// The handlers of one run of a consumer.
pub(crate) struct Handlers<T> {
    pub(crate) ctx: Context,
    pub(crate) handler: Handler,
    pub(crate) in_hand: Arc<MessagesInHand<T>>,
    pub(crate) tally: Tally,
    /// The delivery at which a failed message is dead-lettered instead of handed back.
    pub(crate) max_deliveries: u32,
    /// The messages whose handlers run, named for `held_by`.
    pub(crate) holding: Arc<Holding>,
}

impl<T: Settle> Handlers<T> {
    /// Runs the handler on `message` in a tracked task, holding `permit` of the concurrency
    /// limit until the message is settled through `settle` as the handler answered, unless the
    /// stop cut the handler off and handed the message back first.
    ///
    /// A failed delivery (an error, a panic, [`Ack::Requeue`]) hands the message back, unless
    /// it was the message's `max_deliveries`-th delivery (or later), as the broker counts them:
    /// then it is rejected, which dead-letters it. A panic is caught: the component goes on.
    pub(crate) fn start(&self, permit: OwnedSemaphorePermit, settle: T, mut message: Message) {
        self.tally.received();
        let permit = self.in_hand.start(permit, settle);
        let id = permit.id;
        let (handler, in_hand, tally, ctx) = (
            self.handler.clone(),
            self.in_hand.clone(),
            self.tally.clone(),
            self.ctx.clone(),
        );
        let delivery = message.delivery_count();
        let last = delivery.is_some_and(|n| n >= u64::from(self.max_deliveries));
        message.last_delivery = last;
        let label = match (message.message_id(), delivery) {
            (Some(id), Some(n)) => format!("message {id}, delivery {n}"),
            (Some(id), None) => format!("message {id}"),
            (None, Some(n)) => format!("message on {}, delivery {n}", message.subject()),
            (None, None) => format!("message on {}", message.subject()),
        };
        let held = self.holding.begin(label);
        let task = self.ctx.spawn(async move {
            let _held = held;
            let ended = handler::run(&handler, message, ctx.name()).await;
            if ended == Outcome::Panicked {
                tally.panicked();
            }
            let (ack, how) = match ended {
                Outcome::Answered(Ack::Done) => (Ack::Done, Ended::Done),
                Outcome::Answered(Ack::Reject) => (Ack::Reject, Ended::Rejected),
                _ if last => {
                    tracing::warn!(component = ctx.name(), ?delivery,
                        "a message failed at its last delivery: it is dead-lettered");
                    (Ack::Reject, Ended::Dead)
                }
                _ => {
                    if delivery.is_none() {
                        tracing::debug!(component = ctx.name(),
                            "a redelivered message failed; the queue does not count deliveries, so it cannot be dead-lettered");
                    }
                    (Ack::Requeue, Ended::Failed)
                }
            };
            // None: the stop cut this handler off and handed its message back already.
            if let Some(settle) = in_hand.finish(id) {
                match settle.settle(ack).await {
                    Ok(()) => tally.ended(how, 1),
                    Err(error) => {
                        tally.settle_failed();
                        tracing::warn!(component = ctx.name(), %error, ?ack,
                            "could not settle a message; the broker will deliver it again");
                    }
                }
                // The handler's permit is released only now, so that the stop's wait for idle
                // handlers includes their settlements.
                in_hand.settled(permit);
            }
        });
        self.in_hand.set_abort(id, task.abort_handle());
    }
}

/// The stop's part of the handlers: lets those in progress finish and settle their messages
/// until `give_up`, then cuts off those still running and hands their messages back by
/// `close_by`. Adds to `failures`
/// [`MqError::HandlersCutOff`] first, and a failed `StopIncomplete` step for settlements the
/// broker left unanswered.
pub(crate) async fn finish_handlers<T: Settle>(
    in_hand: &MessagesInHand<T>,
    ctx: &Context,
    tally: &Tally,
    queue: &str,
    (give_up, close_by): (Instant, Instant),
    holding: &Holding,
    failures: &mut StopFailures<'_>,
) {
    let finished = tokio::time::timeout_at(give_up, in_hand.idle())
        .await
        .is_ok();
    if !finished {
        for message in holding.list() {
            ctx.gave_up_on(message);
        }
    }
    let cut = in_hand.cut_all();
    if !cut.unsettled.is_empty() {
        let count = cut.unsettled.len();
        if !finished {
            tally.ended(Ended::Cut, count as u64);
            tracing::warn!(component = ctx.name(), %queue, cut = count,
                "handlers cut off at the stop deadline; their messages are handed back");
        }
        if let Err(reason) = hand_back_all(cut.unsettled, close_by).await {
            tracing::debug!(%queue, %reason, "handing back cut-off messages failed");
        }
        if !finished {
            let cut_off = MqError::HandlersCutOff {
                queue: queue.to_owned(),
                cut: count,
            };
            failures.push(cut_off, true);
        }
    }
    if cut.settling > 0 {
        failures.step_failed((
            "settling messages",
            format!(
                "{} acks or nacks unanswered at the deadline; the broker delivers those messages again",
                cut.settling
            ),
        ));
    }
}
