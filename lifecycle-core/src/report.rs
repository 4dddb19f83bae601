//! The shutdown report: what happened to each component, and the exit code.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::state::{Outcome, TriggerKind};

/// The process exit codes a lifecycle ends with, as [`Report::exit_code`] gives them.
pub mod exit_code {
    /// Every component started, the shutdown was asked for (signal or request) and every
    /// component stopped in time.
    pub const SUCCESS: i32 = 0;
    /// Something failed: a start, a component at run time, or a stop (error, timeout, panic).
    pub const FAILURE: i32 = 1;
    /// The shutdown budget ran out before the shutdown finished.
    pub const DEADLINE: i32 = 70;
    /// A second signal arrived during the shutdown and ended the process at once, as a shell
    /// reports a command ended by Ctrl-C.
    pub const FORCED: i32 = 130;

    use crate::state::{Outcome, TriggerKind};

    /// The code for a lifecycle that ended on its own: [`DEADLINE`] if the budget ran out,
    /// [`FAILURE`] if it was triggered by a failure or any component failed, timed out or
    /// panicked, [`SUCCESS`] otherwise.
    pub(crate) fn for_outcome(
        trigger: Option<TriggerKind>,
        outcomes: impl IntoIterator<Item = Outcome>,
        budget_exhausted: bool,
    ) -> i32 {
        let failed = matches!(
            trigger,
            Some(TriggerKind::StartFailed | TriggerKind::ComponentFailed)
        ) || outcomes
            .into_iter()
            .any(|o| matches!(o, Outcome::Failed | Outcome::TimedOut | Outcome::Panicked));
        if budget_exhausted {
            DEADLINE
        } else if failed {
            FAILURE
        } else {
            SUCCESS
        }
    }
}

/// What a lifecycle did, from start-up to exit.
///
/// [`Lifecycle::run`](crate::Lifecycle::run) returns it; a forced exit prints it before the
/// process ends. It renders as a table with `Display` and as JSON with serde, in this stable
/// shape (times in milliseconds since [`run`](crate::Lifecycle::run) began, `null` for phases
/// that did not happen):
///
/// ```json
/// {"trigger": {"kind": "signal", "detail": "SIGTERM"}, "exit_code": 0, "total_ms": 812.4,
///  "drain_delay_ms": 500.0, "components": [{"name": "db", "dependencies": [],
///  "outcome": "stopped", "start_began_ms": 0.1, "start_ended_ms": 20.3,
///  "stop_began_ms": 790.2, "stop_ended_ms": 812.3, "error": null}]}
/// ```
///
/// # Returning it from `main`
///
/// `Report` implements [`Termination`](std::process::Termination), and while it is alive the
/// lifecycle's deadline stays armed: return it from `main` so that a runtime that cannot shut
/// down (a `spawn_blocking` that never returns) still exits by the deadline. Dropping the
/// report disarms the deadline and the signal handlers.
#[derive(Debug, Serialize, Deserialize)]
#[non_exhaustive]
#[must_use = "dropping the report disarms the deadline: return it from `main`"]
pub struct Report {
    /// What started the shutdown.
    pub trigger: TriggerReport,
    /// The code the process should exit with; see [`exit_code`].
    pub exit_code: i32,
    /// Milliseconds from the start of the lifecycle to the end of the shutdown.
    pub total_ms: f64,
    /// The configured drain delay, in milliseconds (0 when the shutdown came during start-up,
    /// which skips it).
    pub drain_delay_ms: f64,
    /// Every registered component, in registration order, then those added while the
    /// lifecycle ran, in the order they were added (removed ones included, marked
    /// [`removed`](ComponentReport::removed)).
    pub components: Vec<ComponentReport>,
    /// The in-place upgrades attempted during the run, in order (feature `upgrade`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upgrades: Vec<UpgradeReport>,
    /// Keeps the deadline armed while the report is alive.
    #[serde(skip)]
    pub(crate) deadline: Option<ArmedDeadline>,
}

