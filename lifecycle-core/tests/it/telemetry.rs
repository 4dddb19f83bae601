//! Metrics and spans as an exporter sees them: a recorder and a subscriber that see everything
//! the lifecycle emits on the test's thread, and a shutdown with a hung stop and a failed start.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lifecycle_core::testing::{Fault, TestRun};
use lifecycle_core::{Lifecycle, LifecycleBuilder, Registration, Signal, Worker};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};
use tracing_subscriber::layer::SubscriberExt;

fn service(prefix: &str) -> LifecycleBuilder {
    let idle = || {
        Worker::new(|ctx| async move {
            ctx.token().cancelled().await;
            Ok::<_, std::io::Error>(())
        })
    };
    Lifecycle::builder()
        .drain_delay(Duration::from_secs(2))
        .register(Registration::new(format!("{prefix}db"), idle()))
        .register(
            Registration::new(format!("{prefix}http"), idle()).depends_on(format!("{prefix}db")),
        )
}

type Metrics = Vec<(CompositeKey, DebugValue)>;

fn find<'a>(
    metrics: &'a Metrics,
    kind: MetricKind,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'a DebugValue> {
    metrics
        .iter()
        .find(|(key, _)| {
            key.kind() == kind
                && key.key().name() == name
                && labels
                    .iter()
                    .all(|(k, v)| key.key().labels().any(|l| l.key() == *k && l.value() == *v))
        })
        .map(|(_, value)| value)
}

fn counter(metrics: &Metrics, name: &str, labels: &[(&str, &str)]) -> u64 {
    match find(metrics, MetricKind::Counter, name, labels) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("no counter {name} {labels:?}: {other:?}"),
    }
}

fn gauge(metrics: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    match find(metrics, MetricKind::Gauge, name, labels) {
        Some(DebugValue::Gauge(g)) => g.into_inner(),
        other => panic!("no gauge {name} {labels:?}: {other:?}"),
    }
}

fn histogram(metrics: &Metrics, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    match find(metrics, MetricKind::Histogram, name, labels) {
        Some(DebugValue::Histogram(samples)) => samples.iter().map(|s| s.into_inner()).collect(),
        other => panic!("no histogram {name} {labels:?}: {other:?}"),
    }
}

/// A span's name and its parent's.
type Opened = (String, Option<String>);

/// Every span opened, by name, with the name of its parent.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Opened>>>);

impl<S> tracing_subscriber::Layer<S> for Spans
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let parent = ctx
            .span(id)
            .and_then(|span| span.parent())
            .map(|parent| parent.name().to_owned());
        self.0
            .lock()
            .unwrap()
            .push((attrs.metadata().name().to_owned(), parent));
    }
}

