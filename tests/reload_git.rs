//! Living manifests: `serve` following a real git repository (created by
//! the test, read over `file://` by a service that has no `git` program on
//! its PATH) and a watched directory; a broken
//! project keeps its last good version and is reported once; a promotion
//! committed after the last poll is found before an event is rejected;
//! audits never fail or see a torn index while reloads happen.

use crate::support;

use std::path::Path;

use image_auditor::findings::{FindingQuery, SqliteStore, Store};
use serde_json::{Value, json};
use support::git::{GitDaemon, Mode, Proxy, Repo, digest};
use support::service::Service;

async fn get(service: &Service, path: &str) -> (u16, Value) {
    let response = reqwest::get(service.url(path)).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

async fn promoted(service: &Service, d: String) -> bool {
    get(service, &format!("/v1/digests/{d}")).await.0 == 200
}

/// The index `/readyz` describes (commit, generation).
async fn readyz_index(service: &Service) -> Value {
    get(service, "/readyz").await.1["index"].clone()
}

/// The service in `dir`, following the manifest tree of `repo` as a
/// watched directory (not through git), with `reload` lines added to its
/// `reload` section.
async fn watching(dir: &Path, repo: &Repo, reload: &str) -> Service {
    let root = repo.dir.join("registry");
    let config = format!("resolve: false\nreload:\n  watch_interval: 100ms\n{reload}");
    Service::start(dir, &root, &config).await
}

/// Message `id` of GCR: `digest` (with `tag`, if any) pushed to
/// `a.example/prod/app`; the service's answer.
async fn push_to_a(service: &Service, id: &str, digest: &str, tag: Option<&str>) -> Value {
    let mut payload = json!({"action": "INSERT", "digest": format!("a.example/prod/app@{digest}")});
    if let Some(tag) = tag {
        payload["tag"] = json!(format!("a.example/prod/app:{tag}"));
    }
    service.push_gcr(id, &payload).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_follows_commits_and_a_broken_project_keeps_its_last_good_version() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(dir.path());
    let first = repo.git(&["rev-parse", "HEAD"]);
    let service = Service::start_from_git(dir.path(), &repo.config("200ms")).await;
    let (_, ready) = get(&service, "/readyz").await;
    assert_eq!(ready["index"]["commit"], first.as_str());
    assert_eq!(ready["index"]["generation"], 1);

    // A promotion is merged: the index follows within a poll.
    repo.images("a", &[(digest(1), "1.0"), (digest(3), "2.0")]);
    let second = repo.commit("promote a 2.0");
    service
        .wait_until("a 2.0 is promoted", || promoted(&service, digest(3)))
        .await;
    assert_eq!(readyz_index(&service).await["commit"], second.as_str());

    // A merge breaks b and changes a: a updates, b stays as it was.
    repo.write(
        "registry/images/b/images.yaml",
        "- name: app\n  dmap:\n    \"sha256:123\": [\"1.0\"]\n",
    );
    repo.images(
        "a",
        &[(digest(1), "1.0"), (digest(3), "2.0"), (digest(4), "3.0")],
    );
    repo.commit("break b, promote a 3.0");
    service
        .wait_until("a 3.0 is promoted", || promoted(&service, digest(4)))
        .await;
    assert!(
        promoted(&service, digest(2)).await,
        "b's last good version stays"
    );
    let findings = service.manifest_findings();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert!(
        findings[0].contains("project b") && findings[0].contains("sha256:123"),
        "{}",
        findings[0]
    );

    // b stays broken over another commit: still one finding.
    repo.images(
        "a",
        &[
            (digest(1), "1.0"),
            (digest(3), "2.0"),
            (digest(4), "3.0"),
            (digest(5), "4.0"),
        ],
    );
    let last = repo.commit("promote a 4.0");
    service
        .wait_until("a 4.0 is promoted", || promoted(&service, digest(5)))
        .await;
    assert_eq!(service.manifest_findings().len(), 1);
    let (_, ready) = get(&service, "/readyz").await;
    assert_eq!(ready["index"]["commit"], last.as_str());
    assert_eq!(ready["index"]["generation"], 4);
    let metrics = service.metrics().await;
    let commits: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("image_auditor_index_commit_info{"))
        .collect();
    assert_eq!(
        commits,
        [format!(
            "image_auditor_index_commit_info{{commit=\"{last}\"}} 1"
        )]
    );
    // Findings carry the commit they were decided at.
    let answer = push_to_a(&service, "late", &digest(9), None).await;
    assert_eq!(answer["verdict"], "unpromoted");
    let finding = SqliteStore::open(service.findings_db())
        .unwrap()
        .findings(&FindingQuery::default())
        .unwrap()
        .into_iter()
        .find(|f| f.key.event_id.0 == "late")
        .unwrap();
    assert_eq!(finding.manifest_commit.as_deref(), Some(last.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_committed_after_the_last_poll_is_found_before_rejecting() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(dir.path());
    // The poll would not come for an hour: only refresh-before-reject can
    // see the new commit.
    let service = Service::start_from_git(dir.path(), &repo.config("1h")).await;
    repo.images("a", &[(digest(1), "1.0"), (digest(6), "5.0")]);
    repo.commit("promote a 5.0");
    let answer = push_to_a(&service, "just-merged", &digest(6), Some("5.0")).await;
    assert_eq!(answer["verdict"], "promoted", "{}", service.log());
    // What no commit explains is still reported.
    let answer = push_to_a(&service, "stray", &digest(7), None).await;
    assert_eq!(answer["verdict"], "unpromoted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audits_never_fail_nor_see_a_torn_index_while_reloads_happen() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(dir.path());
    let service = Service::start_from_git(dir.path(), &repo.config("1h")).await;
    let check =
        json!({"references": [format!("a.example/prod/app:1.0@{}", digest(1))]}).to_string();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let auditor = {
        let (url, stop, check) = (service.url("/v1/check"), stop.clone(), check.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut seen = std::collections::BTreeMap::<String, usize>::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(check.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status().as_u16(), 200);
                let body: Value = response.json().await.unwrap();
                *seen
                    .entry(body["results"][0]["verdict"].as_str().unwrap().to_owned())
                    .or_default() += 1;
            }
            seen
        })
    };
    // Flip a's tag 1.0 between two digests and reload each time: every
    // audit must see one state or the other.
    let client = reqwest::Client::new();
    for round in 0..20 {
        let promoted_digest = if round % 2 == 0 { digest(8) } else { digest(1) };
        repo.images("a", &[(promoted_digest, "1.0")]);
        repo.commit(&format!("round {round}"));
        let response = client.post(service.url("/-/reload")).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let outcome: Value = response.json().await.unwrap();
        assert_eq!(outcome["changed"], true);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = auditor.await.unwrap();
    let verdicts: Vec<&str> = seen.keys().map(String::as_str).collect();
    assert!(
        verdicts
            .iter()
            // digest 1 with its promised tag, or digest 1 promoted nowhere.
            .all(|v| ["promoted", "unpromoted"].contains(v)),
        "{seen:?}"
    );
    assert_eq!(readyz_index(&service).await["generation"], 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_directory_is_followed_and_sighup_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(dir.path());
    let service = watching(dir.path(), &repo, "").await;
    assert_eq!(readyz_index(&service).await["commit"], Value::Null);
    repo.images("b", &[(digest(2), "1.0"), (digest(10), "2.0")]);
    service
        .wait_until("the edit is picked up", || promoted(&service, digest(10)))
        .await;
    let generation = readyz_index(&service).await["generation"].as_u64().unwrap();
    service.signal("-HUP");
    service
        .wait_until("SIGHUP rebuilt the index", || async {
            readyz_index(&service).await["generation"].as_u64() == Some(generation + 1)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_commit_keeps_the_last_good_index_and_is_reported_once() {
    const REJECTED: &str = "image_auditor_rejected_requests_total{reason=\"manifest_entries\"}";
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(dir.path());
    let service = watching(dir.path(), &repo, "  limits:\n    max_entries: 40\n").await;
    let root = repo.dir.join("registry");

    // Six symlinks to the root: each would be a whole copy of the tree,
    // nested at every level. Walked once, the set reloads.
    for n in 0..6 {
        std::os::unix::fs::symlink(".", root.join(format!("loop{n}"))).unwrap();
    }
    repo.images("b", &[(digest(2), "1.0"), (digest(10), "2.0")]);
    service
        .wait_until("the set with symlinks is reloaded", || {
            promoted(&service, digest(10))
        })
        .await;
    let generation = readyz_index(&service).await["generation"].clone();

    // Over the entry budget: not loaded at all, however many polls see it.
    // The files land in one rename, so no poll sees a set under budget.
    let notes = dir.path().join("notes");
    std::fs::create_dir(&notes).unwrap();
    for n in 0..50 {
        std::fs::write(notes.join(format!("{n}.txt")), "x").unwrap();
    }
    std::fs::rename(&notes, root.join("notes")).unwrap();
    repo.images("b", &[(digest(2), "1.0"), (digest(11), "3.0")]);
    service
        .wait_until("three polls refused the set", || async {
            service.metric(REJECTED).await >= 3.0
        })
        .await;
    let (status, ready) = get(&service, "/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["index"]["generation"], generation, "{ready}");
    assert!(
        promoted(&service, digest(10)).await,
        "the last good index stays"
    );
    assert!(!promoted(&service, digest(11)).await);
    let findings = service.manifest_findings();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert!(
        findings[0].contains("reload.limits.max_entries"),
        "{findings:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_when_a_reload_is_stuck() {
    let dir = tempfile::tempdir().unwrap();
    let _repo = Repo::new(dir.path());
    let daemon = GitDaemon::start(dir.path(), true).await;
    let proxy = Proxy::start(daemon.port).await;
    let url = proxy.url(&daemon.url("k8s.io"), daemon.port);
    let config = format!(
        "{}  stuck_after: 1s\n",
        Repo::config_at(&url, "1h").replace(
            "  poll_interval: 1h\n",
            "  poll_interval: 1h\n  command_timeout: 10m\n"
        )
    );
    let service = Service::start(dir.path(), &dir.path().join("unused"), &config).await;
    assert_eq!(get(&service, "/readyz").await.0, 200);

    // The git server accepts connections and never answers: the next
    // fetch hangs until its command timeout.
    proxy.set(Mode::Hang);
    let reload = tokio::spawn({
        let url = service.url("/-/reload");
        async move { reqwest::Client::new().post(url).send().await }
    });
    service
        .wait_until("/readyz reports the stuck reload", || async {
            let (status, body) = get(&service, "/readyz").await;
            status == 503
                && body["reload_stuck"]
                    .as_str()
                    .is_some_and(|r| r.contains("reload"))
        })
        .await;

    // The server goes away (the held connections close): the fetch fails,
    // the reload ends, ready again.
    drop(proxy);
    let _ = reload.await;
    service
        .wait_until("/readyz is 200 again", || async {
            get(&service, "/readyz").await.0 == 200
        })
        .await;
}
