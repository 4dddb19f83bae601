//! Where the server's listening socket comes from, and the socket itself, TCP or Unix, behind
//! one type: the accept loop (`accept.rs`) is one for both.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use lifecycle_core::{Context, ListenerShare};

use crate::error::HttpError;
use crate::stream::Stream;

/// A listening socket handed to the server, kept between runs: taken by a start, given back
/// by a stop that is not part of the shutdown (a restart), closed by the shutdown's stop.
pub(crate) type KeptListener = Arc<Mutex<Option<StdListener>>>;

/// The source of the listening socket.
#[derive(Debug)]
pub(crate) enum Listen {
    /// Bind this address at each start.
    Bind(SocketAddr),
    /// A socket already bound, by the caller, inherited from systemd or from an upgrade.
    ///
    /// Not a clone per start: a duplicate kept here would stay open after the stop, and the
    /// kernel would go on completing handshakes on it that nobody accepts.
    Bound(KeptListener),
    /// Bind this Unix domain socket path at each start.
    #[cfg(unix)]
    Unix(PathBuf),
}

/// A listening socket outside tokio: as given, kept for a restart, or drained at the stop.
#[derive(Debug)]
pub(crate) enum StdListener {
    Tcp(std::net::TcpListener),
    #[cfg(unix)]
    Unix(std::os::unix::net::UnixListener),
}

/// A listening socket in tokio, for one run of the server.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(tokio::net::TcpListener),
    #[cfg(unix)]
    Unix(tokio::net::UnixListener),
}

impl Listen {
    pub(crate) fn bound(listener: StdListener) -> Self {
        Listen::Bound(Arc::new(Mutex::new(Some(listener))))
    }

    /// Takes the first TCP socket passed by systemd socket activation.
    pub(crate) fn from_systemd() -> Result<Self, HttpError> {
        #[cfg(unix)]
        match lifecycle_core::sockets::first_inherited_tcp() {
            Ok(Some(listener)) => Ok(Listen::bound(StdListener::Tcp(listener))),
            Ok(None) => Err(HttpError::NoInheritedSocket),
            Err(error) => Err(HttpError::Listener(error)),
        }
        #[cfg(not(unix))]
        Err(HttpError::NoInheritedSocket)
    }

    /// A tokio listener for one run of the server, and for a socket that was handed over, the
    /// place to give it back to if the run ends without a shutdown.
    pub(crate) async fn open(&self) -> Result<(Listener, Option<KeptListener>), HttpError> {
        match self {
            Listen::Bind(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| HttpError::Bind {
                        addr: *addr,
                        source,
                    })?;
                Ok((Listener::Tcp(listener), None))
            }
            Listen::Bound(kept) => {
                let listener = kept
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .ok_or(HttpError::ListenerClosed)?;
                let listener = listener.into_tokio().map_err(HttpError::Listener)?;
                Ok((listener, Some(kept.clone())))
            }
            #[cfg(unix)]
            Listen::Unix(path) => {
                let failed = |source| HttpError::BindUnix {
                    path: path.clone(),
                    source,
                };
                let listener = lifecycle_core::sockets::bind_unix(path).map_err(failed)?;
                let listener = StdListener::Unix(listener).into_tokio().map_err(failed)?;
                Ok((listener, None))
            }
        }
    }
}

impl StdListener {
    fn into_tokio(self) -> io::Result<Listener> {
        match self {
            StdListener::Tcp(listener) => {
                listener.set_nonblocking(true)?;
                Ok(Listener::Tcp(tokio::net::TcpListener::from_std(listener)?))
            }
            #[cfg(unix)]
            StdListener::Unix(listener) => {
                listener.set_nonblocking(true)?;
                Ok(Listener::Unix(tokio::net::UnixListener::from_std(
                    listener,
                )?))
            }
        }
    }

