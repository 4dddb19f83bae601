//! Message consumers and publishers for lifecycle (placeholder docs, replaced below).

#[cfg(feature = "amqp")]
mod amqp;
mod deadline;
mod error;
mod handler;
mod in_flight;
mod message;
mod stats;

#[cfg(feature = "amqp")]
pub use amqp::{AmqpConsumer, AmqpPublisher, AmqpPublisherHandle};
pub use error::{redact, MqError};
pub use message::{Ack, Message};
pub use stats::ConsumerStats;
