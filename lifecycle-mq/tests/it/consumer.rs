//! The consumer's contract, one suite run on both brokers (`<test>::amqp`, `<test>::nats`):
//! every message handled once; the stop's order (stop receiving, hand back the unstarted at
//! once, finish the started, close); a handler cut off at the deadline handed back and never
//! acked; a panic a failed delivery, never a failure of the component; the broker missing at
//! start, lost while running, gone at the stop, or its queue deleted; health; and a restart
//! after a lost connection.
//!
//! Every consumer that the test must see connect and disconnect goes through a `Proxy`, so the
//! test counts this process's connections to the proxy's own port, whatever runs beside it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lifecycle_core::{Lifecycle, OnFailure, Outcome, Registration, TriggerKind};
use lifecycle_mq::{Ack, Message};

use crate::broker::{Broker, Options};
use crate::common::{connections_to, eventually, ids, start, start_alone, unique, Proxy, Runs};

/// Each test below, once per broker: `<test>::amqp` and `<test>::nats`.
macro_rules! on_both_brokers {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn amqp() {
                super::$test(crate::broker::Broker::Amqp).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn nats() {
                super::$test(crate::broker::Broker::Nats).await;
            }
        }
    )*};
}
pub(crate) use on_both_brokers;

on_both_brokers!(
    every_message_is_handled_once_and_nothing_is_left_on_the_broker,
    the_stop_finishes_handlers_in_progress_and_hands_back_the_unstarted_rest_at_once,
    a_handler_cut_off_at_the_stop_timeout_is_handed_back_never_acked,
    a_broker_down_at_start_fails_the_start_naming_the_url_without_credentials,
    an_invalid_url_fails_the_start_at_once_without_its_credentials,
    a_connection_lost_while_running_is_a_failure_and_nothing_is_left_after_the_stop,
    a_broker_gone_at_the_stop_cannot_hold_the_stop_past_its_timeout,
    with_a_restart_policy_a_lost_connection_is_replaced_and_consuming_goes_on,
    health_follows_the_connection,
    a_panicking_handler_hands_its_message_back_at_once,
    a_panicking_handler_at_its_last_delivery_is_dead_never_a_failure_of_the_consumer,
    a_queue_deleted_while_consuming_is_a_failure,
);

async fn every_message_is_handled_once_and_nothing_is_left_on_the_broker(broker: Broker) {
    if !broker.available().await {
        return;
    }
    let queue = broker.queue("all", false).await;
    queue.publish(ids("m", 50)).await;

    let proxy = Proxy::start(broker.addr()).await;
    let runs = Runs::default();
    let options = Options {
        concurrency: 4,
        ..Options::default()
    };
    let consumer = broker.consumer(broker.url_at(proxy.addr), &queue, runs.handler(1), options);
    let (handle, run) = start_alone(Registration::new("consumer", consumer)).await;
    eventually("all 50 handled", || runs.finished() == 50).await;
    assert_eq!(
        connections_to(proxy.addr.port()),
        1,
        "the consumer's connection"
    );
    handle.shutdown("test over");
    let report = run.await.unwrap();

    assert_eq!(
        report.component("consumer").unwrap().outcome,
        Outcome::Stopped,
        "{report:?}"
    );
    assert!(runs.0.lock().unwrap().values().all(|&r| r == (1, 1)));
    assert_eq!(
        queue.settles_to(0, Duration::from_secs(2)).await,
        0,
        "every message acked"
    );
    crate::common::no_connection_left(proxy.addr.port()).await;
    queue.delete().await;
}

