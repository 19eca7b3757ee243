//! Replicas on one PostgreSQL store make one alert per fact: two real
//! `serve` processes share the store, the 25 regional copies of one
//! unpromoted push reach them alternately, and the webhook sink receives
//! one alert naming all 25 repositories. After both restart, the fact seen
//! again updates that alert (same id) instead of raising a new one: the
//! alert memory is in the store, not in a process.

use crate::support;

use serde_json::{Value, json};
use support::fixtures::{A, B, regions_root};
use support::postgres::Postgres;
use support::receiver::Receiver;
use support::service::Service;

const REGIONS: usize = 25;

fn unpromoted(region: usize) -> Value {
    json!({"action": "INSERT", "digest": format!("r{region}.example/prod/app@{B}")})
}

/// What the webhook sink `hook` still owes, read from the shared store
/// (before its first claim, every finding).
fn undelivered(pg: &Postgres, database: &str) -> u64 {
    pg.psql(
        database,
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM sinks WHERE sink = 'hook') \
           THEN (SELECT COUNT(*) FROM deliveries WHERE sink = 'hook' AND state = 'pending') \
           ELSE (SELECT COUNT(*) FROM findings) END",
    )
    .parse()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_make_one_alert_of_25_copies_and_update_it_after_restarting() {
    let pg = Postgres::shared();
    let database = pg.fresh_database();
    let hook = Receiver::start(0).await;
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let root = regions_root(dirs[0].path(), A, REGIONS);
    let url = dirs[0].path().join("database-url");
    std::fs::write(&url, pg.url(&database)).unwrap();
    // A hold long enough for 25 pushes to two debug builds.
    let config = format!(
        "resolve: false\nstore:\n  postgres:\n    url_file: {}\n\
         alerts:\n  poll_interval: 100ms\n  group_wait: 8s\n  backoff_base: 100ms\n  \
         backoff_max: 500ms\n  sinks:\n  - name: hook\n    webhook:\n      url: {}\n",
        url.display(),
        hook.url
    );
    let mut replicas = [
        Service::start(dirs[0].path(), &root, &config).await,
        Service::start(dirs[1].path(), &root, &config).await,
    ];

    for region in 0..REGIONS {
        replicas[region % 2]
            .push_gcr(&format!("n{region}"), &unpromoted(region))
            .await;
    }
    replicas[0]
        .wait_until("the sink owes nothing", || async {
            undelivered(pg, &database) == 0
        })
        .await;

    // Each replica recorded about half of the copies; one alert names all.
    let accepted = hook.accepted_json();
    assert_eq!(accepted.len(), 1, "{accepted:#?}");
    let alert = &accepted[0];
    assert_eq!(alert["status"], "new");
    assert_eq!(alert["verdict"], "unpromoted");
    assert_eq!(alert["image"], "app");
    assert_eq!(alert["digest"], B);
    let mut expected: Vec<String> = (0..REGIONS)
        .map(|i| format!("r{i}.example/prod/app"))
        .collect();
    expected.sort();
    assert_eq!(alert["repositories"], json!(expected));
    assert_eq!(alert["events"].as_array().unwrap().len(), REGIONS);
    let alert_id = alert["alert_id"].clone();
    // Exactly one replica delivered the sink's alerts at a time.
    let leading: Vec<bool> = replicas
        .iter()
        .map(|r| r.log().contains("this process delivers the sink's alerts"))
        .collect();
    assert_eq!(leading.iter().filter(|l| **l).count(), 1, "{leading:?}");

    // Both restart: nothing of the alert is left in any process.
    for replica in &mut replicas {
        replica.terminate().await;
    }
    for replica in &mut replicas {
        replica.restart().await;
    }
    replicas[1].push_gcr("n25", &unpromoted(3)).await;
    replicas[1]
        .wait_until("the repeat is delivered", || async {
            undelivered(pg, &database) == 0 && hook.accepted_json().len() == 2
        })
        .await;

    let accepted = hook.accepted_json();
    let update = &accepted[1];
    assert_eq!(update["alert_id"], alert_id, "{update:#}");
    assert_eq!(update["status"], "updated");
    assert_eq!(update["repositories"], json!(expected));
    assert_eq!(update["events"].as_array().unwrap().len(), REGIONS + 1);
    assert_eq!(
        update["summary"],
        format!("unpromoted: app@{} in 25 repositories", &B[..19])
    );
}
