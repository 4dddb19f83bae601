//! `Record`: what happened to each component (its state, the times of its start and stop, its
//! errors) and to the lifecycle (its phases, the drain delay, whether the budget ran out).
//!
//! The orchestrator is its only writer (the builder fills it in before the run): it decides and
//! tells the record what happened through methods named for it (`starting`, `started`,
//! `stopped`, ...); handles, the health endpoints, the testing kit and the watchdog only read.
//! The report is made from it as it stands, with the trigger (which has writers of its own,
//! see `trigger.rs`), the upgrades (the upgrader's) and what the registry says running
//! components wait for, so a forced exit shows the same report, partly filled.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::component_error::ComponentError;
use crate::registry::Registry;
use crate::report::{exit_code, ComponentReport, Report, TriggerReport, UpgradeReport};
use crate::state::{ComponentState, Outcome, Phase, TriggerKind};
use crate::telemetry;

/// The record of one run of a lifecycle.
#[derive(Debug, Default)]
pub(crate) struct Record {
    began: Option<Instant>,
    /// The drain delay as applied: zero until the drain begins, and when it is skipped.
    drain_delay: Duration,
    budget_exhausted: bool,
    /// Each phase the lifecycle entered, and when.
    phases: Vec<(Phase, Instant)>,
    /// Each start and stop, beginning and end, in the order they were recorded: times alone
    /// cannot order what happened within one instant of the paused clock.
    steps: Vec<(usize, Step, Instant)>,
    components: Vec<ComponentRecord>,
}

/// A step of a component's lifecycle, in the order a [`Timeline`](crate::testing::Timeline)
/// lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))]
#[non_exhaustive]
pub enum Step {
    /// Its start (or a restart's) began.
    StartBegan,
    /// Its start succeeded: it runs.
    Started,
    /// Its stop began.
    StopBegan,
    /// Its stop ended, or was cut off.
    StopEnded,
}

/// What happened to one component: its state, the times of its start and stop, its errors.
pub(crate) struct ComponentRecord {
    name: Arc<str>,
    dependencies: Vec<String>,
    state: ComponentState,
    start_began: Option<Instant>,
    start_ended: Option<Instant>,
    stop_began: Option<Instant>,
    stop_ended: Option<Instant>,
    /// A failure of the current run, reported as its outcome when it stops.
    run_time_error: Option<ComponentError>,
    error: Option<ComponentError>,
    /// Removed while the lifecycle ran (or added and never started): out of health, readiness
    /// and `held_by`, still in the report.
    removed: bool,
}

impl ComponentRecord {
    pub(crate) fn new(name: &str, dependencies: Vec<String>) -> Self {
        ComponentRecord {
            name: name.into(),
            dependencies,
            state: ComponentState::Pending,
            start_began: None,
            start_ended: None,
            stop_began: None,
            stop_ended: None,
            run_time_error: None,
            error: None,
            removed: false,
        }
    }
}

impl ComponentRecord {
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn state(&self) -> ComponentState {
        self.state
    }

    /// Whether it was removed while the lifecycle ran (or added and never started).
    pub(crate) fn removed(&self) -> bool {
        self.removed
    }
}

impl std::fmt::Debug for ComponentRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentRecord")
            .field("name", &self.name)
            .field("state", &self.state)
            .finish()
    }
}

impl Record {
    pub(crate) fn new(components: Vec<ComponentRecord>) -> Self {
        for component in &components {
            telemetry::state(&component.name, component.state);
        }
        Record {
            components,
            ..Record::default()
        }
    }

    /// A component was added while the lifecycle runs; returns its index.
    pub(crate) fn added(&mut self, component: ComponentRecord) -> usize {
        telemetry::state(&component.name, component.state);
        self.components.push(component);
        self.components.len() - 1
    }

    /// Component `i` was removed (or, added, never started): it has ended for good.
    pub(crate) fn removed(&mut self, i: usize) {
        // Its tasks stay in the registry: the report names work its stop gave up on, as for
        // any stopped one.
        self.components[i].removed = true;
    }

    pub(crate) fn components(&self) -> &[ComponentRecord] {
        &self.components
    }

    pub(crate) fn state(&self, i: usize) -> ComponentState {
        self.components[i].state
    }

    /// The lifecycle's run began.
    pub(crate) fn began(&mut self) {
        let now = Instant::now();
        self.began = Some(now);
        self.phases.push((Phase::Starting, now));
        telemetry::phase(Phase::Starting);
    }

