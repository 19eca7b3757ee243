//! Resolution end to end against a real CNCF distribution registry, with
//! exact request accounting (issue 3, "What it must show"; docs/design.md §5.2).
//!
//! Every test builds the same fixture: one registry on a free loopback port,
//! used as three "regions" by path prefix — `staging` is the source registry
//! of a thin-layout project `demo`, `prod-us` and `prod-eu` are its
//! destinations. Real images are pushed with skopeo (the nested index with a
//! raw PUT, which skopeo 1.9 refuses) and promoted by the project:
//!
//! | image    | promoted digests                        | lives in       | lists | children |
//! |----------|-----------------------------------------|----------------|-------|----------|
//! | `single` | one single-platform image               | staging        | 0     | 0        |
//! | `multi`  | a two-platform OCI index, and one image | staging        | 1     | 2        |
//! | `list`   | a Docker manifest list (`v2s2`)         | staging        | 1     | 2        |
//! | `nested` | an index of (an index of 2) + 1 image   | staging        | 2     | 4        |
//! | `legacy` | a two-platform OCI index                | prod-eu only   | 1     | 2        |
//!
//! Six promoted digests, five lists (the nested one counts twice), ten
//! (child, parent) links. A cold resolution therefore costs exactly nine
//! manifest GETs: one per promoted digest that lives in the source (5), one
//! for the nested inner list, and three for `legacy` (404 from staging, 404
//! from prod-us, 200 from prod-eu: source first, then destinations in
//! manifest order). Platform images are never fetched.

use crate::support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use image_auditor::audit::{Audit, Policy, VerdictKind, audit};
use image_auditor::event::{Action, Event, EventId, Source};
use image_auditor::index::Index;
use image_auditor::manifest;
use image_auditor::reference::{Digest, Repository};
use image_auditor::registry::{Outcome, RegistryConfig, RequestKind, StatsSnapshot};
use image_auditor::resolve::{Resolver, Summary};
use support::fault_proxy::{Fault, FaultProxy};
use support::fixtures::push_event;
use support::oci::{Desc, Layout};
use support::registry::{
    Push, Registry, Workbench, push_tag, push_untagged, put_tagged, skopeo_push, skopeo_raw,
};
use support::{client, stdout_json, test_config};

/// Promoted digests, lists, links and manifest GETs of a cold resolution of
/// the fixture (see the module comment).
const PROMOTED: usize = 6;
const LISTS: usize = 5;
const LINKS: usize = 10;
const COLD_GETS: u64 = 9;
/// Manifests a cold resolution reads: the six promoted digests and the
/// nested inner list.
const READ: u64 = 7;

struct Fixture {
    reg: Registry,
    work: tempfile::TempDir,
    layout: Layout,
    /// The thin-layout root (`manifests/`, `images/`).
    manifests: PathBuf,
    /// The project's `images.yaml`, which names no host.
    images: String,
    single: Desc,
    /// The two-platform index of `multi`, then its amd64 and arm64 images.
    multi: [Desc; 3],
    /// The second promoted digest of `multi`, a single-platform image.
    multi_v2: Desc,
    /// The Docker manifest list of `list` and its two children, as the
    /// registry (read by skopeo) has them.
    list: Digest,
    list_children: [Digest; 2],
    /// `nested`: outer index, inner index, the outer's own image, the inner's two.
    outer: Desc,
    inner: Desc,
    s390x: Desc,
    inner_children: [Desc; 2],
    /// `legacy`: an index that only a destination still has, and its children.
    legacy: [Desc; 3],
}

