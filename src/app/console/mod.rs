//! The web console: server-rendered pages (maud) with one small hand-written script. Assets are
//! embedded in the binary and served under content-addressed names, so a browser never mixes a
//! page of one version with the script of another.

mod agents;
mod assets;
mod next;
mod pages;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::auth::{Principal, Via};
use super::model::UserRole;
use super::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::home))
        .route("/login", get(pages::login))
        .route("/templates", get(pages::templates))
        .route("/templates/{id}", get(pages::editor))
        .route("/render", get(pages::render))
        .route("/jobs", get(pages::jobs))
        .route("/jobs/{id}", get(pages::job))
        .route("/datasources", get(pages::datasources))
        .route("/agents", get(agents::agents))
        .route("/fonts", get(pages::fonts))
        .route("/tokens", get(pages::tokens))
        .route("/users", get(pages::users))
        .route("/cluster", get(pages::cluster))
        .route("/schedules", get(pages::schedules))
        .route("/schedules/{id}", get(pages::schedule))
        .route("/deliveries", get(pages::deliveries))
        .route("/settings", get(pages::settings))
        .route("/assets/{file}", get(assets::serve))
}

/// Scripts only from us; inline styles are allowed because Typst's SVG previews carry them.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'";

const NAV: &[(&str, &str, UserRole)] = &[
    ("/templates", "Templates", UserRole::Viewer),
    ("/render", "Render", UserRole::Viewer),
    ("/jobs", "Jobs", UserRole::Viewer),
    ("/schedules", "Schedules", UserRole::Editor),
    ("/deliveries", "Deliveries", UserRole::Editor),
    ("/datasources", "Data sources", UserRole::Editor),
    ("/agents", "Agents", UserRole::Editor),
    ("/fonts", "Fonts", UserRole::Viewer),
    ("/tokens", "API tokens", UserRole::Viewer),
    ("/users", "Users", UserRole::Admin),
    ("/cluster", "HA Instances", UserRole::Admin),
    ("/settings", "Settings", UserRole::Admin),
];

/// A whole page: header with navigation, the content, the page's data for the script.
pub struct Page<'a> {
    pub title: &'a str,
    /// `data-page`, which selects the page's behaviour in app.js.
    pub name: &'a str,
    pub user: Option<&'a Principal>,
    pub content: Markup,
    pub data: Option<serde_json::Value>,
    pub wide: bool,
}

impl IntoResponse for Page<'_> {
    fn into_response(self) -> Response {
        let csrf = self.user.and_then(|p| match &p.via {
            Via::Session { csrf, .. } => Some(csrf.as_str()),
            Via::Token { .. } => None,
        });
        let data = self.data.as_ref().map(script_json);
        let markup = html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    @if let Some(token) = csrf { meta name="csrf-token" content=(token); }
                    title { (self.title) " · Quire" }
                    link rel="stylesheet" href=(assets::path("app.css"));
                    script src=(assets::path("app.js")) defer {}
                }
                body data-page=(self.name) {
                    @if let Some(p) = self.user { (header_bar(p, self.name)) }
                    main class=[self.wide.then_some("wide")] { (self.content) }
                    @if let Some(d) = data {
                        script type="application/json" id="page-data" { (PreEscaped(d)) }
                    }
                }
            }
        };
        let mut resp = Html(markup.into_string()).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}

/// `value` as JSON that can sit inside a `<script>` element. The HTML parser ends the element at
/// `</script`, and `<!--` followed by `<script` moves that end further on, whatever the JSON
/// means; sample data and template names are user input, so one template could break every page
/// that lists it. `<`, `>` and `&` only ever occur inside JSON strings, where `\u003c` and so on
/// mean the same; U+2028 and U+2029 are escaped too, for anything that reads the text as
/// JavaScript rather than JSON.
fn script_json(value: &serde_json::Value) -> String {
    let json = value.to_string();
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

fn header_bar(p: &Principal, active: &str) -> Markup {
    html! {
        header.top {
            a.brand href="/" { "Quire" }
            nav {
                @for (href, label, role) in NAV {
                    @if p.user.role >= *role {
                        a href=(href) class=[(href.trim_start_matches('/') == active || (active == "editor" && *href == "/templates") || (active == "job" && *href == "/jobs") || (active == "schedule" && *href == "/schedules")).then_some("active")] { (label) }
                    }
                }
            }
            div.who {
                span { (p.user.email) " · " (p.user.role.as_str()) }
                button.secondary type="button" data-action="logout" { "Sign out" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn page_json_has_no_markup_and_parses_back() {
        let value = json!({
            "comment": "<!--<script>",
            "close": "</script>",
            "both": "<!--<script></script>-->",
            "entities": "Fish & Chips > Pie &amp;",
            "separators": "line\u{2028}paragraph\u{2029}end",
            "<key>": ["</SCRIPT >", 1, null],
        });
        let text = script_json(&value);
        for bad in ['<', '>', '&', '\u{2028}', '\u{2029}'] {
            assert!(!text.contains(bad), "{bad:?} in {text}");
        }
        let back: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(back, value);
    }
}
