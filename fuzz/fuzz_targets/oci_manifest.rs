//! OCI and Docker manifests and indexes as a registry returns them.
#![no_main]

use image_auditor::registry::parse_manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_manifest(data);
});
