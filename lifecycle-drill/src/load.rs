//! The load: keep-alive HTTP/1.1 clients, HTTP/2 streams on one connection, one SSE client, and
//! a readiness poller. Each keeps its own connections, so it knows whether a failed request
//! was sent on an open connection (dropped) or never got one (refused).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::outcome::Counters;

/// What the load tasks share.
#[derive(Debug)]
pub(crate) struct Load {
    pub(crate) addr: SocketAddr,
    pub(crate) path: String,
    pub(crate) counters: Counters,
    /// Set once SIGTERM has been sent.
    pub(crate) signalled: AtomicBool,
    /// Set when the drill is over.
    pub(crate) done: AtomicBool,
}

impl Load {
    fn signalled(&self) -> bool {
        self.signalled.load(Ordering::Relaxed)
    }

    fn done(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }

    fn request(&self, path: &str) -> Request<Empty<Bytes>> {
        Request::get(path)
            .header("host", self.addr.to_string())
            .body(Empty::new())
            .expect("a valid request")
    }
}

/// One keep-alive HTTP/1.1 client: reconnects when told to close, stops when refused after the
/// signal.
pub(crate) async fn http1_client(load: Arc<Load>) {
    while !load.done() {
        let Ok(stream) = TcpStream::connect(load.addr).await else {
            load.counters.refused(load.signalled());
            if load.signalled() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            continue;
        };
        tokio::spawn(conn);
        while !load.done() {
            // A connection the server closed while idle is not a dropped request: no request
            // was on it.
            if sender.ready().await.is_err() {
                break;
            }
            Counters::add(&load.counters.sent);
            match sender.send_request(load.request(&load.path)).await {
                Ok(response) => {
                    let close = response
                        .headers()
                        .get("connection")
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                    let ok = response.status().is_success();
                    match response.into_body().collect().await {
                        Ok(_) if ok => Counters::add(&load.counters.succeeded),
                        Ok(_) => Counters::add(&load.counters.non_2xx),
                        Err(error) => load.counters.dropped(format!("HTTP/1.1 body: {error}")),
                    }
                    if close {
                        break;
                    }
                }
                Err(error) if error.is_canceled() => break,
                Err(error) => {
                    load.counters.dropped(format!("HTTP/1.1: {error}"));
                    break;
                }
            }
        }
    }
}

/// `streams` concurrent request loops over one HTTP/2 (h2c, prior knowledge) connection, until
/// the server closes it (GOAWAY).
pub(crate) async fn http2_streams(load: Arc<Load>, streams: usize) {
    let Ok(stream) = TcpStream::connect(load.addr).await else {
        return;
    };
    let Ok((sender, conn)) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await
    else {
        return;
    };
    tokio::spawn(conn);
    let tasks: Vec<_> = (0..streams)
        .map(|_| {
            let (load, mut sender) = (load.clone(), sender.clone());
            tokio::spawn(async move {
                while !load.done() && sender.ready().await.is_ok() {
                    Counters::add(&load.counters.sent);
                    match sender.send_request(load.request(&load.path)).await {
                        Ok(response) => {
                            let ok = response.status().is_success();
                            match response.into_body().collect().await {
                                Ok(_) if ok => Counters::add(&load.counters.succeeded),
                                Ok(_) => Counters::add(&load.counters.non_2xx),
                                Err(error) => {
                                    load.counters.dropped(format!("HTTP/2 body: {error}"))
                                }
                            }
                        }
                        // A stream refused after GOAWAY was never processed: retryable, not lost.
                        Err(error)
                            if error.to_string().contains("refused") || error.is_canceled() =>
                        {
                            Counters::add(&load.counters.refused);
                            return;
                        }
                        Err(error) => {
                            load.counters.dropped(format!("HTTP/2: {error}"));
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}

/// One server-sent-events client: a stream that ends cleanly is fine; one cut off is a drop.
pub(crate) async fn sse_client(load: Arc<Load>, path: String) -> String {
    let Ok(stream) = TcpStream::connect(load.addr).await else {
        return "could not connect".into();
    };
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return "handshake failed".into();
    };
    tokio::spawn(conn);
    Counters::add(&load.counters.sent);
    match sender.send_request(load.request(&path)).await {
        Ok(response) if response.status().is_success() => {
            match response.into_body().collect().await {
                Ok(body) => {
                    Counters::add(&load.counters.succeeded);
                    format!("ended cleanly after {} bytes", body.to_bytes().len())
                }
                Err(error) => {
                    load.counters.dropped(format!("SSE: {error}"));
                    format!("cut off: {error}")
                }
            }
        }
        Ok(response) => {
            Counters::add(&load.counters.non_2xx);
            format!("answered {}", response.status())
        }
        Err(error) => {
            load.counters.dropped(format!("SSE: {error}"));
            format!("failed: {error}")
        }
    }
}

/// Whether `GET /readyz` answers 200 on a fresh connection; `None` if it does not answer.
async fn is_ready(load: &Load) -> Option<bool> {
    let stream = TcpStream::connect(load.addr).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    let response = sender.send_request(load.request("/readyz")).await.ok()?;
    Some(response.status().is_success())
}

/// Asks `GET /readyz` every 20 ms; returns when it first sees it not ready after the signal.
pub(crate) async fn readiness_off(load: Arc<Load>) -> Instant {
    loop {
        let ready = is_ready(&load).await;
        if load.signalled() && ready != Some(true) {
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `GET /readyz` answers 200, up to `within`.
pub(crate) async fn wait_ready(load: &Load, within: Duration) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if is_ready(load).await == Some(true) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
