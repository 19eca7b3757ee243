//! What only the PostgreSQL store has: a server that goes away and comes
//! back under a running `serve`, the unix socket Cloud SQL is reached by,
//! `store status|migrate` on a database, and a URL whose password is never
//! shown. The store's contract itself is tests/store_contract.rs.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

use image_auditor::audit::VerdictKind;
use image_auditor::event::{Action, EndpointName, EventId, Source};
use image_auditor::findings::{Backend, Decision, PostgresConfig, PostgresStore, Recorded, Store};
use serde_json::{Value, json};
use support::decisions::key;
use support::fixtures::one_project;
use support::postgres::Postgres;
use support::service::Service;

const TOKEN: &str = "distribution-test-token-0123456789";
const D: &str = "sha256:4ad90a11b55313b182afc186b9876c8e891531b8db4c9bf1541953021618d0e2";
const EVENTS_V1: &str = "application/vnd.docker.distribution.events.v1+json";
/// Never needed (trust authentication), so never sent: it must never show.
const PASSWORD: &str = "n0t-to-be-logged";

fn manifests(dir: &Path) -> PathBuf {
    one_project(
        dir,
        "demo",
        "registries:\n- name: registry.example/staging\n  src: true\n\
         - name: registry.example/prod\n",
        &format!("- name: app\n  dmap:\n    \"{D}\": [\"v1\"]\n"),
    )
}

/// A URL with a password, in a file as a mounted secret would be.
fn url_file(dir: &Path, pg: &Postgres, database: &str) -> PathBuf {
    let url = pg
        .url(database)
        .replacen("postgres@", &format!("postgres:{PASSWORD}@"), 1);
    let file = dir.join("database-url");
    std::fs::write(&file, format!("{url}\n")).unwrap();
    file
}

