//! Pub/Sub streaming pull of `gcr` topic messages (docs/design.md §7).
//!
//! Each message becomes a [`Delivery`] whose id is the Pub/Sub message id
//! and whose event is [`gcr::parse`] of the message data. The [`Handler`]
//! decides: [`Disposition::Ack`] acks, [`Disposition::Retry`] nacks (the
//! message comes back). Malformed payloads reach the handler too, as
//! `Err(Malformed)`; the pipeline records and acks them.
//!
//! - **Backoff of undecided messages.** A nack makes Pub/Sub redeliver at
//!   once, so an event that stays undecided (a registry down for an hour)
//!   would come back ten times a second. Instead its message is held, with
//!   the client extending its lease, for a delay that doubles with each
//!   retry of that message id (`undecided_backoff` up to
//!   `undecided_backoff_max`), and only then nacked. The client's handler
//!   offers no "modify the ack deadline to N seconds" (only ack, nack and
//!   automatic lease extension), so holding the lease and nacking late is
//!   how the delay is made. A held message frees its handler slot; on
//!   shutdown it is nacked at once.
//!
//! - **Bounded concurrency of our own.** At most `max_in_flight` handlers
//!   run at once, across all streams: a message is taken from a stream only
//!   once a slot is free. Server-side flow control (`max_outstanding_*`) is
//!   requested too, but the emulator ignores it, and the client queues what
//!   it receives without limit.
//! - **Leases.** `google-cloud-pubsub` extends the lease of every message it
//!   holds (queued or handed to a handler) every 3 s by
//!   `max_lease_extension`, until acked, nacked or held for `max_lease`. A
//!   consumer that dies without acking gets its messages redelivered after
//!   `max_lease_extension`.
//! - **Shutdown.** When the shutdown token is cancelled, or a stream fails for
//!   good, every stream stops taking messages; then each stream's
//!   `WaitForProcessing` shutdown waits for the handlers it handed messages
//!   to, flushes their acks and nacks, and nacks what was received but never
//!   handed out. [`PullSource::run`] returns only after that.
//! - **Readiness.** [`PullStatus::is_connected`] turns true once the
//!   subscription was found (a `GetSubscription` probe under
//!   `connect_timeout`) and the streams are started; false when `run` ends.
//!   Opening a stream retries forever on transient errors, so the probe is
//!   what makes a wrong endpoint or subscription fail fast.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use google_cloud_gax::error::rpc::Code;
use google_cloud_pubsub::client::Subscriber;
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::subscriber::ShutdownBehavior;
use google_cloud_pubsub::subscriber::handler::Handler as AckHandler;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::event::{EndpointName, EventId, Source};
use crate::pubsub::Target;
use crate::sources::gcr;
use crate::sources::{Delivery, Disposition, Handled, Handler};

mod config;

pub use config::{PullConfig, PullError};

/// Counters of one source. `received` counts deliveries handed to the
/// handler (a redelivery counts again); `acked` + `nacked` are the ones
/// answered, equal to `received` once `run` has returned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PullStats {
    pub received: u64,
    pub acked: u64,
    pub nacked: u64,
}

/// A live view of a running source, for `/readyz` and `/metrics`. Cheap to
/// clone; every clone sees the same state.
#[derive(Debug, Clone, Default)]
pub struct PullStatus {
    inner: Arc<StatusInner>,
}

#[derive(Debug, Default)]
struct StatusInner {
    connected: AtomicBool,
    received: AtomicU64,
    acked: AtomicU64,
    nacked: AtomicU64,
}

impl PullStatus {
    /// True while the subscription is known to exist and the streams run.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Acquire)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> PullStats {
        PullStats {
            received: self.inner.received.load(Ordering::Relaxed),
            acked: self.inner.acked.load(Ordering::Relaxed),
            nacked: self.inner.nacked.load(Ordering::Relaxed),
        }
    }

    fn set_connected(&self, connected: bool) {
        self.inner.connected.store(connected, Ordering::Release);
    }
}

/// A configured streaming-pull source, with its [`PullStatus`] available
/// before it runs.
pub struct PullSource {
    config: PullConfig,
    status: PullStatus,
}

impl PullSource {
    pub fn new(config: PullConfig) -> PullSource {
        PullSource {
            config,
            status: PullStatus::default(),
        }
    }

    /// The live status; take it before calling [`PullSource::run`].
    pub fn status(&self) -> PullStatus {
        self.status.clone()
    }

    /// Pulls until `shutdown` is cancelled (or a stream fails for good),
    /// then drains: waits for in-flight handlers and flushes their acks.
    pub async fn run(
        self,
        handler: Handler,
        shutdown: CancellationToken,
    ) -> Result<PullStats, PullError> {
        let PullSource { config, status } = self;
        let result = pull(&config, &status, handler, shutdown).await;
        status.set_connected(false);
        result
    }
}

/// [`PullSource::run`] without a status handle.
pub async fn run(
    config: PullConfig,
    handler: Handler,
    shutdown: CancellationToken,
) -> Result<PullStats, PullError> {
    PullSource::new(config).run(handler, shutdown).await
}

