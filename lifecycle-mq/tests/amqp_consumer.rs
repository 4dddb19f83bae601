//! The AMQP consumer against the real RabbitMQ: every message handled, the stop's order
//! (cancel, hand back the unstarted, finish the started, close), a handler cut off at the
//! deadline handed back and never acked, and the broker missing at start, lost while running
//! and gone at the stop.

#![cfg(feature = "amqp")]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::amqp::{admin, connection_named, declare, delete, no_connection_named, publish, ready};
use common::{
    amqp_url, broker_available, eventually, ids, start, start_alone, unique, Proxy, Runs, RABBITMQ,
};
use lifecycle_core::{Lifecycle, OnFailure, Outcome, Registration, TriggerKind};
use lifecycle_mq::{Ack, AmqpConsumer, Message};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_handled_once_and_nothing_is_left_on_the_broker() {
    if !broker_available("RabbitMQ", RABBITMQ).await {
        return;
    }
    let (queue, name) = (unique("all"), unique("all-consumer"));
    let (_admin, channel) = admin().await;
    declare(&channel, &queue, false).await;
    publish(&channel, &queue, ids("m", 50)).await;

    let runs = Runs::default();
    let consumer = AmqpConsumer::new(amqp_url(), &queue, runs.handler(1))
        .prefetch(10)
        .concurrency(4);
    let (handle, run) = start_alone(Registration::new(&name, consumer)).await;
    eventually("all 50 handled", || runs.finished() == 50).await;
    assert!(
        connection_named(&name),
        "the broker lists the consumer's connection"
    );
    handle.shutdown("test over");
    let report = run.await.unwrap();

    assert_eq!(
        report.component(&name).unwrap().outcome,
        Outcome::Stopped,
        "{report:?}"
    );
    assert!(runs.0.lock().unwrap().values().all(|&r| r == (1, 1)));
    assert_eq!(ready(&channel, &queue).await, 0, "every message acked");
    assert!(
        no_connection_named(&name).await,
        "the consumer's connection is closed"
    );
    delete(&channel, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stop_finishes_handlers_in_progress_and_hands_back_the_prefetched_rest() {
    if !broker_available("RabbitMQ", RABBITMQ).await {
        return;
    }
    let (queue, name) = (unique("stop"), unique("stop-consumer"));
    let (_admin, channel) = admin().await;
    declare(&channel, &queue, false).await;
    publish(&channel, &queue, ids("m", 20)).await;

    // Two handlers of 1.5 s at a time, ten messages prefetched: at the stop, two are in
    // progress and eight wait in the client's buffer.
    let runs = Runs::default();
    let consumer = AmqpConsumer::new(amqp_url(), &queue, runs.handler(1500))
        .prefetch(10)
        .concurrency(2);
    let (handle, run) =
        start_alone(Registration::new(&name, consumer).stop_timeout(Duration::from_secs(5))).await;
    eventually("two handlers in progress", || runs.in_progress() == 2).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while ready(&channel, &queue).await != 10 {
        assert!(tokio::time::Instant::now() < until, "ten never prefetched");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.shutdown("test over");
    // The eight never started are handed back while the two handlers still run, not only
    // when the channel closes after them.
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while ready(&channel, &queue).await != 18 {
        assert!(
            tokio::time::Instant::now() < until,
            "the unstarted were not handed back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        runs.finished(),
        0,
        "handed back before the handlers finished"
    );
    let report = run.await.unwrap();

    assert_eq!(
        report.component(&name).unwrap().outcome,
        Outcome::Stopped,
        "{report:?}"
    );
    let (began, finished) = (runs.began(), runs.finished());
    assert_eq!(began, finished, "no handler was cut off");
    assert_eq!(began, 2, "no message was started after the stop turn");
    // What the handlers finished was acked; everything else is back in the queue, at once
    // (not after a consumer timeout), and the broker holds no connection of ours.
    assert_eq!(ready(&channel, &queue).await, 20 - finished);
    assert!(no_connection_named(&name).await);
    delete(&channel, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_cut_off_at_the_stop_timeout_is_handed_back_never_acked() {
    if !broker_available("RabbitMQ", RABBITMQ).await {
        return;
    }
    let (queue, name) = (unique("cut"), unique("cut-consumer"));
    let (_admin, channel) = admin().await;
    declare(&channel, &queue, true).await;
    publish(&channel, &queue, ids("slow", 1)).await;

    let runs = Runs::default();
    let consumer = AmqpConsumer::new(amqp_url(), &queue, runs.handler(60_000));
    let (handle, run) =
        start_alone(Registration::new(&name, consumer).stop_timeout(Duration::from_secs(1))).await;
    eventually("the handler runs", || runs.in_progress() == 1).await;
    handle.shutdown("test over");
    let report = run.await.unwrap();

    let line = report.component(&name).unwrap();
    assert_eq!(line.outcome, Outcome::Failed, "{report:?}");
    assert!(
        line.error
            .as_deref()
            .unwrap()
            .contains("cut off 1 handlers"),
        "{line:?}"
    );
    // The message its stop gave up on (by the publisher's id where it set one).
    assert_eq!(line.held_by.len(), 1, "{line:?}");
    assert!(
        line.held_by[0].starts_with("message ")
            && line.held_by[0].contains(", delivery 1, running "),
        "{line:?}"
    );
    assert!(line.held_by[0].contains(", running "), "{line:?}");
    assert_eq!(runs.finished(), 0);

    // The next consumer gets it again, and knows it is a redelivery (a quorum queue counts).
    let again = Arc::new(Mutex::new(None));
    let seen = again.clone();
    let consumer = AmqpConsumer::new(amqp_url(), &queue, move |message: Message| {
        *seen.lock().unwrap() = Some((message.redelivered(), message.delivery_count()));
        async { Ok::<_, std::io::Error>(Ack::Done) }
    });
    let (handle, run) = start_alone(Registration::new(unique("cut-again"), consumer)).await;
    eventually("redelivered", || again.lock().unwrap().is_some()).await;
    handle.shutdown("test over");
    assert_eq!(run.await.unwrap().exit_code(), 0);
    assert_eq!(*again.lock().unwrap(), Some((true, Some(2))));
    delete(&channel, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_at_start_fails_the_start_naming_the_url_without_credentials() {
    // Nothing listens on port 1.
    let consumer = AmqpConsumer::new("amqp://app:s3cret@127.0.0.1:1/%2f", "q", |_| async {
        Ok::<_, std::io::Error>(Ack::Done)
    });
    let lifecycle = Lifecycle::builder()
        .signals([])
        .register(Registration::new("orders", consumer).start_timeout(Duration::from_secs(1)))
        .build()
        .unwrap();
    let report = lifecycle.run().await;
    assert_eq!(report.trigger.kind, TriggerKind::StartFailed);
    let error = report.component("orders").unwrap().error.clone().unwrap();
    assert!(
        error.contains("cannot reach amqp://127.0.0.1:1/%2f for q"),
        "{error}"
    );
    assert!(!error.contains("s3cret") && !report.to_json().contains("s3cret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_while_running_is_a_failure_and_the_stop_stays_bounded() {
    if !broker_available("RabbitMQ", RABBITMQ).await {
        return;
    }
    let (queue, name) = (unique("lost"), unique("lost-consumer"));
    let (_admin, channel) = admin().await;
    declare(&channel, &queue, false).await;
    publish(&channel, &queue, ids("m", 3)).await;

    let proxy = Proxy::start(RABBITMQ).await;
    let runs = Runs::default();
    let consumer = AmqpConsumer::new(
        format!("amqp://guest:guest@{}/%2f", proxy.addr),
        &queue,
        runs.handler(1),
    );
    let (_handle, run) = start_alone(Registration::new(&name, consumer)).await;
    eventually("3 handled", || runs.finished() == 3).await;
    // Cut once the broker has the acks, so that what follows is about the cut alone.
    eventually("3 acked", || common::amqp::messages(&queue) == 0).await;
    proxy.cut();
    // The default policy shuts the service down; nothing reconnects or hangs.
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
    assert_eq!(report.component(&name).unwrap().outcome, Outcome::Failed);
    assert_eq!(ready(&channel, &queue).await, 0);
    delete(&channel, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_gone_at_the_stop_cannot_hold_the_stop_past_its_timeout() {
    if !broker_available("RabbitMQ", RABBITMQ).await {
        return;
    }
    let (queue, name) = (unique("gone"), unique("gone-consumer"));
    let (_admin, channel) = admin().await;
    declare(&channel, &queue, false).await;
    publish(&channel, &queue, ids("m", 5)).await;

    let proxy = Proxy::start(RABBITMQ).await;
    let runs = Runs::default();
    let consumer = AmqpConsumer::new(
        format!("amqp://guest:guest@{}/%2f", proxy.addr),
        &queue,
        runs.handler(200),
    )
    .prefetch(5);
    let (handle, run) =
        start_alone(Registration::new(&name, consumer).stop_timeout(Duration::from_secs(2))).await;
    eventually("a handler runs", || runs.in_progress() == 1).await;
    proxy.black_hole();
    handle.shutdown("test over");
    let report = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the stop is bounded")
        .unwrap();
    let line = report.component(&name).unwrap();
    // The consumer's own error, before the lifecycle had to cut it off.
    assert_eq!(line.outcome, Outcome::Failed, "{report:?}");
    assert!(
        line.error
            .as_deref()
            .unwrap()
            .contains("basic.cancel failed"),
        "{line:?}"
    );
    // And its socket is closed: nothing of the consumer is left talking to a dead broker.
    common::no_connection_left(proxy.addr.port()).await;
    drop(proxy);
    delete(&channel, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_restart_policy_a_lost_connection_is_replaced_and_consuming_goes_on() {
    if !broker_available("RabbitMQ", RABBITMQ).await {
        return;
    }
    let (queue, name) = (unique("restart"), unique("restart-consumer"));
    let (_admin, channel) = admin().await;
    declare(&channel, &queue, false).await;
    publish(&channel, &queue, ids("before", 5)).await;

    let proxy = Proxy::start(RABBITMQ).await;
    let runs = Runs::default();
    let consumer = AmqpConsumer::new(
        format!("amqp://guest:guest@{}/%2f", proxy.addr),
        &queue,
        runs.handler(1),
    );
    let (handle, run) = start_alone(Registration::new(&name, consumer).on_failure(
        OnFailure::Restart {
            max_restarts: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(50),
        },
    ))
    .await;
    eventually("5 handled", || runs.finished() == 5).await;
    proxy.drop_connections();
    publish(&channel, &queue, ids("after", 5)).await;
    // At least once: an ack in flight at the drop may make a second run of one of the first.
    eventually("5 more handled after the restart", || {
        (0..5).all(|i| {
            runs.0
                .lock()
                .unwrap()
                .get(&format!("after-{i}"))
                .is_some_and(|r| r.1 > 0)
        })
    })
    .await;
    // The old connection is gone: one socket to the broker, the new one.
    assert_eq!(common::connections_to(proxy.addr.port()), 1);
    handle.shutdown("test over");
    let report = run.await.unwrap();
    assert_eq!(report.trigger.kind, TriggerKind::Requested, "{report:?}");
    assert_eq!(
        report.component(&name).unwrap().outcome,
        Outcome::Stopped,
        "{report:?}"
    );
    assert_eq!(ready(&channel, &queue).await, 0);
    // At least once: an ack in flight when the connection dropped makes a second run.
    assert_eq!(runs.0.lock().unwrap().len(), 10);
    delete(&channel, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_connection() {
    if !broker_available("RabbitMQ", RABBITMQ).await {
        return;
    }
    let queue = unique("health");
    let (_admin, channel) = admin().await;
    declare(&channel, &queue, false).await;
    let proxy = Proxy::start(RABBITMQ).await;
    let runs = Runs::default();
    let consumer = AmqpConsumer::new(
        format!("amqp://guest:guest@{}/%2f", proxy.addr),
        &queue,
        runs.handler(1),
    );
    let lifecycle = Lifecycle::builder()
        .signals([])
        .health_cache(Duration::ZERO)
        .register(Registration::new("consumer", consumer).on_failure(OnFailure::Ignore))
        .build()
        .unwrap();
    let (handle, run) = start(lifecycle).await;
    assert!(handle.is_ready().await, "healthy while connected");
    proxy.cut();
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while handle.is_ready().await {
        assert!(
            tokio::time::Instant::now() < until,
            "still healthy without a connection"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handle.shutdown("test over");
    // The stop of a consumer whose connection is gone is quick and clean.
    let report = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the stop is bounded")
        .unwrap();
    assert_eq!(report.exit_code(), 0, "{report:?}");
    delete(&channel, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_hands_its_message_back_at_once() {
    if !broker_available("RabbitMQ", RABBITMQ).await {
        return;
    }
    let queue = unique("panic");
    let (_admin, channel) = admin().await;
    declare(&channel, &queue, false).await;
    publish(&channel, &queue, ids("m", 1)).await;

    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let consumer = AmqpConsumer::new(amqp_url(), &queue, move |message: Message| {
        record.lock().unwrap().push(message.redelivered());
        let first = !message.redelivered();
        async move {
            assert!(!first, "the first delivery panics");
            Ok::<_, std::io::Error>(Ack::Done)
        }
    });
    let (handle, run) =
        start_alone(Registration::new("consumer", consumer).on_failure(OnFailure::Ignore)).await;
    // Handed back at once, not held until the stop: the same consumer gets it again.
    eventually("redelivered after the panic", || {
        seen.lock().unwrap().len() == 2
    })
    .await;
    assert_eq!(*seen.lock().unwrap(), vec![false, true]);
    handle.shutdown("test over");
    let report = run.await.unwrap();
    assert_eq!(report.exit_code(), 0, "{report:?}");
    assert_eq!(ready(&channel, &queue).await, 0);
    delete(&channel, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_a_failed_delivery_never_a_failure_of_the_consumer() {
    if !broker_available("RabbitMQ", RABBITMQ).await {
        return;
    }
    let queue = unique("panic-shutdown");
    let (_admin, channel) = admin().await;
    declare(&channel, &queue, false).await;
    publish(&channel, &queue, ids("m", 1)).await;

    // A classic queue counts no redeliveries: with a maximum of 1, the first failed delivery
    // is the last, and the message is rejected (dropped, with no dead-letter exchange).
    let consumer = AmqpConsumer::new(amqp_url(), &queue, |_: Message| async {
        panic!("poison message");
        #[allow(unreachable_code)]
        Ok::<_, std::io::Error>(Ack::Done)
    })
    .max_deliveries(1);
    let (handle, run) = start_alone(Registration::new("consumer", consumer)).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while common::amqp::messages(&queue) != 0 {
        assert!(tokio::time::Instant::now() < until, "never rejected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(handle.is_ready().await, "the consumer stays up");
    handle.shutdown("test over");
    let report = run.await.unwrap();
    assert_eq!(report.trigger.kind, TriggerKind::Requested, "{report:?}");
    assert_eq!(
        report.component("consumer").unwrap().outcome,
        Outcome::Stopped,
        "{report:?}"
    );
    delete(&channel, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_deleted_while_consuming_is_a_failure() {
    if !broker_available("RabbitMQ", RABBITMQ).await {
        return;
    }
    let queue = unique("deleted");
    let (_admin, channel) = admin().await;
    declare(&channel, &queue, false).await;

    let consumer = AmqpConsumer::new(amqp_url(), &queue, |_: Message| async {
        Ok::<_, std::io::Error>(Ack::Done)
    });
    let (_handle, run) = start_alone(Registration::new("consumer", consumer)).await;
    delete(&channel, &queue).await;
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
        report
            .trigger
            .detail
            .contains("the broker cancelled the subscription"),
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_url_fails_the_start_at_once_without_its_credentials() {
    let consumer = AmqpConsumer::new("amqp://app:s3cret@host:port/%2f", "q", |_| async {
        Ok::<_, std::io::Error>(Ack::Done)
    });
    let lifecycle = Lifecycle::builder()
        .signals([])
        .register(Registration::new("orders", consumer))
        .build()
        .unwrap();
    // Not retried until the 30 s start timeout: a URL does not get better.
    let report = tokio::time::timeout(Duration::from_secs(5), lifecycle.run())
        .await
        .expect("the start fails at once");
    assert_eq!(report.trigger.kind, TriggerKind::StartFailed);
    let error = report.component("orders").unwrap().error.clone().unwrap();
    assert!(error.contains("invalid broker URL"), "{error}");
    assert!(!report.to_json().contains("s3cret"), "{error}");
}
