//! A real SMTP server for tests: speaks SMTP over TCP (greeting, EHLO/HELO, AUTH, MAIL, RCPT,
//! DATA with dot-unstuffing, RSET, NOOP, QUIT), keeps every accepted message, and can be told to
//! refuse recipients or be down (its port closed) and come back on the same port.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    pub data: Vec<u8>,
}

impl Received {
    pub fn message_id(&self) -> Option<String> {
        mail_parser::MessageParser::default()
            .parse(&self.data)
            .and_then(|m| m.message_id().map(|id| format!("<{id}>")))
    }
}

#[derive(Default)]
struct Shared {
    received: Vec<Received>,
    /// When set, recipients are refused with this reply (e.g. "550 5.1.1 no such user").
    refuse: Option<String>,
    /// When set, the server goes silent after the message data instead of answering.
    stall: bool,
}

pub struct SmtpSink {
    pub port: u16,
    shared: Arc<Mutex<Shared>>,
    server: Option<JoinHandle<()>>,
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        let mut sink = SmtpSink {
            port: 0,
            shared: Arc::default(),
            server: None,
        };
        sink.listen(0).await;
        sink
    }

    async fn listen(&mut self, port: u16) {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the SMTP sink");
        self.port = listener.local_addr().expect("addr").port();
        let shared = self.shared.clone();
        self.server = Some(tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                tokio::spawn(session(stream, peer, shared.clone()));
            }
        }));
    }

    /// Closes the port: connections are refused until `resume`.
    pub fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn resume(&mut self) {
        self.stop();
        // The aborted task releases the listener asynchronously.
        for _ in 0..100 {
            if TcpListener::bind(("127.0.0.1", self.port)).await.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.listen(self.port).await;
    }

    pub fn refuse_recipients(&self, reply: Option<&str>) {
        self.shared.lock().unwrap().refuse = reply.map(str::to_owned);
    }

    /// A server that takes the message and never answers (until `false`).
    pub fn stall(&self, on: bool) {
        self.shared.lock().unwrap().stall = on;
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().unwrap().received.clone()
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}?tls=none", self.port)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn session(stream: tokio::net::TcpStream, _peer: SocketAddr, shared: Arc<Mutex<Shared>>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let reply = async move |w: &mut tokio::net::tcp::OwnedWriteHalf, text: &str| {
        w.write_all(format!("{text}\r\n").as_bytes()).await.is_ok()
    };
    if !reply(&mut write, "220 quire-test-sink ESMTP").await {
        return;
    }
    let mut from = String::new();
    let mut to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let cmd = line.trim_end().to_owned();
        let upper = cmd.to_ascii_uppercase();
        let ok = if upper.starts_with("EHLO") {
            reply(
                &mut write,
                "250-quire-test-sink\r\n250-8BITMIME\r\n250-AUTH PLAIN LOGIN\r\n250 SIZE 104857600",
            )
            .await
        } else if upper.starts_with("HELO") {
            reply(&mut write, "250 quire-test-sink").await
        } else if upper.starts_with("AUTH") {
            reply(&mut write, "235 2.7.0 Authentication successful").await
        } else if upper.starts_with("MAIL FROM:") {
            from = cmd[10..].trim().to_owned();
            to.clear();
            reply(&mut write, "250 2.1.0 Ok").await
        } else if upper.starts_with("RCPT TO:") {
            let refuse = shared.lock().unwrap().refuse.clone();
            match refuse {
                Some(r) => reply(&mut write, &r).await,
                None => {
                    to.push(cmd[8..].trim().trim_matches(['<', '>']).to_owned());
                    reply(&mut write, "250 2.1.5 Ok").await
                }
            }
        } else if upper == "DATA" {
            if !reply(&mut write, "354 End data with <CR><LF>.<CR><LF>").await {
                return;
            }
            let mut data = Vec::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                let unstuffed = line.strip_prefix('.').unwrap_or(&line);
                data.extend_from_slice(unstuffed.as_bytes());
            }
            if shared.lock().unwrap().stall {
                // Hold the connection open without a word, as a wedged server does.
                let _ = lines.read_line(&mut line).await;
                return;
            }
            let n = {
                let mut s = shared.lock().unwrap();
                s.received.push(Received {
                    from: from.clone(),
                    to: to.clone(),
                    data,
                });
                s.received.len()
            };
            reply(&mut write, &format!("250 2.0.0 Ok: queued as {n}")).await
        } else if upper == "RSET" || upper == "NOOP" {
            reply(&mut write, "250 2.0.0 Ok").await
        } else if upper == "QUIT" {
            let _ = reply(&mut write, "221 2.0.0 Bye").await;
            return;
        } else {
            reply(&mut write, "502 5.5.2 Command not recognized").await
        };
        if !ok {
            return;
        }
    }
}
