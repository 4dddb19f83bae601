//! Opening an AMQP connection and its channel.

use lapin::{Channel, Connection, ConnectionProperties};

/// Opens a connection named `name` (RabbitMQ shows it as the connection's
/// `user_provided_name`) and one channel on it.
///
/// Automatic recovery stays off (lapin's default): a lost connection is a run-time failure for
/// the lifecycle's `OnFailure` policy, and no reconnect loop can outlive a stop.
pub(crate) async fn open(url: &str, name: &str) -> lapin::Result<(Connection, Channel)> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let connection = Connection::connect(url, properties).await?;
    let channel = connection.create_channel().await?;
    Ok((connection, channel))
}
