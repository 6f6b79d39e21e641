//! The NATS transport of the bus. Publishing never waits on the network: messages go through a
//! bounded queue to one sender task, and are dropped when it is full (hints are not truth).
//! The connection retries forever in the background; while it is down the instance keeps
//! serving from the database.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{Bus, Hint};
use crate::app::model::JobEvent;

/// Messages waiting for the sender task; beyond this they are dropped.
const QUEUE: usize = 4096;
/// Repeated connection errors are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot set up the NATS connection to {servers}: {source}")]
    Connect {
        servers: String,
        source: async_nats::ConnectError,
    },
    #[error("cannot subscribe on NATS: {0}")]
    Subscribe(async_nats::SubscribeError),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Message {
    Event(JobEvent),
    WakeJobs,
    WakeLeases,
    WakeMail,
    Cache(String),
    Hint(Hint),
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    origin: String,
    message: Message,
}

pub struct Link {
    connected: Arc<AtomicBool>,
    queue: mpsc::Sender<Message>,
    client: async_nats::Client,
    prefix: String,
}

impl Link {
    pub async fn connect(bus: Bus, servers: &[String], prefix: &str) -> Result<Link, BusError> {
        let connected = Arc::new(AtomicBool::new(false));
        let cell = Arc::new(OnceLock::new());
        let options = async_nats::ConnectOptions::new()
            .name(format!("quire {}", bus.inner.origin))
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(3))
            .event_callback(events(bus.clone(), connected.clone(), cell.clone()));
        let client = async_nats::connect_with_options(servers.to_vec(), options)
            .await
            .map_err(|source| BusError::Connect {
                servers: shown(servers),
                source,
            })?;
        let _ = cell.set(client.clone());
        let subject = format!("{prefix}.bus");
        let subscription = client
            .subscribe(subject.clone())
            .await
            .map_err(BusError::Subscribe)?;
        tokio::spawn(receive(bus.clone(), subscription));
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(send(client.clone(), subject, bus.inner.origin.clone(), rx));
        Ok(Link {
            connected,
            queue,
            client,
            prefix: prefix.to_owned(),
        })
    }

    pub fn state(&self) -> &'static str {
        if self.connected.load(Ordering::Relaxed) {
            "connected"
        } else {
            "disconnected"
        }
    }

    /// The client and the subject prefix, while connected, for those who talk over NATS
    /// beyond hints (agent queries between instances).
    pub fn client(&self) -> Option<(async_nats::Client, String)> {
        self.connected
            .load(Ordering::Relaxed)
            .then(|| (self.client.clone(), self.prefix.clone()))
    }

    pub fn send(&self, msg: Message) {
        // A full queue means NATS is far behind or down: drop the hint.
        let _ = self.queue.try_send(msg);
    }
}

/// The servers for a message: a NATS URL often carries a token or a password.
fn shown(servers: &[String]) -> String {
    servers
        .iter()
        .map(|s| crate::config::redact_server(s))
        .collect::<Vec<_>>()
        .join(",")
}

/// Tracks the connection; on a reconnect every cache must be re-checked, and a lame-duck server
/// is left for another one at once.
fn events(
    bus: Bus,
    connected: Arc<AtomicBool>,
    client: Arc<OnceLock<async_nats::Client>>,
) -> impl Fn(async_nats::Event) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>>
+ Send
+ Sync
+ 'static {
    let last_log = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    move |event| {
        let bus = bus.clone();
        let connected = connected.clone();
        let last_log = last_log.clone();
        let client = client.clone();
        Box::pin(async move {
            match event {
                async_nats::Event::Connected => {
                    let was = connected.swap(true, Ordering::Relaxed);
                    tracing::info!("connected to NATS");
                    if !was {
                        bus.deliver_hint(Hint::Reconnected);
                    }
                }
                async_nats::Event::Disconnected => {
                    if connected.swap(false, Ordering::Relaxed) {
                        tracing::warn!(
                            "lost the NATS connection; working from the database until it is back"
                        );
                    }
                }
                async_nats::Event::LameDuckMode => {
                    // The client does not leave a lame-duck server by itself.
                    tracing::info!("NATS server entering lame-duck mode; moving to another server");
                    if let Some(c) = client.get().cloned() {
                        tokio::spawn(async move {
                            let _ = c.force_reconnect().await;
                        });
                    }
                }
                other => {
                    let now = started.elapsed().as_secs();
                    let last = last_log.load(Ordering::Relaxed);
                    if now >= last + LOG_EVERY.as_secs() || last == 0 {
                        last_log.store(now.max(1), Ordering::Relaxed);
                        tracing::warn!(event = %other, "NATS");
                    }
                }
            }
        })
    }
}

async fn send(
    client: async_nats::Client,
    subject: String,
    origin: String,
    mut rx: mpsc::Receiver<Message>,
) {
    while let Some(message) = rx.recv().await {
        let envelope = Envelope {
            origin: origin.clone(),
            message,
        };
        let Ok(payload) = serde_json::to_vec(&envelope) else {
            continue;
        };
        // Buffers in the client while disconnected; never awaits a flush.
        let _ = client.publish(subject.clone(), payload.into()).await;
    }
}

async fn receive(bus: Bus, mut subscription: async_nats::Subscriber) {
    while let Some(msg) = subscription.next().await {
        let Ok(envelope) = serde_json::from_slice::<Envelope>(&msg.payload) else {
            tracing::debug!("ignoring a malformed bus message");
            continue;
        };
        if envelope.origin != bus.inner.origin {
            bus.receive(envelope.message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_in_messages_show_no_credentials() {
        let servers = vec![
            "nats://s3cret-token@nats1:4222".to_owned(),
            "u:s3cret-pw@nats2:4222".to_owned(),
            "nats3:4222".to_owned(),
        ];
        assert_eq!(
            shown(&servers),
            "nats://***@nats1:4222,***@nats2:4222,nats3:4222"
        );
    }
}
