//! The queries of a template version: checked when the version is saved (names, data sources,
//! every `:name` a declared parameter or a built-in), and run before each render, concurrently,
//! into the files `queries/NAME.json` the template reads.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{Map, Value};

use super::{TemplateError, invalid};
use crate::app::config::QueriesConfig;
use crate::app::datasource::service::{DataSources, Ran};
use crate::app::model::{ParamSpec, QuerySpec};
use crate::app::render::Input;
use crate::app::store::StoreError;
use crate::connector::statement::{ParamRef, TextError};
use crate::connector::table::{Bound, Limits, Overflow, QueryError};

/// The folder of the query files; templates may not have files of their own there.
pub const DIR: &str = "queries";

/// Parameters the server supplies to every render: when it is for, the schedule's period, who
/// asked. Templates and queries see them like declared parameters.
pub const FIRE_AT: &str = "quire_fire_at";
pub const PERIOD_START: &str = "quire_period_start";
pub const PERIOD_END: &str = "quire_period_end";
pub const USER_EMAIL: &str = "quire_user_email";
pub const BUILTINS: &[&str] = &[FIRE_AT, PERIOD_START, PERIOD_END, USER_EMAIL];

/// The prefix reserved for built-ins: neither declared nor given by callers.
pub const RESERVED_PREFIX: &str = "quire_";

/// What the server knows about a render, stored with its job as `quire_*` parameters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    pub fire_at: Option<jiff::Timestamp>,
    /// The schedule's slot: from the fire time before this one to this one.
    pub period: Option<(jiff::Timestamp, jiff::Timestamp)>,
    pub user_email: Option<String>,
}

impl Context {
    /// A render someone asked for now.
    pub fn asked_now(user_email: &str) -> Context {
        Context {
            fire_at: Some(jiff::Timestamp::now()),
            period: None,
            user_email: Some(user_email.to_owned()),
        }
    }

    /// Adds the built-ins to a job's stored parameters.
    pub fn store_into(&self, stored: &mut Map<String, Value>) {
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                stored.insert(k.to_owned(), Value::String(v));
            }
        };
        put(FIRE_AT, self.fire_at.map(|t| t.to_string()));
        put(PERIOD_START, self.period.map(|p| p.0.to_string()));
        put(PERIOD_END, self.period.map(|p| p.1.to_string()));
        put(USER_EMAIL, self.user_email.clone());
    }

    /// Splits a job's stored parameters into the built-ins and what the caller gave.
    pub fn take_from(stored: &mut Map<String, Value>) -> Context {
        let mut text = |k: &str| match stored.remove(k) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        let stamp = |s: Option<String>| s.and_then(|s| s.parse::<jiff::Timestamp>().ok());
        let fire_at = stamp(text(FIRE_AT));
        let start = stamp(text(PERIOD_START));
        let end = stamp(text(PERIOD_END));
        Context {
            fire_at,
            period: start.zip(end),
            user_email: text(USER_EMAIL),
        }
    }

    /// The built-ins as query values.
    fn bind_into(&self, values: &mut BTreeMap<String, Bound>) {
        let stamp = |t: Option<jiff::Timestamp>| t.map_or(Bound::Null, Bound::Timestamp);
        values.insert(FIRE_AT.into(), stamp(self.fire_at));
        values.insert(PERIOD_START.into(), stamp(self.period.map(|p| p.0)));
        values.insert(PERIOD_END.into(), stamp(self.period.map(|p| p.1)));
        values.insert(
            USER_EMAIL.into(),
            self.user_email.clone().map_or(Bound::Null, Bound::Text),
        );
    }

    /// The built-ins as `sys.inputs` (text; absent when unknown).
    pub fn inputs_into(&self, inputs: &mut BTreeMap<String, Input>) {
        let mut stored = Map::new();
        self.store_into(&mut stored);
        for (k, v) in stored {
            if let Value::String(s) = v {
                inputs.insert(k, Input::Str(s));
            }
        }
    }
}

