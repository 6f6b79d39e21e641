//! The console's pages. Each reads what it shows straight from the store; changes go through the
//! JSON API from app.js, so the console has no write paths of its own.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;

use super::{Page, next};
use crate::app::auth::Principal;
use crate::app::http::auth::ConsoleUser;
use crate::app::http::problem::Problem;
use crate::app::http::views::{JobView, VersionView, ts};
use crate::app::model::{Job, JobFilter, JobState, UserRole};
use crate::app::state::AppState;
use crate::connector::DataSourceKind;

pub(super) type PageResult = Result<Response, Response>;

pub(super) fn fail(p: Problem) -> Response {
    p.into_response()
}

pub(super) fn forbidden(user: &Principal, needed: UserRole) -> Response {
    let content =
        html! { h1 { "Not allowed" } p { "This page needs the " (needed.as_str()) " role." } };
    let page = Page {
        title: "Not allowed",
        name: "forbidden",
        user: Some(user),
        content,
        data: None,
        wide: false,
    };
    (StatusCode::FORBIDDEN, page).into_response()
}

pub async fn home(ConsoleUser(_): ConsoleUser) -> Redirect {
    Redirect::to("/templates")
}

/// The sign-in page. Where to go afterwards (`?next=`) is checked here and handed to the script
/// on the form, so the script never reads the address bar.
pub async fn login(user: Option<Principal>, uri: Uri) -> Response {
    let next_path = next::from_query(uri.query());
    if user.is_some() {
        return Redirect::to(&next_path).into_response();
    }
    let content = html! {
        div.login.card {
            h1 { "Quire" }
            form #login-form data-next=(next_path) {
                label { "Email" input type="email" name="email" autocomplete="username" required autofocus; }
                label { "Password" input type="password" name="password" autocomplete="current-password" required; }
                div.actions { button type="submit" { "Sign in" } }
                p #login-error .error hidden {}
            }
        }
    };
    Page {
        title: "Sign in",
        name: "login",
        user: None,
        content,
        data: None,
        wide: false,
    }
    .into_response()
}

pub async fn templates(
    State(state): State<AppState>,
    ConsoleUser(user): ConsoleUser,
) -> PageResult {
    let list = state.templates.list().await.map_err(|e| fail(e.into()))?;
    let editor = user.user.role >= UserRole::Editor;
    let content = html! {
        h1 { "Templates" }
        table.list {
            thead { tr { th { "Name" } th { "Description" } th { "Version" } th { "Updated" } th {} } }
            tbody {
                @for t in &list {
                    tr {
                        td { @if editor { a href={"/templates/" (t.id)} { (t.name) } } @else { (t.name) } }
                        td.muted { (t.description) }
                        td { (t.latest_version) }
                        td.muted { (ts(t.updated_at)) }
                        td { a.button.secondary href={"/render?template=" (t.name)} { "Render" } }
                    }
                }
            }
        }
        @if editor {
            h2 { "New template" }
            form #new-template .card {
                div.row {
                    label { "Name" input type="text" name="name" required; }
                    label { "Description" input type="text" name="description"; }
                }
                div.actions { button type="submit" { "Create" } }
                p #new-error .error hidden {}
            }
        }
    };
    Ok(Page {
        title: "Templates",
        name: "templates",
        user: Some(&user),
        content,
        data: None,
        wide: false,
    }
    .into_response())
}

