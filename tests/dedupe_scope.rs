//! An event id is unique only within the endpoint that sent it, so the
//! dedupe key is (source, endpoint, id) for every source. On a running
//! `serve`: the same body through two endpoints of each webhook kind, and
//! one message through two Pub/Sub push subscriptions (the real emulator),
//! are two decisions; a real unpromoted push at prod is never answered as a
//! duplicate of what dev's endpoint sent first; pull records under its
//! subscription's name.

use crate::support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use google_cloud_pubsub::model::PushConfig;
use image_auditor::audit::VerdictKind;
use image_auditor::event::Source;
use image_auditor::findings::{FindingQuery, SqliteStore, Store};
use image_auditor::pubsub::subscription_name;
use serde_json::{Value, json};
use support::fixtures::app_promoted_to_prod;
use support::pubsub::{Fixture, PROJECT};
use support::service::Service;

const PROMOTED: &str = "sha256:6987740fb624e3e9943ec5d9ac5519b72cea1b35fb4bde5719df3923a36c08f7";
/// Pushed to prod by nobody's promotion.
const ROGUE: &str = "sha256:d7bdd545f09d8a73c2b990337c8211d708a04ccd9748627685e4fc79cc038039";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn manifests(dir: &Path) -> PathBuf {
    app_promoted_to_prod(dir, PROMOTED)
}

/// Per kind: a `dev` endpoint reporting for a registry no manifest promotes
/// to, and a `prod` one; each its own token.
fn webhooks_section() -> String {
    let mut section = String::from("webhooks:\n");
    for kind in ["distribution", "harbor", "ecr", "acr"] {
        section.push_str(&format!(
            "  {kind}:\n  - name: dev\n    registry: dev.example\n    token: {}\n  \
             - name: prod\n    registry: prod.example\n    token: {}\n",
            token(kind, "dev"),
            token(kind, "prod")
        ));
    }
    section
}

fn token(kind: &str, endpoint: &str) -> String {
    format!("{kind}-{endpoint}-0123456789abcdef")
}

/// One push of `apps/app:v2` at `ROGUE`, as each kind sends it, with the
/// content type it is sent with. Every field a registry would set is here;
/// the host comes from the endpoint's configured registry.
fn rogue_push(kind: &str) -> (&'static str, Value) {
    match kind {
        "distribution" => (
            "application/vnd.docker.distribution.events.v1+json",
            json!({"events": [{"id": "3f1c2a9e-5b7d-4e21-9a0c-1d2e3f4a5b6c",
                "timestamp": "2026-03-02T10:15:30.123456789Z", "action": "push",
                "target": {"mediaType": OCI_MANIFEST, "size": 1203, "digest": ROGUE,
                           "length": 1203, "repository": "apps/app", "tag": "v2"},
                "request": {"id": "6b0e", "addr": "10.0.0.7:53122", "host": "registry.internal",
                            "method": "PUT", "useragent": "containerd/1.7"}}]}),
        ),
        // The Default format has no id: two Harbor instances derive the same
        // one for the same push in the same second.
        "harbor" => (
            "application/json",
            json!({"type": "PUSH_ARTIFACT", "occur_at": 1772446530, "operator": "ci-bot",
                "event_data": {
                    "resources": [{"digest": ROGUE, "tag": "v2",
                                   "resource_url": "harbor.internal/apps/app:v2"}],
                    "repository": {"name": "app", "namespace": "apps",
                                   "repo_full_name": "apps/app", "repo_type": "private"}}}),
        ),
        "ecr" => (
            "application/json",
            json!({"version": "0", "id": "0e6f9c2a-7b1d-4c3e-8f5a-2d4b6c8e0a1f",
                "detail-type": "ECR Image Action", "source": "aws.ecr",
                "account": "111122223333", "time": "2026-03-02T10:15:30Z",
                "region": "eu-west-1", "resources": [],
                "detail": {"result": "SUCCESS", "repository-name": "apps/app",
                           "action-type": "PUSH", "image-digest": ROGUE, "image-tag": "v2"}}),
        ),
        "acr" => (
            "application/json",
            json!([{"id": "5e0c7d1a-3c2b-4f5e-9a8b-1c2d3e4f5a6b",
                "topic": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/acme",
                "subject": "apps/app:v2", "eventType": "Microsoft.ContainerRegistry.ImagePushed",
                "eventTime": "2026-03-02T10:15:30.5Z", "dataVersion": "1.0", "metadataVersion": "1",
                "data": {"id": "9a1b", "timestamp": "2026-03-02T10:15:30.2Z", "action": "push",
                    "target": {"mediaType": OCI_MANIFEST, "size": 1203, "digest": ROGUE,
                               "length": 1203, "repository": "apps/app", "tag": "v2"},
                    "request": {"id": "c3d4", "host": "acme.azurecr.io", "method": "PUT",
                                "useragent": "containerd/1.7"}}}]),
        ),
        other => panic!("no such kind {other}"),
    }
}

