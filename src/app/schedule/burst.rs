//! Bursting, the scheduler's third step: a bursting occurrence runs its schedule's burst query
//! once (its rows, each with a key, recipients and parameters, are written in one fenced
//! transaction), then renders its rows a few at a time (`burst.concurrency`, so a large burst
//! leaves render workers to interactive renders), and each rendered row goes to review or to the
//! outbox. A row is identified by (occurrence, row key): whichever leader runs a step, each row
//! renders and mails once.

use std::collections::HashMap;
use std::time::Duration;

use jiff::tz::TimeZone;
use serde_json::{Map, Value};

use super::cron::Cron;
use super::scheduler::{Scheduler, Settlement, mails_for, sender, settlement};
use crate::app::model::{
    BurstItemState, BurstSpec, Fence, NewBurstItem, NewJob, Occurrence, ParamSpec, Schedule,
};
use crate::app::store::StoreError;
use crate::app::templates::params;
use crate::app::templates::queries::Context;
use crate::connector::table::{Overflow, QueryError, Table};

/// How long after its fire time a burst whose data source cannot be reached keeps trying.
const RETRY_UNREACHABLE: Duration = Duration::from_secs(600);

impl Scheduler {
    /// Moves every bursting occurrence one step on, then settles rendered rows.
    pub(super) async fn bursts(&self, fence: &Fence) -> Result<(), StoreError> {
        for (o, s) in self.store.bursting_occurrences(20).await? {
            let step = if o.burst_rows.is_none() {
                self.expand(&o, &s, fence).await
            } else {
                self.feed(&o, &s, fence).await
            };
            if let Err(e) = step {
                tracing::warn!(schedule = %s.spec.name, occurrence = %o.id, error = %e, "burst step failed; retrying");
            }
        }
        self.settle_items(fence).await
    }

    /// Runs the burst query and records its rows, or fails the occurrence saying why.
    async fn expand(&self, o: &Occurrence, s: &Schedule, fence: &Fence) -> Result<(), StoreError> {
        let (items, error) = match self.burst_rows(o, s).await? {
            Step::Rows(items) => {
                tracing::info!(schedule = %s.spec.name, occurrence = %o.id, rows = items.len(), "burst query ran");
                (items, None)
            }
            Step::Failed(why) => {
                tracing::warn!(schedule = %s.spec.name, occurrence = %o.id, error = %why, "burst failed");
                (Vec::new(), Some(why))
            }
            Step::Retry => return Ok(()),
        };
        self.store
            .expand_burst(&o.id, &items, error.as_deref(), fence)
            .await?;
        Ok(())
    }

    /// The rows of an occurrence's burst.
    async fn burst_rows(&self, o: &Occurrence, s: &Schedule) -> Result<Step, StoreError> {
        let prepared = match self.prepare(o, s).await? {
            Ok(p) => p,
            Err(why) => return Ok(Step::Failed(why)),
        };
        let ran = self
            .queries
            .run_one(
                &prepared.spec.query(),
                &prepared.inputs,
                &prepared.context,
                self.burst.max_rows as usize,
                Overflow::Fail,
                &s.spec.template_name,
            )
            .await;
        Ok(match ran {
            Ok(ran) => match items(&prepared, &ran.table) {
                Ok(items) => Step::Rows(items),
                Err(why) => Step::Failed(why),
            },
            Err(f)
                if matches!(
                    f.error,
                    QueryError::Unreachable(_) | QueryError::Unavailable(_)
                ) && !too_late(o) =>
            {
                tracing::warn!(schedule = %s.spec.name, error = %f.error, "the burst's data source cannot be reached; retrying");
                Step::Retry
            }
            Err(f) => Step::Failed(format!(
                "burst query (data source {}): {}",
                f.datasource,
                f.error
                    .to_string()
                    .replace("queries.max_rows", "burst.max_rows")
            )),
        })
    }

    /// What every row of a burst shares: the spec, the template's declared parameters, the
    /// schedule's own parameters and the built-ins.
    async fn prepare(
        &self,
        o: &Occurrence,
        s: &Schedule,
    ) -> Result<Result<Prepared, String>, StoreError> {
        let Some(spec) = s.spec.burst.clone() else {
            return Ok(Err("the schedule no longer bursts".into()));
        };
        let Some(t) = self.store.template(&s.spec.template_id).await? else {
            return Ok(Err(format!(
                "template {} no longer exists",
                s.spec.template_name
            )));
        };
        let Some(v) = self.store.version(&t.id, t.latest_version).await? else {
            return Ok(Err("template version missing".into()));
        };
        let (Ok(cron), Ok(tz)) = (s.spec.cron.parse::<Cron>(), TimeZone::get(&s.spec.timezone))
        else {
            return Ok(Err("unusable cron expression or time zone".into()));
        };
        let context = self.context(s, &cron, &tz, o.fire_at).await?;
        let given: Map<String, Value> =
            serde_json::from_str(&s.spec.parameters).unwrap_or_default();
        let own = super::service::unmapped(&v.parameters, Some(&spec));
        let inputs = match params::resolve(&own, &given) {
            Ok(r) => r.inputs,
            Err(e) => return Ok(Err(format!("the template's parameters changed: {e}"))),
        };
        Ok(Ok(Prepared {
            spec,
            declared: v.parameters,
            given,
            inputs,
            context,
        }))
    }

