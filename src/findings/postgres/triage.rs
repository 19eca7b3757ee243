//! Triage on the PostgreSQL store: the state change and the resolutions
//! outbox. A change locks the finding's row (`FOR NO KEY UPDATE`) before
//! reading its state, so of two people triaging at once the second sees
//! the first's result; `mark_delivered` takes a share lock on the same row,
//! so a resolution is owed to a sink whether its alert was delivered just
//! before or just after the resolve (see `PostgresStore::mark_delivered`).

use super::{DELIVERY_COLUMNS, FINDING_COLUMNS, PostgresStore};
use crate::findings::triage::{Transition, transition};
use crate::findings::{Finding, FindingId, StoreError, TriageChange, TriageState, Triaged};

impl PostgresStore {
    pub(super) async fn finding_by_id(&self, id: FindingId) -> Result<Option<Finding>, StoreError> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(|e| self.pg(e))?;
        let row = tx
            .query_opt(
                &format!("SELECT {FINDING_COLUMNS} FROM findings f WHERE f.id = $1"),
                &[&id.0],
            )
            .await
            .map_err(|e| self.pg(e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let found = self
            .with_deliveries(&tx, vec![self.finding_of_row(&row)?], None)
            .await?;
        tx.commit().await.map_err(|e| self.pg(e))?;
        Ok(found.into_iter().next())
    }

    pub(super) async fn apply_triage(
        &self,
        id: FindingId,
        change: &TriageChange,
        now_ms: i64,
    ) -> Result<Triaged, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.pg(e))?;
        let row = tx
            .query_opt(
                "SELECT triage_state FROM findings WHERE id = $1 FOR NO KEY UPDATE",
                &[&id.0],
            )
            .await
            .map_err(|e| self.pg(e))?;
        let Some(row) = row else {
            return Err(StoreError::NoSuchFinding {
                path: self.name.clone(),
                id,
            });
        };
        let state: String = row.get(0);
        let from: TriageState = state
            .parse()
            .map_err(|_| self.corrupt(format!("finding {id}: triage state {state:?}")))?;
        let changed = match transition(from, change.action) {
            Err(refused) => return Err(StoreError::Triage { id, refused }),
            Ok(Transition::Unchanged) => false,
            Ok(Transition::To(to)) => {
                tx.execute(
                    "UPDATE findings SET triage_state = $2, triage_by = $3, triage_at_ms = $4, \
                     triage_note = $5 WHERE id = $1",
                    &[&id.0, &to.as_str(), &change.by, &now_ms, &change.note],
                )
                .await
                .map_err(|e| self.pg(e))?;
                if to == TriageState::Resolved {
                    // The sinks already told; the others are owed it when
                    // their delivery is marked.
                    tx.execute(
                        "INSERT INTO resolutions (finding, sink, state, attempts, next_attempt_ms) \
                         SELECT finding, sink, 'pending', 0, 0 FROM deliveries \
                         WHERE finding = $1 AND state = 'delivered' ON CONFLICT DO NOTHING",
                        &[&id.0],
                    )
                    .await
                    .map_err(|e| self.pg(e))?;
                }
                true
            }
        };
        let row = tx
            .query_one(
                &format!("SELECT {FINDING_COLUMNS} FROM findings f WHERE f.id = $1"),
                &[&id.0],
            )
            .await
            .map_err(|e| self.pg(e))?;
        let finding = self
            .with_deliveries(&tx, vec![self.finding_of_row(&row)?], None)
            .await?
            .remove(0);
        tx.commit().await.map_err(|e| self.pg(e))?;
        Ok(Triaged { finding, changed })
    }

    pub(super) async fn claim_resolutions_for(
        &self,
        sink: &str,
        limit: usize,
        now_ms: i64,
    ) -> Result<Vec<Finding>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.pg(e))?;
        let lease_until = now_ms.saturating_add(self.claim_lease_ms);
        let rows = tx
            .query(
                &format!(
                    "UPDATE resolutions d SET attempts = d.attempts + 1, next_attempt_ms = $3 \
                     FROM (SELECT finding FROM resolutions \
                           WHERE sink = $1 AND state = 'pending' AND next_attempt_ms <= $2 \
                           ORDER BY finding LIMIT $4 \
                           FOR UPDATE SKIP LOCKED) c \
                     WHERE d.sink = $1 AND d.finding = c.finding \
                     RETURNING d.{}",
                    DELIVERY_COLUMNS.replace(", ", ", d.")
                ),
                &[&sink, &now_ms, &lease_until, &(limit as i64)],
            )
            .await
            .map_err(|e| self.pg(e))?;
        let mut claimed = rows
            .iter()
            .map(|row| self.delivery(row))
            .collect::<Result<Vec<_>, _>>()?;
        claimed.sort_by_key(|(id, _)| *id);
        let ids: Vec<i64> = claimed.iter().map(|(id, _)| *id).collect();
        let rows = tx
            .query(
                &format!(
                    "SELECT {FINDING_COLUMNS} FROM findings f WHERE f.id = ANY($1) ORDER BY f.id"
                ),
                &[&ids],
            )
            .await
            .map_err(|e| self.pg(e))?;
        tx.commit().await.map_err(|e| self.pg(e))?;
        let mut out = Vec::with_capacity(rows.len());
        for (row, (_, resolution)) in rows.iter().zip(claimed) {
            let mut f = self.finding_of_row(row)?;
            f.deliveries = vec![resolution];
            out.push(f);
        }
        Ok(out)
    }

    pub(super) async fn resolution_delivered(
        &self,
        sink: &str,
        id: FindingId,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE resolutions SET state = 'delivered', \
                   delivered_at_ms = COALESCE(delivered_at_ms, $3) \
                 WHERE sink = $1 AND finding = $2",
                &[&sink, &id.0, &now_ms],
            )
            .await
            .map_err(|e| self.pg(e))?;
        if n == 0 {
            return Err(StoreError::NotClaimed {
                path: self.name.clone(),
                sink: sink.to_owned(),
                id,
            });
        }
        Ok(())
    }

    pub(super) async fn resolution_failed(
        &self,
        sink: &str,
        id: FindingId,
        error: &str,
        retry_at_ms: i64,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "WITH u AS (UPDATE resolutions SET last_error = $3, next_attempt_ms = $4 \
                   WHERE sink = $1 AND finding = $2 AND state = 'pending' RETURNING 1) \
                 SELECT 1 FROM u UNION ALL \
                 SELECT 1 FROM resolutions WHERE sink = $1 AND finding = $2 LIMIT 1",
                &[&sink, &id.0, &error, &retry_at_ms],
            )
            .await
            .map_err(|e| self.pg(e))?;
        if row.is_none() {
            return Err(StoreError::NotClaimed {
                path: self.name.clone(),
                sink: sink.to_owned(),
                id,
            });
        }
        Ok(())
    }
}
