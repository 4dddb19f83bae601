//! Keeping secrets sqlx does not read away from sqlx, which might log them. (Showing a URL
//! without its secrets is `lifecycle_core::Redacted`'s.)

use std::borrow::Cow;

use lifecycle_core::Redacted;
use url::Url;

/// `url` without the query parameters that carry a secret and that the sqlx driver `scheme`
/// does not use, with their names. sqlx's PostgreSQL driver logs an unknown parameter with its
/// value (`sslpassword=...`); the others ignore them. `password` stays for PostgreSQL, which
/// reads it; the rest would be ignored anyway.
pub(crate) fn without_unused_secrets(url: &str) -> (Cow<'_, str>, Vec<String>) {
    let Ok(mut parsed) = Url::parse(url) else {
        return (Cow::Borrowed(url), Vec::new());
    };
    let postgres = parsed.scheme().starts_with("postgres");
    let unused = |key: &str| Redacted::is_secret_param(key) && !(postgres && key == "password");
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
    use super::without_unused_secrets;

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
