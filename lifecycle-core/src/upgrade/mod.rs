//! In-place upgrades (feature `upgrade`, Unix): the program starts itself again and hands the
//! new process its listening sockets; the new process takes over once ready, and only then does
//! the old one run its shutdown. No connection is refused at any moment, because the sockets,
//! and the connections queued on them, never close.
//!
//! The sockets pass in the systemd convention (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`),
//! so the same call, [`Upgrade::listener`] (or [`Upgrade::unix_listener`]), takes a socket from
//! systemd socket activation, from an upgrade, or binds it; which of them systemd holds too is
//! passed on (`LIFECYCLE_MANAGER_HELD_FDNAMES`), so that no process ever closes systemd's socket
//! for good.
//!
//! The steps of an upgrade, started by the upgrade signal (SIGHUP by default) or by
//! [`LifecycleHandle::upgrade`](crate::LifecycleHandle::upgrade):
//!
//! 1. the old process tells systemd `RELOADING=1` (with `MONOTONIC_USEC`, as
//!    `Type=notify-reload` wants) and starts its program again, at the path it was started from
//!    (which may hold a new binary by now), with the same arguments and environment, the
//!    listening sockets at fds 3 and up plus a channel back to it (named `lifecycle-upgrade`),
//!    and, under a systemd watchdog, `WATCHDOG_PID` set to the new process;
//! 2. the new process starts its components, accepting nothing on the shared sockets until it
//!    is ready, and then says `ready` on the channel;
//! 3. the old process accepts the hand-off: it writes the new PID to the PID file (if it has
//!    one), tells systemd `MAINPID=` and `READY=1`, stops accepting at once and shuts down as on
//!    SIGTERM but without the drain delay (an upgrade is not a drain: its readiness endpoints go
//!    on answering ready, since the new process serves on the same sockets), with the trigger
//!    `upgrade` in its report. Its servers close only their own descriptors
//!    ([`LifecycleHandle::listener_share`](crate::LifecycleHandle::listener_share)).
//!
//! If the new process exits, closes the channel or is not ready within the ready timeout, the
//! old one stops it (SIGTERM: it runs its own shutdown within its own budget; SIGKILL only if it
//! outlives a minute, and it accepted nothing), keeps serving, tells systemd `READY=1` with
//! the failure in `STATUS=`, writes its own PID back to the PID file if it changed, and records
//! the failed attempt (with the child's exit code) in its [report](crate::Report)'s `upgrades`.
//! One upgrade runs at a time: a request during one is refused and logged. A shutdown during an
//! upgrade stops the new process too. As PID 1 of a PID namespace (a container's entry point)
//! an upgrade is refused, logged, counted and reported: the kernel ends every process of the
//! namespace when its first one exits, so the new process would die with the old one.
//!
//! `LISTEN_PID` must be the new process's PID, which a parent only knows before `exec` with
//! unsafe code: the new process is started through `/bin/sh -c 'LISTEN_PID=$$ exec ...'`,
//! whose `exec` keeps the shell's PID.

#[cfg(not(unix))]
compile_error!(
    "the `upgrade` feature needs Unix: it passes sockets to a new process by fork and exec"
);

mod error;
pub(crate) mod pid_file;
mod successor;
mod upgrader;

pub use error::UpgradeError;
pub use upgrader::Upgrade;
