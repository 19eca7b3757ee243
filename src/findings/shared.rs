//! What every process on one store must do once, whichever backend keeps
//! it: the supertraits of [`Store`](super::Store) by idea. [`AlertMemory`]
//! is each sink's memory of its alerts (so that whoever leads the sink next
//! updates them), [`Locks`] the named locks (one alert dispatcher per sink,
//! one sweep at a time), [`Checkpoints`] where an interrupted sweep
//! resumes. Each backend implements them in its own `shared.rs`.

use std::fmt;

use super::{FindingId, StoreError};

/// The alert a sink sent for one fact, as the dispatcher keeps it to update
/// that alert when the fact is seen again ([`AlertMemory::alert_sent`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentAlert {
    /// The fact's stable id: the alert id.
    pub fact: String,
    /// When the fact was first seen; the repeat window runs from here.
    pub first_seen_ms: i64,
    /// What an update needs, as JSON the alert dispatcher writes and reads;
    /// the store does not look inside.
    pub body: String,
}

/// Where a sink's alert of one fact stands in the store's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    /// About to be sent, or sent without an answer yet: it may have arrived.
    InFlight,
    /// Reached the sink's receiver.
    Sent,
}

/// Each sink's alert memory, one for every process on the store. Methods
/// block, as every [`Store`](super::Store) method does.
pub trait AlertMemory {
    /// The alert for `alert.fact` is about to be sent to `sink`: it is
    /// remembered as in flight (replacing an earlier in-flight entry of
    /// the fact) until [`AlertMemory::alert_sent`] or
    /// [`AlertMemory::alert_not_sent`] settles it. Written before the send,
    /// so that whoever leads the sink next knows this alert may have arrived
    /// ([`AlertMemory::alerts_in_flight`]).
    fn alert_in_flight(&self, sink: &str, alert: &SentAlert, now_ms: i64)
    -> Result<(), StoreError>;

    /// `sink`'s receiver refused the alert of `fact` (it answered, and not
    /// with success): it is no longer in flight. Idempotent.
    fn alert_not_sent(&self, sink: &str, fact: &str) -> Result<(), StoreError>;

    /// The alert for `alert.fact` reached `sink`: in one transaction, every
    /// finding of `findings` is marked delivered to it, the alert is
    /// remembered (replacing what was remembered for the fact) and is no
    /// longer in flight, so that the next sight of the fact, by this
    /// process or any other on the store, updates this alert.
    /// [`StoreError::NotClaimed`] (and nothing written) when a finding was
    /// never claimed for `sink`.
    fn alert_sent(
        &self,
        sink: &str,
        alert: &SentAlert,
        findings: &[FindingId],
        now_ms: i64,
    ) -> Result<(), StoreError>;

    /// The alerts `sink` remembers in `state` for facts first seen at or
    /// after `since_ms`, in no particular order.
    fn remembered_alerts(
        &self,
        state: AlertState,
        sink: &str,
        since_ms: i64,
    ) -> Result<Vec<SentAlert>, StoreError>;

    /// The alerts sent, or being sent, to `sink` that were never settled,
    /// for facts first seen at or after `since_ms`.
    fn alerts_in_flight(&self, sink: &str, since_ms: i64) -> Result<Vec<SentAlert>, StoreError> {
        self.remembered_alerts(AlertState::InFlight, sink, since_ms)
    }

    /// The alerts `sink` remembers as sent for facts first seen at or after
    /// `since_ms`.
    fn sent_alerts(&self, sink: &str, since_ms: i64) -> Result<Vec<SentAlert>, StoreError> {
        self.remembered_alerts(AlertState::Sent, sink, since_ms)
    }

    /// The fact `fact` was resolved and `sink` has the resolution: its
    /// alert, sent or in flight, is forgotten, so that the next sight of
    /// the fact is a new alert, whichever process leads the sink then.
    /// Idempotent.
    fn alert_resolved(&self, sink: &str, fact: &str) -> Result<(), StoreError>;

    /// Forgets `sink`'s alerts, sent or in flight, of facts first seen
    /// before `before_ms` (out of the repeat window); returns how many.
    fn forget_sent_alerts(&self, sink: &str, before_ms: i64) -> Result<u64, StoreError>;
}

/// Named locks held across every process on the store.
pub trait Locks {
    /// Takes the lock `name` unless some process on this store holds it:
    /// `None` then. PostgreSQL: a session advisory lock on a connection of
    /// its own; SQLite: an exclusive file lock beside the database file
    /// (one per name), or a lock within the process for a store in memory.
    fn try_lock(&self, name: &str) -> Result<Option<StoreLock>, StoreError>;
}

/// Where a sweep that stopped resumes, whichever process runs it next.
pub trait Checkpoints {
    /// The checkpoint saved under `name` (JSON the sweep owns), if any.
    fn scan_checkpoint(&self, name: &str) -> Result<Option<String>, StoreError>;

    /// Saves `body` as the checkpoint `name`, or removes it (`None`).
    fn set_scan_checkpoint(
        &self,
        name: &str,
        body: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError>;
}

/// A named lock on the store, held across every process using it, until
/// dropped ([`Locks::try_lock`]).
pub struct StoreLock {
    name: String,
    held: Box<dyn HeldLock>,
}

/// How a backend keeps a [`StoreLock`]: releasing is dropping.
pub trait HeldLock: Send + Sync {
    /// Whether the lock is still held. A PostgreSQL session lock goes with
    /// its connection (a restart of the server, a network cut): the holder
    /// checks before each step that must not run twice at once.
    fn is_held(&self) -> bool;
}

impl StoreLock {
    pub fn new(name: &str, held: Box<dyn HeldLock>) -> StoreLock {
        StoreLock {
            name: name.to_owned(),
            held,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Blocks (a round trip to PostgreSQL): call it off the async threads.
    pub fn is_held(&self) -> bool {
        self.held.is_held()
    }
}

impl fmt::Debug for StoreLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreLock")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}
