//! The records the store keeps and the rest of the app passes around. Times are milliseconds since
//! the Unix epoch (portable between SQLite and PostgreSQL).

use serde::{Deserialize, Serialize};

use super::render::Diagnostic;

/// `as_str`, `parse` and `NAMES` for an enum kept as text in the database and the API, from one
/// table of names.
macro_rules! stored_as_text {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            pub const NAMES: &[&str] = &[$($name),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }

            pub fn parse(s: &str) -> Option<$ty> {
                match s {
                    $($name => Some($ty::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

pub fn now_ms() -> Millis {
    jiff::Timestamp::now().as_millisecond()
}

/// A duration in whole milliseconds, as the store keeps them: the one conversion, saturating
/// (settings are bounded when they are read, so saturation never shows in practice).
pub fn millis(d: std::time::Duration) -> Millis {
    Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
}

/// What a user may do (viewer < editor < admin). Not to be confused with a `LeaderRole` (a
/// background role an instance holds) or the lb's `UpstreamRole` (primary or backup).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserRole {
    Viewer,
    Editor,
    Admin,
}

stored_as_text!(UserRole {
    Viewer => "viewer",
    Editor => "editor",
    Admin => "admin",
});

#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub email: String,
    pub role: UserRole,
    pub password_hash: String,
    pub is_root: bool,
    pub disabled: bool,
    pub created_at: Millis,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    pub password_hash: String,
    pub role: UserRole,
}

#[derive(Debug, Clone, Default)]
pub struct UserChanges {
    pub role: Option<UserRole>,
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
    /// What the version queries before it renders.
    pub queries: Vec<QuerySpec>,
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

/// A query a template version runs before it renders; the template reads its table as
/// `json("queries/NAME.json")`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuerySpec {
    pub name: String,
    /// The data source's name.
    pub datasource: String,
    /// SQL with `:name` parameters (a path and query string for HTTP sources).
    pub text: String,
    /// Sample values for the editor's runner and dry runs, for parameters a render would supply.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub params: serde_json::Map<String, serde_json::Value>,
}

/// A new template version as the store receives it.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub entry: String,
    pub parameters: Vec<ParamSpec>,
    pub sample_data: Option<String>,
    pub queries: Vec<QuerySpec>,
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

stored_as_text!(JobState {
    Queued => "queued",
    Running => "running",
    Succeeded => "succeeded",
    Failed => "failed",
    Cancelled => "cancelled",
});

impl JobState {
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
    /// The agent-served data sources the job queries, as a pattern (`agents::reach`); `None`
    /// when it needs no agent.
    pub agent_sources: Option<String>,
}

/// One progress event of a job; `seq` increases by one per event of that job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// What an instance says about itself when it registers.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceInfo {
    pub id: String,
    pub name: String,
    pub version: String,
    pub build: String,
    /// Where it serves, e.g. `10.0.0.11:8080`.
    pub address: String,
    pub started_at: Millis,
    /// Fingerprints of settings every instance must share (never the secrets themselves).
    pub key_fingerprint: String,
    pub license_fingerprint: String,
    /// The licence it runs with, as the HA page names it (id and customer, never the key).
    pub license: String,
    pub schema_version: i64,
}

/// An instance as registered, with its latest heartbeat.
#[derive(Debug, Clone)]
pub struct InstanceRow {
    pub info: InstanceInfo,
    pub heartbeat_at: Millis,
    pub draining: bool,
    pub drain_requested: bool,
    /// `connected`, `disconnected` or `off`.
    pub nats: String,
    pub stopped_at: Option<Millis>,
}

/// The current state of a leader role.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub role: String,
    pub holder: Option<String>,
    pub term: i64,
    pub expires_at: Millis,
    pub acquired_at: Option<Millis>,
}

/// A lease granted or renewed: valid until `expires_at` on the database clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub term: i64,
    pub expires_at: Millis,
}

