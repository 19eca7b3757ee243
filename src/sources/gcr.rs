//! The Google Container Registry / Artifact Registry notification payload
//! (the `data` of a message on the `gcr` Pub/Sub topic).
//!
//! `{"action": "INSERT"|"DELETE", "digest": "host/path@sha256:…", "tag": "host/path:tag"}`
//! with `digest` and `tag` each optional but not both absent.

use serde_json::Value;

use crate::event::{Action, Event, EventId, Malformed, Source, Unreadable};
use crate::reference::Reference;
use crate::sources::json::{self, shown};

/// Parses one payload delivered under `id`.
pub fn parse(id: &EventId, data: &[u8]) -> Result<Event, Malformed> {
    let malformed = |why: Unreadable| Malformed::new(id.clone(), Source::Gcr, why);
    let value = json::parse(data)
        .map_err(|e| malformed(Unreadable::from(e).prefixed("payload is not JSON: ")))?;
    let Value::Object(fields) = value else {
        return Err(malformed("payload is not a JSON object".into()));
    };
    // Unknown keys are ignored: Google may add fields; these three decide.
    let text = |key: &str| json::text(&fields, "", &[key]).map_err(|e| malformed(e.into()));
    let (action, digest_ref, tag_ref) = (text("action")?, text("digest")?, text("tag")?);

    let action = match action {
        Some("INSERT") => Action::Insert,
        Some("DELETE") => Action::Delete,
        Some(other) => {
            return Err(malformed(
                format!(
                    "unknown action {:?} (expected INSERT or DELETE)",
                    shown(other)
                )
                .into(),
            ));
        }
        None => return Err(malformed("field `action` is missing".into())),
    };
    // `digest` must name a digest and no tag, `tag` a tag and no digest.
    let reference = |field: &str, text: Option<&str>, by_digest: bool, form: &str| {
        text.map(|text| {
            let r: Reference = text.parse().map_err(|e| {
                malformed(Unreadable::from(e).prefixed(format_args!("field `{field}`: ")))
            })?;
            if (r.digest.is_some(), r.tag.is_some()) == (by_digest, !by_digest) {
                Ok(r)
            } else {
                Err(malformed(
                    format!("field `{field}` must be {form}, found {r}").into(),
                ))
            }
        })
        .transpose()
    };
    let by_digest = reference("digest", digest_ref, true, "host/path@sha256:…")?;
    let by_tag = reference("tag", tag_ref, false, "host/path:tag")?;

    let (repository, digest, tag) = match (by_digest, by_tag) {
        (None, None) => {
            return Err(malformed(
                "neither `digest` nor `tag` is set: the payload names no image".into(),
            ));
        }
        (Some(d), None) => (d.repository, d.digest, None),
        (None, Some(t)) => (t.repository, None, t.tag),
        (Some(d), Some(t)) => {
            // The retired auditor never compared these; a mismatch means the
            // payload cannot be trusted to describe one image.
            if d.repository != t.repository {
                return Err(malformed(
                    format!(
                        "`digest` and `tag` name different repositories: {} and {}",
                        d.repository, t.repository
                    )
                    .into(),
                ));
            }
            (d.repository, d.digest, t.tag)
        }
    };
    Ok(Event {
        id: id.clone(),
        source: Source::Gcr,
        action,
        repository,
        digest,
        tag,
    })
}
