//! The content: the same documents for both sides, varied per render. Quire gets the example
//! templates as a render job or an HTTP body; Chromium gets the same data filled into the HTML
//! twins of those templates (`assets/`), formatted the way the Typst templates format it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::LazyLock;

use anyhow::{Context, Result, ensure};
use quire::app::examples::{INVOICE_DATA, INVOICE_LOGO, INVOICE_MAIN, LISTING_MAIN, listing_data};
use quire::app::render::{Format, Input, RenderJob};
use serde_json::{Value, json};

pub(crate) const LISTING_ROWS: usize = 500;
const INVOICE_HTML: &str = include_str!("assets/invoice.html");
const LISTING_HTML: &str = include_str!("assets/listing.html");

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Doc {
    Invoice,
    Listing,
}

impl Doc {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Doc::Invoice => "invoice",
            Doc::Listing => "listing",
        }
    }

    /// Whether a PDF of this document may have `pages` pages: a quick check on every render
    /// (pdfinfo checks the samples more closely at the end).
    pub(crate) fn plausible_pages(self, pages: usize) -> bool {
        match self {
            Doc::Invoice => pages == 1,
            Doc::Listing => pages > 3,
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
pub(crate) fn data(doc: Doc, i: usize) -> Value {
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

/// `data` varies the invoice's second item: fail clearly if the example no longer has one.
pub(crate) fn check_embedded_data() -> Result<()> {
    ensure!(
        INVOICE["items"].as_array().is_some_and(|a| a.len() > 1),
        "the example invoice data (src/app/examples/invoice/data.json) has changed shape: \
         benches/render/fixtures.rs needs an update"
    );
    Ok(())
}

/// The job Quire's server would build for the example templates with default parameters.
pub(crate) fn job(doc: Doc, data: &Value) -> RenderJob {
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
pub(crate) fn http_body(doc: Doc, i: usize) -> Vec<u8> {
    let body = json!({"template": doc.name(), "data": data(doc, i), "parameters": {}});
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The HTML Chromium prints for render number `i`.
pub(crate) fn html(doc: Doc, i: usize) -> Result<String> {
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
