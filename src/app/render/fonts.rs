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

/// Faces one font file may hold. Real collections hold a handful (CJK collections about ten); a
/// collection header can claim hundreds of thousands of faces that all point at one font, and
/// every face costs parsing and memory in the server and in each render worker.
pub const MAX_FACES_PER_FILE: usize = 64;

/// Faces the font directory may hold in all; files beyond it are skipped.
pub const MAX_DIRECTORY_FACES: usize = 1024;

/// A loaded set of fonts with the book Typst selects from.
pub struct FontSet {
    pub book: LazyHash<FontBook>,
    pub fonts: Vec<Font>,
}

impl FontSet {
    /// The embedded fonts plus every readable font file under `dir` (if given and present).
    /// Unreadable or invalid files are skipped and reported, never fatal.
    pub fn load(dir: Option<&Path>) -> (FontSet, Vec<String>) {
        let mut fonts: Vec<Font> = EMBEDDED
            .iter()
            .flat_map(|(_, data)| Font::iter(Bytes::new(*data)))
            .collect();
        let mut skipped = Vec::new();
        if let Some(dir) = dir {
            let mut budget = MAX_DIRECTORY_FACES;
            for path in font_files(dir) {
                match read_checked(&path, budget) {
                    Ok(data) => {
                        let before = fonts.len();
                        fonts.extend(Font::iter(Bytes::new(data)));
                        if fonts.len() == before {
                            skipped.push(format!("{}: {}", path.display(), FaceError::NotAFont));
                        }
                        budget = budget.saturating_sub(fonts.len() - before);
                    }
                    Err(why) => skipped.push(format!("{}: {why}", path.display())),
                }
            }
        }
        let book = LazyHash::new(FontBook::from_fonts(&fonts));
        (FontSet { book, fonts }, skipped)
    }
}

/// The faces of the bundled fonts.
pub fn embedded_faces() -> impl Iterator<Item = FontInfo> {
    EMBEDDED.iter().flat_map(|(_, data)| FontInfo::iter(data))
}

/// Why a font file is not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaceError {
    #[error("not a font (TrueType/OpenType) file")]
    NotAFont,
    #[error("the file holds {faces} faces; at most {limit} per file", limit = MAX_FACES_PER_FILE)]
    TooManyInFile { faces: usize },
    #[error(
        "{faces} more faces would pass the limit of {limit} in the font directory ({left} left)",
        limit = MAX_DIRECTORY_FACES
    )]
    DirectoryFull { faces: usize, left: usize },
    #[error("cannot read it: {0}")]
    Read(String),
}

/// How many faces `data` declares, read from its header alone (nothing is parsed), so that a
/// file can be refused before its faces cost anything.
pub fn declared_faces(data: &[u8]) -> Result<usize, FaceError> {
    let be32 = |at: usize| {
        data.get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    match data.get(..4) {
        Some(b"ttcf") => be32(8)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or(FaceError::NotAFont),
        Some(b"\x00\x01\x00\x00" | b"OTTO" | b"true" | b"typ1") => Ok(1),
        _ => Err(FaceError::NotAFont),
    }
}

/// Checks `data`'s declared faces against the per-file limit and the `room` left in the
/// directory, from the header alone.
fn check_declared(data: &[u8], room: usize) -> Result<(), FaceError> {
    let declared = declared_faces(data)?;
    if declared > MAX_FACES_PER_FILE {
        return Err(FaceError::TooManyInFile { faces: declared });
    }
    if declared > room {
        return Err(FaceError::DirectoryFull {
            faces: declared,
            left: room,
        });
    }
    Ok(())
}

/// [`check_declared`], then the faces parsed; a file whose faces all fail to parse is not a
/// font.
pub fn faces(data: &[u8], room: usize) -> Result<Vec<FontInfo>, FaceError> {
    check_declared(data, room)?;
    let faces: Vec<FontInfo> = FontInfo::iter(data).collect();
    if faces.is_empty() {
        return Err(FaceError::NotAFont);
    }
    Ok(faces)
}

/// Reads a font file whose header passes [`check_declared`]; its faces are parsed once, by
/// the caller.
fn read_checked(path: &Path, room: usize) -> Result<Vec<u8>, FaceError> {
    let data = std::fs::read(path).map_err(|e| FaceError::Read(e.to_string()))?;
    check_declared(&data, room)?;
    Ok(data)
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
        assert_eq!(faces(b"not a font", 10).unwrap_err(), FaceError::NotAFont);
    }

    /// A TrueType collection whose `count` face offsets all point at one embedded font.
    fn collection(count: u32) -> Vec<u8> {
        let font = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fonts/DejaVuSansMono.ttf"
        ))
        .unwrap();
        let header = 12 + 4 * count as usize;
        let mut out = b"ttcf".to_vec();
        out.extend(0x0001_0000u32.to_be_bytes());
        out.extend(count.to_be_bytes());
        for _ in 0..count {
            out.extend((header as u32).to_be_bytes());
        }
        // Table offsets in a collection count from the file's start: shift them by the header.
        let tables = u16::from_be_bytes([font[4], font[5]]) as usize;
        let mut shifted = font.clone();
        for t in 0..tables {
            let at = 12 + 16 * t + 8;
            let offset = u32::from_be_bytes(font[at..at + 4].try_into().unwrap());
            shifted[at..at + 4].copy_from_slice(&(offset + header as u32).to_be_bytes());
        }
        out.extend(shifted);
        out
    }

    #[test]
    fn collections_are_limited_before_their_faces_are_parsed() {
        let small = collection(3);
        assert_eq!(declared_faces(&small), Ok(3));
        assert_eq!(faces(&small, 100).unwrap().len(), 3);
        let huge = collection(200_000);
        let started = std::time::Instant::now();
        assert_eq!(
            faces(&huge, MAX_DIRECTORY_FACES).unwrap_err(),
            FaceError::TooManyInFile { faces: 200_000 }
        );
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
        assert_eq!(
            faces(&small, 2).unwrap_err(),
            FaceError::DirectoryFull { faces: 3, left: 2 }
        );
    }

    #[test]
    fn a_hostile_collection_in_the_directory_is_skipped_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bomb.ttc"), collection(200_000)).unwrap();
        std::fs::write(dir.path().join("fine.ttc"), collection(2)).unwrap();
        let (base, _) = FontSet::load(None);
        let (set, skipped) = FontSet::load(Some(dir.path()));
        assert_eq!(set.fonts.len(), base.fonts.len() + 2);
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert!(skipped[0].contains("bomb.ttc") && skipped[0].contains("at most 64"));
    }
}
