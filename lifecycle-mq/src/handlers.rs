//! What the two consumers share once a message is received, whatever the broker: its handler
//! runs in a task of the component and its message is settled as the handler answers; at the
//! stop, the handlers in progress get until shortly before the deadline, and what is left is
//! cut off and handed back. A backend only says how its messages are settled ([`Settle`]).

use std::future::Future;
use std::sync::Arc;

use lifecycle_core::held_by::Holding;
use lifecycle_core::{BoxError, Context};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::deadline::step;
use crate::error::MqError;
use crate::handler::{self, Handler, Outcome};
use crate::in_flight::InFlight;
use crate::message::{Ack, Message};
use crate::metrics::{Ended, Tally};

/// How a broker's message is settled: acked, handed back or rejected.
pub(crate) trait Settle: Send + Sized + 'static {
    /// Tells the broker what `ack` says, and waits until it is known to have been told (or
    /// could not be).
    fn settle(self, ack: Ack) -> impl Future<Output = Result<(), String>> + Send;
}

/// Hands every one of `messages` back to the broker, by `limit`.
pub(crate) async fn hand_back_all<T: Settle>(
    messages: Vec<T>,
    limit: Instant,
) -> Result<(), String> {
    let settled = messages.into_iter().map(|m| m.settle(Ack::Requeue));
    let results = step(limit, async {
        Ok::<_, String>(futures::future::join_all(settled).await)
    })
    .await?;
    results
        .into_iter()
        .find_map(Result::err)
        .map_or(Ok(()), Err)
}

/// The handlers of one run of a consumer.
pub(crate) struct Handlers<T> {
    pub(crate) ctx: Context,
    pub(crate) handler: Handler,
    pub(crate) in_flight: Arc<InFlight<T>>,
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
        let slot = self.in_flight.start(permit, settle);
        let id = slot.id;
        let (handler, in_flight, tally, ctx) = (
            self.handler.clone(),
            self.in_flight.clone(),
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
            if let Some(settle) = in_flight.finish(slot.id) {
                match settle.settle(ack).await {
                    Ok(()) => tally.ended(how, 1),
                    Err(error) => {
                        tally.settle_failed();
                        tracing::warn!(component = ctx.name(), %error, ?ack,
                            "could not settle a message; the broker will deliver it again");
                    }
                }
                // The slot's permit is released only now, so that the stop's wait for idle
                // handlers includes their settlements.
                in_flight.settled(slot);
            }
        });
        self.in_flight.set_abort(id, task.abort_handle());
    }
}

/// The stop's part of the handlers: lets those in progress finish and settle their messages
/// until `give_up`, then cuts off those still running and hands their messages back by
/// `close_by`. Adds to `failures`
/// [`MqError::HandlersCutOff`] first, and a failed `StopIncomplete` step for settlements the
/// broker left unanswered.
pub(crate) async fn finish_handlers<T: Settle>(
    in_flight: &InFlight<T>,
    ctx: &Context,
    tally: &Tally,
    (target, queue): (&str, &str),
    (give_up, close_by): (Instant, Instant),
    holding: &Holding,
    failures: &mut Vec<MqError>,
) {
    let finished = tokio::time::timeout_at(give_up, in_flight.idle())
        .await
        .is_ok();
    if !finished {
        for message in holding.list() {
            ctx.gave_up_on(message);
        }
    }
    let cut = in_flight.cut_all();
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
            failures.insert(0, cut_off);
        }
    }
    if cut.settling > 0 {
        failures.push(MqError::StopIncomplete {
            target: target.to_owned(),
            queue: queue.to_owned(),
            step: "settling messages",
            reason: format!(
                "{} acks or nacks unanswered at the deadline; the broker delivers those messages again",
                cut.settling
            ),
        });
    }
}

/// The moment the closing requests must be answered by: halfway between `give_up` and the
/// deadline, so that the stop still returns its own error before the lifecycle cuts it off.
pub(crate) fn close_by(ctx: &Context, give_up: Instant) -> Instant {
    let deadline = ctx
        .deadline()
        .unwrap_or(give_up + std::time::Duration::from_secs(2));
    give_up + deadline.saturating_duration_since(give_up) / 2
}

/// The stop's result: its first failure, the others logged.
pub(crate) fn stop_result(ctx: &Context, failures: Vec<MqError>) -> Result<(), BoxError> {
    let mut failures = failures.into_iter();
    match failures.next() {
        None => Ok(()),
        Some(first) => {
            for other in failures {
                tracing::warn!(component = ctx.name(), error = %other, "stop incomplete");
            }
            Err(first.into())
        }
    }
}
