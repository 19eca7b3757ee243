//! The findings store and outbox (docs/design.md §7, §8.1) on real SQLite files.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use image_auditor::audit::{Evidence, VerdictKind};
use image_auditor::event::{Action, EndpointName, EventId, Source};
use image_auditor::findings::{
    Decision, DeliveryState, Finding, FindingId, FindingQuery, Recorded, SqliteStore, Store,
    StoreError,
};
use image_auditor::reference::{Digest, Repository, Tag};

/// `sha256:` + `unit` repeated to 64 hex digits.
fn digest(unit: &str) -> Digest {
    format!("sha256:{}", &unit.repeat(64)[..64])
        .parse()
        .unwrap()
}

fn repo(name: &str) -> Repository {
    format!("registry.example/prod/{name}").parse().unwrap()
}

fn evidence() -> Evidence {
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
fn sub() -> EndpointName {
    EndpointName("projects/p/subscriptions/prod".into())
}

fn decision(id: &str, verdict: VerdictKind) -> Decision {
    Decision {
        source: Source::PubsubPull,
        endpoint: sub(),
        event_id: EventId(id.into()),
        received_at_ms: 1_000,
        action: Some(Action::Insert),
        repository: Some(repo("foo")),
        digest: Some(digest("12")),
        tag: Some("v1.0".parse::<Tag>().unwrap()),
        verdict,
        reason: format!("{verdict} because of {id}"),
        evidence: vec![evidence()],
        manifest_commit: Some("0123abcd".into()),
        index_generation: 7,
    }
}

fn tmp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("findings.db");
    (dir, path)
}

fn new_finding(r: Recorded) -> FindingId {
    match r {
        Recorded::New { finding: Some(id) } => id,
        other => panic!("expected a new finding, got {other:?}"),
    }
}

fn ids(fs: &[Finding]) -> Vec<&str> {
    fs.iter().map(|f| f.event_id.0.as_str()).collect()
}

#[test]
fn record_then_duplicate_keeps_the_first_verdict() {
    let (_dir, path) = tmp();
    let store = SqliteStore::open(&path).unwrap();

    let first = store
        .record(&decision("m1", VerdictKind::Unpromoted))
        .unwrap();
    let id = new_finding(first);
    // A redelivery decided differently (say after a reload) is still the
    // same delivery: the first verdict stands and nothing is written.
    let again = store
        .record(&decision("m1", VerdictKind::Promoted))
        .unwrap();
    assert_eq!(
        again,
        Recorded::Duplicate {
            verdict: VerdictKind::Unpromoted
        }
    );
    let again = store
        .record(&decision("m1", VerdictKind::Unpromoted))
        .unwrap();
    assert_eq!(
        again,
        Recorded::Duplicate {
            verdict: VerdictKind::Unpromoted
        }
    );

    assert_eq!(
        store
            .decision(Source::PubsubPull, &sub(), &EventId("m1".into()))
            .unwrap(),
        Some(VerdictKind::Unpromoted)
    );
    assert_eq!(
        store
            .decision(Source::PubsubPush, &sub(), &EventId("m1".into()))
            .unwrap(),
        None,
        "the source is part of the key"
    );
    let all = store.findings(&FindingQuery::default()).unwrap();
    assert_eq!(all.len(), 1);
    let f = &all[0];
    assert_eq!(f.id, id);
    assert_eq!(f.source, Source::PubsubPull);
    assert_eq!(f.event_id, EventId("m1".into()));
    assert_eq!(f.action, Some(Action::Insert));
    assert_eq!(f.repository, Some(repo("foo")));
    assert_eq!(f.digest, Some(digest("12")));
    assert_eq!(f.tag.as_ref().map(|t| t.as_str()), Some("v1.0"));
    assert_eq!(f.verdict, VerdictKind::Unpromoted);
    assert_eq!(f.reason, "unpromoted because of m1");
    assert_eq!(f.manifest_commit.as_deref(), Some("0123abcd"));
    assert_eq!(f.index_generation, 7);
    assert_eq!(f.received_at_ms, 1_000);
    assert!(f.created_at_ms > 1_600_000_000_000, "{}", f.created_at_ms);
    assert_eq!(f.evidence, serde_json::to_value(vec![evidence()]).unwrap());
    assert!(f.deliveries.is_empty());

    // The same id from another source is another delivery.
    let mut other = decision("m1", VerdictKind::Unpromoted);
    other.source = Source::PubsubPush;
    new_finding(store.record(&other).unwrap());
    assert_eq!(store.counts().unwrap().findings, 2);
}

