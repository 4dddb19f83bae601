//! `Timeline`: what happened in a test run, with the assertions tests ask most.

use std::fmt;

use crate::record::Step;
use crate::report::{ComponentReport, Report};
use crate::state::{Outcome, Phase};

/// What happened in a [`TestRun`](super::TestRun): the [`Report`] (each component's start
/// and stop, in milliseconds since the run began), each phase the lifecycle entered, and each
/// component's steps in the order they happened (which times alone cannot tell on the paused
/// clock, where many steps share one instant).
///
/// The `assert_*` methods panic with the whole timeline printed, and return `&Self` so that
/// they chain.
#[derive(Debug)]
pub struct Timeline {
    report: Report,
    phases: Vec<(Phase, f64)>,
    steps: Vec<(String, Step, f64)>,
}

impl Timeline {
    pub(crate) fn new(
        report: Report,
        phases: Vec<(Phase, f64)>,
        steps: Vec<(String, Step, f64)>,
    ) -> Self {
        Timeline {
            report,
            phases,
            steps,
        }
    }

    /// Each component's steps in the order they happened: its name, the step, and its time in
    /// milliseconds since the run began.
    pub fn steps(&self) -> &[(String, Step, f64)] {
        &self.steps
    }

    /// Where `name`'s first `step` is in [`steps`](Self::steps).
    fn position(&self, name: &str, step: Step) -> Option<usize> {
        self.steps
            .iter()
            .position(|(n, s, _)| n == name && *s == step)
    }

    /// The report, as [`Lifecycle::run`](crate::Lifecycle::run) returned it (or as a forced
    /// exit would print it).
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// The report, owned.
    pub fn into_report(self) -> Report {
        self.report
    }

    /// Each phase the lifecycle entered, with its time in milliseconds since the run began.
    pub fn phases(&self) -> &[(Phase, f64)] {
        &self.phases
    }

    /// When the lifecycle first entered `phase`, in milliseconds since the run began.
    pub fn entered(&self, phase: Phase) -> Option<f64> {
        self.phases
            .iter()
            .find(|(p, _)| *p == phase)
            .map(|(_, t)| *t)
    }

    /// The component named `name`.
    ///
    /// # Panics
    ///
    /// Panics when no component is registered under `name`.
    pub fn component(&self, name: &str) -> &ComponentReport {
        self.report
            .component(name)
            .unwrap_or_else(|| panic!("no component named `{name}` in\n{self}"))
    }

    /// Asserts the exit code.
    #[track_caller]
    pub fn assert_exit_code(&self, code: i32) -> &Self {
        assert!(
            self.report.exit_code == code,
            "exit code {}, expected {code}, in\n{self}",
            self.report.exit_code
        );
        self
    }

    /// Asserts how component `name` ended.
    #[track_caller]
    pub fn assert_outcome(&self, name: &str, outcome: Outcome) -> &Self {
        let actual = self.component(name).outcome;
        assert!(
            actual == outcome,
            "`{name}` ended {actual}, expected {outcome}, in\n{self}"
        );
        self
    }

    /// Asserts that `first` finished stopping before `then` began to.
    #[track_caller]
    pub fn assert_stopped_before(&self, first: &str, then: &str) -> &Self {
        let ended = self.position(first, Step::StopEnded);
        let began = self.position(then, Step::StopBegan);
        let ordered = match (ended, began) {
            (Some(ended), Some(began)) => ended < began,
            // `first` was never stopped: there was nothing to wait for only if it never ran.
            (None, _) => self.position(first, Step::Started).is_none(),
            (Some(_), None) => true,
        };
        assert!(
            ordered,
            "`{first}` did not stop before `{then}` began to, in\n{self}"
        );
        self
    }

    /// Asserts that `first` had started before `then` began to start.
    #[track_caller]
    pub fn assert_started_before(&self, first: &str, then: &str) -> &Self {
        let started = self.position(first, Step::Started);
        let began = self.position(then, Step::StartBegan);
        assert!(
            matches!((started, began), (Some(started), Some(began)) if started < began),
            "`{first}` had not started before `{then}` began to, in\n{self}"
        );
        self
    }

    /// Asserts that component `name` was removed while the lifecycle ran
    /// ([`LifecycleHandle::remove`](crate::LifecycleHandle::remove)), before the trigger.
    #[track_caller]
    pub fn assert_removed(&self, name: &str) -> &Self {
        let component = self.component(name);
        let before_trigger = match (component.stop_ended_ms, self.entered(Phase::Draining)) {
            (Some(ended), Some(draining)) => ended <= draining,
            (Some(_), None) => true,
            (None, _) => false,
        };
        assert!(
            component.removed && before_trigger,
            "`{name}` was not removed before the trigger, in\n{self}"
        );
        self
    }

    /// Asserts that component `name` never began to start.
    #[track_caller]
    pub fn assert_never_started(&self, name: &str) -> &Self {
        assert!(
            self.component(name).start_began_ms.is_none(),
            "`{name}` started, in\n{self}"
        );
        self
    }

    /// Asserts that component `name` was never stopped (its start did not complete, or it
    /// never started).
    #[track_caller]
    pub fn assert_never_stopped(&self, name: &str) -> &Self {
        assert!(
            self.component(name).stop_began_ms.is_none(),
            "`{name}` was stopped, in\n{self}"
        );
        self
    }

    /// Asserts that readiness was withdrawn (the lifecycle left [`Phase::Ready`]) before any
    /// component began to stop.
    #[track_caller]
    pub fn assert_readiness_off_before_any_stop(&self) -> &Self {
        let first_stop = self
            .steps
            .iter()
            .find(|(_, s, _)| *s == Step::StopBegan)
            .map_or(f64::INFINITY, |(_, _, t)| *t);
        let off = self
            .phases
            .iter()
            .skip_while(|(p, _)| *p != Phase::Ready)
            .find(|(p, _)| *p != Phase::Ready)
            .map(|(_, t)| *t);
        assert!(
            off.is_some_and(|off| off <= first_stop),
            "readiness was not withdrawn before the first stop, in\n{self}"
        );
        self
    }
}

impl fmt::Display for Timeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "phases:")?;
        for (phase, at) in &self.phases {
            write!(f, " {} at {at:.1} ms;", phase.as_str())?;
        }
        write!(f, "\nsteps:")?;
        for (name, step, at) in &self.steps {
            write!(f, " {name} {step:?} at {at:.1} ms;")?;
        }
        write!(f, "\n{}", self.report)
    }
}
