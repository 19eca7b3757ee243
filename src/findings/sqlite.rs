//! [`Store`] on an embedded SQLite file (WAL, `synchronous=FULL`):
//! opening and migrating, and the trait's queries on the one connection.
//! The group commit is in [`commit`]. Claiming and marking outbox rows is
//! in [`outbox`], triage in [`triage`]; what processes on one file must do
//! once (alert memory, scan checkpoint, locks) in [`shared`]. What a
//! stored row means is `findings::stored`'s.

mod commit;
mod outbox;
mod shared;
mod triage;

use std::path::Path;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};

use super::migrations::{self, Backend, SchemaStatus};
use super::stored::{
    self, Arg, Columns, DECISIONS_BY_VERDICT, FINDING_COLUMNS, StoredFinding, decided_verdict,
    findings_query, tally_decisions,
};
use super::{
    Answer, Counts, Decision, DedupeKey, Finding, FindingId, FindingQuery, Outbox, Queued, Store,
    StoreError, TriageChange, Triaged, WriterQueue,
};
use crate::audit::VerdictKind;

/// The verdict recorded under one dedupe key.
const SELECT_DECISION: &str =
    "SELECT verdict FROM decisions WHERE source = ?1 AND endpoint = ?2 AND event_id = ?3";

/// How long a claim hides a finding from other claims for the same sink.
pub const DEFAULT_CLAIM_LEASE: Duration = Duration::from_secs(60);

/// Rows deleted per transaction by `prune_decisions`, so that `record`
/// never waits long behind retention.
const PRUNE_BATCH: i64 = 5000;

