//! The PID file: which process serves, for whoever signals it (`systemctl reload`, a deploy
//! script). It changes only when a hand-off is accepted, and is removed once the process has
//! stopped everything, never before its servers drained.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The file this process's `Upgrade` keeps, removed by [`remove_after_stops`] unless it names
/// another process by then.
static PID_FILE: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Notes the file to remove at the end of a plain shutdown.
pub(crate) fn keep(path: &Path) {
    *PID_FILE.lock().unwrap_or_else(|e| e.into_inner()) = Some(path.to_owned());
}

/// Writes `pid` to `path` atomically, through a temporary file of an unpredictable name in the
/// same directory (a predictable one could be a symlink planted by another user).
pub(crate) fn write(path: &Path, pid: u32) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new().prefix(".pid-").tempfile_in(dir)?;
    writeln!(tmp, "{pid}")?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The PID the file names, if it can be read.
pub(crate) fn read(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Called by the lifecycle once every stop has ended: removes the PID file if it still names
/// this process (after a hand-off it names the new one).
pub(crate) fn remove_after_stops() {
    let path = PID_FILE.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(path) = path {
        if read(&path) == Some(std::process::id()) {
            let _ = std::fs::remove_file(&path);
        }
    }
}
