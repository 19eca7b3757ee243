//! References, digests, tags and repositories: parsing never panics, and
//! whatever parses prints back to text that parses to the same value.
#![no_main]

use image_auditor::reference::{Digest, Reference, Repository, Tag};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = text.parse::<Reference>() {
        let again: Reference = r.to_string().parse().expect("a printed reference parses");
        assert_eq!(again, r);
    }
    if let Ok(d) = text.parse::<Digest>() {
        assert_eq!(d.to_string().parse::<Digest>().expect("round trip"), d);
    }
    if let Ok(t) = text.parse::<Tag>() {
        assert_eq!(t.as_str(), text);
        let _ = t.attachment_subject();
    }
    if let Ok(r) = text.parse::<Repository>() {
        let _ = r.splits().count();
        let _ = r.path();
    }
});