    /// Starts pending rows while fewer than `burst.concurrency` of this burst render.
    async fn feed(&self, o: &Occurrence, s: &Schedule, fence: &Fence) -> Result<(), StoreError> {
        let counts = self.store.burst_counts(&o.id).await?;
        let free = i64::from(self.burst.concurrency) - counts.rendering;
        if free <= 0 || counts.pending == 0 {
            return Ok(());
        }
        let Some(t) = self.store.template(&s.spec.template_id).await? else {
            tracing::warn!(schedule = %s.spec.name, "the burst's template no longer exists");
            return Ok(());
        };
        let queries = match self.store.version(&t.id, t.latest_version).await? {
            Some(v) => v.queries,
            None => Vec::new(),
        };
        let agent_sources = self.queries.agent_sources(&queries).await?;
        let pending = self
            .store
            .burst_items(&o.id, Some(BurstItemState::Pending), free)
            .await?;
        let starts: Vec<(String, NewJob)> = pending
            .into_iter()
            .map(|item| {
                let job = NewJob {
                    id: uuid::Uuid::now_v7().to_string(),
                    template_id: t.id.clone(),
                    template_name: t.name.clone(),
                    template_version: t.latest_version,
                    data: s.spec.data.clone(),
                    parameters: item.parameters,
                    created_by: s.created_by.clone(),
                    agent_sources: agent_sources.clone(),
                };
                (item.row_key, job)
            })
            .collect();
        if self.store.start_burst_items(&o.id, &starts, fence).await? > 0 {
            self.bus.wake_workers();
        }
        Ok(())
    }

    /// Rendered rows go to review, or to the outbox (one mail per recipient of the row).
    async fn settle_items(&self, fence: &Fence) -> Result<(), StoreError> {
        let rendered = self.store.rendered_items(100).await?;
        if rendered.is_empty() {
            return Ok(());
        }
        let from = sender(self.store.as_ref(), &self.mail, &self.sealer).await;
        let mut seen: HashMap<String, Option<(Occurrence, Schedule)>> = HashMap::new();
        for r in rendered {
            let id = r.item.occurrence_id.clone();
            if !seen.contains_key(&id) {
                let found = match self.store.occurrence(&id).await? {
                    Some(o) => self.store.schedule(&o.schedule_id).await?.map(|s| (o, s)),
                    None => None,
                };
                seen.insert(id.clone(), found);
            }
            let Some(Some((o, s))) = seen.get(&id) else {
                continue;
            };
            let item = &r.item;
            let hold = s.spec.hold_for_review;
            let (state, mails, error) = match settlement(r.job_state, r.job_error.as_ref(), hold) {
                Settlement::Held => (BurstItemState::Held, Vec::new(), None),
                Settlement::Mail => (
                    BurstItemState::Mailed,
                    mails_for(
                        s,
                        o,
                        item.job_id.as_deref(),
                        &item.recipients,
                        Some(&item.row_key),
                        from.as_deref(),
                    ),
                    None,
                ),
                Settlement::Failed(why) => (BurstItemState::Failed, Vec::new(), Some(why)),
            };
            let queued = !mails.is_empty();
            if self
                .store
                .settle_burst_item(&o.id, &item.row_key, state, &mails, error.as_deref(), fence)
                .await?
                && queued
            {
                self.bus.wake_mail();
            }
        }
        Ok(())
    }
}

/// Where an occurrence's burst query got.
enum Step {
    Rows(Vec<NewBurstItem>),
    Failed(String),
    /// The data source could not be reached; try again next round.
    Retry,
}

/// What every row of a burst shares.
struct Prepared {
    spec: BurstSpec,
    declared: Vec<ParamSpec>,
    /// The schedule's own parameters; a row's columns override them.
    given: Map<String, Value>,
    inputs: std::collections::BTreeMap<String, crate::app::render::Input>,
    context: Context,
}

fn too_late(o: &Occurrence) -> bool {
    crate::app::model::now_ms() - o.fire_at > crate::app::model::millis(RETRY_UNREACHABLE)
}

