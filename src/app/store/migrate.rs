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
}
