//! Triage end to end: `serve` with a real Alertmanager, a webhook receiver
//! and a Slack-compatible receiver; a finding is alerted, then
//! acknowledged and resolved over the authenticated API, and every sink
//! hears the resolution (the alert disappears from Alertmanager's API).
//! Refusals (no token, wrong token, a token claiming another name, over the
//! rate limit) are answered from the headers and counted. The CLI triages
//! the same store.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use support::alertmanager::Alertmanager;
use support::fixtures::{A, B, one_project};
use support::receiver::Receiver;
use support::service::Service;

const ALICE: &str = "alice-token-0123456789";
const CI: &str = "ci-bot-token-0123456789";
const TIMING: &str = "alerts:\n  poll_interval: 100ms\n  group_wait: 200ms\n  backoff_base: 100ms\n  backoff_max: 500ms\n";

fn manifests(dir: &Path) -> PathBuf {
    one_project(
        dir,
        "demo",
        "registries:\n- name: staging.example/demo\n  src: true\n- name: r0.example/prod\n",
        &format!("- name: app\n  dmap:\n    \"{A}\": [\"1.0\"]\n"),
    )
}

/// The `triage` section: alice and ci-bot, tokens in files.
fn triage_config(dir: &Path, extra: &str) -> String {
    let mut yaml = String::from("triage:\n  tokens:\n");
    for (name, token) in [("alice", ALICE), ("ci-bot", CI)] {
        let file = dir.join(format!("{name}.token"));
        std::fs::write(&file, format!("{token}\n")).unwrap();
        yaml.push_str(&format!(
            "  - name: {name}\n    token_file: {}\n",
            file.display()
        ));
    }
    yaml.push_str(extra);
    yaml
}

