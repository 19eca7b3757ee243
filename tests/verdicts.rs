//! The verdict table of docs/design.md §6, one test (or a few) per row, against the
//! hand-written fixtures in `manifests-fixtures/rules/verdicts*`.
//!
//! Fixtures:
//! - `verdicts/` (thin): `widgets` (us + asia; gizmo with tags, a tagless
//!   digest, a list parent, and a child listed as `gizmo-amd64`), `regional`
//!   (the same image name, eu only), `kube-state` (segment-aware prefixes),
//!   `local` (hosts with ports), `oci` (an OCI index parent), `broken`
//!   (excluded for a bad digest).
//! - `verdicts-a/`, `verdicts-b/` (thin): the retired auditor's fixtures A and
//!   B (docs/reference/cip-auditor.md §5.3).
//! - `verdicts-match.yaml` (plain): the retired auditor's `TestMatch` (§5.4).
//!
//! How the retired auditor's cases map onto the new verdicts (cip-auditor.md §3.6, §5.3):
//! - A1 `proxy-agent@c419…:v0.0.8` VERIFIED → `promoted`.
//! - A2 `proxy-agent@8735…` VERIFIED (parent c419) → `promoted_child` once the
//!   list is read; before that `unpromoted` with `pending` naming exactly c419.
//! - A3 `proxy-agent-white-powder@c419…` REJECTED "no matching source" →
//!   `wrong_repository`: the path is under the project's destination prefix, so
//!   it is in scope (not `out_of_scope`); the digest is known, but
//!   `proxy-agent-white-powder` is none of the manifest's image names, so row 6
//!   does not apply and row 7 does. Nothing is pending: no image is listed at
//!   that path, so no list read could explain it.
//! - A4 `proxy-agent@c419…:evil` REJECTED "could not validate" → `unlisted_tag`,
//!   decided at once (the retired auditor scanned the whole staging project).
//! - A5/A6 DELETE of the tracked digest / tag → `deleted` (row 3).
//! - A7/A8 DELETE of untracked `us.gcr.io/k8s-artifacts-prod/secret…` →
//!   `out_of_scope` with fixture A alone (no destination prefix above
//!   `…/secret`: scope is checked before the action), but `deleted` under
//!   fixture B, whose root-level destination puts `…/secret` in scope.
//! - B9/B10 `…/kubernetes/etcd@0873…` and `…/etcd@0873…` VERIFIED (parent
//!   bcdd) → `promoted_child`; at the root both projects claim `etcd`, so
//!   both images' unread digests are pending (the first-match bug of
//!   promo-tools#214 cannot recur).
//! - §5.4 match records: path+digest+tag and path+digest → `promoted`;
//!   `sha256:000` can no longer reach the audit (the GCR parser calls it
//!   `malformed`, see tests/gcr_payload.rs); tag mismatch → `unlisted_tag`.

use crate::support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image_auditor::audit::{Audit, Evidence, Pending, Policy, Verdict, VerdictKind, audit};
use image_auditor::event::{Action, Event, EventId, Source};
use image_auditor::index::{Children, Index};
use image_auditor::manifest::{self, ManifestSet};
use image_auditor::reference::{Digest, Reference};
use image_auditor::sources::gcr;
use support::fixtures::{d, line_of, rules};

// ---------------------------------------------------------------- helpers

fn load(name: &str) -> (ManifestSet, Index) {
    let set = manifest::load(&rules(name)).unwrap();
    let index = Index::build(&set, 1);
    (set, index)
}

/// The main table's index; its only problem is the `broken` project.
fn table() -> Index {
    let (set, index) = load("verdicts");
    let errors: Vec<String> = set.errors().map(|p| p.to_string()).collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("images/broken/images.yaml:4: error:"));
    index
}

fn event(action: Action, reference: &str) -> Event {
    let r: Reference = reference.parse().unwrap();
    Event {
        id: EventId(reference.into()),
        source: Source::Cli,
        action,
        repository: r.repository,
        digest: r.digest,
        tag: r.tag,
    }
}

fn insert(index: &Index, reference: &str) -> Audit {
    audit(index, &event(Action::Insert, reference), &Policy::default())
}

fn delete(index: &Index, reference: &str) -> Audit {
    audit(index, &event(Action::Delete, reference), &Policy::default())
}

fn with_policy(index: &Index, action: Action, reference: &str, policy: &Policy) -> Audit {
    audit(index, &event(action, reference), policy)
}

/// `reference` with `@sha256:<unit…>` appended.
fn at(reference: &str, unit: &str) -> String {
    format!("{reference}@{}", d(unit))
}

fn images_file(root: &str, project: &str) -> PathBuf {
    rules(root).join("images").join(project).join("images.yaml")
}

#[track_caller]
fn expect(a: &Audit, kind: VerdictKind) -> &Verdict {
    assert_eq!(a.verdict.kind, kind, "{:#?}", a);
    &a.verdict
}

/// Checks one piece of evidence: the file, the line of the `dmap` key of
/// `digest` (counted from the text), the image name it is promoted as, and
/// the parent when the event's digest is a child.
#[track_caller]
fn assert_evidence(
    e: &Evidence,
    file: &Path,
    image: &str,
    digest: &Digest,
    parent: Option<&Digest>,
) {
    assert_eq!(&*e.file, file, "{e:#?}");
    assert_eq!(e.line, line_of(file, &digest.hex()), "{e:#?}");
    assert_eq!(&*e.image, image, "{e:#?}");
    assert_eq!(&e.digest, digest, "{e:#?}");
    assert_eq!(e.parent.as_ref(), parent, "{e:#?}");
}

/// What `pending` asks to read, as (project, image, unread digests).
fn pending_parents(index: &Index, a: &Audit) -> Vec<(String, String, Vec<Digest>)> {
    let mut out: Vec<_> = a
        .pending
        .as_ref()
        .expect("pending")
        .parents
        .iter()
        .map(|&i| {
            let p = index.parents_to_resolve(i);
            (p.project.to_string(), p.image.to_string(), p.digests)
        })
        .collect();
    out.sort();
    out
}

fn owned(project: &str, image: &str, digests: &[Digest]) -> (String, String, Vec<Digest>) {
    (project.into(), image.into(), digests.to_vec())
}

/// `index` with `parent` read as a list of `children` (or as a plain image
/// when `children` is empty), on top of what `index` already knows.
fn resolve(index: &Index, reads: &[(Digest, Vec<Digest>)]) -> Index {
    let mut children: Children = (**index.children()).clone();
    for (parent, kids) in reads {
        children.record(parent, kids.iter().cloned());
    }
    index.with_children(Arc::new(children))
}

