//! `NatsConsumer`: a JetStream pull consumer that hands back what it has not processed when
//! it stops. What it shares with `AmqpConsumer` is in `crate::consumer`; here is only what
//! JetStream does differently: the durable consumer, pulls of what the prefetch leaves room
//! for, the pull in progress at the stop, and double acks.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::{Batch, Config};
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer};
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use lifecycle_core::{BoxError, Context, Redacted};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::consumer::Consumer;
use crate::error::MqError;
use crate::message::{Ack, Message};
use crate::nats::connect::{check_url, open, NatsConnection};
use crate::settle::Settle;
use crate::stop::StepFailed;
use crate::subscription::{Next, Subscribe, Subscription};

/// How many pulls in a row may fail before the consumer reports a failure.
const PULL_FAILURES: u32 = 5;

/// How long a settlement (ack, nak, term) waits for the server's confirmation: a round trip on
/// a healthy server takes milliseconds, and one sent as the connection dropped is never
/// answered, which would otherwise hold the stop until its deadline.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(1);

/// A JetStream pull consumer (NATS) as a lifecycle component: it runs a handler on each
/// message of a durable consumer on a stream, at most [`concurrency`](Self::concurrency) at
/// once, with at most [`prefetch`](Self::prefetch) messages unacknowledged (the consumer's
/// `max_ack_pending`, and the most it pulls), and acks, naks or terminates each message as its
/// handler answers ([`Ack`]).
///
/// - **Start** connects and creates the durable consumer if it does not exist (explicit acks,
///   `max_ack_pending` = prefetch, the [`ack_wait`](Self::ack_wait)), retrying with backoff
///   until shortly before the start timeout; an error names the server without credentials.
/// - **While running**, it pulls in batches of what the prefetch leaves room for, each pull
///   waiting at most [`pull_wait`](Self::pull_wait). A lost connection
///   ([`MqError::ConnectionLost`]) or pulls that keep failing ([`MqError::SubscriptionEnded`])
///   are run-time failures for the component's
///   [`OnFailure`](lifecycle_core::OnFailure) policy; async-nats retries the connection once,
///   so no reconnect loop outlives the stop.
/// - **At its stop turn**, in this order: it stops pulling; the messages of the pull in progress
///   that were not started are handed back (`-NAK`, redelivered at once) as they arrive, until
///   that pull expires; the handlers in progress finish, until shortly before the stop timeout,
///   and their messages are acked or naked; handlers still running then are cut off and their
///   messages naked ([`MqError::HandlersCutOff`]), never acked; the connection is drained, which
///   flushes the acks, and closed, and its background task awaited. With the server gone, each
///   step gives up by the stop deadline ([`MqError::StopIncomplete`]); what was not acked is
///   redelivered after the `ack_wait`.
///
/// Delivery is **at least once**: a message is acked only after its handler returned
/// [`Ack::Done`]; a message whose handler was cut off, or whose process died, is delivered
/// again, with [`Message::delivery_count`] counting. A message whose handler fails (an error,
/// a panic) at its [`max_deliveries`](Self::max_deliveries)-th delivery is terminated (`+TERM`)
/// and counted in [`ConsumerStats::dead`](crate::ConsumerStats::dead); a panic never fails the component.
///
/// # Examples
///
/// ```no_run
/// use lifecycle_core::{Lifecycle, Registration};
/// use lifecycle_mq::{Ack, NatsConsumer};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let orders = NatsConsumer::new("nats://127.0.0.1:4222", "ORDERS", "order-mailer", |message| async move {
///     println!("order {:?}", String::from_utf8_lossy(message.payload()));
///     Ok::<_, std::io::Error>(Ack::Done)
/// })
/// .prefetch(20)
/// .concurrency(4)
/// // A message that failed 3 deliveries is terminated instead of delivered again.
/// .max_deliveries(3);
/// let lifecycle = Lifecycle::builder()
///     .register(Registration::new("orders", orders))
///     .build()?;
/// # drop(lifecycle);
/// # Ok(())
/// # }
/// ```
pub struct NatsConsumer(Consumer<JetStreamConsumer>);

/// What a JetStream consumer adds to the neutral one: the stream, the durable consumer and
/// how it pulls.
#[derive(Debug)]
pub(crate) struct JetStreamConsumer {
    stream: String,
    durable: String,
    prefetch: u32,
    ack_wait: Duration,
    pull_wait: Duration,
}