impl Fixture {
    async fn new() -> Self {
        let Workbench {
            reg,
            work,
            mut layout,
        } = Workbench::start();
        let host = reg.host.clone();
        let push = |layout: &Layout, tag: &str, repo: &str| push_tag(layout, tag, &host, repo);

        let single = layout.image("amd64");
        layout.tag(&single, "single");
        assert_eq!(push(&layout, "single", "staging/single"), single.digest);

        let multi = layout.two_platform_index();
        let multi_v2 = layout.image("amd64");
        layout.tag(&multi[0], "multi");
        layout.tag(&multi_v2, "multi-v2");
        assert_eq!(push(&layout, "multi", "staging/multi"), multi[0].digest);
        assert_eq!(push(&layout, "multi-v2", "staging/multi"), multi_v2.digest);

        // The same shape converted to a Docker manifest list: every digest
        // changes, so learn the children from the registry through skopeo.
        let to_convert = layout.two_platform_index();
        layout.tag(&to_convert[0], "list");
        let list = skopeo_push(
            &layout.dir,
            "list",
            &host,
            "staging/list",
            Push {
                docker_v2s2: true,
                ..Push::default()
            },
        );
        let raw = skopeo_raw(&format!("{host}/staging/list@{list}"), None);
        assert!(list.verifies(&raw));
        let raw: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(
            raw["mediaType"],
            "application/vnd.docker.distribution.manifest.list.v2+json"
        );
        let list_children: Vec<Digest> = raw["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["digest"].as_str().unwrap().parse().unwrap())
            .collect();
        let list_children: [Digest; 2] = list_children.try_into().unwrap();

        let [inner, amd64, arm64] = layout.two_platform_index();
        let s390x = layout.image("s390x");
        let outer = layout.index(&[(&inner, None), (&s390x, Some(("linux", "s390x")))]);
        layout.tag(&inner, "inner");
        layout.tag(&s390x, "s390x");
        push(&layout, "inner", "staging/nested");
        push(&layout, "s390x", "staging/nested");
        put_tagged(&host, &layout, "staging/nested", "outer", &outer).await;

        let legacy = layout.two_platform_index();
        layout.tag(&legacy[0], "legacy");
        assert_eq!(push(&layout, "legacy", "prod-eu/legacy"), legacy[0].digest);

        let images = format!(
            "- name: single\n  dmap:\n    \"{}\": [\"1.0\"]\n\
             - name: multi\n  dmap:\n    \"{}\": [\"1.0\"]\n    \"{}\": [\"2.0\"]\n\
             - name: list\n  dmap:\n    \"{list}\": [\"1.0\"]\n\
             - name: nested\n  dmap:\n    \"{}\": [\"1.0\"]\n\
             - name: legacy\n  dmap:\n    \"{}\": [\"0.9\"]\n",
            single.digest, multi[0].digest, multi_v2.digest, outer.digest, legacy[0].digest
        );
        let manifests = work.path().join("manifests");
        write_project(&manifests, &host, &images);

        Fixture {
            reg,
            work,
            layout,
            manifests,
            images,
            single,
            multi,
            multi_v2,
            list,
            list_children,
            outer,
            inner,
            s390x,
            inner_children: [amd64, arm64],
            legacy,
        }
    }

    fn index(&self) -> Index {
        Self::load(&self.manifests)
    }

    /// The same project with its registries at `host` (a proxy in front of
    /// the registry).
    fn index_at(&self, host: &str) -> Index {
        let root = self
            .work
            .path()
            .join(format!("manifests-{}", host.replace(':', "-")));
        write_project(&root, host, &self.images);
        Self::load(&root)
    }

    fn load(root: &Path) -> Index {
        let set = manifest::load(root).unwrap();
        let errors: Vec<String> = set.errors().map(|p| p.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
        let index = Index::build(&set, 1);
        assert_eq!(index.stats().digests, PROMOTED);
        index
    }

    fn resolver(&self, cache: &str) -> Resolver {
        Resolver::new(client(test_config(Some(&self.cache(cache)))))
    }

    fn cache(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    fn repo(&self, path: &str) -> Repository {
        self.reg.repo(path)
    }

    /// Pushes `tag` of the fixture's layout to `repo`.
    fn push(&self, tag: &str, repo: &str) {
        push_tag(&self.layout, tag, &self.reg.host, repo);
    }

    /// A rogue push: a real image that nothing promotes, built in a layout
    /// of its own and pushed to `repo` under `tag`.
    fn push_rogue(&self, tag: &str, repo: &str) -> (Layout, Desc) {
        let mut layout = Layout::create(&self.work.path().join("rogue"));
        let rogue = layout.image("amd64");
        layout.tag(&rogue, tag);
        push_tag(&layout, tag, &self.reg.host, repo);
        (layout, rogue)
    }

    /// Every (event repository, child, promoted parent) the index must
    /// explain once resolved, at both destinations.
    fn children(&self) -> Vec<(Repository, Digest, Digest)> {
        let mut out = Vec::new();
        for region in ["prod-us", "prod-eu"] {
            let at = |image: &str| self.repo(&format!("{region}/{image}"));
            for child in &self.multi[1..] {
                out.push((
                    at("multi"),
                    child.digest.clone(),
                    self.multi[0].digest.clone(),
                ));
            }
            for child in &self.list_children {
                out.push((at("list"), child.clone(), self.list.clone()));
            }
            // Nested: the evidence names the promoted outer index, whichever
            // level lists the child.
            for child in [
                &self.inner,
                &self.s390x,
                &self.inner_children[0],
                &self.inner_children[1],
            ] {
                out.push((
                    at("nested"),
                    child.digest.clone(),
                    self.outer.digest.clone(),
                ));
            }
            for child in &self.legacy[1..] {
                out.push((
                    at("legacy"),
                    child.digest.clone(),
                    self.legacy[0].digest.clone(),
                ));
            }
        }
        out
    }
}

/// Writes the thin layout of project `demo`: its source `staging` and its
/// destinations `prod-us` and `prod-eu` at `host`, and its `images.yaml`.
fn write_project(root: &Path, host: &str, images: &str) {
    let project_manifest = root.join("manifests/demo/promoter-manifest.yaml");
    let images_file = root.join("images/demo/images.yaml");
    std::fs::create_dir_all(project_manifest.parent().unwrap()).unwrap();
    std::fs::create_dir_all(images_file.parent().unwrap()).unwrap();
    std::fs::write(
        &project_manifest,
        format!(
            "registries:\n- name: {host}/staging\n  src: true\n- name: {host}/prod-us\n\
             - name: {host}/prod-eu\n"
        ),
    )
    .unwrap();
    std::fs::write(&images_file, images).unwrap();
}

fn manifest_gets(stats: &StatsSnapshot) -> u64 {
    stats.total(RequestKind::Manifest)
}

/// The digests whose manifests are in the cache: exactly what was read from
/// a registry, since nothing else writes there.
fn cached(cache: &Path) -> BTreeSet<Digest> {
    std::fs::read_dir(cache.join("blobs/sha256"))
        .unwrap()
        .map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            format!("sha256:{name}").parse().unwrap()
        })
        .collect()
}

fn digests<'a>(descs: impl IntoIterator<Item = &'a Digest>) -> BTreeSet<Digest> {
    descs.into_iter().cloned().collect()
}

#[track_caller]
fn assert_summary(summary: &Summary) {
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
    assert_eq!(
        (summary.digests, summary.lists, summary.children),
        (PROMOTED, LISTS, LINKS)
    );
}

/// `result` is of `kind`, final (nothing pending), and its reason says
/// `phrase`.
#[track_caller]
fn assert_final(result: &Audit, kind: VerdictKind, phrase: &str) {
    let v = &result.verdict;
    assert_eq!(v.kind, kind, "{v:?}");
    assert!(v.reason.contains(phrase), "{phrase}: {}", v.reason);
    assert_eq!(result.pending, None);
}

