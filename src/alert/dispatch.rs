//! Drives one sink from the findings outbox: claim → hold briefly to gather
//! the same fact from other regions → send → mark delivered, or mark failed
//! with a backoff and try again. The store's claim lease is the crash
//! guard: a claimed finding that is never marked becomes claimable again.
//!
//! **One dispatcher per sink among every process on the store.** The
//! copies of one fact reach different replicas, and the grouping of
//! copies, of platform images with their index, and of a fact seen again
//! with the alert already sent ([`super::group_after`]) needs them in one
//! place. So each sink's dispatcher works only while it holds the store
//! lock `alerts:<sink>` ([`Locks::try_lock`](crate::findings::Locks::try_lock));
//! the others wait and take over when it goes (its claims come back after
//! their lease). The alert memory is in the store ([`super::memory`]) and
//! read when the lock is taken, so the new holder, or the same replica
//! after a restart, updates the alerts sent before. Alerts are few; one
//! sender per sink is plenty.
//!
//! **In flight before sent.** An alert is written to the store as in
//! flight before it leaves, and settled after: sent (with its findings
//! marked, in one transaction) or, for a `new` one, refused (the receiver
//! answered no, or could not be reached; a refused update may stay in
//! flight, as its fact's next alert is an update anyway). A holder that
//! dies or loses its store session between the send and the record leaves
//! the entry in flight; the next holder cannot tell whether the receiver
//! has it, so it counts it as sent, and the fact's findings, back after
//! their claim lease, go out as an `updated` alert with the same
//! `alert_id`. The guarantee per sink: every finding is delivered at least
//! once, a fact is raised `new` at most once per repeat window, and what a
//! receiver sees again comes as an update with the same `alert_id` (a
//! `new` is repeated only to a receiver that answered it with an error yet
//! kept it). Exactly once is not possible over HTTP: a sender cannot tell
//! a lost request from a lost answer.
//!
//! Just past 500 lines: the loop, the lock, the memory and the outbox
//! marks are one state machine, and `AlertsConfig` is here because its
//! checks are this loop's (the claim lease).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::sink::{SendError, Sink, SinkConfig};
use super::{Alert, AlertStatus, FactKey, Plan, Route, memory, plan};
use crate::findings::{
    Finding, FindingId, Outbox, Store, StoreError, StoreLock, now_ms, off_thread,
};
use crate::index::Index;
use crate::metrics::Metrics;

/// The `alerts` section: the sinks, and timing shared by all of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Sinks besides the structured log, which is always on.
    pub sinks: Vec<SinkConfig>,
    /// How often the outbox is read.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How long a new fact is held for its copies in other registries to
    /// arrive, so that they make one alert.
    #[serde(with = "humantime_serde")]
    pub group_wait: Duration,
    /// A fact seen again within this time after its alert updates that
    /// alert (same id, every place so far) instead of raising a new one.
    #[serde(with = "humantime_serde")]
    pub repeat_window: Duration,
    /// First retry delay after a failed delivery; doubles up to `backoff_max`.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Timeout of one delivery.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            sinks: Vec::new(),
            poll_interval: Duration::from_secs(1),
            group_wait: Duration::from_secs(10),
            repeat_window: Duration::from_secs(3600),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why an `alerts` section cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertsConfigError {
    #[error("alerts.sinks: name {0:?} is reserved or empty")]
    ReservedName(String),
    #[error("alerts.sinks: two sinks are named {0:?}")]
    DuplicateName(String),
    #[error(
        "alerts.group_wait + alerts.timeout must stay under {limit_secs} s (half the outbox claim lease)"
    )]
    OutlivesClaim { limit_secs: u64 },
    #[error("alerts.poll_interval must be more than 0")]
    ZeroPollInterval,
}

impl AlertsConfig {
    /// The name of the always-on structured-log sink.
    pub const LOG_SINK: &str = "log";

    /// Checks what deserialising cannot: names are unique and not `log`,
    /// and a held finding's claim cannot expire while it waits.
    pub fn validate(&self, claim_lease: Duration) -> Result<(), AlertsConfigError> {
        let mut names = std::collections::HashSet::new();
        for sink in &self.sinks {
            if sink.name.is_empty() || sink.name == Self::LOG_SINK {
                return Err(AlertsConfigError::ReservedName(sink.name.clone()));
            }
            if !names.insert(&sink.name) {
                return Err(AlertsConfigError::DuplicateName(sink.name.clone()));
            }
        }
        if self.group_wait + self.timeout >= claim_lease / 2 {
            return Err(AlertsConfigError::OutlivesClaim {
                limit_secs: claim_lease.as_secs() / 2,
            });
        }
        if self.poll_interval.is_zero() {
            return Err(AlertsConfigError::ZeroPollInterval);
        }
        Ok(())
    }
}

