//! `RedisSubscriber` against the real Redis server of the machine: cancelled, it unsubscribes and
//! ends within its stop timeout; killed by the server or cut off from it, it reports a failure
//! that its policy handles (a shutdown, or a resubscription) instead of hanging.

#![cfg(feature = "redis")]

use crate::common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{redis_admin, redis_clients, redis_url, server_available, Proxy, REDIS};
use lifecycle_core::{
    exit_code, ComponentState, Lifecycle, OnFailure, Outcome, Registration, TriggerKind,
};
use lifecycle_db::RedisSubscriber;
use redis::AsyncCommands;
use tokio::time::Instant;

/// The tests below find their subscriber's connection as the one pub/sub client that appeared
/// while they started it, so they run one at a time.
static PUBSUB: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A name unique to this test and process, for channels.
fn unique(what: &str) -> String {
    format!("lifecycle-{what}-{}", std::process::id())
}

/// The payloads a subscriber received.
type Received = Arc<Mutex<Vec<String>>>;

/// A subscriber to `channel` that records the payloads it receives in `received`.
fn recording_subscriber(
    url: &str,
    channel: &str,
    received: &Received,
) -> RedisSubscriber<impl Fn(redis::Msg) -> std::future::Ready<()> + Send + Sync + 'static> {
    let record = received.clone();
    RedisSubscriber::new(url, move |message| {
        let payload: String = message.get_payload().unwrap();
        record.lock().unwrap().push(payload);
        std::future::ready(())
    })
    .unwrap()
    .channel(channel)
}

/// How many clients of the server are subscribed to `channel`.
async fn subscribers(channel: &str) -> i64 {
    let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(&mut redis_admin().await)
        .await
        .unwrap();
    counts[0].1
}

/// The ids of the server's pub/sub clients.
async fn pubsub_clients() -> HashSet<String> {
    redis_clients(|c| c.get("flags").is_some_and(|f| f.contains('P')))
        .await
        .into_iter()
        .map(|c| c["id"].clone())
        .collect()
}

/// Publishes `payload` until `received` holds it, for up to `within`.
async fn delivered(
    channel: &str,
    payload: &str,
    received: &Mutex<Vec<String>>,
    within: Duration,
) -> bool {
    let until = Instant::now() + within;
    let mut admin = redis_admin().await;
    while Instant::now() < until {
        let _: i64 = admin.publish(channel, payload).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        if received.lock().unwrap().iter().any(|p| p == payload) {
            return true;
        }
    }
    false
}

