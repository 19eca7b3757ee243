//! The window between sending an alert and remembering it. The process
//! that leads a sink sends the alert of a fact, and loses its store before
//! it records the send: its database session is cut (PostgreSQL), or the
//! process dies (SQLite). The receiver has the alert. Whoever leads the
//! sink next finds the alert in flight, cannot prove it undelivered, and
//! sends the fact's findings (back after their claim lease) as an update
//! of that alert — same id, every finding once — never as a second `new`.
//!
//! The faults are injected at the exact moment: the receiver runs them
//! after it has recorded the alert and before it answers.

use crate::support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use image_auditor::alert::dispatch::{AlertsConfig, Dispatcher};
use image_auditor::alert::sink::{Sink, SinkConfig};
use image_auditor::alert::{Route, memory};
use image_auditor::audit::VerdictKind;
use image_auditor::findings::{
    FindingId, PostgresConfig, PostgresStore, SqliteStore, Store, now_ms,
};
use image_auditor::index::Index;
use image_auditor::metrics::Metrics;
use serde_json::{Value, json};
use support::decisions::{decision, new_finding};
use support::postgres::Postgres;
use support::receiver::{Hook, Receiver};
use support::tcp_cut::TcpCut;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a claim hides a finding from the next leader.
const LEASE: Duration = Duration::from_secs(2);

fn timing() -> AlertsConfig {
    AlertsConfig {
        poll_interval: Duration::from_millis(50),
        group_wait: Duration::ZERO,
        timeout: Duration::from_secs(10),
        ..AlertsConfig::default()
    }
}

fn index() -> Arc<ArcSwap<Index>> {
    let dir = tempfile::tempdir().unwrap();
    support::fixtures::write_project(
        dir.path(),
        "foo",
        "registries:\n- name: registry.example/staging\n  src: true\n\
         - name: registry.example/prod\n",
        &format!(
            "- name: foo\n  dmap:\n    \"sha256:{}\": [\"1.0\"]\n",
            "a".repeat(64)
        ),
    );
    let set = image_auditor::manifest::load(dir.path()).unwrap();
    Arc::new(ArcSwap::from_pointee(Index::build(&set, 1)))
}

async fn dispatcher(store: Arc<dyn Store>, url: &str) -> Dispatcher {
    dispatcher_with_timeout(store, url, Duration::from_secs(10)).await
}

async fn dispatcher_with_timeout(
    store: Arc<dyn Store>,
    url: &str,
    timeout: Duration,
) -> Dispatcher {
    let config: SinkConfig =
        serde_json::from_value(json!({"name": "hook", "webhook": {"url": url}})).unwrap();
    Dispatcher {
        name: "hook".into(),
        sink: Sink::from_config(&config, timeout, |_| None).await.unwrap(),
        route: Route::default(),
        store,
        index: index(),
        metrics: Arc::new(Metrics::new(None)),
        timing: timing(),
    }
}

/// Records an unpromoted push of one digest seen at one more place: the
/// same fact each time.
async fn unpromoted(store: &Arc<dyn Store>, id: &str) -> FindingId {
    let mut d = decision(id, VerdictKind::Unpromoted);
    // Now, so that the fact is within the repeat window.
    d.received_at_ms = now_ms();
    let store = store.clone();
    tokio::task::spawn_blocking(move || new_finding(store.record(&d).unwrap()))
        .await
        .unwrap()
}

async fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ids(alert: &Value) -> Vec<i64> {
    alert["finding_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect()
}

/// What both backends must show. `leader` sends through `receiver` (whose
/// hook cuts it off) and `successor` takes over.
async fn handover(
    leader: Arc<dyn Store>,
    successor: Arc<dyn Store>,
    receiver: &Receiver,
    leader_task: &Mutex<Option<JoinHandle<()>>>,
) {
    let first = [
        unpromoted(&leader, "e1").await,
        unpromoted(&leader, "e2").await,
    ];
    let stop_leader = CancellationToken::new();
    let task = tokio::spawn(
        dispatcher(leader.clone(), &receiver.url)
            .await
            .run(stop_leader.clone()),
    );
    *leader_task.lock().unwrap() = Some(task);
    wait_for("the leader's alert", || !receiver.requests().is_empty()).await;

    // A later copy of the fact, recorded by another process meanwhile.
    let late = unpromoted(&successor, "e3").await;
    let stop = CancellationToken::new();
    let next = tokio::spawn(
        dispatcher(successor.clone(), &receiver.url)
            .await
            .run(stop.clone()),
    );
    // Until every finding is delivered: e3 at once, e1 and e2 once the
    // leader's claim on them has run out (the successor cannot know the
    // receiver has them).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let store = successor.clone();
        let owed = tokio::task::spawn_blocking(move || store.undelivered("hook").unwrap())
            .await
            .unwrap();
        if owed == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{owed} findings still owed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    stop_leader.cancel();
    next.await.unwrap();
    if let Some(task) = leader_task.lock().unwrap().take() {
        task.abort();
    }

    let alerts = receiver.accepted_json();
    assert!(alerts.len() >= 2, "{alerts:#?}");
    let sent = &alerts[0];
    assert_eq!(sent["status"], "new");
    assert_eq!(ids(sent), first.map(|f| f.0));
    // The successor could not know the receiver had it: updates of the
    // same alert, each naming every finding so far once.
    for again in &alerts[1..] {
        assert_eq!(again["status"], "updated", "{again:#}");
        assert_eq!(again["alert_id"], sent["alert_id"]);
        let mut listed = ids(again);
        listed.sort_unstable();
        assert_eq!(listed, [first[0].0, first[1].0, late.0], "{again:#}");
        assert_eq!(again["events"].as_array().unwrap().len(), 3);
    }

    // Settled: remembered, nothing in flight.
    let store = successor.clone();
    let (remembered, in_flight) = tokio::task::spawn_blocking(move || {
        (
            store.sent_alerts("hook", 0).unwrap(),
            store.alerts_in_flight("hook", 0).unwrap(),
        )
    })
    .await
    .unwrap();
    assert!(in_flight.is_empty(), "{in_flight:?}");
    assert_eq!(remembered.len(), 1);
    let (_, alert) = memory::recall(&remembered[0]).unwrap();
    assert_eq!(alert.finding_ids.len(), 3);
}

/// The leader's database session is cut between the send and the record
/// (its connections go through a TCP forwarder the receiver cuts): its
/// advisory lock ends with the session, and another replica leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_leader_cut_off_after_sending_is_followed_by_an_update_not_a_new() {
    let pg = Postgres::shared();
    let database = pg.fresh_database();
    let direct = pg.url(&database);
    let upstream = direct
        .rsplit('@')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let link = Arc::new(TcpCut::start(&upstream).await);
    let through = direct.replace(&upstream, &link.addr);
    let config = PostgresConfig {
        url_env: Some("UNUSED: the test passes the URL".into()),
        pool_size: 4,
        ..PostgresConfig::default()
    };
    let (leader, successor) = tokio::task::spawn_blocking(move || {
        let leader: Arc<dyn Store> = Arc::new(
            PostgresStore::open_url(&config, &through)
                .unwrap()
                .with_claim_lease(LEASE),
        );
        let successor: Arc<dyn Store> = Arc::new(
            PostgresStore::open_url(&config, &direct)
                .unwrap()
                .with_claim_lease(LEASE),
        );
        (leader, successor)
    })
    .await
    .unwrap();
    let cut = link.clone();
    let hook: Hook = Box::new(move || Box::pin(async move { cut.cut().await }));
    let receiver = Receiver::start_hooked(hook).await;
    handover(
        leader.clone(),
        successor.clone(),
        &receiver,
        &Mutex::new(None),
    )
    .await;
    // The stores own runtimes: dropped off the async threads.
    tokio::task::spawn_blocking(move || drop((leader, successor)))
        .await
        .unwrap();
}

/// The leader dies between the send and the record (its task is aborted
/// while it waits for the answer): its file lock goes with it, and another
/// process on the same file leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_leader_dead_after_sending_is_followed_by_an_update_not_a_new() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("findings.db");
    let open = || -> Arc<dyn Store> {
        Arc::new(SqliteStore::open(&path).unwrap().with_claim_lease(LEASE))
    };
    let (leader, successor) = (open(), open());
    let leader_task: Arc<Mutex<Option<JoinHandle<()>>>> = Arc::default();
    let kill = leader_task.clone();
    let hook: Hook = Box::new(move || {
        Box::pin(async move {
            // The handle is stored just after the spawn.
            loop {
                let task = kill.lock().unwrap().take();
                if let Some(task) = task {
                    task.abort();
                    return;
                }
                tokio::task::yield_now().await;
            }
        })
    });
    let receiver = Receiver::start_hooked(hook).await;
    handover(leader, successor, &receiver, &leader_task).await;
}

/// A send whose answer never comes (the receiver keeps the alert but
/// answers after the sender's timeout) may have arrived: the retry is an
/// update of it, not a second `new`. A `new` the receiver refused outright
/// is retried as `new` (tests/alerts.rs, through failing receivers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_that_timed_out_is_retried_as_an_update() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
    let (answer, answered) = tokio::sync::oneshot::channel::<()>();
    let slow: Hook = Box::new(move || {
        Box::pin(async move {
            // Until the sender has given up (its retry is the signal).
            let _ = answered.await;
        })
    });
    let receiver = Receiver::start_hooked(slow).await;
    let finding = unpromoted(&store, "e1").await;
    let mut dispatcher =
        dispatcher_with_timeout(store.clone(), &receiver.url, Duration::from_millis(300)).await;
    dispatcher.timing.backoff_base = Duration::from_millis(50);
    dispatcher.timing.backoff_max = Duration::from_millis(100);
    let stop = CancellationToken::new();
    let task = tokio::spawn(dispatcher.run(stop.clone()));
    wait_for("the retry", || receiver.requests().len() >= 2).await;
    let _ = answer.send(());
    stop.cancel();
    task.await.unwrap();

    let alerts = receiver.accepted_json();
    assert_eq!(alerts[0]["status"], "new");
    for again in &alerts[1..] {
        assert_eq!(again["status"], "updated", "{again:#}");
        assert_eq!(again["alert_id"], alerts[0]["alert_id"]);
        assert_eq!(ids(again), [finding.0]);
    }
    let (owed, in_flight) = tokio::task::spawn_blocking(move || {
        (
            store.undelivered("hook").unwrap(),
            store.alerts_in_flight("hook", 0).unwrap(),
        )
    })
    .await
    .unwrap();
    assert_eq!(owed, 0);
    assert!(in_flight.is_empty(), "{in_flight:?}");
}
