//! HTTP overhead: the same router served through `lifecycle-http` and through plain
//! `axum::serve`, loaded alternately by `wrk` (a separate process) on loopback, in one run.
//!
//! Run: `cargo bench -p lifecycle-http --bench http_overhead` (needs `wrk` on the PATH;
//! Debian: `apt-get install wrk`). Options through the environment: `ROUNDS` (default 5),
//! `SECONDS` per run (default 5), `CONNECTIONS` (default 32), and `WRK_CPU` to pin `wrk` to a
//! core with `taskset` (pin the bench to another: `taskset -c 0 cargo bench ...` with
//! `WRK_CPU=1`), which steadies tail latencies; `METRICS=1` installs a Prometheus recorder
//! first, so that `lifecycle-http` records its metrics.
//!
//! Both servers run in this process on one runtime with one worker thread, so that on a
//! two-core machine `wrk` has the other core; they are loaded one at a time, alternating. The
//! ratios compare the medians, and the "per-round ratio" is the median of each round's own
//! ratio, which the machine's drift from round to round does not move. `SERVE=1` only serves
//! both and prints their addresses, for a load or a profiler run by hand. `AXUM_NODELAY=1`
//! sets TCP_NODELAY on `axum::serve`'s connections too (lifecycle-http sets it on every
//! connection; `axum::serve` leaves Nagle's algorithm on), which changes the latency
//! distribution under this load more than the servers' code does (BENCHMARKS section 9).

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use common::{env, median};
use lifecycle_http::HttpServer;

mod common;

fn router() -> Router {
    Router::new().route("/", get(|| async { "hello, world" }))
}

/// lifecycle-http's figure over `axum::serve`'s, round by round.
fn ratios(ours: &[f64], plain: &[f64]) -> Vec<f64> {
    ours.iter().zip(plain).map(|(o, p)| o / p).collect()
}

fn main() {
    let (rounds, seconds, connections) =
        (env("ROUNDS", 5), env("SECONDS", 5), env("CONNECTIONS", 32));
    // `METRICS=1`: with a Prometheus recorder installed, so the server's metrics are recorded.
    if std::env::var_os("METRICS").is_some() {
        lifecycle_http::install_prometheus().unwrap();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();

    let (ours, plain) = runtime.block_on(async {
        // lifecycle-http
        let ours =
            common::serve_alone(HttpServer::bind("127.0.0.1:0".parse().unwrap(), router())).await;

        // plain axum::serve
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain = listener.local_addr().unwrap();
        // `AXUM_NODELAY=1`: its connections with TCP_NODELAY, as lifecycle-http's are.
        let nodelay = std::env::var_os("AXUM_NODELAY").is_some();
        let listener = listener.tap_io(move |tcp| {
            if nodelay {
                let _ = tcp.set_nodelay(true);
            }
        });
        tokio::spawn(async move { axum::serve(listener, router()).await.unwrap() });
        (ours, plain)
    });

    // `SERVE=1`: only serve, for a load or a profiler run by hand against either address.
    if std::env::var_os("SERVE").is_some() {
        println!("lifecycle-http {ours}\naxum::serve    {plain}");
        std::thread::park();
    }
    // Warm both up.
    let url = |addr: SocketAddr| format!("http://{addr}/");
    common::wrk(&url(ours), 1, connections);
    common::wrk(&url(plain), 1, connections);
    let (mut ours_rps, mut ours_p99, mut plain_rps, mut plain_p99) =
        (vec![], vec![], vec![], vec![]);
    println!("round  server          req/s     p99 ms");
    for round in 1..=rounds {
        // Alternate which goes first, so drift in the machine's load hits both alike.
        let order = if round % 2 == 1 {
            [("lifecycle-http", ours), ("axum::serve", plain)]
        } else {
            [("axum::serve", plain), ("lifecycle-http", ours)]
        };
        for (name, addr) in order {
            let (rps, p99) = common::wrk(&url(addr), seconds, connections);
            println!("{round:>5}  {name:<14} {rps:>9.0} {p99:>10.3}");
            if addr == ours {
                ours_rps.push(rps);
                ours_p99.push(p99);
            } else {
                plain_rps.push(rps);
                plain_p99.push(p99);
            }
        }
    }
    // Each round's own ratio too: both runs of a round are seconds apart, so this VM's drift
    // (its speed moved by half within an hour) cancels out of it.
    let mut paired_rps = ratios(&ours_rps, &plain_rps);
    let mut paired_p99 = ratios(&ours_p99, &plain_p99);
    let (ours_rps, ours_p99) = (median(&mut ours_rps), median(&mut ours_p99));
    let (plain_rps, plain_p99) = (median(&mut plain_rps), median(&mut plain_p99));
    println!();
    println!("median         lifecycle-http  axum::serve  ratio  per-round ratio");
    println!(
        "req/s          {ours_rps:>14.0} {plain_rps:>12.0} {:>6.3} {:>16.3}",
        ours_rps / plain_rps,
        median(&mut paired_rps)
    );
    println!(
        "p99 latency ms {ours_p99:>14.3} {plain_p99:>12.3} {:>6.3} {:>16.3}",
        ours_p99 / plain_p99,
        median(&mut paired_p99)
    );
    runtime.shutdown_timeout(Duration::from_secs(1));
}
