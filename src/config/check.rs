//! `quire config check`: the effective configuration, one `key = value  # origin` line per
//! setting, with secrets redacted.

use figment::value::{Tag, Value};

use super::credential::MASK;
use super::load::Loaded;
use super::redact::{hide_url_credentials, redact_server, redact_url};
use super::section::{self, Layout, Shown};
use super::source::describe;

/// Renders the effective configuration for people to read.
pub fn report<L: Layout>(loaded: &Loaded<L>) -> String {
    let mut lines = Vec::new();
    match &loaded.file {
        Some(f) => lines.push(format!("# config file: {}", f.display())),
        None => lines.push("# config file: none (defaults and environment only)".to_owned()),
    }
    // Each section with its derived defaults filled in, so the report shows what will be used.
    if let Ok(effective) = section::to_dict(&loaded.config, true) {
        let secrets = section::secrets::<L>();
        let value = Value::Dict(Tag::Default, effective);
        walk(&value, &mut Vec::new(), loaded, &secrets, &mut lines);
    }
    for w in &loaded.warnings {
        lines.push(format!("# warning: {w}"));
    }
    lines.join("\n")
}

fn walk<L>(
    value: &Value,
    path: &mut Vec<String>,
    loaded: &Loaded<L>,
    secrets: &[(String, Shown)],
    lines: &mut Vec<String>,
) {
    if let Value::Dict(_, dict) = value {
        for (k, v) in dict {
            path.push(k.clone());
            walk(v, path, loaded, secrets, lines);
            path.pop();
        }
        return;
    }
    let key = path.join(".");
    let secret = secrets.iter().find(|(k, _)| *k == key);
    let shown = match (value, secret) {
        (Value::Empty(..), _) => "(not set)".to_owned(),
        (_, Some((_, shown))) => redact(*shown, value),
        (_, None) => serde_json::to_string(&scrub(value)).unwrap_or_default(),
    };
    let segs: Vec<&str> = path.iter().map(String::as_str).collect();
    let origin = match loaded.figment.find_metadata(&key) {
        Some(md) => describe(Some(md), &segs),
        None => "default".to_owned(),
    };
    lines.push(format!("{key} = {shown}  # {origin}"));
}

/// A secret as shown: URLs keep their shape with every credential hidden, a server list shows
/// each server that way; other secrets are hidden whole.
fn redact(shown: Shown, value: &Value) -> String {
    match value {
        Value::String(_, s) if shown == Shown::Servers => quoted(&redact_server(s)),
        Value::String(_, s) if shown == Shown::Url => quoted(&redact_url(s)),
        Value::Array(_, items) => format!(
            "[{}]",
            items
                .iter()
                .map(|item| redact(shown, item))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => quoted(MASK),
    }
}

fn quoted(s: &str) -> String {
    format!("{s:?}")
}

/// A setting that is not a secret may still carry one, such as a route URL with a user and
/// password: its credentials are hidden too, wherever it sits in lists and tables.
fn scrub(value: &Value) -> Value {
    match value {
        Value::String(tag, s) => match hide_url_credentials(s) {
            Some(hidden) => Value::String(*tag, hidden),
            None => value.clone(),
        },
        Value::Array(tag, items) => Value::Array(*tag, items.iter().map(scrub).collect()),
        Value::Dict(tag, dict) => Value::Dict(
            *tag,
            dict.iter().map(|(k, v)| (k.clone(), scrub(v))).collect(),
        ),
        _ => value.clone(),
    }
}
