//! Taking up the handles' changes, from ready to the trigger: an addition is validated against
//! the components the orchestrator knows, appended to its registrations, graph, record and
//! registry, and started as a start-up would; a removal stops the component and those
//! depending on it (its children) in reverse dependency order, while supervision goes on.

use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::oneshot;
use tracing::Instrument;

use super::{Member, Run};
use crate::changes::{Change, ChangeError};
use crate::component_error::ComponentError;
use crate::error::BuildError;
use crate::guarded::{self, Fault};
use crate::record::ComponentRecord;
use crate::registration::Registration;
use crate::state::{ComponentState, Outcome};

impl Run {
    /// Takes up a change asked for by a handle, between ready and the trigger.
    pub(crate) fn change(&mut self, change: Change) {
        match change {
            Change::Add(registration, reply) => self.add(registration, reply),
            Change::Remove(name, reply) => self.remove(&name, reply),
        }
    }

    /// Validates `registration` against the running components, then records it and starts it.
    fn add(&mut self, registration: Registration, reply: oneshot::Sender<Result<(), ChangeError>>) {
        let dependencies = match self.admit(&registration) {
            Ok(dependencies) => dependencies,
            Err(error) => {
                tracing::warn!(component = %registration.name, %error, "addition refused");
                let _ = reply.send(Err(error));
                return;
            }
        };
        let i = self.registrations.len();
        let names = dependencies
            .iter()
            .map(|&d| self.registrations[d].name.clone())
            .collect();
        for &d in &dependencies {
            self.graph.dependents[d].push(i);
        }
        self.graph.dependencies.push(dependencies);
        self.graph.dependents.push(Vec::new());
        self.record()
            .added(ComponentRecord::new(&registration.name, names));
        self.state().registry().registered(
            Arc::new(registration.component.clone()),
            registration.readiness,
        );
        self.names.insert(registration.name.clone(), i);
        self.members.push(Member::default());
        self.registrations.push(registration);
        self.added_waiters.insert(i, reply);
        tracing::info!(component = self.name(i), "added");
        let start = self.launch_start(i).boxed();
        self.adding.push(start);
    }

    /// The indices of `registration`'s dependencies (the `stops_last` components included), or
    /// why it cannot be added.
    fn admit(&self, registration: &Registration) -> Result<Vec<usize>, ChangeError> {
        let name = &registration.name;
        if registration.stops_last {
            return Err(ChangeError::StopsLast {
                component: name.clone(),
            });
        }
        if self.names.contains_key(name) {
            return Err(BuildError::DuplicateName { name: name.clone() }.into());
        }
        registration.check()?;
        let mut dependencies = Vec::with_capacity(registration.depends_on.len());
        for dependency in &registration.depends_on {
            if dependency == name {
                return Err(BuildError::Cycle {
                    path: vec![name.clone(), name.clone()],
                }
                .into());
            }
            let Some(&d) = self.names.get(dependency) else {
                return Err(BuildError::MissingDependency {
                    component: name.clone(),
                    dependency: dependency.clone(),
                }
                .into());
            };
            let running = matches!(
                self.record().state(d),
                ComponentState::Running | ComponentState::Restarting
            );
            if !running || self.members[d].removing {
                return Err(ChangeError::DependencyNotRunning {
                    component: name.clone(),
                    dependency: dependency.clone(),
                });
            }
            if !dependencies.contains(&d) {
                dependencies.push(d);
            }
        }
        for &d in &self.last {
            if !dependencies.contains(&d) {
                dependencies.push(d);
            }
        }
        Ok(dependencies)
    }

