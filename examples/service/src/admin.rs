//! The admin listener (`--admin-listen`): `/metrics` in the Prometheus text format, `/livez`
//! and `/readyz` with details, on an address of its own that stays up until the last stop.

use std::net::SocketAddr;

use lifecycle_core::LifecycleBuilder;
use lifecycle_http::{install_prometheus, AdminRoutes};

/// Installs the Prometheus recorder and registers the admin server on `addr`, if one is
/// given; without it, no recorder is installed and the metrics cost next to nothing.
///
/// Called before `build`, so the recorder sees every metric, the first component states
/// included.
pub(crate) fn register(builder: LifecycleBuilder, addr: Option<SocketAddr>) -> LifecycleBuilder {
    let Some(addr) = addr else {
        return builder;
    };
    let prometheus = install_prometheus().expect("the first and only metrics recorder");
    let admin = AdminRoutes::new(builder.handle()).prometheus(prometheus);
    builder.register(admin.registration(addr))
}