async fn post(
    service: &Service,
    path: &str,
    token: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(service.url(path))
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(service: &Service, path: &str) -> Value {
    reqwest::get(service.url(path))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolving_a_finding_resolves_its_alert_at_every_sink() {
    let am = Alertmanager::start();
    let hook = Receiver::start(0).await;
    // Slack's first request fails: deliveries are retried from the store.
    let slack = Receiver::start(1).await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "resolve: false\n{}{TIMING}  sinks:\n  - name: am\n    alertmanager:\n      url: {}\n  \
         - name: hook\n    webhook:\n      url: {}\n  - name: chat\n    slack:\n      url: {}\n",
        triage_config(dir.path(), ""),
        am.url(),
        hook.url,
        slack.url,
    );
    let mut service = Service::start(dir.path(), &manifests(dir.path()), &config).await;
    service
        .push_gcr(
            "m1",
            &json!({"action": "INSERT", "digest": format!("r0.example/prod/app@{B}")}),
        )
        .await;
    service
        .wait_until("every sink has the alert", || async {
            am.alerts().await.len() == 1
                && !hook.accepted_json().is_empty()
                && !slack.accepted_json().is_empty()
        })
        .await;
    let alert_id = hook.accepted_json()[0]["alert_id"].clone();

    let open = get(&service, "/v1/findings?state=open").await;
    let finding = &open["findings"][0];
    assert_eq!(finding["triage"]["state"], "open");
    let id = finding["id"].as_i64().unwrap();
    let resolve = format!("/v1/findings/{id}/resolve");
    let acknowledge = format!("/v1/findings/{id}/acknowledge");

    // Refused from the headers, whatever the body: no token (with a body
    // over the triage body limit, which would be 413 if it were read), a
    // wrong token, and a token whose holder is not who the body claims.
    let huge = vec![b' '; 64 * 1024];
    let (status, body) = post(&service, &resolve, None, huge).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = post(&service, &resolve, Some("not-a-token-0123456789"), "{}").await;
    assert_eq!(status, 401);
    let (status, body) = post(&service, &resolve, Some(CI), r#"{"as": "alice"}"#).await;
    assert_eq!(status, 403);
    assert!(body["error"].as_str().unwrap().contains("ci-bot"), "{body}");
    assert_eq!(
        service
            .metric(r#"image_auditor_rejected_requests_total{reason="triage_unauthorized"}"#)
            .await,
        3.0
    );
    let (status, body) = post(&service, &resolve, Some(ALICE), r#"{"note": 5}"#).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = post(&service, "/v1/findings/99999/resolve", Some(ALICE), "{}").await;
    assert_eq!(status, 404);
    assert_eq!(
        get(&service, "/v1/findings?state=open").await["findings"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "nothing refused changed anything"
    );

    // Acknowledged: recorded, and no sink is told.
    let (status, body) = post(
        &service,
        &acknowledge,
        Some(CI),
        r#"{"note": "paged the owner"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changed"], true);
    assert_eq!(body["finding"]["triage"]["state"], "acknowledged");
    assert_eq!(body["finding"]["triage"]["by"], "ci-bot");

    // Resolved: every sink hears it.
    let (status, body) = post(
        &service,
        &resolve,
        Some(ALICE),
        r#"{"note": "deleted the rogue image", "as": "alice"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["finding"]["triage"]["state"], "resolved");
    assert_eq!(body["finding"]["triage"]["by"], "alice");
    assert_eq!(body["finding"]["triage"]["note"], "deleted the rogue image");
    service
        .wait_until("the alert is gone from Alertmanager", || async {
            am.alerts().await.is_empty()
        })
        .await;
    service
        .wait_until(
            "the webhook and Slack receivers hear the resolution",
            || async { hook.accepted_json().len() == 2 && slack.accepted_json().len() == 2 },
        )
        .await;
    let resolved = &hook.accepted_json()[1];
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["alert_id"], alert_id, "the alert it ends");
    assert_eq!(resolved["resolution"]["by"], "alice");
    assert_eq!(resolved["resolution"]["note"], "deleted the rogue image");
    let text = slack.accepted_json()[1]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text.starts_with("*resolved*: unpromoted: app@"), "{text}");
    assert!(text.contains("alice: deleted the rogue image"), "{text}");
    assert_eq!(
        slack.requests().len(),
        3,
        "one failed attempt, retried; then the resolution"
    );
    service
        .wait_until("resolutions are counted per sink", || async {
            service
                .metric(r#"image_auditor_alerts_total{sink="am",outcome="resolved"}"#)
                .await
                == 1.0
        })
        .await;

    // A second resolve is a no-op that tells nobody; acknowledging a
    // resolved finding is refused.
    let (status, body) = post(&service, &resolve, Some(CI), "").await;
    assert_eq!((status, &body["changed"]), (200, &json!(false)), "{body}");
    assert_eq!(
        body["finding"]["triage"]["by"], "alice",
        "the first change stands"
    );
    let (status, body) = post(&service, &acknowledge, Some(ALICE), "{}").await;
    assert_eq!(status, 409, "{body}");
    let listed = get(&service, "/v1/findings?state=resolved").await;
    assert_eq!(listed["findings"][0]["id"], id);
    let (status, _) = (
        reqwest::get(service.url("/v1/findings?state=closed"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        (),
    );
    assert_eq!(status, 400);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(hook.accepted_json().len(), 2, "no second resolution");

    // The fact seen again after its resolution is a new alert, also from a
    // process that did not send the first (it reads the store's memory).
    assert!(service.terminate().await.success());
    service.restart().await;
    service
        .push_gcr(
            "m2",
            &json!({"action": "INSERT", "digest": format!("r0.example/prod/app@{B}")}),
        )
        .await;
    service
        .wait_until("the webhook hears the fact again", || async {
            hook.accepted_json().len() == 3
        })
        .await;
    let again = &hook.accepted_json()[2];
    assert_eq!(again["status"], "new", "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triage_is_rate_limited_before_credentials_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let config = triage_config(
        dir.path(),
        "  rate_limit:\n    requests_per_second: 0.001\n    burst: 2\n",
    );
    let service = Service::start(dir.path(), &manifests(dir.path()), &config).await;
    let mut statuses = Vec::new();
    for token in [None, Some(ALICE), Some(ALICE)] {
        statuses.push(
            post(&service, "/v1/findings/1/resolve", token, "{}")
                .await
                .0,
        );
    }
    assert_eq!(statuses, [401, 404, 429]);
    assert_eq!(
        service
            .metric(r#"image_auditor_rejected_requests_total{reason="triage_rate_limited"}"#)
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_triage_is_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path(), &manifests(dir.path()), "").await;
    let (status, body) = post(&service, "/v1/findings/1/resolve", Some(ALICE), "{}").await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("triage.tokens"),
        "{body}"
    );
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_image-auditor"))
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_and_triages_the_configured_store() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path(), &manifests(dir.path()), "resolve: false\n").await;
    for (id, digest) in [
        ("m1", B),
        (
            "m2",
            "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc",
        ),
    ] {
        service
            .push_gcr(
                id,
                &json!({"action": "INSERT", "digest": format!("r0.example/prod/app@{digest}")}),
            )
            .await;
    }
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let out = cli(&["findings", "list", "--data-dir", data, "--state", "open"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("2\topen\tunpromoted\tr0.example/prod/app@sha256:ccc"),
        "{text}"
    );

    let out = cli(&[
        "findings",
        "resolve",
        "1",
        "--data-dir",
        data,
        "--as",
        "bob",
        "--note",
        "known image",
    ]);
    assert!(out.status.success(), "{out:?}");
    let out = cli(&[
        "findings",
        "acknowledge",
        "1",
        "--data-dir",
        data,
        "--as",
        "bob",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot acknowledge a finding that is resolved"),
        "{out:?}"
    );
    let out = cli(&[
        "findings",
        "resolve",
        "7",
        "--data-dir",
        data,
        "--as",
        "bob",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    // The running service sees the change in the same store.
    let resolved = get(&service, "/v1/findings?state=resolved").await;
    let f = &resolved["findings"][0];
    assert_eq!(
        (f["id"].as_i64(), &f["triage"]["by"]),
        (Some(1), &json!("bob"))
    );
    assert_eq!(f["triage"]["note"], "known image");
    let out = cli(&[
        "findings",
        "list",
        "--data-dir",
        data,
        "--state",
        "resolved",
        "--json",
    ]);
    let first: Value =
        serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(first["triage"]["state"], "resolved");
}