#[test]
fn the_endpoint_is_part_of_the_key() {
    let (_dir, path) = tmp();
    let store = SqliteStore::open(&path).unwrap();
    let dev = EndpointName("projects/p/subscriptions/dev".into());
    let mut from_dev = decision("m1", VerdictKind::OutOfScope);
    from_dev.endpoint = dev.clone();
    assert_eq!(
        store.record(&from_dev).unwrap(),
        Recorded::New { finding: None }
    );
    // The same id through another subscription is its own delivery: its
    // verdict is recorded, and alerts.
    let from_prod = decision("m1", VerdictKind::Unpromoted);
    let id = new_finding(store.record(&from_prod).unwrap());
    assert_eq!(
        store
            .decision(Source::PubsubPull, &dev, &EventId("m1".into()))
            .unwrap(),
        Some(VerdictKind::OutOfScope)
    );
    assert_eq!(
        store
            .decision(Source::PubsubPull, &sub(), &EventId("m1".into()))
            .unwrap(),
        Some(VerdictKind::Unpromoted)
    );
    let f = store.findings(&FindingQuery::default()).unwrap();
    assert_eq!((f.len(), f[0].id), (1, id));
    assert_eq!(f[0].endpoint, sub());
    // And each stays deduplicated within its own endpoint.
    assert!(matches!(
        store.record(&from_prod).unwrap(),
        Recorded::Duplicate {
            verdict: VerdictKind::Unpromoted
        }
    ));
}

/// The schema the previous release created (version 1), verbatim, with a
/// few rows, as a file that release would have left behind.
fn version_1_file(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(include_str!("fixtures/findings-schema-v1.sql"))
        .unwrap();
    conn.execute_batch(
        "INSERT INTO decisions VALUES ('harbor', 'h1', 100, 'out_of_scope');
         INSERT INTO decisions VALUES ('harbor', 'h2', 110, 'unpromoted');
         INSERT INTO decisions VALUES ('scan', 's1', 120, 'unpromoted');
         INSERT INTO findings (id, created_at_ms, received_at_ms, source, event_id, action,
             repository, digest, tag, verdict, reason, evidence, manifest_commit,
             index_generation)
           VALUES (41, 111, 110, 'harbor', 'h2', 'insert', 'registry.example/prod/foo', NULL,
             'v1', 'unpromoted', 'not promoted', '[]', NULL, 3),
                  (42, 121, 120, 'scan', 's1', 'insert', 'registry.example/prod/foo', NULL,
             'v2', 'unpromoted', 'not promoted', '[]', NULL, 3);
         INSERT INTO sinks VALUES ('log', 41);
         INSERT INTO deliveries VALUES (41, 'log', 'delivered', 1, 0, 200, NULL);
         PRAGMA user_version = 1;",
    )
    .unwrap();
}

#[test]
fn a_store_from_the_previous_version_opens_and_keeps_its_rows() {
    let (_dir, path) = tmp();
    version_1_file(&path);
    let store = SqliteStore::open(&path).unwrap();

    let counts = store.counts().unwrap();
    assert_eq!((counts.decisions_total(), counts.findings), (3, 2));
    let f = store.findings(&FindingQuery::default()).unwrap();
    assert_eq!(ids(&f), ["s1", "h2"]);
    assert_eq!(f[1].id, FindingId(41));
    assert_eq!(f[1].endpoint, EndpointName::only());
    assert_eq!(f[1].deliveries[0].state, DeliveryState::Delivered);
    // Rows from before carry the one-endpoint scope: a scan keeps its
    // dedupe across the upgrade.
    let mut scan = decision("s1", VerdictKind::Unpromoted);
    (scan.source, scan.endpoint) = (Source::Scan, EndpointName::only());
    assert!(matches!(
        store.record(&scan).unwrap(),
        Recorded::Duplicate { .. }
    ));
    // New findings number after the kept ones, and the sink owes exactly
    // the ones it had not delivered.
    let mut harbor = decision("h2", VerdictKind::Unpromoted);
    (harbor.source, harbor.endpoint) = (Source::Harbor, EndpointName("prod".into()));
    let new = new_finding(store.record(&harbor).unwrap());
    assert!(new > FindingId(42), "{new}");
    assert_eq!(store.undelivered("log").unwrap(), 2);
    let claimed = store.claim_undelivered("log", 10, 1_000).unwrap();
    assert_eq!(ids(&claimed), ["s1", "h2"]);
    assert_eq!(claimed[1].id, new);
    drop(store);

    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 2);
    let problems: i64 = conn
        .query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(problems, 0);
    // Reopening migrates nothing twice.
    drop(conn);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.counts().unwrap().findings, 3);
}

