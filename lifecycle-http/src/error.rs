//! Errors of this crate.

use std::io;
use std::net::SocketAddr;

/// Why an [`HttpServer`](crate::HttpServer) could not get its listening socket.
///
/// Returned from the server's start, so the lifecycle rolls the start-up back and the report
/// names the address.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// Binding the address failed, typically because another process holds the port.
    #[error("binding {addr} failed: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error, e.g. "address already in use".
        #[source]
        source: io::Error,
    },
    /// A listener handed over (directly or by systemd) could not be used.
    #[error("the listening socket could not be used: {0}")]
    Listener(#[source] io::Error),
    /// The listener handed over was closed when the service shut down, so the server cannot
    /// start on it again.
    #[error("the listening socket was closed by the shutdown")]
    ListenerClosed,
    /// No listening socket was inherited through systemd socket activation (`LISTEN_FDS`).
    #[error("no TCP socket was passed by systemd socket activation (LISTEN_FDS)")]
    NoInheritedSocket,
}