/// `result` is `undecided` while `fault` is injected, and its reason says
/// every one of `phrases`.
#[track_caller]
fn assert_undecided_under(fault: &Fault, result: &Audit, phrases: &[&str]) {
    let v = &result.verdict;
    assert_eq!(v.kind, VerdictKind::Undecided, "{fault:?}: {v:?}");
    for phrase in phrases {
        assert!(v.reason.contains(phrase), "{phrase}: {}", v.reason);
    }
}

/// Every child at every destination is `promoted_child`, with the promoted
/// parent as evidence, decided by the pure audit alone.
#[track_caller]
fn assert_children_explained(f: &Fixture, index: &Index) {
    for (repo, child, parent) in f.children() {
        let Audit { verdict, pending } =
            audit(index, &push_event(repo.clone(), &child), &Policy::default());
        assert_eq!(
            verdict.kind,
            VerdictKind::PromotedChild,
            "{repo}@{child}: {verdict:?}"
        );
        assert_eq!(pending, None, "{repo}@{child}");
        assert!(!verdict.evidence.is_empty());
        for e in &verdict.evidence {
            assert_eq!(e.parent.as_ref(), Some(&parent), "{repo}@{child}");
            assert_eq!(e.digest, parent);
            assert_eq!(&*e.image, repo.path().rsplit('/').next().unwrap());
        }
    }
}

#[tokio::test]
async fn cold_resolution_costs_one_get_per_list_and_explains_every_child() {
    let f = Fixture::new().await;
    let index = f.index();
    // Unresolved, a child is only provisionally unpromoted: the audit asks
    // for its image's promoted digests to be read.
    let (repo, child, _) = f.children().remove(0);
    let before = audit(&index, &push_event(repo, &child), &Policy::default());
    assert_eq!(before.verdict.kind, VerdictKind::Unpromoted);
    assert!(before.pending.is_some_and(|p| p.parents.len() == 1));

    let resolver = f.resolver("cache");
    let progress = std::sync::Mutex::new(Vec::new());
    let (resolved, summary) = resolver
        .resolve_all(&index, |done, total| {
            progress.lock().unwrap().push((done, total))
        })
        .await;
    assert_summary(&summary);
    let progress = progress.into_inner().unwrap();
    assert_eq!(progress.len(), PROMOTED);
    assert_eq!(progress.last(), Some(&(PROMOTED, PROMOTED)));

    let stats = resolver.client().stats();
    let host = &f.reg.host;
    assert_eq!(manifest_gets(&stats), COLD_GETS);
    assert_eq!(stats.count(host, RequestKind::Manifest, Outcome::Ok), READ);
    // Only `legacy` misses: staging and prod-us are asked before prod-eu.
    assert_eq!(
        stats.count(host, RequestKind::Manifest, Outcome::NotFound),
        2
    );
    assert_eq!(stats.total(RequestKind::Token), 0);
    assert_eq!((stats.cache_hits, stats.cache_writes), (0, READ));
    // Which manifests were read: the promoted digests and the nested inner
    // list; no platform image, no child of a list.
    assert_eq!(
        cached(&f.cache("cache")),
        digests([
            &f.single.digest,
            &f.multi[0].digest,
            &f.multi_v2.digest,
            &f.list,
            &f.outer.digest,
            &f.inner.digest,
            &f.legacy[0].digest,
        ])
    );
    assert_eq!(resolved.stats().resolved_digests, READ as usize);
    assert!(resolved.images().all(|i| resolved.image_resolved(i)));
    assert_children_explained(&f, &resolved);

    // Nothing left to read: resolving again sends nothing.
    let (_, again) = resolver.resolve_all(&resolved, |_, _| {}).await;
    assert_eq!((again.digests, again.children), (0, 0));
    assert_eq!(manifest_gets(&resolver.client().stats()), COLD_GETS);
}

#[tokio::test]
async fn warm_restart_resolves_from_the_cache_and_settles_children_without_requests() {
    let f = Fixture::new().await;
    let cold = f.resolver("cache");
    let (_, summary) = cold.resolve_all(&f.index(), |_, _| {}).await;
    assert_summary(&summary);
    assert_eq!(manifest_gets(&cold.client().stats()), COLD_GETS);
    drop(cold);

    // A second process start: new client, new resolver, same cache dir,
    // a freshly built index.
    let warm = f.resolver("cache");
    let (resolved, summary) = warm.resolve_all(&f.index(), |_, _| {}).await;
    assert_summary(&summary);
    let stats = warm.client().stats();
    assert!(stats.requests.is_empty(), "{:?}", stats.requests);
    assert_eq!((stats.cache_hits, stats.cache_misses), (READ, 0));
    assert_children_explained(&f, &resolved);

    // An event for a child after warm-up: `settle` decides it on what the
    // resolver has learnt (attached to a fresh index) and sends nothing.
    for (repo, child, parent) in f.children() {
        let (_, result) = warm
            .settle(
                &f.index(),
                &push_event(repo.clone(), &child),
                &Policy::default(),
            )
            .await;
        assert_eq!(
            result.verdict.kind,
            VerdictKind::PromotedChild,
            "{repo}@{child}"
        );
        assert_eq!(result.verdict.evidence[0].parent.as_ref(), Some(&parent));
        assert_eq!(result.pending, None);
    }
    let stats = warm.client().stats();
    assert!(stats.requests.is_empty(), "{:?}", stats.requests);
    assert_eq!(stats.cache_hits, READ, "settle did not even read the cache");
}

