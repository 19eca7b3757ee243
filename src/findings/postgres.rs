//! [`Store`] on PostgreSQL (13 or later), shared by any number of replicas:
//! dedupe, the undecided retry budget and outbox claims are then one for
//! all of them.
//!
//! **Sync trait, async driver.** The [`Store`] trait stays synchronous. The
//! store owns a small tokio runtime (one worker thread) that drives its
//! connection pool (tokio-postgres + deadpool-postgres) and its group-commit
//! writers; each call blocks the calling thread on it
//! ([`Handle::block_on`]). Callers already treat the store as blocking (it
//! is SQLite's fsync) and call it through [`off_thread`](super::off_thread),
//! whose blocking threads may block on another runtime; an async task must
//! not, and tokio panics if one tries. Keeping one synchronous trait keeps
//! the pipeline, the alert dispatcher and the contract tests unaware of
//! which store they have; an async trait would have SQLite pretend not to
//! block, and its own runtime lets the store work the same from `serve`,
//! the CLI and plain test threads.
//!
//! **Across replicas.** Dedupe is the primary key of `decisions`
//! (`INSERT … ON CONFLICT DO NOTHING`): of two replicas recording one
//! delivery, one inserts and the other waits for its commit and reads its
//! verdict. A decision, its finding, its deliveries and the end of its
//! undecided budget are one transaction, shared by every decision queued
//! meanwhile ([`writer`]). Outbox claims lock the rows they take
//! (`FOR UPDATE SKIP LOCKED`) and push their next attempt past a lease, so
//! concurrent claimers never take the same finding for one sink, and a
//! replica that dies mid-delivery only delays it by the lease. Findings
//! commit out of id order, so a sink cannot keep a watermark as in SQLite:
//! every finding (but an excepted one) gets a deliveries row per known sink
//! when recorded, and a sink's first claim writes the rows of the findings
//! before it, under a table lock that keeps the two from missing each other.
//!
//! Over 500 lines: the trait's methods share the pool and the error
//! mapping here; connecting, group commit, the outbox claims and triage
//! have their own files under `postgres/`, and what a stored row means is
//! `findings::stored`'s. The alert memory, the scan checkpoint and
//! the locks that make one alert dispatcher per sink and one sweep at a
//! time (the supertraits of [`Store`]) are in [`shared`].

mod connect;
mod outbox;
mod shared;
mod triage;
mod writer;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use deadpool_postgres::{Object, Pool, PoolError, Transaction};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::mpsc;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{GenericClient, IsolationLevel, Row};

pub use connect::PostgresConfig;

use super::migrations::{self, Backend, SchemaStatus};
use super::stored::{
    self, Arg, Columns, DECISIONS_BY_VERDICT, DELIVERY_COLUMNS, StoredDelivery, StoredFinding,
    decided_verdict, findings_query, tally_decisions,
};
use super::{
    Answer, Counts, Decision, DedupeKey, Finding, FindingId, FindingQuery, Outbox, Queued,
    SinkDelivery, Store, StoreError, TriageChange, Triaged,
};
use crate::audit::VerdictKind;

/// The advisory lock migrations are applied under: one replica migrates,
/// the others wait, then find the schema current.
const MIGRATION_LOCK: i64 = 0x1A6E_A0D1_7000_0001;

/// Decisions being written at once (each its own transaction and
/// connection); more queue and share the next commit.
const WRITERS: usize = 4;

/// Rows deleted per statement by `prune_decisions`.
const PRUNE_BATCH: i64 = 5000;

/// The findings store on PostgreSQL.
pub struct PostgresStore {
    /// Taken on drop, to shut down without blocking (the store may be
    /// dropped on an async thread).
    runtime: Option<Runtime>,
    handle: Handle,
    pool: Pool,
    /// The store as messages name it: no password.
    name: Arc<str>,
    writer: mpsc::UnboundedSender<Queued>,
    claim_lease_ms: i64,
    /// Sinks known to be registered (see [`PostgresStore::register_sink`]).
    sinks: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The error chain as one line: tokio-postgres says only "db error" at the
/// top.
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let _ = write!(text, ": {c}");
        cause = c.source();
    }
    text
}

