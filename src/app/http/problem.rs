//! Errors as HTTP answers: `application/problem+json` (RFC 9457) bodies that say what went wrong
//! and, where one input is at fault, which field. Every module's typed error is converted here,
//! in one place.

use crate::app::license::service::ReleaseError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::app::agents::AgentError;
use crate::app::auth::Forbidden;
use crate::app::auth::accounts::AccountError;
use crate::app::datasource::DataSourceError;
use crate::app::fonts::FontError;
use crate::app::jobs::RenderNowError;
use crate::app::mail::MailError;
use crate::app::render::{RenderError, SyncQueueFull};
use crate::app::schedule::service::ScheduleError;
use crate::app::store::StoreError;
use crate::app::templates::TemplateError;
use crate::app::templates::params::ParamError;
use crate::app::templates::queries::Failure;
use crate::connector::table::QueryError;

/// Header on a 503 that promises the request was refused before anything was done with it, so
/// a load balancer may safely retry it elsewhere, even a POST.
pub const NOT_PROCESSED: &str = "quire-not-processed";

/// An error as an HTTP answer: an RFC 9457 problem document.
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    /// Short machine-readable slug, used in the `type` URI.
    pub kind: &'static str,
    pub detail: String,
    pub field: Option<String>,
    pub extra: Map<String, Value>,
    pub retry_after: Option<u64>,
    pub not_processed: bool,
}

/// What a handler returns.
pub type ApiResult<T> = Result<T, Problem>;

impl Problem {
    /// A problem with a status, a slug and a sentence for people.
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Problem {
            status,
            kind,
            detail: detail.into(),
            field: None,
            extra: Map::new(),
            retry_after: None,
            not_processed: false,
        }
    }

    /// Names the input at fault.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Adds a member to the document.
    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_owned(), value);
        self
    }

    /// Sets `Retry-After`.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// 400: the request is malformed.
    pub fn bad_request(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "bad-request", detail).field(field)
    }

    /// 422: `field` is wrong, and why.
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", detail).field(field)
    }

    /// 404.
    pub fn not_found(what: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("{} not found", what.into()),
        )
    }

    /// 401.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    /// 413: `field` is over a limit.
    pub fn too_large(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", detail).field(field)
    }

    /// Refused before any work was done because this instance is draining.
    pub fn draining() -> Self {
        let mut p = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "this instance is shutting down; retry on another",
        )
        .retry_after(1);
        p.not_processed = true;
        p
    }

    /// 500, logged; the detail is not shown to the client.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert(
            "type".into(),
            json!(format!("https://quire.dev/problems/{}", self.kind)),
        );
        body.insert(
            "title".into(),
            json!(self.status.canonical_reason().unwrap_or("Error")),
        );
        body.insert("status".into(), json!(self.status.as_u16()));
        body.insert("detail".into(), json!(self.detail));
        if let Some(f) = self.field {
            body.insert("field".into(), json!(f));
        }
        body.extend(self.extra);
        let mut resp = (self.status, Value::Object(body).to_string()).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.not_processed {
            h.insert(NOT_PROCESSED, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"quire\""),
            );
        }
        resp
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { what, field } => Problem::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{what} already exists"),
            )
            .field(field),
            StoreError::QueueFull(n) => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "queue-full",
                format!("the render queue is full ({n} jobs waiting)"),
            )
            .retry_after(5),
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "database unavailable");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database-unavailable",
                    "the database is unavailable",
                )
                .retry_after(2)
            }
            other => Problem::internal(other),
        }
    }
}

impl From<Forbidden> for Problem {
    fn from(e: Forbidden) -> Self {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", e.to_string())
    }
}

impl From<ReleaseError> for Problem {
    fn from(e: ReleaseError) -> Self {
        match e {
            ReleaseError::NotFound(instance) => {
                Problem::not_found(format!("a licence seat of instance {instance}"))
            }
            ReleaseError::Store(s) => s.into(),
        }
    }
}

impl From<TemplateError> for Problem {
    fn from(e: TemplateError) -> Self {
        match e {
            TemplateError::Invalid { field, message } => Problem::invalid(field, message),
            e @ TemplateError::TooLarge { .. } => Problem::too_large("files", e.to_string()),
            TemplateError::Params(p) => p.into(),
            TemplateError::NotFound(what) => Problem::not_found(what),
            TemplateError::Store(s) => s.into(),
        }
    }
}

impl From<ParamError> for Problem {
    fn from(e: ParamError) -> Self {
        Problem::invalid(e.field, e.message)
    }
}

impl From<SyncQueueFull> for Problem {
    fn from(e: SyncQueueFull) -> Self {
        Problem::new(StatusCode::TOO_MANY_REQUESTS, "busy", e.to_string()).retry_after(1)
    }
}