/// The watchdog's guard, which the report keeps so that the deadline stays armed until it is
/// dropped (see "Returning it from `main`" on [`Report`]). Opaque: the report is data the
/// watchdog itself writes at a forced exit, so it does not know the watchdog.
pub(crate) struct ArmedDeadline {
    _guard: Box<dyn Send + Sync>,
}

impl ArmedDeadline {
    pub(crate) fn new(guard: impl Send + Sync + 'static) -> Self {
        ArmedDeadline {
            _guard: Box::new(guard),
        }
    }
}

impl fmt::Debug for ArmedDeadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ArmedDeadline")
    }
}

/// What started a shutdown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TriggerReport {
    /// The kind of trigger.
    pub kind: TriggerKind,
    /// The signal name, the reason given, or the failing component and its error.
    pub detail: String,
}

/// One in-place upgrade attempt, in the [`Report`]'s `upgrades`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UpgradeReport {
    /// Whether the new process became ready and took over.
    pub succeeded: bool,
    /// Whether the upgrade was refused before any process started (this process is PID 1 of
    /// its PID namespace, as in a container: its exit would end the new process too).
    #[serde(default)]
    pub refused: bool,
    /// The new process's id, when it was started.
    pub pid: Option<u32>,
    /// The new process's exit code, when it exited during the attempt.
    pub exit_code: Option<i32>,
    /// What happened, in a few words.
    pub detail: String,
}

/// One component's line in the [`Report`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ComponentReport {
    /// The registered name.
    pub name: String,
    /// The names it depends on.
    pub dependencies: Vec<String>,
    /// How its lifecycle ended.
    pub outcome: Outcome,
    /// When its (last) start began.
    pub start_began_ms: Option<f64>,
    /// When its (last) start ended, in success or not.
    pub start_ended_ms: Option<f64>,
    /// When its stop began.
    pub stop_began_ms: Option<f64>,
    /// When its stop ended, or was cut off.
    pub stop_ended_ms: Option<f64>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// What it was still waiting for when it was cut off (its stop overran, the budget ran
    /// out, or the process was forced to exit): a request, a job, a message, a named task,
    /// the oldest first, at most [`HELD_BY_LIMIT`](crate::held_by::HELD_BY_LIMIT) and a count of
    /// the rest. Empty (and left out of the JSON) otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_by: Vec<String>,
    /// Whether it was removed while the lifecycle ran
    /// ([`LifecycleHandle::remove`](crate::LifecycleHandle::remove)), its stop times those of
    /// its removal; also set for a component added at run time whose start did not complete.
    /// Left out of the JSON when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
}

impl Report {
    /// The code the process should exit with; see [`exit_code`].
    pub fn exit_code(&self) -> i32 {
        self.exit_code
    }

    /// The report as the JSON object documented on [`Report`].
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report always serialises")
    }

    /// The component named `name`, if registered or added. A name removed and added again is
    /// in the report twice: this is the latest.
    pub fn component(&self, name: &str) -> Option<&ComponentReport> {
        self.components.iter().rev().find(|c| c.name == name)
    }

    /// Writes the report as JSON to `path`, atomically: to a temporary file beside it, then
    /// renamed over it, so a reader never sees half a report.
    ///
    /// [`LifecycleBuilder::report_file`](crate::LifecycleBuilder::report_file) has the
    /// lifecycle do it at every exit, forced ones included.
    ///
    /// # Errors
    ///
    /// The I/O error of the write or the rename.
    pub fn write_to(&self, path: &std::path::Path) -> std::io::Result<()> {
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(format!(".{}.tmp", std::process::id()));
        let temporary = std::path::PathBuf::from(temporary);
        std::fs::write(&temporary, self.to_json())?;
        std::fs::rename(&temporary, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&temporary);
        })
    }
}

