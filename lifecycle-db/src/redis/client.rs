//! `RedisClient`: a shared Redis connection as a component, with dedicated connections for
//! blocking commands, none of which outlives the stop.

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use lifecycle_core::{
    async_trait, retry_until, BoxError, CancellationToken, Component, Context, Health, Redacted,
};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ErrorKind, RedisError, RedisResult};
use tokio::time::Instant;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;

use super::connection::{Link, RedisConnection};
use super::lock;
use super::metrics::RedisMetrics;
use crate::error::DbError;
use crate::GIVE_UP_RESERVE;

/// How long the health ping may take.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// A Redis client as a lifecycle component: one shared, multiplexed connection for ordinary
/// commands, and [dedicated connections](Self::dedicated) for blocking ones.
///
/// Cloning is cheap and clones share the session: register one with the lifecycle and keep
/// others where code opens dedicated connections. How it connects is set by its own setters
/// ([`client_name`](Self::client_name), [`connect_timeout`](Self::connect_timeout),
/// [`response_timeout`](Self::response_timeout)), right after [`new`](Self::new) and before
/// it is cloned. The settings are plain values that each clone carries a copy of, applied to
/// the connections that clone makes: a setter changes only the value it is called on (which
/// gets a shared connection of its own with the new settings), never another clone nor a
/// connection already handed out. Settings it cannot run with are refused at its start with
/// [`DbError::InvalidSetting`].
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
/// use std::time::Duration;
///
/// use lifecycle_core::{Lifecycle, Registration};
/// use lifecycle_db::RedisClient;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisClient::new("redis://127.0.0.1:6379/")?
///     .client_name("orders-api")
///     .response_timeout(Some(Duration::from_millis(500)));
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
    /// This value's own copy: a setter on another clone does not change it.
    settings: Settings,
    /// The shared connection, made with `settings`.
    shared: RedisConnection,
}

/// How a client's connections connect: plain values, copied into each clone of the client and
/// into each connection it makes, so none changes under a connection that uses them.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) name: Option<String>,
    pub(super) connect_timeout: Duration,
    pub(super) response_timeout: Option<Duration>,
}

impl Settings {
    /// The first setting the client cannot run with, as [`DbError::InvalidSetting`]'s
    /// `(setting, reason)`.
    fn invalid(&self) -> Option<(&'static str, String)> {
        if self.connect_timeout.is_zero() {
            return Some(("connect_timeout", "must be more than zero".to_owned()));
        }
        if self
            .response_timeout
            .is_some_and(|timeout| timeout.is_zero())
        {
            return Some((
                "response_timeout",
                "must be more than zero (None waits for ever)".to_owned(),
            ));
        }
        match &self.name {
            Some(name) if name.is_empty() || name.chars().any(|c| c.is_whitespace()) => Some((
                "client_name",
                format!("must be non-empty, without spaces (CLIENT SETNAME), not {name:?}"),
            )),
            _ => None,
        }
    }
}

/// What the client and all its connections share.
pub(super) struct ClientInner {
    pub(super) client: redis::Client,
    pub(super) target: Redacted,
    session: Mutex<Session>,
    /// Every connection of the client, the shared one first, so the stop can close them all.
    pub(super) links: Mutex<Vec<Weak<Link>>>,
    /// Taken at the first start, named after the component.
    metrics: OnceLock<RedisMetrics>,
}

/// One session of the client, from its start to its stop.
struct Session {
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
    /// with no client name, a 1 s connect timeout and a 1 s response timeout. Nothing connects
    /// before the start.
    ///
    /// # Errors
    ///
    /// [`DbError::InvalidUrl`] when redis-rs cannot parse the URL.
    pub fn new(url: &str) -> Result<Self, DbError> {
        let settings = Settings {
            name: None,
            connect_timeout: Duration::from_secs(1),
            response_timeout: Some(Duration::from_secs(1)),
        };
        let target = Redacted::new(url);
        let client = redis::Client::open(url).map_err(|e| DbError::InvalidUrl {
            target: target.to_string(),
            message: target.scrub(e),
        })?;
        let inner = Arc::new(ClientInner {
            client,
            target,
            session: Mutex::new(Session {
                state: State::NotStarted,
                commands: TaskTracker::new(),
                cut: CancellationToken::new(),
            }),
            links: Mutex::new(Vec::new()),
            metrics: OnceLock::new(),
        });
        let shared = RedisConnection::new(Link::new(&inner, false, settings.clone()));
        Ok(RedisClient {
            inner,
            settings,
            shared,
        })
    }

