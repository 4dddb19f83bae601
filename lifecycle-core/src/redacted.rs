//! `Redacted`: a server's URL made fit to show in logs, errors, reports and health output.

use std::borrow::Cow;
use std::fmt;

/// Query parameters that carry a secret, in any database, Redis or broker URL (compared
/// without regard to case): libpq's `password` and `sslpassword`, redis-rs's `pass`, NATS's
/// `token`, `nkey` and `jwt`, and the usual others.
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
    "nkey",
    "jwt",
];

/// What replaces a secret.
const MASK: &str = "***";

/// A server's URL made fit to show: without its user information, with the values of
/// secret-bearing query parameters masked as `***`, and holding the secrets themselves, so that
/// a message that might echo one (a driver's error) can be [scrubbed](Self::scrub) before it is
/// shown.
///
/// The URL is parsed with the `url` crate (WHATWG rules, as sqlx, redis-rs, lapin and async-nats
/// parse theirs), not split by hand, so percent-encoding, an `@` in a password and repeated keys
/// are handled. A URL that does not parse is not shown at all: it might hold a secret in a place
/// no parser can find.
///
/// Every adapter crate names its servers through it: a component keeps the `Redacted` of its
/// URL and shows that, never the URL.
///
/// # Examples
///
/// ```
/// use lifecycle_core::Redacted;
///
/// let target = Redacted::new("postgres://app:s3cret@db:5432/app?sslpassword=k3y&sslmode=require");
/// assert_eq!(target.to_string(), "postgres://db:5432/app?sslpassword=***&sslmode=require");
///
/// // A driver's message that quotes a secret is scrubbed before it is shown.
/// let error = "password authentication failed (password s3cret)";
/// assert_eq!(target.scrub(error), "password authentication failed (password ***)");
///
/// assert_eq!(Redacted::new("nats://tok3n@nats:4222").to_string(), "nats://nats:4222");
/// assert_eq!(Redacted::new("not a url").to_string(), "<unparseable URL>");
/// ```
#[derive(Clone)]
pub struct Redacted {
    target: String,
    secrets: Vec<String>,
}

impl Redacted {
    /// The URL `url` made fit to show, and the secrets it holds.
    pub fn new(url: &str) -> Self {
        let Ok(mut parsed) = url::Url::parse(url) else {
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
        // The user name is not always a secret, but it is half of one: shown, it tells which
        // account to attack. The whole user information goes.
        let _ = parsed.set_password(None);
        let _ = parsed.set_username("");

        if parsed.query().is_some() {
            let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
            if pairs.iter().any(|(key, _)| Self::is_secret_param(key)) {
                for (key, value) in &pairs {
                    if Self::is_secret_param(key) {
                        keep(value);
                    }
                }
                // The raw query too, in case a driver echoes it undecoded.
                if let Some(query) = parsed.query() {
                    for pair in query.split('&') {
                        if let Some((key, value)) = pair.split_once('=') {
                            if Self::is_secret_param(&percent_decode(key)) {
                                keep(value);
                            }
                        }
                    }
                }
                let mut query = parsed.query_pairs_mut();
                query.clear();
                for (key, value) in &pairs {
                    let value = if Self::is_secret_param(key) {
                        MASK
                    } else {
                        value
                    };
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

    /// `text` with every secret of the URL masked as `***`.
    ///
    /// # Examples
    ///
    /// ```
    /// use lifecycle_core::Redacted;
    ///
    /// let target = Redacted::new("redis://:p%40ss@cache:6379/?pass=x");
    /// assert_eq!(target.scrub("auth failed for p@ss and p%40ss"), "auth failed for *** and ***");
    /// ```
    pub fn scrub(&self, text: impl fmt::Display) -> String {
        let mut text = text.to_string();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), MASK);
            }
        }
        text
    }

    /// Whether a query parameter named `key` carries a secret (`password`, `sslpassword`,
    /// `pass`, `token`, ...; any case): such a parameter's value is masked in the URL shown.
    ///
    /// # Examples
    ///
    /// ```
    /// use lifecycle_core::Redacted;
    ///
    /// assert!(Redacted::is_secret_param("PassWord"));
    /// assert!(!Redacted::is_secret_param("sslmode"));
    /// ```
    pub fn is_secret_param(key: &str) -> bool {
        SECRET_KEYS
            .iter()
            .any(|secret| key.eq_ignore_ascii_case(secret))
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

/// The URL shown, never the secrets it holds.
impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.target, f)
    }
}

#[cfg(test)]
mod tests {
    use super::Redacted;

    /// The target shown for `url`, checked to hold none of `secrets`, and the scrubbed `url`.
    fn shown(url: &str, secrets: &[&str]) -> String {
        let redacted = Redacted::new(url);
        let scrubbed = redacted.scrub(format!("error connecting to {url}"));
        for secret in secrets {
            assert!(!redacted.to_string().contains(secret), "{redacted}");
            assert!(!scrubbed.contains(secret), "{scrubbed}");
            assert!(!format!("{redacted:?}").contains(secret), "{redacted:?}");
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
        assert_eq!(
            shown("amqp://guest:guest@127.0.0.1:5672/%2f", &["guest"]),
            "amqp://127.0.0.1:5672/%2f"
        );
        // A NATS token where the user goes.
        assert_eq!(shown("nats://tok3n@nats:4222", &[]), "nats://nats:4222");
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
        assert_eq!(
            shown("nats://n:4222?token=abc&name=x&nkey=SUAB", &["abc", "SUAB"]),
            "nats://n:4222?token=***&name=x&nkey=***"
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
            "amqp://127.0.0.1:5672/%2f",
            "nats://127.0.0.1:4222",
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
        assert_eq!(shown("nats://u:p@@@", &["u:p@@@"]), "<unparseable URL>");
        assert_eq!(shown("not a url", &[]), "<unparseable URL>");
    }
}
