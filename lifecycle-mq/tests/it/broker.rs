//! The two brokers behind one interface, so that each contract test is written once and run on
//! both: where a broker is, a queue (AMQP) or a stream with its durable consumer (JetStream),
//! what the broker holds, and the crate's consumer and publisher for it.

use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use lifecycle_core::{async_trait, BoxError, Component, Context, Health};
use lifecycle_mq::{
    Ack, AmqpConsumer, AmqpPublisher, AmqpPublisherHandle, ConsumerStats, Message, MqError,
    NatsConsumer, NatsPublisher, NatsPublisherHandle,
};

use crate::common::{self, unique};

/// A broker the contract runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Broker {
    Amqp,
    Nats,
}

impl Broker {
    /// Where the real broker listens.
    pub(crate) fn addr(self) -> &'static str {
        match self {
            Broker::Amqp => common::RABBITMQ,
            Broker::Nats => common::NATS,
        }
    }

    /// Whether the broker is there (false only outside CI, where the test then returns).
    pub(crate) async fn available(self) -> bool {
        match self {
            Broker::Amqp => common::server_available("RabbitMQ", common::RABBITMQ),
            Broker::Nats => common::server_available("NATS", common::NATS),
        }
    }

    /// The broker's URL at `addr` (a proxy, say), with the credentials it wants.
    pub(crate) fn url_at(self, addr: impl Display) -> String {
        match self {
            Broker::Amqp => format!("amqp://guest:guest@{addr}/%2f"),
            Broker::Nats => format!("nats://{addr}"),
        }
    }

    /// The real broker's URL.
    pub(crate) fn url(self) -> String {
        self.url_at(self.addr())
    }

    /// A URL with credentials `app:s3cret` where nothing listens, and how an error names it.
    pub(crate) fn unreachable_url(self) -> (&'static str, &'static str) {
        match self {
            Broker::Amqp => (
                "amqp://app:s3cret@127.0.0.1:1/%2f",
                "amqp://127.0.0.1:1/%2f",
            ),
            Broker::Nats => ("nats://app:s3cret@127.0.0.1:1", "nats://127.0.0.1:1"),
        }
    }

    /// A URL with credentials `app:s3cret` that does not parse.
    pub(crate) fn invalid_url(self) -> &'static str {
        match self {
            Broker::Amqp => "amqp://app:s3cret@host:port/%2f",
            Broker::Nats => "nats://app:s3cret@host:port",
        }
    }

    /// A new queue for `test`: on RabbitMQ a durable queue, a quorum queue (which counts
    /// deliveries) if `counting`; on JetStream a stream in memory, which always counts.
    pub(crate) async fn queue(self, test: &str, counting: bool) -> Queue {
        let name = unique(test);
        let admin = match self {
            Broker::Amqp => {
                let (connection, channel) = common::amqp::admin().await;
                common::amqp::declare(&channel, &name, counting).await;
                Admin::Amqp {
                    _connection: connection,
                    channel,
                }
            }
            Broker::Nats => {
                let js = common::nats::admin().await;
                common::nats::create_stream(&js, &name).await;
                Admin::Nats { js }
            }
        };
        Queue { name, admin }
    }

    /// A consumer of `queue` at `url` running `handler`, with `options`.
    pub(crate) fn consumer<H, Fut>(
        self,
        url: String,
        queue: &Queue,
        handler: H,
        options: Options,
    ) -> TestConsumer
    where
        H: Fn(Message) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Ack, std::io::Error>> + Send + 'static,
    {
        self.consumer_of(url, &queue.name, handler, options)
    }

    /// The same, of the queue (or stream) named `queue`, which may not exist.
    pub(crate) fn consumer_of<H, Fut>(
        self,
        url: String,
        queue: &str,
        handler: H,
        options: Options,
    ) -> TestConsumer
    where
        H: Fn(Message) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Ack, std::io::Error>> + Send + 'static,
    {
        match self {
            Broker::Amqp => TestConsumer::Amqp(Arc::new(
                AmqpConsumer::new(url, queue, handler)
                    .prefetch(options.prefetch)
                    .concurrency(options.concurrency)
                    .max_deliveries(options.max_deliveries),
            )),
            Broker::Nats => {
                let mut consumer = NatsConsumer::new(url, queue, DURABLE, handler)
                    .prefetch(u32::from(options.prefetch))
                    .concurrency(options.concurrency)
                    .max_deliveries(options.max_deliveries);
                if let Some(wait) = options.ack_wait {
                    consumer = consumer.ack_wait(wait);
                }
                TestConsumer::Nats(Arc::new(consumer))
            }
        }
    }

    /// A publisher to `url`, and a handle to publish with.
    pub(crate) fn publisher(self, url: String) -> (TestPublisher, Publish) {
        match self {
            Broker::Amqp => {
                let publisher = AmqpPublisher::new(url);
                let handle = publisher.handle();
                (TestPublisher::Amqp(publisher), Publish::Amqp(handle))
            }
            Broker::Nats => {
                let publisher = NatsPublisher::new(url);
                let handle = publisher.handle();
                (TestPublisher::Nats(publisher), Publish::Nats(handle))
            }
        }
    }
}