/// Whether trying again later may succeed: the connection broke, the server
/// is shutting down or overloaded, or the transaction lost a race.
pub(super) fn is_transient(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            let code = code.code();
            code.starts_with("08") // connection exception
                || code.starts_with("53") // insufficient resources
                || code.starts_with("57P") // shutting down, cannot connect now
                || code == "40001" // serialization failure
                || code == "40P01" // deadlock detected
        }
        // Not from the server: the network.
        None => std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()),
    }
}

/// The runtime a store call runs on could not start (no threads, no I/O
/// driver): the store is as unavailable as an unreachable server.
fn runtime_error(name: &Arc<str>, e: std::io::Error) -> StoreError {
    StoreError::Unavailable {
        store: name.clone(),
        message: format!("cannot start the store's runtime: {e}"),
    }
}

fn pool_error(name: &Arc<str>, e: PoolError) -> StoreError {
    let message = match &e {
        PoolError::Backend(e) => chain(e),
        PoolError::Timeout(_) => {
            "no connection in time: the server does not answer, or every pooled connection \
             stayed busy"
                .into()
        }
        other => other.to_string(),
    };
    StoreError::Unavailable {
        store: name.clone(),
        message,
    }
}

impl PostgresStore {
    /// Connects with `config` (the URL read from where it says), applies
    /// the migrations the database lacks, and starts the writers.
    pub fn open(config: &PostgresConfig) -> Result<PostgresStore, StoreError> {
        let url = config.url(|var| std::env::var(var).ok())?;
        Self::open_url(config, &url)
    }

    /// [`PostgresStore::open`] with the connection string given.
    pub fn open_url(config: &PostgresConfig, url: &str) -> Result<PostgresStore, StoreError> {
        let (pg, name) = connect::parse(config, url)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("findings-postgres")
            .enable_all()
            .build()
            .map_err(|e| runtime_error(&name, e))?;
        let handle = runtime.handle().clone();
        let pool = {
            // The pool's timeouts need a runtime to exist in.
            let _entered = handle.enter();
            connect::pool(config, pg)?
        };
        handle.block_on(migrate(&pool, &name))?;
        let (writer, queue) = mpsc::unbounded_channel();
        let writers = WRITERS.min(config.pool_size - 1).max(1);
        handle.spawn(writer::run(pool.clone(), name.clone(), queue, writers));
        tracing::info!(store = %name, "findings store: PostgreSQL");
        Ok(PostgresStore {
            runtime: Some(runtime),
            handle,
            pool,
            name,
            writer,
            claim_lease_ms: super::DEFAULT_CLAIM_LEASE.as_millis() as i64,
            sinks: Mutex::new(HashSet::new()),
        })
    }

    /// How long a claim hides a finding from further claims for the same
    /// sink (default [`super::DEFAULT_CLAIM_LEASE`]).
    pub fn with_claim_lease(mut self, lease: Duration) -> PostgresStore {
        self.claim_lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        self
    }

    /// The store as messages name it (no password).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The schema of the database `config` names against this build's,
    /// changing nothing.
    pub fn schema_status(config: &PostgresConfig) -> Result<SchemaStatus, StoreError> {
        let url = config.url(|var| std::env::var(var).ok())?;
        Self::schema_status_url(config, &url)
    }

