//! Event sources: each turns its wire format into [`Event`](crate::event::Event)s
//! and nothing else. No source calls the auditor.
//!
//! The contract between a source and the pipeline lives here, so that
//! sources depend on it and not on the pipeline: a source hands a
//! [`Delivery`] to a [`Handler`] and does what the [`Disposition`] says.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::audit::VerdictKind;
use crate::event::{EndpointName, Event, EventId, Malformed, Source};

pub mod gcr;
pub mod json;
pub mod pubsub_pull;
pub mod pubsub_push;
pub mod push_auth;
pub mod webhook;

/// One delivery from a source, decoded as far as the source could.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub source: Source,
    /// The endpoint that received it: ids are unique only within one.
    pub endpoint: EndpointName,
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
    /// The delivery id was already recorded for this endpoint.
    pub duplicate: bool,
    /// The verdict alerts, but an exceptions entry covers it: recorded with
    /// `excepted_by`, no alert.
    pub excepted: bool,
}

/// How sources reach the pipeline, without depending on it.
pub type Handler =
    Arc<dyn Fn(Delivery) -> Pin<Box<dyn Future<Output = Handled> + Send>> + Send + Sync>;
