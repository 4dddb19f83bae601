//! The service's gRPC side, on its HTTP port: the standard health service following the
//! lifecycle, and `example.v1.Example` (a unary `Work`, a server-streaming `Ticks`) for the
//! drill and the tests to load.

use std::pin::Pin;
use std::time::Duration;

use axum::Router;
use futures::{Stream, StreamExt};
use lifecycle_core::LifecycleHandle;
use lifecycle_http::grpc::{until_stopping, GrpcHealthService};
use lifecycle_http::ShutdownSignal;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

/// The messages and the generated server (see `build.rs`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub(crate) mod pb {
    include!("messages.rs");
    include!(concat!(env!("OUT_DIR"), "/server/example.v1.Example.rs"));
}

use pb::example_server::{Example, ExampleServer};
use pb::{Tick, TicksRequest, WorkReply, WorkRequest};

/// The gRPC routes, to merge into the HTTP router. Each service is routed by its own path
/// prefix (as `tonic::service::Routes` does, without its catch-all), so unknown HTTP paths
/// stay 404.
pub(crate) fn routes(handle: LifecycleHandle) -> Router {
    let health = GrpcHealthService::new(handle)
        .service::<ExampleServer<Service>>()
        .into_server();
    Router::new()
        .route_service(
            &path::<ExampleServer<Service>>(),
            ExampleServer::new(Service),
        )
        .route_service(&path_of(health_name()), health)
}

fn path<S: NamedService>() -> String {
    path_of(S::NAME)
}

fn path_of(name: &str) -> String {
    format!("/{name}/{{*method}}")
}

fn health_name() -> &'static str {
    <tonic_health::pb::health_server::HealthServer<GrpcHealthService> as NamedService>::NAME
}

/// `example.v1.Example`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Service;

type TickStream = Pin<Box<dyn Stream<Item = Result<Tick, Status>> + Send>>;

#[tonic::async_trait]
impl Example for Service {
    async fn work(&self, request: Request<WorkRequest>) -> Result<Response<WorkReply>, Status> {
        tokio::time::sleep(Duration::from_millis(request.get_ref().ms)).await;
        Ok(Response::new(WorkReply {
            answer: "done".into(),
        }))
    }

    type TicksStream = TickStream;

    async fn ticks(&self, request: Request<TicksRequest>) -> Result<Response<TickStream>, Status> {
        let shutdown = ShutdownSignal::current()
            .ok_or_else(|| Status::internal("not served by lifecycle-http"))?;
        let TicksRequest { count, interval_ms } = *request.get_ref();
        let interval = Duration::from_millis(interval_ms);
        let ticks = futures::stream::iter(0..count).then(move |n| async move {
            if n > 0 {
                tokio::time::sleep(interval).await;
            }
            Ok(Tick { n })
        });
        // At the server's stop turn the stream ends with UNAVAILABLE (clients retry it
        // elsewhere) instead of being cut off at the stop timeout.
        Ok(Response::new(Box::pin(until_stopping(&shutdown, ticks))))
    }
}
