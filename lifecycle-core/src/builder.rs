//! The builder: components, their dependencies and timeouts, and the global settings.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::changes::Mailbox;
use crate::error::BuildError;
use crate::graph::Graph;
use crate::handle::LifecycleHandle;
use crate::lifecycle::Lifecycle;
use crate::lifecycle_state::LifecycleState;
use crate::record::{ComponentRecord, Record};
use crate::registration::Registration;
use crate::signals::Signal;

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
    state: Arc<LifecycleState>,
}

// The way in lives with the builder, so that the lifecycle need not know it.
impl Lifecycle {
    /// A builder with no components, no drain delay, a 25 s shutdown budget, and SIGTERM and
    /// SIGINT as triggers.
    pub fn builder() -> LifecycleBuilder {
        LifecycleBuilder::new()
    }
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
            state: new_state(CancellationToken::new()),
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
        self.state = new_state(token);
        self
    }

    /// Replaces each registered component with what `wrap` makes of it: the testing kit's
    /// hook, so that this module need not know the kit.
    #[cfg(feature = "testing")]
    pub(crate) fn map_components(
        mut self,
        mut wrap: impl FnMut(
            &str,
            Arc<dyn crate::component::Component>,
        ) -> Arc<dyn crate::component::Component>,
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
            state: self.state.clone(),
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

        *self.state.record() = Record::new(
            self.registrations
                .iter()
                .zip(dependencies)
                .map(|(r, dependencies)| ComponentRecord::new(&r.name, dependencies))
                .collect(),
        );
        {
            let mut registry = self.state.registry();
            for r in &self.registrations {
                registry.registered(Arc::new(r.component.clone()), r.readiness);
            }
        }
        self.state.cache_health_for(self.health_cache);
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
            state: self.state,
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

/// The state of a lifecycle about to be built, with `shutdown_token` cancelled at its trigger.
fn new_state(shutdown_token: CancellationToken) -> Arc<LifecycleState> {
    Arc::new(LifecycleState::new(
        shutdown_token,
        Box::new(Mailbox::new()),
    ))
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
