//! WebSocket passthrough, reconnect after failover, idle tunnels.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::lb::{Lb, ProcUpstream, TestUpstream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Sends `text` and returns the reply.
pub async fn echo(ws: &mut Ws, text: &str) -> String {
    ws.send(Message::text(text)).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return t.to_string(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no echo for {text:?}: {other:?}"),
        }
    }
}

/// Waits for the tunnel to end; how long it took.
async fn closed_within(ws: &mut Ws, bound: Duration) -> Duration {
    let start = Instant::now();
    loop {
        match tokio::time::timeout(bound, ws.next()).await {
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => {
                return start.elapsed();
            }
            Ok(Some(Ok(_))) => continue,
            Err(_) => panic!("tunnel still open after {bound:?}"),
        }
    }
}

#[tokio::test]
async fn websockets_pass_through_and_reconnect_to_the_backup_after_failover() {
    let logs = tempfile::tempdir().unwrap();
    let mut primary = ProcUpstream::start("primary", logs.path()).await;
    let backup = ProcUpstream::start("backup", logs.path()).await;
    let lb = Lb::start(&[primary.url(), format!("{} backup", backup.url())], &[]).await;
    let url = format!("ws://{}/ws", lb.addr());

    let (mut ws, response) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(echo(&mut ws, "hello").await, "primary:hello");
    assert_eq!(echo(&mut ws, "again").await, "primary:again");

    primary.kill9();
    closed_within(&mut ws, Duration::from_secs(5)).await;

    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert_eq!(
        echo(&mut ws, "hello").await,
        "backup:hello",
        "a new WebSocket connects at once, to the backup"
    );
}

#[tokio::test]
async fn idle_tunnels_close() {
    let up = TestUpstream::start("a").await;
    let lb = Lb::start(&[up.url()], &[("timeouts.tunnel_idle", "\"400ms\"")]).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", lb.addr()))
        .await
        .unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            echo(&mut ws, "ping").await,
            "a:ping",
            "traffic keeps the tunnel open"
        );
    }
    let took = closed_within(&mut ws, Duration::from_secs(3)).await;
    assert!(
        took >= Duration::from_millis(300),
        "closed after {took:?}, before the idle timeout"
    );
}