pub async fn editor(
    State(state): State<AppState>,
    ConsoleUser(user): ConsoleUser,
    Path(id): Path<String>,
) -> PageResult {
    if user.user.role < UserRole::Editor {
        return Err(forbidden(&user, UserRole::Editor));
    }
    let t = state
        .store
        .template(&id)
        .await
        .map_err(|e| fail(e.into()))?
        .ok_or_else(|| fail(Problem::not_found("template")))?;
    let v = state
        .store
        .version(&t.id, t.latest_version)
        .await
        .map_err(|e| fail(e.into()))?
        .ok_or_else(|| fail(Problem::not_found("version")))?;
    let files = state
        .store
        .files(&t.id, v.version)
        .await
        .map_err(|e| fail(e.into()))?;
    let sample = v
        .sample_data
        .as_deref()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        .unwrap_or(json!({}));
    let params = serde_json::to_string_pretty(&v.parameters).unwrap_or_else(|_| "[]".into());
    // For the queries' data source choice; editors may list data sources, as in the API.
    let sources = state.datasources.list().await.map_err(|e| fail(e.into()))?;
    let data = json!({
        "template": {"id": t.id, "name": t.name},
        "version": VersionView::new(&v, Some(&files), user.user.role),
        "datasources": sources.iter().map(|ds| json!({"name": ds.name, "kind": ds.kind.as_str()})).collect::<Vec<_>>(),
    });
    let content = html! {
        div.actions style="margin-top:0" {
            h1 style="margin:0;flex:1" { (t.name) span.muted { " · version " (v.version) } }
            a.button.secondary href={"/render?template=" (t.name)} { "Render…" }
            button #save type="button" { "Save new version" }
            button #delete-template .danger type="button" { "Delete" }
        }
        p #editor-status .muted {}
        p #editor-error .error hidden {}
        div.editor {
            div {
                div #tabs .tabs {}
                textarea #source .code spellcheck="false" {}
                label { "Add files (images, .typ modules)" input #add-file type="file" multiple; }
                label { "Sample data (data.json for previews)" textarea #sample-data spellcheck="false" { (serde_json::to_string_pretty(&sample).unwrap_or_default()) } }
                label { "Parameters (JSON list of {name, type, default, required, choices})" textarea #parameters spellcheck="false" { (params) } }
                section #queries-panel {
                    h2 { "Queries" }
                    p.muted { "Each query runs before a render; the template reads its rows from " code { "queries/NAME.json" } ". Use " code { ":name" } " for a declared parameter; sample values (a JSON object) are what Run and the preview bind." }
                    div #queries {}
                    @if sources.is_empty() { p.muted { "No data sources yet: an admin adds them under " a href="/datasources" { "Data sources" } "." } }
                    div.actions { button #add-query .secondary type="button" { "Add query" } }
                }
            }
            div #preview .preview {}
        }
    };
    Ok(Page {
        title: &t.name,
        name: "editor",
        user: Some(&user),
        content,
        data: Some(data),
        wide: true,
    }
    .into_response())
}

#[derive(Deserialize)]
pub struct RenderQuery {
    template: Option<String>,
}

pub async fn render(
    State(state): State<AppState>,
    ConsoleUser(user): ConsoleUser,
    Query(q): Query<RenderQuery>,
) -> PageResult {
    let list = state.templates.list().await.map_err(|e| fail(e.into()))?;
    let mut templates = Vec::with_capacity(list.len());
    for t in &list {
        if let Some(v) = state
            .store
            .version(&t.id, t.latest_version)
            .await
            .map_err(|e| fail(e.into()))?
        {
            let sample = v
                .sample_data
                .as_deref()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok());
            templates.push(json!({"name": t.name, "version": v.version, "parameters": v.parameters, "sample_data": sample}));
        }
    }
    let selected = q.template.unwrap_or_default();
    let content = html! {
        h1 { "Render a report" }
        form #render-form .card {
            label { "Template"
                select name="template" {
                    @for t in &list { option value=(t.name) selected[t.name == selected] { (t.name) } }
                }
            }
            div #params {}
            label { "Data (JSON, visible to the template as data.json)" textarea name="data" spellcheck="false" rows="12" {} }
            div.actions { button #render-button type="submit" { "Render" } }
        }
        div #render-status .card hidden {
            div.progress { div.bar {} div.label { "queued" } }
            div.actions { div.result hidden {} a #job-link href="#" { "Job details" } }
            p.error hidden {}
        }
    };
    let data = json!({"templates": templates});
    Ok(Page {
        title: "Render",
        name: "render",
        user: Some(&user),
        content,
        data: Some(data),
        wide: false,
    }
    .into_response())
}

fn state_badge(s: JobState) -> Markup {
    html! { span class={"state " (s.as_str())} { (s.as_str()) } }
}

fn duration(job: &Job) -> String {
    match (job.started_at, job.finished_at) {
        (Some(s), Some(f)) => format!("{} ms", f - s),
        _ => String::new(),
    }
}

pub async fn jobs(State(state): State<AppState>, ConsoleUser(user): ConsoleUser) -> PageResult {
    let filter = JobFilter {
        created_by: (!user.sees_all_jobs()).then(|| user.user.id.clone()),
        limit: 100,
        ..Default::default()
    };
    let list = state
        .store
        .jobs(&filter)
        .await
        .map_err(|e| fail(e.into()))?;
    let content = html! {
        h1 { "Jobs" }
        table.list {
            thead { tr { th { "Created" } th { "Template" } th { "State" } th { "Stage" } th { "Pages" } th { "Duration" } th {} } }
            tbody {
                @for j in &list {
                    tr {
                        td { a href={"/jobs/" (j.id)} { (ts(j.created_at)) } }
                        td { (j.template_name) " v" (j.template_version) }
                        td { (state_badge(j.state)) }
                        td.muted { (j.stage) " · " (j.progress) "%" }
                        td { (j.pages.map(|p| p.to_string()).unwrap_or_default()) }
                        td.muted { (duration(j)) }
                        td { @if j.state == JobState::Succeeded { a href={"/api/v1/renders/" (j.id) "/pdf"} { "PDF" } } }
                    }
                }
            }
        }
        @if list.is_empty() { p.muted { "No jobs yet. " a href="/render" { "Render a report." } } }
    };
    Ok(Page {
        title: "Jobs",
        name: "jobs",
        user: Some(&user),
        content,
        data: None,
        wide: false,
    }
    .into_response())
}

pub async fn job(
    State(state): State<AppState>,
    ConsoleUser(user): ConsoleUser,
    Path(id): Path<String>,
) -> PageResult {
    let j = state
        .store
        .job(&id)
        .await
        .map_err(|e| fail(e.into()))?
        .filter(|j| user.sees_all_jobs() || j.created_by.as_deref() == Some(user.user.id.as_str()));
    let j = j.ok_or_else(|| fail(Problem::not_found("job")))?;
    let view = JobView::from(&j);
    let is_final = j.state.is_final();
    let bar_class = match j.state {
        JobState::Succeeded => "progress done",
        JobState::Failed | JobState::Cancelled => "progress failed",
        _ => "progress",
    };
    let content = html! {
        h1 { "Job " span.muted { (j.id) } }
        div #job .card data-job=(j.id) data-final=(is_final) {
            p { (state_badge(j.state)) " " (j.template_name) " version " (j.template_version) }
            div class=(bar_class) { div.bar style={"width:" (j.progress) "%"} {} div.label { (j.stage) " · " (j.progress) "%" } }
            div.actions {
                div.result hidden[j.state != JobState::Succeeded] {
                    a #download .button href={"/api/v1/renders/" (j.id) "/pdf"} { "Download PDF" }
                }
                @if !is_final { button #cancel .secondary type="button" { "Cancel" } }
            }
            @if let Some(e) = &j.error {
                p.error { (e.message) }
                @for d in &e.diagnostics { p.diag { (d.to_string()) } }
            } @else { p.error hidden {} }
            h2 { "Details" }
            pre.diag { (serde_json::to_string_pretty(&view).unwrap_or_default()) }
        }
    };
    Ok(Page {
        title: "Job",
        name: "job",
        user: Some(&user),
        content,
        data: None,
        wide: false,
    }
    .into_response())
}

pub async fn fonts(State(state): State<AppState>, ConsoleUser(user): ConsoleUser) -> PageResult {
    let catalog = state.fonts.list();
    let faces = &catalog.faces;
    let mut families: BTreeMap<(String, &'static str), Vec<String>> = BTreeMap::new();
    let mut files: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in faces {
        families
            .entry((f.family.clone(), f.source))
            .or_default()
            .push(format!("{} {}", f.style, f.weight));
        if let Some(file) = &f.file {
            files
                .entry(file.clone())
                .or_default()
                .push(f.family.clone());
        }
    }
    let editor = user.user.role >= UserRole::Editor;
    let content = html! {
        h1 { "Fonts" }
        @if user.user.role >= UserRole::Admin {
            p.muted { "Font directory: " code { (state.fonts.dir().display()) } ". Files dropped there are picked up within " (state.config.fonts.rescan_interval) "." }
        }
        table.list {
            thead { tr { th { "Family" } th { "Source" } th { "Faces" } } }
            tbody { @for ((family, source), styles) in &families { tr { td { (family) } td.muted { (source) } td.muted { (styles.join(", ")) } } } }
        }
        @if !files.is_empty() {
            h2 { "Files in the font directory" }
            table.list {
                tbody { @for (file, fams) in &files { tr { td { (file) } td.muted { (fams.join(", ")) } td { @if editor { button.danger type="button" data-font=(file) { "Remove" } } } } } }
            }
        }
        @if !catalog.skipped.is_empty() {
            h2 { "Skipped files" }
            p.muted { "These files in the font directory are not used by renders." }
            table.list {
                tbody { @for s in &catalog.skipped { tr { td { (s.file) } td.error { (s.reason) } td { @if editor { button.danger type="button" data-font=(s.file) { "Remove" } } } } } }
            }
        }
        @if editor {
            h2 { "Upload a font" }
            form #font-upload .card {
                input #font-file type="file" accept=".ttf,.otf,.ttc,.otc" required;
                div.actions { button type="submit" { "Upload" } }
                p #font-error .error hidden {}
            }
        }
    };
    Ok(Page {
        title: "Fonts",
        name: "fonts",
        user: Some(&user),
        content,
        data: None,
        wide: false,
    }
    .into_response())
}

/// Data sources: each with its kind, last connection test and the templates that query it;
/// admins test, delete and create them (and upload CSV sources' files).
pub async fn datasources(
    State(state): State<AppState>,
    ConsoleUser(user): ConsoleUser,
) -> PageResult {
    if user.user.role < UserRole::Editor {
        return Err(forbidden(&user, UserRole::Editor));
    }
    let list = state.datasources.list().await.map_err(|e| fail(e.into()))?;
    let used_by = state
        .templates
        .by_datasource()
        .await
        .map_err(|e| fail(e.into()))?;
    let admin = user.user.role >= UserRole::Admin;
    let content = html! {
        h1 { "Data sources" }
        p.muted { "Where reports fetch their data. Secret settings are sealed and never shown again." }
        p #datasource-error .error hidden {}
        table.list #datasources {
            thead { tr { th { "Name" } th { "Kind" } th { "Last test" } th { "Used by" } th {} } }
            tbody {
                @for ds in &list {
                    tr data-datasource=(ds.name) {
                        td { (ds.name) }
                        td.muted { (ds.kind.as_str()) }
                        td {
                            @match (&ds.checked_at, &ds.last_error) {
                                (None, _) => span.muted { "not tested" },
                                (Some(at), None) => span.muted { "succeeded " (ts(*at)) },
                                (Some(at), Some(e)) => span.error { "failed " (ts(*at)) ": " (e) },
                            }
                        }
                        td.used-by {
                            @match used_by.get(&ds.name) {
                                Some(templates) => {
                                    @for (i, t) in templates.iter().enumerate() {
                                        @if i > 0 { ", " }
                                        a href={"/templates/" (t.id)} { (t.name) }
                                    }
                                }
                                None => span.muted { "no template" },
                            }
                        }
                        td { @if admin {
                            button.secondary type="button" data-test=(ds.id) { "Test" } " "
                            @if ds.kind == DataSourceKind::Csv {
                                label.button.secondary.upload { "Upload CSV" input type="file" accept=".csv,text/csv" data-upload=(ds.id) hidden; } " "
                            }
                            button.danger type="button" data-delete=(ds.id) { "Delete" }
                        } }
                    }
                }
            }
        }
        @if admin {
            h2 { "New data source" }
            form #new-datasource .card {
                div.row {
                    label { "Name" input type="text" name="name" required pattern="[A-Za-z0-9._-]+"; }
                    label { "Kind" select name="kind" { @for k in DataSourceKind::NAMES { option value=(k) { (k) } } } }
                }
                fieldset data-kind="postgres mysql" {
                    label { "URL (postgres://user:password@host:5432/db, mysql://user:password@host:3306/db)" input type="text" name="url" autocomplete="off"; }
                    p.muted { "Or, without a URL:" }
                    div.row {
                        label { "Host" input type="text" name="host"; }
                        label { "Port" input type="number" name="port" min="1" max="65535"; }
                        label { "Database" input type="text" name="database"; }
                    }
                    div.row {
                        label { "User" input type="text" name="user" autocomplete="off"; }
                        label { "Password" input type="password" name="password" autocomplete="new-password"; }
                        label { "TLS" select name="tls" {
                            option value="prefer" { "prefer" }
                            option value="require" { "require" }
                            option value="disable" { "disable" }
                        } }
                    }
                }
                fieldset data-kind="agent" {
                    label { "Source name on the agents (their [[agent.datasources]] name)" input type="text" name="source" placeholder="warehouse"; }
                    p.muted { "Its settings and credentials stay on the agents' hosts; see " a href="/agents" { "Agents" } "." }
                }
                fieldset data-kind="sqlite" {
                    label { "Path of the SQLite file on the server (opened read-only)" input type="text" name="path" placeholder="/srv/data/sales.db"; }
                }
                fieldset data-kind="http" {
                    label { "Base URL (queries are paths under it)" input type="text" name="base_url" placeholder="https://api.example.com/v1/"; }
                    label { "Headers (sent with every request, sealed)" }
                    div #http-headers {}
                    div.actions style="margin-top:.25rem" { button #add-header .secondary type="button" { "Add header" } }
                    div.row {
                        label { "Rows (JSON pointer to the array; empty: the whole document)" input type="text" name="rows" placeholder="/data"; }
                        label { "Other allowed hosts (comma separated)" input type="text" name="allowed_hosts"; }
                    }
                    div.row {
                        label { "Timeout" input type="text" name="timeout" placeholder="30s"; }
                        label { "Largest response" input type="text" name="max_response" placeholder="16MiB"; }
                    }
                    label.check { input type="checkbox" name="allow_private_addresses"; " Allow link-local and metadata addresses" }
                }
                fieldset data-kind="csv" {
                    div.row {
                        label { "Delimiter" select name="delimiter" {
                            option value="," { "comma ," }
                            option value=";" { "semicolon ;" }
                            option value="tab" { "tab" }
                            option value="|" { "pipe |" }
                        } }
                        label.check { input type="checkbox" name="header" checked; " The first row names the columns" }
                    }
                    label { "CSV file (uploaded once the source is created)" input type="file" name="file" accept=".csv,text/csv"; }
                }
                label { "More settings (JSON object, merged over the fields above), e.g. {\"pool_size\": 8, \"statement_timeout\": \"1m\"}" textarea name="settings" spellcheck="false" rows="3" { "{}" } }
                div.actions { button type="submit" { "Create" } }
            }
        }
    };
    Ok(Page {
        title: "Data sources",
        name: "datasources",
        user: Some(&user),
        content,
        data: None,
        wide: false,
    }
    .into_response())
}

pub async fn tokens(State(state): State<AppState>, ConsoleUser(user): ConsoleUser) -> PageResult {
    let list = state
        .accounts
        .tokens(&user.user.id)
        .await
        .map_err(|e| fail(e.into()))?;
    let content = html! {
        h1 { "Personal API tokens" }
        p.muted { "Send a token as " code { "Authorization: Bearer <token>" } ". It acts with your role." }
        table.list {
            thead { tr { th { "Name" } th { "Token" } th { "Created" } th { "Last used" } th {} } }
            tbody {
                @for t in &list {
                    tr {
                        td { (t.name) }
                        td.muted { (t.prefix) "…" }
                        td.muted { (ts(t.created_at)) }
                        td.muted { (t.last_used_at.map(ts).unwrap_or_else(|| "never".into())) }
                        td { button.danger type="button" data-token=(t.id) { "Revoke" } }
                    }
                }
            }
        }
        h2 { "New token" }
        form #new-token .card {
            label { "Name" input type="text" name="name" required placeholder="e.g. nightly export"; }
            div.actions { button type="submit" { "Create" } }
            p #token-error .error hidden {}
            div #token-created .notice hidden { p { "Copy the token now; it is not shown again:" } code.token {} }
        }
    };
    Ok(Page {
        title: "API tokens",
        name: "tokens",
        user: Some(&user),
        content,
        data: None,
        wide: false,
    }
    .into_response())
}

