//! The Pub/Sub streaming-pull source against the real emulator (started by
//! the tests, one per test binary; a fresh topic and subscription per test).
//!
//! Waits are on conditions with deadlines. Two tests hold on purpose for
//! longer than the 10 s stream ack deadline, because what they prove (a lease
//! is kept; an ack that was not flushed would reappear) is only observable
//! after that deadline.

use crate::support::pubsub as pubsub_support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use image_auditor::event::{Event, Malformed, Source};
use image_auditor::sources::pubsub_pull::{
    self, PullConfig, PullError, PullSource, PullStats, PullStatus,
};
use image_auditor::sources::{Delivery, Disposition, Handled, Handler};
use pubsub_support::{Fixture, insert_payload};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(45);
/// Redelivery after the emulator's cancelled-stream defect takes several
/// stream ack deadlines, and longer while the other tests of this binary
/// share the emulator: a waiting time, not a speed claim.
const REDELIVERY_DEADLINE: Duration = Duration::from_secs(150);

/// Every delivery the test handler saw, by message id, in order, and the
/// ids it answered `Ack` for.
#[derive(Clone, Default)]
struct Recorder {
    inner: Arc<Mutex<Recorded>>,
}

#[derive(Default)]
struct Recorded {
    deliveries: HashMap<String, Vec<Result<Event, Malformed>>>,
    acked: HashMap<String, usize>,
    handled: usize,
}

impl Recorder {
    fn deliveries(&self, id: &str) -> usize {
        let r = self.inner.lock().unwrap();
        r.deliveries.get(id).map_or(0, Vec::len)
    }

    fn acked_ids(&self) -> HashSet<String> {
        self.inner.lock().unwrap().acked.keys().cloned().collect()
    }

    fn seen_ids(&self) -> HashSet<String> {
        self.inner
            .lock()
            .unwrap()
            .deliveries
            .keys()
            .cloned()
            .collect()
    }

    fn handled(&self) -> usize {
        self.inner.lock().unwrap().handled
    }

    fn decoded(&self, id: &str) -> Vec<Result<Event, Malformed>> {
        let r = self.inner.lock().unwrap();
        r.deliveries.get(id).cloned().unwrap_or_default()
    }

    /// Ids delivered more than once, with their counts.
    fn redelivered(&self) -> Vec<(String, usize)> {
        let r = self.inner.lock().unwrap();
        let mut v: Vec<_> = r
            .deliveries
            .iter()
            .filter(|(_, d)| d.len() > 1)
            .map(|(id, d)| (id.clone(), d.len()))
            .collect();
        v.sort();
        v
    }
}

