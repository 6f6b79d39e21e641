//! A licence key: `quire1.<claims>.<signature>`, where `<claims>` is the claims as JSON and
//! `<signature>` the Ed25519 signature over the text `quire1.<claims>`, both base64url without
//! padding. The key names the signing key (`kid`) inside its claims, so a vendor key can be
//! rotated: the binary keeps the public keys by kid (`keyring.rs`).
//!
//! Dates are calendar days in UTC written `YYYY-MM-DD`: a licence is valid from the start of
//! `not_before` through the end of `expires_at`.
//!
//! Errors say which part is wrong and why, but never quote the key: it is a credential, and an
//! error ends up in logs.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey};
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use super::keyring::Keyring;

/// The format's name and version, and the key's first part. A change to the format or to what
/// the claims mean gets a new prefix, so an old binary refuses a key it would misread.
pub const PREFIX: &str = "quire1";

/// A kid longer than this is cut in messages: it comes from an unverified key.
const KID_SHOWN: usize = 64;

/// What a key says. Unknown fields are refused rather than ignored: a claim this binary does
/// not understand might restrict the licence, and silently dropping a restriction is worse than
/// refusing the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// The signing key's id in the keyring.
    pub kid: String,
    /// The licence's id: seats are counted per licence id.
    pub id: String,
    pub customer: String,
    #[serde(with = "ymd")]
    pub issued_at: Date,
    /// The first day the licence is valid.
    #[serde(with = "ymd")]
    pub not_before: Date,
    /// The last day the licence is valid; none: it never expires.
    #[serde(default, with = "ymd_opt", skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Date>,
    /// The instances the customer paid for (at least 1).
    pub servers: u32,
    /// Extra instances tolerated beyond `servers`, so a rolling deploy never runs short.
    #[serde(default = "default_allowance")]
    pub allowance: u32,
    /// Named extras, for later use.
    #[serde(default)]
    pub features: Vec<String>,
}

fn default_allowance() -> u32 {
    1
}

impl Claims {
    /// The rules a key's claims must satisfy beyond their types, checked when a key is issued
    /// and again when it is read.
    pub fn check(&self) -> Result<(), KeyError> {
        for (field, value) in [
            ("kid", &self.kid),
            ("id", &self.id),
            ("customer", &self.customer),
        ] {
            if value.trim().is_empty() {
                return Err(invalid(field, "must not be empty"));
            }
        }
        if self.servers == 0 {
            return Err(invalid("servers", "must be at least 1"));
        }
        if let Some(expires) = self.expires_at
            && expires < self.not_before
        {
            return Err(invalid("expires_at", "is before not_before"));
        }
        if self.features.iter().any(|f| f.trim().is_empty()) {
            return Err(invalid("features", "an entry is empty"));
        }
        Ok(())
    }
}

/// A key whose signature was verified against the keyring and whose claims are valid. Only
/// `parse_and_verify` makes one, so holding a `License` means the vendor issued it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct License {
    claims: Claims,
}

impl License {
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// Instances that may hold a seat at once: the servers plus the allowance.
    pub fn seats(&self) -> u32 {
        self.claims.servers.saturating_add(self.claims.allowance)
    }
}

/// The part of a key an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The whole text: how many parts it has.
    Layout,
    Prefix,
    Claims,
    Signature,
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Part::Layout => "layout",
            Part::Prefix => "prefix (first part)",
            Part::Claims => "claims (second part)",
            Part::Signature => "signature (third part)",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("malformed licence key: {part}: {reason}")]
    Malformed { part: Part, reason: String },
    #[error("licence key signed with key id {kid:?}, which this build does not trust")]
    UnknownKid { kid: String },
    #[error(
        "licence key signature does not match its contents (key id {kid:?}): \
         the key was altered or not issued by Quire's vendor"
    )]
    BadSignature { kid: String },
    #[error("licence key claim `{field}` is invalid: {reason}")]
    ClaimsInvalid { field: String, reason: String },
}

