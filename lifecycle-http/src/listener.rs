//! Where the server's listening socket comes from.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::error::HttpError;

/// The source of the listening socket, opened anew at each start.
#[derive(Debug)]
pub(crate) enum Listen {
    /// Bind this address at start.
    Bind(SocketAddr),
    /// A socket already bound, by the caller or inherited from systemd.
    Bound(std::net::TcpListener),
}

impl Listen {
    /// Takes the first TCP socket passed by systemd socket activation.
    pub(crate) fn from_systemd() -> Result<Self, HttpError> {
        let mut inherited = listenfd::ListenFd::from_env();
        match inherited.take_tcp_listener(0) {
            Ok(Some(listener)) => Ok(Listen::Bound(listener)),
            Ok(None) => Err(HttpError::NoInheritedSocket),
            Err(error) => Err(HttpError::Listener(error)),
        }
    }

    /// A tokio listener for one run of the server.
    pub(crate) async fn open(&self) -> Result<TcpListener, HttpError> {
        match self {
            Listen::Bind(addr) => TcpListener::bind(addr)
                .await
                .map_err(|source| HttpError::Bind {
                    addr: *addr,
                    source,
                }),
            Listen::Bound(listener) => {
                // A clone, so a restarted server can listen on the same socket again.
                let listener = listener.try_clone().map_err(HttpError::Listener)?;
                listener
                    .set_nonblocking(true)
                    .map_err(HttpError::Listener)?;
                TcpListener::from_std(listener).map_err(HttpError::Listener)
            }
        }
    }
}
