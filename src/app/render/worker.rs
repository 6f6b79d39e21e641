//! The render worker process (`quire render-worker`, started by the pool): reads render requests
//! from stdin, answers on stdout, one at a time, until stdin closes. It dies with its parent, and
//! its heap is capped by `RLIMIT_DATA`, so a runaway template takes down only this process.

use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::process::ExitCode;

use super::protocol::{self, Reply, Request};
use super::{FontSet, RenderError, render};

#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// Operator font directory.
    #[arg(long)]
    pub fonts_dir: Option<PathBuf>,
    /// Heap limit in bytes.
    #[arg(long)]
    pub memory_limit: Option<u64>,
    /// The server's pid; the worker exits if it is not its parent.
    #[arg(long)]
    pub parent_pid: Option<u32>,
    /// The font generation the fonts loaded at start belong to.
    #[arg(long, default_value_t = 0)]
    pub fonts_generation: u64,
}

/// Entry of the worker process.
pub fn worker_main(args: WorkerArgs) -> ExitCode {
    if let Err(e) = guard(&args) {
        eprintln!("render worker: {e}");
        return ExitCode::FAILURE;
    }
    let load = || {
        let (fonts, skipped) = FontSet::load(args.fonts_dir.as_deref());
        for s in skipped {
            eprintln!("font skipped: {s}");
        }
        fonts
    };
    let mut fonts = load();
    let mut generation = args.fonts_generation;
    let mut input = BufReader::new(std::io::stdin().lock());
    let mut output = BufWriter::new(std::io::stdout().lock());
    loop {
        let (req, blob): (Request, Vec<u8>) = match protocol::read_frame(&mut input) {
            Ok(Some(frame)) => frame,
            Ok(None) => return ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("render worker: bad request frame: {e}");
                return ExitCode::FAILURE;
            }
        };
        if req.fonts_generation != generation {
            fonts = load();
            generation = req.fonts_generation;
        }
        let written = match protocol::decode_job(req, blob) {
            Ok(job) => {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    render(&job, &fonts, |stage| {
                        // A failed write means the server is gone; the next write reports it.
                        let _ = protocol::write_frame(&mut output, &Reply::Stage(stage), &[]);
                    })
                }));
                match result {
                    Ok(Ok(rendered)) => {
                        let (reply, blob) = protocol::encode_done(rendered);
                        protocol::write_frame(&mut output, &reply, &blob)
                    }
                    Ok(Err(e)) => protocol::write_frame(&mut output, &Reply::Failed(e), &[]),
                    Err(panic) => {
                        let msg = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "panic".into());
                        let e = RenderError::Crashed(format!("internal compiler error: {msg}"));
                        protocol::write_frame(&mut output, &Reply::Failed(e), &[])
                    }
                }
            }
            Err(e) => protocol::write_frame(
                &mut output,
                &Reply::Failed(RenderError::Invalid(e.to_string())),
                &[],
            ),
        };
        if written.is_err() {
            return ExitCode::FAILURE;
        }
        // Keep memoized results from recent renders only, so a long-lived worker stays small.
        comemo::evict(10);
    }
}

/// Ties the worker to its parent and caps its heap.
fn guard(args: &WorkerArgs) -> Result<(), String> {
    use rustix::process::{Resource, Rlimit, Signal};
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
        .map_err(|e| format!("cannot set parent-death signal: {e}"))?;
    // The parent may have died before the signal was armed.
    if let Some(expected) = args.parent_pid {
        let parent = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32);
        if parent != expected {
            return Err("the server that started this worker is gone".into());
        }
    }
    if let Some(limit) = args.memory_limit {
        let rl = Rlimit {
            current: Some(limit),
            maximum: Some(limit),
        };
        rustix::process::setrlimit(Resource::Data, rl)
            .map_err(|e| format!("cannot set memory limit: {e}"))?;
    }
    Ok(())
}
