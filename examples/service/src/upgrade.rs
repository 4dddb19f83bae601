//! In-place upgrades for the example service: its listening sockets (HTTP, and the admin one)
//! come from an `Upgrade` (inherited from systemd or from the process it replaces, or bound),
//! and SIGHUP starts the binary at the same path again, which takes them over once ready.
//! Unix only: elsewhere the sockets are bound and `--pid-file` is refused.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

use lifecycle_core::{BoxError, LifecycleBuilder};

/// Where the service's listening sockets come from.
#[derive(Debug)]
pub(crate) struct Sockets {
    #[cfg(unix)]
    upgrade: lifecycle_core::Upgrade,
}

impl Sockets {
    /// The sockets of an upgradable service, its PID written to `pid_file` once ready.
    pub(crate) fn new(pid_file: Option<PathBuf>) -> Result<Self, BoxError> {
        #[cfg(unix)]
        {
            let mut upgrade = lifecycle_core::Upgrade::new()?;
            if let Some(path) = pid_file {
                upgrade = upgrade.pid_file(path);
            }
            Ok(Sockets { upgrade })
        }
        #[cfg(not(unix))]
        match pid_file {
            Some(_) => Err("--pid-file and in-place upgrades need Unix".into()),
            None => Ok(Sockets {}),
        }
    }

    /// The listening socket `name`: inherited, or bound to `addr`; handed on at an upgrade.
    pub(crate) fn listener(&self, name: &str, addr: SocketAddr) -> Result<TcpListener, BoxError> {
        #[cfg(unix)]
        return Ok(self.upgrade.listener(name, addr)?);
        #[cfg(not(unix))]
        {
            let _ = name;
            Ok(TcpListener::bind(addr)?)
        }
    }

    /// `builder` with the upgrader registered (it answers SIGHUP).
    pub(crate) fn register(self, builder: LifecycleBuilder) -> LifecycleBuilder {
        #[cfg(unix)]
        return builder.register(lifecycle_core::Registration::new("upgrade", self.upgrade));
        #[cfg(not(unix))]
        builder
    }
}
