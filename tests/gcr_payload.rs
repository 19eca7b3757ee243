//! The GCR / Artifact Registry payload parser against the retired auditor's
//! cases (docs/reference/cip-auditor.md §5.1, §5.2, §5.5) and the ones it lacked.
//!
//! Where the new design disagrees with the old suite it is said inline:
//! `DELETE` is accepted here (the audit calls it `deleted`), and a digest that
//! is not `sha256:` + 64 lower-hex (`sha256:000`) is `malformed` at parse time.

use image_auditor::event::{Action, Event, EventId, Malformed, Source};
use image_auditor::reference::{Digest, Tag};
use image_auditor::sources::gcr;

const ZEROS: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

fn id() -> EventId {
    EventId("projects/p/subscriptions/s#1".into())
}

fn ok(payload: &str) -> Event {
    match gcr::parse(&id(), payload.as_bytes()) {
        Ok(e) => {
            assert_eq!(e.id, id());
            assert_eq!(e.source, Source::Gcr);
            e
        }
        Err(m) => panic!("{payload}: {m}"),
    }
}

/// Asserts the payload is malformed and the reason mentions every phrase.
#[track_caller]
fn malformed(payload: &str, phrases: &[&str]) -> Malformed {
    let m = gcr::parse(&id(), payload.as_bytes()).expect_err(payload);
    assert_eq!(m.id, id());
    assert_eq!(m.source, Source::Gcr);
    for phrase in phrases {
        assert!(
            m.reason.contains(phrase),
            "{payload}: reason {:?} lacks {phrase:?}",
            m.reason
        );
    }
    m
}

fn digest(s: &str) -> Option<Digest> {
    Some(s.parse().unwrap())
}

fn tag(s: &str) -> Option<Tag> {
    Some(s.parse().unwrap())
}

// ---------------------------------------------------------------- §5.1 decoding

#[test]
fn insert_with_digest_only() {
    let e = ok(&format!(
        r#"{{"action":"INSERT","digest":"gcr.io/foo/bar@{ZEROS}"}}"#
    ));
    assert_eq!(e.action, Action::Insert);
    assert_eq!(e.repository.as_str(), "gcr.io/foo/bar");
    assert_eq!(e.digest, digest(ZEROS));
    assert_eq!(e.tag, None);
}

#[test]
fn insert_with_digest_and_tag() {
    let e = ok(&format!(
        r#"{{"action":"INSERT","digest":"gcr.io/foo/bar@{ZEROS}","tag":"gcr.io/foo/bar:1.0"}}"#
    ));
    assert_eq!(e.action, Action::Insert);
    assert_eq!(e.repository.as_str(), "gcr.io/foo/bar");
    assert_eq!(e.digest, digest(ZEROS));
    assert_eq!(e.tag, tag("1.0"));
}

