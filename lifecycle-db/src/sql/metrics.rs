//! A pool's metrics through the `metrics` facade: what sqlx lets us see, its connections in
//! use and idle, sampled while it runs, and the connections still in use at its stop turn
//! (whose holders' queries fail with `PoolClosed` from then on: sqlx does not count those
//! refusals, so these connections are the closest measure).

use std::time::Duration;

use metrics::Gauge;
use sqlx::{Database, Pool};

/// How often the connection counts are sampled while the pool runs.
pub(super) const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// The metric handles of one pool, labelled with its component's name.
#[derive(Debug, Clone)]
pub(super) struct PoolMetrics {
    in_use: Gauge,
    idle: Gauge,
    in_use_at_stop: Gauge,
}

impl PoolMetrics {
    pub(super) fn register(component: &str) -> Self {
        let gauge = |state: &'static str| {
            metrics::gauge!(
                "db_pool_connections",
                "component" => component.to_owned(),
                "state" => state
            )
        };
        PoolMetrics {
            in_use: gauge("in_use"),
            idle: gauge("idle"),
            in_use_at_stop: metrics::gauge!(
                "db_pool_connections_in_use_at_stop",
                "component" => component.to_owned()
            ),
        }
    }

    /// Sets the connection gauges from the pool as it is now.
    pub(super) fn sample<DB: Database>(&self, pool: &Pool<DB>) {
        let idle = pool.num_idle() as u32;
        self.idle.set(f64::from(idle));
        self.in_use.set(f64::from(pool.size().saturating_sub(idle)));
    }

    /// The connections still in use once dependents had stopped and their grace was over.
    pub(super) fn stopped(&self, in_use: u32) {
        self.in_use_at_stop.set(f64::from(in_use));
    }
}
