//! The event parsers against a hostile sender: envelopes that fan out into
//! hundreds of thousands of events, names and ids without bounds, and JSON
//! whose duplicate keys mean one thing to us and another to other readers.
//! Costs are asserted as bytes allocated (a counting allocator) and events
//! built, never as time.

use crate::support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

use http::HeaderMap;
use image_auditor::event::{LimitHit, Source};
use image_auditor::findings::{SqliteStore, Store};
use image_auditor::reference::{MAX_REPOSITORY_LEN, Reference, Repository};
use image_auditor::sources::webhook::{EndpointConfig, Endpoints, Parsed, Rejected, WebhookKind};
use image_auditor::sources::webhook::{acr, distribution, ecr, harbor};
use image_auditor::sources::{gcr, pubsub_push};
use serde_json::{Value, json};
use support::fixtures::one_project;
use support::service::Service;

const D: &str = "sha256:d7bdd545f09d8a73c2b990337c8211d708a04ccd9748627685e4fc79cc038039";
const TOKEN: &str = "hostile-webhooks-token-0123456789";
const MIB: usize = 1024 * 1024;

/// Counts the bytes this thread allocates and frees, so that a test can say
/// what one call cost without other tests' threads in the figure.
struct Counting;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
    static FREED: Cell<usize> = const { Cell::new(0) };
}

