//! `RedisClient`: a shared Redis connection as a component, with dedicated connections for
//! blocking commands, none of which outlives the stop.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use lifecycle_core::{async_trait, BoxError, CancellationToken, Component, Context, Health};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisResult, Value};
use tokio::time::Instant;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;

use crate::deadline::{give_up_at, retry_until};
use crate::error::{redact, DbError};

/// How long the health ping may take.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// A Redis client as a lifecycle component: one shared, multiplexed connection for ordinary
/// commands, and [dedicated connections](Self::dedicated) for blocking ones.
///
/// Cloning is cheap and clones share everything: register one with the lifecycle and keep
/// others where code opens dedicated connections.
///
/// The component exists before anything runs, so its [`connection`](Self::connection) can be
/// cloned into router state while `main` is being wired; commands on it fail until the start
/// and again after the stop. It implements redis-rs's
/// [`ConnectionLike`](redis::aio::ConnectionLike), so [`redis::AsyncCommands`] and
/// [`redis::Cmd::query_async`] work on it.
///
/// - **Start** connects, retrying with backoff until shortly before the start timeout, and
///   fails with [`DbError::Unreachable`] naming the server (without credentials) and the last
///   connection error.
/// - **While running**, a command that finds the connection broken fails, and the next one
///   reconnects (once, under the connect timeout, shared by every command that waits for it).
///   Reconnection happens only on demand, in the caller's task: there is no background
///   reconnect loop to outlive anything. Every command carries the response timeout, so a
///   black-holed server cannot hang one.
/// - **Health** is a `PING` answered within 1 s.
/// - **Stop** runs after every component that depends on the client has stopped. New commands
///   fail at once; commands already sent get their reply (or error); if some are still waiting
///   shortly before the stop timeout, they are failed with an error and the stop reports
///   [`DbError::CommandsCutOff`]. Then every connection, dedicated ones included, is closed, so
///   no connection or task of the client survives the stop, whether or not Redis is still up.
///
/// # Examples
///
/// ```
/// use lifecycle_core::{Lifecycle, Registration};
/// use lifecycle_db::RedisClient;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisClient::new("redis://127.0.0.1:6379/")?.client_name("orders-api");
/// let connection = redis.connection(); // for the router's state, before anything runs
/// let lifecycle = Lifecycle::builder()
///     .register(Registration::new("redis", redis))
///     .build()?;
/// # drop((connection, lifecycle));
/// # Ok(())
/// # }
/// ```
///
/// Once running, a handler uses the connection like any redis-rs connection:
///
/// ```no_run
/// # async fn handler(mut connection: lifecycle_db::RedisConnection) -> redis::RedisResult<()> {
/// use redis::AsyncCommands;
///
/// let visits: i64 = connection.incr("visits", 1).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisClient {
    inner: Arc<ClientInner>,
    shared: RedisConnection,
}

/// What the client and all its connections share.
struct ClientInner {
    client: redis::Client,
    target: String,
    settings: Mutex<Settings>,
    run: Mutex<Run>,
    /// Every connection of the client, the shared one first, so the stop can close them all.
    links: Mutex<Vec<Weak<Link>>>,
}

#[derive(Clone)]
struct Settings {
    name: Option<String>,
    connect_timeout: Duration,
    response_timeout: Option<Duration>,
}

/// One run of the client, from its start to its stop.
struct Run {
    state: State,
    /// The commands in flight, each holding a token until it has its reply or error.
    commands: TaskTracker,
    /// Cancelled when the stop gives up waiting: commands still in flight fail at once.
    cut: CancellationToken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    NotStarted,
    Open,
    Closed,
}

impl RedisClient {
    /// A client for `url` (`redis://[user:password@]host[:port][/db]`, or `redis+unix://`),
    /// with a 1 s connect timeout and a 1 s response timeout. Nothing connects before the
    /// start.
    ///
    /// # Errors
    ///
    /// [`DbError::InvalidUrl`] when redis-rs cannot parse the URL.
    pub fn new(url: &str) -> Result<Self, DbError> {
        let target = redact_redis(url);
        let client = redis::Client::open(url).map_err(|e| DbError::InvalidUrl {
            target: target.clone(),
            message: e.to_string(),
        })?;
        let inner = Arc::new(ClientInner {
            client,
            target,
            settings: Mutex::new(Settings {
                name: None,
                connect_timeout: Duration::from_secs(1),
                response_timeout: Some(Duration::from_secs(1)),
            }),
            run: Mutex::new(Run {
                state: State::NotStarted,
                commands: TaskTracker::new(),
                cut: CancellationToken::new(),
            }),
            links: Mutex::new(Vec::new()),
        });
        let shared = RedisConnection {
            link: Link::new(&inner, false),
        };
        Ok(RedisClient { inner, shared })
    }

