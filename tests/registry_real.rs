//! The registry client and resolver against a real CNCF distribution
//! registry, fed by skopeo from OCI layouts these tests write.

use crate::support;

use std::collections::BTreeSet;

use image_auditor::reference::Digest;
use image_auditor::registry::{
    ChildLink, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, ErrorKind, ManifestKind, OCI_INDEX,
    OCI_MANIFEST, RequestKind, attachment_subject, resolve_children,
};
use support::oci::{Desc, Layout};
use support::registry::{
    Auth, Push, Registry, Workbench, push_tag, put_tagged, skopeo_push, skopeo_raw,
};
use support::{client, test_config};

/// (child, parent, platform) of each link, order-independent.
fn pairs(links: &[ChildLink]) -> BTreeSet<(Digest, Digest, Option<String>)> {
    links
        .iter()
        .map(|l| {
            let platform = l.platform.as_ref().map(|p| p.to_string());
            (l.child.clone(), l.parent.clone(), platform)
        })
        .collect()
}

fn pair(child: &Desc, parent: &Desc, platform: Option<&str>) -> (Digest, Digest, Option<String>) {
    (
        child.digest.clone(),
        parent.digest.clone(),
        platform.map(String::from),
    )
}

/// Tags `desc`, written in `layout`, as `v1` and pushes it to `repo`.
fn push_v1(reg: &Registry, layout: &mut Layout, desc: &Desc, repo: &str) {
    layout.tag(desc, "v1");
    let pushed = push_tag(layout, "v1", &reg.host, repo);
    assert_eq!(
        pushed, desc.digest,
        "skopeo --preserve-digests kept the bytes"
    );
}

/// Writes and pushes a two-platform OCI index; returns (index, amd64, arm64).
fn push_two_platform_index(reg: &Registry, work: &std::path::Path, repo: &str) -> [Desc; 3] {
    let mut layout = Layout::create(&work.join(repo.replace('/', "_")));
    let [index, amd64, arm64] = layout.two_platform_index();
    push_v1(reg, &mut layout, &index, repo);
    [index, amd64, arm64]
}

#[tokio::test]
async fn single_platform_image_has_no_children() {
    let mut bench = Workbench::start();
    let (reg, layout) = (&bench.reg, &mut bench.layout);
    let image = layout.image("amd64");
    push_v1(reg, layout, &image, "test/single");

    let c = client(test_config(None));
    let repo = reg.repo("test/single");
    let manifest = c.fetch_manifest(&repo, &image.digest).await.unwrap();
    assert_eq!(manifest.media_type, OCI_MANIFEST);
    assert_eq!(manifest.kind, ManifestKind::Image { subject: None });
    assert!(!manifest.from_cache);
    assert!(image.digest.verifies(&manifest.bytes));

    let links = resolve_children(&c, &[repo], &image.digest).await.unwrap();
    assert!(links.is_empty());
    assert_eq!(c.stats().requests_to(&reg.host, RequestKind::Manifest), 2);
}

#[tokio::test]
async fn oci_index_children_are_found_from_the_first_candidate_that_has_them() {
    let reg = Registry::start(Auth::Anonymous);
    let work = tempfile::tempdir().unwrap();
    let [index, amd64, arm64] = push_two_platform_index(&reg, work.path(), "staging/multi");

    let c = client(test_config(None));
    // The source is asked first; it does not have the image, a destination does.
    let candidates = [reg.repo("staging/elsewhere"), reg.repo("staging/multi")];
    let links = resolve_children(&c, &candidates, &index.digest)
        .await
        .unwrap();
    assert_eq!(
        pairs(&links),
        BTreeSet::from([
            pair(&amd64, &index, Some("linux/amd64")),
            pair(&arm64, &index, Some("linux/arm64")),
        ])
    );
    assert!(links.iter().all(|l| l.media_type == OCI_MANIFEST));
    let stats = c.stats();
    // One 404 from the source, one GET of the index; platform images are not fetched.
    assert_eq!(stats.requests_to(&reg.host, RequestKind::Manifest), 2);
    assert_eq!(
        stats.count(
            &reg.host,
            RequestKind::Manifest,
            image_auditor::registry::Outcome::NotFound
        ),
        1
    );

    let nowhere = [reg.repo("staging/none"), reg.repo("prod/none")];
    let err = resolve_children(&c, &nowhere, &index.digest)
        .await
        .unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::NotFound);
    assert!(!err.is_transient());
}

#[tokio::test]
async fn docker_manifest_list_children_are_found() {
    let reg = Registry::start(Auth::Anonymous);
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::create(&work.path().join("v2s2"));
    let [index, _, _] = layout.two_platform_index();
    layout.tag(&index, "v1");
    let list_digest = skopeo_push(
        &layout.dir,
        "v1",
        &reg.host,
        "test/list",
        Push {
            docker_v2s2: true,
            ..Push::default()
        },
    );
    // Conversion rewrote every manifest; learn the children from the
    // registry through skopeo, not through the client under test.
    let raw = skopeo_raw(&format!("{}/test/list@{list_digest}", reg.host), None);
    assert!(list_digest.verifies(&raw));
    let list: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(list["mediaType"], DOCKER_MANIFEST_LIST);
    let expected: BTreeSet<(Digest, Digest, Option<String>)> = list["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let platform = format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            );
            (
                m["digest"].as_str().unwrap().parse().unwrap(),
                list_digest.clone(),
                Some(platform),
            )
        })
        .collect();
    assert_eq!(expected.len(), 2);

    let c = client(test_config(None));
    let repo = reg.repo("test/list");
    let manifest = c.fetch_manifest(&repo, &list_digest).await.unwrap();
    assert_eq!(manifest.media_type, DOCKER_MANIFEST_LIST);
    let links = resolve_children(&c, &[repo], &list_digest).await.unwrap();
    assert_eq!(pairs(&links), expected);
    assert!(links.iter().all(|l| l.media_type == DOCKER_MANIFEST));
}

