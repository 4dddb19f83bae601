//! `Subscription`: a broker's side of one consumer run, as the backend-neutral consumer drives
//! it: how to connect and subscribe, how to take the next message, how to stop the broker
//! sending, and what was received and never started at the stop.

use std::future::Future;
use std::time::Duration;

use lifecycle_core::{Context, Redacted};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::broker::Connection;
use crate::error::MqError;
use crate::message::Message;
use crate::settle::Settle;
use crate::stop::StepFailed;

/// What a consumer of one broker adds to the backend-neutral [`Consumer`](crate::consumer::Consumer):
/// its settings (queue, prefetch) and how it subscribes.
pub(crate) trait Subscribe: std::fmt::Debug + Send + Sync + 'static {
    /// The connection of one run.
    type Connection: Connection;
    /// The subscription of one run, which its dispatcher owns.
    type Subscription: Subscription;

    /// How many messages the broker may send before they are acked, for the logs.
    fn prefetch(&self) -> u32;

    /// Checks `url` before any attempt to connect; an error names `target`, never `url`.
    fn check_url(&self, url: &str, target: &Redacted) -> Result<(), MqError>;

    /// One attempt to connect to `url` as `name` and subscribe.
    fn subscribe(
        &self,
        url: &str,
        name: &str,
        connect_timeout: Duration,
    ) -> impl Future<Output = Result<(Self::Connection, Self::Subscription), String>> + Send;

    /// Starts whatever watches the connection for the run of `ctx`, if the subscription does
    /// not see a loss itself.
    fn watch(
        &self,
        _connection: &mut Self::Connection,
        _ctx: &Context,
        (_target, _queue): (&Redacted, &str),
    ) {
    }

    /// The stop's first step: tells the broker to send no more (AMQP `basic.cancel`), by
    /// `limit`. `Ok(true)` once the broker confirmed it, so that what it sent before ends.
    fn stop_receiving(
        connection: &Self::Connection,
        limit: Instant,
    ) -> impl Future<Output = Result<bool, StepFailed>> + Send;
}

/// What [`Subscription::next`] brought.
pub(crate) enum Next<D> {
    /// A message, with what settles it.
    Message(D, Message),
    /// The stop turn came (the token was cancelled).
    Stopped,
    /// The connection was lost: the subscription is gone with it.
    #[cfg_attr(not(feature = "amqp"), allow(dead_code))]
    Lost(String),
    /// The broker ended the subscription while the connection stayed up.
    Ended(String),
}

/// The receiving side of one consumer run.
pub(crate) trait Subscription: Send + 'static {
    /// What settles one of its messages.
    type Delivery: Settle;

    /// The next message; [`Next::Stopped`] as soon as `stop` is cancelled (cancel-safe: a
    /// message received after it stays in the subscription for [`unstarted`](Self::unstarted)).
    /// `in_hand` messages are being handled (for how many to ask the broker for).
    fn next(
        &mut self,
        stop: &CancellationToken,
        in_hand: usize,
    ) -> impl Future<Output = Next<Self::Delivery>> + Send;

    /// At the stop, after [`Subscribe::stop_receiving`] (`confirmed` if the broker confirmed
    /// it): the messages received and never started, until `give_up` at most.
    fn unstarted(
        self,
        confirmed: bool,
        give_up: Instant,
    ) -> impl Future<Output = Vec<Self::Delivery>> + Send;
}