#[test]
fn dedupe_survives_reopening_the_file() {
    let (_dir, path) = tmp();
    {
        let store = SqliteStore::open(&path).unwrap();
        new_finding(
            store
                .record(&decision("m1", VerdictKind::TagMoved))
                .unwrap(),
        );
        assert_eq!(
            store
                .record(&decision("m2", VerdictKind::Promoted))
                .unwrap(),
            Recorded::New { finding: None }
        );
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        store
            .record(&decision("m1", VerdictKind::TagMoved))
            .unwrap(),
        Recorded::Duplicate {
            verdict: VerdictKind::TagMoved
        }
    );
    assert_eq!(
        store
            .record(&decision("m2", VerdictKind::Unpromoted))
            .unwrap(),
        Recorded::Duplicate {
            verdict: VerdictKind::Promoted
        }
    );
    let c = store.counts().unwrap();
    assert_eq!(c.findings, 1);
    assert_eq!(c.decisions_total(), 2);
}

#[test]
fn only_alerting_verdicts_become_findings() {
    let (_dir, path) = tmp();
    let store = SqliteStore::open(&path).unwrap();
    for (i, kind) in VerdictKind::ALL.into_iter().enumerate() {
        if kind == VerdictKind::Undecided {
            continue;
        }
        let got = store.record(&decision(&format!("m{i}"), kind)).unwrap();
        match got {
            Recorded::New { finding } => {
                assert_eq!(finding.is_some(), kind.alerts(), "{kind}")
            }
            Recorded::Duplicate { .. } => panic!("{kind}: duplicate"),
        }
        assert_eq!(
            store
                .decision(Source::PubsubPull, &sub(), &EventId(format!("m{i}")))
                .unwrap(),
            Some(kind)
        );
    }
    let c = store.counts().unwrap();
    for kind in VerdictKind::ALL {
        let want = u64::from(kind != VerdictKind::Undecided);
        assert_eq!(c.decisions_of(kind), want, "{kind}");
    }
    let alerting = VerdictKind::ALL.iter().filter(|k| k.alerts()).count() as u64;
    assert_eq!(c.findings, alerting);
    let found = store.findings(&FindingQuery::default()).unwrap();
    assert!(found.iter().all(|f| f.verdict.alerts()));
    assert_eq!(found.len() as u64, alerting);
}

#[test]
fn undecided_is_never_recorded() {
    let store = SqliteStore::open_in_memory().unwrap();
    let err = store
        .record(&decision("m1", VerdictKind::Undecided))
        .unwrap_err();
    assert!(matches!(err, StoreError::Undecided { .. }), "{err}");
    assert!(err.to_string().contains("m1"), "{err}");
    assert_eq!(
        store
            .decision(Source::PubsubPull, &sub(), &EventId("m1".into()))
            .unwrap(),
        None
    );
    // Decided later, the same delivery is new.
    assert_eq!(
        store
            .record(&decision("m1", VerdictKind::Promoted))
            .unwrap(),
        Recorded::New { finding: None }
    );
}

#[test]
fn malformed_deliveries_are_findings_without_an_event() {
    let store = SqliteStore::open_in_memory().unwrap();
    let m = image_auditor::event::Malformed::new(
        EventId("bad-1".into()),
        Source::PubsubPush,
        "invalid JSON",
    );
    let id = new_finding(
        store
            .record(&Decision::of_malformed(&m, &sub(), 5, None, 3))
            .unwrap(),
    );
    let f = store.findings(&FindingQuery::default()).unwrap();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].id, id);
    assert_eq!(f[0].verdict, VerdictKind::Malformed);
    assert_eq!(f[0].reason, "invalid JSON");
    assert_eq!(
        (&f[0].action, &f[0].repository, &f[0].digest, &f[0].tag),
        (&None, &None, &None, &None)
    );
    assert_eq!(f[0].evidence, serde_json::json!([]));
}

