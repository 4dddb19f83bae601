//! Serving on a Unix domain socket: binding its path, accepting, and removing it at the stop.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lifecycle_core::Context;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::connection::{serve_connection, ConnBuilder, Limits};
use crate::drain::Drain;
use crate::error::HttpError;
use crate::stats::HttpStats;
use crate::stream::Stream;

/// Binds `path`, first removing a socket file left there by a process that did not remove its
/// own (a crash, a SIGKILL), as every Unix-socket server must; a regular file there is left
/// alone and fails the bind.
pub(crate) fn bind(path: &Path) -> Result<UnixListener, HttpError> {
    use std::os::unix::fs::FileTypeExt;
    let failed = |source| HttpError::BindUnix {
        path: path.to_owned(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            // A live server there would still answer a connect: do not steal its path.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(failed(io::Error::from(io::ErrorKind::AddrInUse)));
            }
            std::fs::remove_file(path).map_err(failed)?;
        }
    }
    UnixListener::bind(path).map_err(failed)
}

/// Accepts connections on `listener` until the component's token is cancelled, as the TCP
/// accept loop does (at most `max_connections` at a time), then serves what is left in the
/// backlog, closes the listener and removes its path, so later connects fail at once.
pub(crate) async fn accept_loop(
    listener: UnixListener,
    path: PathBuf,
    ctx: Context,
    builder: Arc<ConnBuilder>,
    service: Drain,
    stats: HttpStats,
    limits: Limits,
) {
    let permits = Arc::new(Semaphore::new(
        limits.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let serve = |stream: UnixStream, permit: Option<OwnedSemaphorePermit>| {
        let guard = stats.connection();
        ctx.spawn(serve_connection(
            Stream::Unix(stream),
            permit,
            builder.clone(),
            service.for_connection(None),
            ctx.clone(),
            guard,
            limits.clone(),
        ));
    };
    loop {
        let permit = tokio::select! {
            biased;
            () = ctx.token().cancelled() => break,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        tokio::select! {
            biased;
            () = ctx.token().cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => serve(stream, Some(permit)),
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    // Removing the path first: a client connecting from now on gets an error at once rather
    // than a place in a backlog that is about to be closed.
    let _ = std::fs::remove_file(&path);
    let listener = match listener.into_std() {
        Ok(listener) => listener,
        Err(error) => {
            tracing::warn!(%error, "the listener could not be drained");
            return;
        }
    };
    // The socket's own non-blocking accept sees every connection the kernel has queued.
    while let Ok((stream, _)) = listener.accept() {
        match stream
            .set_nonblocking(true)
            .and_then(|()| UnixStream::from_std(stream))
        {
            Ok(stream) => serve(stream, permits.clone().try_acquire_owned().ok()),
            Err(error) => tracing::debug!(%error, "a connection from the backlog failed"),
        }
    }
    drop(listener);
    tracing::debug!(component = ctx.name(), path = %path.display(), "listener closed");
}
