//! What only RabbitMQ shows: each component's connection carries the component's name, which
//! the broker lists while it runs (`rabbitmqctl list_connections`), and not after its stop.
//! (The contract itself, which both brokers keep, is in `consumer` and `publisher`.)

use lifecycle_core::{Lifecycle, Registration};
use lifecycle_mq::{Ack, AmqpConsumer, AmqpPublisher, Message};

use crate::broker::Broker;
use crate::common::amqp::{connection_named, no_connection_named};
use crate::common::{amqp_url, start, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_named_after_their_components_and_closed_at_the_stop() {
    if !Broker::Amqp.available().await {
        return;
    }
    let queue = Broker::Amqp.queue("named", false).await;
    let (consumer, publisher) = (unique("named-consumer"), unique("named-publisher"));
    let handler = |_: Message| async { Ok::<_, std::io::Error>(Ack::Done) };
    let lifecycle = Lifecycle::builder()
        .signals([])
        .register(Registration::new(
            &consumer,
            AmqpConsumer::new(amqp_url(), &queue.name, handler),
        ))
        .register(Registration::new(
            &publisher,
            AmqpPublisher::new(amqp_url()),
        ))
        .build()
        .unwrap();
    let (handle, run) = start(lifecycle).await;
    assert!(connection_named(&consumer), "the consumer's connection");
    assert!(connection_named(&publisher), "the publisher's connection");
    handle.shutdown("test over");
    assert_eq!(run.await.unwrap().exit_code(), 0);
    assert!(no_connection_named(&consumer).await);
    assert!(no_connection_named(&publisher).await);
    queue.delete().await;
}