/// Six findings across verdicts, digests, repositories and times, plus a
/// non-alerting decision that must never show up.
fn query_fixture() -> (tempfile::TempDir, SqliteStore) {
    let (dir, path) = tmp();
    let store = SqliteStore::open(&path).unwrap();
    let rows = [
        ("a", VerdictKind::Unpromoted, "11", "foo", 100),
        ("b", VerdictKind::TagMoved, "11", "bar", 200),
        ("c", VerdictKind::Unpromoted, "22", "bar", 300),
        ("d", VerdictKind::Deleted, "22", "foo", 400),
        ("e", VerdictKind::Unpromoted, "33", "foo", 500),
        ("f", VerdictKind::WrongRepository, "11", "foo", 600),
    ];
    for (id, kind, dig, name, at) in rows {
        let mut d = decision(id, kind);
        d.digest = Some(digest(dig));
        d.repository = Some(repo(name));
        d.received_at_ms = at;
        new_finding(store.record(&d).unwrap());
    }
    let mut quiet = decision("quiet", VerdictKind::Promoted);
    quiet.digest = Some(digest("11"));
    store.record(&quiet).unwrap();
    (dir, store)
}

#[test]
fn query_filters_each_narrow() {
    let (_dir, store) = query_fixture();
    let q = |q: FindingQuery| ids(&store.findings(&q).unwrap()).join(",");

    assert_eq!(q(FindingQuery::default()), "f,e,d,c,b,a", "newest first");
    assert_eq!(
        q(FindingQuery {
            verdict: Some(VerdictKind::Unpromoted),
            ..Default::default()
        }),
        "e,c,a"
    );
    assert_eq!(
        q(FindingQuery {
            verdict: Some(VerdictKind::Promoted),
            ..Default::default()
        }),
        ""
    );
    assert_eq!(
        q(FindingQuery {
            digest: Some(digest("11")),
            ..Default::default()
        }),
        "f,b,a"
    );
    assert_eq!(
        q(FindingQuery {
            repository: Some(repo("bar")),
            ..Default::default()
        }),
        "c,b"
    );
    assert_eq!(
        q(FindingQuery {
            since_ms: Some(400),
            ..Default::default()
        }),
        "f,e,d",
        "since is inclusive"
    );
    assert_eq!(
        q(FindingQuery {
            verdict: Some(VerdictKind::Unpromoted),
            repository: Some(repo("foo")),
            since_ms: Some(200),
            ..Default::default()
        }),
        "e"
    );
    assert_eq!(
        q(FindingQuery {
            digest: Some(digest("22")),
            repository: Some(repo("foo")),
            ..Default::default()
        }),
        "d"
    );
}

