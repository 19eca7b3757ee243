//! The real Pub/Sub emulator for integration tests, and helpers to give each
//! test a fresh topic and subscription on it.
//!
//! One emulator (a JVM, ~1 s to start) serves a whole test binary:
//! [`Emulator::shared`]. It runs under a small `sh` watchdog that kills it as
//! soon as its stdin closes, which happens when the [`Emulator`] is dropped or
//! when the test process exits in any way (statics are never dropped). Its
//! very chatty log goes to a file, printed on failure to start.
//!
//! Emulator defects to design tests around (see
//! `docs/reference/pubsub-emulator.md` §5): it ignores flow control, and
//! it mishandles a client cancelling a StreamingPull (`NoSuchMethodError`), so
//! use a fresh subscription per test and do not expect prompt redelivery
//! across a stream restart on the same subscription.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use google_cloud_pubsub::client::{Publisher, SubscriptionAdmin, TopicAdmin};
use google_cloud_pubsub::model::Message;

use image_auditor::event::{EndpointName, EventId, Source};
use image_auditor::findings::DedupeKey;
use image_auditor::pubsub::{Target, subscription_name, topic_name};
use image_auditor::sources::pubsub_pull::PullConfig;

use super::watchdog::Watched;

pub const EMULATOR: &str =
    "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator";
pub const PROJECT: &str = "test-project";
const START_DEADLINE: Duration = Duration::from_secs(60);

/// A running emulator on a free loopback port.
pub struct Emulator {
    /// `127.0.0.1:PORT`, the `PUBSUB_EMULATOR_HOST` form.
    pub host: String,
    pub log: PathBuf,
    /// The JVM, under its watchdog.
    java: Watched,
    _dir: tempfile::TempDir,
}

impl Emulator {
    /// The emulator of this test binary, started on first use.
    pub fn shared() -> &'static Emulator {
        static SHARED: OnceLock<Emulator> = OnceLock::new();
        SHARED.get_or_init(Emulator::start)
    }

    /// Starts a new emulator and waits until it answers. Panics with the
    /// log's tail when it does not within a minute.
    pub fn start() -> Emulator {
        let mut last_error = String::new();
        // A free port can be taken between probing and binding: retry.
        for _ in 0..3 {
            match Emulator::try_start() {
                Ok(emulator) => return emulator,
                Err(e) => last_error = e,
            }
        }
        panic!("the Pub/Sub emulator did not start: {last_error}");
    }

    fn try_start() -> Result<Emulator, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let log = dir.path().join("emulator.log");
        // Prints the emulator's pid, then waits for stdin to close and kills
        // it. `exec java` in the emulator script makes `$!` the JVM itself.
        let script = r#"
            "$0" --host=127.0.0.1 --port="$1" >"$2" 2>&1 </dev/null &
            pid=$!
            echo "$pid"
            trap 'kill "$pid" 2>/dev/null' EXIT
            read -r _ignored
            kill "$pid" 2>/dev/null
            wait "$pid"
        "#;
        let java = Watched::spawn(
            Command::new("sh")
                .arg("-c")
                .arg(script)
                .arg(EMULATOR)
                .arg(port.to_string())
                .arg(&log),
        )?;
        let emulator = Emulator {
            host: format!("127.0.0.1:{port}"),
            log,
            java,
            _dir: dir,
        };
        let started = Instant::now();
        loop {
            if emulator.answers() {
                return Ok(emulator);
            }
            if !emulator.java.server_alive() || started.elapsed() > START_DEADLINE {
                return Err(format!(
                    "port {port}, after {:?}; log tail:\n{}",
                    started.elapsed(),
                    emulator.log_tail(30)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.host)
    }

    /// The client target for this emulator (anonymous credentials).
    pub fn target(&self) -> Target {
        Target::from_url(&self.endpoint(), "test").expect("valid endpoint")
    }

    /// Whether `GET /v1/projects/p/topics` answers 200 (REST and gRPC share
    /// the port, so this means both are up).
    fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(&self.host) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let request = format!(
            "GET /v1/projects/{PROJECT}/topics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.host
        );
        if s.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut head = [0u8; 12];
        s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
    }

    /// The last `lines` lines of the emulator's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// How often the emulator logged the StreamingPull cancellation defect.
    pub fn cancel_defects(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches("NoSuchMethodError")
            .count()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.java.close();
        let _ = Command::new("kill")
            .arg(self.java.pid.to_string())
            .stderr(Stdio::null())
            .status();
        self.java.wait();
    }
}