async fn the_stop_finishes_handlers_in_progress_and_hands_back_the_unstarted_rest_at_once(
    broker: Broker,
) {
    if !broker.available().await {
        return;
    }
    let queue = broker.queue("stop", false).await;
    queue.publish(ids("m", 10)).await;

    // Two handlers of 3 s at a time, all ten messages prefetched (RabbitMQ) or pulled
    // (JetStream): at the stop, two are in progress and eight wait in the client.
    let runs = Runs::default();
    let options = Options {
        prefetch: 10,
        concurrency: 2,
        ..Options::default()
    };
    let consumer = broker.consumer(broker.url(), &queue, runs.handler(3000), options);
    let (handle, run) =
        start_alone(Registration::new("consumer", consumer).stop_timeout(Duration::from_secs(8)))
            .await;
    eventually("two handlers in progress", || runs.in_progress() == 2).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(2);
    while queue.ready().await != 0 {
        assert!(tokio::time::Instant::now() < until, "ten never taken");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.shutdown("test over");
    // The eight never started are handed back while the two handlers still run: another
    // consumer gets them, as redeliveries, before they end.
    let taken = queue.take(8, Duration::from_secs(2)).await;
    assert_eq!(
        taken, [true; 8],
        "the unstarted were not handed back at once"
    );
    assert_eq!(
        runs.finished(),
        0,
        "handed back before the handlers finished"
    );
    let report = run.await.unwrap();

    assert_eq!(
        report.component("consumer").unwrap().outcome,
        Outcome::Stopped,
        "{report:?}"
    );
    assert_eq!(
        (runs.began(), runs.finished()),
        (2, 2),
        "none started after the stop turn, none cut off"
    );
    // The two finished were acked: the other consumer holds the eight.
    assert_eq!(queue.settles_to(8, Duration::from_secs(2)).await, 8);
    queue.delete().await;
}

async fn a_handler_cut_off_at_the_stop_timeout_is_handed_back_never_acked(broker: Broker) {
    if !broker.available().await {
        return;
    }
    // A queue that counts deliveries, so the redelivery says which it is.
    let queue = broker.queue("cut", true).await;
    queue.publish(ids("slow", 1)).await;

    let runs = Runs::default();
    let consumer = broker.consumer(
        broker.url(),
        &queue,
        runs.handler(60_000),
        Options::default(),
    );
    let (handle, run) =
        start_alone(Registration::new("consumer", consumer).stop_timeout(Duration::from_secs(1)))
            .await;
    eventually("the handler runs", || runs.in_progress() == 1).await;
    handle.shutdown("test over");
    let report = run.await.unwrap();

    let line = report.component("consumer").unwrap();
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
    assert_eq!(runs.finished(), 0);

    // Handed back (not left to a consumer timeout or JetStream's 30 s ack wait): the next
    // consumer gets it at once, and knows it is the second delivery.
    let again = Arc::new(Mutex::new(None));
    let seen = again.clone();
    let handler = move |message: Message| {
        *seen.lock().unwrap() = Some((message.redelivered(), message.delivery_count()));
        async { Ok::<_, std::io::Error>(Ack::Done) }
    };
    let consumer = broker.consumer(broker.url(), &queue, handler, Options::default());
    let (handle, run) = start_alone(Registration::new("again", consumer)).await;
    eventually("redelivered", || again.lock().unwrap().is_some()).await;
    handle.shutdown("test over");
    assert_eq!(run.await.unwrap().exit_code(), 0);
    assert_eq!(*again.lock().unwrap(), Some((true, Some(2))));
    assert_eq!(queue.settles_to(0, Duration::from_secs(2)).await, 0);
    queue.delete().await;
}

async fn a_broker_down_at_start_fails_the_start_naming_the_url_without_credentials(broker: Broker) {
    // Nothing listens on port 1.
    let (url, shown) = broker.unreachable_url();
    let handler = |_| async { Ok::<_, std::io::Error>(Ack::Done) };
    let consumer = broker.consumer_of(url.to_owned(), "Q", handler, Options::default());
    let lifecycle = Lifecycle::builder()
        .signals([])
        .register(Registration::new("orders", consumer).start_timeout(Duration::from_secs(1)))
        .build()
        .unwrap();
    let report = lifecycle.run().await;
    assert_eq!(report.trigger.kind, TriggerKind::StartFailed);
    let error = report.component("orders").unwrap().error.clone().unwrap();
    assert!(
        error.contains(&format!("cannot reach {shown} for Q")),
        "{error}"
    );
    assert!(!error.contains("s3cret") && !report.to_json().contains("s3cret"));
}

async fn an_invalid_url_fails_the_start_at_once_without_its_credentials(broker: Broker) {
    let handler = |_| async { Ok::<_, std::io::Error>(Ack::Done) };
    let consumer = broker.consumer_of(
        broker.invalid_url().to_owned(),
        "Q",
        handler,
        Options::default(),
    );
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

async fn a_connection_lost_while_running_is_a_failure_and_nothing_is_left_after_the_stop(
    broker: Broker,
) {
    if !broker.available().await {
        return;
    }
    let queue = broker.queue("lost", false).await;
    queue.publish(ids("m", 3)).await;

    let proxy = Proxy::start(broker.addr()).await;
    let runs = Runs::default();
    let url = broker.url_at(proxy.addr);
    let consumer = broker.consumer(url, &queue, runs.handler(1), Options::default());
    let (_handle, run) = start_alone(Registration::new("consumer", consumer)).await;
    eventually("3 handled", || runs.finished() == 3).await;
    // Cut once the broker has the acks, so that what follows is about the cut alone.
    assert_eq!(queue.settles_to(0, Duration::from_secs(5)).await, 0);
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
    let line = report.component("consumer").unwrap();
    assert_eq!(line.outcome, Outcome::Failed);
    // The stop waited for the client's connection task to end: nothing is left to reconnect.
    assert!(
        !line
            .error
            .as_deref()
            .unwrap_or("")
            .contains("did not close"),
        "{line:?}"
    );
    assert_eq!(connections_to(proxy.addr.port()), 0);
    queue.delete().await;
}

async fn a_broker_gone_at_the_stop_cannot_hold_the_stop_past_its_timeout(broker: Broker) {
    if !broker.available().await {
        return;
    }
    let queue = broker.queue("gone", false).await;
    queue.publish(ids("m", 5)).await;

    let proxy = Proxy::start(broker.addr()).await;
    let runs = Runs::default();
    let options = Options {
        prefetch: 5,
        ..Options::default()
    };
    let url = broker.url_at(proxy.addr);
    let consumer = broker.consumer(url, &queue, runs.handler(200), options);
    let (handle, run) =
        start_alone(Registration::new("consumer", consumer).stop_timeout(Duration::from_secs(2)))
            .await;
    eventually("a handler runs", || runs.in_progress() == 1).await;
    proxy.black_hole();
    handle.shutdown("test over");
    let report = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the stop is bounded")
        .unwrap();
    let line = report.component("consumer").unwrap();
    // The consumer's own error, before the lifecycle had to cut it off: a step of its stop
    // (`basic.cancel` on RabbitMQ; handing back or confirming the acks on JetStream) gave up.
    assert_eq!(line.outcome, Outcome::Failed, "{report:?}");
    let error = line.error.as_deref().unwrap();
    assert!(
        error.contains("stopping ") && error.contains(" failed: "),
        "{line:?}"
    );
    // And its socket is closed: nothing of the consumer is left talking to a dead broker.
    crate::common::no_connection_left(proxy.addr.port()).await;
    drop(proxy);
    queue.delete().await;
}

async fn with_a_restart_policy_a_lost_connection_is_replaced_and_consuming_goes_on(broker: Broker) {
    if !broker.available().await {
        return;
    }
    let queue = broker.queue("restart", false).await;
    queue.publish(ids("before", 5)).await;

    let proxy = Proxy::start(broker.addr()).await;
    let runs = Runs::default();
    let options = Options {
        // JetStream: messages the server sent while the connection was down are in flight to
        // no one and come back after the ack wait: keep it short here.
        ack_wait: Some(Duration::from_secs(2)),
        ..Options::default()
    };
    let url = broker.url_at(proxy.addr);
    let consumer = broker.consumer(url, &queue, runs.handler(1), options);
    let (handle, run) = start_alone(Registration::new("consumer", consumer).on_failure(
        OnFailure::Restart {
            max_restarts: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(50),
        },
    ))
    .await;
    eventually("5 handled", || runs.finished() == 5).await;
    proxy.drop_connections();
    queue.publish(ids("after", 5)).await;
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
    assert_eq!(
        connections_to(proxy.addr.port()),
        1,
        "only the new connection"
    );
    // Everything is acked in the end, redeliveries of acks lost at the drop included.
    assert_eq!(queue.settles_to(0, Duration::from_secs(8)).await, 0);
    handle.shutdown("test over");
    let report = run.await.unwrap();
    assert_eq!(report.trigger.kind, TriggerKind::Requested, "{report:?}");
    assert_eq!(
        report.component("consumer").unwrap().outcome,
        Outcome::Stopped,
        "{report:?}"
    );
    assert_eq!(runs.0.lock().unwrap().len(), 10);
    queue.delete().await;
}

async fn health_follows_the_connection(broker: Broker) {
    if !broker.available().await {
        return;
    }
    let queue = broker.queue("health", false).await;
    let proxy = Proxy::start(broker.addr()).await;
    let runs = Runs::default();
    let url = broker.url_at(proxy.addr);
    let consumer = broker.consumer(url, &queue, runs.handler(1), Options::default());
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
    // The stop of a consumer whose connection is gone is quick and clean: never cut off. (The
    // lost connection may have been reported as the run-time failure it is before the shutdown,
    // depending on timing; that is the truth, not a flaw of the stop.)
    let report = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the stop is bounded")
        .unwrap();
    let outcome = report.component("consumer").unwrap().outcome;
    assert!(
        matches!(outcome, Outcome::Stopped | Outcome::Failed),
        "{report:?}"
    );
    queue.delete().await;
}

async fn a_panicking_handler_hands_its_message_back_at_once(broker: Broker) {
    if !broker.available().await {
        return;
    }
    let queue = broker.queue("panic", false).await;
    queue.publish(ids("m", 1)).await;

    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let handler = move |message: Message| {
        record.lock().unwrap().push(message.redelivered());
        let first = !message.redelivered();
        async move {
            assert!(!first, "the first delivery panics");
            Ok::<_, std::io::Error>(Ack::Done)
        }
    };
    let consumer = broker.consumer(broker.url(), &queue, handler, Options::default());
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
    assert_eq!(queue.settles_to(0, Duration::from_secs(2)).await, 0);
    queue.delete().await;
}

async fn a_panicking_handler_at_its_last_delivery_is_dead_never_a_failure_of_the_consumer(
    broker: Broker,
) {
    if !broker.available().await {
        return;
    }
    // A classic RabbitMQ queue counts no redeliveries: with a maximum of 1, the first failed
    // delivery is the last on either broker, and the message is rejected (dropped, with no
    // dead-letter exchange; terminated on JetStream).
    let queue = broker.queue("panic-shutdown", false).await;
    queue.publish(ids("m", 1)).await;

    let handler = |_: Message| async {
        panic!("poison message");
        #[allow(unreachable_code)]
        Ok::<_, std::io::Error>(Ack::Done)
    };
    let options = Options {
        max_deliveries: 1,
        ..Options::default()
    };
    let consumer = broker.consumer(broker.url(), &queue, handler, options);
    let (handle, run) = start_alone(Registration::new("consumer", consumer.clone())).await;
    eventually("dead", || consumer.stats().dead == 1).await;
    assert_eq!(queue.settles_to(0, Duration::from_secs(10)).await, 0);
    assert!(handle.is_ready().await, "the consumer stays up");
    handle.shutdown("test over");
    let report = run.await.unwrap();
    assert_eq!(report.trigger.kind, TriggerKind::Requested, "{report:?}");
    assert_eq!(
        report.component("consumer").unwrap().outcome,
        Outcome::Stopped,
        "{report:?}"
    );
    let stats = consumer.stats();
    assert_eq!((stats.received, stats.panicked, stats.dead), (1, 1, 1));
    queue.delete().await;
}

async fn a_queue_deleted_while_consuming_is_a_failure(broker: Broker) {
    if !broker.available().await {
        return;
    }
    // RabbitMQ cancels the subscription (`basic.cancel` from the broker); JetStream's pulls
    // keep failing.
    let queue = broker.queue("deleted", false).await;
    let handler = |_: Message| async { Ok::<_, std::io::Error>(Ack::Done) };
    let consumer = broker.consumer(broker.url(), &queue, handler, Options::default());
    let name = unique("deleted-consumer");
    let (_handle, run) = start_alone(Registration::new(&name, consumer)).await;
    queue.delete().await;
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
        report.trigger.detail.contains(" ended: "),
        "a subscription that ended: {report:?}"
    );
}
