//! The builder: components, their dependencies and timeouts, and the global settings.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::component::Component;
use crate::error::BuildError;
use crate::graph::Graph;
use crate::handle::LifecycleHandle;
use crate::lifecycle::Lifecycle;
use crate::record::{Record, Slot};
use crate::shared::Shared;
use crate::signals::Signal;

/// What the lifecycle does when a running component reports a failure (its task returned an
/// error, or panicked, through [`Context::report_failure`](crate::Context::report_failure)).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnFailure {
    /// Shut the whole service down, with a non-zero exit code. The default: a service missing
    /// a part should be restarted by its supervisor, not limp on.
    #[default]
    Shutdown,
    /// Stop the component and start it again after a backoff that doubles from
    /// `initial_backoff` up to `max_backoff`; after `max_restarts` restarts, shut down.
    /// Failures during start-up roll the start-up back instead.
    Restart {
        /// How many restarts are allowed over the lifetime of the process.
        max_restarts: u32,
        /// The wait before the first restart.
        initial_backoff: Duration,
        /// The longest wait between restarts.
        max_backoff: Duration,
    },
    /// Log the failure and carry on without the component's failed task.
    Ignore,
}

impl OnFailure {
    /// [`OnFailure::Restart`] with a backoff from 100 ms doubling up to 30 s.
    pub fn restart(max_restarts: u32) -> Self {
        OnFailure::Restart {
            max_restarts,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// A component with its name, dependencies, timeouts and failure policy, ready to
/// [register](LifecycleBuilder::register).
///
/// # Examples
///
/// ```
/// use lifecycle_core::{Registration, Worker};
/// use std::time::Duration;
///
/// let worker = Worker::new(|ctx| async move {
///     ctx.token().cancelled().await;
///     Ok::<_, std::io::Error>(())
/// });
/// let registration = Registration::new("mailer", worker)
///     .depends_on("db")
///     .depends_on("smtp")
///     .stop_timeout(Duration::from_secs(10));
/// ```
#[must_use = "a registration does nothing until it is passed to `LifecycleBuilder::register`"]
pub struct Registration {
    pub(crate) name: String,
    pub(crate) component: Arc<dyn Component>,
    pub(crate) depends_on: Vec<String>,
    pub(crate) start_timeout: Duration,
    pub(crate) stop_timeout: Duration,
    pub(crate) on_failure: OnFailure,
    pub(crate) readiness: bool,
    pub(crate) stops_last: bool,
}

impl Registration {
    /// The default start timeout: long enough for migrations and a connect retry.
    pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);
    /// The default stop timeout.
    pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);

    /// Registers `component` under `name`, with no dependencies, the default timeouts and
    /// [`OnFailure::Shutdown`].
    pub fn new(name: impl Into<String>, component: impl Component) -> Self {
        Registration {
            name: name.into(),
            component: Arc::new(component),
            depends_on: Vec::new(),
            start_timeout: Self::DEFAULT_START_TIMEOUT,
            stop_timeout: Self::DEFAULT_STOP_TIMEOUT,
            on_failure: OnFailure::Shutdown,
            readiness: true,
            stops_last: false,
        }
    }

    /// Declares that this component uses the component named `name`: it starts after it and
    /// stops before it. Call once per dependency.
    pub fn depends_on(mut self, name: impl Into<String>) -> Self {
        self.depends_on.push(name.into());
        self
    }

    /// How long the start may take before it counts as failed (default 30 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// How long the stop, and the wait for the component's tasks, may take before they are cut
    /// off (default 5 s).
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// What to do when the component fails while running (default [`OnFailure::Shutdown`]).
    pub fn on_failure(mut self, policy: OnFailure) -> Self {
        self.on_failure = policy;
        self
    }

    /// Leaves the component's health out of readiness: the service stays ready while it is
    /// unhealthy (a cache the service can do without), and health checks still report it.
    /// Its start and stop are ordered as any other's.
    pub fn exclude_from_readiness(mut self) -> Self {
        self.readiness = false;
        self
    }

    /// Makes every other component depend on this one, as if each had declared
    /// [`depends_on`](Self::depends_on) it: it starts first and stops last. For what must see
    /// the whole run, the shutdown included, such as an admin listener serving `/metrics` and
    /// the health endpoints, which a scraper should reach until the last component has
    /// stopped.
    ///
    /// Components marked so do not depend on one another (they start and stop concurrently),
    /// and one that declares a dependency of its own makes a cycle, which
    /// [`build`](LifecycleBuilder::build) rejects. Its stop timeout counts in every chain of
    /// the [shutdown budget](LifecycleBuilder::shutdown_budget).
    ///
    /// # Examples
    ///
    /// ```
    /// use lifecycle_core::{Lifecycle, Registration, Worker};
    ///
    /// let idle = || Worker::new(|ctx| async move {
    ///     ctx.token().cancelled().await;
    ///     Ok::<_, std::io::Error>(())
    /// });
    /// let lifecycle = Lifecycle::builder()
    ///     .register(Registration::new("db", idle()))
    ///     .register(Registration::new("admin", idle()).stops_last())
    ///     .build()
    ///     .expect("valid configuration");
    /// ```
    pub fn stops_last(mut self) -> Self {
        self.stops_last = true;
        self
    }
}

impl Registration {
    /// Rejects a zero timeout, and a restart policy with no restarts.
    pub(crate) fn check(&self) -> Result<(), BuildError> {
        let zero = [("start", self.start_timeout), ("stop", self.stop_timeout)]
            .into_iter()
            .find(|(_, timeout)| timeout.is_zero());
        if let Some((phase, _)) = zero {
            return Err(BuildError::ZeroTimeout {
                component: self.name.clone(),
                phase,
            });
        }
        if matches!(
            self.on_failure,
            OnFailure::Restart {
                max_restarts: 0,
                ..
            }
        ) {
            return Err(BuildError::ZeroRestarts {
                component: self.name.clone(),
            });
        }
        Ok(())
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("name", &self.name)
            .field("depends_on", &self.depends_on)
            .field("start_timeout", &self.start_timeout)
            .field("stop_timeout", &self.stop_timeout)
            .field("on_failure", &self.on_failure)
            .field("readiness", &self.readiness)
            .field("stops_last", &self.stops_last)
            .finish_non_exhaustive()
    }
}

/// Configures a [`Lifecycle`]: its components and the global shutdown settings.
///
/// Created by [`Lifecycle::builder`]; [`build`](Self::build) validates everything before
/// anything runs.
#[must_use = "a builder does nothing until `build` is called"]
pub struct LifecycleBuilder {
    registrations: Vec<Registration>,
    drain_delay: Duration,
    shutdown_budget: Duration,
    signals: Vec<Signal>,
    health_cache: Duration,
    report_file: Option<PathBuf>,
    hard_deadline: bool,
    shared: Arc<Shared>,
}

impl LifecycleBuilder {
    /// The default shutdown budget: Kubernetes' default grace period of 30 s, less a margin.
    pub const DEFAULT_SHUTDOWN_BUDGET: Duration = Duration::from_secs(25);
    /// The default time a health check's answers are reused for.
    pub const DEFAULT_HEALTH_CACHE: Duration = Duration::from_secs(1);

