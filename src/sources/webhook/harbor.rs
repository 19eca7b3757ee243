//! Harbor webhooks (notify type `http`), in either payload format a policy
//! can select (docs/reference/event-formats.md §5):
//!
//! - **Default**: `{"type": "PUSH_ARTIFACT", "occur_at": <unix s>,
//!   "operator": "…", "event_data": {"resources": [{digest, tag,
//!   resource_url}], "repository": {repo_full_name, …}}}`;
//! - **CloudEvents 1.0** (structured mode, `Content-Type:
//!   application/cloudevents+json`): `{"specversion": "1.0", "id": "<uuid>",
//!   "type": "harbor.artifact.pushed", …, "data": <event_data>}`;
//! - **CDEvents** (a CloudEvent too, same content type), sent for artifact
//!   pushes only: `{"specversion": "1.0", "id": "<uuid>", "type":
//!   "dev.cdevents.artifact.published.<version>", "data": {"context": …,
//!   "subject": …, "customData": <event_data>}}`. `customData` is read, as
//!   it alone names every resource; the subject's package URL is derived
//!   from the first one.
//!
//! Default is told apart from the other two by `specversion`, which only
//! CloudEvents has; CDEvents by its type. (Harbor's "Custom" format is the
//! Default payload reshaped by a user template: read only if it keeps the
//! Default shape.)
//!
//! # Delivery ids
//!
//! Harbor formats the payload once, when it queues the webhook job, and its
//! jobservice resends those same bytes on every retry. So whatever the
//! payload says is stable across retries:
//!
//! - CloudEvents carries an `id` (a UUID minted at formatting time): it is
//!   the delivery id, with `#<index>` appended when one event lists several
//!   resources, so that each resource is recorded on its own.
//! - The Default format carries no id at all. The delivery id is `harbor:`
//!   followed by the hex sha256 of (type, occur_at, repo_full_name, digest,
//!   tag) as sent, each part length-prefixed: equal for every retry of one
//!   event, different for a different resource, kind of change, or second.
//!   Two identical changes to the same artifact within one second share an
//!   id and are recorded once, which loses nothing, since they would get the
//!   same verdict. Where no resource can be read, or the event is ignored,
//!   the id hashes (type, occur_at, event_data) instead.
//!
//! # What is audited
//!
//! Only artifact pushes and deletions change the registry. Harbor fires no
//! webhook when a tag is deleted (goharbor/harbor#18820); `CREATE_TAG`
//! (`harbor.tag.created`) is an [`IgnoreReason::UnknownType`] until its
//! payload is verified.
//!
//! `tag` holds the digest string when the artifact has no tag (Harbor's
//! `artifact.go` falls back to the digest as the reference), so a tag that is
//! digest-shaped means "no tag".

use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::event::{Action, Event, EventId, Source, Unreadable};
use crate::reference::{Digest, RegistryPrefix, Repository, Tag};
use crate::sources::json::{check_id, json_type, shown, text};
use crate::sources::webhook::{Decoded, IgnoreReason, Ignored, Parsed, Rejected};

/// The type prefix of the one CDEvent Harbor sends (an artifact push).
const CDEVENT_PUBLISHED: &str = "dev.cdevents.artifact.published.";

/// Parses one Harbor webhook request. With `registry`, repositories are
/// `registry/repo_full_name`; without, the host comes from each resource's
/// `resource_url` (Harbor's configured external URL).
pub fn parse(body: &[u8], registry: Option<&RegistryPrefix>) -> Result<Parsed, Rejected> {
    let value = crate::sources::json::parse(body)
        .map_err(|e| Rejected(Unreadable::from(e).prefixed("Harbor webhook body is not JSON: ")))?;
    let Value::Object(root) = value else {
        return Err(Rejected::from(format!(
            "Harbor webhook body must be a JSON object, found {}",
            json_type(&value)
        )));
    };
    let envelope = if root.contains_key("specversion") {
        cloud_event(&root)?
    } else {
        default_payload(&root)?
    };
    let mut parsed = Parsed::default();
    match envelope.kind {
        Kind::Ignore(why) => parsed.ignored.push(Ignored {
            id: envelope.ids.event_id(),
            why,
        }),
        Kind::Audit(action) => audit_resources(&envelope, action, registry, &mut parsed),
    }
    Ok(parsed)
}

