//! What both backends store alike, decided once: the columns of a finding
//! and of a delivery row and how they read back into [`Finding`] and
//! [`SinkDelivery`], the checks before a decision is written, the filters
//! of [`Store::findings`](super::Store::findings), the two outboxes
//! (alerts and resolutions) as one notion with a table each, and the
//! statements of the alert memory (one table per [`AlertState`]).
//!
//! A backend supplies column access ([`Columns`]) and binds values in its
//! own placeholder syntax; what a column means, and what makes a stored
//! value unreadable ([`StoreError::Corrupt`]), is written here only, so the
//! SQLite and PostgreSQL stores cannot drift apart in what they return.

use std::fmt::Write as _;
use std::sync::Arc;

use super::triage::{Transition, transition};
use super::{
    AlertState, Decision, DedupeKey, DeliveryState, Finding, FindingId, FindingQuery, Outbox,
    OutboxRow, SinkDelivery, StoreError, Triage, TriageChange, TriageState, parse_action,
    parse_source,
};
use crate::audit::VerdictKind;
use crate::event::{EndpointName, EventId};

/// The columns [`StoredFinding::read`] expects, in its order (table alias `f`).
pub(super) const FINDING_COLUMNS: &str = "f.id, f.created_at_ms, f.received_at_ms, f.source, \
     f.event_id, f.endpoint, f.action, f.repository, f.digest, f.tag, f.verdict, f.reason, \
     f.evidence, f.manifest_commit, f.index_generation, f.excepted_by, f.triage_state, \
     f.triage_by, f.triage_at_ms, f.triage_note";

/// The columns [`StoredDelivery::read`] expects, in its order: the same in
/// `deliveries` and `resolutions`.
pub(super) const DELIVERY_COLUMNS: &str =
    "finding, sink, state, attempts, next_attempt_ms, delivered_at_ms, last_error";

/// Longest `last_error` kept per delivery.
pub(super) const MAX_ERROR_LEN: usize = 2000;

/// One result row, by column index, as each driver reads it. `int` reads
/// any integer column (PostgreSQL's `attempts` is 32-bit).
pub(super) trait Columns {
    type Error;
    fn int(&self, i: usize) -> Result<i64, Self::Error>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>, Self::Error>;
    fn text(&self, i: usize) -> Result<String, Self::Error>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, Self::Error>;
}

/// The two outboxes keep the same columns, in a table each.
impl Outbox {
    pub(super) fn table(self) -> &'static str {
        match self {
            Outbox::Alerts => "deliveries",
            Outbox::Resolutions => "resolutions",
        }
    }

    /// The claim order: alerts by when they are due (a failed one waits its
    /// turn), resolutions oldest finding first.
    pub(super) fn claim_order(self) -> &'static str {
        match self {
            Outbox::Alerts => "next_attempt_ms, finding",
            Outbox::Resolutions => "finding",
        }
    }

    fn row_name(self) -> &'static str {
        match self {
            Outbox::Alerts => "delivery",
            Outbox::Resolutions => "resolution",
        }
    }
}

/// The table that remembers alerts in `state`.
pub(super) fn alert_table(state: AlertState) -> &'static str {
    match state {
        AlertState::InFlight => "alerts_in_flight",
        AlertState::Sent => "sent_alerts",
    }
}

/// The statement that remembers an alert in `state`, replacing what was
/// remembered for its (sink, fact). Arguments: sink, fact, first seen,
/// now, body, written `{mark}1` to `{mark}5`.
pub(super) fn remember_alert_sql(state: AlertState, mark: char) -> String {
    let table = alert_table(state);
    // When the row was last written: the start of a send, or its success.
    let at = match state {
        AlertState::InFlight => "started_at_ms",
        AlertState::Sent => "sent_at_ms",
    };
    format!(
        "INSERT INTO {table} (sink, fact, first_seen_ms, {at}, body) \
         VALUES ({mark}1, {mark}2, {mark}3, {mark}4, {mark}5) \
         ON CONFLICT (sink, fact) DO UPDATE SET first_seen_ms = excluded.first_seen_ms, \
           {at} = excluded.{at}, body = excluded.body"
    )
}

/// The alerts remembered in `state` (fact, first seen, body) for the sink
/// `{mark}1`, of facts first seen at or after `{mark}2`.
pub(super) fn remembered_alerts_sql(state: AlertState, mark: char) -> String {
    format!(
        "SELECT fact, first_seen_ms, body FROM {} \
         WHERE sink = {mark}1 AND first_seen_ms >= {mark}2",
        alert_table(state)
    )
}