#[test]
fn delete_with_tag_only_is_accepted_here_and_judged_by_the_audit() {
    // The retired auditor rejected every DELETE at validation; now the audit
    // says `deleted` (tests/verdicts.rs row 3).
    let e = ok(r#"{"action":"DELETE","tag":"gcr.io/foo/bar:1.0"}"#);
    assert_eq!(e.action, Action::Delete);
    assert_eq!(e.repository.as_str(), "gcr.io/foo/bar");
    assert_eq!(e.digest, None);
    assert_eq!(e.tag, tag("1.0"));
    let e = ok(&format!(
        r#"{{"action":"DELETE","digest":"gcr.io/foo/bar@{ZEROS}"}}"#
    ));
    assert_eq!(e.action, Action::Delete);
    assert_eq!(e.digest, digest(ZEROS));
}

#[test]
fn truncated_json_is_malformed_naming_json() {
    malformed("{", &["not JSON"]);
    malformed("", &["not JSON"]);
    malformed("\u{feff}{}", &["not JSON"]);
}

#[test]
fn numeric_action_is_malformed_naming_the_action_field() {
    malformed(
        &format!(r#"{{"action":1,"digest":"gcr.io/foo/bar@{ZEROS}"}}"#),
        &["`action`", "a number"],
    );
}

#[test]
fn non_string_digest_or_tag_is_malformed_naming_the_field() {
    malformed(
        r#"{"action":"INSERT","digest":["x"]}"#,
        &["`digest`", "an array"],
    );
    malformed(r#"{"action":"INSERT","tag":{}}"#, &["`tag`", "an object"]);
    malformed(
        r#"{"action":true,"tag":"gcr.io/a/b:1"}"#,
        &["`action`", "a boolean"],
    );
}

#[test]
fn payload_that_is_not_an_object_is_malformed() {
    for p in ["[]", "null", "\"INSERT\"", "42"] {
        malformed(p, &["not a JSON object"]);
    }
}

// ---------------------------------------------------------------- §5.2 validation

#[test]
fn neither_digest_nor_tag_is_malformed() {
    malformed(r#"{"action":"INSERT"}"#, &["neither `digest` nor `tag`"]);
    // Empty strings and nulls count as absent.
    malformed(
        r#"{"action":"INSERT","digest":"","tag":null}"#,
        &["neither `digest` nor `tag`"],
    );
}

#[test]
fn missing_action_is_malformed() {
    malformed(
        &format!(r#"{{"digest":"gcr.io/foo/bar@{ZEROS}"}}"#),
        &["`action` is missing"],
    );
    malformed("{}", &["`action` is missing"]);
    malformed(
        r#"{"action":"","tag":"gcr.io/foo/bar:1.0"}"#,
        &["`action` is missing"],
    );
}

#[test]
fn unknown_action_is_malformed_and_named() {
    malformed(
        &format!(r#"{{"action":"WOOF","digest":"gcr.io/foo/bar@{ZEROS}"}}"#),
        &["unknown action \"WOOF\""],
    );
    // Actions are case-sensitive, as Google sends them.
    malformed(
        r#"{"action":"insert","tag":"gcr.io/foo/bar:1.0"}"#,
        &["unknown action \"insert\""],
    );
    // A hostile action is not echoed in full.
    let long = "X".repeat(10_000);
    let m = malformed(
        &format!(r#"{{"action":"{long}","tag":"gcr.io/foo/bar:1.0"}}"#),
        &["unknown action"],
    );
    assert!(m.reason.len() < 400, "{}", m.reason.len());
    assert!(m.reason.contains("[9800 more bytes]"), "{}", m.reason);
}

#[test]
fn valid_payload_with_64_zero_digest_and_tag() {
    let e = ok(&format!(
        r#"{{"action":"INSERT","digest":"gcr.io/foo/bar@{ZEROS}","tag":"gcr.io/foo/bar:1.0"}}"#
    ));
    assert_eq!(e.digest, digest(ZEROS));
}

// ---------------------------------------------------------------- §5.5 derived fields

#[test]
fn derived_path_digest_and_tag() {
    let e = ok(&format!(
        r#"{{"action":"INSERT","digest":"k8s.gcr.io/subproject/foo@{ZEROS}","tag":"k8s.gcr.io/subproject/foo:1.0"}}"#
    ));
    assert_eq!(e.repository.as_str(), "k8s.gcr.io/subproject/foo");
    assert_eq!(e.repository.path(), "subproject/foo");
    assert_eq!(e.repository.host(), "k8s.gcr.io");
    assert_eq!(e.digest, digest(ZEROS));
    assert_eq!(e.tag, tag("1.0"));
}

#[test]
fn short_digest_is_malformed_at_parse_time() {
    // The retired auditor accepted `sha256:000` and matched it as "path only".
    malformed(
        r#"{"action":"INSERT","digest":"k8s.gcr.io/subproject/foo@sha256:000"}"#,
        &["`digest`", "64 hex digits, found 3"],
    );
}

#[test]
fn digest_of_63_hex_is_malformed() {
    let short = &ZEROS[..ZEROS.len() - 1];
    malformed(
        &format!(r#"{{"action":"INSERT","digest":"gcr.io/foo/bar@{short}"}}"#),
        &["`digest`", "found 63"],
    );
}

#[test]
fn digest_with_upper_case_hex_or_unknown_algorithm_is_malformed() {
    let upper = ZEROS.replace('0', "A");
    malformed(
        &format!(r#"{{"action":"INSERT","digest":"gcr.io/foo/bar@{upper}"}}"#),
        &["`digest`", "lower-case hex"],
    );
    malformed(
        r#"{"action":"INSERT","digest":"gcr.io/foo/bar@md5:00000000000000000000000000000000"}"#,
        &["`digest`", "sha256 or sha512"],
    );
}

#[test]
fn digest_ref_without_at_is_malformed() {
    malformed(
        r#"{"action":"INSERT","digest":"gcr.io/foo/bar"}"#,
        &["`digest` must be host/path@sha256:"],
    );
    // A tag where the digest belongs is not a digest either.
    malformed(
        r#"{"action":"INSERT","digest":"gcr.io/foo/bar:1.0"}"#,
        &["`digest` must be host/path@sha256:"],
    );
    malformed(
        &format!(r#"{{"action":"INSERT","digest":"gcr.io/foo/bar:1.0@{ZEROS}"}}"#),
        &["`digest` must be host/path@sha256:"],
    );
}

#[test]
fn tag_ref_without_colon_is_malformed() {
    malformed(
        r#"{"action":"DELETE","tag":"gcr.io/foo/bar"}"#,
        &["`tag` must be host/path:tag"],
    );
    malformed(
        &format!(r#"{{"action":"INSERT","tag":"gcr.io/foo/bar@{ZEROS}"}}"#),
        &["`tag` must be host/path:tag"],
    );
    malformed(
        r#"{"action":"INSERT","tag":"gcr.io/foo/bar:-bad"}"#,
        &["`tag`", "must start with"],
    );
}

#[test]
fn reference_without_a_registry_host_is_malformed() {
    malformed(
        &format!(r#"{{"action":"INSERT","digest":"library/busybox@{ZEROS}"}}"#),
        &["`digest`", "not a registry host"],
    );
    malformed(
        r#"{"action":"INSERT","tag":"gcr.io//bar:1.0"}"#,
        &["`tag`", "empty path component"],
    );
}

// ---------------------------------------------------------------- hosts with ports

#[test]
fn host_with_port_in_both_forms() {
    let e = ok(&format!(
        r#"{{"action":"INSERT","digest":"localhost:5000/foo/bar@{ZEROS}","tag":"localhost:5000/foo/bar:1.0"}}"#
    ));
    assert_eq!(e.repository.as_str(), "localhost:5000/foo/bar");
    assert_eq!(e.repository.host(), "localhost:5000");
    assert_eq!(e.repository.path(), "foo/bar");
    assert_eq!(e.tag, tag("1.0"));
    assert_eq!(e.digest, digest(ZEROS));
    let e = ok(r#"{"action":"DELETE","tag":"registry.example.com:443/a:v1"}"#);
    assert_eq!(e.repository.as_str(), "registry.example.com:443/a");
    assert_eq!(e.tag, tag("v1"));
    let e = ok(&format!(
        r#"{{"action":"INSERT","digest":"registry.example.com:443/a@{ZEROS}"}}"#
    ));
    assert_eq!(e.repository.as_str(), "registry.example.com:443/a");
    assert_eq!(e.tag, None);
}

#[test]
fn port_is_never_taken_for_a_tag() {
    // The retired auditor split at the only `:`: here the port is no tag.
    malformed(
        r#"{"action":"INSERT","tag":"localhost:5000/foo/bar"}"#,
        &["`tag` must be host/path:tag"],
    );
    malformed(
        r#"{"action":"INSERT","tag":"localhost:50000000/foo:1.0"}"#,
        &["`tag`", "port"],
    );
}

// ---------------------------------------------------------------- consistency

#[test]
fn digest_and_tag_naming_different_repositories_is_malformed() {
    malformed(
        &format!(
            r#"{{"action":"INSERT","digest":"gcr.io/foo/bar@{ZEROS}","tag":"gcr.io/foo/baz:1.0"}}"#
        ),
        &["different repositories", "gcr.io/foo/bar", "gcr.io/foo/baz"],
    );
    // A port is part of the repository.
    malformed(
        &format!(
            r#"{{"action":"INSERT","digest":"localhost:5000/foo@{ZEROS}","tag":"localhost:5001/foo:1.0"}}"#
        ),
        &["different repositories"],
    );
}

#[test]
fn unknown_keys_are_ignored_and_never_leak_into_the_event() {
    // The retired auditor decoded `Digest`/`Path`/`Tag` keys into its derived
    // fields (docs/reference/cip-auditor.md §2.2); here they are just unknown keys.
    let e = ok(&format!(
        r#"{{"action":"INSERT","tag":"gcr.io/foo/bar:1.0","Digest":"{ZEROS}","Path":"gcr.io/evil/x","Tag":"2.0","extra":{{"a":1}}}}"#
    ));
    assert_eq!(e.repository.as_str(), "gcr.io/foo/bar");
    assert_eq!(e.digest, None);
    assert_eq!(e.tag, tag("1.0"));
}

#[test]
fn empty_digest_next_to_a_tag_is_a_tag_only_event() {
    let e = ok(r#"{"action":"INSERT","digest":"","tag":"gcr.io/foo/bar:1.0"}"#);
    assert_eq!(e.digest, None);
    assert_eq!(e.tag, tag("1.0"));
}

#[test]
fn sha512_digest_is_accepted() {
    let d512 = format!("sha512:{}", "ab".repeat(64));
    let e = ok(&format!(
        r#"{{"action":"INSERT","digest":"gcr.io/foo/bar@{d512}"}}"#
    ));
    assert_eq!(e.digest, digest(&d512));
}
