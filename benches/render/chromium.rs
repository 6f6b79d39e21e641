//! The Chromium side: how it is started, and a minimal DevTools-protocol driver for phase 3
//! (`Page.setDocumentContent` + `Page.printToPDF`, one tab per client). Raw DevTools rather
//! than WebDriver (the tests' `support::browser`): no chromedriver in between, whose work would
//! be measured as the browser's.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::fixtures::{Doc, html};
use crate::pdf::{SamplePdfs, check_pdf};
use crate::support::Proc;
use crate::warm::{self, Renderer, Warm, WarmRun};
use crate::{Opts, Plan};

/// Flags without which headless Chromium floods this offline machine with refused connections
/// (and cannot run as root).
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// Chromium with its profile in `profile`, for the cold and the warm phase.
pub(crate) fn command(opts: &Opts, profile: &Path) -> Command {
    let mut cmd = Command::new(&opts.chromium);
    cmd.args(FLAGS)
        .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

/// One DevTools WebSocket connection, used for one request at a time.
struct Cdp {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
}

impl Cdp {
    async fn connect(url: &str) -> Result<Cdp> {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .with_context(|| format!("cannot open the DevTools socket {url}"))?;
        Ok(Cdp { ws, next_id: 0 })
    }

    /// Sends a command and waits for its answer, skipping events.
    async fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws
            .send(Message::text(msg))
            .await
            .with_context(|| format!("DevTools {method}"))?;
        loop {
            let next = tokio::time::timeout(Duration::from_secs(60), self.ws.next())
                .await
                .map_err(|_| anyhow!("DevTools {method}: no answer within 60 s"))?;
            let msg = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => bail!("DevTools {method}: {e}"),
                None => bail!("DevTools {method}: the browser closed the connection"),
            };
            let Message::Text(text) = msg else { continue };
            let mut v: Value = serde_json::from_str(text.as_str())
                .with_context(|| format!("DevTools {method}: an answer that is not JSON"))?;
            if v["id"].as_u64() != Some(id) {
                continue;
            }
            if let Some(e) = v.get("error") {
                bail!("DevTools {method}: {e}");
            }
            return Ok(v["result"].take());
        }
    }
}

/// One tab, the browser's equivalent of one client connection.
struct Tab {
    cdp: Cdp,
    frame: String,
}

impl Renderer for Tab {
    async fn render(&mut self, doc: Doc, i: usize) -> Result<Vec<u8>> {
        let html = html(doc, i)?;
        self.cdp
            .call(
                "Page.setDocumentContent",
                json!({"frameId": self.frame, "html": html}),
            )
            .await?;
        let r = self
            .cdp
            .call(
                "Page.printToPDF",
                json!({"printBackground": true, "preferCSSPageSize": true}),
            )
            .await?;
        let data = r["data"]
            .as_str()
            .context("Page.printToPDF answered without data")?;
        let pdf = base64::engine::general_purpose::STANDARD
            .decode(data)
            .context("Page.printToPDF answered with invalid base64")?;
        check_pdf(&pdf, &format!("DevTools {}", doc.name()))?;
        Ok(pdf)
    }
}

/// Phase 3, Chromium's side: a running browser, one tab per client.
pub(crate) async fn warm(
    opts: &Opts,
    plan: &Plan,
    tmp: &Path,
    pdfs: &mut SamplePdfs,
) -> Result<Warm> {
    let profile = tmp.join("chromium-warm");
    let mut cmd = command(opts, &profile);
    // Port 0: Chromium picks a free port and writes it to DevToolsActivePort in the profile.
    cmd.arg("--remote-debugging-port=0").arg("about:blank");
    // Its own process group: its helpers' CPU time is the browser's, and they die with it.
    let mut browser = Proc::spawn_group("chromium", cmd, tmp);
    let port_file = profile.join("DevToolsActivePort");
    let started = Instant::now();
    let (port, path) = loop {
        if let Ok(s) = std::fs::read_to_string(&port_file)
            && let Some((port, path)) = s.split_once('\n')
            && path.trim().starts_with("/devtools/browser/")
        {
            break (port.trim().to_owned(), path.trim().to_owned());
        }
        ensure!(
            browser.is_running(),
            "chromium exited during start:\n{}",
            browser.log_tail(30)
        );
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "chromium wrote no DevToolsActivePort within 30 s:\n{}",
            browser.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut root = Cdp::connect(&format!("ws://127.0.0.1:{port}{path}")).await?;
    let mut tabs = Vec::new();
    for _ in 0..opts.concurrency {
        let t = root
            .call("Target.createTarget", json!({"url": "about:blank"}))
            .await?;
        let id = t["targetId"]
            .as_str()
            .context("Target.createTarget answered without targetId")?;
        let mut cdp = Cdp::connect(&format!("ws://127.0.0.1:{port}/devtools/page/{id}")).await?;
        let tree = cdp.call("Page.getFrameTree", json!({})).await?;
        let frame = tree["frameTree"]["frame"]["id"]
            .as_str()
            .context("Page.getFrameTree answered without a frame id")?
            .to_owned();
        tabs.push(Tab { cdp, frame });
    }
    let run = WarmRun {
        method: "chromium DevTools",
        invoices: plan.chromium_invoice,
        listings: plan.chromium_listing,
        warmup: plan.warmup.min(5),
        duration: opts.duration,
        group: browser.pid(),
    };
    let warm = warm::measure(&mut tabs, run, pdfs)
        .await
        .with_context(|| format!("chromium log:\n{}", browser.log_tail(30)))?;
    drop(tabs);
    drop(root);
    drop(browser);
    Ok(warm)
}
