//! `Health`: a component's answer to a health check.

/// The answer of [`Component::health`](crate::Component::health).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Health {
    /// The component can do its work.
    Healthy,
    /// The component cannot do its work right now; the service should not be sent traffic.
    Unhealthy {
        /// What is wrong, for `/readyz?verbose` and logs.
        reason: String,
    },
}

impl Health {
    /// An unhealthy answer with a reason.
    pub fn unhealthy(reason: impl Into<String>) -> Self {
        Health::Unhealthy {
            reason: reason.into(),
        }
    }

    /// Whether this is [`Health::Healthy`].
    pub fn is_healthy(&self) -> bool {
        matches!(self, Health::Healthy)
    }
}
