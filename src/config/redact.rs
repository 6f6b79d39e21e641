//! Hiding the credentials in URL-shaped settings, for `quire config check`, `Debug` output and
//! log lines. Every place a URL can carry one shows `***`: the user and the password of its
//! user-info (a NATS token or an SMTP API key is often the user alone) and credential-like query
//! parameters. The rest stays, so an operator still sees where the URL points.

use super::connstring;
use super::credential::{MASK, is_credential_key};

/// A secret that is a URL, with every credential hidden:
/// `postgres://quire:pw@db/q?sslpassword=x` -> `postgres://***:***@db/q?sslpassword=***`. A
/// `Key=Value;…` connection string keeps its keywords; anything else may be a secret with a typo
/// in it and is hidden whole.
pub fn redact_url(s: &str) -> String {
    if connstring::looks_like_conn_string(s) {
        return connstring::redact(s);
    }
    if !s.contains("://") {
        return MASK.to_owned();
    }
    match url::Url::parse(s) {
        Ok(u) => hide_credentials(u),
        Err(_) => MASK.to_owned(),
    }
}

/// A NATS server as its clients take it: a URL, or `[user[:password]@]host:port` without a
/// scheme (`nats://` is implied). A bare `host:port` is shown; a bare word could be a token put
/// in the wrong place and is hidden.
pub fn redact_server(s: &str) -> String {
    let s = s.trim();
    if s.contains("://") {
        return redact_url(s);
    }
    match s.rsplit_once('@') {
        Some((_, host)) => format!("{MASK}@{host}"),
        None if is_host_port(s) => s.to_owned(),
        None => MASK.to_owned(),
    }
}

/// For a setting that is not a secret but may still carry one (a route URL with a user and
/// password, say): the value with its credentials hidden, or `None` when it has none.
pub fn hide_url_credentials(s: &str) -> Option<String> {
    if !s.contains("://") {
        return None;
    }
    let u = url::Url::parse(s).ok()?;
    let has = !u.username().is_empty()
        || u.password().is_some()
        || u.query_pairs().any(|(k, _)| is_credential_key(&k));
    has.then(|| hide_credentials(u))
}

/// The URL with its user, password and credential query parameters replaced by `***`; the whole
/// URL hidden when one of them cannot be replaced.
fn hide_credentials(mut u: url::Url) -> String {
    if !u.username().is_empty() && u.set_username(MASK).is_err() {
        return MASK.to_owned();
    }
    if u.password().is_some() && u.set_password(Some(MASK)).is_err() {
        return MASK.to_owned();
    }
    if u.query_pairs().any(|(k, _)| is_credential_key(&k)) {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_credential_key(&k) {
                    MASK.to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

/// `host:port` (a name or an address, IPv6 in brackets) and nothing else.
fn is_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    !host.is_empty()
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_hide_user_password_and_credential_parameters() {
        assert_eq!(
            redact_url("postgres://quire:topsecret@db:5432/quire"),
            "postgres://***:***@db:5432/quire"
        );
        assert_eq!(
            redact_url("nats://s3cr3t-token@nats1:4222"),
            "nats://***@nats1:4222"
        );
        assert_eq!(
            redact_url("smtp://SG.apikey-value@smtp.example.com:587?tls=starttls"),
            "smtp://***@smtp.example.com:587?tls=starttls"
        );
        assert_eq!(
            redact_url(
                "postgres://db/q?user=u1&password=p1&sslmode=require&sslpassword=p2&access_token=t"
            ),
            "postgres://db/q?user=***&password=***&sslmode=require&sslpassword=***&access_token=***"
        );
        assert_eq!(redact_url("nats://nats1:4222"), "nats://nats1:4222");
        assert_eq!(
            redact_url("sqlite://./data/quire.db"),
            "sqlite://./data/quire.db"
        );
    }

    #[test]
    fn what_is_not_a_url_is_hidden_whole_or_by_keyword() {
        assert_eq!(redact_url("just-a-secret"), MASK);
        assert_eq!(redact_url("scheme:looking:secret"), MASK);
        assert_eq!(redact_url("postgres://u:p@db:99999/q"), MASK);
        assert_eq!(
            redact_url("Host=db;Username=u1;Password=p1;SSL Mode=Require"),
            "Host=db;Username=***;Password=***;SSL Mode=Require"
        );
    }

    #[test]
    fn nats_servers_without_a_scheme_hide_their_user_info() {
        assert_eq!(redact_server("tok@10.0.0.1:4222"), "***@10.0.0.1:4222");
        assert_eq!(redact_server("u:p@nats1:4222"), "***@nats1:4222");
        assert_eq!(
            redact_server("nats://u:p@nats1:4222"),
            "nats://***:***@nats1:4222"
        );
        assert_eq!(redact_server("127.0.0.1:4222"), "127.0.0.1:4222");
        assert_eq!(redact_server("[::1]:4222"), "[::1]:4222");
        assert_eq!(redact_server("a-token-in-the-wrong-place"), MASK);
    }

    #[test]
    fn settings_that_are_not_secrets_lose_only_their_credentials() {
        assert_eq!(hide_url_credentials("http://example.com"), None);
        assert_eq!(hide_url_credentials("not a url"), None);
        assert_eq!(
            hide_url_credentials("nats-route://ruser:rpass@10.0.0.2:6222").as_deref(),
            Some("nats-route://***:***@10.0.0.2:6222")
        );
    }
}
