//! The report: the machine and versions, then one table of Quire vs Chromium with the ratios
//! and, where there is one, the goal each value is held against (✓, or ✗ MISSED).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use quire::app::render::TYPST_VERSION;

use crate::Opts;
use crate::cold::Cold;
use crate::fixtures::{Doc, LISTING_ROWS};
use crate::in_process::InProcess;
use crate::pdf::{Content, command_text};
use crate::support::quire_bin;
use crate::warm::{Load, Warm};

pub(crate) struct Facts {
    cores: usize,
    cpu: String,
    kernel: String,
    load: String,
    quire: String,
    rustc: String,
    chromium: String,
}

impl Facts {
    pub(crate) async fn gather(chromium: &Path) -> Result<Facts> {
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
            quire: first_line(
                command_text(&quire_bin().to_string_lossy(), &["version".as_ref()]).await?,
            ),
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

pub(crate) struct Report<'a> {
    pub(crate) opts: &'a Opts,
    pub(crate) facts: &'a Facts,
    pub(crate) content: &'a Content,
    pub(crate) in_process: &'a InProcess,
    pub(crate) cold: &'a Cold,
    pub(crate) quire: &'a Warm,
    pub(crate) chromium: &'a Warm,
}

const W_LABEL: usize = 44;
const W_VALUE: usize = 13;
const W_RATIO: usize = 10;
/// How far the rule under the heading reaches into the goal column.
const W_GOAL: usize = 35;

impl Report<'_> {
    pub(crate) fn render(&self) -> String {
        let mut o = String::new();
        self.heading(&mut o);
        self.in_process_rows(&mut o);
        self.cold_rows(&mut o);
        self.warm_rows(&mut o);
        self.load_rows(&mut o);
        self.footer(&mut o);
        o
    }

