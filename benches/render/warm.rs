//! Phase 3, the common part: a long-lived renderer (Quire's server, a Chromium), one request per
//! PDF; latency at concurrency 1, then PDFs/s and CPU time under load. `http.rs` and
//! `chromium.rs` provide the two sides.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::fixtures::Doc;
use crate::measure::{Samples, group_cpu, own_cpu};
use crate::pdf::SamplePdfs;

/// Something that turns render number `i` of `doc` into a PDF; one per concurrent client.
pub(crate) trait Renderer {
    async fn render(&mut self, doc: Doc, i: usize) -> Result<Vec<u8>>;
}

pub(crate) struct Warm {
    /// Concurrency 1, after warm-up.
    pub(crate) latency: BTreeMap<Doc, Samples>,
    pub(crate) load: Load,
}

pub(crate) struct Load {
    pub(crate) clients: usize,
    pub(crate) pdfs: usize,
    pub(crate) elapsed: Duration,
    pub(crate) latency: Samples,
    /// CPU time the server side (every process of the server's or browser's group) used.
    pub(crate) server_cpu: Duration,
    /// CPU time this process (the load generator) used.
    pub(crate) client_cpu: Duration,
}

impl Load {
    pub(crate) fn per_second(&self) -> f64 {
        self.pdfs as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Render 0 is kept as the sample; `warmup` more go unmeasured; then `n` are measured.
async fn series(
    r: &mut impl Renderer,
    doc: Doc,
    warmup: usize,
    n: usize,
) -> Result<(Samples, Vec<u8>)> {
    let sample = r.render(doc, 0).await?;
    for i in 1..=warmup {
        r.render(doc, i).await?;
    }
    let mut s = Samples::default();
    for i in warmup + 1..=warmup + n {
        let t = Instant::now();
        r.render(doc, i).await?;
        s.push(t.elapsed());
    }
    Ok((s, sample))
}

/// Every client renders invoices back to back until `duration` is over.
async fn load(clients: &mut [impl Renderer], duration: Duration, group: u32) -> Result<Load> {
    let (server0, client0) = (group_cpu(group), own_cpu());
    let started = Instant::now();
    let deadline = started + duration;
    let runs = clients.iter_mut().enumerate().map(|(k, c)| async move {
        let mut lat = Vec::new();
        // Distinct data per client and render.
        let mut i = 1_000 * (k + 1);
        while Instant::now() < deadline {
            let t = Instant::now();
            c.render(Doc::Invoice, i).await?;
            lat.push(t.elapsed());
            i += 1;
        }
        Ok::<_, anyhow::Error>(lat)
    });
    let per_client = futures_util::future::try_join_all(runs).await?;
    let elapsed = started.elapsed();
    let (server1, client1) = (group_cpu(group), own_cpu());
    let latency = Samples(per_client.into_iter().flatten().collect());
    Ok(Load {
        clients: clients.len(),
        pdfs: latency.len(),
        elapsed,
        latency,
        server_cpu: server1.saturating_sub(server0),
        client_cpu: client1.saturating_sub(client0),
    })
}

/// The warm measurements of one side.
pub(crate) struct WarmRun<'a> {
    /// Names the side's sample PDFs.
    pub(crate) method: &'a str,
    pub(crate) invoices: usize,
    pub(crate) listings: usize,
    pub(crate) warmup: usize,
    pub(crate) duration: Duration,
    /// The process group whose CPU time is the side's.
    pub(crate) group: u32,
}

pub(crate) async fn measure(
    clients: &mut [impl Renderer],
    run: WarmRun<'_>,
    pdfs: &mut SamplePdfs,
) -> Result<Warm> {
    let WarmRun {
        method,
        invoices,
        listings,
        warmup,
        duration,
        group,
    } = run;
    let first = clients.first_mut().context("no clients")?;
    let (invoice, sample) = series(first, Doc::Invoice, warmup, invoices).await?;
    pdfs.add(method, Doc::Invoice, sample);
    let (listing, sample) = series(first, Doc::Listing, warmup.min(3), listings).await?;
    pdfs.add(method, Doc::Listing, sample);
    // Warm every client (a tab's first print, a connection's first request) before the clock.
    for (k, c) in clients.iter_mut().enumerate() {
        for i in 0..3 {
            c.render(Doc::Invoice, 900_000 + k * 10 + i).await?;
        }
    }
    let load = load(clients, duration, group).await?;
    Ok(Warm {
        latency: BTreeMap::from([(Doc::Invoice, invoice), (Doc::Listing, listing)]),
        load,
    })
}
