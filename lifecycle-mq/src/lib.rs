//! Message-queue consumers and publishers for [`lifecycle_core`] whose shutdown neither loses a
//! message nor acknowledges one that was not processed: for AMQP 0.9.1 (RabbitMQ, on lapin,
//! feature `amqp`) and NATS JetStream (on async-nats, feature `nats`). No broker is on by
//! default: enable the ones the service uses, and the other's client is not built.
//!
//! - [`AmqpConsumer`] and [`NatsConsumer`] run a handler on each message, with a concurrency
//!   limit and a prefetch. At their stop turn they stop receiving first, hand back what they
//!   received and never started, let the handlers in progress finish within the stop timeout,
//!   ack or requeue what those answer, hand back the messages of handlers cut off at the
//!   deadline (never acking them), flush the acks and close the connection cleanly.
//! - [`AmqpPublisher`] and [`NatsPublisher`] wait for the broker's confirm of every publish; at
//!   their stop turn the publishes in flight are confirmed or fail, and later ones fail at once
//!   with [`MqError::NotRunning`].
//! - A broker missing at start is retried until shortly before the start timeout, and the error
//!   names its URL without credentials ([`Redacted`](lifecycle_core::Redacted)); a connection
//!   lost while running is a
//!   run-time failure for the component's [`OnFailure`](lifecycle_core::OnFailure) policy, with
//!   no reconnect loop that could outlive the stop; a broker gone at the stop cannot hold the
//!   stop past its timeout.
//!
//! # The guarantee: at least once
//!
//! A message is acknowledged only after its handler returned [`Ack::Done`], so no message is
//! lost: one whose handler was cut off at the stop deadline, failed, panicked, or whose process
//! was killed, is delivered again (at once when handed back; on AMQP when the broker sees the
//! connection close; on JetStream after the consumer's `ack_wait`). So a message **may be
//! processed twice**: when the process dies or the handler is cut off after it did its work but
//! before the ack reached the broker. The second delivery is marked
//! ([`Message::redelivered`], [`Message::delivery_count`]); make handlers idempotent, keyed on
//! something in the message.
//!
//! # Poison messages: a maximum of deliveries
//!
//! A message whose handler fails every time (an error, [`Ack::Requeue`], or a panic) would
//! otherwise be handed back and delivered for ever. So each consumer has a maximum of
//! deliveries ([`AmqpConsumer::max_deliveries`], [`NatsConsumer::max_deliveries`], default 5):
//! a message whose handler fails at its delivery number `max_deliveries` or later, as the
//! broker counts them ([`Message::delivery_count`]), is rejected instead of handed back, and
//! counted in [`ConsumerStats::dead`]. A panic in a handler is caught and is one such failed
//! delivery: it never fails the component, so a poison message cannot take down, one after
//! the other, every replica it is delivered to.
//!
//! - **RabbitMQ**: the message is rejected (`basic.reject`, requeue false), which the broker
//!   routes to the queue's `x-dead-letter-exchange` if it has one (and drops otherwise). The
//!   count is the broker's: **use a quorum queue**, which counts deliveries in
//!   `x-delivery-count`. A classic queue only says that a message was delivered before, not
//!   how often: there the first delivery is known to be the first, and a redelivery is never
//!   known to be the last, so a poison message is dead-lettered only with a maximum of 1, and
//!   otherwise handed back for ever (each failure is logged). This crate does not republish
//!   with a counter of its own, which would change the message's order and identity.
//! - **JetStream**: the message is terminated (`+TERM`): the server stops delivering it,
//!   keeps it in the stream (for the stream's retention) and publishes the advisory
//!   `$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.<stream>.<consumer>`, whose `stream_seq`
//!   fetches it: subscribe to it to keep dead letters somewhere.
//!
//! Every delivery counts, whatever became of the earlier ones: a hand-back at a stop, a
//! handler cut off, a killed process. So a message is dead-lettered after **at most**
//! `max_deliveries` deliveries, and after fewer failures when some deliveries were handed
//! back. A message that kills its process (an abort, running out of memory) is never seen
//! failing, so this count does not stop it: only the broker's own limit does, a quorum queue's
//! `x-delivery-limit` (RabbitMQ 4 sets 20 by default), or a JetStream consumer's `max_deliver`,
//! which [`NatsConsumer`] leaves unlimited when it creates the consumer (set it on a consumer
//! you create, knowing that hand-backs at a stop count too).
//!
//! # Counts and metrics
//!
//! Each consumer counts what became of its messages ([`ConsumerStats`], from its `stats()`),
//! and records the same through the `metrics` facade, labelled with its component's name.
//! Every work source of the workspace counts the same outcomes under the same names, so a
//! dashboard reads jobs and messages alike (`lifecycle-db`'s job worker is the other):
//!
//! | outcome | what happened | messages (this crate) | jobs (`lifecycle-db`) |
//! |---|---|---|---|
//! | taken | a delivery taken from the broker or queue, a redelivery too | `messages_received_total`, [`ConsumerStats::received`] | `jobs_claimed_total` |
//! | `done` | the handler succeeded: acknowledged | `messages_ended_total{outcome="done"}`, [`ConsumerStats::done`] | `jobs_ended_total{outcome="done"}` |
//! | `failed` | a failed delivery (an error, a panic; [`Ack::Requeue`]; for jobs a run past its maximum run time), handed back to be tried again | `…{outcome="failed"}`, [`ConsumerStats::failed`] | `…{outcome="failed"}` |
//! | `dead` | the same at its last delivery (attempt): set aside as a dead letter | `…{outcome="dead"}`, [`ConsumerStats::dead`] | `…{outcome="dead"}` |
//! | `handed_back` | taken as the stop came and never started: handed back | `…{outcome="handed_back"}`, [`ConsumerStats::handed_back`] | `…{outcome="handed_back"}` |
//! | `cut` | its handler still running at the stop deadline: cut off and handed back | `…{outcome="cut"}`, [`ConsumerStats::cut`] | `…{outcome="cut"}` |
//! | `rejected` | messages only: the handler refused it for good ([`Ack::Reject`]) | `…{outcome="rejected"}`, [`ConsumerStats::rejected`] | (none: a job handler cannot refuse) |
//!
//! Besides the outcomes, a consumer counts the handler runs that panicked
//! ([`ConsumerStats::panicked`], each also a `failed` or `dead` delivery) and the settlements
//! the broker could not be told of because the connection was gone
//! (`messages_settle_failed_total`, [`ConsumerStats::settle_failed`]; the broker delivers those
//! messages again). Without a recorder installed the metrics cost next to nothing.
//!
//! # Prefetch, concurrency and the stop timeout
//!
//! - **Concurrency** is how many handlers run at once. **Prefetch** is how many messages the
//!   broker may hand the consumer before they are acked: those in progress plus those waiting
//!   in the client for a free handler. Keep prefetch at least the concurrency (or handlers wait
//!   on the network), and not much more: every prefetched message not started at the stop is
//!   handed back, and counts as a redelivery for the next consumer.
//! - At the stop, the handlers in progress (at most the concurrency) get until shortly before
//!   the stop timeout (a quarter of the time left, at most 500 ms, is kept to hand messages back
//!   and close). Size the stop timeout to the longest handler you want to see finish; a handler
//!   longer than that is cut off and its message redelivered, and the stop reports
//!   [`MqError::HandlersCutOff`].
//! - On JetStream, the stop also waits for the pull in progress to expire (at most
//!   [`NatsConsumer::pull_wait`]), to hand back what it brings.
//! - After a SIGKILL (or a lost connection), what the process held comes back on AMQP as soon
//!   as the broker sees the connection gone, and on JetStream after the consumer's
//!   [`ack_wait`](NatsConsumer::ack_wait): keep it longer than a handler takes (or the message
//!   is delivered again while still in progress), and know that it is how long a killed
//!   consumer's messages wait.
//! - The stop's budget must fit the lifecycle's: the handlers' time, plus the hand-back and
//!   the close (a round trip each), inside the component's stop timeout, inside the shutdown
//!   budget, inside the orchestrator's grace period (Kubernetes' `terminationGracePeriodSeconds`).
//!
//! Register a consumer as depending on what its handler uses (a database pool), so that it
//! stops first; register what publishes as depending on the publisher, so that the publisher
//! stops last.
//!
//! # Examples
//!
//! A service that consumes `orders` and publishes an event for each, on RabbitMQ:
//!
//! ```no_run
//! use lifecycle_core::{Lifecycle, Registration, Report};
//! use lifecycle_mq::{Ack, AmqpConsumer, AmqpPublisher};
//! use std::time::Duration;
//!
//! #[tokio::main]
//! async fn main() -> Report {
//!     let url = "amqp://guest:guest@127.0.0.1:5672/%2f";
//!     let publisher = AmqpPublisher::new(url);
//!     let events = publisher.handle();
//!     let orders = AmqpConsumer::new(url, "orders", move |message| {
//!         let events = events.clone();
//!         async move {
//!             // Idempotent: a redelivered order is looked up before it is charged again.
//!             let order = String::from_utf8_lossy(message.payload()).into_owned();
//!             events.publish("", "order-events", order.as_bytes()).await?;
//!             Ok::<_, lifecycle_mq::MqError>(Ack::Done)
//!         }
//!     })
//!     .prefetch(8)
//!     .concurrency(4);
//!
//!     let lifecycle = Lifecycle::builder()
//!         .register(Registration::new("events", publisher))
//!         .register(
//!             Registration::new("orders", orders)
//!                 .depends_on("events")
//!                 .stop_timeout(Duration::from_secs(10)),
//!         )
//!         .build()
//!         .expect("valid configuration");
//!     lifecycle.run().await
//! }
//! ```

