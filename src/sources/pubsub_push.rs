//! Pub/Sub push requests (`POST /pubsub/push`), decoded into a [`Delivery`]
//! without any HTTP framework: the route hands over the headers and the body.
//!
//! Two shapes arrive (docs/reference/event-formats.md §2):
//!
//! - **wrapped** (the default): `Content-Type: application/json` and
//!   `{"message": {"data": "<base64>", "messageId": "…", "message_id": "…",
//!   "attributes": {…}, "publishTime": "…"}, "subscription": "…"}`;
//! - **unwrapped** (`noWrapper` with `writeMetadata`): the body is the raw
//!   payload and the message id is the `x-goog-pubsub-message-id` header.
//!
//! # What is an error and what is a malformed event
//!
//! Pub/Sub treats every status other than 102/200/201/202/204 as a NACK and
//! redelivers, with no limit unless a dead-letter policy is set. So:
//!
//! - once a **message id** is known, the request *is* a Pub/Sub message and
//!   whatever is wrong with its content (data not base64, missing, not a GCR
//!   payload) is a [`Delivery`] whose `decoded` is `Err(Malformed)`: it gets
//!   recorded as a `malformed` finding and acknowledged, since a retry
//!   delivers the same bytes again;
//! - without a message id, nothing can be recorded or deduplicated, and the
//!   request is not a Pub/Sub push at all (or comes from a misconfigured
//!   subscription): a [`PushError`] with a 4xx status. Real Pub/Sub never
//!   sends such a request for a healthy subscription, so the redelivery a
//!   4xx causes only ever hits misconfiguration, where it belongs (it shows
//!   in the subscription's metrics and its dead-letter topic).
//!
//! | request | result | status |
//! |---|---|---|
//! | unwrapped, id header present | `Delivery` (payload parsed or `Malformed`) | — |
//! | unwrapped, id header not text / empty / too long | [`PushError::BadMessageId`] | 400 |
//! | no id header, `Content-Type` missing or not JSON | [`PushError::UnsupportedMediaType`] | 415 |
//! | body empty | [`PushError::EmptyBody`] | 400 |
//! | body not JSON | [`PushError::NotJson`] | 400 |
//! | JSON but not an object with a `message` object | [`PushError::NotAnEnvelope`] | 400 |
//! | `message` has no id | [`PushError::MissingMessageId`] | 400 |
//! | id not a string / empty / too long / `messageId` ≠ `message_id` | [`PushError::BadMessageId`] | 400 |
//! | id present, `data` absent, not a string, not base64 | `Delivery` with `Malformed` | — |
//! | id present, payload not a GCR notification | `Delivery` with `Malformed` | — |
//!
//! The subscription (`subscription`, or the `x-goog-pubsub-subscription-name`
//! header of an unwrapped push) is the delivery's endpoint: a message id is
//! unique only within its topic, so ids from two subscriptions never answer
//! for each other. A push without one (real Pub/Sub always sends it) is
//! scoped to the empty endpoint. `attributes`, `publishTime`, `orderingKey`
//! and `deliveryAttempt` are ignored: the `gcr` topic documents no
//! attributes. Body size is the route's business.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::{HeaderMap, StatusCode, header};
use serde_json::Value;

use crate::event::{EndpointName, EventId, LimitHit, Malformed, Source, Unreadable};
use crate::sources::Delivery;
use crate::sources::gcr;
use crate::sources::json::{self, json_type, shown};

/// The header carrying the message id of an unwrapped delivery
/// (`noWrapper.writeMetadata = true`).
pub const MESSAGE_ID_HEADER: &str = "x-goog-pubsub-message-id";

/// The header carrying the subscription of an unwrapped delivery (with
/// `writeMetadata`).
pub const SUBSCRIPTION_HEADER: &str = "x-goog-pubsub-subscription-name";

/// Longest message id accepted. Pub/Sub ids are decimal strings of about 16
/// digits; the id becomes a dedupe key and a log field, so anything much
/// longer is not from Pub/Sub.
pub const MAX_MESSAGE_ID_LEN: usize = json::MAX_ID_LEN;

