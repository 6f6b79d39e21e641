//! The contract between the mechanism and the modules that own settings: each module describes
//! its part of the file as a [`Section`]; a binary lists the sections it reads as a [`Layout`].
//! Nothing here knows a mode or a concrete key.

use figment::Figment;
use figment::value::{Dict, Value};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::problem::{ConfigError, Problem, Problems, full_key};
use super::source::Setting;

/// One section of the configuration, owned by the module that reads it: plain data that figment
/// deserializes (each value parsed into a type that cannot be invalid), plus what `load` and
/// `quire config check` need to know about its keys.
pub trait Section: Serialize + DeserializeOwned + Default + Clone {
    /// Where the section sits in the file: `"lb"` for `[lb]`; `""` for top-level keys.
    const KEY: &'static str;

    /// Keys below `KEY` whose values are secrets.
    const SECRETS: &'static [SecretKey] = &[];

    /// The rules that span fields or need more than a type can say, checked once at load; every
    /// section is validated through this one signature.
    fn validate(&self, problems: &mut Problems<'_>);

    /// Settings from other products' variable names for keys of this section, merged above the
    /// file and below `QUIRE_*` variables. Keys are full.
    fn aliases(_env: &[(String, String)]) -> Vec<Setting> {
        Vec::new()
    }

    /// Settings a hosting platform dictates, merged above everything else; they should yield
    /// to an explicit `QUIRE_*` variable (`source::set_by_quire_env`). Keys are full.
    fn platform(_merged: &Figment, _env: &[(String, String)]) -> Vec<Setting> {
        Vec::new()
    }

    /// The section as `quire config check` shows it: defaults that depend on other values filled
    /// in.
    fn effective(&self) -> Self {
        self.clone()
    }
}

/// A key whose value is a secret: it may be read from a file (`QUIRE_DATABASE__URL_FILE`), and
/// `quire config check` shows it as `shown` says.
#[derive(Debug, Clone, Copy)]
pub struct SecretKey {
    /// Below the section's key.
    pub key: &'static str,
    pub shown: Shown,
}

/// How `quire config check` shows a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// `***`.
    Hidden,
    /// A URL with every credential in it hidden, so the operator still sees where it points.
    Url,
    /// A list of servers, each a URL or `[user[:password]@]host:port`, each shown like a URL.
    Servers,
}

/// The configuration a binary reads: the sections it is made of, each at its own key.
pub trait Layout: Default + Clone {
    /// Hands every section to `each`, in a fixed order: the order their problems are reported in.
    fn sections(&mut self, each: &mut impl EachSection);

    /// Rules that tie two sections together, checked after every section's own.
    fn validate_across(&self, _problems: &mut Problems<'_>) {}
}

/// Something done to every section of a layout.
pub trait EachSection {
    fn section<S: Section>(&mut self, section: &mut S);
}

/// One section is a layout of its own: a module's tests load their section alone.
impl<S: Section> Layout for S {
    fn sections(&mut self, each: &mut impl EachSection) {
        each.section(self);
    }
}

/// Every secret key of a layout, in full, with how it is shown.
pub fn secrets<L: Layout>() -> Vec<(String, Shown)> {
    struct Collect(Vec<(String, Shown)>);
    impl EachSection for Collect {
        fn section<S: Section>(&mut self, _: &mut S) {
            let keys = S::SECRETS.iter();
            self.0
                .extend(keys.map(|s| (full_key(S::KEY, s.key), s.shown)));
        }
    }
    let mut collect = Collect(Vec::new());
    L::default().sections(&mut collect);
    collect.0
}

/// Every section's aliases, in section order.
pub fn aliases<L: Layout>(env: &[(String, String)]) -> Vec<Setting> {
    struct Collect<'e>(&'e [(String, String)], Vec<Setting>);
    impl EachSection for Collect<'_> {
        fn section<S: Section>(&mut self, _: &mut S) {
            self.1.extend(S::aliases(self.0));
        }
    }
    let mut collect = Collect(env, Vec::new());
    L::default().sections(&mut collect);
    collect.1
}

/// Every section's platform settings, each decided on the same merged layers.
pub fn platform<L: Layout>(merged: &Figment, env: &[(String, String)]) -> Vec<Setting> {
    struct Collect<'a>(&'a Figment, &'a [(String, String)], Vec<Setting>);
    impl EachSection for Collect<'_> {
        fn section<S: Section>(&mut self, _: &mut S) {
            self.2.extend(S::platform(self.0, self.1));
        }
    }
    let mut collect = Collect(merged, env, Vec::new());
    L::default().sections(&mut collect);
    collect.2
}

/// The layout as one table: every section at its key, as it is or (`effective`) as `config check`
/// shows it.
pub fn to_dict<L: Layout>(layout: &L, effective: bool) -> Result<Dict, ConfigError> {
    struct Collect {
        effective: bool,
        dict: Dict,
        failed: Option<figment::Error>,
    }
    impl EachSection for Collect {
        fn section<S: Section>(&mut self, section: &mut S) {
            let value = match self.effective {
                true => Value::serialize(section.effective()),
                false => Value::serialize(&*section),
            };
            match value {
                Ok(Value::Dict(_, dict)) if S::KEY.is_empty() => self.dict.extend(dict),
                Ok(value) => {
                    self.dict.insert(S::KEY.to_owned(), value);
                }
                Err(e) => self.failed = Some(e),
            }
        }
    }
    let mut collect = Collect {
        effective,
        dict: Dict::new(),
        failed: None,
    };
    layout.clone().sections(&mut collect);
    match collect.failed {
        Some(e) => Err(ConfigError::Invalid(Problem::from_figment(e))),
        None => Ok(collect.dict),
    }
}