    pub(crate) fn new() -> Self {
        LifecycleBuilder {
            registrations: Vec::new(),
            drain_delay: Duration::ZERO,
            shutdown_budget: Self::DEFAULT_SHUTDOWN_BUDGET,
            signals: vec![Signal::Terminate, Signal::Interrupt],
            health_cache: Self::DEFAULT_HEALTH_CACHE,
            report_file: None,
            hard_deadline: true,
            shared: Arc::new(Shared::new(CancellationToken::new())),
        }
    }

    /// Adds a component.
    pub fn register(mut self, registration: Registration) -> Self {
        self.registrations.push(registration);
        self
    }

    /// How long to keep serving after the trigger, with readiness already withdrawn, before
    /// anything stops (default 0). Size it to how long the load balancer takes to notice:
    /// the readiness probe period times its failure threshold, plus propagation.
    pub fn drain_delay(mut self, delay: Duration) -> Self {
        self.drain_delay = delay;
        self
    }

    /// The most the whole shutdown may take, from the trigger to exit, drain delay included
    /// (default 25 s). When it runs out, whatever still runs is cut off and the process exits
    /// with [`exit_code::DEADLINE`](crate::exit_code::DEADLINE), even if the runtime is stuck.
    ///
    /// The stops are cut a little earlier (a tenth of the budget, at most 500 ms), so that
    /// [`Lifecycle::run`] still returns the full report; the watchdog thread's exit at the
    /// budget itself is the backstop for a runtime that cannot get there.
    pub fn shutdown_budget(mut self, budget: Duration) -> Self {
        self.shutdown_budget = budget;
        self
    }

    /// The signals that trigger the shutdown (default SIGTERM and SIGINT); a second one forces
    /// the exit. An empty set leaves signals alone, as tests and embedded uses want.
    pub fn signals(mut self, signals: impl IntoIterator<Item = Signal>) -> Self {
        self.signals = signals.into_iter().collect();
        self
    }

    /// How long the answers of the components' health checks are reused (default 1 s), so a
    /// flood of readiness probes runs one check per component per period, not one per probe.
    /// Zero checks on every call.
    pub fn health_cache(mut self, ttl: Duration) -> Self {
        self.health_cache = ttl;
        self
    }

    /// Writes the report as JSON (the shape documented on [`Report`](crate::Report)) to `path`
    /// when the lifecycle ends, whether through [`Lifecycle::run`] or a forced exit (second
    /// signal, deadline). The file is written next to `path` and renamed over it, so a reader
    /// never sees half a report.
    pub fn report_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.report_file = Some(path.into());
        self
    }

    /// Uses `token` as the shutdown token: cancelling it triggers the shutdown, and the
    /// lifecycle cancels it at the trigger, so code outside the lifecycle can follow it.
    ///
    /// Components' own tokens are not its children: they are cancelled one by one, each at its
    /// stop turn.
    pub fn shutdown_token(mut self, token: CancellationToken) -> Self {
        self.shared = Arc::new(Shared::new(token));
        self
    }