/// The JetStream durable consumer every test's consumer uses.
pub(crate) const DURABLE: &str = "workers";

/// A consumer's settings, as far as both brokers have them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    pub(crate) prefetch: u16,
    pub(crate) concurrency: u32,
    pub(crate) max_deliveries: u32,
    /// JetStream only: how long the server waits for an ack (the consumer's default if `None`).
    pub(crate) ack_wait: Option<Duration>,
}

impl Default for Options {
    /// The crate's defaults: a prefetch of 10, one handler, 5 deliveries.
    fn default() -> Self {
        Options {
            prefetch: 10,
            concurrency: 1,
            max_deliveries: 5,
            ack_wait: None,
        }
    }
}

/// A queue or stream of one test, and an admin connection to see it through.
pub(crate) struct Queue {
    /// The queue's name; on JetStream the stream's, and the subject it captures.
    pub(crate) name: String,
    admin: Admin,
}

enum Admin {
    Amqp {
        _connection: lapin::Connection,
        channel: lapin::Channel,
    },
    Nats {
        js: async_nats::jetstream::Context,
    },
}

impl Queue {
    /// Publishes `payloads`, each confirmed by the broker.
    pub(crate) async fn publish(&self, payloads: impl IntoIterator<Item = String>) {
        match &self.admin {
            Admin::Amqp { channel, .. } => {
                common::amqp::publish(channel, &self.name, payloads).await;
            }
            Admin::Nats { js } => common::nats::publish(js, &self.name, payloads).await,
        }
    }

    /// The messages stored and not yet delivered to a consumer.
    pub(crate) async fn ready(&self) -> u64 {
        match &self.admin {
            Admin::Amqp { channel, .. } => {
                u64::from(common::amqp::ready(channel, &self.name).await)
            }
            Admin::Nats { js } => {
                let mut stream = js.get_stream(&self.name).await.unwrap();
                match stream.consumer_info(DURABLE).await {
                    Ok(info) => info.num_pending,
                    // No consumer yet: every message in the stream.
                    Err(_) => stream.info().await.unwrap().state.messages,
                }
            }
        }
    }

    /// The messages delivered to a consumer and neither acked nor handed back yet.
    pub(crate) async fn unacked(&self) -> u64 {
        match &self.admin {
            Admin::Amqp { .. } => common::amqp::unacked(&self.name),
            Admin::Nats { js } => common::nats::ack_pending(js, &self.name, DURABLE).await as u64,
        }
    }

    /// The messages the broker still holds for the consumer: not delivered, or delivered and
    /// not acked.
    pub(crate) async fn unsettled(&self) -> u64 {
        self.ready().await + self.unacked().await
    }

