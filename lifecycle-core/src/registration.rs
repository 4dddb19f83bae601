//! `Registration`: one component with its name, dependencies, timeouts and failure policy
//! ([`OnFailure`]), as registered before `build` or added while the lifecycle runs.

use std::sync::Arc;
use std::time::Duration;

use crate::component::Component;
use crate::error::BuildError;

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
/// [register](crate::LifecycleBuilder::register).
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
    /// [`build`](crate::LifecycleBuilder::build) rejects. Its stop timeout counts in every chain of
    /// the [shutdown budget](crate::LifecycleBuilder::shutdown_budget).
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
