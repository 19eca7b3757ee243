//! Pub/Sub push requests, wrapped (JSON envelope) and unwrapped (raw data
//! with the message id in a header): the first byte chooses.
#![no_main]

use http::{HeaderMap, HeaderValue};
use image_auditor::sources::pubsub_push;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    if mode & 1 == 1 {
        headers.insert(
            pubsub_push::MESSAGE_ID_HEADER,
            HeaderValue::from_static("fuzz-1"),
        );
    }
    let _ = pubsub_push::decode(&headers, body);
});