impl NatsConsumer {
    /// A consumer of the durable JetStream consumer `durable` on `stream`, on the server at
    /// `url` (`nats://user:password@host:4222`), that runs `handler` on each message, with a
    /// prefetch of 10, one handler at a time, a 30 s ack wait, 500 ms pulls and a 2 s connect
    /// timeout. The stream must exist when the consumer starts.
    pub fn new<H, Fut, E>(
        url: impl Into<String>,
        stream: impl Into<String>,
        durable: impl Into<String>,
        handler: H,
    ) -> Self
    where
        H: Fn(Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Ack, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let broker = JetStreamConsumer {
            stream: stream.into(),
            durable: durable.into(),
            prefetch: 10,
            ack_wait: Duration::from_secs(30),
            pull_wait: Duration::from_millis(500),
        };
        let queue = format!("{}/{}", broker.stream, broker.durable);
        NatsConsumer(Consumer::new(broker, url.into(), queue, handler))
    }

    /// How many messages may be unacknowledged at once (default 10, at least 1): those in
    /// progress plus those pulled and waiting for a free handler. It is the durable consumer's
    /// `max_ack_pending` when this component creates it.
    #[must_use]
    pub fn prefetch(mut self, prefetch: u32) -> Self {
        self.0.broker.prefetch = prefetch.max(1);
        self
    }

    /// How long the server waits for an ack before it delivers a message again (default 30 s),
    /// when this component creates the consumer. A killed process's messages come back after
    /// it; keep it longer than a handler takes.
    #[must_use]
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.0.broker.ack_wait = wait;
        self
    }

    /// How long one pull waits for messages (default 500 ms). The stop waits for the pull in
    /// progress to expire, to hand back what it brings, so this adds to the stop's duration.
    #[must_use]
    pub fn pull_wait(mut self, wait: Duration) -> Self {
        self.0.broker.pull_wait = wait;
        self
    }
}

crate::consumer::consumer_face!(NatsConsumer);

impl Subscribe for JetStreamConsumer {
    type Connection = NatsConnection;
    type Subscription = Pulls;

    fn prefetch(&self) -> u32 {
        self.prefetch
    }

    fn check_url(&self, url: &str, target: &Redacted) -> Result<(), MqError> {
        check_url(url, target)
    }

    /// Connects and gets or creates the durable consumer (explicit acks, `max_ack_pending` =
    /// prefetch, the ack wait).
    async fn subscribe(
        &self,
        url: &str,
        name: &str,
        connect_timeout: Duration,
    ) -> Result<(NatsConnection, Pulls), String> {
        let subscribing = async {
            let connection = open(url, name, connect_timeout).await?;
            let js = jetstream::new(connection.client.clone());
            let stream = js.get_stream(&self.stream).await?;
            let consumer = stream
                .get_or_create_consumer(
                    &self.durable,
                    Config {
                        durable_name: Some(self.durable.clone()),
                        ack_policy: AckPolicy::Explicit,
                        ack_wait: self.ack_wait,
                        max_ack_pending: i64::from(self.prefetch),
                        ..Config::default()
                    },
                )
                .await?;
            Ok::<_, BoxError>((connection, consumer))
        };
        let (connection, consumer) = subscribing.await.map_err(|e| e.to_string())?;
        let pulls = Pulls {
            consumer,
            batch: None,
            prefetch: self.prefetch,
            pull_wait: self.pull_wait,
            failures: 0,
        };
        Ok((connection, pulls))
    }

    /// The connection's events are watched for its loss: pulls only time out without it.
    fn watch(&self, connection: &mut NatsConnection, ctx: &Context, named: (&Redacted, &str)) {
        connection.watch(ctx, named);
    }

    /// Nothing to tell the server: a pull consumer gets only what it pulls, and the
    /// dispatcher stopped pulling at the token.
    async fn stop_receiving(
        _connection: &NatsConnection,
        _limit: Instant,
    ) -> Result<bool, StepFailed> {
        Ok(true)
    }
}

/// Each settlement is confirmed by the server (a plain `-NAK` or `+ACK` is only queued in the
/// client and could be lost in the close that follows).
impl Settle for jetstream::Message {
    async fn settle(self, ack: Ack) -> Result<(), String> {
        let kind = match ack {
            Ack::Done => AckKind::Ack,
            Ack::Requeue => AckKind::Nak(None),
            Ack::Reject => AckKind::Term,
        };
        match tokio::time::timeout(SETTLE_TIMEOUT, self.double_ack_with(kind)).await {
            Ok(confirmed) => confirmed.map_err(|e| e.to_string()),
            Err(_) => Err("no confirmation from the server".to_owned()),
        }
    }
}

