//! The real k8s.io corpus (manifests-fixtures/k8s.io, see its SOURCE.md):
//! loads with exactly its two real defects reported, and the index holds
//! exactly what the files say, counted here without the loader.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use image_auditor::index::Index;
use image_auditor::manifest::{self, Layout, Severity};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests-fixtures/k8s.io/registry.k8s.io")
}

/// A `dmap` key line: optional quotes around `sha256:` + 64 lower hex, then `:`.
fn digest_key(line: &str) -> Option<&str> {
    let t = line.trim_start().trim_start_matches('"');
    let candidate = t.get(..71)?;
    let rest = t[71..].trim_start_matches('"');
    let valid = candidate.starts_with("sha256:")
        && candidate[7..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (valid && rest.starts_with(':')).then_some(candidate)
}

/// Counts what the loaded projects promote, reading the files as plain text.
struct Counted {
    digests: BTreeSet<String>,
    images: usize,
    destinations: BTreeSet<String>,
}

fn count_by_text(projects: &[String]) -> Counted {
    let mut counted = Counted {
        digests: BTreeSet::new(),
        images: 0,
        destinations: BTreeSet::new(),
    };
    for project in projects {
        let images =
            std::fs::read_to_string(root().join("images").join(project).join("images.yaml"))
                .unwrap();
        let mut names = BTreeSet::new();
        for line in images.lines() {
            let line = line.trim_end_matches('\r');
            if let Some(name) = line.trim_start().strip_prefix("- name:") {
                names.insert(name.trim().trim_matches('"').to_string());
            } else if let Some(digest) = digest_key(line) {
                counted.digests.insert(digest.to_string());
            }
        }
        counted.images += names.len();

        let manifest = std::fs::read_to_string(
            root()
                .join("manifests")
                .join(project)
                .join("promoter-manifest.yaml"),
        )
        .unwrap();
        let lines: Vec<&str> = manifest.lines().map(|l| l.trim_end_matches('\r')).collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(name) = line.trim_start().strip_prefix("- name:") else {
                continue;
            };
            let is_source = lines[i + 1..]
                .iter()
                .take_while(|l| !l.trim_start().starts_with("- "))
                .any(|l| l.trim() == "src: true");
            if !is_source {
                counted.destinations.insert(name.trim().to_string());
            }
        }
    }
    counted
}

#[test]
fn real_corpus_loads_with_exactly_its_real_defects() {
    let set = manifest::load(&root()).unwrap();
    assert_eq!(set.layout, Layout::Thin);

    let errors: Vec<String> = set
        .errors()
        .map(|p| {
            let file = p.file.strip_prefix(root()).unwrap().display().to_string();
            format!("{file}:{}: {}", p.line.unwrap_or(0), p.message)
        })
        .collect();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    // The project without images.yaml (it keeps a second promoter-manifest in
    // its images folder instead).
    assert!(
        errors[0].starts_with(
            "images/k8s-staging-aws-encryption-provider/images.yaml:0: does not exist"
        ),
        "{}",
        errors[0]
    );
    // The 63-hex digest, at its exact line.
    assert!(
        errors[1].starts_with(
            "images/k8s-staging-ingress-nginx/images.yaml:203: image e2e-test-httpbin: digest \
             \"sha256:23eb4b1775fbaa2adca55c73cf0341e1224d6308689b6f4b3aa1523312eb81c\""
        ),
        "{}",
        errors[1]
    );
    assert!(errors[1].ends_with("sha256 needs 64 hex digits, found 63"));

    // The duplicated boskos destination is reported but is not an error.
    let warnings: Vec<_> = set
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Warning)
        .collect();
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].project.as_deref(), Some("k8s-staging-boskos"));
    assert_eq!(warnings[0].line, Some(47));

    let excluded: BTreeSet<&str> = set.excluded.iter().map(|e| e.project.as_str()).collect();
    assert_eq!(
        excluded,
        BTreeSet::from([
            "k8s-staging-aws-encryption-provider",
            "k8s-staging-ingress-nginx"
        ])
    );
    // Every other project with a promoter manifest loads; `kind` has only an
    // images.yaml and is not a project.
    let with_manifest = std::fs::read_dir(root().join("manifests")).unwrap().count();
    assert_eq!(set.manifests.len(), with_manifest - 2);
    assert!(!set.manifests.iter().any(|m| m.project == "kind"));
}

#[test]
fn index_counts_match_the_files() {
    let set = manifest::load(&root()).unwrap();
    let projects: Vec<String> = set.manifests.iter().map(|m| m.project.clone()).collect();
    let counted = count_by_text(&projects);
    let stats = Index::build(&set, 1).stats();

    assert_eq!(stats.projects, projects.len());
    assert_eq!(stats.digests, counted.digests.len());
    assert_eq!(stats.images, counted.images);
    assert_eq!(stats.destinations, counted.destinations.len());
    // Sanity against docs/reference/k8s-io-corpus.md §1: the whole
    // corpus has 2147 distinct digests; ingress-nginx's 190 and kind's are out.
    assert!(
        stats.digests > 1900 && stats.digests < 2147,
        "{}",
        stats.digests
    );
}

#[test]
fn format_variations_of_the_real_files_load() {
    let set = manifest::load(&root()).unwrap();
    let project = |name: &str| set.manifests.iter().find(|m| m.project == name).unwrap();
    // CRLF line endings.
    assert!(!project("k8s-staging-npd").images.is_empty());
    // Comment-only images.yaml: an empty project, not an error.
    assert!(
        project("k8s-staging-llm-instance-gateway")
            .images
            .is_empty()
    );
    // One image name repeated in many list items is merged into one image.
    let etcdadm = project("k8s-staging-etcdadm");
    let names: BTreeSet<&str> = etcdadm.images.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names.len(), etcdadm.images.len());
    assert_eq!(etcdadm.images.len(), 4);
    // Root-level plus /kubernetes destinations in one manifest.
    let etcd = project("k8s-staging-etcd");
    assert!(
        etcd.destinations
            .iter()
            .any(|d| d.as_str() == "us-central1-docker.pkg.dev/k8s-artifacts-prod/images")
    );
    assert!(
        etcd.destinations.iter().any(
            |d| d.as_str() == "us-central1-docker.pkg.dev/k8s-artifacts-prod/images/kubernetes"
        )
    );
}
