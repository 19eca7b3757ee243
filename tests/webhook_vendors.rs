//! What Harbor and Azure Event Grid send besides plain JSON POSTs, on a
//! running `serve`: Harbor's CloudEvents and CDEvents payload formats with
//! their content type, and Event Grid's CloudEvents delivery — the `OPTIONS`
//! abuse-protection handshake (CloudEvents HTTP webhook spec §4) and batches
//! as `application/cloudevents-batch+json`.

use crate::support;

use std::path::{Path, PathBuf};

use image_auditor::findings::{SqliteStore, Store};
use reqwest::Method;
use serde_json::{Value, json};
use support::fixtures::app_promoted_to_prod;
use support::service::Service;

const PROMOTED: &str = "sha256:6987740fb624e3e9943ec5d9ac5519b72cea1b35fb4bde5719df3923a36c08f7";
const ROGUE: &str = "sha256:d7bdd545f09d8a73c2b990337c8211d708a04ccd9748627685e4fc79cc038039";
const HARBOR_TOKEN: &str = "harbor-token-0123456789abcdef";
const ACR_TOKEN: &str = "acr-token-0123456789abcdef";

fn manifests(dir: &Path) -> PathBuf {
    app_promoted_to_prod(dir, PROMOTED)
}

async fn start(dir: &Path) -> Service {
    let config = format!(
        "resolve: false\nwebhooks:\n  harbor:\n  - name: harbor-prod\n    registry: prod.example\n    \
         token: {HARBOR_TOKEN}\n  acr:\n  - name: acr-prod\n    registry: prod.example\n    \
         token: {ACR_TOKEN}\n"
    );
    Service::start(dir, &manifests(dir), &config).await
}