pub async fn users(State(state): State<AppState>, ConsoleUser(user): ConsoleUser) -> PageResult {
    if user.user.role < UserRole::Admin {
        return Err(forbidden(&user, UserRole::Admin));
    }
    let list = state.accounts.users().await.map_err(|e| fail(e.into()))?;
    let roles = [UserRole::Viewer, UserRole::Editor, UserRole::Admin];
    let content = html! {
        h1 { "Users" }
        p #user-error .error hidden {}
        table.list {
            thead { tr { th { "Email" } th { "Role" } th { "State" } th {} } }
            tbody {
                @for u in &list {
                    tr {
                        td { (u.email) @if u.is_root { span.muted { " (root, from the configuration)" } } }
                        td {
                            @if u.is_root { "admin" } @else {
                                select data-user=(u.id) { @for r in roles { option value=(r.as_str()) selected[r == u.role] { (r.as_str()) } } }
                            }
                        }
                        td.muted { @if u.disabled { "disabled" } @else { "active" } }
                        td { @if !u.is_root { button.secondary type="button" data-disable=(u.id) data-value=(!u.disabled) { @if u.disabled { "Enable" } @else { "Disable" } } } }
                    }
                }
            }
        }
        h2 { "Set a password" }
        form #set-password .card {
            div.row {
                label { "User" select name="user" required {
                    // Root's password is changed by root alone (or by the configuration).
                    @for u in list.iter().filter(|u| !u.is_root || user.user.is_root) { option value=(u.id) { (u.email) } }
                } }
                label { "New password" input type="password" name="password" required minlength="8" autocomplete="new-password"; }
            }
            label.check { input type="checkbox" name="revoke_tokens" checked; " Also revoke the user's API tokens" }
            p.muted { "The user is signed out everywhere." }
            div.actions { button type="submit" { "Set password" } }
        }
        h2 { "New user" }
        form #new-user .card {
            div.row {
                label { "Email" input type="email" name="email" required; }
                label { "Password" input type="password" name="password" required minlength="8"; }
                label { "Role" select name="role" { @for r in roles { option value=(r.as_str()) { (r.as_str()) } } } }
            }
            div.actions { button type="submit" { "Create" } }
        }
    };
    Ok(Page {
        title: "Users",
        name: "users",
        user: Some(&user),
        content,
        data: None,
        wide: false,
    }
    .into_response())
}