    /// Waits up to `within` for `unsettled` to be `n`; returns what it last was.
    pub(crate) async fn settles_to(&self, n: u64, within: Duration) -> u64 {
        let until = tokio::time::Instant::now() + within;
        loop {
            let now = self.unsettled().await;
            if now == n || tokio::time::Instant::now() > until {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Takes up to `n` messages as another consumer would (RabbitMQ: `basic.get` on the admin
    /// channel, which keeps them unacked; JetStream: a pull of the durable consumer), for up
    /// to `within`; whether each was a redelivery.
    pub(crate) async fn take(&self, n: usize, within: Duration) -> Vec<bool> {
        match &self.admin {
            Admin::Amqp { channel, .. } => common::amqp::take(channel, &self.name, n, within).await,
            Admin::Nats { js } => {
                use futures::StreamExt;
                let other: async_nats::jetstream::consumer::PullConsumer = js
                    .get_stream(&self.name)
                    .await
                    .unwrap()
                    .get_consumer(DURABLE)
                    .await
                    .unwrap();
                let mut pull = other
                    .batch()
                    .max_messages(n)
                    .expires(within)
                    .messages()
                    .await
                    .unwrap();
                let mut taken = Vec::new();
                while let Some(message) = pull.next().await {
                    taken.push(message.unwrap().info().unwrap().delivered > 1);
                }
                taken
            }
        }
    }

    /// Deletes the queue (or stream).
    pub(crate) async fn delete(&self) {
        match &self.admin {
            Admin::Amqp { channel, .. } => common::amqp::delete(channel, &self.name).await,
            Admin::Nats { js } => common::nats::delete_stream(js, &self.name).await,
        }
    }
}

/// A consumer shared with the test, so that the test reads its stats while it runs.
#[derive(Debug, Clone)]
pub(crate) enum TestConsumer {
    Amqp(Arc<AmqpConsumer>),
    Nats(Arc<NatsConsumer>),
}

impl TestConsumer {
    pub(crate) fn stats(&self) -> ConsumerStats {
        match self {
            TestConsumer::Amqp(c) => c.stats(),
            TestConsumer::Nats(c) => c.stats(),
        }
    }

    fn component(&self) -> &dyn Component {
        match self {
            TestConsumer::Amqp(c) => &**c,
            TestConsumer::Nats(c) => &**c,
        }
    }
}

#[async_trait]
impl Component for TestConsumer {
    async fn start(&self, ctx: &Context) -> Result<(), BoxError> {
        self.component().start(ctx).await
    }
    async fn stop(&self, ctx: &Context) -> Result<(), BoxError> {
        self.component().stop(ctx).await
    }
    async fn health(&self) -> Health {
        self.component().health().await
    }
    fn held_by(&self) -> Vec<String> {
        self.component().held_by()
    }
    fn describe(&self) -> Option<String> {
        self.component().describe()
    }
}

/// A publisher of either broker.
#[derive(Debug)]
pub(crate) enum TestPublisher {
    Amqp(AmqpPublisher),
    Nats(NatsPublisher),
}

impl TestPublisher {
    fn component(&self) -> &dyn Component {
        match self {
            TestPublisher::Amqp(p) => p,
            TestPublisher::Nats(p) => p,
        }
    }
}

#[async_trait]
impl Component for TestPublisher {
    async fn start(&self, ctx: &Context) -> Result<(), BoxError> {
        self.component().start(ctx).await
    }
    async fn stop(&self, ctx: &Context) -> Result<(), BoxError> {
        self.component().stop(ctx).await
    }
    async fn health(&self) -> Health {
        self.component().health().await
    }
    fn describe(&self) -> Option<String> {
        self.component().describe()
    }
}

/// A publisher's handle, of either broker.
#[derive(Debug, Clone)]
pub(crate) enum Publish {
    Amqp(AmqpPublisherHandle),
    Nats(NatsPublisherHandle),
}

impl Publish {
    /// Publishes `payload` to `queue`: on RabbitMQ through the default exchange, routed by
    /// the queue's name; on JetStream on the subject the stream captures.
    pub(crate) async fn to(&self, queue: &str, payload: &[u8]) -> Result<(), MqError> {
        match self {
            Publish::Amqp(handle) => handle.publish("", queue, payload).await,
            Publish::Nats(handle) => handle.publish(queue, payload).await,
        }
    }
}
