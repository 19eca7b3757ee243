//! The pure part of alerting: which findings are one fact, over the real
//! k8s.io corpus (whose regional registries name images under different
//! paths), routing and severity.

use image_auditor::alert::{Alert, AlertStatus, FactKey, Route, Severity, group};
use image_auditor::audit::VerdictKind;
use image_auditor::event::{Action, EndpointName, EventId, Source};
use image_auditor::findings::{Finding, FindingId};
use image_auditor::index::Index;
use image_auditor::manifest;

const D: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const E: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

fn k8s() -> Index {
    let set = manifest::load(std::path::Path::new(
        image_auditor::config::DEFAULT_MANIFESTS,
    ))
    .unwrap();
    Index::build(&set, 1)
}

fn finding(id: i64, verdict: VerdictKind, repository: Option<&str>, digest: &str) -> Finding {
    Finding {
        id: FindingId(id),
        created_at_ms: 1_000 + id,
        received_at_ms: 1_000 + id,
        source: Source::PubsubPull,
        endpoint: EndpointName::only(),
        event_id: EventId(format!("m{id}")),
        action: Some(Action::Insert),
        repository: repository.map(|r| r.parse().unwrap()),
        digest: Some(digest.parse().unwrap()),
        tag: None,
        verdict,
        reason: "not promoted".into(),
        evidence: serde_json::json!([]),
        manifest_commit: None,
        index_generation: 1,
        excepted_by: None,
        deliveries: Vec::new(),
    }
}

#[test]
fn one_digest_in_every_region_is_one_fact_named_by_its_image() {
    let index = k8s();
    let regions = [
        "us-central1-docker.pkg.dev/k8s-artifacts-prod/images/etcd",
        "europe-west1-docker.pkg.dev/k8s-artifacts-prod/images/etcd",
        "asia-northeast1-docker.pkg.dev/k8s-artifacts-prod/images/etcd",
    ];
    let findings: Vec<Finding> = regions
        .iter()
        .enumerate()
        .map(|(i, r)| finding(i as i64, VerdictKind::Unpromoted, Some(r), D))
        .collect();
    let groups = group(&findings, &index);
    assert_eq!(groups.len(), 1);
    let (key, members) = &groups[0];
    assert_eq!(key.image, "etcd");
    assert_eq!(members.len(), 3);
    let alert = Alert::of(key, members, AlertStatus::New);
    assert_eq!(alert.repositories.len(), 3);
    assert_eq!(alert.evidence, "not in any manifest");
    assert_eq!(alert.severity, Severity::Critical);
    assert_eq!(alert.first_seen_ms, 1_000);
    assert_eq!(alert.last_seen_ms, 1_002);
}

#[test]
fn other_content_other_verdicts_and_other_images_are_other_facts() {
    let index = k8s();
    let etcd = "us-central1-docker.pkg.dev/k8s-artifacts-prod/images/etcd";
    let findings = vec![
        finding(1, VerdictKind::Unpromoted, Some(etcd), D),
        finding(2, VerdictKind::Unpromoted, Some(etcd), E),
        finding(3, VerdictKind::Deleted, Some(etcd), D),
        finding(
            4,
            VerdictKind::Unpromoted,
            Some("us-central1-docker.pkg.dev/k8s-artifacts-prod/images/pause"),
            D,
        ),
        // No repository (malformed): never merged with anything.
        finding(5, VerdictKind::Malformed, None, D),
        finding(6, VerdictKind::Malformed, None, D),
    ];
    let groups = group(&findings, &index);
    assert_eq!(groups.len(), 6);
    let ids: std::collections::HashSet<String> = groups.iter().map(|(k, _)| k.alert_id()).collect();
    assert_eq!(ids.len(), 6, "alert ids differ between facts");
}

#[test]
fn the_alert_id_is_stable_and_16_hex() {
    let key = FactKey {
        verdict: VerdictKind::TagMoved,
        digest: Some(D.into()),
        tag: Some("v1".into()),
        image: "etcd".into(),
    };
    let id = key.alert_id();
    assert_eq!(id, key.clone().alert_id());
    assert_eq!(id.len(), 16);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    let other = FactKey {
        tag: Some("v2".into()),
        ..key
    };
    assert_ne!(other.alert_id(), id);
}

#[test]
fn routes_select_verdicts_and_severities() {
    let all = Route::default();
    let critical = Route {
        verdicts: Vec::new(),
        min_severity: Some(Severity::Critical),
    };
    let moved_only = Route {
        verdicts: vec![VerdictKind::TagMoved],
        min_severity: None,
    };
    for (verdict, severity) in [
        (VerdictKind::Unpromoted, Severity::Critical),
        (VerdictKind::UnpromotedAttachment, Severity::Critical),
        (VerdictKind::TagMoved, Severity::Critical),
        (VerdictKind::Deleted, Severity::Critical),
        (VerdictKind::WrongRepository, Severity::Warning),
        (VerdictKind::UnlistedTag, Severity::Warning),
        (VerdictKind::Unverifiable, Severity::Warning),
        (VerdictKind::Malformed, Severity::Warning),
    ] {
        assert_eq!(Severity::of(verdict), severity, "{verdict:?}");
        assert!(all.matches(verdict));
        assert_eq!(critical.matches(verdict), severity == Severity::Critical);
        assert_eq!(
            moved_only.matches(verdict),
            verdict == VerdictKind::TagMoved
        );
    }
}
