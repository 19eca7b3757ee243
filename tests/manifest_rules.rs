//! One fixture per validation rule of docs/design.md §4 (`manifests-fixtures/rules/
//! invalid-*` and `valid-*`), the retired auditor's thin-directory cases
//! (docs/reference/cip-auditor.md §5.6). Its digest and tag syntax tables (§5.7)
//! are unit tests beside the parsers, in src/reference.rs.
//!
//! Each invalid fixture holds a bad project next to a good one: the problem is
//! reported with its file, line and a key phrase, the bad project is
//! excluded, and the good one still loads (isolation). Expected lines are
//! counted here from the fixture text, not taken from the loader.

use crate::support;

use std::path::{Path, PathBuf};

use image_auditor::audit::{Policy, VerdictKind, audit};
use image_auditor::event::Event;
use image_auditor::index::Index;
use image_auditor::manifest::{self, Layout, LoadError, ManifestSet, Problem, Severity};
use image_auditor::reference::Digest;
use support::fixtures::{d, line_of, rules};

// ---------------------------------------------------------------- helpers

fn load(name: &str) -> ManifestSet {
    manifest::load(&rules(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Loads a fixture that must have no problem at all.
#[track_caller]
fn load_clean(name: &str) -> ManifestSet {
    let set = load(name);
    assert!(set.problems.is_empty(), "{:#?}", set.problems);
    set
}

fn images(root: &str, project: &str) -> PathBuf {
    rules(root).join("images").join(project).join("images.yaml")
}

fn manifest_file(root: &str, project: &str) -> PathBuf {
    rules(root)
        .join("manifests")
        .join(project)
        .join("promoter-manifest.yaml")
}

fn loaded(set: &ManifestSet) -> Vec<&str> {
    set.manifests.iter().map(|m| m.project.as_str()).collect()
}

fn excluded(set: &ManifestSet) -> Vec<&str> {
    let mut x: Vec<&str> = set.excluded.iter().map(|m| m.project.as_str()).collect();
    x.sort();
    x
}

/// Asserts `p` is an error about `file`, at the line of `needle` in that
/// file (or no line when `needle` is `None`), saying `phrase`.
#[track_caller]
fn assert_problem(p: &Problem, file: &Path, needle: Option<&str>, phrase: &str) {
    assert_eq!(p.severity, Severity::Error, "{p}");
    assert_eq!(&*p.file, file, "{p}");
    assert_eq!(p.line, needle.map(|n| line_of(file, n)), "{p}");
    assert!(p.message.contains(phrase), "{p}\nlacks {phrase:?}");
}

/// `good` loaded, no problem names it, and its promotion is auditable.
#[track_caller]
fn assert_isolated(set: &ManifestSet, good: &str) {
    assert!(loaded(set).contains(&good), "{:?}", loaded(set));
    assert!(
        set.problems
            .iter()
            .all(|p| p.project.as_deref() != Some(good))
    );
    let m = set.manifests.iter().find(|m| m.project == good).unwrap();
    let image = &m.images[0];
    let reference = format!(
        "{}/{}:{}@{}",
        m.destinations[0], image.name, image.promotions[0].tags[0], image.promotions[0].digest
    );
    let event = Event::hypothetical_push(&reference).unwrap();
    let index = Index::build(set, 1);
    let a = audit(&index, &event, &Policy::default());
    assert_eq!(a.verdict.kind, VerdictKind::Promoted, "{reference}: {a:#?}");
}

fn tags(set: &ManifestSet, project: &str, image: &str) -> Vec<(u32, Vec<String>)> {
    let m = set.manifests.iter().find(|m| m.project == project).unwrap();
    let i = m.images.iter().find(|i| i.name == image).unwrap();
    i.promotions
        .iter()
        .map(|p| {
            (
                p.line,
                p.tags.iter().map(|t| t.as_str().to_string()).collect(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------- invalid: one rule each

/// The file of a fixture that a problem points at.
#[derive(Clone, Copy)]
enum At {
    /// `images/<project>/images.yaml`
    Images(&'static str),
    /// `manifests/<project>/promoter-manifest.yaml`
    Manifest(&'static str),
    /// The fixture itself: a plain-layout file.
    Fixture,
}

/// A fixture breaking one rule: it has exactly one problem, naming `bad`,
/// which is excluded, while `good` (if the fixture has one) still loads.
struct Invalid {
    /// Names the case when it fails.
    name: &'static str,
    fixture: &'static str,
    bad: &'static str,
    good: Option<&'static str>,
    at: At,
    /// Text of the only line the problem points at; `None`: no line.
    needle: Option<&'static str>,
    phrase: &'static str,
    /// What this case checks beyond the common shape.
    more: fn(&ManifestSet, &Problem),
}

impl Invalid {
    fn check(&self) {
        let set = load(self.fixture);
        assert_eq!(set.problems.len(), 1, "{:#?}", set.problems);
        let p = &set.problems[0];
        assert_eq!(p.project.as_deref(), Some(self.bad), "{p}");
        assert_eq!(excluded(&set), [self.bad]);
        if let Some(good) = self.good {
            assert_isolated(&set, good);
        }
        let file = match self.at {
            At::Images(project) => images(self.fixture, project),
            At::Manifest(project) => manifest_file(self.fixture, project),
            At::Fixture => rules(self.fixture),
        };
        assert_problem(p, &file, self.needle, self.phrase);
        (self.more)(&set, p);
    }
}

fn nothing_more(_: &ManifestSet, _: &Problem) {}

const INVALID: &[Invalid] = &[
    Invalid {
        name: "unknown key in images.yaml",
        fixture: "invalid-unknown-key",
        bad: "bad",
        good: Some("good"),
        at: At::Images("bad"),
        needle: Some("  tags:"),
        phrase: "unknown field `tags`",
        more: nothing_more,
    },
    Invalid {
        name: "unknown key in promoter-manifest.yaml",
        fixture: "invalid-manifest-unknown-key",
        bad: "bad",
        good: Some("good"),
        at: At::Manifest("bad"),
        needle: Some("service-acount"),
        phrase: "unknown field `service-acount`",
        more: nothing_more,
    },
    Invalid {
        name: "duplicate digest in one dmap",
        fixture: "invalid-duplicate-digest",
        bad: "bad",
        good: Some("good"),
        at: At::Images("bad"),
        needle: Some("[\"2.0\"]"),
        phrase: "duplicate mapping key",
        more: |_, p| {
            // The second occurrence, not silently dropped.
            assert_eq!(p.line, Some(5), "{p}");
            assert!(p.message.contains(&d("a").to_string()), "{p}");
        },
    },
    Invalid {
        name: "duplicate key in an image item",
        fixture: "invalid-duplicate-image-key",
        bad: "bad",
        good: Some("good"),
        at: At::Images("bad"),
        needle: Some("name: bar-controller"),
        phrase: "duplicate mapping key: name",
        more: nothing_more,
    },
    Invalid {
        name: "digest of 63 hex digits",
        fixture: "invalid-bad-digest",
        bad: "bad",
        good: Some("good"),
        at: At::Images("bad"),
        needle: Some("sha256:bbbb"),
        phrase: "64 hex digits, found 63",
        more: |_, p| assert!(p.message.contains("foo-controller"), "{p}"),
    },
    Invalid {
        name: "bad tag",
        fixture: "invalid-bad-tag",
        bad: "bad",
        good: Some("good"),
        at: At::Images("bad"),
        needle: Some("-rc1"),
        phrase: "tag \"-rc1\": must start with",
        more: nothing_more,
    },
    Invalid {
        name: "zero sources",
        fixture: "invalid-no-source",
        bad: "bad",
        good: Some("good"),
        at: At::Manifest("bad"),
        needle: Some("- name: gcr.io/bad-staging"),
        phrase: "no registry has `src: true`",
        more: nothing_more,
    },
    Invalid {
        name: "two sources",
        fixture: "invalid-two-sources",
        bad: "bad",
        good: Some("good"),
        at: At::Manifest("bad"),
        needle: Some("gcr.io/other-staging"),
        phrase: "2 registries have `src: true` (lines 3, 5)",
        more: nothing_more,
    },
    Invalid {
        name: "empty registry name",
        fixture: "invalid-empty-registry-name",
        bad: "bad",
        good: Some("good"),
        at: At::Manifest("bad"),
        needle: Some("name: \"\""),
        phrase: "registry `name` is empty",
        more: nothing_more,
    },
    Invalid {
        name: "empty image name",
        fixture: "invalid-empty-image-name",
        bad: "bad",
        good: Some("good"),
        at: At::Images("bad"),
        needle: Some("name: \"\""),
        phrase: "image `name` is empty",
        more: nothing_more,
    },
    Invalid {
        name: "manifest without images.yaml",
        fixture: "invalid-missing-images",
        bad: "b",
        good: Some("a"),
        at: At::Images("b"),
        needle: None,
        phrase: "does not exist",
        more: |set, _| {
            // Its destinations stay known, so its pushes are not out of scope.
            let b = set.excluded.iter().find(|x| x.project == "b").unwrap();
            assert_eq!(b.destinations.len(), 3);
        },
    },
    Invalid {
        name: "plain empty file has no registries",
        fixture: "invalid-plain-empty.yaml",
        bad: "invalid-plain-empty",
        good: None,
        at: At::Fixture,
        needle: None,
        phrase: "`registries` is missing or empty",
        more: nothing_more,
    },
    Invalid {
        name: "plain file without a source",
        fixture: "invalid-plain-no-src.yaml",
        bad: "invalid-plain-no-src",
        good: None,
        at: At::Fixture,
        needle: Some("gcr.io/foo-staging"),
        phrase: "no registry has `src: true`",
        more: nothing_more,
    },
];

/// Every case runs even when an earlier one fails, and the failure names
/// each failing case (its own panic message is printed above it).
#[test]
fn each_rule_reports_one_problem_and_excludes_only_its_project() {
    let failed: Vec<&str> = INVALID
        .iter()
        .filter(|case| std::panic::catch_unwind(|| case.check()).is_err())
        .map(|case| case.name)
        .collect();
    assert!(failed.is_empty(), "failing cases: {failed:?}");
}

#[test]
fn every_problem_of_a_project_is_reported_at_once() {
    let set = load("invalid-many");
    let (m, i) = (
        manifest_file("invalid-many", "bad"),
        images("invalid-many", "bad"),
    );
    let expected: [(&Path, &str, &str); 6] = [
        (&m, "name: \"\"", "registry `name` is empty"),
        (&m, "gcr.io/other-staging", "2 registries have `src: true`"),
        (&i, "aaaaG", "lower-case hex"),
        (&i, "bad tag", "tag \"bad tag\""),
        (&i, "name: \"\"", "image `name` is empty"),
        (&i, "Upper/Case", "path component \"Upper\""),
    ];
    assert_eq!(set.problems.len(), expected.len(), "{:#?}", set.problems);
    for (p, (file, needle, phrase)) in set.problems.iter().zip(expected) {
        assert_problem(p, file, Some(needle), phrase);
    }
    assert_eq!(excluded(&set), ["bad"]);
    assert_isolated(&set, "good");
}

#[test]
fn overlap_across_manifests_excludes_both_and_reports_both() {
    let set = load("invalid-overlap");
    let (a, b) = (
        images("invalid-overlap", "a"),
        images("invalid-overlap", "b"),
    );
    assert_eq!(set.problems.len(), 2, "{:#?}", set.problems);
    let by_project = |p: &str| {
        set.problems
            .iter()
            .find(|x| x.project.as_deref() == Some(p))
            .unwrap()
    };
    let (pa, pb) = (by_project("a"), by_project("b"));
    let (line_a, line_b) = (line_of(&a, "sha256:aaaa"), line_of(&b, "sha256:bbbb"));
    assert_problem(
        pa,
        &a,
        Some("sha256:aaaa"),
        "foo-controller:1.0 is promised to",
    );
    assert_problem(
        pb,
        &b,
        Some("sha256:bbbb"),
        "foo-controller:1.0 is promised to",
    );
    // Each points at the other's file and line.
    assert!(
        pa.message.contains(&format!("{}:{line_b}", b.display())),
        "{pa}"
    );
    assert!(
        pb.message.contains(&format!("{}:{line_a}", a.display())),
        "{pb}"
    );
    assert_eq!(excluded(&set), ["a", "b"]);
    assert_isolated(&set, "c");
}

/// `manifests validate` output must not change from run to run: the overlap
/// message names one example repository, which must not depend on hash order.
#[test]
fn overlap_report_is_the_same_on_every_load() {
    let first: Vec<String> = load("invalid-overlap")
        .problems
        .iter()
        .map(|p| p.to_string())
        .collect();
    for _ in 0..24 {
        let again: Vec<String> = load("invalid-overlap")
            .problems
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(again, first);
    }
}

#[test]
fn overlap_through_a_root_level_and_a_nested_destination() {
    let set = load("invalid-overlap-root-nested");
    assert_eq!(set.problems.len(), 2, "{:#?}", set.problems);
    for (project, needle) in [("root", "sha256:aaaa"), ("nested", "sha256:bbbb")] {
        let p = set
            .problems
            .iter()
            .find(|x| x.project.as_deref() == Some(project))
            .unwrap();
        assert_problem(
            p,
            &images("invalid-overlap-root-nested", project),
            Some(needle),
            "us.gcr.io/some-prod/foo/bar:1.0 is promised to",
        );
    }
    assert_eq!(excluded(&set), ["nested", "root"]);
    assert!(set.manifests.is_empty());
}

#[test]
fn nested_promoter_manifest_is_an_error_and_the_decoy_is_ignored() {
    let set = load("invalid-nested-manifest");
    assert_eq!(set.problems.len(), 1, "{:#?}", set.problems);
    let p = &set.problems[0];
    assert_problem(
        p,
        &rules("invalid-nested-manifest/manifests/b/c/promoter-manifest.yaml"),
        None,
        "unexpected manifest path",
    );
    assert_eq!(loaded(&set), ["a"]);
    assert_isolated(&set, "a");
}

// ---------------------------------------------------------------- valid: formats real files use

#[test]
fn scalars_stay_text_with_comments_and_unquoted_keys() {
    let set = load_clean("valid-scalars");
    let file = images("valid-scalars", "p");
    assert_eq!(
        tags(&set, "p", "foo-controller"),
        [
            (
                line_of(&file, "sha256:aaaa"),
                vec!["1.10".into(), "1.0".into(), "010".into(), "true".into()]
            ),
            (line_of(&file, "sha256:bbbb"), vec!["2.50".into()]),
        ]
    );
    let m = &set.manifests[0];
    assert_eq!(m.source.as_str(), "gcr.io/p-staging");
    assert_eq!(m.destinations[0].as_str(), "us.gcr.io/some-prod");
}

#[test]
fn crlf_line_endings() {
    let file = images("valid-crlf", "p");
    let bytes = std::fs::read(&file).unwrap();
    assert!(
        bytes.windows(2).any(|w| w == b"\r\n"),
        "the fixture lost its CRLF line endings"
    );
    let set = load_clean("valid-crlf");
    assert_eq!(
        tags(&set, "p", "foo-controller"),
        [
            (line_of(&file, "sha256:aaaa"), vec!["1.0".into()]),
            (line_of(&file, "sha256:bbbb"), vec!["2.0".into()]),
        ]
    );
}

#[test]
fn repeated_image_names_are_merged() {
    let set = load_clean("valid-repeated-names");
    let m = &set.manifests[0];
    let names: Vec<&str> = m.images.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["foo-controller", "bar-controller"]);
    let file = images("valid-repeated-names", "p");
    // aaaa… appears twice: one promotion, at its first line, with both tags.
    assert_eq!(
        tags(&set, "p", "foo-controller"),
        [
            (4, vec!["1.0".into(), "1.0-a".into()]),
            (line_of(&file, "sha256:bbbb"), vec!["2.0".into()]),
        ]
    );
}

#[test]
fn comment_only_images_yaml_is_an_empty_project() {
    let set = load_clean("valid-comment-only");
    assert_eq!(loaded(&set), ["p"]);
    assert!(set.manifests[0].images.is_empty());
    // Its destinations are in scope: a push there is unpromoted, not ignored.
    let index = Index::build(&set, 1);
    let reference = format!("us.gcr.io/some-prod/foo-controller@{}", d("a"));
    let event = Event::hypothetical_push(&reference).unwrap();
    let a = audit(&index, &event, &Policy::default());
    assert_eq!(a.verdict.kind, VerdictKind::Unpromoted);
}

#[test]
fn duplicate_destination_is_a_warning_only() {
    let set = load("valid-duplicate-destination");
    assert_eq!(set.problems.len(), 1, "{:#?}", set.problems);
    let p = &set.problems[0];
    assert_eq!(p.severity, Severity::Warning);
    assert_eq!(set.errors().count(), 0);
    let file = manifest_file("valid-duplicate-destination", "p");
    assert_eq!(&*p.file, &file);
    // The second listing (line 7), pointing back at the first (line 5).
    assert_eq!(p.line, Some(7));
    assert!(p.message.contains("listed twice (first at line 5)"), "{p}");
    assert_eq!(loaded(&set), ["p"]);
    let dests: Vec<&str> = set.manifests[0]
        .destinations
        .iter()
        .map(|d| d.as_str())
        .collect();
    assert_eq!(dests, ["us.gcr.io/some-prod", "eu.gcr.io/some-prod"]);
}

#[test]
fn other_directories_and_files_are_ignored() {
    // The retired auditor's malformed-directory-tree-structure-bad-prefix-is-ignored,
    // plus images/<x> without a manifest (its bad digest is never read).
    let set = load_clean("valid-ignored-dirs");
    assert_eq!(loaded(&set), ["a"]);
}

#[test]
fn same_image_tag_to_the_same_digest_is_no_overlap() {
    let set = load_clean("valid-overlap-same-digest");
    assert_eq!(loaded(&set), ["a", "b"]);
}

#[test]
fn plain_single_file() {
    let set = load_clean("valid-plain-single.yaml");
    assert_eq!(set.layout, Layout::Plain);
    assert_eq!(loaded(&set), ["valid-plain-single"]);
    let m = &set.manifests[0];
    let file = rules("valid-plain-single.yaml");
    assert_eq!(&*m.manifest_file, &file);
    assert_eq!(&*m.images_file, &file);
    assert_eq!(
        tags(&set, "valid-plain-single", "foo-controller"),
        [
            (line_of(&file, "sha256:aaaa"), vec!["1.0".into()]),
            (line_of(&file, "sha256:bbbb"), vec![]),
        ]
    );
}

#[test]
fn plain_directory() {
    let set = load_clean("valid-plain-dir");
    assert_eq!(set.layout, Layout::Plain);
    let mut projects = loaded(&set);
    projects.sort();
    assert_eq!(projects, ["nested/two", "one"]);
    let one = set.manifests.iter().find(|m| m.project == "one").unwrap();
    assert_eq!(
        one.images[0].promotions[0].line,
        line_of(&rules("valid-plain-dir/one.yaml"), "sha256:aaaa")
    );
}

// ---------------------------------------------------------------- §5.6 thin directories

#[test]
fn directory_without_manifests_is_a_load_error() {
    assert!(matches!(
        manifest::load(&rules("empty")),
        Err(LoadError::Empty(_))
    ));
    assert!(matches!(
        manifest::load(&rules("no-such-directory")),
        Err(LoadError::Io { .. })
    ));
}

#[test]
fn thin_singleton() {
    let set = load_clean("thin-singleton");
    assert_eq!(set.layout, Layout::Thin);
    assert_eq!(loaded(&set), ["a"]);
    let m = &set.manifests[0];
    assert_eq!(&*m.manifest_file, manifest_file("thin-singleton", "a"));
    assert_eq!(m.source.as_str(), "gcr.io/foo-staging");
    assert_eq!(m.destinations.len(), 3);
    assert_eq!(m.images[0].name, "foo-controller");
    assert_eq!(m.images[0].promotions[0].digest, d("c3d3"));
    assert_eq!(tags(&set, "a", "foo-controller"), [(4, vec!["1.0".into()])]);
}

#[test]
fn thin_multiple_rebases() {
    let set = load_clean("thin-multiple-rebases");
    assert_eq!(loaded(&set), ["bar", "foo"]);
    for (project, image, digest) in [
        ("foo", "foo-controller", d("a")),
        ("bar", "bar-controller", d("b")),
    ] {
        let m = set.manifests.iter().find(|m| m.project == project).unwrap();
        let dests: Vec<String> = m.destinations.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            dests,
            ["us", "eu", "asia"].map(|r| format!("{r}.gcr.io/some-prod/{project}"))
        );
        assert_eq!(m.images[0].name, image);
        assert_eq!(m.images[0].promotions[0].digest, digest);
    }
}

#[test]
fn thin_basic_four_projects() {
    let set = load_clean("thin-basic");
    assert_eq!(loaded(&set), ["a", "b", "c", "d"]);
    let sources: Vec<&str> = set.manifests.iter().map(|m| m.source.as_str()).collect();
    assert_eq!(
        sources,
        [
            "gcr.io/foo-staging",
            "gcr.io/bar-staging",
            "gcr.io/cat-staging",
            "gcr.io/qux-staging"
        ]
    );
    let digests: Vec<Digest> = set
        .manifests
        .iter()
        .map(|m| m.images[0].promotions[0].digest.clone())
        .collect();
    assert_eq!(digests, [d("a"), d("b"), d("c"), d("0")]);
}
