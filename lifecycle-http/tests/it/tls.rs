//! TLS through `HttpServer`, seen by real rustls clients: HTTPS keep-alive clients across the
//! shutdown lose nothing; ALPN gives HTTP/2 and gRPC on the same port; a certificate rotated
//! on disk under load is picked up with nothing dropped; a handshake that never completes is
//! cut by its timeout, and one in progress at the stop turn completes and is served.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Query;
use axum::http::{Request, StatusCode, Version};
use axum::routing::get;
use axum::Router;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lifecycle_core::testing::TestRun;
use lifecycle_core::{exit_code, Lifecycle, LifecycleHandle, Registration, Report};
use lifecycle_http::grpc::GrpcHealthService;
use lifecycle_http::{HttpServer, HttpStats, TlsConfig};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncReadExt;

use crate::harness;
use harness::DelayProxy;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A self-signed certificate for `localhost`, as PEM, and its DER for clients to trust.
struct Cert {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

fn new_cert() -> Cert {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    Cert {
        cert_pem: made.cert.pem(),
        key_pem: made.signing_key.serialize_pem(),
        der: made.cert.der().clone(),
    }
}

struct Files {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

fn write_files(cert: &Cert) -> Files {
    let dir = tempfile::tempdir().unwrap();
    let files = Files {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
        _dir: dir,
    };
    std::fs::write(&files.cert, &cert.cert_pem).unwrap();
    std::fs::write(&files.key, &cert.key_pem).unwrap();
    files
}

fn connector(trusted: &[&Cert], alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in trusted {
        roots.add(cert.der.clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Full handshakes only: a resumed session shows the certificate of the session it resumes.
    config.resumption = rustls::client::Resumption::disabled();
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    connector: &TlsConnector,
    addr: SocketAddr,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

struct Served {
    addr: SocketAddr,
    handle: LifecycleHandle,
    stats: HttpStats,
    report: JoinHandle<Report>,
}

async fn work(Query(params): Query<std::collections::HashMap<String, u64>>) -> &'static str {
    let ms = params.get("ms").copied().unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    "done"
}

async fn serve(
    drain_delay: Duration,
    files: &Files,
    configure: impl FnOnce(TlsConfig) -> TlsConfig,
) -> Served {
    let builder = Lifecycle::builder().signals([]).drain_delay(drain_delay);
    let handle = builder.handle();
    let tls = configure(TlsConfig::from_pem_files(&files.cert, &files.key).unwrap());
    let router = Router::new().route("/work", get(work)).merge(
        tonic::service::Routes::new(GrpcHealthService::new(handle.clone()).into_server())
            .into_axum_router(),
    );
    let server = HttpServer::bind("127.0.0.1:0".parse().unwrap(), router).tls(tls);
    let (stats, local_addr) = (server.stats(), server.local_addr());
    let run = TestRun::start(
        builder.register(Registration::new("https", server).stop_timeout(Duration::from_secs(5))),
    )
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), run.ready())
        .await
        .expect("ready in time")
        .unwrap();
    Served {
        addr: local_addr.get().unwrap(),
        handle,
        stats,
        report: run.into_task(),
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn h1(stream: TlsStream<TcpStream>) -> Sender {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// Sends a GET; `Ok(connection_close)` when answered 200 in full.
async fn fetch(sender: &mut Sender, uri: &str) -> Result<bool, hyper::Error> {
    sender.ready().await?;
    let request = Request::get(uri)
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await?;
    assert_eq!(response.status(), StatusCode::OK);
    let close = response
        .headers()
        .get("connection")
        .is_some_and(|v| v == "close");
    response.into_body().collect().await?;
    Ok(close)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_keep_alive_clients_across_the_shutdown_lose_nothing() {
    let cert = new_cert();
    let files = write_files(&cert);
    let served = serve(Duration::from_millis(300), &files, |tls| tls).await;
    let connector = connector(&[&cert], &[b"http/1.1"]);
    let (answered, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (connector, answered, refused) = (connector.clone(), answered.clone(), refused.clone());
        let addr = served.addr;
        clients.push(tokio::spawn(async move {
            loop {
                let Ok(stream) = tls_connect(&connector, addr).await else {
                    // The listener is closed: a load balancer would retry elsewhere.
                    refused.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let mut sender = h1(stream).await;
                loop {
                    let close = fetch(&mut sender, "/work?ms=20")
                        .await
                        .expect("a request sent on an open connection is answered");
                    answered.fetch_add(1, Ordering::Relaxed);
                    if close {
                        break;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    served.handle.shutdown("deploy");
    for client in clients {
        tokio::time::timeout(Duration::from_secs(5), client)
            .await
            .expect("clients end once refused")
            .unwrap();
    }
    let report = served.report.await.unwrap();
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
    assert_eq!(served.stats.force_closed(), 0);
    assert!(answered.load(Ordering::Relaxed) > 50, "load ran");
    assert_eq!(refused.load(Ordering::Relaxed), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_serves_http2_and_grpc_over_tls() {
    let cert = new_cert();
    let files = write_files(&cert);
    let served = serve(Duration::ZERO, &files, |tls| tls).await;

    let stream = tls_connect(&connector(&[&cert], &[b"h2", b"http/1.1"]), served.addr)
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = Request::get("https://localhost/work")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_2);

    // tonic's client over the same TLS.
    let grpc_connector = connector(&[&cert], &[b"h2"]);
    let addr = served.addr;
    let channel = tonic::transport::Endpoint::from_static("https://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let connector = grpc_connector.clone();
            async move { tls_connect(&connector, addr).await.map(TokioIo::new) }
        }))
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    assert_eq!(answer.into_inner().status, 1, "SERVING");

    served.handle.shutdown("done");
    let report = served.report.await.unwrap();
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
}

/// Writes the new certificate as an unsynchronised tool would: the certificate, a pause, then
/// the key (a check in between sees a pair that does not match).
fn rotate(files: &Files, cert: &Cert) {
    std::fs::write(&files.cert, &cert.cert_pem).unwrap();
    std::thread::sleep(Duration::from_millis(120));
    std::fs::write(&files.key, &cert.key_pem).unwrap();
}

fn peer_cert(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_rotated_on_disk_under_load_is_picked_up_with_nothing_dropped() {
    let (old, new) = (new_cert(), new_cert());
    let files = write_files(&old);
    let served = serve(Duration::ZERO, &files, |tls| {
        tls.reload_interval(Duration::from_millis(50))
    })
    .await;
    let connector = connector(&[&old, &new], &[b"http/1.1"]);
    let stop = tokio_util::sync::CancellationToken::new();
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (connector, stop, addr) = (connector.clone(), stop.clone(), served.addr);
        clients.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            // A keep-alive connection that stays open across the rotation...
            let mut kept = h1(tls_connect(&connector, addr).await.unwrap()).await;
            while !stop.is_cancelled() {
                // ... and a new connection (a new handshake) for every other request.
                let stream = tls_connect(&connector, addr)
                    .await
                    .expect("every handshake succeeds");
                seen.push(peer_cert(&stream));
                let mut sender = h1(stream).await;
                fetch(&mut sender, "/work").await.expect("answered");
                fetch(&mut kept, "/work")
                    .await
                    .expect("the kept connection is served");
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let writer = {
        let (cert, key) = (files.cert.clone(), files.key.clone());
        let new = Cert {
            cert_pem: new.cert_pem.clone(),
            key_pem: new.key_pem.clone(),
            der: new.der.clone(),
        };
        tokio::task::spawn_blocking(move || {
            rotate(
                &Files {
                    _dir: tempfile::tempdir().unwrap(),
                    cert,
                    key,
                },
                &new,
            )
        })
    };
    writer.await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.cancel();
    for client in clients {
        let seen = client.await.unwrap();
        assert_eq!(seen.first(), Some(&old.der), "the old certificate first");
        assert_eq!(
            seen.last(),
            Some(&new.der),
            "the new one after the rotation"
        );
        let switched = seen.iter().position(|c| *c == new.der).unwrap();
        assert!(
            seen[switched..].iter().all(|c| *c == new.der),
            "never back to the old one (a half-written pair is not used)"
        );
    }
    served.handle.shutdown("done");
    let report = served.report.await.unwrap();
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
    assert_eq!(served.stats.force_closed(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_completes_its_handshake_is_disconnected() {
    let cert = new_cert();
    let files = write_files(&cert);
    let served = serve(Duration::ZERO, &files, |tls| {
        tls.handshake_timeout(Duration::from_millis(200))
    })
    .await;
    let mut silent = TcpStream::connect(served.addr).await.unwrap();
    let mut byte = [0; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), silent.read(&mut byte))
        .await
        .expect("disconnected by the handshake timeout");
    assert!(matches!(read, Ok(0) | Err(_)));
    assert_eq!(served.stats.open_connections(), 0);
    served.handle.shutdown("done");
    let report = served.report.await.unwrap();
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_in_progress_at_the_stop_turn_completes_and_is_served() {
    let cert = new_cert();
    let files = write_files(&cert);
    let served = serve(Duration::ZERO, &files, |tls| tls).await;
    // A long round trip: the handshake, begun before the stop turn, ends well after it.
    let proxy = DelayProxy::start(served.addr, Duration::from_millis(200)).await;
    let handshake = tokio::spawn({
        let connector = connector(&[&cert], &[b"http/1.1"]);
        async move {
            let tcp = TcpStream::connect(proxy.addr).await.unwrap();
            let stream = connector
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await;
            (stream, proxy)
        }
    });
    // The ClientHello reaches the server at 200 ms; the stop turn comes at 300 ms.
    tokio::time::sleep(Duration::from_millis(300)).await;
    served.handle.shutdown("deploy");
    let (stream, _proxy) = handshake.await.unwrap();
    let stream = stream.expect("the handshake completes");
    let mut sender = h1(stream).await;
    let close = fetch(&mut sender, "/work").await.expect("served");
    assert!(close, "asked to close");
    let report = served.report.await.unwrap();
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
    assert_eq!(served.stats.force_closed(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_began_no_handshake_do_not_hold_the_stop() {
    let cert = new_cert();
    let files = write_files(&cert);
    let served = serve(Duration::ZERO, &files, |tls| tls).await;
    // Pre-connects (a load balancer's, a browser's) that never send a byte.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(served.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let signalled = std::time::Instant::now();
    served.handle.shutdown("deploy");
    let report = served.report.await.unwrap();
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
    assert!(
        signalled.elapsed() < Duration::from_secs(1),
        "stopped in {:?}, not at the stop timeout (5 s)",
        signalled.elapsed()
    );
    assert_eq!(served.stats.force_closed(), 0);
    for mut stream in silent {
        let mut byte = [0; 1];
        assert!(matches!(stream.read(&mut byte).await, Ok(0) | Err(_)));
    }
}

#[test]
fn files_that_do_not_hold_a_certificate_and_its_key_are_typed_errors() {
    let (one, other) = (new_cert(), new_cert());
    let files = write_files(&one);
    std::fs::write(&files.key, &other.key_pem).unwrap();
    let mismatch = TlsConfig::from_pem_files(&files.cert, &files.key).unwrap_err();
    assert!(
        matches!(mismatch, lifecycle_http::HttpError::TlsCertificate(_)),
        "{mismatch:?}"
    );
    let missing = TlsConfig::from_pem_files(Path::new("/nonexistent.crt"), &files.key).unwrap_err();
    assert!(
        matches!(missing, lifecycle_http::HttpError::TlsFile { .. }),
        "{missing:?}"
    );
    std::fs::write(&files.cert, "not pem").unwrap();
    let garbage = TlsConfig::from_pem_files(&files.cert, &files.key).unwrap_err();
    assert!(matches!(garbage, lifecycle_http::HttpError::TlsFile { .. }));
}

/// The transports one accept loop serves: the same cases run on each.
#[derive(Debug, Clone, Copy)]
enum Transport {
    Tcp,
    Unix,
    Tls,
}

/// A stream of any transport, for hyper's client.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// Where a server on a transport listens, to connect to it.
#[derive(Clone)]
struct Target {
    transport: Transport,
    addr: Option<SocketAddr>,
    path: PathBuf,
    connector: TlsConnector,
}

/// A server on `transport` with `max_connections` 1.
struct OnTransport {
    target: Target,
    handle: LifecycleHandle,
    stats: HttpStats,
    report: JoinHandle<Report>,
    _dir: tempfile::TempDir,
    _files: Files,
}

impl OnTransport {
    async fn start(transport: Transport) -> OnTransport {
        let dir = tempfile::tempdir().unwrap();
        let cert = new_cert();
        let files = write_files(&cert);
        let path = dir.path().join("http.sock");
        let builder = Lifecycle::builder().signals([]);
        let handle = builder.handle();
        let router = Router::new().route("/work", get(work));
        let server = match transport {
            Transport::Tcp => HttpServer::bind("127.0.0.1:0".parse().unwrap(), router),
            Transport::Unix => HttpServer::bind_unix(&path, router),
            Transport::Tls => HttpServer::bind("127.0.0.1:0".parse().unwrap(), router)
                .tls(TlsConfig::from_pem_files(&files.cert, &files.key).unwrap()),
        }
        .max_connections(1);
        let (stats, local_addr) = (server.stats(), server.local_addr());
        let run = TestRun::start(
            builder
                .register(Registration::new("http", server).stop_timeout(Duration::from_secs(5))),
        )
        .unwrap();
        run.ready().await.unwrap();
        OnTransport {
            target: Target {
                transport,
                addr: local_addr.get(),
                path,
                connector: connector(&[&cert], &[b"http/1.1"]),
            },
            handle,
            stats,
            report: run.into_task(),
            _dir: dir,
            _files: files,
        }
    }
}

impl Target {
    /// A connection, which may wait in the backlog (its TLS handshake with it).
    async fn connect(self) -> Box<dyn Io> {
        match self.transport {
            Transport::Tcp => Box::new(TcpStream::connect(self.addr.unwrap()).await.unwrap()),
            Transport::Unix => Box::new(tokio::net::UnixStream::connect(&self.path).await.unwrap()),
            Transport::Tls => Box::new(
                tls_connect(&self.connector, self.addr.unwrap())
                    .await
                    .unwrap(),
            ),
        }
    }
}

/// `GET /work?ms=N` on a new HTTP/1.1 connection over `io`; the status, and the connection's
/// sender kept open (keep-alive) until dropped.
async fn get_on(
    io: Box<dyn Io>,
    ms: u64,
) -> (
    StatusCode,
    hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
) {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = Request::get(format!("/work?ms={ms}"))
        .header("host", "test")
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    response.into_body().collect().await.unwrap();
    (status, sender)
}

/// The connection limit, the backlog and the drain hold on TCP, on a Unix socket and over TLS
/// alike: at `max_connections` 1 a second client waits (never refused, never reset) until the
/// first leaves, and a request in flight at the shutdown is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_guarantees_hold_on_every_transport() {
    for transport in [Transport::Tcp, Transport::Unix, Transport::Tls] {
        let server = OnTransport::start(transport).await;
        let (status, first) = get_on(server.target.clone().connect().await, 0).await;
        assert_eq!(status, StatusCode::OK, "{transport:?}");
        // The first connection is held open: the second waits in the backlog.
        let target = server.target.clone();
        let second = tokio::spawn(async move { get_on(target.connect().await, 0).await.0 });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !second.is_finished(),
            "{transport:?}: served beyond the limit"
        );
        assert_eq!(server.stats.connection_limit_reached(), 1, "{transport:?}");
        drop(first);
        let status = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("served once the first left")
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{transport:?}");

        // A request in flight at the shutdown is answered.
        let io = server.target.clone().connect().await;
        let in_flight = tokio::spawn(get_on(io, 300));
        tokio::time::sleep(Duration::from_millis(100)).await;
        server.handle.shutdown("test over");
        assert_eq!(in_flight.await.unwrap().0, StatusCode::OK, "{transport:?}");
        let report = server.report.await.unwrap();
        assert_eq!(
            report.exit_code(),
            exit_code::SUCCESS,
            "{transport:?}: {report}"
        );
        assert_eq!(server.stats.force_closed(), 0, "{transport:?}");
    }
}
