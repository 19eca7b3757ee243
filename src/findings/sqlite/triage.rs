//! Triage on the SQLite store: the state change and what it owes the
//! resolutions outbox (claimed and marked in `sqlite/outbox.rs`). Every
//! write runs in an immediate transaction on the store's one connection,
//! so reading the state and changing it cannot interleave with another
//! writer.

use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use crate::findings::stored::triage_target;
use crate::findings::{Finding, FindingId, Outbox, StoreError, TriageChange, TriageState, Triaged};

/// Owes `sink` the resolution of finding `id` if it is resolved (its alert
/// was just delivered there). An excepted finding owes none: it was never
/// alerted.
pub(super) fn owe_if_resolved(
    conn: &Connection,
    id: FindingId,
    sink: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO resolutions (finding, sink, state, attempts, next_attempt_ms) \
         SELECT id, ?2, 'pending', 0, 0 FROM findings \
         WHERE id = ?1 AND triage_state = 'resolved' AND excepted_by IS NULL",
    )?
    .execute(params![id.0, sink])?;
    Ok(())
}

impl SqliteStore {
    /// The finding with every sink's delivery state, read in `conn`'s
    /// transaction.
    pub(super) fn finding_with_deliveries(
        &self,
        conn: &Connection,
        id: FindingId,
    ) -> Result<Option<Finding>, StoreError> {
        let exists = conn
            .prepare_cached("SELECT 1 FROM findings WHERE id = ?1")
            .and_then(|mut s| s.exists([id.0]))
            .map_err(|e| self.sql(e))?;
        if !exists {
            return Ok(None);
        }
        let mut f = self.finding_by_id(conn, id)?;
        f.deliveries = self.outbox_rows(conn, Outbox::Alerts, id, None)?;
        Ok(Some(f))
    }

    pub(super) fn apply_triage(
        &self,
        id: FindingId,
        change: &TriageChange,
        now_ms: i64,
    ) -> Result<Triaged, StoreError> {
        let mut conn = self.lock();
        let tx = self.begin(&mut conn)?;
        let state: Option<String> = tx
            .prepare_cached("SELECT triage_state FROM findings WHERE id = ?1")
            .and_then(|mut s| s.query_row([id.0], |r| r.get(0)).optional())
            .map_err(|e| self.sql(e))?;
        let target = triage_target(&self.path, id, state, change)?;
        if let Some(to) = target {
            tx.prepare_cached(
                "UPDATE findings SET triage_state = ?2, triage_by = ?3, triage_at_ms = ?4, \
                 triage_note = ?5 WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![id.0, to.as_str(), change.by, now_ms, change.note]))
            .map_err(|e| self.sql(e))?;
            if to == TriageState::Resolved {
                // The sinks already told; the others are owed it when
                // their delivery is marked.
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO resolutions \
                       (finding, sink, state, attempts, next_attempt_ms) \
                     SELECT finding, sink, 'pending', 0, 0 FROM deliveries \
                     WHERE finding = ?1 AND state = 'delivered'",
                )
                .and_then(|mut s| s.execute([id.0]))
                .map_err(|e| self.sql(e))?;
            }
        }
        let finding = self
            .finding_with_deliveries(&tx, id)?
            .ok_or_else(|| self.corrupt(format!("finding {id} vanished while triaged")))?;
        tx.commit().map_err(|e| self.sql(e))?;
        Ok(Triaged {
            finding,
            changed: target.is_some(),
        })
    }
}
