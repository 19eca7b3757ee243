//! Registry webhooks, one module per format: each parser turns a request
//! body into [`Parsed`] (the contract every format shares, in `parsed`),
//! and [`WebhookKind`] picks the parser and the content types a format is
//! sent with. Endpoints (configuration, token authentication, the event
//! cap) are in `endpoint`. Adding a registry is a module here and its test
//! file, plus the lists that name every kind: a `WebhookKind` variant, its
//! [`Source`], its `webhooks.<kind>` key in `config::WebhooksConfig`, and
//! its parser in the cross-format properties
//! (`tests/webhook_payload_properties.rs`).

pub mod acr;
pub mod distribution;
pub mod ecr;
mod endpoint;
pub mod harbor;
mod parsed;

pub use endpoint::{
    DEFAULT_MAX_EVENTS, Endpoint, EndpointConfig, EndpointError, Endpoints, Problem, TooManyEvents,
};
pub use parsed::{Decoded, IgnoreReason, Ignored, Parsed, Rejected};

use crate::event::Source;

/// The webhook formats, each served at `POST /webhooks/<kind>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookKind {
    Distribution,
    Harbor,
    Ecr,
    Acr,
}

impl WebhookKind {
    pub const ALL: [WebhookKind; 4] = [
        WebhookKind::Distribution,
        WebhookKind::Harbor,
        WebhookKind::Ecr,
        WebhookKind::Acr,
    ];

    /// The path segment, config key and metric label.
    pub fn as_str(self) -> &'static str {
        self.source().as_str()
    }

    pub fn source(self) -> Source {
        match self {
            WebhookKind::Distribution => Source::Distribution,
            WebhookKind::Harbor => Source::Harbor,
            WebhookKind::Ecr => Source::Ecr,
            WebhookKind::Acr => Source::Acr,
        }
    }

    pub fn from_path(segment: &str) -> Option<WebhookKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == segment)
    }

    /// Whether a request's `Content-Type` essence (lower-cased, without
    /// parameters) is one this format is sent with.
    pub fn accepts(self, essence: &str) -> bool {
        let json = essence == "application/json";
        match self {
            WebhookKind::Distribution => distribution::CONTENT_TYPES.contains(&essence) || json,
            // A CloudEvents (or CDEvents) payload format policy sends the
            // structured-mode type.
            WebhookKind::Harbor => json || essence == CLOUDEVENT,
            // Event Grid's CloudEvents schema: one event, or an array of
            // them when the subscription batches.
            WebhookKind::Acr => json || essence == CLOUDEVENT || essence == CLOUDEVENTS_BATCH,
            WebhookKind::Ecr => json,
        }
    }

    /// Whether the sender proves the endpoint wants its deliveries with the
    /// CloudEvents abuse-protection handshake (an HTTP `OPTIONS` request)
    /// before it sends any: Event Grid does, for CloudEvents subscriptions.
    pub fn validates_with_options(self) -> bool {
        self == WebhookKind::Acr
    }

    /// Whether the endpoint token may come as the `access_token` query
    /// parameter (the CloudEvents webhook spec's second way). Only where the
    /// sender cannot send a header on every request: Event Grid's `OPTIONS`
    /// handshake carries no custom headers, only the subscribed URL. A
    /// token in a URL is more easily logged, so the other kinds, whose
    /// senders all set headers, keep to `Authorization`.
    pub fn token_in_query(self) -> bool {
        self == WebhookKind::Acr
    }

    /// Parses a request for `endpoint`.
    pub fn parse(self, body: &[u8], endpoint: &Endpoint) -> Result<Parsed, Rejected> {
        match (self, &endpoint.registry) {
            (WebhookKind::Distribution, Some(registry)) => distribution::parse(body, registry),
            // Startup refuses a distribution endpoint without a registry.
            (WebhookKind::Distribution, None) => Err(Rejected::from(format!(
                "webhook endpoint {} has no registry configured",
                endpoint.name
            ))),
            (WebhookKind::Harbor, registry) => harbor::parse(body, registry.as_ref()),
            (WebhookKind::Ecr, registry) => ecr::parse(body, registry.as_ref()),
            (WebhookKind::Acr, registry) => acr::parse(body, registry.as_ref()),
        }
    }
}

/// The CloudEvents JSON structured-mode content type (one event).
const CLOUDEVENT: &str = "application/cloudevents+json";
/// The CloudEvents JSON batch content type (an array of events).
const CLOUDEVENTS_BATCH: &str = "application/cloudevents-batch+json";
