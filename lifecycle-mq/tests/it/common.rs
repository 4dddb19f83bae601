//! What lifecycle-mq's tests share beyond `lifecycle-test-support`: connections seen by the
//! kernel, the handlers' record of runs, and each broker set up and inspected beside the code
//! under test.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use lifecycle_mq::{Ack, Message};

pub use lifecycle_test_support::servers::{amqp_url, nats_url, server_available, NATS, RABBITMQ};
pub use lifecycle_test_support::{eventually, start, start_alone, unique, Proxy};

/// The established TCP connections from this process to `port`, from `ss` (the kernel's view,
/// so it holds for any client library).
pub fn connections_to(port: u16) -> usize {
    let out = std::process::Command::new("ss")
        .args([
            "-Htnp",
            "state",
            "established",
            &format!("( dport = :{port} )"),
        ])
        .output()
        .expect("ss runs");
    let me = format!("pid={},", std::process::id());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| line.contains(&me))
        .count()
}

/// Waits up to 2 s for this process to have no connection to `port` left.
pub async fn no_connection_left(port: u16) {
    let until = tokio::time::Instant::now() + Duration::from_secs(2);
    while connections_to(port) > 0 {
        assert!(
            tokio::time::Instant::now() < until,
            "a connection to port {port} is still open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the handlers did, per payload: how many runs began and how many finished.
#[derive(Debug, Clone, Default)]
pub struct Runs(pub Arc<std::sync::Mutex<HashMap<String, (u32, u32)>>>);

impl Runs {
    /// A handler that sleeps `ms`, recording its runs, and answers `Ack::Done`.
    pub fn handler(
        &self,
        ms: u64,
    ) -> impl Fn(Message) -> futures::future::BoxFuture<'static, Result<Ack, std::io::Error>>
           + Send
           + Sync
           + 'static {
        let runs = self.clone();
        move |message: Message| {
            let runs = runs.clone();
            Box::pin(async move {
                let id = String::from_utf8(message.into_payload()).unwrap();
                runs.0.lock().unwrap().entry(id.clone()).or_default().0 += 1;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                runs.0.lock().unwrap().entry(id).or_default().1 += 1;
                Ok(Ack::Done)
            })
        }
    }

    pub fn began(&self) -> u32 {
        self.0.lock().unwrap().values().map(|r| r.0).sum()
    }

    pub fn finished(&self) -> u32 {
        self.0.lock().unwrap().values().map(|r| r.1).sum()
    }

    pub fn in_progress(&self) -> u32 {
        self.began() - self.finished()
    }
}

/// `n` message payloads: `prefix-0`, `prefix-1`...
pub fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

pub mod amqp {
    //! Setting up and inspecting RabbitMQ beside the code under test.

    use lapin::options::{
        BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
    };
    use lapin::types::{AMQPValue, FieldTable};
    use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

    /// An admin connection and channel, with confirms.
    pub async fn admin() -> (Connection, Channel) {
        let connection = Connection::connect(&super::amqp_url(), ConnectionProperties::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        (connection, channel)
    }

    /// Declares a durable queue (a quorum queue if `quorum`, which counts deliveries).
    pub async fn declare(channel: &Channel, queue: &str, quorum: bool) {
        let mut arguments = FieldTable::default();
        if quorum {
            arguments.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
        }
        channel
            .queue_declare(queue.into(), QueueDeclareOptions::durable(), arguments)
            .await
            .unwrap();
    }

    /// Publishes `payloads` to `queue`, confirmed.
    pub async fn publish(
        channel: &Channel,
        queue: &str,
        payloads: impl IntoIterator<Item = String>,
    ) {
        for payload in payloads {
            let confirm = channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    payload.as_bytes(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap()
                .await
                .unwrap();
            assert!(confirm.is_ack());
        }
    }

    /// The messages ready in `queue` (not delivered to a consumer).
    pub async fn ready(channel: &Channel, queue: &str) -> u32 {
        channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap()
            .message_count()
    }

    pub async fn delete(channel: &Channel, queue: &str) {
        let _ = channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await;
    }

    /// The broker's client connections, one line each with their client properties (where
    /// the connection name is), from `rabbitmqctl list_connections`.
    pub fn broker_connections() -> Vec<String> {
        let out = std::process::Command::new("rabbitmqctl")
            .args([
                "list_connections",
                "-q",
                "--no-table-headers",
                "client_properties",
            ])
            .output()
            .expect("rabbitmqctl runs (as root, beside the broker)");
        assert!(
            out.status.success(),
            "rabbitmqctl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_owned())
            .collect()
    }

    /// The messages in `queue`, ready or delivered and not yet acked, from `rabbitmqctl`.
    pub fn messages(queue: &str) -> u64 {
        let out = std::process::Command::new("rabbitmqctl")
            .args([
                "list_queues",
                "-q",
                "--no-table-headers",
                "name",
                "messages",
            ])
            .output()
            .expect("rabbitmqctl runs (as root, beside the broker)");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .find(|(name, _)| *name == queue)
            .map(|(_, n)| n.trim().parse().unwrap())
            .expect("the queue is listed")
    }

    /// The messages of `queue` delivered to a consumer and not yet acked, from `rabbitmqctl`.
    pub fn unacked(queue: &str) -> u64 {
        let out = std::process::Command::new("rabbitmqctl")
            .args([
                "list_queues",
                "-q",
                "--no-table-headers",
                "name",
                "messages_unacknowledged",
            ])
            .output()
            .expect("rabbitmqctl runs (as root, beside the broker)");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .find(|(name, _)| *name == queue)
            .map(|(_, n)| n.trim().parse().unwrap())
            .expect("the queue is listed")
    }

    /// Takes up to `n` ready messages of `queue` on `channel` (unacked, so the broker keeps
    /// them for this channel), for up to `within`; whether each was redelivered.
    pub async fn take(
        channel: &Channel,
        queue: &str,
        n: usize,
        within: std::time::Duration,
    ) -> Vec<bool> {
        let until = tokio::time::Instant::now() + within;
        let mut taken = Vec::new();
        while taken.len() < n && tokio::time::Instant::now() < until {
            let got = channel
                .basic_get(
                    queue.into(),
                    lapin::options::BasicGetOptions { no_ack: false },
                )
                .await
                .unwrap();
            match got {
                Some(message) => taken.push(message.delivery.redelivered),
                None => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
        taken
    }

    /// Whether the broker lists a connection named `name` now.
    pub fn connection_named(name: &str) -> bool {
        let quoted = format!("\"{name}\"");
        broker_connections().iter().any(|c| c.contains(&quoted))
    }

    /// Waits (up to 5 s, as the broker notices closed sockets asynchronously) until no
    /// connection named `name` is left on the broker, and returns whether none is.
    pub async fn no_connection_named(name: &str) -> bool {
        let until = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            if !connection_named(name) {
                return true;
            }
            if tokio::time::Instant::now() > until {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}

pub mod nats {
    //! Setting up and inspecting JetStream beside the code under test.

    use async_nats::jetstream::{self, stream};

    /// A JetStream context on an admin connection.
    pub async fn admin() -> jetstream::Context {
        jetstream::new(async_nats::connect(super::NATS).await.unwrap())
    }

    /// Creates a stream named `name` that captures the subject `name`, in memory.
    pub async fn create_stream(js: &jetstream::Context, name: &str) {
        js.create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![name.to_owned()],
            storage: stream::StorageType::Memory,
            ..stream::Config::default()
        })
        .await
        .unwrap();
    }

    /// Publishes `payloads` on the subject `subject`, each acked by JetStream.
    pub async fn publish(
        js: &jetstream::Context,
        subject: &str,
        payloads: impl IntoIterator<Item = String>,
    ) {
        for payload in payloads {
            js.publish(subject.to_owned(), payload.into_bytes().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    }

    /// The messages of the durable consumer named like its stream not yet acked: not yet
    /// delivered, or delivered and waiting for an ack.
    pub async fn pending(js: &jetstream::Context, stream: &str) -> u64 {
        pending_of(js, stream, stream).await
    }

    /// The same, for the durable consumer `durable`.
    pub async fn pending_of(js: &jetstream::Context, stream: &str, durable: &str) -> u64 {
        let info = js
            .get_stream(stream)
            .await
            .unwrap()
            .consumer_info(durable)
            .await
            .unwrap();
        info.num_pending + info.num_ack_pending as u64
    }

    /// Delivered and not acked yet, for the durable consumer `durable`.
    pub async fn ack_pending(js: &jetstream::Context, stream: &str, durable: &str) -> usize {
        js.get_stream(stream)
            .await
            .unwrap()
            .consumer_info(durable)
            .await
            .unwrap()
            .num_ack_pending
    }

    pub async fn delete_stream(js: &jetstream::Context, name: &str) {
        let _ = js.delete_stream(name).await;
    }
}
