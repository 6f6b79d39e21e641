//! `quire healthcheck`: probes the local instance's `/readyz` (the container image has no curl).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("invalid URL {0}")]
    Url(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("request failed: {0}")]
    Request(String),
    #[error("/readyz answered {status}: {body}")]
    NotReady { status: u16, body: String },
}

/// The base URL that reaches `listen` from this host: a wildcard address becomes loopback.
pub fn local_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

/// GETs `<base>/readyz`; Ok only for a 200.
pub async fn probe(base: &str, timeout: Duration) -> Result<(), ProbeError> {
    let url = format!("{}/readyz", base.trim_end_matches('/'));
    let uri: hyper::Uri = url.parse().map_err(|_| ProbeError::Url(url.clone()))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let attempt = async {
        let resp = client
            .get(uri)
            .await
            .map_err(|e| ProbeError::Request(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        if status == 200 {
            Ok(())
        } else {
            Err(ProbeError::NotReady { status, body })
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| ProbeError::Timeout(timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_probes_loopback() {
        assert_eq!(
            local_url("0.0.0.0:8080".parse().unwrap()),
            "http://127.0.0.1:8080"
        );
        assert_eq!(local_url("[::]:9000".parse().unwrap()), "http://[::1]:9000");
        assert_eq!(
            local_url("10.0.0.5:80".parse().unwrap()),
            "http://10.0.0.5:80"
        );
    }
}
