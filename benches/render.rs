//! The render benchmark behind `scripts/bench render` (issue #3 item 14; goals in BRIEF §8).
//!
//! One run measures Quire and Debian's headless Chromium side by side on the same content (the
//! example invoice and a 500-row listing, as Typst templates for Quire and as HTML/CSS from
//! `benches/assets/` for Chromium) and prints a table with the ratios next to the goals:
//!
//! 1. render only, in-process (`quire::app::render::render`), warm;
//! 2. cold, one process per PDF: `quire render` vs `chromium --headless --print-to-pdf`;
//! 3. warm: `POST /api/v1/render` on a running release `quire app` (2 workers) vs a running
//!    Chromium driven over the DevTools protocol (`Page.setDocumentContent` +
//!    `Page.printToPDF`, one tab per client): latency at concurrency 1, PDFs/s under load.
//!
//! Every PDF is checked (header, trailer, page count where cheap; text of one sample per
//! method with pdftotext), so a broken measurement cannot look fast.
//!
//! It starts servers and browsers and takes minutes, so it is no test: it runs only when cargo
//! passes `--bench` (that is, under `cargo bench`); `cargo test --all-targets` builds it and
//! runs it without that flag, and then it returns at once.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use quire::app::examples::{INVOICE_DATA, INVOICE_LOGO, INVOICE_MAIN, LISTING_MAIN, listing_data};
use quire::app::render::{Artifact, FontSet, Format, Input, RenderJob, TYPST_VERSION, render};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

/// The release binary cargo built next to this benchmark.
const QUIRE: &str = env!("CARGO_BIN_EXE_quire");
const INVOICE_HTML: &str = include_str!("assets/invoice.html");
const LISTING_HTML: &str = include_str!("assets/listing.html");
const LISTING_ROWS: usize = 500;
/// Flags without which headless Chromium floods this offline machine with refused connections
/// (and cannot run as root).
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];
const ROOT_EMAIL: &str = "bench@quire.local";
const ROOT_PASSWORD: &str = "bench-password-1";

const USAGE: &str = "\
usage: scripts/bench render [--quick] [--concurrency N] [--duration SECS] [--chromium PATH] [--save DIR]

  --quick          a short run (fewer samples, 3 s load phases) to check the setup
  --concurrency N  clients in the throughput phase, one browser tab each (default 4)
  --duration SECS  length of each throughput phase (default 10, quick 3)
  --chromium PATH  the Chromium to compare with (default /usr/bin/chromium)
  --save DIR       keep one sample PDF per method in DIR";

struct Opts {
    quick: bool,
    concurrency: usize,
    duration: Duration,
    chromium: PathBuf,
    save: Option<PathBuf>,
}

/// How many samples each phase takes.
struct Plan {
    warmup: usize,
    invoice_renders: usize,
    listing_renders: usize,
    cold_runs: usize,
    cold_listing_runs: usize,
    http_invoice: usize,
    http_listing: usize,
    chromium_invoice: usize,
    chromium_listing: usize,
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
        tokio::task::spawn_blocking(move || in_process(warmup, invoice_n, listing_n))
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
    let cold = cold(&opts, &plan, tmp, &mut pdfs).await?;

    eprintln!("[3/4] warm: Quire HTTP API …");
    let quire_warm = warm_quire(&opts, &plan, tmp, &mut pdfs).await?;

