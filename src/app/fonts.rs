//! The operator's font directory: uploads are validated and written atomically, and the directory
//! is rescanned on a timer (shared mounts such as Azure Files or NFS deliver no file events), so
//! fonts dropped in by hand or by another instance reach the render workers too.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::render::RenderPool;
use super::render::fonts::{self, FontOrigin, FontSet};
use crate::lifecycle::Shutdown;

#[derive(Debug, thiserror::Error)]
pub enum FontError {
    #[error(
        "\"{0}\" is not a usable font file name: use letters, digits, '.', '-', '_' or spaces and end in .ttf, .otf, .ttc or .otc"
    )]
    BadName(String),
    #[error("the file is not a font Quire can read (TrueType/OpenType)")]
    NotAFont,
    #[error("the file has {size} bytes; fonts.max_upload_size is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("cannot write to the font directory {dir}: {source}")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// One font face as listed to users.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FaceEntry {
    pub family: String,
    pub style: String,
    pub weight: u16,
    /// `bundled` or `directory`.
    pub source: &'static str,
    /// The file name within the font directory (directory fonts only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

type Signature = Vec<(PathBuf, u64, Option<SystemTime>)>;

#[derive(Clone)]
pub struct FontLibrary {
    dir: PathBuf,
    max_upload: usize,
    pool: RenderPool,
    seen: Arc<Mutex<Signature>>,
}

impl FontLibrary {
    /// Creates the directory if it is missing (a read-only mount is fine: uploads then fail).
    pub fn new(dir: PathBuf, max_upload: usize, pool: RenderPool) -> Self {
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "font directory cannot be created");
        }
        let seen = Arc::new(Mutex::new(fonts::signature(&dir)));
        FontLibrary {
            dir,
            max_upload,
            pool,
            seen,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every face a render can use, bundled first.
    pub fn list(&self) -> Vec<FaceEntry> {
        let (set, _) = FontSet::load(Some(&self.dir));
        set.fonts
            .iter()
            .zip(&set.origins)
            .map(|(font, origin)| {
                let info = font.info();
                let (source, file) = match origin {
                    FontOrigin::Embedded(_) => ("bundled", None),
                    FontOrigin::File(p) => (
                        "directory",
                        p.strip_prefix(&self.dir)
                            .ok()
                            .map(|r| r.display().to_string()),
                    ),
                };
                FaceEntry {
                    family: info.family.clone(),
                    style: format!("{:?}", info.variant.style).to_lowercase(),
                    weight: info.variant.weight.to_number(),
                    source,
                    file,
                }
            })
            .collect()
    }

    /// Validates and installs an uploaded font; the directory is untouched unless every check
    /// passes, and the file appears whole or not at all.
    pub fn install(&self, name: &str, data: &[u8]) -> Result<usize, FontError> {
        if !valid_name(name) {
            return Err(FontError::BadName(name.to_owned()));
        }
        if data.len() > self.max_upload {
            return Err(FontError::TooLarge {
                size: data.len(),
                limit: self.max_upload,
            });
        }
        let faces = fonts::faces(data).len();
        if faces == 0 {
            return Err(FontError::NotAFont);
        }
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
    pub fn remove(&self, name: &str) -> Result<bool, FontError> {
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

    /// Tells the render workers to reload when the directory changed; true if it did.
    pub fn rescan(&self) -> bool {
        let now = fonts::signature(&self.dir);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if *seen == now {
            return false;
        }
        tracing::info!(dir = %self.dir.display(), files = now.len(), "font directory changed; workers will reload fonts");
        *seen = now;
        self.pool.fonts_changed();
        true
    }

    /// Rescans every `every` until stop.
    pub fn spawn_rescan(&self, every: Duration, shutdown: Shutdown) {
        let lib = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let lib = lib.clone();
                        let _ = tokio::task::spawn_blocking(move || lib.rescan()).await;
                    }
                    _ = shutdown.stopped() => return,
                }
            }
        });
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
