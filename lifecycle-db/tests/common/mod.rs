//! The real servers the tests talk to, and a TCP proxy that can black-hole or cut them.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;
use std::sync::Mutex;

use lifecycle_core::{Lifecycle, LifecycleHandle, Report};
use lifecycle_db::Job;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub const POSTGRES: &str = "127.0.0.1:5432";
pub const MARIADB: &str = "127.0.0.1:3306";
pub const REDIS: &str = "127.0.0.1:6379";

/// Whether the server at `addr` answers. When it does not: in CI (`CI=true`) the test fails,
/// loudly; elsewhere it says so and the test returns early.
pub async fn server_available(name: &str, addr: &str) -> bool {
    let up = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .is_ok_and(|r| r.is_ok());
    if !up {
        assert!(
            std::env::var("CI").is_err(),
            "{name} is not reachable at {addr}; CI needs it (see .ci/run)"
        );
        eprintln!("SKIPPED: {name} is not reachable at {addr} (outside CI)");
    }
    up
}

/// A PostgreSQL URL whose sessions carry `app` as their `application_name`.
pub fn postgres_url(app: &str) -> String {
    format!("postgres://postgres@{POSTGRES}/test?application_name={app}")
}

pub fn mariadb_url(database: &str) -> String {
    format!("mysql://root@{MARIADB}/{database}")
}

pub fn redis_url() -> String {
    format!("redis://{REDIS}/")
}

/// A connection to the Redis server of its own, for checks made beside the code under test.
pub async fn redis_admin() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The Redis server's clients (`CLIENT LIST`, one map of fields per client) that `keep`
/// selects, e.g. by name.
pub async fn redis_clients(
    keep: impl Fn(&std::collections::HashMap<String, String>) -> bool,
) -> Vec<std::collections::HashMap<String, String>> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut redis_admin().await)
        .await
        .unwrap();
    list.lines()
        .map(|line| {
            line.split(' ')
                .filter_map(|field| field.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .filter(|client| keep(client))
        .collect()
}

/// Counts the TCP connections made to `addr` from now on (accepting and closing each), to
/// catch reconnect attempts to a server that went away. `addr` may still be held by a listener
/// that is closing; binding is retried for a second.
pub async fn count_connections(addr: SocketAddr) -> (Arc<AtomicU64>, CancellationToken) {
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => break listener,
            Err(_) if tokio::time::Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("cannot listen on {addr} again: {e}"),
        }
    };
    let (count, stop) = (Arc::new(AtomicU64::new(0)), CancellationToken::new());
    let c = count.clone();
    tokio::spawn(stop.clone().run_until_cancelled_owned(async move {
        while let Ok((connection, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            drop(connection);
        }
    }));
    (count, stop)
}

/// A TCP proxy in front of a server, which a test can black-hole (connections stay open, no
/// byte goes through, as with a dead host) or cut (every connection closed, new ones refused).
pub struct Proxy {
    pub addr: SocketAddr,
    black_hole: Arc<AtomicBool>,
    cut: CancellationToken,
    pub forwarded: Arc<AtomicU64>,
}

impl Proxy {
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (black_hole, cut, forwarded) = (
            Arc::new(AtomicBool::new(false)),
            CancellationToken::new(),
            Arc::new(AtomicU64::new(0)),
        );
        let upstream = upstream.to_owned();
        let (bh, c, f) = (black_hole.clone(), cut.clone(), forwarded.clone());
        tokio::spawn(c.clone().run_until_cancelled_owned(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                for (from, to) in [
                    (
                        Box::new(client_read) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                        Box::new(server_write) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
                    ),
                    (Box::new(server_read), Box::new(client_write)),
                ] {
                    let (bh, f) = (bh.clone(), f.clone());
                    tokio::spawn(c.clone().run_until_cancelled_owned(pipe(from, to, bh, f)));
                }
            }
        }));
        Proxy {
            addr,
            black_hole,
            cut,
            forwarded,
        }
    }

    /// From now on, no byte goes through in either direction; connections stay open.
    pub fn black_hole(&self) {
        self.black_hole.store(true, Ordering::SeqCst);
    }

    /// Closes every connection and the listener.
    pub fn cut(&self) {
        self.cut.cancel();
    }
}

