//! The publisher's contract, one suite run on both brokers (`<test>::amqp`, `<test>::nats`):
//! a publish returns once the broker took the message, one nothing takes fails, none is sent
//! before the start or after the stop turn, publishes in flight at the stop are confirmed or
//! fail (never dropped), one the broker never confirms fails at the stop instead of hanging,
//! and a connection lost while running is a failure.

use std::time::Duration;

use lifecycle_core::{Outcome, Registration, TriggerKind};
use lifecycle_mq::MqError;

use crate::broker::Broker;
use crate::common::{connections_to, no_connection_left, start_alone, unique, Proxy};
use crate::consumer::on_both_brokers;

on_both_brokers!(
    publishes_are_confirmed_unroutable_ones_fail_and_none_is_sent_outside_its_run,
    publishes_in_flight_at_the_stop_are_confirmed_or_fail_never_dropped,
    a_publish_the_broker_never_confirms_fails_at_the_stop_instead_of_hanging,
    a_connection_lost_while_running_is_a_failure_of_the_publisher,
);

async fn publishes_are_confirmed_unroutable_ones_fail_and_none_is_sent_outside_its_run(
    broker: Broker,
) {
    if !broker.available().await {
        return;
    }
    let queue = broker.queue("pub", false).await;
    let proxy = Proxy::start(broker.addr()).await;
    let (publisher, events) = broker.publisher(broker.url_at(proxy.addr));
    let early = events.to(&queue.name, b"too early").await;
    assert!(
        matches!(early, Err(MqError::NotRunning { .. })),
        "{early:?}"
    );

    let (handle, run) = start_alone(Registration::new("publisher", publisher)).await;
    for i in 0..10 {
        events
            .to(&queue.name, format!("{i}").as_bytes())
            .await
            .unwrap();
    }
    assert_eq!(queue.ready().await, 10, "each stored once confirmed");
    // No queue (RabbitMQ: returned as unroutable) or no stream (JetStream: no responders).
    let nowhere = events.to(&unique("nowhere"), b"x").await;
    assert!(
        matches!(nowhere, Err(MqError::PublishFailed { .. })),
        "{nowhere:?}"
    );
    assert_eq!(connections_to(proxy.addr.port()), 1);

    handle.shutdown("test over");
    let report = run.await.unwrap();
    assert_eq!(
        report.component("publisher").unwrap().outcome,
        Outcome::Stopped,
        "{report:?}"
    );
    let late = tokio::time::timeout(Duration::from_millis(100), events.to(&queue.name, b"late"))
        .await
        .expect("fails fast");
    assert!(matches!(late, Err(MqError::NotRunning { .. })), "{late:?}");
    assert_eq!(queue.ready().await, 10);
    no_connection_left(proxy.addr.port()).await;
    queue.delete().await;
}

async fn publishes_in_flight_at_the_stop_are_confirmed_or_fail_never_dropped(broker: Broker) {
    if !broker.available().await {
        return;
    }
    let queue = broker.queue("pub-stop", false).await;
    let (publisher, events) = broker.publisher(broker.url());
    let (handle, run) = start_alone(Registration::new("publisher", publisher)).await;
    // Four callers publishing as fast as confirms come, through the stop.
    let callers: Vec<_> = (0..4)
        .map(|caller| {
            let (events, queue) = (events.clone(), queue.name.clone());
            tokio::spawn(async move {
                let mut confirmed = 0;
                loop {
                    match events.to(&queue, format!("{caller}").as_bytes()).await {
                        Ok(()) => confirmed += 1,
                        Err(MqError::NotRunning { .. }) => return (confirmed, None),
                        Err(other) => return (confirmed, Some(other)),
                    }
                }
            })
        })
        .collect();
    // Some publishes confirmed before the stop turn comes.
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while queue.ready().await < 20 {
        assert!(
            tokio::time::Instant::now() < until,
            "publishes never stored"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.shutdown("test over");
    let report = run.await.unwrap();
    assert_eq!(
        report.component("publisher").unwrap().outcome,
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
    // Every confirmed publish is stored, and nothing else: the publishes refused at the stop
    // were never sent.
    assert_eq!(queue.ready().await, confirmed);
    queue.delete().await;
}

async fn a_publish_the_broker_never_confirms_fails_at_the_stop_instead_of_hanging(broker: Broker) {
    if !broker.available().await {
        return;
    }
    let queue = broker.queue("pub-gone", false).await;
    let proxy = Proxy::start(broker.addr()).await;
    let (publisher, events) = broker.publisher(broker.url_at(proxy.addr));
    let (handle, run) =
        start_alone(Registration::new("publisher", publisher).stop_timeout(Duration::from_secs(1)))
            .await;
    events.to(&queue.name, b"before").await.unwrap();
    proxy.black_hole();
    let (events2, queue2) = (events.clone(), queue.name.clone());
    let stuck = tokio::spawn(async move { events2.to(&queue2, b"unanswered").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    handle.shutdown("test over");
    let report = tokio::time::timeout(Duration::from_secs(3), run)
        .await
        .expect("the stop is bounded")
        .unwrap();
    let line = report.component("publisher").unwrap();
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
    // And its socket is closed: nothing of it is left talking to a dead broker.
    no_connection_left(proxy.addr.port()).await;
    drop(proxy);
    queue.delete().await;
}

async fn a_connection_lost_while_running_is_a_failure_of_the_publisher(broker: Broker) {
    if !broker.available().await {
        return;
    }
    let proxy = Proxy::start(broker.addr()).await;
    let (publisher, _events) = broker.publisher(broker.url_at(proxy.addr));
    let (_handle, run) = start_alone(Registration::new("publisher", publisher)).await;
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
    assert_eq!(connections_to(proxy.addr.port()), 0);
}
