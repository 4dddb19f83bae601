//! The AMQP 0.9.1 components (RabbitMQ), on lapin.

mod connect;
mod consumer;
mod publisher;

pub use consumer::AmqpConsumer;
pub use publisher::{AmqpPublisher, AmqpPublisherHandle};
