//! The examples available on first start: an invoice (table, totals, logo), a multi-page
//! listing, and a sales report that queries its own data from a SQLite file Quire writes into
//! its data directory (the `sales-demo` data source). They are created once; deleting them later
//! does not bring them back.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::datasource::model::NewDataSource;
use super::model::{NewVersion, ParamSpec, QuerySpec, TemplateFile};
use super::store::{Store, StoreError};
use crate::connector::DataSourceKind;

const SEEDED_FLAG: &str = "examples_seeded";
/// The sales example's data source.
pub const SALES_SOURCE: &str = "sales-demo";

pub const INVOICE_MAIN: &str = include_str!("invoice/main.typ");
pub const INVOICE_LOGO: &str = include_str!("invoice/logo.svg");
pub const INVOICE_DATA: &str = include_str!("invoice/data.json");
pub const LISTING_MAIN: &str = include_str!("listing/main.typ");
pub const SALES_MAIN: &str = include_str!("sales/main.typ");

/// Where the sales example's SQLite file lives.
pub fn sales_db(data_dir: &Path) -> PathBuf {
    data_dir.join("examples").join("sales.db")
}

/// Creates the examples unless they were created before. The sales example's file is written
/// whenever it is missing, so every instance of a cluster has it at the same path (when their
/// data directories are alike).
pub async fn seed(store: &dyn Store, data_dir: &Path) -> Result<bool, StoreError> {
    let db = std::path::absolute(sales_db(data_dir))
        .map_err(|e| StoreError::Unsupported(format!("the data directory: {e}")))?;
    if !db.exists()
        && let Err(e) = write_sales_db(&db).await
    {
        tracing::warn!(file = %db.display(), error = %e, "could not write the sales example's data");
    }
    if store.flag(SEEDED_FLAG).await?.is_some() {
        return Ok(false);
    }
    let source = NewDataSource {
        name: SALES_SOURCE.into(),
        kind: DataSourceKind::Sqlite,
        settings: json!({"path": db.display().to_string()}).to_string(),
        secrets: None,
        created_by: None,
    };
    let id = uuid::Uuid::now_v7().to_string();
    match store.create_datasource(&id, &source).await {
        Ok(_) | Err(StoreError::Conflict { .. }) => {}
        Err(e) => return Err(e),
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
        (
            "sales",
            "Example: a sales report that queries its own data (the sales-demo SQLite source)",
            NewVersion {
                entry: "main.typ".into(),
                parameters: sales_params(),
                sample_data: None,
                queries: sales_queries(),
                files: vec![file("main.typ", SALES_MAIN)],
                created_by: None,
            },
        ),
    ]
}

fn sales_params() -> Vec<ParamSpec> {
    serde_json::from_value(json!([
        {"name": "region", "type": "string", "label": "Region", "default": "all",
         "choices": ["all", "North", "South", "East", "West"]},
        {"name": "from", "type": "date", "label": "From", "default": "2026-01-01"},
        {"name": "to", "type": "date", "label": "To", "default": "2026-12-31"}
    ]))
    .unwrap_or_default()
}

/// The sales example's queries: parameters bound, never spliced.
fn sales_queries() -> Vec<QuerySpec> {
    const FILTER: &str =
        "WHERE day BETWEEN :from AND :to AND (:region = 'all' OR region = :region)";
    let query = |name: &str, text: String| QuerySpec {
        name: name.into(),
        datasource: SALES_SOURCE.into(),
        text,
        params: serde_json::Map::new(),
    };
    vec![
        query(
            "by_month",
            format!(
                "SELECT substr(day, 1, 7) AS month, COUNT(*) AS orders,\n  \
                 ROUND(SUM(amount), 2) AS revenue\nFROM sales {FILTER}\n\
                 GROUP BY month ORDER BY month"
            ),
        ),
        query(
            "top_products",
            format!(
                "SELECT product, COUNT(*) AS orders, ROUND(SUM(amount), 2) AS revenue\n\
                 FROM sales {FILTER}\nGROUP BY product ORDER BY revenue DESC LIMIT 5"
            ),
        ),
    ]
}

