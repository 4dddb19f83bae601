//! `Consumer`: the backend-neutral consumer that `AmqpConsumer` and `NatsConsumer` wrap: its
//! settings, its start (connect with retry, subscribe, dispatch), the concurrency limit, and
//! the ordered stop (stop receiving, hand back what never started, let the handlers finish
//! or cut them off, close). A broker adds only what differs ([`Subscribe`], [`Subscription`],
//! [`Settle`](crate::settle::Settle), [`Connection`]).

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use lifecycle_core::held_by::Holding;
use lifecycle_core::{BoxError, Context, Health, Redacted};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::broker::{connect_until, Connection};
use crate::error::MqError;
use crate::handler::{self, Handler};
use crate::handlers::{finish_handlers, Handlers};
use crate::in_hand::MessagesInHand;
use crate::message::{Ack, Message};
use crate::metrics::{ConsumerMetrics, Ended, Tally};
use crate::settle::hand_back_all;
use crate::stats::{ConsumerStats, Counters};
use crate::stop::{close_by, give_up_at, StopFailures};
use crate::subscription::{Next, Subscribe, Subscription};

/// A consumer of one queue (or stream), on the broker `B` says.
pub(crate) struct Consumer<B: Subscribe> {
    /// What differs by broker: the queue, the prefetch, how to subscribe.
    pub(crate) broker: B,
    url: String,
    target: Redacted,
    /// The queue or stream, as errors and logs name it.
    queue: String,
    handler: Handler,
    pub(crate) concurrency: u32,
    pub(crate) max_deliveries: u32,
    pub(crate) connect_timeout: Duration,
    counters: Arc<Counters>,
    /// The messages whose handlers run, for `held_by`.
    holding: Arc<Holding>,
    running: Mutex<Option<Running<B>>>,
}

/// One run of the consumer, from its start to its stop.
struct Running<B: Subscribe> {
    connection: B::Connection,
    dispatcher: JoinHandle<Option<B::Subscription>>,
    in_hand: Arc<MessagesInHand<<B::Subscription as Subscription>::Delivery>>,
    tally: Tally,
}

impl<B: Subscribe> Consumer<B> {
    /// A consumer of `queue` at `url` that runs `handler` on each message, one at a time, with
    /// at most 5 deliveries and a 2 s connect timeout.
    pub(crate) fn new<H, Fut, E>(broker: B, url: String, queue: String, handler: H) -> Self
    where
        H: Fn(Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Ack, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        Consumer {
            broker,
            target: Redacted::new(&url),
            url,
            queue,
            handler: handler::boxed(handler),
            concurrency: 1,
            max_deliveries: 5,
            connect_timeout: Duration::from_secs(2),
            counters: Arc::default(),
            holding: Arc::default(),
            running: Mutex::new(None),
        }
    }

    /// What the consumer did with its messages so far.
    pub(crate) fn stats(&self) -> ConsumerStats {
        self.counters.snapshot()
    }

    /// Refuses settings out of their range, before anything connects.
    fn check_settings(&self) -> Result<(), MqError> {
        if self.max_deliveries == 0 {
            return Err(MqError::InvalidSetting {
                queue: self.queue.clone(),
                setting: "max_deliveries",
                reason: "must be at least 1: a maximum of 0 would dead-letter every message unseen"
                    .to_owned(),
            });
        }
        Ok(())
    }

