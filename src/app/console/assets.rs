//! Console assets, embedded and served as `/assets/<name>.<hash>.<ext>` with a year-long immutable
//! cache. A request naming another hash (a page from a different version, during a rolling
//! upgrade) still gets this version's file, uncached, so the page keeps working.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

struct Asset {
    name: &'static str,
    body: &'static str,
    content_type: &'static str,
    hashed: String,
}

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    [
        (
            "app.css",
            include_str!("assets/app.css"),
            "text/css; charset=utf-8",
        ),
        (
            "app.js",
            include_str!("assets/app.js"),
            "text/javascript; charset=utf-8",
        ),
    ]
    .into_iter()
    .map(|(name, body, content_type)| {
        let hash = hex::encode(&Sha256::digest(body.as_bytes())[..6]);
        let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
        Asset {
            name,
            body,
            content_type,
            hashed: format!("{stem}.{hash}.{ext}"),
        }
    })
    .collect()
});

/// The URL of an asset by its plain name.
pub fn path(name: &str) -> String {
    ASSETS.iter().find(|a| a.name == name).map_or_else(
        || format!("/assets/{name}"),
        |a| format!("/assets/{}", a.hashed),
    )
}

pub async fn serve(Path(file): Path<String>) -> Response {
    if let Some(a) = ASSETS.iter().find(|a| a.hashed == file) {
        return (
            [
                (header::CONTENT_TYPE, a.content_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            a.body,
        )
            .into_response();
    }
    let same_name = |a: &&Asset| {
        let (stem, ext) = a.name.rsplit_once('.').unwrap_or((a.name, ""));
        file.starts_with(&format!("{stem}.")) && file.ends_with(&format!(".{ext}"))
    };
    match ASSETS.iter().find(same_name) {
        Some(a) => (
            [
                (header::CONTENT_TYPE, a.content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            a.body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_names_carry_their_hash() {
        let p = path("app.js");
        assert!(
            p.starts_with("/assets/app.")
                && p.ends_with(".js")
                && p.len() == "/assets/app..js".len() + 12,
            "{p}"
        );
    }
}