async fn pull(
    config: &PullConfig,
    status: &PullStatus,
    handler: Handler,
    shutdown: CancellationToken,
) -> Result<PullStats, PullError> {
    config.validate()?;
    let subscription = config.subscription_name();
    let target = config.target()?;
    let client_error = |source| PullError::Client {
        subscription: subscription.clone(),
        target: target.to_string(),
        source,
    };

    // Fail fast on a wrong endpoint or subscription: opening a stream would
    // retry forever instead.
    let check = tokio::select! {
        biased;
        _ = shutdown.cancelled() => return Ok(status.stats()),
        check = check_subscription(config, &target, &subscription) => check,
    };
    check?;

    let subscriber = target.subscriber().await.map_err(client_error)?;
    // Cancelled by the caller, or by a stream that failed for good.
    let stop = shutdown.child_token();
    let context = Arc::new(Context {
        endpoint: EndpointName(config.subscription_name()),
        handler,
        status: status.clone(),
        permits: Arc::new(Semaphore::new(config.max_in_flight)),
        backoff: Backoff {
            first: config.undecided_backoff,
            max: config.undecided_backoff_max,
        },
        retries: std::sync::Mutex::new(HashMap::new()),
        stop: stop.clone(),
    });
    let streams: Vec<_> = (0..config.streams)
        .map(|_| {
            tokio::spawn(pull_stream(
                subscriber.clone(),
                subscription.clone(),
                config.clone(),
                context.clone(),
                stop.clone(),
            ))
        })
        .collect();
    status.set_connected(true);
    tracing::info!(
        subscription = %subscription,
        // Not `target`: the JSON log already has a `target` (the module).
        endpoint = %target,
        streams = config.streams,
        max_in_flight = config.max_in_flight,
        "pulling"
    );

    let mut failure = None;
    for stream in streams {
        let outcome = match stream.await {
            Ok(outcome) => outcome,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        };
        if let Err(source) = outcome {
            status.set_connected(false);
            failure.get_or_insert(source);
        }
    }
    // Every stream's WaitForProcessing shutdown returned, so every handler
    // has answered; wait for the tasks to release their slots (counters).
    let _all = context
        .permits
        .acquire_many(config.max_in_flight as u32)
        .await
        .expect("the semaphore is never closed");
    let stats = status.stats();
    tracing::info!(
        subscription = %subscription,
        received = stats.received,
        acked = stats.acked,
        nacked = stats.nacked,
        "stopped pulling"
    );
    match failure {
        None => Ok(stats),
        Some(source) => Err(PullError::Stream {
            subscription,
            source,
            stats,
        }),
    }
}

async fn check_subscription(
    config: &PullConfig,
    target: &Target,
    subscription: &str,
) -> Result<(), PullError> {
    let admin = target
        .subscription_admin()
        .await
        .map_err(|source| PullError::Client {
            subscription: subscription.to_owned(),
            target: target.to_string(),
            source,
        })?;
    let get = admin
        .get_subscription()
        .set_subscription(subscription)
        .send();
    match tokio::time::timeout(config.connect_timeout, get).await {
        Err(_elapsed) => Err(PullError::Unreachable {
            subscription: subscription.to_owned(),
            target: target.to_string(),
            timeout: config.connect_timeout,
        }),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => match e.status().map(|s| s.code) {
            Some(Code::NotFound) => Err(PullError::NotFound {
                subscription: subscription.to_owned(),
                target: target.to_string(),
            }),
            // roles/pubsub.subscriber may consume but not get: the service
            // answered and authenticated us; a missing subscription will
            // still end the stream with NOT_FOUND.
            Some(Code::PermissionDenied) => {
                tracing::warn!(
                    subscription,
                    "no permission to get the subscription; assuming it exists"
                );
                Ok(())
            }
            _ => Err(PullError::Check {
                subscription: subscription.to_owned(),
                target: target.to_string(),
                source: e,
            }),
        },
    }
}

struct Context {
    /// The subscription: message ids are unique only within its topic.
    endpoint: EndpointName,
    handler: Handler,
    status: PullStatus,
    /// One permit per running handler, shared by all streams.
    permits: Arc<Semaphore>,
    backoff: Backoff,
    /// How often each message id came back undecided so far, so that its
    /// delay grows; forgotten once it is acked. At most [`MAX_TRACKED`]
    /// ids: beyond, a message is held for the first delay only.
    retries: std::sync::Mutex<HashMap<String, u32>>,
    /// Cancelled on shutdown: held messages are nacked at once.
    stop: CancellationToken,
}

/// Ids whose retries are counted at once: far more than the messages one
/// consumer holds, small enough to never matter for memory.
const MAX_TRACKED: usize = 100_000;

/// How long an undecided message is held before it is nacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Backoff {
    first: Duration,
    max: Duration,
}

