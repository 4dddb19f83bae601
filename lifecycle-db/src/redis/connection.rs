//! `RedisConnection`: a connection of a `RedisClient`, reconnected on demand.

use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Cmd, Pipeline, RedisError, RedisResult, Value};

use super::client::{ClientInner, Settings};
use super::lock;
#[cfg(doc)]
use super::RedisClient;

/// A connection to Redis from a [`RedisClient`]: its shared connection
/// ([`RedisClient::connection`]) or a dedicated one ([`RedisClient::dedicated`]).
///
/// Use it as any redis-rs async connection, through [`redis::AsyncCommands`] or
/// [`redis::Cmd::query_async`]. Cloning is cheap; clones share the connection.
///
/// Commands fail with a client error before the client's start and after its stop. A command
/// in flight when the stop gives up fails with an I/O error saying so: every command resolves.
///
/// # Cancellation safety
///
/// Dropping a command's future stops waiting for its reply; the command may still run on the
/// server.
#[derive(Clone)]
pub struct RedisConnection {
    pub(super) link: Arc<Link>,
}

impl RedisConnection {
    pub(super) fn new(link: Arc<Link>) -> Self {
        RedisConnection { link }
    }

    pub(super) fn link(&self) -> &Link {
        &self.link
    }
}

/// One connection of a client, which reconnects on demand.
pub(super) struct Link {
    inner: Arc<ClientInner>,
    pub(super) dedicated: bool,
    /// The settings of the client value that made it, as they were then.
    pub(super) settings: Settings,
    pub(super) current: Mutex<CurrentConnection>,
}

/// A link's current connection, or the attempt to make it, shared by every command that waits
/// for it, and which one it is (numbered).
#[derive(Default)]
pub(super) struct CurrentConnection {
    /// Counts connections, so a command that saw one fail forgets that one and not a newer one.
    generation: u64,
    pub(super) connection: Option<SharedConnect>,
}

pub(super) type SharedConnect = Shared<BoxFuture<'static, RedisResult<MultiplexedConnection>>>;

impl Link {
    pub(super) fn new(inner: &Arc<ClientInner>, dedicated: bool, settings: Settings) -> Arc<Link> {
        let link = Arc::new(Link {
            inner: inner.clone(),
            dedicated,
            settings,
            current: Mutex::default(),
        });
        let mut links = lock(&inner.links);
        links.retain(|link| link.strong_count() > 0);
        links.push(Arc::downgrade(&link));
        link
    }

    /// The connection, connecting if there is none or the last attempt failed.
    pub(super) async fn connection(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        let (generation, connecting) = {
            let mut current = lock(&self.current);
            let usable = current
                .connection
                .as_ref()
                .is_some_and(|c| !matches!(c.peek(), Some(Err(_))));
            if !usable {
                current.generation += 1;
                current.connection = Some(
                    self.inner
                        .connect(&self.settings, self.dedicated)
                        .boxed()
                        .shared(),
                );
            }
            let connecting = current.connection.clone().expect("set above");
            (current.generation, connecting)
        };
        Ok((generation, connecting.await?))
    }

    /// Forgets a broken connection, so that the next command makes a new one.
    fn forget(&self, generation: u64, error: &RedisError) {
        let forgotten = {
            let mut current = lock(&self.current);
            if current.generation == generation {
                current.connection.take()
            } else {
                None
            }
        };
        if forgotten.is_some() {
            let error = self.inner.target.scrub(error);
            tracing::warn!(target_db = %self.inner.target, dedicated = self.dedicated, %error,
                "redis connection lost; the next command reconnects");
        }
    }

    /// Runs `send` on the connection if the client is open, counting it as in flight, and
    /// failing it if the stop gives up on it.
    pub(super) async fn request<T, F, Fut>(&self, send: F) -> RedisResult<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let (_in_flight, cut) = self.inner.admit()?;
        let (generation, connection) = tokio::select! {
            biased;
            () = cut.cancelled() => return Err(self.inner.cut_off()),
            connection = self.connection() => connection?,
        };
        let result = tokio::select! {
            biased;
            // Not a broken connection: nothing to forget, nothing to log.
            () = cut.cancelled() => return Err(self.inner.cut_off()),
            result = send(connection) => result,
        };
        if let Err(error) = &result {
            if error.is_unrecoverable_error() {
                self.forget(generation, error);
            }
        }
        result
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> redis::RedisFuture<'a, Value> {
        Box::pin(self.link.request(move |mut connection| async move {
            connection.send_packed_command(cmd).await
        }))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        Box::pin(self.link.request(move |mut connection| async move {
            connection
                .send_packed_commands(pipeline, offset, count)
                .await
        }))
    }

    fn get_db(&self) -> i64 {
        self.link
            .inner
            .client
            .get_connection_info()
            .redis_settings()
            .db()
    }
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let connected = lock(&self.link.current)
            .connection
            .as_ref()
            .is_some_and(|c| matches!(c.peek(), Some(Ok(_))));
        f.debug_struct("RedisConnection")
            .field("target", &self.link.inner.target)
            .field("dedicated", &self.link.dedicated)
            .field("connected", &connected)
            .finish()
    }
}
