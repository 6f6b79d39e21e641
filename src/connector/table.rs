//! What a query gives a template: `{"columns": [...], "rows": [{...}], "row_count": N,
//! "truncated": false}`, built row by row within the limits, and the values a query binds.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A query's result as a template reads it from `queries/NAME.json`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Map<String, Value>>,
    pub row_count: usize,
    /// True when rows were left off because a preview asked for fewer.
    pub truncated: bool,
}

/// How much one query may return.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Rows, beyond which a render fails (a preview stops and marks the table truncated).
    pub max_rows: usize,
    /// Bytes of the rows as JSON.
    pub max_bytes: usize,
    /// The statement timeout (database sources) or the request timeout (HTTP).
    pub timeout: Duration,
    /// What happens at `max_rows`.
    pub overflow: Overflow,
}

/// What a query that returns more rows than allowed does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Fails: a report that silently misses rows is wrong (renders).
    Fail,
    /// Stops and says so in `truncated` (previews, dry runs).
    Truncate,
}

/// A value a query binds for one of its `:name`s, typed so that the database sees a date as a
/// date and a number as a number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Bound {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Date(jiff::civil::Date),
    Timestamp(jiff::Timestamp),
}

impl Bound {
    /// The value as text, for slots in a URL.
    pub fn to_text(&self) -> String {
        match self {
            Bound::Null => String::new(),
            Bound::Bool(b) => b.to_string(),
            Bound::Int(n) => n.to_string(),
            Bound::Float(f) => f.to_string(),
            Bound::Text(s) => s.clone(),
            Bound::Date(d) => d.to_string(),
            Bound::Timestamp(t) => t.to_string(),
        }
    }
}

/// Why a query gave no table.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum QueryError {
    /// The query is wrong (syntax, unknown column, a write in a read-only transaction): the
    /// database's message, with the position in the text when it gave one.
    #[error("{message}")]
    Query {
        message: String,
        position: Option<usize>,
    },
    /// The source could not be reached or refused the connection.
    #[error("{0}")]
    Unreachable(String),
    /// Nothing here can run the query now, though another instance may (no agent serving the
    /// source is in reach of this one): nothing was run.
    #[error("{0}")]
    Unavailable(String),
    /// A limit was reached.
    #[error("{0}")]
    Limit(String),
    /// A value the result holds cannot be given to a template.
    #[error("{0}")]
    Convert(String),
}

/// Builds a [`Table`] within [`Limits`].
pub struct TableBuilder {
    limits: Limits,
    table: Table,
    bytes: usize,
}

impl TableBuilder {
    pub fn new(columns: Vec<String>, limits: Limits) -> Self {
        TableBuilder {
            limits,
            table: Table {
                columns,
                rows: Vec::new(),
                row_count: 0,
                truncated: false,
            },
            bytes: 0,
        }
    }

    /// Sets the columns when they are known only once the first row arrives.
    pub fn set_columns(&mut self, columns: Vec<String>) {
        if self.table.columns.is_empty() {
            self.table.columns = columns;
        }
    }

    /// Adds a row; `Ok(false)` when the table is full and truncated (stop reading).
    pub fn push(&mut self, row: Map<String, Value>) -> Result<bool, QueryError> {
        if self.table.rows.len() == self.limits.max_rows {
            return match self.limits.overflow {
                Overflow::Truncate => {
                    self.table.truncated = true;
                    Ok(false)
                }
                Overflow::Fail => Err(QueryError::Limit(format!(
                    "more than {} rows (queries.max_rows)",
                    self.limits.max_rows
                ))),
            };
        }
        self.bytes += row_size(&row);
        if self.bytes > self.limits.max_bytes {
            return match self.limits.overflow {
                Overflow::Truncate => {
                    self.table.truncated = true;
                    Ok(false)
                }
                Overflow::Fail => Err(QueryError::Limit(format!(
                    "more than {} bytes of rows (queries.max_bytes)",
                    self.limits.max_bytes
                ))),
            };
        }
        self.table.rows.push(row);
        Ok(true)
    }

