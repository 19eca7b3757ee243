//! The findings store and outbox (docs/design.md §7, §8.1).
//!
//! Every delivery that reached a final verdict is a [`Decision`]; recording
//! it is what makes the delivery safe to acknowledge. Decisions whose verdict
//! needs a human ([`VerdictKind::alerts`]) also become a [`Finding`], a row
//! of the outbox the alert sinks deliver from until each has succeeded.
//!
//! Two stores keep the [`Store`] contract: [`SqliteStore`], the embedded
//! default for one process, and [`PostgresStore`], shared by replicas
//! (dedupe, the undecided retry budget and outbox claims are then one for
//! all of them). Both bring their schema up to date when opened
//! ([`migrations`]). [`open`] picks one from a [`StoreLocation`].
//!
//! Over 500 lines: the [`Store`] contract and the types it speaks in are
//! one reading; its supertraits (the outboxes in `outbox.rs`, what
//! processes on one store do once in `shared.rs`), each backend's code, and
//! triage's rules ([`triage`]), live in their own files.

pub mod migrations;
mod outbox;
pub mod postgres;
mod shared;
mod sqlite;
mod stored;
pub mod triage;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::audit::{EvidenceEntry, Verdict, VerdictKind};
use crate::event::{Action, EndpointName, Event, EventId, Malformed, Source};
use crate::reference::{Digest, Repository, Tag};

pub use migrations::{Backend, SchemaStatus};
pub use outbox::{Outbox, OutboxRow, Outboxes};
pub use postgres::{PostgresConfig, PostgresStore};
pub use shared::{AlertMemory, AlertState, Checkpoints, HeldLock, Locks, SentAlert, StoreLock};
pub use sqlite::{DEFAULT_CLAIM_LEASE, SqliteStore, now_ms};
pub use triage::{Triage, TriageAction, TriageChange, TriageState};

/// Where the findings are kept.
#[derive(Debug, Clone)]
pub enum StoreLocation {
    /// An SQLite file: one process (with any number of `scan` runs beside it).
    Sqlite(PathBuf),
    /// A PostgreSQL database, shared by every replica.
    Postgres(PostgresConfig),
}

impl StoreLocation {
    pub fn backend(&self) -> Backend {
        match self {
            StoreLocation::Sqlite(_) => Backend::Sqlite,
            StoreLocation::Postgres(_) => Backend::Postgres,
        }
    }
}

/// Opens the store at `location`, applying the migrations it lacks.
pub fn open(location: &StoreLocation) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match location {
        StoreLocation::Sqlite(path) => Arc::new(SqliteStore::open(path)?),
        StoreLocation::Postgres(config) => Arc::new(PostgresStore::open(config)?),
    })
}

/// The schema at `location` against this build's, changing nothing.
pub fn schema_status(location: &StoreLocation) -> Result<SchemaStatus, StoreError> {
    match location {
        StoreLocation::Sqlite(path) => SqliteStore::schema_status(path),
        StoreLocation::Postgres(config) => PostgresStore::schema_status(config),
    }
}

/// What makes two deliveries the same one: the source, the endpoint that
/// received it (ids are unique only within one) and the source's id for
/// it. A decision is recorded once per key; a redelivery is answered with
/// the first verdict.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct DedupeKey {
    pub source: Source,
    /// Empty for sources with one endpoint ([`EndpointName::only`]).
    pub endpoint: EndpointName,
    pub event_id: EventId,
}

impl fmt::Display for DedupeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = self.source.as_str();
        write!(f, "{source}/{}/{}", self.endpoint, self.event_id)
    }
}

/// One delivery that reached a final verdict (never `undecided`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub key: DedupeKey,
    /// When the source handed the delivery over, in Unix milliseconds.
    /// Retention ([`Store::prune_decisions`]) and the `since` filter use it.
    pub received_at_ms: i64,
    pub action: Option<Action>,
    pub repository: Option<Repository>,
    pub digest: Option<Digest>,
    pub tag: Option<Tag>,
    pub verdict: VerdictKind,
    pub reason: String,
    /// The verdict's manifest entries, then what a pushed list names.
    pub evidence: Vec<EvidenceEntry>,
    /// The manifest repository commit the index was built from, when known.
    pub manifest_commit: Option<String>,
    pub index_generation: u64,
    /// The exceptions entry (`file:line`) that covers this alerting
    /// verdict: the finding is recorded but never alerted.
    pub excepted_by: Option<String>,
}

