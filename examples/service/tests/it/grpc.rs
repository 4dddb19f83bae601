//! The real `example-service` binary over gRPC, with tonic's client: unary and server-streaming
//! calls across SIGTERM (every call that reached it completes, streams end with a status), the
//! health service's `Watch` turning `NOT_SERVING` within 100 ms of the signal, and the same port
//! over TLS for HTTPS and gRPC.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[allow(dead_code, missing_docs, unreachable_pub, clippy::all)]
mod pb {
    include!("../../src/grpc/messages.rs");
    include!(concat!(env!("OUT_DIR"), "/client/example.v1.Example.rs"));
}

use crate::common::{self, free_addr, BIN};
use pb::example_client::ExampleClient;
use pb::{TicksRequest, WorkRequest};

async fn wait_serving(
    channel: impl Fn() -> futures::future::BoxFuture<'static, Option<Channel>>,
) -> Channel {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(channel) = channel().await {
            let answer = HealthClient::new(channel.clone())
                .check(HealthCheckRequest::default())
                .await;
            if answer.is_ok_and(|a| a.into_inner().status == ServingStatus::Serving as i32) {
                return channel;
            }
        }
        assert!(Instant::now() < until, "the service did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn h2c(addr: SocketAddr) -> Option<Channel> {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_and_streaming_calls_across_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut service = common::spawn(
        &["--listen", &addr.to_string(), "--drain-delay", "500ms"],
        dir.path(),
    );
    let channel = wait_serving(move || Box::pin(h2c(addr))).await;
    let mut health = HealthClient::new(channel.clone());
    let named = health
        .check(HealthCheckRequest {
            service: "example.v1.Example".into(),
        })
        .await
        .unwrap();
    assert_eq!(named.into_inner().status, ServingStatus::Serving as i32);
    let mut watch = health
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );

    let client = ExampleClient::new(channel);
    let mut work = Vec::new();
    for _ in 0..16 {
        let mut client = client.clone();
        work.push(tokio::spawn(async move {
            client.work(WorkRequest { ms: 800 }).await
        }));
    }
    let mut ticks = Vec::new();
    for _ in 0..4 {
        let mut client = client.clone();
        ticks.push(tokio::spawn(async move {
            let mut stream = client
                .ticks(TicksRequest {
                    count: 100_000,
                    interval_ms: 10,
                })
                .await?
                .into_inner();
            let mut received = 0;
            loop {
                match stream.message().await {
                    Ok(Some(tick)) => {
                        assert_eq!(tick.n, received, "in order, none lost");
                        received += 1;
                    }
                    Ok(None) => return Ok::<_, tonic::Status>((received, None)),
                    Err(status) => return Ok((received, Some(status))),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let signalled = Instant::now();
    common::signal(&service, "TERM");
    let next = tokio::time::timeout(Duration::from_millis(100), watch.message())
        .await
        .expect("NOT_SERVING within 100 ms of SIGTERM")
        .unwrap()
        .unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    println!("NOT_SERVING {:?} after SIGTERM", signalled.elapsed());

    for call in work {
        let reply = call.await.unwrap().expect("every unary call completes");
        assert_eq!(reply.into_inner().answer, "done");
    }
    for stream in ticks {
        let (received, end): (u32, Option<tonic::Status>) =
            stream.await.unwrap().expect("the stream was accepted");
        assert!(received > 10, "ticks flowed ({received})");
        let status = end.expect("ended by the server's stop turn, with a status");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            status.message().contains("shutting down"),
            "the server's status, not a reset: {status:?}"
        );
    }
    assert_eq!(
        tokio::task::block_in_place(|| common::wait(&mut service)),
        Some(0)
    );
}

mod tls {
    use super::*;
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::TokioIo;
    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio::net::TcpStream;
    use tokio_rustls::TlsConnector;

    fn connector(trusted: CertificateDer<'static>, alpn: &[u8]) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(trusted).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        TlsConnector::from(Arc::new(config))
    }

    async fn tls_channel(addr: SocketAddr, connector: TlsConnector) -> Option<Channel> {
        Endpoint::from_static("https://localhost")
            .connect_with_connector(tower::service_fn(move |_| {
                let connector = connector.clone();
                async move {
                    let tcp = TcpStream::connect(addr).await?;
                    let tls = connector
                        .connect(ServerName::try_from("localhost").unwrap(), tcp)
                        .await?;
                    Ok::<_, std::io::Error>(TokioIo::new(tls))
                }
            }))
            .await
            .ok()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_flags_serve_https_and_grpc_on_the_port() {
        let dir = tempfile::tempdir().unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        let addr = free_addr();
        let mut service = common::spawn(
            &[
                "--listen",
                &addr.to_string(),
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                key.to_str().unwrap(),
            ],
            dir.path(),
        );
        let der = made.cert.der().clone();
        let grpc = connector(der.clone(), b"h2");
        let channel = wait_serving(move || Box::pin(tls_channel(addr, grpc.clone()))).await;
        let reply = ExampleClient::new(channel)
            .work(WorkRequest { ms: 1 })
            .await
            .unwrap();
        assert_eq!(reply.into_inner().answer, "done");

        // HTTPS (HTTP/1.1) on the same port.
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = connector(der, b"http/1.1")
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let request = hyper::Request::get("/readyz")
            .header("host", "localhost")
            .body(Empty::<hyper::body::Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap();

        common::signal(&service, "TERM");
        assert_eq!(
            tokio::task::block_in_place(|| common::wait(&mut service)),
            Some(0)
        );
    }

    /// The certificate a fresh full handshake gets.
    async fn served_cert(addr: SocketAddr, trusted: &[&CertificateDer<'static>]) -> Vec<u8> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in trusted {
            roots.add((*cert).clone()).unwrap();
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    }

    /// cert-manager renews the certificate, systemd's `ExecReload` sends SIGHUP: the service
    /// upgrades in place, and the new process, on the same port, serves the new certificate.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sighup_upgrade_serves_a_rotated_certificate_on_the_same_port() {
        let dir = tempfile::tempdir().unwrap();
        let old = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let new = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let pid_file = dir.path().join("service.pid");
        std::fs::write(&cert, old.cert.pem()).unwrap();
        std::fs::write(&key, old.signing_key.serialize_pem()).unwrap();
        let addr = free_addr();
        let mut service = common::spawn(
            &[
                "--listen",
                &addr.to_string(),
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                key.to_str().unwrap(),
                "--pid-file",
                pid_file.to_str().unwrap(),
            ],
            dir.path(),
        );
        let grpc = connector(old.cert.der().clone(), b"h2");
        wait_serving(move || Box::pin(tls_channel(addr, grpc.clone()))).await;
        let trusted = [old.cert.der(), new.cert.der()];
        assert_eq!(served_cert(addr, &trusted).await, old.cert.der().to_vec());

        std::fs::write(&cert, new.cert.pem()).unwrap();
        std::fs::write(&key, new.signing_key.serialize_pem()).unwrap();
        let status = Command::new("kill")
            .args(["-HUP", &service.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        // Well before the 10 s periodic check: the new process read the files.
        let until = Instant::now() + Duration::from_secs(8);
        while served_cert(addr, &trusted).await != new.cert.der().to_vec() {
            assert!(
                Instant::now() < until,
                "the new certificate is served after SIGHUP"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The old process handed over and exited cleanly; the new one is in the PID file.
        assert_eq!(
            tokio::task::block_in_place(|| common::wait(&mut service)),
            Some(0)
        );
        let successor: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_ne!(successor, service.0.id() as i32);
        assert_eq!(served_cert(addr, &trusted).await, new.cert.der().to_vec());
        let status = Command::new("kill")
            .args(["-TERM", &successor.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        // Not our child: gone (or a zombie of init's) once it has stopped.
        let until = Instant::now() + Duration::from_secs(15);
        while std::fs::read_to_string(format!("/proc/{successor}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z "))
        {
            assert!(Instant::now() < until, "the new process did not stop");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The drill over gRPC and HTTPS: its clients speak TLS (HTTP/1.1 and gRPC through ALPN) to
/// the binary, SIGTERM it under load, and count every call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drill_loads_grpc_over_tls_across_sigterm_and_nothing_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let addr = free_addr();
    let mut command = Command::new(BIN);
    command
        .args(["--listen", &addr.to_string(), "--drain-delay", "500ms"])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env(
            "DATABASE_URL",
            format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("service.db").display()
            ),
        )
        .env("RUST_LOG", "warn");
    let summary = lifecycle_drill::Drill::new()
        .url(format!("https://{addr}"))
        .ca_cert(&cert)
        .path("/work?ms=10")
        .clients(4)
        .h2_streams(0)
        .grpc("/example.v1.Example/Work", 8)
        .signal_after(Duration::from_millis(800))
        .budget(Duration::from_secs(15))
        .run_command(command)
        .await
        .expect("the drill ran");
    println!("{summary}");
    summary.assert_passed();
}
