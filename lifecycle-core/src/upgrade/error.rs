//! `UpgradeError`: what can go wrong setting up in-place upgrades.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// What can go wrong setting up in-place upgrades ([`Upgrade`](crate::Upgrade)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpgradeError {
    /// The program's own path, to start it again, could not be found.
    #[error("the program's own path cannot be found")]
    Program(#[source] io::Error),
    /// An inherited socket could not be taken as a listener of the kind asked for.
    #[error("the inherited socket for {name:?} is not a usable listener of that kind")]
    Inherited {
        /// The name asked for.
        name: String,
        /// What the check or the conversion said.
        #[source]
        source: io::Error,
    },
    /// No socket was inherited, and binding the address failed.
    #[error("binding {addr} for {name:?} failed")]
    Bind {
        /// The name asked for.
        name: String,
        /// The address.
        addr: SocketAddr,
        /// What the bind said.
        #[source]
        source: io::Error,
    },
    /// No socket was inherited, and binding the Unix socket path failed (its directory is
    /// missing, or a live server answers there).
    #[error("binding the Unix socket {} for {name:?} failed", path.display())]
    BindUnix {
        /// The name asked for.
        name: String,
        /// The socket's path.
        path: PathBuf,
        /// What the bind said.
        #[source]
        source: io::Error,
    },
    /// The listener could not be duplicated, to keep a copy for the hand-off.
    #[error("the listener for {name:?} cannot be kept for a hand-off")]
    Duplicate {
        /// The name asked for.
        name: String,
        /// What the duplication said.
        #[source]
        source: io::Error,
    },
}