/// Checks a version's queries against its declared parameters; `kind_of` finds a data source
/// by name and answers with the `:name`s a text uses (or why the text cannot be used).
pub fn check(
    queries: &[QuerySpec],
    declared: &[ParamSpec],
    references: impl Fn(&str, &str) -> Option<Result<Vec<ParamRef>, TextError>>,
) -> Result<(), TemplateError> {
    for (i, q) in queries.iter().enumerate() {
        let field = |f: &str| format!("queries[{i}].{f}");
        let name_ok = !q.name.is_empty()
            && q.name.len() <= 64
            && q.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok {
            return Err(invalid(
                field("name"),
                "1 to 64 letters, digits, '_' or '-' (the template reads queries/NAME.json)",
            ));
        }
        if queries[..i].iter().any(|o| o.name == q.name) {
            return Err(invalid(
                field("name"),
                format!("\"{}\" appears twice", q.name),
            ));
        }
        let Some(refs) = references(&q.datasource, &q.text) else {
            return Err(invalid(
                field("datasource"),
                format!("no data source named \"{}\"", q.datasource),
            ));
        };
        check_references(&format!("query {}", q.name), refs, declared)
            .map_err(|m| invalid(field("text"), m))?;
    }
    Ok(())
}

/// Checks that a query's text parses and that every `:name` in it is a declared parameter or a
/// built-in; the message names `what` (e.g. "query sales"), the line and the column.
pub fn check_references(
    what: &str,
    refs: Result<Vec<ParamRef>, TextError>,
    declared: &[ParamSpec],
) -> Result<(), String> {
    let refs = refs.map_err(|e| {
        format!(
            "{what}, line {}, column {}: {}",
            e.line, e.column, e.message
        )
    })?;
    for r in refs {
        let known =
            BUILTINS.contains(&r.name.as_str()) || declared.iter().any(|p| p.name == r.name);
        if !known {
            return Err(format!(
                "{what}, line {}, column {}: unknown parameter :{} (declare it under \
                 parameters, or use a built-in: {})",
                r.line,
                r.column,
                r.name,
                BUILTINS.join(", ")
            ));
        }
    }
    Ok(())
}

/// One query's outcome, for progress.
#[derive(Debug, Clone)]
pub struct Report {
    pub name: String,
    pub rows: usize,
    pub took: Duration,
}

/// A query that failed, naming it and its data source.
#[derive(Debug, Clone, thiserror::Error)]
#[error("query {query} (data source {datasource}): {error}")]
pub struct Failure {
    pub query: String,
    pub datasource: String,
    pub error: QueryError,
}

/// The query files of a render, and what each query did.
pub struct Fetched {
    pub files: Vec<(String, Vec<u8>)>,
    pub reports: Vec<Report>,
}

/// Runs a version's queries for renders, within the configured limits.
#[derive(Clone)]
pub struct QueryRunner {
    datasources: DataSources,
    limits: Limits,
    total: Duration,
    previews: Arc<PreviewCache>,
}

/// How long a preview's query results are reused: the editor's live preview renders on every
/// pause in typing, and should not run every query against the database each time.
const PREVIEW_TTL: Duration = Duration::from_secs(30);
/// Query results kept for previews at most.
const PREVIEW_ENTRIES: usize = 64;

/// Query results of previews and dry runs by (data source, text, values), for [`PREVIEW_TTL`].
/// Renders never read it. The fire time is left out of the key: a preview's "now" moves on every
/// render and would make every entry miss.
#[derive(Default)]
pub struct PreviewCache {
    entries: Mutex<HashMap<u64, (Instant, Ran)>>,
}

