//! The examples available on first start: an invoice (table, totals, logo) and a multi-page
//! listing. They are created once; deleting them later does not bring them back.

use serde_json::{Value, json};

use super::model::{NewVersion, ParamSpec, TemplateFile};
use super::store::{Store, StoreError};

const SEEDED_FLAG: &str = "examples_seeded";

pub const INVOICE_MAIN: &str = include_str!("invoice/main.typ");
pub const INVOICE_LOGO: &str = include_str!("invoice/logo.svg");
pub const INVOICE_DATA: &str = include_str!("invoice/data.json");
pub const LISTING_MAIN: &str = include_str!("listing/main.typ");

/// Creates the examples unless they were created before.
pub async fn seed(store: &dyn Store) -> Result<bool, StoreError> {
    if store.flag(SEEDED_FLAG).await?.is_some() {
        return Ok(false);
    }
    for (name, description, version) in examples() {
        match store.create_template(name, description, &version).await {
            Ok(_) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    store.set_flag(SEEDED_FLAG, "1").await?;
    Ok(true)
}

fn examples() -> Vec<(&'static str, &'static str, NewVersion)> {
    let invoice_params: Vec<ParamSpec> = serde_json::from_value(json!([
        {"name": "title", "type": "string", "label": "Title", "default": "Invoice"},
        {"name": "show_notes", "type": "bool", "label": "Show notes", "default": true}
    ]))
    .unwrap_or_default();
    let listing_params: Vec<ParamSpec> = serde_json::from_value(json!([
        {"name": "status", "type": "string", "label": "Status", "default": "all",
         "choices": ["all", "paid", "open", "overdue"]}
    ]))
    .unwrap_or_default();
    vec![
        (
            "invoice",
            "Example: a one-page invoice with a logo, line items and totals",
            NewVersion {
                entry: "main.typ".into(),
                parameters: invoice_params,
                sample_data: Some(INVOICE_DATA.to_owned()),
                queries: Vec::new(),
                files: vec![
                    file("main.typ", INVOICE_MAIN),
                    file("logo.svg", INVOICE_LOGO),
                ],
                created_by: None,
            },
        ),
        (
            "listing",
            "Example: a multi-page order listing with a repeating table header",
            NewVersion {
                entry: "main.typ".into(),
                parameters: listing_params,
                sample_data: Some(listing_data(240).to_string()),
                queries: Vec::new(),
                files: vec![file("main.typ", LISTING_MAIN)],
                created_by: None,
            },
        ),
    ]
}

fn file(path: &str, text: &str) -> TemplateFile {
    TemplateFile {
        path: path.to_owned(),
        content: text.as_bytes().to_vec(),
    }
}

/// Deterministic order rows for the listing example (also used by the benchmarks).
pub fn listing_data(rows: usize) -> Value {
    const CUSTOMERS: &[&str] = &[
        "Northwind Traders",
        "Contoso Pharmaceuticals",
        "Fabrikam Industries",
        "Tailspin Toys",
        "Wide World Importers",
        "Adventure Works Cycles",
        "Alpine Ski House",
        "Coho Winery",
    ];
    const STATUS: &[&str] = &["paid", "paid", "open", "overdue"];
    let rows: Vec<Value> = (1..=rows)
        .map(|i| {
            let amount = ((i * 7919) % 250_000) as f64 / 100.0 + 10.0;
            json!({
                "id": 10_000 + i,
                "customer": CUSTOMERS[i % CUSTOMERS.len()],
                "date": format!("2026-{:02}-{:02}", 1 + i % 12, 1 + i % 28),
                "status": STATUS[i % STATUS.len()],
                "amount": amount,
            })
        })
        .collect();
    json!({"title": "Customer orders", "currency": "EUR", "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::render::{Artifact, FontSet, Format, render};
    use crate::app::templates::{self, params};

    #[test]
    fn every_example_renders_with_its_sample_data_and_defaults() {
        let (fonts, _) = FontSet::load(None);
        for (name, _, v) in examples() {
            assert!(!v.parameters.is_empty(), "{name}: parameters did not parse");
            params::check_spec(&v.parameters).unwrap();
            let inputs = params::resolve(&v.parameters, &serde_json::Map::new())
                .unwrap()
                .inputs;
            let version = crate::app::model::TemplateVersion {
                template_id: name.into(),
                version: 1,
                entry: v.entry.clone(),
                parameters: v.parameters.clone(),
                sample_data: v.sample_data.clone(),
                queries: v.queries.clone(),
                size: 0,
                created_at: 0,
                created_by: None,
            };
            let data = v.sample_data.clone().unwrap().into_bytes();
            let job = templates::job(&version, &v.files, data, inputs, Format::Pdf);
            let out = render(&job, &fonts, |_| {}).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert!(out.warnings.is_empty(), "{name}: {:?}", out.warnings);
            assert!(matches!(out.artifact, Artifact::Pdf(ref b) if b.starts_with(b"%PDF")));
            if name == "listing" {
                assert!(out.pages > 3, "the listing spans pages: {}", out.pages);
            }
        }
    }
}
