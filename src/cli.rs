//! The command line, and the edge where typed errors become exit codes and messages. The whole
//! configuration is composed here (`config.rs`); each mode gets its own section.

mod config;
mod license;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use self::config::Config;
use crate::agent::AgentConfig;
use crate::config::{ConfigError, Loaded, Span};
use crate::lb::LbConfig;
use crate::lifecycle::{Lifecycle, Notifier};
use crate::{agent, app, healthcheck, instance, lb, nats, telemetry};

/// Exit status for an invalid configuration (`EX_CONFIG`); systemd units list it in
/// `RestartPreventExitStatus` so a typo does not restart in a loop.
pub const EXIT_CONFIG: u8 = 78;

#[derive(Debug, Parser)]
#[command(name = "quire", version = crate::version(), about = "Self-hosted report server: Typst templates + data -> PDF")]
pub struct Cli {
    /// Config file; default: $QUIRE_CONFIG, else /etc/quire/quire.toml when it exists.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the report service (HTTP API, console, render workers).
    App,
    /// Run a supervised nats-server node of a NATS cluster; `quire nats status` inspects it.
    #[command(args_conflicts_with_subcommands = true)]
    Nats {
        #[command(subcommand)]
        action: Option<NatsAction>,
    },
    /// Run the load balancer in front of app instances (the `[lb]` section).
    Lb,
    /// Serve the data sources of this host to the report service over an outbound connection
    /// (the `[agent]` section); `quire agent status` inspects it.
    #[command(args_conflicts_with_subcommands = true)]
    Agent {
        #[command(subcommand)]
        action: Option<AgentAction>,
    },
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Render a template to PDF offline, without a server.
    Render(RenderArgs),
    /// Exit 0 only when the local instance answers /readyz with 200 (for container health checks).
    Healthcheck {
        /// Base URL to probe; default: the configured http.listen address.
        #[arg(long)]
        url: Option<String>,
        /// Give up after this long.
        #[arg(long, default_value = "5s")]
        timeout: Span,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Disaster recovery: `quire dr status` prints this region's role, timeline, WAL position,
    /// lag, epoch and peer; exit 0 when active, 3 when standby, 1 when fenced or failing.
    Dr {
        #[command(subcommand)]
        action: DrAction,
    },
    /// Licence keys: `quire license show [KEY]` decodes and verifies one offline.
    License {
        #[command(subcommand)]
        action: LicenseAction,
    },
    /// Print version information.
    Version,
    /// A render worker process (started by `quire app`, not by people).
    #[command(hide = true)]
    RenderWorker(app::render::WorkerArgs),
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate and print the effective configuration, secrets redacted, with each value's origin.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum DrAction {
    /// This region's role as its database decides it.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum LicenseAction {
    /// Decode and verify a licence key against the signing keys built into this binary, and
    /// print what it grants (never the key); exit 1 when it is invalid or licenses nothing today
    /// (expired past its grace period, not yet valid, or absent).
    Show {
        /// The key, or `-` to read it from standard input (keeps it out of the shell history);
        /// default: the configured license.key.
        key: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum NatsAction {
    /// Show the local node's health, cluster routes and connected clients; exit 1 when unhealthy.
    Status {
        /// Monitoring URL; default: nats_server.monitor_host and monitor_port.
        #[arg(long)]
        url: Option<String>,
        /// Give up on each request after this long.
        #[arg(long, default_value = "5s")]
        timeout: Span,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentAction {
    /// Show whether the agent on this host is connected, and its sources; exit 1 when it is
    /// not (or when its status file is stale).
    Status,
}

#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// A .typ file, or a directory holding main.typ; its directory is the template's root.
    pub template: PathBuf,
    /// JSON data the template reads as data.json.
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// A parameter, readable as sys.inputs.KEY; repeatable.
    #[arg(long = "input", value_name = "KEY=VALUE", value_parser = parse_input)]
    pub inputs: Vec<(String, String)>,
    /// Where to write the PDF.
    #[arg(short, long, value_name = "OUT.pdf")]
    pub output: PathBuf,
}

fn parse_input(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, found \"{s}\""))
}

/// Runs the parsed command line and turns the outcome into an exit code.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Version => out(&format!(
            "quire {}\ntypst {}\n",
            crate::version(),
            app::render::TYPST_VERSION
        )),
        Command::RenderWorker(args) => app::render::worker_main(args),
        command => match load(cli.config.as_deref()) {
            Ok(loaded) => match dispatch(command, loaded) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
    }
}

