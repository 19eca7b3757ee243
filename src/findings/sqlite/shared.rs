//! What the SQLite store keeps for work that must happen once however many
//! processes use the file: the alert memory of each sink (alerts sent, and
//! alerts in flight), the scan checkpoint, and named locks (one alert
//! dispatcher per sink, one sweep at a time). The trait methods of
//! [`SqliteStore`] call these.
//!
//! Locks are exclusive `flock`s on a file beside the database, one per
//! name: the kernel releases them when the holder exits, however it exits,
//! and `serve` and `scan` on one data directory see each other's. A store
//! in memory has no file: its locks are a set within the process.

use std::collections::HashSet;
use std::fs::{File, OpenOptions, TryLockError};
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use crate::findings::{FindingId, HeldLock, SentAlert, StoreError, StoreLock};

/// Names held in a store in memory.
pub(super) type MemoryLocks = Arc<Mutex<HashSet<String>>>;

struct FileLock {
    /// Closing the file releases the lock.
    _file: File,
}

impl HeldLock for FileLock {
    fn is_held(&self) -> bool {
        // A flock lasts as long as the open file.
        true
    }
}

struct MemoryLock {
    name: String,
    locks: MemoryLocks,
}

impl HeldLock for MemoryLock {
    fn is_held(&self) -> bool {
        true
    }
}

impl Drop for MemoryLock {
    fn drop(&mut self) {
        self.locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.name);
    }
}

/// The lock file's name for `name`: readable, and distinct for distinct
/// names (the hash covers what the readable part replaces).
fn lock_file_suffix(name: &str) -> String {
    let readable: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let hash = crate::reference::Digest::sha256_of(name.as_bytes()).to_string();
    format!(
        "lock-{readable}-{}",
        &hash["sha256:".len().."sha256:".len() + 8]
    )
}

/// An alert of `fact` is no longer in flight at `sink`: recorded as sent,
/// or refused (both settle it the same way).
const SETTLE_IN_FLIGHT: &str = "DELETE FROM alerts_in_flight WHERE sink = ?1 AND fact = ?2";

