//! Loading a layout: built-in defaults < TOML file < alias variables < `QUIRE_*` variables <
//! platform settings, then every section read from its key, checked by its own rules and those
//! between sections, and the keys nothing reads reported.

use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Tag, Value};
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

use super::problem::{ConfigError, Problem, Problems};
use super::section::{self, EachSection, Layout, Section};
use super::source::{self, describe};

/// The file read when neither `--config` nor `QUIRE_CONFIG` names one, if it exists.
const SYSTEM_CONFIG: &str = "/etc/quire/quire.toml";

/// A loaded configuration plus what is needed to explain it.
pub struct Loaded<L> {
    pub config: L,
    pub figment: Figment,
    pub file: Option<PathBuf>,
    /// Settings that matched nothing (likely typos); logged at start.
    pub warnings: Vec<String>,
}

impl<L> Loaded<L> {
    /// Where the value at `key` came from. A key inside a list item (`lb.upstreams.0.url`) has
    /// no metadata of its own; the nearest enclosing key that has some answers.
    pub fn origin(&self, key: &str) -> String {
        source::origin(&self.figment, key)
    }

    /// Checks `section` against rules beyond its `validate`, such as what only one mode needs
    /// (`quire lb` needs an upstream), reporting as `load` does.
    pub fn require<S: Section>(
        &self,
        section: &S,
        rules: impl FnOnce(&S, &mut Problems<'_>),
    ) -> Result<(), ConfigError> {
        let origin = |key: &str| self.origin(key);
        let mut problems = Problems::new(S::KEY, &origin);
        rules(section, &mut problems);
        problems.into_result()
    }
}

/// Loads the layout `L`. `config_file` is the `--config` flag; `env` the process environment
/// (passed in so tests never touch the real one).
pub fn load<L: Layout>(
    config_file: Option<&Path>,
    env: &[(String, String)],
) -> Result<Loaded<L>, ConfigError> {
    let file = config_path(config_file, env)?;
    let defaults = section::to_dict(&L::default(), false)?;
    let mut figment = Figment::from(Defaults(defaults.clone()));
    if let Some(path) = &file {
        figment = figment.merge(Toml::file_exact(path));
    }
    for setting in section::aliases::<L>(env) {
        figment = figment.merge(setting);
    }
    let secrets: Vec<String> = section::secrets::<L>()
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    for setting in source::quire_settings(env, &secrets)? {
        figment = figment.merge(setting);
    }
    for setting in section::platform::<L>(&figment, env) {
        figment = figment.merge(setting);
    }

    let mut config = extract::<L>(&figment)?;
    let found = validate(&mut config, &figment);
    if !found.is_empty() {
        return Err(ConfigError::Invalid(found));
    }
    Ok(Loaded {
        warnings: unknown_keys(&figment, &Value::Dict(Tag::Default, defaults)),
        config,
        figment,
        file,
    })
}

fn config_path(
    flag: Option<&Path>,
    env: &[(String, String)],
) -> Result<Option<PathBuf>, ConfigError> {
    let from_env = env
        .iter()
        .find(|(k, _)| k == "QUIRE_CONFIG")
        .map(|(_, v)| PathBuf::from(v));
    let (path, given_by) = match (flag, from_env) {
        (Some(p), _) => (p.to_path_buf(), "--config"),
        (None, Some(p)) => (p, "QUIRE_CONFIG"),
        (None, None) => {
            let system = PathBuf::from(SYSTEM_CONFIG);
            return Ok(system.exists().then_some(system));
        }
    };
    if path.exists() {
        Ok(Some(path))
    } else {
        Err(ConfigError::MissingFile { path, given_by })
    }
}

/// Reads every section from its key. Like a single struct (serde stops at its first bad field,
/// visited in key order), a failure reports the bad value whose top-level key sorts first.
fn extract<L: Layout>(figment: &Figment) -> Result<L, ConfigError> {
    struct Extract<'a> {
        figment: &'a Figment,
        failed: Vec<figment::Error>,
    }
    impl EachSection for Extract<'_> {
        fn section<S: Section>(&mut self, section: &mut S) {
            let read = if S::KEY.is_empty() {
                self.figment.extract_lossy::<S>()
            } else {
                self.figment.extract_lossy::<At<S>>().map(|at| at.0)
            };
            match read {
                Ok(value) => *section = value,
                Err(e) => self.failed.push(e),
            }
        }
    }
    let mut layout = L::default();
    let mut extract = Extract {
        figment,
        failed: Vec::new(),
    };
    layout.sections(&mut extract);
    match extract
        .failed
        .into_iter()
        .min_by(|a, b| a.path.first().cmp(&b.path.first()))
    {
        Some(e) => Err(ConfigError::Invalid(Problem::from_figment(e))),
        None => Ok(layout),
    }
}