async fn pipe(
    mut from: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    mut to: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    black_hole: Arc<AtomicBool>,
    forwarded: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if black_hole.load(Ordering::SeqCst) {
            // Swallow everything from now on, like a host that stopped answering.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        forwarded.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// A unique queue name, so tests sharing a table or a Redis do not meet.
pub fn queue_name(test: &str) -> String {
    format!(
        "{test}-{}-{}",
        std::process::id(),
        rand::rng().random::<u32>()
    )
}

/// What the handlers did, per job id: how many runs began and how many finished, and the
/// attempt and delivery counts the last run was given.
#[derive(Debug, Clone, Default)]
pub struct Runs(
    Arc<Mutex<HashMap<i64, (u32, u32)>>>,
    Arc<Mutex<HashMap<i64, (i64, i64)>>>,
);

impl Runs {
    /// A handler that sleeps the job's payload in milliseconds, recording its runs.
    pub fn sleeper(
        &self,
    ) -> impl Fn(Job<u64>) -> futures::future::BoxFuture<'static, Result<(), lifecycle_core::BoxError>>
           + Clone
           + Send
           + Sync
           + 'static {
        let runs = self.clone();
        move |job: Job<u64>| {
            let runs = runs.clone();
            Box::pin(async move {
                runs.0.lock().unwrap().entry(job.id).or_default().0 += 1;
                runs.1
                    .lock()
                    .unwrap()
                    .insert(job.id, (job.attempts, job.deliveries));
                tokio::time::sleep(Duration::from_millis(job.payload)).await;
                runs.0.lock().unwrap().entry(job.id).or_default().1 += 1;
                Ok(())
            })
        }
    }

    /// Records that a handler began running `job`.
    pub fn begin<T>(&self, job: &Job<T>) {
        self.0.lock().unwrap().entry(job.id).or_default().0 += 1;
        self.1
            .lock()
            .unwrap()
            .insert(job.id, (job.attempts, job.deliveries));
    }

    /// Records that a handler finished running job `id`.
    pub fn finish(&self, id: i64) {
        self.0.lock().unwrap().entry(id).or_default().1 += 1;
    }

    /// Whether a handler is running right now.
    pub fn in_progress(&self) -> bool {
        self.0
            .lock()
            .unwrap()
            .values()
            .any(|(began, finished)| began > finished)
    }

    /// Waits until a handler is running, so that a kill interrupts a job for sure.
    pub async fn wait_in_progress(&self) {
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.in_progress() {
            assert!(tokio::time::Instant::now() < until, "no job ever ran");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    pub fn get(&self, id: i64) -> (u32, u32) {
        self.0.lock().unwrap().get(&id).copied().unwrap_or_default()
    }

    /// The attempt count the last run of job `id` was given.
    pub fn attempts(&self, id: i64) -> i64 {
        self.1
            .lock()
            .unwrap()
            .get(&id)
            .copied()
            .unwrap_or_default()
            .0
    }

    /// The delivery count the last run of job `id` was given.
    pub fn deliveries(&self, id: i64) -> i64 {
        self.1
            .lock()
            .unwrap()
            .get(&id)
            .copied()
            .unwrap_or_default()
            .1
    }
}

/// Runs the lifecycle in a task; returns its handle and the task once it is ready.
pub async fn start(lifecycle: Lifecycle) -> (LifecycleHandle, tokio::task::JoinHandle<Report>) {
    let run = lifecycle_core::testing::TestRun::run(lifecycle);
    run.ready().await.expect("the lifecycle gets ready");
    (run.handle().clone(), run.into_task())
}
