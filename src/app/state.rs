//! What every request handler and background task of the app shares.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use super::agents::service::Agents;
use super::auth::accounts::Accounts;
use super::bus::Bus;
use super::cluster::{Availability, Roles};
use super::config::AppConfig;
use super::datasource::service::DataSources;
use super::dr::service::Dr;
use super::fonts::FontLibrary;
use super::jobs::Jobs;
use super::license::Licensing;
use super::metrics::Metrics;
use super::render::RenderPool;
use super::schedule::service::Schedules;
use super::secrets::Sealer;
use super::store::Store;
use super::templates::FileCache;
use super::templates::queries::QueryRunner;
use super::templates::service::Templates;
use crate::lifecycle::Shutdown;

#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub config: Arc<AppConfig>,
    pub instance: String,
    pub started: Instant,
    pub store: Arc<dyn Store>,
    pub pool: RenderPool,
    pub bus: Bus,
    pub jobs: Jobs,
    /// Where reports fetch their data.
    pub datasources: DataSources,
    /// Agent tokens, connections and the routing of their queries.
    pub agents: Agents,
    /// The role this instance takes from its database.
    pub dr: Dr,
    /// Runs templates' queries (renders, previews, the editor's runner).
    pub queries: QueryRunner,
    /// Schedules, occurrences and deliveries as users manage them.
    pub schedules: Schedules,
    pub cache: Arc<FileCache>,
    /// Templates and their versions as authors and renders use them.
    pub templates: Templates,
    pub fonts: FontLibrary,
    pub metrics: Arc<Metrics>,
    /// Users, sessions and tokens as people manage them (sign-in limits included).
    pub accounts: Accounts,
    pub shutdown: Shutdown,
    /// The schema version this binary expects; /readyz waits for it.
    pub schema_version: i64,
    /// Whether this instance takes new work (admin drain, shutdown).
    pub availability: Availability,
    /// The leader roles this instance holds.
    pub roles: Roles,
    /// Seals secrets stored in the database.
    pub sealer: Sealer,
    /// This instance's licence seat (or the free tier).
    pub licensing: Licensing,
}

impl AppState {
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}