    fn running(&self) -> MutexGuard<'_, Option<Running<B>>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) async fn start(&self, ctx: &Context) -> Result<(), BoxError> {
        self.check_settings()?;
        self.broker.check_url(&self.url, &self.target)?;
        let (mut connection, subscription) = connect_until(
            ctx,
            (&self.target, &self.queue),
            self.connect_timeout,
            || {
                self.broker
                    .subscribe(&self.url, ctx.name(), self.connect_timeout)
            },
        )
        .await?;
        tracing::info!(component = ctx.name(), target_mq = %self.target, queue = %self.queue,
            prefetch = self.broker.prefetch(), concurrency = self.concurrency,
            max_deliveries = self.max_deliveries, "consuming");
        self.broker
            .watch(&mut connection, ctx, (&self.target, &self.queue));
        let in_hand = Arc::new(MessagesInHand::new(self.concurrency));
        let tally = Tally {
            counters: self.counters.clone(),
            metrics: ConsumerMetrics::register(ctx.name()),
        };
        let handlers = Handlers {
            ctx: ctx.clone(),
            handler: self.handler.clone(),
            in_hand: in_hand.clone(),
            tally: tally.clone(),
            max_deliveries: self.max_deliveries,
            holding: self.holding.clone(),
        };
        let dispatcher = ctx.spawn(dispatch(
            subscription,
            handlers,
            (self.target.clone(), self.queue.clone()),
        ));
        *self.running() = Some(Running {
            connection,
            dispatcher,
            in_hand,
            tally,
        });
        Ok(())
    }

    pub(crate) async fn stop(&self, ctx: &Context) -> Result<(), BoxError> {
        let Some(running) = self.running().take() else {
            return Ok(());
        };
        let give_up = give_up_at(ctx);
        let mut failures = StopFailures::new(&self.target, &self.queue);

        // 1. Tell the broker to send no more, so that nothing arrives while we drain.
        let reply_by = give_up.min(Instant::now() + STOP_REPLY_TIMEOUT);
        let confirmed = match B::stop_receiving(&running.connection, reply_by).await {
            Ok(confirmed) => confirmed,
            Err(failed) => {
                failures.step_failed(failed);
                false
            }
        };

        // 2. The dispatcher ended on the token; it hands over the subscription, or nothing if
        //    the connection was lost (already reported as a failure).
        let subscription = match tokio::time::timeout_at(give_up, running.dispatcher).await {
            Ok(Ok(subscription)) => subscription,
            _ => None,
        };

        // 3. Hand back what was received and never started.
        if let Some(subscription) = subscription {
            let returned = subscription.unstarted(confirmed, give_up).await;
            if !returned.is_empty() {
                running
                    .tally
                    .ended(Ended::HandedBack, returned.len() as u64);
                tracing::info!(component = ctx.name(), queue = %self.queue,
                    returned = returned.len(), "handing back messages not started");
                let reply_by = give_up.min(Instant::now() + STOP_REPLY_TIMEOUT);
                if let Err(reason) = hand_back_all(returned, reply_by).await {
                    failures.step_failed(("handing back unstarted messages", reason));
                }
            }
        }

        // 4. Let the handlers in progress finish and settle their messages, until shortly
        //    before the deadline; then cut them off and hand their messages back.
        finish_handlers(
            &running.in_hand,
            ctx,
            &running.tally,
            &self.queue,
            (give_up, close_by(ctx, give_up)),
            &self.holding,
            &mut failures,
        )
        .await;

        // 5. Close: the broker processes every ack sent before it answers.
        if let Err(failed) = running.connection.close(close_by(ctx, give_up)).await {
            failures.step_failed(failed);
        }
        tracing::info!(component = ctx.name(), queue = %self.queue, stats = ?self.stats(), "consumer stopped");
        failures.into_result(ctx)
    }

    pub(crate) fn health(&self) -> Health {
        match self.running().as_ref() {
            Some(running) if running.connection.connected() => Health::Healthy,
            Some(_) => Health::unhealthy(format!("not connected to {}", self.target)),
            None => Health::unhealthy("not running"),
        }
    }

    /// The messages whose handlers run, the oldest first: `message 7f3a, delivery 2, running
    /// 12.3s` (the publisher's message id, if it set one).
    pub(crate) fn held_by(&self) -> Vec<String> {
        self.holding.list()
    }

    pub(crate) fn describe(&self) -> String {
        let in_progress = self.running().as_ref().map_or(0, |r| r.in_hand.len());
        let stats = self.stats();
        format!(
            "consuming {}: {} received, {} done, {} dead, {in_progress} in progress",
            self.queue, stats.received, stats.done, stats.dead
        )
    }

    /// The fields of a consumer's `Debug`, named `name`: its state, not its internals.
    pub(crate) fn debug(&self, name: &str, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(name)
            .field("target", &self.target)
            .field("subscription", &self.broker)
            .field("concurrency", &self.concurrency)
            .field("max_deliveries", &self.max_deliveries)
            .field("running", &self.running().is_some())
            .field("stats", &self.stats())
            .finish()
    }
}

