//! Which jobs an instance can run when its agents are reachable only from here (NATS down): a
//! job stores the agent-served data sources it queries as a LIKE pattern, and a claim passes the
//! sources the instance reaches as the text the pattern must match. Names are sorted on both
//! sides, so `%|a|%|c|%` matches `|a||b||c|` exactly when `a` and `c` are both reachable.

use std::collections::BTreeSet;

/// The pattern a job stores for the agent-served sources it queries; `None` when there are none.
pub fn pattern<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let names: BTreeSet<&str> = names.into_iter().collect();
    if names.is_empty() {
        return None;
    }
    let mut out = String::from("%");
    for name in names {
        out.push('|');
        for c in name.chars() {
            // Escaped with the claim's `ESCAPE '\'`: a name's `_` must not match any character.
            if matches!(c, '%' | '_' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push_str("|%");
    }
    Some(out)
}

/// What an instance that reaches `names` passes to a claim.
pub fn reachable<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let names: BTreeSet<&str> = names.into_iter().collect();
    names.iter().map(|n| format!("|{n}|")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// LIKE with `\` as the escape, as the databases evaluate it.
    fn like(text: &str, pattern: &str) -> bool {
        fn go(t: &[char], p: &[char]) -> bool {
            match p.first() {
                None => t.is_empty(),
                Some('%') => (0..=t.len()).any(|i| go(&t[i..], &p[1..])),
                Some('\\') => t.first() == p.get(1) && go(&t[1..], &p[2..]),
                Some('_') => !t.is_empty() && go(&t[1..], &p[1..]),
                Some(c) => t.first() == Some(c) && go(&t[1..], &p[1..]),
            }
        }
        let (t, p): (Vec<char>, Vec<char>) = (text.chars().collect(), pattern.chars().collect());
        go(&t, &p)
    }

    #[test]
    fn a_job_matches_exactly_when_all_its_sources_are_reachable() {
        let job = pattern(["crm", "a_b"]).unwrap();
        assert!(like(&reachable(["a_b", "crm", "zz"]), &job));
        assert!(like(&reachable(["crm", "a_b"]), &job));
        assert!(!like(&reachable(["crm"]), &job));
        assert!(!like(&reachable(["a_b"]), &job));
        // `_` in a name is not a wildcard.
        assert!(!like(&reachable(["axb", "crm"]), &job));
        assert!(!like(&reachable([]), &job));
        assert_eq!(pattern([]), None);
    }
}
