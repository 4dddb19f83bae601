//! `Stream`: the byte stream under a connection, TCP, a Unix domain socket, or TLS over either.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
#[cfg(feature = "tls")]
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection's bytes: one `match` per read or write instead of a generic connection type,
/// so the connection code (and its tests) stays one path whatever the transport.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
    /// Boxed: a TLS session is large, and the plain variants should stay small.
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::server::TlsStream<Stream>>),
}

/// Calls `$method` on whichever stream this is.
macro_rules! each {
    ($self:ident, $stream:ident => $call:expr) => {
        match $self.get_mut() {
            Stream::Tcp($stream) => $call,
            #[cfg(unix)]
            Stream::Unix($stream) => $call,
            #[cfg(feature = "tls")]
            Stream::Tls($stream) => $call,
        }
    };
}

impl Stream {
    /// Completes when the client has sent something (or closed): before a TLS handshake, the
    /// sign that one is under way.
    #[cfg(feature = "tls")]
    pub(crate) async fn readable(&self) {
        let _ = match self {
            // A peek, not `readable`, which may complete at once on a new socket.
            Stream::Tcp(s) => s.peek(&mut [0; 1]).await.map(drop),
            #[cfg(unix)]
            Stream::Unix(s) => s.readable().await,
            #[cfg(feature = "tls")]
            Stream::Tls(_) => Ok(()),
        };
    }
}

impl AsyncRead for Stream {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            #[cfg(unix)]
            Stream::Unix(s) => s.is_write_vectored(),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// What a connection goes through before HTTP: nothing, or a TLS handshake under its timeout.
#[derive(Clone, Default)]
pub(crate) struct Handshake {
    #[cfg(feature = "tls")]
    tls: Option<(tokio_rustls::TlsAcceptor, Duration)>,
}

impl Handshake {
    /// A TLS handshake with `config`'s certificate (the one in use at each handshake).
    #[cfg(feature = "tls")]
    pub(crate) fn tls(config: &crate::tls::TlsConfig) -> Self {
        Handshake {
            tls: Some((config.server_config().into(), config.handshake_time())),
        }
    }

    /// The stream to serve HTTP on, after the handshake if there is one.
    ///
    /// The handshake, the wait for its first byte included, is bounded by the handshake
    /// timeout. It goes on at the stop turn (`stopping`), except for a client that has sent
    /// nothing by then (a pre-connect): given `grace` to begin, it is otherwise closed, as an
    /// HTTP/1 connection that sent nothing is, rather than holding the stop.
    ///
    /// # Errors
    ///
    /// The handshake failed or timed out, or the client began none by the stop turn.
    pub(crate) async fn accept(
        &self,
        stream: Stream,
        stopping: impl std::future::Future<Output = ()>,
        grace: std::time::Duration,
    ) -> io::Result<Stream> {
        #[cfg(feature = "tls")]
        if let Some((acceptor, timeout)) = &self.tls {
            let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out");
            let deadline = tokio::time::Instant::now() + *timeout;
            tokio::select! {
                biased;
                () = stream.readable() => {}
                () = stopping => {
                    let began = tokio::time::timeout(grace, stream.readable()).await;
                    if began.is_err() {
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "no TLS handshake begun by the stop turn",
                        ));
                    }
                }
                () = tokio::time::sleep_until(deadline) => return Err(timed_out()),
            }
            let tls = tokio::time::timeout_at(deadline, acceptor.accept(stream))
                .await
                .map_err(|_| timed_out())??;
            return Ok(Stream::Tls(Box::new(tls)));
        }
        let _ = (stopping, grace);
        Ok(stream)
    }
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        #[cfg(feature = "tls")]
        let tls = self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        let tls = false;
        f.debug_struct("Handshake").field("tls", &tls).finish()
    }
}
