//! Amazon ECR changes as EventBridge delivers them to an HTTP target (an API
//! destination): one event per request, the event JSON as the body
//! (docs/reference/event-formats.md §6).
//!
//! ```json
//! {"version": "0", "id": "<uuid>", "detail-type": "ECR Image Action",
//!  "source": "aws.ecr", "account": "111122223333", "region": "eu-west-1",
//!  "detail": {"result": "SUCCESS", "action-type": "PUSH",
//!             "repository-name": "apps/api", "image-digest": "sha256:…",
//!             "image-tag": "v1.4.2"}}
//! ```
//!
//! A batch (an array) is rejected: EventBridge's documentation shows it sending
//! one event per target invocation and no documented batching for API
//! destinations, so an array means an input transformer or a proxy this
//! parser does not know the shape of.
//!
//! The EventBridge `id` is the delivery id: EventBridge keeps it across its
//! retries of one event. Without one nothing can be recorded or
//! deduplicated, so an event lacking it is rejected as a whole.
//!
//! Only `aws.ecr` may send "ECR Image Action": EventBridge refuses custom
//! events whose source starts with `aws.`, so the same detail-type from any
//! other source is someone else's event and is ignored.

use serde_json::{Map, Value};

use crate::event::{Action, Event, EventId, Source, Unreadable};
use crate::reference::{Digest, RegistryPrefix, Repository, Tag};
use crate::sources::json::{check_id, json_type, required, shown, text};
use crate::sources::webhook::{Decoded, IgnoreReason, Ignored, Parsed, Rejected};

/// The detail-type of pushes and deletions; every other ECR detail-type
/// (`ECR Image Scan`, `ECR Pull Through Cache Action`, `ECR Referrer
/// Action`, …) changes nothing the auditor checks.
const IMAGE_ACTION: &str = "ECR Image Action";

/// Parses one EventBridge delivery. `registry` wins over the registry host
/// derived from the event's `account` and `region`, for registries reached
/// by another name (a VPC endpoint, a pull-through alias).
pub fn parse(body: &[u8], registry: Option<&RegistryPrefix>) -> Result<Parsed, Rejected> {
    let value = crate::sources::json::parse(body).map_err(|e| {
        Rejected(Unreadable::from(e).prefixed("ECR (EventBridge) body is not JSON: "))
    })?;
    let root = match value {
        Value::Object(root) => root,
        Value::Array(_) => {
            return Err(Rejected(
                "ECR (EventBridge) body is an array: expected one EventBridge event object \
                 (EventBridge sends one event per request; batches are not a documented shape)"
                    .into(),
            ));
        }
        other => {
            return Err(Rejected::from(format!(
                "ECR (EventBridge) body must be a JSON object, found {}",
                json_type(&other)
            )));
        }
    };
    let envelope = |key: &str| {
        required(&root, key).map_err(|e| Rejected(e.prefixed("not an EventBridge event: ")))
    };
    let id = envelope("id")?;
    check_id(id).map_err(|e| Rejected(Unreadable::from(e).prefixed("EventBridge field `id` ")))?;
    let detail_type = envelope("detail-type")?;

    let mut parsed = Parsed::default();
    let ignore = |why| Ignored {
        id: id.to_string(),
        why,
    };
    if detail_type != IMAGE_ACTION {
        parsed.ignored.push(ignore(IgnoreReason::UnknownType));
        return Ok(parsed);
    }
    let id = EventId(id.to_string());
    match image_action(&id, &root, registry) {
        Ok(event) => parsed
            .deliveries
            .push(Decoded::of(Source::Ecr, id, Ok(event))),
        Err(Skip(why)) => parsed.ignored.push(ignore(why)),
        Err(Bad(reason)) => parsed
            .deliveries
            .push(Decoded::malformed(Source::Ecr, id, reason)),
    }
    Ok(parsed)
}

/// Why an "ECR Image Action" event yields no `Event`.
enum NoEvent {
    /// Not audited, and rightly so.
    Skip(IgnoreReason),
    /// Unreadable: a `malformed` verdict.
    Bad(Unreadable),
}
use NoEvent::{Bad, Skip};