impl Decision {
    /// The decision about a decoded event.
    pub fn of_event(
        event: &Event,
        endpoint: &EndpointName,
        received_at_ms: i64,
        verdict: &Verdict,
        manifest_commit: Option<String>,
        index_generation: u64,
    ) -> Decision {
        let key = DedupeKey {
            source: event.source,
            endpoint: endpoint.clone(),
            event_id: event.id.clone(),
        };
        Decision {
            action: Some(event.action),
            repository: Some(event.repository.clone()),
            digest: event.digest.clone(),
            tag: event.tag.clone(),
            ..Decision::of_verdict(
                key,
                received_at_ms,
                verdict,
                manifest_commit,
                index_generation,
            )
        }
    }

    /// The `malformed` decision about a delivery that could not be decoded.
    pub fn of_malformed(
        m: &Malformed,
        endpoint: &EndpointName,
        received_at_ms: i64,
        manifest_commit: Option<String>,
        index_generation: u64,
    ) -> Decision {
        let key = DedupeKey {
            source: m.source,
            endpoint: endpoint.clone(),
            event_id: m.id.clone(),
        };
        let verdict = Verdict::malformed(m);
        Decision::of_verdict(
            key,
            received_at_ms,
            &verdict,
            manifest_commit,
            index_generation,
        )
    }

    /// `verdict` about the delivery `key`, without the event's fields (a
    /// delivery that could not be decoded has none).
    fn of_verdict(
        key: DedupeKey,
        received_at_ms: i64,
        verdict: &Verdict,
        manifest_commit: Option<String>,
        index_generation: u64,
    ) -> Decision {
        Decision {
            key,
            received_at_ms,
            action: None,
            repository: None,
            digest: None,
            tag: None,
            verdict: verdict.kind,
            reason: verdict.reason.clone(),
            evidence: EvidenceEntry::of(verdict),
            manifest_commit,
            index_generation,
            excepted_by: None,
        }
    }

    /// The same decision, covered by the exceptions entry at `location`
    /// (`file:line`).
    pub fn excepted_by(mut self, location: String) -> Decision {
        self.excepted_by = Some(location);
        self
    }
}

/// The store's id of a finding: increasing in the order findings were recorded.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct FindingId(pub i64);

impl fmt::Display for FindingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What [`Store::record`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// First time this [`DedupeKey`] was recorded; `finding` is set when
    /// the verdict alerts.
    New { finding: Option<FindingId> },
    /// Already recorded (a redelivery): nothing was written. `verdict` is
    /// the verdict recorded the first time.
    Duplicate { verdict: VerdictKind },
}

/// An alert-worthy decision, with everything an alert needs. Serialised
/// as-is by `GET /v1/findings`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub id: FindingId,
    /// When the finding was recorded, Unix milliseconds.
    pub created_at_ms: i64,
    /// When the source delivered the event, Unix milliseconds.
    pub received_at_ms: i64,
    /// Serialised as its three fields: `source`, `endpoint`, `event_id`.
    #[serde(flatten)]
    pub key: DedupeKey,
    pub action: Option<Action>,
    pub repository: Option<Repository>,
    pub digest: Option<Digest>,
    pub tag: Option<Tag>,
    pub verdict: VerdictKind,
    pub reason: String,
    /// The verdict's [`EvidenceEntry`] list, as serialised when recorded.
    pub evidence: serde_json::Value,
    pub manifest_commit: Option<String>,
    pub index_generation: u64,
    /// The exceptions entry (`file:line`) that covered the finding when it
    /// was recorded: such a finding is kept for the record and never
    /// claimed by a sink.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excepted_by: Option<String>,
    /// Open, acknowledged or resolved, and by whom ([`Store::triage`]).
    pub triage: Triage,
    /// Delivery state per sink that has claimed the finding (see
    /// [`Outboxes::claim`]); from a claim, only the claiming sink's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deliveries: Vec<SinkDelivery>,
}

/// The delivery of one finding to one sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SinkDelivery {
    pub sink: String,
    pub state: DeliveryState,
    /// Claims so far, this one included when returned by a claim.
    pub attempts: u32,
    /// Not claimable for this sink before this time (Unix milliseconds).
    pub next_attempt_ms: i64,
    pub delivered_at_ms: Option<i64>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
        }
    }
}

