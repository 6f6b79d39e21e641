//! Schema migrations: numbered SQL files per backend, applied in order inside one transaction and
//! recorded with a checksum so an edited, already-applied migration is noticed.
//!
//! Migrations are expand/contract: a release only adds (tables, nullable columns, indexes) and
//! removes what the previous release no longer reads, so version N and N-1 run side by side
//! during a rolling upgrade. A database newer than this binary is therefore accepted.

use sha2::{Digest, Sha256};

/// One numbered migration of one backend.
pub(crate) struct Migration {
    /// The same number, and the same name, in every backend.
    pub(crate) version: i64,
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
}

impl Migration {
    /// What `schema_migrations` records of the text, to notice an applied migration edited later.
    pub(crate) fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }
}

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("migration {version} ({name}) was changed after it was applied (checksum differs)")]
    Changed { version: i64, name: String },
    #[error("migration {version} ({name}) failed: {source}")]
    Failed {
        version: i64,
        name: String,
        source: sqlx::Error,
    },
}

/// SQLite's migrations. Each has a PostgreSQL twin that differs only as the drift test allows.
pub(crate) const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "cluster",
        sql: include_str!("migrations/sqlite/0002_cluster.sql"),
    },
    Migration {
        version: 3,
        name: "schedules",
        sql: include_str!("migrations/sqlite/0003_schedules.sql"),
    },
    Migration {
        version: 4,
        name: "datasources",
        sql: include_str!("migrations/sqlite/0004_datasources.sql"),
    },
    Migration {
        version: 5,
        name: "queries",
        sql: include_str!("migrations/sqlite/0005_queries.sql"),
    },
    Migration {
        version: 6,
        name: "bursts",
        sql: include_str!("migrations/sqlite/0006_bursts.sql"),
    },
    Migration {
        version: 7,
        name: "datasource_files",
        sql: include_str!("migrations/sqlite/0007_datasource_files.sql"),
    },
    Migration {
        version: 8,
        name: "agents",
        sql: include_str!("migrations/sqlite/0008_agents.sql"),
    },
    Migration {
        version: 9,
        name: "dr",
        sql: include_str!("migrations/sqlite/0009_dr.sql"),
    },
    Migration {
        version: 10,
        name: "license",
        sql: include_str!("migrations/sqlite/0010_license.sql"),
    },
];

/// PostgreSQL's migrations.
pub(crate) const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "cluster",
        sql: include_str!("migrations/postgres/0002_cluster.sql"),
    },
    Migration {
        version: 3,
        name: "schedules",
        sql: include_str!("migrations/postgres/0003_schedules.sql"),
    },
    Migration {
        version: 4,
        name: "datasources",
        sql: include_str!("migrations/postgres/0004_datasources.sql"),
    },
    Migration {
        version: 5,
        name: "queries",
        sql: include_str!("migrations/postgres/0005_queries.sql"),
    },
    Migration {
        version: 6,
        name: "bursts",
        sql: include_str!("migrations/postgres/0006_bursts.sql"),
    },
    Migration {
        version: 7,
        name: "datasource_files",
        sql: include_str!("migrations/postgres/0007_datasource_files.sql"),
    },
    Migration {
        version: 8,
        name: "agents",
        sql: include_str!("migrations/postgres/0008_agents.sql"),
    },
    Migration {
        version: 9,
        name: "dr",
        sql: include_str!("migrations/postgres/0009_dr.sql"),
    },
    Migration {
        version: 10,
        name: "license",
        sql: include_str!("migrations/postgres/0010_license.sql"),
    },
];