#[test]
fn limits_and_pages() {
    let (_dir, store) = query_fixture();
    let page1 = store
        .findings(&FindingQuery {
            limit: Some(4),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(ids(&page1), ["f", "e", "d", "c"]);
    let page2 = store
        .findings(&FindingQuery {
            limit: Some(4),
            before: Some(page1.last().unwrap().id),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(ids(&page2), ["b", "a"]);
    assert!(
        store
            .findings(&FindingQuery {
                limit: Some(0),
                ..Default::default()
            })
            .unwrap()
            .is_empty()
    );
}

#[test]
fn limit_defaults_to_100_and_caps_at_1000() {
    let store = SqliteStore::open_in_memory().unwrap();
    for i in 0..1100 {
        store
            .record(&decision(&format!("m{i:04}"), VerdictKind::Unpromoted))
            .unwrap();
    }
    let default = store.findings(&FindingQuery::default()).unwrap();
    assert_eq!(default.len(), FindingQuery::DEFAULT_LIMIT);
    assert_eq!(default[0].event_id.0, "m1099");
    let capped = store
        .findings(&FindingQuery {
            limit: Some(50_000),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(capped.len(), FindingQuery::MAX_LIMIT);
    assert_eq!(capped.last().unwrap().event_id.0, "m0100");
}

#[test]
fn counts_decisions_findings_and_undelivered() {
    let (_dir, path) = tmp();
    let store = SqliteStore::open(&path).unwrap();
    let empty = store.counts().unwrap();
    assert_eq!(
        (empty.decisions_total(), empty.findings, empty.undelivered),
        (0, 0, 0)
    );
    assert_eq!(empty.decisions.len(), VerdictKind::ALL.len());

    for i in 0..3 {
        store
            .record(&decision(&format!("p{i}"), VerdictKind::Promoted))
            .unwrap();
    }
    for i in 0..2 {
        store
            .record(&decision(&format!("u{i}"), VerdictKind::Unpromoted))
            .unwrap();
    }
    store
        .record(&decision("t0", VerdictKind::TagMoved))
        .unwrap();
    store
        .record(&decision("p0", VerdictKind::Promoted))
        .unwrap(); // duplicate: counted once

    let c = store.counts().unwrap();
    assert_eq!(c.decisions_of(VerdictKind::Promoted), 3);
    assert_eq!(c.decisions_of(VerdictKind::Unpromoted), 2);
    assert_eq!(c.decisions_of(VerdictKind::TagMoved), 1);
    assert_eq!(c.decisions_of(VerdictKind::Deleted), 0);
    assert_eq!(c.decisions_total(), 6);
    assert_eq!(c.findings, 3);
    assert_eq!(c.undelivered, 3, "no sink has delivered anything");
    assert!(c.undelivered_by_sink.is_empty());

    let claimed = store.claim_undelivered("log", 10, 0).unwrap();
    store.mark_delivered("log", claimed[0].id, 1).unwrap();
    let c = store.counts().unwrap();
    assert_eq!(c.undelivered, 2);
    assert_eq!(c.undelivered_by_sink, vec![("log".to_owned(), 2)]);

    // A second sink owes everything; a finding recorded later is owed by both.
    store.claim_undelivered("slack", 0, 0).unwrap();
    store
        .record(&decision("u9", VerdictKind::Unpromoted))
        .unwrap();
    let c = store.counts().unwrap();
    assert_eq!(c.undelivered, 4);
    assert_eq!(
        c.undelivered_by_sink,
        vec![("log".to_owned(), 3), ("slack".to_owned(), 4)]
    );
}

#[test]
fn outbox_is_per_sink() {
    let (_dir, path) = tmp();
    let store = SqliteStore::open(&path).unwrap();
    let f1 = new_finding(
        store
            .record(&decision("m1", VerdictKind::Unpromoted))
            .unwrap(),
    );
    let f2 = new_finding(
        store
            .record(&decision("m2", VerdictKind::TagMoved))
            .unwrap(),
    );
    store
        .record(&decision("m3", VerdictKind::Promoted))
        .unwrap();

    let a = store.claim_undelivered("a", 10, 1_000).unwrap();
    assert_eq!(
        a.iter().map(|f| f.id).collect::<Vec<_>>(),
        [f1, f2],
        "oldest first"
    );
    let d = &a[0].deliveries;
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].sink.as_str(), d[0].state, d[0].attempts),
        ("a", DeliveryState::Pending, 1)
    );
    // Claimed: hidden from further claims for the same sink.
    assert!(store.claim_undelivered("a", 10, 1_000).unwrap().is_empty());

    store.mark_delivered("a", f1, 1_100).unwrap();
    store.mark_delivered("a", f2, 1_100).unwrap();
    store.mark_delivered("a", f2, 1_200).unwrap(); // idempotent
    // Never again for A, however late.
    assert!(
        store
            .claim_undelivered("a", 10, i64::MAX)
            .unwrap()
            .is_empty()
    );
    // Still pending for B.
    let b = store.claim_undelivered("b", 1, 1_000).unwrap();
    assert_eq!(b.iter().map(|f| f.id).collect::<Vec<_>>(), [f1], "limit");
    let b = store.claim_undelivered("b", 10, 1_000).unwrap();
    assert_eq!(b.iter().map(|f| f.id).collect::<Vec<_>>(), [f2]);

    // The HTTP view shows both sinks' states.
    let all = store.findings(&FindingQuery::default()).unwrap();
    let f1_row = all.iter().find(|f| f.id == f1).unwrap();
    let states: Vec<_> = f1_row
        .deliveries
        .iter()
        .map(|d| (d.sink.as_str(), d.state, d.delivered_at_ms))
        .collect();
    assert_eq!(
        states,
        [
            ("a", DeliveryState::Delivered, Some(1_100)),
            ("b", DeliveryState::Pending, None)
        ]
    );

    // A finding recorded after both sinks looked is owed to both.
    let f4 = new_finding(store.record(&decision("m4", VerdictKind::Deleted)).unwrap());
    for sink in ["a", "b"] {
        let got = store.claim_undelivered(sink, 10, 1_000).unwrap();
        assert_eq!(got.iter().map(|f| f.id).collect::<Vec<_>>(), [f4], "{sink}");
    }
}

#[test]
fn failed_delivery_is_retried_at_its_time() {
    let store = SqliteStore::open_in_memory().unwrap();
    let id = new_finding(
        store
            .record(&decision("m1", VerdictKind::Unpromoted))
            .unwrap(),
    );
    assert_eq!(store.claim_undelivered("hook", 10, 1_000).unwrap().len(), 1);
    store
        .mark_failed("hook", id, "503 Service Unavailable", 5_000)
        .unwrap();

    assert!(
        store
            .claim_undelivered("hook", 10, 4_999)
            .unwrap()
            .is_empty()
    );
    let again = store.claim_undelivered("hook", 10, 5_000).unwrap();
    assert_eq!(again.len(), 1);
    let d = &again[0].deliveries[0];
    assert_eq!(d.attempts, 2);
    assert_eq!(d.last_error.as_deref(), Some("503 Service Unavailable"));
    assert_eq!(d.state, DeliveryState::Pending);

    store.mark_delivered("hook", id, 5_100).unwrap();
    // A late failure report does not undo the delivery.
    store.mark_failed("hook", id, "timeout", 6_000).unwrap();
    assert!(
        store
            .claim_undelivered("hook", 10, i64::MAX)
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.counts().unwrap().undelivered, 0);
}

#[test]
fn unfinished_claim_comes_back_after_the_lease() {
    let (_dir, path) = tmp();
    let store = SqliteStore::open(&path)
        .unwrap()
        .with_claim_lease(Duration::from_secs(10));
    new_finding(
        store
            .record(&decision("m1", VerdictKind::Unpromoted))
            .unwrap(),
    );
    assert_eq!(store.claim_undelivered("hook", 10, 1_000).unwrap().len(), 1);
    drop(store); // crashed mid-delivery
    let store = SqliteStore::open(&path)
        .unwrap()
        .with_claim_lease(Duration::from_secs(10));
    assert!(
        store
            .claim_undelivered("hook", 10, 10_999)
            .unwrap()
            .is_empty()
    );
    let again = store.claim_undelivered("hook", 10, 11_000).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].deliveries[0].attempts, 2);
}

#[test]
fn marking_an_unclaimed_finding_is_an_error() {
    let store = SqliteStore::open_in_memory().unwrap();
    let id = new_finding(
        store
            .record(&decision("m1", VerdictKind::Unpromoted))
            .unwrap(),
    );
    let err = store.mark_delivered("hook", id, 1).unwrap_err();
    assert!(matches!(err, StoreError::NotClaimed { .. }), "{err}");
    assert!(err.to_string().contains("hook"), "{err}");
    let err = store
        .mark_failed("hook", FindingId(999), "x", 1)
        .unwrap_err();
    assert!(matches!(err, StoreError::NotClaimed { .. }), "{err}");
}

#[test]
fn concurrent_records_of_one_id_make_one_finding() {
    let (_dir, path) = tmp();
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (store, barrier) = (store.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                store
                    .record(&decision("same", VerdictKind::Unpromoted))
                    .unwrap()
            })
        })
        .collect();
    let results: Vec<Recorded> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let new = results
        .iter()
        .filter(|r| matches!(r, Recorded::New { finding: Some(_) }))
        .count();
    let dup = results
        .iter()
        .filter(|r| {
            **r == Recorded::Duplicate {
                verdict: VerdictKind::Unpromoted,
            }
        })
        .count();
    assert_eq!((new, dup), (1, 7), "{results:?}");
    assert_eq!(store.counts().unwrap().findings, 1);
}