    /// The lifecycle entered `phase`; `triggered_at`, the trigger's time, if there was one.
    pub(crate) fn entered(&mut self, phase: Phase, triggered_at: Option<Instant>) {
        let now = Instant::now();
        self.phases.push((phase, now));
        telemetry::phase(phase);
        if let (Phase::Stopped, Some(triggered)) = (phase, triggered_at) {
            telemetry::shutdown_ended(now.saturating_duration_since(triggered));
        }
    }

    /// Each step, in order: the component's name, the step, and its time in milliseconds since
    /// the run began.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(crate) fn steps(&self) -> Vec<(String, Step, f64)> {
        let began = self.began.unwrap_or_else(Instant::now);
        self.steps
            .iter()
            .map(|&(i, step, at)| {
                let at = millis(at.saturating_duration_since(began));
                (self.components[i].name.to_string(), step, at)
            })
            .collect()
    }

    fn step(&mut self, i: usize, step: Step, at: Instant) {
        self.steps.push((i, step, at));
    }

    fn set_state(&mut self, i: usize, state: ComponentState) {
        let component = &mut self.components[i];
        component.state = state;
        telemetry::state(&component.name, state);
    }

    /// Each phase entered, with its time in milliseconds since the run began.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(crate) fn phases(&self) -> Vec<(Phase, f64)> {
        let began = self.began.unwrap_or_else(Instant::now);
        self.phases
            .iter()
            .map(|&(phase, at)| (phase, millis(at.saturating_duration_since(began))))
            .collect()
    }

    pub(crate) fn drain_began(&mut self, delay: Duration) {
        self.drain_delay = delay;
        telemetry::drain(delay);
    }

    pub(crate) fn budget_exhausted(&mut self) {
        self.budget_exhausted = true;
    }

    /// Component `i`'s start (or restart) began.
    pub(crate) fn starting(&mut self, i: usize, at: Instant) {
        self.set_state(i, ComponentState::Starting);
        self.components[i].start_began = Some(at);
        self.step(i, Step::StartBegan, at);
    }

    /// Component `i` started and runs.
    pub(crate) fn started(&mut self, i: usize) {
        let now = Instant::now();
        self.set_state(i, ComponentState::Running);
        let component = &mut self.components[i];
        component.start_ended = Some(now);
        let took = component.start_began.map_or(Duration::ZERO, |t| now - t);
        telemetry::start_ended(&component.name, Outcome::Stopped, took);
        self.step(i, Step::Started, now);
    }

    /// Component `i` failed at run time and is being stopped and started again.
    pub(crate) fn restarting(&mut self, i: usize) {
        self.set_state(i, ComponentState::Restarting);
        telemetry::restarting(&self.components[i].name);
    }

    /// Component `i`'s current run failed; the failure becomes its outcome when it stops. The
    /// first failure of a run is the one kept.
    pub(crate) fn failed(&mut self, i: usize, error: ComponentError) {
        telemetry::failed(&self.components[i].name);
        self.components[i].run_time_error.get_or_insert(error);
    }

    /// Component `i` ended without a run to stop: its start failed or was abandoned, or it
    /// failed at run time with no restart left while not running.
    pub(crate) fn ended(&mut self, i: usize, outcome: Outcome, error: ComponentError) {
        let now = Instant::now();
        let was_starting = self.components[i].state == ComponentState::Starting;
        self.set_state(i, ComponentState::Done(outcome));
        let component = &mut self.components[i];
        if was_starting {
            let took = component.start_began.map_or(Duration::ZERO, |t| now - t);
            telemetry::start_ended(&component.name, outcome, took);
        }
        component.start_ended.get_or_insert(now);
        component.run_time_error = None;
        component.error = Some(error);
    }

    /// Component `i`'s stop began.
    pub(crate) fn stopping(&mut self, i: usize) {
        let now = Instant::now();
        self.set_state(i, ComponentState::Stopping);
        self.components[i].stop_began = Some(now);
        self.step(i, Step::StopBegan, now);
    }

    /// Component `i`'s stop ended. A clean stop of a run that had failed reports the failure.
    /// Returns the outcome recorded.
    pub(crate) fn stopped(
        &mut self,
        i: usize,
        result: Result<(), (Outcome, ComponentError)>,
    ) -> Outcome {
        let component = &mut self.components[i];
        let (outcome, error) = match (result, component.run_time_error.take()) {
            (Ok(()), None) => (Outcome::Stopped, None),
            (Ok(()), Some(failure)) => (Outcome::Failed, Some(failure)),
            (Err((outcome, error)), _) => (outcome, Some(error)),
        };
        let now = Instant::now();
        component.stop_ended = Some(now);
        component.error = error;
        let took = component.stop_began.map_or(Duration::ZERO, |t| now - t);
        telemetry::stop_ended(&component.name, outcome, took);
        self.set_state(i, ComponentState::Done(outcome));
        self.step(i, Step::StopEnded, now);
        outcome
    }

    /// The shutdown budget ran out before component `i`'s stop turn: cut off, never stopped.
    pub(crate) fn cut_off(&mut self, i: usize, error: ComponentError) {
        self.set_state(i, ComponentState::Done(Outcome::TimedOut));
        telemetry::stop_ended(&self.components[i].name, Outcome::TimedOut, Duration::ZERO);
        self.components[i].error = Some(error);
    }

    /// The error to show for component `i` now: its final one, or a run-time failure of the
    /// run still going.
    pub(crate) fn error(&self, i: usize) -> Option<&ComponentError> {
        let component = &self.components[i];
        component
            .error
            .as_ref()
            .or(component.run_time_error.as_ref())
    }

    /// Whether component `i` runs or stops, so has work in progress to ask about.
    pub(crate) fn is_live(&self, i: usize) -> bool {
        matches!(
            self.components[i].state,
            ComponentState::Running | ComponentState::Restarting | ComponentState::Stopping
        )
    }

    /// The exit code the record calls for, the shutdown triggered by `trigger`.
    pub(crate) fn exit_code(&self, trigger: Option<TriggerKind>) -> i32 {
        exit_code::for_outcome(
            trigger,
            self.components.iter().map(|s| match s.state {
                ComponentState::Done(outcome) => outcome,
                ComponentState::Pending | ComponentState::Starting => Outcome::NotStarted,
                _ => Outcome::TimedOut,
            }),
            self.budget_exhausted,
        )
    }

    /// A report of the record as it stands, with components still running or stopping shown
    /// as cut off by `cut_by` (used when the process must end now): the registry says what
    /// they wait for, and what stops gave up on; the trigger and the upgrades are not the
    /// record's to keep.
    pub(crate) fn snapshot(
        &self,
        exit_code: i32,
        cut_by: &str,
        registry: &Registry,
        trigger: Option<TriggerReport>,
        upgrades: Vec<UpgradeReport>,
    ) -> Report {
        let now = Instant::now();
        let began = self.began.unwrap_or(now);
        let ms = |t: Option<Instant>| t.map(|t| millis(t.saturating_duration_since(began)));
        let components = self
            .components
            .iter()
            .enumerate()
            .map(|(i, component)| {
                let error = self.error(i).map(ComponentError::render);
                let mut held_by = match self.error(i).map(ComponentError::held_by) {
                    Some(held) if !held.is_empty() => held.to_vec(),
                    _ => registry.given_up(i),
                };
                let (outcome, error) = match component.state {
                    ComponentState::Done(outcome) => (outcome, error),
                    ComponentState::Pending | ComponentState::Starting => {
                        (Outcome::NotStarted, error)
                    }
                    ComponentState::Running
                    | ComponentState::Restarting
                    | ComponentState::Stopping => {
                        held_by = registry.held_by(i);
                        (
                            Outcome::TimedOut,
                            Some(match error {
                                Some(error) => format!("{cut_by}; {error}"),
                                None => cut_by.to_owned(),
                            }),
                        )
                    }
                };
                ComponentReport {
                    name: component.name.to_string(),
                    dependencies: component.dependencies.clone(),
                    outcome,
                    start_began_ms: ms(component.start_began),
                    start_ended_ms: ms(component.start_ended),
                    stop_began_ms: ms(component.stop_began),
                    stop_ended_ms: ms(component.stop_ended),
                    error,
                    held_by,
                    removed: component.removed,
                }
            })
            .collect();
        let trigger = trigger.unwrap_or(TriggerReport {
            kind: TriggerKind::Requested,
            detail: "no trigger".into(),
        });
        Report {
            trigger,
            exit_code,
            total_ms: millis(now.saturating_duration_since(began)),
            drain_delay_ms: millis(self.drain_delay),
            components,
            upgrades,
            deadline: None,
        }
    }
}

/// Milliseconds with microsecond precision, as the report shows them.
fn millis(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1e3
}
