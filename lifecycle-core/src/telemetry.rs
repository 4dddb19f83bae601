//! The lifecycle's metrics, through the `metrics` facade: the application installs the
//! recorder (a Prometheus exporter, say); without one, each call costs next to nothing.
//!
//! [`Record`](crate::record::Record) calls these as it records, the trigger at the first
//! trigger and the lifecycle's state as an upgrade ends, so the metrics say what the report
//! says. The names and labels are listed in the crate docs' "Metrics" table.

use std::time::Duration;

use crate::state::{ComponentState, Outcome, Phase, TriggerKind};

const PHASES: [Phase; 5] = [
    Phase::Starting,
    Phase::Ready,
    Phase::Draining,
    Phase::Stopping,
    Phase::Stopped,
];

const STATES: [&str; 10] = [
    "pending",
    "starting",
    "running",
    "restarting",
    "stopping",
    "stopped",
    "failed",
    "timed_out",
    "panicked",
    "not_started",
];

/// `lifecycle_phase{phase}`: 1 for the current phase, 0 for the others.
pub(crate) fn phase(current: Phase) {
    for phase in PHASES {
        metrics::gauge!("lifecycle_phase", "phase" => phase.as_str())
            .set(f64::from(u8::from(phase == current)));
    }
}

/// `lifecycle_component_state{component, state}`: 1 for its current state, 0 for the others.
pub(crate) fn state(component: &str, current: ComponentState) {
    for state in STATES {
        metrics::gauge!(
            "lifecycle_component_state",
            "component" => component.to_owned(),
            "state" => state
        )
        .set(f64::from(u8::from(state == current.as_str())));
    }
}

/// A start (or a restart's) ended: `lifecycle_component_starts_total` and
/// `lifecycle_component_start_duration_seconds`, by component and outcome.
pub(crate) fn start_ended(component: &str, outcome: Outcome, took: Duration) {
    let labels = [
        ("component", component.to_owned()),
        ("outcome", start_outcome(outcome).to_owned()),
    ];
    metrics::counter!("lifecycle_component_starts_total", &labels).increment(1);
    metrics::histogram!("lifecycle_component_start_duration_seconds", &labels)
        .record(took.as_secs_f64());
}

/// A stop ended (or was cut off before it began): `lifecycle_component_stops_total` and
/// `lifecycle_component_stop_duration_seconds`, by component and outcome.
pub(crate) fn stop_ended(component: &str, outcome: Outcome, took: Duration) {
    let labels = [
        ("component", component.to_owned()),
        ("outcome", outcome.as_str().to_owned()),
    ];
    metrics::counter!("lifecycle_component_stops_total", &labels).increment(1);
    metrics::histogram!("lifecycle_component_stop_duration_seconds", &labels)
        .record(took.as_secs_f64());
}

/// `lifecycle_component_failures_total{component}`: failures of a component's run.
pub(crate) fn failed(component: &str) {
    metrics::counter!("lifecycle_component_failures_total", "component" => component.to_owned())
        .increment(1);
}

/// `lifecycle_component_restarts_total{component}`.
pub(crate) fn restarting(component: &str) {
    metrics::counter!("lifecycle_component_restarts_total", "component" => component.to_owned())
        .increment(1);
}

/// `lifecycle_shutdowns_total{trigger}`: counted at the trigger.
pub(crate) fn triggered(kind: TriggerKind) {
    metrics::counter!("lifecycle_shutdowns_total", "trigger" => kind.as_str()).increment(1);
}

/// `lifecycle_drain_delay_seconds`: the drain delay as applied.
pub(crate) fn drain(delay: Duration) {
    metrics::gauge!("lifecycle_drain_delay_seconds").set(delay.as_secs_f64());
}

/// `lifecycle_shutdown_duration_seconds`: from the trigger to the end of the last stop.
pub(crate) fn shutdown_ended(took: Duration) {
    metrics::gauge!("lifecycle_shutdown_duration_seconds").set(took.as_secs_f64());
}

/// A successful start is "started"; a failed one has the outcome's name.
fn start_outcome(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Stopped => "started",
        other => other.as_str(),
    }
}

/// An in-place upgrade attempt ended: `lifecycle_upgrades_total{outcome}`, the outcome
/// `succeeded`, `failed` or `refused`.
#[cfg_attr(not(all(unix, feature = "upgrade")), allow(dead_code))]
pub(crate) fn upgrade_ended(outcome: &'static str) {
    metrics::counter!("lifecycle_upgrades_total", "outcome" => outcome).increment(1);
}