/// Returned from `main`, the report prints as a table on stderr and sets the exit code.
impl std::process::Termination for Report {
    fn report(self) -> std::process::ExitCode {
        eprint!("{self}");
        std::process::ExitCode::from(u8::try_from(self.exit_code).unwrap_or(1))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "shutdown by {} ({}): exit code {}, {:.1} ms, drain delay {:.1} ms",
            self.trigger.kind.as_str(),
            self.trigger.detail,
            self.exit_code,
            self.total_ms,
            self.drain_delay_ms
        )?;
        let span = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => format!("{a:.1}..{b:.1}"),
            (Some(a), None) => format!("{a:.1}.."),
            _ => "-".to_owned(),
        };
        let rows: Vec<[String; 6]> = self
            .components
            .iter()
            .map(|c| {
                [
                    if c.removed {
                        format!("{} (removed)", c.name)
                    } else {
                        c.name.clone()
                    },
                    if c.dependencies.is_empty() {
                        "-".into()
                    } else {
                        c.dependencies.join(",")
                    },
                    c.outcome.to_string(),
                    span(c.start_began_ms, c.start_ended_ms),
                    span(c.stop_began_ms, c.stop_ended_ms),
                    c.error.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        let header = [
            "component",
            "depends on",
            "outcome",
            "start ms",
            "stop ms",
            "error",
        ];
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, cells: [&str; 6]| {
            for (i, cell) in cells.iter().enumerate() {
                if i == 5 {
                    writeln!(f, "{cell}")?;
                } else {
                    write!(f, "{cell:<w$}  ", w = widths[i])?;
                }
            }
            Ok(())
        };
        line(f, header)?;
        for (row, component) in rows.iter().zip(&self.components) {
            line(f, [&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]])?;
            for held in &component.held_by {
                writeln!(f, "  held by: {held}")?;
            }
        }
        for upgrade in &self.upgrades {
            let pid = upgrade.pid.map_or("-".into(), |p| p.to_string());
            let code = upgrade.exit_code.map_or("-".into(), |c| c.to_string());
            let result = if upgrade.succeeded {
                "succeeded"
            } else {
                "failed"
            };
            writeln!(
                f,
                "upgrade {result}: new process {pid}, exit code {code}: {}",
                upgrade.detail
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            trigger: TriggerReport {
                kind: TriggerKind::Signal,
                detail: "SIGTERM".into(),
            },
            exit_code: 0,
            total_ms: 12.5,
            drain_delay_ms: 0.0,
            components: vec![ComponentReport {
                name: "db".into(),
                dependencies: vec![],
                outcome: Outcome::Stopped,
                start_began_ms: Some(0.0),
                start_ended_ms: Some(1.0),
                stop_began_ms: None,
                stop_ended_ms: None,
                error: None,
                held_by: vec![],
                removed: false,
            }],
            upgrades: vec![],
            deadline: None,
        }
    }

    #[test]
    fn json_has_the_documented_shape() {
        let value: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "trigger": {"kind": "signal", "detail": "SIGTERM"},
                "exit_code": 0, "total_ms": 12.5, "drain_delay_ms": 0.0,
                "components": [{"name": "db", "dependencies": [], "outcome": "stopped",
                    "start_began_ms": 0.0, "start_ended_ms": 1.0,
                    "stop_began_ms": null, "stop_ended_ms": null, "error": null}]
            })
        );
    }

    #[test]
    fn json_round_trips() {
        let report: Report = serde_json::from_str(&sample().to_json()).unwrap();
        assert_eq!(report.components, sample().components);
        assert_eq!(report.trigger, sample().trigger);
    }

    #[test]
    fn table_lists_each_component() {
        let table = sample().to_string();
        assert!(
            table.starts_with("shutdown by signal (SIGTERM): exit code 0"),
            "{table}"
        );
        assert!(table.lines().nth(2).unwrap().starts_with("db "), "{table}");
    }
}
