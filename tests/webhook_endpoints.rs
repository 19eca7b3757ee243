//! `POST /webhooks/{harbor,ecr,acr}` on a running `serve`: each format's
//! documented payload is decided and recorded once; bad tokens, content
//! types and bodies get clear answers and record nothing; unknown event
//! types are counted, not refused; Event Grid's validation handshake is
//! answered.

use crate::support;

use std::path::{Path, PathBuf};

use image_auditor::findings::{SqliteStore, Store};
use serde_json::{Value, json};
use support::fixtures::one_project;
use support::service::Service;

const D1: &str = "sha256:6987740fb624e3e9943ec5d9ac5519b72cea1b35fb4bde5719df3923a36c08f7";
const D2: &str = "sha256:d7bdd545f09d8a73c2b990337c8211d708a04ccd9748627685e4fc79cc038039";

fn manifests(dir: &Path) -> PathBuf {
    one_project(
        dir,
        "apps",
        "registries:\n- name: staging.example/apps\n  src: true\n- name: harbor.internal/payments\n\
         - name: 111122223333.dkr.ecr.eu-west-1.amazonaws.com/apps\n- name: acme.azurecr.io/apps\n",
        &format!(
            "- name: worker\n  dmap:\n    \"{D1}\": [\"v2.0.0\"]\n\
             - name: api\n  dmap:\n    \"{D2}\": [\"v1.4.2\"]\n"
        ),
    )
}

fn harbor(kind: &str) -> Value {
    json!({
        "type": kind, "occur_at": 1772446530, "operator": "ci-bot",
        "event_data": {
            "resources": [{"digest": D1, "tag": "v2.0.0",
                           "resource_url": "harbor.internal/payments/worker:v2.0.0"}],
            "repository": {"name": "worker", "namespace": "payments",
                           "repo_full_name": "payments/worker", "repo_type": "private"}
        }
    })
}

fn ecr(detail_type: &str) -> Value {
    json!({
        "version": "0", "id": "0e6f9c2a-7b1d-4c3e-8f5a-2d4b6c8e0a1f",
        "detail-type": detail_type, "source": "aws.ecr", "account": "111122223333",
        "time": "2026-03-02T10:15:30Z", "region": "eu-west-1", "resources": [],
        "detail": {"result": "SUCCESS", "repository-name": "apps/api", "action-type": "PUSH",
                   "image-digest": D2, "image-tag": "v1.4.2"}
    })
}

fn acr(event_type: &str) -> Value {
    json!([{
        "id": "5e0c6b1a-2f3d-4c5e-9a7b-8c9d0e1f2a3b",
        "topic": "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/acme",
        "subject": "apps/api:v1.4.2", "eventType": event_type,
        "eventTime": "2026-03-02T10:15:30.5Z", "dataVersion": "1.0", "metadataVersion": "1",
        "data": {
            "id": "9a1b2c3d-0000-4000-8000-000000000001", "action": "push",
            "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1203,
                       "digest": D2, "repository": "apps/api", "tag": "v1.4.2"},
            "request": {"id": "c3d4", "host": "acme.azurecr.io", "method": "PUT"}
        }
    }])
}

fn token(kind: &str) -> String {
    format!("{kind}-endpoint-token-0123456789")
}

async fn post(
    service: &Service,
    kind: &str,
    auth: Option<String>,
    ct: &str,
    body: String,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(service.url(&format!("/webhooks/{kind}")))
        .header("content-type", ct)
        .body(body);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test]
async fn every_webhook_format_is_decided_once_and_refuses_bad_requests_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = String::from("resolve: false\nwebhooks:\n");
    for kind in ["harbor", "ecr", "acr"] {
        config.push_str(&format!(
            "  {kind}:\n  - name: {kind}-1\n    token: {}\n",
            token(kind)
        ));
    }
    let service = Service::start(dir.path(), &manifests(dir.path()), &config).await;

    let cases = [
        (
            "harbor",
            harbor("PUSH_ARTIFACT"),
            harbor("SCANNING_COMPLETED"),
        ),
        ("ecr", ecr("ECR Image Action"), ecr("ECR Image Scan")),
        (
            "acr",
            acr("Microsoft.ContainerRegistry.ImagePushed"),
            acr("Microsoft.ContainerRegistry.SomethingNew"),
        ),
    ];
    for (kind, good, unknown) in &cases {
        let bearer = || Some(format!("Bearer {}", token(kind)));
        let json = "application/json";
        // Refused, each naming what is wrong.
        for (auth, ct, body, status, says) in [
            (None, json, good.to_string(), 401, "missing Authorization"),
            (
                Some(format!("Bearer {}", token("other"))),
                json,
                good.to_string(),
                401,
                "token",
            ),
            (bearer(), "text/plain", good.to_string(), 415, "text/plain"),
            (bearer(), json, "{\"half".to_string(), 400, "JSON"),
        ] {
            let (got, answer) = post(&service, kind, auth, ct, body).await;
            assert_eq!(got, status, "{kind}: {answer}");
            let message = answer["error"].as_str().unwrap_or_default();
            assert!(
                message.contains(says),
                "{kind}: {message:?} should mention {says:?}"
            );
        }
        // Unknown event types: counted and acknowledged, nothing decided.
        let (got, answer) = post(&service, kind, bearer(), json, unknown.to_string()).await;
        assert_eq!(
            (got, &answer["ignored"]),
            (200, &json!(1)),
            "{kind}: {answer}"
        );
        assert_eq!(answer["decided"], json!([]), "{kind}");
        // The documented push: promoted, then a resend is a duplicate.
        for duplicate in [false, true] {
            let (got, answer) = post(&service, kind, bearer(), json, good.to_string()).await;
            assert_eq!(got, 200, "{kind}: {answer}");
            assert_eq!(
                answer["decided"],
                json!([{"verdict": "promoted", "duplicate": duplicate}]),
                "{kind}"
            );
        }
    }

    // Event Grid's subscription validation is answered with its code.
    let handshake = json!([{
        "id": "2d1781af", "topic": "/subscriptions/0000", "subject": "",
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "eventTime": "2026-03-02T10:15:30Z", "metadataVersion": "1", "dataVersion": "1",
        "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    }]);
    let (got, answer) = post(
        &service,
        "acr",
        Some(token("acr")),
        "application/json",
        handshake.to_string(),
    )
    .await;
    assert_eq!(got, 200);
    assert_eq!(
        answer,
        json!({"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"})
    );

    let counts = SqliteStore::open(service.findings_db())
        .unwrap()
        .counts()
        .unwrap();
    assert_eq!(
        counts.decisions_total(),
        3,
        "one per format; nothing from refused requests"
    );
    assert_eq!(counts.findings, 0);
    let metrics = service.metrics().await;
    for kind in ["harbor", "ecr", "acr"] {
        for (outcome, n) in [
            ("unauthorized", 2),
            ("unsupported_media_type", 1),
            ("rejected", 1),
        ] {
            let line = format!(
                "image_auditor_webhook_requests_total{{source=\"{kind}\",outcome=\"{outcome}\"}} {n}"
            );
            assert!(metrics.contains(&line), "missing {line}");
        }
    }
}
