//! `Drill`: the configuration, and the two ways to run it (a service command, an in-process
//! service).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::DrillError;
use crate::exit::ServiceExit;
use crate::load::{self, Load, Running, TlsClients};
use crate::signal;
use crate::summary::{Exited, Summary};
use crate::transport::Tls;

/// How long past the budget the drill still waits for the service: a service whose own
/// deadline is the budget needs a moment to exit after it.
const BUDGET_SLACK: Duration = Duration::from_secs(1);

/// A shutdown drill: load a service, tell it to stop, count what happened to every request.
///
/// Build it with [`Drill::new`] and the setters, then run it against a service command with
/// [`run_command`](Self::run_command) or against a service in this process with
/// [`run_in_process`](Self::run_in_process). Both wait for the readiness path to answer 2xx,
/// drive the load for [`signal_after`](Self::signal_after), tell the service to stop, wait for
/// it to stop within the [`budget`](Self::budget), and return the [`Summary`].
///
/// The load is keep-alive HTTP/1.1 clients, HTTP/2 streams on one h2c connection and one
/// server-sent-events client; each keeps its own connections, so a failed request is known
/// to be dropped (sent on an open connection) or refused (no connection: retryable).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lifecycle_drill::Drill;
///
/// let drill = Drill::new()
///     .url("http://127.0.0.1:8080")
///     .path("/work?ms=20")
///     .clients(8)
///     .no_sse()
///     .signal_after(Duration::from_secs(1))
///     .budget(Duration::from_secs(10));
/// # let _ = drill;
/// ```
#[derive(Debug, Clone)]
#[must_use = "a drill does nothing until it is run: call `run_command` or `run_in_process`"]
pub struct Drill {
    url: String,
    path: String,
    post_json: Option<String>,
    ready_path: String,
    clients: usize,
    h2_streams: usize,
    grpc_path: String,
    grpc_streams: usize,
    ca_cert: Option<PathBuf>,
    server_name: String,
    sse_path: Option<String>,
    signal_after: Duration,
    budget: Duration,
    ready_timeout: Duration,
    report_file: Option<PathBuf>,
    progress: bool,
}

impl Default for Drill {
    fn default() -> Self {
        Self::new()
    }
}

impl Drill {
    /// A drill with the defaults of the `lifecycle-drill` binary: the service at
    /// `http://127.0.0.1:8080`, `GET /work?ms=20` from 32 HTTP/1.1 clients and 8 HTTP/2
    /// streams, an SSE client on `/sse`, readiness at `/readyz` (waited for up to 60 s), the
    /// signal after 3 s of load, a budget of 25 s, no report file, no progress line.
    pub fn new() -> Self {
        Self {
            url: "http://127.0.0.1:8080".to_owned(),
            path: "/work?ms=20".to_owned(),
            post_json: None,
            ready_path: "/readyz".to_owned(),
            clients: 32,
            h2_streams: 8,
            grpc_path: "/grpc.health.v1.Health/Check".to_owned(),
            grpc_streams: 0,
            ca_cert: None,
            server_name: "localhost".to_owned(),
            sse_path: Some("/sse".to_owned()),
            signal_after: Duration::from_secs(3),
            budget: Duration::from_secs(25),
            ready_timeout: Duration::from_secs(60),
            report_file: None,
            progress: false,
        }
    }

    /// Where the service listens, as `http://IP:PORT` (host names are not resolved); checked
    /// when the drill runs.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// Where the service listens, as an address: `http://{addr}`.
    pub fn addr(self, addr: SocketAddr) -> Self {
        self.url(format!("http://{addr}"))
    }

    /// The path (and query) the load requests.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Sends the load's requests as `POST`s of this JSON body (`content-type:
    /// application/json`) instead of `GET`s, for a service whose work comes in that way, such
    /// as queueing a job or publishing an event; checked when the drill runs.
    pub fn post_json(mut self, body: impl Into<String>) -> Self {
        self.post_json = Some(body.into());
        self
    }

