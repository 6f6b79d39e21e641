//! Integration tests: one test binary (faster to build than one per file) driving the real
//! `quire` binary through `tests/support`.

#[path = "../support/mod.rs"]
mod support;

mod nats;
