//! HTTP data sources: a query is a GET of `path?query` under the source's `base_url`, answered
//! with JSON whose array of rows becomes a [`Table`].
//!
//! A query's text is written by an editor, but its `:name` values come from whoever starts a
//! render, so a value is always percent-encoded as one path segment or one query component: it
//! can never add a segment, climb out of the base path, start a query or add a parameter.
//!
//! Requests go only to `allowed_hosts` (redirects too, at most five of them), and never to
//! link-local or cloud metadata addresses unless the source allows private addresses. The check
//! runs in the client's resolver, on the very addresses it connects to, so a name that resolves
//! differently the second time (DNS rebinding) gains nothing; hosts written as IP addresses never
//! reach a resolver and are checked on the URL.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::redirect::Policy;
use rustls_platform_verifier::BuilderVerifierExt;
use serde_json::{Map, Value};
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::crypto::ring;
use url::{Host, Url};

use super::Probed;
use super::settings::HttpSettings;
use super::statement::{ParamRef, TextError, is_name_char, is_name_start, position};
use super::table::{Bound, Limits, QueryError, Table, TableBuilder};

/// Redirects followed before a request fails.
const MAX_REDIRECTS: usize = 5;

/// How much of an error response's body an error message quotes.
const EXCERPT_CHARS: usize = 200;

/// A query's text, parsed: literal text and `:name` slots, split at the first literal `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpText {
    path: Vec<Part>,
    /// `None` when the text has no `?`.
    query: Option<Vec<Part>>,
    /// Every `:name` as written.
    pub refs: Vec<ParamRef>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Slot(String),
}

/// Parses an HTTP query's text: `path?query` relative to the base URL, with `:name` slots (a
/// name is `[A-Za-z_][A-Za-z0-9_]*`; a `:` not followed by one is text).
pub fn parse(text: &str) -> Result<HttpText, TextError> {
    let chars: Vec<char> = text.chars().collect();
    let fail = |at: usize, message: &str| {
        let (line, column) = position(&chars, at);
        TextError {
            line,
            column,
            message: message.to_owned(),
        }
    };
    let start = chars
        .iter()
        .position(|c| !c.is_whitespace())
        .unwrap_or(chars.len());
    let end = chars
        .iter()
        .rposition(|c| !c.is_whitespace())
        .map_or(start, |p| p + 1);
    if is_absolute(&chars[start..end]) {
        return Err(fail(
            start,
            "an absolute URL; write the path and query relative to the data source's base_url",
        ));
    }
    let mut out = HttpText {
        path: Vec::new(),
        query: None,
        refs: Vec::new(),
    };
    let mut i = start;
    while i < end {
        let c = chars[i];
        if c == ':' && chars.get(i + 1).is_some_and(|&n| is_name_start(n)) {
            let stop = (i + 1..end)
                .find(|&j| !is_name_char(chars[j]))
                .unwrap_or(end);
            let name: String = chars[i + 1..stop].iter().collect();
            let (line, column) = position(&chars, i);
            out.parts().push(Part::Slot(name.clone()));
            out.refs.push(ParamRef { name, line, column });
            i = stop;
            continue;
        }
        match c {
            '#' => return Err(fail(i, "no fragment ('#'): a server never sees it")),
            c if c.is_whitespace() || c.is_control() => {
                return Err(fail(
                    i,
                    "write spaces and control characters percent-encoded",
                ));
            }
            '?' if out.query.is_none() => out.query = Some(Vec::new()),
            c => {
                let parts = out.parts();
                match parts.last_mut() {
                    Some(Part::Literal(s)) => s.push(c),
                    _ => parts.push(Part::Literal(c.to_string())),
                }
            }
        }
        i += 1;
    }
    Ok(out)
}

impl HttpText {
    /// Where the text read so far goes: the query once a `?` was read, else the path.
    fn parts(&mut self) -> &mut Vec<Part> {
        self.query.as_mut().unwrap_or(&mut self.path)
    }
}

/// `scheme://…` or `//host…`: text that would name a host of its own.
fn is_absolute(text: &[char]) -> bool {
    if text.starts_with(&['/', '/']) {
        return true;
    }
    let scheme = text
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        .count();
    scheme > 0 && text[scheme..].starts_with(&[':', '/', '/'])
}