fn malformed(part: Part, reason: impl Into<String>) -> KeyError {
    KeyError::Malformed {
        part,
        reason: reason.into(),
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> KeyError {
    KeyError::ClaimsInvalid {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Signs `claims` with `key` into a licence key. The claims are checked first, so the vendor
/// cannot issue a key that every instance would refuse.
pub fn issue(claims: &Claims, key: &SigningKey) -> Result<String, KeyError> {
    claims.check()?;
    let json = serde_json::to_vec(claims).expect("claims are strings, numbers and dates");
    let signed = format!("{PREFIX}.{}", URL_SAFE_NO_PAD.encode(json));
    let signature = key.sign(signed.as_bytes());
    Ok(format!(
        "{signed}.{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    ))
}

/// Reads a licence key and verifies it against `keyring`. Surrounding whitespace is ignored (a
/// key pasted into a file or a variable often carries a newline). The signature is checked
/// before the claims are: claims nobody signed are not worth judging.
pub fn parse_and_verify(text: &str, keyring: &Keyring) -> Result<License, KeyError> {
    let parts = split(text.trim())?;
    let claims_json = URL_SAFE_NO_PAD
        .decode(parts.claims)
        .map_err(|_| malformed(Part::Claims, "not base64url without padding"))?;
    let signature = decode_signature(parts.signature)?;
    let kid = kid_of(&claims_json)?;
    let public = keyring
        .get(&kid)
        .ok_or_else(|| KeyError::UnknownKid { kid: shown(&kid) })?;
    public
        .verify_strict(parts.signed.as_bytes(), &signature)
        .map_err(|_| KeyError::BadSignature { kid: shown(&kid) })?;
    let claims = decode_claims(&claims_json)?;
    claims.check()?;
    Ok(License { claims })
}

/// A key cut into its parts; `signed` is the text the signature covers.
struct Parts<'a> {
    signed: &'a str,
    claims: &'a str,
    signature: &'a str,
}

fn split(text: &str) -> Result<Parts<'_>, KeyError> {
    let pieces: Vec<&str> = text.split('.').collect();
    let [prefix, claims, signature] = pieces[..] else {
        return Err(malformed(
            Part::Layout,
            format!(
                "expected three parts separated by dots ({PREFIX}.<claims>.<signature>), found {}",
                pieces.len()
            ),
        ));
    };
    if prefix != PREFIX {
        return Err(malformed(
            Part::Prefix,
            format!("expected `{PREFIX}` (not a Quire licence key, or one for another version)"),
        ));
    }
    let signed = &text[..prefix.len() + 1 + claims.len()];
    Ok(Parts {
        signed,
        claims,
        signature,
    })
}

fn decode_signature(text: &str) -> Result<Signature, KeyError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| malformed(Part::Signature, "not base64url without padding"))?;
    Signature::from_slice(&bytes)
        .map_err(|_| malformed(Part::Signature, "not an Ed25519 signature (64 bytes)"))
}

/// The kid, read before the signature is checked because it says which key to check with.
fn kid_of(claims_json: &[u8]) -> Result<String, KeyError> {
    #[derive(Deserialize)]
    struct KidOnly {
        kid: String,
    }
    serde_json::from_slice::<KidOnly>(claims_json)
        .map(|k| k.kid)
        .map_err(|_| malformed(Part::Claims, "not a JSON object with a string `kid`"))
}

fn decode_claims(json: &[u8]) -> Result<Claims, KeyError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let claims: Claims = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let message = without_position(&e.inner().to_string());
        let field = if e.path().iter().next().is_some() {
            e.path().to_string()
        } else {
            // A missing or unknown field is reported at the root; serde names it in the message.
            backticked(&message).unwrap_or("claims").to_owned()
        };
        invalid(&field, message)
    })?;
    de.end()
        .map_err(|_| malformed(Part::Claims, "text after the JSON object"))?;
    Ok(claims)
}

/// serde_json's message without " at line 1 column 42": the claims are one line nobody sees.
fn without_position(message: &str) -> String {
    match message.rsplit_once(" at line ") {
        Some((head, _)) => head.to_owned(),
        None => message.to_owned(),
    }
}

fn backticked(message: &str) -> Option<&str> {
    let (_, rest) = message.split_once('`')?;
    rest.split_once('`').map(|(name, _)| name)
}

/// An unverified kid as messages show it: cut to a sane length.
fn shown(kid: &str) -> String {
    kid.chars().take(KID_SHOWN).collect()
}

