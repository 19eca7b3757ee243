//! The normalised registry change, whatever its source.

use std::fmt;

use serde::Serialize;

use crate::reference::{self, Digest, Reference, Repository, Tag};

/// Where events come from. Labels metrics, so the set is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A GCR / Artifact Registry `gcr` topic payload (replayed from a file).
    Gcr,
    /// A reference given on the command line (`check`).
    Cli,
    /// A `gcr` topic message received by Pub/Sub streaming pull.
    PubsubPull,
    /// A `gcr` topic message delivered by a Pub/Sub push subscription.
    PubsubPush,
    /// A CNCF distribution (Docker registry) notification.
    Distribution,
    /// A Harbor webhook (default or CloudEvents payload).
    Harbor,
    /// An Amazon ECR "ECR Image Action" event from EventBridge.
    Ecr,
    /// An Azure Container Registry event (Event Grid or native webhook).
    Acr,
    /// The manifest origin itself: a project that broke on reload.
    Manifests,
    /// An observation of the inventory sweep (`scan`).
    Scan,
}

impl Source {
    pub const ALL: [Source; 10] = [
        Source::Gcr,
        Source::Cli,
        Source::PubsubPull,
        Source::PubsubPush,
        Source::Distribution,
        Source::Harbor,
        Source::Ecr,
        Source::Acr,
        Source::Manifests,
        Source::Scan,
    ];

    /// The metric label and the findings store's text; `ALL` lists every
    /// variant because this match has no wildcard to hide a new one behind.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Gcr => "gcr",
            Source::Cli => "cli",
            Source::PubsubPull => "pubsub_pull",
            Source::PubsubPush => "pubsub_push",
            Source::Distribution => "distribution",
            Source::Harbor => "harbor",
            Source::Ecr => "ecr",
            Source::Acr => "acr",
            Source::Manifests => "manifests",
            Source::Scan => "scan",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A push, or a tag added or moved.
    Insert,
    /// A manifest or a tag removed.
    Delete,
    /// The inventory sweep did not find this promised content here: the
    /// tag is not listed, or the digest is not in the repository.
    Absent,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Insert, Action::Delete, Action::Absent];

    /// The metric label and the findings store's text.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Insert => "insert",
            Action::Delete => "delete",
            Action::Absent => "absent",
        }
    }
}

/// The source's own id for the delivery (Pub/Sub message id, webhook event
/// id, file line): what duplicates are recognised by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct EventId(pub String);

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which endpoint of a source a delivery came through: a webhook endpoint's
/// configured name, a Pub/Sub subscription. An event id is unique only within
/// the endpoint that sent it (two Harbor instances can derive the same id, two
/// topics can reuse a message id), so it is part of the dedupe key. Sources
/// with one implicit endpoint (scan, manifests) use [`EndpointName::only`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct EndpointName(pub String);

impl EndpointName {
    /// The source's one endpoint; also what decisions recorded before
    /// endpoints were kept carry.
    pub fn only() -> EndpointName {
        EndpointName(String::new())
    }
}

impl fmt::Display for EndpointName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One registry change. At least one of `digest` and `tag` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub id: EventId,
    pub source: Source,
    pub action: Action,
    pub repository: Repository,
    pub digest: Option<Digest>,
    pub tag: Option<Tag>,
}

/// Why a reference cannot be checked.
#[derive(Debug, thiserror::Error)]
pub enum Uncheckable {
    #[error(transparent)]
    Reference(#[from] reference::ParseError),
    #[error("{0:?} names neither a tag nor a digest")]
    NoTarget(String),
}

impl Event {
    /// The push of `text` (`host/path:tag`, `host/path@digest` or both) that
    /// `check` asks about; the reference itself is the event's id, so the
    /// answer names what was asked.
    pub fn hypothetical_push(text: &str) -> Result<Event, Uncheckable> {
        let r: Reference = text.parse()?;
        if r.digest.is_none() && r.tag.is_none() {
            return Err(Uncheckable::NoTarget(text.to_owned()));
        }
        Ok(Event {
            id: EventId(text.to_owned()),
            source: Source::Cli,
            action: Action::Insert,
            repository: r.repository,
            digest: r.digest,
            tag: r.tag,
        })
    }
}

/// Characters of untrusted text kept by [`excerpt`]: enough for a full
/// reference with a sha512 digest.
pub const EXCERPT_CHARS: usize = 200;

/// Untrusted text as it may appear in a reason, an error or a log line: at
/// most [`EXCERPT_CHARS`] characters, and a marker saying how much was cut.
/// A payload field can be megabytes long, and every reason is stored, shown
/// on the status page and logged.
pub fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}…[{} more bytes]", &text[..end], text.len() - end),
    }
}