/// Filters of [`Store::findings`]; all set filters must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FindingQuery {
    pub verdict: Option<VerdictKind>,
    pub digest: Option<Digest>,
    pub repository: Option<Repository>,
    pub state: Option<TriageState>,
    /// Only findings of events received at or after this time (Unix ms).
    pub since_ms: Option<i64>,
    /// Only findings older than this one: the cursor for the next page.
    pub before: Option<FindingId>,
    /// At most this many ([`FindingQuery::DEFAULT_LIMIT`] when unset,
    /// capped at [`FindingQuery::MAX_LIMIT`]).
    pub limit: Option<usize>,
}

impl FindingQuery {
    pub const DEFAULT_LIMIT: usize = 100;
    pub const MAX_LIMIT: usize = 1000;

    /// The limit in force: the default when unset, capped at the maximum.
    pub fn effective_limit(&self) -> usize {
        self.limit
            .unwrap_or(Self::DEFAULT_LIMIT)
            .min(Self::MAX_LIMIT)
    }
}

/// Totals for metrics and `/readyz`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Decisions kept, per verdict, in [`VerdictKind::ALL`] order (zeros included).
    pub decisions: Vec<(VerdictKind, u64)>,
    pub findings: u64,
    /// Findings an exception covered (never alerted); included in `findings`.
    pub excepted: u64,
    /// Findings some known sink has not delivered yet. A sink becomes known
    /// at its first claim; before any sink is, every finding is undelivered.
    pub undelivered: u64,
    /// Undelivered findings per known sink, by sink name.
    pub undelivered_by_sink: Vec<(String, u64)>,
}

impl Counts {
    pub fn decisions_of(&self, kind: VerdictKind) -> u64 {
        self.decisions
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }

    pub fn decisions_total(&self) -> u64 {
        self.decisions.iter().map(|(_, n)| n).sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("findings store {path}: cannot create directory {dir}: {source}")]
    CreateDir {
        path: PathBuf,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("findings store {path}: {source}")]
    Sqlite {
        path: Arc<str>,
        source: rusqlite::Error,
    },
    #[error(
        "findings store {path}: schema version {found} is newer than this build understands ({supported}); use a newer image-auditor"
    )]
    SchemaTooNew {
        path: Arc<str>,
        found: i64,
        supported: i64,
    },
    #[error("findings store {path}: unreadable row: {what}")]
    Corrupt { path: Arc<str>, what: String },
    #[error(
        "event {source_name}/{event_id}: an undecided verdict is not final and is never recorded"
    )]
    Undecided {
        source_name: &'static str,
        event_id: EventId,
    },
    /// The transaction that carried this decision with others could not
    /// be committed; nothing of it was written.
    #[error("findings store {path}: group commit failed: {message}")]
    GroupCommit { path: Arc<str>, message: String },
    #[error("findings store {path}: lock {name:?}: {source}")]
    Lock {
        path: Arc<str>,
        name: String,
        source: std::io::Error,
    },
    #[error("findings store {path}: finding {id} was never claimed by sink {sink:?}")]
    NotClaimed {
        path: Arc<str>,
        sink: String,
        id: FindingId,
    },
    /// A PostgreSQL call failed; `message` is the whole chain of causes
    /// (the driver's own text says only "db error").
    #[error("findings store {store}: {message}")]
    Postgres {
        store: Arc<str>,
        message: String,
        source: tokio_postgres::Error,
    },
    /// No PostgreSQL connection could be had in time: the server is down,
    /// unreachable, or every pooled connection stayed busy.
    #[error("findings store {store}: unavailable: {message}")]
    Unavailable { store: Arc<str>, message: String },
    /// `store.postgres` cannot be used as configured.
    #[error("store.postgres: {message}")]
    PostgresConfig { message: String },
    #[error("findings store {path}: no finding {id}")]
    NoSuchFinding { path: Arc<str>, id: FindingId },
    /// The change is not allowed from the finding's state
    /// ([`triage::transition`]).
    #[error("finding {id}: {refused}")]
    Triage {
        id: FindingId,
        refused: triage::Refused,
    },
    /// The blocking task running a store call panicked or was cancelled
    /// (see [`off_thread`]). Not a `source`: the message already says it.
    #[error("store call failed: {0}")]
    Aborted(tokio::task::JoinError),
}