const GIZMO: &str = "us.gcr.io/example-prod/widgets/gizmo";

/// Every digest widgets' gizmo promotes, read; `cccc…` is a list of c1…, c2….
fn gizmo_resolved(index: &Index) -> Index {
    resolve(
        index,
        &[
            (d("a"), vec![]),
            (d("b"), vec![]),
            (d("c"), vec![d("c1"), d("c2")]),
        ],
    )
}

// ---------------------------------------------------------------- row 1

#[test]
fn row01_unparseable_payload_is_malformed_and_alerts() {
    let m = gcr::parse(&EventId("1".into()), b"{").unwrap_err();
    let v = Verdict::malformed(&m);
    assert_eq!(v.kind, VerdictKind::Malformed);
    assert!(v.kind.alerts());
    assert!(v.reason.contains("not JSON"), "{}", v.reason);
}

// ---------------------------------------------------------------- row 2

#[test]
fn row02_staging_and_foreign_registries_are_out_of_scope() {
    let index = table();
    for r in [
        at("gcr.io/k8s-staging-widgets/gizmo", "a"),
        "docker.io/library/busybox:1.36".to_string(),
        at("us.gcr.io/example-prod/gizmo", "a"),
        // The prefix itself is not a repository under it.
        at("us.gcr.io/example-prod/widgets-old/gizmo", "a"),
    ] {
        let a = insert(&index, &r);
        let v = expect(&a, VerdictKind::OutOfScope);
        assert!(v.evidence.is_empty());
        assert!(a.pending.is_none());
        assert!(!v.kind.alerts());
    }
}

#[test]
fn segment_aware_prefix_kube_state_does_not_claim_kube_state_metrics() {
    let index = table();
    let a = insert(
        &index,
        &at("us.gcr.io/example-prod/kube-state/exporter", "1"),
    );
    expect(&a, VerdictKind::Promoted);
    for r in [
        "us.gcr.io/example-prod/kube-state-metrics/exporter",
        "us.gcr.io/example-prod/kube-state-metrics",
        "us.gcr.io/example-prod/kube-statex/exporter",
    ] {
        let a = insert(&index, &at(r, "1"));
        expect(&a, VerdictKind::OutOfScope);
        assert!(!index.claims(&r.parse().unwrap()).in_scope(), "{r}");
    }
}

// ---------------------------------------------------------------- row 3

#[test]
fn row03_delete_of_promoted_digest_is_deleted_with_evidence() {
    let index = table();
    let file = images_file("verdicts", "widgets");
    for policy in [
        Policy::default(),
        Policy {
            allow_unpromoted_deletes: true,
            ..Policy::default()
        },
    ] {
        let a = with_policy(&index, Action::Delete, &at(GIZMO, "a"), &policy);
        let v = expect(&a, VerdictKind::Deleted);
        assert!(v.kind.alerts());
        assert_eq!(v.evidence.len(), 1);
        assert_evidence(&v.evidence[0], &file, "gizmo", &d("a"), None);
        assert!(a.pending.is_none());
    }
}

#[test]
fn row03_delete_of_promised_tag_is_deleted_even_when_unpromoted_deletes_are_allowed() {
    let index = table();
    let allow = Policy {
        allow_unpromoted_deletes: true,
        ..Policy::default()
    };
    for policy in [Policy::default(), allow] {
        let a = with_policy(&index, Action::Delete, &format!("{GIZMO}:v1.0"), &policy);
        expect(&a, VerdictKind::Deleted);
        assert!(a.pending.is_none());
    }
}

#[test]
fn row03_delete_of_unpromoted_content_is_deleted_by_default() {
    let index = table();
    for r in [at(GIZMO, "9"), format!("{GIZMO}:nope")] {
        let a = delete(&index, &r);
        expect(&a, VerdictKind::Deleted);
        assert!(a.verdict.evidence.is_empty());
        assert!(a.pending.is_none());
    }
}

#[test]
fn row03_allow_unpromoted_deletes_gives_deleted_unpromoted_pending_the_image_lists() {
    let index = table();
    let allow = Policy {
        allow_unpromoted_deletes: true,
        ..Policy::default()
    };
    // An unknown digest may be the child of one of gizmo's unread lists.
    let a = with_policy(&index, Action::Delete, &at(GIZMO, "9"), &allow);
    let v = expect(&a, VerdictKind::DeletedUnpromoted);
    assert!(!v.kind.alerts());
    assert_eq!(
        pending_parents(&index, &a),
        vec![owned("widgets", "gizmo", &[d("a"), d("b"), d("c")])]
    );
    // Once they are read and it is nobody's child, the verdict is final.
    let resolved = gizmo_resolved(&index);
    let a = with_policy(&resolved, Action::Delete, &at(GIZMO, "9"), &allow);
    expect(&a, VerdictKind::DeletedUnpromoted);
    assert!(a.pending.is_none());
    // ... and if it is a child of a promoted list, the delete is of promoted content.
    let a = with_policy(&resolved, Action::Delete, &at(GIZMO, "c1"), &allow);
    expect(&a, VerdictKind::Deleted);
    assert_eq!(a.verdict.evidence[0].parent, Some(d("c")));
    // A tag nobody promises needs no read.
    let a = with_policy(&index, Action::Delete, &format!("{GIZMO}:nope"), &allow);
    expect(&a, VerdictKind::DeletedUnpromoted);
    assert!(a.pending.is_none());
}

#[test]
fn row03_delete_outside_every_destination_is_out_of_scope() {
    let index = table();
    let a = delete(&index, &at("gcr.io/k8s-staging-widgets/gizmo", "a"));
    expect(&a, VerdictKind::OutOfScope);
}

// ---------------------------------------------------------------- row 4

#[test]
fn row04_digest_promoted_here_without_tag_is_promoted() {
    let index = table();
    let file = images_file("verdicts", "widgets");
    for (unit, repo) in [
        ("a", GIZMO),
        ("b", GIZMO),
        ("c", "asia.gcr.io/example-prod/widgets/gizmo"),
        ("d", "us.gcr.io/example-prod/widgets/gizmo-amd64"),
    ] {
        let a = insert(&index, &at(repo, unit));
        let v = expect(&a, VerdictKind::Promoted);
        assert!(a.pending.is_none());
        assert!(!v.kind.alerts());
        assert_eq!(v.evidence.len(), 1);
        let image = repo.rsplit('/').next().unwrap();
        assert_evidence(&v.evidence[0], &file, image, &d(unit), None);
    }
}

