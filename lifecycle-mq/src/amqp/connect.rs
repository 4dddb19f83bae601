//! `AmqpConnection`: an AMQP connection and its channel, on a socket the component can shut.

use std::sync::{Arc, Mutex};

use async_compat::Compat;
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{AsyncTcpStream, Channel, Connection, ConnectionProperties};
use lifecycle_core::Redacted;
use tokio::time::Instant;

use crate::error::MqError;
use crate::stop::{step, StepFailed};

/// One run's connection and its channel.
pub(crate) struct AmqpConnection {
    pub(crate) connection: Connection,
    pub(crate) channel: Channel,
    socket: Socket,
}

impl crate::broker::Connection for AmqpConnection {
    fn connected(&self) -> bool {
        self.connection.status().connected()
    }

    /// Closing the channel flushes the acks: the broker answers `channel.close-ok` only after
    /// every frame before it. Then the connection; then the socket, whatever happened.
    async fn close(self, limit: Instant) -> Result<(), StepFailed> {
        let mut closed = Ok(());
        if self.connected() {
            closed = step(limit, self.channel.close(200, "stopped".into()))
                .await
                .map_err(|reason| ("closing the channel", reason));
            if closed.is_ok() {
                closed = step(limit, self.connection.close(200, "stopped".into()))
                    .await
                    .map_err(|reason| ("closing the connection", reason));
            }
        }
        // lapin's I/O loop ends now: after a clean close it has nothing left to do, and with a
        // silent broker it would otherwise wait for the heartbeat.
        self.socket.shut();
        closed
    }
}

/// A second handle on a connection's TCP socket, to shut it when the broker stopped answering.
///
/// lapin keeps a connection's I/O loop running until the broker answers `connection.close`, or
/// until two heartbeat intervals pass in silence (two minutes with RabbitMQ's default): longer
/// than any stop. Shutting the socket ends the loop at once, so nothing of the component
/// outlives its stop, even with the broker gone.
#[derive(Debug, Default, Clone)]
struct Socket(Arc<Mutex<Option<std::net::TcpStream>>>);

impl Socket {
    /// Shuts the socket in both directions; lapin's I/O loop then ends. A no-op for a
    /// connection that lapin opened itself (TLS).
    fn shut(&self) {
        if let Some(socket) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Checks that `url` is an AMQP URL, before any attempt to connect.
pub(crate) fn check_url(url: &str, target: &Redacted) -> Result<(), MqError> {
    url.parse::<AMQPUri>()
        .map(drop)
        .map_err(|message| MqError::InvalidUrl {
            target: target.to_string(),
            // The parser's message may quote the URL, credentials included.
            message: target.scrub(message.replace(url, &target.to_string())),
        })
}

/// Opens a connection named `name` (RabbitMQ shows it in the connection's client properties)
/// and one channel on it.
///
/// Automatic recovery stays off (lapin's default): a lost connection is a run-time failure for
/// the lifecycle's `OnFailure` policy, and no reconnect loop can outlive a stop.
pub(crate) async fn open(url: &str, name: &str) -> lapin::Result<AmqpConnection> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let uri: AMQPUri = url
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let socket = Socket::default();
    let connection = if uri.scheme == AMQPScheme::AMQP {
        let handle = socket.clone();
        let connect = move |uri: AMQPUri, _runtime| {
            let handle = handle.clone();
            async move {
                let stream = tokio::net::TcpStream::connect((
                    uri.authority.host.as_str(),
                    uri.authority.port,
                ))
                .await?;
                stream.set_nodelay(true)?;
                let stream = stream.into_std()?;
                *handle.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(stream.try_clone()?);
                let stream = tokio::net::TcpStream::from_std(stream)?;
                lapin::Result::Ok(AsyncTcpStream::Plain(Compat::new(stream)))
            }
        };
        Connection::connector(uri, lapin::runtime::default_runtime()?, connect, properties).await?
    } else {
        // TLS goes through lapin's own connector (with a lapin TLS feature enabled); its socket
        // is out of reach, and a silent broker holds it until the heartbeat gives up.
        Connection::connect_uri(uri, properties).await?
    };
    let channel = connection.create_channel().await?;
    Ok(AmqpConnection {
        connection,
        channel,
        socket,
    })
}