    /// Wraps the component registered as `name` so that it misbehaves as `fault` says, for
    /// tests of what the service does then (feature `testing`; see [`crate::testing`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use lifecycle_core::testing::Fault;
    /// use lifecycle_core::{Lifecycle, Registration, Worker};
    ///
    /// let idle = Worker::new(|ctx| async move {
    ///     ctx.token().cancelled().await;
    ///     Ok::<_, std::io::Error>(())
    /// });
    /// let builder = Lifecycle::builder()
    ///     .register(Registration::new("db", idle))
    ///     .inject_fault("db", Fault::StopHangs);
    /// ```
    ///
    /// # Panics
    ///
    /// Panics when no component is registered under `name`: a test that injects a fault into
    /// nothing would pass for the wrong reason.
    #[cfg(feature = "testing")]
    pub fn inject_fault(mut self, name: &str, fault: crate::testing::Fault) -> Self {
        let registration = self
            .registrations
            .iter_mut()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("inject_fault: no component named `{name}`"));
        registration.component = Arc::new(crate::testing::Faulty {
            inner: registration.component.clone(),
            fault,
        });
        self
    }

    /// Replaces each registered component with what `wrap` makes of it.
    #[cfg(feature = "testing")]
    pub(crate) fn map_components(
        mut self,
        mut wrap: impl FnMut(&str, Arc<dyn Component>) -> Arc<dyn Component>,
    ) -> Self {
        for registration in &mut self.registrations {
            registration.component = wrap(&registration.name, registration.component.clone());
        }
        self
    }

    /// Runs without the watchdog thread's hard exit, for tests in a shared process; the
    /// budget still cuts the stops.
    #[cfg(feature = "testing")]
    pub(crate) fn without_hard_deadline(mut self) -> Self {
        self.hard_deadline = false;
        self
    }

    /// A handle to the lifecycle this builder will build, for wiring `main` before `build`.
    ///
    /// Call it after [`shutdown_token`](Self::shutdown_token), which replaces the handle's
    /// shared state.
    pub fn handle(&self) -> LifecycleHandle {
        LifecycleHandle {
            shared: self.shared.clone(),
        }
    }

    /// Validates the configuration and returns the lifecycle, ready to [run](Lifecycle::run).
    ///
    /// # Errors
    ///
    /// A [`BuildError`] for a duplicate name, a missing dependency, a dependency cycle (with its
    /// full path), a zero timeout, a restart policy with no restarts, or a shutdown budget
    /// smaller than the drain delay plus the longest chain of stop timeouts (with that chain).
    pub fn build(self) -> Result<Lifecycle, BuildError> {
        let dependencies = self.dependencies();
        let graph = Graph::new(
            self.registrations
                .iter()
                .zip(&dependencies)
                .map(|(r, d)| (r.name.as_str(), d.as_slice())),
        )?;
        for r in &self.registrations {
            r.check()?;
        }
        let (path, path_time) = graph.critical_path(|i| self.registrations[i].stop_timeout);
        let critical_path: Vec<String> = path
            .iter()
            .map(|&i| self.registrations[i].name.clone())
            .collect();
        let required = self.drain_delay.saturating_add(path_time);
        if self.shutdown_budget < required || self.shutdown_budget.is_zero() {
            return Err(BuildError::BudgetTooSmall {
                budget: self.shutdown_budget,
                drain_delay: self.drain_delay,
                critical_path,
                critical_path_time: path_time,
                required,
            });
        }

        *self.shared.record() = Record::new(
            self.registrations
                .iter()
                .zip(dependencies)
                .map(|(r, dependencies)| {
                    Slot::new(&r.name, dependencies, r.component.clone(), r.readiness)
                })
                .collect(),
        );
        self.shared.health.set_ttl(self.health_cache);
        Ok(Lifecycle {
            registrations: self.registrations,
            graph,
            drain_delay: self.drain_delay,
            shutdown_budget: self.shutdown_budget,
            signals: self.signals,
            report_file: self.report_file,
            hard_deadline: self.hard_deadline,
            critical_path,
            critical_path_time: path_time,
            shared: self.shared,
        })
    }
}

impl LifecycleBuilder {
    /// Each component's dependencies: those it declared, then every component registered as
    /// [`stops_last`](Registration::stops_last) (unless it is one itself).
    fn dependencies(&self) -> Vec<Vec<String>> {
        let last: Vec<&String> = self
            .registrations
            .iter()
            .filter(|r| r.stops_last)
            .map(|r| &r.name)
            .collect();
        self.registrations
            .iter()
            .map(|r| {
                let mut dependencies = r.depends_on.clone();
                if !r.stops_last {
                    dependencies.extend(last.iter().map(|&name| name.clone()));
                }
                dependencies
            })
            .collect()
    }
}

impl std::fmt::Debug for LifecycleBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LifecycleBuilder")
            .field("components", &self.registrations.len())
            .field("drain_delay", &self.drain_delay)
            .field("shutdown_budget", &self.shutdown_budget)
            .field("signals", &self.signals)
            .field("report_file", &self.report_file)
            .finish()
    }
}
