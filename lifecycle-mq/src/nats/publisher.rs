//! `NatsPublisher`: JetStream publishes with their acks, every one settled at its stop.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::Event;
use lifecycle_core::{async_trait, BoxError, Component, Context, Health};

use crate::deadline::{give_up_at, retry_until};
use crate::error::{redact, MqError};
use crate::nats::connect::{check_url, open, Connection};
use crate::publishes::Publishes;

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
#[derive(Debug)]
pub struct NatsPublisher {
    inner: Arc<Inner>,
}

/// A cheap, cloneable handle to publish through a [`NatsPublisher`].
#[derive(Debug, Clone)]
pub struct NatsPublisherHandle {
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
    connection: Option<Connection>,
    js: jetstream::Context,
    publishes: Publishes,
}

impl NatsPublisher {
    /// A publisher to the server at `url`, with a 2 s connect timeout.
    pub fn new(url: impl Into<String>) -> Self {
        let url = url.into();
        NatsPublisher {
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
    pub fn handle(&self) -> NatsPublisherHandle {
        NatsPublisherHandle {
            inner: self.inner.clone(),
        }
    }
}

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
        let (js, in_flight) = {
            let live = self.inner.live();
            let live = live.as_ref().ok_or_else(|| self.inner.target.clone());
            match live.and_then(|l| Ok((l.js.clone(), l.publishes.enter()?))) {
                Ok(entered) => entered,
                Err(name) => {
                    let destination = subject.to_owned();
                    return Err(MqError::NotRunning { name, destination });
                }
            }
        };
        let failed = |reason: String| MqError::PublishFailed {
            target: self.inner.target.clone(),
            destination: subject.to_owned(),
            reason,
        };
        let publish = async {
            let ack = js
                .publish(subject.to_owned(), payload.to_vec().into())
                .await
                .map_err(|e| e.to_string())?;
            ack.await.map_err(|e| e.to_string())
        };
        match in_flight.until_cut(publish).await {
            Some(acked) => acked.map(drop).map_err(failed),
            None => Err(failed(
                "the publisher stopped before JetStream acked it".to_owned(),
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
impl Component for NatsPublisher {
    async fn start(&self, ctx: &Context) -> Result<(), BoxError> {
        let inner = &self.inner;
        check_url(&inner.url, &inner.target)?;
        let mut connection = retry_until(
            &inner.target,
            "publisher",
            give_up_at(ctx, Duration::from_secs(30)),
            || open(&inner.url, ctx.name(), inner.connect_timeout),
        )
        .await?;
        let (forward, events) = tokio::sync::mpsc::unbounded_channel();
        let mut incoming = std::mem::replace(&mut connection.events, events);
        let (watch_ctx, target) = (ctx.clone(), inner.target.clone());
        ctx.spawn(async move {
            let mut reported = false;
            while let Some(event) = incoming.recv().await {
                let lost = matches!(event, Event::Disconnected);
                let _ = forward.send(event);
                if lost && !reported && !watch_ctx.token().is_cancelled() {
                    reported = true;
                    watch_ctx.report_failure(MqError::ConnectionLost {
                        target: target.clone(),
                        queue: "publisher".to_owned(),
                        reason: "disconnected from the server".to_owned(),
                    });
                }
            }
        });
        tracing::info!(component = ctx.name(), target_mq = %inner.target, "publisher ready");
        *inner.live() = Some(Live {
            js: jetstream::new(connection.client.clone()),
            connection: Some(connection),
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
        let connection = self
            .inner
            .live()
            .take()
            .and_then(|mut l| l.connection.take());
        if let Some(connection) = connection {
            let deadline = ctx.deadline().unwrap_or(give_up);
            let close_by = give_up + deadline.saturating_duration_since(give_up) / 2;
            if let Err(reason) = connection.close(close_by).await {
                failure.get_or_insert(MqError::StopIncomplete {
                    target: self.inner.target.clone(),
                    queue: "publisher".to_owned(),
                    step: "closing the connection",
                    reason,
                });
            }
        }
        match failure {
            None => Ok(()),
            Some(error) => Err(error.into()),
        }
    }

    async fn health(&self) -> Health {
        match self
            .inner
            .live()
            .as_ref()
            .and_then(|l| l.connection.as_ref())
        {
            Some(connection) if connection.connected() => Health::Healthy,
            Some(_) => Health::unhealthy(format!("not connected to {}", self.inner.target)),
            None => Health::unhealthy("not running"),
        }
    }

    fn describe(&self) -> Option<String> {
        let in_flight = self.inner.live().as_ref().map_or(0, |l| l.publishes.len());
        Some(format!(
            "publishing to {}: {in_flight} awaiting acks",
            self.inner.target
        ))
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let live = self.live();
        f.debug_struct("NatsPublisher")
            .field("target", &self.target)
            .field(
                "running",
                &live.as_ref().is_some_and(|l| l.publishes.is_open()),
            )
            .field("in_flight", &live.as_ref().map_or(0, |l| l.publishes.len()))
            .finish()
    }
}
