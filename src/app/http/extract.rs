//! Reading requests: bodies within a per-route size limit, JSON parsed with the path of the field
//! at fault, and the client's address behind trusted proxies.

use std::net::{IpAddr, SocketAddr};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use ipnet::IpNet;
use serde::de::DeserializeOwned;

use super::problem::{ApiResult, Problem};

/// Reads the whole body, refusing more than `limit` bytes with 413 (and a body that breaks off
/// with 400).
pub async fn body(body: Body, limit: usize, limit_name: &str) -> ApiResult<Bytes> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if e.into_inner()
            .downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            Problem::too_large(
                "body",
                format!("the request body is larger than {limit} bytes ({limit_name})"),
            )
        } else {
            Problem::bad_request("body", "the request body could not be read")
        }
    })
}

/// `axum::extract::Path` whose rejection is a problem document.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> axum::extract::FromRequestParts<S> for ApiPath<T> {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Problem> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e| Problem::bad_request("path", e.body_text()))
    }
}

/// `axum::extract::Query` whose rejection is a problem document.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> axum::extract::FromRequestParts<S>
    for ApiQuery<T>
{
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Problem> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e| Problem::invalid("query", e.body_text()))
    }
}

/// Parses JSON: 415 for another content type, 400 for malformed JSON, 422 naming the field for
/// JSON of the wrong shape.
pub fn json<T: DeserializeOwned>(headers: &HeaderMap, bytes: &[u8]) -> ApiResult<T> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !is_json {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "send the body as application/json",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner();
        // serde_json reports some shape errors (a `null` where an enum belongs) as syntax
        // errors; JSON that parses on its own is well-formed, so the fault is the field's. It
        // is parsed into values, not skipped, so that strings are decoded: invalid UTF-8 and
        // lone surrogates are malformed JSON (400), whatever field they sit in.
        let well_formed = inner.classify() == serde_json::error::Category::Data
            || serde_json::from_slice::<serde_json::Value>(bytes).is_ok();
        if well_formed {
            let field = if path == "." { "body".to_owned() } else { path };
            Problem::invalid(field, inner.to_string())
        } else {
            Problem::bad_request("body", format!("malformed JSON: {inner}"))
        }
    })
}

/// The client's address: the peer, or — when the peer is a trusted proxy — the last address in
/// `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer.ip()) {
        return peer.ip();
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer.ip())
}

/// Whether the client reached us over HTTPS (directly is impossible: Quire serves plain HTTP, so
/// only a trusted proxy's `X-Forwarded-Proto` can say so).
pub fn is_https(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|n| n.contains(&peer.ip()))
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        items: Vec<Item>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Item {
        qty: u32,
        #[serde(default)]
        unit: Unit,
    }
    #[derive(Debug, Default, serde::Deserialize)]
    enum Unit {
        #[default]
        Piece,
    }

    fn json_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        h
    }

    #[test]
    fn json_errors_name_the_field() {
        let e = json::<Body>(
            &json_headers(),
            br#"{"name":"x","items":[{"qty":1},{"qty":"two"}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.field.as_deref(), Some("items[1].qty"));
        let e = json::<Body>(&json_headers(), br#"{"name":"x""#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = json::<Body>(&HeaderMap::new(), b"{}").unwrap_err();
        assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let e = json::<Body>(&json_headers(), br#"{"items":[]}"#).unwrap_err();
        assert!(e.detail.contains("missing field `name`"), "{}", e.detail);
        // Well-formed JSON with a null where an enum belongs is the field's fault, not a syntax
        // error, though serde_json classifies it as one.
        let e = json::<Body>(
            &json_headers(),
            br#"{"name":"x","items":[{"qty":1,"unit":null}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.field.as_deref(), Some("items[0].unit"));
    }

    #[test]
    fn invalid_utf8_and_lone_surrogates_are_malformed_json() {
        for body in [
            &b"{\"name\":\"\xff\",\"items\":[]}"[..],
            br#"{"name":"\ud800","items":[]}"#,
        ] {
            let e = json::<Body>(&json_headers(), body).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{}", e.detail);
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 10.0.0.7"),
        );
        let proxy: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let stranger: SocketAddr = "198.51.100.1:5000".parse().unwrap();
        assert_eq!(
            client_ip(proxy, &h, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(stranger, &h, &trusted), stranger.ip());
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(is_https(proxy, &h, &trusted));
        assert!(!is_https(stranger, &h, &trusted));
    }
}
