//! Findings reach people: `serve` delivering from its outbox to a real
//! Alertmanager (through an outage), to receivers that fail a few times
//! first, and to a Pub/Sub topic on the real emulator; one fact seen in 25
//! regional registries is one alert naming all 25; an unpromoted index
//! pushed with its platform images by skopeo to a real registry is one
//! alert naming all four.

use crate::support;

use std::time::Duration;

use image_auditor::findings::{FindingQuery, SqliteStore, Store};
use serde_json::{Value, json};
use support::alertmanager::Alertmanager;
use support::fixtures::{A, B, C, regions_root, write_project};
use support::oci::{Desc, Layout};
use support::pubsub::{Fixture, PROJECT};
use support::receiver::Receiver;
use support::registry::{Push, Registry, free_port, skopeo_push};
use support::service::Service;

const HMAC_KEY: &str = "alert-signing-key";
/// Fast timing for tests: facts are held 1 s for their other regions.
const TIMING: &str = "alerts:\n  poll_interval: 100ms\n  group_wait: 1s\n  backoff_base: 100ms\n  backoff_max: 500ms\n";

fn unpromoted(region: usize, digest: &str) -> Value {
    json!({"action": "INSERT", "digest": format!("r{region}.example/prod/app@{digest}")})
}

fn undelivered(service: &Service, sink: &str) -> u64 {
    let counts = SqliteStore::open(service.findings_db())
        .unwrap()
        .counts()
        .unwrap();
    let known = counts.undelivered_by_sink.iter().find(|(s, _)| s == sink);
    // Before a sink's first claim every finding is owed to it.
    known.map_or(counts.findings, |(_, n)| *n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_lists_findings_and_receives_those_made_while_it_was_down_once() {
    let mut am = Alertmanager::start();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "resolve: false\n{TIMING}  sinks:\n  - name: am\n    alertmanager:\n      url: {}\n",
        am.url()
    );
    let service = Service::start(dir.path(), &regions_root(dir.path(), A, 2), &config).await;

    service.push_gcr("m1", &unpromoted(0, B)).await;
    service
        .push_gcr(
            "m2",
            &json!({"action": "INSERT", "digest": format!("r1.example/prod/app@{A}"),
               "tag": "r1.example/prod/app:2.0"}),
        )
        .await;
    service
        .wait_until("Alertmanager lists both findings", || async {
            am.alerts().await.len() == 2
        })
        .await;
    let alerts = am.alerts().await;
    let unpromoted_alert = alerts
        .iter()
        .find(|a| a["labels"]["verdict"] == "unpromoted")
        .expect("the unpromoted finding");
    let labels = &unpromoted_alert["labels"];
    assert_eq!(labels["alertname"], "ImageAuditorFinding");
    assert_eq!(labels["severity"], "critical");
    assert_eq!(labels["image"], "app");
    assert_eq!(labels["digest"], B);
    let annotations = &unpromoted_alert["annotations"];
    assert_eq!(annotations["repositories"], "r0.example/prod/app");
    assert!(
        annotations["evidence"]
            .as_str()
            .unwrap()
            .contains("not in any manifest"),
        "{annotations}"
    );
    assert!(annotations["events"].as_str().unwrap().contains("m1"));
    let moved = alerts
        .iter()
        .find(|a| a["labels"]["verdict"] == "unlisted_tag" || a["labels"]["verdict"] == "tag_moved")
        .expect("the tag finding");
    assert!(
        moved["annotations"]["evidence"]
            .as_str()
            .unwrap()
            .contains("images.yaml:3"),
        "{moved}"
    );

    // Alertmanager goes down; a finding made meanwhile waits in the outbox.
    am.stop();
    service.push_gcr("m3", &unpromoted(1, C)).await;
    service
        .wait_until("a delivery to the stopped Alertmanager failed", || async {
            service
                .metric(r#"image_auditor_alerts_total{sink="am",outcome="failed"}"#)
                .await
                >= 1.0
        })
        .await;
    assert_eq!(undelivered(&service, "am"), 1);
    am.restart();
    service
        .wait_until(
            "Alertmanager received the finding made while it was down",
            || async { !am.alerts().await.is_empty() },
        )
        .await;
    service
        .wait_until("the outbox is empty", || async {
            undelivered(&service, "am") == 0
        })
        .await;
    // It came back empty (alerts live in memory): only the new one was
    // sent again, once; nothing already delivered was repeated.
    let alerts = am.alerts().await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["labels"]["digest"], C);
    assert_eq!(
        service
            .metric(r#"image_auditor_alerts_total{sink="am",outcome="delivered"}"#)
            .await,
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_fact_in_25_registries_is_one_signed_alert_through_failing_receivers() {
    let hook = Receiver::start(2).await;
    let slack = Receiver::start(1).await;
    let dir = tempfile::tempdir().unwrap();
    // A longer hold than TIMING's, for 25 pushes to a debug build.
    let timing = TIMING.replace("group_wait: 1s", "group_wait: 5s");
    let config = format!(
        "resolve: false\n{timing}  sinks:\n  - name: hook\n    webhook:\n      url: {}\n      \
         hmac_secret: {HMAC_KEY}\n  - name: chat\n    slack:\n      url: {}\n",
        hook.url, slack.url
    );
    let service = Service::start(dir.path(), &regions_root(dir.path(), A, 25), &config).await;

    for region in 0..25 {
        service
            .push_gcr(&format!("n{region}"), &unpromoted(region, B))
            .await;
    }
    service
        .wait_until("both sinks delivered", || async {
            undelivered(&service, "hook") == 0 && undelivered(&service, "chat") == 0
        })
        .await;

    // Two failures, then the alert. The 25 findings are held `group_wait`
    // to arrive together; should some come later, they update the same
    // alert rather than raise another: one alert id, one `new`, and the
    // latest message names all 25 places.
    let requests = hook.requests();
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses[..2], [500, 500], "{statuses:?}");
    assert!(statuses[2..].iter().all(|s| *s == 200), "{statuses:?}");
    let accepted = hook.accepted_json();
    let first = &accepted[0];
    assert!(accepted.iter().all(|a| a["alert_id"] == first["alert_id"]));
    assert_eq!(first["status"], "new");
    assert!(accepted[1..].iter().all(|a| a["status"] == "updated"));
    let alert = accepted.last().unwrap().clone();
    let last = requests.last().unwrap();
    assert_eq!(alert["schema"], "image-auditor.alert.v1");
    assert_eq!(alert["verdict"], "unpromoted");
    assert_eq!(alert["severity"], "critical");
    assert_eq!(alert["image"], "app");
    assert_eq!(alert["digest"], B);
    assert_eq!(alert["evidence"], "not in any manifest");
    let mut expected: Vec<String> = (0..25).map(|i| format!("r{i}.example/prod/app")).collect();
    expected.sort();
    assert_eq!(alert["repositories"], json!(expected));
    assert_eq!(alert["events"].as_array().unwrap().len(), 25);
    assert_eq!(
        alert["summary"],
        format!("unpromoted: app@{} in 25 repositories", &B[..19])
    );
    // The signature verifies with the shared key over "timestamp.body".
    let headers = &last.headers;
    let timestamp = headers["x-image-auditor-timestamp"].to_str().unwrap();
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, HMAC_KEY.as_bytes());
    let signed = [timestamp.as_bytes(), b".", &last.body].concat();
    let expected_signature = format!("v1={}", hex::encode(aws_lc_rs::hmac::sign(&key, &signed)));
    assert_eq!(
        headers["x-image-auditor-signature"],
        expected_signature.as_str()
    );

    let chat = slack.accepted_json();
    assert_eq!(slack.requests()[0].status, 500, "one failure first");
    assert_eq!(chat.len(), accepted.len(), "the same alerts as the webhook");
    let text = chat.last().unwrap()["text"].as_str().unwrap();
    assert!(text.contains("*unpromoted* [critical]"), "{text}");
    assert!(text.contains("`r24.example/prod/app`"), "{text}");

    // The same fact again within the repeat window: an update of the same
    // alert, not a new one.
    service.push_gcr("n25", &unpromoted(3, B)).await;
    service
        .wait_until("the update was delivered", || async {
            hook.accepted_json().len() == accepted.len() + 1
        })
        .await;
    let update = hook.accepted_json().last().unwrap().clone();
    assert_eq!(update["status"], "updated");
    assert_eq!(update["alert_id"], alert["alert_id"]);
    assert_eq!(update["repositories"].as_array().unwrap().len(), 25);
    assert_eq!(update["events"].as_array().unwrap().len(), 26);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pubsub_topic_receives_the_alert_with_routing_attributes() {
    let fixture = Fixture::new("alerts-sink").await;
    let topic = fixture.topic.rsplit('/').next().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "resolve: false\n{TIMING}  sinks:\n  - name: topic\n    pubsub:\n      project: {PROJECT}\n      \
         topic: {topic}\n      endpoint: {}\n    min_severity: critical\n",
        fixture.endpoint
    );
    let service = Service::start(dir.path(), &regions_root(dir.path(), A, 1), &config).await;
    // A warning (unlisted tag) the route leaves out, then a critical one.
    service
        .push_gcr(
            "w1",
            &json!({"action": "INSERT", "digest": format!("r0.example/prod/app@{A}"),
               "tag": "r0.example/prod/app:nightly"}),
        )
        .await;
    service.push_gcr("c1", &unpromoted(0, B)).await;

    let subscriber = fixture.target.subscriber().await.unwrap();
    let mut stream = subscriber
        .subscribe(fixture.pull_config().subscription_name())
        .build();
    let (message, ack) = tokio::time::timeout(Duration::from_secs(60), stream.next())
        .await
        .expect("an alert message within a minute")
        .unwrap()
        .unwrap();
    ack.ack();
    let attributes = &message.attributes;
    assert_eq!(attributes["verdict"], "unpromoted");
    assert_eq!(attributes["severity"], "critical");
    assert_eq!(attributes["status"], "new");
    let alert: Value = serde_json::from_slice(&message.data).unwrap();
    assert_eq!(alert["alert_id"], attributes["alert_id"].as_str());
    assert_eq!(alert["events"][0]["id"], "c1");
    service
        .wait_until("the outbox is empty", || async {
            undelivered(&service, "topic") == 0
        })
        .await;
    assert_eq!(
        service
            .metric(r#"image_auditor_alerts_total{sink="topic",outcome="delivered"}"#)
            .await,
        1.0,
        "the warning was routed away, not sent"
    );
}

/// One rogue multi-arch push, end to end: skopeo pushes an unpromoted
/// 3-platform OCI index to a real `docker-registry`, which notifies the
/// running auditor of each platform manifest (pushed by digest first) and
/// then of the index. The resolver reads the index, and the four findings
/// reach the webhook and Alertmanager as one alert naming the index and its
/// three platform images.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpromoted_index_pushed_with_its_platform_images_is_one_alert() {
    const TOKEN: &str = "index-push-test-token-0123456789";
    let service_port = free_port();
    let registry = Registry::notifying(service_port, TOKEN);
    let host = registry.host.clone();
    let hook = Receiver::start(0).await;
    let am = Alertmanager::start();
    let dir = tempfile::tempdir().unwrap();

    let mut layout = Layout::create(&dir.path().join("layout"));
    let platforms = [("linux", "amd64"), ("linux", "arm64"), ("linux", "s390x")];
    let images: Vec<Desc> = platforms
        .iter()
        .map(|(_, arch)| layout.image(arch))
        .collect();
    let entries: Vec<(&Desc, Option<(&str, &str)>)> = images
        .iter()
        .zip(platforms)
        .map(|(d, p)| (d, Some(p)))
        .collect();
    let rogue = layout.index(&entries);
    layout.tag(&rogue, "v9");

    // `prod/etcd` is a destination; the rogue index is promoted nowhere.
    let root = dir.path().join("manifests-root");
    write_project(
        &root,
        "etcd",
        &format!("registries:\n- name: {host}/staging\n  src: true\n- name: {host}/prod\n"),
        &format!("- name: etcd\n  dmap:\n    \"{A}\": [\"3.5\"]\n"),
    );
    // The hold is long enough for four pushes and their notifications on a
    // busy machine; what is asserted is the grouping, not the time.
    let timing = TIMING.replace("group_wait: 1s", "group_wait: 10s");
    let config = format!(
        "resolve: true\nregistry:\n  insecure_http_hosts: [\"{host}\"]\n\
         webhooks:\n  distribution:\n  - name: local\n    registry: \"{host}\"\n    token: {TOKEN}\n\
         {timing}  timeout: 5s\n  sinks:\n  - name: hook\n    webhook:\n      url: {}\n  \
         - name: am\n    alertmanager:\n      url: {}\n",
        hook.url,
        am.url()
    );
    let service = Service::start_on(service_port, dir.path(), &root, &config).await;

    let pushed = skopeo_push(&layout.dir, "v9", &host, "prod/etcd", Push::default());
    assert_eq!(pushed, rogue.digest);

    // Four findings (three platform manifests and the index), every one
    // delivered to both sinks.
    let store = service.wait_for_decisions(4, Duration::from_secs(60)).await;
    assert_eq!(
        store.counts().unwrap().findings,
        4,
        "{}",
        service.log_tail()
    );
    service
        .wait_until("both sinks delivered all four findings", || async {
            undelivered(&service, "hook") == 0 && undelivered(&service, "am") == 0
        })
        .await;

    // The resolver recorded the index's entries with its finding, in the
    // index's order, as the last evidence entry.
    let stored = store
        .findings(&FindingQuery {
            digest: Some(rogue.digest.clone()),
            ..FindingQuery::default()
        })
        .unwrap();
    let in_order: Vec<Value> = images
        .iter()
        .zip(platforms)
        .map(|(d, (os, arch))| json!({"digest": d.digest.to_string(), "platform": format!("{os}/{arch}")}))
        .collect();
    assert_eq!(
        stored[0].evidence,
        json!([{"pushed_list": {"children": in_order}}])
    );

    let alerts = hook.accepted_json();
    assert_eq!(alerts.len(), 1, "one alert for one push: {alerts:#?}");
    let alert = &alerts[0];
    assert_eq!(alert["status"], "new");
    assert_eq!(alert["verdict"], "unpromoted");
    assert_eq!(alert["digest"], rogue.digest.to_string());
    assert_eq!(alert["tag"], "v9");
    assert_eq!(
        alert["summary"],
        format!(
            "unpromoted: etcd:v9@{} (index + 3 platform images) in 1 repository",
            &rogue.digest.to_string()[..19]
        )
    );
    assert_eq!(alert["repositories"], json!([format!("{host}/prod/etcd")]));
    let mut expected: Vec<Value> = images
        .iter()
        .zip(platforms)
        .map(|(d, (os, arch))| json!({"platform": format!("{os}/{arch}"), "digest": d.digest.to_string()}))
        .collect();
    expected.sort_by_key(|c| c["platform"].as_str().unwrap().to_owned());
    assert_eq!(alert["children"], json!(expected));
    assert_eq!(alert["events"].as_array().unwrap().len(), 4);
    assert_eq!(alert["finding_ids"].as_array().unwrap().len(), 4);
    assert_eq!(alert["evidence"], "not in any manifest");

    let listed = am.alerts().await;
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0]["labels"]["digest"], rogue.digest.to_string());
    let platform_images = listed[0]["annotations"]["platform_images"]
        .as_str()
        .unwrap();
    for (d, (os, arch)) in images.iter().zip(platforms) {
        assert!(
            platform_images.contains(&format!("{os}/{arch} {}", d.digest)),
            "{platform_images}"
        );
    }
}
