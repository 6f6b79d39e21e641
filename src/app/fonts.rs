//! The operator's font directory: uploads are validated and written atomically, and the directory
//! is rescanned on a timer (shared mounts such as Azure Files or NFS deliver no file events), so
//! fonts dropped in by hand or by another instance reach the render workers too.
//!
//! The list of faces is built once per change of the directory and shared; a request never
//! parses a font. Files that are not fonts or hold too many faces are skipped with a warning and
//! listed as skipped, never taking the rest of the directory down with them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::bus::{Bus, Hint};
use super::render::RenderPool;
use super::render::fonts::{self, FaceError};
use super::store::Store;
use crate::lifecycle::Shutdown;
use tokio_util::task::TaskTracker;

/// The cache-version row and bus hint of the font directory.
const CACHE_KIND: &str = "fonts";
/// How often the cache version is compared.
const VERSION_POLL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum FontError {
    #[error(
        "\"{0}\" is not a usable font file name: use letters, digits, '.', '-', '_' or spaces and end in .ttf, .otf, .ttc or .otc"
    )]
    BadName(String),
    #[error("the file is not a font Quire can use: {0}")]
    Faces(#[from] FaceError),
    #[error("the file has {size} bytes; fonts.max_upload_size is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("cannot write to the font directory {dir}: {source}")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// One font face a render can use.
#[derive(Debug, Clone)]
pub struct FaceEntry {
    pub family: String,
    pub style: String,
    pub weight: u16,
    /// `bundled` or `directory`.
    pub source: &'static str,
    /// The file name within the font directory (directory fonts only).
    pub file: Option<String>,
}

/// A font file in the directory that renders do not use, and why.
#[derive(Debug, Clone)]
pub struct SkippedFile {
    pub file: String,
    pub reason: String,
}

/// What renders can use, as of the last change of the directory.
#[derive(Debug, Default)]
pub struct Catalog {
    pub faces: Vec<FaceEntry>,
    pub skipped: Vec<SkippedFile>,
}

impl Catalog {
    fn directory_faces(&self, except: Option<&str>) -> usize {
        self.faces
            .iter()
            .filter(|f| f.file.is_some() && f.file.as_deref() != except)
            .count()
    }
}

type Signature = Vec<(PathBuf, u64, Option<SystemTime>)>;

#[derive(Clone)]
pub struct FontLibrary {
    dir: PathBuf,
    max_upload: usize,
    pool: RenderPool,
    store: Arc<dyn Store>,
    bus: Bus,
    seen: Arc<Mutex<(Signature, Arc<Catalog>)>>,
}

impl FontLibrary {
    /// Creates the directory if it is missing (a read-only mount is fine: uploads then fail).
    pub fn new(
        dir: PathBuf,
        max_upload: usize,
        pool: RenderPool,
        store: Arc<dyn Store>,
        bus: Bus,
    ) -> Self {
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "font directory cannot be created");
        }
        let catalog = Arc::new(catalog(&dir));
        let seen = Arc::new(Mutex::new((fonts::signature(&dir), catalog)));
        FontLibrary {
            dir,
            max_upload,
            pool,
            store,
            bus,
            seen,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every face a render can use, bundled first, and the files skipped.
    pub fn list(&self) -> Arc<Catalog> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    /// Installs an uploaded font (see [`FontLibrary::install`]) off the async threads and tells
    /// the other instances; the number of faces it holds.
    pub async fn upload(&self, name: String, data: bytes::Bytes) -> Result<usize, FontError> {
        let lib = self.clone();
        let faces = self.blocking(move || lib.install(&name, &data)).await?;
        self.announce_change().await;
        Ok(faces)
    }

    /// Removes a font file and tells the other instances; false when there was none.
    pub async fn delete(&self, name: String) -> Result<bool, FontError> {
        let lib = self.clone();
        let removed = self.blocking(move || lib.remove(&name)).await?;
        if removed {
            self.announce_change().await;
        }
        Ok(removed)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, FontError> + Send + 'static,
    ) -> Result<T, FontError> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| FontError::Io {
                dir: self.dir.clone(),
                source: std::io::Error::other(e),
            })?
    }

    /// Tells the other instances that the font directory changed.
    async fn announce_change(&self) {
        if let Err(e) = self.store.bump_cache(CACHE_KIND).await {
            tracing::warn!(error = %e, "could not record the font change; other instances notice at their next rescan");
        }
        self.bus.cache_changed(CACHE_KIND);
    }

    /// Validates and installs an uploaded font; the directory is untouched unless every check
    /// passes, and the file appears whole or not at all.
    fn install(&self, name: &str, data: &[u8]) -> Result<usize, FontError> {
        if !valid_name(name) {
            return Err(FontError::BadName(name.to_owned()));
        }
        if data.len() > self.max_upload {
            return Err(FontError::TooLarge {
                size: data.len(),
                limit: self.max_upload,
            });
        }
        let room =
            fonts::MAX_DIRECTORY_FACES.saturating_sub(self.list().directory_faces(Some(name)));
        let faces = fonts::faces(data, room)?.len();
        let io = |source| FontError::Io {
            dir: self.dir.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        super::render::write_atomically(&self.dir.join(name), data).map_err(io)?;
        self.rescan();
        Ok(faces)
    }

    /// Removes a font file; false when there was none.
    fn remove(&self, name: &str) -> Result<bool, FontError> {
        if !valid_name(name) {
            return Err(FontError::BadName(name.to_owned()));
        }
        match std::fs::remove_file(self.dir.join(name)) {
            Ok(()) => {
                self.rescan();
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(FontError::Io {
                dir: self.dir.clone(),
                source,
            }),
        }
    }

    /// Rebuilds the list and tells the render workers to reload when the directory changed;
    /// true if it did. Blocking: reads every font file once per change.
    pub fn rescan(&self) -> bool {
        let now = fonts::signature(&self.dir);
        if self.seen.lock().unwrap_or_else(|e| e.into_inner()).0 == now {
            return false;
        }
        let catalog = Arc::new(catalog(&self.dir));
        tracing::info!(dir = %self.dir.display(), files = now.len(), "font directory changed; workers will reload fonts");
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = (now, catalog);
        self.pool.fonts_changed();
        true
    }

    /// Keeps the workers' fonts current until draining: rescans on a timer (for files dropped
    /// in by hand), on a hint from the instance that took an upload, after a NATS reconnect, and
    /// when the `fonts` cache version in the database moved (for hints that were lost).
    pub fn spawn_watch(&self, every: Duration, tasks: &TaskTracker, shutdown: Shutdown) {
        let lib = self.clone();
        let store = self.store.clone();
        let mut hints = self.bus.hints();
        tasks.spawn(async move {
            let mut seen = store.cache_version(CACHE_KIND).await.unwrap_or(0);
            let mut rescan_tick = tokio::time::interval(every);
            let mut version_tick = tokio::time::interval(VERSION_POLL);
            rescan_tick.tick().await;
            loop {
                let rescan = tokio::select! {
                    _ = rescan_tick.tick() => true,
                    _ = version_tick.tick() => match store.cache_version(CACHE_KIND).await {
                        Ok(v) if v != seen => {
                            seen = v;
                            true
                        }
                        _ => false,
                    },
                    hint = hints.recv() => matches!(hint, Ok(Hint::CacheChanged(ref k)) if k == CACHE_KIND)
                        || matches!(hint, Ok(Hint::Reconnected)),
                    _ = shutdown.draining() => return,
                };
                if rescan {
                    let lib = lib.clone();
                    let _ = tokio::task::spawn_blocking(move || lib.rescan()).await;
                }
            }
        });
    }
}

/// The bundled faces, then each directory file's faces within the limits; every skipped file is
/// logged.
fn catalog(dir: &Path) -> Catalog {
    let mut faces: Vec<FaceEntry> = fonts::embedded_faces()
        .map(|info| entry(&info, "bundled", None))
        .collect();
    let mut skipped = Vec::new();
    let mut room = fonts::MAX_DIRECTORY_FACES;
    for path in fonts::font_files(dir) {
        let file = path
            .strip_prefix(dir)
            .map_or_else(|_| path.display().to_string(), |r| r.display().to_string());
        let read = std::fs::read(&path).map_err(|e| FaceError::Read(e.to_string()));
        match read.and_then(|data| fonts::faces(&data, room)) {
            Ok(infos) => {
                room -= infos.len();
                faces.extend(
                    infos
                        .iter()
                        .map(|info| entry(info, "directory", Some(file.clone()))),
                );
            }
            Err(why) => {
                tracing::warn!(file = %path.display(), reason = %why, "font file skipped");
                skipped.push(SkippedFile {
                    file,
                    reason: why.to_string(),
                });
            }
        }
    }
    Catalog { faces, skipped }
}

fn entry(info: &typst::text::FontInfo, source: &'static str, file: Option<String>) -> FaceEntry {
    FaceEntry {
        family: info.family.clone(),
        style: format!("{:?}", info.variant.style).to_lowercase(),
        weight: info.variant.weight.to_number(),
        source,
        file,
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ' '))
        && fonts::is_font_name(Path::new(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(valid_name("Inter-Bold.ttf"));
        assert!(valid_name("My Font.OTF"));
        for bad in [
            "../x.ttf",
            ".hidden.ttf",
            "a/b.ttf",
            "font.exe",
            "",
            "x.ttf\0",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
