//! CSV data sources: a file uploaded to Quire (kept in its database), read with the source's
//! delimiter, its first row naming the columns or not. A query's text picks columns: empty for
//! all of them, or their names separated by commas.
//!
//! Every value is a string, exactly as the file has it: no number, date or boolean is guessed,
//! because a guess that is right for most rows (a ZIP code of digits, `"1e5"`, `"NA"`) silently
//! changes the rest; a template converts what it knows to be numbers.

use std::time::Instant;

use serde_json::{Map, Value};

use super::Probed;
use super::settings::CsvSettings;
use super::table::{Limits, QueryError, Table, TableBuilder};

/// Why a file does not read as CSV, and on which line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct CsvError {
    pub line: u64,
    pub message: String,
}

/// How big a file that reads is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub rows: usize,
    pub columns: usize,
}

/// The column names and the data records of `content`.
fn open<'a>(
    content: &'a [u8],
    settings: &CsvSettings,
) -> Result<
    (
        Vec<String>,
        impl Iterator<Item = Result<csv::StringRecord, CsvError>> + 'a,
    ),
    CsvError,
> {
    // The delimiter is one ASCII character: the settings were checked.
    let mut records = csv::ReaderBuilder::new()
        .delimiter(settings.delimiter as u8)
        .has_headers(false)
        .from_reader(content)
        .into_records()
        .map(|r| r.map_err(error))
        .peekable();
    let columns = if settings.header {
        match records.next() {
            Some(header) => names(&header?)?,
            None => Vec::new(),
        }
    } else {
        match records.peek() {
            Some(Ok(first)) => (1..=first.len()).map(|i| format!("column_{i}")).collect(),
            _ => Vec::new(),
        }
    };
    Ok((columns, records))
}

/// A header row's names: each present, none twice (a row is an object: a repeated name would
/// lose a column).
fn names(header: &csv::StringRecord) -> Result<Vec<String>, CsvError> {
    let at_header = |message: String| CsvError { line: 1, message };
    let mut names: Vec<String> = Vec::with_capacity(header.len());
    for (i, name) in header.iter().enumerate() {
        let name = name.trim();
        if name.is_empty() {
            return Err(at_header(format!("column {} has no name", i + 1)));
        }
        if names.iter().any(|n| n == name) {
            return Err(at_header(format!("column \"{name}\" appears twice")));
        }
        names.push(name.to_owned());
    }
    Ok(names)
}

/// A reading error in the file's terms. Reading bytes fails only on text that is not UTF-8 and
/// on rows whose number of fields differs from the first row's; both carry their position.
fn error(e: csv::Error) -> CsvError {
    let line = e.position().map_or(1, csv::Position::line);
    let message = match e.kind() {
        csv::ErrorKind::Utf8 { err, .. } => format!("field {} is not UTF-8", err.field() + 1),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} fields, where the first row has {expected_len}"),
        _ => e.to_string(),
    };
    CsvError { line, message }
}

/// Reads the whole file, as a query would, and says how big it is.
pub fn inspect(content: &[u8], settings: &CsvSettings) -> Result<Shape, CsvError> {
    let (columns, records) = open(content, settings)?;
    let mut rows = 0;
    for record in records {
        record?;
        rows += 1;
    }
    Ok(Shape {
        rows,
        columns: columns.len(),
    })
}

/// The table a query's `text` asks of the file: the named columns, in the order named, or all.
pub fn run(
    content: &[u8],
    settings: &CsvSettings,
    text: &str,
    limits: &Limits,
) -> Result<Table, QueryError> {
    let unreadable = |e: CsvError| QueryError::Convert(format!("the uploaded file, {e}"));
    let (columns, records) = open(content, settings).map_err(unreadable)?;
    let keep = selection(text, &columns)?;
    let names: Vec<String> = keep.iter().map(|&i| columns[i].clone()).collect();
    let mut table = TableBuilder::new(names.clone(), *limits);
    for record in records {
        let record = record.map_err(unreadable)?;
        let row: Map<String, Value> = keep
            .iter()
            .zip(&names)
            .map(|(&i, name)| (name.clone(), Value::String(record[i].to_owned())))
            .collect();
        if !table.push(row)? {
            break;
        }
    }
    Ok(table.finish())
}

/// The indexes of the columns `text` names (all when it is empty).
fn selection(text: &str, columns: &[String]) -> Result<Vec<usize>, QueryError> {
    if text.trim().is_empty() {
        return Ok((0..columns.len()).collect());
    }
    text.split(',')
        .map(str::trim)
        .map(|name| {
            columns
                .iter()
                .position(|c| c == name)
                .ok_or_else(|| QueryError::Query {
                    message: format!(
                        "the file has no column \"{name}\" (it has {})",
                        columns.join(", ")
                    ),
                    position: None,
                })
        })
        .collect()
}