/// Posts `body` to `kind` with `endpoint`'s token; the status and each
/// decided event's (verdict, duplicate).
async fn post(
    service: &Service,
    kind: &str,
    endpoint: &str,
    content_type: &str,
    body: &Value,
) -> (u16, Vec<(String, bool)>) {
    let response = reqwest::Client::new()
        .post(service.url(&format!("/webhooks/{kind}")))
        .header("authorization", format!("Bearer {}", token(kind, endpoint)))
        .header("content-type", content_type)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap_or_default();
    let decided = answer["decided"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|d| {
                    (
                        d["verdict"].as_str().unwrap_or_default().to_owned(),
                        d["duplicate"].as_bool().unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    (status, decided)
}

#[tokio::test]
async fn a_push_at_prod_is_never_a_duplicate_of_what_dev_sent_for_any_webhook_kind() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("resolve: false\n{}", webhooks_section());
    let service = Service::start(dir.path(), &manifests(dir.path()), &config).await;

    let decided = |verdict: &str, duplicate: bool| vec![(verdict.to_owned(), duplicate)];
    for kind in ["distribution", "harbor", "ecr", "acr"] {
        let (content_type, body) = rogue_push(kind);
        // Someone holding dev's token sends the body first: out of scope there.
        let dev = post(&service, kind, "dev", content_type, &body).await;
        assert_eq!(dev, (200, decided("out_of_scope", false)), "{kind} via dev");
        // The real push at prod is decided on its own and alerts.
        let prod = post(&service, kind, "prod", content_type, &body).await;
        assert_eq!(prod, (200, decided("unpromoted", false)), "{kind} via prod");
        // Each endpoint still recognises its own resends.
        for endpoint in ["dev", "prod"] {
            let (status, again) = post(&service, kind, endpoint, content_type, &body).await;
            assert_eq!(status, 200, "{kind} via {endpoint}");
            assert!(again[0].1, "{kind} via {endpoint}: {again:?}");
        }
    }

    let store = SqliteStore::open(service.findings_db()).unwrap();
    let counts = store.counts().unwrap();
    assert_eq!(counts.decisions_of(VerdictKind::OutOfScope), 4);
    assert_eq!(counts.decisions_of(VerdictKind::Unpromoted), 4);
    assert_eq!(counts.decisions_total(), 8);
    let findings = store.findings(&FindingQuery::default()).unwrap();
    let mut seen: Vec<(Source, String, String)> = findings
        .iter()
        .map(|f| {
            (
                f.key.source,
                f.key.endpoint.0.clone(),
                f.repository.as_ref().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort_by_key(|(s, _, _)| s.as_str());
    let mut want: Vec<(Source, String, String)> = [
        Source::Distribution,
        Source::Harbor,
        Source::Ecr,
        Source::Acr,
    ]
    .into_iter()
    .map(|s| (s, "prod".to_owned(), "prod.example/apps/app".to_owned()))
    .collect();
    want.sort_by_key(|(s, _, _)| s.as_str());
    assert_eq!(seen, want);
}

/// A gcr topic message: `ROGUE` pushed to prod.
fn rogue_gcr_payload() -> Vec<u8> {
    format!(r#"{{"action":"INSERT","digest":"prod.example/apps/app@{ROGUE}","tag":"prod.example/apps/app:v2"}}"#)
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_through_two_push_subscriptions_is_two_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path(), &manifests(dir.path()), "resolve: false\n").await;
    let fixture = Fixture::new("scope-push").await;
    let subscriptions =
        ["scope-push-a", "scope-push-b"].map(|s| format!("{}-{s}", fixture.subscription));
    for id in &subscriptions {
        fixture
            .subscriptions
            .create_subscription()
            .set_name(subscription_name(PROJECT, id))
            .set_topic(&fixture.topic)
            .set_push_config(PushConfig::new().set_push_endpoint(service.url("/pubsub/push")))
            .send()
            .await
            .expect("create push subscription");
    }
    let ids = fixture.publish([rogue_gcr_payload()]).await;
    // Both subscriptions deliver the one message id.
    let store = service.wait_for_decisions(2, Duration::from_secs(60)).await;
    for sub in &subscriptions {
        assert_eq!(
            store
                .decision(&Fixture::key_of(Source::PubsubPush, sub, &ids[0]))
                .unwrap(),
            Some(VerdictKind::Unpromoted),
            "{sub}\n{}",
            service.log_tail()
        );
    }
    let counts = store.counts().unwrap();
    assert_eq!((counts.decisions_total(), counts.findings), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_records_under_the_subscription_name() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::new("scope-pull").await;
    let pull = format!(
        "resolve: false\npubsub:\n  pull:\n    project: {PROJECT}\n    subscription: {}\n    \
         endpoint: {}\n",
        fixture.subscription, fixture.endpoint
    );
    let service = Service::start(dir.path(), &manifests(dir.path()), &pull).await;
    let ids = fixture.publish([rogue_gcr_payload()]).await;
    let store = service.wait_for_decisions(1, Duration::from_secs(60)).await;
    assert_eq!(
        store.decision(&fixture.pull_key(&ids[0])).unwrap(),
        Some(VerdictKind::Unpromoted)
    );
    // The same id is not known under another subscription.
    assert_eq!(
        store
            .decision(&Fixture::key_of(Source::PubsubPull, "other", &ids[0]))
            .unwrap(),
        None
    );
}
