//! Integration tests: one test binary (faster to build than one per file) driving the real
//! `quire` binary through `tests/support`.

#[path = "../support/mod.rs"]
mod support;

mod agents;
mod app_auth;
mod app_config;
mod app_console;
mod app_fonts;
mod app_lifecycle;
mod app_progress;
mod app_render;
mod bursts;
mod datasources;
mod dr;
mod ha;
mod lb;
mod license;
mod nats;
mod packaging;
mod queries;
mod schedules;
