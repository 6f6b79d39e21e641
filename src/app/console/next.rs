//! Where the browser goes after signing in. `next` comes from the address bar, so anyone can send
//! a sign-in link with any value in it; only a path on this site may come out, or the sign-in
//! page would forward people to another site as if this one vouched for it.

use percent_encoding::percent_decode_str;

/// Longer values are no console address, and would only bloat the page.
const MAX_LEN: usize = 2048;

/// How many rounds of percent-decoding to look through; a value that still changes after them is
/// refused rather than trusted.
const DECODE_ROUNDS: usize = 3;

/// The validated `next` of a sign-in page's query string, or `/`.
pub fn from_query(query: Option<&str>) -> String {
    let next = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes()).find_map(|(k, v)| (k == "next").then_some(v))
    });
    next.as_deref()
        .and_then(same_origin_path)
        .unwrap_or("/")
        .to_owned()
}

/// `next` itself if a browser resolving it against this site stays on this site, else `None`.
pub fn same_origin_path(next: &str) -> Option<&str> {
    if next.len() > MAX_LEN {
        return None;
    }
    let (path, rest) = next.split_at(next.find(['?', '#']).unwrap_or(next.len()));
    let decoded_rest = percent_decode_str(rest).decode_utf8_lossy();
    let rest_ok = harmless_chars(rest) && harmless_chars(&decoded_rest);
    (path_stays_here(path) && rest_ok).then_some(next)
}

/// Whether `path` and each percent-decoding of it is a plain path. Browsers decode `%2e` to `.`
/// when resolving dot segments, and servers or proxies may decode more, so every form must hold.
fn path_stays_here(path: &str) -> bool {
    let mut form = path.to_owned();
    for _ in 0..=DECODE_ROUNDS {
        if !plain_path(&form) {
            return false;
        }
        let decoded = percent_decode_str(&form).decode_utf8_lossy().into_owned();
        if decoded == form {
            return true;
        }
        form = decoded;
    }
    false
}

/// A path a browser cannot read as another host: it starts with `/`, has no `//` (a
/// scheme-relative URL names a host) before or after resolving `.` and `..` (`/a/..//host` is
/// `//host`), and no backslash or control character (browsers read `\` as `/` and drop tabs and
/// newlines, so `/\host` and `/<TAB>/host` become `//host`).
fn plain_path(path: &str) -> bool {
    path.starts_with('/')
        && harmless_chars(path)
        && !path.contains("//")
        && !without_dot_segments(path).contains("//")
}

fn harmless_chars(s: &str) -> bool {
    !s.chars().any(|c| c == '\\' || c.is_control())
}

/// `path` with `.` and `..` segments resolved as RFC 3986 (and browsers) do.
fn without_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut segments = path.split('/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            "." | ".." => {
                if segment == ".." {
                    out.pop();
                }
                // `/a/..` is `/`, a directory: keep the trailing slash.
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_origins_are_refused() {
        let port = 18999;
        let attacks = [
            format!("/.//127.0.0.1:{port}/pwned"),
            "/%2e//host".to_owned(),
            "/%2E//host".to_owned(),
            "/a/..//host".to_owned(),
            "/a/%2e%2e//host".to_owned(),
            "/a/%2e%2e/%2fhost".to_owned(),
            "/a/%252e%252e/%252fhost".to_owned(),
            "/%2F/host".to_owned(),
            "//host".to_owned(),
            "///host".to_owned(),
            "/\\host".to_owned(),
            "/%5Chost".to_owned(),
            "\\\\host".to_owned(),
            "/\t/host".to_owned(),
            "/\n/host".to_owned(),
            "/%09/host".to_owned(),
            "/x?a=\\b".to_owned(),
            "https://host/".to_owned(),
            "http:/host".to_owned(),
            "javascript:alert(1)".to_owned(),
            "host/path".to_owned(),
            "".to_owned(),
            format!("/{}", "a".repeat(MAX_LEN)),
        ];
        for next in &attacks {
            assert_eq!(same_origin_path(next), None, "{next:?} must be refused");
        }
    }

    #[test]
    fn paths_of_this_site_are_kept() {
        for next in [
            "/",
            "/templates",
            "/templates/x?tab=1",
            "/render?template=My%20Report",
            "/jobs/0190f3a2-7c1e-7000-8000-000000000000",
            "/templates/a.b/",
            "/a/../templates",
            "/x#section",
        ] {
            assert_eq!(same_origin_path(next), Some(next), "{next:?} must be kept");
        }
    }

    #[test]
    fn the_query_string_is_decoded_once_then_checked() {
        assert_eq!(
            from_query(Some("next=%2Ftemplates%2Fx%3Ftab%3D1")),
            "/templates/x?tab=1"
        );
        assert_eq!(from_query(Some("next=/.//127.0.0.1:18999/pwned")), "/");
        assert_eq!(from_query(Some("next=/%2e//host")), "/");
        assert_eq!(from_query(Some("next=%2F%2Fhost")), "/");
        assert_eq!(from_query(Some("other=1")), "/");
        assert_eq!(from_query(None), "/");
    }

    #[test]
    fn dot_segments_resolve_like_a_browser() {
        assert_eq!(without_dot_segments("/a/..//host"), "//host");
        assert_eq!(without_dot_segments("/.//host"), "//host");
        assert_eq!(without_dot_segments("/a/b/../c"), "/a/c");
        assert_eq!(without_dot_segments("/a/."), "/a/");
        assert_eq!(without_dot_segments("/.."), "/");
        assert_eq!(without_dot_segments("/"), "/");
    }
}
