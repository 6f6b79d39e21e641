//! The Agents page: what an operator should act on first (the overview's warnings), then each
//! agent's connection, data sources and query figures. Admins create agents (the token is shown
//! once) and revoke them through the JSON API, like personal API tokens. Reading needs no script.

use axum::extract::State;
use axum::response::IntoResponse;
use maud::{Markup, html};

use super::Page;
use super::pages::{PageResult, fail, forbidden};
use crate::app::agents::model::{Agent, Connection, State as AgentState};
use crate::app::agents::service::{LIVE_MS, Overview};
use crate::app::http::auth::ConsoleUser;
use crate::app::http::views::ts;
use crate::app::model::UserRole;
use crate::app::state::AppState;

/// `/agents`: editors (who write queries against agent-served sources) and admins, as in the API.
pub async fn agents(State(state): State<AppState>, ConsoleUser(user): ConsoleUser) -> PageResult {
    if user.user.role < UserRole::Editor {
        return Err(forbidden(&user, UserRole::Editor));
    }
    let overview = state.agents.overview().await.map_err(|e| fail(e.into()))?;
    let admin = user.user.role >= UserRole::Admin;
    Ok(Page {
        title: "Agents",
        name: "agents",
        user: Some(&user),
        content: content(&overview, admin),
        data: None,
        wide: true,
    }
    .into_response())
}

fn content(overview: &Overview, admin: bool) -> Markup {
    html! {
        h1 { "Agents" }
        p.muted { "Agents run next to databases that this server cannot reach and connect out to it. Reload the page for the current state." }
        @if !overview.warnings.is_empty() {
            div #agent-warnings { @for w in &overview.warnings { p.error { "⚠ " (w) } } }
        }
        p #agent-error .error hidden {}
        @if overview.agents.is_empty() { (empty(admin)) } @else { (table(&overview.agents, admin)) }
        @if admin { (new_agent()) }
    }
}

fn empty(admin: bool) -> Markup {
    html! {
        div #agents-empty .card {
            p { "No agents yet." }
            p.muted {
                "An agent is " code { "quire agent" } " running on a host next to a database behind a firewall. "
                "It connects out to Quire over HTTPS (nothing connects in to it), keeps the database's credentials on its own host "
                "and runs the queries of data sources of kind " code { "agent" } ". "
                "Run two or more for one data source, so that reports keep working while one is down."
            }
            p.muted {
                @if admin { "Create one below" } @else { "An admin creates one here" }
                ", put its token in the agent host's " code { "quire.toml" } " and start " code { "quire agent" }
                ". The \"Agents\" section of the README walks through a deployment with two agents."
            }
        }
    }
}

fn table(agents: &[Agent], admin: bool) -> Markup {
    html! {
        table.list #agents {
            thead { tr {
                th { "Name" } th { "State" } th { "Host" } th { "Version" } th { "Instance" } th { "Data sources" }
                th { "Queries" } th { "Errors" } th { "p50 / p99 ms" } th { "In flight" } th { "Last error" } th { "Last seen" }
                @if admin { th {} }
            } }
            tbody { @for a in agents { (row(a, admin)) } }
        }
    }
}

fn row(a: &Agent, admin: bool) -> Markup {
    let c = a.connection.as_ref();
    html! {
        tr data-agent=(a.name) {
            td { (a.name) }
            td { (state(a)) }
            td { @if let Some(c) = c { (c.reported_name) div.muted { (c.address) } } }
            td { @if let Some(c) = c { (c.version) span.muted { " · protocol " (c.protocol) } } }
            td.muted { (a.instance(LIVE_MS).unwrap_or_default()) }
            td { @if let Some(c) = c { (served(c)) } }
            td { (a.queries) }
            td { (a.errors) }
            td { (latency(a)) }
            td { (a.in_flight) }
            td { @if let Some(e) = &a.last_error { span.error { (e) } } }
            td.muted { (c.and_then(|c| c.last_seen).map(ts).unwrap_or_default()) }
            @if admin { td { button.danger type="button" data-revoke=(a.id) data-name=(a.name) { "Revoke" } } }
        }
    }
}

/// The badge says the state; when it began follows as plain text, so the badge stays short.
fn state(a: &Agent) -> Markup {
    let (class, label) = match a.state(LIVE_MS) {
        AgentState::Connected => ("state succeeded", "connected"),
        AgentState::Disconnected => ("state failed", "disconnected"),
        AgentState::Never => ("state", "never connected"),
    };
    html! {
        span class=(class) { (label) }
        @if let Some(since) = a.since(LIVE_MS) { span.muted { " since " (ts(since)) } }
    }
}

/// The data sources the agent reported, each with what its connection test learnt.
fn served(c: &Connection) -> Markup {
    html! {
        @for d in &c.datasources {
            div {
                (d.name) span.muted { " (" (d.kind) ")" }
                @if let Some(e) = &d.error { " " span.error { (e) } }
                @else if let Some(v) = &d.server_version { " " span.muted { (v) } }
            }
        }
    }
}

