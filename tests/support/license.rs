//! Licence keys for tests, signed with the repository's TEST key (which builds other than the
//! release trust), as the vendor's `issue-license` example signs real ones.

use jiff::civil::Date;
use quire::license::{Claims, issue, read_signing_key};

const TEST_SIGNING_KEY: &str = include_str!("../../src/license/test-signing-key.txt");

/// A key for licence `id` of `servers` servers plus `allowance`, valid from `not_before`
/// through `expires_at`.
pub fn key_for(
    id: &str,
    servers: u32,
    allowance: u32,
    not_before: Date,
    expires_at: Option<Date>,
) -> String {
    let claims = Claims {
        kid: quire::license::TEST_KID.to_owned(),
        id: id.to_owned(),
        customer: "Test Customer".to_owned(),
        issued_at: not_before,
        not_before,
        expires_at,
        servers,
        allowance,
        features: vec![],
    };
    let signing = read_signing_key(TEST_SIGNING_KEY).expect("the TEST signing key reads");
    issue(&claims, &signing).expect("valid claims")
}

/// A key valid today (from 2026-01-01, no expiry).
pub fn key(id: &str, servers: u32, allowance: u32) -> String {
    key_for(id, servers, allowance, jiff::civil::date(2026, 1, 1), None)
}

/// A key with seats for every instance a test cluster starts.
pub fn roomy_key() -> String {
    key("test-cluster", 32, 1)
}
