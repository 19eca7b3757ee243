//! Schema migrations: one mechanism for both stores.
//!
//! Each backend has an ordered list of [`Migration`]s, numbered from 1; a
//! schema's version is the number of the last one applied (0: empty).
//! Opening a store applies the missing ones, idempotently: SQLite one per
//! transaction, its version in `PRAGMA user_version`; PostgreSQL all in one
//! transaction under an advisory lock, its version in `schema_migrations`,
//! so that of replicas starting together one migrates while the others
//! wait, then find nothing to do. A schema newer than the list is refused
//! ([`StoreError::SchemaTooNew`]): a build that does not know a table or a
//! column must not write beside it.
//!
//! Released entries are never edited: a change is a new entry, in each
//! backend that needs it.

use std::sync::Arc;

use serde::Serialize;

use super::StoreError;

/// One step of a schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// Its position in the list, from 1: the schema version once applied.
    pub version: i64,
    /// What it does, for `store status`.
    pub name: &'static str,
    pub sql: &'static str,
}

/// The SQLite store's schema.
pub const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "decisions, findings and the per-sink outbox",
        sql: include_str!("migrations/sqlite/0001_decisions_findings_outbox.sql"),
    },
    Migration {
        version: 2,
        name: "the endpoint joins the dedupe key",
        sql: include_str!("migrations/sqlite/0002_endpoint_in_dedupe_key.sql"),
    },
    Migration {
        version: 3,
        name: "the undecided retry budget",
        sql: include_str!("migrations/sqlite/0003_undecided_retry_budget.sql"),
    },
    Migration {
        version: 4,
        name: "exceptions: excepted findings are kept, owed to no sink",
        sql: include_str!("migrations/sqlite/0004_exceptions.sql"),
    },
    Migration {
        version: 5,
        name: "the repeat/update memory of sent alerts",
        sql: include_str!("migrations/sqlite/0005_sent_alert_memory.sql"),
    },
    Migration {
        version: 6,
        name: "the scan checkpoint",
        sql: include_str!("migrations/sqlite/0006_scan_checkpoint.sql"),
    },
    Migration {
        version: 7,
        name: "triage state and the resolutions outbox",
        sql: include_str!("migrations/sqlite/0007_triage.sql"),
    },
    Migration {
        version: 8,
        name: "alerts in flight: sent, perhaps, but not yet remembered",
        sql: include_str!("migrations/sqlite/0008_alerts_in_flight.sql"),
    },
];

/// The PostgreSQL store's schema.
pub const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "decisions, findings and the per-sink outbox",
        sql: include_str!("migrations/postgres/0001_decisions_findings_outbox.sql"),
    },
    Migration {
        version: 2,
        name: "the undecided retry budget",
        sql: include_str!("migrations/postgres/0002_undecided_retry_budget.sql"),
    },
    Migration {
        version: 3,
        name: "exceptions: excepted findings are kept, owed to no sink",
        sql: include_str!("migrations/postgres/0003_exceptions.sql"),
    },
    Migration {
        version: 4,
        name: "the repeat/update memory of sent alerts",
        sql: include_str!("migrations/postgres/0004_sent_alert_memory.sql"),
    },
    Migration {
        version: 5,
        name: "the scan checkpoint",
        sql: include_str!("migrations/postgres/0005_scan_checkpoint.sql"),
    },
    Migration {
        version: 6,
        name: "triage state and the resolutions outbox",
        sql: include_str!("migrations/postgres/0006_triage.sql"),
    },
    Migration {
        version: 7,
        name: "alerts in flight: sent, perhaps, but not yet remembered",
        sql: include_str!("migrations/postgres/0007_alerts_in_flight.sql"),
    },
];

/// Which store a schema belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    pub fn migrations(self) -> &'static [Migration] {
        match self {
            Backend::Sqlite => SQLITE,
            Backend::Postgres => POSTGRES,
        }
    }

    /// The newest schema version this build knows.
    pub fn known_version(self) -> i64 {
        self.migrations().last().map_or(0, |m| m.version)
    }
}

/// Where a store's schema stands against what this build knows
/// (`image-auditor store status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaStatus {
    pub backend: Backend,
    /// The store as messages name it (a PostgreSQL URL without password).
    pub store: String,
    /// The newest version this build knows.
    pub known: i64,
    /// The version found: 0 for an empty database or no file yet.
    pub found: i64,
    /// What migrating would apply, oldest first; empty when up to date or
    /// when the schema is newer than this build (see [`Self::too_new`]).
    pub pending: Vec<PendingMigration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingMigration {
    pub version: i64,
    pub name: &'static str,
}

impl SchemaStatus {
    pub fn new(backend: Backend, store: impl Into<String>, found: i64) -> SchemaStatus {
        let pending = backend
            .migrations()
            .iter()
            .filter(|m| m.version > found)
            .map(|m| PendingMigration {
                version: m.version,
                name: m.name,
            })
            .collect();
        SchemaStatus {
            backend,
            store: store.into(),
            known: backend.known_version(),
            found,
            pending,
        }
    }

    /// A newer build wrote this schema: this one refuses to open it.
    pub fn too_new(&self) -> bool {
        self.found > self.known
    }

    pub fn up_to_date(&self) -> bool {
        self.found == self.known
    }
}

/// The migrations of `backend` to apply to a schema at version `found`,
/// oldest first, or the error naming `store` when the schema is newer than
/// this build knows.
pub(crate) fn pending(
    backend: Backend,
    found: i64,
    store: &Arc<str>,
) -> Result<&'static [Migration], StoreError> {
    let all = backend.migrations();
    let known = backend.known_version();
    if found > known {
        return Err(StoreError::SchemaTooNew {
            path: store.clone(),
            found,
            supported: known,
        });
    }
    let applied = usize::try_from(found.max(0)).unwrap_or(usize::MAX);
    Ok(&all[applied.min(all.len())..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_from_one_without_gaps() {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            for (i, m) in backend.migrations().iter().enumerate() {
                assert_eq!(m.version, i as i64 + 1, "{} {}", backend.as_str(), m.name);
                assert!(!m.sql.trim().is_empty(), "{}", m.name);
            }
        }
    }

    #[test]
    fn what_is_pending_follows_the_version_found() {
        let store: Arc<str> = "test".into();
        let known = Backend::Sqlite.known_version();
        assert_eq!(pending(Backend::Sqlite, 0, &store).unwrap(), SQLITE);
        assert_eq!(pending(Backend::Sqlite, 1, &store).unwrap(), &SQLITE[1..]);
        assert!(pending(Backend::Sqlite, known, &store).unwrap().is_empty());
        let err = pending(Backend::Sqlite, known + 1, &store).unwrap_err();
        assert!(
            matches!(err, StoreError::SchemaTooNew { found, supported, .. }
                if found == known + 1 && supported == known),
            "{err}"
        );

        let status = SchemaStatus::new(Backend::Postgres, "db", 1);
        assert_eq!(
            status.pending.iter().map(|m| m.version).collect::<Vec<_>>(),
            (2..=Backend::Postgres.known_version()).collect::<Vec<_>>()
        );
        assert!(!status.up_to_date() && !status.too_new());
        let status = SchemaStatus::new(Backend::Postgres, "db", 99);
        assert!(status.too_new() && status.pending.is_empty());
    }
}
