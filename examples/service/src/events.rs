//! Events: `POST /events` publishes one to RabbitMQ or NATS JetStream, a consumer of the
//! service (this replica or another) does its work, and the database keeps its state for
//! `GET /events/{id}`. The work is a job's: wait the event's milliseconds.
//!
//! The consumers hand back what they have not started at their stop turn and acknowledge an
//! event only once its work is recorded done, so an event is never lost; one interrupted by a
//! kill is delivered again, and its work runs again unless the database says it is done.
//!
//! An event posted with `"fail": "error"` or `"fail": "panic"` fails every time its work runs:
//! after `--max-deliveries` deliveries the consumer dead-letters it (to the RabbitMQ queue
//! `example-events.{queue}.dead`, or terminates it on JetStream), and its state is `dead`. The
//! RabbitMQ queue is a quorum queue, the kind that counts deliveries.

use std::time::Duration;

use lifecycle_core::{BoxError, Redacted};
use lifecycle_mq::{Ack, AmqpPublisherHandle, Message, MqError, NatsPublisherHandle};
use serde::{Deserialize, Serialize};
use sqlx::AnyPool;

use crate::jobs::Fail;

/// A broker events can travel through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Broker {
    Amqp,
    Nats,
}

/// What travels: the event's id, the milliseconds of work it asks for, and whether that work
/// fails.
#[derive(Debug, Serialize, Deserialize)]
struct Event {
    id: i64,
    ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fail: Option<Fail>,
}

/// The names of the service's events on the brokers, derived from `--job-queue` so that
/// several services can share a broker.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    /// The durable RabbitMQ queue, published to through the default exchange.
    pub(crate) amqp_queue: String,
    /// Where RabbitMQ dead-letters the events that failed at their last delivery.
    pub(crate) amqp_dead_letters: String,
    /// The JetStream stream, which holds the one subject below.
    pub(crate) nats_stream: String,
    pub(crate) nats_subject: String,
    /// The durable JetStream consumer that every replica shares.
    pub(crate) nats_consumer: String,
}

impl Names {
    pub(crate) fn new(queue: &str) -> Self {
        // JetStream names take no dots, spaces or wildcards.
        let token: String = queue
            .chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => c,
                _ => '_',
            })
            .collect();
        Names {
            amqp_queue: format!("example-events.{queue}"),
            amqp_dead_letters: format!("example-events.{queue}.dead"),
            nats_stream: format!("EXAMPLE_EVENTS_{token}"),
            nats_subject: format!("example-events.{token}"),
            nats_consumer: format!("example-service-{token}"),
        }
    }
}

/// The `events` table: one row per event, its state and how many times its work started.
#[derive(Debug, Clone)]
pub(crate) struct EventStore {
    pool: AnyPool,
    sql: &'static Statements,
}

/// The statements, in the database's placeholder style (sqlx's `Any` passes SQL through).
#[derive(Debug)]
struct Statements {
    insert: &'static str,
    failed: &'static str,
    start: &'static str,
    finish: &'static str,
    dead: &'static str,
    state: &'static str,
}

const NUMBERED: Statements = Statements {
    insert: "INSERT INTO events (id, ms, state, runs) VALUES ($1, $2, 'queued', 0)",
    failed: "UPDATE events SET state = 'failed' WHERE id = $1 AND state = 'queued'",
    start: "UPDATE events SET state = 'running', runs = runs + 1 WHERE id = $1 AND state <> 'done'",
    finish: "UPDATE events SET state = 'done' WHERE id = $1",
    dead: "UPDATE events SET state = 'dead' WHERE id = $1 AND state <> 'done'",
    state: "SELECT state FROM events WHERE id = $1",
};

const MYSQL: Statements = Statements {
    insert: "INSERT INTO events (id, ms, state, runs) VALUES (?, ?, 'queued', 0)",
    failed: "UPDATE events SET state = 'failed' WHERE id = ? AND state = 'queued'",
    start: "UPDATE events SET state = 'running', runs = runs + 1 WHERE id = ? AND state <> 'done'",
    finish: "UPDATE events SET state = 'done' WHERE id = ?",
    dead: "UPDATE events SET state = 'dead' WHERE id = ? AND state <> 'done'",
    state: "SELECT state FROM events WHERE id = ?",
};

