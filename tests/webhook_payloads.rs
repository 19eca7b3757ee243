//! The Harbor, ECR (EventBridge) and ACR (Event Grid and native) webhook
//! parsers against payloads built from the documented schemas
//! (docs/reference/event-formats.md §5, §6, §7): each format's full example mapped to the exact
//! delivery, the handshakes and quirks, one bad event among good ones, bodies
//! that are not deliveries at all, and properties over arbitrary input.
//!
//! The digests are real sha256 values; the ECR documentation's own sample
//! digest (60 hex digits) is used only where a malformed digest is wanted.

use image_auditor::event::{Action, Event, EventId, Malformed, Source};
use image_auditor::reference::{Digest, RegistryPrefix, Repository, Tag};
use image_auditor::sources::webhook::{Decoded, IgnoreReason, Ignored, Parsed, Rejected};
use image_auditor::sources::webhook::{acr, ecr, harbor};
use proptest::prelude::*;
use serde_json::{Value, json};
use sha2::Digest as _;

const D1: &str = "sha256:6987740fb624e3e9943ec5d9ac5519b72cea1b35fb4bde5719df3923a36c08f7";
const D2: &str = "sha256:d7bdd545f09d8a73c2b990337c8211d708a04ccd9748627685e4fc79cc038039";
/// Shaped like the ECR user guide's sample digest: 60 hex digits, so not a
/// digest.
const DOC_SAMPLE_DIGEST: &str =
    "sha256:d7bdd545f09d8a73c2b990337c8211d708a04ccd9748627685e4fc79cc03";

type Parser = fn(&[u8], Option<&RegistryPrefix>) -> Result<Parsed, Rejected>;

fn run(parse: Parser, body: &Value, registry: Option<&str>) -> Parsed {
    let registry = registry.map(|r| r.parse::<RegistryPrefix>().unwrap());
    let bytes = serde_json::to_vec(body).unwrap();
    match parse(&bytes, registry.as_ref()) {
        Ok(parsed) => parsed,
        Err(e) => panic!("rejected: {e}\n{body:#}"),
    }
}

#[track_caller]
fn rejected(parse: Parser, body: &[u8], phrases: &[&str]) {
    match parse(body, None) {
        Ok(parsed) => panic!("accepted {:?}: {parsed:?}", String::from_utf8_lossy(body)),
        Err(Rejected(message)) => {
            for phrase in phrases {
                assert!(
                    message.contains(phrase),
                    "message {message:?} lacks {phrase:?}"
                );
            }
        }
    }
}

fn event(
    source: Source,
    id: &str,
    action: Action,
    repository: &str,
    digest: Option<&str>,
    tag: Option<&str>,
) -> Event {
    Event {
        id: EventId(id.into()),
        source,
        action,
        repository: repository.parse::<Repository>().unwrap(),
        digest: digest.map(|d| d.parse::<Digest>().unwrap()),
        tag: tag.map(|t| t.parse::<Tag>().unwrap()),
    }
}

/// The whole delivery: its source and id, and the event's.
#[track_caller]
fn assert_delivery(delivery: &Decoded, expected: &Event) {
    assert_eq!(delivery.source, expected.source);
    assert_eq!(delivery.id, expected.id);
    assert_eq!(delivery.decoded.as_ref(), Ok(expected));
}

/// A malformed delivery under `id` whose reason mentions every phrase.
#[track_caller]
fn assert_malformed(delivery: &Decoded, source: Source, id: &str, phrases: &[&str]) {
    assert_eq!(delivery.source, source);
    assert_eq!(delivery.id, EventId(id.into()));
    let Err(Malformed {
        id: mid,
        source: msource,
        reason,
    }) = &delivery.decoded
    else {
        panic!("expected malformed, got {:?}", delivery.decoded);
    };
    assert_eq!(mid, &delivery.id);
    assert_eq!(*msource, source);
    for phrase in phrases {
        assert!(
            reason.contains(phrase),
            "reason {reason:?} lacks {phrase:?}"
        );
    }
}

fn ignored(id: &str, why: IgnoreReason) -> Ignored {
    Ignored { id: id.into(), why }
}

// ================================================================== Harbor

