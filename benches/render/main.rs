//! The render benchmark behind `scripts/bench render`: does Quire render PDFs much faster than
//! the usual HTML-to-PDF route, a headless Chromium?
//!
//! One run measures Quire and Debian's headless Chromium side by side on the same content (the
//! example invoice and a 500-row listing, as Typst templates for Quire and as HTML/CSS from
//! `assets/` for Chromium) and prints a table with the ratios next to the goals:
//!
//! 1. render only, in-process (`quire::app::render::render`), warm. Goal: an invoice in
//!    < 5 ms (p50);
//! 2. cold, one process per PDF: `quire render` vs `chromium --headless --print-to-pdf`. No goal;
//!    for reference, the Typst CLI takes ~100 ms per invoice and Chromium ~500 ms;
//! 3. warm: `POST /api/v1/render` on a running release `quire app` (2 workers) vs a running
//!    Chromium driven over the DevTools protocol (`Page.setDocumentContent` +
//!    `Page.printToPDF`, one tab per client). Goals: at concurrency 1 an invoice in < 20 ms
//!    (p50), ≥ 20× a warm Chromium; under load ≥ 200 invoice PDFs/s on 2 cores, ≥ 20× the
//!    PDFs/s of Chromium.
//!
//! Every PDF is checked (header, trailer, page count where cheap; text of one sample per
//! method with pdftotext), so a broken measurement cannot look fast.
//!
//! It starts servers and browsers and takes minutes, so it is no test: it runs only when cargo
//! passes `--bench` (that is, under `cargo bench`); `cargo test --all-targets` builds it and
//! runs it without that flag, and then it returns at once.
//!
//! Layout: `fixtures.rs` (the documents and their data), one file per phase (`in_process.rs`,
//! `cold.rs`, and for the warm phase `warm.rs` with its two sides `http.rs` and `chromium.rs`),
//! `pdf.rs` (checks), `measure.rs` (percentiles, CPU time), `report.rs` (the table). Processes
//! and the `quire app` under test come from the integration-test harness (`tests/support/`), so
//! the benchmark starts them as the tests do.

#[path = "../../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

mod chromium;
mod cold;
mod fixtures;
mod http;
mod in_process;
mod measure;
mod pdf;
mod report;
mod warm;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use fixtures::Doc;
use pdf::SamplePdfs;
use report::{Facts, Report};

const USAGE: &str = "\
usage: scripts/bench render [--quick] [--concurrency N] [--duration SECS] [--chromium PATH] [--save DIR]

  --quick          a short run (fewer samples, 3 s load phases) to check the setup
  --concurrency N  clients in the throughput phase, one browser tab each (default 4)
  --duration SECS  length of each throughput phase (default 10, quick 3)
  --chromium PATH  the Chromium to compare with (default /usr/bin/chromium)
  --save DIR       keep one sample PDF per method in DIR";

pub(crate) struct Opts {
    pub(crate) quick: bool,
    pub(crate) concurrency: usize,
    pub(crate) duration: Duration,
    pub(crate) chromium: PathBuf,
    pub(crate) save: Option<PathBuf>,
}

/// How many samples each phase takes.
pub(crate) struct Plan {
    pub(crate) warmup: usize,
    pub(crate) invoice_renders: usize,
    pub(crate) listing_renders: usize,
    pub(crate) cold_runs: usize,
    pub(crate) cold_listing_runs: usize,
    pub(crate) http_invoice: usize,
    pub(crate) http_listing: usize,
    pub(crate) chromium_invoice: usize,
    pub(crate) chromium_listing: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                warmup: 5,
                invoice_renders: 60,
                listing_renders: 8,
                cold_runs: 3,
                cold_listing_runs: 2,
                http_invoice: 60,
                http_listing: 8,
                chromium_invoice: 15,
                chromium_listing: 4,
            }
        } else {
            Plan {
                warmup: 20,
                invoice_renders: 400,
                listing_renders: 40,
                cold_runs: 10,
                cold_listing_runs: 6,
                http_invoice: 400,
                http_listing: 40,
                chromium_invoice: 60,
                chromium_listing: 15,
            }
        }
    }
}