    /// The name every connection of the client gives itself with `CLIENT SETNAME`, so `CLIENT
    /// LIST` shows which service holds which connection. None by default; an empty name or
    /// one with spaces is refused at the start ([`DbError::InvalidSetting`]).
    #[must_use]
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.settings.name = Some(name.into());
        self.with_new_shared_connection()
    }

    /// How long one connection attempt may take, handshake included (default 1 s). Zero is
    /// refused at the start ([`DbError::InvalidSetting`]).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings.connect_timeout = timeout;
        self.with_new_shared_connection()
    }

    /// How long a command on the shared connection waits for its reply before failing
    /// (default 1 s; `None` waits for ever). Dedicated connections have none: their blocking
    /// commands carry their own timeout. Zero is refused at the start
    /// ([`DbError::InvalidSetting`]).
    #[must_use]
    pub fn response_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.settings.response_timeout = timeout;
        self.with_new_shared_connection()
    }

    /// This value with a shared connection of its own, made with its settings as they are
    /// now: the one it had may be held by other clones, whose settings stay as they were.
    fn with_new_shared_connection(mut self) -> Self {
        self.shared = RedisConnection::new(Link::new(&self.inner, false, self.settings.clone()));
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
        let link = Link::new(&self.inner, true, self.settings.clone());
        // A request that sends nothing: it connects, under the same rules as a command.
        link.request(|_connection| async { Ok(()) }).await?;
        Ok(RedisConnection::new(link))
    }

    /// Connects once, retrying with backoff, to prove the server is there; the connection is
    /// kept as the shared one.
    async fn reach(&self, give_up: Instant) -> Result<(), DbError> {
        let target = &self.inner.target;
        retry_until(target, give_up, || async {
            let connected = self.shared.link().connection().await;
            connected.map(drop).map_err(|e| target.scrub(e))
        })
        .await
        .map_err(|gave_up| DbError::unreachable(target, gave_up))
    }
}

#[async_trait]
impl Component for RedisClient {
    async fn start(&self, ctx: &Context) -> Result<(), BoxError> {
        if let Some((setting, reason)) = self.settings.invalid() {
            return Err(DbError::InvalidSetting {
                component: ctx.name().to_owned(),
                setting,
                reason,
            }
            .into());
        }
        if let Err(error) = self
            .reach(ctx.give_up_at(GIVE_UP_RESERVE, Duration::from_secs(30)))
            .await
        {
            self.inner.drop_connections();
            return Err(error.into());
        }
        self.inner.open();
        self.inner
            .metrics
            .get_or_init(|| RedisMetrics::register(ctx.name()));
        tracing::info!(component = ctx.name(), target_db = %self.inner.target, "redis reachable");
        Ok(())
    }