fn harbor_push() -> Value {
    json!({
        "type": "PUSH_ARTIFACT",
        "occur_at": 1772446530,
        "operator": "ci-bot",
        "event_data": {
            "resources": [{
                "digest": D1,
                "tag": "v2.0.0",
                "resource_url": "harbor.internal/payments/worker:v2.0.0"
            }],
            "repository": {
                "date_created": 1770000000,
                "name": "worker",
                "namespace": "payments",
                "repo_full_name": "payments/worker",
                "repo_type": "private"
            }
        }
    })
}

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

fn harbor_cloud_event(kind: &str, resources: Value) -> Value {
    json!({
        "specversion": "1.0",
        "requestid": "2eedfab8-61d3-4f3c-8ec3-8f82d1ec4c84",
        "id": "4b2f89a6-548d-4c12-9993-a1f5790b97d2",
        "source": "/projects/1/webhook/policies/3",
        "type": kind,
        "datacontenttype": "application/json",
        "time": "2026-03-02T10:15:30Z",
        "data": {
            "resources": resources,
            "repository": {
                "date_created": 1677053165,
                "name": "busybox",
                "namespace": "library",
                "repo_full_name": "library/busybox",
                "repo_type": "public"
            }
        },
        "operator": "robot$library+scanner-Trivy"
    })
}

#[test]
fn harbor_default_push_is_one_insert_with_a_derived_id() {
    let parsed = run(harbor::parse, &harbor_push(), None);
    assert_eq!(parsed.deliveries.len(), 1);
    assert!(parsed.ignored.is_empty() && parsed.reply.is_none());
    let id = harbor_id(
        "PUSH_ARTIFACT",
        "1772446530",
        "payments/worker",
        D1,
        "v2.0.0",
    );
    assert_delivery(
        &parsed.deliveries[0],
        &event(
            Source::Harbor,
            &id,
            Action::Insert,
            "harbor.internal/payments/worker",
            Some(D1),
            Some("v2.0.0"),
        ),
    );
}

