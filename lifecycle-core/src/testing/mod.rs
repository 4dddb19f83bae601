//! Testing your service's shutdown (feature `testing`).
//!
//! A shutdown is tested at three levels, from the fastest to the most real. Start from the
//! function that wires your service's `main`, returning its [`LifecycleBuilder`](crate::LifecycleBuilder), so the test
//! runs the same wiring as production:
//!
//! ```
//! # use lifecycle_core::{Lifecycle, LifecycleBuilder, Registration, Worker};
//! # use std::time::Duration;
//! fn service() -> LifecycleBuilder {
//!     # let idle = || Worker::new(|ctx| async move {
//!     #     ctx.token().cancelled().await;
//!     #     Ok::<_, std::io::Error>(())
//!     # });
//!     Lifecycle::builder()
//!         .drain_delay(Duration::from_secs(5))
//!         .register(Registration::new("db", idle()))
//!         .register(Registration::new("mailer", idle()).depends_on("db"))
//!         .register(Registration::new("http", idle()).depends_on("db"))
//! }
//!
//! // main: `service().build()?.run().await`
//! ```
//!
//! 1. **Unit, on the paused clock**: [`TestRun`] runs the builder in the test, without signal
//!    handlers or a hard exit; the test triggers it as a signal, a second signal, a request or
//!    a component failure would, [injects faults](crate::LifecycleBuilder::inject_fault) by
//!    name (a start that fails or hangs, a stop that hangs, fails or panics, a failure at run
//!    time), and asserts on the [`Timeline`]: "`http` stopped before `db`", "`mailer` never
//!    started", "readiness was off before anything stopped", "the exit code was 1". With
//!    `#[tokio::test(start_paused = true)]` a 30 s budget passes in microseconds.
//!
//!    ```
//!    # use lifecycle_core::{Lifecycle, LifecycleBuilder, Registration, Worker};
//!    # use std::time::Duration;
//!    # fn service() -> LifecycleBuilder {
//!    #     let idle = || Worker::new(|ctx| async move {
//!    #         ctx.token().cancelled().await;
//!    #         Ok::<_, std::io::Error>(())
//!    #     });
//!    #     Lifecycle::builder()
//!    #         .drain_delay(Duration::from_secs(5))
//!    #         .register(Registration::new("db", idle()))
//!    #         .register(Registration::new("mailer", idle()).depends_on("db"))
//!    #         .register(Registration::new("http", idle()).depends_on("db"))
//!    # }
//!    use lifecycle_core::testing::{Fault, TestRun};
//!    use lifecycle_core::{exit_code, Outcome};
//!
//!    # #[tokio::main(flavor = "current_thread", start_paused = true)]
//!    # async fn main() {
//!    // #[tokio::test(start_paused = true)]
//!    // async fn a_database_that_cannot_start_rolls_back() {
//!    let run = TestRun::start(service().inject_fault("mailer", Fault::StartFails)).unwrap();
//!    assert!(run.ready().await.is_err());
//!    run.finish()
//!        .await
//!        .assert_outcome("mailer", Outcome::Failed)
//!        .assert_stopped_before("http", "db")
//!        .assert_exit_code(exit_code::FAILURE);
//!    // }
//!    # }
//!    ```
//!
//! 2. **Process, with real signals**: run the service's binary as a child process (Cargo
//!    builds it for integration tests: `env!("CARGO_BIN_EXE_my-service")`), send it SIGTERM
//!    with `kill`, and read its exit code and the report it writes with
//!    [`LifecycleBuilder::report_file`](crate::LifecycleBuilder::report_file). This is where a
//!    second signal and the hard deadline really end the process.
//!
//! 3. **Deployment**: `lifecycle-drill` loads the running service (a command, or one started in
//!    the test) over HTTP/1.1, HTTP/2 and SSE, signals it, and counts every request that was
//!    dropped, from the command line or as a library call in `cargo test`; the workspace's
//!    `scripts/rolling-restart.sh` replaces instances behind HAProxy under `wrk` load.

mod fault;
mod test_run;
mod timeline;

pub use crate::record::Step;
pub use fault::{Fault, InjectedFault};
pub use test_run::{NotReady, TestRun};
pub use timeline::Timeline;