impl Backoff {
    /// The delay before the `retry`-th nack of one message (from 1):
    /// `first`, doubled at each retry, at most `max`.
    fn delay(self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(30);
        self.first.saturating_mul(1 << doublings).min(self.max)
    }
}

impl Context {
    /// Counts one more undecided delivery of `id`; returns its retry number.
    fn retried(&self, id: &str) -> u32 {
        let mut retries = self.retries.lock().expect("never poisoned");
        if let Some(n) = retries.get_mut(id) {
            *n += 1;
            return *n;
        }
        if retries.len() < MAX_TRACKED {
            retries.insert(id.to_owned(), 1);
        }
        1
    }

    fn decided(&self, id: &str) {
        self.retries.lock().expect("never poisoned").remove(id);
    }
}

/// One StreamingPull stream: takes a message only when a handler slot is
/// free, until `stop`; then drains it.
async fn pull_stream(
    subscriber: Subscriber,
    subscription: String,
    config: PullConfig,
    context: Arc<Context>,
    stop: CancellationToken,
) -> Result<(), google_cloud_pubsub::Error> {
    let mut stream = subscriber
        .subscribe(subscription.clone())
        .set_max_lease_extension(config.max_lease_extension)
        .set_max_lease(config.max_lease)
        .set_max_outstanding_messages(config.max_in_flight as i64)
        .set_shutdown_behavior(ShutdownBehavior::WaitForProcessing)
        .build();
    let drain = stream.shutdown_token();
    let outcome = loop {
        let permit = tokio::select! {
            biased;
            _ = stop.cancelled() => break Ok(()),
            permit = context.permits.clone().acquire_owned() => {
                permit.expect("the semaphore is never closed")
            }
        };
        // `next()` is cancel-safe: a message is only taken out of the
        // client's queue when it is returned.
        let item = tokio::select! {
            biased;
            _ = stop.cancelled() => break Ok(()),
            item = stream.next() => item,
        };
        match item {
            None => break Ok(()),
            Some(Err(e)) => {
                tracing::error!(subscription = %subscription, error = %e, "streaming pull failed");
                // Stop the other streams too: the run ends with this error.
                stop.cancel();
                break Err(e);
            }
            Some(Ok((message, ack))) => {
                context
                    .status
                    .inner
                    .received
                    .fetch_add(1, Ordering::Relaxed);
                tokio::spawn(handle(context.clone(), message, ack, permit));
            }
        }
    };
    // WaitForProcessing: wait until every handler given a message answered,
    // flush acks and nacks, nack the messages never handed out. The first
    // poll cancels the stream; `next()` then closes the gRPC stream at once,
    // so nothing more is pushed into a stream nobody reads while handlers
    // finish (such messages would stay invisible for a whole ack deadline).
    let drained = drain.shutdown();
    tokio::pin!(drained);
    if futures::poll!(drained.as_mut()).is_pending() {
        let _closed = stream.next().await;
        drained.await;
    }
    outcome
}

/// Runs the pipeline on one message and answers Pub/Sub.
async fn handle(
    context: Arc<Context>,
    message: Message,
    ack: AckHandler,
    permit: OwnedSemaphorePermit,
) {
    let id = EventId(message.message_id);
    let decoded = gcr::parse(&id, &message.data)
        .map(|mut event| {
            event.source = Source::PubsubPull;
            event
        })
        .map_err(|mut malformed| {
            malformed.source = Source::PubsubPull;
            malformed
        });
    let delivery = Delivery {
        source: Source::PubsubPull,
        endpoint: context.endpoint.clone(),
        id: id.clone(),
        decoded,
    };
    let handler = context.handler.clone();
    let outcome = AssertUnwindSafe(async move { handler(delivery).await })
        .catch_unwind()
        .await;
    let counters = &context.status.inner;
    match outcome {
        Ok(Handled {
            disposition: Disposition::Ack,
            ..
        }) => {
            ack.ack();
            counters.acked.fetch_add(1, Ordering::Relaxed);
            context.decided(&id.0);
        }
        Ok(Handled {
            disposition: Disposition::Retry,
            ..
        }) => {
            let delay = context.backoff.delay(context.retried(&id.0));
            // Holding a message is not handling it: let another one in.
            drop(permit);
            tokio::select! {
                biased;
                _ = context.stop.cancelled() => {}
                _ = tokio::time::sleep(delay) => {}
            }
            ack.nack();
            counters.nacked.fetch_add(1, Ordering::Relaxed);
        }
        Err(_panic) => {
            tracing::error!(message_id = %id, "the handler panicked; nacking the message");
            ack.nack();
            counters.nacked.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_per_retry_up_to_its_bound() {
        let backoff = Backoff {
            first: Duration::from_secs(10),
            max: Duration::from_secs(600),
        };
        let delays: Vec<u64> = [1, 2, 3, 4, 6, 7, 8, 1000]
            .map(|retry| backoff.delay(retry).as_secs())
            .into();
        assert_eq!(delays, [10, 20, 40, 80, 320, 600, 600, 600]);
    }
}
