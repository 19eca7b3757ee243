//! The Amazon ECR (EventBridge) webhook parser against payloads built from
//! the documented schema (docs/reference/event-formats.md §6): the example
//! mapped to the exact delivery, failures and other event types ignored, each
//! bad field named, and bodies that are not one EventBridge event.

use crate::support::payloads;

use image_auditor::event::{Action, Event, Source};
use image_auditor::sources::webhook::{IgnoreReason, ecr};
use payloads::*;
use serde_json::{Value, json};

const ECR_ID: &str = "0e6f9c2a-7b1d-4c3e-8f5a-2d4b6c8e0a1f";
const ECR_REPO: &str = "111122223333.dkr.ecr.eu-west-1.amazonaws.com/apps/api";

/// The event of `ecr_push()`'s image (`D2` in `ECR_REPO`) as an `action`
/// under `tag`.
fn api_event(action: Action, tag: Option<&str>) -> Event {
    event(Source::Ecr, ECR_ID, action, ECR_REPO, Some(D2), tag)
}

#[test]
fn ecr_push_is_one_insert_under_the_account_registry() {
    let parsed = run(ecr::parse, &ecr_push(), None);
    assert_eq!(parsed.deliveries.len(), 1);
    assert!(parsed.ignored.is_empty() && parsed.reply.is_none());
    assert_delivery(
        &parsed.deliveries[0],
        &api_event(Action::Insert, Some("v1.4.2")),
    );
}

#[test]
fn ecr_delete_and_untagged_push() {
    let mut body = ecr_push();
    body["detail"]["action-type"] = json!("DELETE");
    let parsed = run(ecr::parse, &body, None);
    assert_delivery(
        &parsed.deliveries[0],
        &api_event(Action::Delete, Some("v1.4.2")),
    );
    let mut body = ecr_push();
    body["detail"].as_object_mut().unwrap().remove("image-tag");
    let parsed = run(ecr::parse, &body, None);
    assert_delivery(&parsed.deliveries[0], &api_event(Action::Insert, None));
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
    assert_eq!(first_repository(&parsed), "ecr.internal.example/apps/api");

    let mut body = ecr_push();
    body["region"] = json!("cn-north-1");
    let parsed = run(ecr::parse, &body, None);
    assert_eq!(
        first_repository(&parsed),
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