/// What a value may keep unencoded in a path segment or a query component: RFC 3986's
/// unreserved characters, which mean the same everywhere in a URL. Everything else (`/`, `?`,
/// `&`, `=`, `#`, `%`, `+`, …) is encoded, so a value is data, never structure.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The URL a query's text asks for under `base`, with `values` in its slots (a name without a
/// value is empty). The text's path is appended to the base URL's path.
fn url(base: &Url, text: &HttpText, values: &BTreeMap<String, Bound>) -> Result<Url, QueryError> {
    let value = |name: &str| {
        let text = values.get(name).map(Bound::to_text).unwrap_or_default();
        utf8_percent_encode(&text, COMPONENT).to_string()
    };
    let mut path = PathBuilder::default();
    for part in &text.path {
        match part {
            Part::Literal(s) => s.chars().try_for_each(|c| path.push_literal(c))?,
            Part::Slot(name) => path.push_slot(&value(name)),
        }
    }
    path.end_segment()?;
    let mut url = base.clone();
    if !path.text.is_empty() {
        let base_path = base.path().trim_end_matches('/');
        url.set_path(&format!(
            "{base_path}/{}",
            path.text.trim_start_matches('/')
        ));
    }
    let query = text.query.as_ref().map(|parts| {
        parts
            .iter()
            .map(|part| match part {
                Part::Literal(s) => s.clone(),
                Part::Slot(name) => value(name),
            })
            .collect::<String>()
    });
    url.set_query(query.as_deref());
    Ok(url)
}

/// A path being assembled, remembering whether the current segment holds a value: a segment
/// that is only a value of `.` or `..` would, once the URL is normalized, climb the path
/// (`%2E` is no escape: URL parsers treat `%2E%2E` as `..` too), so it is refused.
#[derive(Default)]
struct PathBuilder {
    text: String,
    segment_start: usize,
    segment_has_value: bool,
}

impl PathBuilder {
    fn push_literal(&mut self, c: char) -> Result<(), QueryError> {
        if c == '/' {
            self.end_segment()?;
            self.segment_start = self.text.len() + 1;
        }
        self.text.push(c);
        Ok(())
    }

    fn push_slot(&mut self, encoded: &str) {
        self.text.push_str(encoded);
        self.segment_has_value = true;
    }

    fn end_segment(&mut self) -> Result<(), QueryError> {
        let segment = self.text[self.segment_start..]
            .to_ascii_lowercase()
            .replace("%2e", ".");
        if self.segment_has_value && matches!(segment.as_str(), "." | "..") {
            return Err(QueryError::Query {
                message: "a parameter in the path cannot be \".\" or \"..\"".into(),
                position: None,
            });
        }
        self.segment_has_value = false;
        Ok(())
    }
}

/// Link-local and cloud metadata addresses: what a server-side request must not reach unless the
/// data source says so. Loopback and private ranges stay reachable: on-premises APIs live there.
fn refused(ip: IpAddr) -> bool {
    /// AWS's IPv6 instance metadata service.
    const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    /// Alibaba Cloud's metadata service.
    const ALIBABA_METADATA: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 200);
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.is_link_local() || v4 == ALIBABA_METADATA,
        IpAddr::V6(v6) => v6.is_unicast_link_local() || v6 == AWS_METADATA_V6,
    }
}

/// Why a request may not go where it was sent.
#[derive(Debug, thiserror::Error)]
enum Blocked {
    #[error(
        "{0} is a link-local or cloud metadata address (allow_private_addresses lets a data \
         source reach it)"
    )]
    Address(String),
    #[error("{0} is not among the data source's allowed_hosts")]
    Host(String),
    #[error("{0}: only http and https")]
    Scheme(String),
    #[error("more than {MAX_REDIRECTS} redirects")]
    Redirects,
}

/// Keeps the addresses that may be reached; an error when none may.
fn permitted(
    host: &str,
    addrs: impl IntoIterator<Item = SocketAddr>,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, Blocked> {
    let (ok, refused): (Vec<_>, Vec<_>) = addrs
        .into_iter()
        .partition(|a| allow_private || !refused(a.ip()));
    match (ok.is_empty(), refused.first()) {
        (true, Some(a)) => Err(Blocked::Address(format!("{host} ({})", a.ip()))),
        _ => Ok(ok),
    }
}

/// The system resolver, with [`permitted`] applied to what it answers.
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let addrs: Addrs = Box::new(permitted(&host, found, allow_private)?.into_iter());
            Ok(addrs)
        })
    }
}

