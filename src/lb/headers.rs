//! Headers that belong to one hop, not to the message: removed before a message crosses the
//! proxy. An upgrade keeps `Upgrade` and gets `Connection: upgrade` back; every other request goes
//! upstream without a `Connection` header, so the pooled upstream connection stays keep-alive
//! (the reference nginx config sends `Connection: upgrade` always and loses that).
//! `Connection` cannot name `Host`: it addresses the message, not the hop.

use hyper::http::header::{CONNECTION, EXPECT, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use hyper::http::{HeaderMap, HeaderName, HeaderValue};

/// Set by an app instance on a 503 it answered without doing anything (it was draining), and by
/// the lb on errors where no upstream received the request: safe to send again, any method.
pub static NOT_PROCESSED: HeaderName = HeaderName::from_static("quire-not-processed");

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Which side of the proxy a message is on; framing headers differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to upstream. `Transfer-Encoding` stays: hyper frames the outgoing body by it, so a
    /// chunked request body (even on GET) is sent chunked again.
    Request,
    /// Upstream to client. hyper re-frames the body itself.
    Response,
}

/// Removes hop-by-hop headers, including any the `Connection` header names except `Host`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, direction: Direction) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        // Without its Host the request would reach the app addressed to the upstream's own
        // address (the lb fills in a missing one), and `X-Forwarded-Host` would be lost too.
        .filter(|name| *name != HOST)
        .collect();
    for name in named {
        if direction == Direction::Response || name != TRANSFER_ENCODING {
            headers.remove(name);
        }
    }
    for name in [
        &CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &TE,
        &TRAILER,
        &UPGRADE,
    ] {
        headers.remove(name);
    }
    match direction {
        // The lb answers `Expect: 100-continue` itself when it starts reading the body.
        Direction::Request => headers.remove(EXPECT),
        Direction::Response => headers.remove(TRANSFER_ENCODING),
    };
}

/// The protocol a request asks to upgrade to (`Connection: upgrade` plus `Upgrade: X`).
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if asks {
        headers.get(UPGRADE).cloned()
    } else {
        None
    }
}

/// Puts `Connection: upgrade` and `Upgrade: protocol` back after stripping.
pub fn set_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, protocol);
}

/// The request id: the client's when it is short printable ASCII (an outer proxy's id keeps a
/// trace together), else a new one. Written back into `headers` for the upstream.
pub fn request_id(headers: &mut HeaderMap, name: &HeaderName) -> HeaderValue {
    if let Some(v) = headers.get(name)
        && (1..=128).contains(&v.len())
        && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
    {
        return v.clone();
    }
    // A thread-local generator: no system call per request, unlike a fresh UUID.
    let id = format!("{:032x}", rand::random::<u128>());
    let value = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("-"));
    headers.insert(name.clone(), value.clone());
    value
}

/// A header map for tests, from literal pairs.
#[cfg(test)]
pub(crate) fn test_headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[cfg(test)]
mod tests {
    use super::test_headers as headers;
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = headers(&[
            ("connection", "keep-alive, X-Secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("expect", "100-continue"),
            ("proxy-connection", "keep-alive"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, Direction::Request);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["transfer-encoding", "x-kept"]);
        strip_hop_by_hop(&mut h, Direction::Response);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }

    #[test]
    fn connection_cannot_name_host() {
        let mut h = headers(&[
            ("host", "reports.example.com"),
            ("connection", "close, Host, X-Secret"),
            ("x-secret", "1"),
        ]);
        strip_hop_by_hop(&mut h, Direction::Request);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["host"]);
        assert_eq!(h.get(HOST).unwrap(), "reports.example.com");
    }

    #[test]
    fn upgrades_are_recognised_only_with_both_headers() {
        let h = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert_eq!(upgrade_protocol(&h).unwrap(), "websocket");
        assert!(upgrade_protocol(&headers(&[("upgrade", "websocket")])).is_none());
        assert!(upgrade_protocol(&headers(&[("connection", "upgrade")])).is_none());
    }

    #[test]
    fn request_ids_are_kept_when_sane() {
        let name = HeaderName::from_static("x-request-id");
        let mut h = headers(&[("x-request-id", "abc-123")]);
        assert_eq!(request_id(&mut h, &name), "abc-123");
        let mut h = headers(&[("x-request-id", "has space")]);
        let id = request_id(&mut h, &name);
        assert_eq!(id.len(), 32);
        assert_eq!(h.get(&name), Some(&id));
    }
}
