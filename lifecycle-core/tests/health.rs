//! Readiness and component health as other crates read them through `LifecycleHandle`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lifecycle_core::{
    async_trait, BoxError, Component, ComponentState, Context, Health, Lifecycle, Phase,
    Registration,
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
            let db_down = (handle.is_ready().await, handle.check_health().await);
            handle.shutdown("test over");
            (starting, ready, db_down, handle.is_ready().await)
        }
    });
    let report = lifecycle.run().await;
    assert_eq!(report.exit_code(), 0);
    let ((starting_ready, starting), ready, (down_ready, down), after_trigger) =
        checks.await.unwrap();

    assert!(!starting_ready);
    assert_eq!(starting[0].state, ComponentState::Starting);
    assert_eq!(starting[0].health, Health::unhealthy("starting"));
    assert_eq!(starting[1].state, ComponentState::Pending);

    assert!(ready);
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
