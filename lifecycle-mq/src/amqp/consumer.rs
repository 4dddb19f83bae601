//! `AmqpConsumer`: a queue consumer that hands back what it has not processed when it stops.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Acker, Channel, Connection, Consumer};
use lifecycle_core::{async_trait, BoxError, Component, Context, Health};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::amqp::connect::{check_url, open, Socket};
use crate::consume::{close_by, finish_handlers, hand_back_all, stop_result, Handlers, Settle};
use crate::deadline::{give_up_at, retry_until, step};
use crate::error::{redact, MqError};
use crate::handler::{self, Handler};
use crate::in_flight::InFlight;
use crate::message::{Ack, Message};
use crate::metrics::{ConsumerMetrics, Ended, Tally};
use crate::stats::{ConsumerStats, Counters};
use lifecycle_core::held_by::Holding;

/// How long one request of the stop (`basic.cancel`, a channel close) may wait for its answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// A consumer of one AMQP queue (RabbitMQ) as a lifecycle component: it runs a handler on each
/// message, at most [`concurrency`](Self::concurrency) at once, with at most
/// [`prefetch`](Self::prefetch) messages unacknowledged (`basic.qos`), and acks, requeues or
/// rejects each message as its handler answers ([`Ack`]).
///
/// - **Start** connects, opens a channel, sets the prefetch and subscribes (`basic.consume`),
///   retrying with backoff until shortly before the start timeout; an error names the broker
///   without credentials.
/// - **While running**, a lost connection (the broker restarted, the network failed),
///   [`MqError::ConnectionLost`], or a subscription cancelled by the broker (the queue was
///   deleted), [`MqError::SubscriptionEnded`], is a run-time failure for the component's
///   [`OnFailure`](lifecycle_core::OnFailure) policy. There is no automatic reconnection.
/// - **At its stop turn**, in this order: the subscription is cancelled (`basic.cancel`), so
///   no new message arrives; the messages received but not started are handed back (`basic.nack`
///   with requeue); the handlers in progress finish, until shortly before the stop timeout, and
///   their messages are acked or nacked; handlers still running then are cut off and their
///   messages handed back ([`MqError::HandlersCutOff`]), never acked; the channel is closed,
///   which the broker answers only after it has processed every ack before it, and then the
///   connection. With the broker gone, each step gives up by the stop deadline
///   ([`MqError::StopIncomplete`]); the broker redelivers whatever was not acked.
///
/// Delivery is **at least once**: a message is acked only after its handler returned
/// [`Ack::Done`]; a message whose handler was cut off, or whose process died, is delivered
/// again, and the handler may then see it a second time ([`Message::redelivered`]). A message
/// whose handler fails (an error, a panic) at its [`max_deliveries`](Self::max_deliveries)-th
/// delivery is rejected to the queue's dead-letter exchange and counted in
/// [`ConsumerStats::dead`]; a panic never fails the component. Only quorum queues count
/// deliveries: see the crate documentation.
///
/// # Examples
///
/// ```no_run
/// use lifecycle_core::{Lifecycle, Registration};
/// use lifecycle_mq::{Ack, AmqpConsumer};
/// use std::time::Duration;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let orders = AmqpConsumer::new("amqp://guest:guest@127.0.0.1:5672/%2f", "orders", |message| async move {
///     println!("order {:?}", String::from_utf8_lossy(message.payload()));
///     Ok::<_, std::io::Error>(Ack::Done)
/// })
/// .prefetch(20)
/// .concurrency(4);
/// let lifecycle = Lifecycle::builder()
///     .register(Registration::new("orders", orders).stop_timeout(Duration::from_secs(10)))
///     .build()?;
/// # drop(lifecycle);
/// # Ok(())
/// # }
/// ```
pub struct AmqpConsumer {
    url: String,
    target: String,
    queue: String,
    handler: Handler,
    prefetch: u16,
    concurrency: u32,
    max_deliveries: u32,
    connect_timeout: Duration,
    counters: Arc<Counters>,
    /// The messages whose handlers run, for `held_by`.
    holding: Arc<Holding>,
    running: Mutex<Option<Running>>,
}

/// One run of the consumer, from its start to its stop.
struct Running {
    connection: Connection,
    channel: Channel,
    socket: Socket,
    tag: String,
    dispatcher: JoinHandle<Option<Consumer>>,
    in_flight: Arc<InFlight<Acker>>,
    tally: Tally,
}