/// A section read from its key of the merged configuration. The other keys are skipped, so each
/// error carries the section's key in its path and figment's origin of the value.
struct At<S>(S);

impl<'de, S: Section> Deserialize<'de> for At<S> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Find<S>(PhantomData<S>);
        impl<'de, S: Section> Visitor<'de> for Find<S> {
            type Value = At<S>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a table with a `{}` table", S::KEY)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<At<S>, A::Error> {
                let mut found = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == S::KEY {
                        found = Some(map.next_value::<S>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(At(found.unwrap_or_default()))
            }
        }
        d.deserialize_map(Find(PhantomData))
    }
}

/// Every section's rules, in section order, then the rules between sections.
fn validate<L: Layout>(config: &mut L, figment: &Figment) -> Vec<Problem> {
    struct Validate<'a> {
        origin: &'a dyn Fn(&str) -> String,
        found: Vec<Problem>,
    }
    impl EachSection for Validate<'_> {
        fn section<S: Section>(&mut self, section: &mut S) {
            let mut problems = Problems::new(S::KEY, self.origin);
            section.validate(&mut problems);
            self.found.extend(problems.into_vec());
        }
    }
    let origin = |key: &str| source::origin(figment, key);
    let mut each = Validate {
        origin: &origin,
        found: Vec::new(),
    };
    config.sections(&mut each);
    let mut across = Problems::new("", &origin);
    config.validate_across(&mut across);
    each.found.extend(across.into_vec());
    each.found
}

/// Keys present in the merged config that no setting reads, with where they came from.
fn unknown_keys(figment: &Figment, defaults: &Value) -> Vec<String> {
    let Ok(merged) = figment.find_value("") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    collect_unknown(&merged, defaults, &mut Vec::new(), figment, &mut out);
    out
}

fn collect_unknown(
    value: &Value,
    known: &Value,
    path: &mut Vec<String>,
    figment: &Figment,
    out: &mut Vec<String>,
) {
    let (Value::Dict(_, dict), Value::Dict(_, known_dict)) = (value, known) else {
        return;
    };
    for (k, v) in dict {
        path.push(k.clone());
        match known_dict.get(k) {
            Some(known_v) => collect_unknown(v, known_v, path, figment, out),
            None => report_leaves(v, path, figment, out),
        }
        path.pop();
    }
}

fn report_leaves(value: &Value, path: &mut Vec<String>, figment: &Figment, out: &mut Vec<String>) {
    if let Value::Dict(_, dict) = value {
        for (k, v) in dict {
            path.push(k.clone());
            report_leaves(v, path, figment, out);
            path.pop();
        }
        return;
    }
    let key = path.join(".");
    let segs: Vec<&str> = path.iter().map(String::as_str).collect();
    let origin = describe(figment.find_metadata(&key), &segs);
    out.push(format!("unknown setting {key} (from {origin}) is ignored"));
}

/// The built-in defaults, named so that origins read "default".
struct Defaults(Dict);

impl figment::Provider for Defaults {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("default")
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        Serialized::defaults(&self.0).data()
    }
}
