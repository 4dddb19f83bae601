//! In-place upgrades for the example service: its HTTP socket comes from an `Upgrade`
//! (inherited from systemd or from the process it replaces, or bound), and SIGHUP starts the
//! binary at the same path again, which takes the socket over once ready. Unix only: elsewhere
//! the socket is bound and `--pid-file` is refused.

use std::net::SocketAddr;
use std::path::PathBuf;

use lifecycle_core::LifecycleBuilder;
#[cfg(unix)]
use lifecycle_core::{Registration, Upgrade};

/// The HTTP listener, and the builder with the upgrader registered.
#[cfg(unix)]
pub(crate) fn listener(
    builder: LifecycleBuilder,
    listen: SocketAddr,
    pid_file: Option<PathBuf>,
) -> Result<(std::net::TcpListener, LifecycleBuilder), lifecycle_core::UpgradeError> {
    let mut upgrade = Upgrade::new()?;
    if let Some(path) = pid_file {
        upgrade = upgrade.pid_file(path);
    }
    let listener = upgrade.listener("http", listen)?;
    Ok((
        listener,
        builder.register(Registration::new("upgrade", upgrade)),
    ))
}

/// The HTTP listener, bound: in-place upgrades need Unix.
#[cfg(not(unix))]
pub(crate) fn listener(
    builder: LifecycleBuilder,
    listen: SocketAddr,
    pid_file: Option<PathBuf>,
) -> Result<(std::net::TcpListener, LifecycleBuilder), std::io::Error> {
    if pid_file.is_some() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "--pid-file and in-place upgrades need Unix",
        ));
    }
    Ok((std::net::TcpListener::bind(listen)?, builder))
}
