//! A Redis client's metrics as an exporter sees them: commands refused once it has closed,
//! issued by code that did not depend on it. Against the machine's Redis.

#![cfg(feature = "redis")]

use crate::common;

use common::{redis_url, server_available, REDIS};
use lifecycle_core::testing::TestRun;
use lifecycle_core::{Lifecycle, Registration};
use lifecycle_db::RedisClient;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

fn counter(snapshotter: &Snapshotter, name: &str) -> Option<u64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .find(|(key, _, _, _)| {
            key.key().name() == name
                && key
                    .key()
                    .labels()
                    .any(|l| l.key() == "component" && l.value() == "cache")
        })
        .and_then(|(_, _, _, value)| match value {
            DebugValue::Counter(n) => Some(n),
            _ => None,
        })
}

// On a current-thread runtime, so the recorder set for this thread sees all the test
// records and nothing of the other tests in the binary.
#[tokio::test]
async fn commands_after_the_close_are_counted_as_refused() {
    if !server_available("Redis", REDIS) {
        return;
    }
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _recorder = metrics::set_default_local_recorder(&recorder);
    let client = RedisClient::new(&redis_url()).unwrap();
    let mut connection = client.connection();
    let run = TestRun::start(
        Lifecycle::builder()
            .signals([])
            .register(Registration::new("cache", client)),
    )
    .unwrap();
    run.ready().await.unwrap();
    let _: String = redis::cmd("PING")
        .query_async(&mut connection)
        .await
        .unwrap();
    run.request("deploy");
    run.finish().await.assert_exit_code(0);

    for _ in 0..3 {
        let refused = redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await;
        assert!(refused.is_err());
    }
    assert_eq!(
        counter(&snapshotter, "redis_commands_refused_total"),
        Some(3)
    );
    assert_eq!(
        counter(&snapshotter, "redis_commands_cut_off_total"),
        Some(0)
    );
}