async fn webhook(service: &Service, ids: &[&str]) -> (u16, Value) {
    let events: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({"id": id, "action": "push", "target": {
                "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": D,
                "repository": "prod/app", "tag": "v1"}})
        })
        .collect();
    let response = reqwest::Client::new()
        .post(service.url("/webhooks/distribution"))
        .header("content-type", EVENTS_V1)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(json!({ "events": events }).to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

async fn readyz(service: &Service) -> (u16, Value) {
    let response = reqwest::get(service.url("/readyz")).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// PostgreSQL stopped under a running `serve` is a registry that is down:
/// deliveries are answered 503 (never acknowledged), `/readyz` says why,
/// and when the server is back the service recovers by itself.
#[tokio::test]
async fn a_store_that_is_down_is_answered_503_and_recovers_unaided() {
    let mut pg = Postgres::start();
    let database = pg.fresh_database();
    let dir = tempfile::tempdir().unwrap();
    let root = manifests(dir.path());
    let config = format!(
        "resolve: false\nstore:\n  postgres:\n    url_file: {}\n    connect_timeout: 2s\n\
         webhooks:\n  distribution:\n  - name: local\n    registry: registry.example\n    \
         token: {TOKEN}\n",
        url_file(dir.path(), &pg, &database).display()
    );
    let service = Service::start(dir.path(), &root, &config).await;

    let (status, body) = webhook(&service, &["e1"]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decided"][0]["verdict"], "promoted");
    let (status, ready) = readyz(&service).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(
        ready["store"],
        json!({"backend": "postgres", "available": true, "error": null})
    );

    pg.stop();
    let (status, body) = webhook(&service, &["e2"]).await;
    assert_eq!(status, 503, "{body}");
    let (status, ready) = readyz(&service).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["ready"], false);
    assert_eq!(ready["store"]["available"], false);
    let reason = ready["store"]["error"].as_str().unwrap();
    assert!(
        reason.contains(&format!(
            "postgres://postgres@127.0.0.1:{}/{database}",
            pg.port
        )),
        "{reason}"
    );
    assert!(reason.contains("unavailable"), "{reason}");

    pg.restart();
    service
        .wait_until("/readyz says ready again", || async {
            readyz(&service).await.0 == 200
        })
        .await;
    // The delivery refused while the store was down is recorded now; the
    // one recorded before is recognised.
    let (status, body) = webhook(&service, &["e2", "e1"]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decided"][0]["duplicate"], false);
    assert_eq!(body["decided"][1]["duplicate"], true);
    assert_eq!(
        pg.psql(
            &database,
            "SELECT string_agg(event_id, ',' ORDER BY event_id) FROM decisions"
        ),
        "e1,e2"
    );

    let log = service.log();
    assert!(log.contains("cannot record the decision"), "{log}");
    assert!(!log.contains(PASSWORD), "the password was logged:\n{log}");
}

/// Cloud SQL is reached through a unix socket (`host=/cloudsql/…`): a host
/// that is a directory is one, in a URL or in key=value pairs.
#[test]
fn the_unix_socket_is_a_host_as_for_cloud_sql() {
    let pg = Postgres::shared();
    let database = pg.fresh_database();
    let config = PostgresConfig {
        url_env: Some("UNUSED".into()),
        pool_size: 2,
        ..PostgresConfig::default()
    };
    let store = PostgresStore::open_url(&config, &pg.socket_url(&database)).unwrap();
    assert!(
        store.name().contains(&pg.socket_dir.display().to_string()),
        "{}",
        store.name()
    );
    let decision = Decision {
        key: key(
            Source::Harbor,
            &EndpointName("prod".into()),
            "over-the-socket",
        ),
        received_at_ms: 1,
        action: Some(Action::Insert),
        repository: None,
        digest: None,
        tag: None,
        verdict: VerdictKind::Unpromoted,
        reason: "test".into(),
        evidence: vec![],
        manifest_commit: None,
        index_generation: 1,
        excepted_by: None,
    };
    assert!(matches!(
        store.record(&decision).unwrap(),
        Recorded::New { finding: Some(_) }
    ));
    // The same database over TCP sees it.
    let tcp = PostgresStore::open_url(&config, &pg.url(&database)).unwrap();
    assert!(matches!(
        tcp.record(&decision).unwrap(),
        Recorded::Duplicate { .. }
    ));
    // The URL form of a socket host: percent-encoded in the host part.
    let encoded = pg.socket_dir.display().to_string().replace('/', "%2F");
    let url = format!("postgres://postgres@{encoded}:{}/{database}", pg.port);
    let again = PostgresStore::open_url(&config, &url).unwrap();
    assert_eq!(again.counts().unwrap().findings, 1);
}

/// `store status` and `store migrate` with a configuration naming a
/// PostgreSQL database.
#[test]
fn store_status_and_migrate_on_postgres() {
    let pg = Postgres::shared();
    let database = pg.fresh_database();
    let dir = tempfile::tempdir().unwrap();
    let root = manifests(dir.path());
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "manifests: {}\ndata_dir: {}\nstore:\n  postgres:\n    url_file: {}\n",
            root.display(),
            dir.path().join("data").display(),
            url_file(dir.path(), pg, &database).display()
        ),
    )
    .unwrap();
    let store = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_image-auditor"))
            .arg("store")
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap()
    };
    let known = Backend::Postgres.known_version();

    let out = store(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["backend"], "postgres");
    assert_eq!(
        (status["found"].as_i64(), status["known"].as_i64()),
        (Some(0), Some(known))
    );
    assert_eq!(status["pending"].as_array().unwrap().len() as i64, known);
    assert_eq!(
        status["store"],
        format!("postgres://postgres@127.0.0.1:{}/{database}", pg.port)
    );

    let out = store(&["migrate"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&format!("schema version 0 -> {known}")),
        "{text}"
    );
    assert!(text.contains("applied 1 "), "{text}");
    assert_eq!(
        pg.psql(
            &database,
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations"
        ),
        (1..=known)
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );

    let out = store(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&format!("schema: version {known}, up to date")),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");

    // A server that does not answer: named, and exit 2.
    let mut gone = Postgres::start();
    let gone_db = gone.fresh_database();
    let gone_config = dir.path().join("gone.yaml");
    std::fs::write(
        &gone_config,
        format!(
            "manifests: {}\ndata_dir: {}\nstore:\n  postgres:\n    url_file: {}\n    \
             connect_timeout: 2s\n",
            root.display(),
            dir.path().join("data").display(),
            url_file(gone.dir(), &gone, &gone_db).display()
        ),
    )
    .unwrap();
    gone.stop();
    let out = Command::new(env!("CARGO_BIN_EXE_image-auditor"))
        .args(["store", "migrate", "--config"])
        .arg(&gone_config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("127.0.0.1:{}/{gone_db}", gone.port)),
        "{err}"
    );
    assert!(!err.contains(PASSWORD), "{err}");
}

