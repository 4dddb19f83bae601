//! `NatsPublisher`: JetStream publishes with their acks, every one settled at its stop. What
//! it shares with `AmqpPublisher` is in `crate::publisher`; here is only what JetStream does
//! differently: the publish and its ack.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use lifecycle_core::{Context, Redacted};

use crate::error::MqError;
use crate::nats::connect::{check_url, open, NatsConnection};
use crate::publisher::{Outlet, Publisher};

/// A JetStream publisher (NATS) as a lifecycle component; publish through its
/// [`handle`](Self::handle).
///
/// Every publish waits for JetStream's publish ack: [`NatsPublisherHandle::publish`] returns
/// `Ok` only once a stream has stored the message. A subject no stream captures is an error
/// (no responders), not a silent drop.
///
/// - **Start** connects, retrying until shortly before the start timeout.
/// - **While running**, a lost connection is a run-time failure, [`MqError::ConnectionLost`],
///   for the [`OnFailure`](lifecycle_core::OnFailure) policy.
/// - **At its stop turn** (register it as a dependency of what publishes), new publishes fail
///   at once with [`MqError::NotRunning`]; publishes in flight wait for their ack until shortly
///   before the stop timeout; those still waiting then fail with [`MqError::PublishFailed`]
///   (and the stop with [`MqError::Unconfirmed`]); then the connection is drained and closed.
///
/// # Examples
///
/// ```no_run
/// use lifecycle_core::{Lifecycle, Registration};
/// use lifecycle_mq::NatsPublisher;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let publisher = NatsPublisher::new("nats://127.0.0.1:4222");
/// let events = publisher.handle();
/// let lifecycle = Lifecycle::builder()
///     .register(Registration::new("events", publisher))
///     .build()?;
/// // In a component that depends on "events":
/// events.publish("audit.login", b"user 42").await?;
/// # Ok(())
/// # }
/// ```
pub struct NatsPublisher {
    inner: Arc<Publisher<JetStream>>,
}

/// A cheap, cloneable handle to publish through a [`NatsPublisher`].
#[derive(Clone)]
pub struct NatsPublisherHandle {
    inner: Arc<Publisher<JetStream>>,
}

/// JetStream as an [`Outlet`].
pub(crate) struct JetStream;

crate::publisher::publisher_face!(NatsPublisher, NatsPublisherHandle, "acks");

impl NatsPublisherHandle {
    /// Publishes `payload` on `subject` and waits for JetStream's ack.
    ///
    /// # Errors
    ///
    /// - [`MqError::NotRunning`] at once, before the publisher's start or from its stop turn;
    /// - [`MqError::PublishFailed`] when no stream took the message, the server refused it,
    ///   the connection failed, or the stop gave up waiting for the ack. The message may have
    ///   been stored all the same (at least once): publish idempotent messages.
    ///
    /// # Cancellation safety
    ///
    /// Dropping the future before it completes leaves it unknown whether the message was
    /// stored.
    pub async fn publish(&self, subject: &str, payload: &[u8]) -> Result<(), MqError> {
        let (js, pending) = self.inner.enter(|| subject.to_owned())?;
        let publish = async {
            let ack = js
                .publish(subject.to_owned(), payload.to_vec().into())
                .await
                .map_err(|e| e.to_string())?;
            ack.await.map_err(|e| e.to_string())
        };
        let reason = match pending.until_cut(publish).await {
            Some(Ok(_)) => return Ok(()),
            Some(Err(reason)) => reason,
            None => "the publisher stopped before JetStream acked it".to_owned(),
        };
        Err(self.inner.failed(subject.to_owned(), reason))
    }
}

impl Outlet for JetStream {
    type Connection = NatsConnection;
    type Channel = jetstream::Context;

    fn check_url(url: &str, target: &Redacted) -> Result<(), MqError> {
        check_url(url, target)
    }

    async fn open(
        url: &str,
        name: &str,
        connect_timeout: Duration,
    ) -> Result<(NatsConnection, jetstream::Context), String> {
        let connection = open(url, name, connect_timeout)
            .await
            .map_err(|e| e.to_string())?;
        let js = jetstream::new(connection.client.clone());
        Ok((connection, js))
    }

    fn watch(connection: &mut NatsConnection, ctx: &Context, target: &Redacted) {
        connection.watch(ctx, (target, "publisher"));
    }
}
