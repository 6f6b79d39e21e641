//! Opening the one connection an agent has: TCP to the server (through TLS for `https://`,
//! verified against the system's roots plus `agent.ca_file`), then the WebSocket upgrade to
//! `/api/v1/agents/connect` with the agent's token. The agent never listens.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::{self, Error as WsError};
use url::Url;

use super::config::AgentConfig;

/// How long connecting, TLS and the upgrade may take together.
const DIAL_TIMEOUT: Duration = Duration::from_secs(15);

/// The byte stream under the WebSocket: plain TCP or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub type Socket = WebSocketStream<Box<dyn Io>>;

/// What cannot start at all: the operator must change the configuration.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("agent.ca_file {}: {reason}", path.display())]
    CaFile { path: PathBuf, reason: String },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("agent.server_url {url}: {reason}")]
    Url { url: String, reason: String },
}

/// Why one connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS with {host}: {source}")]
    Tls {
        host: String,
        source: std::io::Error,
    },
    #[error(
        "the server refused this agent's token (revoked or mistyped): create a new one with POST /api/v1/agents and set agent.token"
    )]
    TokenRefused,
    #[error("the server answered {status} instead of a WebSocket: {body}")]
    Status { status: StatusCode, body: String },
    #[error("WebSocket handshake: {0}")]
    Handshake(WsError),
    #[error("no connection within {}s", DIAL_TIMEOUT.as_secs())]
    Timeout,
}

/// Everything needed to open a connection, prepared once.
pub struct Dialer {
    url: Url,
    host: String,
    port: u16,
    tls: Option<TlsConnector>,
    authorization: HeaderValue,
    user_agent: HeaderValue,
}

impl Dialer {
    pub fn new(config: &AgentConfig) -> Result<Dialer, SetupError> {
        let base = config.server_url.as_ref().ok_or_else(|| SetupError::Url {
            url: String::new(),
            reason: "not set".into(),
        })?;
        let url = base.connect_url();
        let bad_url = |reason: &str| SetupError::Url {
            url: base.to_string(),
            reason: reason.into(),
        };
        let host = url.host_str().ok_or_else(|| bad_url("no host"))?.to_owned();
        let port = url
            .port_or_known_default()
            .ok_or_else(|| bad_url("no port"))?;
        let tls = match url.scheme() {
            "wss" => Some(TlsConnector::from(Arc::new(tls_config(
                config.ca_file.as_deref(),
            )?))),
            _ => None,
        };
        let token = config
            .token
            .as_ref()
            .map(|t| t.expose())
            .unwrap_or_default();
        let mut authorization = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| bad_url("agent.token holds characters a header cannot carry"))?;
        authorization.set_sensitive(true);
        let user_agent =
            HeaderValue::from_str(&format!("quire-agent/{}", env!("CARGO_PKG_VERSION")))
                .map_err(|_| bad_url("version"))?;
        Ok(Dialer {
            url,
            host,
            port,
            tls,
            authorization,
            user_agent,
        })
    }

    /// The URL connections go to.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Opens a connection and upgrades it.
    pub async fn dial(&self) -> Result<Socket, DialError> {
        tokio::time::timeout(DIAL_TIMEOUT, self.open())
            .await
            .map_err(|_| DialError::Timeout)?
    }

    async fn open(&self) -> Result<Socket, DialError> {
        let addr = format!("{}:{}", self.host, self.port);
        // A bracketed IPv6 host is connected to without its brackets.
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let tcp = TcpStream::connect((host, self.port))
            .await
            .map_err(|source| DialError::Connect { addr, source })?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let tls_error = |source| DialError::Tls {
                    host: host.to_owned(),
                    source,
                };
                let name = ServerName::try_from(host.to_owned())
                    .map_err(|e| tls_error(std::io::Error::other(e)))?;
                Box::new(tls.connect(name, tcp).await.map_err(tls_error)?)
            }
        };
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(DialError::Handshake)?;
        let headers = request.headers_mut();
        headers.insert(header::AUTHORIZATION, self.authorization.clone());
        headers.insert(header::USER_AGENT, self.user_agent.clone());
        let (socket, _) = tokio_tungstenite::client_async(request, stream)
            .await
            .map_err(refused)?;
        Ok(socket)
    }
}

/// A failed upgrade, said as what it means for the agent.
fn refused(e: WsError) -> DialError {
    match e {
        tungstenite::Error::Http(response) => match response.status() {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => DialError::TokenRefused,
            status => {
                let body = response.body().as_deref().unwrap_or_default();
                let text = String::from_utf8_lossy(body);
                DialError::Status {
                    status,
                    body: text.chars().take(300).collect(),
                }
            }
        },
        other => DialError::Handshake(other),
    }
}

/// ring, like the rest of Quire's TLS; the system's roots plus `ca_file`'s certificates.
fn tls_config(ca_file: Option<&Path>) -> Result<ClientConfig, SetupError> {
    let provider = Arc::new(ring::default_provider());
    let extra = match ca_file {
        Some(path) => certificates(path)?,
        None => Vec::new(),
    };
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
            .map_err(|e| SetupError::Tls(e.to_string()))?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SetupError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    // The upgrade is HTTP/1.1; a server (or lb) offering h2 must not pick it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, SetupError> {
    let error = |reason: String| SetupError::CaFile {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(e.to_string()))?;
    if certs.is_empty() {
        return Err(error("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = tls_config(Some(&empty)).unwrap_err().to_string();
        assert!(e.contains("no CERTIFICATE block"), "{e}");
        let e = tls_config(Some(&dir.path().join("missing.pem")))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("agent.ca_file"), "{e}");
    }
}
