//! The proof of issue 16 against the real brokers: N messages published, the consuming
//! service SIGTERMed several times and SIGKILLed once while it consumes; in the end every
//! message was processed at least once, none was acked without being processed, and nothing
//! is left on the broker. The redeliveries the shutdowns caused are counted and printed.
//!
//! The test binary is its own child: run with `LIFECYCLE_MQ_KILL_CHILD` set, it is a small
//! service (`child_main`) whose handler appends each message's id to a record file, with an
//! fsync, before it returns `Ack::Done` (so before the ack). A message acked without being
//! processed would be missing from the records; the negative control, a handler that acks at
//! once and processes in the background, shows that the SIGKILL then loses messages.
//!
//! The child is a normal test of this binary, `kill::child`, that does nothing unless that
//! variable is set: the parent runs the binary again with `--exact kill::child`, so the whole
//! suite stays one test binary.

use crate::common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use lifecycle_core::{Lifecycle, Registration, Report};
use lifecycle_mq::{Ack, Message};

/// Set in the child's environment: `<backend> <queue> <record file> <mode> <component name>`.
const CHILD: &str = "LIFECYCLE_MQ_KILL_CHILD";

/// How many messages each proof publishes.
const MESSAGES: usize = 400;

/// The proofs take the machine's cores: one at a time.
static PROOFS: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn amqp_sigterms_and_a_sigkill_lose_no_message() {
    let _one = PROOFS.lock().unwrap_or_else(|e| e.into_inner());
    proof(Backend::Amqp);
}

#[test]
fn amqp_control_acking_before_processing_loses_messages_on_sigkill() {
    let _one = PROOFS.lock().unwrap_or_else(|e| e.into_inner());
    control(Backend::Amqp);
}

#[test]
fn nats_sigterms_and_a_sigkill_lose_no_message() {
    let _one = PROOFS.lock().unwrap_or_else(|e| e.into_inner());
    proof(Backend::Nats);
}

#[test]
fn nats_control_acking_before_processing_loses_messages_on_sigkill() {
    let _one = PROOFS.lock().unwrap_or_else(|e| e.into_inner());
    control(Backend::Nats);
}

/// The child service, when the parent runs this binary with [`CHILD`] set; a no-op otherwise.
/// It exits with the lifecycle's exit code, as the service's `main` would.
#[test]
fn child() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let report = child_main(&spec);
    let code = report.exit_code();
    let _ = std::process::Termination::report(report);
    std::process::exit(code);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Amqp,
    Nats,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Amqp => "amqp",
            Backend::Nats => "nats",
        }
    }

    fn from_name(name: &str) -> Self {
        match name {
            "amqp" => Backend::Amqp,
            "nats" => Backend::Nats,
            other => panic!("unknown backend {other}"),
        }
    }

    /// Whether the broker is there (false only outside CI).
    async fn available(self) -> bool {
        match self {
            Backend::Amqp => common::server_available("RabbitMQ", common::RABBITMQ),
            Backend::Nats => common::server_available("NATS", common::NATS),
        }
    }

    /// Creates `queue` and publishes the ids `0..MESSAGES` to it.
    async fn fill(self, queue: &str) {
        let ids = (0..MESSAGES).map(|i| i.to_string());
        match self {
            Backend::Amqp => {
                let (_connection, channel) = common::amqp::admin().await;
                // A quorum queue counts deliveries (`x-delivery-count`).
                common::amqp::declare(&channel, queue, true).await;
                common::amqp::publish(&channel, queue, ids).await;
            }
            Backend::Nats => {
                let js = common::nats::admin().await;
                common::nats::create_stream(&js, queue).await;
                common::nats::publish(&js, queue, ids).await;
            }
        }
    }

    /// The messages still waiting in `queue`, none of them held by a consumer: only
    /// meaningful once no consumer runs.
    async fn left(self, queue: &str) -> u64 {
        match self {
            Backend::Amqp => {
                let (_connection, channel) = common::amqp::admin().await;
                u64::from(common::amqp::ready(&channel, queue).await)
            }
            Backend::Nats => {
                let js = common::nats::admin().await;
                common::nats::pending(&js, queue).await
            }
        }
    }

    async fn clean_up(self, queue: &str) {
        match self {
            Backend::Amqp => {
                let (_connection, channel) = common::amqp::admin().await;
                common::amqp::delete(&channel, queue).await;
            }
            Backend::Nats => {
                let js = common::nats::admin().await;
                common::nats::delete_stream(&js, queue).await;
            }
        }
    }

    /// Whether the broker still holds a connection of the child run named `name`.
    async fn connection_left(self, name: &str) -> bool {
        match self {
            Backend::Amqp => !common::amqp::no_connection_named(name).await,
            // The child's connections are its own sockets: gone with the process, which the
            // test waited for. The in-process tests check the NATS stop leaves none.
            Backend::Nats => {
                let _ = name;
                false
            }
        }
    }
}

