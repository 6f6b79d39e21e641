//! Data sources as admins manage them: names and kinds checked, settings checked per kind, the
//! secret ones sealed before they reach the store, connection tests recorded, CSV files checked
//! before they are kept. Queries run by kind: SQL on a pool, HTTP as a request, CSV on the
//! stored file.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Map, Value};

use super::DataSourceError;
use super::model::{DataSource, NewDataSource};
use super::pools::Pools;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::task::TaskTracker;

use crate::app::agents::reach;
use crate::app::agents::service::Agents;
use crate::app::bus::{Bus, Hint};
use crate::app::model::QuerySpec;
use crate::app::secrets::Sealer;
use crate::app::store::{Store, StoreError};
use crate::connector::settings::{self, Settings};
use crate::connector::table::{Bound, Limits, QueryError, Table};
use crate::connector::{self, DataSourceKind, Probed, csv, probe};
use crate::lifecycle::Shutdown;

/// A data source as submitted.
pub struct Draft {
    pub name: String,
    pub kind: String,
    /// A JSON object; secrets in clear, or `"set"` to keep the stored one.
    pub settings: Value,
}

/// The outcome of a connection test.
pub struct Checked {
    pub datasource: DataSource,
    pub result: Result<Probed, String>,
}

/// The largest file a CSV data source takes: it is kept in Quire's database and read whole by
/// every query.
pub const MAX_FILE_SIZE: usize = 32 << 20;

/// What an uploaded file holds.
#[derive(Debug, Clone, Copy)]
pub struct Uploaded {
    pub size: usize,
    pub rows: usize,
    pub columns: usize,
}

/// A query's table and how long it took.
#[derive(Debug, Clone)]
pub struct Ran {
    pub table: Table,
    pub took: Duration,
}

#[derive(Clone)]
pub struct DataSources {
    store: Arc<dyn Store>,
    sealer: Sealer,
    bus: Bus,
    pools: Arc<Pools>,
    /// Runs the queries of data sources of kind `agent`.
    agents: Agents,
}

/// The bus hint that a data source changed: other instances close their pools at once (each
/// query also compares the row's version, so a missed hint only delays closing an idle pool).
const CACHE_KIND: &str = "datasources";

impl DataSources {
    pub fn new(store: Arc<dyn Store>, sealer: Sealer, bus: Bus, agents: Agents) -> Self {
        DataSources {
            store,
            sealer,
            bus,
            pools: Arc::new(Pools::default()),
            agents,
        }
    }