#[test]
fn concurrent_records_across_connections_make_one_finding() {
    // Eight stores on one file: uniqueness is the database's, not the mutex's.
    let (_dir, path) = tmp();
    SqliteStore::open(&path).unwrap();
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (path, barrier) = (path.clone(), barrier.clone());
            std::thread::spawn(move || {
                let store = SqliteStore::open(&path).unwrap();
                barrier.wait();
                store
                    .record(&decision("same", VerdictKind::TagMoved))
                    .unwrap()
            })
        })
        .collect();
    let results: Vec<Recorded> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let new = results
        .iter()
        .filter(|r| matches!(r, Recorded::New { .. }))
        .count();
    assert_eq!(new, 1, "{results:?}");
    assert_eq!(
        SqliteStore::open(&path).unwrap().counts().unwrap().findings,
        1
    );
}

#[test]
fn prune_drops_old_decisions_but_keeps_findings() {
    let (_dir, path) = tmp();
    let store = SqliteStore::open(&path).unwrap();
    let at = |id: &str, kind, ms| {
        let mut d = decision(id, kind);
        d.received_at_ms = ms;
        d
    };
    store
        .record(&at("old-ok", VerdictKind::Promoted, 100))
        .unwrap();
    store
        .record(&at("old-bad", VerdictKind::Unpromoted, 100))
        .unwrap();
    store
        .record(&at("new-ok", VerdictKind::OutOfScope, 900))
        .unwrap();

    assert_eq!(store.prune_decisions(500).unwrap(), 1);
    let has = |id: &str| {
        store
            .decision(Source::PubsubPull, &sub(), &EventId(id.into()))
            .unwrap()
    };
    assert_eq!(has("old-ok"), None);
    assert_eq!(has("old-bad"), Some(VerdictKind::Unpromoted));
    assert_eq!(has("new-ok"), Some(VerdictKind::OutOfScope));
    assert_eq!(store.counts().unwrap().findings, 1);
    // The window is over for the pruned delivery: it is new again.
    assert_eq!(
        store
            .record(&at("old-ok", VerdictKind::Promoted, 1000))
            .unwrap(),
        Recorded::New { finding: None }
    );
    // Findings' dedupe never expires.
    assert!(matches!(
        store
            .record(&at("old-bad", VerdictKind::Unpromoted, 1000))
            .unwrap(),
        Recorded::Duplicate { .. }
    ));
}

