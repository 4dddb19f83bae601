//! gRPC and TLS overhead in instructions, as `http_instructions` measures HTTP's, under
//! valgrind's callgrind:
//!
//! - gRPC: the same tonic service (tonic-health's `Check`) served through `lifecycle-http` and
//!   through tonic's own server, answering unary calls from an in-process h2c client (4
//!   connections, 8 calls at a time on each);
//! - TLS: the same router through `lifecycle-http` with TLS and through `axum::serve` over a
//!   TLS listener with the same rustls settings, answering keep-alive HTTP/1.1 requests from an
//!   in-process rustls client (8 connections).
//!
//! Two runs per server (`SMALL` and `LARGE` calls, default 4000 and 20000), the difference of
//! the totals divided by the difference of the counts, so the start-up (and the handshakes)
//! drop out; the client's share is the same for both servers of a pair. Both run with a second,
//! idle thread, as every service does (`ONE_THREAD=1`: without it; see `common`).
//!
//! Run: `cargo bench -p lifecycle-http --bench grpc_tls_instructions` (needs `valgrind`).

mod common;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lifecycle_http::HttpServer;

/// An empty `HealthCheckRequest` in a gRPC frame.
const EMPTY_MESSAGE: &[u8] = &[0, 0, 0, 0, 0];

fn serve(server: &str, calls: usize) {
    if server.ends_with("tls") {
        return serve_tls(server, calls);
    }
    common::second_thread();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let addr = if server == "lifecycle-http" {
            let server = HttpServer::bind(
                "127.0.0.1:0".parse().unwrap(),
                tonic::service::Routes::new(service),
            );
            common::serve_alone(server).await
        } else {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            // TCP_NODELAY as `Server::serve` sets it (the builder's setting applies only to
            // a `TcpIncoming`).
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming(incoming),
            );
            addr
        };
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            for _ in 0..8 {
                let mut sender = sender.clone();
                tasks.push(tokio::spawn(async move {
                    for _ in 0..calls / 32 {
                        let request = hyper::Request::post(format!(
                            "http://{addr}/grpc.health.v1.Health/Check"
                        ))
                        .header("content-type", "application/grpc")
                        .header("te", "trailers")
                        .body(Full::new(Bytes::from_static(EMPTY_MESSAGE)))
                        .unwrap();
                        sender.ready().await.unwrap();
                        let response = sender.send_request(request).await.unwrap();
                        response.into_body().collect().await.unwrap();
                    }
                }));
            }
        }
        for task in tasks {
            task.await.unwrap();
        }
        drop(reporter);
    });
}

/// Keep-alive HTTPS requests to `lifecycle-http-tls` or `axum-tls`.
fn serve_tls(server: &str, requests: usize) {
    use std::sync::Arc;
    common::second_thread();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert_pem, key_pem) = (made.cert.pem(), made.signing_key.serialize_pem());
        let router =
            || axum::Router::new().route("/", axum::routing::get(|| async { "hello, world" }));
        let dir = tempfile::tempdir().unwrap();
        let addr = if server == "lifecycle-http-tls" {
            let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
            std::fs::write(&cert, &cert_pem).unwrap();
            std::fs::write(&key, &key_pem).unwrap();
            let tls = lifecycle_http::TlsConfig::from_pem_files(&cert, &key).unwrap();
            let server = HttpServer::bind("127.0.0.1:0".parse().unwrap(), router()).tls(tls);
            common::serve_alone(server).await
        } else {
            let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = tcp.local_addr().unwrap();
            let listener = TlsListener {
                tcp,
                acceptor: server_config(&cert_pem, &key_pem).into(),
            };
            tokio::spawn(async move { axum::serve(listener, router()).await.unwrap() });
            addr
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(made.cert.der().clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let mut clients = Vec::new();
        for _ in 0..8 {
            let connector = connector.clone();
            clients.push(tokio::spawn(async move {
                let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let tls = connector.connect(name, tcp).await.unwrap();
                let (mut sender, conn) = hyper::client::conn::http1::handshake::<
                    _,
                    http_body_util::Empty<Bytes>,
                >(TokioIo::new(tls))
                .await
                .unwrap();
                tokio::spawn(conn);
                for _ in 0..requests / 8 {
                    sender.ready().await.unwrap();
                    let request = hyper::Request::get("/")
                        .header("host", "bench")
                        .body(http_body_util::Empty::new())
                        .unwrap();
                    let response = sender.send_request(request).await.unwrap();
                    response.into_body().collect().await.unwrap();
                }
            }));
        }
        for client in clients {
            client.await.unwrap();
        }
    });
}

/// `axum::serve` over TLS, the handshake in `accept`.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// The rustls settings `TlsConfig` uses: ring, the safe defaults, ALPN h2 and http/1.1.
fn server_config(cert_pem: &str, key_pem: &str) -> std::sync::Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    std::sync::Arc::new(config)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        serve(&args[2], args[3].parse().unwrap());
        return;
    }
    let (small, large) = common::sizes();
    let per_call = |server: &str| common::per_request(server, (small, large));
    let what = std::env::var("WHAT").unwrap_or_default();
    if what.is_empty() || what == "grpc" {
        let ours = per_call("lifecycle-http");
        let tonic = per_call("tonic");
        println!("gRPC: instructions per unary call (client included), {small} and {large} calls");
        println!("lifecycle-http     {ours:>10.0}");
        println!("tonic Server       {tonic:>10.0}");
        println!("difference         {:>10.0}", ours - tonic);
        println!("ratio              {:>10.3}", tonic / ours);
    }
    if what.is_empty() || what == "tls" {
        let ours = per_call("lifecycle-http-tls");
        let plain = per_call("axum-tls");
        println!("HTTPS: instructions per request (client included), {small} and {large} requests");
        println!("lifecycle-http TLS {ours:>10.0}");
        println!("axum::serve TLS    {plain:>10.0}");
        println!("difference         {:>10.0}", ours - plain);
        println!("ratio              {:>10.3}", plain / ours);
    }
}
