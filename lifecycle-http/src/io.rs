//! `ConnIo`: a connection's socket, watched. It tells the connection's [`Activity`] when writes
//! are blocked (a response's bytes still wait in hyper's buffer), when the client sends bytes
//! and when it has sent the HTTP/2 preface, and it keeps what the socket holds (a tracking
//! token, a connection permit) for as long as the socket lives, upgraded or not.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::activity::Activity;
use crate::stream::Stream;

/// How long a closing connection waits for the client to close its side; see
/// [`ConnIo::poll_shutdown`].
const LINGER: Duration = Duration::from_secs(1);

/// What HTTP/2 clients send first (RFC 9113, section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the bytes read so far are (the start of) the HTTP/2 preface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sniff {
    /// This many bytes of the preface have been read, and nothing else.
    Preface(usize),
    /// Decided: HTTP/2 or not.
    Done,
}

/// A connection's socket, watched for its [`Activity`].
///
/// Moved into the upgraded connection on an upgrade (a WebSocket), so the tracking token and
/// the connection permit it holds last as long as the socket, not only as long as HTTP.
#[derive(Debug)]
pub(crate) struct ConnIo {
    stream: Stream,
    activity: Arc<Activity>,
    /// Whether the last write returned `Pending`, as last told to `activity`; kept here so
    /// that only the changes touch the shared state.
    write_blocked: bool,
    sniff: Sniff,
    /// Set once the sending side is closed: the end of the lingering close.
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
    _tracked: TaskTrackerToken,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        // The socket of an upgraded connection lives here until the WebSocket closes.
        self.activity.socket_closed();
    }
}

impl ConnIo {
    pub(crate) fn new(
        stream: Stream,
        activity: Arc<Activity>,
        tracked: TaskTrackerToken,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        ConnIo {
            stream,
            activity,
            write_blocked: false,
            sniff: Sniff::Preface(0),
            linger: None,
            _tracked: tracked,
            _permit: permit,
        }
    }

    #[inline]
    fn wrote<T>(&mut self, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        let blocked = result.is_pending();
        if blocked != self.write_blocked {
            self.write_blocked = blocked;
            self.activity.busy().set_write_blocked(blocked);
        }
        result
    }

    fn sniff(&mut self, read: &[u8]) {
        let Sniff::Preface(seen) = self.sniff else {
            return;
        };
        let expected = &H2_PREFACE[seen..];
        let n = read.len().min(expected.len());
        if read[..n] != expected[..n] {
            self.sniff = Sniff::Done;
        } else if seen + n == H2_PREFACE.len() {
            self.sniff = Sniff::Done;
            self.activity.busy().set_http2();
        } else {
            self.sniff = Sniff::Preface(seen + n);
        }
    }
}

impl AsyncRead for ConnIo {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.busy().record_read();
            if this.sniff != Sniff::Done {
                this.sniff(&buf.filled()[before..]);
            }
        }
        result
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.wrote(result)
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.wrote(result)
    }

    fn is_write_vectored(&self) -> bool {
        // hyper queues body chunks instead of copying them when the socket writes vectored.
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_flush(cx);
        this.wrote(result)
    }

    /// Closes the sending side, then reads and discards what the client still sends until it
    /// closes its side (or [`LINGER`] passes), and only then lets hyper drop the socket.
    ///
    /// Closing a socket with unread data makes the kernel send a reset instead of a FIN, and a
    /// reset discards what the client had not read yet: an HTTP/2 client that opened streams
    /// after the final GOAWAY (which the server ignores, and which the client retries once it
    /// reads the GOAWAY) would lose the GOAWAY and see its calls fail with a broken pipe, as if
    /// they had been dropped. (nginx's "lingering close".)
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.linger.is_none() {
            std::task::ready!(Pin::new(&mut this.stream).poll_shutdown(cx))?;
            this.linger = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        let mut discard = [0; 1024];
        loop {
            let mut buf = ReadBuf::new(&mut discard);
            match Pin::new(&mut this.stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => break,
            }
        }
        match this.linger.as_mut().map(|sleep| sleep.as_mut().poll(cx)) {
            Some(Poll::Pending) => Poll::Pending,
            _ => Poll::Ready(Ok(())),
        }
    }
}
