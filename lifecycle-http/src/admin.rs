//! The admin listener: `/metrics`, `/livez`, `/readyz` (with details), and on request
//! `POST /upgrade`, on an address of its own, registered to start first and stop last.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use lifecycle_core::{LifecycleHandle, Registration};
use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};

use crate::health::HealthRoutes;
use crate::server::HttpServer;

/// The bucket bounds, in seconds, [`install_prometheus`] gives histograms: from a fast stop
/// (5 ms) to Kubernetes' default grace period (30 s). A service that builds its own exporter
/// passes them to [`PrometheusBuilder::set_buckets`] to keep the lifecycle's histograms
/// readable.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Installs a Prometheus recorder as the process's `metrics` recorder, with histograms in
/// [`DURATION_BUCKETS`], and returns the handle [`AdminRoutes::prometheus`] renders from.
///
/// Call it first in `main`, before the lifecycle is built: metrics recorded before a recorder
/// is installed are lost, and an [`HttpServer`] takes its metric handles when it starts. A
/// service that configures its own exporter installs it itself and passes its handle.
///
/// # Errors
///
/// The exporter's [`BuildError`] when a recorder is already installed.
///
/// # Examples
///
/// ```
/// let prometheus = lifecycle_http::install_prometheus().expect("no recorder installed yet");
/// metrics::counter!("jobs_total").increment(1);
/// assert!(prometheus.render().contains("jobs_total 1"));
/// ```
pub fn install_prometheus() -> Result<PrometheusHandle, BuildError> {
    PrometheusBuilder::new()
        .set_buckets(&DURATION_BUCKETS)?
        .install_recorder()
}

/// The routes of an admin listener, for operators and Prometheus rather than users:
///
/// - `GET /metrics`: the Prometheus text exposition of every metric the process recorded
///   (the lifecycle's, the servers', the jobs' and the service's own), when a
///   [`prometheus`](Self::prometheus) handle is given; `404` otherwise;
/// - `GET /livez`, `GET /readyz` as [`HealthRoutes`] serves them, with the `?verbose`
///   details on;
/// - `POST /upgrade`, when [`upgrades`](Self::upgrades) turns it on: an in-place upgrade
///   (`lifecycle_core::Upgrade`), answered once it has ended, so whoever asked learns the
///   outcome: `200` when the new process took over, `409` when refused (another upgrade in
///   progress, or PID 1), `500` when it failed, `503` when no upgrader runs or the shutdown has
///   begun; the body is the attempt's report, in JSON.
///
/// [`registration`](Self::registration) serves them on an address of their own, started
/// first and stopped last ([`Registration::stops_last`]), so the whole shutdown can be scraped
/// and probed up to the last component's stop.
///
/// # Examples
///
/// ```no_run
/// use lifecycle_core::{Lifecycle, Report};
/// use lifecycle_http::{install_prometheus, AdminRoutes};
///
/// #[tokio::main]
/// async fn main() -> Report {
///     let prometheus = install_prometheus().expect("the only recorder");
///     let builder = Lifecycle::builder();
///     let admin = AdminRoutes::new(builder.handle()).prometheus(prometheus);
///     builder
///         .register(admin.registration("127.0.0.1:9090".parse().unwrap()))
///         // .register(the service's own components)
///         .build()
///         .expect("valid configuration")
///         .run()
///         .await
/// }
/// ```
#[derive(Debug, Clone)]
#[must_use = "call `router`, `server` or `registration` to serve the routes"]
pub struct AdminRoutes {
    handle: LifecycleHandle,
    health: HealthRoutes,
    prometheus: Option<PrometheusHandle>,
    upgrades: bool,
}

impl AdminRoutes {
    /// The name [`registration`](Self::registration) registers the server under.
    pub const NAME: &'static str = "admin";
    /// The admin server's stop timeout: it has nothing in progress but scrapes and probes.
    pub const STOP_TIMEOUT: Duration = Duration::from_millis(500);

    /// The admin routes of the lifecycle behind `handle`. Defaults: no `/metrics` (`404`)
    /// until [`prometheus`](Self::prometheus) gives a handle, no `POST /upgrade`
    /// ([`upgrades`](Self::upgrades) off), `/readyz?verbose` details on.
    pub fn new(handle: LifecycleHandle) -> Self {
        AdminRoutes {
            health: HealthRoutes::new(handle.clone()).verbose(true),
            handle,
            prometheus: None,
            upgrades: false,
        }
    }

    /// Serves `/metrics` from `handle` (from [`install_prometheus`], or the service's own
    /// Prometheus recorder).
    pub fn prometheus(mut self, handle: PrometheusHandle) -> Self {
        self.prometheus = Some(handle);
        self
    }

    /// Serves `POST /upgrade` (default off): anyone who reaches the admin address can then
    /// restart the service in place.
    pub fn upgrades(mut self, enabled: bool) -> Self {
        self.upgrades = enabled;
        self
    }

    /// The routes, to serve or merge into a router.
    pub fn router(self) -> Router {
        let metrics = Router::new()
            .route("/metrics", get(render))
            .with_state(self.prometheus);
        let mut router = self.health.router().merge(metrics);
        if self.upgrades {
            let upgrade = Router::new()
                .route("/upgrade", post(upgrade))
                .with_state(self.handle);
            router = router.merge(upgrade);
        }
        router
    }

    /// An [`HttpServer`] serving the routes on `addr`.
    pub fn server(self, addr: SocketAddr) -> HttpServer {
        HttpServer::bind(addr, self.router())
    }

    /// The server on `addr`, registered as [`NAME`](Self::NAME) with
    /// [`stops_last`](Registration::stops_last) and a stop timeout of
    /// [`STOP_TIMEOUT`](Self::STOP_TIMEOUT); its health does not count for readiness (the
    /// service can serve without its admin port).
    pub fn registration(self, addr: SocketAddr) -> Registration {
        Self::registration_of(self.server(addr))
    }

    /// Registers `server` (made by [`server`](Self::server), kept to read its
    /// [`local_addr`](HttpServer::local_addr) say) as [`registration`](Self::registration)
    /// does.
    pub fn registration_of(server: HttpServer) -> Registration {
        Registration::new(Self::NAME, server)
            .stops_last()
            .stop_timeout(Self::STOP_TIMEOUT)
            .exclude_from_readiness()
    }
}

async fn render(State(prometheus): State<Option<PrometheusHandle>>) -> Response {
    let Some(prometheus) = prometheus else {
        return (StatusCode::NOT_FOUND, "no metrics recorder\n").into_response();
    };
    // The handle does the recorder's upkeep (draining histograms) only when asked.
    prometheus.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        prometheus.render(),
    )
        .into_response()
}

async fn upgrade(State(handle): State<LifecycleHandle>) -> Response {
    let Some(report) = handle.upgrade_and_wait().await else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no in-place upgrade: none configured, or the shutdown has begun\n",
        )
            .into_response();
    };
    let status = match (report.succeeded, report.refused) {
        (true, _) => StatusCode::OK,
        (false, true) => StatusCode::CONFLICT,
        (false, false) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let body = serde_json::to_string(&report).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
