//! `NatsConsumer`: a JetStream pull consumer that hands back what it has not processed when
//! it stops.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::jetstream::consumer::pull::{Batch, Config};
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer};
use async_nats::jetstream::{self, AckKind};
use async_nats::Event;
use futures::StreamExt;
use lifecycle_core::{async_trait, BoxError, Component, Context, Health};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::consume::{close_by, finish_handlers, hand_back_all, stop_result, Handlers, Settle};
use crate::deadline::{give_up_at, retry_until};
use crate::error::{redact, MqError};
use crate::handler::{self, Handler};
use crate::in_flight::InFlight;
use crate::message::{Ack, Message};
use crate::metrics::{ConsumerMetrics, Ended, Tally};
use crate::nats::connect::{check_url, open, Connection};
use crate::stats::{ConsumerStats, Counters};
use lifecycle_core::held_by::Holding;

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
/// and counted in [`ConsumerStats::dead`]; a panic never fails the component.
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
pub struct NatsConsumer {
    url: String,
    target: String,
    stream: String,
    durable: String,
    handler: Handler,
    prefetch: u32,
    concurrency: u32,
    max_deliveries: u32,
    ack_wait: Duration,
    pull_wait: Duration,
    connect_timeout: Duration,
    counters: Arc<Counters>,
    /// The messages whose handlers run, for `held_by`.
    holding: Arc<Holding>,
    running: Mutex<Option<Running>>,
}

