//! The inventory sweep (`scan`) against a real CNCF distribution registry,
//! with images pushed by skopeo.
//!
//! One manifest (source `staging`) promotes to two "regional" prefixes,
//! `prod-us` and `prod-eu`:
//! - `single`: one image, tag `v1`, in both regions (promoted);
//! - `multi`: a two-platform index, tag `v1`, in both regions (its children
//!   are not tags);
//! - `partial`: an image tagged `v1` and an untagged image, both present in
//!   `prod-us` only (partially mirrored: `prod-eu/partial` does not exist).
//!
//! And what no manifest explains: an unpromoted image as `prod-us/single:rogue`,
//! and the promoted index under an unlisted tag, `prod-eu/multi:extra`.

use crate::support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use arc_swap::ArcSwap;
use image_auditor::audit::{Policy, VerdictKind};
use image_auditor::findings::{
    Checkpoints, Finding, FindingQuery, Locks, Outbox, Outboxes, SqliteStore, Store,
};
use image_auditor::index::Index;
use image_auditor::manifest;
use image_auditor::metrics::Metrics;
use image_auditor::pipeline::{DEFAULT_UNDECIDED_RETRY_FOR, Pipeline};
use image_auditor::reference::{Digest, RegistryPrefix};
use image_auditor::registry::{ErrorKind, RegistryClient};
use image_auditor::resolve::Resolver;
use image_auditor::scan::{self, CheckpointAt, Options, SWEEP_LOCK, Summary};
use support::oci::{Desc, Layout};
use support::postgres::Postgres;
use support::registry::{Auth, Registry, Workbench, push_tag, push_untagged};
use support::{client, run_ok, stdout_json, test_config};

struct Fixture {
    reg: Registry,
    work: tempfile::TempDir,
    manifests: PathBuf,
    multi: Digest,
    partial_tagged: Digest,
    partial_untagged: Digest,
    rogue: Digest,
}

/// Findings as (verdict, repository, digest, tag), whatever reported them.
type Expected = BTreeSet<(String, String, Option<String>, Option<String>)>;

/// One row of [`Expected`]: a finding of `digest` in `repository`.
fn row(
    verdict: &str,
    repository: String,
    digest: &Digest,
    tag: Option<&str>,
) -> (String, String, Option<String>, Option<String>) {
    (
        verdict.to_owned(),
        repository,
        Some(digest.to_string()),
        tag.map(str::to_owned),
    )
}

impl Fixture {
    async fn new() -> Self {
        let Workbench {
            reg,
            work,
            mut layout,
        } = Workbench::start();
        let host = reg.host.clone();

        let single = layout.image("amd64");
        let [multi, _, _] = layout.two_platform_index();
        let tagged = layout.image("amd64");
        let untagged = layout.image("amd64");
        let rogue = layout.image("amd64");
        layout.tag(&rogue, "rogue");

        for region in ["prod-us", "prod-eu"] {
            retag_push(
                &mut layout,
                &single,
                "v1",
                &host,
                &format!("{region}/single"),
            );
            retag_push(&mut layout, &multi, "v1", &host, &format!("{region}/multi"));
        }
        retag_push(&mut layout, &tagged, "v1", &host, "prod-us/partial");
        push_untagged(&host, &layout, "prod-us/partial", &untagged).await;
        assert_eq!(
            push_tag(&layout, "rogue", &host, "prod-us/single"),
            rogue.digest
        );
        retag_push(&mut layout, &multi, "extra", &host, "prod-eu/multi");

        let manifests = work.path().join("manifest.yaml");
        std::fs::write(
            &manifests,
            format!(
                "registries:\n\
                 - name: {host}/staging\n  src: true\n\
                 - name: {host}/prod-us\n\
                 - name: {host}/prod-eu\n\
                 images:\n\
                 - name: single\n  dmap:\n    \"{}\": [\"v1\"]\n\
                 - name: multi\n  dmap:\n    \"{}\": [\"v1\"]\n\
                 - name: partial\n  dmap:\n    \"{}\": [\"v1\"]\n    \"{}\": []\n",
                single.digest, multi.digest, tagged.digest, untagged.digest
            ),
        )
        .unwrap();
        Self {
            reg,
            work,
            manifests,
            multi: multi.digest,
            partial_tagged: tagged.digest,
            partial_untagged: untagged.digest,
            rogue: rogue.digest,
        }
    }

