//! The fonts a render can use: the open-licence set in `fonts/` embedded in the binary, plus the
//! operator's font directory.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use typst::foundations::Bytes;
use typst::text::{Font, FontBook, FontInfo};
use typst::utils::LazyHash;

macro_rules! embed {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_bytes!(concat!("../../../fonts/", $name)))),*]
    };
}

/// Bundled fonts: Libertinus Serif (text), DejaVu Sans (sans and broad Unicode fallback),
/// DejaVu Sans Mono (code), New Computer Modern Math (equations). Licences in `fonts/`.
static EMBEDDED: &[(&str, &[u8])] = embed![
    "LibertinusSerif-Regular.otf",
    "LibertinusSerif-Bold.otf",
    "LibertinusSerif-Italic.otf",
    "LibertinusSerif-BoldItalic.otf",
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "NewCMMath-Regular.otf",
];

/// File extensions scanned in the font directory.
pub const FONT_EXTENSIONS: &[&str] = &["ttf", "otf", "ttc", "otc"];

/// A loaded set of fonts with the book Typst selects from.
pub struct FontSet {
    pub book: LazyHash<FontBook>,
    pub fonts: Vec<Font>,
    /// Where each font came from, index-aligned with `fonts`.
    pub origins: Vec<FontOrigin>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FontOrigin {
    Embedded(&'static str),
    File(PathBuf),
}

impl FontSet {
    /// The embedded fonts plus every readable font file under `dir` (if given and present).
    /// Unreadable or invalid files are skipped and reported, never fatal.
    pub fn load(dir: Option<&Path>) -> (FontSet, Vec<String>) {
        let mut fonts = Vec::new();
        let mut origins = Vec::new();
        for (name, data) in EMBEDDED {
            for font in Font::iter(Bytes::new(*data)) {
                fonts.push(font);
                origins.push(FontOrigin::Embedded(name));
            }
        }
        let mut skipped = Vec::new();
        if let Some(dir) = dir {
            for path in font_files(dir) {
                match std::fs::read(&path) {
                    Ok(data) => {
                        let before = fonts.len();
                        fonts.extend(Font::iter(Bytes::new(data)));
                        if fonts.len() == before {
                            skipped.push(format!("{}: not a font", path.display()));
                        }
                        origins.resize(fonts.len(), FontOrigin::File(path.clone()));
                    }
                    Err(e) => skipped.push(format!("{}: {e}", path.display())),
                }
            }
        }
        let book = LazyHash::new(FontBook::from_fonts(&fonts));
        (
            FontSet {
                book,
                fonts,
                origins,
            },
            skipped,
        )
    }
}

/// The font faces in `data`; empty when it is not a font file.
pub fn faces(data: &[u8]) -> Vec<FontInfo> {
    FontInfo::iter(data).collect()
}

/// The font files under `dir` (two levels deep, so families can sit in folders), skipping hidden
/// files such as in-progress uploads, in a stable order.
pub fn font_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    collect(dir, 2, &mut out);
    out.sort();
    out
}

fn collect(dir: &Path, depth: u8, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if hidden {
            continue;
        }
        if path.is_dir() {
            if depth > 0 {
                collect(&path, depth - 1, out);
            }
        } else if is_font_name(&path) {
            out.push(path);
        }
    }
}

/// True for names with a font extension.
pub fn is_font_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| FONT_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// A cheap fingerprint of the directory (names, sizes, modification times), compared between
/// scans to notice fonts added or removed on a shared mount that sends no file events.
pub fn signature(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    font_files(dir)
        .into_iter()
        .map(|p| {
            let md = std::fs::metadata(&p).ok();
            let len = md.as_ref().map_or(0, |m| m.len());
            let modified = md.and_then(|m| m.modified().ok());
            (p, len, modified)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_fonts_cover_serif_sans_mono_and_math() {
        let (set, skipped) = FontSet::load(None);
        assert!(skipped.is_empty());
        let families: Vec<String> = set
            .fonts
            .iter()
            .map(|f| f.info().family.to_lowercase())
            .collect();
        for want in [
            "libertinus serif",
            "dejavu sans",
            "dejavu sans mono",
            "new computer modern math",
        ] {
            assert!(
                families.iter().any(|f| f == want),
                "missing {want}: {families:?}"
            );
        }
    }

    #[test]
    fn directory_fonts_are_added_and_junk_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            concat!(env!("CARGO_MANIFEST_DIR"), "/fonts/DejaVuSansMono.ttf"),
            dir.path().join("Extra.ttf"),
        )
        .unwrap();
        std::fs::write(dir.path().join("junk.otf"), b"not a font").unwrap();
        std::fs::write(dir.path().join(".upload-123.ttf"), b"partial").unwrap();
        let (base, _) = FontSet::load(None);
        let (set, skipped) = FontSet::load(Some(dir.path()));
        assert_eq!(set.fonts.len(), base.fonts.len() + 1);
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert!(skipped[0].contains("junk.otf"));
        assert!(faces(b"not a font").is_empty());
    }
}