#[test]
fn harbor_default_delete_is_a_delete() {
    let mut body = harbor_push();
    body["type"] = json!("DELETE_ARTIFACT");
    let parsed = run(harbor::parse, &body, None);
    let id = harbor_id(
        "DELETE_ARTIFACT",
        "1772446530",
        "payments/worker",
        D1,
        "v2.0.0",
    );
    assert_delivery(
        &parsed.deliveries[0],
        &event(
            Source::Harbor,
            &id,
            Action::Delete,
            "harbor.internal/payments/worker",
            Some(D1),
            Some("v2.0.0"),
        ),
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
        let id = harbor_id("PUSH_ARTIFACT", "1772446530", "payments/worker", D1, D1);
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
    let id = harbor_id("PUSH_ARTIFACT", "1772446530", "payments/worker", D1, D2);
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
    let Ok(e) = &parsed.deliveries[0].decoded else {
        panic!("{:?}", parsed.deliveries[0]);
    };
    assert_eq!(
        e.repository.as_str(),
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
        &event(
            Source::Harbor,
            &harbor_id(
                "PUSH_ARTIFACT",
                "1772446530",
                "payments/worker",
                D1,
                "v2.0.0",
            ),
            Action::Insert,
            "harbor.internal/payments/worker",
            Some(D1),
            Some("v2.0.0"),
        ),
    );
    assert_malformed(
        &parsed.deliveries[1],
        Source::Harbor,
        &harbor_id(
            "PUSH_ARTIFACT",
            "1772446530",
            "payments/worker",
            "sha256:ABC",
            "v2.0.1",
        ),
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

// ===================================================================== ECR

fn ecr_push() -> Value {
    json!({
        "version": "0",
        "id": "0e6f9c2a-7b1d-4c3e-8f5a-2d4b6c8e0a1f",
        "detail-type": "ECR Image Action",
        "source": "aws.ecr",
        "account": "111122223333",
        "time": "2026-03-02T10:15:30Z",
        "region": "eu-west-1",
        "resources": [],
        "detail": {
            "result": "SUCCESS",
            "repository-name": "apps/api",
            "action-type": "PUSH",
            "image-digest": D2,
            "image-tag": "v1.4.2",
            "manifest-media-type": "application/vnd.oci.image.manifest.v1+json",
            "artifact-media-type": "application/vnd.oci.image.config.v1+json"
        }
    })
}

const ECR_ID: &str = "0e6f9c2a-7b1d-4c3e-8f5a-2d4b6c8e0a1f";
const ECR_REPO: &str = "111122223333.dkr.ecr.eu-west-1.amazonaws.com/apps/api";

#[test]
fn ecr_push_is_one_insert_under_the_account_registry() {
    let parsed = run(ecr::parse, &ecr_push(), None);
    assert_eq!(parsed.deliveries.len(), 1);
    assert!(parsed.ignored.is_empty() && parsed.reply.is_none());
    assert_delivery(
        &parsed.deliveries[0],
        &event(
            Source::Ecr,
            ECR_ID,
            Action::Insert,
            ECR_REPO,
            Some(D2),
            Some("v1.4.2"),
        ),
    );
}

#[test]
fn ecr_delete_and_untagged_push() {
    let mut body = ecr_push();
    body["detail"]["action-type"] = json!("DELETE");
    let parsed = run(ecr::parse, &body, None);
    assert_delivery(
        &parsed.deliveries[0],
        &event(
            Source::Ecr,
            ECR_ID,
            Action::Delete,
            ECR_REPO,
            Some(D2),
            Some("v1.4.2"),
        ),
    );
    let mut body = ecr_push();
    body["detail"].as_object_mut().unwrap().remove("image-tag");
    let parsed = run(ecr::parse, &body, None);
    assert_delivery(
        &parsed.deliveries[0],
        &event(
            Source::Ecr,
            ECR_ID,
            Action::Insert,
            ECR_REPO,
            Some(D2),
            None,
        ),
    );
}

#[test]
fn ecr_failure_is_ignored_as_failed() {
    let mut body = ecr_push();
    body["detail"]["result"] = json!("FAILURE");
    // A failed push need not name a valid image.
    body["detail"]["image-digest"] = json!("");
    let parsed = run(ecr::parse, &body, None);
    assert!(parsed.deliveries.is_empty());
    assert_eq!(parsed.ignored, [ignored(ECR_ID, IgnoreReason::Failed)]);
}

#[test]
fn ecr_configured_registry_wins_and_china_has_its_own_domain() {
    let parsed = run(ecr::parse, &ecr_push(), Some("ecr.internal.example"));
    let Ok(e) = &parsed.deliveries[0].decoded else {
        panic!("{:?}", parsed.deliveries[0]);
    };
    assert_eq!(e.repository.as_str(), "ecr.internal.example/apps/api");

    let mut body = ecr_push();
    body["region"] = json!("cn-north-1");
    let parsed = run(ecr::parse, &body, None);
    let Ok(e) = &parsed.deliveries[0].decoded else {
        panic!("{:?}", parsed.deliveries[0]);
    };
    assert_eq!(
        e.repository.as_str(),
        "111122223333.dkr.ecr.cn-north-1.amazonaws.com.cn/apps/api"
    );
}

#[test]
fn ecr_other_detail_types_and_sources_are_ignored() {
    for kind in [
        "ECR Image Scan",
        "ECR Pull Through Cache Action",
        "ECR Scan Resource Change",
        "ECR Referrer Action",
    ] {
        let mut body = ecr_push();
        body["detail-type"] = json!(kind);
        body["detail"] = json!({"scan-status": "COMPLETE"});
        let parsed = run(ecr::parse, &body, None);
        assert!(parsed.deliveries.is_empty(), "{kind}");
        assert_eq!(parsed.ignored, [ignored(ECR_ID, IgnoreReason::UnknownType)]);
    }
    let mut body = ecr_push();
    body["source"] = json!("com.example.spoof");
    let parsed = run(ecr::parse, &body, None);
    assert!(parsed.deliveries.is_empty());
    assert_eq!(parsed.ignored, [ignored(ECR_ID, IgnoreReason::UnknownType)]);
}

/// Breaks one field of a valid body.
type Mutator = fn(&mut Value);

#[test]
fn ecr_bad_fields_are_malformed_and_named() {
    let cases: Vec<(Mutator, &[&str])> = vec![
        (
            |b| b["detail"]["image-digest"] = json!(DOC_SAMPLE_DIGEST),
            &["detail.image-digest", "64 hex digits"],
        ),
        (
            |b| b["detail"]["image-tag"] = json!(".x"),
            &["detail.image-tag"],
        ),
        (
            |b| b["detail"]["action-type"] = json!("REPLICATE"),
            &["detail.action-type", "REPLICATE"],
        ),
        (
            |b| b["detail"]["result"] = json!("PARTIAL"),
            &["detail.result", "PARTIAL"],
        ),
        (
            |b| {
                b["detail"].as_object_mut().unwrap().remove("result");
            },
            &["detail.result` is missing"],
        ),
        (
            |b| b["detail"]["repository-name"] = json!("Apps/API"),
            &["detail.repository-name"],
        ),
        (
            |b| b["detail"]["repository-name"] = json!(7),
            &["detail.repository-name", "a number"],
        ),
        (|b| b["account"] = json!("1111/evil.io"), &["`account`"]),
        (
            |b| b["region"] = json!("eu-west-1.evil.io/x"),
            &["`region`"],
        ),
        (
            |b| {
                b["detail"].as_object_mut().unwrap().remove("image-digest");
                b["detail"].as_object_mut().unwrap().remove("image-tag");
            },
            &["neither"],
        ),
        (|b| b["detail"] = json!([]), &["`detail` must be an object"]),
        (
            |b| {
                b.as_object_mut().unwrap().remove("source");
            },
            &["`source` is missing"],
        ),
    ];
    for (mutate, phrases) in cases {
        let mut body = ecr_push();
        mutate(&mut body);
        let parsed = run(ecr::parse, &body, None);
        assert_eq!(parsed.deliveries.len(), 1, "{body}");
        assert_malformed(&parsed.deliveries[0], Source::Ecr, ECR_ID, phrases);
    }
}

#[test]
fn ecr_rejects_what_is_not_one_eventbridge_event() {
    rejected(ecr::parse, b"\xff\xfe", &["not JSON"]);
    let batch = serde_json::to_vec(&json!([ecr_push()])).unwrap();
    rejected(ecr::parse, &batch, &["array", "one EventBridge event"]);
    rejected(
        ecr::parse,
        b"\"ECR Image Action\"",
        &["JSON object", "a string"],
    );
    let mut no_id = ecr_push();
    no_id.as_object_mut().unwrap().remove("id");
    rejected(
        ecr::parse,
        &serde_json::to_vec(&no_id).unwrap(),
        &["`id` is missing"],
    );
    let mut no_type = ecr_push();
    no_type.as_object_mut().unwrap().remove("detail-type");
    rejected(
        ecr::parse,
        &serde_json::to_vec(&no_type).unwrap(),
        &["`detail-type` is missing"],
    );
}

// ===================================================================== ACR

const ACR_ID: &str = "5e0c6b1a-2f3d-4c5e-9a7b-8c9d0e1f2a3b";
const ACR_TOPIC: &str =
    "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/acme";

fn acr_grid_event(id: &str, kind: &str, data: Value) -> Value {
    json!({
        "id": id,
        "topic": ACR_TOPIC,
        "subject": "apps/api:v1.4.2",
        "eventType": kind,
        "eventTime": "2026-03-02T10:15:30.5Z",
        "data": data,
        "dataVersion": "1.0",
        "metadataVersion": "1"
    })
}

fn acr_push_data(digest: &str) -> Value {
    json!({
        "id": "9a1b2c3d-0000-4000-8000-000000000001",
        "timestamp": "2026-03-02T10:15:30.2Z",
        "action": "push",
        "target": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "size": 1203,
            "digest": digest,
            "length": 1203,
            "repository": "apps/api",
            "tag": "v1.4.2"
        },
        "request": {
            "id": "c3d4e5f6-0000-4000-8000-000000000002",
            "host": "acme.azurecr.io",
            "method": "PUT",
            "useragent": "containerd/1.7"
        },
        "actor": {"name": "ci"},
        "source": {"addr": "10.0.0.4", "instanceID": "x"}
    })
}

fn acr_delete_data(digest: &str) -> Value {
    json!({
        "id": "9a1b2c3d-0000-4000-8000-000000000003",
        "timestamp": "2026-03-02T10:16:00.0Z",
        "action": "delete",
        "target": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "repository": "apps/api"
        },
        "request": {"id": "r", "host": "acme.azurecr.io", "method": "DELETE", "useragent": "az"}
    })
}

#[test]
fn acr_event_grid_push_is_one_insert() {
    let body = json!([acr_grid_event(
        ACR_ID,
        "Microsoft.ContainerRegistry.ImagePushed",
        acr_push_data(D2)
    )]);
    let parsed = run(acr::parse, &body, None);
    assert_eq!(parsed.deliveries.len(), 1);
    assert!(parsed.ignored.is_empty() && parsed.reply.is_none());
    assert_delivery(
        &parsed.deliveries[0],
        &event(
            Source::Acr,
            ACR_ID,
            Action::Insert,
            "acme.azurecr.io/apps/api",
            Some(D2),
            Some("v1.4.2"),
        ),
    );
}

#[test]
fn acr_validation_handshake_replies_and_delivers_nothing() {
    let body = json!([{
        "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
        "topic": ACR_TOPIC,
        "subject": "",
        "data": {
            "validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
            "validationUrl": "https://rp-eastus2.eventgrid.azure.net/eventsubscriptions/x/validate?id=512d38b6&t=2026-03-02T10:15:30Z"
        },
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "eventTime": "2026-03-02T10:15:30Z",
        "metadataVersion": "1",
        "dataVersion": "1"
    }]);
    let parsed = run(acr::parse, &body, None);
    assert!(parsed.deliveries.is_empty());
    assert!(parsed.ignored.is_empty());
    assert_eq!(
        parsed.reply,
        Some(json!({"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}))
    );

    let mut no_code = body.clone();
    no_code[0]["data"] = json!({"validationUrl": "https://x"});
    rejected(
        acr::parse,
        &serde_json::to_vec(&no_code).unwrap(),
        &[
            "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
            "data.validationCode",
        ],
    );
}

#[test]
fn acr_event_grid_batch_maps_every_event_and_isolates_the_bad_one() {
    let body = json!([
        acr_grid_event(
            "e1",
            "Microsoft.ContainerRegistry.ImagePushed",
            acr_push_data(D1)
        ),
        acr_grid_event(
            "e2",
            "Microsoft.ContainerRegistry.ImageDeleted",
            acr_delete_data(D2)
        ),
        acr_grid_event("e3", "Microsoft.ContainerRegistry.ChartPushed", json!({})),
        acr_grid_event("e4", "Microsoft.ContainerRegistry.ChartDeleted", json!({})),
        acr_grid_event(
            "e5",
            "Microsoft.ContainerRegistry.ImagePushed",
            acr_push_data(DOC_SAMPLE_DIGEST)
        ),
        acr_grid_event("e6", "Microsoft.ContainerRegistry.SomethingNew", json!({})),
        acr_grid_event("e7", "ImagePushed", acr_push_data(D2)),
    ]);
    let parsed = run(acr::parse, &body, None);
    assert_eq!(parsed.deliveries.len(), 4);
    assert_delivery(
        &parsed.deliveries[0],
        &event(
            Source::Acr,
            "e1",
            Action::Insert,
            "acme.azurecr.io/apps/api",
            Some(D1),
            Some("v1.4.2"),
        ),
    );
    assert_delivery(
        &parsed.deliveries[1],
        &event(
            Source::Acr,
            "e2",
            Action::Delete,
            "acme.azurecr.io/apps/api",
            Some(D2),
            None,
        ),
    );
    assert_malformed(
        &parsed.deliveries[2],
        Source::Acr,
        "e5",
        &["data.target.digest", "64 hex digits"],
    );
    // Older documentation's short event type.
    assert_delivery(
        &parsed.deliveries[3],
        &event(
            Source::Acr,
            "e7",
            Action::Insert,
            "acme.azurecr.io/apps/api",
            Some(D2),
            Some("v1.4.2"),
        ),
    );
    assert_eq!(
        parsed.ignored,
        [
            ignored("e3", IgnoreReason::NotAnImage),
            ignored("e4", IgnoreReason::NotAnImage),
            ignored("e6", IgnoreReason::UnknownType),
        ]
    );
    assert!(parsed.reply.is_none());
}

#[test]
fn acr_cloud_events_schema_single_and_batched() {
    let cloud = json!({
        "specversion": "1.0",
        "id": ACR_ID,
        "source": ACR_TOPIC,
        "subject": "apps/api",
        "type": "Microsoft.ContainerRegistry.ImageDeleted",
        "time": "2026-03-02T10:16:00Z",
        "data": acr_delete_data(D2)
    });
    let expected = event(
        Source::Acr,
        ACR_ID,
        Action::Delete,
        "acme.azurecr.io/apps/api",
        Some(D2),
        None,
    );
    for body in [cloud.clone(), json!([cloud])] {
        let parsed = run(acr::parse, &body, None);
        assert_eq!(parsed.deliveries.len(), 1);
        assert_delivery(&parsed.deliveries[0], &expected);
    }
}

#[test]
fn acr_native_webhook_push_delete_and_others() {
    let mut push = acr_push_data(D1);
    push["id"] = json!("cb8c3971-9adc-488b-bdd8-43cbb4974ff5");
    push["request"]["host"] = json!("myregistry.azurecr.io");
    push["target"]["repository"] = json!("hello-world");
    push["target"]["tag"] = json!("v1");
    let parsed = run(acr::parse, &push, None);
    assert_delivery(
        &parsed.deliveries[0],
        &event(
            Source::Acr,
            "cb8c3971-9adc-488b-bdd8-43cbb4974ff5",
            Action::Insert,
            "myregistry.azurecr.io/hello-world",
            Some(D1),
            Some("v1"),
        ),
    );

    let mut delete = acr_delete_data(D1);
    delete["id"] = json!("afc359ce-df7f-4e32-bdde-1ff8aa80927b");
    let parsed = run(acr::parse, &delete, Some("prod.example.com/acr"));
    assert_delivery(
        &parsed.deliveries[0],
        &event(
            Source::Acr,
            "afc359ce-df7f-4e32-bdde-1ff8aa80927b",
            Action::Delete,
            "prod.example.com/acr/apps/api",
            Some(D1),
            None,
        ),
    );

    for (action, why) in [
        ("chart_push", IgnoreReason::NotAnImage),
        ("chart_delete", IgnoreReason::NotAnImage),
        ("ping", IgnoreReason::UnknownType),
        ("quarantine", IgnoreReason::UnknownType),
    ] {
        let body = json!({"id": "n1", "timestamp": "2026-03-02T10:15:30Z", "action": action});
        let parsed = run(acr::parse, &body, None);
        assert!(parsed.deliveries.is_empty(), "{action}");
        assert_eq!(parsed.ignored, [ignored("n1", why)], "{action}");
    }

    let mut bad_host = acr_push_data(D1);
    bad_host["request"]["host"] = json!("acme.azurecr.io/elsewhere");
    let parsed = run(acr::parse, &bad_host, None);
    assert_malformed(
        &parsed.deliveries[0],
        Source::Acr,
        "9a1b2c3d-0000-4000-8000-000000000001",
        &["request.host", "not a host name"],
    );
    let mut no_image = acr_delete_data(D1);
    no_image["target"] = json!({"repository": "apps/api"});
    let parsed = run(acr::parse, &no_image, None);
    assert_malformed(
        &parsed.deliveries[0],
        Source::Acr,
        "9a1b2c3d-0000-4000-8000-000000000003",
        &["target.digest", "target.tag", "names no image"],
    );
}

#[test]
fn acr_rejects_what_is_not_an_acr_delivery() {
    rejected(acr::parse, b"{", &["not JSON"]);
    rejected(acr::parse, b"42", &["array or object", "a number"]);
    rejected(
        acr::parse,
        br#"{"hello":"world"}"#,
        &["not an ACR delivery"],
    );
    rejected(
        acr::parse,
        br#"[{"id":"a","eventType":"ImagePushed"}, 3]"#,
        &["events[1]", "object"],
    );
    rejected(
        acr::parse,
        br#"[{"eventType":"Microsoft.ContainerRegistry.ImagePushed","data":{}}]"#,
        &["events[0]", "`id` is missing"],
    );
    rejected(
        acr::parse,
        br#"{"action":"push","id":""}"#,
        &["`id` is empty"],
    );
    assert!(acr::parse(b"[]", None).unwrap().deliveries.is_empty());
}

// ============================================================== properties

const PARSERS: [(Source, Parser); 3] = [
    (Source::Harbor, harbor::parse),
    (Source::Ecr, ecr::parse),
    (Source::Acr, acr::parse),
];

/// Whatever came back is internally consistent: every delivery and its
/// event or malformed reason carry the same id and the parser's source.
fn check_consistent(source: Source, parsed: &Parsed) {
    for d in &parsed.deliveries {
        assert_eq!(d.source, source);
        match &d.decoded {
            Ok(e) => {
                assert_eq!(e.id, d.id);
                assert_eq!(e.source, source);
                assert!(e.digest.is_some() || e.tag.is_some());
            }
            Err(m) => {
                assert_eq!(m.id, d.id);
                assert_eq!(m.source, source);
            }
        }
    }
}

fn valid_bodies() -> Vec<Value> {
    vec![
        harbor_push(),
        harbor_cloud_event(
            "harbor.artifact.pushed",
            json!([{"digest": D1, "tag": D1, "resource_url": format!("h.io/library/busybox@{D1}")}]),
        ),
        ecr_push(),
        json!([acr_grid_event(
            ACR_ID,
            "Microsoft.ContainerRegistry.ImagePushed",
            acr_push_data(D2)
        )]),
        acr_delete_data(D1),
    ]
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,80}".prop_map(Value::String),
        Just(json!(D1)),
        Just(json!(format!("{D1}x"))),
        Just(json!("sha256:")),
        Just(json!("SUCCESS")),
        Just(json!("Microsoft.EventGrid.SubscriptionValidationEvent")),
        Just(json!([])),
        Just(json!({})),
        Just(json!([null, 1, "x"])),
    ]
}

/// Every path to a value inside `v`, as object keys and array indices.
fn paths(v: &Value, prefix: &mut Vec<PathStep>, out: &mut Vec<Vec<PathStep>>) {
    out.push(prefix.clone());
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                prefix.push(PathStep::Key(k.clone()));
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                prefix.push(PathStep::Index(i));
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

#[derive(Clone, Debug)]
enum PathStep {
    Key(String),
    Index(usize),
}

fn at_mut<'a>(v: &'a mut Value, path: &[PathStep]) -> &'a mut Value {
    path.iter().fold(v, |v, step| match step {
        PathStep::Key(k) => &mut v[k.as_str()],
        PathStep::Index(i) => &mut v[*i],
    })
}

#[derive(Clone, Debug)]
enum Mutation {
    Replace(Value),
    Remove,
    Duplicate,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => json_leaf().prop_map(Mutation::Replace),
        1 => Just(Mutation::Remove),
        1 => Just(Mutation::Duplicate),
    ]
}