fn parse_args() -> Result<Option<Opts>> {
    let mut args = std::env::args().skip(1);
    let mut under_cargo_bench = false;
    let mut opts = Opts {
        quick: false,
        concurrency: 4,
        duration: Duration::ZERO,
        chromium: PathBuf::from("/usr/bin/chromium"),
        save: None,
    };
    let mut duration = None;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--bench" => under_cargo_bench = true,
            "--quick" => opts.quick = true,
            "--concurrency" => {
                let v = value("--concurrency")?;
                opts.concurrency = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .with_context(|| format!("--concurrency {v}: want a number from 1 to 64"))?;
            }
            "--duration" => {
                let v = value("--duration")?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| (0.5..=600.0).contains(s))
                    .with_context(|| format!("--duration {v}: want seconds from 0.5 to 600"))?;
                duration = Some(Duration::from_secs_f64(secs));
            }
            "--chromium" => opts.chromium = PathBuf::from(value("--chromium")?),
            "--save" => opts.save = Some(PathBuf::from(value("--save")?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => bail!("unknown argument \"{other}\"\n{USAGE}"),
        }
    }
    if !under_cargo_bench {
        // `cargo test --all-targets` runs bench targets without `--bench`: not a benchmark run.
        println!("render benchmark: skipped (run it with `scripts/bench render`)");
        return Ok(None);
    }
    opts.duration = duration.unwrap_or(Duration::from_secs(if opts.quick { 3 } else { 10 }));
    Ok(Some(opts))
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(Some(o)) => o,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scripts/bench render: {e:#}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("scripts/bench render: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // On Ctrl-C or SIGTERM the benchmark future is dropped, and with it the guards that kill
    // the servers and browsers it started and remove the temporary directories.
    let outcome = rt.block_on(async {
        tokio::select! {
            r = run(opts) => r,
            s = interrupted() => Err(anyhow!("{s}: stopped")),
        }
    });
    // An in-process render may still run on a blocking thread after an interrupt; do not wait.
    rt.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scripts/bench render: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without handlers the default actions apply; never resolve.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "interrupted",
        _ = term.recv() => "terminated",
    }
}

async fn run(opts: Opts) -> Result<()> {
    let plan = Plan::new(opts.quick);
    let facts = Facts::gather(&opts.chromium).await?;
    let tmp = tempfile::Builder::new()
        .prefix("quire-bench-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let tmp = tmp.path();
    eprintln!(
        "render benchmark ({} run): temporary files in {}",
        if opts.quick { "quick" } else { "full" },
        tmp.display()
    );
    let mut pdfs = SamplePdfs::default();

    eprintln!("[1/4] render only, in-process …");
    let in_process = {
        let (invoice_n, listing_n, warmup) =
            (plan.invoice_renders, plan.listing_renders, plan.warmup);
        tokio::task::spawn_blocking(move || in_process::run(warmup, invoice_n, listing_n))
            .await
            .context("the in-process render thread failed")??
    };
    pdfs.add(
        "quire in-process",
        Doc::Invoice,
        in_process.invoice_pdf.clone(),
    );
    pdfs.add(
        "quire in-process",
        Doc::Listing,
        in_process.listing_pdf.clone(),
    );

    eprintln!("[2/4] cold: one process per PDF …");
    let cold = cold::run(&opts, &plan, tmp, &mut pdfs).await?;

    eprintln!("[3/4] warm: Quire HTTP API …");
    let quire_warm = http::warm(&opts, &plan, &mut pdfs).await?;

    eprintln!("[4/4] warm: Chromium over DevTools …");
    let chromium_warm = chromium::warm(&opts, &plan, tmp, &mut pdfs).await?;

    eprintln!("checking sample PDFs …");
    let content = pdfs.verify(tmp, opts.save.as_deref()).await?;

    let report = Report {
        opts: &opts,
        facts: &facts,
        content: &content,
        in_process: &in_process,
        cold: &cold,
        quire: &quire_warm,
        chromium: &chromium_warm,
    };
    println!("{}", report.render());
    Ok(())
}
