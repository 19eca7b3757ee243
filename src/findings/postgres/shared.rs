//! What replicas on one PostgreSQL database must do once: the alert memory
//! of each sink (alerts sent, and alerts in flight), the scan checkpoint,
//! and named locks (one alert dispatcher per sink, one sweep at a time):
//! the supertraits of [`Store`](crate::findings::Store) on
//! [`PostgresStore`].
//!
//! A lock is a session-level advisory lock (`pg_try_advisory_lock` on a
//! 64-bit hash of its name) on a connection taken out of the pool for as
//! long as it is held: the server releases it when that session ends, so a
//! replica that dies, or loses the server, gives it up without help. The
//! holder asks [`HeldLock::is_held`] before each step, and a broken
//! connection answers no.

use std::time::Duration;

use deadpool_postgres::{ClientWrapper, Object};
use tokio::runtime::Handle;
use tokio_postgres::GenericClient;

use super::PostgresStore;
use crate::findings::stored::{forget_alert_sql, remember_alert_sql, remembered_alerts_sql};
use crate::findings::{
    AlertMemory, AlertState, Checkpoints, FindingId, HeldLock, Locks, SentAlert, StoreError,
    StoreLock,
};

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

impl Locks for PostgresStore {
    fn try_lock(&self, name: &str) -> Result<Option<StoreLock>, StoreError> {
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
}

impl PostgresStore {
    /// Remembers `alert` of `sink` in `state`, on `client` (the caller's
    /// transaction, or a pooled connection).
    async fn remember(
        &self,
        client: &impl GenericClient,
        state: AlertState,
        sink: &str,
        alert: &SentAlert,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let (fact, first_seen, body) = (&alert.fact, &alert.first_seen_ms, &alert.body);
        client
            .execute(
                &remember_alert_sql(state, '$'),
                &[&sink, fact, first_seen, &now_ms, body],
            )
            .await
            .map(drop)
            .map_err(|e| self.pg(e))
    }

    /// Forgets the alert of (`sink`, `fact`) in `state`.
    async fn forget_alert(
        &self,
        client: &impl GenericClient,
        state: AlertState,
        sink: &str,
        fact: &str,
    ) -> Result<(), StoreError> {
        client
            .execute(&forget_alert_sql(state, '$'), &[&sink, &fact])
            .await
            .map(drop)
            .map_err(|e| self.pg(e))
    }
}

impl AlertMemory for PostgresStore {
    fn alert_in_flight(
        &self,
        sink: &str,
        alert: &SentAlert,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.block_on(async {
            let client = self.client().await?;
            self.remember(&**client, AlertState::InFlight, sink, alert, now_ms)
                .await
        })
    }

    fn alert_not_sent(&self, sink: &str, fact: &str) -> Result<(), StoreError> {
        self.block_on(async {
            let client = self.client().await?;
            self.forget_alert(&**client, AlertState::InFlight, sink, fact)
                .await
        })
    }

    fn alert_resolved(&self, sink: &str, fact: &str) -> Result<(), StoreError> {
        self.block_on(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(|e| self.pg(e))?;
            for state in [AlertState::Sent, AlertState::InFlight] {
                self.forget_alert(&*tx, state, sink, fact).await?;
            }
            tx.commit().await.map_err(|e| self.pg(e))
        })
    }

    fn alert_sent(
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
            // On an error, dropping the transaction rolls it back.
            self.deliver_alerts(&*tx, sink, &ids, now_ms).await?;
            self.remember(&*tx, AlertState::Sent, sink, alert, now_ms)
                .await?;
            self.forget_alert(&*tx, AlertState::InFlight, sink, &alert.fact)
                .await?;
            tx.commit().await.map_err(|e| self.pg(e))
        })
    }

    fn remembered_alerts(
        &self,
        state: AlertState,
        sink: &str,
        since_ms: i64,
    ) -> Result<Vec<SentAlert>, StoreError> {
        self.block_on(async {
            let client = self.client().await?;
            Ok(client
                .query(&remembered_alerts_sql(state, '$'), &[&sink, &since_ms])
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

    fn forget_sent_alerts(&self, sink: &str, before_ms: i64) -> Result<u64, StoreError> {
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
}

impl Checkpoints for PostgresStore {
    fn scan_checkpoint(&self, name: &str) -> Result<Option<String>, StoreError> {
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

    fn set_scan_checkpoint(
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
