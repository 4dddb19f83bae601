//! Poison messages, one suite for both brokers: a message whose handler always fails, and one
//! whose handler always panics, are dead-lettered after at most `max_deliveries` deliveries
//! (RabbitMQ: rejected into the quorum queue's dead-letter exchange; JetStream: terminated,
//! which the server announces as an advisory), while the good messages beside them are all
//! done once and the consumer component stays up, and the metrics say so. A maximum of 0 is
//! refused at the start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use futures::StreamExt;
use lifecycle_core::{Lifecycle, Outcome, Registration, TriggerKind};
use lifecycle_mq::{Ack, AmqpConsumer, Message, NatsConsumer};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

use crate::broker::{Broker, Options, TestConsumer};
use crate::common::{
    self, amqp_url, eventually, ids, nats_url, server_available, start_alone, unique, NATS,
    RABBITMQ,
};
use crate::consumer::on_both_brokers;

on_both_brokers!(
    poison_messages_are_dead_lettered_and_the_rest_flows,
    the_maximum_is_configurable,
    a_maximum_of_zero_is_refused_at_the_start,
);

/// The metrics recorder of this test binary, installed once; each test's consumer has a name
/// of its own, so its metrics are its own.
fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().unwrap();
        snapshotter
    })
}

/// A counter: the component, the name and the `outcome` label.
type CounterKey = (String, String, Option<String>);

/// The counters of `component` now, by name and `outcome` label. A snapshot takes every
/// counter's increments since the last one, so they are added up here, for every component,
/// as the tests run at once.
fn counters(component: &str) -> HashMap<(String, Option<String>), u64> {
    static TOTALS: Mutex<Option<HashMap<CounterKey, u64>>> = Mutex::new(None);
    let mut totals = TOTALS.lock().unwrap();
    let totals = totals.get_or_insert_with(HashMap::new);
    for (key, _, _, value) in snapshotter().snapshot().into_vec() {
        let label = |name: &str| {
            key.key()
                .labels()
                .find(|l| l.key() == name)
                .map(|l| l.value().to_owned())
        };
        if let (DebugValue::Counter(n), Some(of)) = (value, label("component")) {
            let name = key.key().name().to_owned();
            *totals.entry((of, name, label("outcome"))).or_default() += n;
        }
    }
    totals
        .iter()
        .filter(|((of, ..), _)| of == component)
        .map(|((_, name, outcome), n)| ((name.clone(), outcome.clone()), *n))
        .collect()
}

/// Each payload's deliveries as the handler saw them (the delivery counts, in order).
#[derive(Debug, Clone, Default)]
struct Seen(Arc<Mutex<HashMap<String, Vec<Delivery>>>>);

/// A delivery as the handler saw it: its count, and whether it was said to be the last.
type Delivery = (Option<u64>, bool);

impl Seen {
    fn of(&self, payload: &str) -> Vec<Option<u64>> {
        self.with_last(payload).into_iter().map(|d| d.0).collect()
    }

    /// The deliveries of `payload`, each with whether the handler was told it is the last.
    fn with_last(&self, payload: &str) -> Vec<Delivery> {
        self.0
            .lock()
            .unwrap()
            .get(payload)
            .cloned()
            .unwrap_or_default()
    }

    /// The handler: `poison` fails, `panic` panics, `panic-now` panics in the handler's call,
    /// before its future exists; anything else is done.
    fn handler(
        &self,
    ) -> impl Fn(Message) -> futures::future::BoxFuture<'static, Result<Ack, std::io::Error>>
           + Send
           + Sync
           + 'static {
        let seen = self.clone();
        move |message: Message| {
            let seen = seen.clone();
            let payload = String::from_utf8(message.payload().to_vec()).unwrap();
            seen.0
                .lock()
                .unwrap()
                .entry(payload.clone())
                .or_default()
                .push((message.delivery_count(), message.is_last_delivery()));
            assert_ne!(
                payload, "panic-now",
                "this message kills its handler's call"
            );
            Box::pin(async move {
                match payload.as_str() {
                    "poison" => Err(std::io::Error::other("this message never works")),
                    "panic" => panic!("this message kills its handler"),
                    _ => Ok(Ack::Done),
                }
            })
        }
    }
}

/// The broker side of one test: where the messages go and where the dead letters show.
enum Setup {
    Amqp {
        _connection: lapin::Connection,
        channel: lapin::Channel,
        queue: String,
        dead_letters: String,
    },
    Nats {
        js: async_nats::jetstream::Context,
        stream: String,
        advisories: async_nats::Subscriber,
    },
}

