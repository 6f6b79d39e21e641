//! Templates and their immutable versions with their files.

use async_trait::async_trait;

use super::db::{Backend, Row, Sql, Tx};
use super::{SqlStore, conflict};
use crate::app::model::{NewVersion, Template, TemplateFile, TemplateVersion};
use crate::app::store::{Result, StoreError, TemplateStore};

const TEMPLATE_COLS: &str = "id, name, description, latest_version, created_at, updated_at";

const VERSION_COLS: &str =
    "template_id, version, entry, parameters, sample_data, queries, size, created_at, created_by";

fn template_row(r: &impl Row) -> Result<Template> {
    Ok(Template {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        latest_version: r.try_get("latest_version")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn version_row(r: &impl Row) -> Result<TemplateVersion> {
    let params: String = r.try_get("parameters")?;
    let queries: String = r.try_get("queries")?;
    Ok(TemplateVersion {
        template_id: r.try_get("template_id")?,
        version: r.try_get("version")?,
        entry: r.try_get("entry")?,
        parameters: serde_json::from_str(&params)
            .map_err(|_| StoreError::Corrupt("template_versions.parameters"))?,
        sample_data: r.try_get("sample_data")?,
        queries: serde_json::from_str(&queries)
            .map_err(|_| StoreError::Corrupt("template_versions.queries"))?,
        size: r.try_get("size")?,
        created_at: r.try_get("created_at")?,
        created_by: r.try_get("created_by")?,
    })
}

/// Writes version `version` of a template with its files.
async fn insert_version<B: Backend>(
    tx: &mut Tx<B>,
    template_id: &str,
    version: i64,
    v: &NewVersion,
) -> Result<TemplateVersion> {
    let size: i64 = v.files.iter().map(|f| f.content.len() as i64).sum();
    let params =
        serde_json::to_string(&v.parameters).map_err(|_| StoreError::Corrupt("parameters"))?;
    let queries = serde_json::to_string(&v.queries).map_err(|_| StoreError::Corrupt("queries"))?;
    static INSERT: Sql = Sql::new(&[
        "INSERT INTO template_versions (",
        VERSION_COLS,
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, {now}, $8) RETURNING ",
        VERSION_COLS,
    ]);
    let row = tx
        .query(&INSERT)
        .bind(template_id)
        .bind(version)
        .bind(&v.entry)
        .bind(params)
        .bind(&v.sample_data)
        .bind(queries)
        .bind(size)
        .bind(&v.created_by)
        .fetch_one()
        .await?;
    for f in &v.files {
        tx.query(
            "INSERT INTO template_files (template_id, version, path, content) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(template_id)
        .bind(version)
        .bind(&f.path)
        .bind(&f.content)
        .execute()
        .await?;
    }
    version_row(&row)
}

#[async_trait]
impl<B: Backend> TemplateStore for SqlStore<B> {
    async fn create_template(
        &self,
        name: &str,
        description: &str,
        v: &NewVersion,
    ) -> Result<(Template, TemplateVersion)> {
        let mut tx = self.db.begin_write().await?;
        static CREATE: Sql = Sql::new(&[
            "INSERT INTO templates (",
            TEMPLATE_COLS,
            ") VALUES ($1, $2, $3, 1, {now}, {now}) RETURNING ",
            TEMPLATE_COLS,
        ]);
        let row = tx
            .query(&CREATE)
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(name)
            .bind(description)
            .fetch_one()
            .await
            .map_err(|e| conflict(e, "name", || format!("a template named {name}")))?;
        let template = template_row(&row)?;
        let version = insert_version(&mut tx, &template.id, 1, v).await?;
        tx.commit().await?;
        Ok((template, version))
    }

    async fn add_version(
        &self,
        template_id: &str,
        description: Option<&str>,
        v: &NewVersion,
    ) -> Result<Option<(Template, TemplateVersion)>> {
        let mut tx = self.db.begin_write().await?;
        static NEXT: Sql = Sql::new(&[
            "UPDATE templates SET latest_version = latest_version + 1, \
             description = COALESCE($2, description), updated_at = {now} WHERE id = $1 \
             RETURNING ",
            TEMPLATE_COLS,
        ]);
        let row = tx
            .query(&NEXT)
            .bind(template_id)
            .bind(description)
            .fetch_optional()
            .await?;
        let Some(row) = row else { return Ok(None) };
        let template = template_row(&row)?;
        let version = insert_version(&mut tx, &template.id, template.latest_version, v).await?;
        tx.commit().await?;
        Ok(Some((template, version)))
    }

    async fn templates(&self) -> Result<Vec<Template>> {
        static ALL: Sql = Sql::new(&["SELECT ", TEMPLATE_COLS, " FROM templates ORDER BY name"]);
        self.db.query(&ALL).fetch_all_as(template_row).await
    }

    async fn template(&self, id_or_name: &str) -> Result<Option<Template>> {
        static ONE: Sql = Sql::new(&[
            "SELECT ",
            TEMPLATE_COLS,
            " FROM templates WHERE id = $1 OR name = $1",
        ]);
        self.db
            .query(&ONE)
            .bind(id_or_name)
            .fetch_optional_as(template_row)
            .await
    }

    async fn versions(&self, template_id: &str) -> Result<Vec<TemplateVersion>> {
        static ALL: Sql = Sql::new(&[
            "SELECT ",
            VERSION_COLS,
            " FROM template_versions WHERE template_id = $1 ORDER BY version DESC",
        ]);
        self.db
            .query(&ALL)
            .bind(template_id)
            .fetch_all_as(version_row)
            .await
    }

    async fn version(&self, template_id: &str, version: i64) -> Result<Option<TemplateVersion>> {
        static ONE: Sql = Sql::new(&[
            "SELECT ",
            VERSION_COLS,
            " FROM template_versions WHERE template_id = $1 AND version = $2",
        ]);
        self.db
            .query(&ONE)
            .bind(template_id)
            .bind(version)
            .fetch_optional_as(version_row)
            .await
    }

    async fn files(&self, template_id: &str, version: i64) -> Result<Vec<TemplateFile>> {
        let rows = self
            .db
            .query(
                "SELECT path, content FROM template_files \
                 WHERE template_id = $1 AND version = $2 ORDER BY path",
            )
            .bind(template_id)
            .bind(version)
            .fetch_all()
            .await?;
        rows.iter()
            .map(|r| {
                Ok(TemplateFile {
                    path: r.try_get("path")?,
                    content: r.try_get("content")?,
                })
            })
            .collect()
    }

    async fn delete_template(&self, template_id: &str) -> Result<bool> {
        let deleted = self
            .db
            .query("DELETE FROM templates WHERE id = $1")
            .bind(template_id)
            .execute()
            .await?;
        Ok(deleted > 0)
    }
}
