//! The JSON shapes of the API. Store records are converted here, at the boundary, so the API can
//! stay stable while storage changes.

use serde::Serialize;
use serde_json::Value;

use crate::app::model::*;

/// RFC 3339 time from epoch milliseconds.
pub fn ts(ms: Millis) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// A user as the API shows it (never the password hash).
#[derive(Serialize)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub role: UserRole,
    pub root: bool,
    pub disabled: bool,
    pub created_at: String,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        UserView {
            id: u.id.clone(),
            email: u.email.clone(),
            role: u.role,
            root: u.is_root,
            disabled: u.disabled,
            created_at: ts(u.created_at),
        }
    }
}

/// A token as listed (never its secret).
#[derive(Serialize)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub expires_at: Option<String>,
}

impl From<&ApiToken> for TokenView {
    fn from(t: &ApiToken) -> Self {
        TokenView {
            id: t.id.clone(),
            name: t.name.clone(),
            prefix: t.prefix.clone(),
            created_at: ts(t.created_at),
            last_used_at: t.last_used_at.map(ts),
            expires_at: t.expires_at.map(ts),
        }
    }
}

/// A template as listed.
#[derive(Serialize)]
pub struct TemplateView {
    pub id: String,
    pub name: String,
    pub description: String,
    pub latest_version: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&Template> for TemplateView {
    fn from(t: &Template) -> Self {
        TemplateView {
            id: t.id.clone(),
            name: t.name.clone(),
            description: t.description.clone(),
            latest_version: t.latest_version,
            created_at: ts(t.created_at),
            updated_at: ts(t.updated_at),
        }
    }
}

/// A template version, with its files when asked for.
#[derive(Serialize)]
pub struct VersionView {
    pub version: i64,
    pub entry: String,
    pub parameters: Vec<ParamSpec>,
    pub sample_data: Option<Value>,
    /// In full for editors; viewers see which queries run, never their text.
    pub queries: Vec<Value>,
    pub size: i64,
    pub created_at: String,
    pub created_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<FileView>>,
}

impl VersionView {
    pub fn new(v: &TemplateVersion, files: Option<&[TemplateFile]>, reader: UserRole) -> Self {
        let queries = v
            .queries
            .iter()
            .map(|q| {
                if reader >= UserRole::Editor {
                    serde_json::to_value(q).unwrap_or_default()
                } else {
                    serde_json::json!({"name": q.name, "datasource": q.datasource})
                }
            })
            .collect();
        VersionView {
            version: v.version,
            entry: v.entry.clone(),
            parameters: v.parameters.clone(),
            sample_data: v
                .sample_data
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok()),
            queries,
            size: v.size,
            created_at: ts(v.created_at),
            created_by: v.created_by.clone(),
            files: files.map(|fs| fs.iter().map(FileView::from).collect()),
        }
    }
}

/// A file with its content: UTF-8 text inline, anything else as base64.
#[derive(Serialize)]
pub struct FileView {
    pub path: String,
    pub size: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
}

impl From<&TemplateFile> for FileView {
    fn from(f: &TemplateFile) -> Self {
        use base64::Engine;
        let text = std::str::from_utf8(&f.content).ok().map(str::to_owned);
        let base64 = text
            .is_none()
            .then(|| base64::engine::general_purpose::STANDARD.encode(&f.content));
        FileView {
            path: f.path.clone(),
            size: f.content.len(),
            text,
            base64,
        }
    }
}

/// A render job as the API shows it, with links to its events and PDF.
#[derive(Serialize)]
pub struct JobView {
    pub id: String,
    pub template: String,
    pub template_id: String,
    pub version: i64,
    pub state: JobState,
    pub stage: String,
    pub progress: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    pub pages: Option<i64>,
    pub bytes: Option<i64>,
    pub attempts: i64,
    /// The instance running (or that ran) the job.
    pub instance: Option<String>,
    pub created_by: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub links: JobLinks,
}

/// Where to follow a job and fetch its PDF.
#[derive(Serialize)]
pub struct JobLinks {
    #[serde(rename = "self")]
    pub this: String,
    pub events: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pdf: Option<String>,
}

impl JobLinks {
    pub fn new(id: &str, succeeded: bool) -> Self {
        JobLinks {
            this: format!("/api/v1/renders/{id}"),
            events: format!("/api/v1/renders/{id}/events"),
            pdf: succeeded.then(|| format!("/api/v1/renders/{id}/pdf")),
        }
    }
}

impl From<&Job> for JobView {
    fn from(j: &Job) -> Self {
        JobView {
            id: j.id.clone(),
            template: j.template_name.clone(),
            template_id: j.template_id.clone(),
            version: j.template_version,
            state: j.state,
            stage: j.stage.clone(),
            progress: j.progress,
            parameters: serde_json::from_str(&j.parameters)
                .ok()
                .filter(|v: &Value| v.as_object().is_some_and(|o| !o.is_empty())),
            error: j.error.clone(),
            pages: j.pages,
            bytes: j.output_size,
            attempts: j.attempts,
            instance: j.claimed_by.clone(),
            created_by: j.created_by.clone(),
            created_at: ts(j.created_at),
            started_at: j.started_at.map(ts),
            finished_at: j.finished_at.map(ts),
            links: JobLinks::new(&j.id, j.state == JobState::Succeeded),
        }
    }
}

/// A progress event; `final` is true for the last one, which carries the outcome.
#[derive(Serialize)]
pub struct EventView {
    pub seq: i64,
    pub job: String,
    pub at: String,
    pub state: JobState,
    pub stage: String,
    pub progress: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(rename = "final")]
    pub is_final: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pages: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pdf: Option<String>,
}

impl From<&JobEvent> for EventView {
    fn from(e: &JobEvent) -> Self {
        EventView {
            seq: e.seq,
            job: e.job_id.clone(),
            at: ts(e.at),
            state: e.state,
            stage: e.stage.clone(),
            progress: e.progress,
            message: e.message.clone(),
            is_final: e.is_final(),
            pages: e.pages,
            bytes: e.output_size,
            error: e.error.clone(),
            pdf: (e.state == JobState::Succeeded)
                .then(|| format!("/api/v1/renders/{}/pdf", e.job_id)),
        }
    }
}
