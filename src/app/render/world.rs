//! The Typst `World` of one render: it sees only that template version's files, the render's data
//! as `data.json`, its parameters as `sys.inputs`, and the loaded fonts. Nothing on disk, no
//! network, no packages.

use std::collections::HashMap;
use std::sync::Mutex;

use typst::diag::{FileError, FileResult, PackageError};
use typst::foundations::{Bytes, Datetime, Dict, Duration, IntoValue, Value};
use typst::syntax::{FileId, RootedPath, Source, VirtualPath, VirtualRoot};
use typst::text::{Font, FontBook};
use typst::utils::LazyHash;
use typst::{Library, LibraryExt, World};

use super::fonts::FontSet;
use super::{Input, RenderError, RenderJob};

/// The file name under which the render's data is visible to the template.
pub const DATA_FILE: &str = "data.json";

pub struct ReportWorld<'a> {
    library: LazyHash<Library>,
    fonts: &'a FontSet,
    main: FileId,
    files: HashMap<FileId, Bytes>,
    /// Parsed sources, so a module imported twice is parsed once per render.
    sources: Mutex<HashMap<FileId, Source>>,
    now: jiff::Zoned,
}

impl<'a> ReportWorld<'a> {
    pub fn new(job: &RenderJob, fonts: &'a FontSet) -> Result<Self, RenderError> {
        let mut files = HashMap::new();
        for (path, content) in &job.files {
            files.insert(file_id(path)?, Bytes::new(content.clone()));
        }
        // The render's data wins over a data.json shipped with the template (sample data).
        files.insert(file_id(DATA_FILE)?, Bytes::new(job.data.clone()));
        let main = file_id(&job.entry)?;
        if !files.contains_key(&main) {
            return Err(RenderError::Invalid(format!(
                "the template has no entry file \"{}\"",
                job.entry
            )));
        }
        let inputs: Dict = job
            .inputs
            .iter()
            .map(|(k, v)| (k.as_str().into(), input_value(v)))
            .collect();
        let library = Library::builder().with_inputs(inputs).build();
        Ok(ReportWorld {
            library: LazyHash::new(library),
            fonts,
            main,
            files,
            sources: Mutex::new(HashMap::new()),
            now: jiff::Zoned::now(),
        })
    }

    /// The template-relative path of a file id, for diagnostics.
    pub fn path_of(id: FileId) -> String {
        id.vpath().get_without_slash().to_owned()
    }
}

fn file_id(path: &str) -> Result<FileId, RenderError> {
    let vpath = VirtualPath::new(format!("/{}", path.trim_start_matches('/')))
        .map_err(|e| RenderError::Invalid(format!("invalid file path \"{path}\": {e}")))?;
    Ok(RootedPath::new(VirtualRoot::Project, vpath).intern())
}

fn input_value(input: &Input) -> Value {
    match input {
        Input::Str(s) => s.as_str().into_value(),
        Input::Int(i) => i.into_value(),
        Input::Float(f) => f.into_value(),
        Input::Bool(b) => b.into_value(),
        Input::Date(d) => Datetime::from_ymd(d.year().into(), d.month() as u8, d.day() as u8)
            .map_or(Value::None, IntoValue::into_value),
        Input::None => Value::None,
    }
}

impl World for ReportWorld<'_> {
    fn library(&self) -> &LazyHash<Library> {
        &self.library
    }

    fn book(&self) -> &LazyHash<FontBook> {
        &self.fonts.book
    }

    fn main(&self) -> FileId {
        self.main
    }

    fn source(&self, id: FileId) -> FileResult<Source> {
        let mut cache = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(source) = cache.get(&id) {
            return Ok(source.clone());
        }
        let bytes = self.file(id)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| FileError::InvalidUtf8)?;
        let source = Source::new(id, text.to_owned());
        cache.insert(id, source.clone());
        Ok(source)
    }

    fn file(&self, id: FileId) -> FileResult<Bytes> {
        if let VirtualRoot::Package(spec) = id.root() {
            return Err(FileError::Package(PackageError::Other(Some(
                format!("packages such as {spec} are not available: add the files to the template")
                    .into(),
            ))));
        }
        self.files
            .get(&id)
            .cloned()
            .ok_or_else(|| FileError::NotFound(Self::path_of(id).into()))
    }

    fn font(&self, index: usize) -> Option<Font> {
        self.fonts.fonts.get(index).cloned()
    }

    fn today(&self, offset: Option<Duration>) -> Option<Datetime> {
        let when = match offset {
            None => self.now.clone(),
            Some(off) => {
                let secs = i32::try_from(off.seconds() as i64).ok()?;
                let tz = jiff::tz::TimeZone::fixed(jiff::tz::Offset::from_seconds(secs).ok()?);
                self.now.with_time_zone(tz)
            }
        };
        Datetime::from_ymd(when.year().into(), when.month() as u8, when.day() as u8)
    }
}
