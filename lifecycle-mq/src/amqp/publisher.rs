//! `AmqpPublisher`: publishes with publisher confirms, and settles every publish at its stop.
//! What it shares with `NatsPublisher` is in `crate::publisher`; here is only what AMQP does
//! differently: `confirm.select`, persistent and mandatory publishes, and their confirms.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation};
use lifecycle_core::{Context, Redacted};

use crate::amqp::connect::{check_url, open, AmqpConnection};
use crate::error::MqError;
use crate::publisher::{Outlet, Publisher};

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
pub struct AmqpPublisher {
    inner: Arc<Publisher<Amqp>>,
}

/// A cheap, cloneable handle to publish through an [`AmqpPublisher`].
#[derive(Clone)]
pub struct AmqpPublisherHandle {
    inner: Arc<Publisher<Amqp>>,
}

/// AMQP as an [`Outlet`].
pub(crate) struct Amqp;

crate::publisher::publisher_face!(AmqpPublisher, AmqpPublisherHandle, "confirms");

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
        let (channel, pending) = self.inner.enter(destination)?;
        let failed = |reason: &str| self.inner.failed(destination(), reason.to_owned());
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
        match pending.until_cut(publish).await {
            Some(Ok(Confirmation::Ack(None))) => Ok(()),
            Some(Ok(Confirmation::Ack(Some(returned)))) => Err(failed(&format!(
                "returned as unroutable: {}",
                returned.reply_text
            ))),
            Some(Ok(Confirmation::Nack(_))) => Err(failed("the broker refused it (nack)")),
            Some(Ok(Confirmation::NotRequested)) => Err(failed("confirms not enabled")),
            Some(Err(error)) => Err(failed(&error.to_string())),
            None => Err(failed(
                "the publisher stopped before the broker confirmed it",
            )),
        }
    }
}

impl Outlet for Amqp {
    type Connection = AmqpConnection;
    type Channel = Channel;

    fn check_url(url: &str, target: &Redacted) -> Result<(), MqError> {
        check_url(url, target)
    }

    /// Connects, opens a channel and enables confirms (`confirm.select`).
    async fn open(
        url: &str,
        name: &str,
        _connect_timeout: Duration,
    ) -> Result<(AmqpConnection, Channel), String> {
        let opening = async {
            let link = open(url, name).await?;
            link.channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            lapin::Result::Ok(link)
        };
        let link = opening.await.map_err(|e| e.to_string())?;
        let channel = link.channel.clone();
        Ok((link, channel))
    }

    fn watch(connection: &mut AmqpConnection, ctx: &Context, target: &Redacted) {
        let mut events = connection.connection.events_listener();
        let (watch_ctx, target) = (ctx.clone(), target.clone());
        ctx.spawn(async move {
            let token = watch_ctx.token().clone();
            while let Some(Some(event)) = token.run_until_cancelled(events.next()).await {
                if let lapin::Event::Error(error) = event {
                    if !token.is_cancelled() {
                        watch_ctx.report_failure(MqError::ConnectionLost {
                            target: target.to_string(),
                            queue: "publisher".to_owned(),
                            reason: target.scrub(error),
                        });
                    }
                    return;
                }
            }
        });
    }
}
