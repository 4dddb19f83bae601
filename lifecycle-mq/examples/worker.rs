//! A queue worker that stops without losing or double-acking a message: it consumes the
//! RabbitMQ queue `lifecycle-mq-example` (declared here if missing), four handlers at a time,
//! and republishes each order's confirmation to `lifecycle-mq-example-done`.
//!
//! Run it against a local RabbitMQ, feed it, and stop it with Ctrl-C or `kill -TERM`: the
//! report shows the consumer stopped after handing back what it had not started.
//!
//! ```sh
//! cargo run -p lifecycle-mq --example worker            # AMQP_URL overrides the broker
//! ```

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lifecycle_core::{Lifecycle, Registration, Report};
use lifecycle_mq::{Ack, AmqpConsumer, AmqpPublisher, Message, MqError};

const QUEUE: &str = "lifecycle-mq-example";
const DONE: &str = "lifecycle-mq-example-done";

#[tokio::main]
async fn main() -> Report {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    declare_queues(&url).await;

    let publisher = AmqpPublisher::new(&url);
    let done = publisher.handle();
    let orders = AmqpConsumer::new(&url, QUEUE, move |message: Message| {
        let done = done.clone();
        async move {
            // The work; a redelivered order (`message.redelivered()`) may have been done once.
            tokio::time::sleep(Duration::from_millis(200)).await;
            done.publish("", DONE, message.payload()).await?;
            Ok::<_, MqError>(Ack::Done)
        }
    })
    .prefetch(8)
    .concurrency(4);

    Lifecycle::builder()
        .register(Registration::new("done", publisher))
        .register(
            Registration::new("orders", orders)
                .depends_on("done")
                .stop_timeout(Duration::from_secs(10)),
        )
        .build()
        .expect("a valid configuration")
        .run()
        .await
}

/// Declares the two durable queues; the components expect them to exist.
async fn declare_queues(url: &str) {
    let connection = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .expect("RabbitMQ answers");
    let channel = connection.create_channel().await.expect("a channel");
    for queue in [QUEUE, DONE] {
        channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            )
            .await
            .expect("the queue is declared");
    }
    let _ = connection.close(200, "declared".into()).await;
}