/// A pipeline stand-in: records each delivery, then answers what `script`
/// says for it (`attempt` counts from 1), after awaiting `hold` if the
/// script asks for it.
fn recording_handler<S>(recorder: &Recorder, script: S) -> Handler
where
    S: Fn(&Delivery, usize) -> (Disposition, Option<futures::future::BoxFuture<'static, ()>>)
        + Send
        + Sync
        + 'static,
{
    let recorder = recorder.clone();
    let script = Arc::new(script);
    Arc::new(move |delivery: Delivery| {
        let recorder = recorder.clone();
        let script = script.clone();
        async move {
            assert_eq!(delivery.source, Source::PubsubPull);
            let attempt = {
                let mut r = recorder.inner.lock().unwrap();
                let list = r.deliveries.entry(delivery.id.0.clone()).or_default();
                list.push(delivery.decoded.clone());
                list.len()
            };
            let (disposition, hold) = script(&delivery, attempt);
            if let Some(hold) = hold {
                hold.await;
            }
            let mut r = recorder.inner.lock().unwrap();
            r.handled += 1;
            if disposition == Disposition::Ack {
                *r.acked.entry(delivery.id.0.clone()).or_default() += 1;
            }
            Handled {
                disposition,
                verdict: None,
                duplicate: false,
                excepted: false,
            }
        }
        .boxed()
    })
}

fn ack_all(recorder: &Recorder) -> Handler {
    recording_handler(recorder, |_, _| (Disposition::Ack, None))
}

/// A running source with its status and shutdown token.
struct Running {
    status: PullStatus,
    shutdown: CancellationToken,
    task: JoinHandle<Result<PullStats, PullError>>,
}

impl Running {
    fn start(config: PullConfig, handler: Handler) -> Running {
        let source = PullSource::new(config);
        let status = source.status();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(source.run(handler, shutdown.clone()));
        Running {
            status,
            shutdown,
            task,
        }
    }

    async fn stop(self) -> PullStats {
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("run returns after shutdown")
            .expect("run does not panic")
            .expect("run succeeds")
    }
}

/// Polls `condition` until it holds; panics with `what` after [`DEADLINE`].
async fn wait_until(what: &str, condition: impl FnMut() -> bool) {
    wait_until_or(what, DEADLINE, condition, String::new).await
}

/// Publishes a sentinel (`insert_payload(n)`) and waits until it is acked:
/// by then the stream has had every chance to redeliver what came before.
async fn acked_sentinel(fixture: &Fixture, recorder: &Recorder, n: usize) {
    let sentinel = fixture.publish([insert_payload(n)]).await.remove(0);
    wait_until("the sentinel was acked", || {
        recorder.acked_ids().contains(&sentinel)
    })
    .await;
}

/// [`wait_until`] with its own deadline, adding `detail()` to the panic
/// message.
async fn wait_until_or(
    what: &str,
    deadline: Duration,
    mut condition: impl FnMut() -> bool,
    detail: impl Fn() -> String,
) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting until {what} {}",
            detail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_delivered_and_acked_exactly_once_over_two_streams() {
    const N: usize = 2_000;
    let fixture = Fixture::new("all-once").await;
    let ids = fixture.publish((0..N).map(insert_payload)).await;
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), N);

    let recorder = Recorder::default();
    let mut config = fixture.pull_config();
    config.streams = 2;
    config.max_in_flight = 64;
    let running = Running::start(config, ack_all(&recorder));
    wait_until("the subscription is connected", || {
        running.status.is_connected()
    })
    .await;
    wait_until("every message was acked", || {
        recorder.acked_ids().len() == N
    })
    .await;
    let status = running.status.clone();
    let stats = running.stop().await;
    assert!(!status.is_connected(), "not connected after run returned");

    for id in &ids {
        assert_eq!(recorder.deliveries(id), 1, "message {id} delivered once");
        let decoded = recorder.decoded(id);
        let event = decoded[0].as_ref().expect("valid payload");
        assert_eq!(event.id.0, *id);
        assert_eq!(event.source, Source::PubsubPull);
    }
    assert_eq!(recorder.seen_ids().len(), N, "no unpublished ids");
    assert_eq!(
        stats,
        PullStats {
            received: N as u64,
            acked: N as u64,
            nacked: 0
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payloads_reach_the_handler_naming_the_message_id() {
    let fixture = Fixture::new("malformed").await;
    let bad: Vec<&[u8]> = vec![
        b"not json",
        b"[1,2]",
        br#"{"digest":"gcr.io/p/i@sha256:0000000000000000000000000000000000000000000000000000000000000000"}"#,
        br#"{"action":"INSERT","digest":"gcr.io/p/i:latest"}"#,
        br#"{"action":"INSERT"}"#,
        b"   ",
    ];
    let bad_ids = fixture.publish(bad.iter().map(|b| b.to_vec())).await;
    let good_id = fixture.publish([insert_payload(1)]).await.remove(0);

    let recorder = Recorder::default();
    let running = Running::start(fixture.pull_config(), ack_all(&recorder));
    wait_until("every message was handled", || {
        recorder.acked_ids().len() == bad.len() + 1
    })
    .await;
    let stats = running.stop().await;

    for (id, payload) in bad_ids.iter().zip(&bad) {
        let decoded = recorder.decoded(id);
        assert_eq!(decoded.len(), 1, "{id} delivered once");
        let malformed = decoded[0].as_ref().expect_err("malformed");
        assert_eq!(malformed.id.0, *id, "{payload:?}");
        assert_eq!(malformed.source, Source::PubsubPull);
        assert!(
            malformed.to_string().contains(id.as_str()),
            "{malformed} names {id}"
        );
        assert!(!malformed.reason.is_empty());
    }
    let good = recorder.decoded(&good_id);
    assert_eq!(good[0].as_ref().expect("valid").id.0, good_id);
    assert_eq!(stats.acked, bad.len() as u64 + 1);
    assert_eq!(stats.nacked, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_redelivers_the_same_id_until_acked() {
    const RETRIES: usize = 2;
    let fixture = Fixture::new("retry").await;
    let ids = fixture.publish((0..5).map(insert_payload)).await;

    let recorder = Recorder::default();
    let retried: HashSet<String> = ids.iter().cloned().collect();
    let handler = recording_handler(&recorder, move |delivery, attempt| {
        if retried.contains(&delivery.id.0) && attempt <= RETRIES {
            (Disposition::Retry, None)
        } else {
            (Disposition::Ack, None)
        }
    });
    let mut config = fixture.pull_config();
    config.undecided_backoff = Duration::from_millis(50);
    let running = Running::start(config, handler);
    wait_until("every message was acked after its retries", || {
        recorder.acked_ids().len() == ids.len()
    })
    .await;
    // Published after the acks: once it is handled, the stream has had every
    // chance to redeliver a message whose ack did not stop it.
    let sentinel = fixture.publish([insert_payload(99)]).await.remove(0);
    wait_until("the sentinel was handled", || {
        recorder.deliveries(&sentinel) > 0
    })
    .await;
    wait_until("the sentinel was acked", || {
        recorder.acked_ids().contains(&sentinel)
    })
    .await;
    let stats = running.stop().await;

    for id in &ids {
        assert_eq!(
            recorder.deliveries(id),
            RETRIES + 1,
            "{id}: {RETRIES} retries, then one ack"
        );
        for decoded in recorder.decoded(id) {
            assert_eq!(decoded.expect("valid").id.0, *id);
        }
    }
    assert_eq!(recorder.deliveries(&sentinel), 1);
    assert_eq!(stats.nacked, (ids.len() * RETRIES) as u64);
    assert_eq!(stats.acked, ids.len() as u64 + 1);
    assert_eq!(stats.received, stats.acked + stats.nacked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecided_message_comes_back_a_bounded_number_of_times() {
    /// Counted after the first delivery: held 0.5 s, 1 s, 2 s, then 4 s,
    /// the message can be delivered at most 4 times in this window. Nacked
    /// at once, the emulator redelivers it about 10 times a second.
    const WINDOW: Duration = Duration::from_secs(4);
    let fixture = Fixture::new("backoff").await;
    let id = fixture.publish([insert_payload(1)]).await.remove(0);
    let recorder = Recorder::default();
    let handler = recording_handler(&recorder, |_, _| (Disposition::Retry, None));
    let mut config = fixture.pull_config();
    config.undecided_backoff = Duration::from_millis(500);
    let running = Running::start(config, handler);
    wait_until("the message was delivered", || recorder.deliveries(&id) > 0).await;
    let first = tokio::time::Instant::now();
    // It must come back (a readiness wait, however slow the machine)...
    wait_until("the message came back", || recorder.deliveries(&id) > 1).await;
    // ...but not more often than the growing delay allows in the window.
    tokio::time::sleep_until(first + WINDOW).await;
    let delivered = recorder.deliveries(&id);
    // Shutdown nacks the held message at once instead of waiting out its
    // delay: the run ends with every delivery answered.
    let stats = running.stop().await;
    assert!(
        delivered <= 4,
        "delivered {delivered} times in {WINDOW:?}: the delay must grow between deliveries"
    );
    assert_eq!(stats.acked, 0);
    assert_eq!(stats.nacked, stats.received);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_stream_acks_exactly_what_was_handled() {
    const N: usize = 600;
    const STOP_AFTER: usize = 100;
    const IN_FLIGHT: usize = 8;
    let fixture = Fixture::new("shutdown").await;
    let ids = fixture.publish((0..N).map(insert_payload)).await;

    // First consumer: handles messages until told to stop; the ones it is
    // handling when shutdown starts finish 300 ms later and ack, so they are
    // in flight across the shutdown.
    let first = Recorder::default();
    let shutdown = CancellationToken::new();
    let handler = {
        let shutdown = shutdown.clone();
        let started = AtomicUsize::new(0);
        recording_handler(&first, move |_, _| {
            let nth = started.fetch_add(1, Ordering::Relaxed) + 1;
            let hold = (nth > STOP_AFTER).then(|| {
                let shutdown = shutdown.clone();
                // Work that outlasts the shutdown signal.
                async move {
                    shutdown.cancelled().await;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                .boxed()
            });
            (Disposition::Ack, hold)
        })
    };
    let mut config = fixture.pull_config();
    config.max_in_flight = IN_FLIGHT;
    let source = PullSource::new(config.clone());
    let task = tokio::spawn(source.run(handler, shutdown.clone()));
    wait_until("handlers are in flight", || {
        first.handled() >= STOP_AFTER && first.seen_ids().len() >= STOP_AFTER + IN_FLIGHT
    })
    .await;
    shutdown.cancel();
    let stats = tokio::time::timeout(DEADLINE, task)
        .await
        .expect("run returns")
        .unwrap()
        .unwrap();
    let returned = Instant::now();

    let acked = first.acked_ids();
    assert_eq!(
        first.handled(),
        acked.len(),
        "every handler finished and acked"
    );
    assert_eq!(
        acked.len(),
        STOP_AFTER + IN_FLIGHT,
        "in-flight handlers finished"
    );
    assert_eq!(stats.acked, acked.len() as u64);
    assert_eq!(
        stats.received, stats.acked,
        "every handed-out message answered"
    );
    assert!(first.redelivered().is_empty(), "{:?}", first.redelivered());

    // Second consumer: gets the rest, none of the acked ones. It keeps
    // listening until a lost ack would have shown up: the first consumer's
    // leases (10 s stream ack deadline) have run out by then.
    //
    // Emulator defect: the first consumer's cancelled stream stays
    // registered, and what the emulator dispatches to it reappears only a
    // stream ack deadline later. Several streams make the dead one's share of
    // each redelivery small.
    let second = Recorder::default();
    let mut second_config = fixture.pull_config();
    second_config.streams = 4;
    let running = Running::start(second_config, ack_all(&second));
    let rest: HashSet<String> = ids
        .iter()
        .filter(|id| !acked.contains(*id))
        .cloned()
        .collect();
    wait_until_or(
        "the second consumer received every message not acked",
        REDELIVERY_DEADLINE,
        || rest.is_subset(&second.seen_ids()),
        || {
            let seen = second.seen_ids();
            format!(
                "({} of {} received; {} acked ones again; emulator logged {} cancelled-stream defects)",
                rest.intersection(&seen).count(),
                rest.len(),
                acked.intersection(&seen).count(),
                pubsub_support::Emulator::shared().cancel_defects(),
            )
        },
    )
    .await;
    eprintln!(
        "the rest ({}) was back {:?} after run returned; {} cancelled-stream defects logged",
        rest.len(),
        returned.elapsed(),
        pubsub_support::Emulator::shared().cancel_defects()
    );
    let lease = config.max_lease_extension + Duration::from_secs(3);
    wait_until("the first consumer's leases expired", || {
        returned.elapsed() > lease
    })
    .await;
    running.stop().await;
    let seen = second.seen_ids();
    let again: Vec<_> = seen.intersection(&acked).collect();
    assert!(again.is_empty(), "acked messages came back: {again:?}");
    assert_eq!(seen, rest, "the second consumer got exactly the rest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_payloads_are_delivered_once_per_message_id() {
    let fixture = Fixture::new("duplicates").await;
    let ids = fixture
        .publish([
            insert_payload(7),
            insert_payload(7),
            insert_payload(7),
            insert_payload(8),
            insert_payload(8),
        ])
        .await;
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 5, "distinct ids");

    let recorder = Recorder::default();
    let running = Running::start(fixture.pull_config(), ack_all(&recorder));
    wait_until("every message was acked", || {
        recorder.acked_ids().len() == ids.len()
    })
    .await;
    acked_sentinel(&fixture, &recorder, 9).await;
    running.stop().await;

    let events: Vec<Event> = ids
        .iter()
        .map(|id| {
            assert_eq!(recorder.deliveries(id), 1, "{id} delivered once");
            recorder.decoded(id).remove(0).expect("valid")
        })
        .collect();
    for (event, id) in events.iter().zip(&ids) {
        assert_eq!(event.id.0, *id);
    }
    // Same payload, different ids: equal events but for the id.
    let same = |a: &Event, b: &Event| {
        (&a.repository, &a.digest, &a.tag) == (&b.repository, &b.digest, &b.tag)
    };
    assert!(same(&events[0], &events[1]) && same(&events[1], &events[2]));
    assert!(same(&events[3], &events[4]) && !same(&events[0], &events[3]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_keeps_its_lease() {
    let fixture = Fixture::new("lease").await;
    let id = fixture.publish([insert_payload(1)]).await.remove(0);
    let mut config = fixture.pull_config();
    config.max_lease_extension = Duration::from_secs(10);

    // Held past the 10 s stream ack deadline: without lease extension the
    // emulator would deliver the message again meanwhile.
    let hold = config.max_lease_extension + Duration::from_secs(3);
    let recorder = Recorder::default();
    let handler = recording_handler(&recorder, move |_, attempt| {
        let wait = (attempt == 1).then(|| tokio::time::sleep(hold).boxed());
        (Disposition::Ack, wait)
    });
    let running = Running::start(config, handler);
    wait_until("the message was acked", || {
        recorder.acked_ids().contains(&id)
    })
    .await;
    acked_sentinel(&fixture, &recorder, 2).await;
    running.stop().await;
    assert_eq!(recorder.deliveries(&id), 1, "not redelivered while held");
}

/// The error that ends a pull with `config` within `DEADLINE` (`why` it
/// must fail names the case).
async fn fails_fast(config: PullConfig, why: &str) -> PullError {
    let recorder = Recorder::default();
    tokio::time::timeout(
        DEADLINE,
        pubsub_pull::run(config, ack_all(&recorder), CancellationToken::new()),
    )
    .await
    .expect("fails fast")
    .expect_err(why)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_subscription_fails_fast_naming_it() {
    let fixture = Fixture::new("missing").await;
    let mut config = fixture.pull_config();
    config.subscription = "no-such-subscription".into();
    let error = fails_fast(config, "no such subscription").await;
    assert!(matches!(error, PullError::NotFound { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("projects/test-project/subscriptions/no-such-subscription"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_fails_within_the_connect_timeout() {
    // A bound but silent port: connections open, nothing answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = PullConfig::new("p", "sub");
    config.endpoint = Some(format!("http://{}", silent.local_addr().unwrap()));
    config.connect_timeout = Duration::from_millis(500);
    let error = fails_fast(config, "unreachable").await;
    assert!(matches!(error, PullError::Unreachable { .. }), "{error:?}");
    assert!(
        error.to_string().contains("projects/p/subscriptions/sub"),
        "{error}"
    );
}
