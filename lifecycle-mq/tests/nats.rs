//! The NATS JetStream consumer and publisher against the real server: every message handled,
//! the stop's order (stop pulling, hand back the unstarted, finish the started, drain), a
//! handler cut off at the deadline handed back and never acked, the server missing at start,
//! lost while running and gone at the stop, and publishes settled at the stop.
//!
//! The server runs without its monitoring port, so the tests count this process's TCP
//! connections to it (`ss`), and so run one at a time.

#![cfg(feature = "nats")]

mod common;

use futures::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use common::nats::{ack_pending, admin, create_stream, delete_stream, pending_of, publish};
use common::{
    broker_available, connections_to, eventually, ids, nats_url, start, start_alone, unique, Proxy,
    Runs, NATS,
};
use lifecycle_core::{Lifecycle, OnFailure, Outcome, Registration, TriggerKind};
use lifecycle_mq::{Ack, Message, MqError, NatsConsumer, NatsPublisher};

/// The tests count this process's connections, so they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_handled_once_and_no_connection_is_left() {
    if !broker_available("NATS", NATS).await {
        return;
    }
    let _serial = SERIAL.lock().await;
    let stream = unique("all");
    let js = admin().await;
    create_stream(&js, &stream).await;
    publish(&js, &stream, ids("m", 50)).await;
    let before = connections_to(4222);

    let runs = Runs::default();
    let consumer = NatsConsumer::new(nats_url(), &stream, "workers", runs.handler(1))
        .prefetch(10)
        .concurrency(4);
    let (handle, run) = start_alone(Registration::new("consumer", consumer)).await;
    eventually("all 50 handled", || runs.finished() == 50).await;
    assert_eq!(
        connections_to(4222),
        before + 1,
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
        pending_of(&js, &stream, "workers").await,
        0,
        "every message acked"
    );
    assert_eq!(
        connections_to(4222),
        before,
        "the consumer's connection is closed"
    );
    delete_stream(&js, &stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stop_finishes_handlers_in_progress_and_hands_back_the_pulled_rest() {
    if !broker_available("NATS", NATS).await {
        return;
    }
    let _serial = SERIAL.lock().await;
    let stream = unique("stop");
    let js = admin().await;
    create_stream(&js, &stream).await;
    publish(&js, &stream, ids("m", 20)).await;

    // Two handlers of 1.5 s at a time, ten messages pulled: at the stop, two are in progress
    // and eight wait in the client.
    let runs = Runs::default();
    let consumer = NatsConsumer::new(nats_url(), &stream, "workers", runs.handler(1500))
        .prefetch(10)
        .concurrency(2);
    let (handle, run) =
        start_alone(Registration::new("consumer", consumer).stop_timeout(Duration::from_secs(5)))
            .await;
    eventually("two handlers in progress", || runs.in_progress() == 2).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while ack_pending(&js, &stream, "workers").await != 10 {
        assert!(tokio::time::Instant::now() < until, "ten never pulled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.shutdown("test over");
    // The eight never started are handed back while the two handlers still run: another
    // client of the same durable consumer gets them, as second deliveries, before they end.
    let other: PullConsumer = js
        .get_stream(&stream)
        .await
        .unwrap()
        .get_consumer("workers")
        .await
        .unwrap();
    let mut pull = other
        .batch()
        .max_messages(8)
        .expires(Duration::from_secs(1))
        .messages()
        .await
        .unwrap();
    let mut handed_back = 0;
    while let Some(message) = pull.next().await {
        assert_eq!(message.unwrap().info().unwrap().delivered, 2);
        handed_back += 1;
    }
    assert_eq!(handed_back, 8, "the unstarted were not handed back at once");
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
        "none started after the stop turn"
    );
    // The two finished were acked: the other client holds eight, ten were never delivered.
    assert_eq!(pending_of(&js, &stream, "workers").await, 18);
    delete_stream(&js, &stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_cut_off_at_the_stop_timeout_is_handed_back_never_acked() {
    if !broker_available("NATS", NATS).await {
        return;
    }
    let _serial = SERIAL.lock().await;
    let stream = unique("cut");
    let js = admin().await;
    create_stream(&js, &stream).await;
    publish(&js, &stream, ids("m", 1)).await;

    let runs = Runs::default();
    let consumer = NatsConsumer::new(nats_url(), &stream, "workers", runs.handler(60_000));
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
    assert!(line.held_by[0].contains(", running "), "{line:?}");
    assert_eq!(runs.finished(), 0);

    // Handed back (not left to the 30 s ack wait): the next consumer gets it at once, as a
    // second delivery.
    let again = Arc::new(Mutex::new(None));
    let seen = again.clone();
    let consumer = NatsConsumer::new(nats_url(), &stream, "workers", move |message: Message| {
        *seen.lock().unwrap() = Some((message.redelivered(), message.delivery_count()));
        async { Ok::<_, std::io::Error>(Ack::Done) }
    });
    let (handle, run) = start_alone(Registration::new("again", consumer)).await;
    eventually("redelivered", || again.lock().unwrap().is_some()).await;
    handle.shutdown("test over");
    assert_eq!(run.await.unwrap().exit_code(), 0);
    assert_eq!(*again.lock().unwrap(), Some((true, Some(2))));
    assert_eq!(pending_of(&js, &stream, "workers").await, 0);
    delete_stream(&js, &stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_down_at_start_fails_the_start_naming_the_url_without_credentials() {
    let consumer = NatsConsumer::new("nats://app:s3cret@127.0.0.1:1", "S", "d", |_| async {
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
        error.contains("cannot reach nats://127.0.0.1:1 for S/d"),
        "{error}"
    );
    assert!(!error.contains("s3cret") && !report.to_json().contains("s3cret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_while_running_is_a_failure_and_nothing_reconnects_after_the_stop() {
    if !broker_available("NATS", NATS).await {
        return;
    }
    let _serial = SERIAL.lock().await;
    let stream = unique("lost");
    let js = admin().await;
    create_stream(&js, &stream).await;
    publish(&js, &stream, ids("m", 3)).await;
    let before = connections_to(4222);

    let proxy = Proxy::start(NATS).await;
    let runs = Runs::default();
    let consumer = NatsConsumer::new(
        format!("nats://{}", proxy.addr),
        &stream,
        "workers",
        runs.handler(1),
    );
    let (_handle, run) = start_alone(Registration::new("consumer", consumer)).await;
    eventually("3 handled", || runs.finished() == 3).await;
    // Cut once the server has the acks, so that what follows is about the cut alone.
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while pending_of(&js, &stream, "workers").await != 0 {
        assert!(tokio::time::Instant::now() < until, "never acked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
    let line = report.component("consumer").unwrap();
    assert_eq!(line.outcome, Outcome::Failed);
    // The stop waited for async-nats's connection task to end: nothing is left to reconnect.
    assert!(
        !line
            .error
            .as_deref()
            .unwrap_or("")
            .contains("did not close"),
        "{line:?}"
    );
    assert_eq!(connections_to(4222), before);
    assert_eq!(pending_of(&js, &stream, "workers").await, 0);
    delete_stream(&js, &stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_gone_at_the_stop_cannot_hold_the_stop_past_its_timeout() {
    if !broker_available("NATS", NATS).await {
        return;
    }
    let _serial = SERIAL.lock().await;
    let stream = unique("gone");
    let js = admin().await;
    create_stream(&js, &stream).await;
    publish(&js, &stream, ids("m", 5)).await;

    let proxy = Proxy::start(NATS).await;
    let runs = Runs::default();
    let consumer = NatsConsumer::new(
        format!("nats://{}", proxy.addr),
        &stream,
        "workers",
        runs.handler(200),
    );
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
    assert_eq!(line.outcome, Outcome::Failed, "{report:?}");
    // The consumer's own error, before the lifecycle had to cut it off: handing back the
    // unstarted or confirming the acks gave up, whichever the deadline caught.
    let error = line.error.as_deref().unwrap();
    assert!(
        error.contains("stopping ") && error.contains(" failed: "),
        "{line:?}"
    );
    // And its socket is closed: nothing of it is left talking to a dead server.
    common::no_connection_left(proxy.addr.port()).await;
    drop(proxy);
    delete_stream(&js, &stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_are_acked_unstored_ones_fail_and_none_is_sent_after_the_stop() {
    if !broker_available("NATS", NATS).await {
        return;
    }
    let _serial = SERIAL.lock().await;
    let stream = unique("pub");
    let js = admin().await;
    create_stream(&js, &stream).await;
    let before = connections_to(4222);

    let publisher = NatsPublisher::new(nats_url());
    let events = publisher.handle();
    let early = events.publish(&stream, b"too early").await;
    assert!(
        matches!(early, Err(MqError::NotRunning { .. })),
        "{early:?}"
    );
    let (handle, run) = start_alone(Registration::new("publisher", publisher)).await;
    // Four callers publishing as fast as acks come, through the stop.
    let callers: Vec<_> = (0..4)
        .map(|caller| {
            let (events, stream) = (events.clone(), stream.clone());
            tokio::spawn(async move {
                let mut acked = 0u64;
                loop {
                    match events
                        .publish(&stream, format!("{caller}").as_bytes())
                        .await
                    {
                        Ok(()) => acked += 1,
                        Err(MqError::NotRunning { .. }) => return (acked, None),
                        Err(other) => return (acked, Some(other)),
                    }
                }
            })
        })
        .collect();
    let nowhere = events.publish(&unique("no-stream"), b"x").await;
    assert!(
        matches!(nowhere, Err(MqError::PublishFailed { .. })),
        "{nowhere:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    handle.shutdown("test over");
    let report = run.await.unwrap();
    assert_eq!(
        report.component("publisher").unwrap().outcome,
        Outcome::Stopped,
        "{report:?}"
    );

    let mut acked = 0;
    for caller in callers {
        let (count, error) = tokio::time::timeout(Duration::from_secs(2), caller)
            .await
            .expect("no publish is left waiting")
            .unwrap();
        assert!(
            error.is_none(),
            "a publish in flight at the stop failed: {error:?}"
        );
        acked += count;
    }
    assert!(acked > 0);
    let late = tokio::time::timeout(Duration::from_millis(100), events.publish(&stream, b"late"))
        .await
        .expect("fails fast");
    assert!(matches!(late, Err(MqError::NotRunning { .. })), "{late:?}");
    // Every acked publish is stored, and nothing else.
    let mut info = js.get_stream(&stream).await.unwrap();
    assert_eq!(info.info().await.unwrap().state.messages, acked);
    assert_eq!(
        connections_to(4222),
        before,
        "the publisher's connection is closed"
    );
    delete_stream(&js, &stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_restart_policy_a_lost_connection_is_replaced_and_consuming_goes_on() {
    if !broker_available("NATS", NATS).await {
        return;
    }
    let _serial = SERIAL.lock().await;
    let stream = unique("restart");
    let js = admin().await;
    create_stream(&js, &stream).await;
    publish(&js, &stream, ids("m", 5)).await;

    let proxy = Proxy::start(NATS).await;
    let runs = Runs::default();
    let consumer = NatsConsumer::new(
        format!("nats://{}", proxy.addr),
        &stream,
        "workers",
        runs.handler(1),
    )
    // Messages the server sent while the connection was down are in flight to no one and
    // come back after the ack wait: keep it short here.
    .ack_wait(Duration::from_secs(2));
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
    publish(&js, &stream, (5..10).map(|i| i.to_string())).await;
    // At least once: an ack in flight at the drop may make a second run of one of the first.
    eventually("5 more handled after the restart", || {
        (5..10).all(|i| {
            runs.0
                .lock()
                .unwrap()
                .get(&i.to_string())
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
    let until = tokio::time::Instant::now() + Duration::from_secs(8);
    while pending_of(&js, &stream, "workers").await != 0 {
        assert!(tokio::time::Instant::now() < until, "messages never acked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handle.shutdown("test over");
    let report = run.await.unwrap();
    assert_eq!(report.trigger.kind, TriggerKind::Requested, "{report:?}");
    assert_eq!(
        report.component("consumer").unwrap().outcome,
        Outcome::Stopped,
        "{report:?}"
    );
    delete_stream(&js, &stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_connection() {
    if !broker_available("NATS", NATS).await {
        return;
    }
    let _serial = SERIAL.lock().await;
    let queue = unique("health");
    let js = admin().await;
    create_stream(&js, &queue).await;
    let proxy = Proxy::start(NATS).await;
    let runs = Runs::default();
    let consumer = NatsConsumer::new(
        format!("nats://{}", proxy.addr),
        &queue,
        "workers",
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
    delete_stream(&js, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_the_server_never_acks_fails_at_the_stop_instead_of_hanging() {
    if !broker_available("NATS", NATS).await {
        return;
    }
    let _serial = SERIAL.lock().await;
    let stream = unique("pub-gone");
    let js = admin().await;
    create_stream(&js, &stream).await;
    let proxy = Proxy::start(NATS).await;

    let publisher = NatsPublisher::new(format!("nats://{}", proxy.addr));
    let events = publisher.handle();
    let (handle, run) =
        start_alone(Registration::new("publisher", publisher).stop_timeout(Duration::from_secs(1)))
            .await;
    events.publish(&stream, b"before").await.unwrap();
    proxy.black_hole();
    let (events2, stream2) = (events.clone(), stream.clone());
    let stuck = tokio::spawn(async move { events2.publish(&stream2, b"unanswered").await });
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
    drop(proxy);
    delete_stream(&js, &stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_url_fails_the_start_at_once_without_its_credentials() {
    let consumer = NatsConsumer::new("nats://app:s3cret@host:port", "S", "d", |_| async {
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