/// Where a source's requests may go.
#[derive(Clone)]
struct Reach {
    hosts: Vec<String>,
    allow_private: bool,
}

impl Reach {
    fn new(settings: &HttpSettings, base: &Url) -> Reach {
        let hosts = if settings.allowed_hosts.is_empty() {
            base.host().map(|h| h.to_string()).into_iter().collect()
        } else {
            settings
                .allowed_hosts
                .iter()
                .filter_map(|h| Host::parse(h).ok().map(|h| h.to_string()))
                .collect()
        };
        Reach {
            hosts,
            allow_private: settings.allow_private_addresses,
        }
    }

    /// Whether a request may go to `url` (an IP address host is checked here; names are checked
    /// when they resolve).
    fn check(&self, url: &Url) -> Result<(), Blocked> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Blocked::Scheme(url.to_string()));
        }
        let Some(host) = url.host() else {
            return Err(Blocked::Host(url.to_string()));
        };
        if !self.hosts.contains(&host.to_string()) {
            return Err(Blocked::Host(host.to_string()));
        }
        let ip = match host {
            Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
            Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
            Host::Domain(_) => None,
        };
        match ip {
            Some(ip) if !self.allow_private && refused(ip) => Err(Blocked::Address(ip.to_string())),
            _ => Ok(()),
        }
    }
}

/// The TLS settings of every HTTP source: ring, like Quire's other TLS, and the platform's
/// trusted roots (so an on-premises CA the system trusts works). Built once.
fn tls() -> Result<ClientConfig, String> {
    static TLS: OnceLock<Result<ClientConfig, String>> = OnceLock::new();
    TLS.get_or_init(|| {
        ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_platform_verifier())
            .map(|b| b.with_no_client_auth())
            .map_err(|e| format!("TLS: {e}"))
    })
    .clone()
}

/// A source's client and URL: its headers, its reach, and no proxy (a proxy would resolve names
/// where the address check cannot see). Redirects are followed here, not by the client, so that
/// every hop is checked and the source's headers (its API key) go to the base URL's host only.
struct Source {
    client: reqwest::Client,
    base: Url,
    headers: HeaderMap,
    reach: Reach,
}

impl Source {
    fn new(settings: &HttpSettings) -> Result<Source, String> {
        let base = Url::parse(&settings.base_url).map_err(|e| format!("base_url: {e}"))?;
        let reach = Reach::new(settings, &base);
        let mut headers = HeaderMap::new();
        for (name, value) in &settings.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| format!("headers.{name}: {e}"))?;
            let value = HeaderValue::from_str(value).map_err(|e| format!("headers.{name}: {e}"))?;
            headers.insert(name, value);
        }
        let accept =
            HeaderMap::from_iter([(header::ACCEPT, HeaderValue::from_static("application/json"))]);
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls()?)
            .dns_resolver(GuardedResolver {
                allow_private: settings.allow_private_addresses,
            })
            .redirect(Policy::none())
            .no_proxy()
            .default_headers(accept)
            .build()
            .map_err(|e| describe(&e))?;
        Ok(Source {
            client,
            base,
            headers,
            reach,
        })
    }

    /// Sends a GET to `url` and follows at most [`MAX_REDIRECTS`] redirects, each hop checked
    /// against the source's reach first. Errors leave the URL out: the caller names it.
    async fn get(&self, mut url: Url) -> Result<reqwest::Response, String> {
        for _ in 0..=MAX_REDIRECTS {
            self.reach.check(&url).map_err(|e| e.to_string())?;
            let mut request = self.client.get(url.clone());
            if same_origin(&url, &self.base) {
                request = request.headers(self.headers.clone());
            }
            let response = request
                .send()
                .await
                .map_err(|e| describe(&e.without_url()))?;
            let location = response
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok());
            match location {
                Some(to) if response.status().is_redirection() => {
                    url = url
                        .join(to)
                        .map_err(|e| format!("a redirect to \"{to}\": {e}"))?;
                }
                _ => return Ok(response),
            }
        }
        Err(Blocked::Redirects.to_string())
    }
}