/// A delivery that could not be turned into an [`Event`]: the `malformed`
/// verdict. Retrying cannot fix it, so it is recorded and acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Malformed {
    pub id: EventId,
    pub source: Source,
    pub reason: String,
    /// The limit on untrusted input that refused the event, if one did:
    /// counted by the pipeline, never stored (the reason says it in words).
    #[serde(skip)]
    pub limit: Option<LimitHit>,
}

impl Malformed {
    /// Event `id` from `source` could not be read, for `why`.
    pub fn new(id: EventId, source: Source, why: impl Into<Unreadable>) -> Malformed {
        let Unreadable { reason, limit } = why.into();
        Malformed {
            id,
            source,
            reason,
            limit,
        }
    }
}

/// Why untrusted input (a field, an event, a request) could not be read:
/// the words that are stored, shown and logged, and the limit it hit, if
/// any. The limit is carried beside the words, never read back from them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Unreadable {
    pub reason: String,
    pub limit: Option<LimitHit>,
}

impl Unreadable {
    /// The same refusal, its words preceded by `place` (which says where
    /// it stood: `"field `target.tag`: "`).
    pub fn prefixed(self, place: impl fmt::Display) -> Unreadable {
        Unreadable {
            reason: format!("{place}{}", self.reason),
            limit: self.limit,
        }
    }
}

/// A refusal that hit no limit.
impl From<String> for Unreadable {
    fn from(reason: String) -> Self {
        Unreadable {
            reason,
            limit: None,
        }
    }
}

impl From<&str> for Unreadable {
    fn from(reason: &str) -> Self {
        Unreadable::from(reason.to_owned())
    }
}

/// A name, digest or tag a payload carried and the reference types refused;
/// an over-long repository name is a limit.
impl From<reference::ParseError> for Unreadable {
    fn from(e: reference::ParseError) -> Self {
        Unreadable {
            limit: e.is_too_long().then_some(LimitHit::NameTooLong),
            reason: e.to_string(),
        }
    }
}

/// A limit on untrusted input that refused an event or a request, counted
/// as `rejected_requests_total{reason}` by the server (refused requests)
/// and the pipeline (malformed events). Refusals carry it as a type
/// ([`Unreadable`], [`Malformed::limit`]), so the count never depends on
/// the wording of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// A repository name over [`crate::reference::MAX_REPOSITORY_LEN`].
    NameTooLong,
    /// An event or message id over [`crate::sources::json::MAX_ID_LEN`]
    /// or with control characters.
    BadEventId,
    /// A JSON object repeating a key.
    DuplicateJsonKey,
}

impl LimitHit {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            LimitHit::NameTooLong => "name_too_long",
            LimitHit::BadEventId => "bad_event_id",
            LimitHit::DuplicateJsonKey => "duplicate_json_key",
        }
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event {}: {}", self.id, self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_excerpt_keeps_short_text_and_marks_what_it_cuts() {
        assert_eq!(excerpt("apps/api"), "apps/api");
        let long = "é".repeat(EXCERPT_CHARS + 10);
        let cut = excerpt(&long);
        assert!(cut.starts_with(&"é".repeat(EXCERPT_CHARS)), "{cut}");
        assert!(cut.ends_with("…[20 more bytes]"), "{cut}");
    }

    #[test]
    fn a_checked_reference_is_an_insert_named_by_the_reference() {
        let text = "registry.example/app:1.0";
        let event = Event::hypothetical_push(text).unwrap();
        assert_eq!(event.id, EventId(text.into()));
        assert_eq!((event.source, event.action), (Source::Cli, Action::Insert));
        assert_eq!(event.tag.unwrap().to_string(), "1.0");
        assert_eq!(event.digest, None);

        let untargeted = Event::hypothetical_push("registry.example/app").unwrap_err();
        assert_eq!(
            untargeted.to_string(),
            "\"registry.example/app\" names neither a tag nor a digest"
        );
        assert!(matches!(
            Event::hypothetical_push("not a reference"),
            Err(Uncheckable::Reference(_))
        ));
    }
}
