//! Errors of this crate.

use std::time::Duration;

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

/// `url` without the user and password, for messages and reports.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// `url` without credentials: the user and password before the host, and the `pass` query
/// parameter through which `redis+unix` URLs carry a password.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
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

#[cfg(test)]
mod tests {
    use super::{redact, redact_redis};

    #[test]
    fn redacts_credentials_only() {
        assert_eq!(
            redact("postgres://app:secret@db:5432/app?x=1"),
            "postgres://db:5432/app?x=1"
        );
        assert_eq!(redact("postgres://db:5432/app"), "postgres://db:5432/app");
        assert_eq!(redact("sqlite://data.db"), "sqlite://data.db");
        assert_eq!(
            redact("mysql://root@127.0.0.1/test"),
            "mysql://127.0.0.1/test"
        );
        assert_eq!(redact("not a url"), "not a url");
    }

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
}
