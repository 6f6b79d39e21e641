//! Report templates: a name and description, and numbered, immutable versions of their files.

use async_trait::async_trait;

use super::Result;
use crate::app::model::{NewVersion, Template, TemplateFile, TemplateVersion};

/// Templates, their versions and the versions' files.
#[async_trait]
pub trait TemplateStore: Send + Sync {
    /// Creates a template with its first version; `Conflict` on `name` when the name is taken.
    async fn create_template(
        &self,
        name: &str,
        description: &str,
        v: &NewVersion,
    ) -> Result<(Template, TemplateVersion)>;
    /// Saves a new immutable version; `None` when the template does not exist.
    async fn add_version(
        &self,
        template_id: &str,
        description: Option<&str>,
        v: &NewVersion,
    ) -> Result<Option<(Template, TemplateVersion)>>;
    /// Every template, by name.
    async fn templates(&self) -> Result<Vec<Template>>;
    /// By id or by name.
    async fn template(&self, id_or_name: &str) -> Result<Option<Template>>;
    /// A template's versions, newest first.
    async fn versions(&self, template_id: &str) -> Result<Vec<TemplateVersion>>;
    async fn version(&self, template_id: &str, version: i64) -> Result<Option<TemplateVersion>>;
    /// The files of a version, by path.
    async fn files(&self, template_id: &str, version: i64) -> Result<Vec<TemplateFile>>;
    /// Deletes a template with its versions; false when there was none.
    async fn delete_template(&self, template_id: &str) -> Result<bool>;
}