/// How long one request of the stop (`basic.cancel`, handing back) may wait for its answer.
const STOP_REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// The task that takes messages from the subscription and starts their handlers, each once
/// there is room for it. Runs until the stop turn, then returns the subscription for the stop
/// to drain; returns `None` after reporting a lost connection.
async fn dispatch<S: Subscription>(
    mut subscription: S,
    handlers: Handlers<S::Delivery>,
    (target, queue): (Redacted, String),
) -> Option<S> {
    let ctx = handlers.ctx.clone();
    let token = ctx.token().clone();
    loop {
        let permit = tokio::select! {
            biased;
            () = token.cancelled() => return Some(subscription),
            permit = handlers.in_hand.room() => permit,
        };
        let (reason, lost) = match subscription.next(&token, handlers.in_hand.len()).await {
            Next::Message(settle, message) => {
                handlers.start(permit, settle, message);
                continue;
            }
            Next::Stopped => return Some(subscription),
            Next::Lost(reason) => (reason, true),
            Next::Ended(reason) => (reason, false),
        };
        if token.is_cancelled() {
            return None;
        }
        let (target, reason) = (target.to_string(), target.scrub(reason));
        tracing::warn!(component = ctx.name(), target_mq = %target, %queue, %reason, "consumer lost");
        ctx.report_failure(if lost {
            MqError::ConnectionLost {
                target,
                queue,
                reason,
            }
        } else {
            MqError::SubscriptionEnded {
                target,
                queue,
                reason,
            }
        });
        // The subscription is gone, not the connection: the stop still hands back what it
        // holds and closes the connection cleanly.
        return (!lost).then_some(subscription);
    }
}

/// The public face every broker's consumer shares, for a newtype `$consumer` over
/// [`Consumer`]: the builder methods that are the same for every broker, `stats`, and the
/// `Component` and `Debug` implementations, which hand everything to the neutral consumer. A
/// macro rather than a trait so that they stay inherent methods, documented on each type.
macro_rules! consumer_face {
    ($consumer:ident) => {
        impl $consumer {
            /// How many handlers may run at once (default 1, at least 1).
            #[must_use]
            pub fn concurrency(mut self, handlers: u32) -> Self {
                self.0.concurrency = handlers.max(1);
                self
            }

            /// The most deliveries a message gets (default 5, at least 1): a message whose
            /// handler fails (an error, a panic, [`Ack::Requeue`](crate::Ack::Requeue)) at its
            /// `max`-th delivery or later, as the broker counts them
            /// ([`Message::delivery_count`](crate::Message::delivery_count)), is rejected, to the
            /// broker's dead letter, instead of being handed back. Every delivery counts, a
            /// hand-back at a stop included. 0 is refused at the start
            /// ([`MqError::InvalidSetting`](crate::MqError::InvalidSetting)).
            #[must_use]
            pub fn max_deliveries(mut self, max: u32) -> Self {
                self.0.max_deliveries = max;
                self
            }

            /// How long one attempt to connect and subscribe may take (default 2 s).
            #[must_use]
            pub fn connect_timeout(mut self, timeout: std::time::Duration) -> Self {
                self.0.connect_timeout = timeout;
                self
            }

            /// What the consumer did with its messages so far.
            pub fn stats(&self) -> crate::ConsumerStats {
                self.0.stats()
            }
        }

        #[lifecycle_core::async_trait]
        impl lifecycle_core::Component for $consumer {
            async fn start(
                &self,
                ctx: &lifecycle_core::Context,
            ) -> Result<(), lifecycle_core::BoxError> {
                self.0.start(ctx).await
            }

            async fn stop(
                &self,
                ctx: &lifecycle_core::Context,
            ) -> Result<(), lifecycle_core::BoxError> {
                self.0.stop(ctx).await
            }

            async fn health(&self) -> lifecycle_core::Health {
                self.0.health()
            }

            /// The messages whose handlers run, the oldest first: `message 7f3a, delivery 2,
            /// running 12.3s` (the publisher's message id, if it set one).
            fn held_by(&self) -> Vec<String> {
                self.0.held_by()
            }

            fn describe(&self) -> Option<String> {
                Some(self.0.describe())
            }
        }

        impl std::fmt::Debug for $consumer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.debug(stringify!($consumer), f)
            }
        }
    };
}
pub(crate) use consumer_face;
