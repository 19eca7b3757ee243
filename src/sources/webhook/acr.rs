//! Azure Container Registry changes, by either route ACR offers
//! (docs/reference/event-formats.md §7). Told apart by the body's shape:
//!
//! | body | route |
//! |---|---|
//! | JSON array | Event Grid, a batch of events in the Event Grid schema (`eventType`) or, with batching on, the CloudEvents schema (`specversion`, `type`) |
//! | object with `specversion` | Event Grid, one event in the CloudEvents 1.0 schema |
//! | object with `eventType` | one Event Grid-schema event outside its array (tolerated: the event is complete) |
//! | object with `action` | ACR's native webhook: `{id, timestamp, action, target, request}` |
//!
//! Both routes describe a change the same way (`target.{digest, tag,
//! repository}`, `request.host`); Event Grid nests it in `data`.
//!
//! The event's `id` is the delivery id: Event Grid and ACR resend it with
//! every retry. An event without one can be neither recorded nor
//! deduplicated, and no real sender emits one, so it rejects the request.
//!
//! Event Grid's first request to a new subscription is the validation
//! handshake (`Microsoft.EventGrid.SubscriptionValidationEvent`): it yields a
//! reply, `{"validationResponse": <data.validationCode>}`, and no delivery.
//! The CloudEvents schema's handshake is an HTTP `OPTIONS` request instead,
//! which is the HTTP layer's business, not this parser's.

use serde_json::{Map, Value, json};

use crate::event::{Action, Event, EventId, Source, Unreadable};
use crate::reference::{Digest, RegistryPrefix, Repository, Tag};
use crate::sources::json::{check_id, json_type, shown, text};
use crate::sources::webhook::{Decoded, IgnoreReason, Ignored, Parsed, Rejected};

const VALIDATION_EVENT: &str = "Microsoft.EventGrid.SubscriptionValidationEvent";

/// Parses one ACR delivery. `registry` wins over `request.host`, for
/// registries audited under another name than the one clients pushed to.
pub fn parse(body: &[u8], registry: Option<&RegistryPrefix>) -> Result<Parsed, Rejected> {
    let value = crate::sources::json::parse(body)
        .map_err(|e| Rejected(Unreadable::from(e).prefixed("ACR webhook body is not JSON: ")))?;
    let mut parsed = Parsed::default();
    match &value {
        Value::Array(events) => {
            for (index, event) in events.iter().enumerate() {
                let Value::Object(event) = event else {
                    return Err(Rejected::from(format!(
                        "Event Grid events[{index}] must be an object, found {}",
                        json_type(event)
                    )));
                };
                let schema = if event.contains_key("specversion") {
                    Schema::CloudEvents
                } else {
                    Schema::EventGrid
                };
                grid_event(
                    event,
                    schema,
                    &format!("events[{index}]"),
                    registry,
                    &mut parsed,
                )?;
            }
        }
        Value::Object(event) if event.contains_key("specversion") => {
            grid_event(event, Schema::CloudEvents, "event", registry, &mut parsed)?;
        }
        Value::Object(event) if event.contains_key("eventType") => {
            grid_event(event, Schema::EventGrid, "event", registry, &mut parsed)?;
        }
        Value::Object(event) if event.contains_key("action") => {
            native_event(event, registry, &mut parsed)?;
        }
        Value::Object(_) => {
            return Err(Rejected(
                "not an ACR delivery: expected an Event Grid array of events, a CloudEvents \
                 event (`specversion`) or an ACR webhook object (`action`)"
                    .into(),
            ));
        }
        other => {
            return Err(Rejected::from(format!(
                "ACR webhook body must be a JSON array or object, found {}",
                json_type(other)
            )));
        }
    }
    Ok(parsed)
}

/// The two schemas an Event Grid subscription can deliver in; they differ
/// only in what the type attribute is called.
#[derive(Debug, Clone, Copy)]
enum Schema {
    EventGrid,
    CloudEvents,
}

impl Schema {
    fn type_field(self) -> &'static str {
        match self {
            Schema::EventGrid => "eventType",
            Schema::CloudEvents => "type",
        }
    }
}

/// What an event's type asks of the auditor.
enum Kind {
    Audit(Action),
    Ignore(IgnoreReason),
}

fn grid_event(
    event: &Map<String, Value>,
    schema: Schema,
    place: &str,
    registry: Option<&RegistryPrefix>,
    parsed: &mut Parsed,
) -> Result<(), Rejected> {
    let id = event_id(event, place)?;
    let type_field = schema.type_field();
    let kind = match event_type(event, type_field, "is missing") {
        Ok(VALIDATION_EVENT) => {
            parsed.reply = Some(validation_reply(event, &id)?);
            return Ok(());
        }
        // Older documentation shows the short names, newer the full ones.
        Ok(t) => match t.strip_prefix("Microsoft.ContainerRegistry.").unwrap_or(t) {
            "ImagePushed" => Kind::Audit(Action::Insert),
            "ImageDeleted" => Kind::Audit(Action::Delete),
            "ChartPushed" | "ChartDeleted" => Kind::Ignore(IgnoreReason::NotAnImage),
            _ => Kind::Ignore(IgnoreReason::UnknownType),
        },
        Err(reason) => {
            parsed
                .deliveries
                .push(Decoded::malformed(Source::Acr, id, reason));
            return Ok(());
        }
    };
    let action = match kind {
        Kind::Audit(action) => action,
        Kind::Ignore(why) => {
            parsed.ignored.push(Ignored { id: id.0, why });
            return Ok(());
        }
    };
    let change = match event.get("data") {
        Some(Value::Object(data)) => image_event(&id, action, data, "data", registry),
        Some(other) => {
            Err(format!("field `data` must be an object, found {}", json_type(other)).into())
        }
        None => Err("field `data` is missing".into()),
    };
    parsed.deliveries.push(Decoded::of(Source::Acr, id, change));
    Ok(())
}

