//! The records the store keeps and the rest of the app passes around. Times are milliseconds since
//! the Unix epoch (portable between SQLite and PostgreSQL).

use serde::{Deserialize, Serialize};

use super::render::Diagnostic;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

pub fn now_ms() -> Millis {
    jiff::Timestamp::now().as_millisecond()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Editor,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "editor" => Some(Role::Editor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub email: String,
    pub role: Role,
    pub password_hash: String,
    pub is_root: bool,
    pub disabled: bool,
    pub created_at: Millis,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    pub password_hash: String,
    pub role: Role,
}

#[derive(Debug, Clone, Default)]
pub struct UserChanges {
    pub role: Option<Role>,
    pub password_hash: Option<String>,
    pub disabled: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub token_hash: String,
    pub user_id: String,
    pub csrf_token: String,
    pub created_at: Millis,
    pub expires_at: Millis,
}

#[derive(Debug, Clone)]
pub struct ApiToken {
    pub id: String,
    pub user_id: String,
    pub name: String,
    /// The first characters of the token, shown so a user can tell tokens apart.
    pub prefix: String,
    pub created_at: Millis,
    pub last_used_at: Option<Millis>,
    pub expires_at: Option<Millis>,
}

#[derive(Debug, Clone)]
pub struct Template {
    pub id: String,
    pub name: String,
    pub description: String,
    pub latest_version: i64,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(Debug, Clone)]
pub struct TemplateVersion {
    pub template_id: String,
    pub version: i64,
    pub entry: String,
    pub parameters: Vec<ParamSpec>,
    /// JSON used by the console to pre-fill a render of this version.
    pub sample_data: Option<String>,
    /// Total bytes of the version's files.
    pub size: i64,
    pub created_at: Millis,
    pub created_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TemplateFile {
    pub path: String,
    pub content: Vec<u8>,
}

/// A declared render parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ParamKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
    /// Allowed values, when the parameter is a choice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamKind {
    String,
    Number,
    Integer,
    Bool,
    Date,
}

/// A new template version as the store receives it.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub entry: String,
    pub parameters: Vec<ParamSpec>,
    pub sample_data: Option<String>,
    pub files: Vec<TemplateFile>,
    pub created_by: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        match s {
            "queued" => Some(JobState::Queued),
            "running" => Some(JobState::Running),
            "succeeded" => Some(JobState::Succeeded),
            "failed" => Some(JobState::Failed),
            "cancelled" => Some(JobState::Cancelled),
            _ => None,
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// Why a job failed, as stored and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobError {
    /// `compile`, `timeout`, `memory`, `crashed`, `invalid`, `template_missing`, `attempts`.
    pub kind: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<Diagnostic>,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub template_id: String,
    pub template_name: String,
    pub template_version: i64,
    /// The render's data as JSON text.
    pub data: String,
    /// Validated parameters as a JSON object.
    pub parameters: String,
    pub state: JobState,
    pub stage: String,
    pub progress: i64,
    pub error: Option<JobError>,
    pub pages: Option<i64>,
    pub output_size: Option<i64>,
    pub created_by: Option<String>,
    pub created_at: Millis,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub attempts: i64,
    pub claimed_by: Option<String>,
    pub claim_token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    pub template_id: String,
    pub template_name: String,
    pub template_version: i64,
    pub data: String,
    pub parameters: String,
    pub created_by: Option<String>,
}

/// One progress event of a job; `seq` increases by one per event of that job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEvent {
    pub job_id: String,
    pub seq: i64,
    pub at: Millis,
    pub state: JobState,
    pub stage: String,
    pub progress: i64,
    pub message: Option<String>,
    pub error: Option<JobError>,
    pub pages: Option<i64>,
    pub output_size: Option<i64>,
}

impl JobEvent {
    pub fn is_final(&self) -> bool {
        self.state.is_final()
    }
}

/// A progress report from a running job.
#[derive(Debug, Clone)]
pub struct Progress {
    pub stage: String,
    pub progress: i64,
    pub message: Option<String>,
    pub pages: Option<i64>,
}

/// How a claimed job ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Succeeded { pdf: Vec<u8>, pages: i64 },
    Failed(JobError),
}

#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub created_by: Option<String>,
    pub state: Option<JobState>,
    pub template_id: Option<String>,
    /// Jobs created before this time (for paging).
    pub before: Option<Millis>,
    pub limit: i64,
}
