//! The AMQP publisher against the real RabbitMQ: confirmed publishes, unroutable ones refused,
//! and at the stop every publish either confirmed or failed, none dropped, later ones refused
//! at once.

#![cfg(feature = "amqp")]

mod common;

use std::time::Duration;

use common::amqp::{admin, declare, delete, no_connection_named, ready};
use common::{amqp_url, broker_available, start_alone, unique, RABBITMQ};
use lifecycle_core::{Outcome, Registration, TriggerKind};
use lifecycle_mq::{AmqpPublisher, MqError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_are_confirmed_unroutable_ones_fail_and_none_is_sent_after_the_stop() {
    if !broker_available("RabbitMQ", RABBITMQ).await {
        return;
    }
    let (queue, name) = (unique("pub"), unique("publisher"));
    let (_admin, channel) = admin().await;
    declare(&channel, &queue, false).await;

    let publisher = AmqpPublisher::new(amqp_url());
    let events = publisher.handle();
    let early = events.publish("", &queue, b"too early").await;
    assert!(
        matches!(early, Err(MqError::NotRunning { .. })),
        "{early:?}"
    );

    let (handle, run) = start_alone(Registration::new(&name, publisher)).await;
    for i in 0..10 {
        events
            .publish("", &queue, format!("{i}").as_bytes())
            .await
            .unwrap();
    }
    assert_eq!(ready(&channel, &queue).await, 10);
    let unroutable = events.publish("", &unique("no-such-queue"), b"x").await;
    assert!(
        matches!(&unroutable, Err(MqError::PublishFailed { reason, .. }) if reason.contains("unroutable")),
        "{unroutable:?}"
    );

    handle.shutdown("test over");
    let report = run.await.unwrap();
    assert_eq!(
        report.component(&name).unwrap().outcome,
        Outcome::Stopped,
        "{report:?}"
    );
    let late = tokio::time::timeout(
        Duration::from_millis(100),
        events.publish("", &queue, b"late"),
    )
    .await
    .expect("fails fast");
    assert!(matches!(late, Err(MqError::NotRunning { .. })), "{late:?}");
    assert_eq!(ready(&channel, &queue).await, 10);
    assert!(no_connection_named(&name).await);
    delete(&channel, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_in_flight_at_the_stop_are_confirmed_or_fail_never_dropped() {
    if !broker_available("RabbitMQ", RABBITMQ).await {
        return;
    }
    let (queue, name) = (unique("pub-stop"), unique("publisher-stop"));
    let (_admin, channel) = admin().await;
    declare(&channel, &queue, false).await;

    let publisher = AmqpPublisher::new(amqp_url());
    let events = publisher.handle();
    let (handle, run) = start_alone(Registration::new(&name, publisher)).await;
    // Four callers publishing as fast as confirms come, through the stop.
    let callers: Vec<_> = (0..4)
        .map(|caller| {
            let (events, queue) = (events.clone(), queue.clone());
            tokio::spawn(async move {
                let mut confirmed = 0;
                loop {
                    match events
                        .publish("", &queue, format!("{caller}").as_bytes())
                        .await
                    {
                        Ok(()) => confirmed += 1,
                        Err(MqError::NotRunning { .. }) => return (confirmed, None),
                        Err(other) => return (confirmed, Some(other)),
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    handle.shutdown("test over");
    let report = run.await.unwrap();
    assert_eq!(
        report.component(&name).unwrap().outcome,
        Outcome::Stopped,
        "{report:?}"
    );

    let mut confirmed = 0;
    for caller in callers {
        let (count, error) = tokio::time::timeout(Duration::from_secs(2), caller)
            .await
            .expect("no publish is left waiting")
            .unwrap();
        assert!(
            error.is_none(),
            "a publish in flight at the stop failed: {error:?}"
        );
        confirmed += count;
    }
    assert!(confirmed > 0);
    // Every confirmed publish is in the queue, and nothing else: the publishes refused at the
    // stop were never sent.
    assert_eq!(ready(&channel, &queue).await, confirmed);
    delete(&channel, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_the_broker_never_confirms_fails_at_the_stop_instead_of_hanging() {
    if !broker_available("RabbitMQ", RABBITMQ).await {
        return;
    }
    let (queue, name) = (unique("pub-gone"), unique("publisher-gone"));
    let (_admin, channel) = admin().await;
    declare(&channel, &queue, false).await;
    let proxy = common::Proxy::start(RABBITMQ).await;

    let publisher = AmqpPublisher::new(format!("amqp://guest:guest@{}/%2f", proxy.addr));
    let events = publisher.handle();
    let (handle, run) =
        start_alone(Registration::new(&name, publisher).stop_timeout(Duration::from_secs(1))).await;
    events.publish("", &queue, b"before").await.unwrap();
    proxy.black_hole();
    let (events2, queue2) = (events.clone(), queue.clone());
    let stuck = tokio::spawn(async move { events2.publish("", &queue2, b"unanswered").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    handle.shutdown("test over");
    let report = tokio::time::timeout(Duration::from_secs(3), run)
        .await
        .expect("the stop is bounded")
        .unwrap();
    let line = report.component(&name).unwrap();
    assert_eq!(line.outcome, Outcome::Failed, "{report:?}");
    assert!(
        line.error
            .as_deref()
            .unwrap()
            .contains("1 publishes were never confirmed"),
        "{line:?}"
    );
    let stuck = stuck.await.unwrap();
    assert!(
        matches!(stuck, Err(MqError::PublishFailed { .. })),
        "{stuck:?}"
    );
    // And its socket is closed: nothing of it is left talking to a dead server.
    common::no_connection_left(proxy.addr.port()).await;
    drop(proxy);
    delete(&channel, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_while_running_is_a_failure_of_the_publisher() {
    if !broker_available("RabbitMQ", RABBITMQ).await {
        return;
    }
    let name = unique("publisher-lost");
    let proxy = common::Proxy::start(RABBITMQ).await;
    let publisher = AmqpPublisher::new(format!("amqp://guest:guest@{}/%2f", proxy.addr));
    let (_handle, run) = start_alone(Registration::new(&name, publisher)).await;
    proxy.cut();
    let report = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the lifecycle ends")
        .unwrap();
    assert_eq!(
        report.trigger.kind,
        TriggerKind::ComponentFailed,
        "{report:?}"
    );
    assert!(
        report.trigger.detail.contains("lost the connection"),
        "{report:?}"
    );
}
