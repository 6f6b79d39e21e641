//! Rendering: a template version's files + data + parameters -> PDF (or SVG page previews), or
//! diagnostics. This module knows nothing about HTTP or the database.
//!
//! In the server every render runs in a long-lived worker process of the same binary (`pool`,
//! `worker`), because a compile on a thread cannot be stopped from outside: the worker has a
//! memory rlimit and is killed when it runs past its wall time, and the server keeps serving.
//! `quire render` on the command line compiles in-process (`render_files`).

pub mod diagnostics;
pub mod fonts;
mod pool;
mod protocol;
mod worker;
mod world;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use typst_layout::PagedDocument;

pub use diagnostics::{Diagnostic, DiagnosticSeverity};
pub use fonts::FontSet;
pub use pool::{PoolOptions, RenderPool, Slot, SyncQueueFull};
pub use worker::{WorkerArgs, worker_main};
pub use world::DATA_FILE;

/// The Typst version compiled in.
pub const TYPST_VERSION: &str = "0.15.1";

/// Everything one render needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenderJob {
    /// The main file, e.g. `main.typ`.
    pub entry: String,
    /// The template version's files by relative path.
    pub files: Vec<(String, Vec<u8>)>,
    /// JSON the template reads as `data.json`.
    pub data: Vec<u8>,
    /// Parameters, visible as `sys.inputs`.
    pub inputs: BTreeMap<String, Input>,
    pub format: Format,
}

/// A typed parameter value as Typst sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Input {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Date(jiff::civil::Date),
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Format {
    Pdf,
    /// SVG images of the first `max_pages` pages, for previews.
    Svg {
        max_pages: usize,
    },
}

/// A finished render.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rendered {
    pub pages: usize,
    pub warnings: Vec<Diagnostic>,
    pub artifact: Artifact,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Artifact {
    Pdf(Vec<u8>),
    Svg(Vec<String>),
}

/// Where a render is; reported as progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    Compiling,
    /// Layout is done; the document has this many pages.
    Writing {
        pages: usize,
    },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum RenderError {
    #[error("the template does not compile: {}", first_message(.0))]
    Compile(Vec<Diagnostic>),
    #[error("{0}")]
    Invalid(String),
    #[error("the render exceeded its time limit of {0}")]
    Timeout(String),
    #[error("the render exceeded its memory limit of {0}")]
    Memory(String),
    #[error("the render worker crashed: {0}")]
    Crashed(String),
    #[error("the render was cancelled")]
    Cancelled,
    #[error("no render worker could be started: {0}")]
    Unavailable(String),
}

fn first_message(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .find(|d| d.severity == DiagnosticSeverity::Error)
        .map_or_else(String::new, ToString::to_string)
}

impl RenderError {
    /// A stable machine-readable kind, for API clients and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            RenderError::Compile(_) => "compile",
            RenderError::Invalid(_) => "invalid",
            RenderError::Timeout(_) => "timeout",
            RenderError::Memory(_) => "memory",
            RenderError::Crashed(_) => "crashed",
            RenderError::Cancelled => "cancelled",
            RenderError::Unavailable(_) => "unavailable",
        }
    }

    /// The diagnostics of a compile error (empty for other kinds).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            RenderError::Compile(d) => d,
            _ => &[],
        }
    }
}

/// Compiles and exports in the calling thread. `on_stage` hears about progress.
pub fn render(
    job: &RenderJob,
    fonts: &FontSet,
    mut on_stage: impl FnMut(Stage),
) -> Result<Rendered, RenderError> {
    on_stage(Stage::Compiling);
    let world = world::ReportWorld::new(job, fonts)?;
    let typst::diag::Warned { output, warnings } = typst::compile::<PagedDocument>(&world);
    let doc =
        output.map_err(|errors| RenderError::Compile(diagnostics::convert(&world, &errors)))?;
    let warnings = diagnostics::convert(&world, &warnings);
    let pages = doc.pages().len();
    on_stage(Stage::Writing { pages });
    let artifact = match job.format {
        Format::Pdf => {
            let bytes = typst_pdf::pdf(&doc, &typst_pdf::PdfOptions::default())
                .map_err(|errors| RenderError::Compile(diagnostics::convert(&world, &errors)))?;
            Artifact::Pdf(bytes)
        }
        Format::Svg { max_pages } => Artifact::Svg(
            doc.pages()
                .iter()
                .take(max_pages)
                .map(|p| safe_links(&typst_svg::svg(p, &typst_svg::SvgOptions::default())))
                .collect(),
        ),
    };
    Ok(Rendered {
        pages,
        warnings,
        artifact,
    })
}