/// Reads the stored file; the "version" is its size in rows and columns.
pub fn probe(settings: &CsvSettings, file: Option<&[u8]>) -> Result<Probed, String> {
    let file = file.ok_or("no file uploaded yet")?;
    let started = Instant::now();
    let shape = inspect(file, settings).map_err(|e| e.to_string())?;
    Ok(Probed {
        server_version: format!("CSV, {} rows, {} columns", shape.rows, shape.columns),
        round_trip: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::connector::table::Overflow;

    fn settings(delimiter: char, header: bool) -> CsvSettings {
        CsvSettings {
            delimiter,
            header,
            file_name: None,
        }
    }

    fn limits() -> Limits {
        Limits {
            max_rows: 100,
            max_bytes: 1 << 20,
            timeout: Duration::from_secs(1),
            overflow: Overflow::Fail,
        }
    }

    fn rows(t: &Table) -> serde_json::Value {
        serde_json::to_value(&t.rows).unwrap()
    }

    #[test]
    fn a_header_row_names_the_columns_and_values_stay_text() {
        let file = b"id,name,zip\n1,\"Smith, Ann\",01234\n2,Bo,1e5\n";
        let t = run(file, &settings(',', true), "", &limits()).unwrap();
        assert_eq!(t.columns, ["id", "name", "zip"]);
        assert_eq!(
            rows(&t),
            json!([
                {"id": "1", "name": "Smith, Ann", "zip": "01234"},
                {"id": "2", "name": "Bo", "zip": "1e5"},
            ])
        );
        assert_eq!(
            inspect(file, &settings(',', true)).unwrap(),
            Shape {
                rows: 2,
                columns: 3
            }
        );
    }

    #[test]
    fn without_a_header_columns_are_numbered_and_the_delimiter_is_the_sources() {
        let file = "a;b\nc;d\n".as_bytes();
        let t = run(file, &settings(';', false), "", &limits()).unwrap();
        assert_eq!(t.columns, ["column_1", "column_2"]);
        assert_eq!(t.row_count, 2);
        assert_eq!(t.rows[0]["column_2"], "b");
        // Read with another delimiter, each line is one field.
        let t = run(file, &settings(',', false), "", &limits()).unwrap();
        assert_eq!(t.columns, ["column_1"]);
        assert_eq!(t.rows[1]["column_1"], "c;d");
    }

    #[test]
    fn a_query_keeps_the_columns_it_names_in_its_order() {
        let file = b"id,name,zip\n1,Ann,01234\n";
        let t = run(file, &settings(',', true), " zip , id ", &limits()).unwrap();
        assert_eq!(t.columns, ["zip", "id"]);
        assert_eq!(rows(&t), json!([{"zip": "01234", "id": "1"}]));
        let e = run(file, &settings(',', true), "id,email", &limits()).unwrap_err();
        assert!(matches!(e, QueryError::Query { .. }), "{e:?}");
        assert!(e.to_string().contains("no column \"email\""), "{e}");
    }

    #[test]
    fn a_file_that_does_not_read_names_the_line() {
        let s = settings(',', true);
        let e = inspect(b"a,b\n1,2\n3\n", &s).unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(
            e.message.contains("1 fields, where the first row has 2"),
            "{e}"
        );
        let e = inspect(b"a,b\n1,\xff\n", &s).unwrap_err();
        assert_eq!((e.line, e.message.as_str()), (2, "field 2 is not UTF-8"));
        let e = inspect(b"a,a\n", &s).unwrap_err();
        assert!(e.message.contains("\"a\" appears twice"), "{e}");
        assert!(inspect(b"a,,c\n", &s).is_err());
        // An empty file is an empty table.
        assert_eq!(
            inspect(b"", &s).unwrap(),
            Shape {
                rows: 0,
                columns: 0
            }
        );
    }

    #[test]
    fn the_row_limit_applies() {
        let e = run(
            b"n\n1\n2\n3\n",
            &settings(',', true),
            "",
            &Limits {
                max_rows: 2,
                ..limits()
            },
        )
        .unwrap_err();
        assert!(matches!(e, QueryError::Limit(_)), "{e:?}");
    }

    #[test]
    fn a_test_reports_the_files_size_or_its_absence() {
        let s = settings(',', true);
        assert_eq!(probe(&s, None).unwrap_err(), "no file uploaded yet");
        let p = probe(&s, Some(b"a,b\n1,2\n")).unwrap();
        assert_eq!(p.server_version, "CSV, 1 rows, 2 columns");
    }
}