    /// [`PostgresStore::schema_status`] with the connection string given.
    pub fn schema_status_url(
        config: &PostgresConfig,
        url: &str,
    ) -> Result<SchemaStatus, StoreError> {
        let (pg, name) = connect::parse(config, url)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| runtime_error(&name, e))?;
        runtime.block_on(async {
            let pool = connect::pool(config, pg)?;
            let client = pool.get().await.map_err(|e| pool_error(&name, e))?;
            let found = schema_version(&**client, &name).await?;
            Ok(SchemaStatus::new(Backend::Postgres, &*name, found))
        })
    }

    fn block_on<T>(&self, f: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        self.handle.block_on(f)
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(|e| pool_error(&self.name, e))
    }

    fn pg(&self, source: tokio_postgres::Error) -> StoreError {
        pg_error(&self.name, source)
    }

    fn corrupt(&self, what: String) -> StoreError {
        stored::corrupt(&self.name, what)
    }

    /// A read-only transaction on one snapshot: a page of findings and
    /// their delivery states, or the counts, agree with each other.
    async fn snapshot<'c>(&self, client: &'c mut Object) -> Result<Transaction<'c>, StoreError> {
        client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(|e| self.pg(e))
    }

    /// Makes `sink` known: from now on every finding recorded gets a
    /// deliveries row for it, and every finding before gets one now
    /// (excepted findings never do: they are owed to no sink). The
    /// table lock waits for transactions inserting findings and holds new
    /// ones back until this commits: each finding is either committed
    /// before (and seen here) or inserted after (and sees the sink).
    async fn register_sink(&self, sink: &str) -> Result<(), StoreError> {
        if self
            .sinks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(sink)
        {
            return Ok(());
        }
        let mut client = self.client().await?;
        let known = client
            .query_opt("SELECT 1 FROM sinks WHERE sink = $1", &[&sink])
            .await
            .map_err(|e| self.pg(e))?
            .is_some();
        if !known {
            let tx = client.transaction().await.map_err(|e| self.pg(e))?;
            tx.batch_execute("LOCK TABLE findings IN SHARE MODE")
                .await
                .map_err(|e| self.pg(e))?;
            tx.execute(
                "INSERT INTO sinks (sink) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&sink],
            )
            .await
            .map_err(|e| self.pg(e))?;
            tx.execute(
                "INSERT INTO deliveries (finding, sink, state, attempts, next_attempt_ms) \
                 SELECT id, $1, 'pending', 0, 0 FROM findings WHERE excepted_by IS NULL \
                 ON CONFLICT DO NOTHING",
                &[&sink],
            )
            .await
            .map_err(|e| self.pg(e))?;
            tx.commit().await.map_err(|e| self.pg(e))?;
        }
        self.sinks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(sink.to_owned());
        Ok(())
    }

    fn finding_of_row(&self, row: &Row) -> Result<Finding, StoreError> {
        StoredFinding::read(row)
            .map_err(|e| self.pg(e))?
            .into_finding(&self.name)
    }

    /// A row of `outbox` read with [`DELIVERY_COLUMNS`].
    fn delivery(&self, row: &Row, outbox: Outbox) -> Result<(FindingId, SinkDelivery), StoreError> {
        StoredDelivery::read(row)
            .map_err(|e| self.pg(e))?
            .into_delivery(&self.name, outbox)
    }

    /// `findings` with the deliveries of each (of `sink` only, when given),
    /// read in `client`'s current transaction.
    async fn with_deliveries(
        &self,
        client: &Transaction<'_>,
        mut findings: Vec<Finding>,
        sink: Option<&str>,
    ) -> Result<Vec<Finding>, StoreError> {
        if findings.is_empty() {
            return Ok(findings);
        }
        let ids: Vec<i64> = findings.iter().map(|f| f.id.0).collect();
        let rows = client
            .query(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries \
                     WHERE finding = ANY($1) AND ($2::text IS NULL OR sink = $2) \
                     ORDER BY finding, sink"
                ),
                &[&ids, &sink],
            )
            .await
            .map_err(|e| self.pg(e))?;
        for row in &rows {
            let (finding, delivery) = self.delivery(row, Outbox::Alerts)?;
            if let Some(f) = findings.iter_mut().find(|f| f.id == finding) {
                f.deliveries.push(delivery);
            }
        }
        Ok(findings)
    }
}

impl Columns for Row {
    type Error = tokio_postgres::Error;
    fn int(&self, i: usize) -> Result<i64, tokio_postgres::Error> {
        // `attempts` is INTEGER; times and ids are BIGINT.
        if *self.columns()[i].type_() == Type::INT4 {
            return self.try_get::<_, i32>(i).map(i64::from);
        }
        self.try_get(i)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, tokio_postgres::Error> {
        self.try_get(i)
    }
    fn text(&self, i: usize) -> Result<String, tokio_postgres::Error> {
        self.try_get(i)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, tokio_postgres::Error> {
        self.try_get(i)
    }
}

fn pg_error(name: &Arc<str>, source: tokio_postgres::Error) -> StoreError {
    StoreError::Postgres {
        store: name.clone(),
        message: chain(&source),
        source,
    }
}

/// The schema version of the database: 0 when it has no
/// `schema_migrations` table yet.
async fn schema_version(client: &impl GenericClient, name: &Arc<str>) -> Result<i64, StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await
        .map_err(|e| pg_error(name, e))?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .map_err(|e| pg_error(name, e))?
        .get(0))
}

