//! Telling systemd where the service is, when it runs as a `Type=notify` unit.
//!
//! The notifier runs only when systemd passed a notification socket (`NOTIFY_SOCKET`), so the
//! same binary runs unchanged elsewhere.

use std::time::Duration;

use sd_notify::NotifyState;

use crate::handle::LifecycleHandle;
use crate::state::Phase;

/// Whether systemd asked for notifications.
pub(crate) fn wanted() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Follows the lifecycle's phase and tells systemd: `READY=1` once every component has
/// started; at the trigger `STOPPING=1` with `EXTEND_TIMEOUT_USEC` set to the shutdown budget,
/// so systemd waits for the drain instead of killing at its own stop timeout; and, when the
/// unit has `WatchdogSec=`, `WATCHDOG=1` at half the interval until the process stops, so a
/// wedged runtime is restarted.
pub(crate) async fn notify(handle: LifecycleHandle, budget: Duration) {
    let mut phase = handle.watch_phase();
    let watchdog = sd_notify::watchdog_enabled();
    let mut ping = tokio::time::interval(watchdog.map_or(Duration::from_secs(3600), |w| w / 2));
    let mut told = Phase::Starting;
    loop {
        let now = *phase.borrow_and_update();
        let states: &[NotifyState<'_>] = match (told, now) {
            // A new process of an upgrade: the old one says READY=1, with MAINPID=, once it
            // has accepted the hand-off (the end of a `Type=notify-reload` reload).
            (Phase::Starting, Phase::Ready) if crate::sockets::sockets().started_by_upgrade() => {
                &[]
            }
            (Phase::Starting, Phase::Ready) => &[NotifyState::Ready, NotifyState::Status("ready")],
            // The unit follows the new process (MAINPID=, sent by the upgrader): this one's
            // shutdown is not the service's.
            (Phase::Ready, Phase::Draining | Phase::Stopping | Phase::Stopped)
                if handle.handed_over() =>
            {
                &[]
            }
            (
                Phase::Starting | Phase::Ready,
                Phase::Draining | Phase::Stopping | Phase::Stopped,
            ) => &[
                NotifyState::Stopping,
                NotifyState::ExtendTimeoutUsec(
                    u32::try_from(budget.as_micros()).unwrap_or(u32::MAX),
                ),
                NotifyState::Status("shutting down"),
            ],
            _ => &[],
        };
        if !states.is_empty() {
            if let Err(error) = sd_notify::notify(states) {
                tracing::warn!(%error, "could not notify systemd");
            }
        }
        told = now;
        if now == Phase::Stopped {
            return;
        }
        tokio::select! {
            changed = phase.changed() => if changed.is_err() { return },
            _ = ping.tick(), if watchdog.is_some() => {
                let _ = sd_notify::notify(&[NotifyState::Watchdog]);
            }
        }
    }
}
