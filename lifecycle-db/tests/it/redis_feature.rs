//! The Redis tests (`redis_client.rs`, `redis_subscriber.rs`, `redis_queue.rs`, and Redis in
//! `jobs.rs` and `secrets.rs`) need the `redis` feature, which the crate's dev-dependency on
//! itself turns on. Built without it, they compile to nothing; this test makes that loud in CI.

#[cfg(not(feature = "redis"))]
#[test]
fn the_redis_tests_need_the_redis_feature() {
    assert!(
        std::env::var("CI").is_err(),
        "the Redis tests were built without the `redis` feature; CI needs them"
    );
    eprintln!("SKIPPED: the Redis tests need the `redis` feature (outside CI)");
}
