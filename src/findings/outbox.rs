//! The two outboxes the alert sinks deliver from: a finding's alert, owed
//! to every sink from its first claim on, and the news that a person
//! resolved it, owed to each sink the alert reached. Both keep one row per
//! (finding, sink) and the same rules: a claim is an attempt and hides the
//! row for the claim lease (the crash guard), a delivered row is never
//! claimed again, a failed one is due again at its retry time. Each
//! backend implements [`Outboxes`] in its own `outbox.rs`.

use super::{Finding, FindingId, StoreError};

/// What a row of the outbox is owed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outbox {
    /// The finding's alert.
    Alerts,
    /// The news that the finding was resolved ([`Store::triage`](super::Store::triage)).
    Resolutions,
}

impl Outbox {
    /// The row of this outbox that owes `sink` finding `finding`.
    pub fn row(self, sink: &str, finding: FindingId) -> OutboxRow<'_> {
        OutboxRow {
            outbox: self,
            sink,
            finding,
        }
    }
}

/// One row of an outbox: what `outbox` owes `sink` for `finding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxRow<'a> {
    pub outbox: Outbox,
    pub sink: &'a str,
    pub finding: FindingId,
}

/// The outboxes of a [`Store`](super::Store). Methods block, as every
/// store method does.
pub trait Outboxes {
    /// Claims up to `limit` rows of `outbox` owed to `sink` and due at
    /// `now_ms`, oldest finding first, each with this sink's row as its
    /// `deliveries`. Each claim counts as an attempt and hides the row from
    /// other claims for this sink for the store's claim lease, after which
    /// an unfinished claim (a crash) is claimable again.
    ///
    /// [`Outbox::Alerts`]: findings not yet delivered to `sink` (excepted
    /// findings never are), by when they are due. A sink is known from its
    /// first claim on (`limit` 0 included), and then owes every finding,
    /// older ones included. [`Outbox::Resolutions`]: resolved findings whose
    /// alert reached `sink` ([`Store::triage`](super::Store::triage)).
    fn claim(
        &self,
        outbox: Outbox,
        sink: &str,
        limit: usize,
        now_ms: i64,
    ) -> Result<Vec<Finding>, StoreError>;

    /// The claimed `row` reached its sink: never claimed for it again.
    /// Idempotent. An alert delivered when its finding is resolved by then
    /// owes the sink the resolution too.
    fn mark_delivered(&self, row: OutboxRow<'_>, now_ms: i64) -> Result<(), StoreError>;

    /// The claimed `row` could not be delivered to its sink: claimable
    /// again from `retry_at_ms`. No effect on a row already delivered.
    fn mark_failed(
        &self,
        row: OutboxRow<'_>,
        error: &str,
        retry_at_ms: i64,
    ) -> Result<(), StoreError>;
}