/// Errors of the offline `quire render` command.
#[derive(Debug, thiserror::Error)]
pub enum FileRenderError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} holds no main.typ")]
    NoEntry(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{}", describe(.0))]
    Render(RenderError),
}

fn describe(e: &RenderError) -> String {
    match e {
        RenderError::Compile(diags) => diags
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    }
}

/// `quire render`: compiles a template from disk in-process and writes the PDF atomically.
pub fn render_files(
    config: &crate::app::config::AppConfig,
    template: &Path,
    data: Option<&Path>,
    inputs: &[(String, String)],
    output: &Path,
) -> Result<(), FileRenderError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| FileRenderError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    let (root, entry) = if template.is_dir() {
        if !template.join("main.typ").is_file() {
            return Err(FileRenderError::NoEntry(template.display().to_string()));
        }
        (template.to_path_buf(), "main.typ".to_owned())
    } else {
        let root = template
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = template
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        read(template)?;
        (root.to_path_buf(), name)
    };
    let mut files = Vec::new();
    for path in template_files(&root) {
        let rel = path
            .strip_prefix(&root)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        files.push((rel, read(&path)?));
    }
    let data = match data {
        Some(p) => read(p)?,
        None => b"{}".to_vec(),
    };
    let inputs = inputs
        .iter()
        .map(|(k, v)| (k.clone(), Input::Str(v.clone())))
        .collect();
    let job = RenderJob {
        entry,
        files,
        data,
        inputs,
        format: Format::Pdf,
    };
    let fonts_dir = config.fonts_dir();
    let (fonts, skipped) = FontSet::load(Some(&fonts_dir));
    for s in skipped {
        eprintln!("warning: font skipped: {s}");
    }
    let rendered = render(&job, &fonts, |_| {}).map_err(FileRenderError::Render)?;
    for w in &rendered.warnings {
        eprintln!("{w}");
    }
    let Artifact::Pdf(pdf) = rendered.artifact else {
        unreachable!("asked for PDF")
    };
    write_atomically(output, &pdf).map_err(|source| FileRenderError::Write {
        path: output.display().to_string(),
        source,
    })
}

