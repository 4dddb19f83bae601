//! Events through a real broker, from outside: published with `POST /events`, the service
//! stopped with SIGTERM at chosen moments and once killed with SIGKILL while its consumer
//! works, then run to the end: every event is done, and an event's work ran twice only as often
//! as the kill interrupted one. And a drill publishing across a SIGTERM: no publish dropped,
//! each one answered `201` recorded, and done once the service runs again. And poison events:
//! one that fails and one that panics every time end `dead` after `--max-deliveries`
//! deliveries, while the good ones are done and the service stays ready.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    create, free_addr, query, request, server_available, signal, start, start_command, wait,
    wait_done, BIN, NATS, RABBITMQ,
};
use lifecycle_drill::Drill;

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const NATS_URL: &str = "nats://127.0.0.1:4222";

/// A broker the service can take its events through.
#[derive(Clone, Copy)]
enum Broker {
    Amqp,
    Nats,
}

impl Broker {
    fn available(self) -> bool {
        match self {
            Broker::Amqp => server_available("RabbitMQ", RABBITMQ),
            Broker::Nats => server_available("NATS", NATS),
        }
    }

    /// The service's flag for this broker.
    fn flag(self) -> [&'static str; 2] {
        match self {
            Broker::Amqp => ["--amqp-url", AMQP_URL],
            Broker::Nats => ["--nats-url", NATS_URL],
        }
    }

    /// Removes what the service made on the broker for `queue` (see `events::Names`), on a
    /// thread of its own (it may run from a test's runtime, or while a test fails).
    fn clean_up(self, queue: &str) {
        let queue = queue.to_owned();
        let clean_up = move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                match self {
                    Broker::Amqp => {
                        let properties = lapin::ConnectionProperties::default();
                        let Ok(connection) = lapin::Connection::connect(AMQP_URL, properties).await
                        else {
                            return;
                        };
                        if let Ok(channel) = connection.create_channel().await {
                            for name in [
                                format!("example-events.{queue}"),
                                format!("example-events.{queue}.dead"),
                            ] {
                                let options = lapin::options::QueueDeleteOptions::default();
                                let _ = channel.queue_delete(name.as_str().into(), options).await;
                            }
                        }
                        let _ = connection.close(200, "done".into()).await;
                    }
                    Broker::Nats => {
                        if let Ok(client) = async_nats::connect(NATS_URL).await {
                            let js = async_nats::jetstream::new(client);
                            let _ = js.delete_stream(format!("EXAMPLE_EVENTS_{queue}")).await;
                        }
                    }
                }
            });
        };
        let _ = std::thread::spawn(clean_up).join();
    }
}

/// A test's own SQLite database and queue name on `broker`.
struct Fixture {
    _dir: tempfile::TempDir,
    db: String,
    queue: String,
    broker: Broker,
}

impl Fixture {
    fn new(test: &str, broker: Broker) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("events.db").display()
        );
        let [flag, _] = broker.flag();
        let queue = format!("{test}_{}{}", &flag[2..6], std::process::id());
        Fixture {
            _dir: dir,
            db,
            queue,
            broker,
        }
    }

    /// The service's arguments for its events.
    fn args(&self) -> [&str; 4] {
        let [flag, url] = self.broker.flag();
        [flag, url, "--job-queue", &self.queue]
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.broker.clean_up(&self.queue);
    }
}

/// Events `(id, runs)` in the database: every one, or those whose work started more than once.
fn runs(db: &str, at_least: i64) -> Vec<(i64, i64)> {
    query(db, "SELECT id, runs FROM events WHERE runs >= $1", at_least)
}

/// How many events are in `state`.
fn count(db: &str, state: &str) -> i64 {
    query(
        db,
        "SELECT COUNT(*), 0 FROM events WHERE state = $1",
        state.to_owned(),
    )[0]
    .0
}

#[test]
fn no_event_is_lost_across_sigterms_and_a_sigkill_on_rabbitmq() {
    if Broker::Amqp.available() {
        no_event_is_lost(Broker::Amqp);
    }
}

