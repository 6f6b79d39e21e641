//! Rendering through the API: the bundled example, synchronous renders, compile errors with
//! positions, limits, and templates that try to take the instance down.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::app::{AppOptions, Instance, invoice_data, pdf_text};

#[tokio::test]
async fn the_example_invoice_renders_to_a_correct_pdf() {
    let app = Instance::start(AppOptions::default()).await;
    let api = app.client().await.token_client("t").await;
    let job = api.render("invoice", invoice_data()).await;
    assert_eq!(job["state"], "queued");
    let id = job["id"].as_str().unwrap();
    let done = api.wait_job(id, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["pages"], 1);
    let pdf = api.pdf(id).await;
    assert!(pdf.starts_with(b"%PDF-"));
    let text = pdf_text(&pdf);
    assert!(text.contains("Northwind Traders GmbH"), "{text}");
    assert!(text.contains("EUR 3,216.60"), "{text}");
    // Parameters reach the template as sys.inputs.
    let r = api.post("/api/v1/render", &json!({"template": "invoice", "data": invoice_data(), "parameters": {"title": "Proforma"}})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/pdf");
    let text = pdf_text(&r.bytes().await.unwrap());
    assert!(text.contains("Proforma"), "{text}");
}

#[tokio::test]
async fn the_listing_example_spans_pages() {
    let app = Instance::start(AppOptions::default()).await;
    let api = app.client().await.token_client("t").await;
    let t = api.get_json("/api/v1/templates/listing").await;
    let sample = t["version"]["sample_data"].clone();
    let r = api
        .post(
            "/api/v1/render",
            &json!({"template": "listing", "data": sample, "parameters": {"status": "paid"}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let pages: u32 = r.headers()["x-quire-pages"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(pages >= 2, "{pages}");
    let bad = api
        .post(
            "/api/v1/render",
            &json!({"template": "listing", "data": sample, "parameters": {"status": "lost"}}),
        )
        .await;
    assert_eq!(bad.status(), 422);
    assert_eq!(
        bad.json::<Value>().await.unwrap()["field"],
        "parameters.status"
    );
}

#[tokio::test]
async fn a_broken_template_gets_422_with_line_and_column() {
    let app = Instance::start(AppOptions::default()).await;
    let api = app.client().await.token_client("t").await;
    api.create_template(
        "broken",
        json!({"main.typ": "= Title\nSome text\n#let x = (1 + )\n"}),
    )
    .await;
    let r = api
        .post("/api/v1/render", &json!({"template": "broken"}))
        .await;
    assert_eq!(r.status(), 422);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["line"], 3, "{p}");
    assert_eq!(p["column"], 14, "{p}");
    assert_eq!(p["file"], "main.typ");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("expected expression"),
        "{p}"
    );
    // As a job, the same error ends the job with its diagnostics.
    let job = api.render("broken", json!({})).await;
    let done = api
        .wait_job(job["id"].as_str().unwrap(), Duration::from_secs(30))
        .await;
    assert_eq!(done["state"], "failed");
    assert_eq!(done["error"]["kind"], "compile");
    assert_eq!(done["error"]["diagnostics"][0]["line"], 3);
}

#[tokio::test]
async fn bad_input_gets_clear_problems() {
    let app =
        Instance::start(AppOptions::default().env("QUIRE_RENDER__MAX_DATA_SIZE", "64KiB")).await;
    let api = app.client().await.token_client("t").await;
    let big = "x".repeat(100 * 1024);
    let r = api
        .post(
            "/api/v1/renders",
            &json!({"template": "invoice", "data": {"blob": big}}),
        )
        .await;
    assert_eq!(r.status(), 413);
    let p: Value = r.json().await.unwrap();
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("render.max_data_size"),
        "{p}"
    );
    let r = api
        .post(
            "/api/v1/renders",
            &json!({"template": "invoice", "data": {"blob": "x".repeat(65 * 1024)}}),
        )
        .await;
    assert_eq!(r.status(), 413);
    assert_eq!(r.json::<Value>().await.unwrap()["field"], "data");
    let r = api
        .post("/api/v1/renders", &json!({"template": "nope"}))
        .await;
    assert_eq!(r.status(), 422);
    assert_eq!(r.json::<Value>().await.unwrap()["field"], "template");
    let r = api.post("/api/v1/renders", &json!({"template": 5})).await;
    assert_eq!(r.status(), 422);
    assert_eq!(r.json::<Value>().await.unwrap()["field"], "template");
    let r = api
        .request(reqwest::Method::POST, "/api/v1/renders")
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = api
        .post(
            "/api/v1/templates",
            &json!({"name": "evil", "files": {"../main.typ": "x"}}),
        )
        .await;
    assert_eq!(r.status(), 422);
    assert_eq!(
        r.json::<Value>().await.unwrap()["field"],
        "files.../main.typ"
    );
    // Nothing half-made: the refused template does not exist.
    assert_eq!(api.get("/api/v1/templates/evil").await.status(), 404);
}

#[tokio::test]
async fn runaway_templates_fail_their_job_and_the_instance_keeps_serving() {
    let app = Instance::start(
        AppOptions::default()
            // Long enough that the memory hog reaches its limit first even on a loaded machine.
            .env("QUIRE_RENDER__TIMEOUT", "5s")
            .env("QUIRE_RENDER__MEMORY_LIMIT", "256MiB"),
    )
    .await;
    let api = app.client().await.token_client("t").await;
    api.create_template(
        "spin",
        json!({"main.typ": "#for i in range(100000) { for j in range(100000) { } }\nnever"}),
    )
    .await;
    api.create_template("hog", json!({"main.typ": "#let s = \"x\" * 50000000\n#let a = range(20).map(i => s + str(i))\n#a.len()"})).await;
    let spin = api.render("spin", json!({})).await;
    let hog = api.render("hog", json!({})).await;
    // While the workers fight, the instance answers.
    let ready = reqwest::get(format!("{}/readyz", app.url)).await.unwrap();
    assert_eq!(ready.status(), 200);
    let spin = api
        .wait_job(spin["id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    assert_eq!(spin["state"], "failed");
    assert_eq!(spin["error"]["kind"], "timeout", "{spin}");
    assert!(
        spin["error"]["message"]
            .as_str()
            .unwrap()
            .contains("time limit of 5s"),
        "{spin}"
    );
    let hog = api
        .wait_job(hog["id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    assert_eq!(hog["state"], "failed");
    assert_eq!(hog["error"]["kind"], "memory", "{hog}");
    assert!(
        hog["error"]["message"]
            .as_str()
            .unwrap()
            .contains("memory limit of 256MiB"),
        "{hog}"
    );
    // Replacement workers render the next report normally.
    api.render_invoice_now().await;
    assert_eq!(
        reqwest::get(format!("{}/readyz", app.url))
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = api.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("quire_renders_total{kind=\"job\",outcome=\"timeout\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after() {
    let app = Instance::start(
        AppOptions::default()
            .env("QUIRE_RENDER__QUEUE_LIMIT", "2")
            .env("QUIRE_RENDER__WORKERS", "1")
            .env("QUIRE_RENDER__TIMEOUT", "3s"),
    )
    .await;
    let api = app.client().await.token_client("t").await;
    api.create_template(
        "spin",
        json!({"main.typ": "#for i in range(100000) { for j in range(100000) { } }"}),
    )
    .await;
    let mut codes = Vec::new();
    for _ in 0..6 {
        let r = api
            .post("/api/v1/renders", &json!({"template": "spin"}))
            .await;
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
        }
        codes.push(r.status().as_u16());
    }
    assert!(codes.contains(&429), "{codes:?}");
    assert_eq!(codes[0], 202);
}

#[tokio::test]
async fn templates_keep_immutable_versions_and_jobs_pin_theirs() {
    let app = Instance::start(AppOptions::default()).await;
    let api = app.client().await.token_client("t").await;
    let created = api
        .create_template("greeting", json!({"main.typ": "Version one"}))
        .await;
    let id = created["template"]["id"].as_str().unwrap();
    let r = api
        .request(reqwest::Method::PUT, &format!("/api/v1/templates/{id}"))
        .json(&json!({"files": {"main.typ": "Version two", "logo.svg": {"base64": "PHN2Zy8+"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let versions = api
        .get_json(&format!("/api/v1/templates/{id}/versions"))
        .await;
    assert_eq!(versions.as_array().unwrap().len(), 2);
    let v1 = api
        .get_json(&format!("/api/v1/templates/{id}/versions/1"))
        .await;
    assert_eq!(v1["files"][0]["text"], "Version one");
    let logo = api
        .get(&format!("/api/v1/templates/{id}/versions/2/files/logo.svg"))
        .await;
    assert_eq!(logo.headers()["content-type"], "image/svg+xml");
    assert_eq!(logo.text().await.unwrap(), "<svg/>");
    let r = api
        .post(
            "/api/v1/render",
            &json!({"template": "greeting", "version": 1}),
        )
        .await;
    assert!(pdf_text(&r.bytes().await.unwrap()).contains("Version one"));
    let r = api
        .post("/api/v1/render", &json!({"template": "greeting"}))
        .await;
    assert!(pdf_text(&r.bytes().await.unwrap()).contains("Version two"));
}

#[test]
fn quire_render_works_offline_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/src/app/examples/invoice");
    let out = dir.path().join("out.pdf");
    let status =
        crate::support::app::quire_command(&["render", &format!("{examples}/main.typ"), "--data"])
            .arg(format!("{examples}/data.json"))
            .args(["--input", "title=Quote", "-o"])
            .arg(&out)
            .current_dir(dir.path())
            .output()
            .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let text = pdf_text(&std::fs::read(&out).unwrap());
    assert!(
        text.contains("Quote") && text.contains("EUR 3,216.60"),
        "{text}"
    );

    let broken = dir.path().join("broken.typ");
    std::fs::write(&broken, "ok\n#let x = (1 + )\n").unwrap();
    let failed = crate::support::app::quire_command(&["render", broken.to_str().unwrap(), "-o"])
        .arg(dir.path().join("never.pdf"))
        .output()
        .unwrap();
    assert_eq!(failed.status.code(), Some(1));
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(
        err.contains("broken.typ:2:14: error: expected expression"),
        "{err}"
    );
    assert!(
        !dir.path().join("never.pdf").exists(),
        "no half-written output"
    );
}