    /// What ran where, what the documents were, and how to read the table.
    fn heading(&self, o: &mut String) {
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
            "{:<W_LABEL$}{:>W_VALUE$}{:>W_VALUE$}{:>W_RATIO$}   goal",
            "", "Quire", "Chromium", "speed-up"
        );
        let _ = writeln!(o, "{header}");
        let rule = W_LABEL + 2 * W_VALUE + W_RATIO + 3 + W_GOAL;
        let _ = writeln!(o, "{}", "-".repeat(rule));
    }

    fn in_process_rows(&self, o: &mut String) {
        let ip = self.in_process;
        section(o, "render only, in-process, warm");
        let inv = &ip.invoice;
        let met = inv.p50() < Duration::from_millis(5);
        row(
            o,
            "invoice p50",
            t(inv.p50()),
            None,
            None,
            &goal(met, "p50 < 5 ms"),
        );
        row(o, "invoice p95", t(inv.pct(95.0)), None, None, "");
        let same = ip.invoice_same.p50();
        row(o, "invoice p50, identical data", t(same), None, None, "");
        let listing = format!("listing p50 ({} pages)", ip.listing_pages);
        row(o, &listing, t(ip.listing.p50()), None, None, "");
        row(o, "listing p95", t(ip.listing.pct(95.0)), None, None, "");
        row(o, "font load", t(ip.font_load), None, None, "");
        let first = "first invoice after font load";
        row(o, first, t(ip.first_invoice), None, None, "");
    }

    fn cold_rows(&self, o: &mut String) {
        section(
            o,
            "cold, a process per PDF: `quire render` | `chromium --print-to-pdf`",
        );
        for doc in [Doc::Invoice, Doc::Listing] {
            let (q, c) = (self.cold.quire[&doc].p50(), self.cold.chromium[&doc].p50());
            // No goal here: a process per PDF is not how Quire serves, only a reference.
            let goal = match doc {
                Doc::Invoice => "ref: Typst CLI ~100 ms, Chromium ~500 ms",
                Doc::Listing => "",
            };
            let label = format!("{} p50", doc.name());
            row(o, &label, t(q), t(c), speedup(c, q), goal);
        }
    }

    fn warm_rows(&self, o: &mut String) {
        let (q, c) = (self.quire, self.chromium);
        section(
            o,
            "warm, concurrency 1: HTTP POST /api/v1/render (2 workers) | DevTools Page.printToPDF",
        );
        let (qi, ci) = (&q.latency[&Doc::Invoice], &c.latency[&Doc::Invoice]);
        let r = speedup(ci.p50(), qi.p50());
        let goals = format!(
            "{}; {}",
            goal(qi.p50() < Duration::from_millis(20), "p50 < 20 ms"),
            goal(r.is_some_and(|r| r >= 20.0), "≥ 20×")
        );
        row(o, "invoice p50", t(qi.p50()), t(ci.p50()), r, &goals);
        let (q99, c99) = (qi.pct(99.0), ci.pct(99.0));
        row(o, "invoice p99", t(q99), t(c99), speedup(c99, q99), "");
        let (ql, cl) = (&q.latency[&Doc::Listing], &c.latency[&Doc::Listing]);
        let (qp, cp) = (ql.p50(), cl.p50());
        row(o, "listing p50", t(qp), t(cp), speedup(cp, qp), "");
    }

    fn load_rows(&self, o: &mut String) {
        let (q, c) = (&self.quire.load, &self.chromium.load);
        section(
            o,
            &format!(
                "warm, under load: {} clients for {:.0} s, one connection | one tab each",
                q.clients,
                self.opts.duration.as_secs_f64()
            ),
        );
        let (qt, ct) = (q.per_second(), c.per_second());
        let r = ratio(qt, ct);
        // The throughput goal is for 2 cores; on another machine the reader must scale it.
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
        row(o, "invoice PDFs/s", rate(qt), rate(ct), r, &goals);
        let (ql, cl) = (&q.latency, &c.latency);
        row(o, "invoice latency p50", t(ql.p50()), t(cl.p50()), None, "");
        let (q99, c99) = (ql.pct(99.0), cl.pct(99.0));
        row(o, "invoice latency p99", t(q99), t(c99), None, "");
        let per_pdf = |l: &Load, cpu: Duration| cpu / u32::try_from(l.pdfs.max(1)).unwrap_or(1);
        let (qc, cc) = (per_pdf(q, q.server_cpu), per_pdf(c, c.server_cpu));
        let label = "CPU time per PDF: server | browser";
        row(o, label, t(qc), t(cc), speedup(cc, qc), "");
        let (qc, cc) = (per_pdf(q, q.client_cpu), per_pdf(c, c.client_cpu));
        let label = "CPU time per PDF: load generator";
        row(o, label, t(qc), t(cc), None, "");
    }

    /// How many samples each number rests on.
    fn footer(&self, o: &mut String) {
        let (ip, cold) = (self.in_process, self.cold);
        let (q, c) = (self.quire, self.chromium);
        let _ = writeln!(
            o,
            "\nSamples: render-only {} + {} (+{} identical); cold {} + {} per side; warm HTTP {} + {}, \
             DevTools {} + {}; under load {} PDFs from Quire, {} from Chromium. The load \
             generator shares the machine with the server and the browser.",
            ip.invoice.len(),
            ip.listing.len(),
            ip.invoice_same.len(),
            cold.quire[&Doc::Invoice].len(),
            cold.quire[&Doc::Listing].len(),
            q.latency[&Doc::Invoice].len(),
            q.latency[&Doc::Listing].len(),
            c.latency[&Doc::Invoice].len(),
            c.latency[&Doc::Listing].len(),
            q.load.pdfs,
            c.load.pdfs,
        );
    }
}

/// A duration cell.
fn t(d: Duration) -> Option<String> {
    Some(ms(d))
}

/// How many times longer Chromium took than Quire.
fn speedup(chromium: Duration, quire: Duration) -> Option<f64> {
    ratio(chromium.as_secs_f64(), quire.as_secs_f64())
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
