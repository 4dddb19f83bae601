//! The upgrade API as a service without an upgrader meets it: a request is refused, nothing
//! is handed over, and the report's JSON keeps its shape (no `upgrades` key when none ran).

use lifecycle_core::{Lifecycle, Registration, Worker};

#[tokio::test(start_paused = true)]
async fn without_an_upgrader_an_upgrade_request_is_refused() {
    let idle = Worker::new(|ctx| async move {
        ctx.token().cancelled().await;
        Ok::<_, std::io::Error>(())
    });
    let lifecycle = Lifecycle::builder()
        .register(Registration::new("idle", idle))
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let asking = handle.clone();
    tokio::spawn(async move {
        let mut phase = asking.watch_phase();
        phase
            .wait_for(|p| *p == lifecycle_core::Phase::Ready)
            .await
            .unwrap();
        assert!(!asking.upgrade(), "no upgrader runs");
        asking.shutdown("done");
    });
    let report = lifecycle.run().await;
    assert!(!handle.handed_over());
    assert!(report.upgrades.is_empty());
    assert!(
        !report.to_json().contains("upgrades"),
        "{}",
        report.to_json()
    );
    assert_eq!(report.exit_code, 0);
}