/// Same scheme, host and port: where a source's headers may go.
fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// An error with its causes: reqwest's own message says only that sending failed.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out = format!("{out}: {c}");
        cause = c.source();
    }
    out
}

/// Runs a query against an HTTP source: GET, check, read within `max_response`, and take the
/// rows at the `rows` pointer. The request may take the shorter of the source's `timeout` and
/// the query's.
pub async fn run(
    settings: &HttpSettings,
    text: &str,
    values: &BTreeMap<String, Bound>,
    limits: &Limits,
) -> Result<Table, QueryError> {
    let text = parse(text).map_err(|e| QueryError::Query {
        message: e.to_string(),
        position: None,
    })?;
    let source = Source::new(settings).map_err(QueryError::Unreachable)?;
    let url = url(&source.base, &text, values)?;
    let timeout = limits.timeout.min(settings.timeout.get());
    let body = tokio::time::timeout(timeout, fetch(&source, url, settings))
        .await
        .map_err(|_| {
            QueryError::Limit(format!(
                "no answer within {}s (timeout)",
                timeout.as_secs_f64()
            ))
        })??;
    table(&body, &settings.rows, limits)
}

/// The body of a successful JSON answer to a GET of `url`.
async fn fetch(source: &Source, url: Url, settings: &HttpSettings) -> Result<Vec<u8>, QueryError> {
    let shown = url.to_string();
    let mut response = source
        .get(url)
        .await
        .map_err(|e| QueryError::Unreachable(format!("{shown}: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        let (body, _) = read_at_most(&mut response, EXCERPT_CHARS * 4)
            .await
            .unwrap_or_default();
        let message = format!("{shown} answered HTTP {status}: {}", excerpt(&body));
        // A 4xx is the query's fault (a wrong path, a missing parameter); anything else is the
        // server's.
        return Err(if status.is_client_error() {
            QueryError::Query {
                message,
                position: None,
            }
        } else {
            QueryError::Unreachable(message)
        });
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !is_json(content_type) {
        return Err(QueryError::Convert(format!(
            "{shown} answered Content-Type \"{content_type}\", not JSON"
        )));
    }
    let max = settings.max_response.as_usize();
    match read_at_most(&mut response, max).await {
        Ok((body, true)) => Ok(body),
        Ok((_, false)) => Err(QueryError::Limit(format!(
            "{shown} answered more than {} (max_response)",
            settings.max_response
        ))),
        Err(e) => Err(QueryError::Unreachable(format!("{shown}: {e}"))),
    }
}

/// `application/json`, or a `+json` type such as `application/problem+json`.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || (essence.contains('/') && essence.ends_with("+json"))
}

/// Reads the body until `limit` bytes; the flag says whether it ended within them (reading stops
/// at the first chunk past the limit).
async fn read_at_most(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
        if body.len() + chunk.len() > limit {
            let room = limit - body.len();
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
}

/// The start of an error response's body, on one line.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None if line.is_empty() => "(no body)".into(),
        None => line,
    }
}

/// The rows at `pointer` in a JSON document. An object element is a row as it is; any other
/// element is a row `{"value": element}`. The columns are every key, in the order first seen; a
/// row lacking one of them has it as null, so that a template can read every column of every
/// row.
fn table(body: &[u8], pointer: &str, limits: &Limits) -> Result<Table, QueryError> {
    let mut doc: Value = serde_json::from_slice(body)
        .map_err(|e| QueryError::Convert(format!("the response is not JSON: {e}")))?;
    let rows = match doc.pointer_mut(pointer).map(Value::take) {
        Some(Value::Array(rows)) => rows,
        Some(other) => return Err(not_rows(pointer, &other)),
        None => {
            return Err(QueryError::Query {
                message: format!("the response has nothing at rows \"{pointer}\""),
                position: None,
            });
        }
    };
    let mut builder = TableBuilder::new(Vec::new(), *limits);
    let mut columns: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for element in rows {
        let row = match element {
            Value::Object(row) => row,
            other => Map::from_iter([("value".to_owned(), other)]),
        };
        let new: Vec<String> = row.keys().filter(|k| !seen.contains(*k)).cloned().collect();
        if !builder.push(row)? {
            break;
        }
        seen.extend(new.iter().cloned());
        columns.extend(new);
    }
    builder.set_columns(columns);
    let mut table = builder.finish();
    for row in &mut table.rows {
        for column in &table.columns {
            row.entry(column.as_str()).or_insert(Value::Null);
        }
    }
    Ok(table)
}

/// The error for a value at the rows pointer that is not an array; for an object, the pointers
/// of the arrays it holds, one of which is likely meant.
fn not_rows(pointer: &str, value: &Value) -> QueryError {
    let kind = match value {
        Value::Object(_) => "an object",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
        Value::Array(_) => "an array",
    };
    let mut message =
        format!("the response has {kind} at rows \"{pointer}\", not an array of rows");
    if let Value::Object(o) = value {
        let arrays: Vec<String> = o
            .iter()
            .filter(|(_, v)| v.is_array())
            .map(|(k, _)| format!("\"{pointer}/{}\"", k.replace('~', "~0").replace('/', "~1")))
            .collect();
        if !arrays.is_empty() {
            message.push_str(&format!("; set rows to one of {}", arrays.join(", ")));
        }
    }
    QueryError::Query {
        message,
        position: None,
    }
}

/// GETs the base URL and times it. Any answer below 500 counts: an API's root often answers
/// 404 or 401 while its paths work, and the status is shown either way.
pub async fn probe(settings: &HttpSettings) -> Result<Probed, String> {
    let source = Source::new(settings)?;
    let started = Instant::now();
    let response = source
        .get(source.base.clone())
        .await
        .map_err(|e| format!("{}: {e}", source.base))?;
    let round_trip = started.elapsed();
    let status = response.status();
    if status.is_server_error() {
        return Err(format!("{} answered HTTP {status}", source.base));
    }
    let server = response
        .headers()
        .get(header::SERVER)
        .and_then(|v| v.to_str().ok())
        .map(|s| format!(" {s}"))
        .unwrap_or_default();
    Ok(Probed {
        server_version: format!("HTTP {status}{server}"),
        round_trip,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::config::{ByteSize, Span};
    use crate::connector::table::Overflow;

    fn limits() -> Limits {
        Limits {
            max_rows: 1000,
            max_bytes: 1 << 20,
            timeout: Duration::from_secs(5),
            overflow: Overflow::Fail,
        }
    }

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, Bound> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Bound::Text((*v).to_owned())))
            .collect()
    }

    fn build(base: &str, text: &str, vals: &[(&str, &str)]) -> Result<Url, QueryError> {
        url(
            &Url::parse(base).unwrap(),
            &parse(text).unwrap(),
            &values(vals),
        )
    }

    #[test]
    fn text_names_its_parameters_where_written() {
        let t = parse("\n  /users/:id/orders?since=:from&id=:id\n").unwrap();
        let refs: Vec<_> = t
            .refs
            .iter()
            .map(|r| (r.name.as_str(), r.line, r.column))
            .collect();
        assert_eq!(refs, [("id", 2, 10), ("from", 2, 27), ("id", 2, 36)]);
        // Inside the text, a line break is refused like any unencoded space.
        assert_eq!(parse("/a\n?b=1").unwrap_err().line, 1);
        // A colon not followed by a name is text.
        assert!(parse("/a:/b:1?t=12:30").unwrap().refs.is_empty());
    }

    #[test]
    fn absolute_urls_fragments_and_spaces_are_refused() {
        for text in ["https://evil.example/x", "//evil.example/x", " http://x"] {
            let e = parse(text).unwrap_err();
            assert!(e.message.contains("absolute URL"), "{text}: {e}");
        }
        assert_eq!(parse("/a#frag").unwrap_err().column, 3);
        assert!(parse("/a b").is_err());
        // A path that merely contains a colon is relative.
        assert!(parse("/files/a:b").is_ok());
    }

    #[test]
    fn values_stay_one_segment_or_one_query_value() {
        let hostile = "a/../b?c=d&e";
        let u = build(
            "https://api.example.com/v2",
            "/items/:x?q=:x&limit=10",
            &[("x", hostile)],
        )
        .unwrap();
        assert_eq!(u.host_str(), Some("api.example.com"));
        assert_eq!(u.path(), "/v2/items/a%2F..%2Fb%3Fc%3Dd%26e");
        let pairs: Vec<(String, String)> = u.query_pairs().into_owned().collect();
        assert_eq!(
            pairs,
            [
                ("q".to_owned(), hostile.to_owned()),
                ("limit".to_owned(), "10".to_owned())
            ]
        );
        let u = build("http://h/", "items/:x", &[("x", "#frag %25 é+")]).unwrap();
        assert_eq!(u.as_str(), "http://h/items/%23frag%20%2525%20%C3%A9%2B");
    }

    #[test]
    fn a_value_cannot_climb_the_path() {
        for v in ["..", ".", "%2e%2E", ".%2E"] {
            // Encoded, `%` becomes `%25`: only a literal dot segment could climb.
            let r = build("http://h/api", "/items/:x/detail", &[("x", v)]);
            match v {
                ".." | "." => assert!(r.is_err(), "{v}"),
                _ => assert!(r.unwrap().path().starts_with("/api/items/"), "{v}"),
            }
        }
        // Dots inside a segment, and dots in the query, are plain data.
        let u = build("http://h/api", "/f/:x.json?p=:x", &[("x", "..")]).unwrap();
        assert_eq!((u.path(), u.query()), ("/api/f/...json", Some("p=..")));
        // The author's own `..` is the author's business.
        assert_eq!(
            build("http://h/api/v1", "/../v2/x", &[]).unwrap().path(),
            "/api/v2/x"
        );
    }

    #[test]
    fn an_empty_path_keeps_the_base() {
        let u = build("http://h/api", "?page=:p", &[("p", "2")]).unwrap();
        assert_eq!(u.as_str(), "http://h/api?page=2");
        assert_eq!(
            build("http://h/api", "", &[]).unwrap().as_str(),
            "http://h/api"
        );
        // A missing value is empty.
        assert_eq!(
            build("http://h/", "x?a=:missing", &[]).unwrap().as_str(),
            "http://h/x?a="
        );
    }

    #[test]
    fn metadata_and_link_local_addresses_are_refused() {
        for ip in [
            "169.254.169.254",
            "169.254.0.1",
            "fd00:ec2::254",
            "fe80::1",
            "100.100.100.200",
            "::ffff:169.254.169.254",
        ] {
            assert!(refused(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["127.0.0.1", "10.0.0.1", "192.168.1.1", "::1", "8.8.8.8"] {
            assert!(!refused(ip.parse().unwrap()), "{ip}");
        }
        let addr = |s: &str| SocketAddr::new(s.parse().unwrap(), 80);
        let e = permitted("meta", [addr("169.254.169.254")], false).unwrap_err();
        assert!(e.to_string().contains("allow_private_addresses"), "{e}");
        assert_eq!(
            permitted("meta", [addr("169.254.169.254")], true).unwrap(),
            [addr("169.254.169.254")]
        );
        // A name that also resolves to a refused address keeps only the others.
        assert_eq!(
            permitted("mixed", [addr("fe80::1"), addr("127.0.0.1")], false).unwrap(),
            [addr("127.0.0.1")]
        );
    }

    fn settings(base_url: &str) -> HttpSettings {
        HttpSettings {
            base_url: base_url.to_owned(),
            headers: BTreeMap::new(),
            timeout: Span::secs(5),
            allowed_hosts: Vec::new(),
            rows: String::new(),
            allow_private_addresses: false,
            max_response: ByteSize::mib(1),
        }
    }

    #[test]
    fn ip_hosts_are_checked_on_the_url() {
        let metadata = Url::parse("http://169.254.169.254/latest").unwrap();
        let mut s = settings("http://169.254.169.254/");
        let e = Reach::new(&s, &metadata).check(&metadata).unwrap_err();
        assert!(matches!(e, Blocked::Address(_)), "{e}");
        s.allow_private_addresses = true;
        assert!(Reach::new(&s, &metadata).check(&metadata).is_ok());
        let other = Url::parse("http://[fd00:ec2::254]/").unwrap();
        assert!(matches!(
            Reach::new(&s, &metadata).check(&other),
            Err(Blocked::Host(_))
        ));
        s.allowed_hosts = vec!["API.example.com".into(), "[::1]".into()];
        let reach = Reach::new(&s, &metadata);
        assert!(
            reach
                .check(&Url::parse("https://api.example.com/x").unwrap())
                .is_ok()
        );
        assert!(
            reach
                .check(&Url::parse("http://[::1]:8080/").unwrap())
                .is_ok()
        );
        assert!(reach.check(&metadata).is_err());
    }

    #[test]
    fn rows_are_found_at_the_pointer() {
        let doc = json!({"data": {"items": [{"a": 1}, {"b": "x", "a": 2}, 3]}}).to_string();
        let t = table(doc.as_bytes(), "/data/items", &limits()).unwrap();
        assert_eq!(t.columns, ["a", "b", "value"]);
        assert_eq!(t.row_count, 3);
        assert_eq!(
            serde_json::to_value(&t.rows).unwrap(),
            json!([
                {"a": 1, "b": null, "value": null},
                {"a": 2, "b": "x", "value": null},
                {"a": null, "b": null, "value": 3},
            ])
        );
        let e = table(doc.as_bytes(), "", &limits())
            .unwrap_err()
            .to_string();
        assert!(e.contains("an object at rows \"\""), "{e}");
        assert!(!e.contains("set rows"), "no array under the root: {e}");
        let e = table(doc.as_bytes(), "/data", &limits()).unwrap_err();
        assert!(e.to_string().contains("\"/data/items\""), "{e}");
        let e = table(doc.as_bytes(), "/nope", &limits()).unwrap_err();
        assert!(e.to_string().contains("nothing at rows \"/nope\""), "{e}");
        let e = table(
            b"[1, 2, 3]",
            "",
            &Limits {
                max_rows: 2,
                ..limits()
            },
        )
        .unwrap_err();
        assert!(matches!(e, QueryError::Limit(_)), "{e}");
    }

    /// One canned answer of the test server.
    struct Answer {
        status: &'static str,
        headers: Vec<(&'static str, String)>,
        body: String,
    }

    fn json_answer(body: serde_json::Value) -> Answer {
        Answer {
            status: "200 OK",
            headers: vec![("Content-Type", "application/json".into())],
            body: body.to_string(),
        }
    }

    /// A tiny HTTP/1.1 server on 127.0.0.1: each request's target and headers go to `answer`.
    async fn serve(answer: impl Fn(&str, &str) -> Answer + Send + Sync + 'static) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = Arc::new(answer);
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = socket.read(&mut buf).await.unwrap();
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buf[..n]);
                    }
                    let request = String::from_utf8_lossy(&request).into_owned();
                    let target = request.split(' ').nth(1).unwrap_or("").to_owned();
                    let header = |name: &str| {
                        request
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                            })
                            .unwrap_or_default()
                    };
                    let a = answer(&target, &header("x-key"));
                    let mut out = format!(
                        "HTTP/1.1 {}\r\nContent-Length: {}\r\nConnection: close\r\n",
                        a.status,
                        a.body.len()
                    );
                    for (k, v) in &a.headers {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    out.push_str("\r\n");
                    out.push_str(&a.body);
                    let _ = socket.write_all(out.as_bytes()).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_query_gets_json_rows_with_its_headers_and_encoded_values() {
        let addr =
            serve(|target, key| json_answer(json!({"items": [{"target": target, "key": key}]})))
                .await;
        let mut s = settings(&format!("http://localhost:{}/api", addr.port()));
        s.headers.insert("X-Key".into(), "s3cret".into());
        s.rows = "/items".into();
        s.allowed_hosts = vec!["localhost".into()];
        let t = run(
            &s,
            "/users/:id?q=:id",
            &values(&[("id", "1/2&x=y")]),
            &limits(),
        )
        .await
        .unwrap();
        assert_eq!(
            t.rows[0]["target"],
            "/api/users/1%2F2%26x%3Dy?q=1%2F2%26x%3Dy"
        );
        assert_eq!(t.rows[0]["key"], "s3cret");
        let probed = probe(&s).await.unwrap();
        assert_eq!(probed.server_version, "HTTP 200 OK");
    }

    #[tokio::test]
    async fn errors_name_the_status_and_the_body() {
        let addr = serve(|target, _| match target {
            "/missing" => Answer {
                status: "404 Not Found",
                headers: vec![],
                body: "no   such\nthing".into(),
            },
            "/html" => Answer {
                status: "200 OK",
                headers: vec![("Content-Type", "text/html".into())],
                body: "<html>".into(),
            },
            "/problem" => Answer {
                status: "200 OK",
                headers: vec![(
                    "Content-Type",
                    "application/vnd.x+json; charset=utf-8".into(),
                )],
                body: "[1]".into(),
            },
            _ => json_answer(json!(["x".repeat(4096)])),
        })
        .await;
        let s = settings(&format!("http://127.0.0.1:{}", addr.port()));
        let go = |text: &'static str| {
            let s = s.clone();
            async move { run(&s, text, &BTreeMap::new(), &limits()).await }
        };
        let e = go("/missing").await.unwrap_err();
        assert!(matches!(e, QueryError::Query { .. }), "{e:?}");
        assert!(
            e.to_string().contains("HTTP 404 Not Found: no such thing"),
            "{e}"
        );
        let e = go("/html").await.unwrap_err();
        assert!(e.to_string().contains("\"text/html\", not JSON"), "{e}");
        assert_eq!(go("/problem").await.unwrap().row_count, 1);
        let mut small = s.clone();
        small.max_response = ByteSize(1000);
        let e = run(&small, "/big", &BTreeMap::new(), &limits())
            .await
            .unwrap_err();
        assert!(matches!(e, QueryError::Limit(_)), "{e:?}");
        assert!(e.to_string().contains("max_response"), "{e}");
    }

    #[tokio::test]
    async fn headers_go_to_the_base_host_only_even_through_redirects() {
        let port = Arc::new(OnceLock::<u16>::new());
        let known = port.clone();
        let addr = serve(move |target, key| {
            let to = |location: String| Answer {
                status: "302 Found",
                headers: vec![("Location", location)],
                body: String::new(),
            };
            match target {
                "/here" => to("/echo".into()),
                "/elsewhere" => to(format!("http://localhost:{}/echo", known.get().unwrap())),
                _ => json_answer(json!([{ "key": key == "k3y" }])),
            }
        })
        .await;
        port.set(addr.port()).unwrap();
        let mut s = settings(&format!("http://127.0.0.1:{}", addr.port()));
        s.headers.insert("X-Key".into(), "k3y".into());
        s.allowed_hosts = vec!["127.0.0.1".into(), "localhost".into()];
        let key = |text: &'static str| {
            let s = s.clone();
            async move {
                let t = run(&s, text, &BTreeMap::new(), &limits()).await.unwrap();
                t.rows[0]["key"].clone()
            }
        };
        assert_eq!(key("/echo").await, json!(true));
        assert_eq!(key("/here").await, json!(true), "the same host keeps them");
        assert_eq!(
            key("/elsewhere").await,
            json!(false),
            "another host gets none"
        );
    }

    #[tokio::test]
    async fn redirects_stay_within_the_allowed_hosts_and_addresses() {
        let addr = serve(|target, _| {
            let to = |location: String| Answer {
                status: "302 Found",
                headers: vec![("Location", location)],
                body: String::new(),
            };
            match target {
                "/elsewhere" => to("http://example.com/".into()),
                "/metadata" => to("http://169.254.169.254/latest/meta-data/".into()),
                "/ok" => json_answer(json!([{"ok": true}])),
                t => {
                    // "/hop/N" redirects to "/hop/N+1", forever.
                    let n: usize = t.trim_start_matches("/hop/").parse().unwrap_or(0);
                    to(format!("/hop/{}", n + 1))
                }
            }
        })
        .await;
        let mut s = settings(&format!("http://127.0.0.1:{}", addr.port()));
        s.allowed_hosts = vec!["127.0.0.1".into(), "169.254.169.254".into()];
        let go = |s: HttpSettings, text: &'static str| async move {
            run(&s, text, &BTreeMap::new(), &limits()).await
        };
        let e = go(s.clone(), "/elsewhere").await.unwrap_err();
        assert!(e.to_string().contains("example.com is not among"), "{e}");
        let e = go(s.clone(), "/metadata").await.unwrap_err();
        assert!(
            e.to_string().contains("link-local or cloud metadata"),
            "{e}"
        );
        let e = go(s.clone(), "/hop/0").await.unwrap_err();
        assert!(e.to_string().contains("more than 5 redirects"), "{e}");
        assert_eq!(go(s, "/ok").await.unwrap().row_count, 1);
    }
}