/// Kills the one pub/sub client that is not in `before`, as `CLIENT KILL TYPE pubsub` would.
async fn kill_new_pubsub_client(before: &HashSet<String>) {
    let ours: Vec<String> = pubsub_clients().await.difference(before).cloned().collect();
    assert_eq!(ours.len(), 1, "the subscriber's connection: {ours:?}");
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&ours[0])
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut redis_admin().await)
        .await
        .unwrap();
    assert_eq!(killed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_subscriber_unsubscribes_within_its_stop_timeout() {
    if !server_available("Redis", REDIS) {
        return;
    }
    let _one_at_a_time = PUBSUB.lock().await;
    let channel = unique("silent");
    let received = Received::default();
    let subscriber = recording_subscriber(&redis_url(), &channel, &received);
    let (handle, run) = common::start(
        Lifecycle::builder()
            .signals([])
            .register(
                Registration::new("subscriber", subscriber).stop_timeout(Duration::from_secs(1)),
            )
            .build()
            .unwrap(),
    )
    .await;
    // Subscribed by the time the start returned, and listening.
    assert_eq!(subscribers(&channel).await, 1);
    assert!(delivered(&channel, "hello", &received, Duration::from_secs(1)).await);
    // Then the channel falls silent, and the stop comes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    handle.shutdown("test over");
    let report = run.await.unwrap();
    assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
    let subscriber = report.component("subscriber").unwrap();
    assert_eq!(subscriber.outcome, Outcome::Stopped, "{report}");
    let stop_took = subscriber.stop_ended_ms.unwrap() - subscriber.stop_began_ms.unwrap();
    assert!(stop_took < 1000.0, "stop took {stop_took} ms");
    assert_eq!(subscribers(&channel).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_kill_of_the_subscriber_is_a_failure_not_a_hang() {
    if !server_available("Redis", REDIS) {
        return;
    }
    let _one_at_a_time = PUBSUB.lock().await;
    let channel = unique("killed");
    let before = pubsub_clients().await;
    let subscriber = recording_subscriber(&redis_url(), &channel, &Received::default());
    let (_handle, run) = common::start(
        Lifecycle::builder()
            .signals([])
            .register(Registration::new("subscriber", subscriber))
            .build()
            .unwrap(),
    )
    .await;
    kill_new_pubsub_client(&before).await;
    let killed_at = Instant::now();
    let report = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the kill ends the service under the default policy")
        .unwrap();
    assert!(
        killed_at.elapsed() < Duration::from_secs(1),
        "the kill was noticed after {:?}",
        killed_at.elapsed()
    );
    assert_eq!(report.exit_code(), exit_code::FAILURE, "{report}");
    assert_eq!(
        report.trigger.kind,
        TriggerKind::ComponentFailed,
        "{report}"
    );
    let expected = format!(
        "the subscription to {channel} on redis://{REDIS}/ ended: the server closed the connection"
    );
    assert!(report.trigger.detail.contains(&expected), "{report}");
    assert_eq!(
        report.component("subscriber").unwrap().outcome,
        Outcome::Failed,
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_policy_resubscribes_after_a_server_kill() {
    if !server_available("Redis", REDIS) {
        return;
    }
    let _one_at_a_time = PUBSUB.lock().await;
    let channel = unique("resubscribed");
    let before = pubsub_clients().await;
    let received = Received::default();
    let subscriber = recording_subscriber(&redis_url(), &channel, &received);
    let (handle, run) = common::start(
        Lifecycle::builder()
            .signals([])
            .register(
                Registration::new("subscriber", subscriber).on_failure(OnFailure::Restart {
                    max_restarts: 1,
                    initial_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(1),
                }),
            )
            .build()
            .unwrap(),
    )
    .await;
    kill_new_pubsub_client(&before).await;
    // Restarted: subscribed again, and a message published after the kill arrives.
    let until = Instant::now() + Duration::from_secs(2);
    while !(subscribers(&channel).await == 1
        && handle.states() == [("subscriber".to_owned(), ComponentState::Running)])
    {
        assert!(
            Instant::now() < until,
            "never resubscribed: {:?}",
            handle.states()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        delivered(
            &channel,
            "after the kill",
            &received,
            Duration::from_secs(1)
        )
        .await
    );
    handle.shutdown("test over");
    let report = run.await.unwrap();
    assert_eq!(
        report.component("subscriber").unwrap().outcome,
        Outcome::Stopped,
        "{report}"
    );
    assert_eq!(subscribers(&channel).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_cut_off_from_a_silent_server_fails_on_its_ping() {
    if !server_available("Redis", REDIS) {
        return;
    }
    let _one_at_a_time = PUBSUB.lock().await;
    let channel = unique("black-holed");
    let proxy = Proxy::start(REDIS).await;
    let subscriber = recording_subscriber(
        &format!("redis://{}/", proxy.addr),
        &channel,
        &Received::default(),
    )
    .ping_interval(Duration::from_millis(300));
    let (_handle, run) = common::start(
        Lifecycle::builder()
            .signals([])
            .register(Registration::new("subscriber", subscriber))
            .build()
            .unwrap(),
    )
    .await;
    // Answered pings keep it running.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!run.is_finished());
    proxy.black_hole();
    let black_holed_at = Instant::now();
    let report = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("an unanswered ping ends the service under the default policy")
        .unwrap();
    assert!(
        black_holed_at.elapsed() < Duration::from_millis(1500),
        "noticed after {:?}",
        black_holed_at.elapsed()
    );
    assert_eq!(
        report.trigger.kind,
        TriggerKind::ComponentFailed,
        "{report}"
    );
    assert!(
        report
            .trigger
            .detail
            .contains("ended: no answer to a ping within 1s"),
        "{report}"
    );
    proxy.cut();
}

/// Settings the subscriber cannot run with fail its start, naming the setting, before it
/// connects: a zero ping interval (which would panic its ping timer later), a zero connect
/// timeout, nothing to subscribe to. The port is one nobody listens on.
#[tokio::test]
async fn invalid_settings_are_refused_at_the_start() {
    let url = "redis://127.0.0.1:1/";
    let handler = |_message: redis::Msg| std::future::ready(());
    for (setting, subscriber) in [
        (
            "ping_interval",
            RedisSubscriber::new(url, handler)
                .unwrap()
                .channel("c")
                .ping_interval(Duration::ZERO),
        ),
        (
            "connect_timeout",
            RedisSubscriber::new(url, handler)
                .unwrap()
                .channel("c")
                .connect_timeout(Duration::ZERO),
        ),
        ("channel", RedisSubscriber::new(url, handler).unwrap()),
    ] {
        let report = Lifecycle::builder()
            .signals([])
            .register(Registration::new("subscriber", subscriber))
            .build()
            .unwrap()
            .run()
            .await;
        let line = report.component("subscriber").unwrap();
        assert_eq!(line.outcome, Outcome::Failed, "{report}");
        let error = line.error.as_deref().unwrap_or_default();
        assert!(
            error.contains(&format!("invalid setting of subscriber: {setting}")),
            "{error}"
        );
    }
}
