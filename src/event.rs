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
