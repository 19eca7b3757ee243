//! The manifest walk against trees a bad commit could make: symlink cycles,
//! symlinks to the root, symlinks out of the root, and trees over the
//! entry, byte and depth budgets. Bounds are asserted by counting what the
//! walk visited and by the resident-memory delta, never by time.

mod support;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use image_auditor::manifest::walk::{Budget, Limit, walk};
use image_auditor::manifest::{self, Layout, LoadError};
use support::fixtures::{A, write_plain_manifest, write_project};

const SECRET: &str = "sha256:5555555555555555555555555555555555555555555555555555555555555555";

/// A thin root with one project promoting [`A`]; returns the root.
fn thin_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    write_project(
        &root,
        "demo",
        "registries:\n- name: gcr.io/staging-demo\n  src: true\n- name: registry.example/prod\n",
        &format!("- name: app\n  dmap:\n    \"{A}\": [\"1.0\"]\n"),
    );
    root
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Loads `root` and returns the set with the growth of resident memory.
fn load_measured(root: &Path) -> (Result<manifest::ManifestSet, LoadError>, u64) {
    let before = rss_kib();
    let set = manifest::load(root);
    (set, rss_kib().saturating_sub(before))
}

fn warnings(set: &manifest::ManifestSet) -> Vec<String> {
    set.problems.iter().map(ToString::to_string).collect()
}

fn promotes(set: &manifest::ManifestSet, digest: &str) -> bool {
    set.manifests
        .iter()
        .flat_map(|m| &m.images)
        .flat_map(|i| &i.promotions)
        .any(|p| p.digest.to_string() == digest)
}

#[test]
fn six_symlinks_to_the_root_are_walked_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = thin_root(dir.path());
    for n in 0..6 {
        symlink(".", root.join(format!("loop{n}"))).unwrap();
        symlink("..", root.join(format!("manifests/up{n}"))).unwrap();
    }
    let tree = walk(&root, &Budget::default()).unwrap();
    // 2 directories and 6 links at the top, 1 + 6 in manifests/, 1 in
    // images/, a file in each project directory: nothing is entered twice.
    assert_eq!(tree.entries, 18, "{tree:#?}");
    assert_eq!(tree.files.len(), 2, "{tree:#?}");
    assert_eq!(tree.skipped.len(), 12, "{tree:#?}");

    let (set, grown_kib) = load_measured(&root);
    let set = set.unwrap();
    assert_eq!(set.manifests.len(), 1);
    assert!(promotes(&set, A));
    let warnings = warnings(&set);
    assert_eq!(warnings.len(), 12, "{warnings:#?}");
    assert!(
        warnings
            .iter()
            .all(|w| w.contains("already walked") && w.contains("warning")),
        "{warnings:#?}"
    );
    assert!(grown_kib < 16 * 1024, "RSS grew by {grown_kib} KiB");
}

#[test]
fn symlink_cycles_end_at_the_first_visit() {
    let dir = tempfile::tempdir().unwrap();
    let root = thin_root(dir.path());
    // a/b -> a, c <-> d, and a link to itself.
    std::fs::create_dir_all(root.join("extra/a")).unwrap();
    symlink("../a", root.join("extra/a/b")).unwrap();
    symlink("d", root.join("extra/c")).unwrap();
    symlink("c", root.join("extra/d")).unwrap();
    symlink("self", root.join("extra/self")).unwrap();
    let tree = walk(&root, &Budget::default()).unwrap();
    assert_eq!(tree.skipped.len(), 4, "{tree:#?}");
    assert!(tree.entries < 20, "{tree:#?}");

    let (set, grown_kib) = load_measured(&root);
    assert_eq!(set.unwrap().manifests.len(), 1);
    assert!(grown_kib < 16 * 1024, "RSS grew by {grown_kib} KiB");
}

