//! Keeping credentials out of logs, errors, reports and health output.

use std::borrow::Cow;
use std::fmt;

use url::Url;

/// Query parameters that carry a secret, in any database or Redis URL (compared in lower
/// case): libpq's `password` and `sslpassword`, redis-rs's `pass`, and the usual others.
const SECRET_KEYS: &[&str] = &[
    "password",
    "sslpassword",
    "ssl-password",
    "pass",
    "passwd",
    "pwd",
    "secret",
    "token",
    "auth",
    "access_token",
    "api_key",
    "apikey",
];

/// What replaces a secret.
const MASK: &str = "***";

/// Whether a query parameter named `key` carries a secret.
fn is_secret_key(key: &str) -> bool {
    SECRET_KEYS
        .iter()
        .any(|secret| key.eq_ignore_ascii_case(secret))
}

/// A server's URL made fit to show: the URL without its user information and with the values
/// of secret-bearing query parameters masked, plus the secrets themselves, so that a message
/// that might echo one (a driver's error) can be scrubbed before it is shown.
///
/// The URL is parsed with the `url` crate (WHATWG rules, as sqlx and redis-rs parse theirs),
/// not split by hand, so percent-encoding, `@` in passwords and repeated keys are handled. A
/// URL that does not parse is not shown at all: it might hold a secret in a place no parser
/// can find.
#[derive(Clone)]
pub(crate) struct Redacted {
    target: String,
    secrets: Vec<String>,
}

impl Redacted {
    pub(crate) fn new(url: &str) -> Self {
        let Ok(mut parsed) = Url::parse(url) else {
            // Nothing to pick secrets out of: a message that echoes the URL loses all of it.
            return Redacted {
                target: "<unparseable URL>".to_owned(),
                secrets: vec![url.to_owned()],
            };
        };
        let mut secrets = Vec::new();
        let mut keep = |raw: &str| {
            if raw.is_empty() {
                return;
            }
            secrets.push(raw.to_owned());
            let decoded = percent_decode(raw);
            if decoded != raw {
                secrets.push(decoded.into_owned());
            }
        };
        if let Some(password) = parsed.password() {
            keep(password);
        }
        // The user name is not a secret, but it is half of one: shown, it tells which account
        // to attack. The whole user information goes.
        let _ = parsed.set_password(None);
        let _ = parsed.set_username("");

        if parsed.query().is_some() {
            let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
            if pairs.iter().any(|(key, _)| is_secret_key(key)) {
                for (key, value) in &pairs {
                    if is_secret_key(key) {
                        keep(value);
                    }
                }
                // The raw query too, in case a driver echoes it undecoded.
                if let Some(query) = parsed.query() {
                    for pair in query.split('&') {
                        if let Some((key, value)) = pair.split_once('=') {
                            if is_secret_key(&percent_decode(key)) {
                                keep(value);
                            }
                        }
                    }
                }
                let mut query = parsed.query_pairs_mut();
                query.clear();
                for (key, value) in &pairs {
                    let value = if is_secret_key(key) { MASK } else { value };
                    query.append_pair(key, value);
                }
            }
        }
        // The longest first, so that scrubbing a secret that contains another leaves nothing.
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        secrets.dedup();
        Redacted {
            target: parsed.into(),
            secrets,
        }
    }

    /// `text` with every secret of the URL masked.
    pub(crate) fn scrub(&self, text: impl fmt::Display) -> String {
        let mut text = text.to_string();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), MASK);
            }
        }
        text
    }
}

fn percent_decode(text: &str) -> Cow<'_, str> {
    percent_encoding::percent_decode_str(text).decode_utf8_lossy()
}

impl fmt::Display for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.target)
    }
}

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.target, f)
    }
}

/// `url` without the query parameters that carry a secret and that the sqlx driver `scheme`
/// does not use, with their names. sqlx's PostgreSQL driver logs an unknown parameter with its
/// value (`sslpassword=...`); the others ignore them. `password` stays for PostgreSQL, which
/// reads it; the rest would be ignored anyway.
pub(crate) fn without_unused_secrets(url: &str) -> (Cow<'_, str>, Vec<String>) {
    let Ok(mut parsed) = Url::parse(url) else {
        return (Cow::Borrowed(url), Vec::new());
    };
    let postgres = parsed.scheme().starts_with("postgres");
    let unused = |key: &str| is_secret_key(key) && !(postgres && key == "password");
    let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    let dropped: Vec<String> = pairs
        .iter()
        .filter(|(key, _)| unused(key))
        .map(|(key, _)| key.clone())
        .collect();
    if dropped.is_empty() {
        return (Cow::Borrowed(url), dropped);
    }
    let kept: Vec<&(String, String)> = pairs.iter().filter(|(key, _)| !unused(key)).collect();
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        let mut query = parsed.query_pairs_mut();
        query.clear();
        for (key, value) in kept {
            query.append_pair(key, value);
        }
    }
    (Cow::Owned(parsed.into()), dropped)
}

