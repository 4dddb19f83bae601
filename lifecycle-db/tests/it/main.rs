//! lifecycle-db's integration tests, one binary: `jobs` is the `JobQueue` contract, run on SQLite,
//! PostgreSQL, MariaDB and Redis; the others one module per component, against the real servers.

mod common;
mod features;
mod job_metrics;
mod jobs;
mod pool_metrics;
mod redis_client;
mod redis_feature;
mod redis_metrics;
mod redis_queue;
mod redis_subscriber;
mod secrets;
mod sql_pool;
mod sql_pool_users;
mod sql_queue;
