//! `ShutdownSignal`: the request extension that tells handlers of long-lived responses when to
//! end.

use std::sync::Arc;

use lifecycle_core::Context;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::task_tracker::TaskTrackerToken;

/// Inserted into every request's extensions by [`HttpServer`](crate::HttpServer), so handlers
/// of long-lived responses (server-sent events, streaming bodies, WebSockets) can end them
/// cleanly instead of being cut off at the stop timeout.
///
/// # Examples
///
/// An event stream that ends with a last event when the server's stop turn comes:
///
/// ```
/// use axum::response::sse::{Event, Sse};
/// use axum::Extension;
/// use futures::stream::{self, Stream, StreamExt};
/// use lifecycle_http::ShutdownSignal;
/// use std::convert::Infallible;
///
/// async fn events(Extension(shutdown): Extension<ShutdownSignal>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
///     let token = shutdown.token().clone();
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

    /// The server's own token, cancelled when its stop turn comes (after the drain delay):
    /// end long-lived responses when it fires.
    pub fn token(&self) -> &CancellationToken {
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
    /// use axum::Extension;
    /// use lifecycle_http::ShutdownSignal;
    ///
    /// async fn ws(upgrade: WebSocketUpgrade, Extension(shutdown): Extension<ShutdownSignal>) -> Response {
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