#[test]
fn no_event_is_lost_across_sigterms_and_a_sigkill_on_nats_jetstream() {
    if Broker::Nats.available() {
        no_event_is_lost(Broker::Nats);
    }
}

fn no_event_is_lost(broker: Broker) {
    let fixture = Fixture::new("test", broker);
    let db = &fixture.db;
    let addr = free_addr();
    let extra = fixture.args();
    // The job lease is also JetStream's ack wait: a killed instance's events come back after
    // it, and an event that waits longer than it (in the client, for a free handler, on a
    // loaded machine) is delivered again, so a second run that no shutdown caused. 3 s.
    let start = |addr| {
        let mut command = Command::new(BIN);
        command.args(["--listen", &format!("{addr}"), "--job-lease", "3s"]);
        start_command(command, addr, db, &extra)
    };

    let mut service = start(addr);
    let events = 300;
    // About 7.5 s of work for the consumer's 4 handlers, so that the kill (after the creating,
    // three pauses and two restarts) always finds work left: with 4.5 s, a run whose creating
    // was slow once had none left.
    let ids: Vec<i64> = (0..events)
        .map(|i| {
            create(
                addr,
                "/events",
                &format!("{{\"ms\": {}}}", 40 + (i * 7) % 120),
            )
        })
        .collect();

    let mut interrupted_by_kills = 0;
    for (cycle, run_ms) in [150u64, 90, 230, 60, 180].into_iter().enumerate() {
        std::thread::sleep(Duration::from_millis(run_ms));
        if cycle == 2 {
            signal(&service, "KILL");
            wait(&mut service);
            interrupted_by_kills += count(db, "running");
            let done = count(db, "done");
            assert!(done < events, "the kill came after all the work");
        } else {
            signal(&service, "TERM");
            assert_eq!(wait(&mut service), Some(0), "cycle {cycle}: exit code");
            // A graceful stop finishes the events in hand: only the kill's may still be running.
            let running = count(db, "running");
            assert!(
                running <= interrupted_by_kills,
                "cycle {cycle}: {running} events left running"
            );
        }
        service = start(addr);
    }

    let until = Instant::now() + Duration::from_secs(60);
    for id in &ids {
        wait_done(addr, &format!("/events/{id}"), until);
    }
    signal(&service, "TERM");
    assert_eq!(wait(&mut service), Some(0));

    assert_eq!(runs(db, 1).len(), ids.len(), "every event's work ran");
    let twice = runs(db, 2);
    let duplicates: i64 = twice.iter().map(|(_, runs)| runs - 1).sum();
    eprintln!("{duplicates} events ran twice; the kill interrupted {interrupted_by_kills}");
    assert!(
        duplicates <= interrupted_by_kills,
        "ran again: {twice:?}, but the kill interrupted only {interrupted_by_kills}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_across_a_sigterm_are_all_answered_and_done_on_rabbitmq() {
    if Broker::Amqp.available() {
        drill_publishes(Broker::Amqp).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_across_a_sigterm_are_all_answered_and_done_on_nats_jetstream() {
    if Broker::Nats.available() {
        drill_publishes(Broker::Nats).await;
    }
}

/// The drill POSTs events from keep-alive HTTP/1.1 clients and HTTP/2 streams and SIGTERMs
/// the service (1 s drain delay): no publish is dropped, every `201` is an event recorded, and
/// a second run of the service does every event's work.
async fn drill_publishes(broker: Broker) {
    let fixture = Fixture::new("drill", broker);
    let addr = free_addr();
    let mut command = Command::new(BIN);
    command
        .args(["--listen", &addr.to_string(), "--drain-delay", "1s"])
        .args(fixture.args())
        .env("DATABASE_URL", &fixture.db)
        .env("RUST_LOG", "warn");
    let summary = Drill::new()
        .addr(addr)
        .path("/events")
        .post_json(r#"{"ms": 5}"#)
        .clients(8)
        .h2_streams(4)
        .no_sse()
        .signal_after(Duration::from_millis(1500))
        .budget(Duration::from_secs(15))
        .ready_timeout(Duration::from_secs(20))
        .run_command(command)
        .await
        .unwrap();
    eprintln!("{summary}");
    summary.assert_passed();
    assert_eq!(summary.non_2xx, 0, "{summary}");
    assert!(summary.succeeded > 50, "{summary}");

    let check = tokio::task::spawn_blocking(move || {
        let recorded = runs(&fixture.db, 0);
        assert_eq!(
            recorded.len() as u64,
            summary.succeeded,
            "one event recorded per 201"
        );
        // The events the first run had no time for are done by the next.
        let addr = free_addr();
        let mut service = start(addr, &fixture.db, &fixture.args());
        let until = Instant::now() + Duration::from_secs(60);
        for (id, _) in &recorded {
            wait_done(addr, &format!("/events/{id}"), until);
        }
        signal(&service, "TERM");
        assert_eq!(wait(&mut service), Some(0));
    });
    check.await.unwrap();
}

#[test]
fn poison_events_end_dead_after_max_deliveries_on_rabbitmq() {
    if Broker::Amqp.available() {
        poison_events(Broker::Amqp);
    }
}

#[test]
fn poison_events_end_dead_after_max_deliveries_on_nats_jetstream() {
    if Broker::Nats.available() {
        poison_events(Broker::Nats);
    }
}

/// An event whose work fails and one whose work panics, among 20 good ones, on a service
/// started with `--max-deliveries 3`: each poison event is delivered exactly 3 times and ends
/// `dead` (on RabbitMQ, in the dead-letter queue), every good one is done once, and the service
/// is ready throughout and exits 0 at its SIGTERM (the consumer never failed).
fn poison_events(broker: Broker) {
    let fixture = Fixture::new("poison", broker);
    let addr = free_addr();
    let mut args = vec!["--max-deliveries", "3"];
    args.extend_from_slice(&fixture.args());
    let mut service = start(addr, &fixture.db, &args);
    let failing = create(addr, "/events", r#"{"ms": 1, "fail": "error"}"#);
    let panicking = create(addr, "/events", r#"{"ms": 1, "fail": "panic"}"#);
    let good: Vec<i64> = (0..20)
        .map(|_| create(addr, "/events", r#"{"ms": 5}"#))
        .collect();

    let until = Instant::now() + Duration::from_secs(30);
    for id in &good {
        wait_done(addr, &format!("/events/{id}"), until);
    }
    for id in [failing, panicking] {
        loop {
            let (status, body) = request(addr, "GET", &format!("/events/{id}"), "").unwrap();
            assert_eq!(status, 200, "{body}");
            if body.contains("\"state\":\"dead\"") {
                break;
            }
            assert!(Instant::now() < until, "event {id} never dead: {body}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let (status, body) = request(addr, "GET", "/readyz", "").unwrap();
    assert_eq!(status, 200, "the service stays ready: {body}");
    signal(&service, "TERM");
    assert_eq!(wait(&mut service), Some(0), "the consumer never failed");

    let runs = runs(&fixture.db, 0);
    for (id, ran) in &runs {
        let expected = if [failing, panicking].contains(id) {
            3
        } else {
            1
        };
        assert_eq!(*ran, expected, "event {id}");
    }
    assert_eq!(runs.len(), 22);
    if let Broker::Amqp = broker {
        let dead = dead_letters(&fixture.queue);
        assert_eq!(dead, 2, "both poison events are in the dead-letter queue");
    }
}

/// The messages in the service's RabbitMQ dead-letter queue for `queue`.
fn dead_letters(queue: &str) -> u32 {
    let name = format!("example-events.{queue}.dead");
    let count = move || {
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let properties = lapin::ConnectionProperties::default();
            let connection = lapin::Connection::connect(AMQP_URL, properties)
                .await
                .unwrap();
            let channel = connection.create_channel().await.unwrap();
            let options = lapin::options::QueueDeclareOptions {
                passive: true,
                ..lapin::options::QueueDeclareOptions::default()
            };
            let queue = channel
                .queue_declare(name.as_str().into(), options, Default::default())
                .await
                .unwrap();
            let _ = connection.close(200, "done".into()).await;
            queue.message_count()
        })
    };
    std::thread::spawn(count).join().unwrap()
}
