//! A shutdown as an OpenTelemetry trace: the lifecycle's spans (`shutdown`, with a `stop` span
//! per component inside it, and a `start` span per component) go through
//! `tracing-opentelemetry` to the OpenTelemetry stdout exporter, which prints each span with
//! its trace id, parent, timing and fields (`component`, `outcome`, `trigger`, ...).
//!
//! Run it with `cargo run -p example-service --example otel_trace`. It starts three
//! components (a database, an HTTP-like server and a worker, the last two depending on the
//! first), asks for a shutdown, and prints the spans: every `stop` shares the `shutdown`
//! span's trace id and names it as its parent. Point a real exporter (OTLP, say) at a
//! collector in place of the stdout one to see the same trace in Jaeger or Tempo.

use std::time::Duration;

use lifecycle_core::{Lifecycle, Registration, Worker};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// A component that runs until its stop turn, then takes `stop` to finish.
fn component(stop: Duration) -> impl lifecycle_core::Component {
    Worker::new(move |ctx| async move {
        ctx.token().cancelled().await;
        tokio::time::sleep(stop).await;
        Ok::<_, std::io::Error>(())
    })
}

#[tokio::main]
async fn main() {
    // Spans are exported one by one as they end (a simple exporter; a service would batch).
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
        .build();
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("lifecycle")))
        .init();

    let lifecycle = Lifecycle::builder()
        .signals([])
        .drain_delay(Duration::from_millis(100))
        .register(Registration::new(
            "db",
            component(Duration::from_millis(30)),
        ))
        .register(Registration::new("http", component(Duration::from_millis(20))).depends_on("db"))
        .register(
            Registration::new("worker", component(Duration::from_millis(50))).depends_on("db"),
        )
        .build()
        .expect("valid configuration");
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());
    handle
        .watch_phase()
        .wait_for(|phase| phase.is_ready())
        .await
        .expect("the lifecycle gets ready");
    handle.shutdown("example over");
    let report = run.await.expect("the lifecycle's task");
    eprintln!("{report}");
    // Flushes what is left and stops the exporter.
    provider.shutdown().expect("the exporter shuts down");
}