/// Unique names within this test process (the emulator is per process).
fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A fresh topic with one pull subscription on the shared emulator, and a
/// publisher to it. Build it inside the test's runtime: the clients spawn
/// tasks on it.
pub struct Fixture {
    pub target: Target,
    pub endpoint: String,
    /// Full topic name.
    pub topic: String,
    /// Subscription id (in [`PROJECT`]).
    pub subscription: String,
    pub publisher: Publisher,
    pub topics: TopicAdmin,
    pub subscriptions: SubscriptionAdmin,
}

impl Fixture {
    /// A new topic `PREFIX-N-topic` and subscription `PREFIX-N-sub`.
    pub async fn new(prefix: &str) -> Fixture {
        let emulator = Emulator::shared();
        let target = emulator.target();
        let base = unique(prefix);
        let topic = topic_name(PROJECT, &format!("{base}-topic"));
        let subscription = format!("{base}-sub");
        let topics = target.topic_admin().await.expect("topic admin");
        let subscriptions = target
            .subscription_admin()
            .await
            .expect("subscription admin");
        topics
            .create_topic()
            .set_name(&topic)
            .send()
            .await
            .expect("create topic");
        let publisher = target.publisher(&topic).await.expect("publisher");
        let fixture = Fixture {
            target,
            endpoint: emulator.endpoint(),
            topic,
            subscription: subscription.clone(),
            publisher,
            topics,
            subscriptions,
        };
        fixture.add_subscription(&subscription).await;
        fixture
    }

    /// Another pull subscription on the same topic (sees messages published
    /// from now on).
    pub async fn add_subscription(&self, id: &str) {
        self.subscriptions
            .create_subscription()
            .set_name(subscription_name(PROJECT, id))
            .set_topic(&self.topic)
            .set_ack_deadline_seconds(10)
            .send()
            .await
            .expect("create subscription");
    }

    /// What deliveries through subscription `id` are recorded under: its
    /// full name (message ids are unique only within one).
    pub fn endpoint_of(id: &str) -> EndpointName {
        EndpointName(subscription_name(PROJECT, id))
    }

    /// The dedupe key of message `id` pulled from this fixture's subscription.
    pub fn pull_key(&self, id: &str) -> DedupeKey {
        Fixture::key_of(Source::PubsubPull, &self.subscription, id)
    }

    /// The dedupe key of message `id` from `source` through `subscription`.
    pub fn key_of(source: Source, subscription: &str, id: &str) -> DedupeKey {
        DedupeKey {
            source,
            endpoint: Fixture::endpoint_of(subscription),
            event_id: EventId(id.into()),
        }
    }

    /// A pull configuration for the subscription, pointed at the emulator
    /// explicitly (tests must not depend on the environment).
    pub fn pull_config(&self) -> PullConfig {
        let mut config = PullConfig::new(PROJECT, &self.subscription);
        config.endpoint = Some(self.endpoint.clone());
        config
    }

    /// Publishes every payload; returns the server message ids in order.
    pub async fn publish<I, P>(&self, payloads: I) -> Vec<String>
    where
        I: IntoIterator<Item = P>,
        P: Into<bytes::Bytes>,
    {
        let futures: Vec<_> = payloads
            .into_iter()
            .map(|p| self.publisher.publish(Message::new().set_data(p)))
            .collect();
        let ids = futures::future::try_join_all(futures)
            .await
            .expect("publish");
        self.publisher.flush().await;
        ids
    }
}

/// A valid `gcr` topic payload for image `n`.
pub fn insert_payload(n: usize) -> Vec<u8> {
    format!(
        r#"{{"action":"INSERT","digest":"us-docker.pkg.dev/acme/apps/img{n}@sha256:{:064x}","tag":"us-docker.pkg.dev/acme/apps/img{n}:v{n}"}}"#,
        n
    )
    .into_bytes()
}
