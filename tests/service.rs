//! `serve` as a process: the Pub/Sub push endpoint, the HTTP API, clean
//! shutdown and crash recovery. Registries are not consulted (`resolve:
//! false`), so verdicts come from the manifests alone.

use crate::support;

use std::path::Path;

use base64::Engine;
use image_auditor::findings::{SqliteStore, Store};
use serde_json::{Value, json};
use support::fixtures::{A, B, C, one_project};
use support::service::Service;

const US: &str = "us-docker.pkg.dev/prod/demo";
const EU: &str = "eu-docker.pkg.dev/prod/demo";

fn manifests(dir: &Path) -> std::path::PathBuf {
    one_project(
        dir,
        "demo",
        &format!(
            "registries:\n- name: gcr.io/staging-demo\n  src: true\n- name: {US}\n- name: {EU}\n"
        ),
        &format!("- name: app\n  dmap:\n    \"{A}\": [\"1.0\"]\n    \"{C}\": [\"2.0\"]\n"),
    )
}

async fn start(dir: &Path, extra: &str) -> Service {
    Service::start(dir, &manifests(dir), &format!("resolve: false\n{extra}")).await
}

fn envelope(id: &str, payload: &Value) -> String {
    let data = base64::engine::general_purpose::STANDARD.encode(payload.to_string());
    json!({"message": {"data": data, "messageId": id}, "subscription": "projects/p/subscriptions/s"})
        .to_string()
}

