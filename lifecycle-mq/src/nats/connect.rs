//! `NatsConnection`: a NATS connection whose background task cannot outlive the component.

use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event};
use lifecycle_core::{Context, Redacted};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::MqError;
use crate::stop::StepFailed;

/// A connection and the events of its background task.
pub(crate) struct NatsConnection {
    pub(crate) client: Client,
    /// The connection's events. It ends when async-nats's background tasks have ended (they
    /// own the callback that feeds it), which is how a stop knows that none is left.
    pub(crate) events: mpsc::UnboundedReceiver<Event>,
}

/// Checks that `url` is a NATS server URL, before any attempt to connect.
pub(crate) fn check_url(url: &str, target: &Redacted) -> Result<(), MqError> {
    url.parse::<async_nats::ServerAddr>()
        .map(drop)
        .map_err(|error| MqError::InvalidUrl {
            target: target.to_string(),
            // The parser's message may quote the URL, credentials included.
            message: target.scrub(error.to_string().replace(url, &target.to_string())),
        })
}

/// Connects once to `url`, named `name` (the server's `CONNZ` shows it).
///
/// async-nats reconnects on its own, for ever by default, in a task of its own: here it tries
/// once, 100 ms after a loss, so that the task ends soon after the server is gone instead of
/// outliving the stop. The loss itself is reported by the component (its `OnFailure` policy
/// decides), not hidden by reconnections.
pub(crate) async fn open(
    url: &str,
    name: &str,
    timeout: Duration,
) -> Result<NatsConnection, async_nats::ConnectError> {
    let (send, events) = mpsc::unbounded_channel();
    let client = ConnectOptions::new()
        .name(name)
        .connection_timeout(timeout)
        .max_reconnects(1)
        .reconnect_delay_callback(|_| Duration::from_millis(100))
        .event_callback(move |event| {
            let send = send.clone();
            async move {
                let _ = send.send(event);
            }
        })
        .connect(url)
        .await?;
    Ok(NatsConnection { client, events })
}

impl NatsConnection {
    /// Reports a lost connection as a run-time failure of the component of `ctx`, for its
    /// `OnFailure` policy: the events go through a task that watches them, and the stop gets
    /// them back to wait for the connection's end.
    pub(crate) fn watch(&mut self, ctx: &Context, (target, queue): (&Redacted, &str)) {
        let (forward, events) = mpsc::unbounded_channel();
        let mut incoming = std::mem::replace(&mut self.events, events);
        let (watch_ctx, target, queue) = (ctx.clone(), target.to_string(), queue.to_owned());
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
    }
}

impl crate::broker::Connection for NatsConnection {
    fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Drains the connection: unsubscribes everything and flushes what was written (acks
    /// included), then waits, until `limit`, for the background task to end.
    async fn close(self, limit: Instant) -> Result<(), StepFailed> {
        self.drain(limit)
            .await
            .map_err(|reason| ("closing the connection", reason))
    }
}

impl NatsConnection {
    async fn drain(mut self, limit: Instant) -> Result<(), String> {
        let close = async {
            self.client.flush().await.map_err(|e| e.to_string())?;
            self.client.drain().await.map_err(|e| e.to_string())
        };
        // A connection whose task already ended (it gave up reconnecting) refuses both: there
        // is nothing left to close then, which the wait below confirms.
        let refused = match tokio::time::timeout_at(limit, close).await {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error),
            Err(_) => return Err("no answer before the stop deadline".to_owned()),
        };
        drop(self.client);
        let ended =
            tokio::time::timeout_at(limit, async { while self.events.recv().await.is_some() {} })
                .await;
        match (ended, refused) {
            (Ok(()), _) => Ok(()),
            (Err(_), Some(error)) => Err(error),
            (Err(_), None) => {
                Err("the connection did not close before the stop deadline".to_owned())
            }
        }
    }
}
