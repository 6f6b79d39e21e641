//! Data sources and their uploaded files.

use async_trait::async_trait;

use super::db::{Backend, Query, Row, Sql};
use super::{SqlStore, conflict};
use crate::app::datasource::model::{DataSource, NewDataSource};
use crate::app::store::{DataSourceStore, Result, StoreError};
use crate::connector::DataSourceKind;

const DATASOURCE_COLS: &str = "id, name, kind, settings, secrets, created_at, updated_at, \
    created_by, checked_at, last_error";

fn datasource_row(r: &impl Row) -> Result<DataSource> {
    let kind: String = r.try_get("kind")?;
    Ok(DataSource {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        kind: DataSourceKind::parse(&kind).ok_or(StoreError::Corrupt("datasources.kind"))?,
        settings: r.try_get("settings")?,
        secrets: r.try_get("secrets")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        created_by: r.try_get("created_by")?,
        checked_at: r.try_get("checked_at")?,
        last_error: r.try_get("last_error")?,
    })
}

/// Binds a data source's name, kind, settings and secrets as `$2` to `$5`.
fn bind_new<'a, B: Backend>(q: Query<'a, B>, new: &NewDataSource) -> Query<'a, B> {
    q.bind(&new.name)
        .bind(new.kind.as_str())
        .bind(&new.settings)
        .bind(&new.secrets)
}

fn name_taken(e: StoreError, name: &str) -> StoreError {
    conflict(e, "name", || format!("a data source named {name}"))
}

#[async_trait]
impl<B: Backend> DataSourceStore for SqlStore<B> {
    async fn create_datasource(&self, id: &str, new: &NewDataSource) -> Result<DataSource> {
        static INSERT: Sql = Sql::new(&[
            "INSERT INTO datasources (id, name, kind, settings, secrets, created_at, updated_at, \
             created_by) VALUES ($1, $2, $3, $4, $5, {now}, {now}, $6) RETURNING ",
            DATASOURCE_COLS,
        ]);
        let row = bind_new(self.db.query(&INSERT).bind(id), new)
            .bind(&new.created_by)
            .fetch_one()
            .await
            .map_err(|e| name_taken(e, &new.name))?;
        datasource_row(&row)
    }

    async fn update_datasource(&self, id: &str, new: &NewDataSource) -> Result<Option<DataSource>> {
        // A changed source has not been tested: its last test said nothing about it.
        static UPDATE: Sql = Sql::new(&[
            "UPDATE datasources SET name = $2, kind = $3, settings = $4, secrets = $5, \
             updated_at = {now}, checked_at = NULL, last_error = NULL WHERE id = $1 RETURNING ",
            DATASOURCE_COLS,
        ]);
        let row = bind_new(self.db.query(&UPDATE).bind(id), new)
            .fetch_optional()
            .await
            .map_err(|e| name_taken(e, &new.name))?;
        row.as_ref().map(datasource_row).transpose()
    }

    async fn datasources(&self) -> Result<Vec<DataSource>> {
        static ALL: Sql = Sql::new(&[
            "SELECT ",
            DATASOURCE_COLS,
            " FROM datasources ORDER BY name",
        ]);
        self.db.query(&ALL).fetch_all_as(datasource_row).await
    }

    async fn datasource(&self, id_or_name: &str) -> Result<Option<DataSource>> {
        static ONE: Sql = Sql::new(&[
            "SELECT ",
            DATASOURCE_COLS,
            " FROM datasources WHERE id = $1 OR name = $1",
        ]);
        self.db
            .query(&ONE)
            .bind(id_or_name)
            .fetch_optional_as(datasource_row)
            .await
    }

    async fn delete_datasource(&self, id: &str) -> Result<bool> {
        let n = self
            .db
            .query("DELETE FROM datasources WHERE id = $1")
            .bind(id)
            .execute()
            .await?;
        Ok(n > 0)
    }

    async fn record_check(&self, id: &str, error: Option<&str>) -> Result<Option<DataSource>> {
        static CHECKED: Sql = Sql::new(&[
            "UPDATE datasources SET checked_at = {now}, last_error = $2 WHERE id = $1 RETURNING ",
            DATASOURCE_COLS,
        ]);
        self.db
            .query(&CHECKED)
            .bind(id)
            .bind(error)
            .fetch_optional_as(datasource_row)
            .await
    }

    async fn put_datasource_file(&self, id: &str, content: &[u8]) -> Result<()> {
        static PUT: Sql = Sql::new(&[
            "INSERT INTO datasource_files (datasource_id, content, size, uploaded_at) \
             VALUES ($1, $2, $3, {now}) ON CONFLICT (datasource_id) DO UPDATE SET \
             content = excluded.content, size = excluded.size, uploaded_at = excluded.uploaded_at",
        ]);
        self.db
            .query(&PUT)
            .bind(id)
            .bind(content)
            .bind(content.len() as i64)
            .execute()
            .await?;
        Ok(())
    }

    async fn datasource_file(&self, id: &str) -> Result<Option<Vec<u8>>> {
        let row = self
            .db
            .query("SELECT content FROM datasource_files WHERE datasource_id = $1")
            .bind(id)
            .fetch_optional()
            .await?;
        row.map(|r| r.try_get(0)).transpose()
    }
}