#[test]
fn prune_works_in_batches() {
    let store = SqliteStore::open_in_memory().unwrap();
    for i in 0..12_345 {
        store
            .record(&decision(&format!("m{i}"), VerdictKind::Promoted))
            .unwrap();
    }
    assert_eq!(store.prune_decisions(1_001).unwrap(), 12_345);
    assert_eq!(store.counts().unwrap().decisions_total(), 0);
}

#[test]
fn a_file_that_is_not_a_database_is_named() {
    let (_dir, path) = tmp();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("not a database"), "{msg}");
}

#[test]
fn an_unwritable_path_is_named() {
    let dir = tempfile::tempdir().unwrap();
    // The parent "directory" is a regular file.
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, "x").unwrap();
    let path = blocker.join("sub").join("findings.db");
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::CreateDir { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");

    // The path itself is a directory.
    let as_dir = dir.path().join("is-a-dir.db");
    std::fs::create_dir(&as_dir).unwrap();
    let err = SqliteStore::open(&as_dir).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&as_dir.display().to_string()), "{msg}");
}

#[test]
fn a_newer_schema_is_refused() {
    let (_dir, path) = tmp();
    SqliteStore::open(&path).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn the_file_is_in_wal_mode_with_full_sync() {
    let (_dir, path) = tmp();
    let store = SqliteStore::open(&path).unwrap();
    store
        .record(&decision("m1", VerdictKind::Unpromoted))
        .unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 2);
    // A second connection sees the committed finding: it was not held back.
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM findings", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn findings_serialise_for_the_api() {
    let store = SqliteStore::open_in_memory().unwrap();
    let id = new_finding(
        store
            .record(&decision("m1", VerdictKind::WrongRepository))
            .unwrap(),
    );
    store.claim_undelivered("log", 1, 0).unwrap();
    let f = store.findings(&FindingQuery::default()).unwrap();
    let v = serde_json::to_value(&f[0]).unwrap();
    assert_eq!(v["id"], id.0);
    assert_eq!(v["source"], "pubsub_pull");
    assert_eq!(v["event_id"], "m1");
    assert_eq!(v["endpoint"], "projects/p/subscriptions/prod");
    assert_eq!(v["action"], "insert");
    assert_eq!(v["repository"], "registry.example/prod/foo");
    assert_eq!(v["digest"], digest("12").to_string());
    assert_eq!(v["tag"], "v1.0");
    assert_eq!(v["verdict"], "wrong_repository");
    assert_eq!(v["manifest_commit"], "0123abcd");
    assert_eq!(v["index_generation"], 7);
    assert_eq!(v["evidence"][0]["file"], "images/sig-foo/images.yaml");
    assert_eq!(v["evidence"][0]["line"], 7);
    assert_eq!(v["evidence"][0]["parent"], digest("cd").to_string());
    assert_eq!(v["deliveries"][0]["sink"], "log");
    assert_eq!(v["deliveries"][0]["state"], "pending");
}

