//! `Settle`: how a broker is told what became of one of its messages, and handing many back.

use std::future::Future;

use tokio::time::Instant;

use crate::message::Ack;
use crate::stop::step;

/// How a broker's message is settled: acked, handed back or rejected (a lapin `Acker`, a
/// JetStream message).
pub(crate) trait Settle: Send + Sized + 'static {
    /// Tells the broker what `ack` says, and waits until it is known to have been told (or
    /// could not be).
    fn settle(self, ack: Ack) -> impl Future<Output = Result<(), String>> + Send;
}

/// Hands every one of `messages` back to the broker, by `limit`.
pub(crate) async fn hand_back_all<T: Settle>(
    messages: Vec<T>,
    limit: Instant,
) -> Result<(), String> {
    let settled = messages.into_iter().map(|m| m.settle(Ack::Requeue));
    let results = step(limit, async {
        Ok::<_, String>(futures::future::join_all(settled).await)
    })
    .await?;
    results
        .into_iter()
        .find_map(Result::err)
        .map_or(Ok(()), Err)
}