/// An unknown digest for image X costs at most one GET per not-yet-read
/// promoted digest of X, plus one GET of the pushed manifest itself (is it an
/// attachment?). The retired auditor walked the whole staging project for
/// such an event — `R + L` requests, one per repository under the source
/// registry plus one per manifest list in it (docs/reference/cip-auditor.md
/// §3.5) — which here would be every repository under `staging`
/// and all four of its lists, for every child event of every region.
#[tokio::test]
async fn unknown_digest_reads_only_that_images_promoted_digests() {
    let f = Fixture::new().await;
    // A rogue push to a destination: a real image that nothing promotes.
    let (_, rogue) = f.push_rogue("rogue", "prod-us/multi");

    let resolver = f.resolver("cold");
    let event = push_event(f.repo("prod-us/multi"), &rogue.digest);
    let (index, result) = resolver
        .settle(&f.index(), &event, &Policy::default())
        .await;
    assert_eq!(
        result.verdict.kind,
        VerdictKind::Unpromoted,
        "{:?}",
        result.verdict
    );
    assert_eq!(result.pending, None);
    assert!(
        !result.verdict.reason.contains("found in no repository"),
        "{}",
        result.verdict.reason
    );
    let stats = resolver.client().stats();
    // `multi` promotes two digests (both in staging) + the pushed manifest.
    assert_eq!(manifest_gets(&stats), 3);
    assert_eq!(
        stats.count(&f.reg.host, RequestKind::Manifest, Outcome::Ok),
        3
    );
    assert_eq!(
        cached(&f.cache("cold")),
        digests([&f.multi[0].digest, &f.multi_v2.digest, &rogue.digest]),
        "digests of other images were fetched"
    );
    let children = index.children();
    assert!(children.is_resolved(&f.multi[0].digest));
    for other in [
        &f.single.digest,
        &f.list,
        &f.outer.digest,
        &f.legacy[0].digest,
    ] {
        assert!(!children.is_resolved(other));
    }

    // The same image again, another unknown digest (never pushed): its
    // promoted digests are known now, so only the pushed manifest is asked
    // for (404: the verdict stands on the manifests).
    let missing = Digest::sha256_of(b"never pushed");
    let event = push_event(f.repo("prod-eu/multi"), &missing);
    let (_, result) = resolver.settle(&index, &event, &Policy::default()).await;
    assert_eq!(result.verdict.kind, VerdictKind::Unpromoted);
    assert_eq!(result.pending, None);
    let stats = resolver.client().stats();
    assert_eq!(manifest_gets(&stats), 4);
    assert_eq!(
        stats.count(&f.reg.host, RequestKind::Manifest, Outcome::NotFound),
        1
    );

    // A child of `nested` on the same resolver: only `nested` is read — its
    // one promoted digest and the inner list — and no attachment check,
    // since the child is explained once the lists are read.
    let child = &f.inner_children[1].digest;
    let event = push_event(f.repo("prod-us/nested"), child);
    let (_, result) = resolver.settle(&index, &event, &Policy::default()).await;
    assert_eq!(result.verdict.kind, VerdictKind::PromotedChild);
    assert_eq!(
        result.verdict.evidence[0].parent.as_ref(),
        Some(&f.outer.digest)
    );
    assert_eq!(manifest_gets(&resolver.client().stats()), 6);
}

#[tokio::test]
async fn attachments_pushed_by_digest_are_judged_by_their_subject() {
    let f = Fixture::new().await;
    let resolver = f.resolver("cache");
    let policy = Policy::default();

    // An SBOM of the promoted `single` image, pushed untagged to prod-us.
    let sbom = f.layout.attachment(&f.single);
    push_untagged(&f.reg.host, &f.layout, "prod-us/single", &sbom).await;
    let event = push_event(f.repo("prod-us/single"), &sbom.digest);
    let (index, result) = resolver.settle(&f.index(), &event, &policy).await;
    assert_eq!(
        result.verdict.kind,
        VerdictKind::PromotedAttachment,
        "{:?}",
        result.verdict
    );
    assert_eq!(result.pending, None);
    assert_eq!(result.verdict.evidence.len(), 1);
    assert_eq!(result.verdict.evidence[0].digest, f.single.digest);
    // `single`'s one promoted digest, then the pushed manifest.
    assert_eq!(manifest_gets(&resolver.client().stats()), 2);

    // An SBOM of a platform image of `multi`: promoted as a child, so the
    // attachment is explained through the list.
    let sbom = f.layout.attachment(&f.multi[2]);
    push_untagged(&f.reg.host, &f.layout, "prod-eu/multi", &sbom).await;
    let event = push_event(f.repo("prod-eu/multi"), &sbom.digest);
    let (index, result) = resolver.settle(&index, &event, &policy).await;
    assert_eq!(result.verdict.kind, VerdictKind::PromotedAttachment);
    assert_eq!(
        result.verdict.evidence[0].parent.as_ref(),
        Some(&f.multi[0].digest)
    );
    assert_eq!(manifest_gets(&resolver.client().stats()), 2 + 3);

    // An SBOM of a rogue image next to `single`: the subject is not
    // promoted there. `single` is resolved already: one GET.
    let (rogue_layout, rogue) = f.push_rogue("rogue", "prod-us/single");
    let sbom = rogue_layout.attachment(&rogue);
    push_untagged(&f.reg.host, &rogue_layout, "prod-us/single", &sbom).await;
    let event = push_event(f.repo("prod-us/single"), &sbom.digest);
    let (_, result) = resolver.settle(&index, &event, &policy).await;
    assert_eq!(
        result.verdict.kind,
        VerdictKind::UnpromotedAttachment,
        "{:?}",
        result.verdict
    );
    assert!(result.verdict.reason.contains(&rogue.digest.to_string()));
    assert_eq!(result.pending, None);
    assert_eq!(manifest_gets(&resolver.client().stats()), 2 + 3 + 1);

    // The registry really holds the attachments untagged, under their digest.
    let raw = skopeo_raw(
        &format!("{}/prod-us/single@{}", f.reg.host, sbom.digest),
        None,
    );
    assert!(sbom.digest.verifies(&raw));
}