/// Forgets the alert of (sink `{mark}1`, fact `{mark}2`) in `state`: an
/// alert no longer in flight (recorded as sent, or refused), or the memory
/// of an alert whose fact was resolved.
pub(super) fn forget_alert_sql(state: AlertState, mark: char) -> String {
    format!(
        "DELETE FROM {} WHERE sink = {mark}1 AND fact = {mark}2",
        alert_table(state)
    )
}

/// A findings row as stored ([`FINDING_COLUMNS`]), before parsing.
pub(super) struct StoredFinding {
    id: i64,
    created_at_ms: i64,
    received_at_ms: i64,
    source: String,
    event_id: String,
    endpoint: String,
    action: Option<String>,
    repository: Option<String>,
    digest: Option<String>,
    tag: Option<String>,
    verdict: String,
    reason: String,
    evidence: String,
    manifest_commit: Option<String>,
    index_generation: i64,
    excepted_by: Option<String>,
    triage_state: String,
    triage_by: Option<String>,
    triage_at_ms: Option<i64>,
    triage_note: Option<String>,
}

impl StoredFinding {
    pub(super) fn read<R: Columns + ?Sized>(r: &R) -> Result<StoredFinding, R::Error> {
        Ok(StoredFinding {
            id: r.int(0)?,
            created_at_ms: r.int(1)?,
            received_at_ms: r.int(2)?,
            source: r.text(3)?,
            event_id: r.text(4)?,
            endpoint: r.text(5)?,
            action: r.opt_text(6)?,
            repository: r.opt_text(7)?,
            digest: r.opt_text(8)?,
            tag: r.opt_text(9)?,
            verdict: r.text(10)?,
            reason: r.text(11)?,
            evidence: r.text(12)?,
            manifest_commit: r.opt_text(13)?,
            index_generation: r.int(14)?,
            excepted_by: r.opt_text(15)?,
            triage_state: r.text(16)?,
            triage_by: r.opt_text(17)?,
            triage_at_ms: r.opt_int(18)?,
            triage_note: r.opt_text(19)?,
        })
    }

    /// The finding this row stores, without its deliveries; a row this
    /// build cannot read is the [`StoreError::Corrupt`] of `store`.
    pub(super) fn into_finding(self, store: &Arc<str>) -> Result<Finding, StoreError> {
        let id = self.id;
        let corrupt = |what: String| corrupt(store, what);
        let bad = |what: &str, text: &str| corrupt(format!("finding {id}: {what} {text:?}"));
        let source = parse_source(&self.source).ok_or_else(|| bad("source", &self.source))?;
        let verdict = self
            .verdict
            .parse()
            .map_err(|_| bad("verdict", &self.verdict))?;
        let action = match &self.action {
            Some(a) => Some(parse_action(a).ok_or_else(|| bad("action", a))?),
            None => None,
        };
        // Repository, digest and tag errors say what is wrong with them.
        let repository = parse_opt(self.repository.as_deref())
            .map_err(|e| corrupt(format!("finding {id}: {e}")))?;
        let digest =
            parse_opt(self.digest.as_deref()).map_err(|e| corrupt(format!("finding {id}: {e}")))?;
        let tag =
            parse_opt(self.tag.as_deref()).map_err(|e| corrupt(format!("finding {id}: {e}")))?;
        let evidence = serde_json::from_str(&self.evidence)
            .map_err(|e| corrupt(format!("finding {id}: evidence is not JSON: {e}")))?;
        let state = self
            .triage_state
            .parse()
            .map_err(|_| bad("triage state", &self.triage_state))?;
        Ok(Finding {
            id: FindingId(id),
            created_at_ms: self.created_at_ms,
            received_at_ms: self.received_at_ms,
            key: DedupeKey {
                source,
                endpoint: EndpointName(self.endpoint),
                event_id: EventId(self.event_id),
            },
            action,
            repository,
            digest,
            tag,
            verdict,
            reason: self.reason,
            evidence,
            manifest_commit: self.manifest_commit,
            // Stored bit for bit as i64 (SQLite integers are signed).
            index_generation: self.index_generation as u64,
            excepted_by: self.excepted_by,
            triage: Triage {
                state,
                by: self.triage_by,
                at_ms: self.triage_at_ms,
                note: self.triage_note,
            },
            deliveries: Vec::new(),
        })
    }
}