impl Setup {
    async fn new(broker: Broker) -> Option<Setup> {
        match broker {
            Broker::Amqp => {
                if !server_available("RabbitMQ", RABBITMQ) {
                    return None;
                }
                use lapin::options::QueueDeclareOptions;
                use lapin::types::{AMQPValue, FieldTable};
                let (connection, channel) = common::amqp::admin().await;
                let (queue, dead_letters) = (unique("poison"), unique("poison-dead"));
                common::amqp::declare(&channel, &dead_letters, false).await;
                // A quorum queue counts deliveries (`x-delivery-count`), and dead-letters what
                // is rejected to the default exchange, routed to `dead_letters`.
                let mut arguments = FieldTable::default();
                arguments.insert(
                    "x-queue-type".into(),
                    AMQPValue::LongString("quorum".into()),
                );
                arguments.insert(
                    "x-dead-letter-exchange".into(),
                    AMQPValue::LongString("".into()),
                );
                arguments.insert(
                    "x-dead-letter-routing-key".into(),
                    AMQPValue::LongString(dead_letters.as_str().into()),
                );
                channel
                    .queue_declare(
                        queue.as_str().into(),
                        QueueDeclareOptions::durable(),
                        arguments,
                    )
                    .await
                    .unwrap();
                Some(Setup::Amqp {
                    _connection: connection,
                    channel,
                    queue,
                    dead_letters,
                })
            }
            Broker::Nats => {
                if !server_available("NATS", NATS) {
                    return None;
                }
                let client = async_nats::connect(NATS).await.unwrap();
                let js = async_nats::jetstream::new(client.clone());
                let stream = unique("POISON");
                common::nats::create_stream(&js, &stream).await;
                // JetStream keeps a terminated message in the stream and says so here.
                let advisories = client
                    .subscribe(format!(
                        "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{stream}.{stream}"
                    ))
                    .await
                    .unwrap();
                client.flush().await.unwrap();
                Some(Setup::Nats {
                    js,
                    stream,
                    advisories,
                })
            }
        }
    }

    async fn publish(&self, payloads: Vec<String>) {
        match self {
            Setup::Amqp { channel, queue, .. } => {
                common::amqp::publish(channel, queue, payloads).await;
            }
            Setup::Nats { js, stream, .. } => common::nats::publish(js, stream, payloads).await,
        }
    }

    fn consumer(&self, seen: &Seen, max_deliveries: Option<u32>) -> TestConsumer {
        match self {
            Setup::Amqp { queue, .. } => {
                let mut consumer = AmqpConsumer::new(amqp_url(), queue, seen.handler())
                    .prefetch(10)
                    .concurrency(4);
                if let Some(max) = max_deliveries {
                    consumer = consumer.max_deliveries(max);
                }
                TestConsumer::Amqp(Arc::new(consumer))
            }
            Setup::Nats { stream, .. } => {
                let mut consumer = NatsConsumer::new(nats_url(), stream, stream, seen.handler())
                    .prefetch(10)
                    .concurrency(4);
                if let Some(max) = max_deliveries {
                    consumer = consumer.max_deliveries(max);
                }
                TestConsumer::Nats(Arc::new(consumer))
            }
        }
    }

