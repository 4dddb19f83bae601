//! Errors of this crate.

use std::time::Duration;

/// The error type that components return from [`Component::start`](crate::Component::start)
/// and [`Component::stop`](crate::Component::stop).
///
/// Any error that is `Send + Sync + 'static` converts into it with `?` or `.into()`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why [`LifecycleBuilder::build`](crate::LifecycleBuilder::build) rejected a configuration.
///
/// Every variant names the components involved, so the message alone says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Two components were registered under the same name.
    #[error("component `{name}` is registered twice")]
    DuplicateName {
        /// The name used twice.
        name: String,
    },

    /// A component depends on a name that no component was registered under.
    #[error("component `{component}` depends on `{dependency}`, which is not registered")]
    MissingDependency {
        /// The component that declared the dependency.
        component: String,
        /// The name that was not found.
        dependency: String,
    },

    /// The dependencies form a cycle, so no start order exists.
    ///
    /// `path` starts and ends with the same component: `["a", "b", "c", "a"]` means `a` depends
    /// on `b`, `b` on `c` and `c` on `a`. A component that depends on itself gives `["a", "a"]`.
    #[error("dependency cycle: {}", path.join(" -> "))]
    Cycle {
        /// The components of the cycle, the first repeated at the end.
        path: Vec<String>,
    },

    /// A start or stop timeout of zero, which would fail every start or stop.
    #[error("component `{component}` has a zero {phase} timeout")]
    ZeroTimeout {
        /// The component.
        component: String,
        /// `"start"` or `"stop"`.
        phase: &'static str,
    },

    /// A restart policy that allows zero restarts; use
    /// [`OnFailure::Shutdown`](crate::OnFailure::Shutdown) instead.
    #[error("component `{component}` has a restart policy with no restarts")]
    ZeroRestarts {
        /// The component.
        component: String,
    },

    /// The shutdown budget cannot cover the drain delay plus the longest chain of stop timeouts.
    ///
    /// Components on one dependency chain stop one after another, so the chain with the largest
    /// sum of stop timeouts (the critical path) bounds how long a shutdown can take.
    #[error(
        "shutdown budget {budget:?} is smaller than drain delay {drain_delay:?} + stop timeouts \
         along {} ({critical_path_time:?}) = {required:?}",
        critical_path.join(" -> ")
    )]
    BudgetTooSmall {
        /// The configured shutdown budget.
        budget: Duration,
        /// The configured drain delay.
        drain_delay: Duration,
        /// The chain of components whose stop timeouts add up to the most, in stop order
        /// (dependents first).
        critical_path: Vec<String>,
        /// The sum of the stop timeouts along `critical_path`.
        critical_path_time: Duration,
        /// `drain_delay + critical_path_time`.
        required: Duration,
    },
}