/// A deliveries or resolutions row as stored ([`DELIVERY_COLUMNS`]).
pub(super) struct StoredDelivery {
    finding: i64,
    sink: String,
    state: String,
    attempts: i64,
    next_attempt_ms: i64,
    delivered_at_ms: Option<i64>,
    last_error: Option<String>,
}

impl StoredDelivery {
    pub(super) fn read<R: Columns + ?Sized>(r: &R) -> Result<StoredDelivery, R::Error> {
        Ok(StoredDelivery {
            finding: r.int(0)?,
            sink: r.text(1)?,
            state: r.text(2)?,
            attempts: r.int(3)?,
            next_attempt_ms: r.int(4)?,
            delivered_at_ms: r.opt_int(5)?,
            last_error: r.opt_text(6)?,
        })
    }

    /// The finding the row belongs to and its state for the row's sink.
    pub(super) fn into_delivery(
        self,
        store: &Arc<str>,
        outbox: Outbox,
    ) -> Result<(FindingId, SinkDelivery), StoreError> {
        let state = match self.state.as_str() {
            "pending" => DeliveryState::Pending,
            "delivered" => DeliveryState::Delivered,
            other => {
                return Err(corrupt(
                    store,
                    format!(
                        "finding {}: {} state {other:?} for sink {:?}",
                        self.finding,
                        outbox.row_name(),
                        self.sink
                    ),
                ));
            }
        };
        Ok((
            FindingId(self.finding),
            SinkDelivery {
                sink: self.sink,
                state,
                attempts: u32::try_from(self.attempts.max(0)).unwrap_or(u32::MAX),
                next_attempt_ms: self.next_attempt_ms,
                delivered_at_ms: self.delivered_at_ms,
                last_error: self.last_error,
            },
        ))
    }
}

fn parse_opt<T: std::str::FromStr>(text: Option<&str>) -> Result<Option<T>, T::Err> {
    text.map(str::parse).transpose()
}

pub(super) fn corrupt(store: &Arc<str>, what: String) -> StoreError {
    StoreError::Corrupt {
        path: store.clone(),
        what,
    }
}

pub(super) fn not_claimed(store: &Arc<str>, row: OutboxRow<'_>) -> StoreError {
    StoreError::NotClaimed {
        path: store.clone(),
        sink: row.sink.to_owned(),
        id: row.finding,
    }
}

/// What [`Store::record`](super::Store::record) writes beside the decision:
/// the evidence as JSON when the verdict alerts (the decision becomes a
/// finding), else nothing. An undecided verdict is refused: it is not final.
pub(super) fn evidence_to_record(
    store: &Arc<str>,
    d: &Decision,
) -> Result<Option<String>, StoreError> {
    if d.verdict == VerdictKind::Undecided {
        return Err(StoreError::Undecided {
            source_name: d.key.source.as_str(),
            event_id: d.key.event_id.clone(),
        });
    }
    if !d.verdict.alerts() {
        return Ok(None);
    }
    serde_json::to_string(&d.evidence).map(Some).map_err(|e| {
        corrupt(
            store,
            format!("event {}: evidence not serialisable: {e}", d.key.event_id),
        )
    })
}

impl DedupeKey {
    /// The key as its columns store it: `source`, `endpoint`, `event_id`.
    pub(super) fn columns(&self) -> [&str; 3] {
        [self.source.as_str(), &self.endpoint.0, &self.event_id.0]
    }
}

/// The verdict stored under `key`.
pub(super) fn decided_verdict(
    store: &Arc<str>,
    key: &DedupeKey,
    text: &str,
) -> Result<VerdictKind, StoreError> {
    text.parse()
        .map_err(|_| corrupt(store, format!("decision {key}: verdict {text:?}")))
}

/// The `(verdict, count)` rows [`tally_decisions`] reads: the same text in
/// both dialects.
pub(super) const DECISIONS_BY_VERDICT: &str =
    "SELECT verdict, COUNT(*) FROM decisions GROUP BY verdict";

