//! `Upgrade`: the component that runs in-place upgrades, and the sockets it hands over.

use std::ffi::{c_int, OsString};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sd_notify::NotifyState;

use super::error::UpgradeError;
use super::pid_file;
use super::successor::Successor;
use crate::component::Component;
use crate::context::Context;
use crate::error::BoxError;
use crate::handle::LifecycleHandle;
use crate::lifecycle_state::UpgradeRequest;
use crate::report::UpgradeReport;
use crate::sockets::{self, sockets};
use crate::state::{Phase, TriggerKind};

/// In-place upgrades: a component that, on the upgrade signal (SIGHUP by default) or
/// [`LifecycleHandle::upgrade`], starts the program again, hands it the listening sockets taken
/// through [`listener`](Self::listener), and shuts this process down once the new one is ready.
/// See [the module docs](crate::upgrade) for the steps and what happens on failure.
///
/// Make it first thing in `main` (it records the program's path, which an upgrade starts
/// again), take the servers' sockets from it, and register it like any component.
///
/// # Examples
///
/// ```no_run
/// use lifecycle_core::{Lifecycle, Registration, Report, Upgrade, Worker};
/// use std::sync::Arc;
///
/// #[tokio::main]
/// async fn main() -> Report {
///     let upgrade = Upgrade::new().expect("the program's path").pid_file("/run/svc.pid");
///     // Inherited from systemd or from the process this one replaces, or bound now. With
///     // lifecycle-http: `HttpServer::from_listener(listener, router)`.
///     let listener = Arc::new(
///         upgrade
///             .listener("http", "127.0.0.1:8080".parse().unwrap())
///             .expect("a listener"),
///     );
///     let server = Worker::new(move |ctx| {
///         let _listener = listener.clone();
///         async move {
///             // Serve on the listener until the token is cancelled.
///             ctx.token().cancelled().await;
///             Ok::<_, std::io::Error>(())
///         }
///     });
///     Lifecycle::builder()
///         .register(Registration::new("upgrade", upgrade))
///         .register(Registration::new("http", server))
///         .build()
///         .expect("a valid configuration")
///         .run()
///         .await
/// }
/// ```
pub struct Upgrade {
    signal: c_int,
    ready_timeout: Duration,
    pid_file: Option<PathBuf>,
    program: PathBuf,
    args: Vec<OsString>,
    /// Duplicates of the listeners handed to the servers, for the hand-off; closed at the
    /// shutdown, or the kernel would go on completing handshakes on them that nobody accepts.
    listeners: Arc<Mutex<Vec<HandedOn>>>,
    /// The channel to the old process, when this one was started by an upgrade.
    channel: Mutex<Option<UnixStream>>,
}

impl Upgrade {
    /// Upgrades on SIGHUP, with a 30 s ready timeout and no PID file. Records the program's path
    /// now: the path it was started by when that names a file (`./svc`, `/usr/bin/svc`), else
    /// the current executable.
    ///
    /// # Errors
    ///
    /// [`UpgradeError::Program`] when the path cannot be found.
    pub fn new() -> Result<Self, UpgradeError> {
        let mut args = std::env::args_os();
        let arg0 = args.next().map(PathBuf::from);
        let program = match arg0 {
            Some(path) if path.components().count() > 1 => std::path::absolute(path),
            _ => std::env::current_exe(),
        }
        .map_err(UpgradeError::Program)?;
        let channel = sockets().take_channel().unwrap_or_else(|error| {
            tracing::warn!(%error, "the channel to the old process is unusable");
            None
        });
        Ok(Upgrade {
            signal: signal_hook::consts::SIGHUP,
            ready_timeout: Duration::from_secs(30),
            pid_file: None,
            program,
            args: args.collect(),
            listeners: Arc::default(),
            channel: Mutex::new(channel),
        })
    }

    /// The signal that starts an upgrade (default SIGHUP), e.g. `signal_hook::consts::SIGUSR2`.
    #[must_use]
    pub fn signal(mut self, signal: c_int) -> Self {
        self.signal = signal;
        self
    }