/// Applies the migrations the database lacks, all in one transaction under
/// [`MIGRATION_LOCK`] (released at commit): replicas starting together
/// apply them once.
async fn migrate(pool: &Pool, name: &Arc<str>) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(|e| pool_error(name, e))?;
    let err = |e| pg_error(name, e);
    // Cheap check first: the usual start finds nothing to do and takes no lock.
    let found = schema_version(&**client, name).await?;
    if migrations::pending(Backend::Postgres, found, name)?.is_empty() {
        return Ok(());
    }
    let tx = client.transaction().await.map_err(err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version       BIGINT PRIMARY KEY,
             name          TEXT   NOT NULL,
             applied_at_ms BIGINT NOT NULL
         )",
    )
    .await
    .map_err(err)?;
    // Again under the lock: another replica may have migrated meanwhile.
    let found = schema_version(&*tx, name).await?;
    for m in migrations::pending(Backend::Postgres, found, name)? {
        tx.batch_execute(m.sql).await.map_err(err)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &super::now_ms()],
        )
        .await
        .map_err(err)?;
        tracing::info!(store = %name, version = m.version, migration = m.name,
            "findings store: migrated");
    }
    tx.commit().await.map_err(err)
}

impl Store for PostgresStore {
    fn submit(&self, d: Decision) -> Result<Answer, StoreError> {
        Queued::submit(&self.name, &self.writer, d)
    }

    fn decision(&self, key: &DedupeKey) -> Result<Option<VerdictKind>, StoreError> {
        let [source, endpoint, event_id] = key.columns();
        self.block_on(async {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(
                    "SELECT verdict FROM decisions \
                     WHERE source = $1 AND endpoint = $2 AND event_id = $3",
                )
                .await
                .map_err(|e| self.pg(e))?;
            let row = client
                .query_opt(&statement, &[&source, &endpoint, &event_id])
                .await
                .map_err(|e| self.pg(e))?;
            row.map(|row| decided_verdict(&self.name, key, row.get(0)))
                .transpose()
        })
    }

    fn findings(&self, q: &FindingQuery) -> Result<Vec<Finding>, StoreError> {
        let (sql, args) = findings_query(q, '$');
        let args: Vec<&(dyn ToSql + Sync)> = args
            .iter()
            .map(|a| match a {
                Arg::Text(s) => s as _,
                Arg::Int(n) => n as _,
            })
            .collect();
        self.block_on(async {
            let mut client = self.client().await?;
            // One snapshot for the page and its delivery states.
            let tx = self.snapshot(&mut client).await?;
            let rows = tx.query(&sql, &args).await.map_err(|e| self.pg(e))?;
            let found = rows
                .iter()
                .map(|row| self.finding_of_row(row))
                .collect::<Result<Vec<_>, _>>()?;
            let found = self.with_deliveries(&tx, found, None).await?;
            tx.commit().await.map_err(|e| self.pg(e))?;
            Ok(found)
        })
    }

