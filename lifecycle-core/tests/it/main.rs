//! lifecycle-core's integration tests, one binary: a module per topic, on the public API and
//! the testing kit, nearly all on tokio's paused clock. `signals.rs` stays a binary of its own:
//! it is its own child process, so its `main` is not libtest's.

mod architecture;
mod common;
mod configuration;
mod dag_properties;
mod dynamic;
mod failures;
mod health;
mod late_failures;
mod shutdown_order;
mod telemetry;
mod testing_kit;
mod upgrade;
