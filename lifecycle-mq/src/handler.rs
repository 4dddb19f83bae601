//! The user's handler, boxed so the components need no type parameter, and its answer.

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use lifecycle_core::BoxError;

use crate::message::{Ack, Message};

/// A handler as the consumers keep it.
pub(crate) type Handler =
    Arc<dyn Fn(Message) -> BoxFuture<'static, Result<Ack, BoxError>> + Send + Sync>;

/// Boxes `handler`.
pub(crate) fn boxed<H, Fut, E>(handler: H) -> Handler
where
    H: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Ack, E>> + Send + 'static,
    E: Into<BoxError>,
{
    Arc::new(move |message| handler(message).map(|r| r.map_err(Into::into)).boxed())
}

/// A panic caught in a handler, to be resumed once its message is handed back.
pub(crate) type Panic = Box<dyn std::any::Any + Send>;

/// Runs `handler` on `message`; an error hands the message back, as [`Ack`] documents. A panic
/// hands it back too, and is returned so that the caller resumes it once the message is
/// settled: the task then fails as any tracked task that panics (a run-time failure of the
/// component), but its message is not left unacknowledged until the stop.
pub(crate) async fn run(
    handler: &Handler,
    message: Message,
    component: &str,
) -> (Ack, Option<Panic>) {
    match std::panic::AssertUnwindSafe(handler(message))
        .catch_unwind()
        .await
    {
        Ok(Ok(ack)) => (ack, None),
        Ok(Err(error)) => {
            tracing::warn!(component, %error, "handler failed; the message is handed back");
            (Ack::Requeue, None)
        }
        Err(panic) => {
            tracing::error!(component, "handler panicked; the message is handed back");
            (Ack::Requeue, Some(panic))
        }
    }
}