impl From<FontError> for Problem {
    fn from(e: FontError) -> Self {
        match e {
            FontError::BadName(_) => Problem::invalid("name", e.to_string()),
            FontError::Faces(_) => Problem::invalid("file", e.to_string()),
            FontError::TooLarge { .. } => Problem::too_large("file", e.to_string()),
            FontError::Io { .. } => Problem::internal(e),
        }
    }
}

impl From<RenderError> for Problem {
    fn from(e: RenderError) -> Self {
        let kind = e.kind();
        let p = match &e {
            RenderError::Compile(diags) => {
                let first = diags.first();
                let mut p =
                    Problem::invalid("template", e.to_string()).with("diagnostics", json!(diags));
                if let Some(d) = first {
                    p = p
                        .with("line", json!(d.line))
                        .with("column", json!(d.column))
                        .with("file", json!(d.file));
                }
                p
            }
            RenderError::Invalid(_) | RenderError::Timeout(_) | RenderError::Memory(_) => {
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "render-failed",
                    e.to_string(),
                )
            }
            RenderError::Cancelled => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "cancelled", e.to_string())
            }
            RenderError::Crashed(_) | RenderError::Unavailable(_) => {
                tracing::error!(error = %e, "render failed");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "render-failed",
                    e.to_string(),
                )
            }
        };
        p.with("error_kind", json!(kind))
    }
}

impl From<ScheduleError> for Problem {
    fn from(e: ScheduleError) -> Self {
        match e {
            ScheduleError::Invalid { field, message } => Problem::invalid(field, message),
            ScheduleError::DataTooLarge => Problem::too_large("data", e.to_string()),
            ScheduleError::Params(p) => p.into(),
            ScheduleError::NotFound(what) => Problem::not_found(what),
            ScheduleError::NotHeld => Problem::new(StatusCode::CONFLICT, "not-held", e.to_string()),
            ScheduleError::NotResendable => {
                Problem::new(StatusCode::CONFLICT, "not-resendable", e.to_string())
            }
            ScheduleError::Store(s) => s.into(),
        }
    }
}

impl From<MailError> for Problem {
    fn from(e: MailError) -> Self {
        match e {
            MailError::Url(m) => Problem::invalid("smtp_url", m),
            MailError::From(m) => {
                Problem::invalid("from", format!("\"{m}\" is not an email address"))
            }
            MailError::Seal(s) => Problem::new(StatusCode::CONFLICT, "no-key", s.to_string()),
            MailError::Configured => {
                Problem::new(StatusCode::CONFLICT, "configured", e.to_string())
            }
            MailError::Store(s) => s.into(),
        }
    }
}

impl From<RenderNowError> for Problem {
    fn from(e: RenderNowError) -> Self {
        match e {
            RenderNowError::Busy(b) => b.into(),
            RenderNowError::Render(r) => r.into(),
            RenderNowError::Query(f) => f.into(),
        }
    }
}

/// A query that failed before a render: the author's mistake is 422, a source that cannot be
/// reached 502; either way the problem names the query and the data source.
impl From<Failure> for Problem {
    fn from(f: Failure) -> Self {
        let status = match f.error {
            QueryError::Unreachable(_) => StatusCode::BAD_GATEWAY,
            QueryError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            QueryError::Query { .. } | QueryError::Limit(_) | QueryError::Convert(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
        };
        let unavailable = matches!(f.error, QueryError::Unavailable(_));
        let problem = Problem::new(status, "query-failed", f.to_string())
            .with("query", Value::String(f.query))
            .with("datasource", Value::String(f.datasource));
        // Nothing ran: a load balancer may send the request to an instance that reaches the
        // agents.
        let mut problem = problem;
        problem.not_processed = unavailable;
        problem
    }
}

impl From<AgentError> for Problem {
    fn from(e: AgentError) -> Self {
        match e {
            AgentError::Invalid { field, message } => Problem::invalid(field, message),
            AgentError::NotFound(what) => Problem::not_found(what),
            AgentError::Unauthorized => Problem::unauthorized(e.to_string()),
            AgentError::Store(s) => s.into(),
        }
    }
}

impl From<AccountError> for Problem {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::Invalid { field, message } => Problem::invalid(field, message),
            AccountError::Forbidden(why) => Problem::new(StatusCode::FORBIDDEN, "forbidden", why),
            AccountError::NotFound(what) => Problem::not_found(what),
            AccountError::RateLimited { retry_after_secs } => {
                Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", e.to_string())
                    .retry_after(retry_after_secs)
            }
            AccountError::WrongPassword => Problem::unauthorized(e.to_string()),
            AccountError::Hash(h) => Problem::internal(h),
            AccountError::Store(s) => s.into(),
        }
    }
}

impl From<DataSourceError> for Problem {
    fn from(e: DataSourceError) -> Self {
        match e {
            DataSourceError::Invalid { field, message } => Problem::invalid(field, message),
            DataSourceError::NotFound(what) => Problem::not_found(what),
            DataSourceError::Seal(s) => Problem::new(StatusCode::CONFLICT, "no-key", s.to_string()),
            DataSourceError::Store(s) => s.into(),
        }
    }
}
