//! The per-request layer: counts requests, hands handlers their [`ShutdownSignal`], and asks
//! HTTP/1 clients to close once the shutdown has begun.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};
use std::future::Future;

use http_body::{Frame, SizeHint};
use tokio_util::sync::CancellationToken;
use tower::Service;

use crate::activity::{Activity, InProgress};
use crate::shutdown_signal::ShutdownSignal;
use crate::stats::{HttpStats, RequestGuard};

/// Wraps the user's service for one connection.
#[derive(Debug, Clone)]
pub(crate) struct Drain<S> {
    pub(crate) inner: S,
    pub(crate) signal: ShutdownSignal,
    pub(crate) stats: HttpStats,
    /// The connection's activity: a request is in progress from its dispatch to the end of its
    /// response body.
    pub(crate) activity: Arc<Activity>,
}

impl<S: Clone> Drain<S> {
    /// The same service for a new connection, with an activity of its own.
    pub(crate) fn for_connection(&self) -> Self {
        Drain {
            activity: Activity::new(),
            ..self.clone()
        }
    }
}

impl<S, B> Service<Request<B>> for Drain<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = DrainFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // HTTP/1 clients are asked to close during the drain, except on an upgrade: a
        // `CONNECT` tunnel, or a 101 (checked on the response).
        let http1 = request.version() < Version::HTTP_2 && request.method() != Method::CONNECT;
        request.extensions_mut().insert(self.signal.clone());
        let in_flight = Active {
            _stats: self.stats.request(),
            _connection: self.activity.begin(),
        };
        DrainFuture {
            response: self.inner.call(request),
            in_flight: Some(in_flight),
            close: http1.then(|| self.signal.requested().clone()),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Drain`]; written out rather than boxed, as it runs per request.
    pub(crate) struct DrainFuture<F> {
        #[pin]
        response: F,
        in_flight: Option<Active>,
        // For HTTP/1: the shutdown token, to ask the client to close once it is cancelled.
        close: Option<CancellationToken>,
    }
}

impl<F> Future for DrainFuture<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<TrackedBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Poll::Ready(Ok(mut response)) = this.response.poll(cx) else {
            return Poll::Pending;
        };
        // During the drain delay the server still answers, but keep-alive clients should
        // reconnect through the load balancer, which no longer routes here. hyper closes the
        // connection after a response that carries this header. Not on a 101: the connection
        // is handed over, and its `Connection: upgrade` is what the client checks.
        if response.status() != StatusCode::SWITCHING_PROTOCOLS
            && this
                .close
                .as_ref()
                .is_some_and(CancellationToken::is_cancelled)
        {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        // The request stays in progress until hyper has sent the whole body.
        let in_flight = this.in_flight.take().expect("polled after completion");
        Poll::Ready(Ok(response.map(|inner| TrackedBody {
            inner,
            _in_flight: in_flight,
        })))
    }
}

/// A request in progress, counted for the server and for its connection until dropped.
#[derive(Debug)]
struct Active {
    _stats: RequestGuard,
    _connection: InProgress,
}

/// A response body that keeps its request counted as in progress until it is dropped.
#[derive(Debug)]
pub(crate) struct TrackedBody {
    inner: Body,
    _in_flight: Active,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
