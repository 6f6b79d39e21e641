//! The `scheduler` role: every second, fire due schedules (occurrences + render jobs, one
//! transaction per schedule, fenced by the role's term) and move rendered occurrences on — to
//! review when the schedule holds them, else to the outbox, one mail per recipient.

use std::sync::Arc;

use async_trait::async_trait;
use jiff::tz::TimeZone;

use super::cron::Cron;
use super::{GRACE_MS, fill, jitter, period, plan};
use crate::app::bus::Bus;
use crate::app::cluster::worker::RoleWorker;
use crate::app::metrics::{Metrics, OutcomeLabels};
use crate::app::model::{
    Fence, Firing, JobError, JobState, LeaderRole, NewJob, NewMail, Occurrence, OccurrenceState,
    Schedule,
};
use crate::app::store::{Store, StoreError};
use crate::app::templates::params;
use crate::app::templates::queries::{Context, QueryRunner};
use crate::lifecycle::Shutdown;

pub struct Scheduler {
    pub store: Arc<dyn Store>,
    pub bus: Bus,
    pub metrics: Arc<Metrics>,
    /// For the sender address, which names the domain of Message-IDs.
    pub mail: crate::app::config::MailConfig,
    pub sealer: crate::app::secrets::Sealer,
    /// Runs burst queries.
    pub queries: QueryRunner,
    pub burst: crate::app::config::BurstConfig,
}

#[async_trait]
impl RoleWorker for Scheduler {
    const ROLE: LeaderRole = LeaderRole::Scheduler;

    async fn round(&mut self, fence: &Fence, _shutdown: &Shutdown) {
        if let Err(e) = self.fire_due(fence).await {
            tracing::warn!(error = %e, "could not fire schedules");
        }
        if let Err(e) = self.settle(fence).await {
            tracing::warn!(error = %e, "could not move rendered occurrences on");
        }
        if let Err(e) = self.bursts(fence).await {
            tracing::warn!(error = %e, "could not move bursts on");
        }
    }
}

impl Scheduler {
    async fn fire_due(&self, fence: &Fence) -> Result<(), StoreError> {
        let (now, due) = self.store.due_schedules(100).await?;
        for s in due {
            // One schedule's trouble must not hold up the others.
            if let Err(e) = self.fire(&s, now, fence).await {
                tracing::warn!(schedule = %s.spec.name, error = %e, "could not fire the schedule");
            }
        }
        Ok(())
    }

    async fn fire(&self, s: &Schedule, now: i64, fence: &Fence) -> Result<(), StoreError> {
        let Some(next) = s.next_fire_at else {
            return Ok(());
        };
        if now < next + jitter(&s.id, next, s.spec.jitter_ms) {
            return Ok(());
        }
        let (Ok(cron), Ok(tz)) = (s.spec.cron.parse::<Cron>(), TimeZone::get(&s.spec.timezone))
        else {
            tracing::error!(schedule = %s.spec.name, "schedule has an unusable cron expression or time zone");
            return Ok(());
        };
        let p = plan(
            &cron,
            &tz,
            next,
            now,
            s.spec.misfire,
            s.spec.misfire_window_ms,
            GRACE_MS + s.spec.jitter_ms,
        );
        let mut firings = Vec::with_capacity(p.fires.len());
        for fire_at in &p.fires {
            let context = self.context(s, &cron, &tz, *fire_at).await?;
            firings.push(self.firing(s, *fire_at, &context).await?);
        }
        if !self
            .store
            .fire_schedule(&s.id, next, &firings, p.next, p.skipped, fence)
            .await?
        {
            // Another leader got there first, or this one lost the role: nothing was written.
            return Ok(());
        }
        self.count(&firings, p.skipped);
        if p.skipped > 0 {
            tracing::warn!(schedule = %s.spec.name, skipped = p.skipped, policy = s.spec.misfire.as_str(), "missed fire times skipped");
        }
        if firings.iter().any(|f| f.job.is_some()) {
            self.bus.wake_workers();
        }
        Ok(())
    }

    fn count(&self, firings: &[Firing], skipped: i64) {
        let m = &self.metrics.occurrences;
        for f in firings {
            let outcome = if f.error.is_none() { "fired" } else { "failed" };
            m.get_or_create(&OutcomeLabels { outcome }).inc();
        }
        if skipped > 0 {
            m.get_or_create(&OutcomeLabels { outcome: "skipped" })
                .inc_by(skipped as u64);
        }
    }

    /// What the render of one fire time is told: the fire time, the slot it closes, and the
    /// email of the schedule's owner.
    pub(super) async fn context(
        &self,
        s: &Schedule,
        cron: &Cron,
        tz: &TimeZone,
        fire_at: i64,
    ) -> Result<Context, StoreError> {
        let user_email = match &s.created_by {
            Some(id) => self.store.user(id).await?.map(|u| u.email),
            None => None,
        };
        Ok(Context {
            fire_at: jiff::Timestamp::from_millisecond(fire_at).ok(),
            period: period(cron, tz, fire_at),
            user_email,
        })
    }

