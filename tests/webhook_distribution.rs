//! CNCF distribution notifications end to end: a real `docker-registry`
//! whose `notifications:` point at a running `serve`, fed by skopeo and
//! plain registry API calls, and the exact findings that result. Then the
//! auditor is stopped while pushes go on and started again: the registry's
//! retries deliver what it missed, and nothing is lost or doubled.

use crate::support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use image_auditor::audit::VerdictKind;
use image_auditor::findings::{FindingQuery, SqliteStore, Store};
use image_auditor::reference::Digest;
use support::fixtures::one_project;
use support::oci::{Desc, Layout, OCI_MANIFEST};
use support::registry::{Push, Registry, delete_manifest, free_port, put_manifest, skopeo_push};
use support::service::Service;

const TOKEN: &str = "distribution-test-token-0123456789";

fn manifests(dir: &Path, host: &str, promoted: &str) -> PathBuf {
    let registries =
        format!("registries:\n- name: {host}/staging\n  src: true\n- name: {host}/prod\n");
    one_project(dir, "demo", &registries, promoted)
}

/// (verdict, digest, tag) of every finding, sorted.
type FindingKey = (&'static str, Option<String>, Option<String>);

fn findings(store: &SqliteStore) -> BTreeSet<FindingKey> {
    let all = store
        .findings(&FindingQuery {
            limit: Some(1000),
            ..FindingQuery::default()
        })
        .unwrap();
    let keys: BTreeSet<FindingKey> = all
        .iter()
        .map(|f| {
            (
                f.verdict.as_str(),
                f.digest.as_ref().map(Digest::to_string),
                f.tag.as_ref().map(|t| t.as_str().to_owned()),
            )
        })
        .collect();
    assert_eq!(keys.len(), all.len(), "a fact was recorded twice: {all:?}");
    keys
}

fn finding(verdict: VerdictKind, digest: Option<&Digest>, tag: Option<&str>) -> FindingKey {
    (
        verdict.as_str(),
        digest.map(Digest::to_string),
        tag.map(str::to_owned),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_notifications_give_exact_findings_and_survive_an_auditor_outage() {
    let service_port = free_port();
    let registry = Registry::notifying(service_port, TOKEN);
    let host = registry.host.clone();
    let dir = tempfile::tempdir().unwrap();
    let mut layout = Layout::create(&dir.path().join("layout"));

    let single = layout.image("amd64");
    let single_v2 = layout.image("amd64");
    let [multi, _, _] = layout.two_platform_index();
    let stray = layout.image("amd64");
    let late = layout.image("arm64");
    for (desc, tag) in [
        (&single, "1.0"),
        (&single_v2, "2.0"),
        (&multi, "m1.0"),
        (&stray, "3.0"),
        (&late, "4.0"),
    ] {
        layout.tag(desc, tag);
    }
    let root = manifests(
        dir.path(),
        &host,
        &format!(
            "- name: single\n  dmap:\n    \"{}\": [\"1.0\"]\n    \"{}\": [\"2.0\"]\n\
             - name: multi\n  dmap:\n    \"{}\": [\"m1.0\"]\n",
            single.digest, single_v2.digest, multi.digest
        ),
    );
    let config = format!(
        "resolve: true\nregistry:\n  insecure_http_hosts: [\"{host}\"]\n\
         webhooks:\n  distribution:\n  - name: local\n    registry: \"{host}\"\n    token: {TOKEN}\n"
    );
    let mut service = Service::start_on(service_port, dir.path(), &root, &config).await;

    let push = |tag: &str, repo: &str| skopeo_push(&layout.dir, tag, &host, repo, Push::default());
    // Staging holds what the promoter copies from: out of scope.
    push("1.0", "staging/single");
    push("2.0", "staging/single");
    push("m1.0", "staging/multi");
    // Production: promoted content (the index's children arrive before
    // the index itself), an unpromoted image, a promoted digest under an
    // unlisted tag, a tag moved to another promoted digest, a delete.
    push("1.0", "prod/single");
    push("2.0", "prod/single");
    push("m1.0", "prod/multi");
    push("3.0", "prod/single");
    let bytes = |desc: &Desc| layout.read(desc);
    put_manifest(&host, "prod/single", "extra", OCI_MANIFEST, bytes(&single)).await;
    put_manifest(&host, "prod/single", "1.0", OCI_MANIFEST, bytes(&single_v2)).await;
    delete_manifest(&host, "prod/single", &stray.digest).await;

    // 5 manifests in staging; in production single, single_v2, 2 children,
    // the index, stray, the two retags, the delete of stray's digest and
    // of its tag 3.0.
    let store = service
        .wait_for_decisions(5 + 10, Duration::from_secs(60))
        .await;
    let expected: BTreeSet<FindingKey> = [
        finding(VerdictKind::Unpromoted, Some(&stray.digest), Some("3.0")),
        finding(
            VerdictKind::UnlistedTag,
            Some(&single.digest),
            Some("extra"),
        ),
        finding(VerdictKind::TagMoved, Some(&single_v2.digest), Some("1.0")),
        finding(VerdictKind::Deleted, Some(&stray.digest), None),
        finding(VerdictKind::Deleted, None, Some("3.0")),
    ]
    .into();
    assert_eq!(findings(&store), expected, "{}", service.log());
    assert_eq!(decided(&store, VerdictKind::OutOfScope), 5);
    assert_eq!(decided(&store, VerdictKind::Promoted), 3);
    assert_eq!(decided(&store, VerdictKind::PromotedChild), 2);
    assert_eq!(store.counts().unwrap().decisions_total(), 15);
    drop(store);

    // The auditor goes away while the registry keeps changing: its
    // notifications queue in the registry and are retried.
    service.kill();
    push("4.0", "prod/single");
    push("1.0", "prod/single");
    service.restart().await;
    let store = service
        .wait_for_decisions(15 + 2, Duration::from_secs(60))
        .await;
    let mut expected = expected;
    expected.insert(finding(
        VerdictKind::Unpromoted,
        Some(&late.digest),
        Some("4.0"),
    ));
    // The re-push of 1.0 restores the promised digest: promoted, no finding.
    assert_eq!(findings(&store), expected, "{}", service.log());
    assert_eq!(store.counts().unwrap().decisions_total(), 17);
    assert_eq!(decided(&store, VerdictKind::Promoted), 4);
}

fn decided(store: &SqliteStore, verdict: VerdictKind) -> u64 {
    store
        .counts()
        .unwrap()
        .decisions
        .iter()
        .find(|(k, _)| *k == verdict)
        .map_or(0, |(_, n)| *n)
}

const D: &str = "sha256:d7bdd545f09d8a73c2b990337c8211d708a04ccd9748627685e4fc79cc038039";
const EVENTS_V1: &str = "application/vnd.docker.distribution.events.v1+json";

async fn post(
    service: &Service,
    authorization: Option<&str>,
    content_type: &str,
    body: String,
) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new()
        .post(service.url("/webhooks/distribution"))
        .header("content-type", content_type)
        .body(body);
    if let Some(a) = authorization {
        request = request.header("authorization", a);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

fn push_event(id: &str, repository: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "action": "push", "target": {
        "mediaType": OCI_MANIFEST, "digest": D, "repository": repository, "tag": "v1"}})
}

#[tokio::test]
async fn bad_requests_are_refused_clearly_and_record_nothing_while_resends_are_deduped() {
    let dir = tempfile::tempdir().unwrap();
    let root = manifests(
        dir.path(),
        "registry.example",
        &format!("- name: app\n  dmap:\n    \"{D}\": [\"v1\"]\n"),
    );
    let config = format!(
        "resolve: false\nwebhooks:\n  distribution:\n  - name: local\n    \
         registry: registry.example\n    token: {TOKEN}\n"
    );
    let service = Service::start(dir.path(), &root, &config).await;
    let bearer = format!("Bearer {TOKEN}");
    let good = serde_json::json!({"events": [push_event("e1", "prod/app")]}).to_string();

    for (auth, content_type, body, status, says) in [
        (None, EVENTS_V1, good.clone(), 401, "missing Authorization"),
        (
            Some("Bearer wrong-token-0123456789"),
            EVENTS_V1,
            good.clone(),
            401,
            "token",
        ),
        (Some(TOKEN), "text/plain", good.clone(), 415, "text/plain"),
        (
            Some(bearer.as_str()),
            EVENTS_V1,
            "{not json".into(),
            400,
            "not JSON",
        ),
        (
            Some(bearer.as_str()),
            EVENTS_V1,
            r#"{"events": 3}"#.into(),
            400,
            "events",
        ),
    ] {
        let (got, body) = post(&service, auth, content_type, body).await;
        assert_eq!(got, status, "{auth:?} {content_type}: {body}");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(
            message.contains(says),
            "{message:?} should mention {says:?}"
        );
    }
    let store = SqliteStore::open(service.findings_db()).unwrap();
    assert_eq!(store.counts().unwrap().decisions_total(), 0);

    // Harbor's auth_header style (the bare token) is accepted too; unknown
    // event types and blobs are counted, not refused (a 4xx would make the
    // registry retry forever).
    let mixed = serde_json::json!({"events": [
        push_event("e1", "prod/app"),
        {"id": "b1", "action": "push", "target": {"mediaType": "application/octet-stream",
            "digest": D, "repository": "prod/app"}},
        {"id": "x1", "action": "teleport", "target": {}},
        {"id": "bad", "action": "push", "target": {"mediaType": OCI_MANIFEST,
            "digest": "sha256:0", "repository": "prod/app"}},
    ]})
    .to_string();
    let (status, body) = post(&service, Some(TOKEN), EVENTS_V1, mixed.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ignored"], 2);
    let verdicts: Vec<_> = body["decided"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["verdict"].as_str().unwrap(),
                d["duplicate"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(verdicts, [("promoted", false), ("malformed", false)]);

    // The registry resends an event with the same id after a failure.
    let (status, body) = post(&service, Some(&bearer), EVENTS_V1, mixed).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decided"][0]["duplicate"], true);
    assert_eq!(store.counts().unwrap().decisions_total(), 2);
    assert_eq!(store.counts().unwrap().findings, 1, "the malformed event");

    let metrics = service.metrics().await;
    for line in [
        r#"image_auditor_webhook_requests_total{source="distribution",outcome="unauthorized"} 2"#,
        r#"image_auditor_webhook_requests_total{source="distribution",outcome="unsupported_media_type"} 1"#,
        r#"image_auditor_webhook_requests_total{source="distribution",outcome="rejected"} 2"#,
        r#"image_auditor_webhook_requests_total{source="distribution",outcome="accepted"} 2"#,
        r#"image_auditor_webhook_ignored_events_total{source="distribution",reason="blob"} 2"#,
        r#"image_auditor_webhook_ignored_events_total{source="distribution",reason="unknown_type"} 2"#,
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    // A format without configured endpoints does not exist.
    let response = reqwest::Client::new()
        .post(service.url("/webhooks/harbor"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
}

#[test]
fn a_webhook_configuration_that_would_accept_forged_events_stops_startup() {
    let dir = tempfile::tempdir().unwrap();
    for (endpoint, says) in [
        (
            "  - name: a\n    registry: r.example\n",
            "set token or token_env",
        ),
        (
            "  - name: a\n    token: 0123456789abcdef0123\n",
            "registry is required",
        ),
        (
            "  - name: a\n    registry: r.example\n    token: short\n",
            "at least 16",
        ),
        (
            "  - name: a\n    registry: r.example\n    token_env: IMAGE_AUDITOR_TEST_UNSET\n",
            "IMAGE_AUDITOR_TEST_UNSET is not set",
        ),
    ] {
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, format!("webhooks:\n  distribution:\n{endpoint}")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_image-auditor"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("IMAGE_AUDITOR_DATA_DIR", dir.path().join("data"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("webhooks.distribution[0] (a)"), "{stderr}");
        assert!(stderr.contains(says), "{stderr} should say {says:?}");
    }
}
