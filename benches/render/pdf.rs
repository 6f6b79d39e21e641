//! PDF checks: a cheap one on every PDF a measurement produces, and a deeper one (pages, text)
//! on one sample per method and document at the end, so a broken measurement cannot look fast.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result, ensure};
use tokio::process::Command;

use crate::fixtures::{Doc, LISTING_ROWS};

/// A cheap check of every PDF a measurement produces: a whole PDF file, not an error page.
pub(crate) fn check_pdf(bytes: &[u8], what: &str) -> Result<()> {
    ensure!(
        bytes.starts_with(b"%PDF-"),
        "{what}: the output is not a PDF (starts with {:?})",
        String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
    );
    let tail = &bytes[bytes.len().saturating_sub(64)..];
    ensure!(
        tail.windows(5).any(|w| w == b"%%EOF"),
        "{what}: the PDF is truncated (no %%EOF at its end)"
    );
    ensure!(
        bytes.len() > 1000,
        "{what}: a {}-byte PDF cannot hold the document",
        bytes.len()
    );
    Ok(())
}

/// The PDF a process wrote to `path`, checked.
pub(crate) fn read_pdf(path: &Path, what: &str) -> Result<Vec<u8>> {
    let pdf = std::fs::read(path).with_context(|| format!("{what} wrote no {}", path.display()))?;
    check_pdf(&pdf, what)?;
    Ok(pdf)
}

/// One PDF per method and document, checked in depth at the end.
#[derive(Default)]
pub(crate) struct SamplePdfs(BTreeMap<(Doc, String), Vec<u8>>);

/// What the sample PDFs hold.
pub(crate) struct Content {
    /// Pages per (document, method).
    pub(crate) pages: BTreeMap<(Doc, String), usize>,
    /// Why a deeper check was skipped (no poppler-utils).
    pub(crate) note: Option<String>,
}

impl SamplePdfs {
    pub(crate) fn add(&mut self, method: &str, doc: Doc, pdf: Vec<u8>) {
        self.0.insert((doc, method.to_owned()), pdf);
    }

    /// Page counts with pdfinfo and expected texts with pdftotext, for every sample.
    pub(crate) async fn verify(&self, tmp: &Path, save: Option<&Path>) -> Result<Content> {
        let dir = tmp.join("samples");
        std::fs::create_dir_all(&dir).context("cannot create the samples directory")?;
        if let Some(save) = save {
            std::fs::create_dir_all(save)
                .with_context(|| format!("cannot create {}", save.display()))?;
        }
        let have_poppler = Command::new("pdfinfo")
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok();
        let mut content = Content {
            pages: BTreeMap::new(),
            note: (!have_poppler).then(|| {
                "pdfinfo/pdftotext missing (apt-get install poppler-utils): \
                 page counts and texts not checked"
                    .to_owned()
            }),
        };
        let listing_last = format!("{}", 10_000 + LISTING_ROWS);
        for ((doc, method), pdf) in &self.0 {
            let name = format!("{}-{}.pdf", doc.name(), method.replace(' ', "-"));
            let path = dir.join(&name);
            std::fs::write(&path, pdf).with_context(|| format!("cannot write {name}"))?;
            if let Some(save) = save {
                std::fs::write(save.join(&name), pdf)
                    .with_context(|| format!("cannot write {}", save.join(&name).display()))?;
            }
            if !have_poppler {
                continue;
            }
            let what = format!("{} PDF from {method}", doc.name());
            let info = command_text("pdfinfo", &[path.as_os_str()]).await?;
            let pages: usize = info
                .lines()
                .find_map(|l| l.strip_prefix("Pages:"))
                .and_then(|p| p.trim().parse().ok())
                .with_context(|| format!("{what}: pdfinfo cannot read it:\n{info}"))?;
            let text = command_text(
                "pdftotext",
                &["-layout".as_ref(), path.as_os_str(), "-".as_ref()],
            )
            .await?;
            let expect: &[&str] = match doc {
                Doc::Invoice => &[
                    "Northwind Traders GmbH",
                    "Typst template development",
                    "EUR 3,216.60",
                    "Payable within 30 days",
                    "Page 1 of 1",
                ],
                Doc::Listing => &["Customer orders", "Fabrikam Industries", &listing_last],
            };
            for want in expect {
                ensure!(
                    text.contains(want),
                    "{what}: its text lacks \"{want}\", so it is not the benchmark document"
                );
            }
            match doc {
                Doc::Invoice => ensure!(pages == 1, "{what}: {pages} pages, want 1"),
                Doc::Listing => ensure!(
                    (5..=40).contains(&pages),
                    "{what}: {pages} pages for {LISTING_ROWS} rows is implausible"
                ),
            }
            content.pages.insert((*doc, method.clone()), pages);
        }
        Ok(content)
    }
}

/// The standard output of `program args`, which must succeed.
pub(crate) async fn command_text(program: &str, args: &[&std::ffi::OsStr]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("cannot run {program}"))?;
    ensure!(
        out.status.success(),
        "{program} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
