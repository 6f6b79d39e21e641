//! Phase 2: cold, one process per PDF: `quire render` vs `chromium --headless --print-to-pdf`,
//! timed from spawn to exit, as a script or a cron job that makes one PDF would run them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use quire::app::examples::{INVOICE_LOGO, INVOICE_MAIN, LISTING_MAIN};
use rustix::io::Errno;
use rustix::process::{Pid, WaitId, WaitIdOptions, waitid};

use crate::fixtures::{Doc, data, html};
use crate::measure::Samples;
use crate::pdf::{SamplePdfs, read_pdf};
use crate::support::Proc;
use crate::support::app::quire_command;
use crate::{Opts, Plan, chromium};

pub(crate) struct Cold {
    pub(crate) quire: BTreeMap<Doc, Samples>,
    pub(crate) chromium: BTreeMap<Doc, Samples>,
}

pub(crate) async fn run(
    opts: &Opts,
    plan: &Plan,
    tmp: &Path,
    pdfs: &mut SamplePdfs,
) -> Result<Cold> {
    let dir = tmp.join("cold");
    let write = |path: PathBuf, bytes: &[u8]| {
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))
    };
    std::fs::create_dir_all(dir.join("invoice")).context("cannot create the cold directory")?;
    std::fs::create_dir_all(dir.join("listing")).context("cannot create the cold directory")?;
    write(dir.join("invoice/main.typ"), INVOICE_MAIN.as_bytes())?;
    write(dir.join("invoice/logo.svg"), INVOICE_LOGO.as_bytes())?;
    write(dir.join("listing/main.typ"), LISTING_MAIN.as_bytes())?;
    let mut result = Cold {
        quire: BTreeMap::new(),
        chromium: BTreeMap::new(),
    };
    for doc in [Doc::Invoice, Doc::Listing] {
        let runs = match doc {
            Doc::Invoice => plan.cold_runs,
            Doc::Listing => plan.cold_listing_runs,
        };
        let name = doc.name();
        let data_file = dir.join(format!("{name}.json"));
        let html_file = dir.join(format!("{name}.html"));
        write(data_file.clone(), &serde_json::to_vec(&data(doc, 0))?)?;
        write(html_file.clone(), html(doc, 0)?.as_bytes())?;
        let side = |process: &'static str, method: &'static str| Side {
            process,
            method,
            doc,
            runs,
            dir: &dir,
        };
        let quire = side("quire render", "quire render")
            .measure(pdfs, |out, _| {
                let mut cmd = quire_command(&["render"]);
                cmd.arg(dir.join(name))
                    .arg("--data")
                    .arg(&data_file)
                    .arg("-o")
                    .arg(out)
                    .env("QUIRE_DATA_DIR", dir.join("quire-data"))
                    .env("QUIRE_LOG__LEVEL", "warn");
                cmd
            })
            .await?;
        let chromium = side("chromium", "chromium --print-to-pdf")
            .measure(pdfs, |out, run| {
                // A fresh profile per run: what a one-off `chromium --print-to-pdf` gets.
                let profile = dir.join(format!("profile-{name}-{run}"));
                let mut cmd = chromium::command(opts, &profile);
                cmd.arg("--no-pdf-header-footer")
                    .arg(format!("--print-to-pdf={}", out.display()))
                    .arg(format!("file://{}", html_file.display()));
                cmd
            })
            .await?;
        result.quire.insert(doc, quire);
        result.chromium.insert(doc, chromium);
    }
    Ok(result)
}

/// The runs of one side for one document.
struct Side<'a> {
    /// Names the process in its log and in errors.
    process: &'a str,
    /// Names the side's sample PDF.
    method: &'a str,
    doc: Doc,
    runs: usize,
    dir: &'a Path,
}

impl Side<'_> {
    /// Runs `command(output file, run number)` `runs` times after one unmeasured run, whose PDF
    /// is the side's sample; the first run puts the binaries and fonts in the page cache, as
    /// they would be on a server that renders all day.
    async fn measure(
        &self,
        pdfs: &mut SamplePdfs,
        command: impl Fn(&Path, usize) -> Command,
    ) -> Result<Samples> {
        let name = self.doc.name();
        let mut samples = Samples::default();
        for run in 0..=self.runs {
            let out = self.dir.join(format!("{}-{name}-{run}.pdf", self.process));
            let took = time_process(self.process, command(&out, run), self.dir).await?;
            let pdf = read_pdf(&out, &format!("{} {name}", self.method))?;
            if run == 0 {
                pdfs.add(self.method, self.doc, pdf);
            } else {
                samples.push(took);
            }
        }
        Ok(samples)
    }
}

/// Runs a command to completion and returns how long it took from spawn to exit.
async fn time_process(name: &str, cmd: Command, log_dir: &Path) -> Result<Duration> {
    let started = Instant::now();
    // In a group of its own, so that a browser's helpers die with it whatever happens.
    let mut p = Proc::spawn_group(name, cmd, log_dir);
    let status = tokio::time::timeout(Duration::from_secs(120), exited(&mut p))
        .await
        .map_err(|_| anyhow!("{name} did not finish within 120 s"))??;
    let took = started.elapsed();
    ensure!(
        status.success(),
        "{name} failed ({status}):\n{}",
        p.log_tail(30)
    );
    Ok(took)
}

/// Waits for `p` to exit, woken the moment it does (a blocking `waitid` on a thread of its own)
/// rather than by polling, whose interval would be part of the measured time. `NOWAIT` leaves
/// the zombie for `p` to reap, and `p` stays with the caller: if this future is dropped (a
/// timeout, Ctrl-C), dropping `p` kills the process, which also ends the thread's wait.
async fn exited(p: &mut Proc) -> Result<ExitStatus> {
    let pid = i32::try_from(p.pid())
        .ok()
        .and_then(Pid::from_raw)
        .with_context(|| format!("{} has no pid", p.name))?;
    let wait = move || loop {
        match waitid(
            WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
        ) {
            Err(Errno::INTR) => continue,
            other => return other,
        }
    };
    tokio::task::spawn_blocking(wait)
        .await
        .context("the thread waiting for a process failed")?
        .with_context(|| format!("cannot wait for {}", p.name))?;
    p.wait_exit(Duration::ZERO)
        .with_context(|| format!("{} exited but cannot be reaped", p.name))
}
