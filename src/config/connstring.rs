//! Turns an ADO.NET / Npgsql connection string (`Host=db;Port=5432;Database=app;Username=u;
//! Password=p;SSL Mode=Require`), the form the reference products' `ConnectionStrings__Database`
//! setting uses, into a `postgres://` URL.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::credential::{MASK, is_credential_key};

/// Characters kept as they are in the user-info and path parts of the URL.
const URL_PART: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Errors never quote text that may be part of a secret: after an unquoted `;` inside a password,
/// the rest of the password reads as one more part (or keyword) of the string.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConnStringError {
    #[error(
        "{} is not a Key=Value pair (a value containing \";\" must be quoted)",
        part_after(.after)
    )]
    NotAPair {
        /// The keyword of the pair before it, if any.
        after: Option<String>,
    },
    #[error(
        "unknown connection string keyword \"{0}\" (known: Host, Port, Database, Username, Password, SSL Mode, Timeout, Pooling)"
    )]
    UnknownKey(String),
    #[error(
        "the keyword after {0} is unknown: if the value of {0} contains \";\", quote it (known keywords: Host, Port, Database, Username, Password, SSL Mode, Timeout, Pooling)"
    )]
    UnknownAfterSecret(String),
    #[error("the connection string names no Host")]
    NoHost,
    #[error("SSL Mode \"{0}\" is not one of Disable, Allow, Prefer, Require, VerifyCA, VerifyFull")]
    BadSslMode(String),
}

/// True when the value looks like a `Key=Value;…` string rather than a URL.
pub fn looks_like_conn_string(s: &str) -> bool {
    !s.contains("://") && s.contains('=')
}

/// Converts the connection string to a `postgres://` URL.
pub fn to_postgres_url(s: &str) -> Result<String, ConnStringError> {
    let mut host = None;
    let mut port = None;
    let mut database = None;
    let mut user = None;
    let mut password = None;
    let mut params: Vec<(&str, String)> = Vec::new();
    let mut previous: Option<String> = None;

    for (key, value) in pairs(s)? {
        match normalize(&key).as_str() {
            "host" | "server" | "datasource" | "address" => host = Some(value),
            "port" => port = Some(value),
            "database" | "initialcatalog" | "db" => database = Some(value),
            "username" | "userid" | "user" | "uid" => user = Some(value),
            "password" | "pwd" => password = Some(value),
            "sslmode" => params.push(("sslmode", ssl_mode(&value)?)),
            "timeout" | "connecttimeout" => params.push(("connect_timeout", value)),
            "applicationname" => params.push(("application_name", value)),
            // Pool settings belong to Quire's own `database.max_connections`; accept and ignore
            // them so an operator's existing string still works.
            "pooling"
            | "minimumpoolsize"
            | "maximumpoolsize"
            | "maxpoolsize"
            | "minpoolsize"
            | "trustservercertificate"
            | "commandtimeout"
            | "keepalive" => {}
            _ => return Err(unknown_key(key, previous.as_deref())),
        }
        previous = Some(key);
    }

    let host = host.ok_or(ConnStringError::NoHost)?;
    let mut url = String::from("postgres://");
    if let Some(user) = &user {
        url.push_str(&utf8_percent_encode(user, URL_PART).to_string());
        if let Some(pw) = &password {
            url.push(':');
            url.push_str(&utf8_percent_encode(pw, URL_PART).to_string());
        }
        url.push('@');
    }
    // A host list (`Host=a,b`) is Npgsql's multi-host form; libpq URLs take the same list.
    url.push_str(&host);
    if let Some(port) = port {
        url.push(':');
        url.push_str(&port);
    }
    if let Some(db) = database {
        url.push('/');
        url.push_str(&utf8_percent_encode(&db, URL_PART).to_string());
    }
    if !params.is_empty() {
        let query: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, URL_PART)))
            .collect();
        url.push('?');
        url.push_str(&query.join("&"));
    }
    Ok(url)
}

/// An unknown keyword right after a credential is most likely the rest of it: not quoted back.
fn unknown_key(key: String, previous: Option<&str>) -> ConnStringError {
    match previous {
        Some(p) if is_credential_key(p) => ConnStringError::UnknownAfterSecret(p.to_owned()),
        _ => ConnStringError::UnknownKey(key),
    }
}

fn part_after(after: &Option<String>) -> String {
    match after {
        Some(key) => format!("the part after {key}"),
        None => "the first part".to_owned(),
    }
}

fn pairs(s: &str) -> Result<Vec<(String, String)>, ConnStringError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for part in split_unquoted(s) {
        if part.trim().is_empty() {
            continue;
        }
        let Some((k, v)) = part.split_once('=') else {
            let after = out.last().map(|(k, _)| k.clone());
            return Err(ConnStringError::NotAPair { after });
        };
        out.push((k.trim().to_owned(), unquote(v.trim())));
    }
    Ok(out)
}

/// Every keyword `to_postgres_url` reads, normalized; `redact` hides what follows a credential
/// up to the next of these.
const KEYWORDS: &[&str] = &[
    "host",
    "server",
    "datasource",
    "address",
    "port",
    "database",
    "initialcatalog",
    "db",
    "username",
    "userid",
    "user",
    "uid",
    "password",
    "pwd",
    "sslmode",
    "timeout",
    "connecttimeout",
    "applicationname",
    "pooling",
    "minimumpoolsize",
    "maximumpoolsize",
    "maxpoolsize",
    "minpoolsize",
    "trustservercertificate",
    "commandtimeout",
    "keepalive",
];

