//! Pub/Sub push requests → deliveries (docs/reference/event-formats.md §2): wrapped
//! and unwrapped shapes, and every class of bad input with the status it
//! gets — or, once a message id is known, the `malformed` delivery it
//! becomes.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use image_auditor::event::{Action, EndpointName, Event, EventId, Malformed, Source};
use image_auditor::sources::Delivery;
use image_auditor::sources::pubsub_push::{self, MESSAGE_ID_HEADER, PushError};
use proptest::prelude::*;
use serde_json::{Value, json};

const DIGEST: &str = "sha256:d7bdd545f09d8a73c2b990337c8211d708a04ccd9748627685e4fc79cc038039";

fn payload() -> String {
    format!(
        r#"{{"action":"INSERT","digest":"us-docker.pkg.dev/acme-prod/apps/api@{DIGEST}","tag":"us-docker.pkg.dev/acme-prod/apps/api:v1.4.2"}}"#
    )
}

fn json_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h
}

fn unwrapped_headers(id: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(MESSAGE_ID_HEADER, HeaderValue::from_str(id).unwrap());
    h.insert(
        "x-goog-pubsub-subscription-name",
        HeaderValue::from_static("projects/acme-prod/subscriptions/image-auditor"),
    );
    h.insert(
        "x-goog-pubsub-publish-time",
        HeaderValue::from_static("2026-03-02T10:15:30.123Z"),
    );
    h
}

fn envelope(message: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "message": message,
        "subscription": "projects/acme-prod/subscriptions/image-auditor",
    }))
    .unwrap()
}

/// A wrapped envelope as documented (docs/reference/event-formats.md §2): both id spellings.
const DOCUMENTED_ENVELOPE: &str = r#"{"message":{
   "data":"eyJhY3Rpb24iOiJJTlNFUlQiLCJkaWdlc3QiOiJ1cy1kb2NrZXIucGtnLmRldi9hY21lLXByb2QvYXBwcy9hcGlAc2hhMjU2OmQ3YmRkNTQ1ZjA5ZDhhNzNjMmI5OTAzMzdjODIxMWQ3MDhhMDRjY2Q5NzQ4NjI3Njg1ZTRmYzc5Y2MwMzgwMzkiLCJ0YWciOiJ1cy1kb2NrZXIucGtnLmRldi9hY21lLXByb2QvYXBwcy9hcGk6djEuNC4yIn0=",
   "messageId":"9182736450012345","message_id":"9182736450012345",
   "publishTime":"2026-03-02T10:15:30.123Z","publish_time":"2026-03-02T10:15:30.123Z"},
 "subscription":"projects/acme-prod/subscriptions/image-auditor"}"#;

#[track_caller]
fn delivered(headers: &HeaderMap, body: &[u8]) -> Delivery {
    match pubsub_push::decode(headers, body) {
        Ok(d) => {
            assert_eq!(d.source, Source::PubsubPush);
            d
        }
        Err(e) => panic!("rejected ({}): {e}", e.status()),
    }
}

#[track_caller]
fn event(headers: &HeaderMap, body: &[u8], id: &str) -> Event {
    let d = delivered(headers, body);
    assert_eq!(d.id, EventId(id.into()));
    let e = d.decoded.unwrap_or_else(|m| panic!("malformed: {m}"));
    assert_eq!(e.id, EventId(id.into()));
    assert_eq!(e.source, Source::PubsubPush);
    e
}

/// The request is a message, but a malformed one: recorded and acked.
#[track_caller]
fn malformed(headers: &HeaderMap, body: &[u8], id: &str, phrase: &str) -> Malformed {
    let d = delivered(headers, body);
    assert_eq!(d.id, EventId(id.into()));
    let m = d.decoded.expect_err("expected a malformed delivery");
    assert_eq!(m.id, EventId(id.into()));
    assert_eq!(m.source, Source::PubsubPush);
    assert!(
        m.reason.contains(phrase),
        "reason {:?} lacks {phrase:?}",
        m.reason
    );
    m
}