/// What the request's `type` asks of the auditor.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Audit(Action),
    Ignore(IgnoreReason),
}

/// Where a delivery's id comes from (see the module docs).
enum Ids<'a> {
    /// CloudEvents: the event's own `id`.
    Given(&'a str),
    /// Default: derived from what the payload says; `occur_at` and the
    /// whole `event_data` as JSON text, so that whatever Harbor wrote is kept
    /// exactly.
    Derived {
        kind: &'a str,
        occur_at: String,
        data: String,
    },
}

impl Ids<'_> {
    /// The id of the event as a whole (ignored events, unreadable
    /// `event_data`): hashing all of `event_data` keeps two different broken
    /// events apart.
    fn event_id(&self) -> String {
        match self {
            Ids::Given(id) => (*id).to_string(),
            Ids::Derived {
                kind,
                occur_at,
                data,
            } => derived_id(&[kind, occur_at, data]),
        }
    }

    /// The id of resource `index` of `count`, given its fields as sent.
    fn resource_id(&self, index: usize, count: usize, fields: &[&str]) -> String {
        match self {
            Ids::Given(id) if count > 1 => format!("{id}#{index}"),
            Ids::Given(id) => (*id).to_string(),
            Ids::Derived { kind, occur_at, .. } => {
                let mut all: Vec<&str> = vec![kind, occur_at];
                all.extend_from_slice(fields);
                derived_id(&all)
            }
        }
    }
}

/// `harbor:` + hex sha256 of the parts, each preceded by its length (8
/// bytes, big-endian): no separator is safe, since JSON strings may hold any
/// character, and the length keeps `("ab", "c")` and `("a", "bc")` apart.
/// Changing this changes every id, so that retries across an upgrade would
/// be recorded twice: the test suite pins it.
fn derived_id(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    format!("harbor:{}", hex::encode(hasher.finalize()))
}

/// The request, past its format-specific outer layer.
struct Envelope<'a> {
    ids: Ids<'a>,
    kind: Kind,
    /// `event_data` (Default) or `data` (CloudEvents), with its field name
    /// for messages.
    data: Option<&'a Value>,
    data_field: &'static str,
}

fn default_payload(root: &Map<String, Value>) -> Result<Envelope<'_>, Rejected> {
    let kind = match root.get("type") {
        Some(Value::String(t)) if !t.is_empty() => t.as_str(),
        Some(other) => {
            return Err(Rejected::from(format!(
                "Harbor webhook field `type` must be a non-empty string, found {}",
                json_type(other)
            )));
        }
        None => {
            return Err(Rejected(
                "not a Harbor webhook: field `type` is missing (expected the Default payload \
                 `{type, occur_at, event_data}` or a CloudEvents one with `specversion`)"
                    .into(),
            ));
        }
    };
    let as_text = |key: &str| root.get(key).map(Value::to_string).unwrap_or_default();
    Ok(Envelope {
        ids: Ids::Derived {
            kind,
            occur_at: as_text("occur_at"),
            data: as_text("event_data"),
        },
        kind: match kind {
            "PUSH_ARTIFACT" => Kind::Audit(Action::Insert),
            "DELETE_ARTIFACT" => Kind::Audit(Action::Delete),
            "PULL_ARTIFACT" => Kind::Ignore(IgnoreReason::Pull),
            _ => Kind::Ignore(IgnoreReason::UnknownType),
        },
        data: root.get("event_data"),
        data_field: "event_data",
    })
}

