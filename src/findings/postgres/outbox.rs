//! The two outboxes on the PostgreSQL store, alerts (`deliveries`) and
//! resolutions, claimed, marked and failed by one set of operations. A claim locks
//! the rows it takes (`FOR UPDATE SKIP LOCKED`) and pushes their next
//! attempt past the lease: concurrent claimers on any replica never take
//! the same row. Marking alerts delivered has its own statement (it may
//! owe a resolution), shared with `alert_sent`.

use std::collections::HashSet;

use deadpool_postgres::Transaction;
use tokio_postgres::GenericClient;

use super::PostgresStore;
use crate::findings::stored::{DELIVERY_COLUMNS, FINDING_COLUMNS, MAX_ERROR_LEN, not_claimed};
use crate::findings::{Finding, FindingId, Outbox, OutboxRow, Outboxes, StoreError, truncate};

impl PostgresStore {
    /// Claims up to `limit` rows of `outbox` due for `sink` at `now_ms`:
    /// each counts as an attempt and hides the row for the claim lease.
    /// The findings are returned oldest first, each with this sink's row.
    async fn claim_rows(
        &self,
        tx: &Transaction<'_>,
        outbox: Outbox,
        sink: &str,
        limit: usize,
        now_ms: i64,
    ) -> Result<Vec<Finding>, StoreError> {
        let (table, order) = (outbox.table(), outbox.claim_order());
        let lease_until = now_ms.saturating_add(self.claim_lease_ms);
        let claim = tx
            .prepare_cached(&format!(
                "UPDATE {table} d SET attempts = d.attempts + 1, next_attempt_ms = $3 \
                 FROM (SELECT finding FROM {table} \
                       WHERE sink = $1 AND state = 'pending' AND next_attempt_ms <= $2 \
                       ORDER BY {order} LIMIT $4 \
                       FOR UPDATE SKIP LOCKED) c \
                 WHERE d.sink = $1 AND d.finding = c.finding \
                 RETURNING d.{}",
                DELIVERY_COLUMNS.replace(", ", ", d.")
            ))
            .await
            .map_err(|e| self.pg(e))?;
        let rows = tx
            .query(&claim, &[&sink, &now_ms, &lease_until, &(limit as i64)])
            .await
            .map_err(|e| self.pg(e))?;
        let mut claimed = rows
            .iter()
            .map(|row| self.delivery(row, outbox))
            .collect::<Result<Vec<_>, _>>()?;
        claimed.sort_by_key(|(id, _)| *id);
        let ids: Vec<i64> = claimed.iter().map(|(id, _)| id.0).collect();
        let rows = tx
            .query(
                &format!(
                    "SELECT {FINDING_COLUMNS} FROM findings f WHERE f.id = ANY($1) ORDER BY f.id"
                ),
                &[&ids],
            )
            .await
            .map_err(|e| self.pg(e))?;
        let mut out = Vec::with_capacity(rows.len());
        for (row, (_, delivery)) in rows.iter().zip(claimed) {
            let mut f = self.finding_of_row(row)?;
            f.deliveries = vec![delivery];
            out.push(f);
        }
        Ok(out)
    }

    /// Marks the claimed alert rows of findings `ids` for `sink` delivered,
    /// in one statement on `client` (the caller's transaction, or a pooled
    /// connection). A finding resolved by now owes `sink` its resolution
    /// (an excepted one never: it was never alerted). The share lock waits
    /// for a resolve in progress (which locks the row) and returns the
    /// state it committed; a resolve that comes after waits for this
    /// statement and then sees the delivery. A finding without a row for
    /// `sink` is [`StoreError::NotClaimed`].
    pub(super) async fn deliver_alerts(
        &self,
        client: &impl GenericClient,
        sink: &str,
        ids: &[i64],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let marked: HashSet<i64> = client
            .query(
                "WITH t AS (SELECT id, triage_state, excepted_by FROM findings \
                   WHERE id = ANY($2) FOR SHARE), \
                 u AS (UPDATE deliveries SET state = 'delivered', \
                   delivered_at_ms = COALESCE(delivered_at_ms, $3) \
                   WHERE sink = $1 AND finding = ANY($2) RETURNING finding), \
                 r AS (INSERT INTO resolutions (finding, sink, state, attempts, \
                     next_attempt_ms) \
                   SELECT u.finding, $1, 'pending', 0, 0 FROM u JOIN t ON t.id = u.finding \
                   WHERE t.triage_state = 'resolved' AND t.excepted_by IS NULL \
                   ON CONFLICT DO NOTHING) \
                 SELECT finding FROM u",
                &[&sink, &ids, &now_ms],
            )
            .await
            .map_err(|e| self.pg(e))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        match ids.iter().find(|id| !marked.contains(id)) {
            Some(&missing) => {
                let row = Outbox::Alerts.row(sink, FindingId(missing));
                Err(not_claimed(&self.name, row))
            }
            None => Ok(()),
        }
    }
}

impl Outboxes for PostgresStore {
    fn claim(
        &self,
        outbox: Outbox,
        sink: &str,
        limit: usize,
        now_ms: i64,
    ) -> Result<Vec<Finding>, StoreError> {
        self.block_on(async {
            if outbox == Outbox::Alerts {
                self.register_sink(sink).await?;
            }
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(|e| self.pg(e))?;
            let out = self.claim_rows(&tx, outbox, sink, limit, now_ms).await?;
            tx.commit().await.map_err(|e| self.pg(e))?;
            Ok(out)
        })
    }

    fn mark_delivered(&self, row: OutboxRow<'_>, now_ms: i64) -> Result<(), StoreError> {
        self.block_on(async {
            let client = self.client().await?;
            if row.outbox == Outbox::Alerts {
                return self
                    .deliver_alerts(&**client, row.sink, &[row.finding.0], now_ms)
                    .await;
            }
            let n = client
                .execute(
                    "UPDATE resolutions SET state = 'delivered', \
                       delivered_at_ms = COALESCE(delivered_at_ms, $3) \
                     WHERE sink = $1 AND finding = $2",
                    &[&row.sink, &row.finding.0, &now_ms],
                )
                .await
                .map_err(|e| self.pg(e))?;
            if n == 0 {
                return Err(not_claimed(&self.name, row));
            }
            Ok(())
        })
    }

    /// A row that does not exist was never claimed.
    fn mark_failed(
        &self,
        row: OutboxRow<'_>,
        error: &str,
        retry_at_ms: i64,
    ) -> Result<(), StoreError> {
        self.block_on(async {
            let table = row.outbox.table();
            let error = truncate(error, MAX_ERROR_LEN);
            let client = self.client().await?;
            // Updates a pending row; tells a delivered one (no effect) from
            // none (never claimed).
            let found = client
                .query_opt(
                    &format!(
                        "WITH u AS (UPDATE {table} SET last_error = $3, next_attempt_ms = $4 \
                           WHERE sink = $1 AND finding = $2 AND state = 'pending' RETURNING 1) \
                         SELECT 1 FROM u UNION ALL \
                         SELECT 1 FROM {table} WHERE sink = $1 AND finding = $2 LIMIT 1"
                    ),
                    &[&row.sink, &row.finding.0, &error, &retry_at_ms],
                )
                .await
                .map_err(|e| self.pg(e))?;
            if found.is_none() {
                return Err(not_claimed(&self.name, row));
            }
            Ok(())
        })
    }
}
