//! HTTP overhead in instructions: the same router served through `lifecycle-http` and through
//! plain `axum::serve`, each answering keep-alive requests from an in-process hyper client,
//! run under valgrind's callgrind, which counts the instructions executed. Unlike requests per
//! second on a shared machine, the count hardly moves between runs, so it shows what a change
//! costs when the throughput bench (`http_overhead`) is lost in the noise.
//!
//! Run: `cargo bench -p lifecycle-http --bench http_instructions` (needs `valgrind` on the
//! PATH; Debian: `apt-get install valgrind`). For each server it runs itself under callgrind
//! twice, with `SMALL` and `LARGE` requests (default 4000 and 20000), and divides the
//! difference of the totals by the difference of the counts: the instructions of one request
//! (client, server, runtime and allocator in user space, not the kernel's), without the
//! start-up. The client's share is the same for both servers, so the difference between the
//! two lines is the server's overhead. `METRICS=1` installs a Prometheus recorder first, so
//! the cost of the server's metrics is counted. Both run with a second, idle thread, as every
//! service does (`ONE_THREAD=1`: without it; see `common`).

mod common;

use axum::body::Bytes;
use axum::routing::get;
use axum::Router;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use lifecycle_http::HttpServer;

fn router() -> Router {
    Router::new().route("/", get(|| async { "hello, world" }))
}

/// Serves `requests` requests from 8 keep-alive connections, on one thread.
fn serve(server: &str, requests: usize) {
    // `METRICS=1`: with a Prometheus recorder installed, so the server's metrics are recorded.
    if std::env::var_os("METRICS").is_some() {
        lifecycle_http::install_prometheus().unwrap();
    }
    common::second_thread();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let addr = if server == "lifecycle-http" {
            let server = HttpServer::bind("127.0.0.1:0".parse().unwrap(), router());
            common::serve_alone(server).await
        } else {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, router()).await.unwrap() });
            addr
        };
        let clients: Vec<_> = (0..8)
            .map(|_| {
                tokio::spawn(async move {
                    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                    let (mut sender, conn) =
                        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(
                            stream,
                        ))
                        .await
                        .unwrap();
                    tokio::spawn(conn);
                    for _ in 0..requests / 8 {
                        sender.ready().await.unwrap();
                        let request = hyper::Request::get("/")
                            .header("host", "bench")
                            .body(Empty::new())
                            .unwrap();
                        let response = sender.send_request(request).await.unwrap();
                        response.into_body().collect().await.unwrap();
                    }
                })
            })
            .collect();
        for client in clients {
            client.await.unwrap();
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        serve(&args[2], args[3].parse().unwrap());
        return;
    }
    let (small, large) = common::sizes();
    let per_request = |server: &str| common::per_request(server, (small, large));
    let ours = per_request("lifecycle-http");
    let plain = per_request("axum::serve");
    println!("instructions per request (client included), {small} and {large} requests");
    println!("lifecycle-http {ours:>10.0}");
    println!("axum::serve    {plain:>10.0}");
    println!("difference     {:>10.0}", ours - plain);
    println!("ratio          {:>10.3}", plain / ours);
}