#[tokio::test]
async fn registry_down_makes_unknown_digests_undecided_never_unpromoted() {
    let mut f = Fixture::new().await;
    let warmed = f.resolver("warm");
    let (_, summary) = warmed.resolve_all(&f.index(), |_, _| {}).await;
    assert_summary(&summary);
    drop(warmed);

    f.reg.stop();
    assert!(
        std::net::TcpStream::connect(&f.reg.host).is_err(),
        "something else listens on {}",
        f.reg.host
    );
    let policy = Policy::default();
    let unknown = Digest::sha256_of(b"pushed while the registry is down");
    let event = push_event(f.repo("prod-us/multi"), &unknown);

    // Cold cache: the promoted digests of `multi` cannot be read.
    let cold = f.resolver("cold");
    let (_, result) = cold.settle(&f.index(), &event, &policy).await;
    assert_final(
        &result,
        VerdictKind::Undecided,
        "cannot read promoted manifest",
    );
    let stats = cold.client().stats();
    let host = &f.reg.host;
    // Two digests × three candidate repositories, all on one host: the
    // refused connections that mark it down, plus the other digest's
    // request if it was already on its way; every other request is refused
    // by the breaker without being sent (it was 2 × 3 × (1 + 3 retries)).
    let failures = u64::from(RegistryConfig::default().breaker.failures);
    let sent = stats.count(host, RequestKind::Manifest, Outcome::NetworkError);
    assert!((failures..=failures + 1).contains(&sent), "{sent}");
    assert_eq!(stats.requests_sent(), sent);
    assert_eq!(
        manifest_gets(&stats),
        sent + stats.count(host, RequestKind::Manifest, Outcome::CircuitOpen)
    );

    // Warm cache: the lists are known, only the pushed manifest is missing.
    let warm = f.resolver("warm");
    let (_, result) = warm.settle(&f.index(), &event, &policy).await;
    assert_final(
        &result,
        VerdictKind::Undecided,
        "cannot read the pushed manifest",
    );
    let stats = warm.client().stats();
    // The failures that mark the host down; no retry after that.
    assert_eq!(
        stats.count(host, RequestKind::Manifest, Outcome::NetworkError),
        failures
    );
    assert_eq!(manifest_gets(&stats), failures);

    // ...while children keep being explained from the cache, with no request.
    let child = &f.multi[1].digest;
    let (_, result) = warm
        .settle(
            &f.index(),
            &push_event(f.repo("prod-eu/multi"), child),
            &policy,
        )
        .await;
    assert_eq!(result.verdict.kind, VerdictKind::PromotedChild);
    assert_eq!(manifest_gets(&warm.client().stats()), failures);
}

