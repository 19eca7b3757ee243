//! One contract, two stores: the findings store's behaviour (docs/design.md
//! §7, §8.1) written once against `dyn Store` and run against the SQLite
//! file and a real PostgreSQL server (tests/support/postgres.rs), each test
//! in a database of its own. "Two processes" are two store instances on one
//! database.

use crate::support;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use crate::support::decisions::{decision, digest, evidence, key, new_finding, repo, sub};
use image_auditor::audit::VerdictKind;
use image_auditor::event::{Action, EndpointName, EventId, Source};
use image_auditor::findings::migrations::Backend as Kind;
use image_auditor::findings::{
    Decision, DeliveryState, Finding, FindingId, FindingQuery, Outbox, PostgresConfig,
    PostgresStore, Recorded, SentAlert, SqliteStore, Store, StoreError, TriageAction, TriageChange,
    TriageState,
};
use support::postgres::Postgres;

/// A database for one test, and stores on it.
trait Backend: Sync {
    fn kind(&self) -> Kind;
    /// A new store instance on this test's database, as another process
    /// would open it (migrating when needed).
    fn open(&self) -> Arc<dyn Store> {
        self.try_open(None).unwrap()
    }
    fn open_with_lease(&self, lease: Duration) -> Arc<dyn Store> {
        self.try_open(Some(lease)).unwrap()
    }
    fn try_open(&self, lease: Option<Duration>) -> Result<Arc<dyn Store>, StoreError>;
    /// Runs SQL on the database directly, bypassing the store.
    fn execute(&self, sql: &str);
    /// The schema version recorded in the database.
    fn version(&self) -> i64;
    /// Records `version` as the schema version, whatever the tables are.
    fn set_version(&self, version: i64);
}

struct Sqlite {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Sqlite {
    fn new() -> Sqlite {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data").join("findings.db");
        Sqlite { _dir: dir, path }
    }
}

impl Backend for Sqlite {
    fn kind(&self) -> Kind {
        Kind::Sqlite
    }
    fn try_open(&self, lease: Option<Duration>) -> Result<Arc<dyn Store>, StoreError> {
        let store = SqliteStore::open(&self.path)?;
        Ok(Arc::new(match lease {
            Some(lease) => store.with_claim_lease(lease),
            None => store,
        }))
    }
    fn execute(&self, sql: &str) {
        std::fs::create_dir_all(self.path.parent().unwrap()).unwrap();
        // As the store migrates: with enforcement off (a rebuilt table is
        // referenced while it is being replaced).
        rusqlite::Connection::open(&self.path)
            .unwrap()
            .execute_batch(&format!("PRAGMA foreign_keys = OFF; {sql}"))
            .unwrap();
    }
    fn version(&self) -> i64 {
        rusqlite::Connection::open(&self.path)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    }
    fn set_version(&self, version: i64) {
        self.execute(&format!("PRAGMA user_version = {version}"));
    }
}

struct Pg {
    server: &'static Postgres,
    database: String,
}

impl Pg {
    fn new() -> Pg {
        let server = Postgres::shared();
        Pg {
            server,
            database: server.fresh_database(),
        }
    }

    fn config() -> PostgresConfig {
        PostgresConfig {
            url_env: Some("UNUSED: the tests pass the URL".into()),
            pool_size: 4,
            ..PostgresConfig::default()
        }
    }
}

impl Backend for Pg {
    fn kind(&self) -> Kind {
        Kind::Postgres
    }
    fn try_open(&self, lease: Option<Duration>) -> Result<Arc<dyn Store>, StoreError> {
        let store = PostgresStore::open_url(&Pg::config(), &self.server.url(&self.database))?;
        Ok(Arc::new(match lease {
            Some(lease) => store.with_claim_lease(lease),
            None => store,
        }))
    }
    fn execute(&self, sql: &str) {
        self.server.psql(&self.database, sql);
    }
    fn version(&self) -> i64 {
        self.server
            .psql(&self.database, "SELECT MAX(version) FROM schema_migrations")
            .parse()
            .unwrap()
    }
    fn set_version(&self, version: i64) {
        // The table as the store creates it, for a schema built by hand.
        self.execute(&format!(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, \
               name TEXT NOT NULL, applied_at_ms BIGINT NOT NULL); \
             INSERT INTO schema_migrations VALUES ({version}, 'set by the test', 0)"
        ));
    }
}

/// Each listed test, once per backend.
macro_rules! contract {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $test() { super::$test(&super::Sqlite::new()) } )*
        }
        mod postgres {
            $( #[test] fn $test() { super::$test(&super::Pg::new()) } )*
        }
    };
}

contract!(
    record_then_duplicate_keeps_the_first_verdict,
    the_endpoint_is_part_of_the_key,
    dedupe_survives_reopening_the_file,
    only_alerting_verdicts_become_findings,
    undecided_is_never_recorded,
    malformed_deliveries_are_findings_without_an_event,
    query_filters_each_narrow,
    limits_and_pages,
    limit_defaults_to_100_and_caps_at_1000,
    counts_decisions_findings_and_undelivered,
    excepted_findings_are_recorded_but_never_claimed,
    outbox_is_per_sink,
    failed_delivery_is_retried_at_its_time,
    unfinished_claim_comes_back_after_the_lease,
    marking_an_unclaimed_finding_is_an_error,
    concurrent_records_of_one_id_make_one_finding,
    prune_drops_old_decisions_but_keeps_findings,
    prune_works_in_batches,
    findings_serialise_for_the_api,
    ten_thousand_records,
    group_commits_answer_every_caller_with_its_own_result,
    submitted_decisions_are_each_answered_once_durable,
    one_sinks_backlog_agrees_with_the_full_counts,
    two_stores_dedupe_as_one,
    concurrent_claimers_never_take_one_finding_twice,
    a_sink_known_meanwhile_is_owed_every_finding,
    the_undecided_budget_is_one_for_every_store,
    migrations_from_empty_apply_once_whoever_opens_first,
    migrations_from_the_previous_version_keep_the_rows,
    a_newer_schema_is_refused,
    the_store_answers_its_health_check,
    triage_follows_the_transition_table,
    triage_state_filters_and_serialises,
    a_resolution_is_owed_to_every_sink_the_alert_reached,
    a_failed_resolution_is_retried_and_a_claim_leases_it,
    a_resolve_racing_a_delivery_never_loses_the_resolution,
    concurrent_resolvers_change_the_state_once,
    an_excepted_finding_owes_no_resolution,
    a_sent_alert_marks_its_findings_and_every_store_remembers_it,
    an_alert_for_findings_the_sink_never_claimed_changes_nothing,
    an_alert_in_flight_is_seen_by_every_store_until_settled,
    a_resolved_alert_is_forgotten_by_every_store,
    a_lock_is_held_by_one_store_at_a_time,
    a_lock_goes_with_its_session,
    the_scan_checkpoint_is_one_for_every_store,
);

/// What a claim of up to 10 rows of `outbox` gives `sink` at `now_ms`.
fn claim_due(store: &dyn Store, outbox: Outbox, sink: &str, now_ms: i64) -> Vec<Finding> {
    store.claim(outbox, sink, 10, now_ms).unwrap()
}

fn ids(fs: &[Finding]) -> Vec<&str> {
    fs.iter().map(|f| f.key.event_id.0.as_str()).collect()
}

