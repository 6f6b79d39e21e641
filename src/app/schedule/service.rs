//! What users do with schedules, occurrences and deliveries: the rules a schedule must satisfy
//! before it is stored, review of held occurrences, resending mail. Every change is written to
//! the store first and then announced on the bus (a wake-up for the mailer), here and nowhere
//! else.

use std::sync::Arc;

use jiff::tz::TimeZone;
use serde_json::{Map, Value};

use super::cron::{Cron, CronError};
use super::{next_fire, scheduler};
use crate::app::auth::normalize_email;
use crate::app::bus::Bus;
use crate::app::config::MailConfig;
use crate::app::jobs::{Jobs, RenderNowError};
use crate::app::model::{
    BurstCounts, BurstItem, BurstItemState, BurstSpec, Mail, MailState, Misfire, NewMail,
    NewVersion, Occurrence, ParamSpec, Schedule, ScheduleSpec, Template, TemplateFile,
    TemplateVersion, millis,
};
use crate::app::render::Format;
use crate::app::secrets::Sealer;
use crate::app::store::{Store, StoreError};
use crate::app::templates::params::{self, ParamError};
use crate::app::templates::queries::{self, Context, QueryRunner};
use crate::app::templates::service::VersionGuard;
use crate::app::templates::{self, TemplateError};
use crate::config::Span;
use crate::connector::table::{Overflow, QueryError};