impl<T: Into<Unreadable>> From<T> for NoEvent {
    fn from(why: T) -> Self {
        Bad(why.into())
    }
}

fn image_action(
    id: &EventId,
    root: &Map<String, Value>,
    registry: Option<&RegistryPrefix>,
) -> Result<Event, NoEvent> {
    match text(root, "", &["source"])? {
        Some("aws.ecr") => {}
        Some(_) => return Err(Skip(IgnoreReason::UnknownType)),
        None => return Err("field `source` is missing".into()),
    }
    let detail = match root.get("detail") {
        Some(Value::Object(detail)) => detail,
        Some(other) => {
            return Err(format!(
                "field `detail` must be an object, found {}",
                json_type(other)
            )
            .into());
        }
        None => return Err("field `detail` is missing".into()),
    };
    let field = |key: &str| text(detail, "detail", &[key]);
    // A value outside the documented set, or none, is unreadable.
    let unexpected = |key: &str, value: Option<&str>, expected: &str| -> NoEvent {
        match value {
            Some(other) => format!(
                "field `detail.{key}` is {:?} (expected {expected})",
                shown(other)
            ),
            None => format!("field `detail.{key}` is missing"),
        }
        .into()
    };
    // First: a failed action may lack the fields a successful one has.
    match field("result")? {
        Some("SUCCESS") => {}
        Some("FAILURE") => return Err(Skip(IgnoreReason::Failed)),
        other => return Err(unexpected("result", other, "SUCCESS or FAILURE")),
    }
    // An unknown action inside a known event type could be a change the
    // auditor cannot see: `malformed` alerts, where ignoring would not.
    let action = match field("action-type")? {
        Some("PUSH") => Action::Insert,
        Some("DELETE") => Action::Delete,
        other => return Err(unexpected("action-type", other, "PUSH or DELETE")),
    };
    let prefix = match registry {
        Some(prefix) => prefix.clone(),
        None => registry_of(root)?,
    };
    let name = field("repository-name")?.ok_or("field `detail.repository-name` is missing")?;
    let repository = Repository::join(&prefix, name).map_err(|e| {
        Unreadable::from(e).prefixed(format_args!(
            "field `detail.repository-name` under {prefix}: "
        ))
    })?;
    let digest = field("image-digest")?
        .map(|d| {
            d.parse::<Digest>()
                .map_err(|e| Unreadable::from(e).prefixed("field `detail.image-digest`: "))
        })
        .transpose()?;
    let tag = field("image-tag")?
        .map(|t| {
            t.parse::<Tag>()
                .map_err(|e| Unreadable::from(e).prefixed("field `detail.image-tag`: "))
        })
        .transpose()?;
    if digest.is_none() && tag.is_none() {
        return Err(
            "neither `detail.image-digest` nor `detail.image-tag` is set: the event names no image"
                .into(),
        );
    }
    Ok(Event {
        id: id.clone(),
        source: Source::Ecr,
        action,
        repository,
        digest,
        tag,
    })
}

/// `{account}.dkr.ecr.{region}.amazonaws.com`, the registry every ECR
/// repository of that account and region lives in (`.com.cn` in the China
/// partition, whose regions are `cn-*`). Both parts are checked so that an
/// event cannot smuggle a path or another host into the prefix.
fn registry_of(root: &Map<String, Value>) -> Result<RegistryPrefix, Unreadable> {
    let account = text(root, "", &["account"])?
        .ok_or("field `account` is missing (and no registry is configured)")?;
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "field `account` {:?} is not a 12-digit AWS account id",
            shown(account)
        )
        .into());
    }
    let region = text(root, "", &["region"])?
        .ok_or("field `region` is missing (and no registry is configured)")?;
    if region.len() > 32
        || !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!(
            "field `region` {:?} is not an AWS region name",
            shown(region)
        )
        .into());
    }
    let domain = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("{account}.dkr.ecr.{region}.{domain}")
        .parse()
        .map_err(|e| {
            Unreadable::from(e).prefixed("fields `account` and `region` make no registry host: ")
        })
}