#[test]
fn row04_digest_promoted_here_with_a_listed_tag_is_promoted() {
    let index = table();
    for tag in ["v1.0", "latest"] {
        let a = insert(&index, &at(&format!("{GIZMO}:{tag}"), "a"));
        let v = expect(&a, VerdictKind::Promoted);
        let tags: Vec<&str> = v.evidence[0].tags.iter().map(|t| &**t).collect();
        assert_eq!(tags, ["v1.0", "latest"]);
    }
}

#[test]
fn host_with_port_and_multi_component_image_name() {
    let index = table();
    let file = images_file("verdicts", "local");
    let a = insert(&index, &at("localhost:5000/mirror/tools/busybox:1.10", "2"));
    let v = expect(&a, VerdictKind::Promoted);
    assert_evidence(&v.evidence[0], &file, "tools/busybox", &d("2"), None);
    // The unquoted tag `1.10` stayed the text "1.10": "1.1" is not listed.
    let a = insert(&index, &at("localhost:5000/mirror/tools/busybox:1.1", "2"));
    expect(&a, VerdictKind::UnlistedTag);
    // Another port on the same host is another registry.
    let a = insert(&index, &at("localhost:5001/staging/tools/busybox", "2"));
    expect(&a, VerdictKind::OutOfScope);
    let a = insert(&index, &at("localhost:5000/mirror/tools/busybox", "9"));
    expect(&a, VerdictKind::Unpromoted);
}

// ---------------------------------------------------------------- row 5

#[test]
fn row05_child_of_a_promoted_list_is_promoted_child_once_the_list_is_read() {
    let index = table();
    let file = images_file("verdicts", "widgets");
    // Before the lists are read: provisional, naming exactly gizmo's digests.
    let a = insert(&index, &at(GIZMO, "c1"));
    expect(&a, VerdictKind::Unpromoted);
    assert_eq!(
        pending_parents(&index, &a),
        vec![owned("widgets", "gizmo", &[d("a"), d("b"), d("c")])]
    );
    let p = index.parents_to_resolve(a.pending.as_ref().unwrap().parents[0]);
    let repos: Vec<&str> = p.repositories.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        repos,
        [
            "gcr.io/k8s-staging-widgets/gizmo",
            "us.gcr.io/example-prod/widgets/gizmo",
            "asia.gcr.io/example-prod/widgets/gizmo",
        ],
        "source first, then the destinations"
    );
    // Reading only the list is enough to decide.
    let resolved = resolve(&index, &[(d("c"), vec![d("c1"), d("c2")])]);
    let a = insert(&resolved, &at(GIZMO, "c1"));
    let v = expect(&a, VerdictKind::PromotedChild);
    assert!(a.pending.is_none());
    assert!(!v.kind.alerts());
    assert_eq!(v.evidence.len(), 1);
    assert_evidence(&v.evidence[0], &file, "gizmo", &d("c"), Some(&d("c")));
    // In the other destination region too.
    let a = insert(
        &resolved,
        &at("asia.gcr.io/example-prod/widgets/gizmo", "c2"),
    );
    expect(&a, VerdictKind::PromotedChild);
    // Not in a region the list is not promoted to.
    let a = insert(&resolved, &at("eu.gcr.io/example-prod/widgets/gizmo", "c2"));
    let v = expect(&a, VerdictKind::WrongRepository);
    assert_eq!(v.evidence[0].parent, Some(d("c")));
}

#[test]
fn row05_child_tagged_with_its_parents_tag_is_tag_moved() {
    let index = gizmo_resolved(&table());
    let a = insert(&index, &at(&format!("{GIZMO}:v2.0"), "c1"));
    let v = expect(&a, VerdictKind::TagMoved);
    assert_eq!(v.evidence[0].digest, d("c"));
}

#[test]
fn oci_index_parent_and_nested_lists() {
    // The resolver treats an OCI image index and a Docker manifest list alike
    // and records each level; here the index 4444… lists 5555… and the nested
    // index 6666…, which lists 7777….
    let index = table();
    let repo = "us.gcr.io/example-prod/oci/app";
    let file = images_file("verdicts", "oci");
    let a = insert(&index, &at(repo, "7"));
    expect(&a, VerdictKind::Unpromoted);
    assert_eq!(
        pending_parents(&index, &a),
        vec![owned("oci", "app", &[d("4")])]
    );
    let resolved = resolve(
        &index,
        &[(d("4"), vec![d("5"), d("6")]), (d("6"), vec![d("7")])],
    );
    for unit in ["5", "6", "7"] {
        let a = insert(&resolved, &at(repo, unit));
        let v = expect(&a, VerdictKind::PromotedChild);
        assert!(a.pending.is_none());
        assert_evidence(&v.evidence[0], &file, "app", &d("4"), Some(&d("4")));
    }
}

// ---------------------------------------------------------------- row 6

#[test]
fn row06_child_listed_under_an_amd64_name_is_promoted_as_that_name() {
    // promo-tools#402: gizmo's list is copied to …/gizmo, so its amd64 child
    // arrives at …/gizmo, but the manifest lists that digest as gizmo-amd64.
    let index = table();
    let file = images_file("verdicts", "widgets");
    let a = insert(&index, &at(GIZMO, "d"));
    let v = expect(&a, VerdictKind::Promoted);
    assert!(a.pending.is_none());
    assert_evidence(&v.evidence[0], &file, "gizmo-amd64", &d("d"), None);
    assert!(v.reason.contains("as gizmo-amd64"), "{}", v.reason);
}

#[test]
fn row06_strict_mode_calls_it_wrong_repository() {
    let index = table();
    let strict = Policy {
        strict_repository: true,
        ..Policy::default()
    };
    let a = with_policy(&index, Action::Insert, &at(GIZMO, "d"), &strict);
    let v = expect(&a, VerdictKind::WrongRepository);
    assert!(v.kind.alerts());
    assert_eq!(&*v.evidence[0].image, "gizmo-amd64");
    assert!(a.pending.is_none());
    // Strict mode changes nothing for a digest promoted at exactly R.
    let a = with_policy(&index, Action::Insert, &at(GIZMO, "a"), &strict);
    expect(&a, VerdictKind::Promoted);
}