    /// The name every connection of this client gives itself with `CLIENT SETNAME` (no spaces),
    /// so `CLIENT LIST` shows which service holds which connection. None by default.
    #[must_use]
    pub fn client_name(self, name: impl Into<String>) -> Self {
        lock(&self.inner.settings).name = Some(name.into());
        self
    }

    /// How long one connection attempt may take, handshake included (default 1 s).
    #[must_use]
    pub fn connect_timeout(self, timeout: Duration) -> Self {
        lock(&self.inner.settings).connect_timeout = timeout;
        self
    }

    /// How long a command on the shared connection waits for its reply before failing
    /// (default 1 s; `None` waits for ever). Dedicated connections have none: their blocking
    /// commands carry their own timeout.
    #[must_use]
    pub fn response_timeout(self, timeout: Option<Duration>) -> Self {
        lock(&self.inner.settings).response_timeout = timeout;
        self
    }

    /// The shared connection: clone it into whatever needs Redis. Clones share one multiplexed
    /// connection, so a slow command does not hold up the others, but a blocking one would:
    /// send `BLPOP`, `BLMOVE`, `XREAD BLOCK` and the like on a [dedicated](Self::dedicated)
    /// connection instead.
    pub fn connection(&self) -> RedisConnection {
        self.shared.clone()
    }

    /// Opens a connection of its own, for blocking commands (`BLMOVE`, `BLPOP`, `XREAD
    /// BLOCK`), which would otherwise stall every command queued behind them on the shared
    /// connection.
    ///
    /// It has no response timeout: give each blocking command a server-side timeout of a
    /// second or two and check your stop token between calls, so that your worker's stop is
    /// never longer than that. Like the shared connection, it reconnects on demand, fails
    /// commands once the client has stopped, and is closed by the client's stop if still open.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use lifecycle_core::Worker;
    /// use lifecycle_db::RedisClient;
    /// use redis::{AsyncCommands, Direction};
    ///
    /// # fn wire(redis: &RedisClient) {
    /// let client = redis.clone(); // the component itself is registered once
    /// let mover = Worker::new(move |ctx| {
    ///     let client = client.clone();
    ///     async move {
    ///         let mut queue = client.dedicated().await?;
    ///         while !ctx.token().is_cancelled() {
    ///             let job: Option<String> = queue
    ///                 .blmove("jobs", "jobs:working", Direction::Left, Direction::Right, 1.0)
    ///                 .await?;
    ///             // Handle the job, then LREM it from jobs:working.
    /// #           drop(job);
    ///         }
    ///         Ok::<_, redis::RedisError>(())
    ///     }
    /// });
    /// # drop(mover);
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The connection error, or a client error before the start or after the stop.
    pub async fn dedicated(&self) -> RedisResult<RedisConnection> {
        let link = Link::new(&self.inner, true);
        // A request that sends nothing: it connects, under the same rules as a command.
        link.request(|_connection| async { Ok(()) }).await?;
        Ok(RedisConnection { link })
    }

    /// Connects once, retrying with backoff, to prove the server is there; the connection is
    /// kept as the shared one.
    async fn reach(&self, give_up: Instant) -> Result<(), DbError> {
        retry_until(&self.inner.target, give_up, || async {
            self.shared.link.connection().await.map(drop)
        })
        .await
    }
}

#[async_trait]
impl Component for RedisClient {
    async fn start(&self, ctx: &Context) -> Result<(), BoxError> {
        if let Err(error) = self.reach(give_up_at(ctx, Duration::from_secs(30))).await {
            self.inner.drop_connections();
            return Err(error.into());
        }
        self.inner.open();
        tracing::info!(component = ctx.name(), target_db = %self.inner.target, "redis reachable");
        Ok(())
    }