/// Writes a command's report to stdout. A reader that went away (`quire config check | head`)
/// is no error: the report is simply cut short, as with any Unix tool. Other failures are.
fn out(text: &str) -> ExitCode {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("error: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    }
}

fn load(file: Option<&std::path::Path>) -> Result<Loaded<Config>, ConfigError> {
    config::load(file, &process_env())
}

/// The environment as UTF-8 pairs; variables that are not UTF-8 cannot be settings.
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

fn dispatch(command: Command, loaded: Loaded<Config>) -> anyhow::Result<ExitCode> {
    match command {
        Command::Config {
            action: ConfigAction::Check,
        } => Ok(out(&format!("{}\n", crate::config::report(&loaded)))),
        Command::Healthcheck { url, timeout } => {
            let url = url.unwrap_or_else(|| healthcheck::local_url(loaded.config.app.http.listen));
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(match rt.block_on(healthcheck::probe(&url, timeout.get())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("unhealthy: {e}");
                    ExitCode::FAILURE
                }
            })
        }
        Command::Render(args) => {
            app::render::render_files(
                &loaded.config.app,
                &args.template,
                args.data.as_deref(),
                &args.inputs,
                &args.output,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dr {
            action: DrAction::Status,
        } => {
            let (text, code) = runtime()?.block_on(app::dr::status_report(&loaded.config.app));
            print!("{text}");
            Ok(ExitCode::from(code))
        }
        Command::Migrate => {
            start_telemetry(&loaded.config, &loaded.warnings)?;
            runtime()?
                .block_on(app::migrate(&loaded.config.app))
                .context("migration failed")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::App => {
            let instance = start_telemetry(&loaded.config, &loaded.warnings)?;
            let config = Arc::new(loaded.config.app);
            let outcome = runtime()?.block_on(async {
                let lifecycle = Lifecycle::new(Notifier::from_env(&process_env()));
                lifecycle
                    .watch_signals()
                    .context("cannot install signal handlers")?;
                lifecycle.expect(&["app"]);
                anyhow::Ok(app::run(config, instance, lifecycle).await)
            })?;
            match outcome {
                // Not a failure: the supervisor starts it again, in the role it has now.
                Err(app::AppError::RoleChanged(why)) => {
                    eprintln!("quire app: {why}; exiting to start again in the new role");
                    Ok(ExitCode::from(app::dr::EXIT_ROLE_CHANGED))
                }
                other => other
                    .context("quire app failed")
                    .map(|()| ExitCode::SUCCESS),
            }
        }
        Command::Nats { action: None } => run_nats(loaded),
        Command::Nats {
            action: Some(NatsAction::Status { url, timeout }),
        } => {
            let url = url.unwrap_or_else(|| {
                healthcheck::local_url(loaded.config.nats_server.monitor_addr())
            });
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let status = rt.block_on(nats::status(&nats::Monitor::new(&url, timeout.get())));
            let written = out(&status.text);
            Ok(if status.healthy {
                written
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Lb => {
            if let Err(e) = loaded.require(&loaded.config.lb, LbConfig::check_runnable) {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
            start_telemetry(&loaded.config, &loaded.warnings)?;
            let section = loaded.config.lb;
            runtime()?.block_on(async {
                let lifecycle = Lifecycle::new(Notifier::from_env(&process_env()));
                lifecycle
                    .watch_signals()
                    .context("cannot install signal handlers")?;
                lifecycle.expect(&["lb"]);
                lb::run(section, lifecycle).await.context("quire lb failed")
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent { action: None } => run_agent(loaded),
        Command::Agent {
            action: Some(AgentAction::Status),
        } => {
            let path = loaded.config.agent.status_file(&loaded.config.app.data_dir);
            match agent::status(&path) {
                Ok(report) => {
                    let written = out(&report.text);
                    Ok(if report.connected {
                        written
                    } else {
                        ExitCode::FAILURE
                    })
                }
                Err(e) => {
                    eprintln!("not connected: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::License {
            action: LicenseAction::Show { key },
        } => show_license(key, &loaded),
        Command::Version | Command::RenderWorker(_) => {
            unreachable!("handled before loading config")
        }
    }
}

/// `quire license show`: the key from the argument, standard input or `license.key`, with where
/// it came from for the messages.
fn show_license(key: Option<String>, loaded: &Loaded<Config>) -> anyhow::Result<ExitCode> {
    let (key, source) = match key {
        Some(dash) if dash == "-" => {
            let text = std::io::read_to_string(std::io::stdin())
                .context("cannot read the key from standard input")?;
            (Some(text), "standard input".to_owned())
        }
        Some(key) => (Some(key), "the argument".to_owned()),
        None => (
            loaded
                .config
                .app
                .license
                .key
                .as_ref()
                .map(|k| k.expose().to_owned()),
            format!("license.key from {}", loaded.origin("license.key")),
        ),
    };
    let report = license::show(
        key.as_deref(),
        &source,
        &crate::license::Keyring::builtin(),
        jiff::Timestamp::now(),
    );
    let written = out(&report.text);
    match &report.problem {
        Some(problem) => {
            eprintln!("error: {problem}");
            Ok(report.code())
        }
        None => Ok(written),
    }
}

/// `quire nats`. A missing nats-server or a config it rejects exits with `EXIT_CONFIG`: another
/// start would fail the same way until the operator acts.
fn run_nats(loaded: Loaded<Config>) -> anyhow::Result<ExitCode> {
    let file = loaded.file.clone();
    let reload: nats::Reload = Box::new(move || {
        let loaded = config::load(file.as_deref(), &process_env())?;
        for w in &loaded.warnings {
            tracing::warn!("{w}");
        }
        Ok((loaded.config.nats_server, loaded.config.app.data_dir))
    });
    start_telemetry(&loaded.config, &loaded.warnings)?;
    let (section, data_dir) = (loaded.config.nats_server, loaded.config.app.data_dir);
    let result = runtime()?.block_on(async {
        let lifecycle = Lifecycle::new(Notifier::from_env(&process_env()));
        lifecycle
            .watch_signals()
            .map_err(nats::NatsError::Signals)?;
        lifecycle.expect(&["nats"]);
        nats::run(&section, &data_dir, lifecycle, reload).await
    });
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.is_config() => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(EXIT_CONFIG))
        }
        Err(e) => Err(anyhow::Error::new(e).context("quire nats failed")),
    }
}

/// `quire agent`. A section that cannot run (no server, token or source) or a CA file that
/// cannot be read exits with `EXIT_CONFIG`.
fn run_agent(loaded: Loaded<Config>) -> anyhow::Result<ExitCode> {
    if let Err(e) = loaded.require(&loaded.config.agent, AgentConfig::check_runnable) {
        eprintln!("error: {e}");
        return Ok(ExitCode::from(EXIT_CONFIG));
    }
    start_telemetry(&loaded.config, &loaded.warnings)?;
    let (section, data_dir) = (loaded.config.agent, loaded.config.app.data_dir);
    let result = runtime()?.block_on(async {
        let lifecycle = Lifecycle::new(Notifier::from_env(&process_env()));
        lifecycle
            .watch_signals()
            .context("cannot install signal handlers")?;
        lifecycle.expect(&["agent"]);
        anyhow::Ok(agent::run(&section, &data_dir, lifecycle).await)
    })?;
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            Ok(ExitCode::from(EXIT_CONFIG))
        }
    }
}

/// Installs logging and returns this process's instance id.
fn start_telemetry(config: &Config, warnings: &[String]) -> anyhow::Result<String> {
    let id = instance::new_id(config.app.instance_name.as_deref(), &process_env());
    telemetry::init(&config.log, &id)?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    Ok(id)
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}