    pub fn finish(mut self) -> Table {
        self.table.row_count = self.table.rows.len();
        self.table
    }
}

/// Roughly the row's size as JSON: enough to bound memory without serializing twice.
fn row_size(row: &Map<String, Value>) -> usize {
    row.iter().map(|(k, v)| k.len() + 4 + value_size(v)).sum()
}

fn value_size(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 12,
        Value::String(s) => s.len() + 2,
        Value::Array(a) => a.iter().map(value_size).sum::<usize>() + 2,
        Value::Object(o) => row_size(o) + 2,
    }
}

/// A decimal as JSON: a number when it has at most 15 significant digits (every such decimal
/// survives the trip through a 64-bit float unchanged), otherwise its exact text.
pub fn decimal(d: &bigdecimal::BigDecimal) -> Value {
    let d = d.normalized();
    let text = d.to_plain_string();
    if d.digits() <= 15 {
        if let Ok(n) = text.parse::<i64>() {
            return Value::Number(n.into());
        }
        if let Some(n) = text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
        {
            return Value::Number(n);
        }
    }
    Value::String(text)
}

/// A float as JSON; NaN and infinities (which JSON lacks) as their names.
pub fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or_else(|| Value::String(f.to_string()), Value::Number)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use bigdecimal::BigDecimal;
    use serde_json::json;

    use super::*;

    fn limits(max_rows: usize, overflow: Overflow) -> Limits {
        Limits {
            max_rows,
            max_bytes: 1 << 20,
            timeout: Duration::from_secs(1),
            overflow,
        }
    }

    fn row(n: i64) -> Map<String, Value> {
        json!({ "n": n }).as_object().cloned().unwrap()
    }

    #[test]
    fn renders_fail_past_the_row_limit_and_previews_truncate() {
        let mut b = TableBuilder::new(vec!["n".into()], limits(2, Overflow::Fail));
        assert!(b.push(row(1)).unwrap() && b.push(row(2)).unwrap());
        let e = b.push(row(3)).unwrap_err();
        assert!(e.to_string().contains("queries.max_rows"), "{e}");
        let mut b = TableBuilder::new(vec!["n".into()], limits(2, Overflow::Truncate));
        b.push(row(1)).unwrap();
        b.push(row(2)).unwrap();
        assert!(!b.push(row(3)).unwrap());
        let t = b.finish();
        assert_eq!((t.row_count, t.truncated), (2, true));
    }

    #[test]
    fn the_byte_limit_counts_the_rows() {
        let mut b = TableBuilder::new(
            vec!["s".into()],
            Limits {
                max_bytes: 100,
                ..limits(1000, Overflow::Fail)
            },
        );
        let big = json!({ "s": "x".repeat(60) }).as_object().cloned().unwrap();
        b.push(big.clone()).unwrap();
        let e = b.push(big).unwrap_err();
        assert!(e.to_string().contains("queries.max_bytes"), "{e}");
    }

    #[test]
    fn decimals_are_numbers_only_when_a_float_holds_them_exactly() {
        let d = |s: &str| decimal(&BigDecimal::from_str(s).unwrap());
        assert_eq!(d("12.50"), json!(12.5));
        assert_eq!(d("100"), json!(100));
        assert_eq!(d("-0.1"), json!(-0.1));
        assert_eq!(d("123456789012345.6"), json!("123456789012345.6"));
        assert_eq!(d("0.1234567890123456789"), json!("0.1234567890123456789"));
        assert_eq!(
            d("12345678901234567890.0123456789"),
            json!("12345678901234567890.0123456789")
        );
        assert_eq!(d("1E+3"), json!(1000));
        assert_eq!(float(f64::NAN), json!("NaN"));
    }
}