    /// The dead letters the broker holds (or announced) by now, waiting up to 5 s for `n`.
    async fn dead_letters(&mut self, n: usize) -> usize {
        match self {
            Setup::Amqp {
                channel,
                dead_letters,
                ..
            } => {
                let until = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
                loop {
                    let ready = common::amqp::ready(channel, dead_letters).await as usize;
                    if ready >= n || tokio::time::Instant::now() > until {
                        return ready;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
            Setup::Nats { advisories, .. } => {
                let mut seen = 0;
                while seen < n {
                    let next =
                        tokio::time::timeout(std::time::Duration::from_secs(5), advisories.next());
                    match next.await {
                        Ok(Some(_)) => seen += 1,
                        _ => break,
                    }
                }
                seen
            }
        }
    }

    /// Messages neither settled nor dead: ready or unacked on RabbitMQ, pending on JetStream.
    async fn left(&self) -> u64 {
        match self {
            Setup::Amqp { queue, .. } => common::amqp::messages(queue),
            Setup::Nats { js, stream, .. } => common::nats::pending(js, stream).await,
        }
    }

    async fn delete(self) {
        match self {
            Setup::Amqp {
                channel,
                queue,
                dead_letters,
                ..
            } => {
                common::amqp::delete(&channel, &queue).await;
                common::amqp::delete(&channel, &dead_letters).await;
            }
            Setup::Nats { js, stream, .. } => common::nats::delete_stream(&js, &stream).await,
        }
    }
}

/// A failing message and two panicking ones (in the handler's future, and in the call that
/// makes it) among 100 good ones, default maximum (5).
async fn poison_messages_are_dead_lettered_and_the_rest_flows(broker: Broker) {
    let Some(mut setup) = Setup::new(broker).await else {
        return;
    };
    let mut payloads = ids("good", 50);
    payloads.push("poison".to_owned());
    payloads.push("panic".to_owned());
    payloads.push("panic-now".to_owned());
    payloads.extend(ids("more", 50));
    setup.publish(payloads).await;

    snapshotter();
    let seen = Seen::default();
    let consumer = setup.consumer(&seen, None);
    let name = unique("poison-consumer");
    let (handle, run) = start_alone(Registration::new(&name, consumer.clone())).await;
    eventually("both poison messages dead, the good ones done", || {
        let stats = consumer.stats();
        stats.dead == 3 && stats.done == 100
    })
    .await;
    assert_eq!(
        setup.dead_letters(3).await,
        3,
        "all three are dead letters on the broker"
    );
    assert!(handle.is_ready().await, "the service stays ready");
    handle.shutdown("test over");
    let report = run.await.unwrap();

    assert_eq!(report.trigger.kind, TriggerKind::Requested, "{report:?}");
    assert_eq!(
        report.component(&name).unwrap().outcome,
        Outcome::Stopped,
        "the consumer never failed: {report:?}"
    );
    // Exactly the maximum of deliveries, counted by the broker: 1, 2, 3, 4, 5.
    let five: Vec<Option<u64>> = (1..=5).map(Some).collect();
    assert_eq!(seen.of("poison"), five, "{broker:?}");
    assert_eq!(seen.of("panic"), five, "{broker:?}");
    assert_eq!(seen.of("panic-now"), five, "{broker:?}");
    let lasts: Vec<bool> = seen.with_last("poison").iter().map(|d| d.1).collect();
    assert_eq!(
        lasts,
        [false, false, false, false, true],
        "told of its last delivery"
    );
    for id in ids("good", 50).into_iter().chain(ids("more", 50)) {
        assert_eq!(seen.of(&id), vec![Some(1)], "{id} done once");
    }
    let stats = consumer.stats();
    assert_eq!(
        (stats.done, stats.dead, stats.failed),
        (100, 3, 12),
        "{stats:?}"
    );
    assert_eq!(stats.panicked, 10, "{stats:?}");
    assert_eq!(
        setup.left().await,
        0,
        "nothing left on the broker but the dead letters"
    );
    // The metrics count the same, in the outcomes every work source shares.
    let counters = counters(&name);
    let get = |name: &str, outcome: Option<&str>| {
        let key = (name.to_owned(), outcome.map(str::to_owned));
        counters.get(&key).copied().unwrap_or_default()
    };
    assert_eq!(get("messages_received_total", None), 115);
    let ended = |outcome| get("messages_ended_total", Some(outcome));
    assert_eq!(
        [
            ended("done"),
            ended("failed"),
            ended("dead"),
            ended("rejected"),
            ended("cut")
        ],
        [100, 12, 3, 0, 0]
    );
    setup.delete().await;
}

/// A maximum of 2 is the broker's count, not the process's: the second delivery is the last.
async fn the_maximum_is_configurable(broker: Broker) {
    let Some(mut setup) = Setup::new(broker).await else {
        return;
    };
    setup.publish(vec!["poison".to_owned()]).await;
    let seen = Seen::default();
    let consumer = setup.consumer(&seen, Some(2));
    let (handle, run) = start_alone(Registration::new("consumer", consumer.clone())).await;
    eventually("the poison message dead", || consumer.stats().dead == 1).await;
    assert_eq!(setup.dead_letters(1).await, 1);
    handle.shutdown("test over");
    assert_eq!(run.await.unwrap().exit_code(), 0);
    assert_eq!(seen.of("poison"), vec![Some(1), Some(2)], "{broker:?}");
    setup.delete().await;
}

/// A maximum of 0 would dead-letter every message unseen: refused when the consumer starts.
async fn a_maximum_of_zero_is_refused_at_the_start(broker: Broker) {
    let options = Options {
        max_deliveries: 0,
        ..Options::default()
    };
    let consumer = broker.consumer_of(broker.url(), "NEVER", Seen::default().handler(), options);
    let lifecycle = Lifecycle::builder()
        .signals([])
        .register(Registration::new("consumer", consumer))
        .build()
        .unwrap();
    let report = lifecycle.run().await;
    assert_eq!(report.trigger.kind, TriggerKind::StartFailed, "{report:?}");
    let line = report.component("consumer").unwrap();
    assert!(
        line.error
            .as_deref()
            .unwrap_or("")
            .contains("max_deliveries"),
        "{line:?}"
    );
}
