//! What replicas on one PostgreSQL database must do once: the alert memory
//! of each sink (alerts sent, and alerts in flight), the scan checkpoint, and named locks (one alert dispatcher
//! per sink, one sweep at a time). The trait methods of [`PostgresStore`]
//! call these.
//!
//! A lock is a session-level advisory lock (`pg_try_advisory_lock` on a
//! 64-bit hash of its name) on a connection taken out of the pool for as
//! long as it is held: the server releases it when that session ends, so a
//! replica that dies, or loses the server, gives it up without help. The
//! holder asks [`HeldLock::is_held`] before each step, and a broken
//! connection answers no.

use std::collections::HashSet;
use std::time::Duration;

use deadpool_postgres::{ClientWrapper, Object};
use tokio::runtime::Handle;

use super::PostgresStore;
use crate::findings::{FindingId, HeldLock, SentAlert, StoreError, StoreLock};

/// Longest wait for the answer that says a lock's session is alive.
const LIVENESS_TIMEOUT: Duration = Duration::from_secs(5);

struct SessionLock {
    /// Out of the pool: dropping it ends the session and the lock with it.
    client: ClientWrapper,
    handle: Handle,
}

impl HeldLock for SessionLock {
    fn is_held(&self) -> bool {
        if self.client.is_closed() {
            return false;
        }
        self.handle.block_on(async {
            matches!(
                tokio::time::timeout(LIVENESS_TIMEOUT, self.client.simple_query("SELECT 1")).await,
                Ok(Ok(_))
            )
        })
    }
}

/// An alert of `fact` is no longer in flight at `sink`: recorded as sent,
/// or refused (both settle it the same way).
const SETTLE_IN_FLIGHT: &str = "DELETE FROM alerts_in_flight WHERE sink = $1 AND fact = $2";

impl PostgresStore {
    pub(super) fn try_lock_named(&self, name: &str) -> Result<Option<StoreLock>, StoreError> {
        self.block_on(async {
            let client = self.client().await?;
            let taken: bool = client
                .query_one(
                    "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
                    &[&name],
                )
                .await
                .map_err(|e| self.pg(e))?
                .get(0);
            if !taken {
                return Ok(None);
            }
            Ok(Some(StoreLock::new(
                name,
                Box::new(SessionLock {
                    client: Object::take(client),
                    handle: self.handle.clone(),
                }),
            )))
        })
    }

    pub(super) fn alert_sent_now(
        &self,
        sink: &str,
        alert: &SentAlert,
        findings: &[FindingId],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let ids: Vec<i64> = findings.iter().map(|f| f.0).collect();
        self.block_on(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(|e| self.pg(e))?;
            // As in `mark_delivered`: the share lock waits for a resolve in
            // progress, and a finding resolved by now owes `sink` its
            // resolution (an excepted one never: it was never alerted).
            let marked: HashSet<i64> = tx
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
            if let Some(&missing) = ids.iter().find(|id| !marked.contains(id)) {
                // Dropping the transaction rolls it back.
                return Err(StoreError::NotClaimed {
                    path: self.name.clone(),
                    sink: sink.to_owned(),
                    id: FindingId(missing),
                });
            }
            tx.execute(
                "INSERT INTO sent_alerts (sink, fact, first_seen_ms, sent_at_ms, body) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (sink, fact) DO UPDATE SET first_seen_ms = excluded.first_seen_ms, \
                   sent_at_ms = excluded.sent_at_ms, body = excluded.body",
                &[
                    &sink,
                    &alert.fact,
                    &alert.first_seen_ms,
                    &now_ms,
                    &alert.body,
                ],
            )
            .await
            .map_err(|e| self.pg(e))?;
            tx.execute(SETTLE_IN_FLIGHT, &[&sink, &alert.fact])
                .await
                .map_err(|e| self.pg(e))?;
            tx.commit().await.map_err(|e| self.pg(e))
        })
    }

    pub(super) fn alert_in_flight_now(
        &self,
        sink: &str,
        alert: &SentAlert,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.block_on(async {
            let client = self.client().await?;
            client
                .execute(
                    "INSERT INTO alerts_in_flight (sink, fact, first_seen_ms, started_at_ms, body) \
                     VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (sink, fact) DO UPDATE SET \
                       first_seen_ms = excluded.first_seen_ms, \
                       started_at_ms = excluded.started_at_ms, body = excluded.body",
                    &[
                        &sink,
                        &alert.fact,
                        &alert.first_seen_ms,
                        &now_ms,
                        &alert.body,
                    ],
                )
                .await
                .map(drop)
                .map_err(|e| self.pg(e))
        })
    }

    pub(super) fn alert_not_sent_now(&self, sink: &str, fact: &str) -> Result<(), StoreError> {
        self.block_on(async {
            let client = self.client().await?;
            client
                .execute(SETTLE_IN_FLIGHT, &[&sink, &fact])
                .await
                .map(drop)
                .map_err(|e| self.pg(e))
        })
    }

    pub(super) fn alerts_in_flight_since(
        &self,
        sink: &str,
        since_ms: i64,
    ) -> Result<Vec<SentAlert>, StoreError> {
        self.remembered(
            "SELECT fact, first_seen_ms, body FROM alerts_in_flight \
             WHERE sink = $1 AND first_seen_ms >= $2",
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
             WHERE sink = $1 AND first_seen_ms >= $2",
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
        self.block_on(async {
            let client = self.client().await?;
            Ok(client
                .query(sql, &[&sink, &since_ms])
                .await
                .map_err(|e| self.pg(e))?
                .iter()
                .map(|row| SentAlert {
                    fact: row.get(0),
                    first_seen_ms: row.get(1),
                    body: row.get(2),
                })
                .collect())
        })
    }

    pub(super) fn forget_sent_alerts_before(
        &self,
        sink: &str,
        before_ms: i64,
    ) -> Result<u64, StoreError> {
        self.block_on(async {
            let client = self.client().await?;
            // One statement: both tables or neither.
            client
                .query_one(
                    "WITH s AS (DELETE FROM sent_alerts WHERE sink = $1 AND first_seen_ms < $2 \
                       RETURNING 1), \
                     f AS (DELETE FROM alerts_in_flight WHERE sink = $1 AND first_seen_ms < $2 \
                       RETURNING 1) \
                     SELECT (SELECT count(*) FROM s) + (SELECT count(*) FROM f)",
                    &[&sink, &before_ms],
                )
                .await
                .map(|row| row.get::<_, i64>(0) as u64)
                .map_err(|e| self.pg(e))
        })
    }

    pub(super) fn scan_checkpoint_named(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.block_on(async {
            let client = self.client().await?;
            Ok(client
                .query_opt(
                    "SELECT body FROM scan_checkpoints WHERE name = $1",
                    &[&name],
                )
                .await
                .map_err(|e| self.pg(e))?
                .map(|row| row.get(0)))
        })
    }

    pub(super) fn set_scan_checkpoint_named(
        &self,
        name: &str,
        body: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.block_on(async {
            let client = self.client().await?;
            match body {
                Some(body) => {
                    client
                        .execute(
                            "INSERT INTO scan_checkpoints (name, body, updated_at_ms) \
                         VALUES ($1, $2, $3) \
                         ON CONFLICT (name) DO UPDATE SET body = excluded.body, \
                           updated_at_ms = excluded.updated_at_ms",
                            &[&name, &body, &now_ms],
                        )
                        .await
                }
                None => {
                    client
                        .execute("DELETE FROM scan_checkpoints WHERE name = $1", &[&name])
                        .await
                }
            }
            .map(drop)
            .map_err(|e| self.pg(e))
        })
    }
}