#[cfg(test)]
mod tests {
    use super::{without_unused_secrets, Redacted};

    /// The target shown for `url`, checked to hold none of `secrets`, and the scrubbed `url`.
    fn shown(url: &str, secrets: &[&str]) -> String {
        let redacted = Redacted::new(url);
        let scrubbed = redacted.scrub(format!("error connecting to {url}"));
        for secret in secrets {
            assert!(!redacted.to_string().contains(secret), "{redacted}");
            assert!(!scrubbed.contains(secret), "{scrubbed}");
        }
        redacted.to_string()
    }

    #[test]
    fn user_information_goes() {
        assert_eq!(
            shown("postgres://app:s3cret@db:5432/app?x=1", &["s3cret"]),
            "postgres://db:5432/app?x=1"
        );
        assert_eq!(
            shown("mysql://root@127.0.0.1/test", &[]),
            "mysql://127.0.0.1/test"
        );
        assert_eq!(
            shown("redis://app:s3cret@cache:6379/2", &["s3cret"]),
            "redis://cache:6379/2"
        );
        assert_eq!(
            shown("redis://:s3cret@cache:6379/", &["s3cret"]),
            "redis://cache:6379/"
        );
        // An `@` in the password, percent-encoded as it must be.
        assert_eq!(
            shown(
                "postgres://app:p%40ss%2Fw0rd@db/app",
                &["p%40ss%2Fw0rd", "p@ss/w0rd"]
            ),
            "postgres://db/app"
        );
    }

    #[test]
    fn secret_query_parameters_are_masked() {
        assert_eq!(
            shown(
                "postgres://127.0.0.1:5432/test?user=postgres&password=s3cret",
                &["s3cret"]
            ),
            "postgres://127.0.0.1:5432/test?user=postgres&password=***"
        );
        assert_eq!(
            shown(
                "postgres://db/app?sslmode=require&sslpassword=k3y-s3cret",
                &["k3y-s3cret"]
            ),
            "postgres://db/app?sslmode=require&sslpassword=***"
        );
        assert_eq!(
            shown("redis+unix:///run/redis.sock?db=1&pass=s3cret", &["s3cret"]),
            "redis+unix:///run/redis.sock?db=1&pass=***"
        );
        // Any case, percent-encoded keys and values, and repeated keys.
        assert_eq!(
            shown(
                "postgres://db/app?PassWord=a%26b&pass%77ord=c3&password=d4",
                &["a%26b", "a&b", "c3", "d4"]
            ),
            "postgres://db/app?PassWord=***&password=***&password=***"
        );
    }

    #[test]
    fn urls_without_secrets_are_unchanged() {
        for url in [
            "postgres://db:5432/app",
            "sqlite://data.db",
            "sqlite::memory:",
            "sqlite://jobs.db?mode=rwc",
            "redis://cache/",
        ] {
            assert_eq!(shown(url, &[]), url);
        }
    }

    #[test]
    fn an_unparseable_url_is_not_shown() {
        assert_eq!(
            shown("postgres://app:s3cret@db:99999/app", &["s3cret"]),
            "<unparseable URL>"
        );
        assert_eq!(shown("not a url", &[]), "<unparseable URL>");
    }

    #[test]
    fn secrets_sqlx_does_not_read_are_dropped_before_it_parses() {
        let (url, dropped) =
            without_unused_secrets("postgres://db/app?password=p&sslpassword=s&sslmode=require");
        assert_eq!(url, "postgres://db/app?password=p&sslmode=require");
        assert_eq!(dropped, ["sslpassword"]);
        let (url, dropped) = without_unused_secrets("mysql://root@db/test?password=p");
        assert_eq!(url, "mysql://root@db/test");
        assert_eq!(dropped, ["password"]);
        let (url, dropped) = without_unused_secrets("sqlite://jobs.db?mode=rwc");
        assert_eq!(url, "sqlite://jobs.db?mode=rwc");
        assert!(dropped.is_empty());
    }
}
