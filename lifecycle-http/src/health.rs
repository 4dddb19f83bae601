//! `/livez` and `/readyz`, fed by the lifecycle's phase and its components' health.

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use lifecycle_core::{ComponentStatus, Health, LifecycleHandle};

/// How long `/readyz` waits for the components' health checks before it reads them as
/// unhealthy: a probe must answer well inside its own timeout.
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// Routes for the health endpoints of the lifecycle behind `handle`, without details; see
/// [`HealthRoutes`].
///
/// # Examples
///
/// ```
/// use axum::Router;
/// use lifecycle_core::Lifecycle;
/// use lifecycle_http::health_routes;
///
/// let builder = Lifecycle::builder();
/// let router: Router = Router::new().merge(health_routes(builder.handle()));
/// ```
pub fn health_routes(handle: LifecycleHandle) -> Router {
    HealthRoutes::new(handle).router()
}

/// The health endpoints of the lifecycle behind a handle:
///
/// - `GET /livez`: `200 live` until the lifecycle has stopped, draining included, so a
///   shutting-down instance is not restarted by its liveness probe;
/// - `GET /readyz`: `200 ready` only when every component has started and reports healthy;
///   `503` with the phase (`starting`, `draining`, ...) otherwise, from the first moment of the
///   shutdown.
///
/// With [`verbose`](Self::verbose) on, `GET /readyz?verbose` answers JSON with each
/// component's state, health and [`describe`](lifecycle_core::Component::describe) (an HTTP
/// server's counters, say). It is off by default, because those details (component names,
/// error messages, load) are for operators, not for whoever can reach a public port: then
/// `?verbose` answers like plain `/readyz`. Turn it on for routes served on an internal or
/// admin address.
///
/// Merge the routes into the main router, or serve them on an admin address with a second
/// [`HttpServer`](crate::HttpServer).
///
/// # Examples
///
/// ```
/// use axum::Router;
/// use lifecycle_core::Lifecycle;
/// use lifecycle_http::HealthRoutes;
///
/// let builder = Lifecycle::builder();
/// // On an admin port, with details.
/// let admin: Router = HealthRoutes::new(builder.handle()).verbose(true).router();
/// ```
#[derive(Debug, Clone)]
#[must_use = "call `router` to get the routes"]
pub struct HealthRoutes {
    handle: LifecycleHandle,
    verbose: bool,
}

impl HealthRoutes {
    /// The endpoints of the lifecycle behind `handle`, without details (the one default:
    /// [`verbose`](Self::verbose) off).
    pub fn new(handle: LifecycleHandle) -> Self {
        HealthRoutes {
            handle,
            verbose: false,
        }
    }

    /// Whether `GET /readyz?verbose` shows each component's details (default `false`).
    pub fn verbose(mut self, verbose: bool) -> Self {
        self.verbose = verbose;
        self
    }

    /// The routes, to merge into a router.
    pub fn router(self) -> Router {
        Router::new()
            .route("/livez", get(livez))
            .route("/readyz", get(readyz))
            .with_state(self)
    }
}

impl From<HealthRoutes> for Router {
    fn from(routes: HealthRoutes) -> Self {
        routes.router()
    }
}

async fn livez(State(routes): State<HealthRoutes>) -> (StatusCode, &'static str) {
    if routes.handle.phase().is_live() {
        (StatusCode::OK, "live\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "stopped\n")
    }
}

async fn readyz(State(routes): State<HealthRoutes>, RawQuery(query): RawQuery) -> Response {
    let handle = &routes.handle;
    let verbose = routes.verbose
        && query.is_some_and(|q| {
            q.split('&')
                .any(|pair| pair.split('=').next() == Some("verbose"))
        });
    let phase = handle.phase();
    if handle.handed_over() {
        // The new process of an upgrade serves on this address now, and is ready.
        return (StatusCode::OK, "ready (handed over)\n").into_response();
    }
    if !verbose {
        // Not ready answers at once, without health checks: this is the hot path of the
        // shutdown, when load balancers poll hardest.
        let ready = phase.is_ready()
            && tokio::time::timeout(HEALTH_CHECK_TIMEOUT, handle.check_health())
                .await
                .is_ok_and(|all| all.iter().all(ComponentStatus::allows_readiness));
        return if ready {
            (StatusCode::OK, "ready\n").into_response()
        } else if phase.is_ready() {
            (StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n").into_response()
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{}\n", phase.as_str()),
            )
                .into_response()
        };
    }

    let statuses = tokio::time::timeout(HEALTH_CHECK_TIMEOUT, handle.check_health()).await;
    // From the trigger on, what each component still waits for: what holds the stop.
    let held_by: std::collections::HashMap<String, Vec<String>> = if phase.is_ready() {
        Default::default()
    } else {
        handle.held_by().into_iter().collect()
    };
    let components: Vec<serde_json::Value> = match &statuses {
        Ok(statuses) => statuses
            .iter()
            .map(|c| {
                let reason = match &c.health {
                    Health::Unhealthy { reason } => Some(reason.as_str()),
                    _ => None,
                };
                let mut component = serde_json::json!({
                    "name": c.name,
                    "state": c.state.as_str(),
                    "healthy": c.health.is_healthy(),
                    "counts_for_readiness": c.counts_for_readiness,
                    "reason": reason,
                    "detail": c.detail,
                });
                if let Some(held) = held_by.get(&c.name) {
                    component["held_by"] = serde_json::json!(held);
                }
                component
            })
            .collect(),
        Err(_) => handle
            .states()
            .into_iter()
            .map(|(name, state)| {
                serde_json::json!({
                    "name": name, "state": state.as_str(), "healthy": false,
                    "reason": "health checks timed out",
                })
            })
            .collect(),
    };
    let ready = phase.is_ready()
        && statuses.is_ok_and(|all| all.iter().all(ComponentStatus::allows_readiness));
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body =
        serde_json::json!({ "ready": ready, "phase": phase.as_str(), "components": components });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
