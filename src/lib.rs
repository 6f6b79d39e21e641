//! Quire: a self-hosted report server. One binary, several modes (see ARCHITECTURE.md).

pub mod agent;
pub mod app;
pub mod cli;
pub mod config;
pub mod connector;
pub mod healthcheck;
pub mod instance;
pub mod lb;
pub mod license;
pub mod lifecycle;
pub mod nats;
pub mod telemetry;

/// The version string every mode reports: crate version plus the git revision when the release
/// build embedded one.
pub fn version() -> &'static str {
    static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "{} ({})",
            env!("CARGO_PKG_VERSION"),
            option_env!("QUIRE_GIT_REV").unwrap_or("dev")
        )
    });
    &VERSION
}