    /// One connection from the kernel's queue, without waiting: the socket's own non-blocking
    /// accept sees every connection queued, where tokio's stops at the first poll its reactor
    /// has not reported yet.
    pub(crate) fn accept_now(&self) -> io::Result<(Stream, Option<SocketAddr>)> {
        match self {
            StdListener::Tcp(listener) => {
                let (stream, peer) = listener.accept()?;
                stream.set_nonblocking(true)?;
                Ok((
                    Stream::Tcp(tokio::net::TcpStream::from_std(stream)?),
                    Some(peer),
                ))
            }
            #[cfg(unix)]
            StdListener::Unix(listener) => {
                let (stream, _) = listener.accept()?;
                stream.set_nonblocking(true)?;
                Ok((
                    Stream::Unix(tokio::net::UnixStream::from_std(stream)?),
                    None,
                ))
            }
        }
    }

    /// Makes the listening socket drop new connection attempts (TCP segments with SYN and
    /// without ACK) from now on, while handshakes already under way complete: a client whose
    /// SYN is dropped tries again a second later and is then refused by the closed port, where
    /// one that reached the backlog after the last accept would be reset by the close. A Unix
    /// socket's path is removed instead, so later connects fail at once. Linux only for TCP (a
    /// socket filter), and best effort.
    pub(crate) fn refuse_new_connections(&self) {
        match self {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            StdListener::Tcp(listener) => {
                use socket2::{SockFilter, SockRef};
                // Classic BPF on the TCP header: load the flags byte; ACK set: keep the
                // segment; otherwise (a SYN): drop it.
                const LOAD_FLAGS: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
                const JUMP_IF_SET: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
                const RETURN: u16 = 0x06; // BPF_RET | BPF_K
                const TCP_FLAGS_OFFSET: u32 = 13;
                const ACK: u32 = 0x10;
                let program = [
                    SockFilter::new(LOAD_FLAGS, 0, 0, TCP_FLAGS_OFFSET),
                    SockFilter::new(JUMP_IF_SET, 1, 0, ACK),
                    SockFilter::new(RETURN, 0, 0, 0),
                    SockFilter::new(RETURN, 0, 0, u32::MAX),
                ];
                if let Err(error) = SockRef::from(listener).attach_filter(&program) {
                    tracing::debug!(%error, "new handshakes cannot be refused before the close");
                }
            }
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            StdListener::Tcp(_) => {}
            #[cfg(unix)]
            StdListener::Unix(listener) => {
                if let Some(path) = listener
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(PathBuf::from))
                {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }
}

impl Listener {
    /// The next connection, and the client's address over TCP.
    pub(crate) async fn accept(&self) -> io::Result<(Stream, Option<SocketAddr>)> {
        match self {
            Listener::Tcp(listener) => {
                let (stream, peer) = listener.accept().await?;
                Ok((Stream::Tcp(stream), Some(peer)))
            }
            #[cfg(unix)]
            Listener::Unix(listener) => {
                let (stream, _) = listener.accept().await?;
                Ok((Stream::Unix(stream), None))
            }
        }
    }

    /// The TCP address it listens on.
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(listener) => listener.local_addr().ok(),
            #[cfg(unix)]
            Listener::Unix(_) => None,
        }
    }

    /// Who else may accept on this socket now ([`ListenerShare`]).
    pub(crate) fn share(&self, ctx: &Context) -> ListenerShare {
        #[cfg(unix)]
        {
            use std::os::fd::AsFd;
            let fd = match self {
                Listener::Tcp(listener) => listener.as_fd(),
                Listener::Unix(listener) => listener.as_fd(),
            };
            ctx.lifecycle().listener_share(fd)
        }
        #[cfg(not(unix))]
        {
            let _ = ctx;
            ListenerShare::Alone
        }
    }

    pub(crate) fn into_std(self) -> io::Result<StdListener> {
        match self {
            Listener::Tcp(listener) => listener.into_std().map(StdListener::Tcp),
            #[cfg(unix)]
            Listener::Unix(listener) => listener.into_std().map(StdListener::Unix),
        }
    }
}