#[cfg(feature = "amqp")]
mod amqp;
#[cfg(any(feature = "amqp", feature = "nats"))]
mod broker;
#[cfg(any(feature = "amqp", feature = "nats"))]
mod consumer;
mod error;
#[cfg(any(feature = "amqp", feature = "nats"))]
mod handler;
#[cfg(any(feature = "amqp", feature = "nats"))]
mod handlers;
#[cfg(any(feature = "amqp", feature = "nats"))]
mod in_hand;
mod message;
#[cfg(any(feature = "amqp", feature = "nats"))]
mod metrics;
#[cfg(feature = "nats")]
mod nats;
#[cfg(any(feature = "amqp", feature = "nats"))]
mod publisher;
#[cfg(any(feature = "amqp", feature = "nats"))]
mod publishes;
#[cfg(any(feature = "amqp", feature = "nats"))]
mod settle;
mod stats;
#[cfg(any(feature = "amqp", feature = "nats"))]
mod stop;
#[cfg(any(feature = "amqp", feature = "nats"))]
mod subscription;

#[cfg(feature = "amqp")]
pub use amqp::{AmqpConsumer, AmqpPublisher, AmqpPublisherHandle};
#[doc(hidden)]
pub use error::MqError;
pub use message::{Ack, Message};
#[cfg(feature = "nats")]
pub use nats::{NatsConsumer, NatsPublisher, NatsPublisherHandle};
pub use stats::ConsumerStats;