impl PreviewCache {
    fn key(q: &QuerySpec, values: &BTreeMap<String, Bound>) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        (&q.datasource, &q.text).hash(&mut h);
        for (k, v) in values.iter().filter(|(k, _)| k.as_str() != FIRE_AT) {
            (k, format!("{v:?}")).hash(&mut h);
        }
        h.finish()
    }

    fn get(&self, key: u64) -> Option<Ran> {
        let entries = self.lock();
        entries
            .get(&key)
            .filter(|(at, _)| at.elapsed() < PREVIEW_TTL)
            .map(|(_, ran)| ran.clone())
    }

    fn put(&self, key: u64, ran: Ran) {
        let mut entries = self.lock();
        if entries.len() >= PREVIEW_ENTRIES {
            entries.retain(|_, (at, _)| at.elapsed() < PREVIEW_TTL);
            if entries.len() >= PREVIEW_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), ran));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Instant, Ran)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl QueryRunner {
    pub fn new(datasources: DataSources, config: &QueriesConfig) -> Self {
        QueryRunner {
            datasources,
            limits: Limits {
                max_rows: config.max_rows as usize,
                max_bytes: config.max_bytes.as_usize(),
                timeout: config.timeout.get(),
                overflow: Overflow::Fail,
            },
            total: config.timeout.get(),
            previews: Arc::default(),
        }
    }

    /// The agent-served data sources `queries` use, as a job stores them for claims.
    pub async fn agent_sources(&self, queries: &[QuerySpec]) -> Result<Option<String>, StoreError> {
        self.datasources.agent_sources(queries).await
    }

    /// The agent-served data sources this instance reaches, as a claim takes them; `None`
    /// while NATS lets it reach every instance's agents.
    pub async fn reach(&self) -> Result<Option<String>, StoreError> {
        self.datasources.reach().await
    }

    /// One query of a fetch; previews and dry runs (which truncate) reuse a recent result.
    async fn query(
        &self,
        q: &QuerySpec,
        values: &BTreeMap<String, Bound>,
        limits: &Limits,
        origin: &str,
    ) -> Result<Ran, QueryError> {
        if limits.overflow == Overflow::Fail {
            return self
                .datasources
                .query(&q.datasource, &q.text, values, limits, origin)
                .await;
        }
        let key = PreviewCache::key(q, values);
        if let Some(ran) = self.previews.get(key) {
            return Ok(ran);
        }
        let ran = self
            .datasources
            .query(&q.datasource, &q.text, values, limits, origin)
            .await?;
        self.previews.put(key, ran.clone());
        Ok(ran)
    }

    /// Runs `queries` concurrently with the render's parameters and built-ins bound. A render
    /// fails past a limit (`Overflow::Fail`); a preview truncates.
    pub async fn fetch(
        &self,
        queries: &[QuerySpec],
        inputs: &BTreeMap<String, Input>,
        context: &Context,
        overflow: Overflow,
        origin: &str,
    ) -> Result<Fetched, Failure> {
        let mut values = values(inputs);
        context.bind_into(&mut values);
        let limits = Limits {
            overflow,
            ..self.limits
        };
        let (values, limits) = (&values, &limits);
        let all = join_all(queries.iter().map(|q| async move {
            let ran = self.query(q, values, limits, origin).await;
            (q, ran)
        }));
        let results = tokio::time::timeout(self.total, all)
            .await
            .map_err(|_| Failure {
                query: queries
                    .iter()
                    .map(|q| q.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                datasource: "(all)".into(),
                error: QueryError::Limit(format!(
                    "the queries took longer than {}s together (queries.timeout)",
                    self.total.as_secs()
                )),
            })?;
        let mut fetched = Fetched {
            files: Vec::with_capacity(results.len()),
            reports: Vec::with_capacity(results.len()),
        };
        for (q, ran) in results {
            let Ran { table, took } = ran.map_err(|error| Failure {
                query: q.name.clone(),
                datasource: q.datasource.clone(),
                error,
            })?;
            fetched.reports.push(Report {
                name: q.name.clone(),
                rows: table.row_count,
                took,
            });
            let json = serde_json::to_vec(&table).unwrap_or_default();
            fetched.files.push((file_name(&q.name), json));
        }
        Ok(fetched)
    }

    /// Runs one query (the editor's runner, a burst): at most `rows` rows, past which it
    /// stops or fails as `overflow` says.
    pub async fn run_one(
        &self,
        query: &QuerySpec,
        inputs: &BTreeMap<String, Input>,
        context: &Context,
        rows: usize,
        overflow: Overflow,
        origin: &str,
    ) -> Result<Ran, Failure> {
        let mut values = values(inputs);
        context.bind_into(&mut values);
        let limits = Limits {
            max_rows: rows,
            overflow,
            ..self.limits
        };
        self.datasources
            .query(&query.datasource, &query.text, &values, &limits, origin)
            .await
            .map_err(|error| Failure {
                query: query.name.clone(),
                datasource: query.datasource.clone(),
                error,
            })
    }
}

fn values(inputs: &BTreeMap<String, Input>) -> BTreeMap<String, Bound> {
    inputs.iter().map(|(k, v)| (k.clone(), bound(v))).collect()
}

/// Where a template reads query `name`'s table.
pub fn file_name(name: &str) -> String {
    format!("{DIR}/{name}.json")
}

/// A parameter as a query value, typed as declared.
fn bound(input: &Input) -> Bound {
    match input {
        Input::Str(s) => Bound::Text(s.clone()),
        Input::Int(n) => Bound::Int(*n),
        Input::Float(f) => Bound::Float(*f),
        Input::Bool(b) => Bound::Bool(*b),
        Input::Date(d) => Bound::Date(*d),
        Input::None => Bound::Null,
    }
}

/// One line per query for progress: `sales: 120 rows in 14 ms`.
pub fn summary(reports: &[Report]) -> String {
    reports
        .iter()
        .map(|r| format!("{}: {} rows in {} ms", r.name, r.rows, r.took.as_millis()))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::app::model::ParamKind;

    fn q(name: &str, ds: &str, text: &str) -> QuerySpec {
        QuerySpec {
            name: name.into(),
            datasource: ds.into(),
            text: text.into(),
            params: Map::new(),
        }
    }

    /// Finds `:name`s the simple way, for checking `check` alone.
    fn refs(ds: &str, text: &str) -> Option<Result<Vec<ParamRef>, TextError>> {
        (ds == "db").then(|| {
            Ok(text
                .match_indices(':')
                .map(|(i, _)| ParamRef {
                    name: text[i + 1..]
                        .split(|c: char| !c.is_alphanumeric() && c != '_')
                        .next()
                        .unwrap()
                        .to_owned(),
                    line: 1,
                    column: i + 1,
                })
                .collect())
        })
    }

    fn declared() -> Vec<ParamSpec> {
        vec![ParamSpec {
            name: "region".into(),
            kind: ParamKind::String,
            label: None,
            required: false,
            default: None,
            choices: vec![],
        }]
    }

    fn field_and_message(r: Result<(), TemplateError>) -> (String, String) {
        match r {
            Err(TemplateError::Invalid { field, message }) => (field, message),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parameters_must_be_declared_or_built_in() {
        let ok = [q("a", "db", "select :region, :quire_fire_at")];
        assert!(check(&ok, &declared(), refs).is_ok());
        let (field, message) =
            field_and_message(check(&[q("a", "db", "select :nope")], &declared(), refs));
        assert_eq!(field, "queries[0].text");
        assert!(
            message.contains("query a, line 1, column 8: unknown parameter :nope"),
            "{message}"
        );
    }

    #[test]
    fn names_and_data_sources_are_checked() {
        let (field, _) = field_and_message(check(&[q("a b", "db", "")], &[], refs));
        assert_eq!(field, "queries[0].name");
        let (field, _) = field_and_message(check(&[q("a", "db", ""), q("a", "db", "")], &[], refs));
        assert_eq!(field, "queries[1].name");
        let (field, message) = field_and_message(check(&[q("a", "nowhere", "")], &[], refs));
        assert_eq!(field, "queries[0].datasource");
        assert!(message.contains("nowhere"));
    }

    #[test]
    fn previews_reuse_results_whatever_the_fire_time_but_not_other_values() {
        use crate::connector::table::Table;
        let cache = PreviewCache::default();
        let query = q("a", "db", "select :region");
        let mut values = BTreeMap::from([
            ("region".to_owned(), Bound::Text("north".into())),
            (FIRE_AT.to_owned(), Bound::Null),
        ]);
        let ran = Ran {
            table: Table {
                columns: vec!["x".into()],
                rows: Vec::new(),
                row_count: 0,
                truncated: false,
            },
            took: Duration::from_millis(3),
        };
        cache.put(PreviewCache::key(&query, &values), ran);
        values.insert(FIRE_AT.to_owned(), Bound::Timestamp(jiff::Timestamp::now()));
        assert!(cache.get(PreviewCache::key(&query, &values)).is_some());
        values.insert("region".to_owned(), Bound::Text("south".into()));
        assert!(cache.get(PreviewCache::key(&query, &values)).is_none());
        let other = q("a", "db", "select :region, 1");
        assert!(cache.get(PreviewCache::key(&other, &values)).is_none());
    }

    #[test]
    fn built_ins_travel_with_the_job_and_come_back() {
        let ctx = Context {
            fire_at: Some("2026-12-01T06:00:00Z".parse().unwrap()),
            period: Some((
                "2026-11-30T06:00:00Z".parse().unwrap(),
                "2026-12-01T06:00:00Z".parse().unwrap(),
            )),
            user_email: Some("ann@example.com".into()),
        };
        let mut stored = json!({"region": "north"}).as_object().cloned().unwrap();
        ctx.store_into(&mut stored);
        assert_eq!(stored[USER_EMAIL], "ann@example.com");
        let back = Context::take_from(&mut stored);
        assert_eq!(back, ctx);
        assert_eq!(stored, *json!({"region": "north"}).as_object().unwrap());
    }
}
