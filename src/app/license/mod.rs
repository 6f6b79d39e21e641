//! Licensing in the report service: each instance activates a seat of its licence at start and
//! at every heartbeat, and runs in the free tier without one (`service.rs`); the API and the HA
//! page show the licence, the seats and their history. The key itself is `crate::license`.

pub mod service;

pub use service::{Licensing, Standing, Tier};