    fn counts(&self) -> Result<Counts, StoreError> {
        self.block_on(async {
            let mut client = self.client().await?;
            let tx = self.snapshot(&mut client).await?;
            let rows = tx
                .query(DECISIONS_BY_VERDICT, &[])
                .await
                .map_err(|e| self.pg(e))?;
            let decisions =
                tally_decisions(&self.name, rows.iter().map(|row| (row.get(0), row.get(1))))?;
            // With a sink known, every finding not excepted has a row per
            // sink; before, every finding not excepted is owed.
            let totals = tx
                .query_one(
                    "SELECT (SELECT COUNT(*) FROM findings), \
                       CASE WHEN EXISTS (SELECT 1 FROM sinks) \
                         THEN (SELECT COUNT(DISTINCT finding) FROM deliveries \
                               WHERE state = 'pending') \
                         ELSE (SELECT COUNT(*) FROM findings WHERE excepted_by IS NULL) END, \
                       (SELECT COUNT(*) FROM findings WHERE excepted_by IS NOT NULL)",
                    &[],
                )
                .await
                .map_err(|e| self.pg(e))?;
            let undelivered_by_sink = tx
                .query(
                    "SELECT s.sink, (SELECT COUNT(*) FROM deliveries d \
                       WHERE d.sink = s.sink AND d.state = 'pending') \
                     FROM sinks s ORDER BY s.sink",
                    &[],
                )
                .await
                .map_err(|e| self.pg(e))?
                .iter()
                .map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1) as u64))
                .collect();
            tx.commit().await.map_err(|e| self.pg(e))?;
            Ok(Counts {
                decisions,
                findings: totals.get::<_, i64>(0) as u64,
                excepted: totals.get::<_, i64>(2) as u64,
                undelivered: totals.get::<_, i64>(1) as u64,
                undelivered_by_sink,
            })
        })
    }

    fn undelivered(&self, sink: &str) -> Result<u64, StoreError> {
        self.block_on(async {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(
                    "SELECT CASE WHEN EXISTS (SELECT 1 FROM sinks WHERE sink = $1) \
                       THEN (SELECT COUNT(*) FROM deliveries \
                             WHERE sink = $1 AND state = 'pending') \
                       ELSE (SELECT COUNT(*) FROM findings WHERE excepted_by IS NULL) END",
                )
                .await
                .map_err(|e| self.pg(e))?;
            let n: i64 = client
                .query_one(&statement, &[&sink])
                .await
                .map_err(|e| self.pg(e))?
                .get(0);
            Ok(n as u64)
        })
    }

    fn prune_decisions(&self, older_than_ms: i64) -> Result<u64, StoreError> {
        self.block_on(async {
            let client = self.client().await?;
            let mut total = 0u64;
            loop {
                // Batches, each its own transaction, so that no lock is held
                // long against `record`.
                let n = client
                    .execute(
                        "DELETE FROM decisions WHERE ctid IN ( \
                           SELECT d.ctid FROM decisions d \
                           WHERE d.received_at_ms < $1 AND NOT EXISTS ( \
                             SELECT 1 FROM findings f \
                             WHERE f.source = d.source AND f.endpoint = d.endpoint \
                               AND f.event_id = d.event_id) \
                           LIMIT $2)",
                        &[&older_than_ms, &PRUNE_BATCH],
                    )
                    .await
                    .map_err(|e| self.pg(e))?;
                total += n;
                if (n as i64) < PRUNE_BATCH {
                    break;
                }
            }
            client
                .execute(
                    "DELETE FROM undecided WHERE first_seen_ms < $1",
                    &[&older_than_ms],
                )
                .await
                .map_err(|e| self.pg(e))?;
            Ok(total)
        })
    }

    fn first_undecided(&self, key: &DedupeKey, now_ms: i64) -> Result<i64, StoreError> {
        let [source, endpoint, event_id] = key.columns();
        self.block_on(async {
            let client = self.client().await?;
            // The no-op update makes RETURNING give the row that was there.
            let statement = client
                .prepare_cached(
                    "INSERT INTO undecided (source, endpoint, event_id, first_seen_ms) \
                     VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (source, endpoint, event_id) \
                     DO UPDATE SET first_seen_ms = undecided.first_seen_ms \
                     RETURNING first_seen_ms",
                )
                .await
                .map_err(|e| self.pg(e))?;
            Ok(client
                .query_one(&statement, &[&source, &endpoint, &event_id, &now_ms])
                .await
                .map_err(|e| self.pg(e))?
                .get(0))
        })
    }

    fn finding(&self, id: FindingId) -> Result<Option<Finding>, StoreError> {
        self.block_on(self.finding_by_id(id))
    }

    fn triage(
        &self,
        id: FindingId,
        change: &TriageChange,
        now_ms: i64,
    ) -> Result<Triaged, StoreError> {
        self.block_on(self.apply_triage(id, change, now_ms))
    }

    fn check(&self) -> Result<(), StoreError> {
        self.block_on(async {
            let client = self.client().await?;
            client
                .simple_query("SELECT 1")
                .await
                .map_err(|e| self.pg(e))?;
            Ok(())
        })
    }

    fn backend(&self) -> Backend {
        Backend::Postgres
    }
}
