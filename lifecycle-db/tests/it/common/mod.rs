//! What the tests of lifecycle-db share beyond `lifecycle-test-support`: Redis inspected beside
//! the code under test, a connection counter, and the handlers' record of runs.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lifecycle_core::{exit_code, Component, Lifecycle, Outcome, Registration};
use lifecycle_db::Job;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use lifecycle_test_support::servers::{
    mariadb_url, postgres_url, redis_url, server_available, unique, MARIADB, POSTGRES, REDIS,
};
pub use lifecycle_test_support::{free_addr, start, start_alone, Proxy};

/// How long a start against a server that cannot be reached may take, at most.
pub const START_BOUND: Duration = Duration::from_secs(2);

/// Runs `component` alone under a start timeout of [`START_BOUND`], asserts that its start
/// failed within that bound and failed the run, and returns the start's error.
pub async fn start_error(component: impl Component + 'static) -> String {
    let began = tokio::time::Instant::now();
    let report = Lifecycle::builder()
        .signals([])
        .register(Registration::new("server", component).start_timeout(START_BOUND))
        .build()
        .unwrap()
        .run()
        .await;
    assert!(
        began.elapsed() < START_BOUND,
        "gave up after {:?}",
        began.elapsed()
    );
    assert_eq!(report.exit_code(), exit_code::FAILURE, "{report}");
    let line = report.component("server").unwrap();
    assert_eq!(line.outcome, Outcome::Failed, "{report}");
    line.error.clone().unwrap()
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