    /// Closes the pools of changed data sources when another instance says so.
    pub fn spawn_watch(&self, tasks: &TaskTracker, shutdown: Shutdown) {
        let pools = self.pools.clone();
        let mut hints = self.bus.hints();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    hint = hints.recv() => match hint {
                        Ok(Hint::CacheChanged(k)) if k == CACHE_KIND => pools.clear(),
                        Ok(Hint::Reconnected) | Err(RecvError::Lagged(_)) => pools.clear(),
                        Ok(_) => {}
                        Err(RecvError::Closed) => return,
                    },
                    _ = shutdown.draining() => return,
                }
            }
        });
    }

    /// A data source changed here: its pool goes now, the other instances' on the hint.
    fn changed(&self, id: &str) {
        self.pools.forget(id);
        self.bus.cache_changed(CACHE_KIND);
    }

    /// Runs `text` against the data source named `datasource`, binding each `:name` from
    /// `values` (a name without a value binds NULL, or is empty in an HTTP URL). The data source
    /// is read fresh, so a changed one is used at once and its old pool closed. `origin` (the
    /// template asking) is for the log of an agent that runs it.
    pub async fn query(
        &self,
        datasource: &str,
        text: &str,
        values: &BTreeMap<String, Bound>,
        limits: &Limits,
        origin: &str,
    ) -> Result<Ran, QueryError> {
        let started = Instant::now();
        let ds = self
            .store
            .datasource(datasource)
            .await
            .map_err(|e| QueryError::Unreachable(format!("Quire's database: {e}")))?
            .ok_or_else(|| {
                QueryError::Unreachable(format!("data source \"{datasource}\" does not exist"))
            })?;
        let settings = self
            .settings(&ds)
            .map_err(|e| QueryError::Unreachable(format!("data source \"{}\": {e}", ds.name)))?;
        if let Settings::Agent(s) = &settings {
            let table = self
                .agents
                .query(&s.source, text, values, limits, origin)
                .await?;
            return Ok(Ran {
                table,
                took: started.elapsed(),
            });
        }
        let pool = self.pools.get(&ds, &settings)?;
        let file = match &settings {
            Settings::Csv(_) => Some(self.stored_file(&ds).await?),
            _ => None,
        };
        let table = connector::query(&settings, pool.as_ref(), file, text, values, limits).await?;
        Ok(Ran {
            table,
            took: started.elapsed(),
        })
    }

    /// A CSV source's stored file.
    async fn stored_file(&self, ds: &DataSource) -> Result<Bytes, QueryError> {
        self.store
            .datasource_file(&ds.id)
            .await
            .map_err(|e| QueryError::Unreachable(format!("Quire's database: {e}")))?
            .map(Bytes::from)
            .ok_or_else(|| {
                QueryError::Unreachable(format!(
                    "data source \"{}\" has no file uploaded yet",
                    ds.name
                ))
            })
    }

    /// The agent-served data sources that `queries` use, as a job stores them for claims
    /// (`agents::reach::pattern`); `None` when they need no agent.
    pub async fn agent_sources(&self, queries: &[QuerySpec]) -> Result<Option<String>, StoreError> {
        if queries.is_empty() {
            return Ok(None);
        }
        let all = self.store.datasources().await?;
        let served = all
            .iter()
            .filter(|ds| ds.kind == DataSourceKind::Agent)
            .filter(|ds| queries.iter().any(|q| q.datasource == ds.name))
            .map(|ds| ds.name.as_str());
        Ok(reach::pattern(served))
    }

    /// The agent-served data sources this instance can run queries for, as a claim takes them
    /// (`agents::reach::reachable`); `None` while NATS reaches every instance's agents.
    pub async fn reach(&self) -> Result<Option<String>, StoreError> {
        if self.agents.reaches_elsewhere() {
            return Ok(None);
        }
        if !self.agents.any_here() {
            // Nothing reachable: no need to read the data sources on every claim.
            return Ok(Some(String::new()));
        }
        let all = self.store.datasources().await?;
        let here: Vec<&str> = all
            .iter()
            .filter_map(|ds| match self.settings(ds) {
                Ok(Settings::Agent(s)) if self.agents.serves_here(&s.source) => {
                    Some(ds.name.as_str())
                }
                _ => None,
            })
            .collect();
        Ok(Some(reach::reachable(here)))
    }

    /// Closes every pool; a data source changed on another instance.
    pub fn forget_pools(&self) {
        self.pools.clear();
    }

    pub async fn list(&self) -> Result<Vec<DataSource>, DataSourceError> {
        Ok(self.store.datasources().await?)
    }

    /// A data source by id or name.
    pub async fn get(&self, id: &str) -> Result<DataSource, DataSourceError> {
        self.store
            .datasource(id)
            .await?
            .ok_or_else(|| DataSourceError::NotFound(format!("data source {id}")))
    }

    pub async fn create(&self, draft: Draft, by: &str) -> Result<DataSource, DataSourceError> {
        let mut new = self.prepare(draft, &Map::new())?;
        new.created_by = Some(by.to_owned());
        let id = uuid::Uuid::now_v7().to_string();
        let ds = self.store.create_datasource(&id, &new).await?;
        tracing::info!(datasource = %ds.name, kind = ds.kind.as_str(), by, "data source created");
        Ok(ds)
    }

    /// Replaces a data source's name, kind and settings; secrets sent as `"set"` are kept.
    pub async fn update(&self, id: &str, draft: Draft) -> Result<DataSource, DataSourceError> {
        let existing = self.get(id).await?;
        let stored = self.open_secrets(&existing)?;
        let new = self.prepare(draft, &stored)?;
        let updated = self
            .store
            .update_datasource(&existing.id, &new)
            .await?
            .ok_or_else(|| DataSourceError::NotFound(format!("data source {id}")))?;
        self.changed(&existing.id);
        Ok(updated)
    }

    pub async fn delete(&self, id: &str) -> Result<(), DataSourceError> {
        let ds = self.get(id).await?;
        self.store.delete_datasource(&ds.id).await?;
        self.changed(&ds.id);
        tracing::info!(datasource = %ds.name, "data source deleted");
        Ok(())
    }

    /// Connects, asks for the server's version and times a round trip (a CSV source's file is
    /// read instead); the outcome is recorded on the data source (its last error shows until a
    /// test succeeds).
    pub async fn test(&self, id: &str) -> Result<Checked, DataSourceError> {
        let ds = self.get(id).await?;
        let file = match ds.kind {
            DataSourceKind::Csv => self.store.datasource_file(&ds.id).await?,
            _ => None,
        };
        let result = match self.settings(&ds) {
            Ok(Settings::Agent(s)) => self.agents.probe(&s.source).await,
            Ok(s) => probe::probe(&s, file.as_deref()).await,
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = &result {
            tracing::warn!(datasource = %ds.name, error = %e, "data source test failed");
        }
        let error = result.as_ref().err().map(String::as_str);
        let datasource = self
            .store
            .record_check(&ds.id, error)
            .await?
            .ok_or_else(|| DataSourceError::NotFound(format!("data source {id}")))?;
        Ok(Checked { datasource, result })
    }

    /// Keeps `content` as the file of the CSV data source `id`, once it reads whole as CSV with
    /// the source's delimiter (the error names the line at fault).
    pub async fn upload_file(
        &self,
        id: &str,
        content: Bytes,
        by: &str,
    ) -> Result<Uploaded, DataSourceError> {
        let ds = self.get(id).await?;
        let Settings::Csv(settings) = self.settings(&ds)? else {
            return Err(DataSourceError::Invalid {
                field: "kind".into(),
                message: format!(
                    "only csv data sources take a file; \"{}\" is {}",
                    ds.name,
                    ds.kind.as_str()
                ),
            });
        };
        let checked = content.clone();
        let shape = connector::blocking(move || csv::inspect(&checked, &settings))
            .await
            .map_err(|e| DataSourceError::Invalid {
                field: "body".into(),
                message: e.to_string(),
            })?;
        self.store.put_datasource_file(&ds.id, &content).await?;
        tracing::info!(
            datasource = %ds.name,
            size = content.len(),
            rows = shape.rows,
            by,
            "data source file uploaded"
        );
        Ok(Uploaded {
            size: content.len(),
            rows: shape.rows,
            columns: shape.columns,
        })
    }

    /// The settings as a view shows them: secrets as `"set"`, a URL with credentials masked.
    pub fn view(&self, ds: &DataSource) -> Map<String, Value> {
        let shown = parse_object(&ds.settings);
        // A secret that cannot be opened (another key) still shows as set.
        let secrets = self.open_secrets(ds).unwrap_or_else(|_| {
            settings::secret_keys(ds.kind)
                .iter()
                .map(|k| ((*k).to_owned(), Value::String(settings::SET.to_owned())))
                .collect()
        });
        settings::view(&shown, &secrets)
    }

    /// A data source's checked settings, secrets opened.
    pub fn settings(&self, ds: &DataSource) -> Result<Settings, DataSourceError> {
        let secrets = self.open_secrets(ds)?;
        Ok(settings::check(
            ds.kind,
            &parse_object(&ds.settings),
            &secrets,
        )?)
    }

    fn prepare(
        &self,
        draft: Draft,
        stored: &Map<String, Value>,
    ) -> Result<NewDataSource, DataSourceError> {
        let name = draft.name.trim().to_owned();
        check_name(&name)?;
        let kind = DataSourceKind::parse(&draft.kind).ok_or_else(|| DataSourceError::Invalid {
            field: "kind".into(),
            message: format!("one of {}", DataSourceKind::NAMES.join(", ")),
        })?;
        let Value::Object(given) = draft.settings else {
            return Err(DataSourceError::Invalid {
                field: "settings".into(),
                message: "an object".into(),
            });
        };
        let (shown, secrets) = settings::split(kind, given, stored)?;
        settings::check(kind, &shown, &secrets)?;
        let secrets = if secrets.is_empty() {
            None
        } else {
            Some(self.sealer.seal(&Value::Object(secrets).to_string())?)
        };
        Ok(NewDataSource {
            name,
            kind,
            settings: Value::Object(shown).to_string(),
            secrets,
            created_by: None,
        })
    }

    fn open_secrets(&self, ds: &DataSource) -> Result<Map<String, Value>, DataSourceError> {
        match &ds.secrets {
            Some(sealed) => Ok(parse_object(&self.sealer.open(sealed)?)),
            None => Ok(Map::new()),
        }
    }
}

/// How long a connection test took, in milliseconds with a fraction.
pub fn millis_f64(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn parse_object(json: &str) -> Map<String, Value> {
    serde_json::from_str(json).unwrap_or_default()
}

fn check_name(name: &str) -> Result<(), DataSourceError> {
    if crate::connector::valid_name(name) {
        Ok(())
    } else {
        Err(DataSourceError::Invalid {
            field: "name".into(),
            message: "1 to 100 letters, digits, '-', '_' or '.' (queries name it)".into(),
        })
    }
}