pub async fn cluster(State(state): State<AppState>, ConsoleUser(user): ConsoleUser) -> PageResult {
    if user.user.role < UserRole::Admin {
        return Err(forbidden(&user, UserRole::Admin));
    }
    let overview = crate::app::http::cluster::load(&state)
        .await
        .map_err(fail)?;
    let mode = if state.config.ha.enabled {
        "high availability"
    } else {
        "single instance"
    };
    let dr = crate::app::http::cluster::dr_json(&state)
        .await
        .map_err(fail)?;
    let license = state
        .licensing
        .overview()
        .await
        .map_err(|e| fail(e.into()))?;
    let content = html! {
        h1 { "HA Instances" }
        p.muted { "Mode: " (mode) ". This page refreshes every two seconds. " span #cluster-updated {} }
        div #cluster-warnings {}
        table.list #instances {
            thead { tr { th { "Instance" } th { "State" } th { "Licence" } th { "Version" } th { "Address" } th { "Uptime" } th { "Roles" } th { "Last heartbeat" } th { "NATS" } th {} } }
            tbody {}
        }
        h2 { "Leader roles" }
        table.list #leases { thead { tr { th { "Role" } th { "Holder" } th { "Term" } th { "Expires" } } } tbody {} }
        h2 { "Recent handovers" }
        table.list #handovers { thead { tr { th { "Role" } th { "Term" } th { "Holder" } th { "From" } th { "Until" } th { "Ended" } } } tbody {} }
        h2 { "Licence" }
        p #license-summary {}
        table.list #seats { thead { tr { th { "Instance name" } th { "Held by" } th { "Licence" } th { "Taken" } th { "Last seen" } th {} } } tbody {} }
        h3 { "Seat history" }
        table.list #seat-history { thead { tr { th { "When" } th { "Instance" } th { "Event" } th { "By" } th { "Detail" } } } tbody {} }
        (dr_section(&dr, state.config.dr.lag_warning.get().as_secs_f64()))
        p #cluster-error .error hidden {}
    };
    let mut data = crate::app::http::cluster::overview_json(&overview);
    data["license"] = crate::app::http::license::overview_json(&license);
    Ok(Page {
        title: "HA Instances",
        name: "cluster",
        user: Some(&user),
        content,
        data: Some(data),
        wide: true,
    }
    .into_response())
}

