//! The findings store and outbox (docs/design.md §7, §8.1) on real SQLite files.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};

use crate::support::decisions::{decision, key, new_finding};
use image_auditor::audit::VerdictKind;
use image_auditor::event::{EndpointName, Source};
use image_auditor::findings::{
    DeliveryState, Finding, FindingId, FindingQuery, Outbox, Outboxes, Recorded, SqliteStore,
    Store, StoreError,
};

fn tmp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("findings.db");
    (dir, path)
}

fn ids(fs: &[Finding]) -> Vec<&str> {
    fs.iter().map(|f| f.key.event_id.0.as_str()).collect()
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
    assert_eq!(f[1].key.endpoint, EndpointName::only());
    assert_eq!(f[1].deliveries[0].state, DeliveryState::Delivered);
    // Every finding from before was alerted: none is excepted.
    assert!(f.iter().all(|f| f.excepted_by.is_none()));
    // Rows from before carry the one-endpoint scope: a scan keeps its
    // dedupe across the upgrade.
    let mut scan = decision("s1", VerdictKind::Unpromoted);
    scan.key = key(Source::Scan, &EndpointName::only(), "s1");
    assert!(matches!(
        store.record(&scan).unwrap(),
        Recorded::Duplicate { .. }
    ));
    // New findings number after the kept ones, and the sink owes exactly
    // the ones it had not delivered.
    let mut harbor = decision("h2", VerdictKind::Unpromoted);
    harbor.key = key(Source::Harbor, &EndpointName("prod".into()), "h2");
    let new = new_finding(store.record(&harbor).unwrap());
    assert!(new > FindingId(42), "{new}");
    assert_eq!(store.undelivered("log").unwrap(), 2);
    let claimed = store.claim(Outbox::Alerts, "log", 10, 1_000).unwrap();
    assert_eq!(ids(&claimed), ["s1", "h2"]);
    assert_eq!(claimed[1].id, new);
    drop(store);

    let conn = rusqlite::Connection::open(&path).unwrap();
    assert_schema_is_current(&conn);
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
    assert_schema_is_current(&conn);
    // A second connection sees the committed finding: it was not held back.
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM findings", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

/// The file's schema is this build's latest.
fn assert_schema_is_current(conn: &rusqlite::Connection) {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        version,
        image_auditor::findings::Backend::Sqlite.known_version()
    );
}