    /// How long a new process has to become ready before it is killed (default 30 s).
    #[must_use]
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Keeps the serving process's PID in `path`: written once the first process is ready; at
    /// an upgrade, rewritten by the old process with the new one's PID only when it accepts the
    /// hand-off (and written back after a failed attempt); removed after a plain shutdown once
    /// every stop has ended. Each write goes through a temporary file of an unpredictable name.
    #[must_use]
    pub fn pid_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.pid_file = Some(path.into());
        self
    }

    /// The path an upgrade starts again.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Whether this process was started by an upgrade (and has not yet taken over).
    pub fn is_successor(&self) -> bool {
        self.channel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// The listening socket named `name`: inherited (from an upgrade, or from systemd socket
    /// activation, where a socket without that name is taken in order), or else bound to `addr`.
    /// Either way it is handed to the next process at an upgrade, under `name`.
    ///
    /// # Errors
    ///
    /// [`UpgradeError::Inherited`] for an inherited socket that is not a TCP listener,
    /// [`UpgradeError::Bind`] when binding fails, and [`UpgradeError::Duplicate`] when no copy
    /// can be kept for the hand-off.
    pub fn listener(&self, name: &str, addr: SocketAddr) -> Result<TcpListener, UpgradeError> {
        let inherited = sockets()
            .take_tcp(name)
            .map_err(|source| UpgradeError::Inherited {
                name: name.to_owned(),
                source,
            })?;
        let listener = match inherited {
            Some(listener) => {
                tracing::info!(name, "listening socket inherited");
                listener
            }
            None => TcpListener::bind(addr).map_err(|source| UpgradeError::Bind {
                name: name.to_owned(),
                addr,
                source,
            })?,
        };
        self.hand_on(name, listener.as_fd())?;
        Ok(listener)
    }

    /// The Unix domain listening socket named `name`: inherited, or else bound at `path` (a
    /// socket file left there by a process that died is replaced; one a live server answers on
    /// fails). Handed to the next process at an upgrade, which serves on the same path.
    ///
    /// # Errors
    ///
    /// [`UpgradeError::Inherited`] for an inherited socket that is not a Unix stream listener,
    /// [`UpgradeError::BindUnix`] when binding fails, and [`UpgradeError::Duplicate`] when no
    /// copy can be kept for the hand-off.
    pub fn unix_listener(
        &self,
        name: &str,
        path: impl AsRef<Path>,
    ) -> Result<UnixListener, UpgradeError> {
        let path = path.as_ref();
        let inherited = sockets()
            .take_unix(name)
            .map_err(|source| UpgradeError::Inherited {
                name: name.to_owned(),
                source,
            })?;
        let listener = match inherited {
            Some(listener) => {
                tracing::info!(name, "listening socket inherited");
                listener
            }
            None => sockets::bind_unix(path).map_err(|source| UpgradeError::BindUnix {
                name: name.to_owned(),
                path: path.to_owned(),
                source,
            })?,
        };
        self.hand_on(name, listener.as_fd())?;
        Ok(listener)
    }

    /// Keeps a copy of `socket` for the hand-off, and notes it as one an upgrade hands on.
    fn hand_on(&self, name: &str, socket: BorrowedFd<'_>) -> Result<(), UpgradeError> {
        let duplicate = |source| UpgradeError::Duplicate {
            name: name.to_owned(),
            source,
        };
        let manager_held = sockets().hand_on(socket).map_err(duplicate)?;
        let socket = socket.try_clone_to_owned().map_err(duplicate)?;
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(HandedOn {
                name: name.to_owned(),
                socket,
                manager_held,
            });
        Ok(())
    }

    /// Runs upgrades, one at a time, until the shutdown; then closes the copies of the sockets.
    async fn supervise(
        attempts: Arc<Attempts>,
        lifecycle: LifecycleHandle,
        mut requests: tokio::sync::mpsc::UnboundedReceiver<UpgradeRequest>,
    ) {
        let shutdown = lifecycle.shutdown_token();
        loop {
            let waiting = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(waiting) = requests.recv() => waiting,
            };
            tracing::info!("upgrade requested");
            let attempt = attempts.run(&shutdown, &mut requests).await;
            let (succeeded, outcome) = (attempt.succeeded, attempt.clone());
            if succeeded {
                attempts.handed_over(&lifecycle, attempt);
            } else {
                attempts.failed(&lifecycle, attempt);
            }
            // Once the PID file and systemd say what happened: whoever asked may read them.
            if let Some(waiting) = waiting {
                let _ = waiting.send(outcome);
            }
            if succeeded {
                break;
            }
        }
        lifecycle.state.upgrades_taken_on(None);
        attempts
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// A listening socket an upgrade hands to the new process.
#[derive(Debug)]
pub(crate) struct HandedOn {
    pub(crate) name: String,
    /// This process's copy, kept for the hand-off.
    pub(crate) socket: OwnedFd,
    /// Whether a socket manager (systemd) holds it too, which the new process is told.
    pub(crate) manager_held: bool,
}

/// What the supervising task needs of the [`Upgrade`].
struct Attempts {
    program: PathBuf,
    args: Vec<OsString>,
    ready_timeout: Duration,
    pid_file: Option<PathBuf>,
    listeners: Arc<Mutex<Vec<HandedOn>>>,
}

impl Attempts {
    /// One attempt, or its refusal.
    async fn run(
        &self,
        shutdown: &tokio_util::sync::CancellationToken,
        requests: &mut tokio::sync::mpsc::UnboundedReceiver<UpgradeRequest>,
    ) -> UpgradeReport {
        if std::process::id() == 1 {
            // The kernel ends every process of a PID namespace when its first one exits: the
            // new process would die with this one.
            return UpgradeReport {
                succeeded: false,
                refused: true,
                pid: None,
                exit_code: None,
                detail: "refused: this process is PID 1 of its PID namespace (a container), \
                         whose exit would end the new process too"
                    .into(),
            };
        }
        // `Type=notify-reload`: the reload is under way until READY=1.
        notify_systemd(&[
            NotifyState::Reloading,
            monotonic_usec(),
            NotifyState::Status("upgrading in place"),
        ]);
        let copies: Vec<HandedOn> = self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|l| {
                Some(HandedOn {
                    name: l.name.clone(),
                    socket: l.socket.try_clone().ok()?,
                    manager_held: l.manager_held,
                })
            })
            .collect();
        sockets::set_partner(true);
        Successor {
            program: &self.program,
            args: &self.args,
            listeners: &copies,
            ready_timeout: self.ready_timeout,
        }
        .attempt(shutdown, requests)
        .await
    }

    /// The new process is ready: it serves from now on. The PID file names it, systemd follows
    /// it, and this process stops accepting on the sockets at once and shuts down.
    fn handed_over(&self, lifecycle: &LifecycleHandle, attempt: UpgradeReport) {
        let pid = attempt.pid.unwrap_or_default();
        if let Some(path) = &self.pid_file {
            if let Err(error) = pid_file::write(path, pid) {
                tracing::error!(path = %path.display(), %error, "writing the PID file failed");
            }
        }
        lifecycle.state.hand_over();
        // MAINPID= first, so systemd never sees a main process that is not ready.
        notify_systemd(&[
            NotifyState::MainPid(pid),
            NotifyState::Ready,
            NotifyState::Status("ready (upgraded in place)"),
        ]);
        tracing::info!(pid, "upgrade: the new process is ready; shutting down");
        lifecycle.state.upgrade_ended(attempt);
        lifecycle
            .state
            .trigger(TriggerKind::Upgrade, format!("handed over to pid {pid}"));
    }

    /// The attempt failed or was refused: this process goes on serving, alone on its sockets,
    /// and names itself in the PID file again (a new process of an older version may have
    /// written its own).
    fn failed(&self, lifecycle: &LifecycleHandle, attempt: UpgradeReport) {
        sockets::set_partner(false);
        let me = std::process::id();
        if let Some(path) = &self.pid_file {
            if pid_file::read(path) != Some(me) {
                if let Err(error) = pid_file::write(path, me) {
                    tracing::error!(path = %path.display(), %error, "restoring the PID file failed");
                }
            }
        }
        let status = format!("ready (upgrade failed: {})", attempt.detail);
        notify_systemd(&[NotifyState::Ready, NotifyState::Status(&status)]);
        if attempt.refused {
            tracing::warn!(detail = %attempt.detail, "upgrade refused; still serving");
        } else {
            tracing::error!(pid = attempt.pid, exit_code = attempt.exit_code, detail = %attempt.detail, "upgrade failed; still serving");
        }
        lifecycle.state.upgrade_ended(attempt);
    }
}