/// Disaster recovery on the HA page: this region's role, replication lag, epoch, replicas and
/// the role history.
fn dr_section(dr: &serde_json::Value, lag_warning: f64) -> Markup {
    let lag = dr["replication_lag_seconds"].as_f64();
    html! {
        h2 { "Disaster recovery" }
        p #dr-role {
            "Role: " strong { (dr["role"].as_str().unwrap_or("active")) }
            @if let Some(e) = dr["epoch"].as_i64() { " · epoch " (e) }
            @if let Some(t) = dr["timeline"].as_i64() { " · timeline " (t) }
            @if let Some(l) = lag { " · replication lag " (format!("{l:.1}")) " s" }
        }
        @if lag.is_some_and(|l| l > lag_warning) {
            p.error #dr-lag-warning { "Replication lag is above dr.lag_warning (" (lag_warning) " s): a takeover now would lose the newest changes." }
        }
        @if let Some(replicas) = dr["replication"].as_array().filter(|r| !r.is_empty()) {
            table.list #dr-replicas {
                thead { tr { th { "Replica" } th { "Address" } th { "State" } th { "Write lag" } th { "Flush lag" } th { "Replay lag" } } }
                tbody { @for r in replicas { tr {
                    td { (r["name"].as_str().unwrap_or("")) } td { (r["address"].as_str().unwrap_or("")) }
                    td { (r["state"].as_str().unwrap_or("")) }
                    @for k in ["write_lag_seconds", "flush_lag_seconds", "replay_lag_seconds"] {
                        td { (r[k].as_f64().map_or_else(String::new, |s| format!("{s:.2} s"))) }
                    }
                } } }
            }
        }
        @if let Some(events) = dr["events"].as_array().filter(|e| !e.is_empty()) {
            table.list #dr-events {
                thead { tr { th { "When" } th { "Instance" } th { "Event" } th { "Timeline" } th { "WAL" } th { "Epoch" } th { "Detail" } } }
                tbody { @for e in events { tr {
                    td { (e["at"].as_i64().map_or_else(String::new, crate::app::http::views::ts)) }
                    td { (e["instance"].as_str().unwrap_or("")) } td { (e["event"].as_str().unwrap_or("")) }
                    td { (e["timeline"].as_i64().map_or_else(String::new, |t| t.to_string())) }
                    td { (e["wal"].as_str().unwrap_or("")) }
                    td { (e["epoch"].as_i64().map_or_else(String::new, |t| t.to_string())) }
                    td { (e["detail"].as_str().unwrap_or("")) }
                } } }
            }
        }
    }
}

