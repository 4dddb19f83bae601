//! The Redis backend (feature `redis`): the client and its connections, the pub/sub
//! subscriber, and the job queue.

use std::sync::{Mutex, MutexGuard};

mod client;
mod connection;
mod metrics;
mod queue;
mod subscriber;

pub use client::RedisClient;
pub use connection::RedisConnection;
pub use queue::RedisJobQueue;
pub use subscriber::RedisSubscriber;

/// Locks a mutex whose data stays consistent even if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
