//! `manifests_git` against real git servers started on loopback: `git
//! daemon` (git://) and `git http-backend` behind a CGI server (smart HTTP,
//! what GitHub speaks). The service runs with no program on its PATH, so
//! it cannot lean on `git`. A force-push, a deleted branch, a server that
//! never answers and a corrupt pack each keep the live index and are
//! reported once; what a sync transfers and keeps on disk follows the
//! manifest tree, not the repository.

use crate::support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use image_auditor::manifest::Budget;
use image_auditor::manifest::origin::{GitConfig, ManifestOrigin, OriginError, Version};
use serde_json::Value;
use support::git::{GitDaemon, HttpBackend, Mode, Proxy, Repo, digest, disk_used, git};
use support::service::Service;

async fn commit_served(service: &Service) -> Value {
    let response = reqwest::get(service.url("/readyz")).await.unwrap();
    response.json::<Value>().await.unwrap()["index"]["commit"].clone()
}

/// `POST /-/reload`: true when the sync and load succeeded.
async fn reload(service: &Service) -> bool {
    let response = reqwest::Client::new()
        .post(service.url("/-/reload"))
        .send()
        .await
        .unwrap();
    response.status().is_success()
}

/// A reload succeeds and the index served is then at `commit`.
async fn assert_reloads_to(service: &Service, commit: &str) {
    assert!(reload(service).await, "{}", service.log_tail());
    assert_eq!(commit_served(service).await, commit);
}