/// Issue 12 item 2: an answer that cannot be trusted (a body that does not
/// hash to the digest, a body over the size cap) says nothing about what a
/// promoted list holds, so a legitimate child it would explain is
/// `undecided` — retried — never `unpromoted`; nothing of it is cached, and
/// once the registry answers faithfully the same event is `promoted_child`.
/// The same holds for the pushed manifest (is it an attachment?).
#[tokio::test]
async fn untrustworthy_answers_make_verdicts_undecided_never_unpromoted() {
    const CAP: u64 = 64 * 1024;
    let f = Fixture::new().await;
    let mut proxy = FaultProxy::start(&f.reg.host).await;
    let host = proxy.host.clone();
    let at = |path: &str| -> Repository { format!("{host}/{path}").parse().unwrap() };
    let index = f.index_at(&proxy.host);
    let policy = Policy::default();

    // A rogue image under multi's promised tag 1.0 at prod-us, pushed
    // straight to the registry.
    let (_, rogue) = f.push_rogue("1.0", "prod-us/multi");
    let rogue_event = Event {
        tag: Some("1.0".parse().unwrap()),
        ..push_event(at("prod-us/multi"), &rogue.digest)
    };

    for (round, (fault, outcome)) in [
        (Fault::Tamper, Outcome::DigestMismatch),
        (Fault::Oversize(CAP as usize + 1), Outcome::TooLarge),
    ]
    .into_iter()
    .enumerate()
    {
        let cache = f.cache(&format!("cache-{round}"));
        let resolver = Resolver::new(client(RegistryConfig {
            max_manifest_bytes: CAP,
            ..test_config(Some(&cache))
        }));
        let (multi, inner, outer) = (&f.multi[0].digest, &f.inner.digest, &f.outer.digest);
        // Requests the proxy received for a digest in this round.
        let earlier: Vec<(Digest, usize)> =
            [multi, &f.multi_v2.digest, inner, outer, &rogue.digest]
                .into_iter()
                .map(|d| (d.clone(), proxy.requests(&d.to_string())))
                .collect();
        let asked = |d: &Digest| {
            let (_, before) = earlier.iter().find(|(e, _)| e == d).unwrap();
            proxy.requests(&d.to_string()) - before
        };

        // multi's index is spoiled wherever it is asked for: staging serves
        // it spoiled, prod-us and prod-eu do not have it (404).
        proxy.fault(&multi.to_string(), fault.clone());
        let child = push_event(at("prod-us/multi"), &f.multi[1].digest);
        let (index, result) = resolver.settle(&index, &child, &policy).await;
        assert_undecided_under(&fault, &result, &[&multi.to_string(), "cannot be trusted"]);
        assert_eq!(result.pending, None);
        let stats = resolver.client().stats();
        assert_eq!(manifest_gets(&stats), 4, "{fault:?}");
        assert_eq!(stats.count(&proxy.host, RequestKind::Manifest, outcome), 1);
        assert_eq!(
            stats.count(&proxy.host, RequestKind::Manifest, Outcome::NotFound),
            2
        );
        assert_eq!(
            stats.count(&proxy.host, RequestKind::Manifest, Outcome::Ok),
            1
        );
        assert_eq!(
            stats.retries, 0,
            "a permanent answer is not asked again at once"
        );
        assert_eq!((asked(multi), asked(&f.multi_v2.digest)), (3, 1));
        assert_eq!(cached(&cache), digests([&f.multi_v2.digest]));

        // A nested list spoiled: the outer index reads fine, the inner one
        // (asked of staging first, where the outer came from) does not.
        proxy.clear();
        proxy.fault(&inner.to_string(), fault.clone());
        let child = push_event(at("prod-eu/nested"), &f.inner_children[0].digest);
        let (index, result) = resolver.settle(&index, &child, &policy).await;
        assert_undecided_under(&fault, &result, &[&outer.to_string(), &inner.to_string()]);
        assert_eq!((asked(outer), asked(inner)), (1, 3));
        assert_eq!(manifest_gets(&resolver.client().stats()), 8);

        // The registry answers faithfully again: both children are explained,
        // reading only what was not read (the outer index is in the cache).
        proxy.clear();
        for (repo, child, parent) in [
            ("prod-us/multi", &f.multi[1].digest, multi),
            ("prod-eu/nested", &f.inner_children[0].digest, outer),
        ] {
            let (_, result) = resolver
                .settle(&index, &push_event(at(repo), child), &policy)
                .await;
            assert_eq!(result.verdict.kind, VerdictKind::PromotedChild, "{repo}");
            assert_eq!(result.verdict.evidence[0].parent.as_ref(), Some(parent));
        }
        assert_eq!((asked(multi), asked(outer), asked(inner)), (4, 1, 4));
        assert_eq!(manifest_gets(&resolver.client().stats()), 10);

        // The pushed manifest spoiled: whether it is an attachment of a
        // promoted image cannot be told, so the push is not called unpromoted.
        proxy.fault(&rogue.digest.to_string(), fault.clone());
        let (_, result) = resolver.settle(&index, &rogue_event, &policy).await;
        assert_undecided_under(&fault, &result, &["cannot read the pushed manifest"]);
        assert_eq!(asked(&rogue.digest), 1);

        // Read faithfully, it is a plain image: unpromoted, and the verdict
        // names the promise of 1.0 that it broke.
        proxy.clear();
        let (_, result) = resolver.settle(&index, &rogue_event, &policy).await;
        let v = &result.verdict;
        assert_eq!(v.kind, VerdictKind::Unpromoted, "{v:?}");
        assert!(
            v.reason.contains("promised tag 1.0") && v.reason.contains("unpromoted content"),
            "{}",
            v.reason
        );
        assert_eq!(v.evidence.len(), 1);
        assert_eq!(
            (&v.evidence[0].digest, &*v.evidence[0].image),
            (multi, "multi")
        );
        assert_eq!(asked(&rogue.digest), 2);
        assert_eq!(manifest_gets(&resolver.client().stats()), 12);
    }

    // Once stopped, the proxy's port refuses: the same child is undecided
    // for want of an answer (a fresh resolver, nothing cached).
    proxy.stop().await;
    let resolver = Resolver::new(client(test_config(Some(&f.cache("cache-stopped")))));
    let child = push_event(at("prod-us/multi"), &f.multi[1].digest);
    let (_, result) = resolver.settle(&index, &child, &policy).await;
    assert_eq!(
        result.verdict.kind,
        VerdictKind::Undecided,
        "{:?}",
        result.verdict
    );
    assert!(
        result.verdict.reason.contains("no answer"),
        "{}",
        result.verdict.reason
    );
    // Every request failed at connect, or was refused by the breaker once
    // those failures marked the host down.
    let stats = resolver.client().stats();
    assert_eq!(
        stats.count(&host, RequestKind::Manifest, Outcome::NetworkError)
            + stats.count(&host, RequestKind::Manifest, Outcome::CircuitOpen),
        manifest_gets(&stats)
    );
}

fn run_cli(f: &Fixture, config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_image-auditor"))
        .arg("--manifests")
        .arg(&f.manifests)
        .arg("--registry-config")
        .arg(config)
        .args(args)
        // Never the repository: a default cache would land in data/.
        .current_dir(f.work.path())
        .env_remove("IMAGE_AUDITOR_MANIFESTS")
        .env_remove("IMAGE_AUDITOR_REGISTRY_CONFIG")
        .output()
        .unwrap()
}

