//! gRPC and TLS overhead, as `http_overhead` measures HTTP's: in one run, alternately,
//!
//! - **gRPC**: the same tonic service (tonic-health's `Check`) through `HttpServer` and through
//!   tonic's own server (`tonic::transport::Server`, with TCP_NODELAY as `Server::serve` sets
//!   it), loaded by a gRPC client of this file run as a separate process (32 concurrent unary
//!   calls on 4 h2c connections), or with `GRPC_LOAD=h2load` by nghttp2's `h2load` (the same
//!   calls and concurrency, from a load generator several times faster than the servers);
//! - **TLS**: the same router through `HttpServer` with TLS and through plain `axum::serve`
//!   over a TLS listener, both with the same certificate and rustls settings (ring provider,
//!   ALPN `h2` and `http/1.1`), loaded by `wrk` over HTTPS (keep-alive).
//!
//! Run: `cargo bench -p lifecycle-http --bench grpc_tls_overhead` (needs `wrk`). Options
//! through the environment: `ROUNDS` (default 5), `SECONDS` (default 5), `CONNECTIONS` (wrk's,
//! default 32), `WHAT` (`grpc`, `tls` or both, the default), `GRPC_LOAD`, and `WRK_CPU` to pin
//! the load to a core (pin the bench to the other:
//! `WRK_CPU=1 taskset -c 0 target/release/deps/grpc_tls_overhead-<hash> --bench`).
//! Both servers of a pair run in this process on one runtime with one worker thread.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::get;
use axum::Router;
use common::{env, median};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lifecycle_http::{HttpServer, TlsConfig};
use tokio::net::TcpListener;

mod common;

// ---- the gRPC client, run as a separate process ----

/// An empty `HealthCheckRequest` in a gRPC frame: `Check` for the whole server.
const EMPTY_MESSAGE: &[u8] = &[0, 0, 0, 0, 0];

/// `grpc-client ADDR SECONDS`: 32 concurrent unary calls on 4 connections for SECONDS; prints
/// calls per second and the p99 latency in ms.
fn grpc_client(addr: SocketAddr, seconds: u64) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (calls, mut latencies) = runtime.block_on(async move {
        let until = Instant::now() + Duration::from_secs(seconds);
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
                    let mut latencies = Vec::new();
                    while Instant::now() < until {
                        let request = hyper::Request::post(format!(
                            "http://{addr}/grpc.health.v1.Health/Check"
                        ))
                        .header("content-type", "application/grpc")
                        .header("te", "trailers")
                        .body(Full::new(Bytes::from_static(EMPTY_MESSAGE)))
                        .unwrap();
                        let start = Instant::now();
                        sender.ready().await.unwrap();
                        let response = sender.send_request(request).await.unwrap();
                        let body = response.into_body().collect().await.unwrap();
                        let status = body.trailers().and_then(|t| t.get("grpc-status"));
                        assert_eq!(status.map(|s| s.as_bytes()), Some(&b"0"[..]));
                        latencies.push(start.elapsed().as_secs_f64() * 1e3);
                    }
                    latencies
                }));
            }
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        (all.len(), all)
    });
    latencies.sort_by(f64::total_cmp);
    let p99 = latencies[latencies.len() * 99 / 100];
    println!("{} {p99}", calls as f64 / seconds as f64);
}

/// Loads `addr` with `h2load` (nghttp2's C load generator): 32 concurrent unary calls on 4
/// connections for `seconds`; calls per second and the p99 latency in ms, from its log.
fn h2load_grpc(addr: SocketAddr, seconds: u32) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let (body, log) = (dir.path().join("body"), dir.path().join("log"));
    std::fs::write(&body, EMPTY_MESSAGE).unwrap();
    let output = common::pinned("h2load")
        .args(["-t1", "-c4", "-m8", &format!("-D{seconds}")])
        .arg(format!("--data={}", body.display()))
        .arg(format!("--log-file={}", log.display()))
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .output()
        .expect("h2load is installed (apt-get install nghttp2-client)");
    let text = String::from_utf8_lossy(&output.stdout);
    let rps: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("finished in "))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|v| v.strip_suffix(" req/s"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no req/s in h2load's output:\n{text}"));
    let mut latencies: Vec<f64> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut columns = l.split('\t').skip(1);
            // The HTTP status only: h2load does not read gRPC's `grpc-status` trailer (the
            // bench's own client checks it).
            let status = columns.next()?;
            assert_eq!(status, "200", "a failed call in h2load's log: {l}");
            columns.next()?.parse::<f64>().ok()
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    (rps, latencies[latencies.len() * 99 / 100] / 1e3)
}

