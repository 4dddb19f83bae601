//! The baselines the benchmarks compare lifecycle with (`scripts/bench-idle-shutdown.sh`): the
//! example service's HTTP endpoints (`/livez`, `/readyz`, `/work?ms=N`, without the database)
//! on plain `axum::serve` with the usual signal handler, and on tokio-graceful-shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::Query;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

/// The endpoints, answered the way a service without a lifecycle answers them.
pub fn router() -> Router {
    Router::new()
        .route("/livez", get(|| async { "live\n" }))
        .route("/readyz", get(|| async { "ready\n" }))
        .route("/work", get(work))
}

#[derive(Debug, Deserialize)]
struct WorkParams {
    #[serde(default)]
    ms: u64,
}

async fn work(Query(params): Query<WorkParams>) -> &'static str {
    tokio::time::sleep(Duration::from_millis(params.ms)).await;
    "{\"ok\":true}\n"
}

/// The address to listen on: the first argument, or 127.0.0.1:8080.
pub fn listen_addr() -> SocketAddr {
    std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into())
        .parse()
        .expect("an address")
}
