//! A Redis client's metrics through the `metrics` facade: commands refused once it had closed
//! (issued by code that does not depend on it) and commands cut off at its stop, both counted
//! where the client decides them; handles taken at the start.

use metrics::Counter;

/// The metric handles of one client, labelled with its component's name.
#[derive(Debug)]
pub(super) struct RedisMetrics {
    refused: Counter,
    cut_off: Counter,
}

impl RedisMetrics {
    pub(super) fn register(component: &str) -> Self {
        RedisMetrics {
            refused: metrics::counter!(
                "redis_commands_refused_total",
                "component" => component.to_owned()
            ),
            cut_off: metrics::counter!(
                "redis_commands_cut_off_total",
                "component" => component.to_owned()
            ),
        }
    }

    /// A command was refused because the client had closed.
    pub(super) fn refused(&self) {
        self.refused.increment(1);
    }

    /// `count` commands were still in flight when the stop gave up on them.
    pub(super) fn cut_off(&self, count: usize) {
        self.cut_off.increment(count as u64);
    }
}