/// The request is not a usable push: refused with `status`.
#[track_caller]
fn refused(headers: &HeaderMap, body: &[u8], status: StatusCode, phrase: &str) -> PushError {
    let e = pubsub_push::decode(headers, body).expect_err("expected a refusal");
    assert_eq!(e.status(), status, "{e}");
    assert!(
        e.to_string().contains(phrase),
        "message {:?} lacks {phrase:?}",
        e.to_string()
    );
    e
}

fn assert_is_the_example_event(e: &Event) {
    assert_eq!(e.action, Action::Insert);
    assert_eq!(
        e.repository.to_string(),
        "us-docker.pkg.dev/acme-prod/apps/api"
    );
    assert_eq!(e.digest.as_ref().unwrap().to_string(), DIGEST);
    assert_eq!(e.tag.as_ref().unwrap().as_str(), "v1.4.2");
}

// ------------------------------------------------------------------ wrapped

#[test]
fn wrapped_documented_envelope_with_both_id_spellings() {
    let e = event(
        &json_headers(),
        DOCUMENTED_ENVELOPE.as_bytes(),
        "9182736450012345",
    );
    assert_is_the_example_event(&e);
}

#[test]
fn wrapped_with_only_message_id_camel_case() {
    let body = envelope(json!({"data": STANDARD.encode(payload()), "messageId": "42"}));
    assert_is_the_example_event(&event(&json_headers(), &body, "42"));
}

#[test]
fn wrapped_with_only_message_id_snake_case() {
    let body = envelope(json!({"data": STANDARD.encode(payload()), "message_id": "43"}));
    assert_is_the_example_event(&event(&json_headers(), &body, "43"));
}

#[test]
fn wrapped_without_subscription_field_is_accepted() {
    let body = serde_json::to_vec(
        &json!({"message": {"data": STANDARD.encode(payload()), "messageId": "44"}}),
    )
    .unwrap();
    assert_is_the_example_event(&event(&json_headers(), &body, "44"));
}

#[test]
fn attributes_and_other_metadata_are_ignored() {
    let body = serde_json::to_vec(&json!({
        "message": {
            "data": STANDARD.encode(payload()),
            "messageId": "45",
            "attributes": {"action": "DELETE", "digest": "nonsense", "nested": {"x": [1, 2]}},
            "orderingKey": "k",
            "publishTime": "not even a time",
        },
        "subscription": "projects/acme-prod/subscriptions/image-auditor",
        "deliveryAttempt": 3,
        "unknown": null,
    }))
    .unwrap();
    assert_is_the_example_event(&event(&json_headers(), &body, "45"));
}

#[test]
fn content_type_parameters_and_case_are_accepted() {
    let body = envelope(json!({"data": STANDARD.encode(payload()), "messageId": "46"}));
    for ct in [
        "application/json; charset=utf-8",
        "Application/JSON",
        " application/json ",
    ] {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        assert_is_the_example_event(&event(&h, &body, "46"));
    }
}