/// The schedule form's fields, filled from `s` when editing.
fn schedule_form(
    templates: &[crate::app::model::Template],
    datasources: &[crate::app::datasource::model::DataSource],
    s: Option<&serde_json::Value>,
) -> Markup {
    let get = |k: &str| {
        s.and_then(|s| s.get(k))
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    };
    let text = |k: &str, default: &str| {
        get(k)
            .as_str()
            .map_or_else(|| default.to_owned(), str::to_owned)
    };
    let recipients = get("recipients")
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let pretty = |v: serde_json::Value, default: &str| {
        if v.is_null() {
            default.to_owned()
        } else {
            serde_json::to_string_pretty(&v).unwrap_or_default()
        }
    };
    let template = text("template", "");
    let misfire = text("misfire", "latest");
    let checked = |k: &str, default: bool| get(k).as_bool().unwrap_or(default);
    let burst = get("burst");
    let burst_text = |k: &str| burst.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    let burst_source = burst_text("datasource");
    let burst_params = burst
        .get("parameters")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    html! {
        div.row {
            label { "Name" input type="text" name="name" required value=(text("name", "")); }
            label { "Template"
                select name="template" { @for t in templates { option value=(t.name) selected[t.name == template] { (t.name) } } }
            }
        }
        div.row {
            label { "Cron (sec min hour day month weekday; seconds optional)" input type="text" name="cron" required value=(text("cron", "0 8 * * MON-FRI")); }
            label { "Time zone (IANA)" input type="text" name="timezone" required value=(text("timezone", "Europe/Berlin")); }
        }
        p #cron-preview .muted {}
        label { "Recipients (comma or newline separated)" textarea name="recipients" rows="2" { (recipients) } }
        div.row {
            label { "Subject ({schedule}, {date}, {time})" input type="text" name="subject" value=(text("subject", "{schedule} — {date}")); }
            label { "Body" input type="text" name="body" value=(text("body", "The report \"{schedule}\" for {date} is attached.")); }
        }
        label { "Parameters (JSON object)" textarea name="parameters" rows="3" spellcheck="false" { (pretty(get("parameters"), "{}")) } }
        label { "Data (JSON, the template's data.json)" textarea name="data" rows="6" spellcheck="false" { (pretty(get("data"), "{}")) } }
        div.row {
            label { "Spread (jitter), e.g. 5m" input type="text" name="jitter" value=(text("jitter", "0s")); }
            label { "After downtime"
                select name="misfire" {
                    option value="latest" selected[misfire == "latest"] { "run the latest missed time" }
                    option value="skip" selected[misfire == "skip"] { "skip missed times" }
                    option value="all" selected[misfire == "all"] { "run every missed time" }
                }
            }
            label { "Misfire window" input type="text" name="misfire_window" value=(text("misfire_window", "1h")); }
        }
        details.burst open[!burst.is_null()] {
            summary { "Burst: one report per row of a query (optional)" }
            p.muted { "Each row is rendered with its own parameters and mailed to its own recipients, once per row key. Leave the data source empty for a single report." }
            div.row {
                label { "Data source"
                    select name="burst_datasource" {
                        option value="" { "(no burst)" }
                        @for ds in datasources { option value=(ds.name) selected[ds.name == burst_source] { (ds.name) " (" (ds.kind.as_str()) ")" } }
                        @if !burst_source.is_empty() && !datasources.iter().any(|ds| ds.name == burst_source) {
                            option value=(burst_source) selected { (burst_source) " (missing)" }
                        }
                    }
                }
                label { "Key column (one report per key)" input type="text" name="burst_key_column" value=(burst_text("key_column")); }
                label { "Recipients column" input type="text" name="burst_recipients_column" value=(burst_text("recipients_column")); }
            }
            label { "Query (SQL, or a path for HTTP sources; :name for parameters)" textarea name="burst_text" rows="4" spellcheck="false" { (burst_text("text")) } }
            label { "Parameters from columns (JSON object: template parameter → column)" textarea name="burst_parameters" rows="2" spellcheck="false" { (pretty(burst_params, "{}")) } }
        }
        div.actions {
            label { input type="checkbox" name="enabled" checked[checked("enabled", true)]; " enabled" }
            label { input type="checkbox" name="hold_for_review" checked[checked("hold_for_review", false)]; " hold for review before delivery" }
        }
    }
}

