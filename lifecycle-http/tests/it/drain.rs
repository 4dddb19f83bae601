//! Requests across the shutdown: none that reached the server is dropped, keep-alive clients are
//! told to close, readiness goes first. Real sockets on loopback.

use crate::harness;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{start, H1};
use lifecycle_core::{exit_code, Outcome};

const MS: Duration = Duration::from_millis(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_that_reached_the_server_fails_under_keep_alive_load() {
    let server = start(300 * MS, 5000 * MS).await;
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let (addr, stop) = (server.addr, stop.clone());
            tokio::spawn(async move {
                let (mut ok, mut refused, mut dropped) = (0u32, 0u32, Vec::new());
                'connections: while !stop.load(Ordering::Relaxed) {
                    let Ok(mut conn) = H1::connect(addr).await else {
                        // The listener has closed: refused at once, never hung.
                        refused += 1;
                        break;
                    };
                    loop {
                        match conn.get("/work?ms=5").await {
                            Ok(answer) => {
                                assert_eq!(answer.status, 200);
                                ok += 1;
                                if answer.connection_close {
                                    continue 'connections;
                                }
                            }
                            Err(error) => {
                                dropped.push(error.to_string());
                                continue 'connections;
                            }
                        }
                        if stop.load(Ordering::Relaxed) {
                            break 'connections;
                        }
                    }
                }
                (ok, refused, dropped)
            })
        })
        .collect();

    tokio::time::sleep(300 * MS).await;
    server.handle.shutdown("deploy");
    let report = tokio::time::timeout(Duration::from_secs(10), server.report)
        .await
        .unwrap()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut refused) = (0, 0);
    for client in clients {
        let (o, r, dropped) = client.await.unwrap();
        assert!(
            dropped.is_empty(),
            "requests dropped on open connections: {dropped:?}"
        );
        ok += o;
        refused += r;
    }
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
    assert!(ok > 100, "only {ok} requests served");
    assert!(
        refused > 0,
        "clients kept connecting until the listener closed"
    );
    assert_eq!(server.stats.force_closed(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_longer_than_the_drain_delay_completes_with_connection_close() {
    let server = start(200 * MS, 5000 * MS).await;
    let mut conn = H1::connect(server.addr).await.unwrap();
    let slow = tokio::spawn(async move { conn.get("/work?ms=1000").await });
    tokio::time::sleep(100 * MS).await;
    server.handle.shutdown("deploy");
    let answer = slow
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "done");
    assert!(answer.connection_close);
    let report = server.report.await.unwrap();
    assert_eq!(
        report.component("http").unwrap().outcome,
        Outcome::Stopped,
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_client_every_50ms_is_never_reset() {
    let server = start(500 * MS, 5000 * MS).await;
    let addr = server.addr;
    let client = tokio::spawn(async move {
        let mut answers = Vec::new();
        let mut conn = H1::connect(addr).await.unwrap();
        loop {
            let sent_at = Instant::now();
            match conn.get("/work").await {
                Ok(answer) => answers.push((sent_at, answer.connection_close)),
                Err(error) => panic!("request on an open connection failed: {error}"),
            }
            tokio::time::sleep(50 * MS).await;
            if !conn.is_open() || answers.last().unwrap().1 {
                // Told to close: reconnect, as a client behind a load balancer would.
                match H1::connect(addr).await {
                    Ok(new) => conn = new,
                    Err(_) => return answers,
                }
            }
        }
    });
    tokio::time::sleep(400 * MS).await;
    let signal_at = Instant::now();
    server.handle.shutdown("deploy");
    let answers = tokio::time::timeout(Duration::from_secs(10), client)
        .await
        .unwrap()
        .unwrap();
    let report = server.report.await.unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    let (before, after): (Vec<_>, Vec<_>) = answers.iter().partition(|(t, _)| *t < signal_at);
    assert!(
        before.len() >= 5 && after.len() >= 5,
        "{} before, {} after",
        before.len(),
        after.len()
    );
    // The last request sent before the signal may be answered after it, with `close`.
    assert!(
        before[..before.len() - 1].iter().all(|(_, close)| !close),
        "keep-alive before the signal"
    );
    assert!(
        after.iter().all(|(_, close)| *close),
        "every response after the signal says close"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_goes_off_within_100ms_while_liveness_stays_up() {
    let server = start(1000 * MS, 5000 * MS).await;
    let addr = server.addr;
    let poll = |path: &'static str| {
        tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let sent = Instant::now();
                let Ok(mut conn) = H1::connect(addr).await else {
                    return seen;
                };
                match conn.get(path).await {
                    Ok(answer) => seen.push((sent, answer.status.as_u16())),
                    Err(_) => return seen,
                }
                tokio::time::sleep(10 * MS).await;
            }
        })
    };
    let (readyz, livez) = (poll("/readyz"), poll("/livez"));
    tokio::time::sleep(200 * MS).await;
    let signal_at = Instant::now();
    server.handle.shutdown("deploy");
    let report = server.report.await.unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    let (readyz, livez) = (readyz.await.unwrap(), livez.await.unwrap());

    assert!(readyz.iter().any(|(t, s)| *t < signal_at && *s == 200));
    let first_503 = readyz
        .iter()
        .find(|(_, s)| *s == 503)
        .expect("readyz turned 503")
        .0;
    assert!(
        first_503 - signal_at < 100 * MS,
        "readyz 503 after {:?}",
        first_503 - signal_at
    );
    // Once off, readiness stays off (a probe sent just after the signal may still have been
    // answered before the lifecycle took the trigger: that is what the 100 ms allow).
    assert!(readyz.iter().all(|(t, s)| *t < first_503 || *s == 503));
    assert!(
        livez.iter().all(|(_, s)| *s == 200),
        "livez stays 200 while it answers"
    );
    assert!(
        livez.last().unwrap().0 - signal_at > 900 * MS,
        "livez answered through the drain"
    );
}