/// Row 6 explains why the digest is at R, never its tag: gizmo-amd64 lists
/// dddd… for v2.0, but at gizmo v2.0 is promised to the list cccc….
#[test]
fn row06_a_tag_is_judged_against_the_repositorys_own_promises() {
    let index = table();
    let file = images_file("verdicts", "widgets");
    let strict = Policy {
        strict_repository: true,
        ..Policy::default()
    };
    for policy in [Policy::default(), strict.clone()] {
        let judge = |reference: &str| with_policy(&index, Action::Insert, reference, &policy);
        // Promised at R to another digest: moved, with the promise as evidence.
        for (tag, promised) in [("v2.0", "c"), ("latest", "a"), ("v1.0", "a")] {
            let a = judge(&at(&format!("{GIZMO}:{tag}"), "d"));
            let v = expect(&a, VerdictKind::TagMoved);
            assert!(a.pending.is_none());
            assert_eq!(v.evidence.len(), 1);
            assert_evidence(&v.evidence[0], &file, "gizmo", &d(promised), None);
            assert!(
                v.reason.contains(&format!("tag {tag} of {GIZMO}")),
                "{}",
                v.reason
            );
            assert!(v.reason.contains(&d(promised).to_string()), "{}", v.reason);
        }
        // Listed for nothing at R: the evidence is what explains the digest.
        let a = judge(&at(&format!("{GIZMO}:v9"), "d"));
        let v = expect(&a, VerdictKind::UnlistedTag);
        assert_evidence(&v.evidence[0], &file, "gizmo-amd64", &d("d"), None);
        assert!(v.reason.contains("as gizmo-amd64"), "{}", v.reason);
        assert!(v.reason.contains("tag v9"), "{}", v.reason);
    }
    // Untagged, row 6 itself decides: promoted as the other name, or
    // wrong_repository in strict mode.
    expect(&insert(&index, &at(GIZMO, "d")), VerdictKind::Promoted);
    let a = with_policy(&index, Action::Insert, &at(GIZMO, "d"), &strict);
    expect(&a, VerdictKind::WrongRepository);
    // And the other way round: gizmo's aaaa… pushed at gizmo-amd64 under
    // gizmo's tag, which gizmo-amd64 promises to dddd… only.
    let amd64 = "us.gcr.io/example-prod/widgets/gizmo-amd64";
    let a = insert(&index, &at(&format!("{amd64}:v1.0"), "a"));
    let v = expect(&a, VerdictKind::UnlistedTag);
    assert_evidence(&v.evidence[0], &file, "gizmo", &d("a"), None);
    let a = insert(&index, &at(&format!("{amd64}:v2.0"), "a"));
    let v = expect(&a, VerdictKind::TagMoved);
    assert_evidence(&v.evidence[0], &file, "gizmo-amd64", &d("d"), None);
}

/// The children of a list promoted under another image name (rows 5 and 6
/// together) keep no tag either.
#[test]
fn row06_children_of_a_list_promoted_under_another_name_are_judged_by_rs_tags() {
    let file = images_file("verdicts", "widgets");
    // dddd… (gizmo-amd64) read as a list of d1…, cccc… (gizmo) as c1…, c2….
    let index = resolve(
        &table(),
        &[(d("d"), vec![d("d1")]), (d("c"), vec![d("c1"), d("c2")])],
    );
    let a = insert(&index, &at(GIZMO, "d1"));
    let v = expect(&a, VerdictKind::PromotedChild);
    assert!(v.reason.contains("as gizmo-amd64"), "{}", v.reason);
    assert_evidence(&v.evidence[0], &file, "gizmo-amd64", &d("d"), Some(&d("d")));
    let a = insert(&index, &at(&format!("{GIZMO}:v2.0"), "d1"));
    let v = expect(&a, VerdictKind::TagMoved);
    assert_evidence(&v.evidence[0], &file, "gizmo", &d("c"), None);
    let a = insert(&index, &at(&format!("{GIZMO}:v9"), "d1"));
    expect(&a, VerdictKind::UnlistedTag);
    // gizmo's child at gizmo-amd64 under the tag gizmo-amd64 gives dddd….
    let amd64 = "us.gcr.io/example-prod/widgets/gizmo-amd64";
    let a = insert(&index, &at(&format!("{amd64}:v2.0"), "c1"));
    let v = expect(&a, VerdictKind::TagMoved);
    assert_evidence(&v.evidence[0], &file, "gizmo-amd64", &d("d"), None);
}

// ---------------------------------------------------------------- row 7

#[test]
fn row07_digest_promoted_only_in_another_region_is_wrong_repository() {
    let index = table();
    // eeee… is promoted by `regional` to eu only.
    let a = insert(&index, &at(GIZMO, "e"));
    let v = expect(&a, VerdictKind::WrongRepository);
    assert!(v.kind.alerts());
    assert_eq!(v.evidence.len(), 1);
    assert_evidence(
        &v.evidence[0],
        &images_file("verdicts", "regional"),
        "gizmo",
        &d("e"),
        None,
    );
    // Provisional: one of gizmo's unread lists here could still hold it.
    assert_eq!(
        pending_parents(&index, &a),
        vec![owned("widgets", "gizmo", &[d("a"), d("b"), d("c")])]
    );
    let resolved = gizmo_resolved(&index);
    let a = insert(&resolved, &at(GIZMO, "e"));
    expect(&a, VerdictKind::WrongRepository);
    assert!(a.pending.is_none(), "{a:#?}");
    // Under a tag R promises, the reason also names the promise it breaks.
    let a = insert(&resolved, &at(&format!("{GIZMO}:latest"), "e"));
    let v = expect(&a, VerdictKind::WrongRepository);
    let file = images_file("verdicts", "widgets");
    for phrase in [
        "promised tag latest",
        &d("a").to_string(),
        &format!("{}:{}", file.display(), line_of(&file, &d("a").to_string())),
    ] {
        assert!(v.reason.contains(phrase), "{phrase}: {}", v.reason);
    }
    // And the other way round: widgets' digest pushed to eu.
    let a = insert(&index, &at("eu.gcr.io/example-prod/widgets/gizmo", "a"));
    let v = expect(&a, VerdictKind::WrongRepository);
    assert_eq!(&*v.evidence[0].project, "widgets");
}

#[test]
fn root_destination_never_explains_a_path_that_is_none_of_its_image_names() {
    // verdicts-match.yaml promotes foo-controller to the root us.gcr.io/some-prod.
    let (_, index) = load("verdicts-match.yaml");
    for repo in [
        "us.gcr.io/some-prod/bar",
        "us.gcr.io/some-prod/bar/foo-controller",
        "us.gcr.io/some-prod/foo-controller/extra",
    ] {
        let a = insert(&index, &at(repo, "a"));
        let v = expect(&a, VerdictKind::WrongRepository);
        assert_eq!(&*v.evidence[0].image, "foo-controller");
        assert!(a.pending.is_none(), "no image is listed at {repo}");
        let a = insert(&index, &at(repo, "9"));
        expect(&a, VerdictKind::Unpromoted);
    }
}

// ---------------------------------------------------------------- row 8