/// One run of the consumer, from its start to its stop.
struct Running {
    connection: Connection,
    dispatcher: JoinHandle<Option<Batch>>,
    in_flight: Arc<InFlight<jetstream::Message>>,
    tally: Tally,
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
        let url = url.into();
        NatsConsumer {
            target: redact(&url),
            url,
            stream: stream.into(),
            durable: durable.into(),
            handler: handler::boxed(handler),
            prefetch: 10,
            concurrency: 1,
            max_deliveries: 5,
            ack_wait: Duration::from_secs(30),
            pull_wait: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(2),
            counters: Arc::default(),
            holding: Arc::default(),
            running: Mutex::new(None),
        }
    }

    /// How many messages may be unacknowledged at once (default 10, at least 1): those in
    /// progress plus those pulled and waiting for a free handler. It is the durable consumer's
    /// `max_ack_pending` when this component creates it.
    #[must_use]
    pub fn prefetch(mut self, prefetch: u32) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }

    /// How many handlers may run at once (default 1, at least 1).
    #[must_use]
    pub fn concurrency(mut self, handlers: u32) -> Self {
        self.concurrency = handlers.max(1);
        self
    }

    /// How long the server waits for an ack before it delivers a message again (default 30 s),
    /// when this component creates the consumer. A killed process's messages come back after
    /// it; keep it longer than a handler takes.
    #[must_use]
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait;
        self
    }

    /// How long one pull waits for messages (default 500 ms). The stop waits for the pull in
    /// progress to expire, to hand back what it brings, so this adds to the stop's duration.
    #[must_use]
    pub fn pull_wait(mut self, wait: Duration) -> Self {
        self.pull_wait = wait;
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

    /// How long one attempt to connect may take (default 2 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// What the consumer did with its messages so far.
    pub fn stats(&self) -> ConsumerStats {
        self.counters.snapshot()
    }

    /// Connects and gets or creates the durable consumer, once.
    async fn subscribe(&self, name: &str) -> Result<(Connection, PullConsumer), BoxError> {
        let connection = open(&self.url, name, self.connect_timeout).await?;
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
        Ok((connection, consumer))
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

    fn queue(&self) -> String {
        format!("{}/{}", self.stream, self.durable)
    }

    fn stop_failed(&self, step: &'static str, reason: String) -> MqError {
        MqError::StopIncomplete {
            target: self.target.clone(),
            queue: self.queue(),
            step,
            reason,
        }
    }
}

#[async_trait]
impl Component for NatsConsumer {
    async fn start(&self, ctx: &Context) -> Result<(), BoxError> {
        self.check_settings(&self.queue())?;
        check_url(&self.url, &self.target)?;
        let (mut connection, consumer) = retry_until(
            &self.target,
            &self.queue(),
            give_up_at(ctx, Duration::from_secs(30)),
            || async {
                match tokio::time::timeout(self.connect_timeout, self.subscribe(ctx.name())).await {
                    Ok(result) => result.map_err(|e| e.to_string()),
                    Err(_) => Err("connecting timed out".to_owned()),
                }
            },
        )
        .await?;
        tracing::info!(component = ctx.name(), target_mq = %self.target, queue = %self.queue(),
            prefetch = self.prefetch, concurrency = self.concurrency,
            max_deliveries = self.max_deliveries, "consuming");

        // The events go to a watcher that reports a lost connection; the stop gets them back
        // to wait for the connection's end.
        let (forward, events) = tokio::sync::mpsc::unbounded_channel();
        let mut incoming = std::mem::replace(&mut connection.events, events);
        let (watch_ctx, target, queue) = (ctx.clone(), self.target.clone(), self.queue());
        ctx.spawn(async move {
            let mut reported = false;
            while let Some(event) = incoming.recv().await {
                let lost = matches!(event, Event::Disconnected);
                let _ = forward.send(event);
                if lost && !reported && !watch_ctx.token().is_cancelled() {
                    reported = true;
                    tracing::warn!(component = watch_ctx.name(), target_mq = %target, %queue,
                        "connection lost");
                    watch_ctx.report_failure(MqError::ConnectionLost {
                        target: target.clone(),
                        queue: queue.clone(),
                        reason: "disconnected from the server".to_owned(),
                    });
                }
            }
        });

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
            prefetch: self.prefetch,
            pull_wait: self.pull_wait,
            target: self.target.clone(),
            queue: self.queue(),
        };
        let dispatcher = ctx.spawn(dispatch.run());
        *self.running() = Some(Running {
            connection,
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
        let mut failures = Vec::new();

        // 1. The dispatcher stops pulling at the token and hands over the pull in progress.
        let batch = match tokio::time::timeout_at(give_up, running.dispatcher).await {
            Ok(Ok(batch)) => batch,
            _ => None,
        };

        // 2. Hand back what that pull brings, as it arrives, until the pull expires.
        if let Some(mut batch) = batch {
            let mut returned = Vec::new();
            let until = give_up.min(Instant::now() + self.pull_wait + Duration::from_millis(100));
            while let Ok(Some(Ok(message))) = tokio::time::timeout_at(until, batch.next()).await {
                returned.push(message);
            }
            if !returned.is_empty() {
                running
                    .tally
                    .ended(Ended::HandedBack, returned.len() as u64);
                tracing::info!(component = ctx.name(), queue = %self.queue(),
                    returned = returned.len(), "handing back messages not started");
                if let Err(reason) = hand_back_all(returned, give_up).await {
                    failures.push(self.stop_failed("handing back unstarted messages", reason));
                }
            }
        }

        // 3. Let the handlers in progress finish and settle their messages, until shortly
        //    before the deadline; then cut them off and hand their messages back.
        finish_handlers(
            &running.in_flight,
            ctx,
            &running.tally,
            (&self.target, &self.queue()),
            (give_up, close_by(ctx, give_up)),
            &self.holding,
            &mut failures,
        )
        .await;

        // 4. Drain the connection: the acks are flushed before it closes; then wait for its
        //    background task to end.
        if let Err(reason) = running.connection.close(close_by(ctx, give_up)).await {
            failures.push(self.stop_failed("closing the connection", reason));
        }
        tracing::info!(component = ctx.name(), queue = %self.queue(), stats = ?self.stats(), "consumer stopped");
        stop_result(ctx, failures)
    }

    async fn health(&self) -> Health {
        match self.running().as_ref() {
            Some(running) if running.connection.connected() => Health::Healthy,
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
            self.queue(),
            stats.received,
            stats.acked,
            stats.dead
        ))
    }
}

impl std::fmt::Debug for NatsConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConsumer")
            .field("target", &self.target)
            .field("stream", &self.stream)
            .field("durable", &self.durable)
            .field("prefetch", &self.prefetch)
            .field("concurrency", &self.concurrency)
            .field("max_deliveries", &self.max_deliveries)
            .field("running", &self.running().is_some())
            .field("stats", &self.stats())
            .finish()
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

/// The task that pulls messages and starts their handlers.
struct Dispatch {
    handlers: Handlers<jetstream::Message>,
    consumer: PullConsumer,
    prefetch: u32,
    pull_wait: Duration,
    target: String,
    queue: String,
}

impl Dispatch {
    /// Runs until the stop turn, then returns the pull in progress for the stop to drain.
    async fn run(self) -> Option<Batch> {
        let token = self.handlers.ctx.token().clone();
        let mut batch: Option<Batch> = None;
        let mut failures = 0;
        loop {
            let permit = tokio::select! {
                biased;
                () = token.cancelled() => return batch,
                permit = self.handlers.in_flight.room() => permit,
            };
            let message = loop {
                let pull = match batch.as_mut() {
                    Some(pull) => pull,
                    None => {
                        // Pull what the prefetch leaves room for: the server holds the rest.
                        let room = (self.prefetch as usize)
                            .saturating_sub(self.handlers.in_flight.len())
                            .max(1);
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
                            Ok(pull) if token.is_cancelled() => return Some(pull),
                            Ok(pull) => batch.insert(pull),
                            Err(error) => {
                                self.pull_failed(&mut failures, error).await?;
                                continue;
                            }
                        }
                    }
                };
                let next = tokio::select! {
                    biased;
                    () = token.cancelled() => return batch,
                    next = pull.next() => next,
                };
                match next {
                    Some(Ok(message)) => {
                        failures = 0;
                        break message;
                    }
                    Some(Err(error)) => {
                        batch = None;
                        self.pull_failed(&mut failures, error.to_string()).await?;
                    }
                    // The pull expired or brought all it asked for.
                    None => {
                        failures = 0;
                        batch = None;
                    }
                }
            };
            let view = view(&message);
            self.handlers.start(permit, message, view);
        }
    }

    /// A pull failed: waits a pull's time before the next (a failing pull fails at once, and
    /// would otherwise spin), and after [`PULL_FAILURES`] in a row (the consumer or the stream
    /// was deleted, say) reports the failure and returns `None` to end the dispatcher. Also
    /// `None` at the stop turn. A lost connection is the connection watcher's to report.
    async fn pull_failed(&self, failures: &mut u32, error: String) -> Option<()> {
        *failures += 1;
        tracing::debug!(component = self.handlers.ctx.name(), %error, failures = *failures, "pull failed");
        if *failures >= PULL_FAILURES {
            if !self.handlers.ctx.token().is_cancelled() {
                tracing::warn!(component = self.handlers.ctx.name(), queue = %self.queue, %error,
                    "pulls keep failing");
                self.handlers
                    .ctx
                    .report_failure(MqError::SubscriptionEnded {
                        target: self.target.clone(),
                        queue: self.queue.clone(),
                        reason: format!(
                            "{PULL_FAILURES} pulls in a row failed, the last with: {error}"
                        ),
                    });
            }
            return None;
        }
        self.handlers
            .ctx
            .token()
            .run_until_cancelled(tokio::time::sleep(self.pull_wait))
            .await
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
