//! Templates as authors see them: a set of files (Typst sources and assets) saved as immutable
//! versions, with declared parameters and sample data. This module checks what an author
//! submits and assembles render jobs from stored versions.

pub mod params;
pub mod queries;
pub mod service;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::model::{TemplateFile, TemplateVersion};
use super::render::{DATA_FILE, Format, Input, RenderJob};
use super::store::{Store, StoreError};

/// Most files one template version may have.
pub const MAX_FILES: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error(
        "the template's files total {size} bytes; the limit is {limit} (render.max_template_size)"
    )]
    TooLarge { size: usize, limit: usize },
    #[error(transparent)]
    Params(#[from] params::ParamError),
    #[error("{0} not found")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> TemplateError {
    TemplateError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Checks submitted files: safe relative paths, an entry `.typ` file among them, within limits.
pub fn check_files(
    files: Vec<TemplateFile>,
    entry: &str,
    max_size: usize,
) -> Result<Vec<TemplateFile>, TemplateError> {
    if files.len() > MAX_FILES {
        return Err(invalid(
            "files",
            format!("{} files; at most {MAX_FILES}", files.len()),
        ));
    }
    let size: usize = files.iter().map(|f| f.content.len()).sum();
    if size > max_size {
        return Err(TemplateError::TooLarge {
            size,
            limit: max_size,
        });
    }
    let mut out: Vec<TemplateFile> = Vec::with_capacity(files.len());
    for f in files {
        let path = normalize_path(&f.path).map_err(|m| invalid(format!("files.{}", f.path), m))?;
        if path == DATA_FILE {
            return Err(invalid(
                format!("files.{path}"),
                "data.json is supplied by each render; put example data in sample_data instead",
            ));
        }
        if path.starts_with(&format!("{}/", queries::DIR)) {
            return Err(invalid(
                format!("files.{path}"),
                "queries/ holds the results of the template's queries; choose another folder",
            ));
        }
        if out.iter().any(|o| o.path == path) {
            return Err(invalid(format!("files.{path}"), "appears twice"));
        }
        out.push(TemplateFile {
            path,
            content: f.content,
        });
    }
    let entry_file = out
        .iter()
        .find(|f| f.path == entry)
        .ok_or_else(|| invalid("entry", format!("no file named \"{entry}\"")))?;
    if !entry.ends_with(".typ") {
        return Err(invalid("entry", "must be a .typ file"));
    }
    if std::str::from_utf8(&entry_file.content).is_err() {
        return Err(invalid(format!("files.{entry}"), "is not UTF-8 text"));
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// `a/b.typ` style: relative, no `..`, no empty or hidden segments, no backslashes.
pub fn normalize_path(path: &str) -> Result<String, &'static str> {
    let p = path.trim().trim_start_matches("./");
    if p.is_empty() || p.len() > 200 {
        return Err("path must have 1 to 200 characters");
    }
    if p.starts_with('/') || p.contains('\\') || p.contains('\0') {
        return Err("path must be relative and use /");
    }
    if p.split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == ".." || seg.starts_with('.'))
    {
        return Err("path segments may not be empty, hidden, . or ..");
    }
    Ok(p.to_owned())
}

/// Template version files by (template id, version). Versions never change, so entries never go
/// stale; the cache only bounds its size.
pub struct FileCache {
    max_bytes: usize,
    inner: Mutex<Cached>,
}

#[derive(Default)]
struct Cached {
    bytes: usize,
    files: HashMap<(String, i64), Arc<Vec<TemplateFile>>>,
}

impl FileCache {
    pub fn new(max_bytes: usize) -> Self {
        FileCache {
            max_bytes,
            inner: Mutex::new(Cached::default()),
        }
    }

    pub async fn get(
        &self,
        store: &dyn Store,
        template_id: &str,
        version: i64,
    ) -> Result<Arc<Vec<TemplateFile>>, StoreError> {
        let key = (template_id.to_owned(), version);
        if let Some(hit) = self.lock().files.get(&key) {
            return Ok(hit.clone());
        }
        let files = Arc::new(store.files(template_id, version).await?);
        let size: usize = files.iter().map(|f| f.content.len()).sum();
        let mut inner = self.lock();
        if inner.bytes + size > self.max_bytes {
            // Simple and bounded: start over rather than track recency.
            inner.files.clear();
            inner.bytes = 0;
        }
        if size <= self.max_bytes {
            inner.bytes += size;
            inner.files.insert(key, files.clone());
        }
        Ok(files)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The render job for a stored version with this data and these inputs.
pub fn job(
    version: &TemplateVersion,
    files: &[TemplateFile],
    data: Vec<u8>,
    inputs: std::collections::BTreeMap<String, Input>,
    format: Format,
) -> RenderJob {
    RenderJob {
        entry: version.entry.clone(),
        files: files
            .iter()
            .map(|f| (f.path.clone(), f.content.clone()))
            .collect(),
        data,
        inputs,
        format,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str, content: &str) -> TemplateFile {
        TemplateFile {
            path: path.into(),
            content: content.as_bytes().to_vec(),
        }
    }

    #[test]
    fn paths_are_normalized_or_refused() {
        assert_eq!(normalize_path("./lib/util.typ").unwrap(), "lib/util.typ");
        for bad in [
            "/etc/passwd",
            "../x.typ",
            "a//b",
            "a\\b",
            ".hidden",
            "a/./b",
            "",
        ] {
            assert!(normalize_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn files_need_an_entry_and_fit_the_limit() {
        let ok = check_files(
            vec![f("main.typ", "x"), f("img/logo.svg", "<svg/>")],
            "main.typ",
            100,
        )
        .unwrap();
        assert_eq!(ok[0].path, "img/logo.svg");
        let e = check_files(vec![f("other.typ", "x")], "main.typ", 100).unwrap_err();
        assert!(matches!(e, TemplateError::Invalid { ref field, .. } if field == "entry"));
        let e = check_files(vec![f("main.typ", "xxxxxxxxxx")], "main.typ", 5).unwrap_err();
        assert!(matches!(e, TemplateError::TooLarge { size: 10, limit: 5 }));
        let e = check_files(
            vec![f("main.typ", "x"), f("data.json", "{}")],
            "main.typ",
            100,
        )
        .unwrap_err();
        assert!(e.to_string().contains("sample_data"));
        let e = check_files(
            vec![f("main.typ", "x"), f("./main.typ", "y")],
            "main.typ",
            100,
        )
        .unwrap_err();
        assert!(e.to_string().contains("twice"));
    }
}