fn latency(a: &Agent) -> String {
    let ms = |us: i64| format!("{:.1}", us as f64 / 1000.0);
    match (a.p50_us, a.p99_us) {
        (Some(p50), Some(p99)) => format!("{} / {}", ms(p50), ms(p99)),
        _ => String::new(),
    }
}

fn new_agent() -> Markup {
    html! {
        h2 { "New agent" }
        form #new-agent .card {
            label { "Name (letters, digits, '-', '_' or '.'; e.g. the agent host's name)" input type="text" name="name" required maxlength="100"; }
            div.actions { button type="submit" { "Create" } }
            p #new-agent-error .error hidden {}
            div #agent-created .notice hidden {
                p { "Copy the token now; it is not shown again:" }
                code #agent-token .token {}
                p {
                    "Put it in " code { "token" } " under " code { "[agent]" } " in quire.toml on the agent host (or in the file named by "
                    code { "QUIRE_AGENT__TOKEN_FILE" } "), then start " code { "quire agent" } "."
                }
                a href="/agents" { "Done: show the agent in the list" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::protocol::Served;

    fn agent(name: &str, connection: Option<Connection>) -> Agent {
        Agent {
            id: format!("id-{name}"),
            name: name.into(),
            created_at: 1_700_000_000_000,
            created_by: Some("admin@example.com".into()),
            connection,
            silent_ms: Some(1_000),
            in_flight: 2,
            queries: 1234,
            errors: 5,
            p50_us: Some(12_500),
            p99_us: Some(80_000),
            last_error: Some("relation \"<script>\" does not exist".into()),
        }
    }

    fn connection() -> Connection {
        Connection {
            session: "s1".into(),
            agent_id: "process-1".into(),
            reported_name: "db-host-1".into(),
            version: "1.2.3".into(),
            protocol: 1,
            instance_id: Some("instance-a".into()),
            address: "10.0.0.7".into(),
            connected_at: 1_700_000_100_000,
            disconnected_at: None,
            last_seen: Some(1_700_000_200_000),
            datasources: vec![
                Served {
                    name: "sales".into(),
                    kind: "postgres".into(),
                    server_version: Some("PostgreSQL 16.2".into()),
                    error: None,
                },
                Served {
                    name: "stock".into(),
                    kind: "mysql".into(),
                    server_version: None,
                    error: Some("connection refused".into()),
                },
            ],
        }
    }

    fn render(agents: Vec<Agent>, warnings: &[&str], admin: bool) -> String {
        let warnings = warnings.iter().map(|w| w.to_string()).collect();
        content(&Overview { agents, warnings }, admin).into_string()
    }

    #[test]
    fn without_agents_the_page_explains_them() {
        let admin = render(vec![], &[], true);
        assert!(admin.contains("id=\"agents-empty\"") && admin.contains("README"));
        assert!(admin.contains("id=\"new-agent\"") && !admin.contains("id=\"agents\""));
        let editor = render(vec![], &[], false);
        assert!(editor.contains("id=\"agents-empty\"") && !editor.contains("new-agent"));
    }

    #[test]
    fn each_agent_shows_its_connection_sources_and_figures() {
        let never = agent("spare", None);
        let html = render(
            vec![agent("db-1", Some(connection())), never],
            &["data source sales: only agent db-1 serves \"sales\" (no redundancy)"],
            true,
        );
        assert!(html.contains("no redundancy"), "{html}");
        for shown in [
            "data-agent=\"db-1\"",
            "class=\"state succeeded\">connected</span>",
            "db-host-1",
            "1.2.3",
            "protocol 1",
            "instance-a",
            "PostgreSQL 16.2",
            "connection refused",
            "12.5 / 80.0",
            "1234",
            "never connected",
            "data-revoke=\"id-db-1\"",
            "data-revoke=\"id-spare\"",
        ] {
            assert!(html.contains(shown), "{shown} missing in {html}");
        }
        assert!(!html.contains("<script>"), "last error not escaped: {html}");
    }

    #[test]
    fn only_admins_revoke_or_create() {
        let html = render(vec![agent("db-1", Some(connection()))], &[], false);
        assert!(html.contains("data-agent=\"db-1\""));
        assert!(!html.contains("data-revoke") && !html.contains("new-agent"));
    }

    #[test]
    fn a_closed_connection_is_disconnected_since_it_closed() {
        let mut c = connection();
        c.instance_id = None;
        c.disconnected_at = Some(1_700_000_300_000);
        let html = render(vec![agent("db-1", Some(c))], &[], true);
        assert!(
            html.contains("class=\"state failed\">disconnected</span>"),
            "{html}"
        );
        assert!(html.contains(&ts(1_700_000_300_000)), "{html}");
        assert!(!html.contains("instance-a"), "{html}");
    }
}
