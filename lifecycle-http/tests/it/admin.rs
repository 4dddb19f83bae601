//! The admin listener: `/metrics` scraped before, during and after a shutdown under load,
//! its values checked against what the clients saw; the admin server up until the last stop.

use crate::harness;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use harness::H1;
use lifecycle_core::testing::TestRun;
use lifecycle_core::{Lifecycle, Outcome, Registration, Worker};
use lifecycle_http::prometheus::{PrometheusBuilder, PrometheusHandle};
use lifecycle_http::{AdminRoutes, HttpServer, DURATION_BUCKETS};

/// The sum of the samples of `name` whose labels include all of `labels`, or `None` when
/// there is none.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
        if series_name != name
            || !labels
                .iter()
                .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")))
        {
            continue;
        }
        *found.get_or_insert(0.0) += value.parse::<f64>().unwrap();
    }
    found
}

async fn scrape(admin: SocketAddr) -> String {
    let mut conn = H1::connect(admin).await.expect("the admin port answers");
    let answer = conn.get("/metrics").await.expect("a scrape is answered");
    assert_eq!(answer.status, 200);
    String::from_utf8(answer.body.to_vec()).unwrap()
}

/// Requests `/` over one keep-alive connection until the server closes it; returns how many
/// were answered.
async fn keep_alive_client(addr: SocketAddr, answered: Arc<AtomicU64>) {
    let mut conn = H1::connect(addr).await.unwrap();
    while conn.is_open() {
        match conn.get("/").await {
            Ok(answer) => {
                assert_eq!(answer.status, 200);
                answered.fetch_add(1, Ordering::Relaxed);
                if answer.connection_close {
                    break;
                }
            }
            Err(error) => panic!("a request was dropped: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The recorder `install_prometheus` would install, but set for this test's thread only: the
/// lifecycle, its servers and the clients run on a current-thread runtime, so it sees all they
/// record and nothing from the other tests of the binary.
#[test]
fn metrics_are_scraped_across_a_shutdown_under_load() {
    let recorder = PrometheusBuilder::new()
        .set_buckets(&DURATION_BUCKETS)
        .unwrap()
        .build_recorder();
    let prometheus = recorder.handle();
    let _recorder = metrics::set_default_local_recorder(&recorder);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(scraped_across_a_shutdown_under_load(prometheus));
}

async fn scraped_across_a_shutdown_under_load(prometheus: PrometheusHandle) {
    let builder = Lifecycle::builder()
        .signals([])
        .drain_delay(Duration::from_millis(300));
    let admin = AdminRoutes::new(builder.handle())
        .prometheus(prometheus)
        .server("127.0.0.1:0".parse().unwrap());
    let admin_addr = admin.local_addr();
    let router = Router::new()
        .route("/", get(|| async { "hello" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(600)).await;
                "slow"
            }),
        )
        .route("/hang", get(std::future::pending::<&'static str>));
    let api = HttpServer::bind("127.0.0.1:0".parse().unwrap(), router);
    let api_addr = api.local_addr();
    let stats = api.stats();
    // A component that takes long to stop (a pool closing, say), so the final state of the
    // api server can be scraped before the admin server's own stop.
    let tail = Worker::new(|ctx| async move {
        ctx.token().cancelled().await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Ok::<_, std::io::Error>(())
    });
    let run = TestRun::start(
        builder
            .register(AdminRoutes::registration_of(admin))
            .register(Registration::new("api", api).stop_timeout(Duration::from_millis(800)))
            .register(Registration::new("tail", tail)),
    )
    .unwrap();
    run.ready().await.unwrap();
    let (admin, addr) = (admin_addr.get().unwrap(), api_addr.get().unwrap());

    // Load: four keep-alive clients, a slow request, and one that never ends.
    let answered = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| tokio::spawn(keep_alive_client(addr, answered.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut hung = H1::connect(addr).await.unwrap();
    let hung = tokio::spawn(async move { hung.get("/hang").await });
    let mut slow = H1::connect(addr).await.unwrap();
    let slow = tokio::spawn(async move { slow.get("/slow").await });
    tokio::time::sleep(Duration::from_millis(50)).await;

    let serving = scrape(admin).await;
    let api = [("server", "api")];
    assert_eq!(
        sample(&serving, "lifecycle_phase", &[("phase", "ready")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&serving, "http_connections_open", &api),
        Some(6.0),
        "{serving}"
    );
    assert_eq!(
        sample(&serving, "http_requests_in_progress", &api),
        Some(2.0),
        "{serving}"
    );
    assert!(sample(&serving, "http_requests_total", &api).unwrap() >= 6.0);

    run.request("deploy");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let draining = scrape(admin).await;
    assert_eq!(
        sample(&draining, "lifecycle_phase", &[("phase", "draining")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&draining, "lifecycle_drain_delay_seconds", &[]),
        Some(0.3)
    );

    for client in clients {
        client.await.unwrap();
    }
    assert_eq!(slow.await.unwrap().unwrap().body, "slow");
    assert!(hung.await.unwrap().is_err(), "cut at the stop timeout");
    // The api server has stopped; the admin server, stopped last, still answers.
    let stopped = [("component", "api"), ("state", "timed_out")];
    let mut after = scrape(admin).await;
    for _ in 0..100 {
        if sample(&after, "lifecycle_component_state", &stopped) == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        after = scrape(admin).await;
    }
    assert_eq!(
        sample(&after, "lifecycle_component_state", &stopped),
        Some(1.0),
        "{after}"
    );
    let timeline = run.finish().await;
    let report = timeline.report();
    assert_eq!(
        report.component("api").unwrap().outcome,
        Outcome::TimedOut,
        "{report}"
    );
    assert_eq!(
        report.component("admin").unwrap().outcome,
        Outcome::Stopped,
        "{report}"
    );

    // What the clients saw: every answered request counted (plus the slow one, the hung one
    // and the scrapes of nobody: the admin server's requests are its own).
    let answered = answered.load(Ordering::Relaxed) as f64;
    assert_eq!(
        sample(&after, "http_requests_total", &api),
        Some(answered + 2.0),
        "{after}"
    );
    assert_eq!(stats.requests() as f64, answered + 2.0);
    assert_eq!(sample(&after, "http_requests_in_progress", &api), Some(0.0));
    assert_eq!(sample(&after, "http_connections_open", &api), Some(0.0));
    // The four keep-alive connections and the slow one were closed by the drain; the hung one
    // was cut at the stop timeout.
    let drained = [
        ("server", "api"),
        ("reason", "drain"),
        ("protocol", "http1"),
    ];
    assert_eq!(
        sample(&after, "http_connections_closed_total", &drained),
        Some(5.0),
        "{after}"
    );
    assert_eq!(
        sample(&after, "http_connections_force_closed_total", &api),
        Some(1.0)
    );
    let api_stop = [("component", "api"), ("outcome", "timed_out")];
    assert_eq!(
        sample(&after, "lifecycle_component_stops_total", &api_stop),
        Some(1.0)
    );
    let took = sample(
        &after,
        "lifecycle_component_stop_duration_seconds_sum",
        &api_stop,
    );
    assert!(took.is_some_and(|s| (0.7..2.0).contains(&s)), "{after}");
    assert_eq!(
        sample(
            &after,
            "lifecycle_shutdowns_total",
            &[("trigger", "requested")]
        ),
        Some(1.0)
    );
}
