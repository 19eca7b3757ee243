//! Shared by the webhook payload tests (one test binary per format, and the
//! properties over all of them): the documented example of each format,
//! which the format's tests vary and the properties mutate, and the
//! assertions every format's tests make. Each binary uses a subset.
//!
//! The digests are real sha256 values; the ECR documentation's own sample
//! digest (60 hex digits) is used only where a malformed digest is wanted.
#![allow(dead_code)]

use image_auditor::event::{Action, Event, EventId, Malformed, Source};
use image_auditor::reference::{Digest, RegistryPrefix, Repository, Tag};
use image_auditor::sources::webhook::{Decoded, IgnoreReason, Ignored, Parsed, Rejected};
use serde_json::{Value, json};

pub const D1: &str = "sha256:6987740fb624e3e9943ec5d9ac5519b72cea1b35fb4bde5719df3923a36c08f7";
pub const D2: &str = "sha256:d7bdd545f09d8a73c2b990337c8211d708a04ccd9748627685e4fc79cc038039";
/// Shaped like the ECR user guide's sample digest: 60 hex digits, so not a
/// digest.
pub const DOC_SAMPLE_DIGEST: &str =
    "sha256:d7bdd545f09d8a73c2b990337c8211d708a04ccd9748627685e4fc79cc03";

pub type Parser = fn(&[u8], Option<&RegistryPrefix>) -> Result<Parsed, Rejected>;

pub fn run(parse: Parser, body: &Value, registry: Option<&str>) -> Parsed {
    let registry = registry.map(|r| r.parse::<RegistryPrefix>().unwrap());
    let bytes = serde_json::to_vec(body).unwrap();
    match parse(&bytes, registry.as_ref()) {
        Ok(parsed) => parsed,
        Err(e) => panic!("rejected: {e}\n{body:#}"),
    }
}

#[track_caller]
pub fn rejected(parse: Parser, body: &[u8], phrases: &[&str]) {
    match parse(body, None) {
        Ok(parsed) => panic!("accepted {:?}: {parsed:?}", String::from_utf8_lossy(body)),
        Err(Rejected(why)) => {
            let message = why.reason;
            for phrase in phrases {
                assert!(
                    message.contains(phrase),
                    "message {message:?} lacks {phrase:?}"
                );
            }
        }
    }
}

pub fn event(
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
pub fn assert_delivery(delivery: &Decoded, expected: &Event) {
    assert_eq!(delivery.source, expected.source);
    assert_eq!(delivery.id, expected.id);
    assert_eq!(delivery.decoded.as_ref(), Ok(expected));
}

/// A malformed delivery under `id` whose reason mentions every phrase.
#[track_caller]
pub fn assert_malformed(delivery: &Decoded, source: Source, id: &str, phrases: &[&str]) {
    assert_eq!(delivery.source, source);
    assert_eq!(delivery.id, EventId(id.into()));
    let Err(Malformed {
        id: mid,
        source: msource,
        reason,
        ..
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

/// The repository of the first delivery's event, which must have decoded.
#[track_caller]
pub fn first_repository(parsed: &Parsed) -> &str {
    match &parsed.deliveries[0].decoded {
        Ok(e) => e.repository.as_str(),
        Err(_) => panic!("{:?}", parsed.deliveries[0]),
    }
}

pub fn ignored(id: &str, why: IgnoreReason) -> Ignored {
    Ignored { id: id.into(), why }
}

// ================================================================== Harbor

pub fn harbor_push() -> Value {
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

pub fn harbor_cloud_event(kind: &str, resources: Value) -> Value {
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

// ===================================================================== ECR

pub fn ecr_push() -> Value {
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

// ===================================================================== ACR

pub const ACR_ID: &str = "5e0c6b1a-2f3d-4c5e-9a7b-8c9d0e1f2a3b";
pub const ACR_TOPIC: &str =
    "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/acme";

pub fn acr_grid_event(id: &str, kind: &str, data: Value) -> Value {
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

pub fn acr_push_data(digest: &str) -> Value {
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

pub fn acr_delete_data(digest: &str) -> Value {
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