    eprintln!("[4/4] warm: Chromium over DevTools …");
    let chromium_warm = warm_chromium(&opts, &plan, tmp, &mut pdfs).await?;

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

// ---------------------------------------------------------------------------------------------
// Statistics

#[derive(Debug, Clone, Default)]
struct Samples(Vec<Duration>);

impl Samples {
    fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    /// Nearest-rank percentile.
    fn pct(&self, p: f64) -> Duration {
        let mut v = self.0.clone();
        v.sort_unstable();
        if v.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    fn p50(&self) -> Duration {
        self.pct(50.0)
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

fn ratio(chromium: f64, quire: f64) -> Option<f64> {
    (quire > 0.0 && chromium > 0.0).then(|| chromium / quire)
}

// ---------------------------------------------------------------------------------------------
// The content: the same documents for both sides, varied per render

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Doc {
    Invoice,
    Listing,
}

impl Doc {
    fn name(self) -> &'static str {
        match self {
            Doc::Invoice => "invoice",
            Doc::Listing => "listing",
        }
    }
}

static INVOICE: LazyLock<Value> =
    LazyLock::new(|| serde_json::from_str(INVOICE_DATA).unwrap_or(Value::Null));
static LISTING: LazyLock<Value> = LazyLock::new(|| listing_data(LISTING_ROWS));

/// The data of render number `i`. Render 0 uses the example data as is (its PDF is the sample
/// whose text is checked); later ones change the invoice number and a quantity (so the totals),
/// or the listing's title and every amount, because a long-lived Typst process memoizes: with
/// identical data a warm render would mostly replay cached work, which real traffic does not.
fn data(doc: Doc, i: usize) -> Value {
    match doc {
        Doc::Invoice => {
            let mut d = INVOICE.clone();
            if i > 0 {
                d["number"] = json!(format!("2026-{:05}", i % 100_000));
                d["items"][1]["quantity"] = json!(1 + i % 40);
            }
            d
        }
        Doc::Listing => {
            let mut d = LISTING.clone();
            if i > 0 {
                d["title"] = json!(format!("Customer orders, batch {i}"));
                let cents = (i % 97) as f64 / 100.0;
                if let Some(rows) = d["rows"].as_array_mut() {
                    for r in rows {
                        r["amount"] = json!(r["amount"].as_f64().unwrap_or(0.0) + cents);
                    }
                }
            }
            d
        }
    }
}

fn check_embedded_data() -> Result<()> {
    ensure!(
        INVOICE["items"].as_array().is_some_and(|a| a.len() > 1),
        "the example invoice data (src/app/examples/invoice/data.json) has changed shape: \
         benches/render.rs needs an update"
    );
    Ok(())
}

/// The job Quire's server would build for the example templates with default parameters.
fn job(doc: Doc, data: &Value) -> RenderJob {
    let file = |name: &str, text: &str| (name.to_owned(), text.as_bytes().to_vec());
    let (files, inputs) = match doc {
        Doc::Invoice => (
            vec![
                file("main.typ", INVOICE_MAIN),
                file("logo.svg", INVOICE_LOGO),
            ],
            BTreeMap::from([
                ("title".to_owned(), Input::Str("Invoice".into())),
                ("show_notes".to_owned(), Input::Bool(true)),
            ]),
        ),
        Doc::Listing => (
            vec![file("main.typ", LISTING_MAIN)],
            BTreeMap::from([("status".to_owned(), Input::Str("all".into()))]),
        ),
    };
    RenderJob {
        entry: "main.typ".into(),
        files,
        data: serde_json::to_vec(data).unwrap_or_default(),
        inputs,
        format: Format::Pdf,
    }
}

/// The body of `POST /api/v1/render`.
fn http_body(doc: Doc, i: usize) -> Vec<u8> {
    let body = json!({"template": doc.name(), "data": data(doc, i), "parameters": {}});
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The HTML Chromium prints for render number `i`.
fn html(doc: Doc, i: usize) -> Result<String> {
    let d = data(doc, i);
    match doc {
        Doc::Invoice => invoice_html(&d),
        Doc::Listing => listing_html(&d),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A value for inside a double-quoted CSS string in a <style> element.
fn escape_css(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            // `<` could close the <style> element; control characters end the string.
            '<' | '\n' | '\r' | '\u{c}' => {
                let _ = write!(out, "\\{:x} ", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// The invoice template's `money`: "EUR 1,234.50".
fn money_grouped(currency: &str, amount: f64) -> String {
    let cents = (amount * 100.0).round() as i64;
    let whole = (cents / 100).to_string();
    let mut grouped = String::new();
    for (k, c) in whole.chars().enumerate() {
        if k > 0 && (whole.len() - k).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{currency} {grouped}.{:02}", cents % 100)
}

/// The listing template's `money`: "1234.50".
fn money_plain(amount: f64) -> String {
    let cents = (amount * 100.0).round() as i64;
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// Typst prints a float without a fractional part as an integer ("20", not "20.0").
fn typst_float(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x}")
    }
}

/// Replaces `{{name}}` in `template` in one pass (so a value is never expanded again).
fn fill(template: &str, vars: &[(&str, String)]) -> Result<String> {
    let mut out = String::with_capacity(template.len() * 2);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .context("an unclosed {{ in a benchmark HTML template")?;
        let name = &after[..end];
        let (_, value) = vars
            .iter()
            .find(|(k, _)| *k == name)
            .with_context(|| format!("no value for {{{{{name}}}}} in a benchmark HTML template"))?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn invoice_html(d: &Value) -> Result<String> {
    let currency = text(&d["currency"]);
    let money = |x: f64| escape_html(&money_grouped(&currency, x));
    let mut items = String::new();
    let mut subtotal = 0.0;
    for it in d["items"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let (qty, unit) = (num(&it["quantity"]), num(&it["unit_price"]));
        subtotal += qty * unit;
        let _ = writeln!(
            items,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape_html(&text(&it["description"])),
            escape_html(&typst_float(qty)),
            money(unit),
            money(qty * unit),
        );
    }
    let rate = num(&d["tax_rate"]);
    let tax = subtotal * rate;
    let notes = match &d["notes"] {
        Value::Null => String::new(),
        n => format!("<div class=\"notes\">{}</div>", escape_html(&text(n))),
    };
    let seller = &d["seller"];
    let customer = &d["customer"];
    let h = |v: &Value| escape_html(&text(v));
    fill(
        INVOICE_HTML,
        &[
            ("title", "Invoice".into()),
            ("number", h(&d["number"])),
            ("date", h(&d["date"])),
            ("due", h(&d["due"])),
            ("logo", INVOICE_LOGO.trim().to_owned()),
            (
                "footer",
                escape_css(&format!(
                    "{} · {}",
                    text(&seller["name"]),
                    text(&seller["address"])
                )),
            ),
            ("seller_name", h(&seller["name"])),
            ("seller_address", h(&seller["address"])),
            ("customer_name", h(&customer["name"])),
            ("customer_address", h(&customer["address"])),
            ("items", items),
            ("subtotal", money(subtotal)),
            (
                "tax_rate",
                escape_html(&typst_float((rate * 1000.0).round() / 10.0)),
            ),
            ("tax", money(tax)),
            ("total", money(subtotal + tax)),
            ("notes", notes),
        ],
    )
}

fn listing_html(d: &Value) -> Result<String> {
    let rows = d["rows"].as_array().map(Vec::as_slice).unwrap_or_default();
    let mut body = String::with_capacity(rows.len() * 120);
    let mut sum = 0.0;
    for r in rows {
        sum += num(&r["amount"]);
        let _ = writeln!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape_html(&text(&r["id"])),
            escape_html(&text(&r["customer"])),
            escape_html(&text(&r["date"])),
            escape_html(&text(&r["status"])),
            money_plain(num(&r["amount"])),
        );
    }
    let title = text(&d["title"]);
    fill(
        LISTING_HTML,
        &[
            ("title", escape_html(&title)),
            ("title_css", escape_css(&title)),
            ("status_css", "all".into()),
            ("count", rows.len().to_string()),
            ("currency", escape_html(&text(&d["currency"]))),
            ("sum", money_plain(sum)),
            ("rows", body),
        ],
    )
}

// ---------------------------------------------------------------------------------------------
// PDF checks

/// A cheap check of every PDF a measurement produces: a whole PDF file, not an error page.
fn check_pdf(bytes: &[u8], what: &str) -> Result<()> {
    ensure!(
        bytes.starts_with(b"%PDF-"),
        "{what}: the output is not a PDF (starts with {:?})",
        String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
    );
    let tail = &bytes[bytes.len().saturating_sub(64)..];
    ensure!(
        tail.windows(5).any(|w| w == b"%%EOF"),
        "{what}: the PDF is truncated (no %%EOF at its end)"
    );
    ensure!(
        bytes.len() > 1000,
        "{what}: a {}-byte PDF cannot hold the document",
        bytes.len()
    );
    Ok(())
}

/// One PDF per method and document, checked in depth at the end.
#[derive(Default)]
struct SamplePdfs(BTreeMap<(Doc, String), Vec<u8>>);

/// What the sample PDFs hold.
struct Content {
    /// Pages per (document, method).
    pages: BTreeMap<(Doc, String), usize>,
    /// Why a deeper check was skipped (no poppler-utils).
    note: Option<String>,
}

impl SamplePdfs {
    fn add(&mut self, method: &str, doc: Doc, pdf: Vec<u8>) {
        self.0.insert((doc, method.to_owned()), pdf);
    }

    /// Page counts with pdfinfo and expected texts with pdftotext, for every sample.
    async fn verify(&self, tmp: &Path, save: Option<&Path>) -> Result<Content> {
        let dir = tmp.join("samples");
        std::fs::create_dir_all(&dir).context("cannot create the samples directory")?;
        if let Some(save) = save {
            std::fs::create_dir_all(save)
                .with_context(|| format!("cannot create {}", save.display()))?;
        }
        let have_poppler = Command::new("pdfinfo")
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok();
        let mut content = Content {
            pages: BTreeMap::new(),
            note: (!have_poppler).then(|| {
                "pdfinfo/pdftotext missing (apt-get install poppler-utils): \
                 page counts and texts not checked"
                    .to_owned()
            }),
        };
        let listing_last = format!("{}", 10_000 + LISTING_ROWS);
        for ((doc, method), pdf) in &self.0 {
            let name = format!("{}-{}.pdf", doc.name(), method.replace(' ', "-"));
            let path = dir.join(&name);
            std::fs::write(&path, pdf).with_context(|| format!("cannot write {name}"))?;
            if let Some(save) = save {
                std::fs::write(save.join(&name), pdf)
                    .with_context(|| format!("cannot write {}", save.join(&name).display()))?;
            }
            if !have_poppler {
                continue;
            }
            let what = format!("{} PDF from {method}", doc.name());
            let info = command_text("pdfinfo", &[path.as_os_str()]).await?;
            let pages: usize = info
                .lines()
                .find_map(|l| l.strip_prefix("Pages:"))
                .and_then(|p| p.trim().parse().ok())
                .with_context(|| format!("{what}: pdfinfo cannot read it:\n{info}"))?;
            let text = command_text(
                "pdftotext",
                &["-layout".as_ref(), path.as_os_str(), "-".as_ref()],
            )
            .await?;
            let expect: &[&str] = match doc {
                Doc::Invoice => &[
                    "Northwind Traders GmbH",
                    "Typst template development",
                    "EUR 3,216.60",
                    "Payable within 30 days",
                    "Page 1 of 1",
                ],
                Doc::Listing => &["Customer orders", "Fabrikam Industries", &listing_last],
            };
            for want in expect {
                ensure!(
                    text.contains(want),
                    "{what}: its text lacks \"{want}\", so it is not the benchmark document"
                );
            }
            match doc {
                Doc::Invoice => ensure!(pages == 1, "{what}: {pages} pages, want 1"),
                Doc::Listing => ensure!(
                    (5..=40).contains(&pages),
                    "{what}: {pages} pages for {LISTING_ROWS} rows is implausible"
                ),
            }
            content.pages.insert((*doc, method.clone()), pages);
        }
        Ok(content)
    }
}

async fn command_text(program: &str, args: &[&std::ffi::OsStr]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("cannot run {program}"))?;
    ensure!(
        out.status.success(),
        "{program} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// ---------------------------------------------------------------------------------------------
// 1. Render only, in-process

struct InProcess {
    font_load: Duration,
    first_invoice: Duration,
    invoice: Samples,
    invoice_same: Samples,
    listing: Samples,
    listing_pages: usize,
    invoice_pdf: Vec<u8>,
    listing_pdf: Vec<u8>,
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
    let pages_ok = match doc {
        Doc::Invoice => out.pages == 1,
        Doc::Listing => out.pages > 3,
    };
    ensure!(
        pages_ok,
        "in-process {}: {} pages is implausible",
        doc.name(),
        out.pages
    );
    Ok((took, out.pages, pdf))
}

fn in_process(warmup: usize, invoice_n: usize, listing_n: usize) -> Result<InProcess> {
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

// ---------------------------------------------------------------------------------------------
// Processes

/// A process started in its own process group; the whole group (a server and its render
/// workers, a browser and its helpers) is killed when this is dropped, however the benchmark
/// ends.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Result<Proc> {
        let out = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone().context("cannot share the log file")?;
        cmd.process_group(0)
            .kill_on_drop(true)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
            log,
        })
    }

    /// Its pid, which is also its process group id.
    fn pid(&self) -> u32 {
        self.child.id().unwrap_or_default()
    }

    /// Waits for the process to exit by itself.
    async fn wait(&mut self) -> Result<std::process::ExitStatus> {
        self.child
            .wait()
            .await
            .with_context(|| format!("cannot wait for {}", self.name))
    }

    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// The end of its log, to explain a failure.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id().and_then(|id| i32::try_from(id).ok())
            && let Some(pid) = rustix::process::Pid::from_raw(pid)
        {
            // The group id is the leader's pid (process_group(0)); helpers that outlived it
            // are in the group too.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.start_kill();
    }
}

fn quire_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(QUIRE);
    // Nothing from the caller's shell (QUIRE_*, NOTIFY_SOCKET) changes what is measured.
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(args);
    cmd
}

fn chromium_command(opts: &Opts, profile: &Path) -> Command {
    let mut cmd = Command::new(&opts.chromium);
    cmd.args(CHROMIUM_FLAGS)
        .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(l.local_addr()?.port())
}

// ---------------------------------------------------------------------------------------------
// 2. Cold: one process per PDF

struct Cold {
    quire: BTreeMap<Doc, Samples>,
    chromium: BTreeMap<Doc, Samples>,
}

async fn cold(opts: &Opts, plan: &Plan, tmp: &Path, pdfs: &mut SamplePdfs) -> Result<Cold> {
    let dir = tmp.join("cold");
    let write = |path: PathBuf, bytes: &[u8]| {
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))
    };
    std::fs::create_dir_all(dir.join("invoice")).context("cannot create the cold directory")?;
    std::fs::create_dir_all(dir.join("listing")).context("cannot create the cold directory")?;
    write(dir.join("invoice/main.typ"), INVOICE_MAIN.as_bytes())?;
    write(dir.join("invoice/logo.svg"), INVOICE_LOGO.as_bytes())?;
    write(dir.join("listing/main.typ"), LISTING_MAIN.as_bytes())?;
    let mut result = Cold {
        quire: BTreeMap::new(),
        chromium: BTreeMap::new(),
    };
    for doc in [Doc::Invoice, Doc::Listing] {
        let runs = match doc {
            Doc::Invoice => plan.cold_runs,
            Doc::Listing => plan.cold_listing_runs,
        };
        let name = doc.name();
        let data_file = dir.join(format!("{name}.json"));
        let html_file = dir.join(format!("{name}.html"));
        write(data_file.clone(), &serde_json::to_vec(&data(doc, 0))?)?;
        write(html_file.clone(), html(doc, 0)?.as_bytes())?;
        // One unmeasured run each, so the binaries and fonts are in the page cache, as they
        // would be on a server that renders all day.
        let mut quire = Samples::default();
        for run in 0..=runs {
            let out = dir.join(format!("quire-{name}-{run}.pdf"));
            let mut cmd = quire_command(&["render"]);
            cmd.arg(dir.join(name))
                .arg("--data")
                .arg(&data_file)
                .arg("-o")
                .arg(&out)
                .env("QUIRE_DATA_DIR", dir.join("quire-data"))
                .env("QUIRE_LOG__LEVEL", "warn");
            let took = time_process("quire render", cmd, &dir.join("quire-render.log")).await?;
            let pdf = read_pdf(&out, &format!("quire render {name}"))?;
            if run == 0 {
                pdfs.add("quire render", doc, pdf);
            } else {
                quire.push(took);
            }
        }
        let mut chromium = Samples::default();
        for run in 0..=runs {
            let out = dir.join(format!("chromium-{name}-{run}.pdf"));
            // A fresh profile per run: what a one-off `chromium --print-to-pdf` gets.
            let mut cmd = chromium_command(opts, &dir.join(format!("profile-{name}-{run}")));
            cmd.arg("--no-pdf-header-footer")
                .arg(format!("--print-to-pdf={}", out.display()))
                .arg(format!("file://{}", html_file.display()));
            let took = time_process("chromium", cmd, &dir.join("chromium.log")).await?;
            let pdf = read_pdf(&out, &format!("chromium --print-to-pdf {name}"))?;
            if run == 0 {
                pdfs.add("chromium --print-to-pdf", doc, pdf);
            } else {
                chromium.push(took);
            }
        }
        result.quire.insert(doc, quire);
        result.chromium.insert(doc, chromium);
    }
    Ok(result)
}

/// Runs a command to completion and returns how long it took from spawn to exit.
async fn time_process(name: &str, cmd: Command, log: &Path) -> Result<Duration> {
    let started = Instant::now();
    let mut p = Proc::spawn(name, cmd, log.to_path_buf())?;
    let status = tokio::time::timeout(Duration::from_secs(120), p.wait())
        .await
        .map_err(|_| anyhow!("{name} did not finish within 120 s"))??;
    let took = started.elapsed();
    ensure!(
        status.success(),
        "{name} failed ({status}):\n{}",
        p.log_tail()
    );
    Ok(took)
}

fn read_pdf(path: &Path, what: &str) -> Result<Vec<u8>> {
    let pdf = std::fs::read(path).with_context(|| format!("{what} wrote no {}", path.display()))?;
    check_pdf(&pdf, what)?;
    Ok(pdf)
}

// ---------------------------------------------------------------------------------------------
// 3. Warm: a long-lived renderer, one request per PDF

/// Something that turns render number `i` of `doc` into a PDF; one per concurrent client.
trait Renderer {
    async fn render(&mut self, doc: Doc, i: usize) -> Result<Vec<u8>>;
}

struct Warm {
    /// Concurrency 1, after warm-up.
    latency: BTreeMap<Doc, Samples>,
    load: Load,
}

struct Load {
    clients: usize,
    pdfs: usize,
    elapsed: Duration,
    latency: Samples,
    /// CPU time the server side (every process of the server's or browser's group) used.
    server_cpu: Duration,
    /// CPU time this process (the load generator) used.
    client_cpu: Duration,
}

impl Load {
    fn per_second(&self) -> f64 {
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

/// Linux reports process times in USER_HZ, which is 100 on every architecture it supports.
const TICK: Duration = Duration::from_millis(10);

/// The CPU time (user + system, plus that of reaped children) of every process in process
/// group `pgid`. CPU time holds up on a machine shared with other work, where wall time does
/// not: a busy neighbour slows both sides down, but costs neither of them CPU time.
fn group_cpu(pgid: u32) -> Duration {
    let mut ticks = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue; // exited meanwhile
        };
        if let Some((pgrp, t)) = stat_times(&stat)
            && pgrp == pgid
        {
            ticks += t;
        }
    }
    TICK * ticks
}

/// CPU time of this process (all threads).
fn own_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    TICK * stat_times(&stat).map_or(0, |(_, t)| t)
}

/// The process group and utime + stime + cutime + cstime from a /proc/PID/stat line.
fn stat_times(stat: &str) -> Option<(u32, u32)> {
    // The command name (field 2) may hold spaces and parentheses; what follows its closing
    // parenthesis starts with field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u32>().ok());
    // Field 5 is the process group, fields 14 to 17 the times.
    let pgrp = num(5 - 3)?;
    let t = num(14 - 3)? + num(15 - 3)? + num(16 - 3)? + num(17 - 3)?;
    Some((pgrp, t))
}

/// The warm measurements of one side.
struct WarmRun<'a> {
    /// Names the side's sample PDFs.
    method: &'a str,
    invoices: usize,
    listings: usize,
    warmup: usize,
    duration: Duration,
    /// The process group whose CPU time is the side's.
    group: u32,
}

async fn measure_warm(
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

// --- Quire over HTTP

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
        let plausible = match (doc, pages) {
            (Doc::Invoice, Some(p)) => p == 1,
            (Doc::Listing, Some(p)) => p > 3,
            (_, None) => false,
        };
        ensure!(plausible, "{what}: X-Quire-Pages says {pages:?}");
        Ok(body.to_vec())
    }
}

async fn warm_quire(opts: &Opts, plan: &Plan, tmp: &Path, pdfs: &mut SamplePdfs) -> Result<Warm> {
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let mut cmd = quire_command(&["app"]);
    cmd.env("QUIRE_DATA_DIR", tmp.join("app-data"))
        .env("QUIRE_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("QUIRE_ROOT_USER__EMAIL", ROOT_EMAIL)
        .env("QUIRE_ROOT_USER__PASSWORD", ROOT_PASSWORD)
        .env("QUIRE_RENDER__WORKERS", "2")
        .env("QUIRE_LOG__LEVEL", "warn");
    let mut app = Proc::spawn("quire app", cmd, tmp.join("quire-app.log"))?;
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .pool_max_idle_per_host(64)
        .build()
        .context("cannot build the HTTP client")?;

    let ready = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status() == reqwest::StatusCode::OK
        {
            break;
        }
        ensure!(
            !app.exited(),
            "quire app exited during start:\n{}",
            app.log_tail()
        );
        ensure!(
            Instant::now() < ready,
            "quire app was not ready within 60 s:\n{}",
            app.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let login = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": ROOT_EMAIL, "password": ROOT_PASSWORD}))
        .send()
        .await
        .context("login")?;
    ensure!(login.status().is_success(), "login: {}", login.status());
    let login: Value = login.json().await.context("login answer")?;
    let csrf = login["csrf_token"]
        .as_str()
        .context("login answer without csrf_token")?;
    let token = http
        .post(format!("{base}/api/v1/tokens"))
        .header("x-csrf-token", csrf)
        .json(&json!({"name": "render benchmark"}))
        .send()
        .await
        .context("token creation")?;
    let status = token.status();
    let token: Value = token.json().await.context("token answer")?;
    ensure!(status.is_success(), "token creation: {status}: {token}");
    let token = token["token"]
        .as_str()
        .context("token answer without token")?
        .to_owned();

    let client = QuireHttp {
        http,
        url: format!("{base}/api/v1/render"),
        token,
    };
    let mut clients = vec![client; opts.concurrency];
    let run = WarmRun {
        method: "quire HTTP",
        invoices: plan.http_invoice,
        listings: plan.http_listing,
        warmup: plan.warmup,
        duration: opts.duration,
        group: app.pid(),
    };
    let warm = measure_warm(&mut clients, run, pdfs)
        .await
        .with_context(|| format!("quire app log:\n{}", app.log_tail()))?;
    drop(app);
    Ok(warm)
}

// --- Chromium over DevTools

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

async fn warm_chromium(
    opts: &Opts,
    plan: &Plan,
    tmp: &Path,
    pdfs: &mut SamplePdfs,
) -> Result<Warm> {
    let profile = tmp.join("chromium-warm");
    let mut cmd = chromium_command(opts, &profile);
    // Port 0: Chromium picks a free port and writes it to DevToolsActivePort in the profile.
    cmd.arg("--remote-debugging-port=0").arg("about:blank");
    let mut browser = Proc::spawn("chromium", cmd, tmp.join("chromium-warm.log"))?;
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
            !browser.exited(),
            "chromium exited during start:\n{}",
            browser.log_tail()
        );
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "chromium wrote no DevToolsActivePort within 30 s:\n{}",
            browser.log_tail()
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
    let warm = measure_warm(&mut tabs, run, pdfs)
        .await
        .with_context(|| format!("chromium log:\n{}", browser.log_tail()))?;
    drop(tabs);
    drop(root);
    drop(browser);
    Ok(warm)
}

// ---------------------------------------------------------------------------------------------
// Machine facts and the report

struct Facts {
    cores: usize,
    cpu: String,
    kernel: String,
    load: String,
    quire: String,
    rustc: String,
    chromium: String,
}

impl Facts {
    async fn gather(chromium: &Path) -> Result<Facts> {
        let first_line = |s: String| s.lines().next().unwrap_or("").trim().to_owned();
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_else(|| "unknown CPU".into());
        let chromium_version = command_text(&chromium.to_string_lossy(), &["--version".as_ref()])
            .await
            .with_context(|| {
                format!(
                    "{} is needed for the comparison (apt-get install -y chromium chromium-driver, \
                     or --chromium PATH)",
                    chromium.display()
                )
            })?;
        Ok(Facts {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu,
            kernel: first_line(
                std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default(),
            ),
            load: loadavg(),
            quire: first_line(command_text(QUIRE, &["version".as_ref()]).await?),
            rustc: first_line(
                command_text("rustc", &["-V".as_ref()])
                    .await
                    .unwrap_or_else(|_| "rustc (unknown)".into()),
            ),
            chromium: first_line(chromium_version),
        })
    }
}

/// The 1, 5 and 15 minute load averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

struct Report<'a> {
    opts: &'a Opts,
    facts: &'a Facts,
    content: &'a Content,
    in_process: &'a InProcess,
    cold: &'a Cold,
    quire: &'a Warm,
    chromium: &'a Warm,
}

const W_LABEL: usize = 44;
const W_VALUE: usize = 13;
const W_RATIO: usize = 10;

impl Report<'_> {
    fn render(&self) -> String {
        let mut o = String::new();
        let f = self.facts;
        let _ = writeln!(
            o,
            "\nQuire render benchmark ({} run)",
            if self.opts.quick { "quick" } else { "full" }
        );
        let _ = writeln!(
            o,
            "machine   {} cores, {}, Linux {}, load average at start {}",
            f.cores, f.cpu, f.kernel, f.load
        );
        let _ = writeln!(
            o,
            "versions  {} (Typst {TYPST_VERSION}, release build), {}, {}",
            f.quire, f.rustc, f.chromium
        );
        let pages = |doc: Doc| {
            let counts: Vec<String> = self
                .content
                .pages
                .iter()
                .filter(|((d, _), _)| *d == doc)
                .map(|((_, m), p)| format!("{m} {p}"))
                .collect();
            if counts.is_empty() {
                "not checked".to_owned()
            } else {
                counts.join(", ")
            }
        };
        let _ = writeln!(o, "pages     invoice: {}", pages(Doc::Invoice));
        let _ = writeln!(
            o,
            "          listing ({LISTING_ROWS} rows): {}",
            pages(Doc::Listing)
        );
        let busy_at = |load: &str| {
            load.split_whitespace()
                .next()
                .and_then(|l| l.parse::<f64>().ok())
                .is_some_and(|l| l > f.cores as f64 / 2.0)
        };
        // Only the load before the run tells: the run itself keeps both cores busy.
        if busy_at(&f.load) {
            let _ = writeln!(
                o,
                "WARNING   other processes were using the CPU (load average {} on {} cores at \
                 start): the numbers are pessimistic for both sides",
                f.load, f.cores
            );
        }
        if let Some(note) = &self.content.note {
            let _ = writeln!(o, "note      {note}");
        }
        let _ = writeln!(
            o,
            "ratios    speed-up = Chromium time ÷ Quire time; for PDFs/s, Quire rate ÷ Chromium rate"
        );
        let _ = writeln!(
            o,
            "data      varied per render (invoice number and a quantity; listing title and \
             amounts), except where it says \"identical\""
        );
        o.push('\n');
        let header = format!(
            "{:<W_LABEL$}{:>W_VALUE$}{:>W_VALUE$}{:>W_RATIO$}   goal (BRIEF §8)",
            "", "Quire", "Chromium", "speed-up"
        );
        let _ = writeln!(o, "{header}");
        let _ = writeln!(o, "{}", "-".repeat(header.chars().count() + 20));

        let ip = self.in_process;
        let t = |d: Duration| Some(ms(d));
        let speedup = |c: Duration, q: Duration| ratio(c.as_secs_f64(), q.as_secs_f64());
        section(&mut o, "render only, in-process, warm");
        let inv = &ip.invoice;
        let met = inv.p50() < Duration::from_millis(5);
        row(
            &mut o,
            "invoice p50",
            t(inv.p50()),
            None,
            None,
            &goal(met, "p50 < 5 ms"),
        );
        row(&mut o, "invoice p95", t(inv.pct(95.0)), None, None, "");
        let same = ip.invoice_same.p50();
        row(
            &mut o,
            "invoice p50, identical data",
            t(same),
            None,
            None,
            "",
        );
        let listing = format!("listing p50 ({} pages)", ip.listing_pages);
        row(&mut o, &listing, t(ip.listing.p50()), None, None, "");
        row(
            &mut o,
            "listing p95",
            t(ip.listing.pct(95.0)),
            None,
            None,
            "",
        );
        row(&mut o, "font load", t(ip.font_load), None, None, "");
        let first = "first invoice after font load";
        row(&mut o, first, t(ip.first_invoice), None, None, "");

        section(
            &mut o,
            "cold, a process per PDF: `quire render` | `chromium --print-to-pdf`",
        );
        for doc in [Doc::Invoice, Doc::Listing] {
            let (q, c) = (self.cold.quire[&doc].p50(), self.cold.chromium[&doc].p50());
            let goal = match doc {
                Doc::Invoice => "ref: Typst CLI ~100 ms, Chromium ~500 ms",
                Doc::Listing => "",
            };
            let label = format!("{} p50", doc.name());
            row(&mut o, &label, t(q), t(c), speedup(c, q), goal);
        }

        let (q, c) = (self.quire, self.chromium);
        section(
            &mut o,
            "warm, concurrency 1: HTTP POST /api/v1/render (2 workers) | DevTools Page.printToPDF",
        );
        let (qi, ci) = (&q.latency[&Doc::Invoice], &c.latency[&Doc::Invoice]);
        let r = speedup(ci.p50(), qi.p50());
        let goals = format!(
            "{}; {}",
            goal(qi.p50() < Duration::from_millis(20), "p50 < 20 ms"),
            goal(r.is_some_and(|r| r >= 20.0), "≥ 20×")
        );
        row(&mut o, "invoice p50", t(qi.p50()), t(ci.p50()), r, &goals);
        let (q99, c99) = (qi.pct(99.0), ci.pct(99.0));
        row(&mut o, "invoice p99", t(q99), t(c99), speedup(c99, q99), "");
        let (ql, cl) = (&q.latency[&Doc::Listing], &c.latency[&Doc::Listing]);
        let (qp, cp) = (ql.p50(), cl.p50());
        row(&mut o, "listing p50", t(qp), t(cp), speedup(cp, qp), "");

        section(
            &mut o,
            &format!(
                "warm, under load: {} clients for {:.0} s, one connection | one tab each",
                q.load.clients,
                self.opts.duration.as_secs_f64()
            ),
        );
        let (qt, ct) = (q.load.per_second(), c.load.per_second());
        let r = ratio(qt, ct);
        let cores = if self.facts.cores == 2 {
            String::new()
        } else {
            format!(" (this machine: {} cores)", self.facts.cores)
        };
        let goals = format!(
            "{}{cores}; {}",
            goal(qt >= 200.0, "≥ 200 PDFs/s on 2 cores"),
            goal(r.is_some_and(|r| r >= 20.0), "≥ 20×")
        );
        let rate = |x: f64| {
            Some(if x < 100.0 {
                format!("{x:.1}")
            } else {
                format!("{x:.0}")
            })
        };
        row(&mut o, "invoice PDFs/s", rate(qt), rate(ct), r, &goals);
        let (ql, cl) = (&q.load.latency, &c.load.latency);
        row(
            &mut o,
            "invoice latency p50",
            t(ql.p50()),
            t(cl.p50()),
            None,
            "",
        );
        row(
            &mut o,
            "invoice latency p99",
            t(ql.pct(99.0)),
            t(cl.pct(99.0)),
            None,
            "",
        );
        let per_pdf = |l: &Load, cpu: Duration| cpu / u32::try_from(l.pdfs.max(1)).unwrap_or(1);
        let (qc, cc) = (
            per_pdf(&q.load, q.load.server_cpu),
            per_pdf(&c.load, c.load.server_cpu),
        );
        let label = "CPU time per PDF: server | browser";
        row(&mut o, label, t(qc), t(cc), speedup(cc, qc), "");
        let (qc, cc) = (
            per_pdf(&q.load, q.load.client_cpu),
            per_pdf(&c.load, c.load.client_cpu),
        );
        row(
            &mut o,
            "CPU time per PDF: load generator",
            t(qc),
            t(cc),
            None,
            "",
        );
        let _ = writeln!(
            o,
            "\nSamples: render-only {} + {} (+{} identical); cold {} + {} per side; warm HTTP {} + {}, \
             DevTools {} + {}; under load {} PDFs from Quire, {} from Chromium. The load \
             generator shares the machine with the server and the browser.",
            ip.invoice.len(),
            ip.listing.len(),
            ip.invoice_same.len(),
            self.cold.quire[&Doc::Invoice].len(),
            self.cold.quire[&Doc::Listing].len(),
            qi.len(),
            q.latency[&Doc::Listing].len(),
            ci.len(),
            c.latency[&Doc::Listing].len(),
            q.load.pdfs,
            c.load.pdfs,
        );
        o
    }
}

fn goal(met: bool, what: &str) -> String {
    format!("{what} {}", if met { "✓" } else { "✗ MISSED" })
}

fn section(o: &mut String, title: &str) {
    let _ = writeln!(o, "{title}");
}

fn row(
    o: &mut String,
    label: &str,
    quire: Option<String>,
    chromium: Option<String>,
    ratio: Option<f64>,
    goal: &str,
) {
    let dash = || "—".to_owned();
    let ratio = ratio.map_or_else(dash, |r| format!("{r:.1}×"));
    let _ = writeln!(
        o,
        "  {:<w$}{:>W_VALUE$}{:>W_VALUE$}{:>W_RATIO$}   {goal}",
        label,
        quire.unwrap_or_else(dash),
        chromium.unwrap_or_else(dash),
        ratio,
        w = W_LABEL - 2,
    );
}
