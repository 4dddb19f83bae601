//! `RequestService`, the per-request layer every request goes through before the user's router:
//! it counts the request as in progress until its response body is taken (`TrackedBody`),
//! asks HTTP/1 clients to close once the shutdown has begun (`Connection: close`, never on an
//! upgrade), answers 408 for a request whose body timed out, and hands a large HTTP/2 body to
//! hyper in pieces.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};
use axum::routing::future::RouteFuture;
use axum::Router;
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::Service;
use tower::Service as _;

use crate::activity::{Activity, InProgress};
use crate::body_timeout::TimedBody;
use crate::serving::Serving;

/// The service a connection runs: the user's router behind this per-request layer, a hyper
/// service. Not a tower service behind `hyper_util`'s `TowerToHyperService`, as `axum::serve`
/// and tonic's server run theirs: the adapter clones the whole service for each request and
/// drives it through a `Oneshot`, about 100 instructions per request (BENCHMARKS section 9);
/// here a request clones the router only (one reference count), which axum's `Service` takes
/// by `&mut`.
#[derive(Debug)]
pub(crate) struct RequestService {
    router: Router,
    /// The client's address, for axum's `ConnectInfo<SocketAddr>` (none over a Unix socket).
    peer: Option<SocketAddr>,
    /// The connection's activity: a request is in progress from its dispatch to the end of its
    /// response body.
    activity: Arc<Activity>,
}

impl RequestService {
    /// The service of one run of the server; `activity` is the template each connection's
    /// activity is made from.
    pub(crate) fn new(router: Router, activity: Arc<Activity>) -> Self {
        RequestService {
            router,
            peer: None,
            activity,
        }
    }

    /// The same service for a new connection from `peer`, with an activity of its own.
    pub(crate) fn for_connection(&self, peer: Option<SocketAddr>) -> Self {
        RequestService {
            router: self.router.clone(),
            peer,
            activity: self.activity.for_connection(),
        }
    }

    /// This connection's activity.
    pub(crate) fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }
}

impl Service<Request<Incoming>> for RequestService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = ResponseFuture<RouteFuture<Infallible>>;

    #[inline]
    fn call(&self, request: Request<Incoming>) -> Self::Future {
        // HTTP/1 clients are asked to close during the drain, except on an upgrade: a
        // `CONNECT` tunnel, or a 101 (checked on the response).
        let http1 = request.version() < Version::HTTP_2 && request.method() != Method::CONNECT;
        Serving::dispatching(&request);
        // A request with no body (most) gets axum's empty body, which boxes nothing; a body is
        // boxed once, with its read timeout, and the router takes it as it is. (`map`, not
        // `into_parts` and `from_parts`: the request is moved once, not twice.)
        let mut body_timed_out = None;
        let mut request = request.map(|body| {
            if body.is_end_stream() {
                return Body::empty();
            }
            let (body, timed_out) = TimedBody::new(body, self.activity.body_read_timeout());
            body_timed_out = timed_out;
            Body::new(body)
        });
        if let Some(peer) = self.peer {
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        // A router is always ready (its `poll_ready` returns `Ready` at once), so it is called
        // without it, as `axum::serve` effectively does.
        let in_flight = Some(self.activity.begin());
        ResponseFuture {
            response: self.router.clone().call(request),
            in_flight,
            http1,
            body_timed_out,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`RequestService`]; written out rather than boxed, as it runs
    /// per request.
    pub(crate) struct ResponseFuture<F> {
        #[pin]
        response: F,
        in_flight: Option<InProgress>,
        // Whether to ask the client to close once the drain has begun (HTTP/1, no CONNECT).
        http1: bool,
        // Set if the request body timed out.
        body_timed_out: Option<Arc<AtomicBool>>,
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<TrackedBody>, Infallible>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Poll::Ready(Ok(mut response)) = this.response.poll(cx) else {
            if let Some(in_flight) = this.in_flight {
                in_flight.waits();
            }
            return Poll::Pending;
        };
        let timed_out = this
            .body_timed_out
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::Acquire));
        if timed_out && response.status().is_client_error() {
            // The handler gave up on the body it was reading (axum's extractors answer 400).
            *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
        }
        // During the drain delay the server still answers, but keep-alive clients should
        // reconnect through the load balancer, which no longer routes here. hyper closes the
        // connection after a response that carries this header. Not on a 101: the connection
        // is handed over, and its `Connection: upgrade` is what the client checks. After a
        // body that timed out, the rest of it cannot be told from the next request.
        let in_flight = this.in_flight.take().expect("polled after completion");
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            in_flight.activity().upgraded();
        }
        if *this.http1
            && response.status() != StatusCode::SWITCHING_PROTOCOLS
            && (timed_out || in_flight.activity().is_draining())
        {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        // The request stays in progress until hyper has taken the whole body (and the
        // connection's socket wrapper keeps it busy until the bytes are written).
        Poll::Ready(Ok(response.map(|inner| TrackedBody { inner, in_flight })))
    }
}

/// A response body that keeps its request counted as in progress until it is dropped.
#[derive(Debug)]
pub(crate) struct TrackedBody {
    inner: Body,
    in_flight: InProgress,
}

/// The most data an HTTP/2 response hands hyper at once: hyper takes the next piece only once
/// flow control lets the last one out, so the request stays in progress while a client takes
/// its body slowly, instead of ending as soon as hyper holds all of it (which a connection
/// told to go away would then see as nothing left to deliver).
const H2_PIECE: usize = 16 * 1024;

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    #[inline]
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if frame.is_pending() {
            // A stream that waits for its next piece (SSE, a gRPC stream, a slow download).
            self.in_flight.waits();
            return Poll::Pending;
        }
        if !self.in_flight.activity().busy().is_http2() {
            return frame;
        }
        let Poll::Ready(Some(Ok(frame))) = frame else {
            return frame;
        };
        let frame = match frame.into_data() {
            Ok(mut data) if data.len() > H2_PIECE => {
                // Rare (large bodies over HTTP/2): the rest is served from a wrapper.
                let piece = data.split_to(H2_PIECE);
                let rest = std::mem::take(&mut self.inner);
                self.inner = Body::new(Pieces { data, rest });
                Frame::data(piece)
            }
            Ok(data) => Frame::data(data),
            Err(frame) => frame,
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The rest of a large HTTP/2 response body, in pieces of at most [`H2_PIECE`]: what is left
/// of the piece being cut, then the body's next frames.
struct Pieces {
    data: Bytes,
    rest: Body,
}

impl http_body::Body for Pieces {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if self.data.is_empty() {
            return Pin::new(&mut self.rest).poll_frame(cx);
        }
        let len = self.data.len().min(H2_PIECE);
        Poll::Ready(Some(Ok(Frame::data(self.data.split_to(len)))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.rest.size_hint();
        let data = self.data.len() as u64;
        hint.set_lower(hint.lower() + data);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + data);
        }
        hint
    }
}
