//! Any tower or hyper service is served through the same connections as a router, so with the
//! same drain; handlers see the client's address; a Unix domain socket serves and drains as
//! TCP does, and its path is removed at the stop.

use crate::harness;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode};
use axum::routing::get;
use axum::Router;
use harness::H1;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use lifecycle_core::testing::TestRun;
use lifecycle_core::{exit_code, Lifecycle, LifecycleHandle, Registration, Report};
use lifecycle_http::{AnyService, HttpServer, HttpStats, HyperService};
use tokio::task::JoinHandle;
use tower::ServiceBuilder;

struct Served {
    addr: Option<SocketAddr>,
    handle: LifecycleHandle,
    stats: HttpStats,
    report: JoinHandle<Report>,
}

async fn serve(drain_delay: Duration, server: impl FnOnce() -> HttpServer) -> Served {
    let builder = Lifecycle::builder().signals([]).drain_delay(drain_delay);
    let handle = builder.handle();
    let server = server();
    let (stats, local_addr) = (server.stats(), server.local_addr());
    let run = TestRun::start(
        builder.register(Registration::new("http", server).stop_timeout(Duration::from_secs(5))),
    )
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), run.ready())
        .await
        .expect("ready in time")
        .unwrap();
    Served {
        addr: local_addr.get(),
        handle,
        stats,
        report: run.into_task(),
    }
}

/// A tower `Layer` stack around a slow service function.
fn layered() -> AnyService<
    impl Clone
        + Send
        + Sync
        + 'static
        + tower::Service<
            Request<Body>,
            Response = Response<Body>,
            Error = std::io::Error,
            Future: Send,
        >,
> {
    let service = ServiceBuilder::new()
        .map_response(|mut response: Response<Body>| {
            response
                .headers_mut()
                .insert("x-layer", HeaderValue::from_static("yes"));
            response
        })
        .service_fn(|request: Request<Body>| async move {
            if request.uri().path() == "/fail" {
                return Err(std::io::Error::other("broken"));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(Response::new(Body::from("slow")))
        });
    AnyService::new(service)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tower_layer_stack_is_served_and_its_requests_finish_across_the_shutdown() {
    let served = serve(Duration::from_millis(100), || {
        HttpServer::bind("127.0.0.1:0".parse().unwrap(), layered())
    })
    .await;
    let addr = served.addr.unwrap();
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(tokio::spawn(async move {
            let mut client = H1::connect(addr).await.unwrap();
            client.get("/slow").await
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    served.handle.shutdown("deploy");
    for client in clients {
        let answer = client.await.unwrap().expect("answered, not dropped");
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(&answer.body[..], b"slow");
    }
    let report = served.report.await.unwrap();
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
    assert_eq!(served.stats.force_closed(), 0);
    assert_eq!(served.stats.requests(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_error_is_answered_500_and_the_layers_apply() {
    let served = serve(Duration::ZERO, || {
        HttpServer::bind("127.0.0.1:0".parse().unwrap(), layered())
    })
    .await;
    let mut client = H1::connect(served.addr.unwrap()).await.unwrap();
    let failed = client.get("/fail").await.unwrap();
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    let raw = raw_get(served.addr.unwrap(), "/ok").await;
    assert!(raw.contains("x-layer: yes"), "{raw}");
    served.handle.shutdown("done");
    assert_eq!(served.report.await.unwrap().exit_code(), exit_code::SUCCESS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hyper_service_is_served() {
    let served = serve(Duration::ZERO, || {
        let service = hyper::service::service_fn(|request: Request<Body>| async move {
            let body = format!("hyper saw {}", request.uri().path());
            Ok::<_, Infallible>(Response::new(Body::from(body)))
        });
        HttpServer::bind("127.0.0.1:0".parse().unwrap(), HyperService::new(service))
    })
    .await;
    let mut client = H1::connect(served.addr.unwrap()).await.unwrap();
    let answer = client.get("/x").await.unwrap();
    assert_eq!(&answer.body[..], b"hyper saw /x");
    served.handle.shutdown("done");
    assert_eq!(served.report.await.unwrap().exit_code(), exit_code::SUCCESS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_extract_the_client_address() {
    let served = serve(Duration::ZERO, || {
        let router = Router::new().route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        );
        HttpServer::bind("127.0.0.1:0".parse().unwrap(), router).connect_info(true)
    })
    .await;
    let stream = tokio::net::TcpStream::connect(served.addr.unwrap())
        .await
        .unwrap();
    let local = stream.local_addr().unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = Request::get("/peer")
        .header("host", "test")
        .body(Empty::<axum::body::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(String::from_utf8_lossy(&body), local.to_string());
    served.handle.shutdown("done");
    assert_eq!(served.report.await.unwrap().exit_code(), exit_code::SUCCESS);
}

async fn raw_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

/// One HTTP/1.1 GET over a Unix socket.
async fn unix_get(path: &Path, uri: &str) -> Result<(StatusCode, bool, String), hyper::Error> {
    let stream = tokio::net::UnixStream::connect(path)
        .await
        .expect("connected");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = Request::get(uri)
        .header("host", "unix")
        .body(Empty::<axum::body::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await?;
    let status = response.status();
    let close = response
        .headers()
        .get("connection")
        .is_some_and(|v| v == "close");
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, close, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_serves_drains_and_is_removed_at_the_stop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("http.sock");
    // A socket file left by a process that died is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let socket = path.clone();
    let served = serve(Duration::from_millis(200), move || {
        let router = Router::new().route(
            "/work",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(400)).await;
                "done"
            }),
        );
        HttpServer::bind_unix(socket, router)
    })
    .await;
    assert!(served.addr.is_none(), "no TCP address");
    let first = unix_get(&path, "/work").await.unwrap();
    assert_eq!(
        (first.0, first.1, first.2.as_str()),
        (StatusCode::OK, false, "done")
    );

    let in_flight = {
        let path = path.clone();
        tokio::spawn(async move { unix_get(&path, "/work").await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    served.handle.shutdown("deploy");
    // During the drain delay, still served, asked to close.
    let draining = unix_get(&path, "/work").await.unwrap();
    assert_eq!((draining.0, draining.1), (StatusCode::OK, true));
    let answer = in_flight
        .await
        .unwrap()
        .expect("the request in flight finished");
    assert_eq!(answer.0, StatusCode::OK);
    let report = served.report.await.unwrap();
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
    assert_eq!(served.stats.force_closed(), 0);
    assert!(!path.exists(), "the socket's path is removed at the stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_a_live_server_listens_on_is_not_taken() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("taken.sock");
    let _live = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let builder = Lifecycle::builder().signals([]);
    let server = HttpServer::bind_unix(&path, Router::new());
    let run = TestRun::start(builder.register(Registration::new("http", server))).unwrap();
    assert!(run.ready().await.is_err(), "the start fails");
    let report = run.finish().await;
    assert_eq!(report.report().exit_code(), exit_code::FAILURE);
    assert!(path.exists(), "the live server's socket is left alone");
}
