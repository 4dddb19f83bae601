//! The load: keep-alive HTTP/1.1 clients, HTTP/2 streams on one connection, one SSE client, and
//! a readiness poller. Each keeps its own connections, so it knows whether a failed request
//! was sent on an open connection (dropped) or never got one (refused). [`Running`] owns the
//! tasks from the start of the load to the end of the drill.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::task::JoinHandle;

use crate::counters::Counters;
use crate::transport::{self, Stream, Tls};

/// TLS for the load: the settings, and a connector for each protocol a client speaks.
pub(crate) struct TlsClients {
    pub(crate) tls: Tls,
    h1: tokio_rustls::TlsConnector,
    h2: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for TlsClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.tls.fmt(f)
    }
}

impl TlsClients {
    pub(crate) fn new(tls: Tls) -> Self {
        TlsClients {
            h1: tls.connector(b"http/1.1"),
            h2: tls.connector(b"h2"),
            tls,
        }
    }
}

/// What the load tasks share.
#[derive(Debug)]
pub(crate) struct Load {
    pub(crate) addr: SocketAddr,
    pub(crate) path: String,
    /// A JSON body to POST to `path`; `None` to GET it.
    pub(crate) post: Option<Bytes>,
    pub(crate) ready_path: String,
    pub(crate) counters: Counters,
    /// TLS, for an `https://` service.
    pub(crate) tls: Option<TlsClients>,
    /// Set once the service has been told to stop; only [`Running`] sets it.
    signalled: AtomicBool,
    /// Set when the drill is over; only [`Running`] sets it.
    done: AtomicBool,
}

impl Load {
    pub(crate) fn new(
        addr: SocketAddr,
        path: String,
        post: Option<Bytes>,
        ready_path: String,
        tls: Option<TlsClients>,
    ) -> Self {
        Self {
            addr,
            path,
            post,
            ready_path,
            counters: Counters::default(),
            tls,
            signalled: false.into(),
            done: false.into(),
        }
    }

    /// A new connection to the service, speaking `alpn` (`h2` or `http/1.1`) over TLS.
    pub(crate) async fn connect(&self, alpn: &[u8]) -> std::io::Result<Stream> {
        let tls = self.tls.as_ref().map(|clients| {
            let connector = if alpn == b"h2" {
                &clients.h2
            } else {
                &clients.h1
            };
            (&clients.tls, connector)
        });
        transport::connect(self.addr, tls).await
    }

    pub(crate) fn signalled(&self) -> bool {
        self.signalled.load(Ordering::Relaxed)
    }

    pub(crate) fn done(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }

    /// A `GET` of `path`.
    fn request(&self, path: &str) -> Request<Full<Bytes>> {
        Request::get(path)
            .header("host", self.addr.to_string())
            .body(Full::default())
            .expect("the drill checks its paths before the load starts")
    }

    /// One request of the load: a `GET` of its path, or a `POST` of its JSON body.
    fn load_request(&self) -> Request<Full<Bytes>> {
        let Some(body) = &self.post else {
            return self.request(&self.path);
        };
        Request::post(&self.path)
            .header("host", self.addr.to_string())
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))
            .expect("the drill checks its paths before the load starts")
    }
}

/// An error with its sources, `error: source: source`: hyper's own message ("http2 error")
/// says little without them.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Whether an HTTP/2 request failed without the server having processed it, so a client may
/// retry it (RFC 9113, section 8.7): never sent, refused (`REFUSED_STREAM`), or left out by
/// the server's GOAWAY (a stream above its last stream id, or opened after it). A stream the
/// GOAWAY covered and the connection then lost fails with another error: dropped.
pub(crate) fn never_processed(error: &hyper::Error) -> bool {
    if error.is_canceled() {
        return true;
    }
    let Some(h2) = std::error::Error::source(error).and_then(|e| e.downcast_ref::<h2::Error>())
    else {
        return false;
    };
    h2.reason() == Some(h2::Reason::REFUSED_STREAM) || (h2.is_go_away() && h2.is_remote())
}