/// The handshake's answer; a handshake without a code cannot be answered,
/// so the request is refused and Event Grid reports the subscription
/// failing to validate.
fn validation_reply(event: &Map<String, Value>, id: &EventId) -> Result<Value, Rejected> {
    match text(event, "", &["data", "validationCode"]) {
        Ok(Some(code)) => Ok(json!({ "validationResponse": code })),
        Ok(None) => Err(Rejected::from(format!(
            "event {id}: {VALIDATION_EVENT} without field `data.validationCode`"
        ))),
        Err(reason) => Err(Rejected::from(format!("event {id}: {reason}"))),
    }
}

fn native_event(
    event: &Map<String, Value>,
    registry: Option<&RegistryPrefix>,
    parsed: &mut Parsed,
) -> Result<(), Rejected> {
    let id = event_id(event, "ACR webhook")?;
    let action = match event_type(event, "action", "is empty") {
        Ok("push") => Action::Insert,
        Ok("delete") => Action::Delete,
        Ok("chart_push" | "chart_delete") => {
            parsed.ignored.push(Ignored {
                id: id.0,
                why: IgnoreReason::NotAnImage,
            });
            return Ok(());
        }
        // `ping` (a test delivery), `quarantine`, and whatever comes next.
        Ok(_) => {
            parsed.ignored.push(Ignored {
                id: id.0,
                why: IgnoreReason::UnknownType,
            });
            return Ok(());
        }
        Err(reason) => {
            parsed
                .deliveries
                .push(Decoded::malformed(Source::Acr, id, reason));
            return Ok(());
        }
    };
    let change = image_event(&id, action, event, "", registry);
    parsed.deliveries.push(Decoded::of(Source::Acr, id, change));
    Ok(())
}

/// The field naming what happened (`eventType`, `type`, `action`); without
/// it the event is unreadable, and `absent` says how (`is missing`).
fn event_type<'a>(
    event: &'a Map<String, Value>,
    key: &str,
    absent: &str,
) -> Result<&'a str, Unreadable> {
    text(event, "", &[key])?.ok_or_else(|| format!("field `{key}` {absent}").into())
}

/// The change described by `target` and `request` inside `obj` (which stood
/// at `at`: `data` for Event Grid, the top level for native webhooks).
fn image_event(
    id: &EventId,
    action: Action,
    obj: &Map<String, Value>,
    at: &str,
    registry: Option<&RegistryPrefix>,
) -> Result<Event, Unreadable> {
    let name = |path: &str| {
        if at.is_empty() {
            path.to_string()
        } else {
            format!("{at}.{path}")
        }
    };
    let field = |path: &[&str]| text(obj, at, path);
    // A reference type's refusal keeps its limit (an over-long name)
    // through the field's name added in front.
    let refused = |path: &str, e: crate::reference::ParseError| {
        Unreadable::from(e).prefixed(format_args!("field `{}`: ", name(path)))
    };
    let digest = field(&["target", "digest"])?
        .map(|d| d.parse::<Digest>().map_err(|e| refused("target.digest", e)))
        .transpose()?;
    let tag = field(&["target", "tag"])?
        .map(|t| t.parse::<Tag>().map_err(|e| refused("target.tag", e)))
        .transpose()?;
    if digest.is_none() && tag.is_none() {
        // A whole-repository delete may be such an event; it still must not
        // pass unseen, and `malformed` alerts.
        return Err(format!(
            "neither `{}` nor `{}` is set: the event names no image",
            name("target.digest"),
            name("target.tag")
        )
        .into());
    }
    let repository = field(&["target", "repository"])?
        .ok_or_else(|| format!("field `{}` is missing", name("target.repository")))?;
    let prefix = match registry {
        Some(prefix) => prefix.clone(),
        None => {
            let host = field(&["request", "host"])?.ok_or_else(|| {
                format!(
                    "field `{}` is missing (and no registry is configured)",
                    name("request.host")
                )
            })?;
            // A host only: a path here would move the image elsewhere.
            if host.contains('/') {
                return Err(format!(
                    "field `{}` {:?} is not a host name",
                    name("request.host"),
                    shown(host)
                )
                .into());
            }
            host.parse::<RegistryPrefix>()
                .map_err(|e| refused("request.host", e))?
        }
    };
    let repository = Repository::join(&prefix, repository).map_err(|e| {
        Unreadable::from(e).prefixed(format_args!(
            "field `{}` under {prefix}: ",
            name("target.repository")
        ))
    })?;
    Ok(Event {
        id: id.clone(),
        source: Source::Acr,
        action,
        repository,
        digest,
        tag,
    })
}

/// The event's `id`, which must be usable as a dedupe key.
fn event_id(event: &Map<String, Value>, place: &str) -> Result<EventId, Rejected> {
    let id = match event.get("id") {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(Value::String(_)) => {
            return Err(Rejected::from(format!("{place}: field `id` is empty")));
        }
        Some(other) => {
            return Err(Rejected::from(format!(
                "{place}: field `id` must be a string, found {}",
                json_type(other)
            )));
        }
        None => {
            return Err(Rejected::from(format!(
                "{place}: field `id` is missing, so the event can be neither recorded nor \
                 deduplicated"
            )));
        }
    };
    check_id(id).map_err(|e| {
        Rejected(Unreadable::from(e).prefixed(format_args!("{place}: field `id` ")))
    })?;
    Ok(EventId(id.clone()))
}