/// The connection string for messages: the values of credential keywords hidden, and so is
/// everything after a credential up to the next known keyword (an unquoted `;` in a password
/// leaves the rest of it there), and any part that is not a pair.
pub fn redact(s: &str) -> String {
    let mut in_secret = false;
    let mut shown = Vec::new();
    for part in split_unquoted(s) {
        if part.trim().is_empty() {
            continue;
        }
        let key = part.split_once('=').map(|(k, _)| k.trim());
        let known = key.is_some_and(|k| KEYWORDS.contains(&normalize(k).as_str()));
        match key {
            Some(k) if is_credential_key(k) => {
                in_secret = true;
                shown.push(format!("{k}={MASK}"));
            }
            Some(_) if known => {
                in_secret = false;
                shown.push(part.trim().to_owned());
            }
            Some(_) if !in_secret => shown.push(part.trim().to_owned()),
            _ => shown.push(MASK.to_owned()),
        }
    }
    shown.join(";")
}

/// Splits on `;` outside of single or double quotes (passwords may contain `;`).
fn split_unquoted(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match (quote, c) {
            (None, '"' | '\'') => {
                quote = Some(c);
                cur.push(c);
            }
            (Some(q), c) if c == q => {
                quote = None;
                cur.push(c);
            }
            (None, ';') => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    parts.push(cur);
    parts
}

fn unquote(v: &str) -> String {
    let quoted = v.len() >= 2
        && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')));
    if quoted {
        v[1..v.len() - 1].to_owned()
    } else {
        v.to_owned()
    }
}

fn normalize(key: &str) -> String {
    key.chars()
        .filter(|c| !c.is_whitespace() && *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

fn ssl_mode(v: &str) -> Result<String, ConnStringError> {
    let mode = match normalize(v).as_str() {
        "disable" => "disable",
        "allow" => "allow",
        "prefer" => "prefer",
        "require" => "require",
        "verifyca" => "verify-ca",
        "verifyfull" => "verify-full",
        _ => return Err(ConnStringError::BadSslMode(v.to_owned())),
    };
    Ok(mode.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_doc_string_becomes_url() {
        let s = "Host=db.postgres.database.azure.com;Port=5432;Database=cxreports;Username=quire;Password=p@ss;w0rd;SSL Mode=Require";
        // The `;` inside an unquoted password ends the pair: Npgsql needs quotes for that too.
        assert_eq!(
            to_postgres_url(s),
            Err(ConnStringError::NotAPair {
                after: Some("Password".into())
            })
        );
        let s = "Host=db.postgres.database.azure.com;Port=5432;Database=cxreports;Username=quire;Password='p@ss;w0rd';SSL Mode=Require";
        assert_eq!(
            to_postgres_url(s).unwrap(),
            "postgres://quire:p%40ss%3Bw0rd@db.postgres.database.azure.com:5432/cxreports?sslmode=require"
        );
    }

    #[test]
    fn synonyms_and_case_are_accepted() {
        let s =
            "server=db;user id=postgres;pwd=password;database=q;sslmode=verify-full;Pooling=true";
        assert_eq!(
            to_postgres_url(s).unwrap(),
            "postgres://postgres:password@db/q?sslmode=verify-full"
        );
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(to_postgres_url("Port=5432"), Err(ConnStringError::NoHost));
        assert_eq!(
            to_postgres_url("Host=a;Colour=blue"),
            Err(ConnStringError::UnknownKey("Colour".into()))
        );
        assert_eq!(
            to_postgres_url("Host=a;SSL Mode=Sometimes"),
            Err(ConnStringError::BadSslMode("Sometimes".into()))
        );
    }

    #[test]
    fn errors_never_quote_a_piece_of_a_password() {
        let err = to_postgres_url("Host=db;Password=ab;cd;Port=1").unwrap_err();
        assert!(!err.to_string().contains("cd"), "{err}");
        assert!(err.to_string().contains("the part after Password"), "{err}");
        // A base64 password ending in `=` after an unquoted `;` reads as an unknown keyword.
        let err = to_postgres_url("Host=db;Password=ab;Zm9v==").unwrap_err();
        assert_eq!(err, ConnStringError::UnknownAfterSecret("Password".into()));
        assert!(!err.to_string().contains("Zm9v"), "{err}");
        assert_eq!(
            to_postgres_url(";").unwrap_err(),
            ConnStringError::NoHost,
            "empty parts are skipped"
        );
        assert_eq!(
            to_postgres_url("oops").unwrap_err().to_string(),
            "the first part is not a Key=Value pair (a value containing \";\" must be quoted)"
        );
    }

    #[test]
    fn redaction_hides_credentials_and_what_may_be_left_of_them() {
        assert_eq!(
            redact("Host=db;Port=5432;Username=u1;Password='p;1';SSL Mode=Require"),
            "Host=db;Port=5432;Username=***;Password=***;SSL Mode=Require"
        );
        assert_eq!(
            redact("Host=db;Pwd=ab;cd;ef=gh;Database=q;oops"),
            "Host=db;Pwd=***;***;***;Database=q;***"
        );
    }

    #[test]
    fn every_redaction_keyword_is_one_the_converter_reads() {
        for k in KEYWORDS {
            let r = to_postgres_url(&format!("Host=h;{k}=1"));
            assert!(
                !matches!(r, Err(ConnStringError::UnknownKey(_))),
                "{k}: {r:?}"
            );
        }
    }

    #[test]
    fn detects_connection_strings() {
        assert!(looks_like_conn_string("Host=a;Database=b"));
        assert!(!looks_like_conn_string("postgres://a/b?sslmode=require"));
    }
}
