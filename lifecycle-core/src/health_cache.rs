//! `HealthCache`: the components' last health answers, reused for a short time so that a flood
//! of probes does not run a check (a pool connection, a Redis round trip) per probe.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::time::Instant;

use crate::health::Health;
use crate::inspect::Inspect;

#[derive(Debug)]
pub(crate) struct HealthCache {
    /// Set once, when the lifecycle is built.
    ttl: std::sync::OnceLock<Duration>,
    /// When the answers were taken, and one per component (`None` for those not running then).
    /// Behind an async lock so that concurrent callers wait for one refresh, not start theirs.
    last: tokio::sync::Mutex<Option<(Instant, Vec<Option<Health>>)>>,
}

impl HealthCache {
    pub(crate) fn new() -> Self {
        HealthCache {
            ttl: std::sync::OnceLock::new(),
            last: tokio::sync::Mutex::new(None),
        }
    }

    pub(crate) fn set_ttl(&self, ttl: Duration) {
        let _ = self.ttl.set(ttl);
    }

    /// The health of each component marked `running`, `None` for the others: the cached answers
    /// when they are younger than the time to live and cover every running component, fresh
    /// ones otherwise.
    pub(crate) async fn get(&self, components: &[(bool, Arc<dyn Inspect>)]) -> Vec<Option<Health>> {
        let ttl = self.ttl.get().copied().unwrap_or_default();
        if ttl.is_zero() {
            return check_all(components).await;
        }
        let mut last = self.last.lock().await;
        if let Some((at, answers)) = &*last {
            let covers = components
                .iter()
                .zip(answers)
                .all(|((running, _), answer)| !running || answer.is_some());
            if at.elapsed() < ttl && covers && answers.len() == components.len() {
                return components
                    .iter()
                    .zip(answers)
                    .map(|((running, _), answer)| answer.clone().filter(|_| *running))
                    .collect();
            }
        }
        let answers = check_all(components).await;
        *last = Some((Instant::now(), answers.clone()));
        answers
    }
}

async fn check_all(components: &[(bool, Arc<dyn Inspect>)]) -> Vec<Option<Health>> {
    futures::future::join_all(components.iter().map(|(running, component)| async move {
        if !running {
            return None;
        }
        Some(
            AssertUnwindSafe(component.health())
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Health::unhealthy("health check panicked")),
        )
    }))
    .await
}
