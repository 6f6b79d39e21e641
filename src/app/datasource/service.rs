//! Data sources as admins manage them: names and kinds checked, settings checked per kind, the
//! secret ones sealed before they reach the store, connection tests recorded.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::DataSourceError;
use super::model::{DataSource, DataSourceKind, NewDataSource};
use super::pools::Pools;
use super::probe::{self, Probed};
use super::settings::{self, Settings};
use super::statement::{self, Dialect, ParamRef, TextError};
use super::table::{Bound, Limits, QueryError, Table};
use crate::app::secrets::Sealer;
use crate::app::store::Store;

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

/// A query's table and how long it took.
pub struct Ran {
    pub table: Table,
    pub took: Duration,
}

#[derive(Clone)]
pub struct DataSources {
    store: Arc<dyn Store>,
    sealer: Sealer,
    pools: Arc<Pools>,
}

impl DataSources {
    pub fn new(store: Arc<dyn Store>, sealer: Sealer) -> Self {
        DataSources {
            store,
            sealer,
            pools: Arc::new(Pools::default()),
        }
    }

    /// Runs `text` against the data source named `datasource`, binding each `:name` from
    /// `values` (a name without a value binds NULL). The data source is read fresh, so a changed
    /// one is used at once and its old pool closed.
    pub async fn query(
        &self,
        datasource: &str,
        text: &str,
        values: &BTreeMap<String, Bound>,
        limits: &Limits,
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
        let dialect = dialect(ds.kind);
        let statement = statement::parse(text, dialect).map_err(|e| QueryError::Query {
            message: e.to_string(),
            position: None,
        })?;
        let binds: Vec<Bound> = statement
            .slots
            .iter()
            .map(|name| values.get(name).cloned().unwrap_or(Bound::Null))
            .collect();
        let pool = self
            .pools
            .get(&ds, &settings)?
            .ok_or_else(|| QueryError::Unreachable(format!("{} has no pool", ds.name)))?;
        let table = super::sql::run(&pool, &statement, &binds, limits).await?;
        Ok(Ran {
            table,
            took: started.elapsed(),
        })
    }

    /// Every `:name` a query's text uses, for checking them when the query is saved.
    pub fn references(kind: DataSourceKind, text: &str) -> Result<Vec<ParamRef>, TextError> {
        Ok(statement::parse(text, dialect(kind))?.refs)
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
        self.store
            .update_datasource(&existing.id, &new)
            .await?
            .ok_or_else(|| DataSourceError::NotFound(format!("data source {id}")))
    }

    pub async fn delete(&self, id: &str) -> Result<(), DataSourceError> {
        let ds = self.get(id).await?;
        self.store.delete_datasource(&ds.id).await?;
        tracing::info!(datasource = %ds.name, "data source deleted");
        Ok(())
    }

    /// Connects, asks for the server's version and times a round trip; the outcome is recorded
    /// on the data source (its last error shows until a test succeeds).
    pub async fn test(&self, id: &str) -> Result<Checked, DataSourceError> {
        let ds = self.get(id).await?;
        let result = match self.settings(&ds) {
            Ok(s) => probe::probe(&s).await,
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
        settings::check(ds.kind, &parse_object(&ds.settings), &secrets)
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

fn dialect(kind: DataSourceKind) -> Dialect {
    match kind {
        DataSourceKind::Postgres => Dialect::Postgres,
        DataSourceKind::Mysql => Dialect::Mysql,
        DataSourceKind::Sqlite => Dialect::Sqlite,
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
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(DataSourceError::Invalid {
            field: "name".into(),
            message: "1 to 100 letters, digits, '-', '_' or '.' (queries name it)".into(),
        })
    }
}
