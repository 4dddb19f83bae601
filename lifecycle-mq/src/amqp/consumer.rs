//! `AmqpConsumer`: a queue consumer that hands back what it has not processed when it stops.
//! What it shares with `NatsConsumer` is in `crate::consumer`; here is only what AMQP does
//! differently: `basic.qos` and `basic.consume`, `basic.cancel` at the stop, the subscription's
//! buffer, acks, nacks and rejects.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Acker;
use lifecycle_core::{BoxError, Redacted};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::amqp::connect::{check_url, open, AmqpConnection};
use crate::broker::Connection;
use crate::consumer::Consumer;
use crate::error::MqError;
use crate::message::{Ack, Message};
use crate::settle::Settle;
use crate::stop::{step, StepFailed};
use crate::subscription::{Next, Subscribe, Subscription};

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
/// [`ConsumerStats::dead`](crate::ConsumerStats::dead); a panic never fails the component. Only quorum queues count
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
pub struct AmqpConsumer(Consumer<AmqpQueue>);

/// What an AMQP consumer adds to the neutral one: its queue and prefetch.
#[derive(Debug)]
pub(crate) struct AmqpQueue {
    queue: String,
    prefetch: u16,
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
        let queue = queue.into();
        let broker = AmqpQueue {
            queue: queue.clone(),
            prefetch: 10,
        };
        AmqpConsumer(Consumer::new(broker, url.into(), queue, handler))
    }

    /// How many messages the broker may send before they are acked (`basic.qos`, default 10):
    /// those in progress plus those waiting in the client for a free handler. At least the
    /// concurrency, or handlers sit idle; more smooths the flow but hands more messages back at
    /// a stop. Zero means no limit, which AMQP allows and this crate advises against.
    #[must_use]
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.0.broker.prefetch = prefetch;
        self
    }
}

crate::consumer::consumer_face!(AmqpConsumer);

/// The connection of one run, and the tag its subscription is cancelled by.
pub(crate) struct Subscribed {
    link: AmqpConnection,
    tag: String,
}

impl Connection for Subscribed {
    fn connected(&self) -> bool {
        self.link.connected()
    }

    async fn close(self, limit: Instant) -> Result<(), StepFailed> {
        self.link.close(limit).await
    }
}

impl Subscribe for AmqpQueue {
    type Connection = Subscribed;
    type Subscription = lapin::Consumer;

    fn prefetch(&self) -> u32 {
        u32::from(self.prefetch)
    }

    fn check_url(&self, url: &str, target: &Redacted) -> Result<(), MqError> {
        check_url(url, target)
    }

    /// Connects, sets the prefetch and subscribes (`basic.consume`), under a tag new to this
    /// attempt.
    async fn subscribe(
        &self,
        url: &str,
        name: &str,
        _connect_timeout: Duration,
    ) -> Result<(Subscribed, lapin::Consumer), String> {
        let tag = consumer_tag(name);
        let subscribing = async {
            let link = open(url, name).await?;
            link.channel
                .basic_qos(self.prefetch, BasicQosOptions::default())
                .await?;
            let consumer = link
                .channel
                .basic_consume(
                    self.queue.as_str().into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            lapin::Result::Ok((Subscribed { link, tag }, consumer))
        };
        subscribing.await.map_err(|e| e.to_string())
    }

    /// `basic.cancel`, if the connection is up; its `cancel-ok` ends the subscription's buffer.
    async fn stop_receiving(connection: &Subscribed, limit: Instant) -> Result<bool, StepFailed> {
        if !connection.connected() {
            return Ok(false);
        }
        let cancel = connection.link.channel.basic_cancel(
            connection.tag.as_str().into(),
            BasicCancelOptions::default(),
        );
        step(limit, cancel)
            .await
            .map(|()| true)
            .map_err(|reason| ("basic.cancel", reason))
    }
}

impl Subscription for lapin::Consumer {
    type Delivery = Acker;

    async fn next(&mut self, stop: &CancellationToken, _in_hand: usize) -> Next<Acker> {
        let next = tokio::select! {
            biased;
            () = stop.cancelled() => return Next::Stopped,
            next = StreamExt::next(self) => next,
        };
        match next {
            Some(Ok(delivery)) => {
                let message = message(&delivery);
                Next::Message(delivery.acker, message)
            }
            Some(Err(error)) => Next::Lost(error.to_string()),
            None => Next::Ended("the broker cancelled the subscription".to_owned()),
        }
    }

    /// After `basic.cancel-ok` the buffer ends; without it (broker gone), takes only what is
    /// already there.
    async fn unstarted(mut self, confirmed: bool, give_up: Instant) -> Vec<Acker> {
        let mut returned = Vec::new();
        loop {
            let next = if confirmed {
                match tokio::time::timeout_at(give_up, StreamExt::next(&mut self)).await {
                    Ok(next) => next,
                    Err(_) => break,
                }
            } else {
                match futures::FutureExt::now_or_never(StreamExt::next(&mut self)) {
                    Some(next) => next,
                    None => break,
                }
            };
            match next {
                Some(Ok(delivery)) => returned.push(delivery.acker),
                Some(Err(_)) | None => break,
            }
        }
        returned
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
