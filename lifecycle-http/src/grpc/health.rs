//! `GrpcHealthService`: the standard gRPC health service (`grpc.health.v1.Health`), answered
//! from the lifecycle's phase.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use lifecycle_core::{LifecycleHandle, Phase};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{self, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::ShutdownSignal;

/// The standard gRPC health service (`grpc.health.v1.Health`, the one Kubernetes' gRPC probes
/// and gRPC load balancers ask) for a lifecycle, to serve as a tonic service; not to be
/// confused with [`lifecycle_core::Health`], the health a component reports. It answers
/// `SERVING` once every component has started, `NOT_SERVING` before, and from the moment the
/// shutdown is triggered (before the drain delay, as `/readyz`).
///
/// `Check` answers for the whole server (the empty service name) and for the services named
/// with [`service`](Self::service) or [`service_name`](Self::service_name); other names are
/// `NOT_FOUND`. `Watch` sends the status at once and again at each change, read from the
/// lifecycle as it happens (no polling), and ends with `UNAVAILABLE` at the server's stop
/// turn, so it does not hold the server's stop.
///
/// # Examples
///
/// ```
/// use lifecycle_core::Lifecycle;
/// use lifecycle_http::grpc::GrpcHealthService;
/// use tonic::service::Routes;
///
/// let builder = Lifecycle::builder();
/// let health = GrpcHealthService::new(builder.handle())
///     .service_name("example.Work")
///     .into_server();
/// let routes = Routes::new(health);
/// ```
#[derive(Debug, Clone)]
#[must_use = "call `into_server` and add it to the server's `Routes`"]
pub struct GrpcHealthService {
    handle: LifecycleHandle,
    services: Arc<HashSet<String>>,
}

impl GrpcHealthService {
    /// The health service of the lifecycle `handle` belongs to.
    pub fn new(handle: LifecycleHandle) -> Self {
        GrpcHealthService {
            handle,
            services: Arc::new(HashSet::from([String::new()])),
        }
    }

    /// Answers for the tonic service `S` too (its `NamedService::NAME`).
    pub fn service<S: NamedService>(self) -> Self {
        self.service_name(S::NAME)
    }

    /// Answers for the service named `name` too (`package.Service`).
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.services).insert(name.into());
        self
    }

    /// The tonic service, to add to the server's `Routes`.
    pub fn into_server(self) -> HealthServer<Self> {
        HealthServer::new(self)
    }

    fn status(&self) -> ServingStatus {
        serving_status(&self.handle)
    }
}

fn serving_status(handle: &LifecycleHandle) -> ServingStatus {
    // The shutdown token is cancelled at the trigger itself, before the phase moves on.
    // A hand-off's new process serves on the same address, and is ready.
    if handle.handed_over()
        || (handle.phase() == Phase::Ready && !handle.shutdown_token().is_cancelled())
    {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

/// One `Watch` call: what it watches, and what it sent last.
struct Watcher {
    known: bool,
    handle: LifecycleHandle,
    phases: watch::Receiver<Phase>,
    shutdown: CancellationToken,
    /// The server's stop turn.
    stopping: CancellationToken,
    last: Option<ServingStatus>,
    ended: bool,
}

impl Watcher {
    /// The next message: the status when it differs from the last one sent, `UNAVAILABLE` at
    /// the stop turn, then the end.
    async fn next(&mut self) -> Option<Result<HealthCheckResponse, Status>> {
        if self.ended {
            return None;
        }
        loop {
            let status = if self.known {
                serving_status(&self.handle)
            } else {
                ServingStatus::ServiceUnknown
            };
            if self.last != Some(status) {
                self.last = Some(status);
                return Some(Ok(response(status)));
            }
            tokio::select! {
                biased;
                () = self.stopping.cancelled() => {
                    self.ended = true;
                    return Some(Err(Status::unavailable("the server is shutting down")));
                }
                () = self.shutdown.cancelled(), if !self.shutdown.is_cancelled() => {}
                changed = self.phases.changed() => if changed.is_err() {
                    // The lifecycle is gone: nothing changes any more until the stop.
                    self.stopping.cancelled().await;
                },
            }
        }
    }
}

/// The stream a `Watch` call answers with.
type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl health_server::Health for GrpcHealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        if !self.services.contains(&request.get_ref().service) {
            return Err(Status::not_found("unknown service"));
        }
        Ok(Response::new(response(self.status())))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let stopping = ShutdownSignal::current()
            .map(|signal| signal.server_token().clone())
            .unwrap_or_default();
        let watcher = Watcher {
            known: self.services.contains(&request.get_ref().service),
            phases: self.handle.watch_phase(),
            shutdown: self.handle.shutdown_token(),
            handle: self.handle.clone(),
            stopping,
            last: None,
            ended: false,
        };
        let changes = futures::stream::unfold(watcher, |mut watcher| async move {
            let item = watcher.next().await?;
            Some((item, watcher))
        });
        Ok(Response::new(Box::pin(changes)))
    }
}