/// Which migrations still need to run, given what the database recorded.
pub(crate) fn pending<'a>(
    all: &'a [Migration],
    applied: &[(i64, String)],
) -> Result<Vec<&'a Migration>, MigrationError> {
    let mut out = Vec::new();
    for m in all {
        match applied.iter().find(|(v, _)| *v == m.version) {
            Some((_, sum)) if *sum != m.checksum() => {
                return Err(MigrationError::Changed {
                    version: m.version,
                    name: m.name.to_owned(),
                });
            }
            Some(_) => {}
            None => out.push(m),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_skips_applied_and_catches_edits() {
        let all = SQLITE;
        assert_eq!(pending(all, &[]).unwrap().len(), all.len());
        let applied: Vec<_> = all.iter().map(|m| (m.version, m.checksum())).collect();
        assert!(pending(all, &applied).unwrap().is_empty());
        let tampered = vec![(1, "0".repeat(64))];
        assert!(matches!(
            pending(all, &tampered),
            Err(MigrationError::Changed { version: 1, .. })
        ));
    }

    #[test]
    fn both_backends_have_the_same_versions_in_order() {
        assert!(SQLITE.windows(2).all(|w| w[0].version < w[1].version));
        let names = |ms: &[Migration]| ms.iter().map(|m| (m.version, m.name)).collect::<Vec<_>>();
        assert_eq!(names(SQLITE), names(POSTGRES));
    }

    /// PostgreSQL's names for the column types SQLite's migrations use: the PostgreSQL text with
    /// these words replaced must equal the SQLite text, except for the `DIFFERENCES`.
    const TYPES: &[(&str, &str)] = &[("BIGINT", "INTEGER"), ("BYTEA", "BLOB")];

    /// A part of one migration written differently per backend, cut from both texts before they
    /// are compared: from the line starting with `from` up to (not including) the next line
    /// starting with `until`. Keeping the two parts equivalent is left to review.
    struct Difference {
        version: i64,
        from: &'static str,
        until: &'static str,
    }

    const DIFFERENCES: &[Difference] = &[
        // The lease history triggers. SQLite's are two trigger statements with a WHEN clause;
        // PostgreSQL's trigger calls one plpgsql function that handles both cases. Both end the
        // previous term ('expired' when a new term starts, 'released' when the holder gives the
        // role up) and open the new one.
        Difference {
            version: 2,
            from: "-- History is written by",
            until: "-- Bumped when something instances cache changes",
        },
    ];

    /// Replaces `from` by `to` where it stands as a whole word (not inside an identifier).
    fn replace_word(text: &str, from: &str, to: &str) -> String {
        let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
        let mut out = String::with_capacity(text.len());
        let mut copied = 0;
        for (at, _) in text.match_indices(from) {
            let before = text[..at].chars().next_back();
            let after = text[at + from.len()..].chars().next();
            if !before.is_some_and(is_word) && !after.is_some_and(is_word) {
                out.push_str(&text[copied..at]);
                out.push_str(to);
                copied = at + from.len();
            }
        }
        out.push_str(&text[copied..]);
        out
    }

    /// `text` with each difference of `version` replaced by one line naming it; an error when a
    /// listed difference is not found (so the list cannot outlive what it describes).
    fn cut_differences(text: &str, version: i64) -> Result<Vec<String>, String> {
        let mut lines: Vec<String> = text.lines().map(|l| l.trim_end().to_owned()).collect();
        for d in DIFFERENCES.iter().filter(|d| d.version == version) {
            let starts = |l: &String, prefix: &str| l.trim_start().starts_with(prefix);
            let from = lines
                .iter()
                .position(|l| starts(l, d.from))
                .ok_or_else(|| format!("no line starts with {:?}", d.from))?;
            let len = lines[from..]
                .iter()
                .position(|l| starts(l, d.until))
                .ok_or_else(|| format!("no line starts with {:?} after {:?}", d.until, d.from))?;
            lines.splice(
                from..from + len,
                [format!("-- (written per backend: {})", d.from)],
            );
        }
        Ok(lines)
    }

    #[test]
    fn postgres_migrations_differ_from_sqlite_only_in_types_and_listed_parts() {
        assert_eq!(SQLITE.len(), POSTGRES.len());
        for (lite, pg) in SQLITE.iter().zip(POSTGRES) {
            let normalized = TYPES.iter().fold(pg.sql.to_owned(), |t, (from, to)| {
                replace_word(&t, from, to)
            });
            let where_ =
                |backend: &str| format!("migration {} ({}), {backend}", lite.version, lite.name);
            let lite_lines = cut_differences(lite.sql, lite.version)
                .unwrap_or_else(|e| panic!("{}: {e}", where_("sqlite")));
            let pg_lines = cut_differences(&normalized, pg.version)
                .unwrap_or_else(|e| panic!("{}: {e}", where_("postgres")));
            for (i, (l, p)) in lite_lines.iter().zip(&pg_lines).enumerate() {
                assert_eq!(
                    l,
                    p,
                    "{}: line {} (after cutting the listed differences) drifted from \
                     PostgreSQL's (types normalized: {TYPES:?})",
                    where_("sqlite"),
                    i + 1,
                );
            }
            assert_eq!(
                lite_lines.len(),
                pg_lines.len(),
                "{}: the two texts differ in length",
                where_("sqlite")
            );
        }
    }

    #[test]
    fn types_are_replaced_as_whole_words_only() {
        assert_eq!(
            replace_word("a BIGINT, b BIGINT_X, BIGINT", "BIGINT", "INTEGER"),
            "a INTEGER, b BIGINT_X, INTEGER"
        );
        assert_eq!(replace_word("XBYTEA BYTEA", "BYTEA", "BLOB"), "XBYTEA BLOB");
    }

    #[test]
    fn a_drifted_migration_is_noticed() {
        let lite = "CREATE TABLE t (\n    a INTEGER NOT NULL\n);";
        let pg = "CREATE TABLE t (\n    a BIGINT\n);";
        let normalized = replace_word(pg, "BIGINT", "INTEGER");
        assert_ne!(cut_differences(lite, 1), cut_differences(&normalized, 1));
        assert!(
            cut_differences("no such part", 2).is_err(),
            "a listed difference that is gone fails"
        );
    }
}