pub async fn schedules(
    State(state): State<AppState>,
    ConsoleUser(user): ConsoleUser,
) -> PageResult {
    // Schedules carry their recipients and data: editors and admins only, as in the API.
    if user.user.role < UserRole::Editor {
        return Err(forbidden(&user, UserRole::Editor));
    }
    let list = state.schedules.list().await.map_err(|e| fail(e.into()))?;
    let templates = state.templates.list().await.map_err(|e| fail(e.into()))?;
    let sources = state.datasources.list().await.map_err(|e| fail(e.into()))?;
    let editor = user.user.role >= UserRole::Editor;
    let content = html! {
        h1 { "Schedules" }
        table.list {
            thead { tr { th { "Name" } th { "Template" } th { "When" } th { "Next" } th { "Recipients" } th { "State" } } }
            tbody {
                @for s in &list {
                    tr {
                        td { a href={"/schedules/" (s.id)} { (s.spec.name) } }
                        td { (s.spec.template_name) }
                        td { code { (s.spec.cron) } span.muted { " " (s.spec.timezone) } }
                        td.muted { (s.next_fire_at.map(ts).unwrap_or_default()) }
                        td.muted {
                            @if let Some(b) = &s.spec.burst { "per row (burst on " (b.datasource) ")" @if !s.spec.recipients.is_empty() { ", " } }
                            (s.spec.recipients.join(", "))
                        }
                        td { @if s.spec.enabled { span.state.succeeded { "enabled" } } @else { span.state { "paused" } } }
                    }
                }
            }
        }
        @if list.is_empty() { p.muted { "No schedules yet." } }
        @if editor {
            h2 { "New schedule" }
            form #schedule-form .card data-method="POST" data-url="/api/v1/schedules" {
                (schedule_form(&templates, &sources, None))
                div.actions { button type="submit" { "Create" } }
                p.error hidden {}
            }
        }
    };
    Ok(Page {
        title: "Schedules",
        name: "schedules",
        user: Some(&user),
        content,
        data: None,
        wide: false,
    }
    .into_response())
}

