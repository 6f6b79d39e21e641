//! A client for nats-server's monitoring endpoint: `/healthz`, `/varz`, `/routez`, `/connz`. The
//! response types keep only the fields Quire reads, all optional, so another nats-server version
//! adding or dropping a field does not break them.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("invalid monitoring URL {0}")]
    Url(String),
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: {message}")]
    Request { url: String, message: String },
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: unexpected answer: {message}")]
    Body { url: String, message: String },
}

/// The monitoring endpoint of one nats-server.
#[derive(Clone)]
pub struct Monitor {
    base: String,
    timeout: Duration,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Monitor {
    /// `base` is e.g. `http://127.0.0.1:8222`; each request gives up after `timeout`.
    pub fn new(base: &str, timeout: Duration) -> Self {
        let client = Client::builder(TokioExecutor::new()).build_http();
        Monitor {
            base: base.trim_end_matches('/').to_owned(),
            timeout,
            client,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Ok when `/healthz` answers 200.
    pub async fn healthz(&self) -> Result<(), MonitorError> {
        self.get("/healthz").await.map(drop)
    }

    pub async fn varz(&self) -> Result<Varz, MonitorError> {
        self.json("/varz").await
    }

    pub async fn routez(&self) -> Result<Routez, MonitorError> {
        self.json("/routez").await
    }

    pub async fn connz(&self) -> Result<Connz, MonitorError> {
        self.json("/connz").await
    }

    async fn json<T: DeserializeOwned>(&self, path: &str) -> Result<T, MonitorError> {
        let body = self.get(path).await?;
        serde_json::from_slice(&body).map_err(|e| MonitorError::Body {
            url: self.url(path),
            message: e.to_string(),
        })
    }

    /// The body of a 200 answer; anything else is an error carrying the status and body.
    async fn get(&self, path: &str) -> Result<Bytes, MonitorError> {
        let url = self.url(path);
        let uri: hyper::Uri = url.parse().map_err(|_| MonitorError::Url(url.clone()))?;
        let attempt = async {
            let failed = |e: &dyn std::fmt::Display| MonitorError::Request {
                url: url.clone(),
                message: e.to_string(),
            };
            let resp = self.client.get(uri).await.map_err(|e| failed(&e))?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| failed(&e))?
                .to_bytes();
            if status == 200 {
                Ok(body)
            } else {
                let body = String::from_utf8_lossy(&body).trim().to_owned();
                Err(MonitorError::Status {
                    url: url.clone(),
                    status,
                    body,
                })
            }
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .map_err(|_| MonitorError::Timeout {
                url: url.clone(),
                timeout: self.timeout,
            })?
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// `/varz`: the server's identity, settings and counters.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Varz {
    pub server_name: String,
    pub version: String,
    pub host: String,
    pub port: u16,
    pub uptime: String,
    pub connections: u64,
    pub routes: u64,
    pub max_payload: u64,
    pub cluster: VarzCluster,
    /// Changes on every successful (re)load of the config file.
    pub config_load_time: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct VarzCluster {
    pub name: Option<String>,
    pub cluster_port: u16,
    /// The configured route URLs (`host:port`).
    pub urls: Vec<String>,
}

/// `/routez`: the routes to the other nodes of the cluster.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Routez {
    pub num_routes: u64,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Route {
    pub remote_id: String,
    /// Present from nats-server 2.10 on.
    pub remote_name: Option<String>,
    pub ip: String,
    pub port: u16,
    pub rtt: Option<String>,
    pub did_solicit: bool,
}

/// `/connz`: connected clients.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Connz {
    pub num_connections: u64,
    pub connections: Vec<Connection>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Connection {
    pub cid: u64,
    pub ip: String,
    pub port: u16,
    pub name: Option<String>,
    pub lang: Option<String>,
    pub version: Option<String>,
    pub uptime: String,
    pub rtt: Option<String>,
    pub subscriptions: u64,
}