/// One holder's tenure of a role.
#[derive(Debug, Clone, PartialEq)]
pub struct Handover {
    pub role: String,
    pub term: i64,
    pub holder: String,
    pub held_from: Millis,
    pub held_until: Option<Millis>,
    /// `released` or `expired` once it ended.
    pub ended: Option<String>,
}

/// What to do with fire times that passed while no scheduler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Misfire {
    /// Run only the latest missed occurrence, if it is within the misfire window.
    Latest,
    /// Run none of them.
    Skip,
    /// Run every one of them.
    All,
}

stored_as_text!(Misfire {
    Latest => "latest",
    Skip => "skip",
    All => "all",
});

/// A schedule as created or updated.
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    pub name: String,
    pub template_id: String,
    pub template_name: String,
    pub cron: String,
    pub timezone: String,
    /// JSON object.
    pub parameters: String,
    /// JSON value: the render's data.
    pub data: String,
    pub recipients: Vec<String>,
    pub subject: String,
    pub body: String,
    pub enabled: bool,
    pub hold_for_review: bool,
    pub jitter_ms: i64,
    pub misfire: Misfire,
    pub misfire_window_ms: i64,
    /// One report per row of this query, instead of one report to `recipients`.
    pub burst: Option<BurstSpec>,
}

/// A schedule's burst: each row of the query becomes one report, rendered with the row's
/// parameters and mailed to the row's recipients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BurstSpec {
    /// The data source's name.
    pub datasource: String,
    /// The query, with `:name` parameters like a template's.
    pub text: String,
    /// The column that identifies a row: each (occurrence, key) is rendered and mailed once.
    pub key_column: String,
    /// The column holding the row's recipients: one address, several separated by commas or
    /// semicolons, or a JSON list.
    pub recipients_column: String,
    /// Template parameter -> the column giving its value.
    #[serde(default)]
    pub parameters: std::collections::BTreeMap<String, String>,
}

