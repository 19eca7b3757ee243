//! Triage on the PostgreSQL store: the state change and what it owes the
//! resolutions outbox (claimed and marked in `postgres/outbox.rs`). A
//! change locks the finding's row (`FOR NO KEY UPDATE`) before reading its
//! state, so of two people triaging at once the second sees the first's
//! result; `mark_delivered` takes a share lock on the same row, so a
//! resolution is owed to a sink whether its alert was delivered just before
//! or just after the resolve (see `PostgresStore::deliver_alerts`).

use deadpool_postgres::Transaction;

use super::PostgresStore;
use crate::findings::stored::{FINDING_COLUMNS, triage_target};
use crate::findings::{Finding, FindingId, StoreError, TriageChange, TriageState, Triaged};

impl PostgresStore {
    pub(super) async fn finding_by_id(&self, id: FindingId) -> Result<Option<Finding>, StoreError> {
        let mut client = self.client().await?;
        let tx = self.snapshot(&mut client).await?;
        let found = self.finding_in(&tx, id).await?;
        tx.commit().await.map_err(|e| self.pg(e))?;
        Ok(found)
    }

    /// The finding with every sink's delivery state, read in `tx`.
    async fn finding_in(
        &self,
        tx: &Transaction<'_>,
        id: FindingId,
    ) -> Result<Option<Finding>, StoreError> {
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
            .with_deliveries(tx, vec![self.finding_of_row(&row)?], None)
            .await?;
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
        let state: Option<String> = tx
            .query_opt(
                "SELECT triage_state FROM findings WHERE id = $1 FOR NO KEY UPDATE",
                &[&id.0],
            )
            .await
            .map_err(|e| self.pg(e))?
            .map(|row| row.get(0));
        let target = triage_target(&self.name, id, state, change)?;
        if let Some(to) = target {
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
        }
        let finding = self
            .finding_in(&tx, id)
            .await?
            .ok_or_else(|| self.corrupt(format!("finding {id} vanished while triaged")))?;
        tx.commit().await.map_err(|e| self.pg(e))?;
        Ok(Triaged {
            finding,
            changed: target.is_some(),
        })
    }
}
