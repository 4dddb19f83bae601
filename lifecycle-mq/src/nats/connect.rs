//! Opening a NATS connection whose background task cannot outlive the component.

use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A connection and the events of its background task.
pub(crate) struct Connection {
    pub(crate) client: Client,
    /// The connection's events. It ends when async-nats's background tasks have ended (they
    /// own the callback that feeds it), which is how a stop knows that none is left.
    pub(crate) events: mpsc::UnboundedReceiver<Event>,
}

/// Checks that `url` is a NATS server URL, before any attempt to connect.
pub(crate) fn check_url(url: &str, target: &str) -> Result<(), crate::error::MqError> {
    url.parse::<async_nats::ServerAddr>()
        .map(drop)
        .map_err(|error| crate::error::MqError::InvalidUrl {
            target: target.to_owned(),
            // The parser's message may quote the URL, credentials included.
            message: redact_message(&error.to_string(), url, target),
        })
}

/// `message` with any copy of `url` replaced by `target` (the URL without credentials).
fn redact_message(message: &str, url: &str, target: &str) -> String {
    message.replace(url, target)
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
) -> Result<Connection, async_nats::ConnectError> {
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
    Ok(Connection { client, events })
}

impl Connection {
    /// Whether the connection is up now.
    pub(crate) fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Closes the connection: unsubscribes everything and flushes what was written (acks
    /// included), then waits, until `limit`, for the background task to end.
    pub(crate) async fn close(mut self, limit: Instant) -> Result<(), String> {
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
