//! An HTTP server component for [`lifecycle_core`] that drains without dropping a request, and
//! the `/livez` and `/readyz` endpoints that tell load balancers and Kubernetes when to send
//! traffic.
//!
//! [`HttpServer`] serves an axum router over HTTP/1.1 and HTTP/2 on one port. When the service
//! shuts down, readiness goes off first and the server keeps serving through the drain delay,
//! asking clients to go elsewhere from its start (HTTP/1 `Connection: close`, HTTP/2 GOAWAY);
//! at its stop turn it stops accepting, closes idle connections, lets requests in progress
//! finish (a request is in progress until its response's last byte is written to the socket),
//! tells long-lived handlers through [`ShutdownSignal`], and cuts off what is left at its stop
//! timeout. Because the lifecycle stops a component only after everything that depends on it,
//! registering the server as depending on the database pool means no request loses its pool.
//!
//! The server records its metrics (requests, connections open, closed by the drain, cut off at
//! the stop timeout; listed in `lifecycle_core`'s "Metrics" table) through the `metrics`
//! facade, with handles taken at its start. [`AdminRoutes`] serves them in the Prometheus
//! text format at `/metrics`, with `/livez` and `/readyz?verbose`, on an admin address that
//! starts first and stops last.
//!
//! Requests are work the service takes, as jobs and messages are, and the server's counts
//! follow the outcomes every work source of the workspace counts (`lifecycle-mq`'s "Counts and
//! metrics" table), as far as HTTP has them: *taken* is `http_requests_total`
//! ([`HttpStats::requests`]); *done* is a response whose last byte reached the socket (what
//! leaves `http_requests_in_progress`); *cut* is a connection cut off at the stop timeout with
//! a request still in progress (`http_connections_force_closed_total`,
//! [`HttpStats::force_closed`]). *Handed back* has no per-request count: a request that never
//! began is a connection the drain closed before the client sent it
//! (`http_connections_closed_total{reason="drain"}`), which the client sends again elsewhere;
//! *failed* and *dead* are the handler's own answer (a status code), not the server's.
//!
//! # Examples
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use lifecycle_core::{Lifecycle, Registration, Report};
//! use lifecycle_http::{health_routes, HttpServer};
//! use std::time::Duration;
//!
//! #[tokio::main]
//! async fn main() -> Report {
//!     let builder = Lifecycle::builder().drain_delay(Duration::from_secs(5));
//!     let router = Router::new()
//!         .route("/", get(|| async { "hello" }))
//!         .merge(health_routes(builder.handle()));
//!     builder
//!         .register(Registration::new("http", HttpServer::bind(([127, 0, 0, 1], 8080).into(), router)))
//!         .build()
//!         .expect("valid configuration")
//!         .run()
//!         .await
//! }
//! ```

mod accept;
mod activity;
mod admin;
mod body_timeout;
mod connection;
mod error;
#[cfg(feature = "grpc")]
pub mod grpc;
mod health;
mod io;
mod listener;
mod metrics;
#[cfg(feature = "tls")]
mod reload;
mod request_service;
mod requests;
mod server;
mod service;
mod serving;
mod shutdown_flags;
mod shutdown_signal;
mod stats;
mod stream;
#[cfg(feature = "tls")]
mod tls;
mod watchers;

pub use admin::{install_prometheus, AdminRoutes, DURATION_BUCKETS};
pub use error::HttpError;
pub use health::{health_routes, HealthRoutes};
/// The Prometheus exporter [`AdminRoutes`] renders `/metrics` with.
pub use metrics_exporter_prometheus as prometheus;
pub use server::{HttpServer, LocalAddr};
pub use service::{AnyService, HyperService, IntoRouter};
pub use shutdown_signal::ShutdownSignal;
pub use stats::HttpStats;
#[cfg(feature = "tls")]
pub use tls::TlsConfig;