    /// The render job of one fire time, from the template's latest version; an error instead
    /// when the template is gone or the saved parameters no longer fit it.
    async fn firing(
        &self,
        s: &Schedule,
        fire_at: i64,
        context: &Context,
    ) -> Result<Firing, StoreError> {
        let failed = |error: String| Firing {
            fire_at,
            job: None,
            error: Some(error),
        };
        if s.spec.burst.is_some() {
            // A burst's rows are read and rendered by the burst step (`burst.rs`).
            return Ok(Firing {
                fire_at,
                job: None,
                error: None,
            });
        }
        let Some(t) = self.store.template(&s.spec.template_id).await? else {
            return Ok(failed(format!(
                "template {} no longer exists",
                s.spec.template_name
            )));
        };
        let Some(v) = self.store.version(&t.id, t.latest_version).await? else {
            return Ok(failed("template version missing".into()));
        };
        let given: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&s.spec.parameters).unwrap_or_default();
        let mut stored = match params::resolve(&v.parameters, &given) {
            Ok(r) => r.stored,
            Err(e) => return Ok(failed(format!("the template's parameters changed: {e}"))),
        };
        context.store_into(&mut stored);
        let job = NewJob {
            id: uuid::Uuid::now_v7().to_string(),
            template_id: t.id,
            template_name: t.name,
            template_version: v.version,
            data: s.spec.data.clone(),
            parameters: serde_json::Value::Object(stored).to_string(),
            created_by: s.created_by.clone(),
            agent_sources: self.queries.agent_sources(&v.queries).await?,
        };
        Ok(Firing {
            fire_at,
            job: Some(job),
            error: None,
        })
    }

    async fn settle(&self, fence: &Fence) -> Result<(), StoreError> {
        let rendered = self.store.rendered_occurrences(100).await?;
        if rendered.is_empty() {
            return Ok(());
        }
        let from = sender(self.store.as_ref(), &self.mail, &self.sealer).await;
        for r in rendered {
            let hold = r.schedule.spec.hold_for_review;
            let (state, mails, error) = match settlement(r.job_state, r.job_error.as_ref(), hold) {
                Settlement::Held => (OccurrenceState::Held, Vec::new(), None),
                Settlement::Mail => (
                    OccurrenceState::Delivering,
                    mails_for(
                        &r.schedule,
                        &r.occurrence,
                        r.occurrence.job_id.as_deref(),
                        &r.schedule.spec.recipients,
                        None,
                        from.as_deref(),
                    ),
                    None,
                ),
                Settlement::Failed(why) => (OccurrenceState::Failed, Vec::new(), Some(why)),
            };
            let queued = !mails.is_empty();
            if self
                .store
                .settle_occurrence(&r.occurrence.id, state, &mails, error.as_deref(), fence)
                .await?
                && queued
            {
                self.bus.wake_mail();
            }
        }
        Ok(())
    }
}

/// Where a schedule's finished render goes: to review, to the outbox, or nowhere (failed, why).
pub(super) enum Settlement {
    Held,
    Mail,
    Failed(String),
}

/// The rule for an occurrence's render and a burst row's alike.
pub(super) fn settlement(state: JobState, error: Option<&JobError>, hold: bool) -> Settlement {
    match state {
        JobState::Succeeded if hold => Settlement::Held,
        JobState::Succeeded => Settlement::Mail,
        _ => Settlement::Failed(error.map_or_else(
            || format!("render {}", state.as_str()),
            |e| e.message.clone(),
        )),
    }
}

/// The sender address in effect, if mail is set up.
pub async fn sender(
    store: &dyn Store,
    mail: &crate::app::config::MailConfig,
    sealer: &crate::app::secrets::Sealer,
) -> Option<String> {
    crate::app::mail::settings(store, mail, sealer)
        .await
        .ok()
        .flatten()
        .map(|s| s.from)
}

/// One mail per recipient of a schedule's report: the occurrence's (`key` `None`, the schedule's
/// recipients) or one burst row's (its key and recipients), with the PDF of `job_id`.
pub fn mails_for(
    s: &Schedule,
    o: &Occurrence,
    job_id: Option<&str>,
    recipients: &[String],
    key: Option<&str>,
    from: Option<&str>,
) -> Vec<NewMail> {
    let tz = TimeZone::get(&s.spec.timezone).unwrap_or(TimeZone::UTC);
    let at = o.fire_at;
    let name = &s.spec.name;
    let stem = match key {
        Some(k) => format!("{{schedule}}-{{date}}-{k}"),
        None => "{schedule}-{date}".to_owned(),
    };
    let file: String = fill(&stem, name, at, &tz)
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    recipients
        .iter()
        .map(|to| {
            let id = uuid::Uuid::now_v7().to_string();
            NewMail {
                message_id: crate::app::mail::message_id(&id, from),
                id,
                occurrence_id: Some(o.id.clone()),
                job_id: job_id.map(str::to_owned),
                recipient: to.clone(),
                subject: fill(&s.spec.subject, name, at, &tz),
                body: fill(&s.spec.body, name, at, &tz),
                attachment_name: Some(format!("{file}.pdf")),
            }
        })
        .collect()
}
