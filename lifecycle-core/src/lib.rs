//! A dependency-ordered component registry that starts a tokio service in order and shuts it
//! down without dropping work: readiness off first, a drain delay, then each component stopped
//! after everything that depends on it, under its own timeout and a global budget, ending with
//! a report and an exit code.
//!
//! A service's `main` registers its parts as [`Component`]s (an HTTP server, a database pool, a
//! background [`Worker`]), each with its dependencies. [`Lifecycle::run`] then:
//!
//! 1. installs the signal handlers (SIGTERM and SIGINT by default);
//! 2. starts the components in dependency order, independent ones concurrently, each under its
//!    start timeout; a failure, a timeout, a panic or a signal stops what did start, in reverse;
//! 3. reports [`Phase::Ready`] and waits for the trigger: a signal, a
//!    [`LifecycleHandle::shutdown`] call, or a component failing at run time (per its
//!    [`OnFailure`] policy);
//! 4. withdraws readiness at once and keeps serving for the drain delay, so load balancers stop
//!    sending traffic before anything closes;
//! 5. stops the components in reverse dependency order: each one's [`Context::token`] is
//!    cancelled at its own turn, its stop runs under min(its timeout, the budget left), and its
//!    tracked tasks are awaited, or aborted when time runs out;
//! 6. returns a [`Report`] (table, JSON and `tracing` events) with the exit code.
//!
//! # Components added while the service runs
//!
//! A part that exists only at run time (a consumer per tenant, a connection per configured
//! upstream, a plugin loaded from configuration) is added through
//! [`LifecycleHandle::add`] and removed through [`LifecycleHandle::remove`]. It follows every
//! rule a registered component does: it starts after its dependencies (which must be
//! running), its policy applies, it counts for readiness once started, and the shutdown stops
//! it before its dependencies; removing a component stops what depends on it (its children)
//! first. The handle only asks: the orchestrator decides, records, and answers, with a typed
//! [`ChangeError`] when it refuses (an invalid addition, or any change once the shutdown has
//! begun). The shutdown budget checked by [`LifecycleBuilder::build`] covers the components
//! known then; an addition that lengthens the longest chain of stop timeouts is not checked,
//! and the budget cuts what would run past it.
//!
//! ```
//! use lifecycle_core::{Lifecycle, Registration, Worker};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let idle = || Worker::new(|ctx| async move {
//!     ctx.token().cancelled().await;
//!     Ok::<_, std::io::Error>(())
//! });
//! let lifecycle = Lifecycle::builder()
//!     .signals([])
//!     .register(Registration::new("db", idle()))
//!     .build()
//!     .unwrap();
//! let handle = lifecycle.handle();
//! let run = tokio::spawn(lifecycle.run());
//!
//! handle.add(Registration::new("tenant-acme", idle()).depends_on("db")).await.unwrap();
//! handle.add(Registration::new("tenant-acme-feed", idle()).depends_on("tenant-acme")).await.unwrap();
//! // Removing the tenant stops its feed first.
//! handle.remove("tenant-acme").await.unwrap();
//!
//! handle.shutdown("demo");
//! let report = run.await.unwrap();
//! assert!(report.component("tenant-acme-feed").unwrap().removed);
//! # }
//! ```
//!
//! A second signal, or the shutdown budget running out, ends the process at once with a distinct
//! [exit code](exit_code), from a watchdog thread that works even when the runtime is stuck.
//!
//! Panics in starts, stops, health checks and workers are caught and reported; building with
//! `panic = "abort"` is not supported, as a panic would then end the process without a report.
//!
//! Under systemd (`Type=notify`, `NOTIFY_SOCKET` set), the lifecycle sends `READY=1` once
//! started, `STOPPING=1` with `EXTEND_TIMEOUT_USEC` at the trigger, and watchdog pings when the
//! unit asks for them.
//!
//! With the `upgrade` feature (Unix), `Upgrade` upgrades the service in place: on SIGHUP it
//! starts the program again, hands it the listening sockets, and shuts down once the new
//! process is ready, without a drain delay (the `upgrade` module); as PID 1 of a container it
//! refuses. The [`sockets`] module (Unix) takes the sockets systemd or an upgrade passed, and
//! [`LifecycleHandle::listener_share`] tells a server, per socket, whether another process
//! holds it too: such a socket is never closed for good, only this process's descriptor.
//!
//! # Metrics and traces
//!
//! The lifecycle records metrics through the [`metrics`](https://docs.rs/metrics) facade, so
//! the service picks the exporter (`metrics-exporter-prometheus`, say); with no recorder
//! installed they cost next to nothing. Names and labels follow the Prometheus conventions:
//!
//! | metric | kind | labels | what |
//! |---|---|---|---|
//! | `lifecycle_phase` | gauge | `phase` | 1 for the current phase (`starting`, `ready`, `draining`, `stopping`, `stopped`), 0 for the others |
//! | `lifecycle_component_state` | gauge | `component`, `state` | 1 for the component's current state (`pending`, `starting`, `running`, `restarting`, `stopping`, or its outcome), 0 for the others |
//! | `lifecycle_component_starts_total` | counter | `component`, `outcome` | starts and restarts, by outcome (`started`, `failed`, `timed_out`, `panicked`, `not_started`) |
//! | `lifecycle_component_start_duration_seconds` | histogram | `component`, `outcome` | how long each start took |
//! | `lifecycle_component_stops_total` | counter | `component`, `outcome` | stops, by outcome (`stopped`, `failed`, `timed_out`, `panicked`) |
//! | `lifecycle_component_stop_duration_seconds` | histogram | `component`, `outcome` | how long each stop took (0 when the budget cut it off before its turn) |
//! | `lifecycle_component_failures_total` | counter | `component` | failures of a running component, before or after the trigger |
//! | `lifecycle_component_restarts_total` | counter | `component` | restarts under [`OnFailure::Restart`] |
//! | `lifecycle_shutdowns_total` | counter | `trigger` | shutdowns, by trigger (`signal`, `requested`, `component_failed`, `start_failed`, `upgrade`) |
//! | `lifecycle_drain_delay_seconds` | gauge | | the drain delay as applied |
//! | `lifecycle_shutdown_duration_seconds` | gauge | | from the trigger to the end of the last stop |
//! | `lifecycle_upgrades_total` | counter | `outcome` | in-place upgrade attempts (`succeeded`, `failed`, `refused` as PID 1) |
//!
//! The adapter crates record theirs the same way, labelled with their component's name, and
//! take their handles when they start (none is looked up per request or per job):
//!
//! | metric | kind | labels | what |
//! |---|---|---|---|
//! | `http_requests_total` | counter | `server` | requests received (`lifecycle-http`) |
//! | `http_requests_in_progress` | gauge | `server` | requests whose response's last byte is not yet handed to the socket |
//! | `http_connections_open` | gauge | `server` | connections being served over HTTP |
//! | `http_connections_closed_total` | counter | `server`, `protocol`, `reason` | connections closed, by protocol (`http1`, `http2`) and reason: `served` before the drain began, `drain` after, `vanished` when the kernel gave up on a client that stopped answering (`HttpServer::vanished_peer_timeout`) |
//! | `http_connections_force_closed_total` | counter | `server` | connections cut off at the stop timeout |
//! | `http_connection_limit_reached_total` | counter | `server` | times the server stopped accepting at `max_connections` (new connections wait in the backlog); connections refused by the kernel once the listener has closed never reach the process and are not counted |
//! | `messages_received_total` | counter | `component` | messages an `AmqpConsumer` or a `NatsConsumer` received (every delivery) (`lifecycle-mq`) |
//! | `messages_ended_total` | counter | `component`, `outcome` | messages received that ended, in the outcomes of `jobs_ended_total`, and `rejected` (the handler answered `Ack::Reject`): `done`; `failed` (an error, a panic, `Ack::Requeue`; handed back to be delivered again); `dead` (the same at its last delivery: dead-lettered); `handed_back` (received and never started at the stop); `cut` (its handler running at the stop deadline, cut off and the message handed back) |
//! | `messages_settle_failed_total` | counter | `component` | acks and nacks the broker could not be told of (the connection was gone): it delivers those messages again |
//! | `jobs_claimed_total` | counter | `component` | jobs a `JobWorker` claimed (every delivery) (`lifecycle-db`) |
//! | `jobs_ended_total` | counter | `component`, `outcome` | jobs taken that ended, in the outcomes every work source counts: `done`; `failed` (an error, a panic, a run past its maximum run time; to be tried again); `dead` (the same at its last attempt, or a payload that does not decode: failed for good); `handed_back` (claimed as the stop came, never run); `cut` (running at the stop deadline, cut off and handed back); an end that came after the job's lease had expired is not among them (`jobs_late_total`) |
//! | `job_run_duration_seconds` | histogram | `component`, `outcome` | how long each job in hand ran, by the same outcomes |
//! | `jobs_reclaimed_total` | counter | `component` | jobs of dead or hung workers whose lease expired, queued again by this worker |
//! | `jobs_late_total` | counter | `component` | jobs that ended after their lease had expired and they had been taken back (their end not recorded; they ran twice) |
//! | `db_pool_connections` | gauge | `component`, `state` | a `SqlPool`'s connections `in_use` and `idle`, sampled every second while it runs and at its stop turn |
//! | `db_pool_connections_in_use_at_stop` | gauge | `component` | connections still in use at the pool's stop turn, after a short grace: held by code that does not depend on the pool, whose queries fail with `PoolClosed` from then on (sqlx does not count the refused acquires themselves) |
//! | `redis_commands_refused_total` | counter | `component` | commands a `RedisClient` refused because it had closed: issued by code that does not depend on it |
//! | `redis_commands_cut_off_total` | counter | `component` | commands still in flight when the client's stop gave up on them |
//!
//! `lifecycle_http::AdminRoutes` serves them all as Prometheus text at `/metrics` on an admin
//! address, registered with [`Registration::stops_last`] so the whole shutdown can be scraped.
//!
//! Each start runs in a `start` span and each stop in a `stop` span (with its `outcome` and
//! `error`), the stops inside one `shutdown` span (with the trigger, the drain delay and the
//! exit code), so a tracing subscriber that exports spans shows a shutdown as one trace.
//!
//! # Examples
//!
//! ```no_run
//! use lifecycle_core::{Lifecycle, Registration, Report, Worker};
//! use std::time::Duration;
//!
//! #[tokio::main]
//! async fn main() -> Report {
//!     let queue = Worker::new(|ctx| async move {
//!         while !ctx.token().is_cancelled() {
//!             // Take one job and finish it; check the token only between jobs.
//!             tokio::time::sleep(Duration::from_millis(100)).await;
//!         }
//!         Ok::<_, std::io::Error>(())
//!     });
//!     let metrics = Worker::new(|ctx| async move {
//!         ctx.token().cancelled().await;
//!         Ok::<_, std::io::Error>(())
//!     });
//!
//!     let lifecycle = Lifecycle::builder()
//!         .drain_delay(Duration::from_secs(5))
//!         .shutdown_budget(Duration::from_secs(25))
//!         .register(Registration::new("metrics", metrics))
//!         .register(
//!             Registration::new("queue", queue)
//!                 .depends_on("metrics")
//!                 .stop_timeout(Duration::from_secs(10)),
//!         )
//!         .build()
//!         .expect("valid configuration");
//!
//!     // Returning the report keeps the deadline armed until the runtime has shut down.
//!     lifecycle.run().await
//! }
//! ```