    fn targets(&self) -> Vec<RegistryPrefix> {
        ["prod-us", "prod-eu"]
            .iter()
            .map(|r| format!("{}/{r}", self.reg.host).parse().unwrap())
            .collect()
    }

    fn repo(&self, path: &str) -> String {
        format!("{}/{path}", self.reg.host)
    }

    /// Exactly what the sweep must report: the unexplained content and the
    /// promotions missing from prod-eu.
    fn expected(&self) -> Expected {
        BTreeSet::from([
            row(
                "unpromoted",
                self.repo("prod-us/single"),
                &self.rogue,
                Some("rogue"),
            ),
            row(
                "unlisted_tag",
                self.repo("prod-eu/multi"),
                &self.multi,
                Some("extra"),
            ),
            row(
                "missing",
                self.repo("prod-eu/partial"),
                &self.partial_tagged,
                Some("v1"),
            ),
            row(
                "missing",
                self.repo("prod-eu/partial"),
                &self.partial_untagged,
                None,
            ),
        ])
    }

    fn index(&self) -> Arc<ArcSwap<Index>> {
        let set = manifest::load(&self.manifests).unwrap();
        assert!(set.problems.is_empty(), "{:?}", set.problems);
        Arc::new(ArcSwap::from_pointee(Index::build(&set, 1)))
    }
}

/// Pushes `desc` to `repo:tag`: once to `staging/<layout tag>` with skopeo
/// (the layout tag is unique per image), then registry to registry, so one
/// image can carry several tags.
fn retag_push(layout: &mut Layout, desc: &Desc, tag: &str, host: &str, repo: &str) {
    let name = format!("img-{}", &desc.digest.hex()[..12]);
    let staged = format!("staging/{name}");
    if !layout.dir.join(format!("pushed-{name}.digest")).exists() {
        layout.tag(desc, &name);
        let pushed = push_tag(layout, &name, host, &staged);
        assert_eq!(pushed, desc.digest);
    }
    run_ok(
        Command::new("skopeo")
            .args([
                "copy",
                "--quiet",
                "--all",
                "--preserve-digests",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
            ])
            .arg(format!("docker://{host}/{staged}:{name}"))
            .arg(format!("docker://{host}/{repo}:{tag}"))
            .stdin(std::process::Stdio::null()),
    );
}

fn found(summary: &Summary) -> Expected {
    summary
        .findings
        .iter()
        .map(|f| {
            (
                f.verdict.as_str().to_owned(),
                f.repository.clone(),
                f.digest.clone(),
                f.tag.clone(),
            )
        })
        .collect()
}

struct Library {
    pipeline: Pipeline,
    index: Arc<ArcSwap<Index>>,
    client: RegistryClient,
    store: Arc<SqliteStore>,
}

/// The pipeline a sweep records through: default policy, resolving with
/// `client`, recording in `store`.
fn pipeline(
    index: &Arc<ArcSwap<Index>>,
    client: &RegistryClient,
    store: Arc<SqliteStore>,
) -> Pipeline {
    Pipeline::new(
        index.clone(),
        Some(Arc::new(Resolver::new(client.clone()))),
        store,
        Policy::default(),
        Arc::new(Metrics::default()),
        DEFAULT_UNDECIDED_RETRY_FOR,
    )
}

fn library(f: &Fixture, db: &Path) -> Library {
    let index = f.index();
    let client = client(test_config(None));
    let store = Arc::new(SqliteStore::open(db).unwrap());
    let pipeline = pipeline(&index, &client, store.clone());
    Library {
        pipeline,
        index,
        client,
        store,
    }
}

impl Library {
    async fn sweep(&self, targets: &[RegistryPrefix], options: &Options) -> Summary {
        scan::sweep(
            &self.pipeline,
            &self.index,
            &self.client,
            targets,
            options,
            None,
        )
        .await
        .unwrap()
    }
}

fn run_cli(f: &Fixture, args: &[&str]) -> Output {
    let config = f.work.path().join("registry.yaml");
    std::fs::write(&config, "insecure_http_hosts: [\"127.0.0.1\"]\n").unwrap();
    let manifests = f.manifests.to_str().unwrap();
    let config = config.to_str().unwrap();
    let flags = ["--manifests", manifests, "--registry-config", config];
    run_cli_bare(f, &[&flags[..], args].concat())
}