impl AmqpConsumer {
    /// A consumer of `queue` on the broker at `url` (`amqp://user:password@host:5672/vhost`)
    /// that runs `handler` on each message, with a prefetch of 10, one handler at a time and a
    /// 2 s connect timeout. The queue must exist when the consumer starts.
    pub fn new<H, Fut, E>(url: impl Into<String>, queue: impl Into<String>, handler: H) -> Self
    where
        H: Fn(Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Ack, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let url = url.into();
        AmqpConsumer {
            target: redact(&url),
            url,
            queue: queue.into(),
            handler: handler::boxed(handler),
            prefetch: 10,
            concurrency: 1,
            max_deliveries: 5,
            connect_timeout: Duration::from_secs(2),
            counters: Arc::default(),
            holding: Arc::default(),
            running: Mutex::new(None),
        }
    }

    /// How many messages the broker may send before they are acked (`basic.qos`, default 10):
    /// those in progress plus those waiting in the client for a free handler. At least the
    /// concurrency, or handlers sit idle; more smooths the flow but hands more messages back at
    /// a stop. Zero means no limit, which AMQP allows and this crate advises against.
    #[must_use]
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// How many handlers may run at once (default 1, at least 1).
    #[must_use]
    pub fn concurrency(mut self, handlers: u32) -> Self {
        self.concurrency = handlers.max(1);
        self
    }

    /// The most deliveries a message gets (default 5, at least 1): a message whose handler
    /// fails (an error, a panic, [`Ack::Requeue`]) at its `max`-th delivery or later, as the
    /// broker counts them ([`Message::delivery_count`]), is rejected, to the broker's dead
    /// letter, instead of being handed back. Every delivery counts, a hand-back at a stop
    /// included. 0 is refused at the start ([`MqError::InvalidSetting`]).
    #[must_use]
    pub fn max_deliveries(mut self, max: u32) -> Self {
        self.max_deliveries = max;
        self
    }

    /// How long one attempt to connect and subscribe may take (default 2 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// What the consumer did with its messages so far.
    pub fn stats(&self) -> ConsumerStats {
        self.counters.snapshot()
    }

    /// Connects, sets the prefetch and subscribes, once.
    async fn subscribe(
        &self,
        name: &str,
        tag: &str,
    ) -> lapin::Result<(Connection, Channel, Socket, Consumer)> {
        let (connection, channel, socket) = open(&self.url, name).await?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                self.queue.as_str().into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok((connection, channel, socket, consumer))
    }

    /// Refuses settings out of their range, before anything connects.
    fn check_settings(&self, queue: &str) -> Result<(), MqError> {
        if self.max_deliveries == 0 {
            return Err(MqError::InvalidSetting {
                queue: queue.to_owned(),
                setting: "max_deliveries",
                reason: "must be at least 1: a maximum of 0 would dead-letter every message unseen"
                    .to_owned(),
            });
        }
        Ok(())
    }

    fn running(&self) -> MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stop_failed(&self, step: &'static str, reason: String) -> MqError {
        MqError::StopIncomplete {
            target: self.target.clone(),
            queue: self.queue.clone(),
            step,
            reason,
        }
    }
}

#[async_trait]
impl Component for AmqpConsumer {
    async fn start(&self, ctx: &Context) -> Result<(), BoxError> {
        self.check_settings(&self.queue)?;
        check_url(&self.url, &self.target)?;
        let tag = consumer_tag(ctx.name());
        let (connection, channel, socket, consumer) = retry_until(
            &self.target,
            &self.queue,
            give_up_at(ctx, Duration::from_secs(30)),
            || async {
                match tokio::time::timeout(self.connect_timeout, self.subscribe(ctx.name(), &tag))
                    .await
                {
                    Ok(result) => result.map_err(|e| e.to_string()),
                    Err(_) => Err("connecting timed out".to_owned()),
                }
            },
        )
        .await?;
        tracing::info!(component = ctx.name(), target_mq = %self.target, queue = %self.queue,
            prefetch = self.prefetch, concurrency = self.concurrency,
            max_deliveries = self.max_deliveries, "consuming");
        let in_flight = Arc::new(InFlight::new(self.concurrency));
        let tally = Tally {
            counters: self.counters.clone(),
            metrics: ConsumerMetrics::register(ctx.name()),
        };
        let dispatch = Dispatch {
            handlers: Handlers {
                ctx: ctx.clone(),
                handler: self.handler.clone(),
                in_flight: in_flight.clone(),
                tally: tally.clone(),
                max_deliveries: self.max_deliveries,
                holding: self.holding.clone(),
            },
            consumer,
            target: self.target.clone(),
            queue: self.queue.clone(),
        };
        let dispatcher = ctx.spawn(dispatch.run());
        *self.running() = Some(Running {
            connection,
            channel,
            socket,
            tag,
            dispatcher,
            in_flight,
            tally,
        });
        Ok(())
    }

