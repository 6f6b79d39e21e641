//! Optional TLS termination with rustls and the `ring` provider (no OpenSSL: the release binary is
//! static). The certificate and key are read from PEM files at start and again on SIGHUP; a reload
//! that fails keeps the old certificate, so a half-written file never takes the listener down.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;

use crate::lb::config::TlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("lb.tls.cert_file {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("lb.tls.key_file {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("lb.tls: {0}")]
    Setup(#[from] rustls::Error),
}

pub struct Tls {
    acceptor: TlsAcceptor,
    resolver: Arc<Reloadable>,
}

impl Tls {
    /// Reads the certificate and key; `None` when TLS is not configured.
    pub fn from_config(config: &TlsConfig) -> Result<Option<Tls>, TlsError> {
        let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) else {
            return Ok(None);
        };
        let provider = Arc::new(ring::default_provider());
        let key = load(cert_file, key_file, &provider)?;
        let resolver = Arc::new(Reloadable {
            current: RwLock::new(Arc::new(key)),
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
            provider: provider.clone(),
        });
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Tls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            resolver,
        }))
    }

    pub async fn accept(&self, stream: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        self.acceptor.accept(stream).await
    }

    /// Reads the files again; new handshakes use the new certificate, open connections keep theirs.
    pub fn reload(&self) -> Result<(), TlsError> {
        let r = &self.resolver;
        let key = load(&r.cert_file, &r.key_file, &r.provider)?;
        *r.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
        Ok(())
    }
}

#[derive(Debug)]
struct Reloadable {
    current: RwLock<Arc<CertifiedKey>>,
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
}

impl ResolvesServerCert for Reloadable {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

fn load(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let cert_error = |reason: String| TlsError::Cert {
        path: cert_file.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_error("no CERTIFICATE block found".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsError::Key {
        path: key_file.to_owned(),
        reason: e.to_string(),
    })?;
    CertifiedKey::from_der(certs, key, provider).map_err(|e| TlsError::Key {
        path: key_file.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.cert.pem()).unwrap();
        std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn loads_and_reloads_keeping_the_old_pair_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), "a.test");
        let config = TlsConfig {
            cert_file: Some(cert.clone()),
            key_file: Some(key.clone()),
        };
        let tls = Tls::from_config(&config).unwrap().unwrap();
        let before = tls.resolver.current.read().unwrap().cert[0].clone();

        std::fs::write(&cert, "not a certificate").unwrap();
        let err = tls.reload().unwrap_err().to_string();
        assert!(
            err.contains("lb.tls.cert_file") && err.contains("no CERTIFICATE"),
            "{err}"
        );
        assert_eq!(tls.resolver.current.read().unwrap().cert[0], before);

        let (c2, k2) = write_pair(dir.path(), "b.test");
        std::fs::rename(c2, &cert).unwrap();
        std::fs::rename(k2, &key).unwrap();
        tls.reload().unwrap();
        assert_ne!(tls.resolver.current.read().unwrap().cert[0], before);
    }

    #[test]
    fn a_key_that_does_not_match_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = write_pair(dir.path(), "a.test");
        let (_, other_key) = write_pair(dir.path(), "b.test");
        let config = TlsConfig {
            cert_file: Some(cert),
            key_file: Some(other_key),
        };
        let err = Tls::from_config(&config).err().unwrap().to_string();
        assert!(err.starts_with("lb.tls.key_file"), "{err}");
    }
}