impl StoreError {
    /// Whether trying again later may succeed (the database was busy or an
    /// I/O error happened), as opposed to a bug or a broken file.
    pub fn is_transient(&self) -> bool {
        match self {
            // A failed commit is a busy or full disk far more often than a
            // bug; the decisions are not written and can be tried again.
            StoreError::GroupCommit { .. } | StoreError::Unavailable { .. } => true,
            StoreError::Postgres { source, .. } => postgres::is_transient(source),
            StoreError::Sqlite {
                source: rusqlite::Error::SqliteFailure(e, _),
                ..
            } => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::SystemIoFailure
                    | rusqlite::ErrorCode::DiskFull
            ),
            _ => false,
        }
    }
}

/// The findings store. Methods block (file or network I/O): call them from
/// `spawn_blocking` in async code ([`off_thread`]), never from an async
/// task (a store would panic there) — except [`Store::submit`], which only
/// queues. The outboxes the alert sinks deliver from are the supertrait
/// [`Outboxes`]; what processes on one store must do once are the others:
/// [`AlertMemory`], [`Locks`], [`Checkpoints`].
pub trait Store: AlertMemory + Locks + Checkpoints + Outboxes + Send + Sync {
    /// Queues the decision for recording and returns at once; the
    /// [`Answer`] is what [`Store::record`] returns, once the decision is
    /// durable. Concurrent decisions share one transaction (group commit).
    /// Async callers use this: no thread is held while the commit is made.
    /// An `undecided` verdict is refused here.
    fn submit(&self, d: Decision) -> Result<Answer, StoreError>;

    /// Atomically: insert the decision unless its key is already recorded,
    /// and, when the verdict alerts, a finding in the outbox (pending for
    /// every sink; an excepted one, `excepted_by` set, is kept but owed to
    /// no sink). One transaction, durable before this returns: callers
    /// acknowledge the delivery only after `Ok`.
    /// An `undecided` verdict is refused.
    fn record(&self, d: &Decision) -> Result<Recorded, StoreError> {
        self.submit(d.clone())?.wait()
    }

    /// The verdict recorded under `key`, if any.
    fn decision(&self, key: &DedupeKey) -> Result<Option<VerdictKind>, StoreError>;

    /// Findings matching `q`, newest first.
    fn findings(&self, q: &FindingQuery) -> Result<Vec<Finding>, StoreError>;

    fn counts(&self) -> Result<Counts, StoreError>;

    /// Findings `sink` still owes: every finding before its first claim.
    /// The one figure of [`Counts`] a sink needs, without counting every
    /// decision (what [`Store::counts`] does).
    fn undelivered(&self, sink: &str) -> Result<u64, StoreError>;

    /// Deletes decisions of events received before `older_than_ms` that did
    /// not become findings (findings and their decisions are kept, so their
    /// dedupe never expires). Returns how many were deleted. A redelivery
    /// of a pruned event is recorded again as new.
    fn prune_decisions(&self, older_than_ms: i64) -> Result<u64, StoreError>;

    /// The undecided retry budget: when the delivery `key` was first seen
    /// undecided, by any process on this store. The first call
    /// records `now_ms` and returns it; later ones return that first time,
    /// until [`Store::record`] decides the delivery and forgets it.
    fn first_undecided(&self, key: &DedupeKey, now_ms: i64) -> Result<i64, StoreError>;

    /// The finding `id`, with every sink's delivery state.
    fn finding(&self, id: FindingId) -> Result<Option<Finding>, StoreError>;

    /// Applies `change` to finding `id` under the rules of
    /// [`triage::transition`], in one transaction with the read of its
    /// state. Resolving owes a resolution to every sink the finding's alert
    /// was delivered to (and, through [`Outboxes::mark_delivered`], to every
    /// sink it is delivered to later): rows of [`Outbox::Resolutions`].
    /// [`StoreError::NoSuchFinding`] or [`StoreError::Triage`] when it
    /// cannot be applied.
    fn triage(
        &self,
        id: FindingId,
        change: &TriageChange,
        now_ms: i64,
    ) -> Result<Triaged, StoreError>;

    /// Whether the store answers now (`/readyz`).
    fn check(&self) -> Result<(), StoreError>;