fn cloud_event(root: &Map<String, Value>) -> Result<Envelope<'_>, Rejected> {
    let text = |key: &str| {
        crate::sources::json::required(root, key)
            .map_err(|e| Rejected(e.prefixed("Harbor CloudEvents ")))
    };
    let id = text("id")?;
    check_id(id)
        .map_err(|e| Rejected(Unreadable::from(e).prefixed("Harbor CloudEvents field `id` ")))?;
    let kind = text("type")?;
    // The CDEvents type ends in the version of the CDEvents spec, which
    // moves with Harbor's SDK; the event it names does not.
    if kind.starts_with(CDEVENT_PUBLISHED) {
        return Ok(Envelope {
            ids: Ids::Given(id),
            kind: Kind::Audit(Action::Insert),
            data: root.get("data").and_then(|data| data.get("customData")),
            data_field: "data.customData",
        });
    }
    Ok(Envelope {
        ids: Ids::Given(id),
        kind: match kind {
            "harbor.artifact.pushed" => Kind::Audit(Action::Insert),
            "harbor.artifact.deleted" => Kind::Audit(Action::Delete),
            "harbor.artifact.pulled" => Kind::Ignore(IgnoreReason::Pull),
            _ => Kind::Ignore(IgnoreReason::UnknownType),
        },
        data: root.get("data"),
        data_field: "data",
    })
}

/// One delivery per resource; a resource that cannot be read is a
/// `Malformed` delivery and the others still count.
fn audit_resources(
    envelope: &Envelope<'_>,
    action: Action,
    registry: Option<&RegistryPrefix>,
    parsed: &mut Parsed,
) {
    let at = envelope.data_field;
    let data = match envelope.data {
        Some(Value::Object(data)) => Ok(data),
        Some(other) => Err(format!(
            "field `{at}` must be an object, found {}",
            json_type(other)
        )),
        None => Err(format!("field `{at}` is missing")),
    };
    let resources = data.and_then(|data| match data.get("resources") {
        Some(Value::Array(resources)) if !resources.is_empty() => Ok((data, resources)),
        Some(Value::Array(_)) => Err(format!(
            "field `{at}.resources` is empty: the event names no artifact"
        )),
        Some(other) => Err(format!(
            "field `{at}.resources` must be an array, found {}",
            json_type(other)
        )),
        None => Err(format!("field `{at}.resources` is missing")),
    });
    let (data, resources) = match resources {
        Ok(found) => found,
        Err(reason) => {
            let id = EventId(envelope.ids.event_id());
            parsed
                .deliveries
                .push(Decoded::malformed(Source::Harbor, id, reason));
            return;
        }
    };
    let repo_full_name =
        text(data, at, &["repository", "repo_full_name"]).map_err(Unreadable::from);
    for (index, resource) in resources.iter().enumerate() {
        let raw = |key: &str| match resource.get(key) {
            Some(Value::String(s)) => s.as_str(),
            _ => "",
        };
        let name_as_sent = repo_full_name.as_ref().ok().copied().flatten();
        let id = EventId(envelope.ids.resource_id(
            index,
            resources.len(),
            &[name_as_sent.unwrap_or_default(), raw("digest"), raw("tag")],
        ));
        let event = repo_full_name
            .clone()
            .and_then(|name| {
                name.ok_or_else(|| {
                    format!("field `{at}.repository.repo_full_name` is missing").into()
                })
            })
            .and_then(|name| {
                let place = Place {
                    resource: &format!("{at}.resources[{index}]"),
                    name: &format!("{at}.repository.repo_full_name"),
                };
                resource_event(&id, action, resource, &place, name, registry)
            });
        parsed
            .deliveries
            .push(Decoded::of(Source::Harbor, id, event));
    }
}

/// Where a resource and its repository name stood in the request, for
/// messages.
struct Place<'a> {
    resource: &'a str,
    name: &'a str,
}

