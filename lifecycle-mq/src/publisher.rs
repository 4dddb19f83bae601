//! `Publisher`: the backend-neutral publisher that `AmqpPublisher` and `NatsPublisher` (and
//! their handles) share: its start (connect with retry, watch the connection), its publishes in
//! flight, and its stop (refuse new publishes, wait for the confirms, close). A broker adds how
//! it opens a publishing connection ([`Outlet`]) and how one publish is made and confirmed.

use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use lifecycle_core::{BoxError, Context, Health, Redacted};

use crate::broker::{connect_until, Connection};
use crate::error::MqError;
use crate::publishes::{PendingPublish, Publishes};
use crate::stop::{close_by, give_up_at, StopFailures};

/// What errors and logs name a publisher's destination by, where a consumer names its queue.
const PUBLISHER: &str = "publisher";

/// What a publisher of one broker adds to the neutral one.
pub(crate) trait Outlet: Send + Sync + 'static {
    /// The connection of one run.
    type Connection: Connection;
    /// What a publish goes through (a lapin `Channel`, a JetStream context); cheap to clone.
    type Channel: Clone + Send + Sync + 'static;

    /// Checks `url` before any attempt to connect; an error names `target`, never `url`.
    fn check_url(url: &str, target: &Redacted) -> Result<(), MqError>;

    /// One attempt to connect to `url` as `name`, ready to publish (AMQP confirms enabled).
    fn open(
        url: &str,
        name: &str,
        connect_timeout: Duration,
    ) -> impl Future<Output = Result<(Self::Connection, Self::Channel), String>> + Send;

    /// Starts what reports a lost connection as a run-time failure of the component of `ctx`.
    fn watch(connection: &mut Self::Connection, ctx: &Context, target: &Redacted);
}

/// A publisher and its handles' shared state: its settings and its current run.
pub(crate) struct Publisher<B: Outlet> {
    url: String,
    target: Redacted,
    pub(crate) connect_timeout: Duration,
    live: Mutex<Option<Live<B>>>,
}

/// One run of the publisher.
struct Live<B: Outlet> {
    /// Taken by the stop, after the publishes in flight were settled.
    connection: Option<B::Connection>,
    channel: B::Channel,
    publishes: Publishes,
}

impl<B: Outlet> Publisher<B> {
    /// A publisher to `url`, with a 2 s connect timeout.
    pub(crate) fn new(url: String) -> Self {
        Publisher {
            target: Redacted::new(&url),
            url,
            connect_timeout: Duration::from_secs(2),
            live: Mutex::new(None),
        }
    }

    fn live(&self) -> MutexGuard<'_, Option<Live<B>>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a publish to `destination` in flight and gives what to publish through, or
    /// refuses it at once ([`MqError::NotRunning`]) before the start or from the stop turn.
    pub(crate) fn enter(
        &self,
        destination: impl FnOnce() -> String,
    ) -> Result<(B::Channel, PendingPublish), MqError> {
        let live = self.live();
        let entered = match live.as_ref() {
            Some(live) => live
                .publishes
                .enter()
                .map(|pending| (live.channel.clone(), pending)),
            None => Err(self.target.to_string()),
        };
        entered.map_err(|name| MqError::NotRunning {
            name,
            destination: destination(),
        })
    }

    /// A publish to `destination` failed, for `reason`.
    pub(crate) fn failed(&self, destination: String, reason: String) -> MqError {
        MqError::PublishFailed {
            target: self.target.to_string(),
            destination,
            reason: self.target.scrub(reason),
        }
    }

    pub(crate) async fn start(&self, ctx: &Context) -> Result<(), BoxError> {
        B::check_url(&self.url, &self.target)?;
        let (mut connection, channel) =
            connect_until(ctx, (&self.target, PUBLISHER), self.connect_timeout, || {
                B::open(&self.url, ctx.name(), self.connect_timeout)
            })
            .await?;
        // A lost connection is reported, so the lifecycle's policy decides, not the callers.
        B::watch(&mut connection, ctx, &self.target);
        tracing::info!(component = ctx.name(), target_mq = %self.target, "publisher ready");
        *self.live() = Some(Live {
            connection: Some(connection),
            channel,
            publishes: Publishes::new(ctx.name()),
        });
        Ok(())
    }

