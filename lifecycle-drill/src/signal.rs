//! Telling a service command to stop: SIGTERM on Unix, a kill elsewhere.

use std::io;

use tokio::process::Child;

/// Sends SIGTERM to `child`.
///
/// It runs `kill -TERM` rather than calling `kill(2)`, because the workspace forbids `unsafe`
/// code and the drill needs no more than one signal.
#[cfg(unix)]
pub(crate) async fn terminate(child: &mut Child) -> io::Result<()> {
    // No id: the child has been reaped, so there is nothing left to signal.
    let Some(pid) = child.id() else {
        return Ok(());
    };
    let status = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("kill -TERM {pid} {status}")))
    }
}

/// Ends `child`: there is no SIGTERM to send, so the drill can only show what a hard stop
/// drops.
#[cfg(not(unix))]
pub(crate) async fn terminate(child: &mut Child) -> io::Result<()> {
    child.start_kill()
}