#[test]
fn unpadded_and_url_safe_base64_are_accepted() {
    let payload = format!(r#"{{"action":"INSERT","digest":"gcr.io/p/img@{DIGEST}"}}"#);
    for data in [
        STANDARD.encode(&payload),
        STANDARD_NO_PAD.encode(&payload),
        URL_SAFE_NO_PAD.encode(&payload),
    ] {
        let body = envelope(json!({"data": data, "messageId": "47"}));
        let e = event(&json_headers(), &body, "47");
        assert_eq!(e.repository.to_string(), "gcr.io/p/img");
    }
    // A payload whose standard base64 contains `+` and `/`, sent URL-safe.
    let tricky = format!(r#"{{"action":"INSERT","digest":"gcr.io/p/img@{DIGEST}","x":"~~~???"}}"#);
    assert!(STANDARD.encode(&tricky).contains(['+', '/']));
    let body = envelope(json!({"data": URL_SAFE_NO_PAD.encode(&tricky), "messageId": "48"}));
    event(&json_headers(), &body, "48");
}

#[test]
fn huge_data_still_decodes() {
    // 8 MiB of padding in the payload: size is the route's business.
    let padding = "x".repeat(8 << 20);
    let payload =
        format!(r#"{{"action":"DELETE","digest":"gcr.io/p/img@{DIGEST}","padding":"{padding}"}}"#);
    let body = envelope(json!({"data": STANDARD.encode(payload), "messageId": "49"}));
    assert!(body.len() > 10 << 20);
    let e = event(&json_headers(), &body, "49");
    assert_eq!(e.action, Action::Delete);
}

// ---------------------------------------------------------------- unwrapped

#[test]
fn unwrapped_takes_the_id_from_the_header() {
    // No content type is required: the body is whatever was published.
    let e = event(
        &unwrapped_headers("9182736450012345"),
        payload().as_bytes(),
        "9182736450012345",
    );
    assert_is_the_example_event(&e);
    // Message attributes arrive as plain headers and are ignored.
    let mut h = unwrapped_headers("50");
    h.insert("action", HeaderValue::from_static("DELETE"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    assert_is_the_example_event(&event(&h, payload().as_bytes(), "50"));
}

#[test]
fn unwrapped_payload_that_is_not_gcr_is_a_malformed_delivery() {
    let h = unwrapped_headers("51");
    malformed(&h, b"\xff\x00garbage", "51", "not JSON");
    malformed(&h, b"", "51", "not JSON");
    malformed(
        &h,
        br#"{"action":"INSERT"}"#,
        "51",
        "neither `digest` nor `tag`",
    );
    // Not base64-decoded: the raw body is the payload.
    malformed(&h, STANDARD.encode(payload()).as_bytes(), "51", "not JSON");
}

#[test]
fn unwrapped_with_an_unusable_id_header_is_refused() {
    let mut h = HeaderMap::new();
    h.insert(MESSAGE_ID_HEADER, HeaderValue::from_static(""));
    refused(&h, payload().as_bytes(), StatusCode::BAD_REQUEST, "empty");
    h.insert(
        MESSAGE_ID_HEADER,
        HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
    );
    refused(
        &h,
        payload().as_bytes(),
        StatusCode::BAD_REQUEST,
        "not text",
    );
    h.insert(
        MESSAGE_ID_HEADER,
        HeaderValue::from_str(&"9".repeat(300)).unwrap(),
    );
    refused(
        &h,
        payload().as_bytes(),
        StatusCode::BAD_REQUEST,
        "at most 256",
    );
}

#[test]
fn unwrapped_without_metadata_is_refused_with_a_hint() {
    // `--push-no-wrapper` without `--push-no-wrapper-write-metadata`: no id.
    let e = refused(
        &json_headers(),
        payload().as_bytes(),
        StatusCode::BAD_REQUEST,
        "`message` is missing",
    );
    assert!(e.to_string().contains("write-metadata"), "{e}");
}

// ---------------------------------------------------------------- bad input

#[test]
fn wrong_or_missing_content_type_is_415() {
    let body = DOCUMENTED_ENVELOPE.as_bytes();
    refused(
        &HeaderMap::new(),
        body,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "(none)",
    );
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/jsonx",
        "multipart/form-data; boundary=x",
    ] {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        refused(
            &h,
            body,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ct.split(';').next().unwrap(),
        );
    }
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_bytes(b"\xffjson").unwrap(),
    );
    refused(&h, body, StatusCode::UNSUPPORTED_MEDIA_TYPE, "(not text)");
    // A hostile content type is cut short in the message.
    let long = format!("text/{}", "a".repeat(1000));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_str(&long).unwrap());
    let e = refused(&h, body, StatusCode::UNSUPPORTED_MEDIA_TYPE, "text/aaa");
    assert!(e.to_string().len() < 400, "{e}");
    assert!(e.to_string().contains("[805 more bytes]"), "{e}");
}

#[test]
fn empty_body_is_400() {
    refused(&json_headers(), b"", StatusCode::BAD_REQUEST, "empty body");
    refused(
        &json_headers(),
        b" \n\t",
        StatusCode::BAD_REQUEST,
        "empty body",
    );
}

#[test]
fn garbage_and_invalid_json_are_400() {
    let h = json_headers();
    refused(
        &h,
        b"\x00\x01\x02\xff\xfe",
        StatusCode::BAD_REQUEST,
        "not JSON",
    );
    refused(&h, b"hello world", StatusCode::BAD_REQUEST, "not JSON");
    refused(
        &h,
        br#"{"message":{"messageId":"1""#,
        StatusCode::BAD_REQUEST,
        "not JSON",
    );
    refused(
        &h,
        br#"{"message":{"messageId":"1"}} trailing"#,
        StatusCode::BAD_REQUEST,
        "not JSON",
    );
    refused(&h, b"\xef\xbb\xbf{}", StatusCode::BAD_REQUEST, "not JSON");
}

#[test]
fn json_that_is_not_an_envelope_is_400() {
    let h = json_headers();
    refused(&h, b"[]", StatusCode::BAD_REQUEST, "found an array");
    refused(
        &h,
        b"\"message\"",
        StatusCode::BAD_REQUEST,
        "found a string",
    );
    refused(&h, b"null", StatusCode::BAD_REQUEST, "found null");
    refused(&h, b"{}", StatusCode::BAD_REQUEST, "`message` is missing");
    refused(
        &h,
        br#"{"subscription":"projects/p/subscriptions/s"}"#,
        StatusCode::BAD_REQUEST,
        "`message` is missing",
    );
    refused(
        &h,
        br#"{"message":"9182736450012345"}"#,
        StatusCode::BAD_REQUEST,
        "`message` must be an object",
    );
    refused(
        &h,
        br#"{"message":null}"#,
        StatusCode::BAD_REQUEST,
        "`message` must be an object",
    );
}

#[test]
fn message_without_a_usable_id_is_400() {
    let h = json_headers();
    let data = STANDARD.encode(payload());
    let cases = [
        (
            json!({"data": data}),
            "messageId` (or `message.message_id`) is missing",
        ),
        (json!({"data": data, "messageId": null}), "is missing"),
        (
            json!({"data": data, "messageId": 42}),
            "`messageId` must be a string, found a number",
        ),
        (
            json!({"data": data, "message_id": ["1"]}),
            "`message_id` must be a string, found an array",
        ),
        (
            json!({"data": data, "messageId": ""}),
            "`messageId` is empty",
        ),
        (
            json!({"data": data, "messageId": "   "}),
            "`messageId` is empty",
        ),
        (
            json!({"data": data, "messageId": "1\n2"}),
            "control characters",
        ),
        (
            json!({"data": data, "messageId": "9".repeat(257)}),
            "at most 256",
        ),
        (
            json!({"data": data, "messageId": "1", "message_id": "2"}),
            "disagree",
        ),
    ];
    for (message, phrase) in cases {
        refused(&h, &envelope(message), StatusCode::BAD_REQUEST, phrase);
    }
}

#[test]
fn invalid_base64_is_a_malformed_delivery() {
    let h = json_headers();
    for data in [
        "not base64!",
        "eyJh\u{e9}",
        "e",
        "====",
        "eyJhY3Rpb24i OiJJTlNFUlQifQ==",
    ] {
        let body = envelope(json!({"data": data, "messageId": "60"}));
        malformed(&h, &body, "60", "not base64");
    }
}

#[test]
fn missing_or_mistyped_data_is_a_malformed_delivery() {
    let h = json_headers();
    let body = envelope(json!({"messageId": "61", "attributes": {"k": "v"}}));
    malformed(&h, &body, "61", "no `data`");
    let body = envelope(json!({"messageId": "61", "data": null}));
    malformed(&h, &body, "61", "no `data`");
    let body = envelope(json!({"messageId": "61", "data": 12}));
    malformed(&h, &body, "61", "found a number");
    let body = envelope(json!({"messageId": "61", "data": {"action": "INSERT"}}));
    malformed(&h, &body, "61", "found an object");
}

#[test]
fn payload_that_is_not_gcr_is_a_malformed_delivery() {
    let h = json_headers();
    let cases = [
        ("", "not JSON"),
        ("hello", "not JSON"),
        ("[1,2]", "not a JSON object"),
        (
            r#"{"action":"UPSERT","digest":"gcr.io/p/i@sha256:00"}"#,
            "unknown action",
        ),
        (r#"{"digest":"gcr.io/p/i"}"#, "`action` is missing"),
        (r#"{"action":"INSERT"}"#, "neither `digest` nor `tag`"),
    ];
    for (payload, phrase) in cases {
        let body = envelope(json!({"data": STANDARD.encode(payload), "messageId": "62"}));
        malformed(&h, &body, "62", phrase);
    }
    // Binary data, base64-valid.
    let body = envelope(json!({"data": STANDARD.encode([0xff, 0, 0xfe]), "messageId": "62"}));
    malformed(&h, &body, "62", "not JSON");
}

#[test]
fn errors_do_not_echo_the_body() {
    let secret = "s3cr3t-value-that-must-not-be-logged";
    let h = json_headers();
    let e = refused(
        &h,
        format!("not json {secret}").as_bytes(),
        StatusCode::BAD_REQUEST,
        "not JSON",
    );
    assert!(!e.to_string().contains(secret));
    let e = refused(
        &h,
        &envelope(json!({"data": secret})),
        StatusCode::BAD_REQUEST,
        "missing",
    );
    assert!(!e.to_string().contains(secret));
}

// ------------------------------------------------------------------ totality

fn header_sets() -> impl Strategy<Value = HeaderMap> {
    prop_oneof![
        Just(HeaderMap::new()),
        Just(json_headers()),
        "[ -~]{0,20}".prop_map(|id| {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&id) {
                h.insert(MESSAGE_ID_HEADER, v);
            }
            h
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(headers in header_sets(), body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = pubsub_push::decode(&headers, &body);
    }

    #[test]
    fn arbitrary_message_fields_never_panic(
        id in proptest::option::of(".{0,40}"),
        data in proptest::option::of(".{0,200}"),
        encode in any::<bool>(),
    ) {
        let mut message = serde_json::Map::new();
        if let Some(id) = &id {
            message.insert("messageId".into(), json!(id));
        }
        if let Some(data) = &data {
            let data = if encode { STANDARD.encode(data) } else { data.clone() };
            message.insert("data".into(), json!(data));
        }
        let body = envelope(Value::Object(message));
        match pubsub_push::decode(&json_headers(), &body) {
            // Any decision is fine, but an id always yields a delivery.
            Ok(d) => prop_assert_eq!(Some(d.id.0), id),
            Err(e) => prop_assert!(e.status().is_client_error()),
        }
    }
}

// ------------------------------------------------------------ subscription

/// A message id is unique only within its topic: the subscription it came
/// through is the delivery's endpoint, part of the dedupe key.
#[test]
fn the_subscription_is_the_delivery_endpoint() {
    let prod = "projects/acme-prod/subscriptions/image-auditor";
    let d = delivered(&json_headers(), DOCUMENTED_ENVELOPE.as_bytes());
    assert_eq!(d.endpoint, EndpointName(prod.into()));
    let d = delivered(&unwrapped_headers("42"), payload().as_bytes());
    assert_eq!(d.endpoint, EndpointName(prod.into()));

    // Without one (never from real Pub/Sub) the push is scoped to the
    // source's single endpoint.
    let bare = serde_json::to_vec(&json!({"message": {"messageId": "1",
        "data": STANDARD.encode(payload())}}))
    .unwrap();
    assert_eq!(
        delivered(&json_headers(), &bare).endpoint,
        EndpointName::only()
    );
    let mut headers = HeaderMap::new();
    headers.insert(MESSAGE_ID_HEADER, HeaderValue::from_static("1"));
    assert_eq!(
        delivered(&headers, payload().as_bytes()).endpoint,
        EndpointName::only()
    );

    // An unusable one is refused like an unusable id.
    for subscription in [
        json!(7),
        json!(""),
        json!("a\u{7}b"),
        json!("s".repeat(300)),
    ] {
        let body = serde_json::to_vec(&json!({"message": {"messageId": "1",
            "data": STANDARD.encode(payload())}, "subscription": subscription}))
        .unwrap();
        refused(
            &json_headers(),
            &body,
            StatusCode::BAD_REQUEST,
            "subscription",
        );
    }
}
