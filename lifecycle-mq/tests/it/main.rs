//! lifecycle-mq's integration tests against the real brokers (RabbitMQ at 127.0.0.1:5672,
//! NATS with JetStream at 127.0.0.1:4222), in one test binary (issue 24): the consumer's and
//! the publisher's contract, each one suite run on both brokers (`consumer`, `publisher`,
//! `poison`), what only one broker shows (`amqp`), and the proof that a SIGTERM or a SIGKILL
//! loses no message (`kill`, whose child service is this binary again).
//!
//! Outside CI a missing broker skips its tests with a note; with `CI=true` it fails them.

mod amqp;
mod broker;
mod common;
mod consumer;
#[cfg(unix)]
mod kill;
mod poison;
mod publisher;
