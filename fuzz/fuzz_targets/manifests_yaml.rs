//! Promotion manifests: arbitrary bytes as one project's `images.yaml` (or,
//! by the first byte, its `promoter-manifest.yaml`) in a thin layout, loaded
//! and validated, then indexed when valid.
#![no_main]

use image_auditor::index::Index;
use image_auditor::manifest;
use libfuzzer_sys::fuzz_target;

const REGISTRIES: &str =
    "registries:\n- name: staging.example/p\n  src: true\n- name: prod.example/p\n";
const IMAGES: &str = "- name: app\n  dmap:\n    \"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\": [\"1.0\"]\n";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    std::fs::create_dir_all(root.join("manifests/p")).unwrap();
    std::fs::create_dir_all(root.join("images/p")).unwrap();
    let (registries, images): (&[u8], &[u8]) = if mode & 1 == 0 {
        (REGISTRIES.as_bytes(), body)
    } else {
        (body, IMAGES.as_bytes())
    };
    std::fs::write(root.join("manifests/p/promoter-manifest.yaml"), registries).unwrap();
    std::fs::write(root.join("images/p/images.yaml"), images).unwrap();
    if let Ok(set) = manifest::load(root) {
        for problem in &set.problems {
            let _ = problem.to_string();
        }
        let _ = Index::build(&set, 1).stats();
    }
});
