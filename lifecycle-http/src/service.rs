//! What an [`HttpServer`](crate::HttpServer) can serve: an axum [`Router`], or any tower or
//! hyper service, turned into a router once, when the server is made.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::error_handling::HandleError;
use axum::http::{Request, Response, StatusCode};
use axum::Router;
use lifecycle_core::BoxError;
use tower::Service;

/// Something an [`HttpServer`](crate::HttpServer) can serve: an axum [`Router`] (the easy
/// path, served as it is), any tower service wrapped in [`AnyService`], a hyper service
/// wrapped in [`HyperService`], and, with the `grpc` feature, `tonic::service::Routes`.
///
/// Every one of them is served through the same connections, so with the same drain, limits,
/// [`ShutdownSignal`](crate::ShutdownSignal) and [`HttpStats`](crate::HttpStats).
pub trait IntoRouter {
    /// The router the server calls for each request.
    fn into_router(self) -> Router;
}

impl IntoRouter for Router {
    fn into_router(self) -> Router {
        self
    }
}

/// Any tower [`Service`] on HTTP requests, to be served by an
/// [`HttpServer`](crate::HttpServer): a `tower::Layer` stack, a tonic service, a service of
/// another framework.
///
/// The service gets every request (as axum's `Router::fallback_service` would give it), with
/// an axum [`Body`]. A response body may be of any type that yields [`Bytes`]. An error the
/// service returns is logged and answered `500 Internal Server Error`; its `poll_ready` is
/// called before each request, on a clone, as axum does.
///
/// # Examples
///
/// A tower `Layer` stack around a service function:
///
/// ```
/// use axum::body::Body;
/// use axum::http::{HeaderValue, Request, Response};
/// use lifecycle_http::{AnyService, HttpServer};
/// use tower::ServiceBuilder;
///
/// let service = ServiceBuilder::new()
///     .map_response(|mut response: Response<Body>| {
///         response.headers_mut().insert("x-served-by", HeaderValue::from_static("tower"));
///         response
///     })
///     .service_fn(|_request: Request<Body>| async {
///         Ok::<_, std::io::Error>(Response::new(Body::from("hello")))
///     });
/// let server = HttpServer::bind("127.0.0.1:0".parse().unwrap(), AnyService::new(service));
/// ```
#[derive(Debug, Clone)]
pub struct AnyService<S>(S);

impl<S> AnyService<S> {
    /// Wraps `service`.
    pub fn new(service: S) -> Self {
        AnyService(service)
    }
}

impl<S, B> IntoRouter for AnyService<S>
where
    S: Service<Request<Body>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    fn into_router(self) -> Router {
        Router::new().fallback_service(HandleError::new(self.0, answer_error::<S::Error>))
    }
}

async fn answer_error<E: Into<BoxError> + Send>(error: E) -> StatusCode {
    let error = error.into();
    tracing::warn!(%error, "the service failed a request");
    StatusCode::INTERNAL_SERVER_ERROR
}

/// A hyper [`Service`](hyper::service::Service), to be served by an
/// [`HttpServer`](crate::HttpServer) as [`AnyService`] serves a tower one.
///
/// # Examples
///
/// ```
/// use axum::body::Body;
/// use axum::http::{Request, Response};
/// use hyper::service::service_fn;
/// use lifecycle_http::{HttpServer, HyperService};
///
/// let service = service_fn(|_request: Request<Body>| async {
///     Ok::<_, std::convert::Infallible>(Response::new(Body::from("hello")))
/// });
/// let server = HttpServer::bind("127.0.0.1:0".parse().unwrap(), HyperService::new(service));
/// ```
#[derive(Debug, Clone)]
pub struct HyperService<S>(S);

impl<S> HyperService<S> {
    /// Wraps `service`.
    pub fn new(service: S) -> Self {
        HyperService(service)
    }
}

impl<S, B> IntoRouter for HyperService<S>
where
    S: hyper::service::Service<Request<Body>, Response = Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    fn into_router(self) -> Router {
        AnyService(HyperAsTower(self.0)).into_router()
    }
}

/// A hyper service seen as a tower one: always ready, called by reference.
#[derive(Clone)]
struct HyperAsTower<S>(S);

impl<S> Service<Request<Body>> for HyperAsTower<S>
where
    S: hyper::service::Service<Request<Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        Box::pin(self.0.call(request))
    }
}
