//! `DrillError`: why a drill could not run to a summary.

use std::net::SocketAddr;
use std::process::ExitStatus;
use std::time::Duration;

/// Why a drill could not run to a [`Summary`](crate::Summary).
///
/// A service that drops requests, exits non-zero or overruns the budget is not an error: the
/// drill ran, and its summary says it failed. These are the cases where there is nothing to
/// count: a bad configuration, a service that never started or never became ready.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DrillError {
    /// The URL is not `http://IP:PORT` (host names are not resolved).
    #[error("the url {url:?} is not http://IP:PORT")]
    BadUrl {
        /// The URL as given.
        url: String,
    },
    /// A path to request is not an origin-form path such as `/work?ms=20`.
    #[error("the {what} {path:?} is not a request path starting with '/'")]
    BadPath {
        /// Which path: `path`, `SSE path` or `readiness path`.
        what: &'static str,
        /// The path as given.
        path: String,
    },
    /// The body to POST is not JSON.
    #[error("the body to POST is not JSON: {source}")]
    BadBody {
        /// Why it does not parse.
        #[source]
        source: serde_json::Error,
    },
    /// The CA certificate for an `https://` service could not be used.
    #[error("the CA certificate {} cannot be used: {reason}", path.display())]
    BadTls {
        /// The PEM file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// An `https://` service with no CA certificate to check it against.
    #[error(
        "the url {url:?} is https: give the CA certificate that signed the service's (ca_cert)"
    )]
    NoCaCert {
        /// The URL as given.
        url: String,
    },
    /// The service command could not be started.
    #[error("cannot start {program}")]
    Start {
        /// The program of the command.
        program: String,
        /// Why the spawn failed.
        #[source]
        source: std::io::Error,
    },
    /// The service command exited before its readiness path answered 2xx.
    #[error("{program} exited before it was ready ({status})")]
    ExitedBeforeReady {
        /// The program of the command.
        program: String,
        /// How it exited.
        status: ExitStatus,
    },
    /// The service command exited on its own during the load, before the signal: there was
    /// no shutdown to drill.
    #[error("{program} exited before the signal ({status})")]
    ExitedBeforeSignal {
        /// The program of the command.
        program: String,
        /// How it exited.
        status: ExitStatus,
    },
    /// The readiness path did not answer 2xx in time.
    #[error("the service at {addr} was not ready at {path} within {within:?}")]
    NotReady {
        /// Where the drill asked.
        addr: SocketAddr,
        /// The readiness path.
        path: String,
        /// How long the drill waited.
        within: Duration,
    },
    /// SIGTERM could not be sent to the service command.
    #[error("cannot signal {program}")]
    Signal {
        /// The program of the command.
        program: String,
        /// Why the signal failed.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for the service command to exit failed.
    #[error("cannot wait for {program} to exit")]
    Wait {
        /// The program of the command.
        program: String,
        /// Why the wait failed.
        #[source]
        source: std::io::Error,
    },
}