async fn push(service: &Service, body: String, content_type: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(service.url("/pubsub/push"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn get(service: &Service, path: &str) -> (u16, String) {
    let response = reqwest::get(service.url(path)).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn get_json(service: &Service, path: &str) -> (u16, Value) {
    let (status, text) = get(service, path).await;
    (status, serde_json::from_str(&text).unwrap())
}

fn verdicts(findings: &Value) -> Vec<String> {
    let mut v: Vec<String> = findings["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["verdict"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn push_deliveries_are_decided_recorded_once_and_queryable() {
    let dir = tempfile::tempdir().unwrap();
    let service = start(dir.path(), "").await;
    let cases = [
        (
            "m-promoted",
            json!({"action":"INSERT","digest":format!("{US}/app@{A}"),"tag":format!("{US}/app:1.0")}),
            "promoted",
        ),
        (
            "m-unpromoted",
            json!({"action":"INSERT","digest":format!("{EU}/app@{B}")}),
            "unpromoted",
        ),
        (
            "m-moved",
            json!({"action":"INSERT","digest":format!("{US}/app@{A}"),"tag":format!("{US}/app:2.0")}),
            "tag_moved",
        ),
        (
            "m-deleted",
            json!({"action":"DELETE","tag":format!("{US}/app:1.0")}),
            "deleted",
        ),
        (
            "m-scope",
            json!({"action":"INSERT","digest":format!("gcr.io/staging-demo/app@{B}")}),
            "out_of_scope",
        ),
        (
            "m-malformed",
            json!({"action":"WOOF","digest":format!("{US}/app@{B}")}),
            "malformed",
        ),
    ];
    for (id, payload, expected) in &cases {
        let (status, body) = push(&service, envelope(id, payload), "application/json").await;
        assert_eq!(status, 200, "{id}: {body}");
        assert_eq!(body["verdict"], *expected, "{id}");
        assert_eq!(body["duplicate"], false);
    }
    // A redelivery (same message id) is acknowledged without a second finding.
    let (status, body) = push(
        &service,
        envelope("m-unpromoted", &cases[1].1),
        "application/json",
    )
    .await;
    assert_eq!((status, &body["duplicate"]), (200, &json!(true)));
    assert_eq!(body["verdict"], "unpromoted");
    // Ids whose verdict the index alone decides are recorded without a
    // dedupe lookup first: a redelivery still gets the first verdict, even
    // when its body would now be decided otherwise.
    for (id, payload, first) in [
        ("m-malformed", &cases[5].1, "malformed"),
        ("m-deleted", &cases[0].1, "deleted"),
    ] {
        let (status, body) = push(&service, envelope(id, payload), "application/json").await;
        assert_eq!((status, &body["duplicate"]), (200, &json!(true)), "{id}");
        assert_eq!(body["verdict"], first, "{id}");
    }
    // Invalid base64 in a real envelope is a malformed *message*: recorded and acked.
    let bad = json!({"message": {"data": "%%%not base64", "messageId": "m-b64"}}).to_string();
    assert_eq!(push(&service, bad, "application/json").await.0, 200);

    let (status, all) = get_json(&service, "/v1/findings").await;
    assert_eq!(status, 200);
    assert_eq!(
        verdicts(&all),
        [
            "deleted",
            "malformed",
            "malformed",
            "tag_moved",
            "unpromoted"
        ]
    );

    let (_, only) = get_json(&service, "/v1/findings?verdict=unpromoted").await;
    assert_eq!(verdicts(&only), ["unpromoted"]);
    assert_eq!(only["findings"][0]["event_id"], "m-unpromoted");
    assert_eq!(only["findings"][0]["digest"], B);
    let (_, by_repo) = get_json(&service, &format!("/v1/findings?repository={US}/app")).await;
    assert_eq!(verdicts(&by_repo), ["deleted", "tag_moved"]);
    let (_, limited) = get_json(&service, "/v1/findings?limit=2").await;
    assert_eq!(limited["findings"].as_array().unwrap().len(), 2);
    assert_eq!(get(&service, "/v1/findings?verdict=nonsense").await.0, 400);
    assert_eq!(get(&service, "/v1/findings?digest=sha256:0").await.0, 400);

    // Every delivery is one decision; the duplicate added none.
    let counts = SqliteStore::open(service.findings_db())
        .unwrap()
        .counts()
        .unwrap();
    assert_eq!(counts.decisions_total(), 7);
    assert_eq!(counts.findings, 5);

    // The structured log names the event, repository, digest and verdict.
    let log = service.log();
    let line = log
        .lines()
        .find(|l| l.contains("\"m-unpromoted\""))
        .expect("logged");
    let line: Value = serde_json::from_str(line).unwrap();
    assert_eq!(line["verdict"], "unpromoted");
    assert_eq!(line["digest"], B);
    assert_eq!(line["repository"], format!("{EU}/app"));
    // Cloud Logging reads `severity` (and knows WARNING, not WARN).
    assert_eq!(line["severity"], "WARNING");
    let promoted: Value = serde_json::from_str(
        log.lines()
            .find(|l| l.contains("\"m-promoted\""))
            .expect("logged"),
    )
    .unwrap();
    assert_eq!(promoted["severity"], "INFO");
    assert!(
        log.lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v["severity"].is_string())),
        "every line is JSON with a severity:\n{log}"
    );
}

#[tokio::test]
async fn requests_that_are_not_pubsub_pushes_are_refused_and_record_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let service = start(dir.path(), "").await;
    let ok = envelope(
        "x",
        &json!({"action":"INSERT","digest":format!("{US}/app@{A}")}),
    );
    assert_eq!(
        push(&service, "garbage".into(), "application/json").await.0,
        400
    );
    assert_eq!(push(&service, ok.clone(), "text/plain").await.0, 415);
    assert_eq!(push(&service, "{}".into(), "application/json").await.0, 400);
    assert_eq!(
        push(
            &service,
            json!({"message": {"data": ""}}).to_string(),
            "application/json"
        )
        .await
        .0,
        400
    );
    let huge = envelope("big", &json!({"pad": "x".repeat(2 * 1024 * 1024)}));
    assert_eq!(push(&service, huge, "application/json").await.0, 413);
    let counts = SqliteStore::open(service.findings_db())
        .unwrap()
        .counts()
        .unwrap();
    assert_eq!(counts.decisions_total(), 0);
}

#[tokio::test]
async fn push_with_oidc_auth_refuses_missing_and_forged_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let (_jwks, auth) = support::token::keyless_push_auth().await;
    let service = start(dir.path(), &auth).await;
    let body = envelope(
        "m1",
        &json!({"action":"INSERT","digest":format!("{EU}/app@{B}")}),
    );
    let client = reqwest::Client::new();
    for header in [None, Some("Basic abc"), Some("Bearer not.a.jwt")] {
        let mut request = client
            .post(service.url("/pubsub/push"))
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(h) = header {
            request = request.header("authorization", h);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401, "{header:?}");
    }
    let counts = SqliteStore::open(service.findings_db())
        .unwrap()
        .counts()
        .unwrap();
    assert_eq!(counts.decisions_total(), 0);
}

#[tokio::test]
async fn lookup_check_readiness_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let service = start(dir.path(), "").await;

    let (status, found) = get_json(&service, &format!("/v1/digests/{A}")).await;
    assert_eq!(status, 200);
    assert_eq!(found["placements"][0]["image"], "app");
    assert_eq!(found["placements"][0]["line"], 3);
    assert_eq!(
        found["placements"][0]["repositories"],
        json!([format!("{US}/app"), format!("{EU}/app")])
    );
    assert_eq!(get(&service, &format!("/v1/digests/{B}")).await.0, 404);
    assert_eq!(get(&service, "/v1/digests/sha256:xyz").await.0, 400);

    let response = reqwest::Client::new()
        .post(service.url("/v1/check"))
        .body(
            json!({"references": [format!("{US}/app:1.0@{A}"), format!("{US}/app:2.0@{A}")]})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let checked: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(checked["results"][0]["verdict"], "promoted");
    assert_eq!(checked["results"][1]["verdict"], "tag_moved");
    assert_eq!(checked["results"][1]["alert"], true);
    let bad = reqwest::Client::new()
        .post(service.url("/v1/check"))
        .body(r#"{"references": ["no host"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);

    let (status, ready) = get_json(&service, "/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(ready["index"]["digests"], 2);

    push(
        &service,
        envelope(
            "m",
            &json!({"action":"INSERT","digest":format!("{EU}/app@{B}")}),
        ),
        "application/json",
    )
    .await;
    let (status, metrics) = get(&service, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"image_auditor_events_total{source="pubsub_push",action="insert",verdict="unpromoted"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("image_auditor_index_digests 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn sigterm_stops_cleanly_and_a_kill_loses_no_recorded_decision() {
    let dir = tempfile::tempdir().unwrap();
    let mut service = start(dir.path(), "").await;
    let event = json!({"action":"INSERT","digest":format!("{EU}/app@{B}")});
    assert_eq!(
        push(&service, envelope("m1", &event), "application/json")
            .await
            .0,
        200
    );

    service.kill();
    service.restart().await;
    // The redelivery after a crash is recognised from the store, not memory.
    let (status, body) = push(&service, envelope("m1", &event), "application/json").await;
    assert_eq!((status, &body["duplicate"]), (200, &json!(true)));
    let (_, all) = get_json(&service, "/v1/findings").await;
    assert_eq!(verdicts(&all), ["unpromoted"]);

    let status = service.terminate().await;
    assert!(status.success(), "{status}\n{}", service.log());
    assert!(service.log().contains("\"stopped\""));
}

#[tokio::test]
async fn the_status_page_shows_index_sources_and_findings_with_markup_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let service = start(dir.path(), "").await;
    let (status, page) = get(&service, "/").await;
    assert_eq!(status, 200);
    assert!(page.contains("No event received since start."), "{page}");

    // A hostile payload: its text reaches the finding's reason.
    let hostile = json!({"action": "<script>alert(1)</script>", "digest": format!("{US}/app@{B}")});
    let (status, body) = push(&service, envelope("m-xss", &hostile), "application/json").await;
    assert_eq!((status, body["verdict"].as_str()), (200, Some("malformed")));
    let response = reqwest::get(service.url("/")).await.unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    let page = response.text().await.unwrap();
    assert!(page.contains("<td>pubsub_push</td>"), "{page}");
    assert!(page.contains("<th>generation</th><td>1</td>"), "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains("<script>"), "{page}");
    // The row links to the finding's own page, which names the event.
    let (_, findings) = get_json(&service, "/v1/findings").await;
    let id = findings["findings"][0]["id"].as_i64().unwrap();
    assert!(page.contains(&format!("href=\"/findings/{id}\"")), "{page}");
    let (status, page) = get(&service, &format!("/findings/{id}")).await;
    assert_eq!(status, 200);
    assert!(page.contains("<code>m-xss</code>"), "{page}");
    assert!(!page.contains("<script>"), "{page}");
}
