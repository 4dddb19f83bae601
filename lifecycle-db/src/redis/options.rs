//! `RedisClientOptions`: how a `RedisClient` connects, fixed before it is made.

use std::time::Duration;

use super::client::RedisClient;
use crate::error::DbError;

/// How a [`RedisClient`] connects: set these first, then [`open`](Self::open) the client.
///
/// The client keeps them for its whole life, and its clones share them: once made, nothing
/// can change how a running client connects (as with sqlx's `PoolOptions` and `Pool`).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lifecycle_db::RedisClientOptions;
///
/// # fn main() -> Result<(), lifecycle_db::DbError> {
/// let redis = RedisClientOptions::new()
///     .client_name("orders-api")
///     .response_timeout(Some(Duration::from_millis(500)))
///     .open("redis://127.0.0.1:6379/")?;
/// # drop(redis);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use = "options do nothing until `open` makes a client with them"]
pub struct RedisClientOptions {
    settings: Settings,
}

/// The settings a client and its connections use.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) name: Option<String>,
    pub(super) connect_timeout: Duration,
    pub(super) response_timeout: Option<Duration>,
}

impl RedisClientOptions {
    /// The defaults: no client name, a 1 s connect timeout, a 1 s response timeout.
    pub fn new() -> Self {
        RedisClientOptions {
            settings: Settings {
                name: None,
                connect_timeout: Duration::from_secs(1),
                response_timeout: Some(Duration::from_secs(1)),
            },
        }
    }

    /// The name every connection of the client gives itself with `CLIENT SETNAME` (no
    /// spaces), so `CLIENT LIST` shows which service holds which connection. None by default.
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.settings.name = Some(name.into());
        self
    }

    /// How long one connection attempt may take, handshake included (default 1 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings.connect_timeout = timeout;
        self
    }

    /// How long a command on the shared connection waits for its reply before failing
    /// (default 1 s; `None` waits for ever). Dedicated connections have none: their blocking
    /// commands carry their own timeout.
    pub fn response_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.settings.response_timeout = timeout;
        self
    }

    /// A client for `url` (`redis://[user:password@]host[:port][/db]`, or `redis+unix://`)
    /// with these options. Nothing connects before the client's start.
    ///
    /// # Errors
    ///
    /// [`DbError::InvalidUrl`] when redis-rs cannot parse the URL.
    pub fn open(self, url: &str) -> Result<RedisClient, DbError> {
        RedisClient::with_settings(url, self.settings)
    }
}

impl Default for RedisClientOptions {
    fn default() -> Self {
        Self::new()
    }
}
