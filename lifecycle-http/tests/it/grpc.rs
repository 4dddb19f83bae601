//! gRPC through `HttpServer`, seen by tonic's own client: the health service follows the
//! lifecycle (SERVING, NOT_SERVING from the trigger, Watch streams told at once and ended with
//! a status at the stop turn), and unary calls in flight at the signal complete.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use lifecycle_core::testing::TestRun;
use lifecycle_core::{exit_code, Lifecycle, LifecycleHandle, Registration, Report};
use lifecycle_http::grpc::GrpcHealthService;
use lifecycle_http::{HttpServer, HttpStats};
use tokio::task::JoinHandle;
use tonic::service::Routes;
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

struct Served {
    addr: SocketAddr,
    handle: LifecycleHandle,
    stats: HttpStats,
    report: JoinHandle<Report>,
}

/// Whether a call failed because its connection was going away, before the server took it:
/// cancelled or unavailable, or refused by the client's own HTTP/2 layer once it had the
/// GOAWAY (tonic reports that as `Internal`, with the h2 GOAWAY as the source).
fn never_sent(status: &tonic::Status) -> bool {
    if matches!(status.code(), Code::Cancelled | Code::Unavailable) {
        return true;
    }
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error
            .downcast_ref::<h2::Error>()
            .is_some_and(h2::Error::is_go_away)
        {
            return true;
        }
        source = error.source();
    }
    false
}

/// Waits `x-delay-ms` before the call, so tests have slow unary calls to drain.
async fn delay(request: Request, next: Next) -> Response {
    let ms = request
        .headers()
        .get("x-delay-ms")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    next.run(request).await
}

async fn serve(drain_delay: Duration) -> Served {
    let builder = Lifecycle::builder().signals([]).drain_delay(drain_delay);
    let handle = builder.handle();
    let health = GrpcHealthService::new(handle.clone())
        .service_name("test.Work")
        .into_server();
    let router = Routes::new(health)
        .into_axum_router()
        .layer(axum::middleware::from_fn(delay));
    let server = HttpServer::bind("127.0.0.1:0".parse().unwrap(), router);
    let (stats, local_addr) = (server.stats(), server.local_addr());
    let run = TestRun::start(
        builder.register(Registration::new("grpc", server).stop_timeout(Duration::from_secs(5))),
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

async fn client(addr: SocketAddr) -> HealthClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connected");
    HealthClient::new(channel)
}

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.into(),
    }
}

fn status(code: i32) -> ServingStatus {
    ServingStatus::try_from(code).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_serving_then_not_serving_from_the_trigger_and_watch_streams_see_it() {
    let served = serve(Duration::from_millis(1000)).await;
    let mut health = client(served.addr).await;
    let answer = health.check(check("")).await.unwrap().into_inner();
    assert_eq!(status(answer.status), ServingStatus::Serving);
    let answer = health.check(check("test.Work")).await.unwrap().into_inner();
    assert_eq!(status(answer.status), ServingStatus::Serving);
    let unknown = health.check(check("other.Service")).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    let mut watch = health.watch(check("")).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(status(first.status), ServingStatus::Serving);

    let signal_at = Instant::now();
    served.handle.shutdown("deploy");
    let next = tokio::time::timeout(Duration::from_millis(100), watch.message())
        .await
        .expect("NOT_SERVING within 100 ms of the trigger")
        .unwrap()
        .unwrap();
    assert_eq!(status(next.status), ServingStatus::NotServing);
    let flipped_in = signal_at.elapsed();
    // During the drain the stream is what the server's stop will wait for.
    let held = served.handle.held_by();
    assert_eq!(held.len(), 1, "{held:?}");
    assert!(
        held[0].1[0].starts_with("POST /grpc.health.v1.Health/Watch (running "),
        "{held:?}"
    );
    assert!(held[0].1[0].ends_with(", HTTP/2.0)"), "{held:?}");

    // At the server's stop turn (after the drain delay) the stream ends with a status, not a
    // reset.
    let end = tokio::time::timeout(Duration::from_secs(3), watch.message())
        .await
        .expect("the watch ends at the stop turn");
    let error = end.expect_err("ended with a status");
    assert_eq!(error.code(), Code::Unavailable, "{error:?}");
    assert!(
        error.message().contains("shutting down"),
        "the server's status, not a transport error: {error:?}"
    );
    assert!(
        signal_at.elapsed() >= Duration::from_millis(900),
        "not before the stop turn"
    );
    let report = served.report.await.unwrap();
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
    assert_eq!(served.stats.force_closed(), 0);
    println!("NOT_SERVING seen {flipped_in:?} after the trigger");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_during_the_drain_says_not_serving() {
    let served = serve(Duration::from_millis(1000)).await;
    let mut health = client(served.addr).await;
    health.check(check("")).await.unwrap();
    served.handle.shutdown("deploy");
    tokio::time::sleep(Duration::from_millis(20)).await;
    // The connection was told to go away: a call racing its close is never processed, and
    // gRPC clients retry those transparently (on a new connection), as this does.
    let mut answer = health.check(check("")).await;
    for _ in 0..10 {
        match &answer {
            Err(e) if never_sent(e) => {
                health = client(served.addr).await;
                answer = health.check(check("")).await;
            }
            _ => break,
        }
    }
    let answer = answer.expect("answered during the drain").into_inner();
    assert_eq!(status(answer.status), ServingStatus::NotServing);
    let report = served.report.await.unwrap();
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_calls_in_flight_at_the_signal_complete() {
    let served = serve(Duration::from_millis(100)).await;
    let health = client(served.addr).await;
    let mut calls = Vec::new();
    for _ in 0..32 {
        let mut health = health.clone();
        calls.push(tokio::spawn(async move {
            let mut request = tonic::Request::new(check(""));
            request
                .metadata_mut()
                .insert("x-delay-ms", "400".parse().unwrap());
            health.check(request).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    served.handle.shutdown("deploy");
    for call in calls {
        let answer = call.await.unwrap().expect("the call completes");
        // Answered after the trigger: the delay came first.
        assert_eq!(
            status(answer.into_inner().status),
            ServingStatus::NotServing
        );
    }
    let report = served.report.await.unwrap();
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
    assert_eq!(served.stats.force_closed(), 0);
    assert_eq!(served.stats.requests(), 32);
}
