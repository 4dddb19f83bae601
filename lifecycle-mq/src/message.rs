//! `Message`, what a handler gets, and `Ack`, what it answers.

/// A message as a consumer's handler gets it: the payload, where it came from, and how many
/// times it has been delivered, so that a handler can be idempotent or give up on a message
/// that keeps failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub(crate) payload: Vec<u8>,
    pub(crate) subject: String,
    pub(crate) message_id: Option<String>,
    pub(crate) redelivered: bool,
    pub(crate) delivery_count: Option<u64>,
    pub(crate) last_delivery: bool,
}

impl Message {
    /// The body.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The body, taking it out of the message.
    pub fn into_payload(self) -> Vec<u8> {
        self.payload
    }

    /// The AMQP routing key, or the NATS subject, the message was published with.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The publisher's id for the message, if it set one: the AMQP `message-id` property, or
    /// the `Nats-Msg-Id` header (which JetStream also uses to drop duplicate publishes).
    pub fn message_id(&self) -> Option<&str> {
        self.message_id.as_deref()
    }

    /// Whether the broker delivered this message before (to this or another consumer) without
    /// it being acknowledged: the handler may have run on it already, fully or in part.
    pub fn redelivered(&self) -> bool {
        self.redelivered
    }

    /// Which delivery of the message this is, 1 for the first, when the broker counts them:
    /// always on JetStream; on RabbitMQ for quorum queues (`x-delivery-count`), and for other
    /// queues only as `Some(1)` on a first delivery and `None` on a redelivery.
    pub fn delivery_count(&self) -> Option<u64> {
        self.delivery_count
    }

    /// Whether this is the message's last delivery: its delivery count has reached the
    /// consumer's `max_deliveries`, so if the handler fails now (an error, a panic,
    /// [`Ack::Requeue`]) the message is dead-lettered instead of delivered again. A handler can
    /// record that it gives up on it (a dead state in its own store) before it fails.
    pub fn is_last_delivery(&self) -> bool {
        self.last_delivery
    }
}

/// What a handler wants done with its message.
///
/// A handler that returns an error, or panics, has the message handed back as with
/// [`Ack::Requeue`]: a failed delivery, after which the broker delivers it again, unless it was
/// the message's last delivery (see the crate documentation on poison messages); then it is
/// rejected as with [`Ack::Reject`]. A handler cut off at the stop timeout has its message
/// handed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ack {
    /// The message was processed: acknowledge it, and the broker forgets it.
    Done,
    /// Hand the message back to be delivered again (AMQP `basic.nack` with requeue, JetStream
    /// `-NAK`): a failed delivery, so at the message's last delivery it is rejected instead.
    Requeue,
    /// Refuse the message for good: the broker drops it, or dead-letters it where that is
    /// configured (AMQP `basic.nack` without requeue, JetStream `+TERM`).
    Reject,
}