fn add(counter: &'static std::thread::LocalKey<Cell<usize>>, n: usize) {
    // `try_with`: threads being torn down still allocate.
    let _ = counter.try_with(|c| c.set(c.get() + n));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(&ALLOCATED, layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(&FREED, layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(&ALLOCATED, new_size);
        add(&FREED, layout.size());
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// (bytes allocated, bytes still held) by `f` on this thread, and its result.
fn measure<T>(f: impl FnOnce() -> T) -> (usize, usize, T) {
    let (a0, f0) = (ALLOCATED.with(Cell::get), FREED.with(Cell::get));
    let out = f();
    let (a1, f1) = (ALLOCATED.with(Cell::get), FREED.with(Cell::get));
    let allocated = a1 - a0;
    (allocated, allocated.saturating_sub(f1 - f0), out)
}

fn prefix() -> image_auditor::reference::RegistryPrefix {
    "registry.example:5000".parse().unwrap()
}

/// A distribution envelope of `{}` events filling `size` bytes.
fn envelope_of_empty_events(size: usize) -> Vec<u8> {
    let mut body = br#"{"events":[{}"#.to_vec();
    while body.len() + 5 < size {
        body.extend_from_slice(b",{}");
    }
    body.extend_from_slice(b"]}");
    body
}

fn configured(extra: &str) -> Endpoints {
    let config: EndpointConfig = serde_saphyr::from_str(&format!(
        "name: local\nregistry: registry.example:5000\ntoken: {TOKEN}\n{extra}"
    ))
    .unwrap();
    Endpoints::from_config(&[(WebhookKind::Distribution, &[config])], |_| None).unwrap()
}

#[test]
fn an_envelope_of_349k_empty_events_is_refused_without_building_them() {
    let body = envelope_of_empty_events(MIB);
    let events = body.iter().filter(|&&b| b == b'{').count() - 1;
    assert!(events > 349_000, "{events}");
    // The defect: every `{}` became a malformed delivery to record.
    let (_, _, parsed) = measure(|| distribution::parse(&body, &prefix()).unwrap());
    assert_eq!(parsed.deliveries.len(), events);
    drop(parsed);

    let endpoints = configured("");
    let endpoint = endpoints
        .authenticate(WebhookKind::Distribution, Some(TOKEN.as_bytes()))
        .unwrap();
    let (allocated, held, refused) = measure(|| endpoint.check_event_count(&body));
    let e = refused.unwrap_err();
    assert_eq!(e.max, 1000);
    assert!(e.to_string().contains("max_events"), "{e}");
    // The count builds nothing per event: a 1 MiB body costs less than a
    // single page of allocations, and keeps none.
    assert!(allocated < 4096, "counting allocated {allocated} bytes");
    assert_eq!(held, 0);

    // Nested lists count too: 500 events of 500 resources each is 250,500
    // entries, far over the cap though each list is under it.
    let resource_lists = format!(
        "[{}]",
        vec![format!("{{\"r\":[{}]}}", vec!["{}"; 500].join(",")); 500].join(",")
    );
    assert!(
        endpoint
            .check_event_count(resource_lists.as_bytes())
            .is_err()
    );

    // A configured cap is the boundary, inclusive.
    let endpoints = configured("max_events: 3");
    let endpoint = endpoints
        .authenticate(WebhookKind::Distribution, Some(TOKEN.as_bytes()))
        .unwrap();
    assert!(
        endpoint
            .check_event_count(br#"{"events":[{},{},{}]}"#)
            .is_ok()
    );
    assert!(
        endpoint
            .check_event_count(br#"{"events":[{},{},{},{}]}"#)
            .is_err()
    );
}

#[test]
fn events_under_the_cap_cost_little_each() {
    // 1000 well-formed pushes, each a separate delivery: what the parser
    // keeps per event is the delivery itself, not the request's JSON.
    let events: Vec<Value> = (0..1000)
        .map(|i| {
            json!({"id": format!("e{i}"), "action": "push", "target": {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": D, "repository": "apps/api", "tag": "v1"}})
        })
        .collect();
    let body = json!({ "events": events }).to_string();
    let (_, held, parsed) = measure(|| distribution::parse(body.as_bytes(), &prefix()).unwrap());
    assert_eq!(parsed.deliveries.len(), 1000);
    assert!(
        held < 1000 * 512,
        "{held} bytes kept for 1000 events ({} per event)",
        held / 1000
    );
}

fn long_repository() -> String {
    format!("apps/{}", "a".repeat(700_000))
}

#[test]
fn a_repository_name_over_255_characters_is_malformed_and_never_echoed_whole() {
    let host = "registry.example:5000/";
    let at_limit = format!("{host}{}", "a".repeat(MAX_REPOSITORY_LEN - host.len()));
    assert!(at_limit.parse::<Repository>().is_ok());
    let over = format!("{at_limit}b");
    let e = over.parse::<Repository>().unwrap_err().to_string();
    assert!(e.contains("255"), "{e}");

    let e = format!("{host}{}:v1", long_repository())
        .parse::<Reference>()
        .unwrap_err()
        .to_string();
    assert!(e.len() < 600 && e.contains("more bytes]"), "{e}");

    // Every source gets the limit from the reference types.
    let body = json!({"events": [{"id": "e1", "action": "push", "target": {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": D, "repository": long_repository()}}]})
    .to_string();
    let parsed = distribution::parse(body.as_bytes(), &prefix()).unwrap();
    let m = parsed.deliveries[0].decoded.as_ref().unwrap_err();
    assert!(m.reason.contains("255"), "{}", m.reason);
    assert!(m.reason.len() < 600, "reason is {} bytes", m.reason.len());

    let payload = json!({"action": "INSERT",
        "digest": format!("gcr.io/{}@{D}", long_repository())})
    .to_string();
    let m = gcr::parse(
        &image_auditor::event::EventId("1".into()),
        payload.as_bytes(),
    )
    .unwrap_err();
    assert!(m.reason.len() < 600, "reason is {} bytes", m.reason.len());
}

#[test]
fn distribution_ids_that_cannot_be_keys_are_refused_like_the_push_routes() {
    for (id, says) in [
        ("evil\nid", "control characters"),
        ("tab\tid", "control characters"),
        (&*"x".repeat(300), "at most 256"),
    ] {
        let body = json!({"events": [{"id": id, "action": "push", "target": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": D, "repository": "apps/api"}}]})
        .to_string();
        let e = distribution::parse(body.as_bytes(), &prefix()).unwrap_err();
        let message = e.to_string();
        assert!(
            message.contains("events[0].id") && message.contains(says),
            "{e}"
        );
        assert_eq!(e.limit(), Some(LimitHit::BadEventId), "{e}");
    }
}

/// How many events a request yielded, or why it was refused.
fn events(parsed: Result<Parsed, Rejected>) -> Result<usize, Rejected> {
    parsed.map(|p| p.deliveries.len())
}

/// `body` with `injected` placed just after the first occurrence of
/// `after`: a key that the body already has, stated once more before it.
fn inject(body: &Value, after: &str, injected: &str) -> Vec<u8> {
    let text = body.to_string();
    let at = text.find(after).unwrap() + after.len();
    format!("{}{injected}{}", &text[..at], &text[at..]).into_bytes()
}

#[test]
fn a_repeated_key_is_refused_in_every_json_format_and_named() {
    // Before: serde_json kept the last key, so DELETE-then-INSERT was an
    // insert (`promoted`) here while the first key wins for other readers.
    let gcr_payload =
        format!(r#"{{"action":"DELETE","action":"INSERT","digest":"gcr.io/p/a@{D}"}}"#);
    let id = image_auditor::event::EventId("7".into());
    let m = gcr::parse(&id, gcr_payload.as_bytes()).unwrap_err();
    assert!(m.reason.contains("duplicate key `action`"), "{}", m.reason);
    assert_eq!(m.limit, Some(LimitHit::DuplicateJsonKey));

    // Pub/Sub push: an unwrapped payload is a malformed delivery (its id is
    // known); a wrapped envelope repeating a key is no Pub/Sub envelope.
    let mut headers = HeaderMap::new();
    headers.insert(pubsub_push::MESSAGE_ID_HEADER, "42".parse().unwrap());
    let delivery = pubsub_push::decode(&headers, gcr_payload.as_bytes()).unwrap();
    let m = delivery.decoded.unwrap_err();
    assert_eq!((m.source, m.id.0.as_str()), (Source::PubsubPush, "42"));
    assert!(m.reason.contains("duplicate key `action`"), "{}", m.reason);
    assert_eq!(m.limit, Some(LimitHit::DuplicateJsonKey));
    let mut headers = HeaderMap::new();
    headers.insert("content-type", "application/json".parse().unwrap());
    let envelope = br#"{"message":{"messageId":"1","data":"e30="},"message":{"messageId":"2"}}"#;
    let e = pubsub_push::decode(&headers, envelope).unwrap_err();
    assert!(e.to_string().contains("duplicate key `message`"), "{e}");
    assert_eq!(e.limit(), Some(LimitHit::DuplicateJsonKey));

    let distribution_body = json!({"events": [{"id": "e1", "action": "push", "target": {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": D, "repository": "apps/api"}}]});
    let harbor_body = json!({"type": "PUSH_ARTIFACT", "occur_at": 1772446530,
        "event_data": {"resources": [{"digest": D, "tag": "v1",
            "resource_url": "harbor.internal/payments/worker:v1"}],
            "repository": {"repo_full_name": "payments/worker"}}});
    let ecr_body = json!({"version": "0", "id": "0e6f9c2a", "detail-type": "ECR Image Action",
        "source": "aws.ecr", "account": "111122223333", "region": "eu-west-1",
        "detail": {"result": "SUCCESS", "repository-name": "apps/api",
                   "action-type": "PUSH", "image-digest": D, "image-tag": "v1"}});
    let acr_body = json!([{"id": "5e0c6b1a", "eventType": "Microsoft.ContainerRegistry.ImagePushed",
        "data": {"id": "9a1b", "action": "push",
            "target": {"digest": D, "repository": "apps/api", "tag": "v1"},
            "request": {"host": "acme.azurecr.io"}}}]);
    type Parse = fn(&[u8]) -> Result<usize, Rejected>;
    let cases: [(&str, Parse, Vec<u8>, &Value, &str); 4] = [
        (
            "distribution",
            |b| events(distribution::parse(b, &prefix())),
            inject(&distribution_body, "[{", r#""action":"delete","#),
            &distribution_body,
            "action",
        ),
        (
            "harbor",
            |b| events(harbor::parse(b, None)),
            inject(&harbor_body, "{", r#""type":"DELETE_ARTIFACT","#),
            &harbor_body,
            "type",
        ),
        (
            "ecr",
            |b| events(ecr::parse(b, None)),
            inject(&ecr_body, r#""detail":{"#, r#""action-type":"DELETE","#),
            &ecr_body,
            "action-type",
        ),
        (
            "acr",
            |b| events(acr::parse(b, None)),
            inject(&acr_body, r#""data":{"#, r#""action":"delete","#),
            &acr_body,
            "action",
        ),
    ];
    for (format, parse, repeated, plain, key) in cases {
        assert_eq!(parse(plain.to_string().as_bytes()), Ok(1), "{format}");
        let e = parse(&repeated).unwrap_err();
        assert!(
            e.to_string().contains(&format!("duplicate key `{key}`")),
            "{format}: {e}"
        );
        assert_eq!(e.limit(), Some(LimitHit::DuplicateJsonKey), "{format}");
    }
}

fn manifests(dir: &Path) -> PathBuf {
    one_project(
        dir,
        "apps",
        "registries:\n- name: staging.example/apps\n  src: true\n\
         - name: registry.example:5000/apps\n",
        &format!("- name: api\n  dmap:\n    \"{D}\": [\"v1\"]\n"),
    )
}

async fn post(service: &Service, body: Vec<u8>) -> (u16, String) {
    post_to(service, "distribution", body).await
}

async fn post_to(service: &Service, kind: &str, body: Vec<u8>) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(service.url(&format!("/webhooks/{kind}")))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.text().await.unwrap_or_default(),
    )
}

#[tokio::test]
async fn the_service_refuses_fan_out_and_keeps_hostile_names_out_of_its_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(
        dir.path(),
        &manifests(dir.path()),
        &format!(
            "resolve: false\nwebhooks:\n  distribution:\n  - name: local\n    \
             registry: \"registry.example:5000\"\n    token: {TOKEN}\n  \
             acr:\n  - name: grid\n    token: {TOKEN}\n    max_events: 10\n"
        ),
    )
    .await;

    // 349k events in 1 MiB: 413, nothing recorded, counted.
    let (status, answer) = post(&service, envelope_of_empty_events(MIB - 1024)).await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains("at most 1000"), "{answer}");
    // Any format, with the endpoint's own cap: an Event Grid array of 11.
    let (status, answer) = post_to(
        &service,
        "acr",
        format!("[{}]", ["{}"; 11].join(",")).into_bytes(),
    )
    .await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains("at most 10"), "{answer}");

    // A 700,000-character repository: one malformed decision whose stored
    // reason, findings page and log lines stay small.
    let body = json!({"events": [{"id": "long-1", "action": "push", "target": {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": D, "repository": long_repository()}}]})
    .to_string();
    let (status, answer) = post(&service, body.into_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("malformed"), "{answer}");

    let counts = SqliteStore::open(service.findings_db())
        .unwrap()
        .counts()
        .unwrap();
    assert_eq!(counts.decisions_total(), 1, "only the long name is decided");
    let findings = service.text("/v1/findings").await;
    assert!(findings.contains("255"), "{findings}");
    assert!(
        findings.len() < 4096,
        "/v1/findings is {} bytes",
        findings.len()
    );
    let page = service.text("/").await;
    assert!(
        !page.contains(&"a".repeat(1000)),
        "the status page echoes the name"
    );
    let longest = service.log().lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 4096, "a log line is {longest} bytes");

    // Ids that cannot be keys and repeated keys: 400, each counted under
    // its own limit rather than only as a rejected request.
    for id in ["evil\nid", &"x".repeat(300)] {
        let body = json!({"events": [{"id": id, "action": "push", "target": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": D, "repository": "apps/api"}}]});
        let (status, answer) = post(&service, body.to_string().into_bytes()).await;
        assert_eq!(status, 400, "{answer}");
    }
    let body = json!({"events": [{"id": "dup-1", "action": "push", "target": {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": D, "repository": "apps/api"}}]});
    let (status, answer) = post(&service, inject(&body, "[{", r#""action":"delete","#)).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("duplicate key `action`"), "{answer}");

    let metrics = service.metrics().await;
    for (reason, count) in [
        ("too_many_events", 2),
        ("name_too_long", 1),
        ("bad_event_id", 2),
        ("duplicate_json_key", 1),
    ] {
        let line =
            format!("image_auditor_rejected_requests_total{{reason=\"{reason}\"}} {count}\n");
        assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
    }
    assert_eq!(
        SqliteStore::open(service.findings_db())
            .unwrap()
            .counts()
            .unwrap()
            .decisions_total(),
        1,
        "refused requests record nothing"
    );
}
