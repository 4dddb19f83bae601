//! Errors of this crate.

use std::time::Duration;

use lifecycle_core::{GaveUp, Redacted};

/// What went wrong with a database or Redis component.
///
/// Each variant names the server (its URL without credentials), so a report line says which
/// one was unreachable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The URL could not be parsed.
    #[error("invalid database URL {target}: {message}")]
    InvalidUrl {
        /// The URL, without credentials.
        target: String,
        /// What is wrong with it.
        message: String,
    },

    /// A setting of a component is out of its range (a zero lease, a zero maximum run time):
    /// refused when the component starts, before it takes any work.
    #[error("invalid setting of {component}: {setting} {reason}")]
    InvalidSetting {
        /// The component's name.
        component: String,
        /// The setting, as its builder method is named (`"lease"`).
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// The server could not be reached within the start timeout.
    #[error("cannot reach {target} after {attempts} attempts in {waited:?}: {last_error}")]
    Unreachable {
        /// The server, without credentials.
        target: String,
        /// How many connection attempts were made.
        attempts: u32,
        /// How long the attempts took.
        waited: Duration,
        /// The error of the last attempt, or that it timed out.
        last_error: String,
    },

    /// Closing did not finish before the stop timeout; the shutdown went on without it.
    #[error("closing {target} timed out with {checked_out} connections still checked out")]
    CloseTimedOut {
        /// The server, without credentials.
        target: String,
        /// Connections held by code that never returned them (a leak, a stuck query).
        checked_out: u32,
    },

    /// The pool's stop turn came while connections were still in use. Every component that
    /// depends on the pool has stopped by then, so they belong to one that uses the pool
    /// without depending on it (or leaked them); its queries fail with "pool closed" from the
    /// stop on. The pool closed all the same, once they came back.
    #[error(
        "{in_use} connections to {target} were still in use at the pool's stop turn: a \
         component that uses the pool lacks depends_on(\"{component}\"), so its queries fail \
         with \"pool closed\" during the shutdown"
    )]
    ClosedUnderUse {
        /// The pool component's name.
        component: String,
        /// The server, without credentials.
        target: String,
        /// Connections in use when its stop turn came.
        in_use: u32,
    },

    /// Some Redis commands were still waiting for their reply shortly before the stop timeout;
    /// they were failed with an error so that none is left pending, and the connections closed.
    #[error("closing {target} cut off {pending} commands still waiting for a reply")]
    CommandsCutOff {
        /// The server, without credentials.
        target: String,
        /// How many commands were failed.
        pending: usize,
    },

    /// A Redis subscription ended while it should have been running: the server closed the
    /// connection (`CLIENT KILL`, an output buffer limit, a restart) or stopped answering.
    #[error("the subscription to {channels} on {target} ended: {reason}")]
    SubscriptionLost {
        /// The server, without credentials.
        target: String,
        /// The channels and patterns subscribed to, comma-separated.
        channels: String,
        /// What was seen.
        reason: String,
    },
}

impl DbError {
    /// The start's retries on `target` gave up ([`lifecycle_core::retry_until`]).
    // Every backend uses it; a build with no backend (nothing but the worker) does not.
    #[cfg_attr(
        not(any(
            feature = "postgres",
            feature = "sqlite",
            feature = "mysql",
            feature = "redis"
        )),
        allow(dead_code)
    )]
    pub(crate) fn unreachable(target: &Redacted, gave_up: GaveUp) -> Self {
        DbError::Unreachable {
            target: target.to_string(),
            attempts: gave_up.attempts,
            waited: gave_up.waited,
            last_error: gave_up.last_error,
        }
    }
}
