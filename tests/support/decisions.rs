//! The decisions the store tests record: one realistic `Decision` per id,
//! shared by the contract tests of both stores and the SQLite file tests.

use std::path::Path;
use std::sync::Arc;

use image_auditor::audit::{Evidence, VerdictKind};
use image_auditor::event::{Action, EndpointName, EventId, Source};
use image_auditor::findings::{Decision, DedupeKey, FindingId, Recorded};
use image_auditor::reference::{Digest, Repository, Tag};

/// `sha256:` + `unit` repeated to 64 hex digits.
pub fn digest(unit: &str) -> Digest {
    format!("sha256:{}", &unit.repeat(64)[..64])
        .parse()
        .unwrap()
}

pub fn repo(name: &str) -> Repository {
    format!("registry.example/prod/{name}").parse().unwrap()
}

pub fn evidence() -> Evidence {
    Evidence {
        project: "sig-foo".into(),
        file: Arc::from(Path::new("images/sig-foo/images.yaml")),
        line: 7,
        image: "foo".into(),
        digest: digest("ab"),
        tags: vec!["v1.0".into()],
        parent: Some(digest("cd")),
    }
}

/// The subscription the test decisions come through.
pub fn sub() -> EndpointName {
    EndpointName("projects/p/subscriptions/prod".into())
}

/// The dedupe key of the delivery `id` from `source` through `endpoint`.
pub fn key(source: Source, endpoint: &EndpointName, id: &str) -> DedupeKey {
    DedupeKey {
        source,
        endpoint: endpoint.clone(),
        event_id: EventId(id.into()),
    }
}

pub fn decision(id: &str, verdict: VerdictKind) -> Decision {
    Decision {
        key: key(Source::PubsubPull, &sub(), id),
        received_at_ms: 1_000,
        action: Some(Action::Insert),
        repository: Some(repo("foo")),
        digest: Some(digest("12")),
        tag: Some("v1.0".parse::<Tag>().unwrap()),
        verdict,
        reason: format!("{verdict} because of {id}"),
        evidence: vec![evidence().into()],
        manifest_commit: Some("0123abcd".into()),
        index_generation: 7,
        excepted_by: None,
    }
}

pub fn new_finding(r: Recorded) -> FindingId {
    match r {
        Recorded::New { finding: Some(id) } => id,
        other => panic!("expected a new finding, got {other:?}"),
    }
}
