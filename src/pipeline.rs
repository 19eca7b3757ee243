//! The one pipeline every source feeds (DESIGN §3, §7): dedupe → audit →
//! resolve → audit again → record → answer. Sources only decode and hand a
//! [`Delivery`] over; what they do next (ack, nack, HTTP status) follows the
//! [`Disposition`] they get back.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::audit::VerdictKind;
use crate::event::{Event, EventId, Malformed, Source};

/// One delivery from a source, decoded as far as the source could.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub source: Source,
    /// The source's delivery id (Pub/Sub message id, webhook event id):
    /// redeliveries carry the same id.
    pub id: EventId,
    pub decoded: Result<Event, Malformed>,
}

/// What the source must do with a delivery once the pipeline is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The verdict is recorded (or the delivery is a duplicate of one that
    /// is): acknowledge, never deliver again.
    Ack,
    /// Nothing final was recorded (undecided, or the store failed): ask the
    /// source to deliver again later.
    Retry,
}

/// The pipeline's answer to one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    pub disposition: Disposition,
    /// The verdict decided, when one was (`None` for a duplicate or a failure).
    pub verdict: Option<VerdictKind>,
    /// The delivery id was already recorded.
    pub duplicate: bool,
}

/// How sources reach the pipeline, without depending on it.
pub type Handler =
    Arc<dyn Fn(Delivery) -> Pin<Box<dyn Future<Output = Handled> + Send>> + Send + Sync>;
