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

/// `--request-upgrade ADDR`: asks the service whose admin listener is at `addr` for an in-place
/// upgrade (`POST /upgrade`) and waits for the outcome, so that a reload command (systemd's
/// `ExecReload=`) succeeds only when the new process took over. Prints the attempt's report;
/// the exit code is 0 on success, 1 otherwise.
pub(crate) fn request(addr: SocketAddr) -> i32 {
    use std::io::{Read, Write};
    let exchange = || -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect(addr)?;
        // The new process has its ready timeout to start; the answer comes after it.
        stream.set_read_timeout(Some(Duration::from_secs(600)))?;
        let request = format!(
            "POST /upgrade HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes())?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    };
    match exchange() {
        Ok(response) => {
            let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
            println!("{}", body.trim());
            if response.starts_with("HTTP/1.1 200") {
                0
            } else {
                1
            }
        }
        Err(error) => {
            eprintln!("example-service: asking {addr} for an upgrade failed: {error}");
            1
        }
    }
}
