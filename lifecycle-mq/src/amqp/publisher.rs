//! `AmqpPublisher`: publishes with publisher confirms, and settles every publish at its stop.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, Connection};
use lifecycle_core::{async_trait, BoxError, Component, Context, Health};
use tokio::time::Instant;

use crate::amqp::connect::{check_url, open, Socket};
use crate::deadline::{give_up_at, retry_until, step};
use crate::error::{redact, MqError};
use crate::publishes::Publishes;

/// An AMQP publisher with publisher confirms (RabbitMQ) as a lifecycle component; publish
/// through its [`handle`](Self::handle).
///
/// Every publish waits for the broker's confirm: [`AmqpPublisherHandle::publish`] returns `Ok`
/// only once the broker has taken responsibility for the message (for a durable queue, stored
/// it). Messages are published persistent and mandatory, so a message no queue takes is an
/// error, not a silent drop.
///
/// - **Start** connects, opens a channel and enables confirms (`confirm.select`), retrying
///   until shortly before the start timeout.
/// - **While running**, an error on the connection is a run-time failure,
///   [`MqError::ConnectionLost`], for the [`OnFailure`](lifecycle_core::OnFailure) policy;
///   publishes then fail with [`MqError::PublishFailed`].
/// - **At its stop turn** (register the publisher as a dependency of what publishes, so it
///   stops after them), new publishes fail at once with [`MqError::NotRunning`]; publishes in
///   flight wait for their confirm until shortly before the stop timeout; those still waiting
///   then fail with [`MqError::PublishFailed`] (and the stop with [`MqError::Unconfirmed`]),
///   so no publish is silently dropped; then the channel and the connection close.
///
/// # Examples
///
/// ```no_run
/// use lifecycle_core::{Lifecycle, Registration};
/// use lifecycle_mq::AmqpPublisher;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let publisher = AmqpPublisher::new("amqp://guest:guest@127.0.0.1:5672/%2f");
/// let events = publisher.handle();
/// let lifecycle = Lifecycle::builder()
///     .register(Registration::new("events", publisher))
///     .build()?;
/// // In a component that depends on "events":
/// events.publish("", "audit", b"user 42 logged in").await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct AmqpPublisher {
    inner: Arc<Inner>,
}

/// A cheap, cloneable handle to publish through an [`AmqpPublisher`].
#[derive(Debug, Clone)]
pub struct AmqpPublisherHandle {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    target: String,
    connect_timeout: Duration,
    live: Mutex<Option<Live>>,
}

/// One run of the publisher.
struct Live {
    connection: Connection,
    channel: Channel,
    socket: Socket,
    publishes: Publishes,
}

impl AmqpPublisher {
    /// A publisher to the broker at `url`, with a 2 s connect timeout.
    pub fn new(url: impl Into<String>) -> Self {
        let url = url.into();
        AmqpPublisher {
            inner: Arc::new(Inner {
                target: redact(&url),
                url,
                connect_timeout: Duration::from_secs(2),
                live: Mutex::new(None),
            }),
        }
    }

    /// How long one attempt to connect may take (default 2 s).
    ///
    /// # Panics
    ///
    /// Panics if a [`handle`](Self::handle) was taken already: configure first.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("configure the publisher before taking handles")
            .connect_timeout = timeout;
        self
    }

    /// A handle to publish with, usable from any task.
    pub fn handle(&self) -> AmqpPublisherHandle {
        AmqpPublisherHandle {
            inner: self.inner.clone(),
        }
    }
}

impl AmqpPublisherHandle {
    /// Publishes `payload` to `exchange` (`""` for the default exchange, which routes by queue
    /// name) with `routing_key`, persistent and mandatory, and waits for the broker's confirm.
    ///
    /// # Errors
    ///
    /// - [`MqError::NotRunning`] at once, before the publisher's start or from its stop turn;
    /// - [`MqError::PublishFailed`] when the broker nacked the message, returned it as
    ///   unroutable, the connection failed, or the stop gave up waiting for the confirm. The
    ///   message may have been stored all the same (at least once): publish idempotent messages.
    ///
    /// # Cancellation safety
    ///
    /// Dropping the future before it completes leaves it unknown whether the message was
    /// published.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
    ) -> Result<(), MqError> {
        let destination = || format!("{exchange}/{routing_key}");
        let (channel, in_flight) = {
            let live = self.inner.live();
            let live = live.as_ref().ok_or_else(|| self.inner.target.clone());
            match live.and_then(|l| Ok((l.channel.clone(), l.publishes.enter()?))) {
                Ok(entered) => entered,
                Err(name) => {
                    let destination = destination();
                    return Err(MqError::NotRunning { name, destination });
                }
            }
        };
        let failed = |reason: String| MqError::PublishFailed {
            target: self.inner.target.clone(),
            destination: destination(),
            reason,
        };
        let publish = async {
            let confirm = channel
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    payload,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?;
            confirm.await
        };
        match in_flight.until_cut(publish).await {
            Some(Ok(Confirmation::Ack(None))) => Ok(()),
            Some(Ok(Confirmation::Ack(Some(returned)))) => Err(failed(format!(
                "returned as unroutable: {}",
                returned.reply_text
            ))),
            Some(Ok(Confirmation::Nack(_))) => {
                Err(failed("the broker refused it (nack)".to_owned()))
            }
            Some(Ok(Confirmation::NotRequested)) => Err(failed("confirms not enabled".to_owned())),
            Some(Err(error)) => Err(failed(error.to_string())),
            None => Err(failed(
                "the publisher stopped before the broker confirmed it".to_owned(),
            )),
        }
    }
}

