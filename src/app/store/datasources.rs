//! Data sources: where reports fetch their data, and the files CSV sources read.

use async_trait::async_trait;

use super::Result;
use crate::app::datasource::model::{DataSource, NewDataSource};

/// Data sources and the outcome of their last connection test.
#[async_trait]
pub trait DataSourceStore: Send + Sync {
    /// Creates a data source; `Conflict` on `name` when the name is taken.
    async fn create_datasource(&self, id: &str, new: &NewDataSource) -> Result<DataSource>;
    /// Replaces a data source's name, kind and settings; `None` when there is no such one.
    async fn update_datasource(&self, id: &str, new: &NewDataSource) -> Result<Option<DataSource>>;
    /// Every data source, by name.
    async fn datasources(&self) -> Result<Vec<DataSource>>;
    /// A data source by id or name.
    async fn datasource(&self, id_or_name: &str) -> Result<Option<DataSource>>;
    /// False when there was none.
    async fn delete_datasource(&self, id: &str) -> Result<bool>;
    /// Records a connection test (`error` is `None` when it succeeded); the data source as it
    /// is now, `None` when there is no such one.
    async fn record_check(&self, id: &str, error: Option<&str>) -> Result<Option<DataSource>>;
    /// Keeps `content` as the file of data source `id` (a CSV source's), replacing any before.
    /// The file goes when its data source is deleted.
    async fn put_datasource_file(&self, id: &str, content: &[u8]) -> Result<()>;
    /// The file of data source `id`; `None` when none was uploaded.
    async fn datasource_file(&self, id: &str) -> Result<Option<Vec<u8>>>;
}