/// Tells systemd, when it asked for notifications.
fn notify_systemd(states: &[NotifyState<'_>]) {
    if crate::systemd::wanted() {
        if let Err(error) = sd_notify::notify(states) {
            tracing::warn!(%error, "could not notify systemd");
        }
    }
}

/// `MONOTONIC_USEC=` now, which `Type=notify-reload` needs with `RELOADING=1` to tell this
/// reload from an earlier one.
fn monotonic_usec() -> NotifyState<'static> {
    NotifyState::monotonic_usec_now().unwrap_or(NotifyState::MonotonicUsec(0))
}

/// Once the lifecycle is ready: a first process writes its PID file; a new process tells the
/// old one, which then accepts the hand-off (and writes the PID file, and tells systemd).
async fn announce(
    lifecycle: LifecycleHandle,
    pid_file: Option<PathBuf>,
    channel: Option<UnixStream>,
) {
    let mut phase = lifecycle.watch_phase();
    let Ok(now) = phase.wait_for(|p| *p != Phase::Starting).await else {
        return;
    };
    if *now != Phase::Ready {
        return;
    }
    let Some(mut channel) = channel else {
        if let Some(path) = &pid_file {
            if let Err(error) = pid_file::write(path, std::process::id()) {
                tracing::error!(path = %path.display(), %error, "writing the PID file failed");
            }
        }
        return;
    };
    match channel.write_all(b"ready\n") {
        Ok(()) => tracing::info!("ready: told the old process to hand over"),
        Err(error) => tracing::error!(%error, "telling the old process failed"),
    }
    // The old process stops accepting once it reads this.
    sockets::set_partner(false);
}

