//! `Fault`: what an injected fault makes a component do, and the wrapper that does it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::builder::LifecycleBuilder;
use crate::component::Component;
use crate::context::Context;
use crate::error::BoxError;
use crate::health::Health;

/// A misbehaviour to inject into a registered component with
/// [`LifecycleBuilder::inject_fault`](crate::LifecycleBuilder::inject_fault).
///
/// Faults wrap the real component: where the fault does not say otherwise, its own start, stop
/// and health run as usual, so a test can make one part of a real service misbehave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// The start returns an error instead of starting.
    StartFails,
    /// The start never returns (until its timeout, or the start-up is abandoned).
    StartHangs,
    /// The start panics.
    StartPanics,
    /// It starts, then fails at run time after this long, as a crashed task would.
    FailsAfter(Duration),
    /// It stops as usual, then its stop returns an error.
    StopFails,
    /// The stop never returns (until its timeout or the budget cuts it).
    StopHangs,
    /// The stop panics.
    StopPanics,
}

/// The error an injected fault returns or reports.
#[derive(Debug, thiserror::Error)]
#[error("injected fault: {0:?}")]
pub struct InjectedFault(pub Fault);

// The builder's method lives with the faults, so that the builder need not know the kit.
impl LifecycleBuilder {
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
    pub fn inject_fault(self, name: &str, fault: Fault) -> Self {
        let mut found = false;
        let builder = self.map_components(|registered, inner| {
            if registered != name {
                return inner;
            }
            found = true;
            Arc::new(Faulty { inner, fault })
        });
        assert!(found, "inject_fault: no component named `{name}`");
        builder
    }
}

/// A registered component with a fault injected.
pub(crate) struct Faulty {
    pub(crate) inner: Arc<dyn Component>,
    pub(crate) fault: Fault,
}

#[async_trait]
impl Component for Faulty {
    async fn start(&self, ctx: &Context) -> Result<(), BoxError> {
        match self.fault {
            Fault::StartFails => return Err(InjectedFault(self.fault).into()),
            Fault::StartHangs => std::future::pending().await,
            Fault::StartPanics => panic!("injected fault: {:?}", self.fault),
            _ => {}
        }
        self.inner.start(ctx).await?;
        if let Fault::FailsAfter(after) = self.fault {
            let (ctx, fault) = (ctx.clone(), self.fault);
            ctx.clone().spawn(async move {
                if ctx
                    .token()
                    .run_until_cancelled(tokio::time::sleep(after))
                    .await
                    .is_some()
                {
                    ctx.report_failure(InjectedFault(fault));
                }
            });
        }
        Ok(())
    }

    async fn stop(&self, ctx: &Context) -> Result<(), BoxError> {
        match self.fault {
            Fault::StopHangs => std::future::pending().await,
            Fault::StopPanics => panic!("injected fault: {:?}", self.fault),
            _ => {}
        }
        self.inner.stop(ctx).await?;
        match self.fault {
            Fault::StopFails => Err(InjectedFault(self.fault).into()),
            _ => Ok(()),
        }
    }

    async fn health(&self) -> Health {
        self.inner.health().await
    }

    fn describe(&self) -> Option<String> {
        self.inner.describe()
    }

    fn held_by(&self) -> Vec<String> {
        self.inner.held_by()
    }
}

/// Wraps every component a [`TestRun`](super::TestRun) runs, to keep the context of its
/// current run so the test can make it fail.
pub(crate) struct Observed {
    pub(crate) inner: Arc<dyn Component>,
    pub(crate) current: Arc<Mutex<Option<Context>>>,
}

#[async_trait]
impl Component for Observed {
    async fn start(&self, ctx: &Context) -> Result<(), BoxError> {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(ctx.clone());
        self.inner.start(ctx).await
    }

    async fn stop(&self, ctx: &Context) -> Result<(), BoxError> {
        self.inner.stop(ctx).await
    }

    async fn health(&self) -> Health {
        self.inner.health().await
    }

    fn describe(&self) -> Option<String> {
        self.inner.describe()
    }

    fn held_by(&self) -> Vec<String> {
        self.inner.held_by()
    }
}
