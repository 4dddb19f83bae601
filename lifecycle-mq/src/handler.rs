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

/// Runs `handler` on `message`; an error hands the message back, as [`Ack`] documents.
pub(crate) async fn run(handler: &Handler, message: Message, component: &str) -> Ack {
    match handler(message).await {
        Ok(ack) => ack,
        Err(error) => {
            tracing::warn!(component, %error, "handler failed; the message is handed back");
            Ack::Requeue
        }
    }
}
