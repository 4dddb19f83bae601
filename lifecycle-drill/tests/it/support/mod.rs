//! A tiny HTTP service on plain hyper for the library tests: `/readyz` (503 once stopping) and
//! any other path answered after 20 ms, over HTTP/1.1 and h2c.
//!
//! [`Stop::Graceful`] is a well-behaved shutdown: readiness off, serving on through a drain
//! delay, then the listener closed (later connects are refused), HTTP/1.1 clients told to
//! close with their next response, and after a short grace every connection shut down
//! gracefully (HTTP/2 GOAWAY, requests in progress finished). Keep-alive connections are kept
//! through the drain, so no client connects while the listener closes: a connect caught in
//! the backlog as it closes would be reset, and the drill would rightly count it as dropped.
//!
//! [`Stop::Abrupt`] is the negative control: the stop aborts every connection where it stands.

// Each test file uses part of it.
#![allow(dead_code)]

use std::convert::Infallible;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONNECTION};
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// How the service stops.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stop {
    /// Readiness off, `drain` of serving on, the listener closed, connections drained.
    Graceful { drain: Duration },
    /// Every connection aborted at once.
    Abrupt,
}

/// Where the service is in its shutdown; one writer, the accept task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    Draining,
    Closing,
}

/// A running service; [`stop`](Self::stop) stops it as its [`Stop`] says.
#[derive(Debug)]
pub(crate) struct Service {
    stop: Stop,
    asked: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Service {
    /// Serves on `listener` until [`stop`](Self::stop).
    pub(crate) fn start(listener: TcpListener, stop: Stop) -> Self {
        let (asked, asked_rx) = watch::channel(false);
        let drain = match stop {
            Stop::Graceful { drain } => drain,
            Stop::Abrupt => Duration::ZERO,
        };
        Self {
            stop,
            asked,
            task: tokio::spawn(serve(listener, asked_rx, drain)),
        }
    }

    /// Stops the service and returns when it has stopped.
    pub(crate) async fn stop(self) {
        match self.stop {
            Stop::Graceful { .. } => {
                let _ = self.asked.send(true);
                self.task.await.expect("the service task");
            }
            Stop::Abrupt => {
                // Dropping the accept task's JoinSet aborts every connection task.
                self.task.abort();
                let _ = self.task.await;
            }
        }
    }

    /// Ends the service without waiting, for a test that gave up on it.
    pub(crate) fn abort(&self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, mut asked: watch::Receiver<bool>, drain: Duration) {
    let (phase, phase_rx) = watch::channel(Phase::Serving);
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let drained = async {
        let _ = asked.wait_for(|asked| *asked).await;
        let _ = phase.send(Phase::Draining);
        tokio::time::sleep(drain).await;
    };
    tokio::pin!(drained);
    loop {
        tokio::select! {
            () = &mut drained => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let phase = phase_rx.clone();
                let service = hyper::service::service_fn(move |request| {
                    answer(request, *phase.borrow())
                });
                let connection = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned();
                let connection = graceful.watch(connection);
                connections.spawn(async move {
                    let _ = connection.await;
                });
            }
        }
    }
    drop(listener);
    let _ = phase.send(Phase::Closing);
    // HTTP/1.1 clients leave on their next response; then GOAWAY for HTTP/2 and the rest.
    tokio::time::sleep(Duration::from_millis(100)).await;
    graceful.shutdown().await;
    while connections.join_next().await.is_some() {}
}

async fn answer(
    request: Request<Incoming>,
    phase: Phase,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = if request.uri().path() == "/readyz" {
        let mut response = Response::new(Full::from("ready"));
        if phase != Phase::Serving {
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        }
        response
    } else {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Response::new(Full::from("done"))
    };
    if phase == Phase::Closing && request.version() == Version::HTTP_11 {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(response)
}