#[test]
fn row08_tag_promised_to_another_digest_is_tag_moved() {
    let index = table();
    let file = images_file("verdicts", "widgets");
    // `latest` is promised to aaaa…; bbbb… is promoted here, tagless.
    let a = insert(&index, &at(&format!("{GIZMO}:latest"), "b"));
    let v = expect(&a, VerdictKind::TagMoved);
    assert!(v.kind.alerts());
    assert!(a.pending.is_none());
    assert_eq!(v.evidence.len(), 1);
    assert_evidence(&v.evidence[0], &file, "gizmo", &d("a"), None);
    // v2.0 is promised to the list cccc…, not to aaaa….
    let a = insert(&index, &at(&format!("{GIZMO}:v2.0"), "a"));
    let v = expect(&a, VerdictKind::TagMoved);
    assert_evidence(&v.evidence[0], &file, "gizmo", &d("c"), None);
}

// ---------------------------------------------------------------- row 9

#[test]
fn row09_tag_listed_for_no_digest_here_is_unlisted_tag() {
    let index = table();
    let a = insert(&index, &at(&format!("{GIZMO}:evil"), "a"));
    let v = expect(&a, VerdictKind::UnlistedTag);
    assert!(v.kind.alerts());
    assert!(a.pending.is_none());
    assert_eq!(v.evidence[0].digest, d("a"));
    // v3.0 is listed, but only in eu (project `regional`), not at R.
    let a = insert(&index, &at(&format!("{GIZMO}:v3.0"), "a"));
    expect(&a, VerdictKind::UnlistedTag);
}

#[test]
fn tag_only_insert_of_an_unlisted_tag_is_unlisted_tag() {
    let index = table();
    let a = insert(&index, &format!("{GIZMO}:evil"));
    expect(&a, VerdictKind::UnlistedTag);
    assert!(a.pending.is_none());
}

#[test]
fn tag_only_insert_of_a_promised_tag_waits_for_the_tag_target() {
    let index = table();
    let file = images_file("verdicts", "widgets");
    let a = insert(&index, &format!("{GIZMO}:v1.0"));
    let v = expect(&a, VerdictKind::Undecided);
    assert_eq!(
        a.pending,
        Some(Pending {
            parents: vec![],
            event_manifest: false,
            tag_target: true,
        })
    );
    // What is missing is the digest the tag points to, not a list: say so,
    // and name the promise it will be judged against.
    let missing = a.pending.as_ref().unwrap().describe(&index);
    assert_eq!(missing, "the digest the tag points to has not been read");
    assert!(v.reason.contains("has not been read"), "{}", v.reason);
    assert!(v.reason.contains(&d("a").to_string()), "{}", v.reason);
    assert_eq!(v.evidence.len(), 1);
    assert_evidence(&v.evidence[0], &file, "gizmo", &d("a"), None);
}

// ---------------------------------------------------------------- rows 10, 11

fn attachment_tag(subject: &Digest, kind: &str) -> String {
    format!("sha256-{}.{kind}", subject.hex())
}

#[test]
fn row10_attachment_of_a_promoted_digest_is_promoted_attachment() {
    let index = table();
    let file = images_file("verdicts", "widgets");
    for kind in ["sig", "att", "sbom"] {
        let tag = attachment_tag(&d("a"), kind);
        // With the attachment's own (unlisted) digest, and tag-only.
        for r in [at(&format!("{GIZMO}:{tag}"), "f"), format!("{GIZMO}:{tag}")] {
            let a = insert(&index, &r);
            let v = expect(&a, VerdictKind::PromotedAttachment);
            assert!(!v.kind.alerts());
            assert!(a.pending.is_none());
            assert_evidence(&v.evidence[0], &file, "gizmo", &d("a"), None);
        }
    }
    // The subject promoted under the -amd64 name (row 6) counts too.
    let tag = attachment_tag(&d("d"), "sig");
    let a = insert(&index, &format!("{GIZMO}:{tag}"));
    expect(&a, VerdictKind::PromotedAttachment);
}

#[test]
fn row11_attachment_of_an_unpromoted_digest_is_unpromoted_attachment() {
    let index = table();
    let tag = attachment_tag(&d("9"), "sig");
    let a = insert(&index, &at(&format!("{GIZMO}:{tag}"), "f"));
    let v = expect(&a, VerdictKind::UnpromotedAttachment);
    assert!(v.kind.alerts());
    // The subject might be a child of one of gizmo's unread lists.
    assert_eq!(
        pending_parents(&index, &a),
        vec![owned("widgets", "gizmo", &[d("a"), d("b"), d("c")])]
    );
    let resolved = gizmo_resolved(&index);
    let a = insert(&resolved, &format!("{GIZMO}:{tag}"));
    expect(&a, VerdictKind::UnpromotedAttachment);
    assert!(a.pending.is_none());
    // A subject promoted only in eu does not make an attachment in us fine.
    let tag = attachment_tag(&d("e"), "sig");
    let a = insert(&resolved, &format!("{GIZMO}:{tag}"));
    expect(&a, VerdictKind::UnpromotedAttachment);
    // The subject is a child of the promoted list, once read.
    let tag = attachment_tag(&d("c1"), "att");
    let a = insert(&resolved, &format!("{GIZMO}:{tag}"));
    expect(&a, VerdictKind::PromotedAttachment);
}

#[test]
fn attachment_looking_tags_that_are_not_attachments() {
    let index = table();
    // Wrong suffix, short hex: ordinary unlisted tags.
    for tag in [
        format!("sha256-{}.txt", d("a").hex()),
        "sha256-aaaa.sig".to_string(),
    ] {
        let a = insert(&index, &format!("{GIZMO}:{tag}"));
        expect(&a, VerdictKind::UnlistedTag);
    }
}

// ---------------------------------------------------------------- row 12

#[test]
fn row12_unknown_digest_is_unpromoted_pending_exactly_the_images_unread_digests() {
    let index = table();
    let a = insert(&index, &at(GIZMO, "9"));
    let v = expect(&a, VerdictKind::Unpromoted);
    assert!(v.kind.alerts());
    assert!(v.evidence.is_empty());
    assert_eq!(
        pending_parents(&index, &a),
        vec![owned("widgets", "gizmo", &[d("a"), d("b"), d("c")])]
    );
    // Partly read: only the unread digests remain.
    let partly = resolve(&index, &[(d("b"), vec![])]);
    let a = insert(&partly, &at(GIZMO, "9"));
    assert_eq!(
        pending_parents(&partly, &a),
        vec![owned("widgets", "gizmo", &[d("a"), d("c")])]
    );
    // Everything read: no parent can explain it any more. The only thing left
    // is the event's own manifest (an OCI `subject` would make it an
    // attachment), which `audit` always asks for on `unpromoted`.
    let resolved = gizmo_resolved(&index);
    let a = insert(&resolved, &at(GIZMO, "9"));
    expect(&a, VerdictKind::Unpromoted);
    assert_eq!(
        a.pending,
        Some(Pending {
            parents: vec![],
            event_manifest: true,
            tag_target: false,
        })
    );
}

