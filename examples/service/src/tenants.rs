//! Tenants: a component per tenant, added and removed while the service runs.
//!
//! `PUT /tenants/{name}` adds the component `tenant-{name}`, a worker that uses the database
//! (it depends on `db`: it starts after it and stops before it), and answers once it has
//! started; `DELETE /tenants/{name}` stops and removes it, and answers with its stop's
//! outcome. A tenant follows every rule a registered component does: it shows in
//! `/readyz?verbose`, the metrics and the report (a removed one too), and the shutdown stops it
//! before the database.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use lifecycle_core::{BuildError, ChangeError, LifecycleHandle, OnFailure, Registration, Worker};
use sqlx::AnyPool;

/// What the tenant endpoints need: the lifecycle to add components to, and the pool a
/// tenant's worker uses.
#[derive(Debug, Clone)]
pub(crate) struct Tenants {
    pub(crate) lifecycle: LifecycleHandle,
    pub(crate) pool: AnyPool,
}

/// How often a tenant's worker does its (here: trivial) unit of work.
const TICK: Duration = Duration::from_secs(1);

impl Tenants {
    /// The component of tenant `name`: one database round trip per tick, until its stop turn.
    fn registration(&self, name: &str) -> Registration {
        let pool = self.pool.clone();
        let worker = Worker::new(move |ctx| {
            let pool = pool.clone();
            async move {
                let mut tick = tokio::time::interval(TICK);
                while ctx.token().run_until_cancelled(tick.tick()).await.is_some() {
                    sqlx::query_scalar::<_, i32>("SELECT 1")
                        .fetch_one(&pool)
                        .await?;
                }
                Ok::<_, sqlx::Error>(())
            }
        });
        Registration::new(component(name), worker)
            .depends_on("db")
            .stop_timeout(Duration::from_secs(2))
            // A tenant that loses the database is started again, not the whole service.
            .on_failure(OnFailure::restart(5))
    }
}

fn component(name: &str) -> String {
    format!("tenant-{name}")
}

/// A tenant's name: 1 to 64 lower-case letters, digits, `-` or `_`.
fn valid(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// `PUT /tenants/{name}`: starts the tenant's component; `201` once it runs, `409` when it
/// already does, `503` once the shutdown has begun.
pub(crate) async fn put(State(tenants): State<Tenants>, Path(name): Path<String>) -> Response {
    if !valid(&name) {
        return (
            StatusCode::BAD_REQUEST,
            "a tenant's name is 1 to 64 of [a-z0-9_-]\n",
        )
            .into_response();
    }
    match tenants.lifecycle.add(tenants.registration(&name)).await {
        Ok(()) => (
            StatusCode::CREATED,
            Json(serde_json::json!({ "tenant": name, "component": component(&name) })),
        )
            .into_response(),
        Err(ChangeError::Invalid(BuildError::DuplicateName { .. })) => {
            (StatusCode::CONFLICT, "tenant already running\n").into_response()
        }
        Err(error) => change_error(error),
    }
}

/// `DELETE /tenants/{name}`: stops and removes the tenant's component; `200` with the stop's
/// outcome, `404` for a tenant that is not running, `503` once the shutdown has begun.
pub(crate) async fn delete(State(tenants): State<Tenants>, Path(name): Path<String>) -> Response {
    match tenants.lifecycle.remove(&component(&name)).await {
        Ok(outcome) => {
            Json(serde_json::json!({ "tenant": name, "outcome": outcome })).into_response()
        }
        Err(ChangeError::NotFound { .. }) => {
            (StatusCode::NOT_FOUND, "no such tenant\n").into_response()
        }
        Err(error) => change_error(error),
    }
}

fn change_error(error: ChangeError) -> Response {
    match error {
        // The shutdown stops what runs; the request is safe to retry on another instance.
        ChangeError::ShuttingDown { .. } | ChangeError::DependencyNotRunning { .. } => {
            crate::routes::shutting_down()
        }
        error => {
            tracing::error!(%error, "tenant change failed");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(valid("acme") && valid("a-1_b"));
        assert!(!valid("") && !valid("Acme") && !valid("a/b") && !valid(&"a".repeat(65)));
    }
}
