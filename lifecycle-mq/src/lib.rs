//! Message consumers and publishers for lifecycle (placeholder docs, replaced below).

#[cfg(feature = "amqp")]
mod amqp;
mod deadline;
mod error;
mod handler;
mod in_flight;
mod message;
#[cfg(feature = "nats")]
mod nats;
mod stats;

#[cfg(feature = "amqp")]
pub use amqp::{AmqpConsumer, AmqpPublisher, AmqpPublisherHandle};
pub use error::{redact, MqError};
pub use message::{Ack, Message};
#[cfg(feature = "nats")]
pub use nats::{NatsConsumer, NatsPublisher, NatsPublisherHandle};
pub use stats::ConsumerStats;
