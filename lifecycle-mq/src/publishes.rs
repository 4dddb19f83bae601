//! `Publishes`: the publishes in flight of one run of a publisher, whatever the broker. From
//! the stop turn new ones are refused at once; those in flight get until shortly before the
//! stop timeout to be confirmed, and then fail rather than vanish.

use std::future::Future;
use std::time::Duration;

use lifecycle_core::{Context, Redacted};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;

use crate::error::MqError;

/// The publishes of one run of a publisher; clones share them.
#[derive(Debug, Clone)]
pub(crate) struct Publishes {
    /// The component's name, for [`MqError::NotRunning`].
    name: String,
    /// Counts the publishes in flight; closed at the stop turn.
    tracker: TaskTracker,
    /// Cancelled when the stop gives up on the publishes still waiting for their confirm.
    cut: CancellationToken,
}

/// One publish waiting for the broker's confirm, counted until dropped.
pub(crate) struct PendingPublish {
    _counted: TaskTrackerToken,
    cut: CancellationToken,
}

impl PendingPublish {
    /// Runs `publish`, or gives up on it (`None`) when the stop cuts the publishes left.
    pub(crate) async fn until_cut<F: Future>(self, publish: F) -> Option<F::Output> {
        self.cut.run_until_cancelled(publish).await
    }
}

impl Publishes {
    pub(crate) fn new(name: &str) -> Self {
        Publishes {
            name: name.to_owned(),
            tracker: TaskTracker::new(),
            cut: CancellationToken::new(),
        }
    }

    /// Whether publishes are still taken.
    pub(crate) fn is_open(&self) -> bool {
        !self.tracker.is_closed()
    }

    /// How many publishes are in flight.
    pub(crate) fn len(&self) -> usize {
        self.tracker.len()
    }

    /// Counts a publish in flight, or refuses it with the component's name once the stop turn
    /// has come.
    pub(crate) fn enter(&self) -> Result<PendingPublish, String> {
        if !self.is_open() {
            return Err(self.name.clone());
        }
        Ok(PendingPublish {
            _counted: self.tracker.token(),
            cut: self.cut.clone(),
        })
    }

    /// The stop's part: refuses new publishes from now on, then waits for those in flight
    /// until `give_up`, and fails those still unconfirmed then ([`MqError::Unconfirmed`]).
    pub(crate) async fn stop(
        &self,
        ctx: &Context,
        target: &Redacted,
        give_up: Instant,
    ) -> Option<MqError> {
        self.tracker.close();
        if tokio::time::timeout_at(give_up, self.tracker.wait())
            .await
            .is_ok()
        {
            return None;
        }
        let unconfirmed = self.tracker.len();
        self.cut.cancel();
        tracing::warn!(
            component = ctx.name(),
            unconfirmed,
            "publishes never confirmed"
        );
        // The cut publishes return at once; wait for them so none outlives the stop.
        let _ = tokio::time::timeout(Duration::from_millis(100), self.tracker.wait()).await;
        Some(MqError::Unconfirmed {
            target: target.to_string(),
            unconfirmed,
        })
    }
}
