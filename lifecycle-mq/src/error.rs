//! `MqError`, the errors of this crate.

use std::time::Duration;

/// What went wrong with a consumer or a publisher.
///
/// Each variant names the broker (its URL without credentials, as
/// [`lifecycle_core::Redacted`] shows it)
/// and, where there is one, the queue or subject, so a report line says which one failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MqError {
    /// The URL could not be parsed.
    #[error("invalid broker URL {target}: {message}")]
    InvalidUrl {
        /// The URL, without credentials.
        target: String,
        /// What is wrong with it.
        message: String,
    },

    /// A setting of the component is out of its range (a maximum of 0 deliveries): refused
    /// when the component starts, before it connects.
    #[error("invalid setting for {queue}: {setting} {reason}")]
    InvalidSetting {
        /// The queue or stream the component was to consume.
        queue: String,
        /// The setting, as its builder method is named (`"max_deliveries"`).
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// The broker could not be reached, or the queue or stream not consumed from, within the
    /// start timeout.
    #[error(
        "cannot reach {target} for {queue} after {attempts} attempts in {waited:?}: {last_error}"
    )]
    Unreachable {
        /// The broker, without credentials.
        target: String,
        /// The queue, stream or subject the component was to use.
        queue: String,
        /// How many attempts were made.
        attempts: u32,
        /// How long the attempts took.
        waited: Duration,
        /// The error of the last attempt, or that it timed out.
        last_error: String,
    },

    /// The connection to the broker ended while the component was running. The messages in
    /// progress were not acknowledged and the broker delivers them again.
    #[error("lost the connection to {target} while consuming {queue}: {reason}")]
    ConnectionLost {
        /// The broker, without credentials.
        target: String,
        /// The queue or stream consumed from.
        queue: String,
        /// What was seen.
        reason: String,
    },

    /// The broker ended the subscription while the connection stayed up: the queue was
    /// deleted (AMQP `basic.cancel` from the broker), or pulls kept failing (JetStream).
    #[error("the subscription to {queue} on {target} ended: {reason}")]
    SubscriptionEnded {
        /// The broker, without credentials.
        target: String,
        /// The queue or stream consumed from.
        queue: String,
        /// What was seen.
        reason: String,
    },

    /// Handlers were still running shortly before the stop timeout; they were cut off and
    /// their messages handed back unacknowledged, so the broker delivers them again.
    #[error("cut off {cut} handlers still running at the stop of {queue}; their messages will be redelivered")]
    HandlersCutOff {
        /// The queue or stream consumed from.
        queue: String,
        /// How many handlers were cut off.
        cut: usize,
    },

    /// A step of the stop could not be done because the broker did not answer or the
    /// connection was gone. Messages not acknowledged are delivered again by the broker once
    /// it sees the connection closed; publishes not confirmed are counted in `unconfirmed`.
    #[error("stopping {queue} on {target}: {step} failed: {reason}")]
    StopIncomplete {
        /// The broker, without credentials.
        target: String,
        /// The queue, stream or subject.
        queue: String,
        /// The step that failed (`"basic.cancel"`, `"closing the channel"`, ...).
        step: &'static str,
        /// Why.
        reason: String,
    },

    /// A publish was refused because the publisher is not running: before its start or after
    /// its stop turn began.
    #[error("publisher {name} is not running: the publish to {destination} was not sent")]
    NotRunning {
        /// The publisher's component name (or its target before its start).
        name: String,
        /// Where the message was to go.
        destination: String,
    },

    /// The broker did not confirm a publish: it refused it (an AMQP nack, a JetStream error
    /// reply), the connection ended before the confirm, or the confirm did not come in time.
    /// The message may or may not have been stored.
    #[error("publish to {destination} on {target} not confirmed: {reason}")]
    PublishFailed {
        /// The broker, without credentials.
        target: String,
        /// Where the message was to go.
        destination: String,
        /// Why.
        reason: String,
    },

    /// At the stop, publishes were still waiting for their confirm past the stop timeout;
    /// each of their callers got [`MqError::PublishFailed`].
    #[error("stopping the publisher on {target}: {unconfirmed} publishes were never confirmed")]
    Unconfirmed {
        /// The broker, without credentials.
        target: String,
        /// How many.
        unconfirmed: usize,
    },
}