    async fn stop(&self, ctx: &Context) -> Result<(), BoxError> {
        let give_up = give_up_at(ctx, Duration::from_secs(5));
        let deadline = ctx
            .deadline()
            .unwrap_or(give_up + Duration::from_millis(100));
        let pending = self.inner.close(give_up, deadline).await;
        if pending > 0 {
            tracing::warn!(
                component = ctx.name(),
                pending,
                "redis commands cut off at stop"
            );
            return Err(DbError::CommandsCutOff {
                target: self.inner.target.clone(),
                pending,
            }
            .into());
        }
        Ok(())
    }

    async fn health(&self) -> Health {
        let (mut connection, ping) = (self.connection(), redis::cmd("PING"));
        let ping = ping.query_async::<String>(&mut connection);
        match tokio::time::timeout(PING_TIMEOUT, ping).await {
            Ok(Ok(_)) => Health::Healthy,
            Ok(Err(error)) => Health::unhealthy(format!("{}: {error}", self.inner.target)),
            Err(_) => Health::unhealthy(format!("{}: ping timed out", self.inner.target)),
        }
    }

    fn describe(&self) -> Option<String> {
        let (state, in_flight) = {
            let run = lock(&self.inner.run);
            (run.state, run.commands.len())
        };
        let state = match state {
            State::NotStarted => "not started",
            State::Open => "open",
            State::Closed => "closed",
        };
        let dedicated = self
            .inner
            .links()
            .iter()
            .filter(|link| link.dedicated && lock(&link.slot).connection.is_some())
            .count();
        Some(format!(
            "{state}, {in_flight} commands in flight, {dedicated} dedicated connections open"
        ))
    }
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let run = lock(&self.inner.run);
        f.debug_struct("RedisClient")
            .field("target", &self.inner.target)
            .field("state", &run.state)
            .field("in_flight", &run.commands.len())
            .finish()
    }
}

impl ClientInner {
    /// Lets commands through, for a new run.
    fn open(&self) {
        let mut run = lock(&self.run);
        *run = Run {
            state: State::Open,
            commands: TaskTracker::new(),
            cut: CancellationToken::new(),
        };
    }

    /// Lets a command through while the client is open: the token counts it as in flight until
    /// it is dropped, and the cancellation token says when to give up on it.
    fn admit(&self) -> RedisResult<(TaskTrackerToken, CancellationToken)> {
        let run = lock(&self.run);
        match run.state {
            State::Open => Ok((run.commands.token(), run.cut.clone())),
            State::NotStarted => Err(RedisError::from((
                ErrorKind::Client,
                "the Redis client has not started",
                self.target.clone(),
            ))),
            State::Closed => Err(RedisError::from((
                ErrorKind::Client,
                "the Redis client is closed",
                self.target.clone(),
            ))),
        }
    }

    /// The error of a command cut off by the stop.
    fn cut_off(&self) -> RedisError {
        std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            format!("{}: the client stopped before the reply came", self.target),
        )
        .into()
    }

    /// Refuses new commands, waits for those in flight until `give_up`, fails those left, and
    /// closes every connection. Returns how many commands were cut off.
    async fn close(&self, give_up: Instant, deadline: Instant) -> usize {
        let (commands, cut) = {
            let mut run = lock(&self.run);
            run.state = State::Closed;
            run.commands.close();
            (run.commands.clone(), run.cut.clone())
        };
        let pending = match tokio::time::timeout_at(give_up, commands.wait()).await {
            Ok(()) => 0,
            Err(_) => {
                let pending = commands.len();
                cut.cancel();
                // The cut commands fail as soon as their tasks next run; give them part of the
                // time left, so that their connections are gone when the stop returns.
                let grace = deadline.saturating_duration_since(Instant::now()) / 2;
                let _ = tokio::time::timeout(grace, commands.wait()).await;
                pending
            }
        };
        self.drop_connections();
        pending
    }

    /// Drops every connection of the client. A connection's driver task ends with its last
    /// handle, so no task is left either.
    fn drop_connections(&self) {
        for link in self.links() {
            let connection = lock(&link.slot).connection.take();
            drop(connection);
        }
    }

    /// The client's connections still in use.
    fn links(&self) -> Vec<Arc<Link>> {
        let mut links = lock(&self.links);
        links.retain(|link| link.strong_count() > 0);
        links.iter().filter_map(Weak::upgrade).collect()
    }

    /// One connection attempt, handshake and `CLIENT SETNAME` included, under the connect
    /// timeout. Nothing runs unless the returned future is polled.
    fn connect(
        &self,
        dedicated: bool,
    ) -> impl Future<Output = RedisResult<MultiplexedConnection>> + Send + 'static {
        let client = self.client.clone();
        let settings = lock(&self.settings).clone();
        async move {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(settings.connect_timeout))
                .set_response_timeout(if dedicated {
                    None
                } else {
                    settings.response_timeout
                });
            let attempt = async {
                let mut connection = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                if let Some(name) = &settings.name {
                    redis::cmd("CLIENT")
                        .arg("SETNAME")
                        .arg(name)
                        .exec_async(&mut connection)
                        .await?;
                }
                Ok(connection)
            };
            match tokio::time::timeout(settings.connect_timeout, attempt).await {
                Ok(result) => result,
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connecting timed out",
                )
                .into()),
            }
        }
    }
}

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
    link: Arc<Link>,
}