    async fn stop(&self, ctx: &Context) -> Result<(), BoxError> {
        let Some(running) = self.running().take() else {
            return Ok(());
        };
        let give_up = give_up_at(ctx, Duration::from_secs(5));
        let reply_by = |now: Instant| give_up.min(now + REPLY_TIMEOUT);
        let mut failures = Vec::new();

        // 1. Cancel the subscription first, so that nothing more arrives while we drain.
        let cancelled = if running.connection.status().connected() {
            let cancel = running
                .channel
                .basic_cancel(running.tag.as_str().into(), BasicCancelOptions::default());
            match step(reply_by(Instant::now()), cancel).await {
                Ok(()) => true,
                Err(reason) => {
                    failures.push(self.stop_failed("basic.cancel", reason));
                    false
                }
            }
        } else {
            false
        };

        // 2. The dispatcher ended on the token; it hands over the subscription's buffer, or
        //    nothing if the connection was lost (already reported as a failure).
        let consumer = match tokio::time::timeout_at(give_up, running.dispatcher).await {
            Ok(Ok(consumer)) => consumer,
            _ => None,
        };

        // 3. Hand back what was received and never started. After `basic.cancel-ok` the buffer
        //    ends; without it (broker gone), take only what is already there.
        if let Some(mut consumer) = consumer {
            let mut returned = Vec::new();
            loop {
                let next = if cancelled {
                    match tokio::time::timeout_at(give_up, consumer.next()).await {
                        Ok(next) => next,
                        Err(_) => break,
                    }
                } else {
                    match futures::FutureExt::now_or_never(consumer.next()) {
                        Some(next) => next,
                        None => break,
                    }
                };
                match next {
                    Some(Ok(delivery)) => returned.push(delivery.acker),
                    Some(Err(_)) | None => break,
                }
            }
            if !returned.is_empty() {
                running
                    .tally
                    .ended(Ended::HandedBack, returned.len() as u64);
                tracing::info!(component = ctx.name(), queue = %self.queue,
                    returned = returned.len(), "handing back messages not started");
                if let Err(reason) = hand_back_all(returned, reply_by(Instant::now())).await {
                    failures.push(self.stop_failed("handing back unstarted messages", reason));
                }
            }
        }

        // 4. Let the handlers in progress finish and settle their messages, until shortly
        //    before the deadline; then cut them off and hand their messages back.
        finish_handlers(
            &running.in_flight,
            ctx,
            &running.tally,
            (&self.target, &self.queue),
            (give_up, close_by(ctx, give_up)),
            &self.holding,
            &mut failures,
        )
        .await;

        // 5. Closing the channel flushes the acks: the broker answers `channel.close-ok` only
        //    after every frame before it. Then the connection.
        if running.connection.status().connected() {
            let close_by = close_by(ctx, give_up);
            if let Err(reason) = step(
                close_by,
                running.channel.close(200, "consumer stopped".into()),
            )
            .await
            {
                failures.push(self.stop_failed("closing the channel", reason));
            } else if let Err(reason) = step(
                close_by,
                running.connection.close(200, "consumer stopped".into()),
            )
            .await
            {
                failures.push(self.stop_failed("closing the connection", reason));
            }
        }
        // Whatever happened, lapin's I/O loop ends now: after a clean close it has nothing left
        // to do, and with a silent broker it would otherwise wait for the heartbeat.
        running.socket.shut();
        tracing::info!(component = ctx.name(), queue = %self.queue, stats = ?self.stats(), "consumer stopped");
        stop_result(ctx, failures)
    }

    async fn health(&self) -> Health {
        match self.running().as_ref() {
            Some(running) if running.connection.status().connected() => Health::Healthy,
            Some(_) => Health::unhealthy(format!("not connected to {}", self.target)),
            None => Health::unhealthy("not running"),
        }
    }

    /// The messages whose handlers run, the oldest first: `message 7f3a, delivery 2, running
    /// 12.3s` (the publisher's message id, if it set one).
    fn held_by(&self) -> Vec<String> {
        self.holding.list()
    }

