//! The admin listener (`--admin-listen`): `/metrics` in the Prometheus text format, `/livez`
//! and `/readyz` with details, and `POST /upgrade` when in-place upgrades are on, on an address
//! of its own that stays up until the last stop.

use std::net::SocketAddr;

use lifecycle_core::LifecycleBuilder;
use lifecycle_http::{install_prometheus, AdminRoutes, HttpServer};

use crate::upgrade::Sockets;

/// Installs the Prometheus recorder and registers the admin server on `addr`, if one is
/// given (its socket handed on at an upgrade, as the HTTP one); without it, no recorder is
/// installed and the metrics cost next to nothing.
///
/// Called before `build`, so the recorder sees every metric, the first component states
/// included.
pub(crate) fn register(
    builder: LifecycleBuilder,
    sockets: &Sockets,
    addr: Option<SocketAddr>,
) -> Result<LifecycleBuilder, lifecycle_core::BoxError> {
    let Some(addr) = addr else {
        return Ok(builder);
    };
    let listener = sockets.listener("admin", addr)?;
    let prometheus = install_prometheus()?;
    // `POST /upgrade` (for `--request-upgrade`) where SIGHUP upgrades too.
    let admin = AdminRoutes::new(builder.handle())
        .prometheus(prometheus)
        .upgrades(sockets.upgrades());
    let server = HttpServer::from_listener(listener, admin.router());
    Ok(builder.register(AdminRoutes::registration_of(server)))
}