/// How the child's handler treats a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Record (append + fsync), then answer `Ack::Done`: the ack comes after the processing.
    Correct,
    /// The negative control: answer `Ack::Done` at once and record in the background.
    AckFirst,
}

/// One record line: the id, the delivery count the handler saw (0 when unknown) and the
/// redelivered flag.
#[derive(Debug, Clone, Copy)]
struct Processed {
    delivery_count: u64,
    redelivered: bool,
}

fn read_records(path: &Path) -> BTreeMap<usize, Vec<Processed>> {
    let mut records: BTreeMap<usize, Vec<Processed>> = BTreeMap::new();
    let Ok(text) = std::fs::read_to_string(path) else {
        return records;
    };
    // A line cut by the SIGKILL has no newline: it was never fsynced whole, and its message
    // was not acked either.
    for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
        let mut fields = line.split_whitespace();
        let id = fields.next().unwrap().parse().unwrap();
        let delivery_count = fields.next().unwrap().parse().unwrap();
        let redelivered = fields.next().unwrap() == "true";
        records.entry(id).or_default().push(Processed {
            delivery_count,
            redelivered,
        });
    }
    records
}

fn lines(path: &Path) -> usize {
    read_records(path).values().map(Vec::len).sum()
}

/// A child service consuming `queue`, killed if the test ends first.
struct Service {
    child: Child,
    name: String,
    /// The child's stdout, line by line.
    ready: mpsc::Receiver<String>,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    fn spawn(backend: Backend, queue: &str, records: &Path, mode: Mode) -> Self {
        let name = common::unique("kill-consumer");
        let spec = format!(
            "{} {queue} {} {} {name}",
            backend.name(),
            records.display(),
            if mode == Mode::Correct {
                "correct"
            } else {
                "ack-first"
            }
        );
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "kill::child", "--nocapture", "--quiet"])
            .args(["--test-threads", "1"])
            .env(CHILD, spec)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, ready) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        let service = Service { child, name, ready };
        // Past the test harness's own lines ("running 1 test").
        loop {
            let line = service
                .ready
                .recv_timeout(Duration::from_secs(20))
                .expect("the child says it is ready");
            if line == "ready" {
                break;
            }
        }
        service
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the exit; the exit code, or `None` when a signal killed it.
    fn exit(&mut self, within: Duration) -> Option<i32> {
        let began = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                began.elapsed() < within,
                "the child did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Waits until the record file has `more` lines beyond `from`.
fn wait_for_progress(records: &Path, from: usize, more: usize) -> usize {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let now = lines(records);
        if now >= from + more {
            return now;
        }
        assert!(Instant::now() < until, "no progress: {now} records");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Three SIGTERMs and one SIGKILL while consuming, then a last run to the end.
fn proof(backend: Backend) {
    let rt = runtime();
    if !rt.block_on(backend.available()) {
        return;
    }
    let queue = common::unique(&format!("kill-{}", backend.name()));
    rt.block_on(backend.fill(&queue));
    let dir = tempfile::tempdir().unwrap();
    let records = dir.path().join("processed");

    let mut seen = 0;
    for round in 0..4 {
        let mut service = Service::spawn(backend, &queue, &records, Mode::Correct);
        seen = wait_for_progress(&records, seen, 40);
        if round == 2 {
            service.signal("KILL");
            assert_eq!(service.exit(Duration::from_secs(5)), None, "killed");
        } else {
            service.signal("TERM");
            assert_eq!(
                service.exit(Duration::from_secs(10)),
                Some(0),
                "a SIGTERM while consuming is a clean exit"
            );
            // The child's last lines, until its stdout closes.
            let lines: Vec<String> =
                std::iter::from_fn(|| service.ready.recv_timeout(Duration::from_secs(2)).ok())
                    .collect();
            assert_eq!(
                lines.last().map(String::as_str),
                Some("connections-left 0"),
                "the stopped consumer left a socket open to the broker"
            );
            assert!(
                !rt.block_on(backend.connection_left(&service.name)),
                "the stopped consumer left a connection on the broker"
            );
        }
    }
    let mut last = Service::spawn(backend, &queue, &records, Mode::Correct);
    let until = Instant::now() + Duration::from_secs(30);
    while read_records(&records).len() < MESSAGES {
        assert!(
            Instant::now() < until,
            "messages never processed: {:?}",
            missing(&records)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    last.signal("TERM");
    assert_eq!(last.exit(Duration::from_secs(10)), Some(0));

    let processed = read_records(&records);
    assert_eq!(
        missing(&records),
        Vec::<usize>::new(),
        "every message processed"
    );
    for (id, runs) in &processed {
        // A message processed again must have come back as a redelivery: one processed twice
        // while the broker thought it delivered once would be a duplicate the handler could
        // not detect.
        assert!(
            runs[1..].iter().all(|r| r.redelivered),
            "message {id} processed again without being marked redelivered: {runs:?}"
        );
    }
    assert_eq!(
        rt.block_on(backend.left(&queue)),
        0,
        "every message acked in the end"
    );
    assert!(
        processed.values().flatten().any(|r| r.redelivered),
        "the kill and the hand-backs at the SIGTERMs made redeliveries"
    );
    summary(backend, &processed);
    rt.block_on(backend.clean_up(&queue));
}

/// The ids never recorded.
fn missing(records: &Path) -> Vec<usize> {
    let processed = read_records(records);
    (0..MESSAGES)
        .filter(|id| !processed.contains_key(id))
        .collect()
}

/// Prints what the shutdowns cost in redeliveries.
fn summary(backend: Backend, processed: &BTreeMap<usize, Vec<Processed>>) {
    let twice = processed.values().filter(|runs| runs.len() > 1).count();
    let redelivered = processed
        .values()
        .flatten()
        .filter(|r| r.redelivered)
        .count();
    let mut by_count: BTreeMap<u64, usize> = BTreeMap::new();
    for run in processed.values().flatten() {
        *by_count.entry(run.delivery_count).or_default() += 1;
    }
    println!(
        "{}: {MESSAGES} messages, {} handler runs; {twice} messages processed more than once; \
         {redelivered} runs on redeliveries; runs by delivery count (0 = not counted by the \
         broker): {by_count:?}",
        backend.name(),
        processed.values().map(Vec::len).sum::<usize>()
    );
}

/// The negative control: a handler that acks before processing loses what it had in hand at
/// the SIGKILL, which the proof's checks catch.
fn control(backend: Backend) {
    let rt = runtime();
    if !rt.block_on(backend.available()) {
        return;
    }
    let queue = common::unique(&format!("kill-control-{}", backend.name()));
    rt.block_on(backend.fill(&queue));
    let dir = tempfile::tempdir().unwrap();
    let records = dir.path().join("processed");

    let mut service = Service::spawn(backend, &queue, &records, Mode::AckFirst);
    wait_for_progress(&records, 0, 40);
    service.signal("KILL");
    assert_eq!(service.exit(Duration::from_secs(5)), None);
    // A correct consumer takes whatever is left.
    let mut last = Service::spawn(backend, &queue, &records, Mode::Correct);
    let until = Instant::now() + Duration::from_secs(30);
    let mut stable = 0;
    let mut before = 0;
    // The queue is drained once nothing new is recorded for a while and the broker holds
    // nothing more for the consumer (on a loaded machine a redelivery can come after a quiet
    // second).
    while stable < 50 || rt.block_on(backend.left(&queue)) > 0 {
        assert!(Instant::now() < until, "the queue was never drained");
        std::thread::sleep(Duration::from_millis(20));
        let now = lines(&records);
        stable = if now == before { stable + 1 } else { 0 };
        before = now;
    }
    last.signal("TERM");
    assert_eq!(last.exit(Duration::from_secs(10)), Some(0));
    let lost = missing(&records);
    println!(
        "{} control: {} of {MESSAGES} messages acked but never processed",
        backend.name(),
        lost.len()
    );
    assert!(
        !lost.is_empty(),
        "the control lost nothing: the proof's checks would not catch an early ack"
    );
    assert_eq!(
        rt.block_on(backend.left(&queue)),
        0,
        "lost, not merely left in the queue"
    );
    rt.block_on(backend.clean_up(&queue));
}

/// The child: a lifecycle with one consumer, SIGTERM and SIGINT as usual.
fn child_main(spec: &str) -> Report {
    let fields: Vec<&str> = spec.split(' ').collect();
    let [backend, queue, records, mode, name] = fields[..] else {
        panic!("bad child spec {spec}");
    };
    let (backend, ack_first) = (Backend::from_name(backend), mode == "ack-first");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(records)
        .unwrap();
    let file = Arc::new(Mutex::new(file));
    let handler = move |message: Message| {
        let file = file.clone();
        async move {
            let id = String::from_utf8_lossy(message.payload()).into_owned();
            let line = format!(
                "{id} {} {}\n",
                message.delivery_count().unwrap_or(0),
                message.redelivered()
            );
            let record = move || {
                let mut file = file.lock().unwrap();
                file.write_all(line.as_bytes()).unwrap();
                file.sync_data().unwrap();
            };
            // Some work, so that handlers are in progress when the signals come.
            if ack_first {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    record();
                });
            } else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                record();
            }
            Ok::<_, std::io::Error>(Ack::Done)
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let registration: Registration = match backend {
            Backend::Amqp => Registration::new(
                name,
                lifecycle_mq::AmqpConsumer::new(common::amqp_url(), queue, handler)
                    .prefetch(20)
                    .concurrency(4),
            ),
            Backend::Nats => Registration::new(
                name,
                lifecycle_mq::NatsConsumer::new(common::nats_url(), queue, queue, handler)
                    .ack_wait(Duration::from_secs(2))
                    .prefetch(20)
                    .concurrency(4),
            ),
        };
        let lifecycle = Lifecycle::builder()
            .register(registration.stop_timeout(Duration::from_secs(5)))
            .build()
            .unwrap();
        let handle = lifecycle.handle();
        tokio::spawn(async move {
            if handle
                .watch_phase()
                .wait_for(|p| p.is_ready())
                .await
                .is_ok()
            {
                println!("ready");
            }
        });
        let report = lifecycle.run().await;
        // What the stop left open, seen while the process still lives (after its exit the
        // kernel would close everything anyway).
        let port = match backend {
            Backend::Amqp => 5672,
            Backend::Nats => 4222,
        };
        println!("connections-left {}", common::connections_to(port));
        report
    })
}