/// The pulls of one run: what the prefetch leaves room for, each waiting at most `pull_wait`.
pub(crate) struct Pulls {
    consumer: PullConsumer,
    /// The pull in progress.
    batch: Option<Batch>,
    prefetch: u32,
    pull_wait: Duration,
    /// Pulls failed in a row.
    failures: u32,
}

impl Subscription for Pulls {
    type Delivery = jetstream::Message;

    async fn next(&mut self, stop: &CancellationToken, in_hand: usize) -> Next<jetstream::Message> {
        loop {
            let pull = match self.batch.as_mut() {
                Some(pull) => pull,
                None => {
                    // Pull what the prefetch leaves room for: the server holds the rest.
                    let room = (self.prefetch as usize).saturating_sub(in_hand).max(1);
                    let request = self
                        .consumer
                        .batch()
                        .max_messages(room)
                        .expires(self.pull_wait)
                        .messages();
                    // Not cut short by the token: a pull request sent but forgotten would
                    // bring messages no one hands back, held until the ack wait.
                    let requested = match tokio::time::timeout(self.pull_wait, request).await {
                        Ok(requested) => requested.map_err(|e| e.to_string()),
                        Err(_) => Err("the pull request was not sent in time".to_owned()),
                    };
                    match requested {
                        Ok(pull) if stop.is_cancelled() => {
                            self.batch = Some(pull);
                            return Next::Stopped;
                        }
                        Ok(pull) => self.batch.insert(pull),
                        Err(error) => {
                            if let Some(end) = self.pull_failed(stop, error).await {
                                return end;
                            }
                            continue;
                        }
                    }
                }
            };
            // The server ends a pull when it expires; one that says nothing for twice as long
            // has no one answering it (its consumer was deleted, say), and would otherwise be
            // waited for for ever.
            let silence = self.pull_wait * 2;
            let next = tokio::select! {
                biased;
                () = stop.cancelled() => return Next::Stopped,
                next = tokio::time::timeout(silence, pull.next()) => next,
            };
            let error = match next {
                Ok(Some(Ok(message))) => {
                    self.failures = 0;
                    let view = view(&message);
                    return Next::Message(message, view);
                }
                Ok(Some(Err(error))) => error.to_string(),
                Err(_) => format!("the pull was not answered within {silence:?}"),
                // The pull expired or brought all it asked for.
                Ok(None) => {
                    self.failures = 0;
                    self.batch = None;
                    continue;
                }
            };
            self.batch = None;
            if let Some(end) = self.pull_failed(stop, error).await {
                return end;
            }
        }
    }

    /// What the pull in progress brings, as it arrives, until it expires.
    async fn unstarted(self, _confirmed: bool, give_up: Instant) -> Vec<jetstream::Message> {
        let mut returned = Vec::new();
        if let Some(mut batch) = self.batch {
            let until = give_up.min(Instant::now() + self.pull_wait + Duration::from_millis(100));
            while let Ok(Some(Ok(message))) = tokio::time::timeout_at(until, batch.next()).await {
                returned.push(message);
            }
        }
        returned
    }
}

impl Pulls {
    /// A pull failed: waits a pull's time before the next (a failing pull fails at once, and
    /// would otherwise spin), and after [`PULL_FAILURES`] in a row (the consumer or the stream
    /// was deleted, say) ends the subscription. [`Next::Stopped`] at the stop turn. A lost
    /// connection is the connection watcher's to report.
    async fn pull_failed(
        &mut self,
        stop: &CancellationToken,
        error: String,
    ) -> Option<Next<jetstream::Message>> {
        self.failures += 1;
        tracing::debug!(%error, failures = self.failures, "pull failed");
        if self.failures >= PULL_FAILURES {
            return Some(Next::Ended(format!(
                "{PULL_FAILURES} pulls in a row failed, the last with: {error}"
            )));
        }
        match stop
            .run_until_cancelled(tokio::time::sleep(self.pull_wait))
            .await
        {
            Some(()) => None,
            None => Some(Next::Stopped),
        }
    }
}

/// The handler's view of a JetStream message.
fn view(message: &jetstream::Message) -> Message {
    let delivered = message
        .info()
        .ok()
        .and_then(|info| u64::try_from(info.delivered).ok());
    Message {
        payload: message.payload.to_vec(),
        subject: message.subject.to_string(),
        message_id: message
            .headers
            .as_ref()
            .and_then(|headers| headers.get("Nats-Msg-Id"))
            .map(|id| id.as_str().to_owned()),
        redelivered: delivered.is_some_and(|d| d > 1),
        delivery_count: delivered,
        last_delivery: false,
    }
}
