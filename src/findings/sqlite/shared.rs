//! What the SQLite store keeps for work that must happen once however many
//! processes use the file: the alert memory of each sink (alerts sent, and
//! alerts in flight), the scan checkpoint, and named locks (one alert
//! dispatcher per sink, one sweep at a time): the supertraits of
//! [`Store`](crate::findings::Store) on [`SqliteStore`].
//!
//! Locks are exclusive `flock`s on a file beside the database, one per
//! name: the kernel releases them when the holder exits, however it exits,
//! and `serve` and `scan` on one data directory see each other's. A store
//! in memory has no file: its locks are a set within the process.

use std::collections::HashSet;
use std::fs::{File, OpenOptions, TryLockError};
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use crate::findings::stored::{
    alert_table, forget_alert_sql, remember_alert_sql, remembered_alerts_sql,
};
use crate::findings::{
    AlertMemory, AlertState, Checkpoints, FindingId, HeldLock, Locks, Outbox, SentAlert,
    StoreError, StoreLock,
};

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

impl Locks for SqliteStore {
    fn try_lock(&self, name: &str) -> Result<Option<StoreLock>, StoreError> {
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
}

impl SqliteStore {
    /// Remembers `alert` of `sink` in `state`, on `conn` (the caller's
    /// transaction, or the connection).
    fn remember(
        &self,
        conn: &Connection,
        state: AlertState,
        sink: &str,
        alert: &SentAlert,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let (fact, first_seen, body) = (&alert.fact, alert.first_seen_ms, &alert.body);
        conn.prepare_cached(&remember_alert_sql(state, '?'))
            .and_then(|mut s| s.execute(params![sink, fact, first_seen, now_ms, body]))
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    /// Forgets the alert of (`sink`, `fact`) in `state`.
    fn forget_alert(
        &self,
        conn: &Connection,
        state: AlertState,
        sink: &str,
        fact: &str,
    ) -> Result<(), StoreError> {
        conn.prepare_cached(&forget_alert_sql(state, '?'))
            .and_then(|mut s| s.execute(params![sink, fact]))
            .map(drop)
            .map_err(|e| self.sql(e))
    }
}

impl AlertMemory for SqliteStore {
    fn alert_in_flight(
        &self,
        sink: &str,
        alert: &SentAlert,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.remember(&self.lock(), AlertState::InFlight, sink, alert, now_ms)
    }

    fn alert_not_sent(&self, sink: &str, fact: &str) -> Result<(), StoreError> {
        self.forget_alert(&self.lock(), AlertState::InFlight, sink, fact)
    }

    fn alert_resolved(&self, sink: &str, fact: &str) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = self.begin(&mut conn)?;
        for state in [AlertState::Sent, AlertState::InFlight] {
            self.forget_alert(&tx, state, sink, fact)?;
        }
        tx.commit().map_err(|e| self.sql(e))
    }

    fn alert_sent(
        &self,
        sink: &str,
        alert: &SentAlert,
        findings: &[FindingId],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = self.begin(&mut conn)?;
        for &id in findings {
            // On an error, dropping the transaction rolls it back.
            self.deliver(&tx, Outbox::Alerts.row(sink, id), now_ms)?;
        }
        self.remember(&tx, AlertState::Sent, sink, alert, now_ms)?;
        self.forget_alert(&tx, AlertState::InFlight, sink, &alert.fact)?;
        tx.commit().map_err(|e| self.sql(e))
    }

    fn remembered_alerts(
        &self,
        state: AlertState,
        sink: &str,
        since_ms: i64,
    ) -> Result<Vec<SentAlert>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(&remembered_alerts_sql(state, '?'))
            .map_err(|e| self.sql(e))?;
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

    fn forget_sent_alerts(&self, sink: &str, before_ms: i64) -> Result<u64, StoreError> {
        let mut conn = self.lock();
        let tx = self.begin(&mut conn)?;
        let mut forgotten = 0;
        for state in [AlertState::Sent, AlertState::InFlight] {
            let table = alert_table(state);
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
}

impl Checkpoints for SqliteStore {
    fn scan_checkpoint(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.lock()
            .prepare_cached("SELECT body FROM scan_checkpoints WHERE name = ?1")
            .and_then(|mut s| s.query_row([name], |r| r.get(0)).optional())
            .map_err(|e| self.sql(e))
    }

    fn set_scan_checkpoint(
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