fn record_then_duplicate_keeps_the_first_verdict(h: &dyn Backend) {
    let store = h.open();

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
            .decision(&key(Source::PubsubPull, &sub(), "m1"))
            .unwrap(),
        Some(VerdictKind::Unpromoted)
    );
    assert_eq!(
        store
            .decision(&key(Source::PubsubPush, &sub(), "m1"))
            .unwrap(),
        None,
        "the source is part of the key"
    );
    let all = store.findings(&FindingQuery::default()).unwrap();
    assert_eq!(all.len(), 1);
    let f = &all[0];
    assert_eq!(f.id, id);
    assert_eq!(f.key, key(Source::PubsubPull, &sub(), "m1"));
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
    // The key is serialised flat: `GET /v1/findings` shows the fields in
    // the order it always has.
    let json = serde_json::to_string(f).unwrap();
    let at = |field: &str| json.find(&format!("\"{field}\":")).unwrap();
    let order = [
        "id",
        "created_at_ms",
        "received_at_ms",
        "source",
        "endpoint",
        "event_id",
        "action",
        "repository",
        "verdict",
        "evidence",
        "triage",
    ];
    assert!(order.windows(2).all(|w| at(w[0]) < at(w[1])), "{json}");

    // The same id from another source is another delivery.
    let mut other = decision("m1", VerdictKind::Unpromoted);
    other.key.source = Source::PubsubPush;
    new_finding(store.record(&other).unwrap());
    assert_eq!(store.counts().unwrap().findings, 2);
}

fn the_endpoint_is_part_of_the_key(h: &dyn Backend) {
    let store = h.open();
    let dev = EndpointName("projects/p/subscriptions/dev".into());
    let mut from_dev = decision("m1", VerdictKind::OutOfScope);
    from_dev.key.endpoint = dev.clone();
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
            .decision(&key(Source::PubsubPull, &dev, "m1"))
            .unwrap(),
        Some(VerdictKind::OutOfScope)
    );
    assert_eq!(
        store
            .decision(&key(Source::PubsubPull, &sub(), "m1"))
            .unwrap(),
        Some(VerdictKind::Unpromoted)
    );
    let f = store.findings(&FindingQuery::default()).unwrap();
    assert_eq!((f.len(), f[0].id), (1, id));
    assert_eq!(f[0].key.endpoint, sub());
    // And each stays deduplicated within its own endpoint.
    assert!(matches!(
        store.record(&from_prod).unwrap(),
        Recorded::Duplicate {
            verdict: VerdictKind::Unpromoted
        }
    ));
}

