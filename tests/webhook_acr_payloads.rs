//! The Azure Container Registry webhook parser against payloads built from
//! the documented schemas (docs/reference/event-formats.md §7): Event Grid
//! events (its schema and the CloudEvents schema, single and batched) and
//! native webhooks mapped to the exact delivery, the validation handshake,
//! one bad event in a batch, and bodies that are not ACR deliveries at all.

use crate::support::payloads;

use image_auditor::event::{Action, Source};
use image_auditor::sources::webhook::{IgnoreReason, acr};
use payloads::*;
use serde_json::json;

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
