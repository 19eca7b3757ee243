//! docs/design.md §10: load + validate + index a synthetic 10× k8s.io corpus, against
//! parsing the same bytes with the same YAML crate alone.
//!
//! `cargo bench --bench load`; the ratio is `load_validate_index / yaml_parse_only`.

#[path = "support/synthetic.rs"]
mod synthetic;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use criterion::{Criterion, criterion_group, criterion_main};
use image_auditor::index::Index;
use image_auditor::manifest;

/// The same shapes as the real schema, with no validation: the floor any
/// loader using this YAML crate has to pay.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct RawImage {
    name: String,
    dmap: Option<HashMap<String, Option<Vec<String>>>>,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct RawManifest {
    registries: Vec<HashMap<String, serde_json::Value>>,
    #[serde(rename = "imagesPath")]
    images_path: Option<String>,
}

fn files(root: &Path, sub: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root.join(sub)).unwrap() {
        let dir = entry.unwrap().path();
        for f in std::fs::read_dir(&dir).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out.sort();
    out
}

fn yaml_only(manifests: &[PathBuf], images: &[PathBuf]) -> usize {
    let options = || {
        serde_saphyr::options! {
            budget: serde_saphyr::budget! { max_nodes: 20_000_000, max_events: 40_000_000 },
        }
    };
    let mut n = 0;
    for f in manifests {
        let text = std::fs::read_to_string(f).unwrap();
        let m: Option<RawManifest> = serde_saphyr::from_str_with_options(&text, options()).unwrap();
        n += m.map_or(0, |m| m.registries.len());
    }
    for f in images {
        let text = std::fs::read_to_string(f).unwrap();
        let images: Option<Vec<RawImage>> =
            serde_saphyr::from_str_with_options(&text, options()).unwrap();
        n += images.map_or(0, |i| i.len());
    }
    n
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let stats = synthetic::generate(dir.path(), &synthetic::Scale::k8s_io_x10()).unwrap();
    eprintln!("synthetic corpus: {stats:?}");
    let manifests = files(dir.path(), "manifests");
    let images = files(dir.path(), "images");

    let mut group = c.benchmark_group("load_x10");
    group.sample_size(10);
    group.bench_function("yaml_parse_only", |b| {
        b.iter(|| yaml_only(&manifests, &images))
    });
    group.bench_function("load_validate_index", |b| {
        b.iter(|| {
            let set = manifest::load(dir.path()).unwrap();
            assert!(set.problems.is_empty());
            Index::build(&set, 1)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