/// One resource as an event.
fn resource_event(
    id: &EventId,
    action: Action,
    resource: &Value,
    place: &Place<'_>,
    repo_full_name: &str,
    registry: Option<&RegistryPrefix>,
) -> Result<Event, Unreadable> {
    let (at, name_field) = (place.resource, place.name);
    let Value::Object(resource) = resource else {
        return Err(format!(
            "field `{at}` must be an object, found {}",
            json_type(resource)
        )
        .into());
    };
    // Every refusal below names its field; a reference type's refusal keeps
    // its limit (an over-long name) through the words added in front.
    let field = |name: &str, e: crate::reference::ParseError| {
        Unreadable::from(e).prefixed(format_args!("field `{name}`: "))
    };
    let digest = text(resource, at, &["digest"])?
        .map(|d| {
            d.parse::<Digest>()
                .map_err(|e| field(&format!("{at}.digest"), e))
        })
        .transpose()?;
    let (digest, tag) = match text(resource, at, &["tag"])? {
        None => (digest, None),
        // Untagged artifacts report their digest as the tag.
        Some(tag) if looks_like_digest(tag) => {
            let as_digest: Digest = tag.parse().map_err(|e| {
                Unreadable::from(e).prefixed(format_args!(
                    "field `{at}.tag` holds a digest that is not valid: "
                ))
            })?;
            match digest {
                None => (Some(as_digest), None),
                Some(d) if d == as_digest => (Some(d), None),
                Some(d) => {
                    return Err(format!(
                        "field `{at}.tag` holds digest {as_digest} but `{at}.digest` is {d}"
                    )
                    .into());
                }
            }
        }
        Some(tag) => (
            digest,
            Some(
                tag.parse::<Tag>()
                    .map_err(|e| field(&format!("{at}.tag"), e))?,
            ),
        ),
    };
    if digest.is_none() && tag.is_none() {
        return Err(format!(
            "neither `{at}.digest` nor `{at}.tag` is set: the resource names no artifact"
        )
        .into());
    }
    let repository = match registry {
        Some(prefix) => Repository::join(prefix, repo_full_name).map_err(|e| {
            Unreadable::from(e).prefixed(format_args!("field `{name_field}` under {prefix}: "))
        })?,
        None => {
            let url = text(resource, at, &["resource_url"])?.ok_or_else(|| {
                format!(
                    "field `{at}.resource_url` is missing, and no registry is configured \
                     for this webhook to take the host from instead"
                )
            })?;
            let host = host_of(url, repo_full_name).ok_or_else(|| {
                format!(
                    "field `{at}.resource_url` {:?} is not <host>/{}:<tag> or …@<digest>",
                    shown(url),
                    shown(repo_full_name)
                )
            })?;
            let prefix: RegistryPrefix = host
                .parse()
                .map_err(|e| field(&format!("{at}.resource_url"), e))?;
            Repository::join(&prefix, repo_full_name).map_err(|e| field(name_field, e))?
        }
    };
    Ok(Event {
        id: id.clone(),
        source: Source::Harbor,
        action,
        repository,
        digest,
        tag,
    })
}

/// The host in `resource_url`, which Harbor writes as
/// `<external host>/<repo_full_name>:<reference>` (or `@<digest>` since 2.x;
/// older versions wrote `:sha256:…`). Checking the repository part too keeps
/// a URL for some other repository from lending its host.
fn host_of<'a>(url: &'a str, repo_full_name: &str) -> Option<&'a str> {
    // The URL has no scheme in every version read; tolerate one anyway.
    let url = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    let (host, rest) = url.split_once('/')?;
    let after = rest.strip_prefix(repo_full_name)?;
    (after.is_empty() || after.starts_with([':', '@'])).then_some(host)
}

/// The image-spec digest grammar's `algorithm ":"` prefix: a tag can never
/// contain `:`, so this is what Harbor's digest-as-tag looks like.
fn looks_like_digest(tag: &str) -> bool {
    let Some((algorithm, _)) = tag.split_once(':') else {
        return false;
    };
    !algorithm.is_empty()
        && algorithm.split(['+', '.', '_', '-']).all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}
