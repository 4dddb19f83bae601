//! The same endpoints on plain `axum::serve`, with the graceful-shutdown signal handler of
//! axum's own example (Ctrl-C or SIGTERM). Run: `cargo run -p baselines --bin baseline-axum`.

#[tokio::main]
async fn main() {
    let listener = tokio::net::TcpListener::bind(baselines::listen_addr())
        .await
        .unwrap();
    axum::serve(listener, baselines::router())
        .with_graceful_shutdown(shutdown_signal())
        .await
        .unwrap();
}

async fn shutdown_signal() {
    let ctrl_c = async { tokio::signal::ctrl_c().await.expect("Ctrl-C handler") };
    let terminate = async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler")
            .recv()
            .await;
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
