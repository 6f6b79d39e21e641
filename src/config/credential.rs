//! What counts as a credential in a URL's query or a connection string, and what a hidden value
//! is shown as. Shared by the connection-string converter (its errors never quote a credential)
//! and by redaction.

/// What a hidden value is shown as.
pub const MASK: &str = "***";

/// Query parameter and connection-string keywords (compared without case, spaces, `_` and `-`)
/// whose value is a credential.
const CREDENTIAL_KEYS: &[&str] = &[
    "user",
    "username",
    "userid",
    "uid",
    "login",
    "pass",
    "passwd",
    "pwd",
    "auth",
    "authorization",
    "credentials",
    "jwt",
    "nkey",
    "seed",
    "sig",
    "signature",
];

/// Endings that make a keyword a credential: `sslpassword`, `access_token`, `client_secret`,
/// `apikey`, `sslkey`.
const CREDENTIAL_SUFFIXES: &[&str] = &["password", "passphrase", "token", "secret", "key"];

/// Whether a query parameter or connection-string keyword names a credential.
pub fn is_credential_key(key: &str) -> bool {
    let k: String = key
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect();
    CREDENTIAL_KEYS.contains(&k.as_str()) || CREDENTIAL_SUFFIXES.iter().any(|s| k.ends_with(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_keys_are_recognized_in_any_spelling() {
        for k in [
            "password",
            "Password",
            "PWD",
            "sslpassword",
            "access_token",
            "api-key",
            "apikey",
            "client_secret",
            "User Id",
            "token",
        ] {
            assert!(is_credential_key(k), "{k}");
        }
        for k in ["host", "sslmode", "tls", "application_name", "Database"] {
            assert!(!is_credential_key(k), "{k}");
        }
    }
}
