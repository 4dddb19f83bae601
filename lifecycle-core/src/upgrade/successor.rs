//! One upgrade attempt, from the old process's side: start the new process with the sockets,
//! wait until it says it is ready, and clean up after it when it does not.

use std::ffi::OsString;
use std::io;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use command_fds::{CommandFdExt, FdMapping};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use super::upgrader::HandedOn;
use crate::lifecycle_state::UpgradeRequest;
use crate::report::UpgradeReport;
use crate::sockets::{CHANNEL, MANAGER_HELD};

/// Sets `LISTEN_PID` (and, under a systemd watchdog, `WATCHDOG_PID`) to the shell's PID, which
/// `exec` keeps: the parent cannot know the new process's PID before it runs without an unsafe
/// `pre_exec` of its own.
const TRAMPOLINE: &str = r#"LISTEN_PID=$$; export LISTEN_PID
if [ -n "$WATCHDOG_USEC" ]; then WATCHDOG_PID=$$; export WATCHDOG_PID; fi
exec "$0" "$@""#;

/// How long a new process that is stopped before it took over (a shutdown during the upgrade,
/// the ready timeout) gets after SIGTERM to run its own shutdown, within its own budget, before
/// it is killed. It accepted nothing (a server accepts on a shared socket only once ready), so
/// even the kill drops no connection.
const STOP_GRACE: Duration = Duration::from_secs(60);

/// What to start, and with what.
pub(crate) struct Successor<'a> {
    pub(crate) program: &'a Path,
    pub(crate) args: &'a [OsString],
    pub(crate) listeners: &'a [HandedOn],
    pub(crate) ready_timeout: Duration,
}

/// The new process, told to stop (SIGTERM: it runs its own shutdown, within its own budget) if
/// dropped before it took over: the task running the attempt was aborted at the stop deadline.
struct Pending(Option<tokio::process::Child>);

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(child) = &self.0 {
            terminate(child.id());
        }
    }
}

impl Successor<'_> {
    /// Runs one attempt to its end. Requests that come meanwhile are refused and logged; a
    /// shutdown stops the new process.
    pub(crate) async fn attempt(
        &self,
        shutdown: &CancellationToken,
        requests: &mut UnboundedReceiver<UpgradeRequest>,
    ) -> UpgradeReport {
        let (child, channel) = match self.spawn() {
            Ok(started) => started,
            Err(error) => return failed(None, None, format!("starting it failed: {error}")),
        };
        let pid = child.id();
        let mut pending = Pending(Some(child));
        tracing::info!(pid, program = %self.program.display(), "upgrade: new process started");

        let read = async move {
            let mut line = String::new();
            tokio::io::BufReader::new(channel)
                .read_line(&mut line)
                .await
                .map(|_| line)
        };
        tokio::pin!(read);
        let timeout = tokio::time::sleep(self.ready_timeout);
        tokio::pin!(timeout);
        let mut closed = false;
        let child = pending.0.as_mut().expect("set above");
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    let status = stop(child, pid).await;
                    return failed(pid, status, "the shutdown began during the upgrade: new process stopped".into());
                }
                status = child.wait() => {
                    let status = status.ok();
                    return failed(pid, status, format!("the new process exited before it was ready ({})", describe(status)));
                }
                read = &mut read, if !closed => match read {
                    Ok(line) if line.trim() == "ready" => {
                        // It owns the sockets now; not killed when `pending` drops.
                        pending.0 = None;
                        return UpgradeReport {
                            succeeded: true,
                            refused: false,
                            pid,
                            exit_code: None,
                            detail: "the new process is ready and took the sockets over".into(),
                        };
                    }
                    // Closed without a word: it is on its way out (its start failed). Wait for
                    // its exit, within the timeout.
                    _ => closed = true,
                },
                () = &mut timeout => {
                    let status = stop(child, pid).await;
                    return failed(pid, status, format!("the new process was not ready within {:?}: stopped", self.ready_timeout));
                }
                Some(waiting) = requests.recv() => {
                    tracing::warn!(pid, "upgrade requested while one is in progress: refused");
                    if let Some(waiting) = waiting {
                        let _ = waiting.send(UpgradeReport {
                            succeeded: false,
                            refused: true,
                            pid: None,
                            exit_code: None,
                            detail: "refused: another upgrade is in progress".into(),
                        });
                    }
                }
            }
        }
    }

    /// Starts the program again through the trampoline, with the listeners at fds 3.. and the
    /// channel after them.
    fn spawn(&self) -> io::Result<(tokio::process::Child, tokio::net::UnixStream)> {
        let (ours, theirs) = UnixStream::pair()?;
        let mut mappings = Vec::with_capacity(self.listeners.len() + 1);
        let mut names = Vec::with_capacity(self.listeners.len() + 1);
        for (fd, listener) in (3..).zip(self.listeners) {
            mappings.push(FdMapping {
                parent_fd: listener.socket.try_clone()?,
                child_fd: fd,
            });
            names.push(listener.name.as_str());
        }
        mappings.push(FdMapping {
            parent_fd: theirs.into(),
            child_fd: 3 + self.listeners.len() as i32,
        });
        names.push(CHANNEL);
        let manager_held: Vec<&str> = self
            .listeners
            .iter()
            .filter(|l| l.manager_held)
            .map(|l| l.name.as_str())
            .collect();

        let mut command = std::process::Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(TRAMPOLINE)
            .arg(self.program)
            .args(self.args)
            .env("LISTEN_FDS", mappings.len().to_string())
            .env("LISTEN_FDNAMES", names.join(":"))
            .env(MANAGER_HELD, manager_held.join(":"))
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDS_FIRST_FD");
        if sd_notify::watchdog_enabled().is_none() {
            // The watchdog is not this process's: not the new one's either.
            command
                .env_remove("WATCHDOG_USEC")
                .env_remove("WATCHDOG_PID");
        }
        command
            .fd_mappings(mappings)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // The command holds the child's ends until it is dropped, here, after the spawn: then
        // the channel closes when the child's copy does.
        let child = tokio::process::Command::from(command).spawn()?;
        ours.set_nonblocking(true)?;
        Ok((child, tokio::net::UnixStream::from_std(ours)?))
    }
}

/// Stops a new process that has not taken over: SIGTERM, so it stops its components in order,
/// and SIGKILL after [`STOP_GRACE`].
async fn stop(child: &mut tokio::process::Child, pid: Option<u32>) -> Option<ExitStatus> {
    terminate(pid);
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            let _ = child.start_kill();
            child.wait().await.ok()
        }
    }
}

/// Sends SIGTERM to `pid`.
fn terminate(pid: Option<u32>) {
    let pid = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32));
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

fn failed(pid: Option<u32>, status: Option<ExitStatus>, detail: String) -> UpgradeReport {
    UpgradeReport {
        succeeded: false,
        refused: false,
        pid,
        exit_code: status.and_then(|s| s.code()),
        detail,
    }
}

fn describe(status: Option<ExitStatus>) -> String {
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            _ => s.to_string(),
        },
        None => "status unknown".into(),
    }
}
