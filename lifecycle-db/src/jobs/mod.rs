//! Jobs, whatever the backend: the queue contract and the worker that runs on it.

mod metrics;
mod queue;
mod stats;
mod worker;

pub use queue::{Job, JobQueue, JobState};
pub use stats::JobStats;
pub use worker::JobWorker;