#[tokio::test]
async fn cli_index_resolve_cold_then_warm_and_check_resolve() {
    let f = Fixture::new().await;
    let cache = f.cache("cli-cache");
    let config = f.work.path().join("registry.yaml");
    std::fs::write(
        &config,
        format!(
            "insecure_http_hosts: [\"127.0.0.1\"]\ncache_dir: {}\n",
            cache.display()
        ),
    )
    .unwrap();

    let cold = run_cli(&f, &config, &["index", "resolve", "--json"]);
    assert_eq!(
        cold.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&cold.stderr)
    );
    let cold = stdout_json(&cold);
    let summary = &cold["summary"];
    assert_eq!(summary["digests"], PROMOTED);
    assert_eq!(summary["lists"], LISTS);
    assert_eq!(summary["children"], LINKS);
    assert_eq!(summary["failures"], serde_json::json!([]));
    assert_eq!(cold["manifest_requests"], COLD_GETS);
    assert_eq!(cold["token_requests"], 0);
    assert_eq!(cold["cache_hits"], 0);
    assert_eq!(cold["resolved_digests"], READ);
    assert_eq!(cached(&cache).len() as u64, READ);

    let warm = run_cli(&f, &config, &["index", "resolve", "--json"]);
    assert_eq!(warm.status.code(), Some(0));
    let warm = stdout_json(&warm);
    assert_eq!(warm["summary"], cold["summary"]);
    assert_eq!(warm["manifest_requests"], 0);
    assert_eq!(warm["cache_hits"], READ);
    assert_eq!(warm["resolved_digests"], READ);

    let multi_child = format!("{}/prod-us/multi@{}", f.reg.host, f.multi[1].digest);
    let nested_child = format!(
        "{}/prod-eu/nested@{}",
        f.reg.host, f.inner_children[0].digest
    );
    let out = run_cli(
        &f,
        &config,
        &["check", "--resolve", "--json", &multi_child, &nested_child],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    for (line, parent) in lines.iter().zip([&f.multi[0].digest, &f.outer.digest]) {
        assert_eq!(line["verdict"], "promoted_child", "{line}");
        assert_eq!(line["evidence"][0]["parent"], parent.to_string());
        assert_eq!(line["pending"], serde_json::Value::Null);
    }

    // Without --resolve the same child is only provisionally unpromoted.
    let out = run_cli(&f, &config, &["check", "--json", &multi_child]);
    assert_eq!(out.status.code(), Some(1));
    let line = stdout_json(&out);
    assert_eq!(line["verdict"], "unpromoted");
    assert!(line["pending"].is_object());
}

/// A digest promoted by two projects is read once, and from the candidates
/// of both: when the first project's repositories do not have it yet (its
/// promotion has not run, its staging was cleaned), the second project's
/// source must still be asked instead of reporting the digest unreadable.
#[tokio::test]
async fn digest_promoted_by_two_projects_is_read_from_either_projects_repositories() {
    let Workbench {
        reg,
        work,
        mut layout,
    } = Workbench::start();
    let [index, amd64, _] = layout.two_platform_index();
    layout.tag(&index, "v1");
    push_tag(&layout, "v1", &reg.host, "staging-b/real");

    let host = &reg.host;
    let root = work.path().join("manifests");
    // Projects load in name order: `a-early` (which lacks the digest) first.
    for (project, image) in [("a-early", "ghost"), ("b-late", "real")] {
        let letter = &project[..1];
        let manifest = root.join(format!("manifests/{project}/promoter-manifest.yaml"));
        let images = root.join(format!("images/{project}/images.yaml"));
        std::fs::create_dir_all(manifest.parent().unwrap()).unwrap();
        std::fs::create_dir_all(images.parent().unwrap()).unwrap();
        std::fs::write(
            &manifest,
            format!(
                "registries:\n- name: {host}/staging-{letter}\n  src: true\n\
                 - name: {host}/prod-{letter}\n"
            ),
        )
        .unwrap();
        std::fs::write(
            &images,
            format!(
                "- name: {image}\n  dmap:\n    \"{}\": [\"1.0\"]\n",
                index.digest
            ),
        )
        .unwrap();
    }
    let set = manifest::load(&root).unwrap();
    assert_eq!(set.errors().count(), 0);
    let promotions = Index::build(&set, 1);

    let resolver = Resolver::new(client(test_config(Some(&work.path().join("cache")))));
    let (resolved, summary) = resolver.resolve_all(&promotions, |_, _| {}).await;
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
    assert_eq!(
        (summary.digests, summary.lists, summary.children),
        (1, 1, 2)
    );
    let stats = resolver.client().stats();
    // staging-a and prod-a say 404, staging-b has it.
    assert_eq!(
        stats.count(host, RequestKind::Manifest, Outcome::NotFound),
        2
    );
    assert_eq!(stats.count(host, RequestKind::Manifest, Outcome::Ok), 1);
    assert_eq!(manifest_gets(&stats), 3);
    for repo in ["prod-a/ghost", "prod-b/real"] {
        let result = audit(
            &resolved,
            &push_event(reg.repo(repo), &amd64.digest),
            &Policy::default(),
        );
        assert_eq!(result.verdict.kind, VerdictKind::PromotedChild, "{repo}");
    }
}

