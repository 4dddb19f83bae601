//! Where the example service's listening sockets come from: inherited (systemd socket
//! activation, or the process an in-place upgrade replaces) or bound; and, when asked for
//! (`--in-place-upgrade`, implied by `--pid-file`), the `Upgrade` that hands them to a new
//! process of the binary on SIGHUP. Unix only: elsewhere the sockets are bound and both flags
//! are refused.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use lifecycle_core::{BoxError, LifecycleBuilder};

/// Where the service's listening sockets come from.
#[derive(Debug)]
pub(crate) struct Sockets {
    #[cfg(unix)]
    upgrade: Option<lifecycle_core::Upgrade>,
}

impl Sockets {
    /// The sockets of the service, upgradable in place when `upgrade` is set (a new process
    /// given `ready_timeout` to become ready), its PID written to `pid_file` once ready.
    pub(crate) fn new(
        upgrade: bool,
        pid_file: Option<PathBuf>,
        ready_timeout: Duration,
    ) -> Result<Self, BoxError> {
        #[cfg(unix)]
        {
            if !upgrade {
                return Ok(Sockets { upgrade: None });
            }
            let mut upgrade = lifecycle_core::Upgrade::new()?.ready_timeout(ready_timeout);
            if let Some(path) = pid_file {
                upgrade = upgrade.pid_file(path);
            }
            Ok(Sockets {
                upgrade: Some(upgrade),
            })
        }
        #[cfg(not(unix))]
        match (upgrade, pid_file, ready_timeout) {
            (false, None, _) => Ok(Sockets {}),
            _ => Err("--in-place-upgrade and --pid-file need Unix".into()),
        }
    }

    /// Whether SIGHUP upgrades the service in place.
    pub(crate) fn upgrades(&self) -> bool {
        #[cfg(unix)]
        return self.upgrade.is_some();
        #[cfg(not(unix))]
        false
    }

    /// The listening socket `name`: inherited, or bound to `addr`; handed on at an upgrade.
    pub(crate) fn listener(&self, name: &str, addr: SocketAddr) -> Result<TcpListener, BoxError> {
        #[cfg(unix)]
        {
            if let Some(upgrade) = &self.upgrade {
                return Ok(upgrade.listener(name, addr)?);
            }
            if let Some(listener) = lifecycle_core::sockets::inherited_tcp(name)? {
                return Ok(listener);
            }
        }
        let _ = name;
        Ok(TcpListener::bind(addr)?)
    }

    /// The Unix domain listening socket `name` at `path`, as [`listener`](Self::listener).
    #[cfg(unix)]
    pub(crate) fn unix_listener(
        &self,
        name: &str,
        path: &Path,
    ) -> Result<std::os::unix::net::UnixListener, BoxError> {
        if let Some(upgrade) = &self.upgrade {
            return Ok(upgrade.unix_listener(name, path)?);
        }
        if let Some(listener) = lifecycle_core::sockets::inherited_unix(name)? {
            return Ok(listener);
        }
        Ok(lifecycle_core::sockets::bind_unix(path)?)
    }

    /// `builder` with the upgrader registered (it answers SIGHUP), when upgrades are on.
    pub(crate) fn register(self, builder: LifecycleBuilder) -> LifecycleBuilder {
        #[cfg(unix)]
        if let Some(upgrade) = self.upgrade {
            return builder.register(lifecycle_core::Registration::new("upgrade", upgrade));
        }
        builder
    }
}
