//! The NATS JetStream components, on async-nats.

mod connect;
mod consumer;
mod publisher;

pub use consumer::NatsConsumer;
pub use publisher::{NatsPublisher, NatsPublisherHandle};