#[test]
fn ten_thousand_records() {
    let (_dir, path) = tmp();
    let store = SqliteStore::open(&path).unwrap();
    let kinds = [
        VerdictKind::Promoted,
        VerdictKind::Unpromoted,
        VerdictKind::OutOfScope,
        VerdictKind::TagMoved,
    ];
    let mut d = decision("", VerdictKind::Promoted);
    for i in 0..10_000 {
        d.event_id = EventId(format!("m{i}"));
        d.verdict = kinds[i % kinds.len()];
        assert!(matches!(store.record(&d).unwrap(), Recorded::New { .. }));
    }
    let c = store.counts().unwrap();
    assert_eq!(c.decisions_total(), 10_000);
    for k in kinds {
        assert_eq!(c.decisions_of(k), 2_500, "{k}");
    }
    assert_eq!(c.findings, 5_000);
    assert_eq!(c.undelivered, 5_000);
}

#[test]
fn group_commits_answer_every_caller_with_its_own_result() {
    // 16 writers, 40 records each over 100 shared ids: records of one id
    // land in the same or in different group commits; either way each id
    // is new exactly once and every other record of it is a duplicate of
    // that first verdict.
    let (_dir, path) = tmp();
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    let barrier = Arc::new(Barrier::new(16));
    let handles: Vec<_> = (0..16)
        .map(|t| {
            let (store, barrier) = (store.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                (0..40)
                    .map(|i| {
                        let n = (t * 7 + i) % 100;
                        let verdict = if n % 2 == 0 {
                            VerdictKind::Unpromoted
                        } else {
                            VerdictKind::Promoted
                        };
                        let result = store.record(&decision(&format!("id{n}"), verdict)).unwrap();
                        (n, verdict, result)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut new_per_id = std::collections::HashMap::new();
    for (n, verdict, result) in handles.into_iter().flat_map(|h| h.join().unwrap()) {
        match result {
            Recorded::New { finding } => {
                *new_per_id.entry(n).or_insert(0) += 1;
                assert_eq!(finding.is_some(), verdict.alerts(), "id{n}");
            }
            Recorded::Duplicate { verdict: first } => assert_eq!(first, verdict, "id{n}"),
        }
    }
    assert_eq!(new_per_id.len(), 100);
    assert!(new_per_id.values().all(|&n| n == 1), "{new_per_id:?}");
    let counts = store.counts().unwrap();
    assert_eq!(counts.decisions_total(), 100);
    assert_eq!(counts.findings, 50);
}

#[test]
fn one_sinks_backlog_agrees_with_the_full_counts() {
    let (_dir, path) = tmp();
    let store = SqliteStore::open(&path).unwrap();
    for i in 0..4 {
        store
            .record(&decision(&format!("f{i}"), VerdictKind::Unpromoted))
            .unwrap();
    }
    // Never claimed: every finding is owed.
    assert_eq!(store.undelivered("a").unwrap(), 4);
    let claimed = store.claim_undelivered("a", 2, 0).unwrap();
    store.mark_delivered("a", claimed[0].id, 0).unwrap();
    store
        .record(&decision("f4", VerdictKind::TagMoved))
        .unwrap();
    let by_sink = store.counts().unwrap().undelivered_by_sink;
    assert_eq!(by_sink, [("a".to_string(), 4)]);
    assert_eq!(store.undelivered("a").unwrap(), 4);
}