#[test]
fn row12_unknown_digest_under_a_promised_tag_names_the_broken_promise() {
    let index = table();
    let file = images_file("verdicts", "widgets");
    for (tag, promised) in [("latest", "a"), ("v2.0", "c")] {
        let a = insert(&index, &at(&format!("{GIZMO}:{tag}"), "9"));
        let v = expect(&a, VerdictKind::Unpromoted);
        assert!(
            v.reason.contains(&format!(
                "promised tag {tag} of {GIZMO} now points at unpromoted content"
            )),
            "{}",
            v.reason
        );
        assert!(v.reason.contains(&d("9").to_string()), "{}", v.reason);
        let place = format!("{}:{}", file.display(), line_of(&file, &d(promised).hex()));
        assert!(v.reason.contains(&place), "{}", v.reason);
        assert_eq!(v.evidence.len(), 1);
        assert_evidence(&v.evidence[0], &file, "gizmo", &d(promised), None);
        // Still provisional: one of gizmo's lists may hold 9999….
        assert_eq!(
            pending_parents(&index, &a),
            vec![owned("widgets", "gizmo", &[d("a"), d("b"), d("c")])]
        );
    }
    // An unlisted tag promises nothing: no promise to name.
    let a = insert(&index, &at(&format!("{GIZMO}:evil"), "9"));
    let v = expect(&a, VerdictKind::Unpromoted);
    assert!(v.evidence.is_empty());
    assert!(!v.reason.contains("promised"), "{}", v.reason);
}

#[test]
fn pending_says_what_is_still_unread() {
    let index = table();
    let a = insert(&index, &at(GIZMO, "9"));
    assert_eq!(
        a.pending.as_ref().unwrap().describe(&index),
        "3 promoted digests at this repository have not been read as possible manifest \
         lists; the pushed manifest has not been read (an OCI subject would make it an \
         attachment)"
    );
    let resolved = gizmo_resolved(&index);
    let a = insert(&resolved, &at(GIZMO, "9"));
    assert_eq!(
        a.pending.as_ref().unwrap().describe(&resolved),
        "the pushed manifest has not been read (an OCI subject would make it an attachment)"
    );
}

#[test]
fn row12_unknown_digest_at_an_unlisted_image_has_no_parents_to_read() {
    let index = table();
    let a = insert(&index, &at("us.gcr.io/example-prod/widgets/unknown", "9"));
    expect(&a, VerdictKind::Unpromoted);
    assert!(a.pending.as_ref().unwrap().parents.is_empty());
}

// ---------------------------------------------------------------- row 13

#[test]
fn row13_repository_of_an_excluded_project_is_undecided_not_out_of_scope() {
    let index = table();
    let repo = "us.gcr.io/example-prod/broken/app";
    let a = insert(&index, &at(repo, "9"));
    let v = expect(&a, VerdictKind::Undecided);
    assert!(!v.kind.alerts());
    assert!(v.reason.contains("broken"), "{}", v.reason);
    assert!(a.pending.is_none());
    // A digest promoted elsewhere is not called wrong_repository either.
    let a = insert(&index, &at(repo, "a"));
    expect(&a, VerdictKind::Undecided);
    // A delete is a delete whatever the manifests say.
    let a = delete(&index, &at(repo, "9"));
    expect(&a, VerdictKind::Deleted);
}

/// ARCHITECTURE.md: "A project with a validation error is never in the index,
/// and its destinations are never treated as out of scope." A typo of a key in
/// promoter-manifest.yaml (`service-acount`) makes the whole file unparseable,
/// so the project's destinations are lost and its pushes become `out_of_scope`
/// (no alert, no retry) instead of `undecided`.
#[test]
fn excluded_project_with_a_typo_in_its_promoter_manifest_keeps_its_destinations() {
    let (set, index) = load("invalid-manifest-unknown-key");
    assert_eq!(set.excluded.len(), 1);
    let a = insert(&index, &at("us.gcr.io/some-prod/bad/foo-controller", "9"));
    expect(&a, VerdictKind::Undecided);
}

// ---------------------------------------------------------------- fixture A (cip-auditor.md §5.3)

const PROXY_AGENT: &str = "us.gcr.io/k8s-artifacts-prod/kas-network-proxy/proxy-agent";

/// c419…'s five arch children: amd64, arm, arm64, ppc64le, s390x.
fn kas_children() -> Vec<Digest> {
    ["7bcb", "c1cc", "99ba", "4327", "8735"]
        .iter()
        .map(|u| d(u))
        .collect()
}

#[test]
fn fixture_a_1_tagged_parent_is_promoted() {
    let (_, index) = load("verdicts-a");
    let a = insert(&index, &at(&format!("{PROXY_AGENT}:v0.0.8"), "c419"));
    let v = expect(&a, VerdictKind::Promoted);
    assert_evidence(
        &v.evidence[0],
        &images_file("verdicts-a", "kas-network-proxy"),
        "proxy-agent",
        &d("c419"),
        None,
    );
}

#[test]
fn fixture_a_2_child_is_promoted_child_after_reading_exactly_the_parent() {
    let (_, index) = load("verdicts-a");
    let a = insert(&index, &at(PROXY_AGENT, "8735"));
    expect(&a, VerdictKind::Unpromoted);
    assert_eq!(
        pending_parents(&index, &a),
        vec![owned("kas-network-proxy", "proxy-agent", &[d("c419")])]
    );
    let resolved = resolve(&index, &[(d("c419"), kas_children())]);
    for child in kas_children() {
        let a = insert(&resolved, &format!("{PROXY_AGENT}@{child}"));
        let v = expect(&a, VerdictKind::PromotedChild);
        assert!(a.pending.is_none());
        assert_eq!(v.evidence[0].parent, Some(d("c419")));
        assert!(v.reason.contains(&d("c419").to_string()), "{}", v.reason);
        // What `GET /v1/digests/{child}` and `lookup` show: the parent's
        // promotion, naming the parent.
        let reports = resolved.placement_reports(&child);
        assert_eq!(reports.len(), 1);
        assert_eq!(
            (&*reports[0].image, &reports[0].digest, &reports[0].parent),
            ("proxy-agent", &d("c419"), &Some(d("c419")))
        );
    }
    assert!(index.placement_reports(&kas_children()[0]).is_empty());
}

