//! The service's own endpoints.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{FromRef, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures::stream::{self, Stream, StreamExt};
use lifecycle_core::BoxError;
use lifecycle_db::JobState;
use lifecycle_http::ShutdownSignal;
use serde::Deserialize;
use sqlx::AnyPool;

use crate::events::{Broker, Events, PublishError};
use crate::jobs::{Fail, Jobs};
use crate::tenants::{self, Tenants};

/// What the handlers share.
#[derive(Debug, Clone, FromRef)]
pub(crate) struct AppState {
    pub(crate) pool: AnyPool,
    pub(crate) jobs: Jobs,
    pub(crate) events: Events,
    pub(crate) tenants: Tenants,
}

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/work", get(work))
        .route("/sse", get(sse))
        .route("/jobs", post(enqueue))
        .route("/jobs/{id}", get(job_state))
        .route("/events", post(publish_event))
        .route("/events/{id}", get(event_state))
        .route("/tenants/{name}", put(tenants::put).delete(tenants::delete))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
struct NewJob {
    ms: u64,
    /// `"error"` or `"panic"`: the job's work fails that way every time it runs.
    fail: Option<Fail>,
}

/// `POST /jobs` with `{"ms": N}`: queues a job that takes N ms; answers `{"id": ...}`. With
/// `"fail": "error"` or `"fail": "panic"`, its work fails every time, and the job ends `dead`
/// after `--max-deliveries` attempts.
async fn enqueue(State(jobs): State<Jobs>, Json(job): Json<NewJob>) -> Response {
    match jobs.enqueue(job.ms, job.fail).await {
        Ok(id) => (StatusCode::CREATED, Json(serde_json::json!({ "id": id }))).into_response(),
        Err(error) => queue_error(error),
    }
}

/// `GET /jobs/{id}`: `{"id": ..., "state": "queued" | "running" | "done" | "dead"}`; `dead`:
/// it failed as many times as allowed (the queue's `failed`), and is set aside.
async fn job_state(State(jobs): State<Jobs>, Path(id): Path<i64>) -> Response {
    match jobs.state(id).await {
        Ok(Some(state)) => {
            let state = match state {
                JobState::Failed => "dead",
                state => state.as_str(),
            };
            Json(serde_json::json!({ "id": id, "state": state })).into_response()
        }
        Ok(None) => (StatusCode::NOT_FOUND, "no such job\n").into_response(),
        Err(error) => queue_error(error),
    }
}

#[derive(Debug, Deserialize)]
struct NewEvent {
    ms: u64,
    /// `"error"` or `"panic"`: the event's work fails that way every time it runs.
    fail: Option<Fail>,
    /// `"amqp"` or `"nats"`; the first broker the service uses when absent.
    via: Option<Broker>,
}

/// `POST /events` with `{"ms": N}`: publishes an event whose work takes N ms; answers
/// `{"id": ...}` once the broker has confirmed it. With `"fail": "error"` or `"fail": "panic"`,
/// its work fails every time, and the event ends `dead` after `--max-deliveries` deliveries.
async fn publish_event(State(events): State<Events>, Json(event): Json<NewEvent>) -> Response {
    match events.publish(event.ms, event.fail, event.via).await {
        Ok(id) => (StatusCode::CREATED, Json(serde_json::json!({ "id": id }))).into_response(),
        Err(PublishError::NoBroker(_)) => (
            StatusCode::NOT_FOUND,
            "no broker for events: start the service with --amqp-url or --nats-url\n",
        )
            .into_response(),
        Err(PublishError::Database(error)) => database_error(error),
        // The publisher stops after the server: this is rare, and safe to retry elsewhere.
        Err(PublishError::Broker(lifecycle_mq::MqError::NotRunning { .. })) => shutting_down(),
        Err(PublishError::Broker(error)) => {
            tracing::error!(%error, "publish failed");
            (
                StatusCode::BAD_GATEWAY,
                "the broker did not take the event\n",
            )
                .into_response()
        }
    }
}

/// `GET /events/{id}`: `{"id": ..., "state": "queued" | "running" | "done" | "dead" |
/// "failed"}` (`failed`: never published).
async fn event_state(State(events): State<Events>, Path(id): Path<i64>) -> Response {
    match events.store.state(id).await {
        Ok(Some(state)) => Json(serde_json::json!({ "id": id, "state": state })).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no such event\n").into_response(),
        Err(error) => database_error(error),
    }
}

/// The answer to a failed call to the job queue.
fn queue_error(error: BoxError) -> Response {
    match error.downcast::<sqlx::Error>() {
        Ok(error) => database_error(*error),
        Err(error) => {
            tracing::error!(%error, "job queue call failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "job queue error\n").into_response()
        }
    }
}

/// The answer to a failed database call.
fn database_error(error: sqlx::Error) -> Response {
    match error {
        // The pool closes only after the server has stopped, so this is rare; when it happens
        // the request is safe to retry elsewhere.
        sqlx::Error::PoolClosed => shutting_down(),
        error => {
            tracing::error!(%error, "database call failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "database error\n").into_response()
        }
    }
}

/// `503` with `Retry-After`: a request that came too late to an instance that is stopping.
pub(crate) fn shutting_down() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        "shutting down\n",
    )
        .into_response()
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
        Err(error) => database_error(error),
    }
}

/// `GET /sse`: a tick every second until the server's stop turn, then a last `shutdown` event
/// and a clean end of the stream.
async fn sse(shutdown: ShutdownSignal) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
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
