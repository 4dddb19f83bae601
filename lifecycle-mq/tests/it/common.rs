//! The real brokers the tests talk to, and a TCP proxy that can black-hole or cut them.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lifecycle_core::{Lifecycle, LifecycleHandle, Registration, Report};
use lifecycle_mq::{Ack, Message};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub const RABBITMQ: &str = "127.0.0.1:5672";
pub const NATS: &str = "127.0.0.1:4222";

/// Whether the broker at `addr` answers. When it does not: in CI (`CI=true`) the test fails,
/// loudly; elsewhere it says so and the test returns early.
pub async fn broker_available(name: &str, addr: &str) -> bool {
    let up = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .is_ok_and(|r| r.is_ok());
    if !up {
        assert!(
            std::env::var("CI").is_err(),
            "{name} is not reachable at {addr}; CI needs it (see .ci/run)"
        );
        eprintln!("SKIPPED: {name} is not reachable at {addr} (outside CI)");
    }
    up
}

pub fn amqp_url() -> String {
    format!("amqp://guest:guest@{RABBITMQ}/%2f")
}

pub fn nats_url() -> String {
    format!("nats://{NATS}")
}

/// A unique name, so tests sharing a broker do not meet.
pub fn unique(test: &str) -> String {
    format!(
        "{test}-{}-{}",
        std::process::id(),
        rand::rng().random::<u32>()
    )
}

/// Runs a lifecycle of the one component `registration`, with no signal handlers, in a task;
/// returns its handle and the task once it is ready.
pub async fn start_alone(
    registration: Registration,
) -> (LifecycleHandle, tokio::task::JoinHandle<Report>) {
    let lifecycle = Lifecycle::builder()
        .signals([])
        .register(registration)
        .build()
        .unwrap();
    start(lifecycle).await
}

/// Runs the lifecycle in a task; returns its handle and the task once it is ready.
pub async fn start(lifecycle: Lifecycle) -> (LifecycleHandle, tokio::task::JoinHandle<Report>) {
    let run = lifecycle_core::testing::TestRun::run(lifecycle);
    run.ready().await.expect("the lifecycle gets ready");
    (run.handle().clone(), run.into_task())
}

/// Waits up to 10 s for `condition`.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < until,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

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

/// A TCP proxy in front of a broker, which a test can black-hole (connections stay open, no
/// byte goes through, as with a dead host) or cut (every connection closed, new ones refused).
pub struct Proxy {
    pub addr: SocketAddr,
    black_hole: Arc<AtomicBool>,
    cut: CancellationToken,
    /// Cancelled to close the connections open now; replaced for the next ones.
    connections: Arc<std::sync::Mutex<CancellationToken>>,
}

impl Proxy {
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (black_hole, cut) = (Arc::new(AtomicBool::new(false)), CancellationToken::new());
        let connections = Arc::new(std::sync::Mutex::new(cut.child_token()));
        let upstream = upstream.to_owned();
        let (bh, c, conns) = (black_hole.clone(), cut.clone(), connections.clone());
        tokio::spawn(c.clone().run_until_cancelled_owned(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                for (from, to) in [
                    (
                        Box::new(client_read) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                        Box::new(server_write) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
                    ),
                    (Box::new(server_read), Box::new(client_write)),
                ] {
                    let token = conns.lock().unwrap().clone();
                    tokio::spawn(token.run_until_cancelled_owned(pipe(from, to, bh.clone())));
                }
            }
        }));
        Proxy {
            addr,
            black_hole,
            cut,
            connections,
        }
    }

    /// Closes every connection open now, as a broker restart would; new ones go through.
    pub fn drop_connections(&self) {
        let mut connections = self.connections.lock().unwrap();
        connections.cancel();
        *connections = self.cut.child_token();
    }

    /// From now on, no byte goes through in either direction; connections stay open.
    pub fn black_hole(&self) {
        self.black_hole.store(true, Ordering::SeqCst);
    }

    /// Closes every connection and the listener.
    pub fn cut(&self) {
        self.cut.cancel();
    }
}

async fn pipe(
    mut from: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    mut to: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    black_hole: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if black_hole.load(Ordering::SeqCst) {
            // Swallow everything from now on, like a host that stopped answering.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
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