#[tokio::test]
async fn nested_index_yields_every_child_parent_pair() {
    let mut bench = Workbench::start();
    let (reg, layout) = (&bench.reg, &mut bench.layout);
    let amd64 = layout.image("amd64");
    let arm64 = layout.image("arm64");
    let s390x = layout.image("s390x");
    let inner = layout.index(&[
        (&amd64, Some(("linux", "amd64"))),
        (&arm64, Some(("linux", "arm64"))),
    ]);
    let outer = layout.index(&[(&inner, None), (&s390x, Some(("linux", "s390x")))]);
    layout.tag(&inner, "inner");
    layout.tag(&s390x, "s390x");
    for tag in ["inner", "s390x"] {
        push_tag(layout, tag, &reg.host, "test/nested");
    }
    put_tagged(&reg.host, layout, "test/nested", "v1", &outer).await;
    let raw = skopeo_raw(&format!("{}/test/nested:v1", reg.host), None);
    assert!(outer.digest.verifies(&raw), "the registry kept the bytes");

    let c = client(test_config(None));
    let links = resolve_children(&c, &[reg.repo("test/nested")], &outer.digest)
        .await
        .unwrap();
    assert_eq!(
        pairs(&links),
        BTreeSet::from([
            pair(&inner, &outer, None),
            pair(&s390x, &outer, Some("linux/s390x")),
            pair(&amd64, &inner, Some("linux/amd64")),
            pair(&arm64, &inner, Some("linux/arm64")),
        ])
    );
    assert_eq!(links.len(), 4);
    let inner_link = links.iter().find(|l| l.child == inner.digest).unwrap();
    assert_eq!(inner_link.media_type, OCI_INDEX);
    // The two lists are fetched, the three images are not.
    assert_eq!(c.stats().requests_to(&reg.host, RequestKind::Manifest), 2);
}

#[tokio::test]
async fn attachment_subject_is_read_from_the_event_repository() {
    let mut bench = Workbench::start();
    let (reg, layout) = (&bench.reg, &mut bench.layout);
    let image = layout.image("amd64");
    let sbom = layout.attachment(&image);
    push_v1(reg, layout, &image, "test/app");
    layout.tag(&sbom, "sbom");
    let pushed = push_tag(layout, "sbom", &reg.host, "test/app");
    assert_eq!(pushed, sbom.digest);

    let c = client(test_config(None));
    let repo = reg.repo("test/app");
    assert_eq!(
        attachment_subject(&c, &repo, &sbom.digest).await.unwrap(),
        Some(image.digest.clone())
    );
    assert_eq!(
        attachment_subject(&c, &repo, &image.digest).await.unwrap(),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_accounting_cold_warm_and_concurrent() {
    let reg = Registry::start(Auth::Anonymous);
    let work = tempfile::tempdir().unwrap();
    let [index, amd64, arm64] = push_two_platform_index(&reg, work.path(), "prod/multi");
    let mut layout = Layout::create(&work.path().join("single"));
    let single = layout.image("amd64");
    push_v1(&reg, &mut layout, &single, "prod/single");
    let multi = reg.repo("prod/multi");
    let promoted = [(&multi, &index), (&reg.repo("prod/single"), &single)];
    let children = [&amd64, &arm64];
    let cache = work.path().join("cache");

    // Cold: one GET per promoted digest resolves every child.
    let cold = client(test_config(Some(&cache)));
    let mut found = 0;
    for (repo, desc) in promoted {
        found += resolve_children(&cold, std::slice::from_ref(repo), &desc.digest)
            .await
            .unwrap()
            .len();
    }
    assert_eq!(found, 2);
    assert_eq!(cold.stats().total(RequestKind::Manifest), 2);
    // Fetching N more digests costs exactly N GETs.
    for child in children {
        let m = cold.fetch_manifest(&multi, &child.digest).await.unwrap();
        assert!(!m.from_cache);
    }
    let stats = cold.stats();
    assert_eq!(stats.total(RequestKind::Manifest), 4);
    assert_eq!((stats.cache_misses, stats.cache_writes), (4, 4));

    // Warm restart: a new client on the same cache sends nothing.
    let warm = client(test_config(Some(&cache)));
    for (repo, desc) in promoted {
        resolve_children(&warm, std::slice::from_ref(repo), &desc.digest)
            .await
            .unwrap();
    }
    for child in children {
        let m = warm.fetch_manifest(&multi, &child.digest).await.unwrap();
        assert!(m.from_cache);
    }
    let stats = warm.stats();
    assert!(stats.requests.is_empty(), "{:?}", stats.requests);
    assert_eq!((stats.cache_hits, stats.cache_corruptions), (4, 0));

    // Concurrent fetches of one digest: one GET. Callers that arrive after
    // the fetch finished find the cache instead of joining it.
    let fresh = client(test_config(Some(&work.path().join("cache2"))));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (c, repo, digest) = (fresh.clone(), multi.clone(), index.digest.clone());
        tasks.spawn(async move { c.fetch_manifest(&repo, &digest).await });
    }
    while let Some(joined) = tasks.join_next().await {
        let m = joined.unwrap().unwrap();
        assert!(index.digest.verifies(&m.bytes));
    }
    let stats = fresh.stats();
    assert_eq!(stats.total(RequestKind::Manifest), 1);
    assert_eq!(stats.coalesced + stats.cache_hits, 7);
}
