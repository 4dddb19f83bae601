//! Listening sockets and who else holds them: the ones this process inherited (from systemd
//! socket activation, which keeps its own copy, or from the process an upgrade replaces), and
//! the ones an upgrade hands on.
//!
//! A server decides per socket, at the moment it acts, whether it may close the socket for good
//! ([`ListenerShare`], from
//! [`LifecycleHandle::listener_share`](crate::LifecycleHandle::listener_share)):
//! a filter attached to a listening socket, or its backlog taken, stays with the socket, not the
//! descriptor, so doing either to a socket another process still accepts on breaks that process.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::state::ListenerShare;

/// The name of the channel from a new process back to the old one, last in `LISTEN_FDNAMES`.
pub(crate) const CHANNEL: &str = "lifecycle-upgrade";

/// The environment variable an upgrade sets to the names of the sockets it passes that a
/// socket manager (systemd) holds too, colon-separated: the new process cannot tell otherwise.
pub(crate) const MANAGER_HELD: &str = "LIFECYCLE_MANAGER_HELD_FDNAMES";

/// A socket's identity, the same through every descriptor of it, in any process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SocketId {
    dev: u64,
    ino: u64,
}

impl SocketId {
    pub(crate) fn of(socket: BorrowedFd<'_>) -> io::Result<Self> {
        // `fstat` through a duplicate, as a `File`: std's safe way to it.
        let meta = std::fs::File::from(socket.try_clone_to_owned()?).metadata()?;
        Ok(SocketId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

/// What this process knows of one listening socket.
#[derive(Debug)]
struct Known {
    id: SocketId,
    /// A socket manager holds it too, for as long as this process lives.
    manager_held: bool,
    /// An upgrade hands it to the new process.
    handed_on: bool,
    /// It came from the process an upgrade replaces.
    from_upgrade: bool,
}

/// The sockets this process inherited, by name, and what it knows of its listening sockets.
pub(crate) struct Sockets {
    fds: listenfd::ListenFd,
    names: Vec<String>,
    taken: Vec<bool>,
    /// The names of the inherited sockets a socket manager holds too.
    manager_held: Vec<String>,
    /// Whether they came from an upgrade (the channel back is among them).
    from_upgrade: bool,
    known: Vec<Known>,
}

/// Whether the other side of an upgrade may accept on the sockets handed on: in the old
/// process while an attempt runs; in a new process until it said it is ready.
static PARTNER: AtomicBool = AtomicBool::new(false);

/// The sockets, read from the environment on first use (which clears `LISTEN_*` and
/// [`MANAGER_HELD`], so that no process started later mistakes them for its own).
pub(crate) fn sockets() -> MutexGuard<'static, Sockets> {
    static SOCKETS: OnceLock<Mutex<Sockets>> = OnceLock::new();
    SOCKETS
        .get_or_init(|| Mutex::new(Sockets::from_env()))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Whether `name` is one systemd gives a socket by default rather than one a service chose.
fn unnamed(name: &str) -> bool {
    name.is_empty() || name == "unknown" || name.ends_with(".socket")
}

impl Sockets {
    fn from_env() -> Self {
        let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
        let held = std::env::var(MANAGER_HELD).ok();
        // listenfd checks LISTEN_PID and clears LISTEN_PID and LISTEN_FDS.
        let fds = listenfd::ListenFd::from_env();
        std::env::remove_var("LISTEN_FDNAMES");
        std::env::remove_var(MANAGER_HELD);
        let names: Vec<String> = names.split(':').map(str::to_owned).collect();
        let from_upgrade = names.iter().take(fds.len()).any(|n| n == CHANNEL);
        // Sockets not passed by an upgrade come from a socket manager, which keeps them; an
        // upgrade names those that came from one before it.
        let manager_held = match (from_upgrade, held) {
            (false, _) => names.clone(),
            (true, Some(held)) => held.split(':').map(str::to_owned).collect(),
            (true, None) => Vec::new(),
        };
        PARTNER.store(from_upgrade, Ordering::SeqCst);
        let taken = vec![false; fds.len()];
        Sockets {
            fds,
            names,
            taken,
            manager_held,
            from_upgrade,
            known: Vec::new(),
        }
    }

    /// Whether this process was started by an upgrade (the channel back came with the sockets).
    pub(crate) fn started_by_upgrade(&self) -> bool {
        self.from_upgrade
    }

    /// The index of the inherited socket named `name`; or, when none has that name, of the
    /// first one not taken yet that systemd left without a name of its own (it names a socket
    /// after its unit, or `unknown`, unless `FileDescriptorName=` says otherwise). A socket
    /// named for another listener is never taken: `admin` does not get the socket of `http`.
    fn find(&self, name: &str) -> Option<usize> {
        let free = |i: &usize| !self.taken[*i];
        let named = (0..self.taken.len())
            .filter(free)
            .find(|&i| self.names.get(i).is_some_and(|n| n == name));
        named.or_else(|| {
            (0..self.taken.len())
                .filter(free)
                .find(|&i| self.names.get(i).is_none_or(|n| unnamed(n)))
        })
    }

    /// Notes an inherited socket as taken, and who else holds it.
    fn took(&mut self, i: usize, socket: BorrowedFd<'_>) -> io::Result<()> {
        self.taken[i] = true;
        let name = self.names.get(i).map_or("", String::as_str);
        let manager_held = self.manager_held.iter().any(|n| n == name);
        let id = SocketId::of(socket)?;
        self.known.push(Known {
            id,
            manager_held,
            handed_on: false,
            from_upgrade: self.from_upgrade,
        });
        Ok(())
    }

    /// The inherited TCP listener named `name` (see [`find`](Self::find)).
    pub(crate) fn take_tcp(&mut self, name: &str) -> io::Result<Option<TcpListener>> {
        let Some(i) = self.find(name) else {
            return Ok(None);
        };
        let listener = self.fds.take_tcp_listener(i)?;
        if let Some(listener) = &listener {
            self.took(i, listener.as_fd())?;
        }
        Ok(listener)
    }

    /// The inherited Unix stream listener named `name` (see [`find`](Self::find)).
    pub(crate) fn take_unix(&mut self, name: &str) -> io::Result<Option<UnixListener>> {
        let Some(i) = self.find(name) else {
            return Ok(None);
        };
        let listener = self.fds.take_unix_listener(i)?;
        if let Some(listener) = &listener {
            self.took(i, listener.as_fd())?;
        }
        Ok(listener)
    }

    /// The first inherited TCP listener not taken yet, whatever its name.
    pub(crate) fn take_first_tcp(&mut self) -> io::Result<Option<TcpListener>> {
        for i in 0..self.taken.len() {
            if self.taken[i] || self.names.get(i).is_some_and(|n| n == CHANNEL) {
                continue;
            }
            if let Ok(Some(listener)) = self.fds.take_tcp_listener(i) {
                self.took(i, listener.as_fd())?;
                return Ok(Some(listener));
            }
        }
        Ok(None)
    }

    /// The channel to the old process, if this process was started by an upgrade.
    #[cfg_attr(not(feature = "upgrade"), allow(dead_code))]
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

    /// Notes that an upgrade hands `socket` to the new process; whether a socket manager holds
    /// it too (to tell the new process).
    #[cfg_attr(not(feature = "upgrade"), allow(dead_code))]
    pub(crate) fn hand_on(&mut self, socket: BorrowedFd<'_>) -> io::Result<bool> {
        let id = SocketId::of(socket)?;
        if let Some(known) = self.known.iter_mut().find(|k| k.id == id) {
            known.handed_on = true;
            return Ok(known.manager_held);
        }
        self.known.push(Known {
            id,
            manager_held: false,
            handed_on: true,
            from_upgrade: false,
        });
        Ok(false)
    }

    /// Closes the inherited descriptors nobody took (a socket the new version no longer
    /// listens on): kept open, it would queue connections nobody accepts instead of refusing
    /// them. Returns their names.
    pub(crate) fn close_unclaimed(&mut self) -> Vec<String> {
        let mut closed = Vec::new();
        for i in 0..self.taken.len() {
            if self.taken[i] {
                continue;
            }
            self.taken[i] = true;
            // Taking a descriptor as its own type moves it into a value whose drop closes it.
            let fds = &mut self.fds;
            let took = matches!(fds.take_tcp_listener(i), Ok(Some(_)))
                || matches!(fds.take_unix_listener(i), Ok(Some(_)))
                || matches!(fds.take_udp_socket(i), Ok(Some(_)))
                || matches!(
                    fds.take_custom::<UnixStream>(
                        i,
                        libc::AF_UNIX,
                        libc::SOCK_STREAM,
                        "unix stream socket"
                    ),
                    Ok(Some(_))
                );
            if took {
                closed.push(self.names.get(i).cloned().unwrap_or_default());
            }
        }
        closed
    }

    /// Who else may accept on `socket`, given whether this lifecycle handed its sockets over.
    pub(crate) fn share(&self, socket: BorrowedFd<'_>, handed_over: bool) -> ListenerShare {
        let Ok(id) = SocketId::of(socket) else {
            // Unknown: never break what another process may rely on.
            return ListenerShare::Shared;
        };
        match self.known.iter().find(|k| k.id == id) {
            None => ListenerShare::Alone,
            Some(known) if known.handed_on && handed_over => ListenerShare::HandedOver,
            Some(known) if known.manager_held => ListenerShare::Shared,
            Some(known) if (known.handed_on || known.from_upgrade) && partner() => {
                ListenerShare::Shared
            }
            Some(_) => ListenerShare::Alone,
        }
    }
}

/// Whether the other side of an upgrade may accept on the sockets handed on.
pub(crate) fn partner() -> bool {
    PARTNER.load(Ordering::SeqCst)
}

/// Notes that a process on the other side of an upgrade starts or stops accepting.
#[cfg_attr(not(feature = "upgrade"), allow(dead_code))]
pub(crate) fn set_partner(live: bool) {
    PARTNER.store(live, Ordering::SeqCst);
}

/// The TCP listener passed by systemd socket activation (or by the process an upgrade
/// replaces) under `name`, or else the first one systemd left unnamed; `None` when there is
/// none. The lifecycle then knows that another process holds it too ([`ListenerShare`]).
///
/// # Errors
///
/// When the inherited socket is not a TCP listener.
pub fn inherited_tcp(name: &str) -> io::Result<Option<TcpListener>> {
    sockets().take_tcp(name)
}

/// The first TCP listener passed by systemd socket activation not taken yet, whatever its
/// name; `None` when there is none.
///
/// # Errors
///
/// When taking the descriptor fails.
pub fn first_inherited_tcp() -> io::Result<Option<TcpListener>> {
    sockets().take_first_tcp()
}

/// The Unix stream listener passed under `name`, as [`inherited_tcp`].
///
/// # Errors
///
/// When the inherited socket is not a Unix stream listener.
pub fn inherited_unix(name: &str) -> io::Result<Option<UnixListener>> {
    sockets().take_unix(name)
}

/// Binds a Unix stream listener at `path`, first removing a socket file left there by a
/// process that did not remove its own (a crash, a SIGKILL), as every Unix-socket server must.
/// A socket a live server answers on fails with `AddrInUse`; a file that is not a socket is left
/// alone and fails the bind.
///
/// # Errors
///
/// When the path is taken or cannot be bound.
pub fn bind_unix(path: &std::path::Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            // A live server there would still answer a connect: do not steal its path.
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::from(io::ErrorKind::AddrInUse));
            }
            std::fs::remove_file(path)?;
        }
    }
    UnixListener::bind(path)
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