#[async_trait]
impl Component for Upgrade {
    async fn start(&self, ctx: &Context) -> Result<(), BoxError> {
        let lifecycle = ctx.lifecycle().clone();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        // The signal handler is registered before the start returns, so the signal cannot end
        // the process (SIGHUP's default) once the service is up.
        let mut signals = signal_hook::iterator::Signals::new([self.signal])?;
        let handle = signals.handle();
        let from_signal = tx.clone();
        std::thread::Builder::new()
            .name("lifecycle-upgrade".into())
            .spawn(move || {
                for _ in signals.forever() {
                    let _ = from_signal.send(None);
                }
            })?;
        lifecycle.state.upgrades_taken_on(Some(tx));
        if let Some(path) = &self.pid_file {
            pid_file::keep(path);
        }
        let attempts = Arc::new(Attempts {
            program: self.program.clone(),
            args: self.args.clone(),
            ready_timeout: self.ready_timeout,
            pid_file: self.pid_file.clone(),
            listeners: self.listeners.clone(),
        });
        let supervising = lifecycle.clone();
        ctx.spawn(async move {
            Upgrade::supervise(attempts, supervising, rx).await;
            handle.close();
        });
        let channel = self
            .channel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        ctx.spawn(announce(lifecycle, self.pid_file.clone(), channel));
        Ok(())
    }

    // No stop of its own: the supervising task ends at the shutdown (stopping a new process
    // still starting), and the PID file is removed only once every stop has ended.

    fn describe(&self) -> Option<String> {
        Some(format!("upgrades {} in place", self.program.display()))
    }
}

impl std::fmt::Debug for Upgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|l| l.name.clone())
            .collect();
        f.debug_struct("Upgrade")
            .field("program", &self.program)
            .field("signal", &self.signal)
            .field("ready_timeout", &self.ready_timeout)
            .field("pid_file", &self.pid_file)
            .field("listeners", &names)
            .field("successor", &self.is_successor())
            .finish()
    }
}
