//! In-place upgrades for the example service: its HTTP socket comes from an `Upgrade`
//! (inherited from systemd or from the process it replaces, or bound), and SIGHUP starts the
//! binary at the same path again, which takes the socket over once ready.

use std::net::SocketAddr;
use std::path::PathBuf;

use lifecycle_core::{LifecycleBuilder, Registration, Upgrade};

/// The HTTP listener, and the builder with the upgrader registered.
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