impl EventStore {
    pub(crate) const CREATE_TABLE: &'static str = "CREATE TABLE IF NOT EXISTS events \
        (id BIGINT PRIMARY KEY, ms BIGINT NOT NULL, state VARCHAR(16) NOT NULL, runs BIGINT NOT NULL)";

    pub(crate) fn new(pool: AnyPool, mysql: bool) -> Self {
        let sql = if mysql { &MYSQL } else { &NUMBERED };
        EventStore { pool, sql }
    }

    /// The state of event `id`: `queued`, `running`, `done`, `dead` (its work failed at each of
    /// its deliveries) or `failed` (never published).
    pub(crate) async fn state(&self, id: i64) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar(self.sql.state)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    /// Marks the event running unless it is done already; whether its work is to run.
    async fn start(&self, id: i64) -> Result<bool, sqlx::Error> {
        let started = sqlx::query(self.sql.start)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(started.rows_affected() == 1)
    }

    /// Marks the event dead: its consumer gives up on it.
    async fn dead(&self, id: i64) -> Result<(), sqlx::Error> {
        sqlx::query(self.sql.dead)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// What `POST /events` needs: the store, and the publisher of each broker the service uses.
#[derive(Debug, Clone)]
pub(crate) struct Events {
    pub(crate) store: EventStore,
    pub(crate) names: Names,
    pub(crate) amqp: Option<AmqpPublisherHandle>,
    pub(crate) nats: Option<NatsPublisherHandle>,
}

/// Why an event was not published.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishError {
    #[error("no {0:?} broker: start the service with --amqp-url or --nats-url")]
    NoBroker(Option<Broker>),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Broker(#[from] MqError),
}

impl Events {
    /// Records a new event of `ms` milliseconds (whose work fails every time if `fail` says
    /// so) as queued and publishes it through `via`, or the first broker the service uses
    /// (RabbitMQ when it uses both); its id.
    ///
    /// The row is written first, so a consumer never sees an event the database does not
    /// know. When the publish fails the event is marked `failed`, unless a consumer got it all
    /// the same (a publish whose confirm was lost may still have been stored).
    pub(crate) async fn publish(
        &self,
        ms: u64,
        fail: Option<Fail>,
        via: Option<Broker>,
    ) -> Result<i64, PublishError> {
        let broker = match (via, &self.amqp, &self.nats) {
            (None | Some(Broker::Amqp), Some(_), _) => Broker::Amqp,
            (None | Some(Broker::Nats), _, Some(_)) => Broker::Nats,
            _ => return Err(PublishError::NoBroker(via)),
        };
        // 53 random bits: unique enough across replicas, and exact in a JavaScript number.
        let id = i64::try_from(rand::random::<u64>() >> 11).expect("53 bits fit");
        sqlx::query(self.store.sql.insert)
            .bind(id)
            .bind(i64::try_from(ms).unwrap_or(i64::MAX))
            .execute(&self.store.pool)
            .await?;
        let payload = serde_json::to_vec(&Event { id, ms, fail }).expect("an event serializes");
        let published = match (broker, &self.amqp, &self.nats) {
            (Broker::Amqp, Some(amqp), _) => {
                amqp.publish("", &self.names.amqp_queue, &payload).await
            }
            (Broker::Nats, _, Some(nats)) => nats.publish(&self.names.nats_subject, &payload).await,
            _ => unreachable!("the broker was chosen among the configured ones"),
        };
        if let Err(error) = published {
            sqlx::query(self.store.sql.failed)
                .bind(id)
                .execute(&self.store.pool)
                .await?;
            return Err(error.into());
        }
        Ok(id)
    }
}

/// The consumers' handler: the work of an event, as a job's (mark it running, wait its
/// milliseconds, mark it done), acknowledged once recorded done. Idempotent: a redelivered
/// event that is done already is acknowledged without running again. An event that asks to
/// fail fails (or panics); when its work fails at its last delivery, whatever the cause, it is
/// marked dead, since the consumer dead-letters it then.
pub(crate) async fn consume(store: EventStore, message: Message) -> Result<Ack, BoxError> {
    let Ok(event) = serde_json::from_slice::<Event>(message.payload()) else {
        tracing::warn!(subject = message.subject(), "dropping a malformed event");
        return Ok(Ack::Reject);
    };
    let last = message.is_last_delivery();
    let worked = work(&store, &event, last).await;
    if worked.is_err() && last {
        // The consumer dead-letters the event now: say so, or it would stay `running`.
        if let Err(error) = store.dead(event.id).await {
            tracing::warn!(event = event.id, %error, "could not mark a dead event dead");
        }
    }
    worked
}

/// The work of `event`, which fails if the event asks to (marked dead first if `last`, before
/// a panic).
async fn work(store: &EventStore, event: &Event, last: bool) -> Result<Ack, BoxError> {
    if !store.start(event.id).await? {
        return Ok(Ack::Done);
    }
    if let Some(fail) = event.fail {
        if last && fail == Fail::Panic {
            store.dead(event.id).await?;
        }
        return Err(fail.now(&format!("event {}", event.id)));
    }
    tokio::time::sleep(Duration::from_millis(event.ms)).await;
    sqlx::query(store.sql.finish)
        .bind(event.id)
        .execute(&store.pool)
        .await?;
    Ok(Ack::Done)
}

/// Declares the queue (RabbitMQ) or creates the stream (JetStream) the events go through, if
/// missing; run by the migrations, before the consumers start.
#[derive(Debug)]
pub(crate) struct Topology {
    pub(crate) names: Names,
    pub(crate) amqp_url: Option<String>,
    pub(crate) nats_url: Option<String>,
}

impl Topology {
    pub(crate) async fn declare(&self) -> Result<(), BoxError> {
        if let Some(url) = &self.amqp_url {
            declare_queue(url, &self.names).await.map_err(|e| {
                // The driver's message may quote the URL: its secrets are scrubbed too.
                let shown = Redacted::new(url);
                let e = shown.scrub(e);
                format!("declaring {} on {shown}: {e}", self.names.amqp_queue)
            })?;
        }
        if let Some(url) = &self.nats_url {
            create_stream(url, &self.names).await.map_err(|e| {
                // The driver's message may quote the URL: its secrets are scrubbed too.
                let shown = Redacted::new(url);
                let e = shown.scrub(e);
                format!("creating {} on {shown}: {e}", self.names.nats_stream)
            })?;
        }
        Ok(())
    }
}

/// Declares the events' queue as a quorum queue (which counts deliveries, so that a poison
/// event is dead-lettered after `--max-deliveries`) whose dead letters go to a queue of their
/// own. A queue of that name declared before as a classic queue is used as it is, with a
/// warning: a classic queue cannot say how often an event was delivered.
async fn declare_queue(url: &str, names: &Names) -> Result<(), BoxError> {
    use lapin::options::QueueDeclareOptions;
    use lapin::types::{AMQPValue, FieldTable};
    use lapin::{Connection, ConnectionProperties};

    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .queue_declare(
            names.amqp_dead_letters.as_str().into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await?;
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
        AMQPValue::LongString(names.amqp_dead_letters.as_str().into()),
    );
    let declared = channel
        .queue_declare(
            names.amqp_queue.as_str().into(),
            QueueDeclareOptions::durable(),
            arguments,
        )
        .await;
    if let Err(error) = declared {
        // A queue of another kind already has the name (the broker closed the channel): use it.
        let channel = connection.create_channel().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(
                names.amqp_queue.as_str().into(),
                passive,
                FieldTable::default(),
            )
            .await?;
        tracing::warn!(queue = %names.amqp_queue, %error,
            "the events' queue exists and is not a quorum queue: events that keep failing are never dead-lettered");
    }
    connection.close(200, "declared".into()).await?;
    Ok(())
}

async fn create_stream(url: &str, names: &Names) -> Result<(), BoxError> {
    use async_nats::jetstream::{self, stream};

    let client = async_nats::connect(url).await?;
    jetstream::new(client.clone())
        .get_or_create_stream(stream::Config {
            name: names.nats_stream.clone(),
            subjects: vec![names.nats_subject.clone()],
            ..stream::Config::default()
        })
        .await?;
    client.drain().await?;
    Ok(())
}