/// Files below a template root, small enough and few enough to be a template, hidden ones
/// skipped.
fn template_files(root: &Path) -> Vec<std::path::PathBuf> {
    fn walk(dir: &Path, depth: u8, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if p.is_dir() && depth > 0 {
                walk(&p, depth - 1, out);
            } else if p.is_file() && out.len() < 1000 {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, 4, &mut out);
    out.sort();
    out
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, and renames it into place, so a
/// reader never sees half a file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Link targets an SVG page may keep: SVG previews are inserted into the console's pages, where
/// a `javascript:` (or `data:`, `file:`) link from a template would run with the viewer's
/// session. Judged on the attribute's text as written, so an entity-escaped scheme is dropped.
const SAFE_LINK_PREFIXES: &[&str] = &["#", "http://", "https://", "mailto:"];

/// Removes every link target of an `<a>` element that is not of [`SAFE_LINK_PREFIXES`].
fn safe_links(svg: &str) -> String {
    let mut out = String::with_capacity(svg.len());
    let mut rest = svg;
    while let Some(start) = rest.find("<a ") {
        let (before, tag) = rest.split_at(start);
        let end = tag.find('>').map_or(tag.len(), |e| e + 1);
        out.push_str(before);
        out.push_str(&drop_unsafe_targets(&tag[..end]));
        rest = &tag[end..];
    }
    out.push_str(rest);
    out
}

fn drop_unsafe_targets(tag: &str) -> String {
    let mut tag = tag.to_owned();
    // The leading space tells `href` from `xlink:href`.
    for attr in [" href=\"", " xlink:href=\""] {
        while let Some(at) = tag.find(attr) {
            let value_start = at + attr.len();
            let Some(len) = tag[value_start..].find('"') else {
                // Not well-formed: keep nothing of the element's attributes.
                return "<a>".to_owned();
            };
            let value = tag[value_start..value_start + len].trim_start();
            let safe = SAFE_LINK_PREFIXES.iter().any(|p| {
                value
                    .get(..p.len())
                    .is_some_and(|head| head.eq_ignore_ascii_case(p))
            });
            if safe {
                break;
            }
            tag.replace_range(at..value_start + len + 1, "");
        }
    }
    tag
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(src: &str) -> RenderJob {
        RenderJob {
            entry: "main.typ".into(),
            files: vec![("main.typ".into(), src.as_bytes().to_vec())],
            data: br#"{"name":"Ada"}"#.to_vec(),
            inputs: BTreeMap::from([("title".into(), Input::Str("Hello".into()))]),
            format: Format::Pdf,
        }
    }

    #[test]
    fn renders_data_and_inputs_into_a_pdf() {
        let (fonts, _) = FontSet::load(None);
        let src = "#let d = json(\"data.json\")\n= #sys.inputs.title\nDear #d.name";
        let mut stages = Vec::new();
        let out = render(&job(src), &fonts, |s| stages.push(s)).unwrap();
        assert_eq!(out.pages, 1);
        assert_eq!(stages, vec![Stage::Compiling, Stage::Writing { pages: 1 }]);
        let Artifact::Pdf(pdf) = out.artifact else {
            panic!("not a pdf")
        };
        assert!(pdf.starts_with(b"%PDF-"));
    }

    #[test]
    fn compile_errors_carry_line_and_column() {
        let (fonts, _) = FontSet::load(None);
        let err = render(&job("Fine line\n#let x = (1 + )\n"), &fonts, |_| {}).unwrap_err();
        let d = &err.diagnostics()[0];
        assert_eq!(d.file.as_deref(), Some("main.typ"));
        assert_eq!(d.line, Some(2));
        assert!(d.column.is_some());
        assert_eq!(err.kind(), "compile");
    }

    #[test]
    fn packages_and_outside_files_are_not_reachable() {
        let (fonts, _) = FontSet::load(None);
        let err = render(&job("#import \"@preview/cetz:0.3.0\": *"), &fonts, |_| {}).unwrap_err();
        assert!(err.to_string().contains("not available"), "{err}");
        let err = render(&job("#read(\"/etc/passwd\")"), &fonts, |_| {}).unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
    }

    #[test]
    fn svg_previews_are_limited_to_max_pages() {
        let (fonts, _) = FontSet::load(None);
        let mut j = job("a #pagebreak() b #pagebreak() c");
        j.format = Format::Svg { max_pages: 2 };
        let out = render(&j, &fonts, |_| {}).unwrap();
        assert_eq!(out.pages, 3);
        let Artifact::Svg(pages) = out.artifact else {
            panic!("not svg")
        };
        assert_eq!(pages.len(), 2);
        assert!(pages[0].contains("<svg"));
    }

    #[test]
    fn svg_previews_keep_only_safe_links() {
        let (fonts, _) = FontSet::load(None);
        let mut j = job(concat!(
            "#link(\"javascript:alert(1)\")[a] #link(\" JavaScript:x\")[b] ",
            "#link(\"https://example.com/?a=1&b=2\")[c] #link(\"mailto:x@example.com\")[d]"
        ));
        j.format = Format::Svg { max_pages: 1 };
        let Artifact::Svg(pages) = render(&j, &fonts, |_| {}).unwrap().artifact else {
            panic!("not svg")
        };
        let svg = pages[0].to_lowercase();
        assert!(!svg.contains("javascript:"), "{svg}");
        assert!(svg.contains("href=\"https://example.com/"), "{svg}");
        assert!(svg.contains("xlink:href=\"mailto:x@example.com\""), "{svg}");
        assert_eq!(
            safe_links(r#"<g><a href="data:x" xlink:href="data:x"><rect/></a></g>"#),
            "<g><a><rect/></a></g>"
        );
        assert_eq!(safe_links(r##"<a href="#p2">"##), r##"<a href="#p2">"##);
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.pdf");
        write_atomically(&p, b"one").unwrap();
        write_atomically(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
