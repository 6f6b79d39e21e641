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

/// A TrueType collection header declaring `faces` faces, every offset pointing at one copy of a
/// real font placed after the header (its table offsets moved to count from the file's start).
fn collection_bomb(faces: u32) -> Vec<u8> {
    let ttf = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf")
        .expect("fonts-dejavu-core must be installed");
    let start = 12 + 4 * faces;
    let mut file: Vec<u8> = [&b"ttcf"[..], &[0, 1, 0, 0], &faces.to_be_bytes()].concat();
    file.extend(std::iter::repeat_n(start.to_be_bytes(), faces as usize).flatten());
    let mut body = ttf.clone();
    let num_tables = usize::from(u16::from_be_bytes([ttf[4], ttf[5]]));
    for record in (0..num_tables).map(|i| 12 + 16 * i) {
        let field = record + 8..record + 12;
        let moved = u32::from_be_bytes(ttf[field.clone()].try_into().unwrap()) + start;
        body[field].copy_from_slice(&moved.to_be_bytes());
    }
    file.extend(body);
    file
}

#[tokio::test]
async fn a_collection_with_too_many_faces_is_refused_and_skipped() {
    let app =
        Instance::start(AppOptions::default().env("QUIRE_FONTS__RESCAN_INTERVAL", "1s")).await;
    let admin = app.client().await;
    let api = admin.token_client("t").await;
    let fonts_dir = app.data_dir.join("fonts");
    let bomb = collection_bomb(200_000);
    let started = std::time::Instant::now();
    let r = api
        .request(reqwest::Method::PUT, "/api/v1/fonts/Bomb.ttc")
        .body(bomb.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let p: Value = r.json().await.unwrap();
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("at most 64 per file"),
        "{p}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(dir_listing(&fonts_dir).is_empty());

    // Dropped in by hand, it is skipped with a reason, and renders and listings stay fast.
    std::fs::write(fonts_dir.join("Bomb.ttc"), &bomb).unwrap();
    std::fs::write(fonts_dir.join("Fine.ttc"), collection_bomb(2)).unwrap();
    let listed = wait_for(
        "the rescan to list the skipped file",
        Duration::from_secs(15),
        || async {
            let list = api.get_json("/api/v1/fonts").await;
            (list["skipped"].as_array().unwrap().len() == 1).then_some(list)
        },
    )
    .await;
    assert_eq!(listed["skipped"][0]["file"], "Bomb.ttc");
    let fine = listed["faces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["file"] == "Fine.ttc");
    assert_eq!(fine.count(), 2);
    let started = std::time::Instant::now();
    assert_eq!(
        preview_warnings(&api, "One line.").await,
        Vec::<String>::new()
    );
    let started_list = std::time::Instant::now();
    api.get_json("/api/v1/fonts").await;
    assert!(started_list.elapsed() < Duration::from_millis(500));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn only_admins_see_the_font_directory() {
    let app = Instance::start(AppOptions::default()).await;
    let admin = app.client().await;
    let viewer = admin.signed_in_user("v@test.local", "viewer").await;
    let list = viewer.get_json("/api/v1/fonts").await;
    assert!(list.get("dir").is_none(), "{list}");
    assert!(list["faces"].as_array().is_some_and(|f| !f.is_empty()));
    assert!(admin.get_json("/api/v1/fonts").await["dir"].is_string());
}
