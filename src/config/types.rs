//! Value types used by the config structs. Each one parses and validates while it is deserialized,
//! so a bad value fails with the key and origin figment attaches, and the rest of the code never
//! re-checks it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A duration written as `"30s"`, `"500ms"`, `"5m"`, `"12h"`, `"7d"`, or a plain number of seconds.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub Duration);

impl Span {
    pub const fn secs(secs: u64) -> Self {
        Span(Duration::from_secs(secs))
    }
    pub const fn millis(ms: u64) -> Self {
        Span(Duration::from_millis(ms))
    }
    pub fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        let (n, unit) = [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1000, "s"),
        ]
        .into_iter()
        .find(|(div, _)| ms >= *div && ms.is_multiple_of(*div))
        .map(|(div, unit)| (ms / div, unit))
        .unwrap_or((ms, "ms"));
        write!(f, "{n}{unit}")
    }
}

impl FromStr for Span {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: f64 = num.parse().map_err(|_| {
            format!("expected a duration like \"30s\", \"5m\" or \"2h\", found \"{s}\"")
        })?;
        let factor = match unit.trim() {
            "ms" => 0.001,
            "" | "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            other => {
                return Err(format!(
                    "unknown duration unit \"{other}\" in \"{s}\": use ms, s, m, h or d"
                ));
            }
        };
        Duration::try_from_secs_f64(n * factor)
            .map(Span)
            .map_err(|_| format!("duration \"{s}\" is out of range"))
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ParseVisitor::<Span>::new(
            "a duration such as \"30s\" or \"5m\"",
        ))
    }
}

/// A size in bytes written as `"10MiB"`, `"512KiB"`, `"1GB"` or a plain number of bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn mib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024)
    }
    pub fn bytes(self) -> u64 {
        self.0
    }
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl fmt::Debug for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        let (n, unit) = [(1u64 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")]
            .into_iter()
            .find(|(div, _)| b >= *div && b.is_multiple_of(*div))
            .map(|(div, unit)| (b / div, unit))
            .unwrap_or((b, "B"));
        write!(f, "{n}{unit}")
    }
}

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("expected a size like \"10MiB\" or \"512KiB\", found \"{s}\""))?;
        let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            other => {
                return Err(format!(
                    "unknown size unit \"{other}\" in \"{s}\": use B, KiB, MiB, GiB, KB, MB or GB"
                ));
            }
        };
        n.checked_mul(factor)
            .map(ByteSize)
            .ok_or_else(|| format!("size \"{s}\" is too large"))
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ParseVisitor::<ByteSize>::new("a size such as \"10MiB\""))
    }
}

/// A secret string: never printed by `Debug`, redacted by `config check`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Accept numbers too: an env value like `0123` must stay a string, but a TOML file may
        // carry an unquoted numeric password.
        d.deserialize_any(ParseVisitor::<Secret>::new("a string"))
    }
}

impl FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(Secret(s.to_owned()))
    }
}

/// Accepts a string or a number and parses it with `FromStr`, so env values (always strings) and
/// TOML values (typed) both work.
struct ParseVisitor<T> {
    expecting: &'static str,
    _t: std::marker::PhantomData<T>,
}

impl<T> ParseVisitor<T> {
    fn new(expecting: &'static str) -> Self {
        ParseVisitor {
            expecting,
            _t: std::marker::PhantomData,
        }
    }
}

impl<T: FromStr<Err = String>> Visitor<'_> for ParseVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }
}

/// Deserializes a list from either a sequence or one comma-separated string, so
/// `QUIRE_NATS__URL=nats://a:4222,nats://b:4222` and a TOML array mean the same.
pub fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + FromStr,
    T::Err: fmt::Display,
{
    struct ListVisitor<T>(std::marker::PhantomData<T>);
    impl<'de, T> Visitor<'de> for ListVisitor<T>
    where
        T: Deserialize<'de> + FromStr,
        T::Err: fmt::Display,
    {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list or a comma-separated string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<T>, E> {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<T>()
                        .map_err(|e| E::custom(format!("\"{s}\": {e}")))
                })
                .collect()
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(v) = seq.next_element()? {
                out.push(v);
            }
            Ok(out)
        }
    }
    d.deserialize_any(ListVisitor(std::marker::PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_parse_units_and_print_back() {
        assert_eq!("30s".parse::<Span>().unwrap(), Span::secs(30));
        assert_eq!("500ms".parse::<Span>().unwrap(), Span::millis(500));
        assert_eq!("5m".parse::<Span>().unwrap(), Span::secs(300));
        assert_eq!("7d".parse::<Span>().unwrap(), Span::secs(7 * 86_400));
        assert_eq!("2".parse::<Span>().unwrap(), Span::secs(2));
        assert_eq!(Span::secs(300).to_string(), "5m");
        assert_eq!(Span::millis(1500).to_string(), "1500ms");
        assert!(
            "5 weeks"
                .parse::<Span>()
                .unwrap_err()
                .contains("unknown duration unit")
        );
        assert!("soon".parse::<Span>().is_err());
        assert!(
            "100000000000000000000000000d"
                .parse::<Span>()
                .unwrap_err()
                .contains("out of range")
        );
        assert!(
            format!("1{}", "0".repeat(400)).parse::<Span>().is_err(),
            "an infinite float is refused, not a panic"
        );
    }

    #[test]
    fn sizes_parse_binary_and_decimal_units() {
        assert_eq!("10MiB".parse::<ByteSize>().unwrap(), ByteSize::mib(10));
        assert_eq!("1kb".parse::<ByteSize>().unwrap(), ByteSize(1000));
        assert_eq!("4096".parse::<ByteSize>().unwrap(), ByteSize(4096));
        assert_eq!(ByteSize::mib(512).to_string(), "512MiB");
        assert!("12 parsecs".parse::<ByteSize>().is_err());
    }

    #[test]
    fn secrets_never_debug_print() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }
}