    async fn stop(&self, ctx: &Context) -> Result<(), BoxError> {
        let give_up = ctx.give_up_at(GIVE_UP_RESERVE, Duration::from_secs(5));
        let deadline = ctx
            .deadline()
            .unwrap_or(give_up + Duration::from_millis(100));
        let pending = self.inner.close(give_up, deadline).await;
        if let Some(metrics) = self.inner.metrics.get() {
            metrics.cut_off(pending);
        }
        if pending > 0 {
            tracing::warn!(
                component = ctx.name(),
                pending,
                "redis commands cut off at stop"
            );
            return Err(DbError::CommandsCutOff {
                target: self.inner.target.to_string(),
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
            Ok(Err(error)) => Health::unhealthy(format!(
                "{}: {}",
                self.inner.target,
                self.inner.target.scrub(error)
            )),
            Err(_) => Health::unhealthy(format!("{}: ping timed out", self.inner.target)),
        }
    }

    fn describe(&self) -> Option<String> {
        let (state, in_flight) = {
            let session = lock(&self.inner.session);
            (session.state, session.commands.len())
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
            .filter(|link| link.dedicated && lock(&link.current).connection.is_some())
            .count();
        Some(format!(
            "{state}, {in_flight} commands in flight, {dedicated} dedicated connections open"
        ))
    }
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let session = lock(&self.inner.session);
        f.debug_struct("RedisClient")
            .field("target", &self.inner.target)
            .field("client_name", &self.settings.name)
            .field("state", &session.state)
            .field("in_flight", &session.commands.len())
            .finish()
    }
}

impl ClientInner {
    /// Lets commands through, for a new session.
    fn open(&self) {
        let mut session = lock(&self.session);
        *session = Session {
            state: State::Open,
            commands: TaskTracker::new(),
            cut: CancellationToken::new(),
        };
    }

    /// Lets a command through while the client is open: the token counts it as in flight until
    /// it is dropped, and the cancellation token says when to give up on it.
    pub(super) fn admit(&self) -> RedisResult<(TaskTrackerToken, CancellationToken)> {
        let session = lock(&self.session);
        match session.state {
            State::Open => Ok((session.commands.token(), session.cut.clone())),
            State::NotStarted => Err(RedisError::from((
                ErrorKind::Client,
                "the Redis client has not started",
                self.target.to_string(),
            ))),
            State::Closed => Err({
                if let Some(metrics) = self.metrics.get() {
                    metrics.refused();
                }
                RedisError::from((
                    ErrorKind::Client,
                    "the Redis client is closed",
                    self.target.to_string(),
                ))
            }),
        }
    }

    /// The error of a command cut off by the stop.
    pub(super) fn cut_off(&self) -> RedisError {
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
            let mut session = lock(&self.session);
            session.state = State::Closed;
            session.commands.close();
            (session.commands.clone(), session.cut.clone())
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
            let connection = lock(&link.current).connection.take();
            drop(connection);
        }
    }

    /// The client's connections still in use.
    fn links(&self) -> Vec<Arc<Link>> {
        let mut links = lock(&self.links);
        links.retain(|link| link.strong_count() > 0);
        links.iter().filter_map(Weak::upgrade).collect()
    }

    /// One connection attempt with `settings`, handshake and `CLIENT SETNAME` included, under
    /// the connect timeout. Nothing runs unless the returned future is polled.
    pub(super) fn connect(
        &self,
        settings: &Settings,
        dedicated: bool,
    ) -> impl Future<Output = RedisResult<MultiplexedConnection>> + Send + 'static {
        let client = self.client.clone();
        let settings = settings.clone();
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::RedisClient;

    #[test]
    fn a_setter_changes_only_the_value_it_is_called_on() {
        let first = RedisClient::new("redis://127.0.0.1:1/").unwrap();
        let handed_out = first.connection();
        let second = first
            .clone()
            .client_name("second")
            .connect_timeout(Duration::from_millis(50))
            .response_timeout(None);
        // The first client and the connection it handed out keep the defaults.
        assert_eq!(first.settings.name, None);
        assert_eq!(first.settings.connect_timeout, Duration::from_secs(1));
        assert!(Arc::ptr_eq(&first.shared.link, &handed_out.link));
        assert_eq!(handed_out.link().settings.name, None);
        // The second has a shared connection of its own, made with its settings.
        assert!(!Arc::ptr_eq(&first.shared.link, &second.shared.link));
        let connection = second.connection();
        let settings = &connection.link().settings;
        assert_eq!(settings.name.as_deref(), Some("second"));
        assert_eq!(settings.connect_timeout, Duration::from_millis(50));
        assert_eq!(settings.response_timeout, None);
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
