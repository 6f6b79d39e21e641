//! The instance id: one per process, fresh at every start, so a restarted process never inherits
//! the identity (leases, claims, seats) of the one it replaces.

use rand::Rng;

/// `<name>-<6 hex>`, where name is `instance_name`, else App Service's `WEBSITE_INSTANCE_ID`
/// (shortened), else the host name.
pub fn new_id(instance_name: Option<&str>, env: &[(String, String)]) -> String {
    let base = instance_name
        .map(str::to_owned)
        .or_else(|| {
            env.iter()
                .find(|(k, _)| k == "WEBSITE_INSTANCE_ID")
                .map(|(_, v)| v.chars().take(12).collect())
        })
        .unwrap_or_else(hostname);
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let suffix: u32 = rand::rng().random_range(0..0x100_0000);
    format!("{}-{suffix:06x}", clean.trim_matches('-'))
}

/// This machine's host name, or `quire` when it has none.
pub fn hostname() -> String {
    let name = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    if name.is_empty() {
        "quire".to_owned()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_fresh_and_carry_the_name() {
        let a = new_id(Some("Web 1"), &[]);
        let b = new_id(Some("Web 1"), &[]);
        assert!(a.starts_with("web-1-"), "{a}");
        assert_ne!(a, b);
        let env = vec![(
            "WEBSITE_INSTANCE_ID".to_owned(),
            "4f1b3c0a9e8d7c6b5a49".to_owned(),
        )];
        assert!(new_id(None, &env).starts_with("4f1b3c0a9e8d-"));
    }
}
