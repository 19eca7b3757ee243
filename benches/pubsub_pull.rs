//! docs/design.md §10: Pub/Sub streaming pull against the real emulator, as a ratio
//! to an ack-only consumer on the same emulator (target ≥ 0.9×).
//!
//! `cargo bench --bench pubsub_pull` (optionally `-- MESSAGES`, default
//! 20000). For 1, 2 and 4 streams it measures, each on a fresh topic with the
//! messages published beforehand, from the first stream opening to the last
//! ack:
//! - `ack-only`: a bare google-cloud-pubsub consumer that acks on receipt;
//! - `source`: [`PullSource`] with a handler that acks at once (the source's
//!   own cost: bounded concurrency, lease bookkeeping, ack after answer);
//! - `pipeline`: [`PullSource`] feeding the real [`Pipeline`] over the k8s.io
//!   fixtures and a SQLite store on disk: every message is an unpromoted push
//!   to a real destination, so each one is a decision and a finding committed
//!   before its ack — the worst case.
//!
//! Then the replicas case (issue 15): 3 [`PullSource`]s on ONE subscription,
//! each with its own [`Pipeline`] over its own [`PostgresStore`] on one
//! database (a real PostgreSQL started by the test harness, fsync on), one stream
//! each, against the ack-only consumer with 3 streams on the same emulator.
//! Afterwards the `decisions` table is counted: every message must have
//! exactly one decision (its primary key forbids two; the count shows none
//! is missing), printed with the redeliveries the replicas saw as
//! duplicates.

// The test harness, shared rather than copied: `postgres` needs its
// sibling `registry` (for `free_port`), so they sit under one module as in
// tests/support/. The bench uses a few of their helpers, not all.
#[allow(dead_code)]
mod support {
    #[path = "../../tests/support/command.rs"]
    pub mod command;
    #[path = "../../tests/support/oci.rs"]
    pub mod oci;
    #[path = "../../tests/support/postgres.rs"]
    pub mod postgres;
    #[path = "../../tests/support/pubsub.rs"]
    pub mod pubsub;
    #[path = "../../tests/support/registry.rs"]
    pub mod registry;
    #[path = "../../tests/support/watchdog.rs"]
    pub mod watchdog;
    pub use command::run_ok;
}

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures::FutureExt;
use image_auditor::audit::Policy;
use image_auditor::findings::{PostgresConfig, PostgresStore, SqliteStore, Store};
use image_auditor::index::Index;
use image_auditor::manifest;
use image_auditor::metrics::Metrics;
use image_auditor::pipeline::Pipeline;
use image_auditor::sources::pubsub_pull::{PullSource, PullStatus};
use image_auditor::sources::{Disposition, Handled, Handler};
use support::postgres::Postgres;
use support::pubsub::Fixture;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(300);

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!("messages={n}");
        println!("streams | ack-only msg/s | source msg/s | ratio | pipeline msg/s | ratio");
        for streams in [1, 2, 4] {
            let baseline = ack_only_rate(n, streams).await;
            let source = source_rate(n, streams, ack_at_once()).await;
            let dir = tempfile::tempdir().unwrap();
            let pipeline = source_rate(n, streams, pipeline_handler(dir.path())).await;
            println!(
                "{streams} | {baseline:.0} | {source:.0} | {:.3} | {pipeline:.0} | {:.3}",
                source / baseline,
                pipeline / baseline
            );
        }
        replicas(n, 3).await;
    });
}

/// `replicas` pull sources on one subscription, each with its own pipeline
/// and PostgreSQL store on one database, against the ack-only consumer with
/// as many streams; then the decisions counted.
async fn replicas(n: usize, replicas: usize) {
    let postgres = tokio::task::spawn_blocking(Postgres::start_durable)
        .await
        .unwrap();
    let database = postgres.fresh_database();
    let url = postgres.url(&database);
    let baseline = ack_only_rate(n, replicas).await;

    let fixture = Fixture::new("bench-replicas").await;
    fixture.publish((0..n).map(payload)).await;
    let counts = Arc::new(Counts::default());
    let mut handlers = Vec::new();
    for _ in 0..replicas {
        // Each replica opens its store as `serve` does (default pool, the
        // migrations applied by whichever comes first). Opening blocks on
        // the store's own runtime: not on this one's threads.
        let url = url.clone();
        let store = tokio::task::spawn_blocking(move || {
            PostgresStore::open_url(&PostgresConfig::default(), &url)
        })
        .await
        .unwrap()
        .expect("open the PostgreSQL store");
        handlers.push(counting(
            pipeline_handler_on(Arc::new(store)),
            counts.clone(),
        ));
    }
    let shutdown = CancellationToken::new();
    let mut statuses = Vec::new();
    let mut tasks = Vec::new();
    let start = Instant::now();
    for handler in handlers {
        let mut config = fixture.pull_config();
        config.streams = 1;
        let source = PullSource::new(config);
        statuses.push(source.status());
        tasks.push(tokio::spawn(source.run(handler, shutdown.clone())));
    }
    // A redelivered message is acked again by whichever replica gets it, so
    // the acks alone can reach n early: wait for n first decisions too.
    wait_until("the replicas decided and acked every message", || {
        counts.decided.load(Ordering::Relaxed) >= n as u64
            && statuses.iter().map(|s| s.stats().acked).sum::<u64>() >= n as u64
    })
    .await;
    let rate = n as f64 / start.elapsed().as_secs_f64();
    shutdown.cancel();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let acked: Vec<u64> = statuses.iter().map(|s| s.stats().acked).collect();
    let decided = || {
        postgres
            .psql(&database, "SELECT count(*) FROM decisions")
            .parse::<usize>()
            .unwrap()
    };
    let distinct = postgres.psql(
        &database,
        "SELECT count(DISTINCT (source, endpoint, event_id)) FROM decisions",
    );
    let findings = postgres.psql(&database, "SELECT count(*) FROM findings");
    println!(
        "{replicas} replicas on PostgreSQL, 1 stream each | ack-only {replicas} streams {baseline:.0} msg/s | replicas {rate:.0} msg/s | ratio {:.3}",
        rate / baseline
    );
    println!(
        "decisions={} distinct_events={distinct} findings={findings} expected={n} acked_per_replica={acked:?} duplicates_seen={}",
        decided(),
        counts.duplicates.load(Ordering::Relaxed)
    );
    assert_eq!(decided(), n, "every message has exactly one decision");
}

