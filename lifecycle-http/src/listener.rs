//! Where the server's listening socket comes from.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;

use crate::error::HttpError;

/// A listening socket handed to the server, kept between runs: taken by a start, given back
/// by a stop that is not part of the shutdown (a restart), closed by the shutdown's stop.
pub(crate) type Slot = Arc<Mutex<Option<std::net::TcpListener>>>;

/// The source of the listening socket.
#[derive(Debug)]
pub(crate) enum Listen {
    /// Bind this address at each start.
    Bind(SocketAddr),
    /// A socket already bound, by the caller or inherited from systemd.
    ///
    /// Not a clone per start: a duplicate kept here would stay open after the stop, and the
    /// kernel would go on completing handshakes on it that nobody accepts.
    Bound(Slot),
    /// Bind this Unix domain socket path at each start (`unix.rs`).
    #[cfg(unix)]
    Unix(std::path::PathBuf),
}

impl Listen {
    pub(crate) fn bound(listener: std::net::TcpListener) -> Self {
        Listen::Bound(Arc::new(Mutex::new(Some(listener))))
    }

    /// Takes the first TCP socket passed by systemd socket activation.
    pub(crate) fn from_systemd() -> Result<Self, HttpError> {
        let mut inherited = listenfd::ListenFd::from_env();
        match inherited.take_tcp_listener(0) {
            Ok(Some(listener)) => Ok(Listen::bound(listener)),
            Ok(None) => Err(HttpError::NoInheritedSocket),
            Err(error) => Err(HttpError::Listener(error)),
        }
    }

    /// A tokio listener for one run of the server, and for a socket that was handed over, the
    /// slot to give it back to if the run ends without a shutdown.
    pub(crate) async fn open(&self) -> Result<(TcpListener, Option<Slot>), HttpError> {
        match self {
            Listen::Bind(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| HttpError::Bind {
                        addr: *addr,
                        source,
                    })?;
                Ok((listener, None))
            }
            Listen::Bound(slot) => {
                let listener = slot
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .ok_or(HttpError::ListenerClosed)?;
                listener
                    .set_nonblocking(true)
                    .map_err(HttpError::Listener)?;
                let listener = TcpListener::from_std(listener).map_err(HttpError::Listener)?;
                Ok((listener, Some(slot.clone())))
            }
            #[cfg(unix)]
            Listen::Unix(path) => Err(HttpError::BindUnix {
                path: path.clone(),
                source: std::io::Error::other("a Unix socket is not a TCP listener"),
            }),
        }
    }
}