    pub(crate) async fn stop(&self, ctx: &Context) -> Result<(), BoxError> {
        let give_up = give_up_at(ctx);
        let mut failures = StopFailures::new(&self.target, PUBLISHER);
        // The stop turn: from here on publishes fail fast; those in flight get until `give_up`.
        let publishes = match self.live().as_ref() {
            Some(live) => live.publishes.clone(),
            None => return Ok(()),
        };
        if let Some(unconfirmed) = publishes.stop(ctx, &self.target, give_up).await {
            failures.push(unconfirmed, true);
        }
        let connection = self
            .live()
            .take()
            .and_then(|mut live| live.connection.take());
        if let Some(connection) = connection {
            if let Err(failed) = connection.close(close_by(ctx, give_up)).await {
                failures.step_failed(failed);
            }
        }
        failures.into_result(ctx)
    }

    pub(crate) fn health(&self) -> Health {
        match self.live().as_ref().and_then(|l| l.connection.as_ref()) {
            Some(connection) if connection.connected() => Health::Healthy,
            Some(_) => Health::unhealthy(format!("not connected to {}", self.target)),
            None => Health::unhealthy("not running"),
        }
    }

    /// `publishing to {target}: {n} awaiting {confirms}`.
    pub(crate) fn describe(&self, confirms: &str) -> String {
        let in_flight = self.live().as_ref().map_or(0, |l| l.publishes.len());
        format!(
            "publishing to {}: {in_flight} awaiting {confirms}",
            self.target
        )
    }

    /// The fields of a publisher's `Debug`, named `name`: its state, not its internals.
    pub(crate) fn debug(&self, name: &str, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let live = self.live();
        f.debug_struct(name)
            .field("target", &self.target)
            .field(
                "running",
                &live.as_ref().is_some_and(|l| l.publishes.is_open()),
            )
            .field("in_flight", &live.as_ref().map_or(0, |l| l.publishes.len()))
            .finish()
    }
}

/// The public face every broker's publisher shares, for `$publisher` and `$handle`, each a
/// struct with one field `inner: Arc<Publisher<_>>`: `new`, `connect_timeout`, `handle`, and
/// the `Component` and `Debug` implementations, which hand everything to the neutral
/// publisher; `$confirms` names what its publishes wait for. A macro rather than a trait so
/// that they stay inherent methods, documented on each type.
macro_rules! publisher_face {
    ($publisher:ident, $handle:ident, $confirms:literal) => {
        impl $publisher {
            /// A publisher to the broker at `url`, with a 2 s connect timeout.
            pub fn new(url: impl Into<String>) -> Self {
                $publisher {
                    inner: std::sync::Arc::new(crate::publisher::Publisher::new(url.into())),
                }
            }

            /// How long one attempt to connect may take (default 2 s).
            ///
            /// # Panics
            ///
            /// Panics if a [`handle`](Self::handle) was taken already: configure first.
            #[must_use]
            pub fn connect_timeout(mut self, timeout: std::time::Duration) -> Self {
                std::sync::Arc::get_mut(&mut self.inner)
                    .expect("configure the publisher before taking handles")
                    .connect_timeout = timeout;
                self
            }

            /// A handle to publish with, usable from any task.
            pub fn handle(&self) -> $handle {
                $handle {
                    inner: self.inner.clone(),
                }
            }
        }

        #[lifecycle_core::async_trait]
        impl lifecycle_core::Component for $publisher {
            async fn start(
                &self,
                ctx: &lifecycle_core::Context,
            ) -> Result<(), lifecycle_core::BoxError> {
                self.inner.start(ctx).await
            }

            async fn stop(
                &self,
                ctx: &lifecycle_core::Context,
            ) -> Result<(), lifecycle_core::BoxError> {
                self.inner.stop(ctx).await
            }

            async fn health(&self) -> lifecycle_core::Health {
                self.inner.health()
            }

            fn describe(&self) -> Option<String> {
                Some(self.inner.describe($confirms))
            }
        }

        impl std::fmt::Debug for $publisher {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.inner.debug(stringify!($publisher), f)
            }
        }

        impl std::fmt::Debug for $handle {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.inner.debug(stringify!($handle), f)
            }
        }
    };
}
pub(crate) use publisher_face;
