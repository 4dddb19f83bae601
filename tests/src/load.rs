//! `Load`: keep-alive HTTP/1.1 clients, each on connections of its own, so that a request that
//! got no answer is known to have been sent on an open connection (dropped) rather than never
//! connected (refused) or connected only in the kernel's backlog of a closing listener
//! (unaccepted).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long one request may take before it counts as dropped: far more than any the tests
/// make.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection reset on its first request younger than this was never accepted by the server
/// (see [`LoadReport::unaccepted`]).
const UNACCEPTED_WITHIN: Duration = Duration::from_millis(100);

/// Clients sending `GET path` back to back on keep-alive connections, reconnecting when the
/// server closes one (`Connection: close`, or an idle connection closed between requests),
/// until told to stop or until a connect is refused (the listener has closed).
#[derive(Debug)]
pub struct Load {
    counters: Arc<Counters>,
    stop: CancellationToken,
    clients: Vec<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Counters {
    succeeded: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    unaccepted: AtomicU64,
    refused: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Counters {
    fn error(&self, counter: &AtomicU64, error: String) {
        counter.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if errors.len() < 10 {
            errors.push(error);
        }
    }
}

/// What happened to a [`Load`]'s requests.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadReport {
    /// Answered with a 2xx status and a complete body.
    pub succeeded: u64,
    /// Answered, with another status.
    pub failed: u64,
    /// Sent on an open connection and never answered in full: reset, closed, or timed out.
    pub dropped: u64,
    /// First requests of new connections (under 100 ms old) that were reset or closed with no
    /// answer at all: the kernel had completed the handshake, but the listener closed before
    /// the server accepted the connection, and Linux resets what is left in a closing
    /// listener's backlog.
    /// Such a request never reached the service: tests confirm it against the server's own
    /// count of the requests it received (`Stack::wait_stopped`). A load balancer does not
    /// send them, having stopped during the drain delay.
    pub unaccepted: u64,
    /// Connects refused (each ends its client): never reached the server.
    pub refused: u64,
    /// The first few failures and drops, for messages.
    pub errors: Vec<String>,
}

impl LoadReport {
    /// Asserts that requests were answered and none failed or was dropped (connects reset
    /// before the server accepted them are not counted here: see
    /// [`unaccepted`](Self::unaccepted)).
    ///
    /// # Panics
    ///
    /// When one was, or when none succeeded (the load did not run).
    pub fn assert_none_lost(&self) {
        assert!(
            self.failed == 0 && self.dropped == 0 && self.succeeded > 0,
            "requests lost: {self:?}"
        );
    }
}

impl Load {
    /// Starts `clients` clients on `GET path` at `addr`.
    pub fn start(addr: SocketAddr, path: &str, clients: usize) -> Load {
        let (counters, stop) = (Arc::new(Counters::default()), CancellationToken::new());
        let clients = (0..clients)
            .map(|_| {
                let (counters, stop, path) = (counters.clone(), stop.clone(), path.to_owned());
                tokio::spawn(client(addr, path, counters, stop))
            })
            .collect();
        Load {
            counters,
            stop,
            clients,
        }
    }

    /// The counts so far.
    pub fn report(&self) -> LoadReport {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let c = &self.counters;
        LoadReport {
            succeeded: get(&c.succeeded),
            failed: get(&c.failed),
            dropped: get(&c.dropped),
            unaccepted: get(&c.unaccepted),
            refused: get(&c.refused),
            errors: c.errors.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }

    /// Stops the clients once the request each has in hand is answered, as a load balancer that
    /// took the instance out stops sending to it, and returns the counts.
    pub async fn stop(self) -> LoadReport {
        self.stop.cancel();
        self.join(REQUEST_TIMEOUT * 2).await
    }

    /// Waits for every client to end on a refused connect (the listener closed, or the process
    /// is gone), and returns the counts.
    ///
    /// # Panics
    ///
    /// When the clients are still running after `within`.
    pub async fn until_refused(self, within: Duration) -> LoadReport {
        self.join(within).await
    }

    async fn join(mut self, within: Duration) -> LoadReport {
        let clients = std::mem::take(&mut self.clients);
        let joined = tokio::time::timeout(within, futures::future::join_all(clients)).await;
        assert!(
            joined.is_ok(),
            "the load did not end within {within:?}: {:?}",
            self.report()
        );
        self.report()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.cancel();
        for client in &self.clients {
            client.abort();
        }
    }
}

/// One client: connects, sends requests back to back, reconnects when the server closes.
async fn client(addr: SocketAddr, path: String, counters: Arc<Counters>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let Ok(stream) = TcpStream::connect(addr).await else {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Ok((mut sender, connection)) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await
        else {
            continue;
        };
        tokio::spawn(connection);
        let (connected, mut on_connection) = (tokio::time::Instant::now(), 0);
        while !stop.is_cancelled() {
            on_connection += 1;
            // A connection the server closed between requests is no dropped request.
            if sender.ready().await.is_err() {
                break;
            }
            let request = Request::get(path.as_str())
                .header(hyper::header::HOST, addr.to_string())
                .body(Empty::new())
                .expect("a valid request");
            let exchange = async {
                let response = sender.send_request(request).await?;
                let status = response.status();
                let close = response
                    .headers()
                    .get(hyper::header::CONNECTION)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                let body = response.into_body().collect().await?.to_bytes();
                Ok::<_, hyper::Error>((status, close, body))
            };
            match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
                Ok(Ok((status, close, _))) if status.is_success() => {
                    counters.succeeded.fetch_add(1, Ordering::Relaxed);
                    if close {
                        break;
                    }
                }
                Ok(Ok((status, _, body))) => {
                    let body = String::from_utf8_lossy(&body).trim().to_owned();
                    counters.error(&counters.failed, format!("{status}: {body}"));
                    break;
                }
                // Canceled: hyper never wrote the request (the connection closed first).
                Ok(Err(error)) if error.is_canceled() => break,
                Ok(Err(error)) => {
                    let age = connected.elapsed();
                    // The server closes an accepted connection that brought no request only
                    // after 100 ms at its stop turn (lifecycle-http's grace): a younger
                    // connection reset on its first request was never accepted.
                    let counter = if on_connection == 1 && age < UNACCEPTED_WITHIN {
                        &counters.unaccepted
                    } else {
                        &counters.dropped
                    };
                    counters.error(
                        counter,
                        format!("{error:?} (request {on_connection} on a connection of {age:?})"),
                    );
                    break;
                }
                Err(_) => {
                    counters.error(&counters.dropped, "no answer within 10 s".into());
                    break;
                }
            }
        }
    }
}

/// Queues `jobs` jobs of `ms` milliseconds each through `POST /jobs?ms=N`, each on a fresh
/// connection; returns their ids.
///
/// # Panics
///
/// When a request is not answered `201 Created` with an id.
pub async fn enqueue(addr: SocketAddr, jobs: usize, ms: u64) -> Vec<i64> {
    let mut ids = Vec::with_capacity(jobs);
    for _ in 0..jobs {
        let stream = TcpStream::connect(addr).await.expect("the service listens");
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                .await
                .expect("a handshake");
        tokio::spawn(connection);
        let request = Request::post(format!("/jobs?ms={ms}"))
            .header(hyper::header::HOST, addr.to_string())
            .body(Empty::new())
            .expect("a valid request");
        let response = sender.send_request(request).await.expect("an answer");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
        let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        ids.push(body["id"].as_i64().expect("an id"));
    }
    ids
}
