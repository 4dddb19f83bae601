//! `Registry`: the components the lifecycle knows, as the handles and the watchdog see them
//! (to ask their health and what they wait for), apart from the record of what happened to
//! them.
//!
//! Indexed as the record is: registered components in order, then those added while the
//! lifecycle runs. The orchestrator is its only writer (an entry when a component is
//! registered or added, its tasks when it starts); handles and the watchdog read.

use std::sync::Arc;

use crate::inspect::Inspect;
use crate::tasks::TrackedTasks;

/// The components, by index.
#[derive(Default)]
pub(crate) struct Registry {
    entries: Vec<Entry>,
}

/// One component as the handles see it.
struct Entry {
    component: Arc<dyn Inspect>,
    /// Whether its health counts toward readiness.
    readiness: bool,
    /// The tasks of its current (or last) run: the named ones are what it waits for, and
    /// what its stop gave up on goes in the report.
    tasks: Option<TrackedTasks>,
}

impl Registry {
    /// A component was registered or added; returns its index.
    pub(crate) fn registered(&mut self, component: Arc<dyn Inspect>, readiness: bool) -> usize {
        self.entries.push(Entry {
            component,
            readiness,
            tasks: None,
        });
        self.entries.len() - 1
    }

    /// Component `i` started (or restarted) with these tasks.
    pub(crate) fn started(&mut self, i: usize, tasks: Option<TrackedTasks>) {
        self.entries[i].tasks = tasks;
    }

    pub(crate) fn component(&self, i: usize) -> &Arc<dyn Inspect> {
        &self.entries[i].component
    }

    /// Whether component `i`'s health counts toward readiness.
    pub(crate) fn counts_for_readiness(&self, i: usize) -> bool {
        self.entries[i].readiness
    }

    /// The tasks of component `i`'s current (or last) run.
    pub(crate) fn tasks(&self, i: usize) -> Option<&TrackedTasks> {
        self.entries[i].tasks.as_ref()
    }

    /// What component `i` is waiting for now: its own answer and its named tasks, capped.
    /// Ask it only of a component that runs or stops.
    pub(crate) fn held_by(&self, i: usize) -> Vec<String> {
        held_by(&*self.entries[i].component, self.tasks(i))
    }

    /// What component `i`'s stop gave up on ([`Context::gave_up_on`](crate::Context::gave_up_on)), capped.
    pub(crate) fn given_up(&self, i: usize) -> Vec<String> {
        crate::held_by::cap(
            self.tasks(i)
                .map(TrackedTasks::given_up)
                .unwrap_or_default(),
        )
    }
}

/// What `component` with `tasks` is waiting for: its own answer and its named tasks, capped.
pub(crate) fn held_by(component: &dyn Inspect, tasks: Option<&TrackedTasks>) -> Vec<String> {
    crate::held_by::collect(
        component.held_by(),
        tasks.map(TrackedTasks::named_running).unwrap_or_default(),
    )
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("components", &self.entries.len())
            .finish()
    }
}
