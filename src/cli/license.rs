//! `quire license show [KEY]`: a licence key decoded and verified offline, against the keyring
//! compiled into this binary. The key itself is never printed: it is a credential.

use std::process::ExitCode;

use jiff::Timestamp;

use crate::license::{Claims, KeyError, Keyring, TEST_KID, Validity, parse_and_verify};

/// What `show` prints, and whether the key licenses today.
#[derive(Debug)]
pub struct Report {
    /// For stdout: the licence's details (empty when the key is invalid).
    pub text: String,
    /// For stderr: why the key licenses nothing (invalid, expired, not yet valid, absent).
    pub problem: Option<String>,
}

impl Report {
    pub fn code(&self) -> ExitCode {
        if self.problem.is_none() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

/// Reports on `key`, which came from `source` (the argument, or `license.key` and its origin).
pub fn show(key: Option<&str>, source: &str, keyring: &Keyring, now: Timestamp) -> Report {
    let Some(key) = key else {
        return Report {
            text: String::new(),
            problem: Some(
                "no licence key: give one as the argument, or set license.key \
                 (without a key Quire runs one instance with everything)"
                    .to_owned(),
            ),
        };
    };
    match parse_and_verify(key, keyring) {
        Ok(license) => {
            let state = license.state_at(now);
            let claims = license.claims();
            Report {
                text: details(claims, license.seats(), source, state),
                problem: (!state.licenses()).then(|| {
                    format!(
                        "the licence key ({source}) licenses nothing today: {}",
                        state_text(claims, state)
                    )
                }),
            }
        }
        Err(e) => Report {
            text: String::new(),
            problem: Some(format!(
                "invalid licence key ({source}): {e}{}",
                trusted_hint(&e, keyring)
            )),
        },
    }
}

fn details(claims: &Claims, seats: u32, source: &str, state: Validity) -> String {
    let signer = if claims.kid == TEST_KID {
        format!("{} (the TEST key: release builds refuse it)", claims.kid)
    } else {
        claims.kid.clone()
    };
    let expires = claims
        .expires_at
        .map_or_else(|| "never".to_owned(), |d| d.to_string());
    let features = if claims.features.is_empty() {
        "none".to_owned()
    } else {
        claims.features.join(", ")
    };
    [
        ("key from", source.to_owned()),
        ("customer", claims.customer.clone()),
        ("licence id", claims.id.clone()),
        ("signed by", signer),
        (
            "servers",
            format!(
                "{} (+{} allowance: {seats} instances may hold a seat)",
                claims.servers, claims.allowance
            ),
        ),
        ("issued", claims.issued_at.to_string()),
        ("valid from", claims.not_before.to_string()),
        ("expires", expires),
        ("features", features),
        ("state", state_text(claims, state)),
    ]
    .iter()
    .map(|(label, value)| format!("{:<12}{value}\n", format!("{label}:")))
    .collect()
}

fn state_text(claims: &Claims, state: Validity) -> String {
    let expires = claims
        .expires_at
        .map_or_else(String::new, |d| d.to_string());
    match state {
        Validity::NotYetValid => format!("not valid before {}", claims.not_before),
        Validity::Valid => "valid".to_owned(),
        Validity::ExpiringSoon { days: 1 } => {
            format!("valid; expires at the end of today ({expires})")
        }
        Validity::ExpiringSoon { days } => {
            format!("valid; expires in {days} days (last day {expires})")
        }
        Validity::InGrace { days_left } => format!(
            "expired on {expires}; still licensed for {days_left} more day(s) of grace, then the free tier"
        ),
        Validity::Expired => format!(
            "expired on {expires} and past its grace period: instances run in the free tier"
        ),
    }
}

/// For an unknown kid, the kids this build trusts: the usual cause is a key signed with the
/// TEST key shown to a release build, or a signing key newer than the binary.
fn trusted_hint(error: &KeyError, keyring: &Keyring) -> String {
    if !matches!(error, KeyError::UnknownKid { .. }) {
        return String::new();
    }
    let kids: Vec<&str> = keyring.kids().collect();
    if kids.is_empty() {
        "; this build trusts no signing key".to_owned()
    } else {
        format!("; this build trusts {}", kids.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn key(expires_at: Option<jiff::civil::Date>) -> String {
        crate::license::signing::test_key(&Claims {
            id: "L-7".to_owned(),
            expires_at,
            servers: 3,
            ..crate::license::signing::test_claims()
        })
    }

    fn now() -> Timestamp {
        "2026-06-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_valid_key_is_described_without_the_key() {
        let key = key(Some(date(2026, 6, 10)));
        let report = show(
            Some(&key),
            "the argument",
            &Keyring::builtin_for(false),
            now(),
        );
        assert!(report.problem.is_none(), "{report:?}");
        assert!(
            report.text.contains("customer:   Acme\n"),
            "{}",
            report.text
        );
        assert!(
            report.text.contains("3 (+1 allowance: 4 instances"),
            "{}",
            report.text
        );
        assert!(
            report.text.contains("expires in 10 days"),
            "{}",
            report.text
        );
        assert!(!report.text.contains(&key));
    }

    #[test]
    fn an_expired_key_fails_with_the_reason() {
        let report = show(
            Some(&key(Some(date(2026, 5, 1)))),
            "the argument",
            &Keyring::builtin_for(false),
            now(),
        );
        assert_eq!(report.code(), ExitCode::FAILURE);
        assert!(report.problem.unwrap().contains("past its grace period"));
    }

    #[test]
    fn the_release_keyring_names_what_it_trusts() {
        let key = key(None);
        let report = show(
            Some(&key),
            "license.key (env X)",
            &Keyring::builtin_for(true),
            now(),
        );
        let problem = report.problem.unwrap();
        assert!(problem.contains("\"test-1\""), "{problem}");
        assert!(problem.contains("license.key (env X)"), "{problem}");
        assert!(!problem.contains(&key));
        assert!(report.text.is_empty());
    }

    #[test]
    fn no_key_is_a_failure() {
        let report = show(None, "license.key", &Keyring::builtin_for(false), now());
        assert_eq!(report.code(), ExitCode::FAILURE);
    }
}
