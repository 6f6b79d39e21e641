//! The pipe protocol between the server and its render workers. A frame is
//! `[u32 header length][u32 blob length][JSON header][blob]` (little-endian): the header says what
//! the message is, the blob carries bytes (template files and data in, the PDF out) without
//! JSON-escaping them.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Artifact, Diagnostic, Format, Input, RenderError, RenderJob, Rendered, Stage};

/// Frames larger than this are refused: they can only come from a bug or a corrupted pipe.
const MAX_HEADER: usize = 256 << 20;
const MAX_BLOB: usize = 2 << 30;

/// Server -> worker.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// Bumped when the font directory changed; a worker with an older set reloads first.
    pub fonts_generation: u64,
    pub entry: String,
    /// File names and their lengths, in blob order; the data follows the files.
    pub files: Vec<(String, usize)>,
    pub inputs: BTreeMap<String, Input>,
    pub format: Format,
}

/// Worker -> server.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Stage(Stage),
    /// A PDF travels in the blob; SVG pages in `svg`.
    Done {
        pages: usize,
        warnings: Vec<Diagnostic>,
        svg: Option<Vec<String>>,
    },
    Failed(RenderError),
}

pub fn encode_job(job: &RenderJob, fonts_generation: u64) -> (Request, Vec<u8>) {
    let mut blob =
        Vec::with_capacity(job.files.iter().map(|(_, c)| c.len()).sum::<usize>() + job.data.len());
    let mut files = Vec::with_capacity(job.files.len());
    for (name, content) in &job.files {
        files.push((name.clone(), content.len()));
        blob.extend_from_slice(content);
    }
    blob.extend_from_slice(&job.data);
    let req = Request {
        fonts_generation,
        entry: job.entry.clone(),
        files,
        inputs: job.inputs.clone(),
        format: job.format,
    };
    (req, blob)
}

pub fn decode_job(req: Request, blob: Vec<u8>) -> io::Result<RenderJob> {
    let mut files = Vec::with_capacity(req.files.len());
    let mut at = 0usize;
    for (name, len) in req.files {
        let end = at
            .checked_add(len)
            .filter(|e| *e <= blob.len())
            .ok_or_else(|| invalid("file lengths exceed the blob"))?;
        files.push((name, blob[at..end].to_vec()));
        at = end;
    }
    Ok(RenderJob {
        entry: req.entry,
        files,
        data: blob[at..].to_vec(),
        inputs: req.inputs,
        format: req.format,
    })
}

/// Splits a finished render into its reply and blob.
pub fn encode_done(r: Rendered) -> (Reply, Vec<u8>) {
    match r.artifact {
        Artifact::Pdf(pdf) => (
            Reply::Done {
                pages: r.pages,
                warnings: r.warnings,
                svg: None,
            },
            pdf,
        ),
        Artifact::Svg(pages) => (
            Reply::Done {
                pages: r.pages,
                warnings: r.warnings,
                svg: Some(pages),
            },
            Vec::new(),
        ),
    }
}

pub fn decode_done(
    pages: usize,
    warnings: Vec<Diagnostic>,
    svg: Option<Vec<String>>,
    blob: Vec<u8>,
) -> Rendered {
    let artifact = match svg {
        Some(s) => Artifact::Svg(s),
        None => Artifact::Pdf(blob),
    };
    Rendered {
        pages,
        warnings,
        artifact,
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

fn lengths(prefix: [u8; 8]) -> io::Result<(usize, usize)> {
    let h = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    let b = u32::from_le_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]) as usize;
    if h > MAX_HEADER || b > MAX_BLOB {
        return Err(invalid("frame too large"));
    }
    Ok((h, b))
}

fn prefix(header: &[u8], blob: &[u8]) -> io::Result<[u8; 8]> {
    let h = u32::try_from(header.len()).map_err(|_| invalid("header too large"))?;
    let b = u32::try_from(blob.len()).map_err(|_| invalid("blob too large"))?;
    let mut p = [0u8; 8];
    p[..4].copy_from_slice(&h.to_le_bytes());
    p[4..].copy_from_slice(&b.to_le_bytes());
    Ok(p)
}

/// Blocking write (worker side).
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T, blob: &[u8]) -> io::Result<()> {
    let header = serde_json::to_vec(msg).map_err(io::Error::other)?;
    w.write_all(&prefix(&header, blob)?)?;
    w.write_all(&header)?;
    w.write_all(blob)?;
    w.flush()
}

/// Blocking read (worker side); `Ok(None)` at a clean end of stream.
pub fn read_frame<T: for<'de> Deserialize<'de>>(
    r: &mut impl Read,
) -> io::Result<Option<(T, Vec<u8>)>> {
    let mut p = [0u8; 8];
    match r.read_exact(&mut p) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let (h, b) = lengths(p)?;
    let mut header = vec![0u8; h];
    r.read_exact(&mut header)?;
    let mut blob = vec![0u8; b];
    r.read_exact(&mut blob)?;
    let msg = serde_json::from_slice(&header).map_err(io::Error::other)?;
    Ok(Some((msg, blob)))
}

/// Async write (server side).
pub async fn send<T: Serialize>(
    w: &mut (impl tokio::io::AsyncWrite + Unpin),
    msg: &T,
    blob: &[u8],
) -> io::Result<()> {
    let header = serde_json::to_vec(msg).map_err(io::Error::other)?;
    w.write_all(&prefix(&header, blob)?).await?;
    w.write_all(&header).await?;
    w.write_all(blob).await?;
    w.flush().await
}

/// Async read (server side).
pub async fn recv<T: for<'de> Deserialize<'de>>(
    r: &mut (impl tokio::io::AsyncRead + Unpin),
) -> io::Result<(T, Vec<u8>)> {
    let mut p = [0u8; 8];
    r.read_exact(&mut p).await?;
    let (h, b) = lengths(p)?;
    let mut header = vec![0u8; h];
    r.read_exact(&mut header).await?;
    let mut blob = vec![0u8; b];
    r.read_exact(&mut blob).await?;
    let msg = serde_json::from_slice(&header).map_err(io::Error::other)?;
    Ok((msg, blob))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_round_trip_through_frames() {
        let job = RenderJob {
            entry: "main.typ".into(),
            files: vec![
                ("main.typ".into(), b"hello".to_vec()),
                ("logo.png".into(), vec![0, 159, 255]),
            ],
            data: br#"{"a":1}"#.to_vec(),
            inputs: BTreeMap::from([("n".into(), Input::Int(3))]),
            format: Format::Pdf,
        };
        let (req, blob) = encode_job(&job, 7);
        let mut wire = Vec::new();
        write_frame(&mut wire, &req, &blob).unwrap();
        let (req, blob): (Request, Vec<u8>) = read_frame(&mut wire.as_slice()).unwrap().unwrap();
        assert_eq!(req.fonts_generation, 7);
        let back = decode_job(req, blob).unwrap();
        assert_eq!(back.files, job.files);
        assert_eq!(back.data, job.data);
        assert_eq!(back.inputs, job.inputs);
        assert!(read_frame::<Request>(&mut [].as_slice()).unwrap().is_none());
    }

    #[test]
    fn lying_lengths_are_rejected() {
        let req = Request {
            fonts_generation: 0,
            entry: "main.typ".into(),
            files: vec![("main.typ".into(), 100)],
            inputs: BTreeMap::new(),
            format: Format::Pdf,
        };
        assert!(decode_job(req, vec![1, 2, 3]).is_err());
        let mut huge = Vec::new();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&0u32.to_le_bytes());
        assert!(read_frame::<Request>(&mut huge.as_slice()).is_err());
    }
}