fn grpc_load(addr: SocketAddr, seconds: u32) -> (f64, f64) {
    if std::env::var("GRPC_LOAD").as_deref() == Ok("h2load") {
        return h2load_grpc(addr, seconds);
    }
    let exe = std::env::current_exe().unwrap();
    let output = common::pinned(exe.to_str().unwrap())
        .args(["grpc-client", &addr.to_string(), &seconds.to_string()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().unwrap());
    (fields.next().unwrap(), fields.next().unwrap())
}

// ---- wrk over HTTPS ----

/// `axum::serve` over TLS: the handshake in `accept`, as the simplest TLS listener does (the
/// load keeps its connections, so handshakes are only at the start).
struct TlsListener {
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

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

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// The rustls settings `TlsConfig` uses: ring, the safe defaults, ALPN h2 and http/1.1.
fn same_server_config(cert_pem: &str, key_pem: &str) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// This process's CPU time (user and system, all threads) in seconds, and its threads'
/// voluntary context switches (a worker parking when it runs out of work), from `/proc`.
fn process_usage() -> (f64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command's closing parenthesis; utime and stime are the 14th and
    // 15th, in clock ticks (USER_HZ, 100 per second on Linux).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    let mut switches = 0;
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        switches += status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    (ticks / 100.0, switches)
}

/// Loads both servers alternately and prints the rounds and the medians' ratios.
fn compare(
    title: &str,
    names: [&str; 2],
    rounds: u32,
    mut load: impl FnMut(usize, u32) -> (f64, f64),
    seconds: u32,
) {
    load(0, 1);
    load(1, 1);
    let mut results = [(vec![], vec![], vec![]), (vec![], vec![], vec![])];
    println!("{title}");
    println!("round  server                 req/s     p99 ms  cpu us/req  parks/kreq");
    for round in 1..=rounds {
        let order = if round % 2 == 1 { [0, 1] } else { [1, 0] };
        for which in order {
            let (cpu_before, switches_before) = process_usage();
            let (rps, p99) = load(which, seconds);
            let (cpu_after, switches_after) = process_usage();
            let requests = rps * f64::from(seconds);
            let cpu = (cpu_after - cpu_before) * 1e6 / requests;
            let parks = (switches_after - switches_before) as f64 * 1e3 / requests;
            println!(
                "{round:>5}  {:<20} {rps:>9.0} {p99:>10.3} {cpu:>11.2} {parks:>11.1}",
                names[which]
            );
            results[which].0.push(rps);
            results[which].1.push(p99);
            results[which].2.push(cpu);
        }
    }
    let [(mut a_rps, mut a_p99, mut a_cpu), (mut b_rps, mut b_p99, mut b_cpu)] = results;
    println!();
    println!("median         {:>20} {:>20}  ratio", names[0], names[1]);
    for (label, a, b) in [
        ("req/s         ", median(&mut a_rps), median(&mut b_rps)),
        ("p99 latency ms", median(&mut a_p99), median(&mut b_p99)),
        ("cpu us/req    ", median(&mut a_cpu), median(&mut b_cpu)),
    ] {
        println!("{label} {a:>20.3} {b:>20.3} {:>6.3}", a / b);
    }
    println!();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("grpc-client") {
        grpc_client(args[2].parse().unwrap(), args[3].parse().unwrap());
        return;
    }
    let (rounds, seconds, connections) =
        (env("ROUNDS", 5), env("SECONDS", 5), env("CONNECTIONS", 32));
    let what = std::env::var("WHAT").unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();

    if what.is_empty() || what == "grpc" {
        let (ours, tonic_own) = runtime.block_on(async {
            let service = || {
                let (reporter, service) = tonic_health::server::health_reporter();
                (reporter, service)
            };
            let (reporter_a, service_a) = service();
            let (reporter_b, service_b) = service();
            reporter_a
                .set_service_status("", tonic_health::ServingStatus::Serving)
                .await;
            reporter_b
                .set_service_status("", tonic_health::ServingStatus::Serving)
                .await;
            std::mem::forget((reporter_a, reporter_b));
            let ours = common::serve_alone(HttpServer::bind(
                "127.0.0.1:0".parse().unwrap(),
                tonic::service::Routes::new(service_a),
            ))
            .await;
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let tonic_own = listener.local_addr().unwrap();
            // As `Server::serve` would run it: `tcp_nodelay` (on by default) applies only to
            // a `TcpIncoming`, and with Nagle's algorithm on, tonic's server would send fewer,
            // larger segments under load than any server with TCP_NODELAY.
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(service_b)
                    .serve_with_incoming(incoming),
            );
            (ours, tonic_own)
        });
        let addrs = [ours, tonic_own];
        compare(
            "gRPC unary (tonic-health Check), 32 concurrent calls on 4 h2c connections",
            ["lifecycle-http", "tonic Server"],
            rounds,
            |which, seconds| grpc_load(addrs[which], seconds),
            seconds,
        );
    }

    if what.is_empty() || what == "tls" {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert_pem, key_pem) = (made.cert.pem(), made.signing_key.serialize_pem());
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, &cert_pem).unwrap();
        std::fs::write(&key, &key_pem).unwrap();
        let router = || Router::new().route("/", get(|| async { "hello, world" }));
        let (ours, plain) = runtime.block_on(async {
            let tls = TlsConfig::from_pem_files(&cert, &key).unwrap();
            let ours = common::serve_alone(
                HttpServer::bind("127.0.0.1:0".parse().unwrap(), router()).tls(tls),
            )
            .await;
            let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let plain = tcp.local_addr().unwrap();
            let listener = TlsListener {
                tcp,
                acceptor: same_server_config(&cert_pem, &key_pem).into(),
            };
            tokio::spawn(async move { axum::serve(listener, router()).await.unwrap() });
            (ours, plain)
        });
        let urls = [format!("https://{ours}/"), format!("https://{plain}/")];
        compare(
            "HTTPS (wrk, keep-alive, TLS 1.3)",
            ["lifecycle-http TLS", "axum::serve TLS"],
            rounds,
            |which, seconds| common::wrk(&urls[which], seconds, connections),
            seconds,
        );
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
}
