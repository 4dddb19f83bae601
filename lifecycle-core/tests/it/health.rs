//! Readiness and component health as other crates read them through `LifecycleHandle`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lifecycle_core::{
    async_trait, BoxError, Component, ComponentState, Context, Health, Lifecycle, LifecycleBuilder,
    Phase, Registration,
};

/// Healthy while its flag is set; its start takes a second.
struct Pingable(Arc<AtomicBool>);

#[async_trait]
impl Component for Pingable {
    async fn start(&self, _ctx: &Context) -> Result<(), BoxError> {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(())
    }

    async fn health(&self) -> Health {
        if self.0.load(Ordering::SeqCst) {
            Health::Healthy
        } else {
            Health::unhealthy("ping failed")
        }
    }
}

struct PanickingHealth;

#[async_trait]
impl Component for PanickingHealth {
    async fn start(&self, _ctx: &Context) -> Result<(), BoxError> {
        Ok(())
    }

    async fn health(&self) -> Health {
        panic!("health check bug")
    }
}

#[tokio::test(start_paused = true)]
async fn readiness_follows_phase_and_health() {
    let db_up = Arc::new(AtomicBool::new(true));
    let lifecycle = Lifecycle::builder()
        .signals([])
        .register(Registration::new("db", Pingable(db_up.clone())))
        .register(
            Registration::new("http", Pingable(Arc::new(AtomicBool::new(true)))).depends_on("db"),
        )
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let checks = tokio::spawn({
        let handle = handle.clone();
        async move {
            // During start-up: not ready, db starting, http pending.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let starting = (handle.is_ready().await, handle.check_health().await);
            handle
                .watch_phase()
                .wait_for(|p| *p == Phase::Ready)
                .await
                .unwrap();
            let ready = handle.is_ready().await;
            db_up.store(false, Ordering::SeqCst);
            // The answers of the last check are reused for the cache's time to live.
            let cached = handle.is_ready().await;
            tokio::time::sleep(LifecycleBuilder::DEFAULT_HEALTH_CACHE).await;
            let db_down = (handle.is_ready().await, handle.check_health().await);
            handle.shutdown("test over");
            (starting, ready, cached, db_down, handle.is_ready().await)
        }
    });
    let report = lifecycle.run().await;
    assert_eq!(report.exit_code(), 0);
    let ((starting_ready, starting), ready, cached, (down_ready, down), after_trigger) =
        checks.await.unwrap();

    assert!(!starting_ready);
    assert_eq!(starting[0].state, ComponentState::Starting);
    assert_eq!(starting[0].health, Health::unhealthy("starting"));
    assert_eq!(starting[1].state, ComponentState::Pending);

    assert!(ready);
    assert!(
        cached,
        "a check within the time to live reuses the last answers"
    );
    assert!(!down_ready);
    assert_eq!(down[0].name, "db");
    assert_eq!(down[0].health, Health::unhealthy("ping failed"));
    assert!(down[1].health.is_healthy());
    assert!(
        !after_trigger,
        "not ready from the first moment of shutdown"
    );
    assert_eq!(
        handle.states()[0].1,
        ComponentState::Done(lifecycle_core::Outcome::Stopped)
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_health_check_reads_as_unhealthy() {
    let lifecycle = Lifecycle::builder()
        .signals([])
        .register(Registration::new("buggy", PanickingHealth))
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let check = tokio::spawn({
        let handle = handle.clone();
        async move {
            handle
                .watch_phase()
                .wait_for(|p| p.is_ready())
                .await
                .unwrap();
            let status = handle.check_health().await;
            handle.shutdown("test over");
            status
        }
    });
    let report = lifecycle.run().await;
    assert_eq!(report.exit_code(), 0);
    assert_eq!(
        check.await.unwrap()[0].health,
        Health::unhealthy("health check panicked")
    );
}

/// Counts its health checks, each of which takes 100 ms; always unhealthy.
struct CountedCheck(Arc<std::sync::atomic::AtomicUsize>);

#[async_trait]
impl Component for CountedCheck {
    async fn start(&self, _ctx: &Context) -> Result<(), BoxError> {
        Ok(())
    }

    async fn health(&self) -> Health {
        self.0.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        Health::unhealthy("cache server down")
    }
}

#[tokio::test(start_paused = true)]
async fn a_probe_flood_runs_one_check_per_time_to_live() {
    let checks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let lifecycle = Lifecycle::builder()
        .signals([])
        .health_cache(Duration::from_secs(2))
        .register(Registration::new("cache", CountedCheck(checks.clone())))
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let probes = tokio::spawn({
        let (handle, checks) = (handle.clone(), checks.clone());
        async move {
            handle
                .watch_phase()
                .wait_for(|p| p.is_ready())
                .await
                .unwrap();
            // 100 probes at once, then 100 more a second later: one check covers them all.
            let flood = || futures::future::join_all((0..100).map(|_| handle.check_health()));
            flood().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            flood().await;
            let within_ttl = checks.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(2)).await;
            flood().await;
            handle.shutdown("test over");
            within_ttl
        }
    });
    let report = lifecycle.run().await;
    assert_eq!(report.exit_code(), 0);
    assert_eq!(
        probes.await.unwrap(),
        1,
        "one check within the time to live"
    );
    assert_eq!(checks.load(Ordering::SeqCst), 2, "a fresh check after it");
}

#[tokio::test(start_paused = true)]
async fn a_component_left_out_of_readiness_is_still_reported() {
    let lifecycle = Lifecycle::builder()
        .signals([])
        .register(Registration::new(
            "db",
            Pingable(Arc::new(AtomicBool::new(true))),
        ))
        .register(
            Registration::new(
                "cache",
                CountedCheck(Arc::new(std::sync::atomic::AtomicUsize::new(0))),
            )
            .exclude_from_readiness(),
        )
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let probe = tokio::spawn({
        let handle = handle.clone();
        async move {
            handle
                .watch_phase()
                .wait_for(|p| p.is_ready())
                .await
                .unwrap();
            let result = (handle.is_ready().await, handle.check_health().await);
            handle.shutdown("test over");
            result
        }
    });
    let report = lifecycle.run().await;
    assert_eq!(report.exit_code(), 0);
    let (ready, statuses) = probe.await.unwrap();
    assert!(
        ready,
        "an unhealthy component left out of readiness keeps the service ready"
    );
    assert_eq!(statuses[1].name, "cache");
    assert_eq!(statuses[1].health, Health::unhealthy("cache server down"));
    assert!(!statuses[1].counts_for_readiness);
    assert!(statuses[1].allows_readiness());
}
