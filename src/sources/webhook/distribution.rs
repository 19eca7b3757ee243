//! CNCF distribution (Docker registry v2/v3) notifications: an envelope
//! `{"events": [...]}` sent as `application/vnd.docker.distribution.events.v1+json`
//! (2.8) or `…v2+json` (v3). See `docs/reference/event-formats.md` §4.
//!
//! Events name a repository without a host: the endpoint's configured
//! registry prefix supplies it. `target.url` is never used for that, since
//! its host is whatever the pushing client sent as `Host`.

use serde_json::Value;

use crate::event::{Action, Event, EventId, Source, Unreadable};
use crate::reference::{Digest, RegistryPrefix, Repository, Tag};
use crate::registry::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use crate::sources::json;
use crate::sources::webhook::{Decoded, IgnoreReason, Ignored, Parsed, Rejected};

/// The envelope media types distribution sends (2.8 and v3).
pub const CONTENT_TYPES: [&str; 2] = [
    "application/vnd.docker.distribution.events.v1+json",
    "application/vnd.docker.distribution.events.v2+json",
];

/// Blob events carry this media type (never the layer or config type).
const BLOB: &str = "application/octet-stream";

/// Parses one notification request from the registry at `registry`.
pub fn parse(body: &[u8], registry: &RegistryPrefix) -> Result<Parsed, Rejected> {
    let value = json::parse(body)
        .map_err(|e| Rejected(Unreadable::from(e).prefixed("body is not JSON: ")))?;
    let Some(Value::Array(events)) = value.get("events") else {
        return Err(Rejected(
            "body is not a distribution notification: expected {\"events\": [...]}".into(),
        ));
    };
    let mut parsed = Parsed::default();
    for (i, event) in events.iter().enumerate() {
        let id = event_id(i, event)?;
        match parse_event(i, id, event, registry) {
            Item::Deliver(delivery) => parsed.deliveries.push(delivery),
            Item::Ignore(ignored) => parsed.ignored.push(ignored),
        }
    }
    Ok(parsed)
}

enum Item {
    Deliver(Decoded),
    Ignore(Ignored),
}

