//! Checks the benchmark corpus generator (`benches/support/synthetic.rs`) on
//! `Scale::small()`: layout, valid and distinct digests, valid tags, no
//! (project, image, tag) overlap, every realistic quirk present, and `Stats`
//! equal to counts recomputed from the files as a YAML parser reads them.

#[path = "../benches/support/synthetic.rs"]
mod synthetic;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use image_auditor::reference::{Digest, RegistryPrefix, Repository, Tag};
use serde::Deserialize;
use synthetic::{Scale, Stats, digest_of, generate};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestDoc {
    registries: Vec<RegistryDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryDoc {
    name: String,
    #[serde(rename = "service-account")]
    service_account: Option<String>,
    src: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageDoc {
    name: String,
    // serde-saphyr rejects duplicate keys by default, so a digest repeated
    // inside one dmap fails the parse instead of being dropped.
    dmap: BTreeMap<String, Vec<String>>,
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`, checked without the crate's `Tag`.
fn tag_syntax_ok(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `sha256:` + 64 lower-case hex, checked without the crate's `Digest`.
fn digest_syntax_ok(digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')))
}

fn dir_names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// What the files hold, counted the way a loader would see them.
#[derive(Default)]
struct Seen {
    stats: Stats,
    crlf_files: usize,
    unquoted_files: usize,
    comment_only_files: usize,
    comments_in_dmap: usize,
    slash_names: usize,
    per_arch_names: usize,
    repeated_names: usize,
    two_tag_digests: usize,
    dotted_two_part_tags: usize,
}

fn read_corpus(root: &Path, scale: &Scale) -> Seen {
    let mut seen = Seen::default();
    assert_eq!(
        dir_names(root),
        BTreeSet::from(["images".to_string(), "manifests".to_string()])
    );
    let projects = dir_names(&root.join("manifests"));
    assert_eq!(projects, dir_names(&root.join("images")));
    seen.stats.projects = projects.len();

    let mut all_digests = HashSet::new();
    let mut claims: HashMap<(String, String, String), String> = HashMap::new();
    for project in &projects {
        let short = project
            .strip_prefix("k8s-staging-")
            .unwrap_or_else(|| panic!("{project} is not k8s-staging-*"));
        let manifest_dir = root.join("manifests").join(project);
        let images_dir = root.join("images").join(project);
        assert_eq!(
            dir_names(&manifest_dir),
            BTreeSet::from(["promoter-manifest.yaml".to_string()])
        );
        assert_eq!(
            dir_names(&images_dir),
            BTreeSet::from(["images.yaml".to_string()])
        );

        // The manifest: one source, distinct destinations ending in <short>.
        let manifest_path = manifest_dir.join("promoter-manifest.yaml");
        let text = fs::read_to_string(&manifest_path).unwrap();
        let doc: ManifestDoc = serde_saphyr::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", manifest_path.display()));
        let (sources, dests): (Vec<_>, Vec<_>) =
            doc.registries.iter().partition(|r| r.src == Some(true));
        assert_eq!(sources.len(), 1, "{project}: one source");
        assert_eq!(sources[0].name, format!("gcr.io/{project}"));
        assert_eq!(dests.len(), scale.destinations, "{project}");
        let mut prefixes = Vec::new();
        for d in &dests {
            assert!(d.src.is_none());
            assert_eq!(
                d.service_account.as_deref(),
                Some("k8s-infra-gcr-promoter@k8s-artifacts-prod.iam.gserviceaccount.com")
            );
            assert!(
                d.name
                    .ends_with(&format!("/k8s-artifacts-prod/images/{short}"))
                    || d.name
                        .ends_with(&format!(".gcr.io/k8s-artifacts-prod/{short}"))
            );
            let prefix: RegistryPrefix = d.name.parse().unwrap();
            prefixes.push(prefix);
        }
        let distinct: HashSet<&str> = dests.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            distinct.len(),
            dests.len(),
            "{project}: repeated destination"
        );
        seen.stats.destinations += dests.len();

        // The images.
        let images_path = images_dir.join("images.yaml");
        let raw = fs::read(&images_path).unwrap();
        seen.stats.images_yaml_bytes += raw.len() as u64;
        let text = String::from_utf8(raw).unwrap();
        if text.contains("\r\n") {
            assert!(!text.replace("\r\n", "").contains('\n'), "mixed line ends");
            seen.crlf_files += 1;
        }
        if text.lines().any(|l| l.starts_with("    sha256:")) {
            seen.unquoted_files += 1;
        }
        seen.comments_in_dmap += text.lines().filter(|l| l.starts_with("    #")).count();
        let items: Vec<ImageDoc> = serde_saphyr::from_str::<Option<Vec<ImageDoc>>>(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", images_path.display()))
            .unwrap_or_default();
        if items.is_empty() {
            assert!(text.lines().all(|l| l.starts_with('#')), "{project}");
            seen.comment_only_files += 1;
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        let dmap_lines = text
            .lines()
            .filter(|l| l.trim_start_matches([' ', '"']).starts_with("sha256:"))
            .count();
        let mut dmap_entries = 0;
        for item in &items {
            *names.entry(item.name.as_str()).or_default() += 1;
            assert!(!item.name.is_empty());
            for prefix in &prefixes {
                Repository::join(prefix, &item.name)
                    .unwrap_or_else(|e| panic!("{project}: image name: {e}"));
            }
            for (digest, tags) in &item.dmap {
                dmap_entries += 1;
                assert!(digest_syntax_ok(digest), "{digest}");
                digest.parse::<Digest>().unwrap();
                assert!(all_digests.insert(digest.clone()), "{digest} repeats");
                seen.stats.tag_pairs += tags.len();
                seen.stats.tagless_digests += usize::from(tags.is_empty());
                seen.two_tag_digests += usize::from(tags.len() == 2);
                for tag in tags {
                    assert!(tag_syntax_ok(tag), "{project} {}: tag {tag:?}", item.name);
                    tag.parse::<Tag>().unwrap();
                    let dotted = tag.split('.').count() == 2
                        && tag
                            .split('.')
                            .all(|p| p.bytes().all(|c| c.is_ascii_digit()));
                    seen.dotted_two_part_tags += usize::from(dotted);
                    let key = (project.clone(), item.name.clone(), tag.clone());
                    if let Some(other) = claims.insert(key, digest.clone()) {
                        panic!(
                            "{project} {}:{tag} claimed by {other} and {digest}",
                            item.name
                        );
                    }
                }
            }
        }
        assert_eq!(dmap_entries, dmap_lines, "{project}: a dmap entry was lost");
        seen.stats.image_entries += items.len();
        seen.stats.images += names.len();
        seen.repeated_names += names.values().filter(|&&n| n > 1).count();
        seen.slash_names += names.keys().filter(|n| n.contains('/')).count();
        seen.per_arch_names += names
            .keys()
            .filter(|n| {
                ["-amd64", "-arm", "-arm64", "-ppc64le", "-s390x"]
                    .iter()
                    .any(|arch| {
                        n.strip_suffix(arch)
                            .is_some_and(|parent| names.contains_key(parent))
                    })
            })
            .count();
    }
    seen.stats.digests = all_digests.len();
    let expected: HashSet<String> = (0..all_digests.len() as u64).map(digest_of).collect();
    assert_eq!(all_digests, expected, "digests are digest_of(0..n)");

    let mut files = Vec::new();
    files_under(root, &mut files);
    assert_eq!(files.len(), 2 * projects.len(), "no stray files");
    seen.stats.total_bytes = files.iter().map(|f| fs::metadata(f).unwrap().len()).sum();
    seen
}

#[test]
fn small_corpus_is_valid_and_counted_right() {
    let scale = Scale::small();
    let dir = tempfile::tempdir().unwrap();
    let stats = generate(dir.path(), &scale).unwrap();
    let seen = read_corpus(dir.path(), &scale);

    assert_eq!(seen.stats, stats, "Stats must match the files");
    assert_eq!(stats.projects, scale.projects);
    assert_eq!(stats.digests, scale.digests);
    assert_eq!(stats.destinations, scale.projects * scale.destinations);

    // Every quirk of the real files is exercised.
    assert!(seen.crlf_files > 0, "CRLF file");
    assert!(seen.unquoted_files > 0, "unquoted file");
    assert!(seen.comment_only_files > 0, "comment-only file");
    assert!(seen.comments_in_dmap > 0, "comment inside a dmap");
    assert!(seen.slash_names > 0, "group/name image");
    assert!(seen.per_arch_names > 0, "per-arch sibling");
    assert!(seen.repeated_names > 0, "repeated image name");
    assert!(stats.image_entries > stats.images);
    assert!(seen.two_tag_digests > 0, "two-tag digest");
    assert!(stats.tagless_digests > 0, "tagless digest");
    assert!(seen.dotted_two_part_tags > 0, "a `1.10`-style tag");
}

#[test]
fn output_is_deterministic() {
    let scale = Scale::small();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    assert_eq!(
        generate(a.path(), &scale).unwrap(),
        generate(b.path(), &scale).unwrap()
    );
    let (mut fa, mut fb) = (Vec::new(), Vec::new());
    files_under(a.path(), &mut fa);
    files_under(b.path(), &mut fb);
    fa.sort();
    fb.sort();
    assert_eq!(fa.len(), fb.len());
    for (x, y) in fa.iter().zip(&fb) {
        assert_eq!(x.strip_prefix(a.path()), y.strip_prefix(b.path()));
        assert!(
            fs::read(x).unwrap() == fs::read(y).unwrap(),
            "{}",
            x.display()
        );
    }
}

#[test]
fn refuses_to_write_over_a_corpus() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("images")).unwrap();
    let err = generate(dir.path(), &Scale::small()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
}

#[test]
fn rejects_impossible_scales() {
    let dir = tempfile::tempdir().unwrap();
    let x10 = Scale::k8s_io_x10();
    for scale in [
        Scale { projects: 0, ..x10 },
        Scale {
            destinations: 0,
            ..x10
        },
        Scale {
            destinations: synthetic::MAX_DESTINATIONS + 1,
            ..x10
        },
        Scale { digests: 10, ..x10 },
    ] {
        let err = generate(dir.path(), &scale).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{scale:?}");
    }
    assert!(!dir.path().join("manifests").exists(), "nothing written");
}
