//! Phase 1: render only, in-process (`quire::app::render::render`), with no server, process or
//! I/O around it: the floor under every other Quire number.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail, ensure};
use quire::app::render::{Artifact, FontSet, render};

use crate::fixtures::{Doc, check_embedded_data, data, job};
use crate::measure::Samples;
use crate::pdf::check_pdf;

pub(crate) struct InProcess {
    pub(crate) font_load: Duration,
    pub(crate) first_invoice: Duration,
    pub(crate) invoice: Samples,
    pub(crate) invoice_same: Samples,
    pub(crate) listing: Samples,
    pub(crate) listing_pages: usize,
    pub(crate) invoice_pdf: Vec<u8>,
    pub(crate) listing_pdf: Vec<u8>,
}

/// Renders `doc` with data `i` once, checking the result; returns the time and the PDF.
fn render_once(doc: Doc, i: usize, fonts: &FontSet) -> Result<(Duration, usize, Vec<u8>)> {
    let job = job(doc, &data(doc, i));
    let t = Instant::now();
    let out = render(&job, fonts, |_| {})
        .map_err(|e| anyhow!("the {} example does not render: {e}", doc.name()))?;
    let took = t.elapsed();
    // What a render worker does after every render, once the reply is on its way (so outside
    // the measured time, as there: src/app/render/worker.rs). Without it Typst's memo cache
    // grows with every distinct render, which no worker allows.
    comemo::evict(10);
    let Artifact::Pdf(pdf) = out.artifact else {
        bail!("asked for a PDF, got SVG");
    };
    check_pdf(&pdf, &format!("in-process {}", doc.name()))?;
    ensure!(
        doc.plausible_pages(out.pages),
        "in-process {}: {} pages is implausible",
        doc.name(),
        out.pages
    );
    Ok((took, out.pages, pdf))
}

/// The whole phase; blocking, so the caller runs it on a blocking thread.
pub(crate) fn run(warmup: usize, invoice_n: usize, listing_n: usize) -> Result<InProcess> {
    check_embedded_data()?;
    let t = Instant::now();
    let (fonts, _) = FontSet::load(None);
    let font_load = t.elapsed();
    // Render 0 is the sample; it is also the first, cold, render of this process.
    let (first_invoice, _, invoice_pdf) = render_once(Doc::Invoice, 0, &fonts)?;
    let (_, _, listing_pdf) = render_once(Doc::Listing, 0, &fonts)?;
    let mut i = 1;
    for _ in 0..warmup {
        render_once(Doc::Invoice, i, &fonts)?;
        i += 1;
    }
    let mut invoice = Samples::default();
    for _ in 0..invoice_n {
        invoice.push(render_once(Doc::Invoice, i, &fonts)?.0);
        i += 1;
    }
    // The same data every time: what Typst's memoization makes of a repeated document.
    let mut invoice_same = Samples::default();
    for _ in 0..invoice_n.min(100) {
        invoice_same.push(render_once(Doc::Invoice, 1, &fonts)?.0);
    }
    for _ in 0..warmup.min(3) {
        render_once(Doc::Listing, i, &fonts)?;
        i += 1;
    }
    let mut listing = Samples::default();
    let mut listing_pages = 0;
    for _ in 0..listing_n {
        let (took, pages, _) = render_once(Doc::Listing, i, &fonts)?;
        listing.push(took);
        listing_pages = pages;
        i += 1;
    }
    Ok(InProcess {
        font_load,
        first_invoice,
        invoice,
        invoice_same,
        listing,
        listing_pages,
        invoice_pdf,
        listing_pdf,
    })
}