impl BurstSpec {
    /// The burst query as a query to run.
    pub fn query(&self) -> QuerySpec {
        QuerySpec {
            name: "(burst)".into(),
            datasource: self.datasource.clone(),
            text: self.text.clone(),
            params: serde_json::Map::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Schedule {
    pub id: String,
    pub spec: ScheduleSpec,
    /// The next nominal fire time (before jitter); `None` when disabled or never again.
    pub next_fire_at: Option<Millis>,
    pub last_fire_at: Option<Millis>,
    pub skipped_total: i64,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub created_by: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OccurrenceState {
    /// Its render job runs.
    Rendering,
    /// A burst: its query runs, or its rows render.
    Bursting,
    /// Rendered; waits for an approver before delivery.
    Held,
    /// Mails are in the outbox.
    Delivering,
    /// Every recipient got the mail.
    Delivered,
    /// The render failed, or a mail failed for good.
    Failed,
    /// An approver turned it down.
    Rejected,
}

stored_as_text!(OccurrenceState {
    Rendering => "rendering",
    Bursting => "bursting",
    Held => "held",
    Delivering => "delivering",
    Delivered => "delivered",
    Failed => "failed",
    Rejected => "rejected",
});

/// One fire time of a schedule; unique per (schedule, fire_at).
#[derive(Debug, Clone)]
pub struct Occurrence {
    pub id: String,
    pub schedule_id: String,
    pub fire_at: Millis,
    pub created_at: Millis,
    /// The scheduler term (fencing token) and instance that created it.
    pub term: i64,
    pub instance: String,
    pub job_id: Option<String>,
    pub state: OccurrenceState,
    pub error: Option<String>,
    pub reviewed_by: Option<String>,
    pub reviewed_at: Option<Millis>,
    /// For a burst: the rows its query returned, once it ran.
    pub burst_rows: Option<i64>,
}

/// Where one row of a burst is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BurstItemState {
    /// Waiting for a render slot of the burst.
    Pending,
    Rendering,
    /// Rendered; waits for an approver.
    Held,
    /// Its mails are in the outbox (their own state says whether they went).
    Mailed,
    Failed,
    Rejected,
}

stored_as_text!(BurstItemState {
    Pending => "pending",
    Rendering => "rendering",
    Held => "held",
    Mailed => "mailed",
    Failed => "failed",
    Rejected => "rejected",
});

/// One row of a burst.
#[derive(Debug, Clone)]
pub struct BurstItem {
    pub occurrence_id: String,
    pub row_key: String,
    /// The row's place in the query's result.
    pub seq: i64,
    /// The render's stored parameters (JSON object).
    pub parameters: String,
    pub recipients: Vec<String>,
    pub job_id: Option<String>,
    pub state: BurstItemState,
    pub error: Option<String>,
    pub updated_at: Millis,
}

/// A burst row as the query gave it; `error` when it cannot be rendered (it is recorded failed).
#[derive(Debug, Clone)]
pub struct NewBurstItem {
    pub row_key: String,
    pub parameters: String,
    pub recipients: Vec<String>,
    pub error: Option<String>,
}

/// How many rows of a burst are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BurstCounts {
    pub pending: i64,
    pub rendering: i64,
    pub held: i64,
    pub mailed: i64,
    pub failed: i64,
    pub rejected: i64,
}

/// A burst row whose render finished.
#[derive(Debug, Clone)]
pub struct RenderedItem {
    pub item: BurstItem,
    pub job_state: JobState,
    pub job_error: Option<JobError>,
}

/// A fire time the scheduler decided to run, with its render job (none when the schedule's
/// template or parameters no longer work; then `error` says why). Neither job nor error: a
/// burst, whose rows are rendered later.
#[derive(Debug, Clone)]
pub struct Firing {
    pub fire_at: Millis,
    pub job: Option<NewJob>,
    pub error: Option<String>,
}

/// A background role one instance of the cluster holds at a time, by lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LeaderRole {
    /// Purges expired jobs, takes back lapsed claims, forgets long-gone instances.
    Janitor,
    /// Sends the outbox.
    Mailer,
    /// Fires due schedules and moves rendered occurrences on.
    Scheduler,
}

stored_as_text!(LeaderRole {
    Janitor => "janitor",
    Mailer => "mailer",
    Scheduler => "scheduler",
});

impl LeaderRole {
    pub const ALL: [LeaderRole; 3] = [
        LeaderRole::Janitor,
        LeaderRole::Mailer,
        LeaderRole::Scheduler,
    ];
}

/// Proof that the caller holds a leader role; writes check it in the same transaction.
#[derive(Debug, Clone)]
pub struct Fence {
    pub role: &'static str,
    pub holder: String,
    pub term: i64,
}

impl Fence {
    pub fn new(role: LeaderRole, holder: &str, term: i64) -> Self {
        Fence {
            role: role.as_str(),
            holder: holder.to_owned(),
            term,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailState {
    Queued,
    Sending,
    Sent,
    Failed,
}

stored_as_text!(MailState {
    Queued => "queued",
    Sending => "sending",
    Sent => "sent",
    Failed => "failed",
});

/// One mail to one recipient.
#[derive(Debug, Clone)]
pub struct Mail {
    pub id: String,
    pub occurrence_id: Option<String>,
    pub job_id: Option<String>,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub attachment_name: Option<String>,
    /// Stable per row, so a mail sent twice (the crash window) is recognisably the same mail.
    pub message_id: String,
    pub state: MailState,
    pub attempts: i64,
    pub next_attempt_at: Millis,
    /// The server's last reply or the connection error.
    pub last_reply: Option<String>,
    pub sent_at: Option<Millis>,
    pub created_at: Millis,
}

/// A mail for the outbox.
#[derive(Debug, Clone)]
pub struct NewMail {
    pub id: String,
    pub occurrence_id: Option<String>,
    pub job_id: Option<String>,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub attachment_name: Option<String>,
    pub message_id: String,
}

/// An occurrence whose render job has finished, with what is needed to move it on.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub occurrence: Occurrence,
    pub schedule: Schedule,
    pub job_state: JobState,
    pub job_error: Option<JobError>,
}
