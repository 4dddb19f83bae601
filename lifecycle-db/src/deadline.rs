//! Giving up a little before the lifecycle would cut a start or stop off.

use std::time::Duration;

use lifecycle_core::Context;
use tokio::time::Instant;

/// The moment to give up at so what follows (reporting an error, handing a job back) still fits:
/// a quarter of the time left, at most 250 ms, before the lifecycle's deadline; `fallback` from
/// now outside a start or stop.
pub(crate) fn give_up_at(ctx: &Context, fallback: Duration) -> Instant {
    let now = Instant::now();
    match ctx.deadline() {
        Some(deadline) => {
            let left = deadline.saturating_duration_since(now);
            deadline - (left / 4).min(Duration::from_millis(250))
        }
        None => now + fallback,
    }
}