/// The embedded findings store. One connection behind a mutex: every call
/// but `submit` blocks, so async callers use `spawn_blocking`.
///
/// Durability: WAL with `synchronous=FULL`, so a transaction is fsynced to
/// the WAL before a decision is answered and survives power loss, not only
/// a process crash (`NORMAL` would lose the last commits on power loss,
/// after their deliveries were acknowledged). Decisions are written by the
/// store's writer thread ([`commit`]), everything queued in one transaction
/// and one fsync (group commit); each is answered only after the commit
/// that carries it.
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// The queue of the writer thread that group-commits decisions
    /// ([`commit`]).
    writer: Sender<Queued>,
    /// A second connection for `decision`, the dedupe lookup of every
    /// delivery: with WAL it reads while a group commit is being fsynced.
    /// `None` in memory, where there is one database per connection.
    reader: Option<Mutex<Connection>>,
    path: Arc<str>,
    claim_lease_ms: i64,
    /// A file, not a database in memory: locks are file locks.
    file: bool,
    /// The locks held, for a store in memory.
    locks: shared::MemoryLocks,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating it and its parent directories when missing) the
    /// store at `path`, and brings its schema up to date.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: path.to_path_buf(),
                dir: dir.to_path_buf(),
                source,
            })?;
        }
        let name: Arc<str> = path.display().to_string().into();
        let conn = Connection::open(path).map_err(|e| sql_error(&name, e))?;
        let reader = Connection::open(path).map_err(|e| sql_error(&name, e))?;
        Self::init(conn, Some(reader), name, true)
    }

    /// A store that lives as long as the value (tests, `check`).
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let name: Arc<str> = ":memory:".into();
        let conn = Connection::open_in_memory().map_err(|e| sql_error(&name, e))?;
        Self::init(conn, None, name, false)
    }

    /// How long a claim hides a finding from further claims for the same
    /// sink (default [`DEFAULT_CLAIM_LEASE`]). Keep it above the longest a
    /// sink takes to deliver, or a slow delivery may be claimed twice.
    pub fn with_claim_lease(mut self, lease: Duration) -> SqliteStore {
        self.claim_lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        self
    }

    /// The schema of the file at `path` against this build's, changing
    /// nothing (no file yet: version 0, everything pending).
    pub fn schema_status(path: impl AsRef<Path>) -> Result<SchemaStatus, StoreError> {
        let path = path.as_ref();
        let name: Arc<str> = path.display().to_string().into();
        if !path.exists() {
            return Ok(SchemaStatus::new(Backend::Sqlite, &*name, 0));
        }
        let err = |e| sql_error(&name, e);
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(err)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        Ok(SchemaStatus::new(Backend::Sqlite, &*name, version))
    }

    /// The path the store was opened at, for messages.
    pub fn path(&self) -> &str {
        &self.path
    }

    fn init(
        mut conn: Connection,
        reader: Option<Connection>,
        path: Arc<str>,
        file: bool,
    ) -> Result<SqliteStore, StoreError> {
        let err = |e| sql_error(&path, e);
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        // The first statement that reads the file: a file that is not a
        // database fails here, named.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(err)?;
        if file && !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path, mode, "findings store: WAL not available, using this journal mode");
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        // Off while migrating: rebuilding a referenced table is only
        // possible without enforcement (the checks run after each step).
        conn.pragma_update(None, "foreign_keys", "OFF")
            .map_err(err)?;
        migrate(&mut conn, &path)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err)?;
        conn.set_prepared_statement_cache_capacity(64);
        let reader = match reader {
            None => None,
            Some(reader) => {
                reader.busy_timeout(Duration::from_secs(5)).map_err(err)?;
                reader.set_prepared_statement_cache_capacity(16);
                Some(Mutex::new(reader))
            }
        };
        let conn = Arc::new(Mutex::new(conn));
        Ok(SqliteStore {
            writer: commit::start(conn.clone(), path.clone())?,
            conn,
            reader,
            path,
            claim_lease_ms: DEFAULT_CLAIM_LEASE.as_millis() as i64,
            file,
            locks: shared::MemoryLocks::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock dropped its transaction (rolled
        // back): the connection is still sound.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sql(&self, source: rusqlite::Error) -> StoreError {
        sql_error(&self.path, source)
    }

    fn corrupt(&self, what: String) -> StoreError {
        stored::corrupt(&self.path, what)
    }

    fn begin<'c>(&self, conn: &'c mut Connection) -> Result<Transaction<'c>, StoreError> {
        begin(&self.path, conn)
    }

    fn finding_by_id(&self, conn: &Connection, id: FindingId) -> Result<Finding, StoreError> {
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {FINDING_COLUMNS} FROM findings f WHERE f.id = ?1"
            ))
            .map_err(|e| self.sql(e))?;
        stmt.query_row([id.0], |r| StoredFinding::read(r))
            .map_err(|e| self.sql(e))?
            .into_finding(&self.path)
    }
}

/// A SQLite failure of the store at `path`.
fn sql_error(path: &Arc<str>, source: rusqlite::Error) -> StoreError {
    StoreError::Sqlite {
        path: path.clone(),
        source,
    }
}

/// A write transaction that takes the file's write lock at once, so a
/// concurrent writer waits at `BEGIN`, not halfway through.
fn begin<'c>(path: &Arc<str>, conn: &'c mut Connection) -> Result<Transaction<'c>, StoreError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| sql_error(path, e))
}

/// Applies the migrations the file lacks, one transaction each (see
/// [`migrations`]).
fn migrate(conn: &mut Connection, path: &Arc<str>) -> Result<(), StoreError> {
    let err = |e| sql_error(path, e);
    loop {
        let tx = begin(path, conn)?;
        // Read inside the write transaction: another process may have
        // migrated since.
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        let Some(next) = migrations::pending(Backend::Sqlite, version, path)?.first() else {
            return Ok(());
        };
        tx.execute_batch(next.sql).map_err(err)?;
        tx.pragma_update(None, "user_version", next.version)
            .map_err(err)?;
        // What enforcement, off while migrating, would have refused.
        let dangling: Option<String> = tx
            .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
            .optional()
            .map_err(err)?;
        if let Some(table) = dangling {
            return Err(StoreError::Corrupt {
                path: path.clone(),
                what: format!(
                    "migration to schema version {} left rows of table {table} whose \
                     references are missing; nothing was changed",
                    next.version
                ),
            });
        }
        tx.commit().map_err(err)?;
    }
}

