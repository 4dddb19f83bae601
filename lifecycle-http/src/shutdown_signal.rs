//! `ShutdownSignal`: what tells handlers of long-lived responses when to end, an extractor
//! read from what the task serving the request holds (`serving.rs`), not a request extension.

use std::sync::Arc;

use lifecycle_core::Context;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::task_tracker::TaskTrackerToken;

/// Given to the handlers an [`HttpServer`](crate::HttpServer) serves, so that those of long-lived
/// responses (server-sent events, streaming bodies, WebSockets) can end them cleanly instead
/// of being cut off at the stop timeout: an extractor (`shutdown: ShutdownSignal`), or
/// [`ShutdownSignal::current`] where there are no extractors (a tonic service). It comes from
/// the task that serves the request, not from the request's extensions, which would cost
/// every request an allocation.
///
/// # Examples
///
/// An event stream that ends with a last event when the server's stop turn comes:
///
/// ```
/// use axum::response::sse::{Event, Sse};
/// use futures::stream::{self, Stream, StreamExt};
/// use lifecycle_http::ShutdownSignal;
/// use std::convert::Infallible;
///
/// async fn events(shutdown: ShutdownSignal) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
///     let token = shutdown.token();
///     let ticks = stream::pending::<Result<Event, Infallible>>() // events would come from a channel
///         .take_until(token.cancelled_owned());
///     let bye = stream::once(async { Ok(Event::default().event("shutdown").data("bye")) });
///     Sse::new(ticks.chain(bye))
/// }
/// ```
#[derive(Debug, Clone)]
pub struct ShutdownSignal(Arc<Tokens>);

#[derive(Debug)]
struct Tokens {
    stopping: CancellationToken,
    requested: CancellationToken,
    ctx: Context,
}

impl ShutdownSignal {
    pub(crate) fn new(ctx: &Context) -> Self {
        ShutdownSignal(Arc::new(Tokens {
            stopping: ctx.token().clone(),
            requested: ctx.lifecycle().shutdown_token(),
            ctx: ctx.clone(),
        }))
    }

    /// A token cancelled when the server's stop turn comes (after the drain delay): end
    /// long-lived responses when it fires. It is a child of the server's own token, so
    /// cancelling it ends nothing but what waits on it (the server's token is the lifecycle's to
    /// cancel).
    pub fn token(&self) -> CancellationToken {
        self.0.stopping.child_token()
    }

    /// The server's own token, for this crate's gRPC helpers, which only wait on it.
    #[cfg(feature = "grpc")]
    pub(crate) fn server_token(&self) -> &CancellationToken {
        &self.0.stopping
    }

    /// Completes when the server's stop turn comes; see [`token`](Self::token).
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe.
    pub fn stopping(&self) -> WaitForCancellationFuture<'_> {
        self.0.stopping.cancelled()
    }

    /// A guard that makes the server's stop wait for the work that holds it, for tasks the
    /// handler does not run itself and that outlive the connection: end the work when
    /// [`token`](Self::token) fires.
    ///
    /// An upgraded connection (a WebSocket) needs none: its socket holds one already, so the
    /// stop waits until the socket is closed (or the stop timeout). The guard is for other
    /// work, or to keep the stop waiting for what the WebSocket task does after its close.
    ///
    /// # Examples
    ///
    /// ```
    /// use axum::extract::ws::{close_code, CloseFrame, Message, WebSocketUpgrade};
    /// use axum::response::Response;
    /// use lifecycle_http::ShutdownSignal;
    ///
    /// async fn ws(upgrade: WebSocketUpgrade, shutdown: ShutdownSignal) -> Response {
    ///     let tracked = shutdown.track();
    ///     upgrade.on_upgrade(move |mut socket| async move {
    ///         let _tracked = tracked;
    ///         shutdown.stopping().await;
    ///         let frame = CloseFrame { code: close_code::AWAY, reason: "server stopping".into() };
    ///         let _ = socket.send(Message::Close(Some(frame))).await;
    ///     })
    /// }
    /// ```
    pub fn track(&self) -> TaskTrackerToken {
        self.0.ctx.track()
    }

    /// Whether the service's shutdown has begun (readiness is withdrawn, the drain delay may
    /// still be running). Handlers may use it to ask clients to reconnect elsewhere early.
    pub fn is_requested(&self) -> bool {
        self.0.requested.is_cancelled()
    }
}

/// Handlers take the signal as an extractor: `shutdown: ShutdownSignal`. It comes from the
/// task serving the request rather than from the request's extensions, which would cost every
/// request an allocation.
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ShutdownSignal {
    type Rejection = (axum::http::StatusCode, &'static str);

    async fn from_request_parts(
        _: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        ShutdownSignal::current().ok_or((
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "ShutdownSignal is only available to handlers an HttpServer serves",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::ShutdownSignal;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    #[tokio::test]
    async fn outside_a_server_there_is_no_signal_and_the_extractor_says_so() {
        assert!(ShutdownSignal::current().is_none());
        let router = Router::new().route("/", get(|_: ShutdownSignal| async { "served" }));
        let response = router
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