/// Replicas share the undecided retry budget: a delivery first seen
/// undecided by one replica two hours ago is, on another with a one-hour
/// budget, past it and recorded `unverifiable`; one seen now is retried by
/// both, and forgotten once decided. A plain test: the store blocks, so it
/// is opened and asked outside the runtime the pipelines run on.
#[test]
fn replicas_share_the_undecided_retry_budget() {
    use std::sync::Arc;
    use std::time::Duration;

    use arc_swap::ArcSwap;
    use image_auditor::audit::Policy;
    use image_auditor::event::Event;
    use image_auditor::findings::now_ms;
    use image_auditor::index::Index;
    use image_auditor::metrics::Metrics;
    use image_auditor::pipeline::Pipeline;
    use image_auditor::sources::{Delivery, Disposition};

    let pg = Postgres::shared();
    let database = pg.fresh_database();
    let dir = tempfile::tempdir().unwrap();
    let root = manifests(dir.path());
    // A project whose manifests fail validation: what lands in its
    // destination cannot be judged until they are fixed.
    std::fs::create_dir_all(root.join("manifests/broken")).unwrap();
    std::fs::create_dir_all(root.join("images/broken")).unwrap();
    std::fs::write(
        root.join("manifests/broken/promoter-manifest.yaml"),
        "registries:\n- name: registry.example/broken-staging\n  src: true\n\
         - name: registry.example/broken\n",
    )
    .unwrap();
    std::fs::write(
        root.join("images/broken/images.yaml"),
        "- name: app\n  dmap:\n    \"sha256:0\": [\"v1\"]\n",
    )
    .unwrap();
    let set = image_auditor::manifest::load(&root).unwrap();
    assert_eq!(set.errors().count(), 1, "the broken project is left out");
    let index = Arc::new(ArcSwap::from_pointee(Index::build(&set, 1)));
    let config = PostgresConfig {
        url_env: Some("UNUSED".into()),
        pool_size: 2,
        ..PostgresConfig::default()
    };
    let replica = || {
        let store: Arc<dyn Store> =
            Arc::new(PostgresStore::open_url(&config, &pg.url(&database)).unwrap());
        let pipeline = Pipeline::new(
            index.clone(),
            None,
            store.clone(),
            Policy::default(),
            Arc::new(Metrics::default()),
            Duration::from_secs(3600),
        );
        (pipeline, store)
    };
    let (a, store_a) = replica();
    let (b, _) = replica();
    let endpoint = EndpointName("local".into());
    let delivery = |id: &str| Delivery {
        source: Source::Distribution,
        endpoint: endpoint.clone(),
        id: EventId(id.into()),
        decoded: Ok(Event {
            id: EventId(id.into()),
            source: Source::Distribution,
            action: Action::Insert,
            repository: "registry.example/broken/app".parse().unwrap(),
            digest: Some(format!("sha256:{}", "e".repeat(64)).parse().unwrap()),
            tag: None,
        }),
    };

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let started = now_ms();
    let handled = runtime.block_on(a.handle(delivery("fresh")));
    assert_eq!(handled.disposition, Disposition::Retry, "{handled:?}");
    let handled = runtime.block_on(b.handle(delivery("fresh")));
    assert_eq!(handled.disposition, Disposition::Retry, "{handled:?}");
    let first = store_a
        .first_undecided(&key(Source::Distribution, &endpoint, "fresh"), i64::MAX)
        .unwrap();
    assert!((started..=now_ms()).contains(&first), "{first}");

    // First seen two hours ago, by a replica since gone.
    let two_hours_ago = now_ms() - 7_200_000;
    store_a
        .first_undecided(&key(Source::Distribution, &endpoint, "old"), two_hours_ago)
        .unwrap();
    let handled = runtime.block_on(b.handle(delivery("old")));
    assert_eq!(handled.disposition, Disposition::Ack, "{handled:?}");
    assert_eq!(handled.verdict, Some(VerdictKind::Unverifiable));
    let reason = pg.psql(
        &database,
        "SELECT reason FROM findings WHERE event_id = 'old'",
    );
    assert!(reason.starts_with("still undecided after 720"), "{reason}");
    // Decided: its budget row is gone.
    assert_eq!(
        pg.psql(&database, "SELECT string_agg(event_id, ',') FROM undecided"),
        "fresh"
    );
}