/// The wall clock in Unix milliseconds: the unit of every stored timestamp.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl WriterQueue for Sender<Queued> {
    fn hand_over(&self, pending: Queued) {
        let _ = self.send(pending);
    }
}

impl Columns for Row<'_> {
    type Error = rusqlite::Error;
    fn int(&self, i: usize) -> rusqlite::Result<i64> {
        self.get(i)
    }
    fn opt_int(&self, i: usize) -> rusqlite::Result<Option<i64>> {
        self.get(i)
    }
    fn text(&self, i: usize) -> rusqlite::Result<String> {
        self.get(i)
    }
    fn opt_text(&self, i: usize) -> rusqlite::Result<Option<String>> {
        self.get(i)
    }
}

impl Store for SqliteStore {
    fn submit(&self, d: Decision) -> Result<Answer, StoreError> {
        Queued::submit(&self.path, &self.writer, d)
    }

    fn decision(&self, key: &DedupeKey) -> Result<Option<VerdictKind>, StoreError> {
        let conn = match &self.reader {
            Some(reader) => reader.lock().unwrap_or_else(PoisonError::into_inner),
            None => self.lock(),
        };
        let found: Option<String> = conn
            .prepare_cached(SELECT_DECISION)
            .and_then(|mut s| s.query_row(key.columns(), |r| r.get(0)).optional())
            .map_err(|e| self.sql(e))?;
        found
            .map(|v| decided_verdict(&self.path, key, &v))
            .transpose()
    }

    fn findings(&self, q: &FindingQuery) -> Result<Vec<Finding>, StoreError> {
        let (sql, args) = findings_query(q, '?');
        let args = args.into_iter().map(|a| match a {
            Arg::Text(s) => rusqlite::types::Value::Text(s),
            Arg::Int(n) => rusqlite::types::Value::Integer(n),
        });
        let mut conn = self.lock();
        // One snapshot for the page and its delivery states.
        let tx = conn.transaction().map_err(|e| self.sql(e))?;
        let raws = {
            let mut stmt = tx.prepare_cached(&sql).map_err(|e| self.sql(e))?;
            stmt.query_map(rusqlite::params_from_iter(args), |r| StoredFinding::read(r))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(|e| self.sql(e))?
        };
        let mut out = Vec::with_capacity(raws.len());
        for raw in raws {
            let mut f = raw.into_finding(&self.path)?;
            f.deliveries = self.outbox_rows(&tx, Outbox::Alerts, f.id, None)?;
            out.push(f);
        }
        Ok(out)
    }

    fn undelivered(&self, sink: &str) -> Result<u64, StoreError> {
        let conn = self.lock();
        conn.prepare_cached(
            "SELECT (SELECT COUNT(*) FROM deliveries WHERE sink = ?1 AND state = 'pending') \
               + (SELECT COUNT(*) FROM findings \
                  WHERE id > COALESCE((SELECT watermark FROM sinks WHERE sink = ?1), 0) \
                    AND excepted_by IS NULL)",
        )
        .and_then(|mut s| s.query_row([sink], |r| r.get::<_, i64>(0)))
        .map(|n| n as u64)
        .map_err(|e| self.sql(e))
    }