    /// Records how an added component's start ended and answers whoever added it. A start
    /// that did not complete leaves the component in the report, never stopped, its name free.
    pub(crate) fn added_start_ended(&mut self, i: usize, result: Result<(), Fault>) {
        let reply = self.added_waiters.remove(&i);
        match result {
            Ok(()) => {
                self.started(i);
                tracing::info!(component = self.name(i), "started");
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(()));
                }
                if std::mem::take(&mut self.members[i].turn_pending) {
                    self.removal_turn(i);
                }
            }
            Err((outcome, error)) => {
                let rendered = error.render();
                tracing::error!(component = self.name(i), error = %rendered, "start of an added component failed");
                self.abandon(i, outcome, error);
                if let Some(reply) = reply {
                    let _ = reply.send(Err(ChangeError::StartFailed {
                        component: self.name(i).to_owned(),
                        outcome,
                        error: rendered,
                    }));
                }
                self.removal_finished(i, outcome);
            }
        }
    }

    /// At the trigger: the starts of added components still running are abandoned, as the
    /// start-up's are, and their callers told the shutdown has begun.
    pub(crate) fn abandon_additions(&mut self) {
        self.adding = Default::default();
        let waiting: Vec<_> = self.added_waiters.drain().collect();
        for (i, reply) in waiting {
            tracing::warn!(component = self.name(i), "start abandoned");
            self.abandon(i, Outcome::NotStarted, ComponentError::StartAbandoned);
            let _ = reply.send(Err(ChangeError::ShuttingDown {
                component: self.name(i).to_owned(),
            }));
            self.removal_finished(i, Outcome::NotStarted);
        }
    }

    /// Stops the component named `name` and every component depending on it, dependents
    /// first, then answers with its outcome. A removal of a component already being removed
    /// waits for the same stop.
    fn remove(&mut self, name: &str, reply: oneshot::Sender<Result<Outcome, ChangeError>>) {
        let Some(&root) = self.names.get(name) else {
            let _ = reply.send(Err(ChangeError::NotFound {
                component: name.to_owned(),
            }));
            return;
        };
        self.removal_waiters.entry(root).or_default().push(reply);
        if self.members[root].removing {
            return;
        }
        tracing::info!(component = name, "removing");
        // The component and its dependents, transitively: their stops follow the shutdown's
        // order, on this part of the graph.
        self.members[root].removing = true;
        let mut removed = vec![root];
        let mut next = 0;
        while let Some(&c) = removed.get(next) {
            next += 1;
            for k in 0..self.graph.dependents[c].len() {
                let d = self.graph.dependents[c][k];
                if !self.members[d].removing && !self.is_done(d) {
                    self.members[d].removing = true;
                    removed.push(d);
                }
            }
        }
        for &c in &removed {
            let left = self.graph.dependents[c]
                .iter()
                .filter(|&&d| !self.is_done(d))
                .count();
            self.members[c].dependents_left = left;
        }
        for &c in &removed {
            if self.members[c].dependents_left == 0 {
                self.removal_turn(c);
            }
        }
    }

    fn is_done(&self, i: usize) -> bool {
        matches!(self.record().state(i), ComponentState::Done(_))
    }

    /// Component `i`'s turn in a removal: every component depending on it has stopped.
    fn removal_turn(&mut self, i: usize) {
        let state = self.record().state(i);
        match state {
            ComponentState::Running => {
                let ctx = self.members[i]
                    .context
                    .clone()
                    .expect("a running component has a context");
                self.record().stopping(i);
                tracing::info!(component = self.name(i), "stopping");
                let registration = &self.registrations[i];
                let (component, limit) =
                    (registration.component.clone(), registration.stop_timeout);
                let span = tracing::info_span!("stop", component = self.name(i), removed = true);
                self.removals.push(
                    async move { (i, guarded::stop(&*component, &ctx, limit).await, false) }
                        .instrument(span)
                        .boxed(),
                );
            }
            ComponentState::Done(outcome) => self.removal_finished(i, outcome),
            // Its start or restart is under way: its turn is taken once that ends.
            _ => self.members[i].turn_pending = true,
        }
    }

    /// A removal's stop ended.
    pub(crate) fn removal_stopped(&mut self, i: usize, result: Result<(), Fault>) {
        let outcome = self.stop_ended(i, result);
        self.removal_finished(i, outcome);
    }

    /// Component `i`, added or removed, has ended for good: it leaves the names (for another
    /// to take), health and readiness (the report keeps it), whoever removed it is answered,
    /// and before the trigger its dependencies being removed take their turn once none of
    /// their dependents is left. After the trigger the shutdown orders what is left.
    pub(crate) fn removal_finished(&mut self, i: usize, outcome: Outcome) {
        if self.names.get(self.name(i)) == Some(&i) {
            let name = self.name(i).to_owned();
            self.names.remove(&name);
        }
        self.record().removed(i);
        for reply in self.removal_waiters.remove(&i).unwrap_or_default() {
            let _ = reply.send(Ok(outcome));
        }
        if !self.members[i].removing || self.shutdown.is_cancelled() {
            return;
        }
        for k in 0..self.graph.dependencies[i].len() {
            let d = self.graph.dependencies[i][k];
            if self.members[d].removing && !self.is_done(d) {
                let member = &mut self.members[d];
                member.dependents_left = member.dependents_left.saturating_sub(1);
                if member.dependents_left == 0 {
                    self.removal_turn(d);
                }
            }
        }
    }

    /// Takes a removal's pending turn, if its restart has ended (before the trigger).
    pub(crate) fn restart_settled(&mut self, i: usize) {
        if self.members[i].turn_pending
            && !self.shutdown.is_cancelled()
            && self.record().state(i) != ComponentState::Restarting
        {
            self.members[i].turn_pending = false;
            self.removal_turn(i);
        }
    }
}
