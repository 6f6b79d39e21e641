//! Logging: `tracing` events written as text or JSON lines on stderr, every line carrying this
//! process's instance id so logs collected from many instances can be told apart.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{Problems, Section};

/// The `[log]` section, read by every mode.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// `text` for people, `json` for log collectors.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `info,sqlx=warn`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Section for LogConfig {
    const KEY: &'static str = "log";

    fn validate(&self, problems: &mut Problems<'_>) {
        if EnvFilter::try_new(&self.level).is_err() {
            problems.add(
                "level",
                format!(
                    "\"{}\" is not a log filter: use e.g. info, debug, or info,sqlx=warn",
                    self.level
                ),
            );
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("log.level \"{0}\" is not a valid filter")]
    Filter(String),
    #[error("a global logger is already installed")]
    AlreadyInstalled,
}

/// Libraries whose debug and trace lines print connection URLs with their credentials
/// (async-nats logs the server address with user and password): capped at `info` unless the
/// filter names them itself.
const CAPPED: &[&str] = &["async_nats"];

/// `level` with the [`CAPPED`] libraries held at `info`, unless it names them.
fn effective_filter(level: &str) -> String {
    let mut filter = level.to_owned();
    for target in CAPPED.iter().filter(|t| !level.contains(**t)) {
        filter.push_str(&format!(",{target}=info"));
    }
    filter
}

/// Installs the global subscriber. Call once, early, with the final instance id.
pub fn init(log: &LogConfig, instance: &str) -> Result<(), TelemetryError> {
    let filter = EnvFilter::try_new(effective_filter(&log.level))
        .map_err(|_| TelemetryError::Filter(log.level.clone()))?;
    let instance: Arc<str> = Arc::from(instance);
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match log.format {
        LogFormat::Text => builder.event_format(TextLine { instance }).try_init(),
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(JsonLine { instance })
            .try_init(),
    };
    result.map_err(|_| TelemetryError::AlreadyInstalled)
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// `2026-11-23T09:00:00.123Z  INFO instance=web-1-a3f2 quire::app: message key=value`
struct TextLine {
    instance: Arc<str>,
}

impl<S, N> FormatEvent<S, N> for TextLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        write!(
            w,
            "{} {:>5} instance={} {}: ",
            now(),
            meta.level(),
            self.instance,
            meta.target()
        )?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                write!(w, "{}", span.name())?;
                if let Some(fields) = span.extensions().get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    write!(w, "{{{fields}}}")?;
                }
                w.write_str(": ")?;
            }
        }
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// One JSON object per line: `ts`, `level`, `instance`, `target`, the event's fields, and the
/// fields of the spans it happened in.
struct JsonLine {
    instance: Arc<str>,
}

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut obj = serde_json::Map::new();
        obj.insert("ts".into(), now().into());
        obj.insert("level".into(), meta.level().as_str().into());
        obj.insert("instance".into(), self.instance.as_ref().into());
        obj.insert("target".into(), meta.target().into());
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                let Some(fields) = ext.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(fields) {
                    obj.extend(map);
                }
            }
        }
        let mut visitor = JsonVisitor(&mut obj);
        event.record(&mut visitor);
        let line = serde_json::to_string(&obj).map_err(|_| fmt::Error)?;
        writeln!(w, "{line}")
    }
}

struct JsonVisitor<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(
        &mut self,
        field: &tracing::field::Field,
        value: &(dyn std::error::Error + 'static),
    ) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libraries_that_log_credentials_stay_at_info() {
        assert_eq!(effective_filter("debug"), "debug,async_nats=info");
        assert_eq!(
            effective_filter("info,sqlx=warn"),
            "info,sqlx=warn,async_nats=info"
        );
        assert_eq!(
            effective_filter("debug,async_nats=trace"),
            "debug,async_nats=trace"
        );
        assert!(EnvFilter::try_new(effective_filter("debug")).is_ok());
    }
}
