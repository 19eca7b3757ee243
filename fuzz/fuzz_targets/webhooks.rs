//! Every registry webhook format: CNCF distribution, Harbor, ECR, ACR. The
//! first byte chooses the format and whether a registry is configured.
#![no_main]

use image_auditor::reference::RegistryPrefix;
use image_auditor::sources::webhook::{acr, distribution, ecr, harbor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let prefix: RegistryPrefix = "registry.example:5000/prod".parse().expect("valid prefix");
    let configured = (mode & 4 == 4).then_some(&prefix);
    let parsed = match mode % 4 {
        0 => distribution::parse(body, &prefix),
        1 => harbor::parse(body, configured),
        2 => ecr::parse(body, configured),
        _ => acr::parse(body, configured),
    };
    if let Ok(parsed) = parsed {
        for delivery in &parsed.deliveries {
            match &delivery.decoded {
                Ok(event) => {
                    assert_eq!(event.id, delivery.id);
                    assert!(event.digest.is_some() || event.tag.is_some());
                }
                Err(malformed) => assert_eq!(malformed.id, delivery.id),
            }
        }
    }
});
