//! The watchdog: a thread that ends the process at the deadline or on a second signal, even
//! when the async runtime is stuck.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::lifecycle_state::LifecycleState;
use crate::report::exit_code;
use crate::signals::{Signal, SignalListener};
use crate::state::TriggerKind;

/// Arms the process deadline at the trigger and forces the exit when it passes or when a
/// second signal arrives. Disarmed when dropped.
///
/// It runs on a plain thread and uses the wall clock, never tokio's: it exists for the case
/// where the runtime cannot make progress (a blocking call on a worker, a runtime drop waiting
/// for `spawn_blocking`).
#[derive(Debug)]
pub(crate) struct Watchdog {
    events: mpsc::Sender<Event>,
    _signals: Option<SignalListener>,
}

/// What the watchdog thread hears.
#[derive(Debug)]
pub(crate) enum Event {
    Signal(Signal),
    Triggered,
    Disarm,
}

impl Watchdog {
    /// Installs the signal handlers and starts the watchdog thread.
    ///
    /// Every trigger reaches it through `state`, so the deadline is armed even when the
    /// runtime that would run the orchestrator is stuck.
    pub(crate) fn start(
        state: Arc<LifecycleState>,
        budget: Duration,
        signals: &[Signal],
        report_file: Option<PathBuf>,
    ) -> std::io::Result<Self> {
        let (events, receiver) = mpsc::channel();
        let told = events.clone();
        state.tell_of_triggers(move || {
            let _ = told.send(Event::Triggered);
        });
        let listener = if signals.is_empty() {
            None
        } else {
            let events = events.clone();
            Some(SignalListener::install(signals, move |signal| {
                let _ = events.send(Event::Signal(signal));
            })?)
        };
        std::thread::Builder::new()
            .name("lifecycle-watchdog".into())
            .spawn(move || watch(&receiver, &state, budget, report_file.as_deref()))?;
        Ok(Watchdog {
            events,
            _signals: listener,
        })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = self.events.send(Event::Disarm);
    }
}

fn watch(
    events: &mpsc::Receiver<Event>,
    state: &LifecycleState,
    budget: Duration,
    report_file: Option<&Path>,
) {
    let force_exit = |code, why: &str| -> ! { force_exit(state, code, why, report_file) };
    let mut deadline: Option<Instant> = None;
    let mut signalled = false;
    loop {
        let event = match deadline {
            None => events.recv().ok(),
            Some(deadline) => {
                match events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(event) => Some(event),
                    Err(RecvTimeoutError::Timeout) => force_exit(
                        exit_code::DEADLINE,
                        &format!("shutdown budget of {budget:?} exhausted"),
                    ),
                    Err(RecvTimeoutError::Disconnected) => None,
                }
            }
        };
        match event {
            None | Some(Event::Disarm) => return,
            Some(Event::Signal(signal)) if signalled => force_exit(
                exit_code::FORCED,
                &format!("second signal ({})", signal.name()),
            ),
            Some(Event::Signal(signal)) => {
                // Act first: logging can block (a full pipe, a logger's lock), and must never
                // keep the deadline from being armed.
                signalled = true;
                state.trigger(TriggerKind::Signal, signal.name());
                deadline.get_or_insert_with(|| deadline_after(budget));
                let name = signal.name();
                log_aside(move || tracing::warn!(signal = name, "signal received, shutting down"));
            }
            Some(Event::Triggered) => {
                deadline.get_or_insert_with(|| deadline_after(budget));
            }
        }
    }
}

/// What stands for "no deadline" when the budget is too large to add to a clock reading
/// (`Duration::MAX`, say): a century.
pub(crate) const NO_DEADLINE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

fn deadline_after(budget: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(budget).unwrap_or(now + NO_DEADLINE)
}

/// How long a forced exit waits for its log lines to be written, when the log's pipe may be
/// full or its lock held by a thread that blocked on it.
const LOG_WAIT: Duration = Duration::from_millis(200);

/// Writes the report file, prints what is known (waiting at most [`LOG_WAIT`] for a log that
/// may be blocked), and ends the process, without unwinding or waiting for anything else.
fn force_exit(state: &LifecycleState, code: i32, why: &str, report_file: Option<&Path>) -> ! {
    let report = state.snapshot(code, &format!("cut off by forced exit: {why}"));
    let written = report_file.map(|path| (path.to_owned(), report.write_to(path)));
    let why = why.to_owned();
    let logged = log_aside(move || {
        tracing::error!(exit_code = code, reason = %why, report = %report.to_json(), "forced exit");
        if let Some((path, Err(error))) = written {
            tracing::error!(path = %path.display(), %error, "writing the report failed");
        }
        let _ = std::io::stdout().flush();
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "lifecycle: forced exit: {why}\n{report}");
        let _ = stderr.flush();
    });
    let _ = logged.recv_timeout(LOG_WAIT);
    std::process::exit(code)
}

/// Runs `log` on a thread of its own, so that a log blocked on a full pipe or on a lock held by
/// a blocked thread cannot block the watchdog; the receiver hears when it is done.
fn log_aside(log: impl FnOnce() + Send + 'static) -> mpsc::Receiver<()> {
    let (done, finished) = mpsc::channel();
    // With no thread to spare the log is dropped, never the watchdog's duty.
    let _ = std::thread::Builder::new()
        .name("lifecycle-watchdog-log".into())
        .spawn(move || {
            log();
            let _ = done.send(());
        });
    finished
}