/// Findings claimed per read of the outbox.
const BATCH: usize = 500;

pub struct Dispatcher {
    pub name: String,
    pub sink: Sink,
    pub route: Route,
    pub store: Arc<dyn Store>,
    pub index: Arc<ArcSwap<Index>>,
    pub metrics: Arc<Metrics>,
    pub timing: AlertsConfig,
}

impl Dispatcher {
    /// Runs until `shutdown`; then sends what it holds once more and returns.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut held: Vec<Finding> = Vec::new();
        let mut sent: HashMap<FactKey, Alert> = HashMap::new();
        let mut lock: Option<StoreLock> = None;
        loop {
            let stopping = shutdown.is_cancelled();
            if self.lead(&mut lock, &mut held, &mut sent).await {
                if !stopping {
                    self.claim_into(&mut held).await;
                }
                held = self.send_due(held, &mut sent, stopping).await;
                self.send_resolutions(&mut sent).await;
                self.forget_old(&mut sent).await;
                self.observe_backlog().await;
            }
            if stopping {
                // Dropping the lock lets another replica's dispatcher lead.
                return;
            }
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(self.timing.poll_interval) => {}
            }
        }
    }

    /// The store lock this sink's dispatcher works under.
    pub fn lock_name(sink: &str) -> String {
        format!("alerts:{sink}")
    }

    /// Whether this dispatcher leads its sink now: it held the lock and
    /// still does, or has just taken it and read the alert memory. A lost
    /// lock drops what was held (its claims come back after their lease,
    /// to whoever leads then).
    async fn lead(
        &self,
        lock: &mut Option<StoreLock>,
        held: &mut Vec<Finding>,
        sent: &mut HashMap<FactKey, Alert>,
    ) -> bool {
        if let Some(current) = lock.take() {
            let checked = tokio::task::spawn_blocking(move || {
                let alive = current.is_held();
                (current, alive)
            })
            .await;
            if let Ok((current, true)) = checked {
                *lock = Some(current);
                return true;
            }
            tracing::warn!(
                sink = self.name,
                "lost the alert lock (store connection gone); another process may lead"
            );
            held.clear();
            sent.clear();
        }
        let taken = match self
            .on_store(|s, sink| s.try_lock(&Self::lock_name(sink)))
            .await
        {
            Ok(Some(taken)) => taken,
            Ok(None) => return false,
            Err(e) => {
                tracing::error!(sink = self.name, error = %e, "cannot take the alert lock");
                return false;
            }
        };
        let since = now_ms() - self.window_ms();
        let remembered = match self
            .on_store(move |s, sink| {
                Ok((
                    s.sent_alerts(sink, since)?,
                    s.alerts_in_flight(sink, since)?,
                ))
            })
            .await
        {
            Ok(remembered) => remembered,
            Err(e) => {
                // Without the memory, facts alerted before would be new
                // alerts: wait for the store instead.
                tracing::error!(sink = self.name, error = %e, "cannot read the alert memory");
                return false;
            }
        };
        let (remembered, unsettled) = remembered;
        sent.clear();
        // An alert in flight is newer than the one remembered for its fact
        // (it was built as its update), and may have arrived: it counts as
        // sent. Read after the memory, so that the one that replaces it
        // wins.
        for entry in remembered.iter().chain(&unsettled) {
            match memory::recall(entry) {
                Ok((key, alert)) => {
                    sent.insert(key, alert);
                }
                // Costs one alert raised anew instead of updated.
                Err(e) => tracing::warn!(sink = self.name, error = %e, "ignoring"),
            }
        }
        tracing::info!(
            sink = self.name,
            remembered = sent.len(),
            in_flight = unsettled.len(),
            "this process delivers the sink's alerts"
        );
        *lock = Some(taken);
        true
    }

    /// Runs `f` on the store off the async threads ([`off_thread`]), with
    /// this dispatcher's sink name.
    async fn on_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store, &str) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let sink = self.name.clone();
        off_thread(&self.store, move |s| f(s, &sink)).await
    }

    /// Forgets the alert of `fact` in the store's memory with `forget`
    /// (refused, or resolved). A failure is logged and otherwise ignored:
    /// it costs an update where a new alert was due, never a finding.
    async fn forget_alert(
        &self,
        fact: &str,
        forget: fn(&dyn Store, &str, &str) -> Result<(), StoreError>,
    ) {
        let owned = fact.to_owned();
        if let Err(e) = self.on_store(move |s, sink| forget(s, sink, &owned)).await {
            tracing::warn!(sink = self.name, alert_id = fact, error = %e,
                "cannot forget the alert in the store's memory");
        }
    }

    fn window_ms(&self) -> i64 {
        i64::try_from(self.timing.repeat_window.as_millis()).unwrap_or(i64::MAX)
    }

    /// Forgets alerts whose fact was first seen before the repeat window,
    /// here and in the store.
    async fn forget_old(&self, sent: &mut HashMap<FactKey, Alert>) {
        let before = now_ms() - self.window_ms();
        let count = sent.len();
        sent.retain(|_, alert| alert.first_seen_ms >= before);
        if sent.len() == count {
            return;
        }
        if let Err(e) = self
            .on_store(move |s, sink| s.forget_sent_alerts(sink, before))
            .await
        {
            tracing::warn!(sink = self.name, error = %e, "cannot forget old alerts");
        }
    }

    async fn claim_into(&self, held: &mut Vec<Finding>) {
        let claimed = self
            .on_store(|s, sink| s.claim(Outbox::Alerts, sink, BATCH, now_ms()))
            .await;
        match claimed {
            Ok(claimed) => {
                for finding in claimed {
                    if self.route.matches(finding.verdict) {
                        held.push(finding);
                    } else {
                        // Not this sink's: nothing is owed.
                        self.mark(Outbox::Alerts, finding.id, None).await;
                    }
                }
            }
            Err(e) => tracing::error!(sink = self.name, error = %e, "cannot read the outbox"),
        }
    }

    /// Sends every fact whose oldest finding has waited `group_wait` (all of
    /// them when stopping), platform images joined to their index
    /// ([`plan`]); returns the findings still held.
    async fn send_due(
        &self,
        held: Vec<Finding>,
        sent: &mut HashMap<FactKey, Alert>,
        stopping: bool,
    ) -> Vec<Finding> {
        let index = self.index.load_full();
        let now = now_ms();
        let wait = self.timing.group_wait.as_millis() as i64;
        let Plan { due, waiting } = plan(&held, &index, sent.iter(), now, wait, stopping);
        // Built before sending: `sent` changes as alerts go out.
        let alerts: Vec<(FactKey, Vec<&Finding>, Alert)> = due
            .into_iter()
            .map(|(key, members)| {
                let alert = Alert::next(&key, &members, sent.get(&key));
                (key, members, alert)
            })
            .collect();
        for (key, members, alert) in alerts {
            // In flight before it leaves: if this process loses the store
            // or dies between the send and the record, whoever leads next
            // updates this alert instead of raising the fact anew.
            let remembered = memory::remember(&key, &alert);
            let in_flight = remembered.clone();
            let written = self
                .on_store(move |s, sink| s.alert_in_flight(sink, &in_flight, now_ms()))
                .await;
            let in_store = written.is_ok();
            let outcome = match written {
                Ok(()) => self.sink.send(&alert).await,
                // Unsent, so certainly not arrived: retried like a refusal.
                Err(e) => Err(SendError::refused(format!(
                    "cannot record the alert in flight: {e}"
                ))),
            };
            self.metrics.alert(
                &self.name,
                if outcome.is_ok() {
                    "delivered"
                } else {
                    "failed"
                },
            );
            match outcome {
                Ok(()) => {
                    // A joined child is marked with its index's alert: it
                    // has been told, and is never claimed for this sink
                    // again. Marked and remembered at once, so a later
                    // sight updates this alert whoever leads then.
                    let ids: Vec<FindingId> = members.iter().map(|f| f.id).collect();
                    let marked = self
                        .on_store(move |s, sink| s.alert_sent(sink, &remembered, &ids, now_ms()))
                        .await;
                    if let Err(e) = marked {
                        // The claim lease brings the findings back: the
                        // worst case is this alert once more.
                        tracing::error!(sink = self.name, alert_id = alert.alert_id, error = %e,
                            "cannot mark the alert sent");
                    }
                    sent.insert(key, alert);
                }
                Err(e) => {
                    tracing::warn!(sink = self.name, alert_id = alert.alert_id, error = %e,
                        refused = e.refused, "alert not delivered; will retry");
                    if e.refused && in_store && alert.status == AlertStatus::New {
                        // Nothing of the fact has reached the receiver (a
                        // `new` has no earlier send), so its retry is
                        // `new` again. A refused update stays in flight:
                        // the fact's next alert is an update either way,
                        // and the entry may stand for an earlier send
                        // whose outcome is unknown.
                        // If that fails, the retry is an update the
                        // receiver never saw a `new` for, which it reads
                        // the same way.
                        self.forget_alert(&alert.alert_id, |s, sink, fact| {
                            s.alert_not_sent(sink, fact)
                        })
                        .await;
                    } else if !e.refused {
                        // It may have arrived: the retry updates it.
                        sent.insert(key.clone(), alert.clone());
                    }
                    // One retry time for the whole fact, so that it comes
                    // back as one group.
                    let tries = members.iter().map(|f| attempts(f)).max().unwrap_or(1);
                    let retry_at = now + self.backoff(tries).as_millis() as i64;
                    for f in &members {
                        self.mark(Outbox::Alerts, f.id, Some((e.to_string(), retry_at)))
                            .await;
                    }
                }
            }
        }
        let waiting: HashSet<FindingId> = waiting.into_iter().collect();
        held.into_iter()
            .filter(|f| waiting.contains(&f.id))
            .collect()
    }

    /// Sends the resolutions owed to this sink (findings resolved by a
    /// person after their alert reached it), each from the store's
    /// resolutions outbox: claimed, sent, marked, retried with backoff. A
    /// resolved fact is forgotten here, so that seeing it again raises a
    /// new alert rather than updating the one that ended.
    async fn send_resolutions(&self, sent: &mut HashMap<FactKey, Alert>) {
        let claimed = self
            .on_store(|s, sink| s.claim(Outbox::Resolutions, sink, BATCH, now_ms()))
            .await;
        let claimed = match claimed {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::error!(sink = self.name, error = %e, "cannot read the resolutions outbox");
                return;
            }
        };
        let index = self.index.load_full();
        for finding in claimed {
            let id = finding.id;
            // Not this sink's: its alert was never sent here.
            let outcome = if self.route.matches(finding.verdict) {
                let key = FactKey::of(&finding, &index);
                let alert = Alert::resolved(&key, &finding);
                let outcome = self.sink.send(&alert).await;
                if outcome.is_ok() {
                    // Resolved: the fact seen again is a new alert, here and
                    // in whichever process leads this sink next.
                    sent.remove(&key);
                    // If that fails, a successor updates the resolved
                    // alert instead of starting a new one: noisy, not lost.
                    self.forget_alert(&alert.alert_id, |s, sink, fact| {
                        s.alert_resolved(sink, fact)
                    })
                    .await;
                }
                self.metrics.alert(
                    &self.name,
                    if outcome.is_ok() {
                        "resolved"
                    } else {
                        "resolve_failed"
                    },
                );
                outcome.map_err(|e| {
                    (
                        e.to_string(),
                        now_ms() + self.backoff(attempts(&finding)).as_millis() as i64,
                    )
                })
            } else {
                Ok(())
            };
            if let Err((error, _)) = &outcome {
                tracing::warn!(sink = self.name, finding = id.0, error = %error,
                    "resolution not delivered; will retry");
            }
            self.mark(Outbox::Resolutions, id, outcome.err()).await;
        }
    }

    /// The row of `outbox` delivered (`failure` None) or failed until
    /// `retry_at`. A store error here is logged: the claim lease makes the
    /// row claimable again, so the worst case is one repeated alert, never
    /// a lost one.
    async fn mark(&self, outbox: Outbox, id: FindingId, failure: Option<(String, i64)>) {
        let result = self
            .on_store(move |s, sink| match &failure {
                None => s.mark_delivered(outbox.row(sink, id), now_ms()),
                Some((error, retry_at)) => s.mark_failed(outbox.row(sink, id), error, *retry_at),
            })
            .await;
        if let Err(e) = result {
            tracing::error!(sink = self.name, ?outbox, finding = id.0, error = %e,
                "cannot mark the outbox");
        }
    }

    async fn observe_backlog(&self) {
        if let Ok(backlog) = self.on_store(|s, sink| s.undelivered(sink)).await {
            self.metrics.outbox_backlog(&self.name, backlog as i64);
        }
    }

    /// Exponential, with jitter so that many failed findings do not retry
    /// in lockstep.
    fn backoff(&self, attempts: u32) -> Duration {
        let exp = self
            .timing
            .backoff_base
            .saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1).min(20)));
        let capped = exp.min(self.timing.backoff_max);
        capped.mul_f64(0.5 + fastrand::f64() / 2.0)
    }
}

fn attempts(f: &Finding) -> u32 {
    f.deliveries.first().map_or(1, |d| d.attempts)
}
