//! The one pipeline every source feeds (docs/design.md §3, §7): dedupe → audit →
//! resolve → audit again → record → answer. Sources only decode and hand a
//! [`Delivery`] over; what they do next (ack, nack, HTTP status) follows the
//! [`Disposition`] they get back.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use dashmap::DashMap;

use crate::audit::{Policy, Verdict, VerdictKind, audit};
use crate::event::{Event, Source};
use crate::exceptions::{Date, Exceptions, Subject};
use crate::findings::{
    Decision, DedupeKey, Recorded, Store, StoreError, now_ms, off_thread, record_queued,
};
use crate::index::Index;
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::resolve::{Resolver, audit_or_settle};
use crate::sources::{Delivery, Disposition, Handled, Handler};

impl Delivery {
    fn key(&self) -> DedupeKey {
        DedupeKey {
            source: self.source,
            endpoint: self.endpoint.clone(),
            event_id: self.id.clone(),
        }
    }
}

/// How long an undecided delivery may keep coming back before it is
/// recorded as `unverifiable` (and alerted) instead.
pub const DEFAULT_UNDECIDED_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(3600);

/// The pipeline: one per process, shared by every source.
pub struct Pipeline {
    index: Arc<ArcSwap<Index>>,
    resolver: Option<Arc<Resolver>>,
    store: Arc<dyn Store>,
    policy: Policy,
    metrics: Arc<Metrics>,
    /// The still-undecided deliveries this process has answered "retry",
    /// for the activity clock and the backlog gauge. Their retry budget is
    /// the store's ([`Store::first_undecided`]), one for every process on it.
    undecided: DashMap<DedupeKey, ()>,
    undecided_retry_for: std::time::Duration,
    reloader: Option<Arc<Reloader>>,
    /// Unix milliseconds of the last delivery from each source (status page).
    last_event_ms: DashMap<Source, i64>,
    /// The exceptions in force: an alerting verdict they cover is recorded
    /// with `excepted_by` and raises no alert. Swapped by the reloader.
    exceptions: Arc<ArcSwap<Exceptions>>,
}

