//! The web console in a real browser: a new user signs in, renders the bundled invoice, watches
//! the progress bar reach 100 % and downloads a correct PDF; and the console holds against hostile
//! input: sign-in links that point elsewhere, sample data that looks like markup, and templates
//! whose links run script.

use std::time::Duration;

use fantoccini::{Client, Locator};
use serde_json::{Value, json};

use crate::support::app::{
    AppOptions, Instance, ROOT_EMAIL, ROOT_PASSWORD, TestClient, USER_PASSWORD, pdf_text,
};
use crate::support::browser::Browser;
use crate::support::{free_port, wait_for};

/// Fills in and sends the sign-in form the browser is showing, as root.
pub(crate) async fn sign_in(c: &Client) {
    sign_in_as(c, ROOT_EMAIL, ROOT_PASSWORD).await;
}

/// Fills in and sends the sign-in form the browser is showing.
async fn sign_in_as(c: &Client, email: &str, password: &str) {
    c.find(Locator::Css("input[name=email]"))
        .await
        .unwrap()
        .send_keys(email)
        .await
        .unwrap();
    c.find(Locator::Css("input[name=password]"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    c.find(Locator::Css("#login-form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Where the browser is once it has left the sign-in page.
async fn page_after_sign_in(c: &Client) -> url::Url {
    wait_for(
        "the browser to leave the sign-in page",
        Duration::from_secs(20),
        move || async move {
            let url = c.current_url().await.ok()?;
            (url.path() != "/login").then_some(url)
        },
    )
    .await
}

/// Asserts that `url` is a page of the console at `app`, not of another origin.
fn assert_on_console(url: &url::Url, app: &Instance, after: &str) {
    assert!(
        url.scheme() == "http"
            && url.host_str() == Some("127.0.0.1")
            && url.port() == Some(app.port),
        "{after}: the browser left the console for {url}"
    );
}

#[tokio::test]
async fn sign_in_render_the_example_and_download_the_pdf() {
    let app = Instance::start(AppOptions::default()).await;
    let downloads = tempfile::tempdir().unwrap();
    let browser = Browser::start(downloads.path(), &app.data_dir).await;
    let c = &browser.client;

    c.goto(&format!("{}/", app.url)).await.unwrap();
    let url = c.current_url().await.unwrap();
    assert_eq!(
        url.path(),
        "/login",
        "signed-out visitors land on the sign-in page"
    );
    sign_in(c).await;
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("table.list"))
        .await
        .unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/templates");

    c.find(Locator::Css("a[href='/render?template=invoice']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let prefilled = prefilled_data(c).await;
    assert!(
        prefilled.contains("Northwind Traders GmbH"),
        "the sample data is filled in: {prefilled}"
    );
    c.find(Locator::Css("#render-button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    let download = c
        .wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::Css("#download"))
        .await
        .unwrap();
    let bar = c
        .find(Locator::Css("#render-status .progress"))
        .await
        .unwrap();
    assert_eq!(
        bar.attr("data-progress").await.unwrap().as_deref(),
        Some("100")
    );
    let label = c
        .find(Locator::Css("#render-status .progress .label"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(label.contains("100%"), "{label}");
    download.click().await.unwrap();

    let pdf = wait_for("the PDF download", Duration::from_secs(30), || async {
        let entries = std::fs::read_dir(downloads.path()).ok()?;
        entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "pdf"))
            .and_then(|p| std::fs::read(p).ok())
            .filter(|b| {
                b.starts_with(b"%PDF") && (b.ends_with(b"%%EOF\n") || b.ends_with(b"%%EOF"))
            })
    })
    .await;
    let text = pdf_text(&pdf);
    assert!(
        text.contains("Northwind Traders GmbH") && text.contains("EUR 3,216.60"),
        "{text}"
    );
    c.clone().close().await.unwrap();
}

#[tokio::test]
async fn sign_in_never_redirects_to_another_origin() {
    let app = Instance::start(AppOptions::default()).await;
    let downloads = tempfile::tempdir().unwrap();
    let browser = Browser::start(downloads.path(), &app.data_dir).await;
    let c = &browser.client;
    let elsewhere = format!("127.0.0.1:{}", free_port());

    // Signing in: the script follows `next`.
    let attack = format!("/.//{elsewhere}/pwned");
    c.goto(&format!("{}/login?next={attack}", app.url))
        .await
        .unwrap();
    sign_in(c).await;
    let landed = page_after_sign_in(c).await;
    assert_on_console(&landed, &app, &attack);
    assert_eq!(landed.path(), "/templates", "a refused next goes home");

    // Already signed in: the server follows `next` itself.
    for attack in [
        format!("/%2e//{elsewhere}/pwned"),
        format!("/a/..//{elsewhere}/pwned"),
        format!("/.//{elsewhere}/pwned"),
    ] {
        c.goto(&format!("{}/login?next={attack}", app.url))
            .await
            .unwrap();
        let landed = c.current_url().await.unwrap();
        assert_on_console(&landed, &app, &attack);
        assert_eq!(landed.path(), "/templates", "{attack}");
    }

    // A page of this site is still where sign-in leads.
    c.goto(&format!("{}/login?next=%2Fjobs%3Fx%3D1", app.url))
        .await
        .unwrap();
    let landed = c.current_url().await.unwrap();
    assert_on_console(&landed, &app, "/jobs?x=1");
    assert_eq!((landed.path(), landed.query()), ("/jobs", Some("x=1")));
    c.clone().close().await.unwrap();
}

/// Sample data that ends or re-opens a script element if embedded carelessly in a page.
fn markup_like_sample_data() -> Value {
    json!({
        "comment": "<!--<script>",
        "close": "</script>",
        "both": "<!--<script></script>-->",
        "entities": "Fish & Chips > Pie &amp;",
        "separators": "line\u{2028}paragraph\u{2029}end",
        "<key>": "</SCRIPT >",
    })
}

/// Saves a template through the API; returns its id.
async fn save_template(client: &TestClient, name: &str, main: &str, sample: &Value) -> String {
    let body = json!({"name": name, "files": {"main.typ": main}, "sample_data": sample});
    let r = client.post("/api/v1/templates", &body).await;
    let status = r.status();
    let body: Value = r.json().await.expect("json");
    assert_eq!(status, 201, "create template {name}: {body}");
    body["template"]["id"]
        .as_str()
        .expect("template id")
        .to_owned()
}

/// The page's embedded data, cut out of the HTML as a browser's parser would, raw and parsed.
async fn page_data(client: &TestClient, path: &str) -> (String, Value) {
    let r = client.get(path).await;
    assert_eq!(r.status(), 200, "GET {path}");
    let html = r.text().await.expect("html");
    let open = r#"<script type="application/json" id="page-data">"#;
    let start = html
        .find(open)
        .unwrap_or_else(|| panic!("no page data in {path}: {html}"))
        + open.len();
    let len = html[start..]
        .find("</script>")
        .unwrap_or_else(|| panic!("page data of {path} never ends"));
    let raw = html[start..start + len].to_owned();
    let parsed = serde_json::from_str(&raw)
        .unwrap_or_else(|e| panic!("page data of {path} is not JSON ({e}): {raw}"));
    (raw, parsed)
}

#[tokio::test]
async fn page_data_survives_markup_in_sample_data() {
    let app = Instance::start(AppOptions::default()).await;
    let client = app.client().await;
    let sample = markup_like_sample_data();
    let id = save_template(&client, "markup", "= Markup\n", &sample).await;

    let (raw, editor) = page_data(&client, &format!("/templates/{id}")).await;
    // No `<` at all: `<!--` and `<script` inside a script element change where the browser
    // ends it, even when the first `</script>` is escaped.
    assert!(!raw.contains(['<', '>', '&']), "editor page data: {raw}");
    assert_eq!(editor["version"]["sample_data"], sample);

    let (raw, render) = page_data(&client, "/render").await;
    assert!(!raw.contains(['<', '>', '&']), "render page data: {raw}");
    let listed = render["templates"]
        .as_array()
        .expect("templates")
        .iter()
        .find(|t| t["name"] == "markup")
        .expect("the template is listed");
    assert_eq!(listed["sample_data"], sample);
}

#[tokio::test]
async fn editor_preview_keeps_only_safe_links() {
    let app = Instance::start(AppOptions::default()).await;
    let client = app.client().await;
    let main = "#link(\"https://example.com/ok\")[safe]\n\n\
                #link(\"javascript:alert(1)\")[script]\n\n\
                #link(\"JavaScript:alert(2)\")[script again]\n\n\
                #link(\"mailto:someone@example.com\")[mail]\n";
    let sample = markup_like_sample_data();
    let id = save_template(&client, "links", main, &sample).await;
    let downloads = tempfile::tempdir().unwrap();
    let browser = Browser::start(downloads.path(), &app.data_dir).await;
    let c = &browser.client;

    c.goto(&format!(
        "{}/login?next=%2Frender%3Ftemplate%3Dlinks",
        app.url
    ))
    .await
    .unwrap();
    sign_in(c).await;
    assert_eq!(page_after_sign_in(c).await.path(), "/render");
    // The page's script still reads its data: markup in sample data breaks nothing.
    let prefilled = prefilled_data(c).await;
    assert!(
        prefilled.contains("<!--<script>") && prefilled.contains("</script>"),
        "the sample data is filled in: {prefilled}"
    );

    c.goto(&format!("{}/templates/{id}", app.url))
        .await
        .unwrap();
    c.wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::Css("#preview svg"))
        .await
        .unwrap();
    let script = r##"
        const hrefs = [];
        for (const el of document.querySelectorAll("#preview *"))
            for (const a of el.attributes) if (a.localName === "href") hrefs.push(a.value);
        return { hrefs, html: document.querySelector("#preview").innerHTML };
    "##;
    let found = c.execute(script, vec![]).await.unwrap();
    let hrefs: Vec<String> = serde_json::from_value(found["hrefs"].clone()).unwrap();
    let html = found["html"].as_str().unwrap_or_default().to_lowercase();
    assert!(
        !html.contains("javascript:"),
        "a script link survived the preview: {hrefs:?}"
    );
    assert!(
        hrefs.iter().any(|h| h == "https://example.com/ok"),
        "the https link stays: {hrefs:?}"
    );
    assert!(
        hrefs.iter().any(|h| h == "mailto:someone@example.com"),
        "the mail link stays: {hrefs:?}"
    );
    c.clone().close().await.unwrap();
}

/// The render page's data box, once the page's script has filled it in.
async fn prefilled_data(c: &Client) -> String {
    let data = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("textarea[name=data]"))
        .await
        .unwrap();
    data.prop("value").await.unwrap().unwrap_or_default()
}

#[tokio::test]
async fn an_admin_adds_and_tests_a_data_source_in_the_console() {
    let app = Instance::start(AppOptions::default()).await;
    // The data source: an (empty) SQLite database file.
    let db = app.data_dir.join("reports-source.db");
    std::fs::write(&db, b"").unwrap();
    let downloads = tempfile::tempdir().unwrap();
    let browser = Browser::start(downloads.path(), &app.data_dir).await;
    let c = &browser.client;
    c.goto(&format!("{}/login?next=/datasources", app.url))
        .await
        .unwrap();
    sign_in(c).await;
    let form = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#new-datasource"))
        .await
        .unwrap();
    let name = form.find(Locator::Css("input[name=name]")).await.unwrap();
    name.send_keys("local").await.unwrap();
    let kind = form.find(Locator::Css("select[name=kind]")).await.unwrap();
    kind.select_by_value("sqlite").await.unwrap();
    let settings = form
        .find(Locator::Css("textarea[name=settings]"))
        .await
        .unwrap();
    settings.clear().await.unwrap();
    let path = json!({"path": db.display().to_string()}).to_string();
    settings.send_keys(&path).await.unwrap();
    form.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let test = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("tr[data-datasource=local] button[data-test]"))
        .await
        .unwrap();
    test.click().await.unwrap();
    let outcome = wait_for(
        "the test's outcome on the page",
        Duration::from_secs(20),
        || async {
            let text = c
                .find(Locator::Css("tr[data-datasource=local]"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (text.contains("succeeded") || text.contains("failed")).then_some(text)
        },
    )
    .await;
    assert!(
        outcome.contains("local") && outcome.contains("succeeded"),
        "{outcome}"
    );
}

/// A SQLite file with a `sales` table of two rows, for data sources.
async fn sqlite_sales(file: &std::path::Path) {
    use sqlx::{ConnectOptions, Connection};
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(file)
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE sales (region TEXT, amount REAL);
         INSERT INTO sales VALUES ('east', 5.5), ('west', 6.5);",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn an_editor_adds_runs_and_saves_a_query_in_the_template_editor() {
    let app = Instance::start(AppOptions::default()).await;
    let admin = app.client().await;
    let db = app.data_dir.join("sales-source.db");
    sqlite_sales(&db).await;
    let r = admin
        .post(
            "/api/v1/datasources",
            &json!({"name": "local", "kind": "sqlite", "settings": {"path": db.display().to_string()}}),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let id = save_template(&admin, "regional sales", "= Sales\n", &json!({})).await;
    admin.add_user("editor@test.local", "editor").await;

    let downloads = tempfile::tempdir().unwrap();
    let browser = Browser::start(downloads.path(), &app.data_dir).await;
    let c = &browser.client;
    c.goto(&format!("{}/login?next=/templates/{id}", app.url))
        .await
        .unwrap();
    sign_in_as(c, "editor@test.local", USER_PASSWORD).await;

    // A new query on the SQLite source.
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#add-query"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let card = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#queries .query"))
        .await
        .unwrap();
    let name = card
        .find(Locator::Css("input[name=query-name]"))
        .await
        .unwrap();
    name.clear().await.unwrap();
    name.send_keys("sales").await.unwrap();
    card.find(Locator::Css("select[name=query-datasource]"))
        .await
        .unwrap()
        .select_by_value("local")
        .await
        .unwrap();
    card.find(Locator::Css("textarea[name=query-text]"))
        .await
        .unwrap()
        .send_keys("select region, amount from sales order by region")
        .await
        .unwrap();

    // Run: the rows show in a table, with the count and the time.
    card.find(Locator::Css("button[data-action=run-query]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let table = wait_for(
        "the query's rows on the page",
        Duration::from_secs(30),
        || async {
            let text = c
                .find(Locator::Css("#queries .query-result table"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            text.contains("west").then_some(text)
        },
    )
    .await;
    assert!(
        table.contains("region") && table.contains("amount") && table.contains("east"),
        "{table}"
    );
    let summary = c
        .find(Locator::Css("#queries .query-summary"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        summary.contains("2 rows") && summary.contains("ms"),
        "{summary}"
    );

    // Save: the new version carries the query.
    c.find(Locator::Css("#save"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let version = wait_for(
        "the saved version with the query",
        Duration::from_secs(30),
        || async {
            let t = admin.get_json(&format!("/api/v1/templates/{id}")).await;
            (t["version"]["version"] == 2).then(|| t["version"].clone())
        },
    )
    .await;
    assert_eq!(
        version["queries"],
        json!([{"name": "sales", "datasource": "local", "text": "select region, amount from sales order by region"}]),
        "{version}"
    );

    // The data source lists the template as a user of it, linked to its editor.
    c.goto(&format!("{}/datasources", app.url)).await.unwrap();
    let used_by = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("tr[data-datasource=local] td.used-by a"))
        .await
        .unwrap();
    assert_eq!(used_by.text().await.unwrap(), "regional sales");
    let href = used_by.attr("href").await.unwrap().unwrap_or_default();
    assert_eq!(href, format!("/templates/{id}"));
    c.clone().close().await.unwrap();
}

#[tokio::test]
async fn an_admin_creates_watches_and_revokes_an_agent_in_the_console() {
    use crate::support::agent::Agent;
    let app = Instance::start(AppOptions::default()).await;
    let db = app.data_dir.join("agent-sales.db");
    sqlite_sales(&db).await;
    let downloads = tempfile::tempdir().unwrap();
    let browser = Browser::start(downloads.path(), &app.data_dir).await;
    let c = &browser.client;
    c.goto(&format!("{}/login?next=/agents", app.url))
        .await
        .unwrap();
    sign_in(c).await;
    let wait = |css: &'static str| async move {
        c.wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
    };
    wait("#agents-empty").await;
    let form = wait("#new-agent").await;
    let name = form.find(Locator::Css("input[name=name]")).await.unwrap();
    name.send_keys("branch-office").await.unwrap();
    form.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let token = wait_for("the token, shown once", Duration::from_secs(20), || async {
        let t = c
            .find(Locator::Css("#agent-token"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        t.starts_with("qag_").then_some(t)
    })
    .await;
    let source = format!(
        "[[agent.datasources]]\nname = \"sales\"\nkind = \"sqlite\"\npath = \"{}\"\n",
        db.display()
    );
    let agent = Agent::start("branch-office", &app.url, &token, &source);
    let row = wait_for(
        "the agent's row to say connected",
        Duration::from_secs(20),
        || async {
            c.goto(&format!("{}/agents", app.url)).await.ok()?;
            let text = c
                .find(Locator::Css("#agents tr[data-agent=branch-office]"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            text.contains("connected since").then_some(text)
        },
    )
    .await;
    assert!(row.contains("sales") && row.contains("sqlite"), "{row}");
    // Revoke, confirming the dialog: the row goes and the agent loses its connection.
    c.find(Locator::Css(
        "#agents tr[data-agent=branch-office] button[data-revoke]",
    ))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    c.accept_alert().await.unwrap();
    wait_for("the row to go", Duration::from_secs(20), || async {
        let rows = c
            .find_all(Locator::Css("#agents tr[data-agent=branch-office]"))
            .await
            .ok()?;
        rows.is_empty().then_some(())
    })
    .await;
    wait_for(
        "the agent to be disconnected",
        Duration::from_secs(5),
        || async { (agent.status().0 == 1).then_some(()) },
    )
    .await;
}
