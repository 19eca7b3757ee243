//! The Harbor webhook parser against payloads built from the documented
//! schemas (docs/reference/event-formats.md §5): the Default, CloudEvents and
//! CDEvents payload formats mapped to the exact delivery, ids derived where
//! Harbor sends none, one bad resource among good ones, and bodies that are
//! not Harbor deliveries at all.

use crate::support::payloads;

use image_auditor::event::{Action, Event, Source};
use image_auditor::sources::webhook::{IgnoreReason, harbor};
use payloads::*;
use serde_json::{Value, json};
use sha2::Digest as _;

/// The documented derivation, recomputed here so that a change to it (which
/// would defeat dedupe across an upgrade) fails this test.
fn harbor_id(kind: &str, occur_at: &str, repo: &str, digest: &str, tag: &str) -> String {
    let mut text = Vec::new();
    for part in [kind, occur_at, repo, digest, tag] {
        text.extend_from_slice(&(part.len() as u64).to_be_bytes());
        text.extend_from_slice(part.as_bytes());
    }
    format!("harbor:{}", hex::encode(sha2::Sha256::digest(&text)))
}

/// The id derived for a `kind` event of `harbor_push()`'s repository and
/// time, about `digest` and `tag`.
fn worker_id(kind: &str, digest: &str, tag: &str) -> String {
    harbor_id(kind, "1772446530", "payments/worker", digest, tag)
}

/// The event of `harbor_push()`'s one resource (worker, `D1`, `v2.0.0`)
/// as a `kind` delivery.
fn worker_event(kind: &str, action: Action) -> Event {
    event(
        Source::Harbor,
        &worker_id(kind, D1, "v2.0.0"),
        action,
        "harbor.internal/payments/worker",
        Some(D1),
        Some("v2.0.0"),
    )
}

#[test]
fn harbor_default_push_is_one_insert_with_a_derived_id() {
    let parsed = run(harbor::parse, &harbor_push(), None);
    assert_eq!(parsed.deliveries.len(), 1);
    assert!(parsed.ignored.is_empty() && parsed.reply.is_none());
    assert_delivery(
        &parsed.deliveries[0],
        &worker_event("PUSH_ARTIFACT", Action::Insert),
    );
}

#[test]
fn harbor_default_delete_is_a_delete() {
    let mut body = harbor_push();
    body["type"] = json!("DELETE_ARTIFACT");
    let parsed = run(harbor::parse, &body, None);
    assert_delivery(
        &parsed.deliveries[0],
        &worker_event("DELETE_ARTIFACT", Action::Delete),
    );
}

#[test]
fn harbor_id_is_stable_across_retries_and_distinct_per_change() {
    let id_of = |body: &Value| run(harbor::parse, body, None).deliveries[0].id.clone();
    let original = id_of(&harbor_push());
    // A retry resends the same payload; even re-encoded it keeps its id.
    let reencoded = serde_json::to_string_pretty(&harbor_push()).unwrap();
    let retry = harbor::parse(reencoded.as_bytes(), None).unwrap();
    assert_eq!(retry.deliveries[0].id, original);

    let mut other_second = harbor_push();
    other_second["occur_at"] = json!(1772446531);
    let mut other_digest = harbor_push();
    other_digest["event_data"]["resources"][0]["digest"] = json!(D2);
    let mut other_tag = harbor_push();
    other_tag["event_data"]["resources"][0]["tag"] = json!("v2.0.1");
    let mut other_kind = harbor_push();
    other_kind["type"] = json!("DELETE_ARTIFACT");
    for changed in [other_second, other_digest, other_tag, other_kind] {
        assert_ne!(id_of(&changed), original, "{changed}");
    }
}

#[test]
fn harbor_tag_equal_to_the_digest_means_untagged() {
    // Harbor ≥ 2.x writes `@digest` in the URL; older versions `:digest`.
    for url in [
        format!("harbor.internal:8443/payments/worker@{D1}"),
        format!("harbor.internal:8443/payments/worker:{D1}"),
    ] {
        let mut body = harbor_push();
        body["event_data"]["resources"][0] = json!({"digest": D1, "tag": D1, "resource_url": url});
        let parsed = run(harbor::parse, &body, None);
        let id = worker_id("PUSH_ARTIFACT", D1, D1);
        assert_delivery(
            &parsed.deliveries[0],
            &event(
                Source::Harbor,
                &id,
                Action::Insert,
                "harbor.internal:8443/payments/worker",
                Some(D1),
                None,
            ),
        );
    }
}

#[test]
fn harbor_tag_holding_another_digest_is_malformed() {
    let mut body = harbor_push();
    body["event_data"]["resources"][0]["tag"] = json!(D2);
    let parsed = run(harbor::parse, &body, None);
    let id = worker_id("PUSH_ARTIFACT", D1, D2);
    assert_malformed(
        &parsed.deliveries[0],
        Source::Harbor,
        &id,
        &["event_data.resources[0].tag", D2, D1],
    );
}

