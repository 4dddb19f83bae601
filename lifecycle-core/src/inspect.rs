//! `Inspect`: what the lifecycle asks of a component outside its start and stop (its health,
//! what it waits for, how it describes itself), which is all the handles, the health cache and
//! the watchdog need of it.
//!
//! They hold components as `dyn Inspect` rather than `dyn Component`: a component's start and
//! stop take a `Context`, which holds a handle, so a handle that held `dyn Component` would
//! tie the modules in a circle.

use futures::future::BoxFuture;

use crate::health::Health;

/// The parts of [`Component`](crate::Component) that take no context.
pub(crate) trait Inspect: Send + Sync {
    /// [`Component::health`](crate::Component::health).
    fn health(&self) -> BoxFuture<'_, Health>;
    /// [`Component::held_by`](crate::Component::held_by).
    fn held_by(&self) -> Vec<String>;
    /// [`Component::describe`](crate::Component::describe).
    fn describe(&self) -> Option<String>;
}