mod builder;
mod changes;
mod component;
mod component_error;
mod context;
mod deadline;
mod error;
mod graph;
mod guarded;
mod handle;
mod health;
mod health_cache;
pub mod held_by;
mod inspect;
mod lifecycle;
mod lifecycle_state;
mod record;
mod redacted;
mod registration;
mod registry;
mod report;
mod run;
mod signals;
#[cfg(unix)]
pub mod sockets;
mod state;
#[cfg(unix)]
mod systemd;
mod tasks;
mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
mod trigger;
#[cfg(feature = "upgrade")]
pub mod upgrade;
mod watchdog;
mod worker;

pub use async_trait::async_trait;
pub use tokio_util::sync::CancellationToken;

pub use builder::LifecycleBuilder;
pub use changes::ChangeError;
pub use component::Component;
pub use component_error::ComponentError;
pub use context::Context;
pub use deadline::{retry_until, GaveUp};
pub use error::{BoxError, BuildError};
pub use handle::{ComponentStatus, LifecycleHandle};
pub use health::Health;
pub use lifecycle::Lifecycle;
pub use redacted::Redacted;
pub use registration::{OnFailure, Registration};
pub use report::{exit_code, ComponentReport, Report, TriggerReport, UpgradeReport};
pub use signals::Signal;
pub use state::{ComponentState, ListenerShare, Outcome, Phase, TriggerKind};
#[cfg(feature = "upgrade")]
pub use upgrade::{Upgrade, UpgradeError};
pub use worker::Worker;

/// The message of a caught panic, for reports.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = panic.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}

/// The README's example, compiled as a doctest so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
