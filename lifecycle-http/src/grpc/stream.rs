//! `until_stopping`: a response stream that ends, with a status, at the server's stop turn.

use futures::{Stream, StreamExt};
use tonic::Status;

use crate::ShutdownSignal;

/// `stream` until the server's stop turn comes, then `Status::unavailable` (which clients
/// retry, on another instance): the call ends with a proper gRPC status rather than being cut
/// off at the stop timeout. Meant for server-streaming and bidirectional responses; get the
/// signal from the request's extensions.
///
/// # Examples
///
/// ```
/// use futures::Stream;
/// use lifecycle_http::grpc::until_stopping;
/// use lifecycle_http::ShutdownSignal;
/// use std::pin::Pin;
/// use std::time::Duration;
/// use tonic::{Request, Response, Status};
///
/// type Ticks = Pin<Box<dyn Stream<Item = Result<u64, Status>> + Send>>;
///
/// async fn ticks(_: Request<()>) -> Result<Response<Ticks>, Status> {
///     let shutdown = ShutdownSignal::current()
///         .ok_or_else(|| Status::internal("not served by lifecycle-http"))?;
///     let interval = tokio::time::interval(Duration::from_secs(1));
///     let ticks = tokio_stream::wrappers::IntervalStream::new(interval)
///         .enumerate()
///         .map(|(n, _)| Ok(n as u64));
///     Ok(Response::new(Box::pin(until_stopping(&shutdown, ticks))))
/// }
/// # use futures::StreamExt;
/// ```
pub fn until_stopping<S, T>(
    signal: &ShutdownSignal,
    stream: S,
) -> impl Stream<Item = Result<T, Status>> + Send + 'static
where
    S: Stream<Item = Result<T, Status>> + Send + 'static,
    T: Send + 'static,
{
    let token = signal.server_token().clone();
    let stopped = token.clone();
    stream
        .map(Some)
        .take_until(token.cancelled_owned())
        .chain(futures::stream::once(async move {
            if stopped.is_cancelled() {
                Some(Err(Status::unavailable("the server is shutting down")))
            } else {
                None
            }
        }))
        .filter_map(futures::future::ready)
}
