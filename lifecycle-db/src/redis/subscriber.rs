//! `RedisSubscriber`: a Redis pub/sub subscription on a connection of its own, as a component.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lifecycle_core::{async_trait, retry_until, BoxError, Component, Context, Redacted};
use redis::aio::{PubSub, PubSubSink, PubSubStream};
use redis::{Msg, RedisResult};
use tokio::time::Instant;

use crate::error::DbError;
use crate::GIVE_UP_RESERVE;

/// How long a keep-alive ping, or the unsubscribe at the stop, may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(1);

/// A Redis pub/sub subscription as a lifecycle component: it subscribes to its channels and
/// patterns on a connection of its own (a subscribed connection can do nothing else) and calls
/// a handler for each message, one at a time.
///
/// - **Start** connects and subscribes, retrying with backoff until shortly before the start
///   timeout, so that messages published once the service is ready are received.
/// - **While running**, it pings the server every [`ping_interval`](Self::ping_interval). When
///   the subscription ends (the server closed the connection: `CLIENT KILL TYPE pubsub`, the
///   output buffer limit, a restart) or a ping goes unanswered, it reports
///   [`DbError::SubscriptionLost`] as a run-time failure instead of waiting for ever, and the
///   component's [`OnFailure`](lifecycle_core::OnFailure) policy applies: shut the service
///   down (the default), or resubscribe with `OnFailure::restart(..)`. Pub/sub delivers at
///   most once: messages published while no subscription exists are lost.
/// - **Stop** ends the loop between messages when its token is cancelled, unsubscribes (best
///   effort, for at most a second and never past the stop timeout) and closes the connection.
///   A handler that is running is let finish; keep handlers short, as the lifecycle aborts the
///   task at the stop timeout.
///
/// # Examples
///
/// ```
/// use lifecycle_core::{Lifecycle, OnFailure, Registration};
/// use lifecycle_db::RedisSubscriber;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let invalidations = RedisSubscriber::new("redis://127.0.0.1:6379/", |message| async move {
///     let key: String = message.get_payload().unwrap_or_default();
///     println!("evict {key} from the local cache");
/// })?
/// .channel("cache-invalidations");
/// let lifecycle = Lifecycle::builder()
///     .register(
///         Registration::new("invalidations", invalidations).on_failure(OnFailure::restart(10)),
///     )
///     .build()?;
/// # drop(lifecycle);
/// # Ok(())
/// # }
/// ```
pub struct RedisSubscriber<H> {
    client: redis::Client,
    target: Redacted,
    channels: Vec<String>,
    patterns: Vec<String>,
    handler: Arc<H>,
    connect_timeout: Duration,
    ping_interval: Duration,
    received: Arc<AtomicU64>,
}

impl<H, Fut> RedisSubscriber<H>
where
    H: Fn(Msg) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    /// A subscriber to the server at `url` that calls `handler` for each message, with no
    /// channel yet (add them with [`channel`](Self::channel) and [`pattern`](Self::pattern)), a
    /// 1 s connect timeout and a ping every 10 s.
    ///
    /// # Errors
    ///
    /// [`DbError::InvalidUrl`] when redis-rs cannot parse the URL.
    pub fn new(url: &str, handler: H) -> Result<Self, DbError> {
        let target = Redacted::new(url);
        let client = redis::Client::open(url).map_err(|e| DbError::InvalidUrl {
            target: target.to_string(),
            message: target.scrub(e),
        })?;
        Ok(RedisSubscriber {
            client,
            target,
            channels: Vec::new(),
            patterns: Vec::new(),
            handler: Arc::new(handler),
            connect_timeout: Duration::from_secs(1),
            ping_interval: Duration::from_secs(10),
            received: Arc::default(),
        })
    }

    /// Subscribes to `channel` too (`SUBSCRIBE`).
    #[must_use]
    pub fn channel(mut self, channel: impl Into<String>) -> Self {
        self.channels.push(channel.into());
        self
    }

    /// Subscribes to the channels matching `pattern` too (`PSUBSCRIBE`).
    #[must_use]
    pub fn pattern(mut self, pattern: impl Into<String>) -> Self {
        self.patterns.push(pattern.into());
        self
    }

    /// How long one attempt to connect and subscribe may take (default 1 s). Zero is refused at
    /// the start ([`DbError::InvalidSetting`]).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How often to ping the server to find out that it stopped answering (a dead host, a
    /// black-holed link), which closes no connection and so would otherwise go unnoticed
    /// (default 10 s). A ping unanswered within 1 s ends the subscription with a failure. Zero
    /// is refused at the start ([`DbError::InvalidSetting`]).
    #[must_use]
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval;
        self
    }

    /// The channels and patterns, for messages.
    fn subscriptions(&self) -> String {
        self.channels
            .iter()
            .chain(&self.patterns)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Connects and subscribes, retrying with backoff until `give_up`.
    async fn subscribe(&self, give_up: Instant) -> Result<PubSub, DbError> {
        retry_until(&self.target, give_up, || async {
            match tokio::time::timeout(self.connect_timeout, self.subscribe_once()).await {
                Ok(result) => result.map_err(|error| self.target.scrub(error)),
                Err(_) => Err("connecting timed out".to_owned()),
            }
        })
        .await
        .map_err(|gave_up| DbError::unreachable(&self.target, gave_up))
    }

    async fn subscribe_once(&self) -> RedisResult<PubSub> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        if !self.channels.is_empty() {
            pubsub.subscribe(&self.channels).await?;
        }
        if !self.patterns.is_empty() {
            pubsub.psubscribe(&self.patterns).await?;
        }
        Ok(pubsub)
    }
}

