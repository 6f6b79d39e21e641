//! Templates as authors and renders use them: names checked, versions checked and saved whole,
//! files read through the version cache.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{FileCache, TemplateError, invalid, params, queries};
use crate::app::datasource::service::DataSources;
use crate::app::model::{NewVersion, Template, TemplateFile, TemplateVersion};
use crate::app::store::Store;

/// A template version with its files.
pub struct VersionFiles {
    pub version: TemplateVersion,
    pub files: Arc<Vec<TemplateFile>>,
}

/// What else must accept a new version before it is saved (schedules that use the template
/// dry-run their report with it). Implemented outside this domain, so templates need not know
/// schedules.
#[async_trait::async_trait]
pub trait VersionGuard: Send + Sync {
    async fn check_new_version(
        &self,
        t: &Template,
        version: &NewVersion,
    ) -> Result<(), TemplateError>;
}

#[derive(Clone)]
pub struct Templates {
    store: Arc<dyn Store>,
    cache: Arc<FileCache>,
    datasources: DataSources,
    guard: Arc<dyn VersionGuard>,
}

impl Templates {
    pub fn new(
        store: Arc<dyn Store>,
        cache: Arc<FileCache>,
        datasources: DataSources,
        guard: Arc<dyn VersionGuard>,
    ) -> Self {
        Templates {
            store,
            cache,
            datasources,
            guard,
        }
    }

    pub async fn list(&self) -> Result<Vec<Template>, TemplateError> {
        Ok(self.store.templates().await?)
    }

    /// A template by id or name.
    pub async fn get(&self, id: &str) -> Result<Template, TemplateError> {
        self.store
            .template(id)
            .await?
            .ok_or_else(|| TemplateError::NotFound(format!("template {id}")))
    }

    /// A template and version `n` (its latest when `None`) with the version's files.
    pub async fn version(
        &self,
        id: &str,
        n: Option<i64>,
    ) -> Result<(Template, VersionFiles), TemplateError> {
        let t = self.get(id).await?;
        let n = n.unwrap_or(t.latest_version);
        let version = self
            .store
            .version(&t.id, n)
            .await?
            .ok_or_else(|| TemplateError::NotFound(format!("version {n} of {}", t.name)))?;
        let files = self.cache.get(self.store.as_ref(), &t.id, n).await?;
        Ok((t, VersionFiles { version, files }))
    }

    /// Version `n` of `t`, without its files.
    pub async fn find_version(
        &self,
        t: &Template,
        n: i64,
    ) -> Result<Option<TemplateVersion>, TemplateError> {
        Ok(self.store.version(&t.id, n).await?)
    }

    /// The files of version `n` of `t`, from the cache.
    pub async fn files(
        &self,
        t: &Template,
        n: i64,
    ) -> Result<Arc<Vec<TemplateFile>>, TemplateError> {
        Ok(self.cache.get(self.store.as_ref(), &t.id, n).await?)
    }

    /// A template by id or name, if there is one.
    pub async fn find(&self, id: &str) -> Result<Option<Template>, TemplateError> {
        Ok(self.store.template(id).await?)
    }

    pub async fn versions(&self, id: &str) -> Result<Vec<TemplateVersion>, TemplateError> {
        let t = self.get(id).await?;
        Ok(self.store.versions(&t.id).await?)
    }

    /// The templates whose latest version has a query on each data source, by data source
    /// name, each list in template order. Templates are few, so every latest version is read
    /// (without its files).
    pub async fn by_datasource(&self) -> Result<BTreeMap<String, Vec<Template>>, TemplateError> {
        let mut out: BTreeMap<String, Vec<Template>> = BTreeMap::new();
        for t in self.store.templates().await? {
            let Some(v) = self.store.version(&t.id, t.latest_version).await? else {
                continue;
            };
            let mut names: Vec<&str> = v.queries.iter().map(|q| q.datasource.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            for name in names {
                out.entry(name.to_owned()).or_default().push(t.clone());
            }
        }
        Ok(out)
    }

    /// Creates a template with its first version.
    pub async fn create(
        &self,
        name: &str,
        description: &str,
        version: &NewVersion,
    ) -> Result<(Template, TemplateVersion), TemplateError> {
        let name = name.trim();
        check_name(name)?;
        self.check_version(version).await?;
        let (t, v) = self
            .store
            .create_template(name, description.trim(), version)
            .await?;
        Ok((t, v))
    }

    /// Saves a new version (versions are immutable; renders pin the one they used).
    pub async fn save(
        &self,
        id: &str,
        description: Option<&str>,
        version: &NewVersion,
    ) -> Result<(Template, TemplateVersion), TemplateError> {
        let t = self.get(id).await?;
        self.check_version(version).await?;
        self.guard.check_new_version(&t, version).await?;
        self.store
            .add_version(&t.id, description.map(str::trim), version)
            .await?
            .ok_or_else(|| TemplateError::NotFound(format!("template {id}")))
    }

    /// What a version must satisfy beyond its files: declared parameters and queries.
    async fn check_version(&self, version: &NewVersion) -> Result<(), TemplateError> {
        params::check_spec(&version.parameters)?;
        if version.queries.is_empty() {
            return Ok(());
        }
        let kinds: std::collections::HashMap<String, _> = self
            .datasources
            .list()
            .await
            .map_err(|e| invalid("queries", e.to_string()))?
            .into_iter()
            .map(|ds| (ds.name, ds.kind))
            .collect();
        queries::check(&version.queries, &version.parameters, |ds, text| {
            kinds
                .get(ds)
                .map(|kind| crate::connector::references(*kind, text))
        })
    }

    pub async fn delete(&self, id: &str) -> Result<Template, TemplateError> {
        let t = self.get(id).await?;
        self.store.delete_template(&t.id).await?;
        Ok(t)
    }
}

fn check_name(name: &str) -> Result<(), TemplateError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ' '))
        && !name.starts_with(' ');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "name",
            "1 to 100 letters, digits, spaces, '-', '_' or '.'",
        ))
    }
}