/// One item per row: its key, recipients and parameters. A burst fails as a whole when its
/// columns are missing or its keys do not identify rows; a row whose recipients or parameters
/// do not work is recorded failed, and the others go on.
fn items(p: &Prepared, table: &Table) -> Result<Vec<NewBurstItem>, String> {
    for column in [&p.spec.key_column, &p.spec.recipients_column]
        .into_iter()
        .chain(p.spec.parameters.values())
    {
        if !table.rows.is_empty() && !table.columns.contains(column) {
            return Err(format!(
                "the burst query has no column \"{column}\" (it has {})",
                table.columns.join(", ")
            ));
        }
    }
    let mut keys = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(table.rows.len());
    for (i, row) in table.rows.iter().enumerate() {
        let key = row
            .get(&p.spec.key_column)
            .and_then(text_of)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                format!(
                    "row {}: the key column \"{}\" is empty",
                    i + 1,
                    p.spec.key_column
                )
            })?;
        if !keys.insert(key.clone()) {
            return Err(format!(
                "the key \"{key}\" appears in more than one row; keys must identify rows"
            ));
        }
        let recipients = recipients(row.get(&p.spec.recipients_column));
        let parameters = row_parameters(p, row);
        let error = match (&recipients, &parameters) {
            (Err(e), _) | (_, Err(e)) => Some(e.clone()),
            _ => None,
        };
        out.push(NewBurstItem {
            row_key: key,
            parameters: parameters.unwrap_or_default(),
            recipients: recipients.unwrap_or_default(),
            error,
        });
    }
    Ok(out)
}

/// The row's render parameters as a job stores them: the schedule's, the row's columns, the
/// built-ins.
fn row_parameters(p: &Prepared, row: &Map<String, Value>) -> Result<String, String> {
    let mut given = p.given.clone();
    for (param, column) in &p.spec.parameters {
        given.insert(
            param.clone(),
            row.get(column).cloned().unwrap_or(Value::Null),
        );
    }
    let mut stored = params::resolve(&p.declared, &given)
        .map_err(|e| e.to_string())?
        .stored;
    p.context.store_into(&mut stored);
    Ok(Value::Object(stored).to_string())
}

/// A row's recipients: one address, several separated by commas or semicolons, or a JSON list.
fn recipients(value: Option<&Value>) -> Result<Vec<String>, String> {
    let raw: Vec<String> = match value {
        Some(Value::String(s)) => s.split([',', ';']).map(str::to_owned).collect(),
        Some(Value::Array(a)) => a.iter().filter_map(text_of).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for r in raw.iter().map(|r| r.trim()).filter(|r| !r.is_empty()) {
        let email = crate::app::auth::normalize_email(r)
            .ok_or_else(|| format!("\"{r}\" is not an email address"))?;
        out.push(email);
    }
    if out.is_empty() {
        return Err("the row has no recipient".into());
    }
    Ok(out)
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::app::model::ParamKind;

    fn prepared() -> Prepared {
        Prepared {
            spec: BurstSpec {
                datasource: "db".into(),
                text: "select".into(),
                key_column: "id".into(),
                recipients_column: "email".into(),
                parameters: [("customer".to_owned(), "name".to_owned())].into(),
            },
            declared: vec![ParamSpec {
                name: "customer".into(),
                kind: ParamKind::String,
                label: None,
                required: true,
                default: None,
                choices: vec![],
            }],
            given: Map::new(),
            inputs: Default::default(),
            context: Context {
                user_email: Some("owner@example.com".into()),
                ..Context::default()
            },
        }
    }

    fn table(rows: Value) -> Table {
        let rows: Vec<Map<String, Value>> = serde_json::from_value(rows).unwrap();
        Table {
            columns: vec!["id".into(), "email".into(), "name".into()],
            row_count: rows.len(),
            rows,
            truncated: false,
        }
    }

    #[test]
    fn rows_become_items_with_their_recipients_and_parameters() {
        let t = table(json!([
            {"id": 1, "email": "a@example.com; B@Example.com", "name": "Acme"},
            {"id": 2, "email": ["c@example.com"], "name": "Bolt"},
            {"id": 3, "email": "not an address", "name": "Crane"}
        ]));
        let items = items(&prepared(), &t).unwrap();
        assert_eq!(items[0].row_key, "1");
        assert_eq!(items[0].recipients, ["a@example.com", "b@example.com"]);
        let params: Value = serde_json::from_str(&items[0].parameters).unwrap();
        assert_eq!(params["customer"], "Acme");
        assert_eq!(params["quire_user_email"], "owner@example.com");
        assert_eq!(items[1].recipients, ["c@example.com"]);
        assert!(items[2].error.as_deref().unwrap().contains("not an email"));
        assert!(items[..2].iter().all(|i| i.error.is_none()));
    }

    #[test]
    fn keys_must_identify_rows_and_columns_must_exist() {
        let dup = table(json!([
            {"id": 1, "email": "a@example.com", "name": "A"},
            {"id": 1, "email": "b@example.com", "name": "B"}
        ]));
        assert!(
            items(&prepared(), &dup)
                .unwrap_err()
                .contains("more than one row")
        );
        let mut missing = table(json!([{"id": 1, "email": "a@example.com"}]));
        missing.columns.pop();
        assert!(
            items(&prepared(), &missing)
                .unwrap_err()
                .contains("no column \"name\"")
        );
        let empty_key = table(json!([{"id": null, "email": "a@example.com", "name": "A"}]));
        assert!(
            items(&prepared(), &empty_key)
                .unwrap_err()
                .contains("key column")
        );
    }
}
