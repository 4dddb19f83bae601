//! The signals that trigger a shutdown, delivered on a thread of their own.
//!
//! On Unix, signal-hook registers the handlers and a dedicated thread reads them, so a second
//! signal is seen even when every runtime worker is stuck in blocking code. Elsewhere, Ctrl-C
//! is read through tokio and needs a responsive runtime.

use std::io;

/// A signal that can trigger the shutdown; see
/// [`LifecycleBuilder::signals`](crate::LifecycleBuilder::signals).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Signal {
    /// SIGTERM: what Kubernetes, systemd and `docker stop` send. Unix only; ignored elsewhere.
    Terminate,
    /// SIGINT on Unix (Ctrl-C in a terminal, `kill -INT`); Ctrl-C elsewhere.
    Interrupt,
}

impl Signal {
    /// The conventional name, e.g. `"SIGTERM"`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Terminate => "SIGTERM",
            Signal::Interrupt => "SIGINT",
        }
    }
}

/// Delivers signals to a callback until dropped.
pub(crate) struct SignalListener {
    #[cfg(unix)]
    handle: signal_hook::iterator::Handle,
    #[cfg(not(unix))]
    task: tokio::task::AbortHandle,
}

#[cfg(unix)]
impl SignalListener {
    /// Registers the handlers now, so a failure shows before anything starts, and calls
    /// `on_signal` from a dedicated thread for every delivery.
    pub(crate) fn install(
        signals: &[Signal],
        mut on_signal: impl FnMut(Signal) + Send + 'static,
    ) -> io::Result<Self> {
        use signal_hook::consts::{SIGINT, SIGTERM};

        let raw = signals.iter().map(|s| match s {
            Signal::Terminate => SIGTERM,
            Signal::Interrupt => SIGINT,
        });
        let mut delivered = signal_hook::iterator::Signals::new(raw)?;
        let handle = delivered.handle();
        std::thread::Builder::new()
            .name("lifecycle-signals".into())
            .spawn(move || {
                for raw in delivered.forever() {
                    on_signal(if raw == SIGTERM {
                        Signal::Terminate
                    } else {
                        Signal::Interrupt
                    });
                }
            })?;
        Ok(SignalListener { handle })
    }
}

#[cfg(not(unix))]
impl SignalListener {
    /// Listens for Ctrl-C on the current runtime and calls `on_signal` for every press.
    pub(crate) fn install(
        signals: &[Signal],
        mut on_signal: impl FnMut(Signal) + Send + 'static,
    ) -> io::Result<Self> {
        let interrupt = signals.contains(&Signal::Interrupt);
        let task = tokio::spawn(async move {
            while interrupt && tokio::signal::ctrl_c().await.is_ok() {
                on_signal(Signal::Interrupt);
            }
        });
        Ok(SignalListener {
            task: task.abort_handle(),
        })
    }
}

impl Drop for SignalListener {
    fn drop(&mut self) {
        #[cfg(unix)]
        self.handle.close();
        #[cfg(not(unix))]
        self.task.abort();
    }
}

impl std::fmt::Debug for SignalListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalListener").finish_non_exhaustive()
    }
}
