//! The integration tests, one module per file, in one binary: linking one
//! binary instead of one per file is what makes a change quick to test and
//! keeps `target/` small (see README, "Tests"). A file in `tests/` that is
//! not listed here would never be compiled; the test below refuses that.
//! `hostile_manifests.rs` is the exception, a binary of its own because it
//! measures the resident memory of its process.

mod support;

mod alert_grouping;
mod alert_handover;
mod alerts;
mod cli;
mod corpus;
mod dedupe_scope;
mod deploy;
mod exceptions;
mod findings;
mod gcr_payload;
mod git_servers;
mod hostile_http;
mod hostile_webhooks;
mod manifest_rules;
mod properties;
mod pubsub_pull;
mod pubsub_push_decode;
mod push_auth;
mod registry_auth;
mod registry_faults;
mod registry_real;
mod reload_git;
mod replicas;
mod resolve_real;
mod scan_real;
mod service;
mod service_pubsub;
mod status_page;
mod store_contract;
mod store_postgres;
mod synthetic_corpus;
mod triage;
mod verdicts;
mod webhook_acr_payloads;
mod webhook_distribution;
mod webhook_ecr_payloads;
mod webhook_endpoints;
mod webhook_harbor_payloads;
mod webhook_payload_properties;
mod webhook_vendors;

/// Every test file is a module of this binary (or, named in `ALONE`, its own).
#[test]
fn every_test_file_is_compiled() {
    const ALONE: &[&str] = &["hostile_manifests"];
    let listed = include_str!("tests.rs");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(module) = name.strip_suffix(".rs") else {
            continue;
        };
        if module == "tests" || ALONE.contains(&module) {
            continue;
        }
        if !listed.lines().any(|l| l == format!("mod {module};")) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "not listed in tests/tests.rs, so never compiled: {missing:?}"
    );
}