/// Default misfire window: after downtime, a fire time up to an hour old still runs.
const WINDOW: Span = Span::secs(3600);
/// Longest jitter a schedule may ask for.
const MAX_JITTER: Span = Span::secs(3600);
/// Longest misfire window a schedule may ask for.
const MAX_WINDOW: Span = Span::secs(30 * 86_400);

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("the data is larger than render.max_data_size")]
    DataTooLarge,
    #[error(transparent)]
    Params(#[from] ParamError),
    #[error("{0} not found")]
    NotFound(String),
    #[error("the occurrence is not waiting for review")]
    NotHeld,
    #[error("only sent or failed mails can be sent again")]
    NotResendable,
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ScheduleError {
    ScheduleError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// A schedule as submitted, before it is checked.
pub struct Draft {
    pub name: String,
    /// Template id or name.
    pub template: String,
    pub cron: String,
    pub timezone: String,
    pub parameters: Map<String, Value>,
    /// The data as JSON text; `{}` when absent.
    pub data: Option<String>,
    pub recipients: Vec<String>,
    pub subject: String,
    pub body: String,
    pub enabled: bool,
    pub hold_for_review: bool,
    pub jitter: Option<Span>,
    pub misfire: Option<Misfire>,
    pub misfire_window: Option<Span>,
    pub burst: Option<BurstSpec>,
}

/// An occurrence with its mails, one per recipient (of each row, for a burst).
pub struct OccurrenceMails {
    pub occurrence: Occurrence,
    pub mails: Vec<Mail>,
    /// A burst's rows by state.
    pub burst: Option<BurstCounts>,
}

/// Most rows one review approves at once: `burst.max_rows` is at most this in practice.
const MAX_ROWS_REVIEWED: i64 = 1_000_000;

#[derive(Clone)]
pub struct Schedules {
    store: Arc<dyn Store>,
    /// Dry runs: a schedule is saved only when its first report compiles.
    jobs: Jobs,
    queries: QueryRunner,
    bus: Bus,
    mail: MailConfig,
    sealer: Sealer,
    /// `render.max_data_size` in bytes.
    max_data: u64,
}

impl Schedules {
    pub fn new(
        store: Arc<dyn Store>,
        jobs: Jobs,
        queries: QueryRunner,
        bus: Bus,
        mail: MailConfig,
        sealer: Sealer,
        max_data: u64,
    ) -> Self {
        Schedules {
            store,
            jobs,
            queries,
            bus,
            mail,
            sealer,
            max_data,
        }
    }

    pub async fn list(&self) -> Result<Vec<Schedule>, ScheduleError> {
        Ok(self.store.schedules().await?)
    }

    pub async fn get(&self, id: &str) -> Result<Schedule, ScheduleError> {
        self.store
            .schedule(id)
            .await?
            .ok_or_else(|| ScheduleError::NotFound(format!("schedule {id}")))
    }

    pub async fn create(&self, draft: Draft, by: &str) -> Result<Schedule, ScheduleError> {
        let (spec, next) = self.check(draft).await?;
        Ok(self.store.create_schedule(&spec, next, Some(by)).await?)
    }

    pub async fn update(&self, id: &str, draft: Draft) -> Result<Schedule, ScheduleError> {
        let existing = self.get(id).await?;
        let (spec, mut next) = self.check(draft).await?;
        // Unless when it fires changed, keep its place: recomputing from now could move it back
        // past a fire time the scheduler just ran.
        let same_timing = existing.spec.cron == spec.cron
            && existing.spec.timezone == spec.timezone
            && existing.spec.enabled == spec.enabled;
        if same_timing && existing.next_fire_at.is_some() {
            next = existing.next_fire_at;
        }
        self.store
            .update_schedule(&existing.id, &spec, next)
            .await?
            .ok_or_else(|| ScheduleError::NotFound(format!("schedule {id}")))
    }

    pub async fn delete(&self, id: &str) -> Result<(), ScheduleError> {
        let s = self.get(id).await?;
        self.store.delete_schedule(&s.id).await?;
        Ok(())
    }

    /// A schedule's newest occurrences, with their mails.
    pub async fn occurrences(
        &self,
        schedule: &str,
        limit: i64,
    ) -> Result<Vec<OccurrenceMails>, ScheduleError> {
        let s = self.get(schedule).await?;
        let mut out = Vec::new();
        for o in self.store.occurrences(&s.id, limit).await? {
            out.push(self.with_mails(o).await?);
        }
        Ok(out)
    }

    pub async fn occurrence(&self, id: &str) -> Result<OccurrenceMails, ScheduleError> {
        let o = self.find_occurrence(id).await?;
        self.with_mails(o).await
    }

    /// Approves (queueing its mails) or rejects a held occurrence; for a burst, its held rows,
    /// or the one row `row_key`.
    pub async fn review(
        &self,
        id: &str,
        row_key: Option<&str>,
        approve: bool,
        by: &str,
    ) -> Result<OccurrenceMails, ScheduleError> {
        let o = self.find_occurrence(id).await?;
        let s = self.get(&o.schedule_id).await?;
        let from = scheduler::sender(self.store.as_ref(), &self.mail, &self.sealer).await;
        let reviewed = if o.burst_rows.is_some() {
            let held = self
                .store
                .burst_items(&o.id, Some(BurstItemState::Held), MAX_ROWS_REVIEWED)
                .await?;
            let mails: Vec<(String, Vec<NewMail>)> = held
                .iter()
                .filter(|it| row_key.is_none_or(|k| k == it.row_key))
                .map(|it| {
                    let m = scheduler::mails_for(
                        &s,
                        &o,
                        it.job_id.as_deref(),
                        &it.recipients,
                        Some(&it.row_key),
                        from.as_deref(),
                    );
                    (it.row_key.clone(), m)
                })
                .collect();
            self.store
                .review_burst_items(&o.id, row_key, approve, by, &mails)
                .await?
        } else if row_key.is_some() {
            return Err(invalid("row", "the occurrence is not a burst"));
        } else {
            let mails = scheduler::mails_for(
                &s,
                &o,
                o.job_id.as_deref(),
                &s.spec.recipients,
                None,
                from.as_deref(),
            );
            let done = self
                .store
                .review_occurrence(id, approve, by, &mails)
                .await?;
            usize::from(done.is_some())
        };
        if reviewed == 0 {
            return Err(ScheduleError::NotHeld);
        }
        if approve {
            self.bus.wake_mail();
        }
        tracing::info!(occurrence = %id, row = row_key, reviewed, approve, by, "occurrence reviewed");
        self.occurrence(id).await
    }

    /// The rows of a burst, in query order.
    pub async fn burst_items(
        &self,
        id: &str,
        state: Option<BurstItemState>,
        limit: i64,
    ) -> Result<Vec<BurstItem>, ScheduleError> {
        let o = self.find_occurrence(id).await?;
        Ok(self.store.burst_items(&o.id, state, limit).await?)
    }

    /// Mails in a state (all when `None`), newest first.
    pub async fn deliveries(
        &self,
        state: Option<MailState>,
        limit: i64,
    ) -> Result<Vec<Mail>, ScheduleError> {
        Ok(self.store.mails(state, limit).await?)
    }

    /// Queues a sent or failed mail again.
    pub async fn resend(&self, id: &str) -> Result<Mail, ScheduleError> {
        let m = self
            .store
            .resend_mail(id)
            .await?
            .ok_or(ScheduleError::NotResendable)?;
        self.bus.wake_mail();
        Ok(m)
    }

    async fn find_occurrence(&self, id: &str) -> Result<Occurrence, ScheduleError> {
        self.store
            .occurrence(id)
            .await?
            .ok_or_else(|| ScheduleError::NotFound(format!("occurrence {id}")))
    }

    async fn with_mails(&self, occurrence: Occurrence) -> Result<OccurrenceMails, ScheduleError> {
        let mails = self.store.mails_of(&occurrence.id).await?;
        let burst = match occurrence.burst_rows {
            Some(_) => Some(self.store.burst_counts(&occurrence.id).await?),
            None => None,
        };
        Ok(OccurrenceMails {
            occurrence,
            mails,
            burst,
        })
    }

    /// The rules a schedule must satisfy, and when it fires next.
    async fn check(&self, d: Draft) -> Result<(ScheduleSpec, Option<i64>), ScheduleError> {
        let name = d.name.trim().to_owned();
        if name.is_empty() || name.len() > 100 {
            return Err(invalid("name", "must have 1 to 100 characters"));
        }
        let cron = parse_cron(&d.cron)?;
        let tz = zone(&d.timezone)?;
        let t = self
            .store
            .template(&d.template)
            .await?
            .ok_or_else(|| invalid("template", format!("no template \"{}\"", d.template)))?;
        let v = self
            .store
            .version(&t.id, t.latest_version)
            .await?
            .ok_or_else(|| ScheduleError::NotFound("template version".into()))?;
        // A burst's rows give the parameters it maps; the schedule gives the rest.
        let own = unmapped(&v.parameters, d.burst.as_ref());
        let stored = params::resolve(&own, &d.parameters)?.stored;
        if let Some(b) = &d.burst {
            self.check_burst(b, &v.parameters).await?;
        }
        // A burst mails each row's recipients; the schedule's own are optional then.
        let recipients = if d.burst.is_some() && d.recipients.is_empty() {
            Vec::new()
        } else {
            recipients(&d.recipients)?
        };
        let data = d.data.unwrap_or_else(|| "{}".to_owned());
        if data.len() as u64 > self.max_data {
            return Err(ScheduleError::DataTooLarge);
        }
        let jitter = d.jitter.unwrap_or(Span::secs(0));
        if jitter > MAX_JITTER {
            return Err(invalid("jitter", "at most 1h"));
        }
        let window = d.misfire_window.unwrap_or(WINDOW);
        if window > MAX_WINDOW {
            return Err(invalid("misfire_window", "at most 30d"));
        }
        let next = if d.enabled {
            next_fire(&cron, &tz, self.store.db_now().await?)
        } else {
            None
        };
        let spec = ScheduleSpec {
            name,
            template_id: t.id.clone(),
            template_name: t.name.clone(),
            cron: cron.to_string(),
            timezone: d.timezone,
            parameters: Value::Object(stored).to_string(),
            data,
            recipients,
            subject: d.subject,
            body: d.body,
            enabled: d.enabled,
            hold_for_review: d.hold_for_review,
            jitter_ms: millis(jitter.get()),
            misfire: d.misfire.unwrap_or(Misfire::Latest),
            misfire_window_ms: millis(window.get()),
            burst: d.burst,
        };
        let files = self.store.files(&t.id, v.version).await?;
        self.dry_run(&v, &files, &spec).await?;
        Ok((spec, next))
    }

    /// Compiles the schedule's first report now, with its data, its parameters and real query
    /// results (a burst's first row giving the parameters it maps), so that a schedule that
    /// cannot render is refused instead of failing at every fire time. A data source that cannot
    /// be reached now, or render workers all busy, do not refuse it.
    async fn dry_run(
        &self,
        v: &TemplateVersion,
        files: &[TemplateFile],
        spec: &ScheduleSpec,
    ) -> Result<(), ScheduleError> {
        let mut given: Map<String, Value> =
            serde_json::from_str(&spec.parameters).unwrap_or_default();
        let context = Context {
            fire_at: Some(jiff::Timestamp::now()),
            ..Context::default()
        };
        if let Some(b) = &spec.burst {
            let own = unmapped(&v.parameters, Some(b));
            let inputs = params::resolve(&own, &given)?.inputs;
            let ran = self
                .queries
                .run_one(
                    &b.query(),
                    &inputs,
                    &context,
                    1,
                    Overflow::Truncate,
                    &spec.template_name,
                )
                .await;
            let row = match ran {
                Ok(ran) => ran.table.rows.into_iter().next(),
                Err(f)
                    if matches!(
                        f.error,
                        QueryError::Unreachable(_) | QueryError::Unavailable(_)
                    ) =>
                {
                    None
                }
                Err(f) => return Err(invalid("burst.text", f.error.to_string())),
            };
            // No row to try it with: the rows are checked as they come.
            let Some(row) = row else { return Ok(()) };
            for (param, column) in &b.parameters {
                given.insert(
                    param.clone(),
                    row.get(column).cloned().unwrap_or(Value::Null),
                );
            }
        }
        let inputs = params::resolve(&v.parameters, &given)
            .map_err(|e| invalid("burst.parameters", format!("the first row: {e}")))?
            .inputs;
        let job = templates::job(
            v,
            files,
            spec.data.clone().into_bytes(),
            inputs,
            Format::Svg { max_pages: 1 },
        );
        let failed = |e: String| {
            invalid(
                "template",
                format!("a dry run of the schedule's first report failed: {e}"),
            )
        };
        match self
            .jobs
            .render_now("dry-run", job, &v.queries, &context, &spec.template_name)
            .await
        {
            Ok(_) => Ok(()),
            Err(RenderNowError::Busy(_)) => {
                tracing::warn!(schedule = %spec.name, "render workers busy: saved without a dry run");
                Ok(())
            }
            Err(RenderNowError::Query(f))
                if matches!(
                    f.error,
                    QueryError::Unreachable(_) | QueryError::Unavailable(_)
                ) =>
            {
                tracing::warn!(schedule = %spec.name, error = %f, "saved without a dry run: a data source cannot be reached");
                Ok(())
            }
            Err(RenderNowError::Query(f)) => Err(failed(f.to_string())),
            Err(RenderNowError::Render(e)) => Err(failed(e.to_string())),
        }
    }

    /// A burst names a data source, a query whose parameters the template declares, the key
    /// and recipients columns, and declared parameters to fill from columns.
    async fn check_burst(
        &self,
        b: &BurstSpec,
        declared: &[ParamSpec],
    ) -> Result<(), ScheduleError> {
        let ds = self.store.datasource(&b.datasource).await?.ok_or_else(|| {
            invalid(
                "burst.datasource",
                format!("no data source named \"{}\"", b.datasource),
            )
        })?;
        let refs = crate::connector::references(ds.kind, &b.text);
        queries::check_references("burst query", refs, declared)
            .map_err(|m| invalid("burst.text", m))?;
        for (field, column) in [
            ("burst.key_column", &b.key_column),
            ("burst.recipients_column", &b.recipients_column),
        ] {
            if column.trim().is_empty() {
                return Err(invalid(field, "name a column of the burst query"));
            }
        }
        if let Some(p) = b
            .parameters
            .keys()
            .find(|p| !declared.iter().any(|d| &d.name == *p))
        {
            return Err(invalid(
                format!("burst.parameters.{p}"),
                "the template declares no such parameter",
            ));
        }
        Ok(())
    }
}

/// A new version of a template that schedules use must render for each of them, as their
/// dry run on save does: otherwise saving it would break them at their next fire time.
#[async_trait::async_trait]
impl VersionGuard for Schedules {
    async fn check_new_version(
        &self,
        t: &Template,
        version: &NewVersion,
    ) -> Result<(), TemplateError> {
        let using: Vec<Schedule> = self
            .store
            .schedules()
            .await?
            .into_iter()
            .filter(|s| s.spec.template_id == t.id && s.spec.enabled)
            .collect();
        let v = TemplateVersion {
            template_id: t.id.clone(),
            version: t.latest_version + 1,
            entry: version.entry.clone(),
            parameters: version.parameters.clone(),
            sample_data: version.sample_data.clone(),
            queries: version.queries.clone(),
            size: 0,
            created_at: 0,
            created_by: None,
        };
        for s in using {
            if let Err(e) = self.dry_run(&v, &version.files, &s.spec).await {
                return Err(TemplateError::Invalid {
                    field: "schedules".into(),
                    message: format!(
                        "schedule \"{}\" uses this template, and its report would fail with \
                         this version: {e}",
                        s.spec.name
                    ),
                });
            }
        }
        Ok(())
    }
}

/// The declared parameters a burst does not fill from its rows' columns.
pub fn unmapped(declared: &[ParamSpec], burst: Option<&BurstSpec>) -> Vec<ParamSpec> {
    declared
        .iter()
        .filter(|p| burst.is_none_or(|b| !b.parameters.contains_key(&p.name)))
        .cloned()
        .collect()
}

fn parse_cron(text: &str) -> Result<Cron, ScheduleError> {
    text.parse()
        .map_err(|e: CronError| invalid("cron", e.to_string()))
}

fn zone(name: &str) -> Result<TimeZone, ScheduleError> {
    TimeZone::get(name).map_err(|_| {
        invalid(
            "timezone",
            format!("\"{name}\" is not an IANA time zone such as Europe/Berlin"),
        )
    })
}

fn recipients(given: &[String]) -> Result<Vec<String>, ScheduleError> {
    if given.is_empty() {
        return Err(invalid("recipients", "at least one recipient"));
    }
    given
        .iter()
        .enumerate()
        .map(|(i, r)| {
            normalize_email(r).ok_or_else(|| {
                invalid(
                    format!("recipients[{i}]"),
                    format!("\"{r}\" is not an email address"),
                )
            })
        })
        .collect()
}

/// An expression as Quire reads it back, and its next `count` fire times from now in its zone
/// as people read them.
pub fn upcoming(
    cron: &str,
    timezone: &str,
    count: usize,
) -> Result<(String, Vec<String>), ScheduleError> {
    let cron = parse_cron(cron)?;
    let tz = zone(timezone)?;
    let times = cron
        .upcoming(jiff::Timestamp::now(), &tz, count)
        .into_iter()
        .map(|t| t.to_zoned(tz.clone()).to_string())
        .collect();
    Ok((cron.to_string(), times))
}