impl Pipeline {
    /// The findings store decisions are recorded in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn new(
        index: Arc<ArcSwap<Index>>,
        resolver: Option<Arc<Resolver>>,
        store: Arc<dyn Store>,
        policy: Policy,
        metrics: Arc<Metrics>,
        undecided_retry_for: std::time::Duration,
    ) -> Self {
        Self {
            index,
            resolver,
            store,
            policy,
            metrics,
            undecided: DashMap::new(),
            undecided_retry_for,
            reloader: None,
            last_event_ms: DashMap::new(),
            exceptions: Arc::new(ArcSwap::from_pointee(Exceptions::default())),
        }
    }

    /// Except what these exceptions cover (the reloader keeps them current).
    pub fn with_exceptions(mut self, exceptions: Arc<ArcSwap<Exceptions>>) -> Self {
        self.exceptions = exceptions;
        self
    }

    /// The exceptions in force (`POST /v1/check` shows which apply).
    pub fn exceptions(&self) -> Arc<Exceptions> {
        self.exceptions.load_full()
    }

    /// Refresh a git manifest origin before a negative verdict becomes a
    /// finding (docs/design.md §4.5), so a promotion merged seconds ago is not reported.
    pub fn with_reloader(mut self, reloader: Arc<Reloader>) -> Self {
        self.reloader = Some(reloader);
        self
    }

    /// Every source that delivered since start, with the Unix milliseconds
    /// of its last delivery, in `Source::ALL` order.
    pub fn last_events(&self) -> Vec<(Source, i64)> {
        Source::ALL
            .into_iter()
            .filter_map(|s| self.last_event_ms.get(&s).map(|t| (s, *t)))
            .collect()
    }

    /// The pipeline as a [`Handler`] for sources.
    pub fn handler(self: &Arc<Self>) -> Handler {
        let pipeline = self.clone();
        Arc::new(move |delivery| {
            let pipeline = pipeline.clone();
            Box::pin(async move { pipeline.handle(delivery).await })
        })
    }

    /// Decides one delivery and records the verdict before answering.
    pub async fn handle(&self, delivery: Delivery) -> Handled {
        let started = Instant::now();
        let source = delivery.source;
        // The dead-man's switch: a source stuck redelivering one undecided
        // event must not look alive, so only first deliveries and decisions
        // count as activity.
        let redelivered = self.undecided.contains_key(&delivery.key());
        // An event refused by a parser limit (a name too long, …) is still
        // recorded as malformed; the limit's count is kept here, since
        // parsers hold no metrics.
        if let Err(malformed) = &delivery.decoded
            && let Some(limit) = malformed.limit
        {
            self.metrics.rejected(limit.reason());
        }
        let handled = self.decide_and_record(&delivery, started).await;
        if !redelivered || handled.disposition == Disposition::Ack {
            self.metrics
                .last_event(source.as_str(), now_ms() as f64 / 1000.0);
            self.last_event_ms.insert(source, now_ms());
        }
        self.metrics
            .observe_processing(source.as_str(), started.elapsed());
        handled
    }

    async fn decide_and_record(&self, delivery: &Delivery, started: Instant) -> Handled {
        let index = self.index.load_full();
        // A verdict the index alone makes final is recorded at once: `record`
        // answers a redelivery with its first verdict anyway, and the audit
        // costs less than the dedupe lookup it saves (one store round trip
        // per delivery, the hot path of every source).
        if let Some(verdict) = self.final_without_io(&index, delivery) {
            return self.record(delivery, &index, verdict).await;
        }
        // Boxed: the registry reads, the git refresh and the retry budget
        // make this future several kilobytes, which every delivery would
        // otherwise allocate and copy whether it takes this path or not.
        Box::pin(self.decide_with_io(delivery, index, started)).await
    }

    /// The verdict when the index alone does not make it final: dedupe,
    /// resolve, refresh the manifests, count the retry budget, record.
    async fn decide_with_io(
        &self,
        delivery: &Delivery,
        mut index: Arc<Index>,
        started: Instant,
    ) -> Handled {
        // Durable dedupe before anything that reads registries or git: a
        // redelivery of a recorded id is acknowledged as is.
        match off_thread(&self.store, {
            let key = delivery.key();
            move |store| store.decision(&key)
        })
        .await
        {
            Ok(Some(verdict)) => {
                self.metrics.duplicate(delivery.source.as_str());
                return Handled {
                    disposition: Disposition::Ack,
                    verdict: Some(verdict),
                    duplicate: true,
                    excepted: false,
                };
            }
            Ok(None) => {}
            Err(e) => return self.store_failed(delivery, &e),
        }

        let (verdict, event) = match &delivery.decoded {
            Err(malformed) => (Verdict::malformed(malformed), None),
            Ok(event) => {
                let mut verdict = self.decide(&index, event).await;
                if verdict.kind.may_be_a_late_promotion()
                    && let Some(reloader) = &self.reloader
                    && reloader
                        .refresh_before_reject(started, index.generation())
                        .await
                {
                    index = self.index.load_full();
                    verdict = self.decide(&index, event).await;
                }
                (verdict, Some(event))
            }
        };

        let key = delivery.key();
        let verdict = if verdict.kind == VerdictKind::Undecided {
            let now = now_ms();
            let first = match off_thread(&self.store, {
                let key = key.clone();
                move |store| store.first_undecided(&key, now)
            })
            .await
            {
                Ok(first) => first,
                Err(e) => return self.store_failed(delivery, &e),
            };
            let undecided_for =
                std::time::Duration::from_millis(now.saturating_sub(first).max(0) as u64);
            self.undecided.insert(key.clone(), ());
            if undecided_for < self.undecided_retry_for {
                self.metrics
                    .undecided_backlog
                    .set(self.undecided.len() as i64);
                self.metrics.retried(delivery.source.as_str());
                log_verdict(delivery, event, &verdict, None);
                return Handled {
                    disposition: Disposition::Retry,
                    verdict: Some(VerdictKind::Undecided),
                    duplicate: false,
                    excepted: false,
                };
            }
            Verdict {
                kind: VerdictKind::Unverifiable,
                reason: format!(
                    "still undecided after {} s of retries: {}",
                    undecided_for.as_secs(),
                    verdict.reason
                ),
                evidence: verdict.evidence,
                pushed_list: verdict.pushed_list,
            }
        } else {
            verdict
        };
        self.record(delivery, &index, verdict).await
    }

    /// The verdict when the index alone decides it for good: a malformed
    /// delivery, or an audit with nothing to read from registries, nothing
    /// to refresh from git and nothing to retry.
    fn final_without_io(&self, index: &Index, delivery: &Delivery) -> Option<Verdict> {
        match &delivery.decoded {
            Err(malformed) => Some(Verdict::malformed(malformed)),
            Ok(event) => {
                let result = audit(index, event, &self.policy);
                let kind = result.verdict.kind;
                (result.pending.is_none()
                    && kind != VerdictKind::Undecided
                    && !kind.may_be_a_late_promotion())
                .then_some(result.verdict)
            }
        }
    }

    /// Records `verdict` and answers: acknowledge once it is durable (with
    /// the first verdict when the id was recorded before), retry when the
    /// store fails.
    async fn record(&self, delivery: &Delivery, index: &Index, verdict: Verdict) -> Handled {
        let event = delivery.decoded.as_ref().ok();
        let key = delivery.key();
        let commit = index.commit().map(str::to_string);
        // Only decisions about registry content are excepted: a delivery
        // that could not be read says nothing an entry could have reviewed.
        let excepted_by = event.filter(|_| verdict.kind.alerts()).and_then(|event| {
            let subject = Subject {
                repository: &event.repository,
                digest: event.digest.as_ref(),
                tag: event.tag.as_ref(),
                verdict: verdict.kind,
            };
            self.exceptions
                .load()
                .lookup(&subject, Date::today())
                .applies()
                .map(|e| e.location())
        });
        let mut decision = match &delivery.decoded {
            Ok(event) => Decision::of_event(
                event,
                &delivery.endpoint,
                now_ms(),
                &verdict,
                commit,
                index.generation(),
            ),
            Err(malformed) => Decision::of_malformed(
                malformed,
                &delivery.endpoint,
                now_ms(),
                commit,
                index.generation(),
            ),
        };
        decision.excepted_by = excepted_by.clone();
        // Queued, not run on a blocking thread: the store's writer answers
        // once the commit carrying this decision is durable.
        let recorded = record_queued(&*self.store, decision).await;
        match recorded {
            Ok(recorded) => {
                if self.undecided.remove(&key).is_some() {
                    self.metrics
                        .undecided_backlog
                        .set(self.undecided.len() as i64);
                }
                let duplicate = matches!(recorded, Recorded::Duplicate { .. });
                if duplicate {
                    self.metrics.duplicate(delivery.source.as_str());
                } else {
                    let action = event.map_or("unknown", |e| e.action.as_str());
                    match &excepted_by {
                        Some(_) => self.metrics.excepted(
                            delivery.source.as_str(),
                            action,
                            verdict.kind.as_str(),
                        ),
                        None => self.metrics.recorded(
                            delivery.source.as_str(),
                            action,
                            verdict.kind.as_str(),
                        ),
                    }
                    log_verdict(delivery, event, &verdict, excepted_by.as_deref());
                }
                Handled {
                    disposition: Disposition::Ack,
                    verdict: Some(match recorded {
                        Recorded::Duplicate { verdict } => verdict,
                        Recorded::New { .. } => verdict.kind,
                    }),
                    duplicate,
                    excepted: !duplicate && excepted_by.is_some(),
                }
            }
            Err(e) => self.store_failed(delivery, &e),
        }
    }

    /// The verdict on `index`, resolving what it depends on when a resolver
    /// is configured.
    async fn decide(&self, index: &Arc<Index>, event: &Event) -> Verdict {
        let (resolved, result) =
            audit_or_settle(self.resolver.as_deref(), index, event, &self.policy).await;
        if let Some(resolved) = resolved {
            self.publish(resolved);
        }
        result.verdict
    }

    /// Keeps the children the resolver learnt, unless a reload replaced the
    /// index meanwhile (the resolver re-attaches them to the new one).
    fn publish(&self, resolved: Index) {
        let current = self.index.load();
        if current.generation() == resolved.generation()
            && resolved.children().resolved_count() > current.children().resolved_count()
        {
            self.metrics
                .index_children
                .set(resolved.children().child_count() as i64);
            self.index.store(Arc::new(resolved));
        }
    }

    fn store_failed(&self, delivery: &Delivery, e: &StoreError) -> Handled {
        self.metrics.store_errors.inc();
        self.metrics.retried(delivery.source.as_str());
        tracing::error!(event_id = %delivery.id, source = delivery.source.as_str(),
            endpoint = %delivery.endpoint, error = %e,
            "cannot record the decision; asking the source to deliver again");
        Handled {
            disposition: Disposition::Retry,
            verdict: None,
            duplicate: false,
            excepted: false,
        }
    }
}

/// Logs a decision: `excepted_by` is set for an excepted one; an undecided
/// verdict is logged as a retry.
fn log_verdict(
    delivery: &Delivery,
    event: Option<&Event>,
    verdict: &Verdict,
    excepted_by: Option<&str>,
) {
    let digest = event
        .and_then(|e| e.digest.as_ref())
        .map(ToString::to_string);
    let repository = event.map(|e| e.repository.to_string());
    let tag = event.and_then(|e| e.tag.as_ref()).map(ToString::to_string);
    let outcome = if verdict.kind == VerdictKind::Undecided {
        "retry"
    } else {
        "recorded"
    };
    if verdict.kind.alerts() && excepted_by.is_none() {
        tracing::warn!(event_id = %delivery.id, source = delivery.source.as_str(),
            endpoint = %delivery.endpoint, repository, digest, tag, verdict = verdict.kind.as_str(), reason = %verdict.reason,
            outcome, "event decided");
    } else {
        tracing::info!(event_id = %delivery.id, source = delivery.source.as_str(),
            endpoint = %delivery.endpoint, repository, digest, tag, verdict = verdict.kind.as_str(), reason = %verdict.reason,
            excepted_by, outcome, "event decided");
    }
}