/// The status and the verdicts decided, in order.
async fn post(
    service: &Service,
    path: &str,
    authorization: Option<&str>,
    content_type: &str,
    body: &Value,
) -> (u16, Vec<String>) {
    let mut request = reqwest::Client::new()
        .post(service.url(path))
        .header("content-type", content_type)
        .body(body.to_string());
    if let Some(a) = authorization {
        request = request.header("authorization", a);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap_or_default();
    let verdicts = answer["decided"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|d| d["verdict"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_else(|| vec![answer.to_string()]);
    (status, verdicts)
}

/// A Harbor CloudEvent (the formatter's shape) for `digest` at `apps/app:tag`.
fn harbor_cloud_event(id: &str, kind: &str, digest: &str, tag: &str) -> Value {
    let data = json!({
        "resources": [{"digest": digest, "tag": tag,
                       "resource_url": format!("harbor.internal/apps/app:{tag}")}],
        "repository": {"date_created": 1677053165, "name": "app", "namespace": "apps",
                       "repo_full_name": "apps/app", "repo_type": "private"}
    });
    let data = if kind.starts_with("dev.cdevents.") {
        json!({"context": {"version": "0.3.0", "id": id, "type": kind,
                           "source": "/projects/1/webhook/policies/3",
                           "timestamp": "2026-03-02T10:15:30Z"},
               "subject": {"id": format!("pkg:oci/app@{digest}"), "type": "artifact",
                           "source": "/projects/1/webhook/policies/3", "content": {}},
               "customData": data, "customDataContentType": "application/json"})
    } else {
        data
    };
    json!({"specversion": "1.0", "requestid": "2eedfab8-61d3-4f3c-8ec3-8f82d1ec4c84",
           "id": id, "source": "/projects/1/webhook/policies/3", "type": kind,
           "datacontenttype": "application/json", "time": "2026-03-02T10:15:30Z",
           "data": data, "operator": "ci-bot"})
}

#[tokio::test]
async fn harbor_cloud_events_and_cdevents_are_accepted_with_their_content_type() {
    let dir = tempfile::tempdir().unwrap();
    let service = start(dir.path()).await;
    let auth = Some(HARBOR_TOKEN);
    for (body, verdict) in [
        (
            harbor_cloud_event("ce-1", "harbor.artifact.pushed", PROMOTED, "v1"),
            "promoted",
        ),
        (
            harbor_cloud_event("ce-2", "harbor.artifact.pushed", ROGUE, "v2"),
            "unpromoted",
        ),
        (
            harbor_cloud_event("cd-1", "dev.cdevents.artifact.published.0.1.1", ROGUE, "v3"),
            "unpromoted",
        ),
    ] {
        // Harbor's formatter sets the CloudEvents type; some proxies add a
        // charset.
        for content_type in [
            "application/cloudevents+json",
            "application/cloudevents+json; charset=utf-8",
        ] {
            let (status, verdicts) =
                post(&service, "/webhooks/harbor", auth, content_type, &body).await;
            assert_eq!(status, 200, "{content_type}: {verdicts:?}");
            assert_eq!(verdicts, [verdict], "{body}");
        }
    }
    // A batch is no Harbor content type.
    let (status, _) = post(
        &service,
        "/webhooks/harbor",
        auth,
        "application/cloudevents-batch+json",
        &json!([harbor_cloud_event(
            "ce-3",
            "harbor.artifact.pushed",
            ROGUE,
            "v4"
        )]),
    )
    .await;
    assert_eq!(status, 415);
    let store = SqliteStore::open(service.findings_db()).unwrap();
    assert_eq!(store.counts().unwrap().findings, 2);
}

/// An Event Grid CloudEvents-schema event for ACR.
fn acr_cloud_event(id: &str, kind: &str, digest: &str, tag: Option<&str>) -> Value {
    let mut target = json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "size": 1203, "digest": digest, "length": 1203,
                            "repository": "apps/app"});
    if let Some(tag) = tag {
        target["tag"] = json!(tag);
    }
    json!({"specversion": "1.0", "id": id, "type": kind,
           "source": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/acme",
           "subject": "apps/app", "time": "2026-03-02T10:15:30.5Z",
           "data": {"id": format!("{id}-data"), "timestamp": "2026-03-02T10:15:30.2Z",
                    "action": if kind.ends_with("Deleted") { "delete" } else { "push" },
                    "target": target,
                    "request": {"id": "c3d4", "host": "acme.azurecr.io", "method": "PUT",
                                "useragent": "containerd/1.7"}}})
}

async fn options(service: &Service, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = reqwest::Client::new().request(Method::OPTIONS, service.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn event_grid_validation_is_answered_only_with_the_token_and_batches_are_decided() {
    let dir = tempfile::tempdir().unwrap();
    let service = start(dir.path()).await;
    let subscribed = format!("/webhooks/acr?access_token={ACR_TOKEN}");
    let origin = ("WebHook-Request-Origin", "eventgrid.azure.net");

    // Consent: the origin echoed, and the rate asked for (or any).
    let granted = options(&service, &subscribed, &[origin]).await;
    assert_eq!(granted.status().as_u16(), 200);
    assert_eq!(
        header(&granted, "webhook-allowed-origin"),
        Some("eventgrid.azure.net")
    );
    assert_eq!(header(&granted, "webhook-allowed-rate"), Some("*"));
    assert!(header(&granted, "allow").unwrap().contains("POST"));
    let rated = options(
        &service,
        &subscribed,
        &[origin, ("WebHook-Request-Rate", "120")],
    )
    .await;
    assert_eq!(
        (
            rated.status().as_u16(),
            header(&rated, "webhook-allowed-rate")
        ),
        (200, Some("120"))
    );
    // The token in the header does as well.
    let bearer = format!("Bearer {ACR_TOKEN}");
    let by_header = options(
        &service,
        "/webhooks/acr",
        &[origin, ("authorization", &bearer)],
    )
    .await;
    assert_eq!(by_header.status().as_u16(), 200);

    // No consent without the token, or to a request that is no handshake.
    for (path, headers, status) in [
        ("/webhooks/acr", vec![origin], 401),
        (
            "/webhooks/acr?access_token=acr-token-wrong-0123456789",
            vec![origin],
            401,
        ),
        (subscribed.as_str(), vec![], 400),
        (
            subscribed.as_str(),
            vec![origin, ("WebHook-Request-Rate", "0")],
            400,
        ),
        (
            subscribed.as_str(),
            vec![origin, ("WebHook-Request-Rate", "fast")],
            400,
        ),
    ] {
        let refused = options(&service, path, &headers).await;
        assert_eq!(refused.status().as_u16(), status, "{path} {headers:?}");
        assert_eq!(header(&refused, "webhook-allowed-origin"), None);
    }
    // Harbor never validates this way: as if OPTIONS were not supported.
    let harbor = options(
        &service,
        &format!("/webhooks/harbor?access_token={HARBOR_TOKEN}"),
        &[origin, ("authorization", HARBOR_TOKEN)],
    )
    .await;
    assert_eq!(harbor.status().as_u16(), 405);
    assert_eq!(header(&harbor, "allow"), Some("POST"));
    assert_eq!(header(&harbor, "webhook-allowed-origin"), None);

    // Deliveries to the subscribed URL: one event, and a batch.
    let one = acr_cloud_event(
        "eg-1",
        "Microsoft.ContainerRegistry.ImagePushed",
        PROMOTED,
        Some("v1"),
    );
    let (status, verdicts) = post(
        &service,
        &subscribed,
        None,
        "application/cloudevents+json; charset=utf-8",
        &one,
    )
    .await;
    assert_eq!((status, verdicts), (200, vec!["promoted".to_owned()]));
    let batch = json!([
        acr_cloud_event(
            "eg-2",
            "Microsoft.ContainerRegistry.ImagePushed",
            ROGUE,
            Some("v2")
        ),
        acr_cloud_event(
            "eg-3",
            "Microsoft.ContainerRegistry.ImageDeleted",
            PROMOTED,
            None
        ),
    ]);
    let (status, verdicts) = post(
        &service,
        &subscribed,
        None,
        "application/cloudevents-batch+json; charset=utf-8",
        &batch,
    )
    .await;
    assert_eq!(status, 200, "{verdicts:?}");
    assert_eq!(verdicts, ["unpromoted", "deleted"]);
    // Without the token, in neither place, nothing is decided.
    let (status, _) = post(
        &service,
        "/webhooks/acr",
        None,
        "application/cloudevents-batch+json",
        &batch,
    )
    .await;
    assert_eq!(status, 401);
    let store = SqliteStore::open(service.findings_db()).unwrap();
    assert_eq!(store.counts().unwrap().decisions_total(), 3);

    let metrics = service.metrics().await;
    for line in [
        r#"image_auditor_webhook_requests_total{source="acr",outcome="validated"} 3"#,
        r#"image_auditor_webhook_requests_total{source="acr",outcome="unauthorized"} 3"#,
        r#"image_auditor_webhook_requests_total{source="acr",outcome="rejected"} 3"#,
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
}