/// One connection of a client, which reconnects on demand.
struct Link {
    inner: Arc<ClientInner>,
    dedicated: bool,
    slot: Mutex<Slot>,
}

/// The connection, or the attempt to make it, shared by every command that waits for it.
#[derive(Default)]
struct Slot {
    /// Counts connections, so a command that saw one fail forgets that one and not a newer one.
    generation: u64,
    connection: Option<SharedConnect>,
}

type SharedConnect = Shared<BoxFuture<'static, RedisResult<MultiplexedConnection>>>;

impl Link {
    fn new(inner: &Arc<ClientInner>, dedicated: bool) -> Arc<Link> {
        let link = Arc::new(Link {
            inner: inner.clone(),
            dedicated,
            slot: Mutex::default(),
        });
        let mut links = lock(&inner.links);
        links.retain(|link| link.strong_count() > 0);
        links.push(Arc::downgrade(&link));
        link
    }

    /// The connection, connecting if there is none or the last attempt failed.
    async fn connection(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        let (generation, connecting) = {
            let mut slot = lock(&self.slot);
            let usable = slot
                .connection
                .as_ref()
                .is_some_and(|c| !matches!(c.peek(), Some(Err(_))));
            if !usable {
                slot.generation += 1;
                slot.connection = Some(self.inner.connect(self.dedicated).boxed().shared());
            }
            let connecting = slot.connection.clone().expect("set above");
            (slot.generation, connecting)
        };
        Ok((generation, connecting.await?))
    }

    /// Forgets a broken connection, so that the next command makes a new one.
    fn forget(&self, generation: u64, error: &RedisError) {
        let forgotten = {
            let mut slot = lock(&self.slot);
            if slot.generation == generation {
                slot.connection.take()
            } else {
                None
            }
        };
        if forgotten.is_some() {
            tracing::warn!(target_db = %self.inner.target, dedicated = self.dedicated, %error,
                "redis connection lost; the next command reconnects");
        }
    }

    /// Runs `send` on the connection if the client is open, counting it as in flight, and
    /// failing it if the stop gives up on it.
    async fn request<T, F, Fut>(&self, send: F) -> RedisResult<T>
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
        let connected = lock(&self.link.slot)
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

/// `url` without credentials: the user and password before the host, and the `pass` query
/// parameter through which `redis+unix` URLs carry a password.
pub(crate) fn redact_redis(url: &str) -> String {
    let url = redact(url);
    let Some((base, query)) = url.split_once('?') else {
        return url;
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| pair.split('=').next() != Some("pass"))
        .collect();
    if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::redact_redis;

    #[test]
    fn redacts_passwords_in_the_authority_and_the_query() {
        assert_eq!(
            redact_redis("redis://app:secret@cache:6379/2"),
            "redis://cache:6379/2"
        );
        assert_eq!(
            redact_redis("redis+unix:///run/redis.sock?db=1&pass=secret"),
            "redis+unix:///run/redis.sock?db=1"
        );
        assert_eq!(
            redact_redis("redis+unix:///run/redis.sock?pass=secret"),
            "redis+unix:///run/redis.sock"
        );
        assert_eq!(redact_redis("redis://cache/"), "redis://cache/");
    }

    #[tokio::test]
    async fn commands_fail_before_the_start_without_connecting() {
        use redis::AsyncCommands;

        let client = super::RedisClient::new("redis://127.0.0.1:1/").unwrap();
        let mut connection = client.connection();
        let error = connection.get::<_, Option<String>>("k").await.unwrap_err();
        assert_eq!(error.kind(), redis::ErrorKind::Client);
        assert!(error.to_string().contains("not started"), "{error}");
    }
}
