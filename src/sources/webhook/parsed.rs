//! What every registry webhook parser hands back: the events to audit, what
//! was deliberately not audited, and an optional reply body (Event Grid's
//! validation handshake). Parsers are pure: bytes in, this out. The events
//! become [`Delivery`]s only once tied to the endpoint that received them
//! ([`Decoded::at`]): an event id is unique only within its endpoint.

use serde_json::Value;

use crate::event::{EndpointName, Event, EventId, LimitHit, Malformed, Source, Unreadable};
use crate::sources::Delivery;

/// One webhook request, parsed.
#[derive(Debug, Default)]
pub struct Parsed {
    /// One per registry change to audit, each with its own id (what the
    /// registry resends on retry) and either an `Event` or a `Malformed`.
    pub deliveries: Vec<Decoded>,
    /// Events the request carried that are not registry changes to audit.
    pub ignored: Vec<Ignored>,
    /// Answer with this JSON instead of the usual summary (handshakes).
    pub reply: Option<Value>,
}

/// One event of a request, before it is tied to the endpoint that received
/// it: a format parser knows nothing of endpoints.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub source: Source,
    pub id: EventId,
    pub decoded: Result<Event, Malformed>,
}

impl Decoded {
    /// The event a parser read under `id`, or the reason it could not:
    /// then a `Malformed` under the same id and source.
    pub fn of(source: Source, id: EventId, event: Result<Event, Unreadable>) -> Decoded {
        match event {
            Ok(event) => Decoded {
                source,
                id,
                decoded: Ok(event),
            },
            Err(reason) => Decoded::malformed(source, id, reason),
        }
    }

    /// An event under `id` that could not be read, and why.
    pub fn malformed(source: Source, id: EventId, why: impl Into<Unreadable>) -> Decoded {
        Decoded {
            source,
            id: id.clone(),
            decoded: Err(Malformed::new(id, source, why)),
        }
    }

    /// The delivery of this event through `endpoint`.
    pub fn at(self, endpoint: &EndpointName) -> Delivery {
        Delivery {
            source: self.source,
            endpoint: endpoint.clone(),
            id: self.id,
            decoded: self.decoded,
        }
    }
}

/// An event that is counted but not audited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// The event's own id where it has one, else a description of where it
    /// stood in the request (`events[3]`).
    pub id: String,
    pub why: IgnoreReason,
}

/// Why an event is not audited; a metric label, so the set is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IgnoreReason {
    /// A layer or config blob (pushed, mounted or deleted), not a manifest.
    Blob,
    /// A pull or other read: nothing changed.
    Pull,
    /// The registry reports the action failed (ECR `result: FAILURE`).
    Failed,
    /// Content that is not a container image (Helm charts, for instance).
    NotAnImage,
    /// An event type this parser does not know; never an error, so that a
    /// registry adding types does not make its deliveries fail.
    UnknownType,
}

impl IgnoreReason {
    pub fn as_str(self) -> &'static str {
        match self {
            IgnoreReason::Blob => "blob",
            IgnoreReason::Pull => "pull",
            IgnoreReason::Failed => "failed",
            IgnoreReason::NotAnImage => "not_an_image",
            IgnoreReason::UnknownType => "unknown_type",
        }
    }
}

/// A request that is not a delivery of this webhook at all (answered 400):
/// not JSON, or JSON without the envelope the format defines. Problems
/// inside one event are a `Malformed` delivery instead, so the rest of the
/// request is still audited.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub Unreadable);

impl Rejected {
    /// The limit on untrusted input that refused the request, if one did.
    pub fn limit(&self) -> Option<LimitHit> {
        self.0.limit
    }
}

impl<T: Into<Unreadable>> From<T> for Rejected {
    fn from(why: T) -> Self {
        Rejected(why.into())
    }
}
