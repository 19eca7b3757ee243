//! [`Outboxes`] on the SQLite store: alerts (`deliveries`) and
//! resolutions, kept by one set of operations: claim what is due for a
//! sink, mark it delivered, mark it failed. A claim runs in an immediate
//! transaction, so no other claimer on the file interleaves.

use rusqlite::{Connection, params};

use super::SqliteStore;
use crate::findings::stored::{DELIVERY_COLUMNS, MAX_ERROR_LEN, StoredDelivery, not_claimed};
use crate::findings::{
    Finding, FindingId, Outbox, OutboxRow, Outboxes, SinkDelivery, StoreError, truncate,
};

impl Outboxes for SqliteStore {
    /// In the file's write transaction, with the rows of `Outbox::Alerts`
    /// owed since the sink last looked.
    fn claim(
        &self,
        outbox: Outbox,
        sink: &str,
        limit: usize,
        now_ms: i64,
    ) -> Result<Vec<Finding>, StoreError> {
        let mut conn = self.lock();
        let tx = self.begin(&mut conn)?;
        if outbox == Outbox::Alerts {
            self.owe_new_findings(&tx, sink)?;
        }
        let out = self.claim_rows(&tx, outbox, sink, limit, now_ms)?;
        tx.commit().map_err(|e| self.sql(e))?;
        Ok(out)
    }

    fn mark_delivered(&self, row: OutboxRow<'_>, now_ms: i64) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = self.begin(&mut conn)?;
        self.deliver(&tx, row, now_ms)?;
        tx.commit().map_err(|e| self.sql(e))
    }

    /// A row delivered already stays so (a late failure report changes
    /// nothing).
    fn mark_failed(
        &self,
        row: OutboxRow<'_>,
        error: &str,
        retry_at_ms: i64,
    ) -> Result<(), StoreError> {
        let (table, sink, id) = (row.outbox.table(), row.sink, row.finding.0);
        let error = truncate(error, MAX_ERROR_LEN);
        let conn = self.lock();
        let n = conn
            .prepare_cached(&format!(
                "UPDATE {table} SET last_error = ?3, next_attempt_ms = ?4 \
                 WHERE sink = ?1 AND finding = ?2 AND state = 'pending'"
            ))
            .and_then(|mut s| s.execute(params![sink, id, error, retry_at_ms]))
            .map_err(|e| self.sql(e))?;
        if n == 0 {
            let exists = conn
                .prepare_cached(&format!(
                    "SELECT 1 FROM {table} WHERE sink = ?1 AND finding = ?2"
                ))
                .and_then(|mut s| s.exists(params![sink, id]))
                .map_err(|e| self.sql(e))?;
            if !exists {
                return Err(not_claimed(&self.path, row));
            }
        }
        Ok(())
    }
}

impl SqliteStore {
    /// Marks the claimed `row` delivered, in the caller's transaction: an
    /// alert delivered after its finding was resolved owes the sink the
    /// resolution too.
    pub(super) fn deliver(
        &self,
        tx: &Connection,
        row: OutboxRow<'_>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let n = tx
            .prepare_cached(&format!(
                "UPDATE {} SET state = 'delivered', \
                   delivered_at_ms = COALESCE(delivered_at_ms, ?3) \
                 WHERE sink = ?1 AND finding = ?2",
                row.outbox.table()
            ))
            .and_then(|mut s| s.execute(params![row.sink, row.finding.0, now_ms]))
            .map_err(|e| self.sql(e))?;
        if n == 0 {
            return Err(not_claimed(&self.path, row));
        }
        if row.outbox == Outbox::Alerts {
            super::triage::owe_if_resolved(tx, row.finding, row.sink).map_err(|e| self.sql(e))?;
        }
        Ok(())
    }

    /// Makes `sink` known (watermark 0: owed every finding) and gives it a
    /// pending deliveries row for each finding recorded since it last
    /// looked (excepted findings are owed to no sink), in the caller's
    /// transaction.
    fn owe_new_findings(&self, conn: &Connection, sink: &str) -> Result<(), StoreError> {
        let sql = |e| self.sql(e);
        conn.prepare_cached("INSERT OR IGNORE INTO sinks (sink, watermark) VALUES (?1, 0)")
            .and_then(|mut s| s.execute([sink]))
            .map_err(sql)?;
        conn.prepare_cached(
            "INSERT OR IGNORE INTO deliveries (finding, sink, state, attempts, next_attempt_ms) \
             SELECT f.id, ?1, 'pending', 0, 0 FROM findings f \
             WHERE f.id > (SELECT watermark FROM sinks WHERE sink = ?1) \
               AND f.excepted_by IS NULL",
        )
        .and_then(|mut s| s.execute([sink]))
        .map_err(sql)?;
        conn.prepare_cached(
            "UPDATE sinks SET watermark = (SELECT COALESCE(MAX(id), 0) FROM findings) \
             WHERE sink = ?1",
        )
        .and_then(|mut s| s.execute([sink]))
        .map_err(sql)?;
        Ok(())
    }

    /// Claims up to `limit` rows of `outbox` due for `sink` at `now_ms`:
    /// each counts as an attempt and hides the row for the claim lease.
    /// The findings are returned oldest first, each with this sink's row.
    fn claim_rows(
        &self,
        conn: &Connection,
        outbox: Outbox,
        sink: &str,
        limit: usize,
        now_ms: i64,
    ) -> Result<Vec<Finding>, StoreError> {
        let (table, order) = (outbox.table(), outbox.claim_order());
        let lease_until = now_ms.saturating_add(self.claim_lease_ms);
        let mut ids: Vec<i64> = conn
            .prepare_cached(&format!(
                "UPDATE {table} SET attempts = attempts + 1, next_attempt_ms = ?3 \
                 WHERE sink = ?1 AND finding IN ( \
                   SELECT finding FROM {table} \
                   WHERE sink = ?1 AND state = 'pending' AND next_attempt_ms <= ?2 \
                   ORDER BY {order} LIMIT ?4) \
                 RETURNING finding"
            ))
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
            let mut f = self.finding_by_id(conn, FindingId(id))?;
            f.deliveries = self.outbox_rows(conn, outbox, f.id, Some(sink))?;
            out.push(f);
        }
        Ok(out)
    }

    /// The rows of finding `id` in `outbox` (of `sink` only, when given),
    /// by sink.
    pub(super) fn outbox_rows(
        &self,
        conn: &Connection,
        outbox: Outbox,
        id: FindingId,
        sink: Option<&str>,
    ) -> Result<Vec<SinkDelivery>, StoreError> {
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM {} \
                 WHERE finding = ?1 AND (?2 IS NULL OR sink = ?2) ORDER BY sink",
                outbox.table()
            ))
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map(params![id.0, sink], |r| StoredDelivery::read(r))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.sql(e))?;
        rows.into_iter()
            .map(|row| Ok(row.into_delivery(&self.path, outbox)?.1))
            .collect()
    }
}