#[test]
fn a_symlink_to_a_file_outside_the_root_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let root = thin_root(dir.path());
    let outside = dir.path().join("outside.yaml");
    std::fs::write(
        &outside,
        format!("- name: app\n  dmap:\n    \"{SECRET}\": [\"9.9\"]\n"),
    )
    .unwrap();
    // A second project whose images file points out of the root.
    std::fs::create_dir_all(root.join("manifests/leak")).unwrap();
    std::fs::create_dir_all(root.join("images/leak")).unwrap();
    std::fs::write(
        root.join("manifests/leak/promoter-manifest.yaml"),
        "registries:\n- name: gcr.io/staging-leak\n  src: true\n- name: registry.example/leak\n",
    )
    .unwrap();
    symlink(&outside, root.join("images/leak/images.yaml")).unwrap();
    // And a directory link out of the root.
    symlink(dir.path(), root.join("images/up")).unwrap();

    let set = manifest::load(&root).unwrap();
    assert!(!promotes(&set, SECRET), "the outside file was read");
    let problems = warnings(&set);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("images/leak/images.yaml: warning: symlink to a path outside")),
        "{problems:#?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("images/up: warning: symlink to a path outside")),
        "{problems:#?}"
    );
    assert_eq!(set.manifests.len(), 1, "leak is left out");
    assert_eq!(set.excluded[0].project, "leak");

    // A plain directory with such a link: the same.
    let plain = dir.path().join("plain");
    write_plain_manifest(&plain.join("ok.yaml"), "gcr.io/s", "registry.example/p", A);
    symlink(&outside, plain.join("leak.yaml")).unwrap();
    let set = manifest::load(&plain).unwrap();
    assert_eq!(set.layout, Layout::Plain);
    assert!(!promotes(&set, SECRET));
    assert!(promotes(&set, A));
}

#[test]
fn a_tree_over_its_entry_budget_is_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let root = thin_root(dir.path());
    std::fs::create_dir_all(root.join("notes")).unwrap();
    for n in 0..100 {
        std::fs::write(root.join(format!("notes/{n}.txt")), "x").unwrap();
    }
    let budget = Budget {
        max_entries: 50,
        ..Budget::default()
    };
    let e = manifest::load_within(&root, &budget).unwrap_err();
    let LoadError::OverBudget(over) = &e else {
        panic!("{e}")
    };
    assert_eq!(over.which, Limit::Entries);
    assert_eq!(over.which.reason(), "manifest_entries");
    assert!(e.to_string().contains("reload.limits.max_entries"), "{e}");
    // The same tree within a larger budget loads.
    let budget = Budget {
        max_entries: 200,
        ..Budget::default()
    };
    assert_eq!(walk(&root, &budget).unwrap().entries, 107);
}

#[test]
fn a_tree_over_its_byte_budget_is_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let root = thin_root(dir.path());
    std::fs::write(root.join("big.yaml"), "#".repeat(4096)).unwrap();
    let budget = Budget {
        max_bytes: 4096,
        ..Budget::default()
    };
    let e = manifest::load_within(&root, &budget).unwrap_err();
    assert!(
        matches!(&e, LoadError::OverBudget(o) if o.which == Limit::Bytes),
        "{e}"
    );
    assert!(e.to_string().contains("reload.limits.max_bytes"), "{e}");
    // Bytes that are not YAML are never read, so they do not count.
    std::fs::remove_file(root.join("big.yaml")).unwrap();
    std::fs::write(root.join("big.bin"), vec![0u8; 1 << 20]).unwrap();
    manifest::load_within(&root, &budget).unwrap();
}

#[test]
fn a_tree_over_its_depth_budget_is_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let root = thin_root(dir.path());
    std::fs::create_dir_all(root.join("a/b/c/d/e/f/g")).unwrap();
    let budget = Budget {
        max_depth: 4,
        ..Budget::default()
    };
    let e = manifest::load_within(&root, &budget).unwrap_err();
    assert!(
        matches!(&e, LoadError::OverBudget(o) if o.which == Limit::Depth),
        "{e}"
    );
}

#[test]
fn manifests_validate_finishes_on_a_tree_of_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let root = thin_root(dir.path());
    for n in 0..6 {
        symlink(".", root.join(format!("loop{n}"))).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_image-auditor"))
        .args(["manifests", "validate"])
        .arg(&root)
        .env_remove("IMAGE_AUDITOR_MANIFESTS")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.ends_with("1 projects valid, 0 excluded; 0 errors, 6 warnings\n"),
        "{text}"
    );
}