    /// The readiness path: waited for before the load, and watched after the signal for when
    /// it stops answering 2xx.
    pub fn ready_path(mut self, path: impl Into<String>) -> Self {
        self.ready_path = path.into();
        self
    }

    /// The number of keep-alive HTTP/1.1 clients, each with one request at a time.
    pub fn clients(mut self, clients: usize) -> Self {
        self.clients = clients;
        self
    }

    /// The number of concurrent HTTP/2 streams on one h2c connection (0 for none).
    pub fn h2_streams(mut self, streams: usize) -> Self {
        self.h2_streams = streams;
        self
    }

    /// Loads the service over gRPC too: `streams` concurrent unary calls to `path`
    /// (`/package.Service/Method`, default `/grpc.health.v1.Health/Check`), each with an empty
    /// request message, on HTTP/2 connections of up to four calls each that are opened again
    /// when the server tells them to go away, as a gRPC channel does. A call answered with a status other than OK
    /// counts as non-2xx; one lost after it was sent counts as dropped.
    pub fn grpc(mut self, path: impl Into<String>, streams: usize) -> Self {
        self.grpc_path = path.into();
        self.grpc_streams = streams;
        self
    }

    /// The CA certificate (PEM) that signed an `https://` service's certificate: every
    /// client then speaks TLS (HTTP/1.1, HTTP/2 and gRPC through ALPN).
    pub fn ca_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_cert = Some(path.into());
        self
    }

    /// The server name TLS asks for and checks the certificate against (default
    /// `localhost`).
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = name.into();
        self
    }

    /// The path of one server-sent-events request, held open through the shutdown: a stream
    /// that ends cleanly passes, one cut off is a dropped request.
    pub fn sse_path(mut self, path: impl Into<String>) -> Self {
        self.sse_path = Some(path.into());
        self
    }

    /// No server-sent-events client.
    pub fn no_sse(mut self) -> Self {
        self.sse_path = None;
        self
    }

    /// How long to load the service before telling it to stop.
    pub fn signal_after(mut self, after: Duration) -> Self {
        self.signal_after = after;
        self
    }

    /// The most the service may take from the signal to having stopped. The drill waits a
    /// second more (the service's own deadline needs a moment to exit on); past that, the
    /// summary says it overran and a service command is killed.
    pub fn budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    /// How long to wait for the readiness path to answer 2xx before giving up with
    /// [`DrillError::NotReady`].
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// The service's own report (JSON), read once it has stopped and included in the
    /// summary. A missing or unreadable file leaves the summary without it.
    pub fn report_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.report_file = Some(path.into());
        self
    }

    /// Whether to print a progress line on stderr while the drill runs.
    pub fn progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }

    /// Runs the drill against a service command: starts it as a child process, waits for the
    /// readiness path, loads it, sends SIGTERM, waits for it to exit within the budget (and
    /// kills it past it), and reads the report file.
    ///
    /// The child's standard output is discarded; its standard error is the caller's. Off
    /// Unix there is no SIGTERM, and the child is killed instead.
    ///
    /// # Errors
    ///
    /// [`DrillError::BadUrl`], [`DrillError::BadPath`] or [`DrillError::BadBody`] for the
    /// configuration,
    /// [`DrillError::Start`] when the command cannot be started,
    /// [`DrillError::ExitedBeforeReady`] or [`DrillError::NotReady`] when it never became
    /// ready, [`DrillError::ExitedBeforeSignal`] when it exited on its own during the load,
    /// and [`DrillError::Signal`] or [`DrillError::Wait`] when it cannot be signalled
    /// or waited for. The child is killed on every error.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with time and I/O enabled.
    ///
    /// # Cancellation safety
    ///
    /// Dropping the future kills the child and stops the load.
    pub async fn run_command(self, command: std::process::Command) -> Result<Summary, DrillError> {
        let load = self.load()?;
        let program = command.get_program().to_string_lossy().into_owned();
        let mut command = tokio::process::Command::from(command);
        let mut child = command
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| DrillError::Start {
                program: program.clone(),
                source,
            })?;
        tokio::select! {
            ready = self.wait_ready(&load) => ready?,
            status = child.wait() => {
                return Err(match status {
                    Ok(status) => DrillError::ExitedBeforeReady { program, status },
                    Err(source) => DrillError::Wait { program, source },
                });
            }
        }

        let running = self.start(load);
        tokio::time::sleep(self.signal_after).await;
        // A service that has already exited would pass with exit code 0 and nothing dropped
        // without ever having been asked to stop.
        match child.try_wait() {
            Ok(None) => {}
            Ok(Some(status)) => return Err(DrillError::ExitedBeforeSignal { program, status }),
            Err(source) => return Err(DrillError::Wait { program, source }),
        }
        let signal = running.signalled();
        signal::terminate(&mut child)
            .await
            .map_err(|source| DrillError::Signal {
                program: program.clone(),
                source,
            })?;
        let exited = match tokio::time::timeout(self.budget + BUDGET_SLACK, child.wait()).await {
            Ok(Ok(status)) => Exited {
                code: status.code(),
                at: Some(Instant::now()),
                overran: false,
                report: None,
            },
            Ok(Err(source)) => return Err(DrillError::Wait { program, source }),
            Err(_) => {
                let _ = child.kill().await;
                Exited {
                    code: None,
                    at: None,
                    overran: true,
                    report: None,
                }
            }
        };
        Ok(self.finish(running, signal, exited).await)
    }

    /// Runs the drill against a service in this process, listening at the drill's
    /// [`url`](Self::url) or [`addr`](Self::addr): waits for the readiness path, loads it,
    /// then calls `stop`, which asks the service to shut down (as SIGTERM would) and returns
    /// a future that resolves once it has stopped, to a [`ServiceExit`] (or `()` for exit code
    /// 0, or an `i32` exit code).
    ///
    /// With `lifecycle-core`, `stop` calls `LifecycleHandle::shutdown` and awaits the task
    /// running `Lifecycle::run`; see the [crate example](crate). The service may run on the
    /// drill's runtime or one of its own; on a multi-threaded runtime the load's timing does
    /// not wait on the service's work.
    ///
    /// If the future has not resolved within the budget (plus a second), it is dropped and
    /// the summary says the service overran; ending whatever the service still runs is then
    /// the caller's business. The report is the [`ServiceExit`]'s, or else the report file's.
    ///
    /// # Errors
    ///
    /// [`DrillError::BadUrl`], [`DrillError::BadPath`] or [`DrillError::BadBody`] for the
    /// configuration, and
    /// [`DrillError::NotReady`] when the service never became ready; `stop` is not called
    /// then.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with time and I/O enabled.
    ///
    /// # Cancellation safety
    ///
    /// Dropping the future stops the load and drops the stop future, if it was running.
    pub async fn run_in_process<F, Fut>(self, stop: F) -> Result<Summary, DrillError>
    where
        F: FnOnce() -> Fut,
        Fut: Future,
        Fut::Output: Into<ServiceExit>,
    {
        let load = self.load()?;
        self.wait_ready(&load).await?;

        let running = self.start(load);
        tokio::time::sleep(self.signal_after).await;
        let signal = running.signalled();
        let stopped = stop();
        let exited = match tokio::time::timeout(self.budget + BUDGET_SLACK, stopped).await {
            Ok(exit) => {
                let exit: ServiceExit = exit.into();
                Exited {
                    code: Some(exit.code),
                    at: Some(Instant::now()),
                    overran: false,
                    report: exit.report,
                }
            }
            Err(_) => Exited {
                code: None,
                at: None,
                overran: true,
                report: None,
            },
        };
        Ok(self.finish(running, signal, exited).await)
    }

    /// The load's shared state, from the checked configuration.
    fn load(&self) -> Result<Arc<Load>, DrillError> {
        let (addr, https) = parse_url(&self.url).ok_or_else(|| DrillError::BadUrl {
            url: self.url.clone(),
        })?;
        let tls = if https {
            let ca = self.ca_cert.as_ref().ok_or_else(|| DrillError::NoCaCert {
                url: self.url.clone(),
            })?;
            Some(TlsClients::new(Tls::new(ca, &self.server_name)?))
        } else {
            None
        };
        check_path("path", &self.path)?;
        check_path("gRPC path", &self.grpc_path)?;
        check_path("readiness path", &self.ready_path)?;
        if let Some(sse_path) = &self.sse_path {
            check_path("SSE path", sse_path)?;
        }
        let post = match &self.post_json {
            Some(body) => {
                serde_json::from_str::<serde_json::Value>(body)
                    .map_err(|source| DrillError::BadBody { source })?;
                Some(body.clone().into())
            }
            None => None,
        };
        Ok(Arc::new(Load::new(
            addr,
            self.path.clone(),
            post,
            self.ready_path.clone(),
            tls,
        )))
    }

    async fn wait_ready(&self, load: &Load) -> Result<(), DrillError> {
        if load::wait_ready(load, self.ready_timeout).await {
            Ok(())
        } else {
            Err(DrillError::NotReady {
                addr: load.addr,
                path: self.ready_path.clone(),
                within: self.ready_timeout,
            })
        }
    }

    fn start(&self, load: Arc<Load>) -> Running {
        Running::start(
            load,
            self.clients,
            self.h2_streams,
            Some((self.grpc_path.as_str(), self.grpc_streams)),
            self.sse_path.as_deref(),
            self.progress,
        )
    }

    async fn finish(&self, running: Running, signal: Instant, mut exited: Exited) -> Summary {
        if exited.report.is_none() {
            exited.report = self
                .report_file
                .as_ref()
                .and_then(|path| std::fs::read_to_string(path).ok())
                .and_then(|text| serde_json::from_str(&text).ok());
        }
        let load = running.load();
        let observed = running.finish().await;
        Summary::new(&load.counters, observed, signal, exited)
    }
}

