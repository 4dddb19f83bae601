//! A pool closed under its users says so: a component that uses the pool without depending on
//! it stops at the same time as the pool, and its queries fail with "pool closed" during the
//! drain. The pool's stop names the likely cause in the log, the report and the exit code.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lifecycle_core::{Lifecycle, Registration, Worker};
use lifecycle_db::SqlPool;
use tokio::sync::Notify;

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// One thread, so that the test's subscriber (set for this thread) sees every task's events.
#[tokio::test(flavor = "current_thread")]
async fn a_pool_closed_while_in_use_names_the_missing_dependency() {
    // tracing caches per call site, for the whole process, whether any subscriber wants it: a
    // call site first reached by another test (on a thread with no subscriber) could be cached
    // as wanted by nobody and never reach this thread's. A global registry (which keeps
    // nothing) wants every call site, so the cache never says "never".
    let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
    let logs = Arc::new(Mutex::new(Vec::new()));
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || Capture(writer.clone()))
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("app.db").display());
    let db = SqlPool::<sqlx::Sqlite>::new(&url).unwrap();
    let pool = db.pool().clone();
    let (holding, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    // A worker that uses the pool but was registered without `depends_on("db")`: it still holds
    // a connection when the pool's stop comes.
    let reporter = {
        let (holding, release) = (holding.clone(), release.clone());
        Worker::new(move |_ctx| {
            let (pool, holding, release) = (pool.clone(), holding.clone(), release.clone());
            async move {
                let connection = pool.acquire().await?;
                holding.notify_one();
                release.notified().await;
                drop(connection);
                Ok::<_, sqlx::Error>(())
            }
        })
    };
    let lifecycle = Lifecycle::builder()
        .signals([])
        .register(Registration::new("db", db))
        .register(Registration::new("reporter", reporter).stop_timeout(Duration::from_secs(5)))
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());
    holding.notified().await;
    handle
        .watch_phase()
        .wait_for(|phase| phase.is_ready())
        .await
        .unwrap();
    handle.shutdown("deploy");

    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    let warning = loop {
        let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
        if let Some(line) = text.lines().find(|line| line.contains("in use")) {
            break line.to_owned();
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the pool closed under its user without a word:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(warning.contains("in_use=1"), "{warning}");
    assert!(warning.contains("depends_on(\"db\")"), "{warning}");
    release.notify_one();
    let report = run.await.unwrap();
    assert_eq!(report.exit_code(), 1, "{report}");
    let db = report.component("db").unwrap();
    assert_eq!(db.outcome, lifecycle_core::Outcome::Failed, "{report}");
    let error = db.error.as_deref().unwrap();
    assert!(
        error.starts_with("stop failed: 1 connections to ")
            && error.contains("lacks depends_on(\"db\")"),
        "{error}"
    );
}