/// Writes the sales example's data: 2,000 deterministic orders over 2026, whole or not at all.
pub async fn write_sales_db(path: &Path) -> Result<(), sqlx::Error> {
    use sqlx::{ConnectOptions, Connection};
    const REGIONS: &[&str] = &["North", "South", "East", "West"];
    const PRODUCTS: &[&str] = &[
        "Desk lamp",
        "Office chair",
        "Standing desk",
        "Monitor arm",
        "Bookshelf",
        "Filing cabinet",
    ];
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let partial = path.with_extension("db.partial");
    let _ = std::fs::remove_file(&partial);
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&partial)
        .create_if_missing(true)
        .connect()
        .await?;
    let mut tx = conn.begin().await?;
    sqlx::query(
        "CREATE TABLE sales (id INTEGER PRIMARY KEY, day TEXT NOT NULL, region TEXT NOT NULL, \
         product TEXT NOT NULL, amount REAL NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    let start = jiff::civil::date(2026, 1, 1);
    for i in 0..2000_i64 {
        let day = start
            .checked_add(jiff::Span::new().days((i * 7) % 365))
            .unwrap_or(start);
        sqlx::query("INSERT INTO sales VALUES (?, ?, ?, ?, ?)")
            .bind(i + 1)
            .bind(day.to_string())
            .bind(REGIONS[(i % 4) as usize])
            .bind(PRODUCTS[((i * 3 + i / 7) % 6) as usize])
            .bind(((i * 7919) % 50_000) as f64 / 100.0 + 20.0)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    conn.close().await?;
    std::fs::rename(&partial, path)?;
    Ok(())
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

    /// The sales example's queries, run on its own data file as a render would run them.
    async fn sales_files(dir: &Path, v: &NewVersion) -> Vec<(String, Vec<u8>)> {
        use crate::connector::pool::Pool;
        use crate::connector::statement::{Dialect, parse};
        use crate::connector::table::{Bound, Limits, Overflow};
        let db = sales_db(dir);
        write_sales_db(&db).await.unwrap();
        let pool = Pool::Sqlite(
            sqlx::sqlite::SqlitePoolOptions::new()
                .connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(&db))
                .await
                .unwrap(),
        );
        let limits = Limits {
            max_rows: 1000,
            max_bytes: 1 << 20,
            timeout: std::time::Duration::from_secs(10),
            overflow: Overflow::Fail,
        };
        let mut files = Vec::new();
        for q in &v.queries {
            let st = parse(&q.text, Dialect::Sqlite).unwrap();
            let binds: Vec<Bound> = st
                .slots
                .iter()
                .map(|s| match s.as_str() {
                    "region" => Bound::Text("all".into()),
                    "from" => Bound::Date(jiff::civil::date(2026, 1, 1)),
                    _ => Bound::Date(jiff::civil::date(2026, 12, 31)),
                })
                .collect();
            let table = crate::connector::sql::run(&pool, &st, &binds, &limits)
                .await
                .unwrap();
            assert!(table.row_count > 0, "{}: no rows", q.name);
            files.push((
                templates::queries::file_name(&q.name),
                serde_json::to_vec(&table).unwrap(),
            ));
        }
        files
    }

    #[tokio::test]
    async fn every_example_renders_with_its_sample_data_and_defaults() {
        let (fonts, _) = FontSet::load(None);
        let dir = tempfile::tempdir().unwrap();
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
            let data = v
                .sample_data
                .clone()
                .unwrap_or_else(|| "{}".into())
                .into_bytes();
            let mut job = templates::job(&version, &v.files, data, inputs, Format::Pdf);
            if !v.queries.is_empty() {
                job.files.extend(sales_files(dir.path(), &v).await);
            }
            let out = render(&job, &fonts, |_| {}).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert!(out.warnings.is_empty(), "{name}: {:?}", out.warnings);
            assert!(matches!(out.artifact, Artifact::Pdf(ref b) if b.starts_with(b"%PDF")));
            if name == "listing" {
                assert!(out.pages > 3, "the listing spans pages: {}", out.pages);
            }
        }
    }
}
