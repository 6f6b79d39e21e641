//! `X-Forwarded-For`, `-Proto` and `-Host`. What a client says about itself is believed only when
//! the connection comes from `lb.trusted_proxies` (an outer proxy or CDN); anyone else could
//! claim any address, so their headers are replaced.

use std::net::IpAddr;

use hyper::http::header::{FORWARDED, HOST};
use hyper::http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Sets the forwarding headers for a request that arrived from `peer`; returns the address of
/// the original client as far as trusted hops tell (for the access log).
pub fn apply(headers: &mut HeaderMap, peer: IpAddr, tls: bool, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let scheme = if tls { "https" } else { "http" };
    if is_trusted(peer, trusted) {
        let chain = joined(headers, &X_FORWARDED_FOR);
        let client = original_client(chain.as_deref(), peer, trusted);
        let xff = match chain {
            Some(chain) => format!("{chain}, {peer}"),
            None => peer.to_string(),
        };
        set(headers, &X_FORWARDED_FOR, &xff);
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(scheme));
        }
        if !headers.contains_key(&X_FORWARDED_HOST) {
            copy_host(headers);
        }
        return client;
    }
    for name in [
        &X_FORWARDED_FOR,
        &X_FORWARDED_PROTO,
        &X_FORWARDED_HOST,
        &X_REAL_IP,
        &FORWARDED,
    ] {
        headers.remove(name);
    }
    set(headers, &X_FORWARDED_FOR, &peer.to_string());
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(scheme));
    copy_host(headers);
    peer
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// All values of a header joined with ", ", as a list header means.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let parts: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The rightmost address in the chain that is not a trusted proxy: the last hop we can vouch for.
fn original_client(chain: Option<&str>, peer: IpAddr, trusted: &[IpNet]) -> IpAddr {
    let Some(chain) = chain else { return peer };
    for entry in chain.rsplit(',') {
        match entry.trim().parse::<IpAddr>() {
            Ok(ip) if is_trusted(ip.to_canonical(), trusted) => continue,
            Ok(ip) => return ip.to_canonical(),
            Err(_) => return peer,
        }
    }
    peer
}

fn copy_host(headers: &mut HeaderMap) {
    match headers.get(HOST).cloned() {
        Some(host) => {
            headers.insert(X_FORWARDED_HOST.clone(), host);
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
}

fn set(headers: &mut HeaderMap, name: &HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name.clone(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::headers::test_headers as headers;

    fn get<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
        h.get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn untrusted_clients_cannot_spoof() {
        let mut h = headers(&[
            ("host", "reports.example.com"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=1.2.3.4"),
        ]);
        let client = apply(&mut h, "203.0.113.7".parse().unwrap(), false, &[]);
        assert_eq!(client, "203.0.113.7".parse::<IpAddr>().unwrap());
        assert_eq!(get(&h, "x-forwarded-for"), Some("203.0.113.7"));
        assert_eq!(get(&h, "x-forwarded-proto"), Some("http"));
        assert_eq!(get(&h, "x-forwarded-host"), Some("reports.example.com"));
        assert!(h.get("forwarded").is_none());
    }

    #[test]
    fn trusted_proxies_extend_the_chain() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = headers(&[
            ("host", "internal:8080"),
            ("x-forwarded-for", "198.51.100.9, 10.1.1.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "reports.example.com"),
        ]);
        let client = apply(&mut h, "::ffff:10.0.0.2".parse().unwrap(), false, &trusted);
        assert_eq!(client, "198.51.100.9".parse::<IpAddr>().unwrap());
        assert_eq!(
            get(&h, "x-forwarded-for"),
            Some("198.51.100.9, 10.1.1.1, 10.0.0.2")
        );
        assert_eq!(get(&h, "x-forwarded-proto"), Some("https"));
        assert_eq!(get(&h, "x-forwarded-host"), Some("reports.example.com"));
    }

    #[test]
    fn tls_sets_https_and_multiple_xff_lines_join() {
        let trusted: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        let mut h = headers(&[
            ("x-forwarded-for", "192.0.2.1"),
            ("x-forwarded-for", "192.0.2.2"),
        ]);
        apply(&mut h, "127.0.0.1".parse().unwrap(), true, &trusted);
        assert_eq!(
            get(&h, "x-forwarded-for"),
            Some("192.0.2.1, 192.0.2.2, 127.0.0.1")
        );
        assert_eq!(get(&h, "x-forwarded-proto"), Some("https"));
        assert!(
            h.get("x-forwarded-host").is_none(),
            "no Host, nothing to copy"
        );
    }
}
