//! The sockets this process inherited, by name: from systemd socket activation or from the
//! process that started it for an upgrade.

use std::io;
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard, OnceLock};

/// The name of the channel from a new process back to the old one, last in `LISTEN_FDNAMES`.
pub(crate) const CHANNEL: &str = "lifecycle-upgrade";

/// Whether `name` is one systemd gives a socket by default rather than one a service chose.
fn unnamed(name: &str) -> bool {
    name.is_empty() || name == "unknown" || name.ends_with(".socket")
}

pub(crate) struct Inherited {
    fds: listenfd::ListenFd,
    names: Vec<String>,
    taken: Vec<bool>,
}

/// The inherited sockets, read from the environment on first use (which clears `LISTEN_*`, so
/// that no process started later mistakes them for its own).
pub(crate) fn inherited() -> MutexGuard<'static, Inherited> {
    static INHERITED: OnceLock<Mutex<Inherited>> = OnceLock::new();
    INHERITED
        .get_or_init(|| {
            let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
            // listenfd checks LISTEN_PID and clears LISTEN_PID and LISTEN_FDS.
            let fds = listenfd::ListenFd::from_env();
            std::env::remove_var("LISTEN_FDNAMES");
            let names: Vec<String> = names.split(':').map(str::to_owned).collect();
            let taken = vec![false; fds.len()];
            Mutex::new(Inherited { fds, names, taken })
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

impl Inherited {
    /// The TCP listener named `name`; or, when none has that name, the first one not taken yet
    /// that systemd left without a name of its own (it names a socket after its unit, or
    /// `unknown`, unless `FileDescriptorName=` says otherwise). A socket named for another
    /// listener is never taken: `admin` does not get the socket of `http`.
    pub(crate) fn take_tcp(&mut self, name: &str) -> io::Result<Option<TcpListener>> {
        let free = |i: &usize| !self.taken[*i];
        let named = (0..self.taken.len())
            .filter(free)
            .find(|&i| self.names.get(i).is_some_and(|n| n == name));
        let any = || {
            (0..self.taken.len())
                .filter(free)
                .find(|&i| self.names.get(i).is_none_or(|n| unnamed(n)))
        };
        let Some(i) = named.or_else(any) else {
            return Ok(None);
        };
        self.taken[i] = true;
        self.fds.take_tcp_listener(i)
    }

    /// The channel to the old process, if this process was started by an upgrade.
    pub(crate) fn take_channel(&mut self) -> io::Result<Option<UnixStream>> {
        let Some(i) = (0..self.taken.len())
            .find(|&i| !self.taken[i] && self.names.get(i).is_some_and(|n| n == CHANNEL))
        else {
            return Ok(None);
        };
        self.taken[i] = true;
        self.fds
            .take_custom(i, libc::AF_UNIX, libc::SOCK_STREAM, "unix stream socket")
    }
}

#[cfg(test)]
mod tests {
    use super::unnamed;

    #[test]
    fn only_systemd_default_names_are_taken_for_another_name() {
        assert!(unnamed("") && unnamed("unknown") && unnamed("example-service.socket"));
        assert!(!unnamed("http") && !unnamed("admin") && !unnamed(super::CHANNEL));
    }
}