    fn backend(&self) -> Backend;
}

/// A decision on its way to a store's writer, with where its answer goes
/// (both backends' group commit take these).
struct Queued {
    decision: Decision,
    /// The evidence as JSON, for decisions that become findings.
    evidence: Option<String>,
    reply: tokio::sync::oneshot::Sender<Result<Recorded, StoreError>>,
}

impl Queued {
    /// [`Store::submit`] of both backends: `d`, checked and prepared
    /// outside the writer (see [`stored::evidence_to_record`]), handed to
    /// the store's `writer`, and the answer the writer fills.
    fn submit(
        store: &Arc<str>,
        writer: &impl WriterQueue,
        d: Decision,
    ) -> Result<Answer, StoreError> {
        let evidence = stored::evidence_to_record(store, &d)?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        writer.hand_over(Queued {
            decision: d,
            evidence,
            reply,
        });
        Ok(Answer {
            reply: answer,
            store: store.clone(),
        })
    }
}

/// The queue of a store's group-commit writer (each backend's channel).
trait WriterQueue {
    /// Hands `pending` to the writer. One that has stopped drops it, and
    /// with it the reply end its [`Answer`] waits on: the answer reports it.
    fn hand_over(&self, pending: Queued);
}

/// The answer to a [`Store::submit`]: arrives once the commit that carries
/// the decision is durable, or has failed.
#[derive(Debug)]
pub struct Answer {
    reply: tokio::sync::oneshot::Receiver<Result<Recorded, StoreError>>,
    store: Arc<str>,
}

impl Answer {
    /// Waits for the answer without holding a thread.
    pub async fn recorded(self) -> Result<Recorded, StoreError> {
        let Answer { reply, store } = self;
        reply.await.unwrap_or_else(|_| Err(lost(store)))
    }

    /// Blocks the calling thread for the answer (never an async task's:
    /// that panics).
    pub fn wait(self) -> Result<Recorded, StoreError> {
        let Answer { reply, store } = self;
        reply.blocking_recv().unwrap_or_else(|_| Err(lost(store)))
    }
}

/// The writer stopped (a panic, or the store is being dropped) without
/// answering: the decision may or may not be written, so the caller
/// retries, and a redelivery is answered by the dedupe.
fn lost(store: Arc<str>) -> StoreError {
    StoreError::GroupCommit {
        path: store,
        message: "the store's writer stopped before answering".into(),
    }
}

/// What [`Store::triage`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Triaged {
    /// The finding afterwards.
    pub finding: Finding,
    /// Whether the state changed (false: it already was the target, see
    /// [`triage::Transition::Unchanged`]).
    pub changed: bool,
}

/// Records `d` from async code: queued to the store's writer and awaited,
/// so no thread is held while the commit is made (see [`Store::submit`]).
/// Queued when called, not when first polled, so the decision is not kept
/// in the future while it waits (every delivery's future carries this one).
pub fn record_queued(
    store: &dyn Store,
    d: Decision,
) -> impl Future<Output = Result<Recorded, StoreError>> + use<> {
    let answer = store.submit(d);
    async move { answer?.recorded().await }
}

/// Runs a store call off the async threads: SQLite blocks on fsync, the
/// PostgreSQL store on its own runtime. A
/// panicking call is a bug, but it only becomes an error here (the caller
/// retries), never a crashed task.
pub async fn off_thread<T: Send + 'static>(
    store: &Arc<dyn Store>,
    f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&*store))
        .await
        .map_err(StoreError::Aborted)?
}

/// `Source` from its `as_str()` text.
pub fn parse_source(s: &str) -> Option<Source> {
    Source::ALL.into_iter().find(|k| k.as_str() == s)
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn action_str(a: Action) -> &'static str {
    a.as_str()
}

fn parse_action(s: &str) -> Option<Action> {
    Action::ALL.into_iter().find(|a| action_str(*a) == s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_store_call_that_panics_becomes_a_typed_error() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
        let err = off_thread(&store, |_| -> Result<(), StoreError> {
            panic!("a bug in a store call")
        })
        .await
        .unwrap_err();
        assert!(matches!(err, StoreError::Aborted(_)), "{err}");
        assert!(err.to_string().starts_with("store call failed: "), "{err}");
        assert!(!err.is_transient());
    }
}