impl Inner {
    fn live(&self) -> MutexGuard<'_, Option<Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Component for AmqpPublisher {
    async fn start(&self, ctx: &Context) -> Result<(), BoxError> {
        let inner = &self.inner;
        check_url(&inner.url, &inner.target)?;
        let (connection, channel, socket) = retry_until(
            &inner.target,
            "publisher",
            give_up_at(ctx, Duration::from_secs(30)),
            || async {
                let attempt = async {
                    let (connection, channel, socket) = open(&inner.url, ctx.name()).await?;
                    channel
                        .confirm_select(ConfirmSelectOptions::default())
                        .await?;
                    lapin::Result::Ok((connection, channel, socket))
                };
                match tokio::time::timeout(inner.connect_timeout, attempt).await {
                    Ok(result) => result.map_err(|e| e.to_string()),
                    Err(_) => Err("connecting timed out".to_owned()),
                }
            },
        )
        .await?;
        // A lost connection is reported, so the lifecycle's policy decides, not the callers.
        let mut events = connection.events_listener();
        let (watch_ctx, target) = (ctx.clone(), inner.target.clone());
        ctx.spawn(async move {
            let token = watch_ctx.token().clone();
            while let Some(Some(event)) = token.run_until_cancelled(events.next()).await {
                if let lapin::Event::Error(error) = event {
                    if !token.is_cancelled() {
                        watch_ctx.report_failure(MqError::ConnectionLost {
                            target,
                            queue: "publisher".to_owned(),
                            reason: error.to_string(),
                        });
                    }
                    return;
                }
            }
        });
        tracing::info!(component = ctx.name(), target_mq = %inner.target, "publisher ready");
        *inner.live() = Some(Live {
            connection,
            channel,
            socket,
            publishes: Publishes::new(ctx.name()),
        });
        Ok(())
    }

    async fn stop(&self, ctx: &Context) -> Result<(), BoxError> {
        let give_up = give_up_at(ctx, Duration::from_secs(5));
        // The stop turn: from here on publishes fail fast; those in flight get until `give_up`.
        let publishes = match self.inner.live().as_ref() {
            Some(live) => live.publishes.clone(),
            None => return Ok(()),
        };
        let mut failure = publishes.stop(ctx, &self.inner.target, give_up).await;
        let Some(live) = self.inner.live().take() else {
            return Ok(());
        };
        if live.connection.status().connected() {
            let deadline = ctx.deadline().unwrap_or(give_up);
            let close_by = give_up + deadline.saturating_duration_since(give_up) / 2;
            let closing = async {
                live.channel.close(200, "publisher stopped".into()).await?;
                live.connection.close(200, "publisher stopped".into()).await
            };
            if let Err(reason) = step(close_by.max(Instant::now()), closing).await {
                failure.get_or_insert(MqError::StopIncomplete {
                    target: self.inner.target.clone(),
                    queue: "publisher".to_owned(),
                    step: "closing the connection",
                    reason,
                });
            }
        }
        // lapin's I/O loop ends now, even with a silent broker.
        live.socket.shut();
        match failure {
            None => Ok(()),
            Some(error) => Err(error.into()),
        }
    }

    async fn health(&self) -> Health {
        match self.inner.live().as_ref() {
            Some(live) if live.connection.status().connected() => Health::Healthy,
            Some(_) => Health::unhealthy(format!("not connected to {}", self.inner.target)),
            None => Health::unhealthy("not running"),
        }
    }

    fn describe(&self) -> Option<String> {
        let in_flight = self.inner.live().as_ref().map_or(0, |l| l.publishes.len());
        Some(format!(
            "publishing to {}: {in_flight} awaiting confirms",
            self.inner.target
        ))
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let live = self.live();
        f.debug_struct("AmqpPublisher")
            .field("target", &self.target)
            .field(
                "running",
                &live.as_ref().is_some_and(|l| l.publishes.is_open()),
            )
            .field("in_flight", &live.as_ref().map_or(0, |l| l.publishes.len()))
            .finish()
    }
}