#[async_trait]
impl<H, Fut> Component for RedisSubscriber<H>
where
    H: Fn(Msg) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    async fn start(&self, ctx: &Context) -> Result<(), BoxError> {
        let invalid = |setting, reason: &str| DbError::InvalidSetting {
            component: ctx.name().to_owned(),
            setting,
            reason: reason.to_owned(),
        };
        if self.channels.is_empty() && self.patterns.is_empty() {
            let reason = format!(
                "nothing to subscribe to on {}: give one, or a pattern",
                self.target
            );
            return Err(invalid("channel", &reason).into());
        }
        // A zero period would panic the listening task's ping timer, after the start.
        if self.ping_interval.is_zero() {
            return Err(invalid("ping_interval", "must be more than zero").into());
        }
        if self.connect_timeout.is_zero() {
            return Err(invalid("connect_timeout", "must be more than zero").into());
        }
        let pubsub = self
            .subscribe(ctx.give_up_at(GIVE_UP_RESERVE, Duration::from_secs(30)))
            .await?;
        tracing::info!(component = ctx.name(), target_db = %self.target,
            channels = %self.subscriptions(), "subscribed");
        let (sink, stream) = pubsub.split();
        let listening = Listening {
            ctx: ctx.clone(),
            sink,
            stream,
            handler: self.handler.clone(),
            target: self.target.clone(),
            channels: self.channels.clone(),
            patterns: self.patterns.clone(),
            subscriptions: self.subscriptions(),
            ping_interval: self.ping_interval,
            received: self.received.clone(),
        };
        ctx.spawn(listening.listen());
        Ok(())
    }

    fn describe(&self) -> Option<String> {
        Some(format!(
            "subscribed to {}, {} messages received",
            self.subscriptions(),
            self.received.load(Ordering::Relaxed)
        ))
    }
}

impl<H> std::fmt::Debug for RedisSubscriber<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSubscriber")
            .field("target", &self.target)
            .field("channels", &self.channels)
            .field("patterns", &self.patterns)
            .field("received", &self.received.load(Ordering::Relaxed))
            .finish()
    }
}

/// One run of a subscriber: the task that receives its messages.
struct Listening<H> {
    ctx: Context,
    sink: PubSubSink,
    stream: PubSubStream,
    handler: Arc<H>,
    target: Redacted,
    channels: Vec<String>,
    patterns: Vec<String>,
    subscriptions: String,
    ping_interval: Duration,
    received: Arc<AtomicU64>,
}

impl<H, Fut> Listening<H>
where
    H: Fn(Msg) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    async fn listen(mut self) {
        let token = self.ctx.token().clone();
        let mut ping =
            tokio::time::interval_at(Instant::now() + self.ping_interval, self.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let lost = loop {
            tokio::select! {
                biased;
                () = token.cancelled() => break None,
                message = self.stream.next() => match message {
                    Some(message) => {
                        self.received.fetch_add(1, Ordering::Relaxed);
                        (self.handler)(message).await;
                    }
                    // The connection's task ended: the server closed the connection.
                    None => break Some("the server closed the connection".to_owned()),
                },
                _ = ping.tick() => {
                    let reply = tokio::select! {
                        biased;
                        () = token.cancelled() => break None,
                        reply = tokio::time::timeout(
                            REPLY_TIMEOUT,
                            self.sink.ping::<redis::Value>(),
                        ) => reply,
                    };
                    match reply {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => break Some(format!("ping failed: {}", self.target.scrub(error))),
                        Err(_) => {
                            break Some(format!("no answer to a ping within {REPLY_TIMEOUT:?}"))
                        }
                    }
                }
            }
        };
        match lost {
            Some(reason) => {
                tracing::warn!(component = self.ctx.name(), target_db = %self.target, %reason,
                    "subscription lost");
                self.ctx.report_failure(DbError::SubscriptionLost {
                    target: self.target.to_string(),
                    channels: self.subscriptions,
                    reason,
                });
            }
            None => {
                // Closing the connection would drop the subscription as well; unsubscribing
                // first tells the server so while it still answers, and is skipped otherwise.
                let give_up = self
                    .ctx
                    .give_up_at(GIVE_UP_RESERVE, REPLY_TIMEOUT)
                    .min(Instant::now() + REPLY_TIMEOUT);
                let unsubscribe = async {
                    if !self.channels.is_empty() {
                        self.sink.unsubscribe(&self.channels).await?;
                    }
                    if !self.patterns.is_empty() {
                        self.sink.punsubscribe(&self.patterns).await?;
                    }
                    RedisResult::Ok(())
                };
                match tokio::time::timeout_at(give_up, unsubscribe).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        let error = self.target.scrub(error);
                        tracing::debug!(target_db = %self.target, %error, "unsubscribe failed");
                    }
                    Err(_) => tracing::debug!(target_db = %self.target, "unsubscribe timed out"),
                }
            }
        }
        // Dropping the stream ends the connection's task and closes the connection.
    }
}
