//! Errors of this crate.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use lifecycle_core::BoxError;

/// Why an [`HttpServer`](crate::HttpServer) could not start (its listening socket, a setting out
/// of range) or a `TlsConfig` (feature `tls`) could not be made.
///
/// The server's are returned from its start, so the lifecycle rolls the start-up back and the
/// report names the address. The operating system's error is the
/// [`source`](std::error::Error::source), not repeated in the message, so that reporters that
/// print the chain of sources show it once.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// Binding the address failed, typically because another process holds the port.
    #[error("binding {addr} failed")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error, e.g. "address already in use".
        #[source]
        source: io::Error,
    },
    /// A listener handed over (directly or by systemd) could not be used.
    #[error("the listening socket could not be used")]
    Listener(#[source] io::Error),
    /// The listener handed over was closed when the service shut down, so the server cannot
    /// start on it again.
    #[error("the listening socket was closed by the shutdown")]
    ListenerClosed,
    /// No listening socket was inherited through systemd socket activation (`LISTEN_FDS`).
    #[error("no TCP socket was passed by systemd socket activation (LISTEN_FDS)")]
    NoInheritedSocket,
    /// Binding a Unix domain socket failed (its directory is missing, or another process
    /// listens on it).
    #[error("binding the Unix socket {} failed", path.display())]
    BindUnix {
        /// The socket's path.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A TLS certificate or key file could not be read, or holds no PEM certificate or key.
    #[error("the TLS file {} could not be used", path.display())]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// Why: the operating system's error, or what the file lacks.
        #[source]
        source: io::Error,
    },
    /// The TLS certificate and key could not be used together (the key's type is not
    /// supported, or it does not match the certificate).
    #[error("the TLS certificate and key could not be used")]
    TlsCertificate(#[source] BoxError),
    /// A setting of the server is out of its range (no connection allowed at all, a
    /// vanished-peer timeout under a second): refused when the server starts, before it binds.
    #[error("invalid setting of {component}: {setting} {reason}")]
    InvalidSetting {
        /// The component's name.
        component: String,
        /// The setting, as its builder method is named (`"max_connections"`).
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message and its sources, as chain reporters (anyhow, eyre, tracing) print them.
    fn chain(error: &dyn std::error::Error) -> String {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(error) = source {
            text.push_str(&format!(": {error}"));
            source = error.source();
        }
        text
    }

    #[test]
    fn the_os_error_is_the_source_and_shows_once_in_the_chain() {
        let addr = "127.0.0.1:8080".parse().unwrap();
        let bind = HttpError::Bind {
            addr,
            source: io::Error::new(io::ErrorKind::AddrInUse, "address in use"),
        };
        assert_eq!(bind.to_string(), "binding 127.0.0.1:8080 failed");
        assert_eq!(
            chain(&bind),
            "binding 127.0.0.1:8080 failed: address in use"
        );
        let listener = HttpError::Listener(io::Error::other("not a socket"));
        assert_eq!(
            chain(&listener),
            "the listening socket could not be used: not a socket"
        );
    }
}
