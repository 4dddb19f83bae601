//! gRPC (feature `grpc`): tonic services served by an [`HttpServer`](crate::HttpServer), drained
//! as any HTTP/2 traffic, with the standard health service following the lifecycle.
//!
//! tonic 0.14 services are tower services on HTTP requests, and `tonic::service::Routes` is an
//! axum router: the server serves them ([`IntoRouter`](crate::IntoRouter)) on its own
//! connections, so gRPC gets what HTTP gets. From the start of the drain each connection is
//! told to go away (the HTTP/2 GOAWAY), so clients open their next calls elsewhere, while the
//! calls already made complete, unary and streaming alike; [`GrpcHealthService`] says
//! `NOT_SERVING` from the trigger; at the stop turn a long stream ends with a status
//! ([`until_stopping`]) instead of being cut at the stop timeout.
//!
//! A handler finds the [`ShutdownSignal`](crate::ShutdownSignal), and the client's address
//! (`axum::extract::ConnectInfo<SocketAddr>`, with
//! [`HttpServer::connect_info`](crate::HttpServer::connect_info)), in
//! `tonic::Request::extensions`.
//!
//! # Examples
//!
//! ```no_run
//! use lifecycle_core::{Lifecycle, Registration, Report};
//! use lifecycle_http::grpc::GrpcHealthService;
//! use lifecycle_http::HttpServer;
//! use tonic::service::Routes;
//!
//! #[tokio::main]
//! async fn main() -> Report {
//!     let builder = Lifecycle::builder();
//!     // Add your own services with `.add_service(...)`; name them in the health service
//!     // with `GrpcHealthService::service_name`.
//!     let routes = Routes::new(GrpcHealthService::new(builder.handle()).into_server());
//!     builder
//!         .register(Registration::new("grpc", HttpServer::bind("127.0.0.1:50051".parse().unwrap(), routes)))
//!         .build()
//!         .expect("valid configuration")
//!         .run()
//!         .await
//! }
//! ```

mod health;
mod stream;

pub use health::GrpcHealthService;
pub use stream::until_stopping;

impl crate::IntoRouter for tonic::service::Routes {
    fn into_router(self) -> axum::Router {
        self.into_axum_router()
    }
}
