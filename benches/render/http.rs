//! Phase 3, Quire's side: `POST /api/v1/render` on a running release `quire app` with 2 render
//! workers, started by the integration-test harness just as the tests start it.

use anyhow::{Context, Result, ensure};

use crate::fixtures::{Doc, http_body};
use crate::pdf::{SamplePdfs, check_pdf};
use crate::support::app::{AppOptions, Instance};
use crate::warm::{self, Renderer, Warm, WarmRun};
use crate::{Opts, Plan};

/// One client: clones share the connection pool, as the clients of one program would.
#[derive(Clone)]
struct QuireHttp {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Renderer for QuireHttp {
    async fn render(&mut self, doc: Doc, i: usize) -> Result<Vec<u8>> {
        let resp = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(http_body(doc, i))
            .send()
            .await
            .context("POST /api/v1/render")?;
        let status = resp.status();
        let pages = resp
            .headers()
            .get("x-quire-pages")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let body = resp.bytes().await.context("reading the PDF")?;
        ensure!(
            status == reqwest::StatusCode::OK,
            "POST /api/v1/render ({}) answered {status}: {}",
            doc.name(),
            String::from_utf8_lossy(&body[..body.len().min(500)])
        );
        let what = format!("HTTP {}", doc.name());
        check_pdf(&body, &what)?;
        ensure!(
            pages.is_some_and(|p| doc.plausible_pages(p)),
            "{what}: X-Quire-Pages says {pages:?}"
        );
        Ok(body.to_vec())
    }
}

pub(crate) async fn warm(opts: &Opts, plan: &Plan, pdfs: &mut SamplePdfs) -> Result<Warm> {
    // Set here, not left to the harness's defaults (which serve the tests): the report promises
    // 2 workers, and the server is measured logging at warn. Its own process group holds the
    // render workers, whose CPU time is the server's too.
    let options = AppOptions::default()
        .env("QUIRE_RENDER__WORKERS", "2")
        .env("QUIRE_LOG__LEVEL", "warn")
        .own_group();
    let app = Instance::start(options).await;
    // A personal API token, as a program calling the API holds; the session that creates it
    // is not used for rendering.
    let token = app.client().await.token_client("render benchmark").await;
    let token = token.token().context("no API token")?.to_owned();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .context("cannot build the HTTP client")?;
    let client = QuireHttp {
        http,
        url: format!("{}/api/v1/render", app.url),
        token,
    };
    let mut clients = vec![client; opts.concurrency];
    let run = WarmRun {
        method: "quire HTTP",
        invoices: plan.http_invoice,
        listings: plan.http_listing,
        warmup: plan.warmup,
        duration: opts.duration,
        group: app.proc.pid(),
    };
    let warm = warm::measure(&mut clients, run, pdfs)
        .await
        .with_context(|| format!("quire app log:\n{}", app.proc.log_tail(30)))?;
    drop(app);
    Ok(warm)
}