/// The lifecycle runs on a current-thread runtime, so the recorder and the subscriber set for
/// this thread see all it emits, and no other test's.
#[test]
fn metrics_and_spans_say_what_the_report_says() {
    let recorder = DebuggingRecorder::new();
    let snapshotter: Snapshotter = recorder.snapshotter();
    let spans = Spans::default();
    // tracing caches, per call site and for the whole process, whether any subscriber wants
    // it; a call site first reached by another test of the binary, on a thread with no
    // subscriber, could be cached as wanted by nobody and never reach this thread's. A global
    // registry (which keeps nothing) wants every call site, so the cache never says "never".
    let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let run =
                TestRun::start(service("a_").inject_fault("a_http", Fault::StopHangs)).unwrap();
            run.ready().await.unwrap();
            run.signal(Signal::Terminate);
            run.finish().await;
            let run =
                TestRun::start(service("b_").inject_fault("b_db", Fault::StartFails)).unwrap();
            let _ = run.ready().await;
            run.finish().await;
        })
    });

    let metrics: Metrics = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key, value))
        .collect();
    assert_eq!(
        counter(
            &metrics,
            "lifecycle_shutdowns_total",
            &[("trigger", "signal")]
        ),
        1
    );
    assert_eq!(
        counter(
            &metrics,
            "lifecycle_shutdowns_total",
            &[("trigger", "start_failed")]
        ),
        1
    );
    assert_eq!(gauge(&metrics, "lifecycle_drain_delay_seconds", &[]), 2.0);
    assert_eq!(
        gauge(&metrics, "lifecycle_phase", &[("phase", "stopped")]),
        1.0
    );
    assert_eq!(
        gauge(&metrics, "lifecycle_phase", &[("phase", "ready")]),
        0.0
    );
    // The first lifecycle: both started; the hung stop timed out after its 5 s, db stopped.
    for component in ["a_db", "a_http"] {
        let started = [("component", component), ("outcome", "started")];
        assert_eq!(
            counter(&metrics, "lifecycle_component_starts_total", &started),
            1
        );
        assert_eq!(
            histogram(
                &metrics,
                "lifecycle_component_start_duration_seconds",
                &started
            )
            .len(),
            1
        );
    }
    let http_timed_out = [("component", "a_http"), ("outcome", "timed_out")];
    assert_eq!(
        counter(&metrics, "lifecycle_component_stops_total", &http_timed_out),
        1
    );
    assert_eq!(
        histogram(
            &metrics,
            "lifecycle_component_stop_duration_seconds",
            &http_timed_out
        ),
        [5.0]
    );
    let db_stopped = [("component", "a_db"), ("outcome", "stopped")];
    assert_eq!(
        counter(&metrics, "lifecycle_component_stops_total", &db_stopped),
        1
    );
    assert_eq!(
        gauge(
            &metrics,
            "lifecycle_component_state",
            &[("component", "a_http"), ("state", "timed_out")]
        ),
        1.0
    );
    assert_eq!(
        gauge(
            &metrics,
            "lifecycle_component_state",
            &[("component", "a_http"), ("state", "running")]
        ),
        0.0
    );
    // The second: the database's start failed, the server never started.
    assert_eq!(
        counter(
            &metrics,
            "lifecycle_component_starts_total",
            &[("component", "b_db"), ("outcome", "failed")]
        ),
        1
    );
    assert_eq!(
        gauge(
            &metrics,
            "lifecycle_component_state",
            &[("component", "b_http"), ("state", "pending")]
        ),
        1.0
    );

    // Spans: each start on its own, each stop inside the shutdown's span.
    let spans = spans.0.lock().unwrap().clone();
    let stops: Vec<_> = spans.iter().filter(|(name, _)| name == "stop").collect();
    assert_eq!(stops.len(), 2, "{spans:?}");
    assert!(
        stops
            .iter()
            .all(|(_, parent)| parent.as_deref() == Some("shutdown")),
        "{spans:?}"
    );
    assert_eq!(
        spans.iter().filter(|(name, _)| name == "shutdown").count(),
        2
    );
    assert_eq!(spans.iter().filter(|(name, _)| name == "start").count(), 3);

    // A component added and removed while the lifecycle ran counts as a registered one does.
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let run = TestRun::start(service("c_")).unwrap();
            run.ready().await.unwrap();
            let idle = Worker::new(|ctx| async move {
                ctx.token().cancelled().await;
                Ok::<_, std::io::Error>(())
            });
            run.add(Registration::new("c_tenant", idle).depends_on("c_db"))
                .await
                .unwrap();
            run.remove("c_tenant").await.unwrap();
            run.request("test over");
            run.finish().await;
        })
    });
    let metrics: Metrics = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key, value))
        .collect();
    let tenant = |outcome| [("component", "c_tenant"), ("outcome", outcome)];
    assert_eq!(
        counter(
            &metrics,
            "lifecycle_component_starts_total",
            &tenant("started")
        ),
        1
    );
    assert_eq!(
        counter(
            &metrics,
            "lifecycle_component_stops_total",
            &tenant("stopped")
        ),
        1
    );
    assert_eq!(
        gauge(
            &metrics,
            "lifecycle_component_state",
            &[("component", "c_tenant"), ("state", "stopped")]
        ),
        1.0
    );
}
