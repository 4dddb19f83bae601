//! The user's handler, boxed so the components need no type parameter, and its answer.

use std::future::Future;
use std::panic::AssertUnwindSafe;
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

/// How a handler ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It returned this answer.
    Answered(Ack),
    /// It returned an error.
    Failed,
    /// It panicked.
    Panicked,
}

/// Runs `handler` on `message`. An error or a panic is caught and logged here, and is a failed
/// delivery like [`Ack::Requeue`]: never a failure of the component, so that one poison message
/// cannot take down every replica it is delivered to in turn.
pub(crate) async fn run(handler: &Handler, message: Message, component: &str) -> Outcome {
    // The handler's call, which makes its future, may panic as well as the future.
    let handling = match std::panic::catch_unwind(AssertUnwindSafe(|| handler(message))) {
        Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
        Err(panic) => Err(panic),
    };
    match handling {
        Ok(Ok(ack)) => Outcome::Answered(ack),
        Ok(Err(error)) => {
            tracing::warn!(component, %error, "handler failed");
            Outcome::Failed
        }
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(not a string)");
            tracing::error!(component, panic = message, "handler panicked");
            Outcome::Panicked
        }
    }
}