    fn counts(&self) -> Result<Counts, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.sql(e))?;
        let decisions = tx
            .prepare_cached(DECISIONS_BY_VERDICT)
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<Vec<(String, i64)>>>()
            })
            .map_err(|e| self.sql(e))?;
        let decisions = tally_decisions(&self.path, decisions)?;
        let count = |sql: &str| -> Result<u64, StoreError> {
            tx.prepare_cached(sql)
                .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
                .map(|n| n as u64)
                .map_err(|e| self.sql(e))
        };
        let findings = count("SELECT COUNT(*) FROM findings")?;
        let excepted = count("SELECT COUNT(*) FROM findings WHERE excepted_by IS NOT NULL")?;
        // Pending for a sink that materialised it, or above the lowest
        // watermark (all findings when no sink is known yet).
        let undelivered = count(
            "SELECT COUNT(*) FROM ( \
               SELECT finding FROM deliveries WHERE state = 'pending' \
               UNION \
               SELECT id FROM findings WHERE id > (SELECT COALESCE(MIN(watermark), 0) FROM sinks) \
                 AND excepted_by IS NULL)",
        )?;
        let undelivered_by_sink = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT s.sink, \
                       (SELECT COUNT(*) FROM deliveries d WHERE d.sink = s.sink AND d.state = 'pending') \
                     + (SELECT COUNT(*) FROM findings f \
                        WHERE f.id > s.watermark AND f.excepted_by IS NULL) \
                     FROM sinks s ORDER BY s.sink",
                )
                .map_err(|e| self.sql(e))?;
            stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.sql(e))?
        };
        Ok(Counts {
            decisions,
            findings,
            excepted,
            undelivered,
            undelivered_by_sink,
        })
    }

    fn prune_decisions(&self, older_than_ms: i64) -> Result<u64, StoreError> {
        let mut total = 0u64;
        loop {
            // Batches, each its own transaction, so `record` waits at most
            // one batch behind retention.
            let mut conn = self.lock();
            let tx = self.begin(&mut conn)?;
            let n = tx
                .prepare_cached(
                    "DELETE FROM decisions WHERE (source, endpoint, event_id) IN ( \
                       SELECT d.source, d.endpoint, d.event_id FROM decisions d \
                       WHERE d.received_at_ms < ?1 AND NOT EXISTS ( \
                         SELECT 1 FROM findings f \
                         WHERE f.source = d.source AND f.endpoint = d.endpoint \
                           AND f.event_id = d.event_id) \
                       LIMIT ?2)",
                )
                .and_then(|mut s| s.execute(params![older_than_ms, PRUNE_BATCH]))
                .map_err(|e| self.sql(e))?;
            tx.commit().map_err(|e| self.sql(e))?;
            total += n as u64;
            if (n as i64) < PRUNE_BATCH {
                break;
            }
        }
        // Budgets of deliveries that stopped coming back undecided long
        // ago: a redelivery now would start a new one.
        self.lock()
            .prepare_cached("DELETE FROM undecided WHERE first_seen_ms < ?1")
            .and_then(|mut s| s.execute([older_than_ms]))
            .map_err(|e| self.sql(e))?;
        Ok(total)
    }

    fn first_undecided(&self, key: &DedupeKey, now_ms: i64) -> Result<i64, StoreError> {
        let [source, endpoint, event_id] = key.columns();
        self.lock()
            .prepare_cached(
                "INSERT INTO undecided (source, endpoint, event_id, first_seen_ms) \
                 VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT DO UPDATE SET first_seen_ms = first_seen_ms \
                 RETURNING first_seen_ms",
            )
            .and_then(|mut s| {
                s.query_row(params![source, endpoint, event_id, now_ms], |r| r.get(0))
            })
            .map_err(|e| self.sql(e))
    }

    fn check(&self) -> Result<(), StoreError> {
        self.lock()
            .query_row("SELECT 1", [], |_| Ok(()))
            .map_err(|e| self.sql(e))
    }

    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn finding(&self, id: FindingId) -> Result<Option<Finding>, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.sql(e))?;
        self.finding_with_deliveries(&tx, id)
    }

    fn triage(
        &self,
        id: FindingId,
        change: &TriageChange,
        now_ms: i64,
    ) -> Result<Triaged, StoreError> {
        self.apply_triage(id, change, now_ms)
    }
}
