//! A shutdown drill for an HTTP service, as a library call for `cargo test` and as the
//! `lifecycle-drill` binary for a CI job.
//!
//! A [`Drill`] waits for the service's readiness path, loads it (keep-alive HTTP/1.1 clients,
//! HTTP/2 streams on one h2c connection, a server-sent-events client), tells it to stop, and
//! counts every request: succeeded, refused after the listener closed (a load balancer
//! retries those), or dropped (sent on an open connection and lost). The [`Summary`] passes
//! when nothing was dropped and the service stopped with exit code 0 within the budget.
//!
//! The service is either a command ([`Drill::run_command`]: started as a child process and
//! sent SIGTERM) or a service in the test's own process ([`Drill::run_in_process`]: the
//! caller says how to ask it to stop). Any service works, built on `lifecycle` or not.
//!
//! # Examples
//!
//! A test to copy into your service's `tests/`: the service as its `main` wires it, on a port
//! of its own, drilled in process. For the binary itself, give
//! [`run_command`](Drill::run_command) a `Command::new(env!("CARGO_BIN_EXE_my-service"))`.
//!
//! ```
//! use std::time::Duration;
//!
//! use axum::{routing::get, Router};
//! use lifecycle_core::{Lifecycle, Registration};
//! use lifecycle_drill::{Drill, ServiceExit};
//! use lifecycle_http::{health_routes, HttpServer};
//!
//! # /*
//! #[tokio::test(flavor = "multi_thread")]
//! # */
//! async fn drains_without_dropping_a_request() {
//!     let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
//!     let addr = listener.local_addr().unwrap();
//!     let builder = Lifecycle::builder().drain_delay(Duration::from_millis(200));
//!     let handle = builder.handle();
//!     let work = get(|| async {
//!         tokio::time::sleep(Duration::from_millis(20)).await;
//!         "done"
//!     });
//!     let router = Router::new()
//!         .route("/work", work)
//!         .merge(health_routes(builder.handle()));
//!     let lifecycle = builder
//!         .register(Registration::new("http", HttpServer::from_listener(listener, router)))
//!         .build()
//!         .unwrap();
//!     let service = tokio::spawn(lifecycle.run());
//!
//!     let summary = Drill::new()
//!         .addr(addr)
//!         .path("/work")
//!         .clients(4)
//!         .no_sse()
//!         .signal_after(Duration::from_millis(300))
//!         .budget(Duration::from_secs(5))
//!         .run_in_process(move || async move {
//!             // What SIGTERM would do; the future ends when the service has stopped.
//!             handle.shutdown("drill");
//!             let report = service.await.unwrap();
//!             ServiceExit::new(report.exit_code()).report_json(report.to_json())
//!         })
//!         .await
//!         .unwrap();
//!     summary.assert_passed();
//!     assert!(summary.succeeded > 0);
//! }
//! # fn main() {
//! #     tokio::runtime::Builder::new_multi_thread()
//! #         .enable_all()
//! #         .build()
//! #         .unwrap()
//! #         .block_on(drains_without_dropping_a_request());
//! # }
//! ```

mod counters;
mod drill;
mod error;
mod exit;
mod grpc;
mod load;
mod signal;
mod summary;
mod transport;

pub use drill::Drill;
pub use error::DrillError;
pub use exit::ServiceExit;
pub use summary::Summary;
