//! The hand-written manifest fixtures under `manifests-fixtures/rules/`, and
//! what the tests over them count from the fixture text.

use std::path::{Path, PathBuf};

use image_auditor::event::{Action, Event, EventId, Source};
use image_auditor::reference::{Digest, Repository};

/// Digests that read as names in test manifests and payloads.
pub const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
pub const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
pub const C: &str = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

pub fn rules(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests-fixtures/rules")
        .join(name)
}

/// `sha256:` + `unit` repeated to 64 hex digits.
pub fn d(unit: &str) -> Digest {
    format!("sha256:{}", &unit.repeat(64)[..64])
        .parse()
        .unwrap()
}

/// The 1-based line of the only line of `file` containing `needle`, counted
/// here from the text (independently of the loader).
pub fn line_of(file: &Path, needle: &str) -> u32 {
    let text = std::fs::read_to_string(file).unwrap();
    let hits: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(hits.len(), 1, "{needle:?} in {}", file.display());
    hits[0] as u32
}

/// Writes project `project` of a thin manifest root: its promoter manifest
/// and its images file.
pub fn write_project(root: &Path, project: &str, manifest: &str, images: &str) {
    let manifest_dir = root.join("manifests").join(project);
    let images_dir = root.join("images").join(project);
    std::fs::create_dir_all(&manifest_dir).unwrap();
    std::fs::create_dir_all(&images_dir).unwrap();
    std::fs::write(manifest_dir.join("promoter-manifest.yaml"), manifest).unwrap();
    std::fs::write(images_dir.join("images.yaml"), images).unwrap();
}

/// A thin root `dir/manifests-root` holding one project (see
/// [`write_project`]); returns the root.
pub fn one_project(dir: &Path, project: &str, manifest: &str, images: &str) -> PathBuf {
    let root = dir.join("manifests-root");
    write_project(&root, project, manifest, images);
    root
}

/// A thin root below `dir` whose one project `apps` promotes `digest` as
/// `app:v1` from `staging.example/apps` to `prod.example/apps`.
pub fn app_promoted_to_prod(dir: &Path, digest: &str) -> PathBuf {
    one_project(
        dir,
        "apps",
        "registries:\n- name: staging.example/apps\n  src: true\n- name: prod.example/apps\n",
        &format!("- name: app\n  dmap:\n    \"{digest}\": [\"v1\"]\n"),
    )
}

/// A manifest root whose one project promotes `app` (`digest` as 1.0) from
/// `staging.example/demo` to `regions` destinations `r<i>.example/prod`.
pub fn regions_root(dir: &Path, digest: &str, regions: usize) -> PathBuf {
    let mut registries = String::from("registries:\n- name: staging.example/demo\n  src: true\n");
    for i in 0..regions {
        registries.push_str(&format!("- name: r{i}.example/prod\n"));
    }
    one_project(
        dir,
        "demo",
        &registries,
        &format!("- name: app\n  dmap:\n    \"{digest}\": [\"1.0\"]\n"),
    )
}

/// Writes `file`, a plain-layout manifest (registries and images in one
/// file) promoting `app` (`digest` as 1.0) from `source` to `destination`,
/// creating its directory.
pub fn write_plain_manifest(file: &Path, source: &str, destination: &str, digest: &str) {
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(
        file,
        format!(
            "registries:\n- name: {source}\n  src: true\n- name: {destination}\n\
             images:\n- name: app\n  dmap:\n    \"{digest}\": [\"1.0\"]\n"
        ),
    )
    .unwrap();
}

/// A push (`insert`) of `digest` to `repository`, as the CLI reports one.
pub fn push_event(repository: Repository, digest: &Digest) -> Event {
    Event {
        id: EventId(format!("{repository}@{digest}")),
        source: Source::Cli,
        action: Action::Insert,
        repository,
        digest: Some(digest.clone()),
        tag: None,
    }
}