    fn describe(&self) -> Option<String> {
        let in_progress = self.running().as_ref().map_or(0, |r| r.in_flight.len());
        let stats = self.stats();
        Some(format!(
            "consuming {}: {} received, {} acked, {} dead-lettered, {in_progress} in progress",
            self.queue, stats.received, stats.acked, stats.dead
        ))
    }
}

impl std::fmt::Debug for AmqpConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpConsumer")
            .field("target", &self.target)
            .field("queue", &self.queue)
            .field("prefetch", &self.prefetch)
            .field("concurrency", &self.concurrency)
            .field("max_deliveries", &self.max_deliveries)
            .field("running", &self.running().is_some())
            .field("stats", &self.stats())
            .finish()
    }
}

/// A consumer tag unique to one run of one component in this process.
fn consumer_tag(name: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static RUNS: AtomicU64 = AtomicU64::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    )
}

impl Settle for Acker {
    async fn settle(self, ack: Ack) -> Result<(), String> {
        let settled = match ack {
            Ack::Done => self.ack(BasicAckOptions::default()).await,
            Ack::Requeue => {
                let requeue = BasicNackOptions {
                    requeue: true,
                    multiple: false,
                };
                self.nack(requeue).await
            }
            Ack::Reject => self.reject(BasicRejectOptions { requeue: false }).await,
        };
        settled.map(drop).map_err(|e| e.to_string())
    }
}

/// The task that takes messages from the subscription and starts their handlers.
struct Dispatch {
    handlers: Handlers<Acker>,
    consumer: Consumer,
    target: String,
    queue: String,
}

impl Dispatch {
    /// Runs until the stop turn, then returns the subscription for the stop to drain; returns
    /// `None` after reporting a lost connection.
    async fn run(mut self) -> Option<Consumer> {
        let ctx = self.handlers.ctx.clone();
        let token = ctx.token().clone();
        loop {
            let permit = tokio::select! {
                biased;
                () = token.cancelled() => return Some(self.consumer),
                permit = self.handlers.in_flight.room() => permit,
            };
            let next = tokio::select! {
                biased;
                () = token.cancelled() => return Some(self.consumer),
                next = self.consumer.next() => next,
            };
            let (reason, ended) = match next {
                Some(Ok(delivery)) => {
                    let message = message(&delivery);
                    self.handlers.start(permit, delivery.acker, message);
                    continue;
                }
                Some(Err(error)) => (error.to_string(), false),
                None => ("the broker cancelled the subscription".to_owned(), true),
            };
            if token.is_cancelled() {
                return None;
            }
            tracing::warn!(component = ctx.name(), target_mq = %self.target,
                queue = %self.queue, %reason, "consumer lost");
            let (target, queue) = (self.target, self.queue);
            ctx.report_failure(if ended {
                MqError::SubscriptionEnded {
                    target,
                    queue,
                    reason,
                }
            } else {
                MqError::ConnectionLost {
                    target,
                    queue,
                    reason,
                }
            });
            // The subscription is gone, not the connection: the stop still closes it cleanly.
            return if ended { Some(self.consumer) } else { None };
        }
    }
}

/// The handler's view of a delivery.
fn message(delivery: &Delivery) -> Message {
    let count = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get("x-delivery-count"))
        .and_then(as_u64);
    Message {
        payload: delivery.data.clone(),
        subject: delivery.routing_key.to_string(),
        message_id: delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string()),
        redelivered: delivery.redelivered || count.is_some_and(|c| c > 0),
        // Quorum queues count the earlier deliveries in `x-delivery-count`; other queues only
        // say whether there was one.
        delivery_count: match count {
            Some(earlier) => Some(earlier + 1),
            None if !delivery.redelivered => Some(1),
            None => None,
        },
        last_delivery: false,
    }
}

fn as_u64(value: &AMQPValue) -> Option<u64> {
    match *value {
        AMQPValue::LongLongInt(n) => u64::try_from(n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(n).ok(),
        AMQPValue::LongUInt(n) => Some(u64::from(n)),
        AMQPValue::ShortInt(n) => u64::try_from(n).ok(),
        AMQPValue::ShortUInt(n) => Some(u64::from(n)),
        AMQPValue::ShortShortInt(n) => u64::try_from(n).ok(),
        AMQPValue::ShortShortUInt(n) => Some(u64::from(n)),
        _ => None,
    }
}
