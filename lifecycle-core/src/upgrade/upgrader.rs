//! `Upgrade`: the component that runs in-place upgrades, and the sockets it hands over.

use std::ffi::{c_int, OsString};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::error::UpgradeError;
use super::inherited::inherited;
use super::successor::Successor;
use crate::component::Component;
use crate::context::Context;
use crate::error::BoxError;
use crate::handle::{LifecycleHandle, Phase};
use crate::report::TriggerKind;

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
    listeners: Arc<Mutex<Vec<(String, TcpListener)>>>,
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
        let channel = inherited().take_channel().unwrap_or_else(|error| {
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

    /// Writes the serving process's PID to `path` once ready (atomically); a new process
    /// rewrites it before it takes over, and a plain shutdown removes it.
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
        let inherited = inherited()
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
        let copy = listener
            .try_clone()
            .map_err(|source| UpgradeError::Duplicate {
                name: name.to_owned(),
                source,
            })?;
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name.to_owned(), copy));
        Ok(listener)
    }

    /// Runs upgrades, one at a time, until the shutdown; then closes the copies of the sockets.
    async fn supervise(
        self_: Arc<Attempts>,
        lifecycle: LifecycleHandle,
        mut requests: tokio::sync::mpsc::UnboundedReceiver<()>,
    ) {
        let shutdown = lifecycle.shutdown_token();
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(()) = requests.recv() => {}
            }
            tracing::info!("upgrade requested");
            let copies: Vec<(String, TcpListener)> = self_
                .listeners
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter_map(|(name, l)| Some((name.clone(), l.try_clone().ok()?)))
                .collect();
            let attempt = Successor {
                program: &self_.program,
                args: &self_.args,
                listeners: &copies,
                ready_timeout: self_.ready_timeout,
            }
            .attempt(&shutdown, &mut requests)
            .await;
            drop(copies);
            if attempt.succeeded {
                let pid = attempt.pid.unwrap_or_default();
                lifecycle.shared.hand_over();
                if crate::systemd::wanted() {
                    let states = [sd_notify::NotifyState::MainPid(pid)];
                    if let Err(error) = sd_notify::notify(&states) {
                        tracing::warn!(%error, "could not tell systemd the new main PID");
                    }
                }
                tracing::info!(pid, "upgrade: the new process is ready; shutting down");
                lifecycle.shared.record().upgrade_ended(attempt);
                lifecycle
                    .shared
                    .trigger(TriggerKind::Upgrade, format!("handed over to pid {pid}"));
                break;
            }
            tracing::error!(pid = attempt.pid, exit_code = attempt.exit_code, detail = %attempt.detail, "upgrade failed; still serving");
            lifecycle.shared.record().upgrade_ended(attempt);
        }
        *lifecycle
            .shared
            .upgrader
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        self_
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// What the supervising task needs of the [`Upgrade`].
struct Attempts {
    program: PathBuf,
    args: Vec<OsString>,
    ready_timeout: Duration,
    listeners: Arc<Mutex<Vec<(String, TcpListener)>>>,
}

/// Once the lifecycle is ready: writes the PID file, then tells the old process, if any.
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
    if let Some(path) = &pid_file {
        if let Err(error) = write_pid_file(path) {
            tracing::error!(path = %path.display(), %error, "writing the PID file failed");
        }
    }
    if let Some(mut channel) = channel {
        // READY=1 before the old process's MAINPID=, so systemd never sees a main process that
        // is not ready (the notifier sends it too; a second one changes nothing).
        if crate::systemd::wanted() {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        }
        match channel.write_all(b"ready\n") {
            Ok(()) => tracing::info!("ready: told the old process to hand over"),
            Err(error) => tracing::error!(%error, "telling the old process failed"),
        }
    }
}

fn write_pid_file(path: &Path) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, format!("{}\n", std::process::id()))?;
    std::fs::rename(&tmp, path)
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
                    let _ = from_signal.send(());
                }
            })?;
        *lifecycle
            .shared
            .upgrader
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(tx);
        let attempts = Arc::new(Attempts {
            program: self.program.clone(),
            args: self.args.clone(),
            ready_timeout: self.ready_timeout,
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

    async fn stop(&self, ctx: &Context) -> Result<(), BoxError> {
        // A plain shutdown removes the PID file if it still names this process; after a
        // hand-off it names the new one.
        if let Some(path) = &self.pid_file {
            let ours = std::fs::read_to_string(path)
                .is_ok_and(|s| s.trim() == std::process::id().to_string());
            if ours && !ctx.lifecycle().handed_over() {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(())
    }

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
            .map(|(name, _)| name.clone())
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