#[test]
fn harbor_configured_registry_replaces_the_url_host() {
    let parsed = run(
        harbor::parse,
        &harbor_push(),
        Some("registry.example.com/mirror"),
    );
    assert_eq!(
        first_repository(&parsed),
        "registry.example.com/mirror/payments/worker"
    );
}

#[test]
fn harbor_cloud_event_push_uses_its_id() {
    let body = harbor_cloud_event(
        "harbor.artifact.pushed",
        json!([{"digest": D2, "tag": "1.36", "resource_url": "harbor.dev/library/busybox:1.36"}]),
    );
    let parsed = run(harbor::parse, &body, None);
    assert_eq!(parsed.deliveries.len(), 1);
    assert_delivery(
        &parsed.deliveries[0],
        &event(
            Source::Harbor,
            "4b2f89a6-548d-4c12-9993-a1f5790b97d2",
            Action::Insert,
            "harbor.dev/library/busybox",
            Some(D2),
            Some("1.36"),
        ),
    );
}

#[test]
fn harbor_cloud_event_with_several_resources_numbers_them() {
    let body = harbor_cloud_event(
        "harbor.artifact.deleted",
        json!([
            {"digest": D1, "tag": D1, "resource_url": format!("harbor.dev/library/busybox@{D1}")},
            {"digest": D2, "tag": "latest", "resource_url": "harbor.dev/library/busybox:latest"}
        ]),
    );
    let parsed = run(harbor::parse, &body, None);
    assert_eq!(parsed.deliveries.len(), 2);
    let base = "4b2f89a6-548d-4c12-9993-a1f5790b97d2";
    assert_delivery(
        &parsed.deliveries[0],
        &event(
            Source::Harbor,
            &format!("{base}#0"),
            Action::Delete,
            "harbor.dev/library/busybox",
            Some(D1),
            None,
        ),
    );
    assert_delivery(
        &parsed.deliveries[1],
        &event(
            Source::Harbor,
            &format!("{base}#1"),
            Action::Delete,
            "harbor.dev/library/busybox",
            Some(D2),
            Some("latest"),
        ),
    );
}

#[test]
fn harbor_bad_digest_in_one_resource_leaves_the_other() {
    let mut body = harbor_push();
    body["event_data"]["resources"] = json!([
        {"digest": D1, "tag": "v2.0.0", "resource_url": "harbor.internal/payments/worker:v2.0.0"},
        {"digest": "sha256:ABC", "tag": "v2.0.1", "resource_url": "harbor.internal/payments/worker:v2.0.1"}
    ]);
    let parsed = run(harbor::parse, &body, None);
    assert_eq!(parsed.deliveries.len(), 2);
    assert_delivery(
        &parsed.deliveries[0],
        &worker_event("PUSH_ARTIFACT", Action::Insert),
    );
    assert_malformed(
        &parsed.deliveries[1],
        Source::Harbor,
        &worker_id("PUSH_ARTIFACT", "sha256:ABC", "v2.0.1"),
        &["event_data.resources[1].digest", "sha256:ABC"],
    );
}

#[test]
fn harbor_other_types_are_ignored() {
    for (kind, why) in [
        ("PULL_ARTIFACT", IgnoreReason::Pull),
        ("SCANNING_COMPLETED", IgnoreReason::UnknownType),
        ("SCANNING_FAILED", IgnoreReason::UnknownType),
        ("QUOTA_EXCEED", IgnoreReason::UnknownType),
        ("REPLICATION", IgnoreReason::UnknownType),
        ("TAG_RETENTION", IgnoreReason::UnknownType),
        ("SOMETHING_NEW", IgnoreReason::UnknownType),
    ] {
        let mut body = harbor_push();
        body["type"] = json!(kind);
        let parsed = run(harbor::parse, &body, None);
        assert!(parsed.deliveries.is_empty(), "{kind}");
        assert_eq!(parsed.ignored.len(), 1, "{kind}");
        assert_eq!(parsed.ignored[0].why, why, "{kind}");
        assert!(parsed.ignored[0].id.starts_with("harbor:"), "{kind}");
    }
    for (kind, why) in [
        ("harbor.artifact.pulled", IgnoreReason::Pull),
        ("harbor.scan.completed", IgnoreReason::UnknownType),
        ("harbor.tag_retention.finished", IgnoreReason::UnknownType),
    ] {
        let parsed = run(harbor::parse, &harbor_cloud_event(kind, json!([])), None);
        assert!(parsed.deliveries.is_empty(), "{kind}");
        assert_eq!(
            parsed.ignored,
            [ignored("4b2f89a6-548d-4c12-9993-a1f5790b97d2", why)],
            "{kind}"
        );
    }
}

