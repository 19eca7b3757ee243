//! Helpers for the registry integration tests. Each test binary uses a
//! different subset, hence the allowance for unused items.
#![allow(dead_code)]

pub mod alertmanager;
pub mod browser;
pub mod command;
pub mod decisions;
pub mod fault_proxy;
pub mod fixtures;
pub mod git;
pub mod oci;
pub mod payloads;
pub mod postgres;
pub mod prometheus;
pub mod pubsub;
pub mod receiver;
pub mod registry;
pub mod service;
pub mod tcp_cut;
pub mod token;
pub mod watchdog;

pub use command::run_ok;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use image_auditor::registry::{RateLimit, RegistryClient, RegistryConfig};

/// A configuration for loopback test registries: plain HTTP, no rate limit,
/// short retry delays, and the given cache directory.
pub fn test_config(cache_dir: Option<&Path>) -> RegistryConfig {
    let unlimited = RateLimit {
        requests_per_second: 0.0,
        burst: 0,
    };
    RegistryConfig {
        insecure_http_hosts: vec!["127.0.0.1".into()],
        request_timeout: Duration::from_secs(10),
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        rate_limit: unlimited,
        per_host_rate_limit: unlimited,
        cache_dir: cache_dir.map(Path::to_owned),
        ..RegistryConfig::default()
    }
}

pub fn client(config: RegistryConfig) -> RegistryClient {
    RegistryClient::new(config).expect("valid test configuration")
}

/// The JSON a command printed on stdout; a failure shows its stderr.
pub fn stdout_json(out: &Output) -> serde_json::Value {
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "{e}: {text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