/// The JSON `run_cli(f, args)` printed, once it exited with `code`.
fn scan_json(f: &Fixture, args: &[&str], code: i32) -> serde_json::Value {
    let out = run_cli(f, args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout_json(&out)
}

/// The command with only `args`: no manifests or registry settings added.
fn run_cli_bare(f: &Fixture, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_image-auditor"))
        .args(args)
        .current_dir(f.work.path())
        .env_remove("IMAGE_AUDITOR_MANIFESTS")
        .env_remove("IMAGE_AUDITOR_REGISTRY_CONFIG")
        .env_remove("IMAGE_AUDITOR_DATA_DIR")
        .output()
        .unwrap()
}

/// The findings rows of a store, as [`Expected`] states them.
fn stored_findings(rows: &[Finding]) -> Expected {
    rows.iter()
        .map(|r| {
            (
                r.verdict.as_str().to_owned(),
                r.repository.as_ref().unwrap().to_string(),
                r.digest.as_ref().map(ToString::to_string),
                r.tag.as_ref().map(ToString::to_string),
            )
        })
        .collect()
}

fn json_findings(v: &serde_json::Value) -> Expected {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let opt = |k: &str| f[k].as_str().map(str::to_owned);
            (
                f["verdict"].as_str().unwrap().to_owned(),
                f["repository"].as_str().unwrap().to_owned(),
                opt("digest"),
                opt("tag"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_scan_reports_exactly_the_unexplained_and_the_missing_then_nothing_new() {
    let f = Fixture::new().await;
    let us = f.repo("prod-us");
    let eu = f.repo("prod-eu");
    let s = scan_json(&f, &["scan", &us, &eu, "--json"], 1);
    assert_eq!(json_findings(&s), f.expected(), "{s:#}");
    assert_eq!(s["complete"], true);
    assert_eq!(s["repositories"], 6, "{s:#}");
    // single:v1, single:rogue, multi:v1 (us); single:v1, multi:v1, multi:extra (eu); partial:v1.
    assert_eq!(s["tags"], 7, "{s:#}");
    assert_eq!(s["missing"], 2, "{s:#}");
    assert_eq!(s["errors"].as_array().unwrap().len(), 0, "{s:#}");
    // Promoted content is fine: single and multi in both regions, partial:v1 in us.
    assert_eq!(s["verdicts"]["promoted"], 5, "{s:#}");
    // One HEAD per tag, plus one HEAD by digest for the untagged promotion
    // in prod-eu (in prod-us no tag points to it either).
    assert_eq!(s["manifest_requests"], 7 + 2, "{s:#}");
    // The checkpoint of a completed sweep is gone.
    assert!(!f.work.path().join("data/scan/checkpoint.json").exists());

    // The findings are the rows serve alerts from.
    let store = SqliteStore::open(f.work.path().join("data/findings.sqlite")).unwrap();
    let rows = store.findings(&FindingQuery::default()).unwrap();
    let stored = stored_findings(&rows);
    assert_eq!(stored, f.expected());
    assert!(rows.iter().all(|r| r.key.source.as_str() == "scan"));

    // A second sweep sees the same content: duplicates, no new finding.
    let s2 = scan_json(&f, &["scan", &us, &eu, "--json"], 0);
    assert!(json_findings(&s2).is_empty(), "{s2:#}");
    assert_eq!(s2["duplicates"], 9, "{s2:#}");
    assert_eq!(
        store.findings(&FindingQuery::default()).unwrap().len(),
        rows.len()
    );

    // Text output names each finding; a bad prefix is exit 2.
    let text = run_cli(&f, &["scan", &us, &eu, "--restart"]);
    assert_eq!(text.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&text.stdout).contains("0 new findings"));
    let bad = run_cli(&f, &["scan", "not a prefix"]);
    assert_eq!(bad.status.code(), Some(2));
    let bad = run_cli(&f, &["scan", "--no-such-flag"]);
    assert_eq!(bad.status.code(), Some(2));
}

/// Adopting the auditor on a registry that already holds unexplained
/// content (README "Adopting the auditor"): the baseline sweep records and
/// alerts nothing and writes a valid exceptions file of exactly what it
/// found; with that file, a sweep on an empty store records every finding
/// as excepted (owed to no sink); a rogue push made afterwards still alerts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_baseline_sweep_alerts_nothing_and_only_a_new_push_alerts_after_it() {
    let f = Fixture::new().await;
    let us = f.repo("prod-us");
    let eu = f.repo("prod-eu");
    let baseline = f.work.path().join("baseline.yaml");
    let file = baseline.to_str().unwrap();
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();

    let to_baseline = ["scan", &us, &eu, "--baseline", file, "--baseline-owner"];

    let s = scan_json(
        &f,
        &[&to_baseline[..], &["platform-team", "--json"]].concat(),
        0,
    );
    assert_eq!(json_findings(&s["summary"]), f.expected(), "{s:#}");
    // One entry per repository and verdict, split only where one entry
    // would accept more than was found (prod-eu/partial: a tagged and an
    // untagged missing digest).
    assert_eq!(s["entries"], 4, "{s:#}");
    // Nothing recorded, so nothing for `serve` to alert; no checkpoint.
    assert!(!f.work.path().join("data/findings.sqlite").exists());
    assert!(!f.work.path().join("data/scan/checkpoint.json").exists());
    let text = std::fs::read_to_string(&baseline).unwrap();
    assert!(text.contains("owner: \"platform-team\""), "{text}");
    assert!(text.contains(&f.rogue.to_string()), "{text}");

    // The file is valid; a second baseline never overwrites it.
    let valid = run_cli(&f, &["--exceptions", file, "manifests", "validate"]);
    assert_eq!(
        valid.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&valid.stdout)
    );
    assert!(String::from_utf8_lossy(&valid.stdout).contains("exceptions: 4 entries in 1 file(s)"));
    let again = run_cli(&f, &[&to_baseline[..], &["x"]].concat());
    assert_eq!(again.status.code(), Some(2));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );

    // With the file: every finding recorded, each excepted by its entry.
    let s2 = scan_json(&f, &["--exceptions", file, "scan", &us, &eu, "--json"], 0);
    assert!(json_findings(&s2).is_empty(), "{s2:#}");
    assert_eq!(s2["excepted"], 4, "{s2:#}");
    let store = SqliteStore::open(f.work.path().join("data/findings.sqlite")).unwrap();
    let rows = store.findings(&FindingQuery::default()).unwrap();
    assert_eq!(rows.len(), 4);
    for row in &rows {
        let by = row
            .excepted_by
            .as_deref()
            .unwrap_or_else(|| panic!("{row:?}"));
        let line: usize = by.rsplit_once(':').unwrap().1.parse().unwrap();
        assert!(by.starts_with(file), "{by}");
        assert!(
            text.lines()
                .nth(line - 1)
                .unwrap()
                .starts_with("  - registry:"),
            "{by}"
        );
    }
    assert_eq!(store.undelivered("log").unwrap(), 0, "owed to no sink");
    assert!(
        store
            .claim(Outbox::Alerts, "log", 10, i64::MAX)
            .unwrap()
            .is_empty()
    );

    // A rogue push after the baseline: the same tag, new content. Alerts.
    let mut layout = Layout::create(&f.work.path().join("layout-late"));
    let late = layout.image("amd64");
    layout.tag(&late, "rogue");
    let pushed = push_tag(&layout, "rogue", &f.reg.host, "prod-us/single");
    assert_eq!(pushed, late.digest);
    let s3 = scan_json(&f, &["--exceptions", file, "scan", &us, &eu, "--json"], 1);
    let want: Expected = BTreeSet::from([row(
        "unpromoted",
        f.repo("prod-us/single"),
        &late.digest,
        Some("rogue"),
    )]);
    assert_eq!(json_findings(&s3), want, "{s3:#}");
    assert_eq!(s3["excepted"], 0, "the rest was recorded before: {s3:#}");
    let claimed = store.claim(Outbox::Alerts, "log", 10, i64::MAX).unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].digest.as_ref(), Some(&late.digest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_targets_are_every_destination_and_catalog_adds_unnamed_repositories() {
    let f = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    let lib = library(&f, &dir.path().join("f.sqlite"));
    // An image in a repository no manifest names, under prod-us.
    let mut layout = Layout::create(&dir.path().join("layout"));
    let stray = layout.image("amd64");
    retag_push(&mut layout, &stray, "latest", &f.reg.host, "prod-us/stray");

    let targets = scan::default_targets(&lib.index.load());
    assert_eq!(targets, f.targets().into_iter().rev().collect::<Vec<_>>());
    let without = lib.sweep(&[], &Options::default()).await;
    assert_eq!(found(&without), f.expected());
    let with = lib
        .sweep(
            &[],
            &Options {
                catalog: true,
                page_size: 2,
                ..Options::default()
            },
        )
        .await;
    // Only the stray image is new; everything else was recorded before.
    let stray_finding = row(
        "unpromoted",
        f.repo("prod-us/stray"),
        &stray.digest,
        Some("latest"),
    );
    assert_eq!(found(&with), BTreeSet::from([stray_finding]));
    assert_eq!(with.repositories, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_follows_pagination_with_a_small_page_size() {
    let reg = Registry::start(Auth::Anonymous);
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::create(&work.path().join("layout"));
    let image = layout.image("amd64");
    let mut repos = Vec::new();
    for r in 0..5 {
        let repo = format!("prod-us/r{r}");
        for t in 0..3 {
            retag_push(&mut layout, &image, &format!("t{t}"), &reg.host, &repo);
        }
        repos.push(repo);
    }
    let client = client(test_config(None));
    let catalog = client.catalog(&reg.host, 2).await.unwrap();
    // The staging copy retag_push went through is listed too, last.
    let mut want = repos.clone();
    want.push(format!("staging/img-{}", &image.digest.hex()[..12]));
    assert_eq!(catalog.items, want);
    assert!(catalog.pages >= 3, "{catalog:?}");
    // Debian's registry ignores `n` on tags/list (docs/reference/registries.md §2):
    // tag pagination is shown against wiremock below.
    let tags = client.tags(&reg.repo("prod-us/r0"), 2).await.unwrap();
    let names: Vec<&str> = tags.items.iter().map(|t| t.as_str()).collect();
    assert_eq!(names, ["t0", "t1", "t2"]);
    // One page is enough when it is large.
    assert_eq!(client.catalog(&reg.host, 100).await.unwrap().pages, 1);
    // A repository the registry does not know is a distinct, permanent answer.
    let e = client.tags(&reg.repo("prod-us/nope"), 2).await.unwrap_err();
    assert!(e.is_not_found() && !e.is_transient(), "{e}");
    assert!(e.to_string().contains("prod-us/nope"), "{e}");
    let e = client
        .resolve_tag(&reg.repo("prod-us/r0"), &"nope".parse().unwrap())
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert_eq!(
        client
            .resolve_tag(&reg.repo("prod-us/r0"), &"t1".parse().unwrap())
            .await
            .unwrap(),
        image.digest
    );
    assert!(
        client
            .manifest_exists(&reg.repo("prod-us/r0"), &image.digest)
            .await
            .unwrap()
    );
    assert!(
        !client
            .manifest_exists(&reg.repo("prod-us/r1"), &Digest::sha256_of(b"no"))
            .await
            .unwrap()
    );

    // A whole sweep with n=2: every repository and tag, nothing twice.
    let manifests = work.path().join("m.yaml");
    std::fs::write(
        &manifests,
        format!(
            "registries:\n- name: {h}/staging\n  src: true\n- name: {h}/prod-us\nimages:\n\
             - name: r0\n  dmap:\n    \"{d}\": [\"t0\", \"t1\", \"t2\"]\n",
            h = reg.host,
            d = image.digest
        ),
    )
    .unwrap();
    let set = manifest::load(&manifests).unwrap();
    let index = Arc::new(ArcSwap::from_pointee(Index::build(&set, 1)));
    let store = Arc::new(SqliteStore::open(work.path().join("f.sqlite")).unwrap());
    let pipeline = pipeline(&index, &client, store);
    let options = Options {
        catalog: true,
        page_size: 2,
        ..Options::default()
    };
    let s = scan::sweep(&pipeline, &index, &client, &[], &options, None)
        .await
        .unwrap();
    assert_eq!(s.repositories, 5);
    assert_eq!(s.tags, 15);
    assert_eq!(s.verdicts.get("promoted"), Some(&3));
    // r1..r4 are named by no manifest but in scope: the same digest there
    // is promoted only as r0 (wrong_repository).
    assert_eq!(s.findings.len(), 12, "{s:#?}");
    assert!(
        s.findings
            .iter()
            .all(|f| f.verdict == VerdictKind::WrongRepository)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_sweep_resumes_without_visiting_anything_twice() {
    let f = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    let lib = library(&f, &dir.path().join("f.sqlite"));
    let state = dir.path().join("scan");
    let targets = f.targets();
    let options = Options {
        checkpoint: scan::CheckpointAt::Dir(state.clone()),
        max_repositories: Some(2),
        ..Options::default()
    };
    let first = lib.sweep(&targets, &options).await;
    assert!(!first.complete);
    assert_eq!(first.repositories, 2);
    let checkpoint: scan::Checkpoint =
        serde_json::from_slice(&std::fs::read(state.join(scan::CHECKPOINT_FILE)).unwrap()).unwrap();
    assert_eq!(checkpoint.completed.len(), 2);
    assert_eq!(checkpoint.sweep_id, first.sweep_id);

    let rest = Options {
        max_repositories: None,
        ..options.clone()
    };
    let second = lib.sweep(&targets, &rest).await;
    assert!(second.resumed && second.complete, "{second:#?}");
    assert_eq!(second.sweep_id, first.sweep_id);
    assert_eq!(second.skipped, 2);
    assert_eq!(first.repositories + second.repositories, 6);
    assert_eq!(first.tags + second.tags, 7);
    assert_eq!(second.duplicates, 0, "nothing observed twice");
    let mut all = found(&first);
    all.extend(found(&second));
    assert_eq!(all, f.expected());
    assert!(!state.join(scan::CHECKPOINT_FILE).exists());

    // --restart ignores a checkpoint: a new sweep id, everything visited.
    lib.sweep(&targets, &options).await;
    let restarted = lib
        .sweep(
            &targets,
            &Options {
                restart: true,
                ..rest
            },
        )
        .await;
    assert!(!restarted.resumed);
    assert_eq!(restarted.repositories, 6);
    assert!(restarted.findings.is_empty());
}

/// One sweep at a time among the processes on a store, and a checkpoint
/// kept in the store is resumed by another process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sweep_at_a_time_and_another_process_resumes_a_checkpoint_in_the_store() {
    let f = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("f.sqlite");
    let first_process = library(&f, &db);
    let targets = f.targets();
    let options = Options {
        checkpoint: CheckpointAt::Store,
        max_repositories: Some(2),
        ..Options::default()
    };
    // Another process is sweeping: this one does not start.
    let other = SqliteStore::open(&db).unwrap();
    let sweeping = other.try_lock(SWEEP_LOCK).unwrap().unwrap();
    let busy = scan::sweep(
        &first_process.pipeline,
        &first_process.index,
        &first_process.client,
        &targets,
        &options,
        None,
    )
    .await
    .unwrap_err();
    assert!(matches!(busy, scan::ScanError::Busy), "{busy}");
    assert_eq!(other.counts().unwrap().decisions_total(), 0);
    drop(sweeping);

    let first = first_process.sweep(&targets, &options).await;
    assert!(!first.complete);
    let saved: scan::Checkpoint =
        serde_json::from_str(&other.scan_checkpoint(SWEEP_LOCK).unwrap().unwrap()).unwrap();
    assert_eq!(saved.sweep_id, first.sweep_id);
    assert_eq!(saved.completed.len(), 2);

    let second_process = library(&f, &db);
    let rest = Options {
        max_repositories: None,
        ..options
    };
    let second = second_process.sweep(&targets, &rest).await;
    assert!(second.resumed && second.complete, "{second:#?}");
    assert_eq!(second.sweep_id, first.sweep_id);
    assert_eq!(second.skipped, 2);
    assert_eq!(first.repositories + second.repositories, 6);
    assert_eq!(second.duplicates, 0, "nothing observed twice");
    assert_eq!(other.scan_checkpoint(SWEEP_LOCK).unwrap(), None);
}

/// `scan --config` audits as that `serve` would: its manifests, registry
/// settings and cache, and records in the store it names — on PostgreSQL,
/// with the checkpoint in the database, not in a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_scan_with_a_config_records_in_its_postgres_store() {
    let f = Fixture::new().await;
    let pg = Postgres::shared();
    let database = pg.fresh_database();
    let url = f.work.path().join("database-url");
    std::fs::write(&url, pg.url(&database)).unwrap();
    let data = f.work.path().join("pg-data");
    let config = f.work.path().join("serve.yaml");
    std::fs::write(
        &config,
        format!(
            "manifests: {}\ndata_dir: {}\nstore:\n  postgres:\n    url_file: {}\n\
             registry:\n  insecure_http_hosts: [\"127.0.0.1\"]\n",
            f.manifests.display(),
            data.display(),
            url.display()
        ),
    )
    .unwrap();
    let (us, eu) = (f.repo("prod-us"), f.repo("prod-eu"));
    let config = config.to_str().unwrap();
    let args = ["scan", &us, &eu, "--json", "--config", config];
    let first = run_cli_bare(&f, &[&args[..], &["--max-repositories", "2"]].concat());
    let s = stdout_json(&first);
    assert_eq!(s["complete"], false, "{s:#}");
    let sweep_id = s["sweep_id"].as_str().unwrap();
    let saved = pg.psql(
        &database,
        "SELECT body FROM scan_checkpoints WHERE name = 'scan'",
    );
    assert!(saved.contains(sweep_id), "{saved}");

    let second = run_cli_bare(&f, &args);
    let s = stdout_json(&second);
    assert_eq!(s["complete"], true, "{s:#}");
    assert_eq!(s["resumed"], true, "{s:#}");
    assert_eq!(s["sweep_id"], sweep_id);
    assert_eq!(
        pg.psql(&database, "SELECT COUNT(*) FROM scan_checkpoints"),
        "0"
    );
    assert_eq!(
        pg.psql(&database, "SELECT COUNT(*) FROM findings"),
        f.expected().len().to_string()
    );
    // Nothing was written where an SQLite store or a file checkpoint would be.
    assert!(!data.join("findings.sqlite").exists());
    assert!(!data.join("scan").exists());
    // The registry cache is the configuration's, not the default `./data`.
    assert!(data.join("registry-cache").is_dir());
    assert!(!f.work.path().join("data").exists());
}

/// A configuration that follows a git branch names no directory a one-shot
/// sweep could read: `scan --config` says so instead of auditing against the
/// shipped fixtures.
#[tokio::test]
async fn cli_scan_with_a_git_config_needs_a_manifests_checkout() {
    let f = Fixture::new().await;
    let config = f.work.path().join("serve.yaml");
    std::fs::write(
        &config,
        "manifests_git:\n  url: https://x:secret@git.example/k8s.io\n  branch: main\n",
    )
    .unwrap();
    let out = run_cli_bare(&f, &["scan", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pass --manifests"), "{err}");
    assert!(err.contains("https://***@git.example/k8s.io"), "{err}");
    assert!(!err.contains("secret"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_is_down_gives_no_violation() {
    let mut f = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    let lib = library(&f, &dir.path().join("f.sqlite"));
    let targets = f.targets();
    f.reg.stop();
    let s = lib.sweep(&targets, &Options::default()).await;
    assert!(s.findings.is_empty(), "{s:#?}");
    assert_eq!(s.missing, 0);
    assert_eq!(s.undecided_repositories.len(), 6);
    assert_eq!(s.errors.len(), 6);
    assert!(s.errors[0].contains(&f.reg.host), "{}", s.errors[0]);
    assert!(
        lib.store
            .findings(&FindingQuery::default())
            .unwrap()
            .is_empty()
    );
}

mod faults {
    use super::*;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn host_of(server: &MockServer) -> String {
        server.uri().trim_start_matches("http://").to_owned()
    }

    #[tokio::test]
    async fn a_link_to_another_host_is_refused() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v2/_catalog"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(serde_json::json!({"repositories": ["a"]}))
                    .insert_header(
                        "Link",
                        r#"<http://evil.example/v2/_catalog?last=a&n=1>; rel="next""#,
                    ),
            )
            .expect(1)
            .mount(&server)
            .await;
        let client = client(test_config(None));
        let e = client.catalog(&host_of(&server), 1).await.unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::ForeignLink { url } if url.contains("evil.example")),
            "{e}"
        );
        assert!(!e.is_transient());
        assert!(e.to_string().contains("catalog"), "{e}");
    }

    #[tokio::test]
    async fn tag_lists_follow_relative_and_absolute_links() {
        let server = MockServer::start().await;
        let host = host_of(&server);
        let page = |tags: &[&str], next: Option<String>| {
            let mut r = ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"name": "prod/a", "tags": tags}));
            if let Some(next) = next {
                r = r.insert_header("Link", format!("<{next}>; rel=\"next\"").as_str());
            }
            r
        };
        use wiremock::matchers::query_param;
        Mock::given(method("GET"))
            .and(path("/v2/prod/a/tags/list"))
            .and(query_param("n", "2"))
            .and(wiremock::matchers::query_param_is_missing("last"))
            .respond_with(page(
                &["b", "a"],
                Some("/v2/prod/a/tags/list?n=2&last=b".into()),
            ))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/v2/prod/a/tags/list"))
            .and(query_param("last", "b"))
            .respond_with(page(
                &["d", "c"],
                Some(format!("http://{host}/v2/prod/a/tags/list?n=2&last=d")),
            ))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/v2/prod/a/tags/list"))
            .and(query_param("last", "d"))
            .respond_with(page(&["e", "not a tag!"], None))
            .expect(1)
            .mount(&server)
            .await;
        let client = client(test_config(None));
        let repo = format!("{host}/prod/a").parse().unwrap();
        let listing = client.tags(&repo, 2).await.unwrap();
        let names: Vec<&str> = listing.items.iter().map(|t| t.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "d", "e"], "sorted, all pages");
        assert_eq!(listing.pages, 3);
        assert_eq!(listing.invalid, 1);
    }

    #[tokio::test]
    async fn an_oversized_tag_list_is_refused() {
        let server = MockServer::start().await;
        let tags: Vec<String> = (0..400_000).map(|i| format!("tag-{i}")).collect();
        Mock::given(method("GET"))
            .and(path("/v2/prod/a/tags/list"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(serde_json::json!({"name": "prod/a", "tags": tags})),
            )
            .mount(&server)
            .await;
        let client = client(test_config(None));
        let repo = format!("{}/prod/a", host_of(&server)).parse().unwrap();
        let e = client.tags(&repo, 10).await.unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains("prod/a"), "{e}");
    }

    #[tokio::test]
    async fn a_tag_whose_body_does_not_match_its_stated_digest_is_refused() {
        let server = MockServer::start().await;
        // No digest on HEAD: the client falls back to GET and checks the body.
        Mock::given(method("HEAD"))
            .and(path("/v2/prod/a/manifests/v1"))
            .respond_with(ResponseTemplate::new(200))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/v2/prod/a/manifests/v1"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_string("{}")
                    .insert_header(
                        "Docker-Content-Digest",
                        Digest::sha256_of(b"other").to_string().as_str(),
                    ),
            )
            .mount(&server)
            .await;
        let client = client(test_config(None));
        let repo = format!("{}/prod/a", host_of(&server)).parse().unwrap();
        let e = client
            .resolve_tag(&repo, &"v1".parse().unwrap())
            .await
            .unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::DigestMismatch { .. }), "{e}");
        assert!(e.to_string().contains("tag v1"), "{e}");
    }
}

/// `serve` with `scan.interval` sweeps at startup: the same findings as
/// the CLI, recorded in its own store (so alerted like any other), and the
/// sweep's time in the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_sweeps_at_startup_with_the_same_findings() {
    let f = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "registry:\n  insecure_http_hosts: [\"127.0.0.1\"]\nscan:\n  interval: 1h\n  \
         targets: [\"{}\", \"{}\"]\n",
        f.repo("prod-us"),
        f.repo("prod-eu")
    );
    let service = support::service::Service::start(dir.path(), &f.manifests, &config).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let stored = loop {
        let rows = SqliteStore::open(service.findings_db())
            .unwrap()
            .findings(&FindingQuery::default())
            .unwrap();
        let metrics = service.metrics().await;
        let done = metrics
            .lines()
            .find_map(|l| l.strip_prefix("image_auditor_scan_last_completed_timestamp_seconds "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .is_some_and(|t| t > 0.0);
        if done {
            break rows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no sweep:\n{}",
            service.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let stored = stored_findings(&stored);
    assert_eq!(stored, f.expected(), "{}", service.log());
}