#[test]
fn harbor_push_without_usable_resources_is_malformed() {
    for (resources, phrase) in [
        (json!([]), "event_data.resources` is empty"),
        (json!("x"), "event_data.resources` must be an array"),
        (
            json!([{"tag": "v1"}]),
            "event_data.resources[0].resource_url` is missing",
        ),
        (json!([{"resource_url": "h.io/payments/worker"}]), "neither"),
        (
            json!([{"digest": D1, "resource_url": "other.io/elsewhere/img@x"}]),
            "event_data.resources[0].resource_url",
        ),
        (
            json!([{"digest": D1, "tag": "-bad", "resource_url": "h.io/payments/worker:x"}]),
            "event_data.resources[0].tag",
        ),
        (json!([7]), "event_data.resources[0]` must be an object"),
    ] {
        let mut body = harbor_push();
        body["event_data"]["resources"] = resources;
        let parsed = run(harbor::parse, &body, None);
        assert_eq!(parsed.deliveries.len(), 1, "{body}");
        let id = parsed.deliveries[0].id.0.clone();
        assert_malformed(&parsed.deliveries[0], Source::Harbor, &id, &[phrase]);
    }
    let mut body = harbor_push();
    body["event_data"]["repository"] = json!({"name": "worker"});
    let parsed = run(harbor::parse, &body, None);
    let id = parsed.deliveries[0].id.0.clone();
    assert_malformed(
        &parsed.deliveries[0],
        Source::Harbor,
        &id,
        &["event_data.repository.repo_full_name` is missing"],
    );
}

#[test]
fn harbor_rejects_what_is_not_a_harbor_webhook() {
    rejected(harbor::parse, b"", &["not JSON"]);
    rejected(harbor::parse, b"type=PUSH_ARTIFACT", &["not JSON"]);
    rejected(harbor::parse, b"[]", &["JSON object", "an array"]);
    rejected(
        harbor::parse,
        br#"{"event_data":{}}"#,
        &["`type` is missing"],
    );
    rejected(harbor::parse, br#"{"type":7}"#, &["`type`", "a number"]);
    rejected(
        harbor::parse,
        br#"{"specversion":"1.0","type":"harbor.artifact.pushed"}"#,
        &["CloudEvents", "`id` is missing"],
    );
}

/// Harbor's CDEvents payload format, shaped as Harbor's own formatter test
/// shows it: a CloudEvent of type `dev.cdevents.artifact.published.<v>`
/// whose `data.customData` is the Default `event_data`. Sent for pushes
/// only, with the CloudEvents content type; ignoring it would let every
/// push through such a policy go unaudited.
#[test]
fn harbor_cdevents_push_is_read_from_custom_data() {
    const HARBOR_DEV: &str =
        "sha256:dde8e930c7b6a490f728e66292bc9bce42efc9bbb5278bae40e4f30f6e00fe8c";
    let cdevent = |kind: &str| {
        json!({
            "specversion": "1.0",
            "requestid": "mock-request-id",
            "id": "2d47734c-83e2-41dc-bcbf-23bd2a3734a2",
            "source": "/projects/1/webhook/policies/3",
            "type": kind,
            "datacontenttype": "application/json",
            "time": "2023-03-06T06:08:43Z",
            "operator": "admin",
            "data": {
                "context": {"version": "0.3.0", "id": "2d47734c-83e2-41dc-bcbf-23bd2a3734a2",
                            "source": "/projects/1/webhook/policies/3", "type": kind,
                            "timestamp": "2023-03-06T00:08:43-06:00"},
                "subject": {"id": format!("pkg:oci/busybox@{HARBOR_DEV}?tag=v1.0"),
                            "source": "/projects/1/webhook/policies/3", "type": "artifact",
                            "content": {}},
                "customData": {
                    "resources": [{"digest": HARBOR_DEV, "tag": "v1.0",
                                   "resource_url": format!("harbor.dev/library/busybox:v1.0@{HARBOR_DEV}")}],
                    "repository": {"date_created": 1677053165, "name": "busybox",
                                   "namespace": "library", "repo_full_name": "library/busybox",
                                   "repo_type": "public"}
                },
                "customDataContentType": "application/json"
            }
        })
    };
    let expected = event(
        Source::Harbor,
        "2d47734c-83e2-41dc-bcbf-23bd2a3734a2",
        Action::Insert,
        "harbor.dev/library/busybox",
        Some(HARBOR_DEV),
        Some("v1.0"),
    );
    // The type's last part is the CDEvents spec version Harbor's SDK
    // speaks, which moves; the event does not.
    for kind in [
        "dev.cdevents.artifact.published.0.1.1",
        "dev.cdevents.artifact.published.0.2.0",
    ] {
        let parsed = run(harbor::parse, &cdevent(kind), None);
        assert!(parsed.ignored.is_empty(), "{kind}: {:?}", parsed.ignored);
        assert_eq!(parsed.deliveries.len(), 1, "{kind}");
        assert_delivery(&parsed.deliveries[0], &expected);
    }
    let mut bare = cdevent("dev.cdevents.artifact.published.0.1.1");
    bare["data"].as_object_mut().unwrap().remove("customData");
    let parsed = run(harbor::parse, &bare, None);
    assert_malformed(
        &parsed.deliveries[0],
        Source::Harbor,
        "2d47734c-83e2-41dc-bcbf-23bd2a3734a2",
        &["data.customData", "missing"],
    );
}