/// Two reloads fail, the index served stays at `commit`, and the failure
/// (the manifest finding whose reason contains `about`) is reported once.
/// Other findings may stand beside it: a poll that catches the repository
/// mid-change reports what it saw, which is a different problem.
async fn two_failed_reloads(service: &Service, commit: &str, about: &str) {
    assert!(!reload(service).await);
    assert!(!reload(service).await);
    assert_eq!(commit_served(service).await, commit);
    let findings = service.manifest_findings();
    let reported = findings.iter().filter(|f| f.contains(about)).count();
    assert_eq!(reported, 1, "findings about {about:?}: {findings:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_daemon_branch_is_followed_through_commits_a_force_push_and_a_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(dir.path());
    let first = repo.head();
    let daemon = GitDaemon::start(dir.path(), true).await;
    let service =
        Service::start_from_git(dir.path(), &Repo::config_at(&daemon.url("k8s.io"), "200ms")).await;
    assert_eq!(commit_served(&service).await, first.as_str());

    // A commit is followed by the poll.
    repo.images("a", &[(digest(1), "1.0"), (digest(3), "2.0")]);
    let second = repo.commit("promote a 2.0");
    service
        .wait_until("the poll follows the commit", || async {
            commit_served(&service).await == second.as_str()
        })
        .await;

    // The branch is rewritten (what a force-push leaves on the server).
    repo.git(&["reset", "--quiet", "--hard", &first]);
    repo.images("a", &[(digest(1), "1.0"), (digest(4), "3.0")]);
    let rewritten = repo.commit("rewrite a");
    assert_reloads_to(&service, &rewritten).await;

    // The branch is deleted: the index stays, reported once however many
    // syncs fail.
    repo.git(&["checkout", "--quiet", "-b", "elsewhere"]);
    repo.git(&["branch", "--quiet", "-D", "main"]);
    two_failed_reloads(&service, &rewritten, "no branch main").await;

    // It comes back.
    repo.git(&["branch", "main"]);
    assert_reloads_to(&service, &rewritten).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_and_a_corrupt_pack_keep_the_index_and_are_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(dir.path());
    let first = repo.head();
    let daemon = GitDaemon::start(dir.path(), true).await;
    let proxy = Proxy::start(daemon.port).await;
    let url = proxy.url(&daemon.url("k8s.io"), daemon.port);
    let service = Service::start_from_git(
        dir.path(),
        &Repo::config_at(&url, "1h").replace(
            "  poll_interval: 1h\n",
            // Long enough for a real sync on a loaded machine.
            "  poll_interval: 1h\n  command_timeout: 5s\n",
        ),
    )
    .await;
    assert_eq!(commit_served(&service).await, first.as_str());
    repo.images("a", &[(digest(1), "1.0"), (digest(3), "2.0")]);
    let second = repo.commit("promote a 2.0");

    proxy.set(Mode::Hang);
    two_failed_reloads(&service, &first, "no answer within 5s").await;

    proxy.set(Mode::CorruptPack);
    two_failed_reloads(&service, &first, "pack sent by the remote").await;

    proxy.set(Mode::Relay);
    assert_reloads_to(&service, &second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smart_http_with_a_token_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(dir.path());
    let backend = HttpBackend::start(dir.path(), Some("s3cret")).await;
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let service = Service::start_from_git(
        dir.path(),
        &Repo::config_at(&backend.url("k8s.io"), "1h").replace(
            "  poll_interval",
            &format!("  token_file: {}\n  poll_interval", token.display()),
        ),
    )
    .await;
    assert_eq!(commit_served(&service).await, repo.head().as_str());
    repo.images("b", &[(digest(2), "1.0"), (digest(5), "2.0")]);
    let second = repo.commit("promote b 2.0");
    assert_reloads_to(&service, &second).await;

    // A revoked token: the index stays.
    std::fs::write(&token, "revoked\n").unwrap();
    repo.images("b", &[(digest(2), "1.0"), (digest(6), "3.0")]);
    repo.commit("promote b 3.0");
    assert!(!reload(&service).await);
    assert_eq!(commit_served(&service).await, second.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_times_out_over_git_and_smart_http() {
    let dir = tempfile::tempdir().unwrap();
    Repo::new(dir.path());
    let daemon = GitDaemon::start(dir.path(), true).await;
    let backend = HttpBackend::start(dir.path(), None).await;
    for (url, port) in [
        (daemon.url("k8s.io"), daemon.port),
        (backend.url("k8s.io"), backend.port),
    ] {
        let proxy = Proxy::start(port).await;
        proxy.set(Mode::Hang);
        let mut source = git_source(&proxy.url(&url, port), &dir.path().join("checkout"), "");
        if let ManifestOrigin::Git { config, .. } = &mut source {
            config.command_timeout = Duration::from_secs(3);
        }
        let error = source.sync(&Budget::default()).await.unwrap_err();
        assert!(
            matches!(error, OriginError::Timeout { .. }),
            "{url}: {error}"
        );
        // Once the server answers, the same source syncs.
        proxy.set(Mode::Relay);
        assert!(source.sync(&Budget::default()).await.is_ok(), "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_over_the_byte_budget_keeps_the_index_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(dir.path());
    let first = repo.head();
    let daemon = GitDaemon::start(dir.path(), true).await;
    let service = Service::start_from_git(
        dir.path(),
        &Repo::config_at(&daemon.url("k8s.io"), "1h").replace(
            "  poll_interval: 1h\n",
            "  poll_interval: 1h\n  max_bytes: 32768\n",
        ),
    )
    .await;
    // 64 KiB that does not compress, inside the manifest tree.
    let noise: String = (0..65536).map(|_| fastrand::alphanumeric()).collect();
    repo.write("registry/images/a/noise.txt", &noise);
    repo.commit("a large file among the manifests");
    two_failed_reloads(&service, &first, "manifests_git.max_bytes").await;
    let metrics = service.metrics().await;
    assert!(
        metrics.contains(
            "image_auditor_rejected_requests_total{reason=\"manifest_fetch_too_large\"} 2"
        ),
        "{metrics}"
    );

    // Read in place over file://, the written tree is bounded the same way.
    let mut source = git_source(&repo.file_url(), &dir.path().join("checkout"), "registry");
    if let ManifestOrigin::Git { config, .. } = &mut source {
        config.max_bytes = 32768;
    }
    let error = source.sync(&Budget::default()).await.unwrap_err();
    assert!(matches!(error, OriginError::TooLarge { .. }), "{error}");
}

fn git_source(url: &str, checkout: &Path, path: &str) -> ManifestOrigin {
    ManifestOrigin::Git {
        config: GitConfig {
            url: url.to_owned(),
            branch: "main".into(),
            path: PathBuf::from(path),
            poll_interval: Duration::from_secs(60),
            command_timeout: Duration::from_secs(60),
            token_env: None,
            token_file: None,
            max_bytes: 256 << 20,
        },
        checkout: checkout.to_path_buf(),
    }
}

/// A repository like kubernetes/k8s.io in miniature, written with `git
/// fast-import`: `commits` commits, each changing a file outside the
/// manifests, `big_mib` MiB of incompressible files outside the manifests
/// at the tip, and a manifest tree below `registry/`. Returns the manifest
/// tree's size in bytes.
fn big_repository(dir: &Path, commits: usize, big_mib: usize) -> u64 {
    use std::io::Write as _;
    git(dir, &["init", "--quiet", "--bare", "--initial-branch=main"]);
    let mut stream = Vec::new();
    let blob = |stream: &mut Vec<u8>, mark: usize, data: &[u8]| {
        write!(stream, "blob\nmark :{mark}\ndata {}\n", data.len()).unwrap();
        stream.extend_from_slice(data);
        stream.push(b'\n');
    };
    let random = |n: usize| (0..n).map(|_| fastrand::u8(..)).collect::<Vec<u8>>();
    let mut manifests = Vec::new();
    for project in 0..40 {
        let mut images = String::from("- name: app\n  dmap:\n");
        for n in 0..20 {
            images.push_str(&format!(
                "    \"sha256:{:064x}\": [\"v1.{n}\"]\n",
                project * 100 + n
            ));
        }
        manifests.push((format!("registry/images/p{project}/images.yaml"), images));
        manifests.push((
            format!("registry/manifests/p{project}/promoter-manifest.yaml"),
            format!(
                "registries:\n- name: staging.example/p{project}\n  src: true\n- name: p{project}.example/prod\n"
            ),
        ));
    }
    let manifest_size = manifests.iter().map(|(_, t)| t.len() as u64).sum();
    let mut mark = 1;
    for (_, text) in &manifests {
        blob(&mut stream, mark, text.as_bytes());
        mark += 1;
    }
    let big_first = mark;
    for _ in 0..big_mib {
        blob(&mut stream, mark, &random(1 << 20));
        mark += 1;
    }
    for n in 0..commits {
        let history = mark;
        blob(&mut stream, history, &random(2048));
        mark += 1;
        write!(
            stream,
            "commit refs/heads/main\ncommitter t <t@example.invalid> {} +0000\ndata 8\ncommit {}\n",
            1_700_000_000 + n,
            n % 10
        )
        .unwrap();
        if n == 0 {
            for (i, (path, _)) in manifests.iter().enumerate() {
                writeln!(stream, "M 100644 :{} {path}", i + 1).unwrap();
            }
            for i in 0..big_mib {
                writeln!(stream, "M 100644 :{} big/blob{i}.bin", big_first + i).unwrap();
            }
        }
        writeln!(stream, "M 100644 :{history} other/history-{}.log", n % 50).unwrap();
        stream.push(b'\n');
    }
    let mut child = std::process::Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&stream).unwrap();
    assert!(child.wait().unwrap().success());
    manifest_size
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sync_and_a_quiet_poll_cost_follow_the_manifests_not_the_repository() {
    let dir = tempfile::tempdir().unwrap();
    let served = dir.path().join("big.git");
    std::fs::create_dir_all(&served).unwrap();
    let manifest_size = big_repository(&served, 3000, 24);
    let repository_size = disk_used(&served);
    let daemon = GitDaemon::start(dir.path(), true).await;
    let proxy = Proxy::start(daemon.port).await;
    let url = proxy.url(&daemon.url("big.git"), daemon.port);

    let checkout = dir.path().join("checkout");
    let source = git_source(&url, &checkout, "registry");
    let first = source.sync(&Budget::default()).await.unwrap();
    let first_bytes = proxy.take_bytes();
    let first_disk = disk_used(&checkout);
    let again = source.sync(&Budget::default()).await.unwrap();
    let poll_bytes = proxy.take_bytes();
    assert_eq!(first, again);
    assert!(matches!(first, Version::Commit(_)));
    assert!(
        checkout
            .join("tree/registry/images/p39/images.yaml")
            .is_file(),
        "the manifest tree is written out"
    );
    assert!(!checkout.join("tree/big").exists());
    println!(
        "repository {repository_size} B on disk, manifest tree {manifest_size} B; \
         first sync {first_bytes} B transferred, {first_disk} B on disk; quiet poll {poll_bytes} B"
    );
    assert!(
        first_bytes <= 2 * manifest_size,
        "first sync moved {first_bytes} B for a {manifest_size} B manifest tree"
    );
    assert!(
        first_disk <= 2 * manifest_size,
        "first sync keeps {first_disk} B for a {manifest_size} B manifest tree"
    );
    assert!(poll_bytes <= 4096, "a quiet poll moved {poll_bytes} B");

    // A server that does not allow filters: the tip commit with its whole
    // tree, still none of the history.
    let plain = GitDaemon::start(dir.path(), false).await;
    let proxy = Proxy::start(plain.port).await;
    let url = proxy.url(&plain.url("big.git"), plain.port);
    let checkout = dir.path().join("checkout-unfiltered");
    let unfiltered = git_source(&url, &checkout, "registry")
        .sync(&Budget::default())
        .await
        .unwrap();
    assert_eq!(unfiltered, first);
    let unfiltered_bytes = proxy.take_bytes();
    println!(
        "without filter: first sync {unfiltered_bytes} B transferred, {} B on disk",
        disk_used(&checkout)
    );
    assert!(unfiltered_bytes < repository_size, "no history is fetched");
    assert!(disk_used(&checkout) <= 2 * manifest_size);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smart_http_cost_is_that_of_git_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let served = dir.path().join("big.git");
    std::fs::create_dir_all(&served).unwrap();
    let manifest_size = big_repository(&served, 300, 4);
    let backend = HttpBackend::start(dir.path(), None).await;
    let proxy = Proxy::start(backend.port).await;
    let url = proxy.url(&backend.url("big.git"), backend.port);
    let checkout = dir.path().join("checkout");
    let source = git_source(&url, &checkout, "registry");
    source.sync(&Budget::default()).await.unwrap();
    let first_bytes = proxy.take_bytes();
    source.sync(&Budget::default()).await.unwrap();
    let poll_bytes = proxy.take_bytes();
    println!(
        "smart HTTP: manifest tree {manifest_size} B; first sync {first_bytes} B, quiet poll {poll_bytes} B"
    );
    // HTTP headers ride on every request; the payload stays that of git://.
    assert!(first_bytes <= 2 * manifest_size + 8192, "{first_bytes}");
    assert!(poll_bytes <= 4096, "{poll_bytes}");
}
