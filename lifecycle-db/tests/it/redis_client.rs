//! `RedisClient` against the real Redis server of the machine: every command resolves at the
//! stop, nothing reconnects or lingers after it even with Redis gone, blocking commands get a
//! connection of their own, and an unreachable server fails the start in bounded time.

#![cfg(feature = "redis")]

use crate::common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{
    count_connections, free_addr, redis_admin, redis_clients, redis_url, server_available,
    start_error, Proxy, REDIS,
};
use lifecycle_core::{exit_code, Lifecycle, Outcome, Registration, Worker};
use lifecycle_db::RedisClient;
use redis::{AsyncCommands, Direction, ErrorKind};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A name unique to this test and process, for keys and `CLIENT SETNAME`.
fn unique(what: &str) -> String {
    format!("lifecycle-{what}-{}", std::process::id())
}

/// Waits up to `within` for the server to hold no connection named `name`; returns how many
/// are left.
async fn named_connections_gone(name: &str, within: Duration) -> usize {
    let until = Instant::now() + within;
    loop {
        let left = redis_clients(|c| c.get("name").is_some_and(|n| n == name))
            .await
            .len();
        if left == 0 || Instant::now() >= until {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits up to a second for the runtime's task count to come back to `baseline`; returns it.
async fn tasks_back_to(baseline: usize) -> usize {
    let metrics = tokio::runtime::Handle::current().metrics();
    let until = Instant::now() + Duration::from_secs(1);
    while metrics.num_alive_tasks() > baseline && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    metrics.num_alive_tasks()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_in_flight_at_the_stop_all_resolve() {
    if !server_available("Redis", REDIS) {
        return;
    }
    for cut in [false, true] {
        let name = unique(if cut { "burst-cut" } else { "burst" });
        let key = name.clone();
        let _: () = redis_admin().await.del(&key).await.unwrap();
        let proxy = Proxy::start(REDIS).await;
        let redis = RedisClient::new(&format!("redis://{}/", proxy.addr))
            .unwrap()
            .client_name(&name);
        let connection = redis.connection();
        let (handle, run) = common::start(
            Lifecycle::builder()
                .signals([])
                .register(Registration::new("redis", redis).stop_timeout(Duration::from_secs(2)))
                .build()
                .unwrap(),
        )
        .await;
        // 1000 concurrent callers, each sending INCR after INCR until one fails, so that
        // commands are in flight whenever the stop comes.
        let acks = Arc::new(AtomicU64::new(0));
        let burst: Vec<JoinHandle<redis::RedisError>> = (0..1000)
            .map(|_| {
                let (mut connection, key, acks) = (connection.clone(), key.clone(), acks.clone());
                tokio::spawn(async move {
                    loop {
                        match connection.incr::<_, _, i64>(&key, 1).await {
                            Ok(_) => acks.fetch_add(1, Ordering::SeqCst),
                            Err(error) => return error,
                        };
                    }
                })
            })
            .collect();
        while acks.load(Ordering::SeqCst) < 2000 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if cut {
            proxy.cut();
        }
        let began = Instant::now();
        handle.shutdown("test over");
        let report = run.await.unwrap();
        let stop_took = began.elapsed();
        let errors: Vec<redis::RedisError> =
            tokio::time::timeout(Duration::from_millis(100), futures::future::join_all(burst))
                .await
                .expect("every command resolved by the end of the stop")
                .into_iter()
                .map(Result::unwrap)
                .collect();
        let acked = acks.load(Ordering::SeqCst) as i64;
        let counter: Option<i64> = redis_admin().await.get(&key).await.unwrap();
        let counter = counter.unwrap_or(0);
        assert!(
            acked <= counter && counter <= acked + errors.len() as i64,
            "cut={cut}: acks {acked}, counter {counter}, errors {}",
            errors.len()
        );
        assert!(
            stop_took < Duration::from_secs(2),
            "cut={cut}: stop took {stop_took:?}"
        );
        let redis = report.component("redis").unwrap();
        if cut {
            assert!(
                matches!(redis.outcome, Outcome::Stopped | Outcome::Failed),
                "{report}"
            );
        } else {
            // The stop waited for every command already sent, so each was acknowledged and
            // counted; each caller's last command came after the stop began and was refused.
            assert_eq!(redis.outcome, Outcome::Stopped, "{report}");
            assert_eq!(counter, acked, "commands lost or cut off");
            for error in &errors {
                assert_eq!(error.kind(), ErrorKind::Client, "{error}");
                assert!(error.to_string().contains("is closed"), "{error}");
            }
        }
        assert_eq!(
            named_connections_gone(&name, Duration::from_secs(1)).await,
            0,
            "cut={cut}: connections left after the stop"
        );
        let _: () = redis_admin().await.del(&key).await.unwrap();
    }
}

/// A proxy whose tasks run on a runtime of their own, so that the test's runtime counts only
/// the tasks of the code under test.
async fn proxy_on_its_own_runtime(upstream: &'static str) -> (Proxy, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let proxy = runtime.spawn(Proxy::start(upstream)).await.unwrap();
    (proxy, runtime)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_the_stop_bounds_it_and_leaves_no_reconnect_or_task() {
    if !server_available("Redis", REDIS) {
        return;
    }
    let tasks = tokio::runtime::Handle::current().metrics();
    let baseline = tasks.num_alive_tasks();
    for cut in [true, false] {
        let key = unique(if cut { "down-cut" } else { "down-black-hole" });
        let (proxy, proxy_runtime) = proxy_on_its_own_runtime(REDIS).await;
        // A response timeout longer than the stop timeout, so that a command sent into the black
        // hole is still waiting when the stop gives up.
        let redis = RedisClient::new(&format!("redis://{}/", proxy.addr))
            .unwrap()
            .response_timeout(Some(Duration::from_secs(10)));
        let (client, mut connection) = (redis.clone(), redis.connection());
        let (handle, run) = common::start(
            Lifecycle::builder()
                .signals([])
                .register(Registration::new("redis", redis).stop_timeout(Duration::from_secs(1)))
                .build()
                .unwrap(),
        )
        .await;
        let _: () = connection.set(&key, 1).await.unwrap();
        // A dedicated connection that its user never drops, as a leaky worker would.
        let mut dedicated = client.dedicated().await.unwrap();
        let _: Option<i64> = dedicated.get(&key).await.unwrap();
        // The control: the client's two connections each have a task.
        assert!(tasks.num_alive_tasks() >= baseline + 2);

        let attempts = if cut {
            proxy.cut();
            // From now on, every attempt to reach the server is counted.
            Some(count_connections(proxy.addr).await)
        } else {
            proxy.black_hole();
            None
        };
        let in_flight = tokio::spawn({
            let (mut connection, key) = (connection.clone(), key.clone());
            async move { connection.get::<_, Option<i64>>(&key).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let began = Instant::now();
        handle.shutdown("test over");
        let report = run.await.unwrap();
        let stop_took = began.elapsed();
        assert!(
            stop_took < Duration::from_millis(1100),
            "cut={cut}: stop took {stop_took:?}"
        );
        let redis = report.component("redis").unwrap();
        if cut {
            assert!(
                matches!(redis.outcome, Outcome::Stopped | Outcome::Failed),
                "{report}"
            );
        } else {
            assert_eq!(redis.outcome, Outcome::Failed, "{report}");
            assert_eq!(
                redis.error.as_deref(),
                Some(&*format!(
                    "stop failed: closing redis://{}/ cut off 1 commands still waiting for a reply",
                    proxy.addr
                ))
            );
        }
        let in_flight = tokio::time::timeout(Duration::from_millis(100), in_flight)
            .await
            .expect("the command in flight resolved by the end of the stop")
            .unwrap();
        assert!(in_flight.is_err(), "cut={cut}: {in_flight:?}");
        // Handles kept after the stop fail at once and connect nowhere.
        assert!(connection.get::<_, Option<i64>>(&key).await.is_err());
        assert!(dedicated.get::<_, Option<i64>>(&key).await.is_err());

        if let Some((attempts, listener)) = attempts {
            let at_stop = attempts.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(1500)).await;
            assert_eq!(
                attempts.load(Ordering::SeqCst),
                at_stop,
                "reconnect attempts after the stop"
            );
            listener.cancel();
        }
        // With the lifecycle gone and the handles still held, no task of the client is left:
        // no connection driver, no reconnect loop, even on a black-holed link that closes
        // nothing by itself.
        assert_eq!(
            tasks_back_to(baseline).await,
            baseline,
            "cut={cut}: tasks left after the stop"
        );
        drop((connection, dedicated));
        proxy.cut();
        proxy_runtime.shutdown_background();
    }
    let _: () = redis_admin()
        .await
        .del(&[unique("down-cut"), unique("down-black-hole")])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_blmove_on_a_dedicated_connection_leaves_the_shared_one_fast() {
    if !server_available("Redis", REDIS) {
        return;
    }
    let name = unique("blocking");
    let (queue, working, key) = (
        format!("{name}:queue"),
        format!("{name}:working"),
        format!("{name}:key"),
    );
    let redis = RedisClient::new(&redis_url()).unwrap().client_name(&name);
    let (client, mut shared) = (redis.clone(), redis.connection());
    let worker = Worker::new(move |ctx| {
        let (client, queue, working) = (client.clone(), queue.clone(), working.clone());
        async move {
            let mut connection = client.dedicated().await?;
            while !ctx.token().is_cancelled() {
                let _job: Option<String> = connection
                    .blmove(&queue, &working, Direction::Left, Direction::Right, 1.0)
                    .await?;
            }
            Ok::<_, redis::RedisError>(())
        }
    });
    let (handle, run) = common::start(
        Lifecycle::builder()
            .signals([])
            .register(Registration::new("redis", redis))
            .register(
                Registration::new("worker", worker)
                    .depends_on("redis")
                    .stop_timeout(Duration::from_secs(2)),
            )
            .build()
            .unwrap(),
    )
    .await;
    // The worker's BLMOVE blocks on the server, on a connection of its own.
    let until = Instant::now() + Duration::from_secs(2);
    loop {
        let blocked = redis_clients(|c| {
            c.get("name").is_some_and(|n| *n == name)
                && c.get("cmd").is_some_and(|cmd| cmd == "blmove")
                && c.get("flags").is_some_and(|f| f.contains('b'))
        })
        .await;
        if blocked.len() == 1 {
            break;
        }
        assert!(Instant::now() < until, "the BLMOVE never blocked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Meanwhile, the shared connection answers fast.
    let mut latencies = Vec::new();
    for i in 0..200 {
        let sent = Instant::now();
        let _: () = shared.set(&key, i).await.unwrap();
        latencies.push(sent.elapsed());
        let sent = Instant::now();
        let _: i64 = shared.get(&key).await.unwrap();
        latencies.push(sent.elapsed());
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    // Well under a millisecond on an idle machine; the bound leaves room for a loaded CI
    // runner's scheduling, while a command queued behind the BLMOVE would wait up to its 1 s.
    assert!(p99 < Duration::from_millis(50), "p99 {p99:?}");
    // The control: the same BLMOVE on the shared connection holds up a GET sent after it.
    let blocking = tokio::spawn({
        let (mut shared, other) = (shared.clone(), format!("{name}:other"));
        async move {
            shared
                .blmove::<_, _, Option<String>>(
                    &other,
                    &other,
                    Direction::Left,
                    Direction::Right,
                    0.5,
                )
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let sent = Instant::now();
    let _: i64 = shared.get(&key).await.unwrap();
    let stalled = sent.elapsed();
    assert!(
        stalled >= Duration::from_millis(300),
        "a GET behind a blocking command took only {stalled:?}"
    );
    blocking.await.unwrap().unwrap();

    let began = Instant::now();
    handle.shutdown("test over");
    let report = run.await.unwrap();
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
    // The worker ends within its BLMOVE's own timeout.
    assert!(
        began.elapsed() < Duration::from_millis(1500),
        "stop took {:?}",
        began.elapsed()
    );
    assert_eq!(
        named_connections_gone(&name, Duration::from_secs(1)).await,
        0
    );
    let _: () = redis_admin().await.del(&key).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_fails_the_start_naming_the_redacted_url_in_bounded_time() {
    // A port nobody listens on.
    let port = free_addr().port();
    let redis = RedisClient::new(&format!("redis://app:secret@127.0.0.1:{port}/0")).unwrap();
    let error = start_error(redis).await;
    assert!(
        error.starts_with(&format!(
            "start failed: cannot reach redis://127.0.0.1:{port}/0 after "
        )),
        "{error}"
    );
    assert!(
        !error.contains("secret"),
        "credentials stay out of reports: {error}"
    );
    assert!(error.to_lowercase().contains("refused"), "{error}");
}

/// Settings the client cannot run with fail its start, naming the setting, before it
/// connects (the port is one nobody listens on: a connection attempt would fail otherwise).
#[tokio::test]
async fn invalid_settings_are_refused_at_the_start() {
    let url = "redis://127.0.0.1:1/";
    for (setting, redis) in [
        (
            "connect_timeout",
            RedisClient::new(url)
                .unwrap()
                .connect_timeout(Duration::ZERO),
        ),
        (
            "response_timeout",
            RedisClient::new(url)
                .unwrap()
                .response_timeout(Some(Duration::ZERO)),
        ),
        (
            "client_name",
            RedisClient::new(url).unwrap().client_name("two words"),
        ),
    ] {
        let report = Lifecycle::builder()
            .signals([])
            .register(Registration::new("redis", redis))
            .build()
            .unwrap()
            .run()
            .await;
        let line = report.component("redis").unwrap();
        assert_eq!(line.outcome, Outcome::Failed, "{report}");
        let error = line.error.as_deref().unwrap_or_default();
        assert!(
            error.contains(&format!("invalid setting of redis: {setting}")),
            "{error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_redis_fails_the_start_in_bounded_time() {
    if !server_available("Redis", REDIS) {
        return;
    }
    let proxy = Proxy::start(REDIS).await;
    proxy.black_hole();
    let redis = RedisClient::new(&format!("redis://{}/", proxy.addr)).unwrap();
    let error = start_error(redis).await;
    assert!(
        error.starts_with(&format!(
            "start failed: cannot reach redis://{}/ after ",
            proxy.addr
        )),
        "{error}"
    );
    assert!(error.contains("timed out"), "{error}");
}