/// A request that carries no usable Pub/Sub message: answer it with
/// [`PushError::status`] and record nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// Not unwrapped (no id header) and not declared as JSON.
    #[error(
        "unsupported content type {found}: a wrapped push must be application/json \
         (an unwrapped push must carry the {MESSAGE_ID_HEADER} header)"
    )]
    UnsupportedMediaType { found: ContentType },
    /// A wrapped push with an empty body.
    #[error("empty body: expected a Pub/Sub push envelope")]
    EmptyBody,
    /// The body does not parse as JSON.
    #[error("body is not JSON: {0}")]
    NotJson(Unreadable),
    /// JSON, but not `{"message": {…}}`.
    #[error("body is not a Pub/Sub push envelope: {0}")]
    NotAnEnvelope(String),
    /// The envelope's message has neither `messageId` nor `message_id`.
    #[error("{0}")]
    MissingMessageId(String),
    /// A message id is present but unusable.
    #[error("unusable message id: {0}")]
    BadMessageId(Unreadable),
    /// A subscription name is present but unusable.
    #[error("unusable subscription: {0}")]
    BadSubscription(Unreadable),
}

impl PushError {
    /// The HTTP status to answer with (415 for the content type, 400 for
    /// everything else). Pub/Sub redelivers on both.
    pub fn status(&self) -> StatusCode {
        match self {
            PushError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            PushError::EmptyBody
            | PushError::NotJson(_)
            | PushError::NotAnEnvelope(_)
            | PushError::MissingMessageId(_)
            | PushError::BadMessageId(_)
            | PushError::BadSubscription(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The limit on untrusted input that refused the request, if one did.
    pub fn limit(&self) -> Option<LimitHit> {
        match self {
            PushError::NotJson(why)
            | PushError::BadMessageId(why)
            | PushError::BadSubscription(why) => why.limit,
            PushError::UnsupportedMediaType { .. }
            | PushError::EmptyBody
            | PushError::NotAnEnvelope(_)
            | PushError::MissingMessageId(_) => None,
        }
    }
}

/// The `Content-Type` a rejected request declared, for the error message
/// (truncated, so that a hostile header cannot flood the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentType {
    Missing,
    NotText,
    Other(String),
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContentType::Missing => f.write_str("(none)"),
            ContentType::NotText => f.write_str("(not text)"),
            ContentType::Other(s) => write!(f, "{s:?}"),
        }
    }
}

/// Decodes one push request. See the module documentation for which inputs
/// are errors and which are malformed deliveries.
pub fn decode(headers: &HeaderMap, body: &[u8]) -> Result<Delivery, PushError> {
    if let Some(value) = headers.get(MESSAGE_ID_HEADER) {
        let id = value
            .to_str()
            .map_err(|_| PushError::BadMessageId(format!("{MESSAGE_ID_HEADER} is not text").into()))
            .and_then(|s| check_id(MESSAGE_ID_HEADER, s))?;
        let endpoint = match headers.get(SUBSCRIPTION_HEADER) {
            None => EndpointName::only(),
            Some(value) => value
                .to_str()
                .map_err(|_| {
                    PushError::BadSubscription(format!("{SUBSCRIPTION_HEADER} is not text").into())
                })
                .and_then(|s| subscription(SUBSCRIPTION_HEADER, s))?,
        };
        let decoded = parse_payload(&id, body);
        return Ok(Delivery {
            source: Source::PubsubPush,
            endpoint,
            id,
            decoded,
        });
    }
    decode_wrapped(headers, body)
}