/// Issue 12: an insert that names only a tag R promises (a GCR payload may
/// carry no digest) is judged by the digest the tag points to now, read with
/// one `HEAD` of the tag through the registry client, instead of waiting
/// undecided until its retry budget makes it an `unverifiable` alert. What
/// the tag points to is moved between events with PUTs of manifests by tag;
/// nothing about tags is cached, so every event asks again.
#[tokio::test]
async fn tag_only_insert_is_judged_by_the_digest_the_tag_points_to() {
    let f = Fixture::new().await;
    let mut proxy = FaultProxy::start(&f.reg.host).await;
    let host = proxy.host.clone();
    let index = f.index_at(&host);
    let policy = Policy::default();
    let resolver = f.resolver("cache");
    let tag_only = |path: &str| Event {
        id: EventId(format!("gcr message for {path}")),
        source: Source::PubsubPull,
        action: Action::Insert,
        repository: format!("{host}/{path}").parse().unwrap(),
        digest: None,
        tag: Some("1.0".parse().unwrap()),
    };
    let event = tag_only("prod-us/multi");
    // Requests for the tag itself (a digest never contains "/manifests/1.0").
    let tag_reads = || proxy.requests("/manifests/1.0");

    // Everything 1.0 will point at is first pushed under tags of its own.
    let (rogue_layout, rogue) = f.push_rogue("rogue", "prod-us/multi");
    for tag in ["multi", "multi-v2", "single"] {
        f.push(tag, "prod-us/multi");
    }
    // Moves 1.0, straight at the registry.
    let point_1_0 = async |layout: &Layout, desc: &Desc| {
        put_tagged(&f.reg.host, layout, "prod-us/multi", "1.0", desc).await
    };
    let multi = &f.multi[0].digest;

    // 1.0 at its promised digest (a list): promoted, on one HEAD alone.
    point_1_0(&f.layout, &f.multi[0]).await;
    let (index, result) = resolver.settle(&index, &event, &policy).await;
    let phrase = format!("tag 1.0 points to {multi}");
    assert_final(&result, VerdictKind::Promoted, &phrase);
    assert_eq!(result.verdict.evidence[0].digest, *multi);
    assert_eq!(
        (tag_reads(), manifest_gets(&resolver.client().stats())),
        (1, 1)
    );

    // 1.0 moved to multi's other promoted digest: tag_moved, naming the
    // promise.
    point_1_0(&f.layout, &f.multi_v2).await;
    let (index, result) = resolver.settle(&index, &event, &policy).await;
    let v = &result.verdict;
    assert_eq!(v.kind, VerdictKind::TagMoved, "{v:?}");
    assert!(
        v.reason.contains(&f.multi_v2.digest.to_string()),
        "{}",
        v.reason
    );
    assert_eq!(v.evidence.len(), 1);
    assert_eq!(v.evidence[0].digest, *multi);
    assert_eq!(
        (tag_reads(), manifest_gets(&resolver.client().stats())),
        (2, 2)
    );

    // 1.0 moved to content of another image of the same manifest: the
    // digest is explained by its other name, the tag is not.
    point_1_0(&f.layout, &f.single).await;
    let (index, result) = resolver.settle(&index, &event, &policy).await;
    assert_eq!(
        result.verdict.kind,
        VerdictKind::TagMoved,
        "{:?}",
        result.verdict
    );
    assert_eq!(
        (tag_reads(), manifest_gets(&resolver.client().stats())),
        (3, 3)
    );

    // 1.0 moved to content nobody promoted: unpromoted, naming the broken
    // promise, after reading multi's two promoted digests (is the rogue a
    // child of one?) and the rogue itself (is it an attachment?).
    point_1_0(&rogue_layout, &rogue).await;
    let (index, result) = resolver.settle(&index, &event, &policy).await;
    let v = &result.verdict;
    assert_eq!(v.kind, VerdictKind::Unpromoted, "{v:?}");
    assert_eq!(result.pending, None);
    for phrase in [
        &format!("tag 1.0 points to {}", rogue.digest),
        "promised tag 1.0",
        "unpromoted content",
        &multi.to_string(),
    ] {
        assert!(v.reason.contains(phrase), "{phrase}: {}", v.reason);
    }
    assert_eq!(v.evidence.len(), 1);
    assert_eq!(
        (&v.evidence[0].digest, &*v.evidence[0].image),
        (multi, "multi")
    );
    assert_eq!(
        (tag_reads(), manifest_gets(&resolver.client().stats())),
        (4, 3 + 4)
    );
    assert_eq!(
        cached(&f.cache("cache")),
        digests([multi, &f.multi_v2.digest, &rogue.digest]),
        "a tag's target is read as an answer, never cached as content"
    );

    // A promised tag that is not there (removed since, or not visible yet):
    // "not found" says nothing about what was pushed under it.
    let (index, result) = resolver
        .settle(&index, &tag_only("prod-eu/multi"), &policy)
        .await;
    let v = &result.verdict;
    assert_eq!(v.kind, VerdictKind::Undecided, "{v:?}");
    assert!(v.reason.contains("not found"), "{}", v.reason);
    assert_eq!(tag_reads(), 5);

    // Registry down: undecided for want of an answer, every attempt refused
    // until the breaker marks the host down (no retry after that).
    proxy.stop().await;
    let before = manifest_gets(&resolver.client().stats());
    let (_, result) = resolver.settle(&index, &event, &policy).await;
    let v = &result.verdict;
    assert_eq!(v.kind, VerdictKind::Undecided, "{v:?}");
    assert_eq!(result.pending, None);
    assert!(
        v.reason.contains("tag 1.0") && v.reason.contains("no answer"),
        "{}",
        v.reason
    );
    let stats = resolver.client().stats();
    let attempts = u64::from(test_config(None).breaker.failures);
    assert_eq!(manifest_gets(&stats) - before, attempts);
    assert_eq!(
        stats.count(&host, RequestKind::Manifest, Outcome::NetworkError),
        attempts
    );
}

/// The CLI's `check --resolve` of a reference with only a tag reads the
/// tag's digest the same way.
#[tokio::test]
async fn cli_check_resolve_of_a_promised_tag_reads_its_digest() {
    let f = Fixture::new().await;
    f.push("multi-v2", "prod-us/multi");
    put_tagged(&f.reg.host, &f.layout, "prod-us/multi", "2.0", &f.multi_v2).await;
    let config = f.work.path().join("registry.yaml");
    std::fs::write(&config, "insecure_http_hosts: [\"127.0.0.1\"]\n").unwrap();
    let reference = format!("{}/prod-us/multi:2.0", f.reg.host);
    let out = run_cli(&f, &config, &["check", "--resolve", "--json", &reference]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let line = stdout_json(&out);
    assert_eq!(line["verdict"], "promoted", "{line}");
    assert_eq!(line["pending"], serde_json::Value::Null);
    assert_eq!(line["evidence"][0]["digest"], f.multi_v2.digest.to_string());
}