/// Reads a date written `YYYY-MM-DD`, and nothing else: jiff alone would also take a date with
/// a time, which a claim must not carry.
pub fn parse_ymd(text: &str) -> Option<Date> {
    let b = text.as_bytes();
    let shaped = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if shaped { text.parse().ok() } else { None }
}

const YMD_EXPECTED: &str = "a date written YYYY-MM-DD";

mod ymd {
    use jiff::civil::Date;
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(date: &Date, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(date)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Date, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_ymd(&text).ok_or_else(|| D::Error::custom(super::YMD_EXPECTED))
    }
}

mod ymd_opt {
    use jiff::civil::Date;
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(date: &Option<Date>, s: S) -> Result<S::Ok, S::Error> {
        match date {
            Some(date) => s.collect_str(date),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Date>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => super::parse_ymd(&text)
                .map(Some)
                .ok_or_else(|| D::Error::custom(super::YMD_EXPECTED)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::TEST_KID;
    use crate::license::signing::test_signing_key;
    use jiff::civil::date;

    fn claims() -> Claims {
        Claims {
            kid: TEST_KID.to_owned(),
            id: "L-2026-0042".to_owned(),
            customer: "Acme Reports GmbH".to_owned(),
            issued_at: date(2026, 5, 1),
            not_before: date(2026, 5, 1),
            expires_at: Some(date(2027, 12, 31)),
            servers: 3,
            allowance: 1,
            features: vec!["sso".to_owned()],
        }
    }

    fn dev() -> Keyring {
        Keyring::builtin_for(false)
    }

    /// A key signed with the test key over hand-written claims JSON, for claims `issue` would
    /// refuse to sign.
    fn sign_raw(json: &str) -> String {
        let signed = format!("{PREFIX}.{}", URL_SAFE_NO_PAD.encode(json));
        let signature = test_signing_key().sign(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    fn field_of(err: KeyError) -> String {
        match err {
            KeyError::ClaimsInvalid { field, .. } => field,
            other => panic!("expected ClaimsInvalid, got {other:?}"),
        }
    }

    #[test]
    fn round_trip() {
        let key = issue(&claims(), &test_signing_key()).unwrap();
        assert!(key.starts_with("quire1."));
        let license = parse_and_verify(&key, &dev()).unwrap();
        assert_eq!(license.claims(), &claims());
        assert_eq!(license.seats(), 4);
        // Pasted with a newline, as from a file.
        assert!(parse_and_verify(&format!("  {key}\n"), &dev()).is_ok());
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let key = issue(&claims(), &test_signing_key()).unwrap();
        for (i, original) in key.char_indices() {
            for replacement in ['A', 'b', '0', '-', '_', '.', '+', '='] {
                if replacement == original {
                    continue;
                }
                let mut tampered = key.clone();
                tampered.replace_range(i..i + 1, &replacement.to_string());
                let err = parse_and_verify(&tampered, &dev())
                    .expect_err(&format!("changed byte {i} to {replacement:?}: accepted"));
                assert!(
                    matches!(
                        err,
                        KeyError::BadSignature { .. }
                            | KeyError::Malformed { .. }
                            | KeyError::UnknownKid { .. }
                    ),
                    "byte {i} -> {replacement:?}: {err:?}"
                );
            }
        }
    }

    #[test]
    fn errors_never_quote_the_key() {
        let key = issue(&claims(), &test_signing_key()).unwrap();
        let (head, sig) = key.rsplit_once('.').unwrap();
        let mut sig = sig.to_owned();
        let first = if sig.starts_with('A') { "B" } else { "A" };
        sig.replace_range(0..1, first);
        let err = parse_and_verify(&format!("{head}.{sig}"), &dev()).unwrap_err();
        let message = err.to_string();
        let (_, claims_part) = head.split_once('.').unwrap();
        assert!(
            !message.contains(claims_part) && !message.contains(&sig),
            "{message}"
        );
        assert!(matches!(err, KeyError::BadSignature { .. }), "{err:?}");
    }

    #[test]
    fn malformed_keys_name_the_part() {
        let key = issue(&claims(), &test_signing_key()).unwrap();
        let (prefix_claims, sig) = key.rsplit_once('.').unwrap();
        let part = |text: &str| match parse_and_verify(text, &dev()) {
            Err(KeyError::Malformed { part, .. }) => part,
            other => panic!("expected Malformed, got {other:?}"),
        };
        assert_eq!(part(""), Part::Layout);
        assert_eq!(part(prefix_claims), Part::Layout);
        assert_eq!(part(&format!("{key}.x")), Part::Layout);
        assert_eq!(part(&key.replacen("quire1", "quire2", 1)), Part::Prefix);
        assert_eq!(part(&format!("quire1.!!!.{sig}")), Part::Claims);
        let not_json = URL_SAFE_NO_PAD.encode("not json");
        assert_eq!(part(&format!("quire1.{not_json}.{sig}")), Part::Claims);
        assert_eq!(part(&format!("{prefix_claims}.!!!")), Part::Signature);
        let short = URL_SAFE_NO_PAD.encode([0u8; 32]);
        assert_eq!(part(&format!("{prefix_claims}.{short}")), Part::Signature);
    }

    #[test]
    fn unknown_kid_is_named() {
        let mut other = claims();
        other.kid = "prod-9".to_owned();
        let key = issue(&other, &test_signing_key()).unwrap();
        let err = parse_and_verify(&key, &dev()).unwrap_err();
        assert_eq!(
            err,
            KeyError::UnknownKid {
                kid: "prod-9".to_owned()
            }
        );
        assert!(err.to_string().contains("\"prod-9\""), "{err}");
    }

    #[test]
    fn a_key_signed_by_another_key_under_a_trusted_kid_is_refused() {
        let impostor = SigningKey::from_bytes(&[7u8; 32]);
        let key = issue(&claims(), &impostor).unwrap();
        assert!(matches!(
            parse_and_verify(&key, &dev()),
            Err(KeyError::BadSignature { .. })
        ));
    }

    #[test]
    fn issue_refuses_invalid_claims() {
        let mut zero = claims();
        zero.servers = 0;
        assert_eq!(
            field_of(issue(&zero, &test_signing_key()).unwrap_err()),
            "servers"
        );
        let mut backwards = claims();
        backwards.expires_at = Some(date(2026, 4, 30));
        assert_eq!(
            field_of(issue(&backwards, &test_signing_key()).unwrap_err()),
            "expires_at"
        );
        let mut nameless = claims();
        nameless.customer = " ".to_owned();
        assert_eq!(
            field_of(issue(&nameless, &test_signing_key()).unwrap_err()),
            "customer"
        );
    }

    #[test]
    fn signed_but_invalid_claims_name_the_field() {
        let base = r#""kid":"test-1","id":"L-1","customer":"Acme","issued_at":"2026-05-01","not_before":"2026-05-01""#;
        let field = |rest: &str| {
            let key = sign_raw(&format!("{{{base}{rest}}}"));
            field_of(parse_and_verify(&key, &dev()).unwrap_err())
        };
        assert_eq!(field(r#","servers":0"#), "servers");
        assert_eq!(field(""), "servers");
        assert_eq!(field(r#","servers":-1"#), "servers");
        assert_eq!(
            field(r#","servers":2,"expires_at":"2027-12-31T00:00:00Z""#),
            "expires_at"
        );
        assert_eq!(
            field(r#","servers":2,"expires_at":"31.12.2027""#),
            "expires_at"
        );
        assert_eq!(field(r#","servers":2,"seats":9"#), "seats");
        assert_eq!(field(r#","servers":2,"features":[""]"#), "features");
        assert_eq!(field(r#","servers":2,"allowance":"one""#), "allowance");
    }

    #[test]
    fn defaults_for_allowance_features_and_expiry() {
        let key = sign_raw(
            r#"{"kid":"test-1","id":"L-1","customer":"Acme","issued_at":"2026-05-01","not_before":"2026-05-01","servers":2}"#,
        );
        let license = parse_and_verify(&key, &dev()).unwrap();
        assert_eq!(license.claims().allowance, 1);
        assert!(license.claims().features.is_empty());
        assert_eq!(license.claims().expires_at, None);
        assert_eq!(license.seats(), 3);
    }

    #[test]
    fn dates_are_year_month_day_only() {
        assert_eq!(parse_ymd("2027-12-31"), Some(date(2027, 12, 31)));
        for bad in [
            "2027-2-01",
            "2027-02-30",
            "2027-12-31T00:00",
            "27-12-31",
            "+02027-12-3",
        ] {
            assert_eq!(parse_ymd(bad), None, "{bad}");
        }
    }
}