fn dedupe_survives_reopening_the_file(h: &dyn Backend) {
    {
        let store = h.open();
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
    let store = h.open();
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

fn only_alerting_verdicts_become_findings(h: &dyn Backend) {
    let store = h.open();
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
                .decision(&key(Source::PubsubPull, &sub(), &format!("m{i}")))
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

fn undecided_is_never_recorded(h: &dyn Backend) {
    let store = h.open();
    let err = store
        .record(&decision("m1", VerdictKind::Undecided))
        .unwrap_err();
    assert!(matches!(err, StoreError::Undecided { .. }), "{err}");
    assert!(err.to_string().contains("m1"), "{err}");
    assert_eq!(
        store
            .decision(&key(Source::PubsubPull, &sub(), "m1"))
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

fn malformed_deliveries_are_findings_without_an_event(h: &dyn Backend) {
    let store = h.open();
    let m = image_auditor::event::Malformed {
        id: EventId("bad-1".into()),
        source: Source::PubsubPush,
        reason: "invalid JSON".into(),
        limit: None,
    };
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
fn query_fixture(h: &dyn Backend) -> Arc<dyn Store> {
    let store = h.open();
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
    store
}

fn query_filters_each_narrow(h: &dyn Backend) {
    let store = query_fixture(h);
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

fn limits_and_pages(h: &dyn Backend) {
    let store = query_fixture(h);
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

fn limit_defaults_to_100_and_caps_at_1000(h: &dyn Backend) {
    let store = h.open();
    for i in 0..1100 {
        store
            .record(&decision(&format!("m{i:04}"), VerdictKind::Unpromoted))
            .unwrap();
    }
    let default = store.findings(&FindingQuery::default()).unwrap();
    assert_eq!(default.len(), FindingQuery::DEFAULT_LIMIT);
    assert_eq!(default[0].key.event_id.0, "m1099");
    let capped = store
        .findings(&FindingQuery {
            limit: Some(50_000),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(capped.len(), FindingQuery::MAX_LIMIT);
    assert_eq!(capped.last().unwrap().key.event_id.0, "m0100");
}

fn counts_decisions_findings_and_undelivered(h: &dyn Backend) {
    let store = h.open();
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

    let claimed = claim_due(&*store, Outbox::Alerts, "log", 0);
    store
        .mark_delivered(Outbox::Alerts.row("log", claimed[0].id), 1)
        .unwrap();
    let c = store.counts().unwrap();
    assert_eq!(c.undelivered, 2);
    assert_eq!(c.undelivered_by_sink, vec![("log".to_owned(), 2)]);

    // A second sink owes everything; a finding recorded later is owed by both.
    store.claim(Outbox::Alerts, "slack", 0, 0).unwrap();
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

/// An excepted finding is kept for the record (the API shows it with the
/// entry that covered it) but owed to no sink: not back-filled when a sink
/// first looks, not given a delivery when recorded after, and not counted
/// as undelivered before or after any sink is known.
fn excepted_findings_are_recorded_but_never_claimed(h: &dyn Backend) {
    let store = h.open();
    let alerted = new_finding(
        store
            .record(&decision("a1", VerdictKind::Unpromoted))
            .unwrap(),
    );
    let excepted = new_finding(
        store
            .record(
                &decision("e1", VerdictKind::Unpromoted).excepted_by("exceptions.yaml:12".into()),
            )
            .unwrap(),
    );
    // No sink known yet: only the alerted finding is owed.
    let c = store.counts().unwrap();
    assert_eq!((c.findings, c.excepted, c.undelivered), (2, 1, 1), "{c:?}");
    assert_eq!(store.undelivered("log").unwrap(), 1);

    let claimed = claim_due(&*store, Outbox::Alerts, "log", 1_000);
    assert_eq!(claimed.iter().map(|f| f.id).collect::<Vec<_>>(), [alerted]);
    store
        .mark_delivered(Outbox::Alerts.row("log", alerted), 1_100)
        .unwrap();
    // Recorded after the sink became known: still owed to nobody.
    let later = new_finding(
        store
            .record(&decision("e2", VerdictKind::TagMoved).excepted_by("x.yaml:3".into()))
            .unwrap(),
    );
    assert!(claim_due(&*store, Outbox::Alerts, "log", i64::MAX).is_empty());
    let fresh = claim_due(&*store, Outbox::Alerts, "new-sink", i64::MAX);
    assert_eq!(fresh.iter().map(|f| f.id).collect::<Vec<_>>(), [alerted]);
    assert_eq!(store.undelivered("log").unwrap(), 0);
    let c = store.counts().unwrap();
    assert_eq!((c.findings, c.excepted, c.undelivered), (3, 2, 1), "{c:?}");
    assert_eq!(
        c.undelivered_by_sink,
        vec![("log".to_owned(), 0), ("new-sink".to_owned(), 1)]
    );
    // Another process on the same database sees the same.
    let other = h.open();
    assert_eq!(other.counts().unwrap().excepted, 2);
    assert!(claim_due(&*other, Outbox::Alerts, "log", i64::MAX).is_empty());

    let all = store.findings(&FindingQuery::default()).unwrap();
    let by_id = |id| all.iter().find(|f| f.id == id).unwrap();
    assert_eq!(
        by_id(excepted).excepted_by.as_deref(),
        Some("exceptions.yaml:12")
    );
    assert_eq!(by_id(later).excepted_by.as_deref(), Some("x.yaml:3"));
    assert_eq!(by_id(alerted).excepted_by, None);
    assert!(by_id(excepted).deliveries.is_empty());
    let json = serde_json::to_value(by_id(excepted)).unwrap();
    assert_eq!(json["excepted_by"], "exceptions.yaml:12");
    let json = serde_json::to_value(by_id(alerted)).unwrap();
    assert!(json.get("excepted_by").is_none(), "{json}");
    // A redelivery is a duplicate like any other.
    assert!(matches!(
        store
            .record(&decision("e1", VerdictKind::Unpromoted))
            .unwrap(),
        Recorded::Duplicate {
            verdict: VerdictKind::Unpromoted
        }
    ));
}

fn outbox_is_per_sink(h: &dyn Backend) {
    let store = h.open();
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

    let a = claim_due(&*store, Outbox::Alerts, "a", 1_000);
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
    assert!(claim_due(&*store, Outbox::Alerts, "a", 1_000).is_empty());

    for f in [f1, f2] {
        store
            .mark_delivered(Outbox::Alerts.row("a", f), 1_100)
            .unwrap();
    }
    store
        .mark_delivered(Outbox::Alerts.row("a", f2), 1_200)
        .unwrap(); // idempotent
    // Never again for A, however late.
    assert!(claim_due(&*store, Outbox::Alerts, "a", i64::MAX).is_empty());
    // Still pending for B.
    let b = store.claim(Outbox::Alerts, "b", 1, 1_000).unwrap();
    assert_eq!(b.iter().map(|f| f.id).collect::<Vec<_>>(), [f1], "limit");
    let b = claim_due(&*store, Outbox::Alerts, "b", 1_000);
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
        let got = claim_due(&*store, Outbox::Alerts, sink, 1_000);
        assert_eq!(got.iter().map(|f| f.id).collect::<Vec<_>>(), [f4], "{sink}");
    }
}

fn failed_delivery_is_retried_at_its_time(h: &dyn Backend) {
    let store = h.open();
    let id = new_finding(
        store
            .record(&decision("m1", VerdictKind::Unpromoted))
            .unwrap(),
    );
    assert_eq!(claim_due(&*store, Outbox::Alerts, "hook", 1_000).len(), 1);
    store
        .mark_failed(
            Outbox::Alerts.row("hook", id),
            "503 Service Unavailable",
            5_000,
        )
        .unwrap();

    assert!(claim_due(&*store, Outbox::Alerts, "hook", 4_999).is_empty());
    let again = claim_due(&*store, Outbox::Alerts, "hook", 5_000);
    assert_eq!(again.len(), 1);
    let d = &again[0].deliveries[0];
    assert_eq!(d.attempts, 2);
    assert_eq!(d.last_error.as_deref(), Some("503 Service Unavailable"));
    assert_eq!(d.state, DeliveryState::Pending);

    store
        .mark_delivered(Outbox::Alerts.row("hook", id), 5_100)
        .unwrap();
    // A late failure report does not undo the delivery.
    store
        .mark_failed(Outbox::Alerts.row("hook", id), "timeout", 6_000)
        .unwrap();
    assert!(claim_due(&*store, Outbox::Alerts, "hook", i64::MAX).is_empty());
    assert_eq!(store.counts().unwrap().undelivered, 0);
}

fn unfinished_claim_comes_back_after_the_lease(h: &dyn Backend) {
    let store = h.open_with_lease(Duration::from_secs(10));
    new_finding(
        store
            .record(&decision("m1", VerdictKind::Unpromoted))
            .unwrap(),
    );
    assert_eq!(claim_due(&*store, Outbox::Alerts, "hook", 1_000).len(), 1);
    drop(store); // crashed mid-delivery
    let store = h.open_with_lease(Duration::from_secs(10));
    assert!(claim_due(&*store, Outbox::Alerts, "hook", 10_999).is_empty());
    let again = claim_due(&*store, Outbox::Alerts, "hook", 11_000);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].deliveries[0].attempts, 2);
}

fn marking_an_unclaimed_finding_is_an_error(h: &dyn Backend) {
    let store = h.open();
    let id = new_finding(
        store
            .record(&decision("m1", VerdictKind::Unpromoted))
            .unwrap(),
    );
    let err = store
        .mark_delivered(Outbox::Alerts.row("hook", id), 1)
        .unwrap_err();
    assert!(matches!(err, StoreError::NotClaimed { .. }), "{err}");
    assert!(err.to_string().contains("hook"), "{err}");
    let err = store
        .mark_failed(Outbox::Alerts.row("hook", FindingId(999)), "x", 1)
        .unwrap_err();
    assert!(matches!(err, StoreError::NotClaimed { .. }), "{err}");
}

fn concurrent_records_of_one_id_make_one_finding(h: &dyn Backend) {
    let store = h.open();
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

fn prune_drops_old_decisions_but_keeps_findings(h: &dyn Backend) {
    let store = h.open();
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
            .decision(&key(Source::PubsubPull, &sub(), id))
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

fn prune_works_in_batches(h: &dyn Backend) {
    let store = h.open();
    for i in 0..12_345 {
        store
            .record(&decision(&format!("m{i}"), VerdictKind::Promoted))
            .unwrap();
    }
    assert_eq!(store.prune_decisions(1_001).unwrap(), 12_345);
    assert_eq!(store.counts().unwrap().decisions_total(), 0);
}

fn findings_serialise_for_the_api(h: &dyn Backend) {
    let store = h.open();
    let id = new_finding(
        store
            .record(&decision("m1", VerdictKind::WrongRepository))
            .unwrap(),
    );
    store.claim(Outbox::Alerts, "log", 1, 0).unwrap();
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

fn ten_thousand_records(h: &dyn Backend) {
    let store = h.open();
    let kinds = [
        VerdictKind::Promoted,
        VerdictKind::Unpromoted,
        VerdictKind::OutOfScope,
        VerdictKind::TagMoved,
    ];
    let mut d = decision("", VerdictKind::Promoted);
    for i in 0..10_000 {
        d.key.event_id = EventId(format!("m{i}"));
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

fn group_commits_answer_every_caller_with_its_own_result(h: &dyn Backend) {
    // 16 writers, 40 records each over 100 shared ids: records of one id
    // land in the same or in different group commits; either way each id
    // is new exactly once and every other record of it is a duplicate of
    // that first verdict.
    let store = h.open();
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

fn submitted_decisions_are_each_answered_once_durable(h: &dyn Backend) {
    // The pipeline's path: 300 decisions queued without waiting (so the
    // writer takes them in batches), then every answer read; a second
    // store (another process) sees each one.
    let store = h.open();
    let answers: Vec<_> = (0..300)
        .map(|i| {
            let verdict = if i % 3 == 0 {
                VerdictKind::Unpromoted
            } else {
                VerdictKind::Promoted
            };
            let answer = store.submit(decision(&format!("q{i}"), verdict)).unwrap();
            (i, verdict, answer)
        })
        .collect();
    for (i, verdict, answer) in answers {
        match answer.wait().unwrap() {
            Recorded::New { finding } => assert_eq!(finding.is_some(), verdict.alerts(), "q{i}"),
            other => panic!("q{i}: {other:?}"),
        }
    }
    let other = h.open();
    assert_eq!(other.counts().unwrap().decisions_total(), 300);
    assert_eq!(other.counts().unwrap().findings, 100);
    let again = other.record(&decision("q7", VerdictKind::Unpromoted));
    assert_eq!(
        again.unwrap(),
        Recorded::Duplicate {
            verdict: VerdictKind::Promoted
        }
    );
}

/// SQLite only: a decision that fails to write (here a trigger refuses it)
/// fails alone; the others queued with it are committed. (PostgreSQL
/// writes a batch with one statement, all or nothing, and every caller of
/// a failed batch retries.)
#[test]
fn sqlite_a_decision_that_fails_to_write_fails_alone() {
    let h = Sqlite::new();
    let store = h.open();
    h.execute(
        "CREATE TRIGGER poison BEFORE INSERT ON decisions WHEN NEW.event_id = 'poison' \
         BEGIN SELECT RAISE(ABORT, 'poisoned'); END",
    );
    let answers: Vec<_> = (0..200)
        .map(|i| {
            let id = if i == 100 {
                "poison".to_string()
            } else {
                format!("p{i}")
            };
            let answer = store
                .submit(decision(&id, VerdictKind::Unpromoted))
                .unwrap();
            (id, answer)
        })
        .collect();
    for (id, answer) in answers {
        let result = answer.wait();
        if id == "poison" {
            let err = result.unwrap_err().to_string();
            assert!(err.contains("poisoned"), "{err}");
        } else {
            assert!(
                matches!(result, Ok(Recorded::New { finding: Some(_) })),
                "{id}: {result:?}"
            );
        }
    }
    let counts = h.open().counts().unwrap();
    assert_eq!(counts.decisions_total(), 199);
    assert_eq!(counts.findings, 199);
}

fn one_sinks_backlog_agrees_with_the_full_counts(h: &dyn Backend) {
    let store = h.open();
    for i in 0..4 {
        store
            .record(&decision(&format!("f{i}"), VerdictKind::Unpromoted))
            .unwrap();
    }
    // Never claimed: every finding is owed.
    assert_eq!(store.undelivered("a").unwrap(), 4);
    let claimed = store.claim(Outbox::Alerts, "a", 2, 0).unwrap();
    store
        .mark_delivered(Outbox::Alerts.row("a", claimed[0].id), 0)
        .unwrap();
    store
        .record(&decision("f4", VerdictKind::TagMoved))
        .unwrap();
    let by_sink = store.counts().unwrap().undelivered_by_sink;
    assert_eq!(by_sink, [("a".to_string(), 4)]);
    assert_eq!(store.undelivered("a").unwrap(), 4);
}

// Beyond one process: what replicas sharing a store rely on.

fn two_stores_dedupe_as_one(h: &dyn Backend) {
    let stores = [h.open(), h.open()];
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let (store, barrier) = (stores[t % 2].clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                (0..50)
                    .map(|i| {
                        let n = (t * 13 + i) % 50;
                        let verdict = if n % 3 == 0 {
                            VerdictKind::Unpromoted
                        } else {
                            VerdictKind::Promoted
                        };
                        (
                            n,
                            store.record(&decision(&format!("id{n}"), verdict)).unwrap(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut new_per_id: HashMap<usize, usize> = HashMap::new();
    for (n, recorded) in handles.into_iter().flat_map(|h| h.join().unwrap()) {
        if let Recorded::New { .. } = recorded {
            *new_per_id.entry(n).or_default() += 1;
        }
    }
    assert_eq!(new_per_id.len(), 50);
    assert!(new_per_id.values().all(|&n| n == 1), "{new_per_id:?}");
    for store in &stores {
        let c = store.counts().unwrap();
        assert_eq!((c.decisions_total(), c.findings), (50, 17));
        assert_eq!(
            store
                .decision(&key(Source::PubsubPull, &sub(), "id3"))
                .unwrap(),
            Some(VerdictKind::Unpromoted)
        );
    }
}

fn concurrent_claimers_never_take_one_finding_twice(h: &dyn Backend) {
    let stores = [h.open(), h.open()];
    for i in 0..60 {
        new_finding(
            stores[i % 2]
                .record(&decision(&format!("f{i}"), VerdictKind::Unpromoted))
                .unwrap(),
        );
    }
    let barrier = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let (store, barrier) = (stores[t % 2].clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut mine = Vec::new();
                loop {
                    let claimed = store.claim(Outbox::Alerts, "hook", 3, 1_000).unwrap();
                    if claimed.is_empty() {
                        return mine;
                    }
                    for f in claimed {
                        assert_eq!(f.deliveries[0].attempts, 1, "claimed before: {}", f.id);
                        store
                            .mark_delivered(Outbox::Alerts.row("hook", f.id), 1_000)
                            .unwrap();
                        mine.push(f.id);
                    }
                }
            })
        })
        .collect();
    let all: Vec<FindingId> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!((all.len(), distinct.len()), (60, 60), "{all:?}");
    assert_eq!(stores[0].undelivered("hook").unwrap(), 0);
}

/// A sink's first claim while findings are being recorded elsewhere: it is
/// owed every one of them, those committed before it and after it alike.
fn a_sink_known_meanwhile_is_owed_every_finding(h: &dyn Backend) {
    let stores = [h.open(), h.open(), h.open()];
    let barrier = Arc::new(Barrier::new(3));
    let writers: Vec<_> = (0..2)
        .map(|t| {
            let (store, barrier) = (stores[t].clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..100 {
                    store
                        .record(&decision(&format!("w{t}-{i}"), VerdictKind::TagMoved))
                        .unwrap();
                }
            })
        })
        .collect();
    barrier.wait();
    // Known from its first claim, while the writers write.
    stores[2].claim(Outbox::Alerts, "late", 0, 0).unwrap();
    for w in writers {
        w.join().unwrap();
    }
    let mut owed = HashSet::new();
    loop {
        let claimed = stores[2].claim(Outbox::Alerts, "late", 50, 0).unwrap();
        if claimed.is_empty() {
            break;
        }
        for f in claimed {
            assert!(owed.insert(f.id), "claimed twice: {}", f.id);
        }
    }
    assert_eq!(owed.len(), 200);
}

fn the_undecided_budget_is_one_for_every_store(h: &dyn Backend) {
    let (a, b) = (h.open(), h.open());
    let prod = EndpointName("prod".into());
    assert_eq!(
        a.first_undecided(&key(Source::Harbor, &prod, "e1"), 1_000)
            .unwrap(),
        1_000
    );
    // Another process asking later is told the first time.
    assert_eq!(
        b.first_undecided(&key(Source::Harbor, &prod, "e1"), 5_000)
            .unwrap(),
        1_000
    );
    assert_eq!(
        a.first_undecided(&key(Source::Harbor, &prod, "e1"), 6_000)
            .unwrap(),
        1_000
    );
    // The key is (source, endpoint, id).
    let dev = EndpointName("dev".into());
    assert_eq!(
        b.first_undecided(&key(Source::Harbor, &dev, "e1"), 6_000)
            .unwrap(),
        6_000
    );
    assert_eq!(
        b.first_undecided(&key(Source::Acr, &prod, "e1"), 7_000)
            .unwrap(),
        7_000
    );
    // Decided: the budget is spent; undecided again later starts anew.
    let mut decided = decision("e1", VerdictKind::Promoted);
    decided.key = key(Source::Harbor, &prod, "e1");
    a.record(&decided).unwrap();
    assert_eq!(
        b.first_undecided(&key(Source::Harbor, &prod, "e1"), 9_000)
            .unwrap(),
        9_000
    );
    assert_eq!(
        b.first_undecided(&key(Source::Harbor, &dev, "e1"), 9_000)
            .unwrap(),
        6_000
    );
    // Retention forgets budgets older than it keeps decisions.
    a.prune_decisions(8_000).unwrap();
    assert_eq!(
        b.first_undecided(&key(Source::Harbor, &dev, "e1"), 9_500)
            .unwrap(),
        9_500
    );
    assert_eq!(
        b.first_undecided(&key(Source::Harbor, &prod, "e1"), 9_600)
            .unwrap(),
        9_000
    );
}

fn migrations_from_empty_apply_once_whoever_opens_first(h: &dyn Backend) {
    let known = h.kind().known_version();
    // Four processes starting at once on an empty database: one migrates,
    // the others wait and find nothing to do.
    std::thread::scope(|s| {
        let opened: Vec<_> = (0..4).map(|_| s.spawn(|| h.try_open(None))).collect();
        for o in opened {
            let store = o.join().unwrap().unwrap();
            assert_eq!(store.counts().unwrap().findings, 0);
        }
    });
    assert_eq!(h.version(), known);
    drop(h.open());
    assert_eq!(h.version(), known);
}

fn migrations_from_the_previous_version_keep_the_rows(h: &dyn Backend) {
    let all = h.kind().migrations();
    let previous = &all[..all.len() - 1];
    for m in previous {
        h.execute(m.sql);
    }
    h.set_version(previous.last().unwrap().version);
    h.execute(
        "INSERT INTO decisions (source, endpoint, event_id, received_at_ms, verdict) \
           VALUES ('scan', '', 's1', 100, 'unpromoted'), ('scan', '', 's2', 100, 'promoted'); \
         INSERT INTO findings (created_at_ms, received_at_ms, source, endpoint, event_id, \
             verdict, reason, evidence, index_generation) \
           VALUES (101, 100, 'scan', '', 's1', 'unpromoted', 'not promoted', '[]', 3);",
    );
    let store = h.open();
    assert_eq!(h.version(), h.kind().known_version());
    let only = EndpointName::only();
    assert_eq!(
        store.decision(&key(Source::Scan, &only, "s1")).unwrap(),
        Some(VerdictKind::Unpromoted)
    );
    let mut again = decision("s1", VerdictKind::Unpromoted);
    again.key = key(Source::Scan, &only, "s1");
    assert!(matches!(
        store.record(&again).unwrap(),
        Recorded::Duplicate { .. }
    ));
    let f = store.findings(&FindingQuery::default()).unwrap();
    assert_eq!(ids(&f), ["s1"]);
    assert_eq!(claim_due(&*store, Outbox::Alerts, "log", 0).len(), 1);
    // Every finding from before was alerted: none is excepted.
    assert_eq!(f[0].excepted_by, None);
    // What the newest migration brought works: the finding from before
    // is open and can be triaged.
    assert_eq!(f[0].triage.state, TriageState::Open);
    let resolved = store
        .triage(f[0].id, &change(TriageAction::Resolve, "alice", "old"), 9)
        .unwrap();
    assert_eq!(resolved.finding.triage.state, TriageState::Resolved);
    // What the earlier migrations brought works.
    assert_eq!(
        store
            .first_undecided(&key(Source::Scan, &only, "s1"), 5)
            .unwrap(),
        5
    );
    store.set_scan_checkpoint("scan", Some("{}"), 5).unwrap();
    assert_eq!(
        store.scan_checkpoint("scan").unwrap().as_deref(),
        Some("{}")
    );
    let excepted = new_finding(
        store
            .record(&decision("e1", VerdictKind::TagMoved).excepted_by("x.yaml:3".into()))
            .unwrap(),
    );
    let f = store.findings(&FindingQuery::default()).unwrap();
    assert_eq!(f[0].id, excepted);
    assert_eq!(f[0].excepted_by.as_deref(), Some("x.yaml:3"));
    assert_eq!(f[0].triage.state, TriageState::Open);
}

fn a_newer_schema_is_refused(h: &dyn Backend) {
    drop(h.open());
    let known = h.kind().known_version();
    h.set_version(known + 1);
    let err = h.try_open(None).map(|_| ()).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found, supported, .. }
            if found == known + 1 && supported == known),
        "{err}"
    );
    assert!(
        err.to_string().contains("use a newer image-auditor"),
        "{err}"
    );
}

fn the_store_answers_its_health_check(h: &dyn Backend) {
    let store = h.open();
    store.check().unwrap();
    assert_eq!(store.backend(), h.kind());
}

fn change(action: TriageAction, by: &str, note: &str) -> TriageChange {
    TriageChange::new(action, by, note).unwrap()
}

/// (actions applied first, then this one) → state after and whether it
/// changed, or refused.
type Row = (
    &'static [TriageAction],
    TriageAction,
    Result<(TriageState, bool), ()>,
);

fn triage_follows_the_transition_table(h: &dyn Backend) {
    use TriageAction::{Acknowledge, Resolve};
    use TriageState::{Acknowledged, Open, Resolved};
    let store = h.open();
    let table: [Row; 6] = [
        (&[], Acknowledge, Ok((Acknowledged, true))),
        (&[], Resolve, Ok((Resolved, true))),
        (&[Acknowledge], Acknowledge, Ok((Acknowledged, false))),
        (&[Acknowledge], Resolve, Ok((Resolved, true))),
        (&[Resolve], Resolve, Ok((Resolved, false))),
        (&[Resolve], Acknowledge, Err(())),
    ];
    for (i, (before, action, expected)) in table.into_iter().enumerate() {
        let id = new_finding(
            store
                .record(&decision(&format!("t{i}"), VerdictKind::Unpromoted))
                .unwrap(),
        );
        assert_eq!(store.finding(id).unwrap().unwrap().triage.state, Open);
        for (n, a) in before.iter().enumerate() {
            store
                .triage(id, &change(*a, "first", "first note"), 100 + n as i64)
                .unwrap();
        }
        let result = store.triage(id, &change(action, "second", "second note"), 500);
        let after = store.finding(id).unwrap().unwrap();
        match expected {
            Ok((state, changed)) => {
                let triaged = result.unwrap();
                assert_eq!(
                    (triaged.finding.triage.state, triaged.changed),
                    (state, changed),
                    "row {i}"
                );
                assert_eq!(
                    triaged.finding, after,
                    "row {i}: the answer is the stored finding"
                );
                // A no-op keeps the first change's who, when and note.
                let (by, at, note) = if changed {
                    ("second", 500, "second note")
                } else {
                    ("first", 100 + before.len() as i64 - 1, "first note")
                };
                assert_eq!(after.triage.by.as_deref(), Some(by), "row {i}");
                assert_eq!(after.triage.at_ms, Some(at), "row {i}");
                assert_eq!(after.triage.note.as_deref(), Some(note), "row {i}");
            }
            Err(()) => {
                let err = result.unwrap_err();
                assert!(matches!(err, StoreError::Triage { .. }), "row {i}: {err}");
                assert_eq!(
                    err.to_string(),
                    format!("finding {id}: cannot acknowledge a finding that is resolved")
                );
                assert_eq!(after.triage.state, Resolved, "row {i}: unchanged");
                assert_eq!(after.triage.by.as_deref(), Some("first"));
            }
        }
    }
    let err = store
        .triage(FindingId(9999), &change(Resolve, "a", ""), 1)
        .unwrap_err();
    assert!(matches!(err, StoreError::NoSuchFinding { .. }), "{err}");
    assert!(store.finding(FindingId(9999)).unwrap().is_none());
}

fn triage_state_filters_and_serialises(h: &dyn Backend) {
    let store = h.open();
    let made: Vec<FindingId> = (0..3)
        .map(|i| {
            new_finding(
                store
                    .record(&decision(&format!("s{i}"), VerdictKind::Unpromoted))
                    .unwrap(),
            )
        })
        .collect();
    store
        .triage(
            made[1],
            &change(TriageAction::Acknowledge, "bob", "looking"),
            10,
        )
        .unwrap();
    store
        .triage(
            made[2],
            &change(TriageAction::Resolve, "alice", "rolled back"),
            20,
        )
        .unwrap();
    let of = |state| {
        store
            .findings(&FindingQuery {
                state: Some(state),
                ..FindingQuery::default()
            })
            .unwrap()
    };
    assert_eq!(ids(&of(TriageState::Open)), ["s0"]);
    assert_eq!(ids(&of(TriageState::Acknowledged)), ["s1"]);
    assert_eq!(ids(&of(TriageState::Resolved)), ["s2"]);
    let both = store
        .findings(&FindingQuery {
            state: Some(TriageState::Open),
            verdict: Some(VerdictKind::TagMoved),
            ..FindingQuery::default()
        })
        .unwrap();
    assert!(both.is_empty(), "filters combine");

    let all = store.findings(&FindingQuery::default()).unwrap();
    let v = serde_json::to_value(&all).unwrap();
    assert_eq!(
        v[2]["triage"],
        serde_json::json!({"state": "open", "by": null, "at_ms": null, "note": null})
    );
    assert_eq!(
        v[0]["triage"],
        serde_json::json!({"state": "resolved", "by": "alice", "at_ms": 20, "note": "rolled back"})
    );
}

fn claimed_ids(fs: &[Finding]) -> Vec<FindingId> {
    fs.iter().map(|f| f.id).collect()
}

fn a_resolution_is_owed_to_every_sink_the_alert_reached(h: &dyn Backend) {
    let store = h.open();
    let f1 = new_finding(
        store
            .record(&decision("r1", VerdictKind::Unpromoted))
            .unwrap(),
    );
    let f2 = new_finding(
        store
            .record(&decision("r2", VerdictKind::Unpromoted))
            .unwrap(),
    );
    // Sink A delivered both alerts; sink B has claimed f1 but not
    // delivered it; sink C is not known yet.
    assert_eq!(
        claimed_ids(&claim_due(&*store, Outbox::Alerts, "a", 0)),
        [f1, f2]
    );
    for f in [f1, f2] {
        store.mark_delivered(Outbox::Alerts.row("a", f), 1).unwrap();
    }
    assert_eq!(
        claimed_ids(&store.claim(Outbox::Alerts, "b", 1, 0).unwrap()),
        [f1]
    );
    // Nothing resolved, nothing owed.
    assert!(claim_due(&*store, Outbox::Resolutions, "a", i64::MAX).is_empty());

    store
        .triage(f1, &change(TriageAction::Acknowledge, "bob", ""), 5)
        .unwrap();
    assert!(
        claim_due(&*store, Outbox::Resolutions, "a", i64::MAX).is_empty(),
        "acknowledging tells no sink"
    );
    store
        .triage(f1, &change(TriageAction::Resolve, "alice", "fixed"), 10)
        .unwrap();
    let a = claim_due(&*store, Outbox::Resolutions, "a", 100);
    assert_eq!(claimed_ids(&a), [f1], "A had the alert");
    assert_eq!(a[0].triage.state, TriageState::Resolved);
    assert_eq!(a[0].triage.by.as_deref(), Some("alice"));
    assert_eq!(
        (
            a[0].deliveries[0].sink.as_str(),
            a[0].deliveries[0].attempts
        ),
        ("a", 1)
    );
    assert!(
        claim_due(&*store, Outbox::Resolutions, "b", i64::MAX).is_empty(),
        "B has no alert yet"
    );
    // B's alert goes out after the resolve: B is owed the resolution now.
    store
        .mark_delivered(Outbox::Alerts.row("b", f1), 20)
        .unwrap();
    assert_eq!(
        claimed_ids(&claim_due(&*store, Outbox::Resolutions, "b", 100)),
        [f1]
    );
    // C, known later, is owed the alert and, once told, the resolution.
    assert!(claimed_ids(&claim_due(&*store, Outbox::Alerts, "c", 0)).contains(&f1));
    assert!(claim_due(&*store, Outbox::Resolutions, "c", i64::MAX).is_empty());
    store
        .mark_delivered(Outbox::Alerts.row("c", f1), 30)
        .unwrap();
    assert_eq!(
        claimed_ids(&claim_due(&*store, Outbox::Resolutions, "c", 100)),
        [f1]
    );

    for sink in ["a", "b", "c"] {
        store
            .mark_delivered(Outbox::Resolutions.row(sink, f1), 200)
            .unwrap();
        store
            .mark_delivered(Outbox::Resolutions.row(sink, f1), 300)
            .unwrap(); // idempotent
        assert!(
            claim_due(&*store, Outbox::Resolutions, sink, i64::MAX).is_empty(),
            "{sink}"
        );
    }
    // Resolving again sends nothing again.
    let again = store
        .triage(f1, &change(TriageAction::Resolve, "carol", ""), 400)
        .unwrap();
    assert!(!again.changed);
    assert!(claim_due(&*store, Outbox::Resolutions, "a", i64::MAX).is_empty());
    let err = store
        .mark_delivered(Outbox::Resolutions.row("a", f2), 1)
        .unwrap_err();
    assert!(matches!(err, StoreError::NotClaimed { .. }), "{err}");
    let err = store
        .mark_failed(Outbox::Resolutions.row("a", f2), "x", 1)
        .unwrap_err();
    assert!(matches!(err, StoreError::NotClaimed { .. }), "{err}");
}

fn a_failed_resolution_is_retried_and_a_claim_leases_it(h: &dyn Backend) {
    let store = h.open_with_lease(Duration::from_secs(10));
    let id = new_finding(
        store
            .record(&decision("r1", VerdictKind::Unpromoted))
            .unwrap(),
    );
    claim_due(&*store, Outbox::Alerts, "am", 0);
    store
        .mark_delivered(Outbox::Alerts.row("am", id), 1)
        .unwrap();
    store
        .triage(id, &change(TriageAction::Resolve, "alice", ""), 2)
        .unwrap();

    assert_eq!(
        claim_due(&*store, Outbox::Resolutions, "am", 1_000).len(),
        1
    );
    // Claimed: hidden for the lease, then back (a crash mid-send).
    assert!(claim_due(&*store, Outbox::Resolutions, "am", 10_999).is_empty());
    let again = claim_due(&*store, Outbox::Resolutions, "am", 11_000);
    assert_eq!(again[0].deliveries[0].attempts, 2);
    store
        .mark_failed(
            Outbox::Resolutions.row("am", id),
            "503 from Alertmanager",
            50_000,
        )
        .unwrap();
    assert!(claim_due(&*store, Outbox::Resolutions, "am", 49_999).is_empty());
    let third = claim_due(&*store, Outbox::Resolutions, "am", 50_000);
    let d = &third[0].deliveries[0];
    assert_eq!(
        (d.attempts, d.last_error.as_deref()),
        (3, Some("503 from Alertmanager"))
    );
    store
        .mark_delivered(Outbox::Resolutions.row("am", id), 50_001)
        .unwrap();
    // A late failure report changes nothing.
    store
        .mark_failed(Outbox::Resolutions.row("am", id), "timeout", 60_000)
        .unwrap();
    assert!(claim_due(&*store, Outbox::Resolutions, "am", i64::MAX).is_empty());
}

fn a_resolve_racing_a_delivery_never_loses_the_resolution(h: &dyn Backend) {
    // Many findings, each delivered by one store while another resolves it:
    // whichever commits first, the sink is owed exactly one resolution.
    let (deliverer, resolver) = (h.open(), h.open());
    let n = 40;
    let ids: Vec<FindingId> = (0..n)
        .map(|i| {
            new_finding(
                deliverer
                    .record(&decision(&format!("x{i}"), VerdictKind::Unpromoted))
                    .unwrap(),
            )
        })
        .collect();
    assert_eq!(
        deliverer
            .claim(Outbox::Alerts, "hook", 100, 0)
            .unwrap()
            .len(),
        n
    );
    let barrier = Arc::new(Barrier::new(2));
    let delivering = {
        let (store, barrier, ids) = (deliverer.clone(), barrier.clone(), ids.clone());
        std::thread::spawn(move || {
            barrier.wait();
            for id in ids {
                store
                    .mark_delivered(Outbox::Alerts.row("hook", id), 5)
                    .unwrap();
            }
        })
    };
    barrier.wait();
    for id in &ids {
        resolver
            .triage(*id, &change(TriageAction::Resolve, "alice", ""), 6)
            .unwrap();
    }
    delivering.join().unwrap();
    let mut owed = HashSet::new();
    for f in deliverer
        .claim(Outbox::Resolutions, "hook", 1000, 100)
        .unwrap()
    {
        assert!(owed.insert(f.id));
    }
    assert_eq!(
        owed.len(),
        n,
        "every resolved and delivered finding owes its resolution"
    );
}

fn concurrent_resolvers_change_the_state_once(h: &dyn Backend) {
    let stores: Vec<_> = (0..4).map(|_| h.open()).collect();
    let id = new_finding(
        stores[0]
            .record(&decision("c1", VerdictKind::Unpromoted))
            .unwrap(),
    );
    let barrier = Arc::new(Barrier::new(stores.len()));
    let handles: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(i, store)| {
            let (store, barrier) = (store.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                store
                    .triage(
                        id,
                        &change(TriageAction::Resolve, &format!("p{i}"), ""),
                        10 + i as i64,
                    )
                    .unwrap()
                    .changed
            })
        })
        .collect();
    let changed: Vec<bool> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(changed.iter().filter(|c| **c).count(), 1, "{changed:?}");
    let winner = changed.iter().position(|c| *c).unwrap();
    let f = stores[0].finding(id).unwrap().unwrap();
    assert_eq!(f.triage.by, Some(format!("p{winner}")));
}

/// An excepted finding was never alerted, so resolving it tells no sink:
/// not the sinks that had every other alert, not a sink known later.
fn an_excepted_finding_owes_no_resolution(h: &dyn Backend) {
    let store = h.open();
    let alerted = new_finding(
        store
            .record(&decision("a1", VerdictKind::Unpromoted))
            .unwrap(),
    );
    let excepted = new_finding(
        store
            .record(&decision("e1", VerdictKind::Unpromoted).excepted_by("x.yaml:3".into()))
            .unwrap(),
    );
    assert_eq!(
        claimed_ids(&claim_due(&*store, Outbox::Alerts, "a", 0)),
        [alerted]
    );
    store
        .mark_delivered(Outbox::Alerts.row("a", alerted), 1)
        .unwrap();
    for id in [alerted, excepted] {
        let t = store
            .triage(id, &change(TriageAction::Resolve, "alice", "done"), 10)
            .unwrap();
        assert_eq!(t.finding.triage.state, TriageState::Resolved);
    }
    assert_eq!(
        claimed_ids(&claim_due(&*store, Outbox::Resolutions, "a", 100)),
        [alerted],
        "only the alerted finding's resolution is owed"
    );
    assert!(
        claim_due(&*store, Outbox::Alerts, "b", 0)
            .iter()
            .all(|f| f.id != excepted)
    );
    assert!(claim_due(&*store, Outbox::Resolutions, "b", i64::MAX).is_empty());
}

fn sent(fact: &str, first_seen_ms: i64, body: &str) -> SentAlert {
    SentAlert {
        fact: fact.into(),
        first_seen_ms,
        body: body.into(),
    }
}

/// The repeat/update memory of "one fact, one alert": what one store
/// remembers sending, another store on the same database (another
/// replica, or the same one restarted) reads back; the findings it names
/// are delivered to that sink only.
fn a_sent_alert_marks_its_findings_and_every_store_remembers_it(h: &dyn Backend) {
    let (a, b) = (h.open(), h.open());
    let f1 = new_finding(a.record(&decision("e1", VerdictKind::Unpromoted)).unwrap());
    let f2 = new_finding(b.record(&decision("e2", VerdictKind::Unpromoted)).unwrap());
    assert_eq!(claim_due(&*a, Outbox::Alerts, "hook", 0).len(), 2);
    a.alert_sent("hook", &sent("fact1", 1_000, "first"), &[f1, f2], 50)
        .unwrap();

    assert_eq!(b.undelivered("hook").unwrap(), 0);
    assert!(claim_due(&*b, Outbox::Alerts, "hook", i64::MAX).is_empty());
    let f = b.findings(&FindingQuery::default()).unwrap();
    assert!(
        f.iter()
            .all(|f| f.deliveries.iter().any(|d| d.sink == "hook"
                && d.state == DeliveryState::Delivered
                && d.delivered_at_ms == Some(50)))
    );
    assert_eq!(
        b.sent_alerts("hook", 0).unwrap(),
        [sent("fact1", 1_000, "first")]
    );
    // Per sink: another sink owes both findings and remembers nothing.
    assert!(b.sent_alerts("chat", 0).unwrap().is_empty());
    assert_eq!(claim_due(&*b, Outbox::Alerts, "chat", 0).len(), 2);

    // An update replaces what is remembered for the fact.
    let f3 = new_finding(b.record(&decision("e3", VerdictKind::Unpromoted)).unwrap());
    assert_eq!(claim_due(&*b, Outbox::Alerts, "hook", 0).len(), 1);
    b.alert_sent("hook", &sent("fact1", 900, "second"), &[f3], 60)
        .unwrap();
    a.alert_sent("hook", &sent("fact2", 2_000, "other"), &[f3], 61)
        .unwrap();
    let mut remembered = a.sent_alerts("hook", 0).unwrap();
    remembered.sort_by(|x, y| x.fact.cmp(&y.fact));
    assert_eq!(
        remembered,
        [sent("fact1", 900, "second"), sent("fact2", 2_000, "other")]
    );
    // The repeat window: only facts first seen since a time, and the rest
    // forgotten.
    assert_eq!(
        a.sent_alerts("hook", 901).unwrap(),
        [sent("fact2", 2_000, "other")]
    );
    assert_eq!(b.forget_sent_alerts("hook", 901).unwrap(), 1);
    assert_eq!(
        a.sent_alerts("hook", 0).unwrap(),
        [sent("fact2", 2_000, "other")]
    );
}

/// One transaction: an alert naming a finding the sink never claimed is
/// refused, and neither the findings nor the memory change.
fn an_alert_for_findings_the_sink_never_claimed_changes_nothing(h: &dyn Backend) {
    let store = h.open();
    let f1 = new_finding(
        store
            .record(&decision("e1", VerdictKind::Unpromoted))
            .unwrap(),
    );
    assert_eq!(claim_due(&*store, Outbox::Alerts, "hook", 0).len(), 1);
    let err = store
        .alert_sent(
            "hook",
            &sent("fact1", 1, "x"),
            &[f1, FindingId(f1.0 + 1000)],
            5,
        )
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotClaimed { sink, id, .. }
            if sink == "hook" && id.0 == f1.0 + 1000),
        "{err}"
    );
    assert!(store.sent_alerts("hook", 0).unwrap().is_empty());
    assert_eq!(store.undelivered("hook").unwrap(), 1);
}

/// An alert is in flight from just before its send until it is settled:
/// every store on the database sees it (the next leader of the sink must
/// know the receiver may have it), per sink; the send's record moves it to
/// the memory in the transaction that marks its findings, a refusal drops
/// it, and the repeat window forgets it like a sent one.
fn an_alert_in_flight_is_seen_by_every_store_until_settled(h: &dyn Backend) {
    let (a, b) = (h.open(), h.open());
    let f1 = new_finding(a.record(&decision("e1", VerdictKind::Unpromoted)).unwrap());
    assert_eq!(claim_due(&*a, Outbox::Alerts, "hook", 0).len(), 1);
    a.alert_in_flight("hook", &sent("fact1", 1_000, "first"), 10)
        .unwrap();
    assert_eq!(
        b.alerts_in_flight("hook", 0).unwrap(),
        [sent("fact1", 1_000, "first")]
    );
    assert!(b.alerts_in_flight("chat", 0).unwrap().is_empty());
    assert!(b.sent_alerts("hook", 0).unwrap().is_empty());
    // A retry replaces the entry of its fact.
    b.alert_in_flight("hook", &sent("fact1", 1_000, "retry"), 11)
        .unwrap();
    assert_eq!(
        a.alerts_in_flight("hook", 0).unwrap(),
        [sent("fact1", 1_000, "retry")]
    );

    // A refused record leaves it in flight; the send's record settles it.
    let unclaimed = FindingId(f1.0 + 1000);
    assert!(
        a.alert_sent("hook", &sent("fact1", 1_000, "sent"), &[unclaimed], 12)
            .is_err()
    );
    assert_eq!(b.alerts_in_flight("hook", 0).unwrap().len(), 1);
    a.alert_sent("hook", &sent("fact1", 1_000, "sent"), &[f1], 12)
        .unwrap();
    assert!(b.alerts_in_flight("hook", 0).unwrap().is_empty());
    assert_eq!(
        b.sent_alerts("hook", 0).unwrap(),
        [sent("fact1", 1_000, "sent")]
    );

    // The receiver said no: not in flight any more, nothing remembered.
    a.alert_in_flight("hook", &sent("fact2", 2_000, "x"), 13)
        .unwrap();
    b.alert_not_sent("hook", "fact2").unwrap();
    b.alert_not_sent("hook", "fact2").unwrap();
    assert!(a.alerts_in_flight("hook", 0).unwrap().is_empty());
    assert_eq!(a.sent_alerts("hook", 0).unwrap().len(), 1);

    // The repeat window.
    a.alert_in_flight("hook", &sent("fact3", 500, "old"), 14)
        .unwrap();
    a.alert_in_flight("hook", &sent("fact4", 3_000, "young"), 15)
        .unwrap();
    assert_eq!(
        b.alerts_in_flight("hook", 600).unwrap(),
        [sent("fact4", 3_000, "young")]
    );
    // fact1 (sent, first seen at 1,000) and fact3 (in flight, at 500).
    assert_eq!(b.forget_sent_alerts("hook", 1_500).unwrap(), 2);
    assert_eq!(
        a.alerts_in_flight("hook", 0).unwrap(),
        [sent("fact4", 3_000, "young")]
    );
    assert!(a.sent_alerts("hook", 0).unwrap().is_empty());
}

/// A fact whose resolution reached the sink is forgotten there, sent and
/// in flight, for every process on the store (the next sight of it is a
/// new alert); other sinks and other facts keep theirs.
fn a_resolved_alert_is_forgotten_by_every_store(h: &dyn Backend) {
    let (a, b) = (h.open(), h.open());
    let f1 = new_finding(a.record(&decision("e1", VerdictKind::Unpromoted)).unwrap());
    for sink in ["hook", "chat"] {
        assert_eq!(claim_due(&*a, Outbox::Alerts, sink, 0).len(), 1);
        a.alert_sent(sink, &sent("fact1", 1_000, "sent"), &[f1], 10)
            .unwrap();
    }
    // An update of it in flight, and another fact's alert.
    a.alert_in_flight("hook", &sent("fact1", 1_000, "update"), 11)
        .unwrap();
    a.alert_in_flight("hook", &sent("fact2", 2_000, "other"), 12)
        .unwrap();

    b.alert_resolved("hook", "fact1").unwrap();
    b.alert_resolved("hook", "fact1").unwrap();
    assert!(a.sent_alerts("hook", 0).unwrap().is_empty());
    assert_eq!(
        a.alerts_in_flight("hook", 0).unwrap(),
        [sent("fact2", 2_000, "other")]
    );
    assert_eq!(
        a.sent_alerts("chat", 0).unwrap(),
        [sent("fact1", 1_000, "sent")]
    );
}

/// One alert dispatcher per sink, one sweep at a time: a named lock is
/// held by one store of all those on the database (each as another
/// process would open it), and free again when its holder drops it.
fn a_lock_is_held_by_one_store_at_a_time(h: &dyn Backend) {
    let (a, b) = (h.open(), h.open());
    let held = a.try_lock("scan").unwrap().expect("free at first");
    assert_eq!(held.name(), "scan");
    assert!(held.is_held());
    assert!(b.try_lock("scan").unwrap().is_none());
    // Not re-entrant either: a second taker in the same process waits too.
    assert!(a.try_lock("scan").unwrap().is_none());
    // Other names are other locks.
    let other = b.try_lock("alerts:hook").unwrap().expect("another name");
    assert!(a.try_lock("alerts:hook").unwrap().is_none());
    drop(held);
    let taken = take_once_released(&*b, "scan");
    assert!(taken.is_held());
    drop((other, taken));
    take_once_released(&*a, "alerts:hook");
}

/// Takes lock `name`, which its holder has just dropped. On PostgreSQL the
/// server ends the holder's session (and the lock) a moment after the
/// connection closes, so the lock is polled for, within a bound.
fn take_once_released(store: &dyn Store, name: &str) -> image_auditor::findings::StoreLock {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(lock) = store.try_lock(name).unwrap() {
            return lock;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name}: not released within 10 s of its holder dropping it"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The holder of a lock that dies gives it up: a store dropped (a process
/// gone) releases its locks, and on PostgreSQL a session ended by the
/// server (a restart, a cut connection) is seen as the lock lost, while
/// another store can take it.
fn a_lock_goes_with_its_session(h: &dyn Backend) {
    let (a, b) = (h.open(), h.open());
    let held = a.try_lock("alerts:hook").unwrap().unwrap();
    assert!(b.try_lock("alerts:hook").unwrap().is_none());
    if h.kind() == Kind::Postgres {
        h.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks \
             WHERE locktype = 'advisory' AND pid <> pg_backend_pid() \
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        );
        // The server ends the terminated session a moment after answering.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while held.is_held() {
            assert!(
                std::time::Instant::now() < deadline,
                "still held 10 s after its session was terminated"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        take_once_released(&*b, "alerts:hook");
    } else {
        drop(held);
        drop(a);
        assert!(b.try_lock("alerts:hook").unwrap().is_some());
    }
}

/// The sweep's checkpoint, kept in the store: written by one, read and
/// removed by another.
fn the_scan_checkpoint_is_one_for_every_store(h: &dyn Backend) {
    let (a, b) = (h.open(), h.open());
    assert_eq!(a.scan_checkpoint("scan").unwrap(), None);
    a.set_scan_checkpoint("scan", Some(r#"{"completed":["x"]}"#), 1)
        .unwrap();
    assert_eq!(
        b.scan_checkpoint("scan").unwrap().as_deref(),
        Some(r#"{"completed":["x"]}"#)
    );
    b.set_scan_checkpoint("scan", Some(r#"{"completed":["x","y"]}"#), 2)
        .unwrap();
    assert_eq!(
        a.scan_checkpoint("scan").unwrap().as_deref(),
        Some(r#"{"completed":["x","y"]}"#)
    );
    assert_eq!(a.scan_checkpoint("other").unwrap(), None);
    b.set_scan_checkpoint("scan", None, 3).unwrap();
    assert_eq!(a.scan_checkpoint("scan").unwrap(), None);
    // Removing what is not there is no error.
    b.set_scan_checkpoint("scan", None, 4).unwrap();
}