impl SqliteStore {
    pub(super) fn try_lock_named(&self, name: &str) -> Result<Option<StoreLock>, StoreError> {
        if !self.file {
            let mut held = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
            if !held.insert(name.to_owned()) {
                return Ok(None);
            }
            return Ok(Some(StoreLock::new(
                name,
                Box::new(MemoryLock {
                    name: name.to_owned(),
                    locks: self.locks.clone(),
                }),
            )));
        }
        let path = format!("{}.{}", self.path, lock_file_suffix(name));
        let fail = |source| StoreError::Lock {
            path: self.path.clone(),
            name: name.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(fail)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(StoreLock::new(
                name,
                Box::new(FileLock { _file: file }),
            ))),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(fail(e)),
        }
    }

    pub(super) fn alert_sent_now(
        &self,
        sink: &str,
        alert: &SentAlert,
        findings: &[FindingId],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = self.begin(&mut conn)?;
        for &id in findings {
            let n = tx
                .prepare_cached(
                    "UPDATE deliveries SET state = 'delivered', \
                       delivered_at_ms = COALESCE(delivered_at_ms, ?3) \
                     WHERE sink = ?1 AND finding = ?2",
                )
                .and_then(|mut s| s.execute(params![sink, id.0, now_ms]))
                .map_err(|e| self.sql(e))?;
            if n == 0 {
                // Dropping the transaction rolls it back.
                return Err(StoreError::NotClaimed {
                    path: self.path.clone(),
                    sink: sink.to_owned(),
                    id,
                });
            }
            // Resolved before its alert reached this sink: the sink is owed
            // the resolution too (as in `mark_delivered`).
            super::triage::owe_if_resolved(&tx, id, sink).map_err(|e| self.sql(e))?;
        }
        tx.prepare_cached(
            "INSERT INTO sent_alerts (sink, fact, first_seen_ms, sent_at_ms, body) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (sink, fact) DO UPDATE SET first_seen_ms = excluded.first_seen_ms, \
               sent_at_ms = excluded.sent_at_ms, body = excluded.body",
        )
        .and_then(|mut s| {
            s.execute(params![
                sink,
                alert.fact,
                alert.first_seen_ms,
                now_ms,
                alert.body
            ])
        })
        .map_err(|e| self.sql(e))?;
        tx.prepare_cached(SETTLE_IN_FLIGHT)
            .and_then(|mut s| s.execute(params![sink, alert.fact]))
            .map_err(|e| self.sql(e))?;
        tx.commit().map_err(|e| self.sql(e))
    }

    pub(super) fn alert_in_flight_now(
        &self,
        sink: &str,
        alert: &SentAlert,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.lock()
            .prepare_cached(
                "INSERT INTO alerts_in_flight (sink, fact, first_seen_ms, started_at_ms, body) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (sink, fact) DO UPDATE SET first_seen_ms = excluded.first_seen_ms, \
                   started_at_ms = excluded.started_at_ms, body = excluded.body",
            )
            .and_then(|mut s| {
                s.execute(params![
                    sink,
                    alert.fact,
                    alert.first_seen_ms,
                    now_ms,
                    alert.body
                ])
            })
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    pub(super) fn alert_not_sent_now(&self, sink: &str, fact: &str) -> Result<(), StoreError> {
        self.lock()
            .prepare_cached(SETTLE_IN_FLIGHT)
            .and_then(|mut s| s.execute(params![sink, fact]))
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    pub(super) fn alerts_in_flight_since(
        &self,
        sink: &str,
        since_ms: i64,
    ) -> Result<Vec<SentAlert>, StoreError> {
        self.remembered(
            "SELECT fact, first_seen_ms, body FROM alerts_in_flight \
             WHERE sink = ?1 AND first_seen_ms >= ?2",
            sink,
            since_ms,
        )
    }

    pub(super) fn sent_alerts_since(
        &self,
        sink: &str,
        since_ms: i64,
    ) -> Result<Vec<SentAlert>, StoreError> {
        self.remembered(
            "SELECT fact, first_seen_ms, body FROM sent_alerts \
             WHERE sink = ?1 AND first_seen_ms >= ?2",
            sink,
            since_ms,
        )
    }

    /// The rows of `sql` (fact, first seen, body) for `sink` and `since_ms`.
    fn remembered(
        &self,
        sql: &str,
        sink: &str,
        since_ms: i64,
    ) -> Result<Vec<SentAlert>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(sql).map_err(|e| self.sql(e))?;
        stmt.query_map(params![sink, since_ms], |r| {
            Ok(SentAlert {
                fact: r.get(0)?,
                first_seen_ms: r.get(1)?,
                body: r.get(2)?,
            })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| self.sql(e))
    }

    pub(super) fn forget_sent_alerts_before(
        &self,
        sink: &str,
        before_ms: i64,
    ) -> Result<u64, StoreError> {
        let mut conn = self.lock();
        let tx = self.begin(&mut conn)?;
        let mut forgotten = 0;
        for table in ["sent_alerts", "alerts_in_flight"] {
            forgotten += tx
                .prepare_cached(&format!(
                    "DELETE FROM {table} WHERE sink = ?1 AND first_seen_ms < ?2"
                ))
                .and_then(|mut s| s.execute(params![sink, before_ms]))
                .map_err(|e| self.sql(e))? as u64;
        }
        tx.commit().map_err(|e| self.sql(e))?;
        Ok(forgotten)
    }

    pub(super) fn scan_checkpoint_named(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.lock()
            .prepare_cached("SELECT body FROM scan_checkpoints WHERE name = ?1")
            .and_then(|mut s| s.query_row([name], |r| r.get(0)).optional())
            .map_err(|e| self.sql(e))
    }

    pub(super) fn set_scan_checkpoint_named(
        &self,
        name: &str,
        body: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let conn = self.lock();
        match body {
            Some(body) => conn
                .prepare_cached(
                    "INSERT INTO scan_checkpoints (name, body, updated_at_ms) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (name) DO UPDATE SET body = excluded.body, \
                       updated_at_ms = excluded.updated_at_ms",
                )
                .and_then(|mut s| s.execute(params![name, body, now_ms])),
            None => conn
                .prepare_cached("DELETE FROM scan_checkpoints WHERE name = ?1")
                .and_then(|mut s| s.execute([name])),
        }
        .map(drop)
        .map_err(|e| self.sql(e))
    }
}