fn decode_wrapped(headers: &HeaderMap, body: &[u8]) -> Result<Delivery, PushError> {
    check_json_content_type(headers)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(PushError::EmptyBody);
    }
    let envelope = json::parse(body).map_err(|e| PushError::NotJson(e.into()))?;
    let Value::Object(mut envelope) = envelope else {
        return Err(PushError::NotAnEnvelope(format!(
            "expected a JSON object, found {}",
            json_type(&envelope)
        )));
    };
    let message = match envelope.remove("message") {
        Some(Value::Object(message)) => message,
        Some(other) => {
            return Err(PushError::NotAnEnvelope(format!(
                "field `message` must be an object, found {}",
                json_type(&other)
            )));
        }
        None if envelope.contains_key("action") => {
            return Err(PushError::NotAnEnvelope(
                "field `message` is missing; the body looks like a bare gcr payload, as an \
                 unwrapped push without metadata sends: enable write-metadata \
                 (--push-no-wrapper-write-metadata) so that the message id arrives"
                    .into(),
            ));
        }
        None => {
            return Err(PushError::NotAnEnvelope(
                "field `message` is missing".into(),
            ));
        }
    };

    // Pub/Sub sends both spellings with the same value (legacy duplication);
    // either alone is enough.
    let camel = message_id_field(&message, "messageId")?;
    let snake = message_id_field(&message, "message_id")?;
    let id = match (camel, snake) {
        (Some(a), Some(b)) if a != b => {
            return Err(PushError::BadMessageId(
                "`messageId` and `message_id` disagree".into(),
            ));
        }
        (Some(id), _) | (None, Some(id)) => id,
        (None, None) => {
            return Err(PushError::MissingMessageId(
                "field `message.messageId` (or `message.message_id`) is missing".into(),
            ));
        }
    };

    let endpoint = match envelope.get("subscription") {
        None | Some(Value::Null) => EndpointName::only(),
        Some(Value::String(s)) => subscription("subscription", s)?,
        Some(other) => {
            return Err(PushError::BadSubscription(
                format!(
                    "`subscription` must be a string, found {}",
                    json_type(other)
                )
                .into(),
            ));
        }
    };
    let decoded = match message.get("data") {
        None | Some(Value::Null) => Err(malformed(
            &id,
            "message has no `data` (attributes only): no gcr payload",
        )),
        Some(Value::String(data)) => match decode_base64(data) {
            Ok(payload) => parse_payload(&id, &payload),
            Err(e) => Err(malformed(&id, format!("message `data` is not base64: {e}"))),
        },
        Some(other) => Err(malformed(
            &id,
            format!(
                "message `data` must be a base64 string, found {}",
                json_type(other)
            ),
        )),
    };
    Ok(Delivery {
        source: Source::PubsubPush,
        endpoint,
        id,
        decoded,
    })
}

/// A subscription name scopes message ids in the store and shows in logs:
/// bounded, no control characters.
fn subscription(name: &str, value: &str) -> Result<EndpointName, PushError> {
    check_id(name, value)
        .map(|EventId(s)| EndpointName(s))
        .map_err(|e| match e {
            PushError::BadMessageId(why) => PushError::BadSubscription(why),
            other => other,
        })
}

/// Requires `application/json` (any parameters, any case) on a wrapped push.
fn check_json_content_type(headers: &HeaderMap) -> Result<(), PushError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(PushError::UnsupportedMediaType {
            found: ContentType::Missing,
        });
    };
    let Ok(text) = value.to_str() else {
        return Err(PushError::UnsupportedMediaType {
            found: ContentType::NotText,
        });
    };
    let essence = text.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(PushError::UnsupportedMediaType {
            found: ContentType::Other(shown(text)),
        })
    }
}

fn message_id_field(
    message: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<EventId>, PushError> {
    match message.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => check_id(key, s).map(Some),
        Some(other) => Err(PushError::BadMessageId(
            format!("`{key}` must be a string, found {}", json_type(other)).into(),
        )),
    }
}

/// An id is a dedupe key and a log field: non-empty, and what every source
/// requires of ids ([`json::check_id`]).
fn check_id(name: &str, id: &str) -> Result<EventId, PushError> {
    if id.trim().is_empty() {
        return Err(PushError::BadMessageId(format!("`{name}` is empty").into()));
    }
    json::check_id(id).map_err(|e| {
        PushError::BadMessageId(Unreadable::from(e).prefixed(format_args!("`{name}` ")))
    })?;
    Ok(EventId(id.to_owned()))
}

/// The proto JSON mapping writes standard base64 with padding; URL-safe and
/// unpadded forms are accepted too (docs/reference/event-formats.md §2).
fn decode_base64(data: &str) -> Result<Vec<u8>, base64::DecodeError> {
    const CONFIG: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, CONFIG);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, CONFIG);
    STANDARD.decode(data).or_else(|standard_err| {
        if data.contains(['-', '_']) {
            URL_SAFE.decode(data)
        } else {
            Err(standard_err)
        }
    })
}

/// The payload is a `gcr` topic notification; the result is labelled as
/// having arrived by push.
fn parse_payload(id: &EventId, payload: &[u8]) -> Result<crate::event::Event, Malformed> {
    gcr::parse(id, payload)
        .map(|mut event| {
            event.source = Source::PubsubPush;
            event
        })
        .map_err(|mut m| {
            m.source = Source::PubsubPush;
            m
        })
}

fn malformed(id: &EventId, why: impl Into<Unreadable>) -> Malformed {
    Malformed::new(id.clone(), Source::PubsubPush, why)
}