/// One keep-alive HTTP/1.1 client: reconnects when told to close, stops when refused after the
/// signal.
async fn http1_client(load: Arc<Load>) {
    while !load.done() {
        let Ok(stream) = load.connect(b"http/1.1").await else {
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
            match sender.send_request(load.load_request()).await {
                Ok(response) => {
                    let close = response
                        .headers()
                        .get("connection")
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                    let ok = response.status().is_success();
                    match response.into_body().collect().await {
                        Ok(_) if ok => Counters::add(&load.counters.succeeded),
                        Ok(_) => Counters::add(&load.counters.non_2xx),
                        Err(error) => load
                            .counters
                            .dropped(format!("HTTP/1.1 body: {}", chain(&error))),
                    }
                    if close {
                        break;
                    }
                }
                Err(error) if error.is_canceled() => break,
                Err(error) => {
                    load.counters
                        .dropped(format!("HTTP/1.1: {}", chain(&error)));
                    break;
                }
            }
        }
    }
}

/// `streams` concurrent request loops over one HTTP/2 (h2c, prior knowledge) connection, until
/// the server closes it (GOAWAY).
async fn http2_streams(load: Arc<Load>, streams: usize) {
    let Ok(stream) = load.connect(b"h2").await else {
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
                    match sender.send_request(load.load_request()).await {
                        Ok(response) => {
                            let ok = response.status().is_success();
                            match response.into_body().collect().await {
                                Ok(_) if ok => Counters::add(&load.counters.succeeded),
                                Ok(_) => Counters::add(&load.counters.non_2xx),
                                Err(error) => load
                                    .counters
                                    .dropped(format!("HTTP/2 body: {}", chain(&error))),
                            }
                        }
                        Err(error) if never_processed(&error) => {
                            Counters::add(&load.counters.refused);
                            return;
                        }
                        Err(error) => {
                            load.counters.dropped(format!("HTTP/2: {}", chain(&error)));
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
async fn sse_client(load: Arc<Load>, path: String) -> String {
    let Ok(stream) = load.connect(b"http/1.1").await else {
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
                    load.counters.dropped(format!("SSE: {}", chain(&error)));
                    format!("cut off: {}", chain(&error))
                }
            }
        }
        Ok(response) => {
            Counters::add(&load.counters.non_2xx);
            format!("answered {}", response.status())
        }
        Err(error) => {
            load.counters.dropped(format!("SSE: {}", chain(&error)));
            format!("failed: {}", chain(&error))
        }
    }
}

/// Whether `GET` on the readiness path answers 2xx on a fresh connection; `None` if it does
/// not answer within a second.
async fn is_ready(load: &Load) -> Option<bool> {
    let attempt = async {
        let stream = load.connect(b"http/1.1").await.ok()?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(conn);
        let response = sender
            .send_request(load.request(&load.ready_path))
            .await
            .ok()?;
        Some(response.status().is_success())
    };
    // A service that accepts and never answers must not stall the drill.
    tokio::time::timeout(Duration::from_secs(1), attempt)
        .await
        .ok()
        .flatten()
}

/// Asks the readiness path every 20 ms; returns when it first sees it not ready after the
/// signal.
async fn readiness_off(load: Arc<Load>) -> Instant {
    loop {
        let ready = is_ready(&load).await;
        if load.signalled() && ready != Some(true) {
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `GET` on the readiness path answers 2xx, up to `within`; `false` if it did not.
pub(crate) async fn wait_ready(load: &Load, within: Duration) -> bool {
    let poll = async {
        while is_ready(load).await != Some(true) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(within, poll).await.is_ok()
}

/// The load tasks, from the start of the load to the end of the drill. Dropped early (an
/// error, or the drill's future dropped), it stops them all.
#[derive(Debug)]
pub(crate) struct Running {
    load: Arc<Load>,
    clients: Vec<JoinHandle<()>>,
    sse: Option<JoinHandle<String>>,
    readiness: Option<JoinHandle<Instant>>,
    progress: Option<JoinHandle<()>>,
}

/// What the load saw besides the counters.
#[derive(Debug)]
pub(crate) struct Observed {
    pub(crate) sse_stream: String,
    /// When readiness was first seen off after the signal.
    pub(crate) readiness_off: Option<Instant>,
}

impl Running {
    /// Starts `clients` HTTP/1.1 clients, `h2_streams` HTTP/2 streams, the gRPC client, the SSE
    /// client, the
    /// readiness poller and, if asked, the progress line.
    pub(crate) fn start(
        load: Arc<Load>,
        clients: usize,
        h2_streams: usize,
        grpc: Option<(&str, usize)>,
        sse_path: Option<&str>,
        progress: bool,
    ) -> Self {
        let mut tasks: Vec<_> = (0..clients)
            .map(|_| tokio::spawn(http1_client(load.clone())))
            .collect();
        if h2_streams > 0 {
            tasks.push(tokio::spawn(http2_streams(load.clone(), h2_streams)));
        }
        if let Some((path, streams)) = grpc {
            // Connections of up to four streams each, so that a load balancer spreads them.
            let mut left = streams;
            while left > 0 {
                let on_this = left.min(4);
                left -= on_this;
                tasks.push(tokio::spawn(crate::grpc::grpc_client(
                    load.clone(),
                    path.to_owned(),
                    on_this,
                )));
            }
        }
        let sse = sse_path.map(|path| tokio::spawn(sse_client(load.clone(), path.to_owned())));
        Self {
            readiness: Some(tokio::spawn(readiness_off(load.clone()))),
            progress: progress.then(|| tokio::spawn(progress_line(load.clone()))),
            load,
            clients: tasks,
            sse,
        }
    }

    pub(crate) fn load(&self) -> Arc<Load> {
        self.load.clone()
    }

    /// Marks the moment the service is told to stop, and returns it.
    pub(crate) fn signalled(&self) -> Instant {
        self.load.signalled.store(true, Ordering::Relaxed);
        Instant::now()
    }

    /// Ends the load once the service has stopped (or been given up on): lets each task see its
    /// last request out, for up to five seconds in all, and collects what they saw.
    pub(crate) async fn finish(mut self) -> Observed {
        self.load.done.store(true, Ordering::Relaxed);
        if let Some(progress) = self.progress.take() {
            progress.abort();
            eprintln!();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        for mut task in self.clients.drain(..) {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
        let sse_stream = match self.sse.take() {
            Some(mut sse) => match tokio::time::timeout_at(deadline, &mut sse).await {
                Ok(result) => result.unwrap_or_else(|e| e.to_string()),
                Err(_) => {
                    sse.abort();
                    "still open".to_owned()
                }
            },
            None => "not used".to_owned(),
        };
        let readiness_off = match self.readiness.take() {
            Some(readiness) if readiness.is_finished() => readiness.await.ok(),
            Some(readiness) => {
                readiness.abort();
                None
            }
            None => None,
        };
        Observed {
            sse_stream,
            readiness_off,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.load.done.store(true, Ordering::Relaxed);
        for task in &self.clients {
            task.abort();
        }
        if let Some(sse) = &self.sse {
            sse.abort();
        }
        if let Some(readiness) = &self.readiness {
            readiness.abort();
        }
        if let Some(progress) = &self.progress {
            progress.abort();
        }
    }
}

/// A progress line on stderr while the drill runs.
async fn progress_line(load: Arc<Load>) {
    let started = Instant::now();
    loop {
        let c = &load.counters;
        eprint!(
            "\r{:>6.1}s  sent {}  ok {}  refused {}  dropped {}{}   ",
            started.elapsed().as_secs_f64(),
            Counters::get(&c.sent),
            Counters::get(&c.succeeded),
            Counters::get(&c.refused),
            Counters::get(&c.dropped),
            if load.signalled() {
                "  (signal sent)"
            } else {
                ""
            }
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