/// The address in `http://IP:PORT[/...]` (the scheme may be left out).
/// The address, and whether the URL is `https://`.
fn parse_url(url: &str) -> Option<(SocketAddr, bool)> {
    let (rest, https) = match url.strip_prefix("https://") {
        Some(rest) => (rest, true),
        None => (url.strip_prefix("http://").unwrap_or(url), false),
    };
    Some((rest.split('/').next()?.parse().ok()?, https))
}

/// Whether `path` is an origin-form request target, so building a request from it cannot fail.
fn check_path(what: &'static str, path: &str) -> Result<(), DrillError> {
    let valid = path.starts_with('/')
        && hyper::Request::get(path)
            .body(())
            .is_ok_and(|request| request.uri().authority().is_none());
    if valid {
        Ok(())
    } else {
        Err(DrillError::BadPath {
            what,
            path: path.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_ip_and_port_with_an_optional_scheme_and_path_and_https_means_tls() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(parse_url("http://127.0.0.1:8080"), Some((addr, false)));
        assert_eq!(parse_url("http://127.0.0.1:8080/"), Some((addr, false)));
        assert_eq!(parse_url("127.0.0.1:8080"), Some((addr, false)));
        assert_eq!(
            parse_url("http://[::1]:80/x"),
            Some(("[::1]:80".parse().unwrap(), false))
        );
        assert_eq!(parse_url("https://127.0.0.1:8080"), Some((addr, true)));
        assert_eq!(parse_url("http://localhost:8080"), None);
        assert_eq!(parse_url("http://127.0.0.1"), None);
        assert_eq!(parse_url(""), None);
    }

    #[test]
    fn paths_must_be_origin_form() {
        assert!(check_path("path", "/work?ms=20").is_ok());
        assert!(check_path("path", "/").is_ok());
        for bad in ["", "work", "/a b", "http://x/y", "*"] {
            assert!(
                matches!(check_path("path", bad), Err(DrillError::BadPath { .. })),
                "{bad:?} accepted"
            );
        }
    }
}
