//! In-place upgrades (feature `upgrade`, Unix): the program starts itself again and hands the
//! new process its listening sockets; the new process takes over once ready, and only then does
//! the old one run its shutdown. No connection is refused at any moment, because the sockets,
//! and the connections queued on them, never close.
//!
//! The sockets pass in the systemd convention (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`),
//! so the same call, [`Upgrade::listener`], takes a socket from systemd socket activation, from
//! an upgrade, or binds it.
//!
//! The steps of an upgrade, started by the upgrade signal (SIGHUP by default) or by
//! [`LifecycleHandle::upgrade`](crate::LifecycleHandle::upgrade):
//!
//! 1. the old process starts its program again, at the path it was started from (which may hold
//!    a new binary by now), with the same arguments and environment, and the listening sockets
//!    at fds 3 and up plus a channel back to it (named `lifecycle-upgrade`);
//! 2. the new process starts its components and, once ready, writes its PID file (if it has
//!    one) and says `ready` on the channel;
//! 3. the old process tells systemd `MAINPID=` (when under systemd), then shuts down as on
//!    SIGTERM, with the trigger `upgrade` in its report. Its servers close only their own
//!    descriptors ([`LifecycleHandle::handed_over`](crate::LifecycleHandle::handed_over)).
//!
//! If the new process exits, closes the channel or is not ready within the ready timeout, the
//! old one kills it if still there, keeps serving, and records the failed attempt (with the
//! child's exit code) in its [report](crate::Report)'s `upgrades`. One upgrade runs at a time:
//! a request during one is refused and logged. A shutdown during an upgrade stops the new
//! process too (SIGTERM, then SIGKILL after 5 s).
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