#[test]
fn fixture_a_3_known_digest_under_an_unlisted_name_is_wrong_repository() {
    let (_, index) = load("verdicts-a");
    let a = insert(
        &index,
        &at(
            "us.gcr.io/k8s-artifacts-prod/kas-network-proxy/proxy-agent-white-powder",
            "c419",
        ),
    );
    let v = expect(&a, VerdictKind::WrongRepository);
    assert_eq!(&*v.evidence[0].image, "proxy-agent");
    assert!(a.pending.is_none());
}

#[test]
fn fixture_a_4_unlisted_tag_on_the_parent_is_decided_without_reading_anything() {
    let (_, index) = load("verdicts-a");
    let a = insert(&index, &at(&format!("{PROXY_AGENT}:evil"), "c419"));
    expect(&a, VerdictKind::UnlistedTag);
    assert!(a.pending.is_none());
}

#[test]
fn fixture_a_5_to_8_deletes() {
    let (_, index) = load("verdicts-a");
    let a = delete(&index, &at(PROXY_AGENT, "c419"));
    let v = expect(&a, VerdictKind::Deleted);
    assert_eq!(v.evidence[0].digest, d("c419"));
    let a = delete(&index, &format!("{PROXY_AGENT}:v0.0.8"));
    expect(&a, VerdictKind::Deleted);
    // No destination of fixture A is above …/secret.
    let a = delete(&index, &at("us.gcr.io/k8s-artifacts-prod/secret", "c419"));
    expect(&a, VerdictKind::OutOfScope);
    let a = delete(&index, "us.gcr.io/k8s-artifacts-prod/secret:v0.0.8");
    expect(&a, VerdictKind::OutOfScope);
    // Under fixture B the root destination puts …/secret in scope.
    let (_, index_b) = load("verdicts-b");
    let a = delete(&index_b, &at("us.gcr.io/k8s-artifacts-prod/secret", "c419"));
    expect(&a, VerdictKind::Deleted);
    let a = delete(&index_b, "us.gcr.io/k8s-artifacts-prod/secret:v0.0.8");
    expect(&a, VerdictKind::Deleted);
}

// ---------------------------------------------------------------- fixture B (promo-tools#214)

fn etcd_lists(index: &Index) -> Index {
    let legacy: Vec<Digest> = ["1a1a", "1b1b", "1c1c", "1d1d", "1e1e"]
        .iter()
        .map(|u| d(u))
        .collect();
    let staging: Vec<Digest> = ["0873", "2a2a", "2b2b", "2c2c", "2d2d"]
        .iter()
        .map(|u| d(u))
        .collect();
    resolve(index, &[(d("12f3"), legacy), (d("bcdd"), staging)])
}

#[test]
fn fixture_b_9_child_under_the_nested_destination() {
    let (_, index) = load("verdicts-b");
    let repo = "us.gcr.io/k8s-artifacts-prod/kubernetes/etcd";
    let a = insert(&index, &at(repo, "0873"));
    expect(&a, VerdictKind::Unpromoted);
    // Only the etcd project lists …/kubernetes/etcd.
    assert_eq!(
        pending_parents(&index, &a),
        vec![owned("etcd", "etcd", &[d("bcdd")])]
    );
    let a = insert(&etcd_lists(&index), &at(repo, "0873"));
    let v = expect(&a, VerdictKind::PromotedChild);
    assert_evidence(
        &v.evidence[0],
        &images_file("verdicts-b", "etcd"),
        "etcd",
        &d("bcdd"),
        Some(&d("bcdd")),
    );
}

#[test]
fn fixture_b_10_child_at_the_root_where_two_projects_claim_the_path() {
    let (_, index) = load("verdicts-b");
    let repo = "us.gcr.io/k8s-artifacts-prod/etcd";
    let a = insert(&index, &at(repo, "0873"));
    expect(&a, VerdictKind::Unpromoted);
    assert_eq!(
        pending_parents(&index, &a),
        vec![
            owned("etcd", "etcd", &[d("bcdd")]),
            owned("google-containers", "etcd", &[d("12f3")]),
        ]
    );
    // Reading only the second project's list decides it: no first-match bug.
    let only_bcdd = resolve(&index, &[(d("bcdd"), vec![d("0873")])]);
    let a = insert(&only_bcdd, &at(repo, "0873"));
    let v = expect(&a, VerdictKind::PromotedChild);
    assert!(a.pending.is_none());
    assert_eq!(v.evidence.len(), 1);
    assert_eq!(&*v.evidence[0].project, "etcd");
    assert_eq!(v.evidence[0].parent, Some(d("bcdd")));
    // Each project's own tags are fine at the root.
    let both = etcd_lists(&index);
    expect(
        &insert(&both, &at(&format!("{repo}:3.4.7-2"), "bcdd")),
        VerdictKind::Promoted,
    );
    expect(
        &insert(&both, &at(&format!("{repo}:3.4.7"), "12f3")),
        VerdictKind::Promoted,
    );
    // ... but 3.4.7-2 is promised at the root to bcdd…, not to 12f3….
    let a = insert(&both, &at(&format!("{repo}:3.4.7-2"), "12f3"));
    let v = expect(&a, VerdictKind::TagMoved);
    assert_eq!(v.evidence[0].digest, d("bcdd"));
    // The legacy digest is not promoted under …/kubernetes.
    let a = insert(
        &both,
        &at("us.gcr.io/k8s-artifacts-prod/kubernetes/etcd", "12f3"),
    );
    expect(&a, VerdictKind::WrongRepository);
}

// ---------------------------------------------------------------- §5.4 match records (plain layout)

