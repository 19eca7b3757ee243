//! The GCR / Artifact Registry `gcr` topic payload.
#![no_main]

use image_auditor::event::EventId;
use image_auditor::sources::gcr;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let id = EventId("fuzz".into());
    match gcr::parse(&id, data) {
        Ok(event) => assert!(event.digest.is_some() || event.tag.is_some()),
        Err(malformed) => assert_eq!(malformed.id, id),
    }
});
