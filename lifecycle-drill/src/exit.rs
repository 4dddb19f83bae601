//! `ServiceExit`: how an in-process service ended.

/// How an in-process service ended, for [`Drill::run_in_process`](crate::Drill::run_in_process):
/// the exit code it would have had as a process, and its own report.
///
/// `()` converts to exit code 0 and an `i32` to that code, so a stop future that returns
/// either needs no `ServiceExit` of its own.
///
/// # Examples
///
/// ```
/// use lifecycle_drill::ServiceExit;
///
/// let exit = ServiceExit::new(0).report_json(r#"{"exit_code": 0}"#);
/// assert_eq!(exit.code, 0);
/// assert_eq!(exit.report.unwrap()["exit_code"], 0);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ServiceExit {
    /// The exit code: 0 for a clean stop.
    pub code: i32,
    /// The service's own report, included in the summary.
    pub report: Option<serde_json::Value>,
}

impl ServiceExit {
    /// An exit with `code` and no report.
    pub fn new(code: i32) -> Self {
        Self { code, report: None }
    }

    /// Adds the service's report, as JSON text (a `lifecycle_core::Report::to_json()`, say).
    /// Text that is not JSON is kept as a JSON string rather than lost.
    #[must_use]
    pub fn report_json(mut self, json: impl AsRef<str>) -> Self {
        let json = json.as_ref();
        self.report = Some(
            serde_json::from_str(json)
                .unwrap_or_else(|_| serde_json::Value::String(json.to_owned())),
        );
        self
    }
}

/// A stop that returns nothing is a clean stop: exit code 0.
impl From<()> for ServiceExit {
    fn from((): ()) -> Self {
        Self::new(0)
    }
}

/// A stop that returns an exit code.
impl From<i32> for ServiceExit {
    fn from(code: i32) -> Self {
        Self::new(code)
    }
}