#[test]
fn match_records_translated() {
    let (set, index) = load("verdicts-match.yaml");
    assert!(set.problems.is_empty(), "{:#?}", set.problems);
    let file = rules("verdicts-match.yaml");
    for region in ["us", "eu", "asia"] {
        let repo = format!("{region}.gcr.io/some-prod/foo-controller");
        // path + digest + tag
        let a = insert(&index, &at(&format!("{repo}:1.0"), "a"));
        let v = expect(&a, VerdictKind::Promoted);
        assert_evidence(&v.evidence[0], &file, "foo-controller", &d("a"), None);
        // path + digest
        expect(&insert(&index, &at(&repo, "a")), VerdictKind::Promoted);
        // path + digest + tag mismatch
        expect(
            &insert(&index, &at(&format!("{repo}:white-powder"), "a")),
            VerdictKind::UnlistedTag,
        );
        // path only: an unknown (valid) digest, with or without the listed tag, is
        // row 12 (the digest is not promoted; the tag is secondary)
        expect(&insert(&index, &at(&repo, "0")), VerdictKind::Unpromoted);
        expect(
            &insert(&index, &at(&format!("{repo}:1.0"), "0")),
            VerdictKind::Unpromoted,
        );
        // `sha256:000` never reaches the audit: the payload is malformed.
        let payload = format!(r#"{{"action":"INSERT","digest":"{repo}@sha256:000"}}"#);
        assert!(gcr::parse(&EventId("1".into()), payload.as_bytes()).is_err());
    }
}

// ---------------------------------------------------------------- coverage of the table

/// Every verdict kind `audit` can return is produced by some event above; this
/// guards the table against a row silently disappearing.
#[test]
fn every_auditable_verdict_kind_is_reachable_from_the_fixtures() {
    let index = table();
    let resolved = gizmo_resolved(&index);
    let allow = Policy {
        allow_unpromoted_deletes: true,
        ..Policy::default()
    };
    let sig = attachment_tag(&d("a"), "sig");
    let bad_sig = attachment_tag(&d("9"), "sig");
    let cases: Vec<(Audit, VerdictKind)> = vec![
        (
            insert(&index, &at("gcr.io/x/y", "a")),
            VerdictKind::OutOfScope,
        ),
        (delete(&index, &at(GIZMO, "a")), VerdictKind::Deleted),
        (
            with_policy(&resolved, Action::Delete, &at(GIZMO, "9"), &allow),
            VerdictKind::DeletedUnpromoted,
        ),
        (insert(&index, &at(GIZMO, "a")), VerdictKind::Promoted),
        (
            insert(&resolved, &at(GIZMO, "c1")),
            VerdictKind::PromotedChild,
        ),
        (
            insert(&index, &at(GIZMO, "e")),
            VerdictKind::WrongRepository,
        ),
        (
            insert(&index, &at(&format!("{GIZMO}:latest"), "b")),
            VerdictKind::TagMoved,
        ),
        (
            insert(&index, &at(&format!("{GIZMO}:evil"), "a")),
            VerdictKind::UnlistedTag,
        ),
        (
            insert(&index, &format!("{GIZMO}:{sig}")),
            VerdictKind::PromotedAttachment,
        ),
        (
            insert(&index, &format!("{GIZMO}:{bad_sig}")),
            VerdictKind::UnpromotedAttachment,
        ),
        (insert(&index, &at(GIZMO, "9")), VerdictKind::Unpromoted),
        (
            insert(&index, &at("us.gcr.io/example-prod/broken/app", "9")),
            VerdictKind::Undecided,
        ),
        (absent(&index, &at(GIZMO, "b")), VerdictKind::Missing),
    ];
    let mut seen = Vec::new();
    for (a, kind) in &cases {
        expect(a, *kind);
        seen.push(*kind);
    }
    // Malformed comes from the parser; Unverifiable from the retry budget;
    // ExceptionExpired from the exceptions file, never from an event.
    for kind in VerdictKind::ALL {
        if !matches!(
            kind,
            VerdictKind::Malformed | VerdictKind::Unverifiable | VerdictKind::ExceptionExpired
        ) {
            assert!(seen.contains(&kind), "{kind} not covered");
        }
    }
}

// ---------------------------------------------------------------- scan: absent

fn absent(index: &Index, reference: &str) -> Audit {
    audit(index, &event(Action::Absent, reference), &Policy::default())
}

#[test]
fn absent_promised_digest_or_tag_is_missing_with_evidence() {
    let index = table();
    let file = images_file("verdicts", "widgets");
    for reference in [
        // The tagless digest bbbb…, checked by digest.
        at(GIZMO, "b"),
        // A promised tag, with the digest promised to it.
        at(&format!("{GIZMO}:latest"), "a"),
        at(&format!("{GIZMO}:v1.0"), "a"),
        // A tag-only absence of a promised tag.
        format!("{GIZMO}:v2.0"),
        // The other region of the same manifest.
        at("asia.gcr.io/example-prod/widgets/gizmo:latest", "a"),
    ] {
        let a = absent(&index, &reference);
        let v = expect(&a, VerdictKind::Missing);
        assert!(v.kind.alerts(), "{reference}");
        assert!(a.pending.is_none(), "{reference}");
        assert_eq!(v.evidence.len(), 1, "{reference}");
        assert_eq!(&*v.evidence[0].image, "gizmo");
        assert_eq!(&*v.evidence[0].file, file.as_path());
    }
    let a = absent(&index, &at(GIZMO, "a"));
    assert_evidence(
        &expect(&a, VerdictKind::Missing).evidence[0],
        &file,
        "gizmo",
        &d("a"),
        None,
    );
}

#[test]
fn absent_content_not_promised_there_is_not_a_finding() {
    let index = table();
    for reference in [
        // Never promoted anywhere.
        at(GIZMO, "9"),
        at(&format!("{GIZMO}:v1.0"), "9"),
        // Promoted here, but not under this tag: absence of that pair
        // breaks no promise (`latest` is promised to aaaa…, not bbbb…).
        at(&format!("{GIZMO}:latest"), "b"),
        // A tag promised to no digest here.
        format!("{GIZMO}:nightly"),
        // Promoted by widgets, but widgets never promotes to eu.
        at("eu.gcr.io/example-prod/widgets/gizmo", "a"),
        // Promoted under another image name (gizmo-amd64), absent as gizmo.
        at(GIZMO, "d"),
        // A staging registry is out of scope altogether.
        at("gcr.io/k8s-staging-widgets/gizmo", "a"),
    ] {
        let a = absent(&index, &reference);
        assert!(!a.verdict.kind.alerts(), "{reference}: {:#?}", a);
        assert_ne!(a.verdict.kind, VerdictKind::Missing, "{reference}");
        assert!(a.pending.is_none(), "{reference}");
    }
}

#[test]
fn missing_is_a_verdict_with_its_own_text_and_actions_round_trip() {
    assert!(VerdictKind::ALL.contains(&VerdictKind::Missing));
    assert_eq!(VerdictKind::Missing.as_str(), "missing");
    assert_eq!(Action::Absent.as_str(), "absent");
    assert!(Action::ALL.contains(&Action::Absent));
    assert!(Source::ALL.contains(&Source::Scan));
    assert_eq!(Source::Scan.as_str(), "scan");
    assert_eq!(
        image_auditor::alert::Severity::of(VerdictKind::Missing),
        image_auditor::alert::Severity::Critical
    );
}