pub async fn schedule(
    State(state): State<AppState>,
    ConsoleUser(user): ConsoleUser,
    Path(id): Path<String>,
) -> PageResult {
    if user.user.role < UserRole::Editor {
        return Err(forbidden(&user, UserRole::Editor));
    }
    let s = state.schedules.get(&id).await.map_err(|e| fail(e.into()))?;
    let templates = state.templates.list().await.map_err(|e| fail(e.into()))?;
    let sources = state.datasources.list().await.map_err(|e| fail(e.into()))?;
    let view =
        serde_json::to_value(crate::app::http::schedules::schedule_view(&s)).unwrap_or_default();
    let editor = user.user.role >= UserRole::Editor;
    let content = html! {
        h1 { (s.spec.name) }
        p.muted { "Next: " (s.next_fire_at.map(ts).unwrap_or_else(|| "never (paused)".into())) " · skipped after downtime: " (s.skipped_total) }
        div #schedule .card data-id=(s.id) data-editor=(editor) {
            h2 style="margin-top:0" { "Occurrences" }
            table.list #occurrences {
                thead { tr { th { "Fire time" } th { "State" } th { "Report" } th { "Deliveries" } th {} } }
                tbody {}
            }
            p.error hidden {}
        }
        @if editor {
            h2 { "Edit" }
            form #schedule-form .card data-method="PUT" data-url={"/api/v1/schedules/" (s.id)} {
                (schedule_form(&templates, &sources, Some(&view)))
                div.actions { button type="submit" { "Save" } button #delete-schedule .danger type="button" { "Delete" } }
                p.error hidden {}
            }
        }
    };
    Ok(Page {
        title: &s.spec.name,
        name: "schedule",
        user: Some(&user),
        content,
        data: Some(view),
        wide: false,
    }
    .into_response())
}

pub async fn deliveries(
    State(state): State<AppState>,
    ConsoleUser(user): ConsoleUser,
) -> PageResult {
    if user.user.role < UserRole::Editor {
        return Err(forbidden(&user, UserRole::Editor));
    }
    let mails = state
        .schedules
        .deliveries(None, 200)
        .await
        .map_err(|e| fail(e.into()))?;
    let editor = user.user.role >= UserRole::Editor;
    let content = html! {
        h1 { "Deliveries" }
        p.muted { "Every mail, one row per recipient, newest first. Failed mails stay here until sent again." }
        p.error hidden {}
        table.list {
            thead { tr { th { "Created" } th { "Recipient" } th { "Subject" } th { "State" } th { "Attempts" } th { "Server reply" } th {} } }
            tbody {
                @for m in &mails {
                    tr {
                        td.muted { (ts(m.created_at)) }
                        td { (m.recipient) }
                        td { (m.subject) }
                        td { span class={"state " (match m.state { crate::app::model::MailState::Sent => "succeeded", crate::app::model::MailState::Failed => "failed", _ => "queued" })} { (m.state.as_str()) } }
                        td { (m.attempts) }
                        td.muted { (m.last_reply.clone().unwrap_or_default()) }
                        td { @if editor && matches!(m.state, crate::app::model::MailState::Sent | crate::app::model::MailState::Failed) { button.secondary type="button" data-resend=(m.id) { "Send again" } } }
                    }
                }
            }
        }
    };
    Ok(Page {
        title: "Deliveries",
        name: "deliveries",
        user: Some(&user),
        content,
        data: None,
        wide: false,
    }
    .into_response())
}

pub async fn settings(State(state): State<AppState>, ConsoleUser(user): ConsoleUser) -> PageResult {
    if user.user.role < UserRole::Admin {
        return Err(forbidden(&user, UserRole::Admin));
    }
    let current =
        crate::app::mail::settings(state.store.as_ref(), &state.config.mail, &state.sealer).await;
    let configured = state.config.mail.smtp_url.is_some();
    let content = html! {
        h1 { "Settings" }
        h2 { "Mail" }
        div.card {
            @match &current {
                Ok(Some(s)) => p { "Sending through " code { (s.smtp.host) ":" (s.smtp.port) } " (" (format!("{:?}", s.smtp.tls).to_lowercase()) ") as " code { (s.from) } ", set in the " (s.source) "." },
                Ok(None) => p.error { "No mail server is set: scheduled reports cannot be delivered." },
                Err(e) => p.error { (e.to_string()) },
            }
            @if configured {
                p.muted { "Mail is set in the configuration (mail.smtp_url, mail.from); change it there." }
            } @else {
                form #mail-settings {
                    label { "SMTP URL (smtp://user:password@host:587 for STARTTLS, smtps://…:465 for TLS, ?tls=none for a plain relay)" input type="text" name="smtp_url" required autocomplete="off"; }
                    label { "Sender" input type="text" name="from" required placeholder="Reports <reports@example.com>"; }
                    div.actions { button type="submit" { "Save" } }
                    p.muted { "The password is stored sealed with encryption.key." }
                    p.error hidden {}
                }
            }
        }
    };
    Ok(Page {
        title: "Settings",
        name: "settings",
        user: Some(&user),
        content,
        data: None,
        wide: false,
    }
    .into_response())
}
