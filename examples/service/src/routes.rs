//! The service's own endpoints.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use futures::stream::{self, Stream, StreamExt};
use lifecycle_http::ShutdownSignal;
use serde::Deserialize;
use sqlx::AnyPool;

pub(crate) fn router(pool: AnyPool) -> Router {
    Router::new()
        .route("/work", get(work))
        .route("/sse", get(sse))
        .with_state(pool)
}

#[derive(Debug, Deserialize)]
struct WorkParams {
    #[serde(default)]
    ms: u64,
}

/// `GET /work?ms=N`: one database round trip, then N ms of async wait.
async fn work(State(pool): State<AnyPool>, Query(params): Query<WorkParams>) -> Response {
    let one: Result<i32, sqlx::Error> = sqlx::query_scalar("SELECT 1").fetch_one(&pool).await;
    match one {
        Ok(_) => {
            tokio::time::sleep(Duration::from_millis(params.ms)).await;
            Json(serde_json::json!({ "ok": true, "ms": params.ms })).into_response()
        }
        // The pool closes only after the server has stopped, so this is rare; when it happens
        // the request is safe to retry elsewhere.
        Err(sqlx::Error::PoolClosed) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "shutting down\n",
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "database round trip failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "database error\n").into_response()
        }
    }
}

/// `GET /sse`: a tick every second until the server's stop turn, then a last `shutdown` event
/// and a clean end of the stream.
async fn sse(
    Extension(shutdown): Extension<ShutdownSignal>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let ticks = stream::unfold(0u64, |n| async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Some((
            Ok(Event::default().event("tick").data(n.to_string())),
            n + 1,
        ))
    })
    .take_until(shutdown.token().clone().cancelled_owned());
    let bye = stream::once(async { Ok(Event::default().event("shutdown").data("bye")) });
    Sse::new(ticks.chain(bye))
}
