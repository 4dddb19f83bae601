//! The same endpoints as a subsystem of tokio-graceful-shutdown, the way its documentation
//! wires axum. Run: `cargo run -p baselines --bin baseline-tgs`.

use std::time::Duration;

use tokio_graceful_shutdown::{SubsystemBuilder, SubsystemHandle, Toplevel};

async fn http(subsys: &mut SubsystemHandle) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(baselines::listen_addr()).await?;
    let token = subsys.create_cancellation_token();
    axum::serve(listener, baselines::router())
        .with_graceful_shutdown(async move { token.cancelled().await })
        .await
}

#[tokio::main]
async fn main() {
    Toplevel::new(async |s: &mut SubsystemHandle| {
        s.start(SubsystemBuilder::new("http", http));
    })
    .catch_signals()
    .handle_shutdown_requests(Duration::from_secs(25))
    .await
    .expect("a clean shutdown");
}
