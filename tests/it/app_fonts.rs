//! Fonts: uploads are validated (a non-font is refused and the directory stays untouched) and
//! written atomically; fonts dropped into the directory by hand are found by the rescan timer.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::app::{AppOptions, Instance};
use crate::support::wait_for;

fn dir_listing(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn junk_font_uploads_are_refused_and_leave_no_trace() {
    let app = Instance::start(AppOptions::default()).await;
    let api = app.client().await.token_client("t").await;
    let fonts_dir = app.data_dir.join("fonts");
    let before = dir_listing(&fonts_dir);
    let r = api
        .request(reqwest::Method::PUT, "/api/v1/fonts/Evil.ttf")
        .body(b"MZ\x90\x00 not a font at all".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["field"], "file");
    assert_eq!(dir_listing(&fonts_dir), before);
    let r = api
        .request(reqwest::Method::PUT, "/api/v1/fonts/..%2Fescape.ttf")
        .body(vec![0u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(dir_listing(&fonts_dir), before);
}

/// Warnings of a live preview of `source`.
async fn preview_warnings(api: &crate::support::app::TestClient, source: &str) -> Vec<String> {
    let r = api
        .post("/api/v1/preview", &json!({"files": {"main.typ": source}}))
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["message"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn uploaded_and_dropped_fonts_reach_the_renderer() {
    let app =
        Instance::start(AppOptions::default().env("QUIRE_FONTS__RESCAN_INTERVAL", "1s")).await;
    let api = app.client().await.token_client("t").await;
    let serif = "#set text(font: \"DejaVu Serif\")\nHello";
    let warnings = preview_warnings(&api, serif).await;
    assert!(
        warnings.iter().any(|w| w.contains("unknown font family")),
        "{warnings:?}"
    );

    let font = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf")
        .expect("fonts-dejavu-core must be installed");
    let r = api
        .request(reqwest::Method::PUT, "/api/v1/fonts/DejaVuSerif.ttf")
        .body(font)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        dir_listing(&app.data_dir.join("fonts")),
        vec!["DejaVuSerif.ttf"]
    );
    assert_eq!(preview_warnings(&api, serif).await, Vec::<String>::new());
    let list = api.get_json("/api/v1/fonts").await;
    assert!(
        list["faces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["file"] == "DejaVuSerif.ttf"),
        "{list}"
    );

    // A font dropped in by hand (another instance, a shared mount) is picked up by the rescan.
    let gyre = "#set text(font: \"DejaVu Math TeX Gyre\")\nHello";
    assert!(!preview_warnings(&api, gyre).await.is_empty());
    let math = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuMathTeXGyre.ttf")
        .expect("fonts-dejavu-extra must be installed");
    std::fs::write(app.data_dir.join("fonts").join("Dropped.ttf"), math).unwrap();
    wait_for(
        "the rescan to pick up the dropped font",
        Duration::from_secs(15),
        || async { preview_warnings(&api, gyre).await.is_empty().then_some(()) },
    )
    .await;
    let r = api
        .request(reqwest::Method::DELETE, "/api/v1/fonts/Dropped.ttf")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(
        !preview_warnings(&api, gyre).await.is_empty(),
        "removing the font takes it away again"
    );
}