/// Decisions per verdict from `(verdict, count)` rows ([`DECISIONS_BY_VERDICT`]), in
/// [`VerdictKind::ALL`] order with zeros for verdicts never recorded.
pub(super) fn tally_decisions(
    store: &Arc<str>,
    rows: impl IntoIterator<Item = (String, i64)>,
) -> Result<Vec<(VerdictKind, u64)>, StoreError> {
    let mut decisions: Vec<(VerdictKind, u64)> =
        VerdictKind::ALL.into_iter().map(|k| (k, 0)).collect();
    for (verdict, n) in rows {
        let kind: VerdictKind = verdict
            .parse()
            .map_err(|_| corrupt(store, format!("decision verdict {verdict:?}")))?;
        if let Some(slot) = decisions.iter_mut().find(|(k, _)| *k == kind) {
            slot.1 = n as u64;
        }
    }
    Ok(decisions)
}

/// A value bound to a statement of [`findings_query`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Arg {
    Text(String),
    Int(i64),
}

/// The statement of [`Store::findings`](super::Store::findings) for `q`
/// and its arguments in order; the n-th is written `{mark}{n}` (`?` for
/// SQLite, `$` for PostgreSQL).
pub(super) fn findings_query(q: &FindingQuery, mark: char) -> (String, Vec<Arg>) {
    let text = |s: &str| Some(Arg::Text(s.to_owned()));
    let filters = [
        ("f.verdict =", q.verdict.and_then(|v| text(v.as_str()))),
        (
            "f.digest =",
            q.digest.as_ref().map(|d| Arg::Text(d.to_string())),
        ),
        (
            "f.repository =",
            q.repository.as_ref().and_then(|r| text(r.as_str())),
        ),
        ("f.triage_state =", q.state.and_then(|s| text(s.as_str()))),
        ("f.received_at_ms >=", q.since_ms.map(Arg::Int)),
        ("f.id <", q.before.map(|b| Arg::Int(b.0))),
    ];
    let mut sql = format!("SELECT {FINDING_COLUMNS} FROM findings f WHERE true");
    let mut args = Vec::new();
    for (clause, value) in filters {
        if let Some(value) = value {
            args.push(value);
            let _ = write!(sql, " AND {clause} {mark}{}", args.len());
        }
    }
    args.push(Arg::Int(q.effective_limit() as i64));
    let _ = write!(sql, " ORDER BY f.id DESC LIMIT {mark}{}", args.len());
    (sql, args)
}

/// What applying `change` to finding `id` writes, given its stored triage
/// state (`None`: no such finding): `None` when the state stays as it is.
pub(super) fn triage_target(
    store: &Arc<str>,
    id: FindingId,
    stored: Option<String>,
    change: &TriageChange,
) -> Result<Option<TriageState>, StoreError> {
    let Some(state) = stored else {
        return Err(StoreError::NoSuchFinding {
            path: store.clone(),
            id,
        });
    };
    let from: TriageState = state
        .parse()
        .map_err(|_| corrupt(store, format!("finding {id}: triage state {state:?}")))?;
    match transition(from, change.action) {
        Err(refused) => Err(StoreError::Triage { id, refused }),
        Ok(Transition::Unchanged) => Ok(None),
        Ok(Transition::To(to)) => Ok(Some(to)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_findings_query_numbers_only_the_filters_set_in_each_dialect() {
        let q = FindingQuery {
            verdict: Some(VerdictKind::Unpromoted),
            since_ms: Some(7),
            limit: Some(5),
            ..FindingQuery::default()
        };
        let (sql, args) = findings_query(&q, '?');
        assert!(
            sql.ends_with(
                "WHERE true AND f.verdict = ?1 AND f.received_at_ms >= ?2 \
                 ORDER BY f.id DESC LIMIT ?3"
            ),
            "{sql}"
        );
        assert_eq!(
            args,
            [
                Arg::Text(VerdictKind::Unpromoted.as_str().into()),
                Arg::Int(7),
                Arg::Int(5)
            ]
        );
        let (sql, args) = findings_query(&FindingQuery::default(), '$');
        assert!(
            sql.ends_with("WHERE true ORDER BY f.id DESC LIMIT $1"),
            "{sql}"
        );
        assert_eq!(args, [Arg::Int(FindingQuery::DEFAULT_LIMIT as i64)]);
    }

    #[test]
    fn an_unknown_delivery_state_is_a_corrupt_row_naming_the_outbox() {
        let row = StoredDelivery {
            finding: 3,
            sink: "pager".into(),
            state: "lost".into(),
            attempts: 1,
            next_attempt_ms: 0,
            delivered_at_ms: None,
            last_error: None,
        };
        let err = row
            .into_delivery(&Arc::from("db"), Outbox::Resolutions)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "findings store db: unreadable row: finding 3: resolution state \"lost\" for sink \"pager\""
        );
    }
}