fn mutate(mut body: Value, picks: &[(prop::sample::Index, Mutation)]) -> Value {
    for (pick, m) in picks {
        let mut all = Vec::new();
        paths(&body, &mut Vec::new(), &mut all);
        let path = pick.get(&all).clone();
        match m {
            Mutation::Replace(v) => *at_mut(&mut body, &path) = v.clone(),
            Mutation::Remove => {
                if let Some((last, parent)) = path.split_last() {
                    match (at_mut(&mut body, parent), last) {
                        (Value::Object(map), PathStep::Key(k)) => {
                            map.remove(k);
                        }
                        (Value::Array(items), PathStep::Index(i)) => {
                            items.remove(*i);
                        }
                        _ => {}
                    }
                }
            }
            Mutation::Duplicate => {
                let target = at_mut(&mut body, &path);
                let copy = target.clone();
                if let Value::Array(items) = target {
                    items.push(copy);
                }
            }
        }
    }
    body
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        for (source, parse) in PARSERS {
            if let Ok(parsed) = parse(&body, None) {
                check_consistent(source, &parsed);
            }
        }
    }

    #[test]
    fn mutated_payloads_never_panic(
        which in 0usize..5,
        picks in proptest::collection::vec((any::<prop::sample::Index>(), mutation()), 1..6),
        registry in proptest::option::of(Just("registry.example.com/mirror")),
    ) {
        let body = mutate(valid_bodies().swap_remove(which), &picks);
        let bytes = serde_json::to_vec(&body).unwrap();
        let registry = registry.map(|r| r.parse::<RegistryPrefix>().unwrap());
        for (source, parse) in PARSERS {
            if let Ok(parsed) = parse(&bytes, registry.as_ref()) {
                check_consistent(source, &parsed);
            }
        }
    }

    #[test]
    fn truncated_payloads_never_panic(which in 0usize..5, cut in any::<prop::sample::Index>()) {
        let bytes = serde_json::to_vec(&valid_bodies()[which]).unwrap();
        let prefix = &bytes[..cut.index(bytes.len() + 1)];
        for (source, parse) in PARSERS {
            if let Ok(parsed) = parse(prefix, None) {
                check_consistent(source, &parsed);
            }
        }
    }
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