fn parse_event(i: usize, id: EventId, event: &Value, registry: &RegistryPrefix) -> Item {
    let deliver = |event: Result<Event, Unreadable>| {
        Item::Deliver(Decoded::of(Source::Distribution, id.clone(), event))
    };
    let malformed = |why: Unreadable| deliver(Err(why));
    let ignore = |why| {
        Item::Ignore(Ignored {
            id: id.0.clone(),
            why,
        })
    };
    let Value::Object(event) = event else {
        return malformed(format!("events[{i}] is not a JSON object").into());
    };
    let action = match json::text(event, "", &["action"]) {
        Ok(Some(a)) => a,
        Ok(None) => return malformed("field `action` is missing".into()),
        Err(e) => return malformed(e.into()),
    };
    let Some(Value::Object(target)) = event.get("target") else {
        return malformed("field `target` is missing or not an object".into());
    };
    let field = |key: &str| json::text(target, "target", &[key]);
    let (media_type, digest, tag, repository) = match (
        field("mediaType"),
        field("digest"),
        field("tag"),
        field("repository"),
    ) {
        (Ok(m), Ok(d), Ok(t), Ok(r)) => (m, d, t, r),
        (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => {
            return malformed(e.into());
        }
    };

    let action = match action {
        "pull" => return ignore(IgnoreReason::Pull),
        // A mount is a cross-repository blob copy; a push without a
        // manifest media type is a blob upload.
        "push" | "mount" if !is_manifest(media_type) => {
            return ignore(IgnoreReason::Blob);
        }
        "push" | "mount" => Action::Insert,
        // A blob delete looks exactly like a manifest delete: audited as
        // one, since a deleted manifest must never pass unnoticed.
        "delete" => Action::Delete,
        _ => return ignore(IgnoreReason::UnknownType),
    };
    let Some(repository) = repository else {
        return malformed("field `target.repository` is missing".into());
    };
    let repository = match Repository::join(registry, repository) {
        Ok(r) => r,
        Err(e) => return malformed(Unreadable::from(e).prefixed("field `target.repository`: ")),
    };
    let digest = match digest.map(str::parse::<Digest>).transpose() {
        Ok(d) => d,
        Err(e) => return malformed(Unreadable::from(e).prefixed("field `target.digest`: ")),
    };
    let tag = match tag.map(str::parse::<Tag>).transpose() {
        Ok(t) => t,
        Err(e) => return malformed(Unreadable::from(e).prefixed("field `target.tag`: ")),
    };
    if digest.is_none() && tag.is_none() {
        return malformed("neither `target.digest` nor `target.tag` is set".into());
    }
    deliver(Ok(Event {
        id: id.clone(),
        source: Source::Distribution,
        action,
        repository,
        digest,
        tag,
    }))
}

/// The event's `id` (stable across the registry's retries). Without one,
/// a digest of the event's JSON, so that a resend is still recognised. An
/// id that cannot be a dedupe key and log field (too long, control
/// characters) refuses the request, as the push route does: distribution
/// sends UUIDs, so such an id was not written by a registry.
fn event_id(i: usize, event: &Value) -> Result<EventId, Rejected> {
    match event.get("id") {
        Some(Value::String(id)) if !id.is_empty() => {
            json::check_id(id).map_err(|e| {
                Rejected(Unreadable::from(e).prefixed(format_args!("field `events[{i}].id` ")))
            })?;
            Ok(EventId(id.clone()))
        }
        _ => {
            let text = serde_json::to_string(event).unwrap_or_else(|_| format!("events[{i}]"));
            Ok(EventId(format!(
                "distribution:{}",
                Digest::sha256_of(text.as_bytes())
            )))
        }
    }
}

/// Manifest media types are audited; anything else a registry could report
/// on a push (blobs, layer types of old versions) is not. An unknown
/// `+json` type is audited: an odd manifest must not pass as a blob.
fn is_manifest(media_type: Option<&str>) -> bool {
    match media_type {
        None | Some(BLOB) => false,
        Some(OCI_MANIFEST | OCI_INDEX | DOCKER_MANIFEST | DOCKER_MANIFEST_LIST) => true,
        Some(other) => {
            other.starts_with("application/vnd.docker.distribution.manifest")
                || (other.ends_with("+json")
                    && !other.contains(".config.")
                    && !other.contains(".layer."))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:d7bdd545f09d8a73c2b990337c8211d708a04ccd9748627685e4fc79cc038039";

    fn prefix() -> RegistryPrefix {
        "registry.example:5000".parse().unwrap()
    }

    fn one(event: Value) -> Parsed {
        parse(
            serde_json::json!({ "events": [event] })
                .to_string()
                .as_bytes(),
            &prefix(),
        )
        .unwrap()
    }

    fn event_of(parsed: &Parsed) -> &Event {
        assert_eq!(parsed.deliveries.len(), 1, "{parsed:?}");
        parsed.deliveries[0].decoded.as_ref().unwrap()
    }

    #[test]
    fn push_by_tag_names_digest_tag_and_the_configured_host() {
        let parsed = one(serde_json::json!({
            "id": "e1", "action": "push",
            "target": {"mediaType": OCI_INDEX, "digest": D, "repository": "apps/api",
                       "tag": "v1.4.2", "url": "https://evil.example/v2/apps/api/manifests/x"}
        }));
        let event = event_of(&parsed);
        assert_eq!(event.id.0, "e1");
        assert_eq!(event.action, Action::Insert);
        assert_eq!(event.repository.as_str(), "registry.example:5000/apps/api");
        assert_eq!(event.digest.as_ref().unwrap().to_string(), D);
        assert_eq!(event.tag.as_ref().unwrap().as_str(), "v1.4.2");
    }

    #[test]
    fn blobs_mounts_and_pulls_are_ignored_by_reason() {
        let blob = serde_json::json!({"id": "b", "action": "push",
            "target": {"mediaType": BLOB, "digest": D, "repository": "a"}});
        let mount = serde_json::json!({"id": "m", "action": "mount",
            "target": {"mediaType": BLOB, "digest": D, "repository": "a", "fromRepository": "b"}});
        let pull = serde_json::json!({"id": "p", "action": "pull",
            "target": {"mediaType": OCI_MANIFEST, "digest": D, "repository": "a"}});
        let odd = serde_json::json!({"id": "o", "action": "replicate", "target": {}});
        let body = serde_json::json!({"events": [blob, mount, pull, odd]}).to_string();
        let parsed = parse(body.as_bytes(), &prefix()).unwrap();
        assert!(parsed.deliveries.is_empty());
        let why: Vec<_> = parsed
            .ignored
            .iter()
            .map(|i| (i.id.as_str(), i.why))
            .collect();
        assert_eq!(
            why,
            [
                ("b", IgnoreReason::Blob),
                ("m", IgnoreReason::Blob),
                ("p", IgnoreReason::Pull),
                ("o", IgnoreReason::UnknownType)
            ]
        );
    }

    #[test]
    fn the_two_step_delete_is_a_digest_event_then_tag_events() {
        let by_digest = one(serde_json::json!({"id": "d1", "action": "delete",
            "target": {"digest": D, "repository": "apps/api"}}));
        let event = event_of(&by_digest);
        assert_eq!(
            (event.action, event.digest.is_some(), event.tag.is_none()),
            (Action::Delete, true, true)
        );
        let by_tag = one(serde_json::json!({"id": "d2", "action": "delete",
            "target": {"tag": "latest", "repository": "apps/api"}}));
        let event = event_of(&by_tag);
        assert_eq!(
            (event.action, event.digest.is_none()),
            (Action::Delete, true)
        );
        assert_eq!(event.tag.as_ref().unwrap().as_str(), "latest");
    }

    #[test]
    fn a_bad_event_is_malformed_and_its_neighbours_still_parse() {
        let bad = serde_json::json!({"id": "bad", "action": "push",
            "target": {"mediaType": OCI_MANIFEST, "digest": "sha256:123", "repository": "a"}});
        let good = serde_json::json!({"id": "good", "action": "push",
            "target": {"mediaType": OCI_MANIFEST, "digest": D, "repository": "a"}});
        let body = serde_json::json!({"events": [bad, good]}).to_string();
        let parsed = parse(body.as_bytes(), &prefix()).unwrap();
        let malformed = parsed.deliveries[0].decoded.as_ref().unwrap_err();
        assert_eq!(malformed.id.0, "bad");
        assert!(malformed.reason.contains("target.digest"), "{malformed}");
        assert!(parsed.deliveries[1].decoded.is_ok());
    }

    #[test]
    fn missing_fields_are_named() {
        for (event, field) in [
            (serde_json::json!({"id": "x", "target": {}}), "action"),
            (serde_json::json!({"id": "x", "action": "push"}), "target"),
            (
                serde_json::json!({"id": "x", "action": "delete", "target": {"digest": D}}),
                "target.repository",
            ),
            (
                serde_json::json!({"id": "x", "action": "delete", "target": {"repository": "a"}}),
                "target.digest",
            ),
            (
                serde_json::json!({"id": "x", "action": "push",
                    "target": {"mediaType": 7, "repository": "a"}}),
                "target.mediaType",
            ),
        ] {
            let parsed = one(event);
            let reason = &parsed.deliveries[0].decoded.as_ref().unwrap_err().reason;
            assert!(reason.contains(field), "{reason} should name {field}");
        }
    }

    #[test]
    fn an_event_without_id_gets_a_stable_content_id() {
        let event = serde_json::json!({"action": "push",
            "target": {"mediaType": OCI_MANIFEST, "digest": D, "repository": "a"}});
        let first = one(event.clone());
        let again = one(event);
        assert_eq!(first.deliveries[0].id, again.deliveries[0].id);
        assert!(first.deliveries[0].id.0.starts_with("distribution:sha256:"));
    }

    #[test]
    fn requests_that_are_not_notifications_are_rejected() {
        for body in [&b"not json"[..], b"{}", br#"{"events": {}}"#, b"[]"] {
            let err = parse(body, &prefix()).unwrap_err();
            assert!(!err.0.reason.is_empty());
        }
    }
}