#[derive(Default)]
struct Counts {
    /// Deliveries this run decided and acked.
    decided: AtomicU64,
    /// Deliveries found already decided (a redelivery).
    duplicates: AtomicU64,
}

/// `handler`, counting what it answered.
fn counting(handler: Handler, counts: Arc<Counts>) -> Handler {
    Arc::new(move |delivery| {
        let answer = handler(delivery);
        let counts = counts.clone();
        async move {
            let handled = answer.await;
            if handled.duplicate {
                counts.duplicates.fetch_add(1, Ordering::Relaxed);
            } else if matches!(handled.disposition, Disposition::Ack) {
                counts.decided.fetch_add(1, Ordering::Relaxed);
            }
            handled
        }
        .boxed()
    })
}

/// An unpromoted push of image `n` to a real k8s.io destination.
fn payload(n: usize) -> Vec<u8> {
    format!(
        r#"{{"action":"INSERT","digest":"us-central1-docker.pkg.dev/k8s-artifacts-prod/images/etcd@sha256:{n:064x}"}}"#
    )
    .into_bytes()
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn ack_only_rate(n: usize, streams: usize) -> f64 {
    let fixture = Fixture::new("bench-ack-only").await;
    fixture.publish((0..n).map(payload)).await;
    let subscriber = fixture.target.subscriber().await.unwrap();
    let name = fixture.pull_config().subscription_name();
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let start = Instant::now();
    let mut tokens = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let mut stream = subscriber
            .subscribe(name.clone())
            .set_max_lease_extension(Duration::from_secs(10))
            .build();
        tokens.push(stream.shutdown_token());
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(Ok((message, ack))) = stream.next().await {
                ack.ack();
                seen.lock().unwrap().insert(message.message_id);
            }
        }));
    }
    wait_until("the ack-only consumer saw every message", || {
        seen.lock().unwrap().len() == n
    })
    .await;
    let rate = n as f64 / start.elapsed().as_secs_f64();
    for token in tokens {
        token.shutdown().await;
    }
    for task in tasks {
        task.await.unwrap();
    }
    rate
}

fn ack_at_once() -> Handler {
    Arc::new(|_| {
        futures::future::ready(Handled {
            disposition: Disposition::Ack,
            verdict: None,
            duplicate: false,
            excepted: false,
        })
        .boxed()
    })
}

fn pipeline_handler(data: &std::path::Path) -> Handler {
    pipeline_handler_on(Arc::new(
        SqliteStore::open(data.join("findings.sqlite")).unwrap(),
    ))
}

/// The real pipeline over the k8s.io fixtures, recording into `store`.
fn pipeline_handler_on(store: Arc<dyn Store>) -> Handler {
    let set = manifest::load(std::path::Path::new(
        image_auditor::config::DEFAULT_MANIFESTS,
    ))
    .unwrap();
    let index = Arc::new(ArcSwap::from_pointee(Index::build(&set, 1)));
    let pipeline = Arc::new(Pipeline::new(
        index,
        None,
        store,
        Policy::default(),
        Arc::new(Metrics::default()),
        Duration::from_secs(3600),
    ));
    pipeline.handler()
}

async fn source_rate(n: usize, streams: usize, handler: Handler) -> f64 {
    let fixture = Fixture::new("bench-source").await;
    fixture.publish((0..n).map(payload)).await;
    let mut config = fixture.pull_config();
    config.streams = streams;
    let source = PullSource::new(config);
    let status: PullStatus = source.status();
    let shutdown = CancellationToken::new();
    let start = Instant::now();
    let task = tokio::spawn(source.run(handler, shutdown.clone()));
    wait_until("the source acked every message", || {
        status.stats().acked >= n as u64
    })
    .await;
    let rate = n as f64 / start.elapsed().as_secs_f64();
    shutdown.cancel();
    task.await.unwrap().unwrap();
    rate
}
