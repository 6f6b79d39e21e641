//! Render parameters: values checked against the template version's declared parameters and
//! turned into typed `sys.inputs` values.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::queries::RESERVED_PREFIX;
use crate::app::model::{ParamKind, ParamSpec};
use crate::app::render::Input;

/// One parameter that is missing or wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ParamError {
    /// `parameters.<name>`
    pub field: String,
    pub message: String,
}

/// Parameters checked against their declaration.
#[derive(Debug)]
pub struct Resolved {
    /// What the template sees as `sys.inputs`.
    pub inputs: BTreeMap<String, Input>,
    /// The normalized values, as stored with a job.
    pub stored: Map<String, Value>,
}

/// Checks `given` against `spec`: declared parameters get their default when absent, must have
/// the declared type and, for choices, one of the allowed values. Undeclared parameters pass as
/// strings, numbers or booleans. Returns the inputs for Typst and the normalized values to store.
pub fn resolve(spec: &[ParamSpec], given: &Map<String, Value>) -> Result<Resolved, ParamError> {
    let mut inputs = BTreeMap::new();
    let mut stored = Map::new();
    for p in spec {
        let value = match given
            .get(&p.name)
            .filter(|v| !v.is_null())
            .or(p.default.as_ref())
        {
            Some(v) => v,
            None if p.required => return Err(err(&p.name, "is required")),
            None => continue,
        };
        if !p.choices.is_empty() && !p.choices.contains(value) {
            let allowed: Vec<String> = p.choices.iter().map(Value::to_string).collect();
            return Err(err(
                &p.name,
                &format!("must be one of {}", allowed.join(", ")),
            ));
        }
        inputs.insert(p.name.clone(), typed(p, value)?);
        stored.insert(p.name.clone(), value.clone());
    }
    for (name, value) in given {
        if spec.iter().any(|p| &p.name == name) {
            continue;
        }
        if name.starts_with(RESERVED_PREFIX) {
            return Err(err(
                name,
                "is set by Quire (names starting quire_ are reserved)",
            ));
        }
        let input = match value {
            Value::String(s) => Input::Str(s.clone()),
            Value::Bool(b) => Input::Bool(*b),
            Value::Number(n) => n
                .as_i64()
                .map(Input::Int)
                .or_else(|| n.as_f64().map(Input::Float))
                .unwrap_or(Input::None),
            Value::Null => Input::None,
            _ => {
                return Err(err(
                    name,
                    "must be a string, number or boolean (put structured values in data)",
                ));
            }
        };
        inputs.insert(name.clone(), input);
        stored.insert(name.clone(), value.clone());
    }
    Ok(Resolved { inputs, stored })
}

fn typed(p: &ParamSpec, v: &Value) -> Result<Input, ParamError> {
    let wrong = |what: &str| err(&p.name, &format!("must be {what}, found {v}"));
    Ok(match p.kind {
        ParamKind::String => Input::Str(v.as_str().ok_or_else(|| wrong("a string"))?.to_owned()),
        ParamKind::Bool => Input::Bool(v.as_bool().ok_or_else(|| wrong("true or false"))?),
        ParamKind::Integer => Input::Int(
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .ok_or_else(|| wrong("an integer"))?,
        ),
        ParamKind::Number => Input::Float(
            v.as_f64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .ok_or_else(|| wrong("a number"))?,
        ),
        ParamKind::Date => Input::Date(
            v.as_str()
                .and_then(|s| s.parse::<jiff::civil::Date>().ok())
                .ok_or_else(|| wrong("a date written YYYY-MM-DD"))?,
        ),
    })
}

fn err(name: &str, message: &str) -> ParamError {
    ParamError {
        field: format!("parameters.{name}"),
        message: message.to_owned(),
    }
}

/// Checks a declared parameter list itself (names unique and usable, defaults of the right type).
pub fn check_spec(spec: &[ParamSpec]) -> Result<(), ParamError> {
    for (i, p) in spec.iter().enumerate() {
        let field = format!("parameters[{i}]");
        let bad = |message: String| ParamError {
            field: field.clone(),
            message,
        };
        if p.name.is_empty()
            || !p
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(bad(format!(
                "name \"{}\" must be letters, digits, _ or -",
                p.name
            )));
        }
        if p.name.starts_with(RESERVED_PREFIX) {
            return Err(bad(format!(
                "\"{}\": names starting {RESERVED_PREFIX} are reserved for Quire's built-ins",
                p.name
            )));
        }
        if spec[..i].iter().any(|q| q.name == p.name) {
            return Err(bad(format!("\"{}\" is declared twice", p.name)));
        }
        if let Some(d) = &p.default {
            typed(p, d).map_err(|e| bad(format!("default {}", e.message)))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> Vec<ParamSpec> {
        serde_json::from_value(json!([
            {"name": "title", "type": "string", "default": "Invoice"},
            {"name": "copies", "type": "integer", "required": true},
            {"name": "due", "type": "date"},
            {"name": "lang", "type": "string", "choices": ["en", "de"]}
        ]))
        .unwrap()
    }

    fn given(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn defaults_types_and_extras() {
        let Resolved { inputs, stored } = resolve(
            &spec(),
            &given(json!({"copies": "2", "due": "2026-12-01", "extra": 1.5})),
        )
        .unwrap();
        assert_eq!(inputs["title"], Input::Str("Invoice".into()));
        assert_eq!(inputs["copies"], Input::Int(2));
        assert_eq!(inputs["due"], Input::Date(jiff::civil::date(2026, 12, 1)));
        assert_eq!(inputs["extra"], Input::Float(1.5));
        assert!(!inputs.contains_key("lang"));
        assert_eq!(stored["title"], json!("Invoice"));
    }

    #[test]
    fn errors_name_the_parameter() {
        let e = resolve(&spec(), &given(json!({}))).unwrap_err();
        assert_eq!(e.field, "parameters.copies");
        let e = resolve(&spec(), &given(json!({"copies": 1, "due": "tomorrow"}))).unwrap_err();
        assert_eq!(e.field, "parameters.due");
        assert!(e.message.contains("YYYY-MM-DD"));
        let e = resolve(&spec(), &given(json!({"copies": 1, "lang": "fr"}))).unwrap_err();
        assert!(e.message.contains("one of"));
        let e = resolve(&spec(), &given(json!({"copies": 1, "nested": {"a": 1}}))).unwrap_err();
        assert_eq!(e.field, "parameters.nested");
        let e = resolve(
            &spec(),
            &given(json!({"copies": 1, "quire_user_email": "boss@example.com"})),
        )
        .unwrap_err();
        assert_eq!(e.field, "parameters.quire_user_email");
    }

    #[test]
    fn specs_are_checked() {
        let mut s = spec();
        assert!(check_spec(&s).is_ok());
        s[0].default = Some(json!(3));
        assert_eq!(check_spec(&s).unwrap_err().field, "parameters[0]");
        let dup: Vec<ParamSpec> =
            serde_json::from_value(json!([{"name":"a","type":"bool"},{"name":"a","type":"bool"}]))
                .unwrap();
        assert!(check_spec(&dup).unwrap_err().message.contains("twice"));
    }
}
