//! Triage on the SQLite store: the state change and the resolutions outbox.
//! Every write runs in an immediate transaction on the store's one
//! connection, so reading the state and changing it cannot interleave with
//! another writer.

use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use crate::findings::triage::{Transition, transition};
use crate::findings::{Finding, FindingId, StoreError, TriageChange, TriageState, Triaged};

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
        f.deliveries = self.deliveries_of(conn, id, None)?;
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
        let Some(state) = state else {
            return Err(StoreError::NoSuchFinding {
                path: self.path.clone(),
                id,
            });
        };
        let from: TriageState = state
            .parse()
            .map_err(|_| self.corrupt(format!("finding {id}: triage state {state:?}")))?;
        let changed = match transition(from, change.action) {
            Err(refused) => return Err(StoreError::Triage { id, refused }),
            Ok(Transition::Unchanged) => false,
            Ok(Transition::To(to)) => {
                tx.prepare_cached(
                    "UPDATE findings SET triage_state = ?2, triage_by = ?3, triage_at_ms = ?4, \
                     triage_note = ?5 WHERE id = ?1",
                )
                .and_then(|mut s| {
                    s.execute(params![id.0, to.as_str(), change.by, now_ms, change.note])
                })
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
                true
            }
        };
        let finding = self
            .finding_with_deliveries(&tx, id)?
            .ok_or_else(|| self.corrupt(format!("finding {id} vanished while triaged")))?;
        tx.commit().map_err(|e| self.sql(e))?;
        Ok(Triaged { finding, changed })
    }

    pub(super) fn claim_resolutions_for(
        &self,
        sink: &str,
        limit: usize,
        now_ms: i64,
    ) -> Result<Vec<Finding>, StoreError> {
        let mut conn = self.lock();
        let tx = self.begin(&mut conn)?;
        let lease_until = now_ms.saturating_add(self.claim_lease_ms);
        let mut ids: Vec<i64> = tx
            .prepare_cached(
                "UPDATE resolutions SET attempts = attempts + 1, next_attempt_ms = ?3 \
                 WHERE sink = ?1 AND finding IN ( \
                   SELECT finding FROM resolutions \
                   WHERE sink = ?1 AND state = 'pending' AND next_attempt_ms <= ?2 \
                   ORDER BY finding LIMIT ?4) \
                 RETURNING finding",
            )
            .and_then(|mut s| {
                s.query_map(params![sink, now_ms, lease_until, limit as i64], |r| {
                    r.get(0)
                })?
                .collect::<rusqlite::Result<Vec<i64>>>()
            })
            .map_err(|e| self.sql(e))?;
        ids.sort_unstable();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let mut f = self.finding_by_id(&tx, FindingId(id))?;
            f.deliveries = self.resolution_of(&tx, f.id, sink)?;
            out.push(f);
        }
        tx.commit().map_err(|e| self.sql(e))?;
        Ok(out)
    }

    /// The resolution row of (`id`, `sink`) as a delivery state.
    fn resolution_of(
        &self,
        conn: &Connection,
        id: FindingId,
        sink: &str,
    ) -> Result<Vec<crate::findings::SinkDelivery>, StoreError> {
        let row = conn
            .prepare_cached(
                "SELECT attempts, next_attempt_ms, delivered_at_ms, last_error, state \
                 FROM resolutions WHERE finding = ?1 AND sink = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![id.0, sink], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                })
            })
            .map_err(|e| self.sql(e))?;
        let (attempts, next_attempt_ms, delivered_at_ms, last_error, state) = row;
        let state = match state.as_str() {
            "pending" => crate::findings::DeliveryState::Pending,
            "delivered" => crate::findings::DeliveryState::Delivered,
            other => {
                return Err(self.corrupt(format!(
                    "finding {id}: resolution state {other:?} for sink {sink:?}"
                )));
            }
        };
        Ok(vec![crate::findings::SinkDelivery {
            sink: sink.to_owned(),
            state,
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            next_attempt_ms,
            delivered_at_ms,
            last_error,
        }])
    }

    pub(super) fn resolution_delivered(
        &self,
        sink: &str,
        id: FindingId,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let n = self
            .lock()
            .prepare_cached(
                "UPDATE resolutions SET state = 'delivered', \
                   delivered_at_ms = COALESCE(delivered_at_ms, ?3) \
                 WHERE sink = ?1 AND finding = ?2",
            )
            .and_then(|mut s| s.execute(params![sink, id.0, now_ms]))
            .map_err(|e| self.sql(e))?;
        if n == 0 {
            return Err(StoreError::NotClaimed {
                path: self.path.clone(),
                sink: sink.to_owned(),
                id,
            });
        }
        Ok(())
    }

    pub(super) fn resolution_failed(
        &self,
        sink: &str,
        error: &str,
        id: FindingId,
        retry_at_ms: i64,
    ) -> Result<(), StoreError> {
        let conn = self.lock();
        let n = conn
            .prepare_cached(
                "UPDATE resolutions SET last_error = ?3, next_attempt_ms = ?4 \
                 WHERE sink = ?1 AND finding = ?2 AND state = 'pending'",
            )
            .and_then(|mut s| s.execute(params![sink, id.0, error, retry_at_ms]))
            .map_err(|e| self.sql(e))?;
        if n == 0 {
            let exists = conn
                .prepare_cached("SELECT 1 FROM resolutions WHERE sink = ?1 AND finding = ?2")
                .and_then(|mut s| s.exists(params![sink, id.0]))
                .map_err(|e| self.sql(e))?;
            if !exists {
                return Err(StoreError::NotClaimed {
                    path: self.path.clone(),
                    sink: sink.to_owned(),
                    id,
                });
            }
        }
        Ok(())
    }
}
