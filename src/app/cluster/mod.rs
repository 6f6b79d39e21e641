//! Running as one of several interchangeable instances: who is there (`registry`), who leads
//! which background role (`leases`), the one shape of every role's work (`worker`), whether this
//! instance takes new work (`availability`), and the janitor role's work (`janitor`). A single
//! instance runs the same code; it simply holds every role itself.

pub mod availability;
pub mod janitor;
pub mod leases;
pub mod registry;
pub mod worker;

pub use availability::Availability;
pub use leases::{LeaseSettings, Roles};
