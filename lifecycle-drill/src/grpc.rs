//! The gRPC load: unary calls over h2 (h2c, or h2 over TLS), each with an empty request
//! message, on connections of their own, so a failed call is known to be dropped or refused.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::counters::Counters;
use crate::load::{chain, never_processed, Load};

/// A gRPC message frame holding an empty message: not compressed, length 0. Every unary method
/// whose request has only optional fields accepts it (`grpc.health.v1.Health/Check` asks for
/// the whole server's health).
const EMPTY_MESSAGE: &[u8] = &[0, 0, 0, 0, 0];

fn call(load: &Load, path: &str) -> Request<Full<Bytes>> {
    let scheme = if load.tls.is_some() { "https" } else { "http" };
    Request::post(format!("{scheme}://{}{path}", load.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(EMPTY_MESSAGE)))
        .expect("the drill checks its paths before the load starts")
}

/// A gRPC connection: `streams` concurrent unary calls on one HTTP/2 connection; when the server
/// tells it to go away it reconnects (as a gRPC channel does), until a connect is refused
/// after the signal.
pub(crate) async fn grpc_client(load: Arc<Load>, path: String, streams: usize) {
    while !load.done() {
        let Ok(stream) = load.connect(b"h2").await else {
            load.counters.refused(load.signalled());
            if load.signalled() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Ok((sender, conn)) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await
        else {
            continue;
        };
        tokio::spawn(conn);
        let tasks: Vec<_> = (0..streams)
            .map(|_| {
                let (load, mut sender, path) = (load.clone(), sender.clone(), path.clone());
                tokio::spawn(async move {
                    while !load.done() && sender.ready().await.is_ok() {
                        Counters::add(&load.counters.sent);
                        match sender.send_request(call(&load, &path)).await {
                            Ok(response) => {
                                let http_ok = response.status().is_success();
                                let header_status = response.headers().get("grpc-status").cloned();
                                match response.into_body().collect().await {
                                    Ok(body) => {
                                        let status = body
                                            .trailers()
                                            .and_then(|t| t.get("grpc-status").cloned())
                                            .or(header_status);
                                        if http_ok && status.is_some_and(|s| s == "0") {
                                            Counters::add(&load.counters.succeeded);
                                        } else {
                                            // Answered, with an error status: not dropped.
                                            Counters::add(&load.counters.non_2xx);
                                        }
                                    }
                                    Err(error) => load
                                        .counters
                                        .dropped(format!("gRPC body: {}", chain(&error))),
                                }
                            }
                            Err(error) if never_processed(&error) => {
                                Counters::add(&load.counters.refused);
                                return;
                            }
                            Err(error) => {
                                load.counters.dropped(format!("gRPC: {}", chain(&error)));
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
}
